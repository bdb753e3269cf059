//! birads-infer: images → predictions → the competition's CSVs.
//!
//! The original `run.py` ran each model on its own folder with batch size 1 and wrote
//! `cla_pre.csv` (`img_name,label`) and `fea_pre.csv`
//! (`img_name,boundary,calcification,direction,shape`). Here the same outputs come from
//! batched, parallel-decoding inference; probabilities are available too.

pub mod assess_folder;
pub mod assessment;
pub mod csvout;
pub mod cv;
pub mod eval;
pub mod explain;
pub mod folder;
pub mod fusion;
pub mod lesion_report;
pub mod lexicon;
pub mod loaded;
pub mod metrics;
pub mod predict;
pub mod report;

pub use predict::{ClsPrediction, FeaPrediction, Predictor};
