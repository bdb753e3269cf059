//! birads-train: the training recipe of SEED.md — label-smoothed cross-entropy with
//! oversampling for BI-RADS, task-weighted cross-entropy plus a soft-F1 loss for the lesion
//! features, AdamW/Adam with cosine warm restarts — as a resumable loop with per-epoch
//! metrics, checkpoints and plots. Generic over burn's autodiff backends (CPU by default,
//! CUDA behind the `cuda` feature).

pub mod benchmark;
pub mod config;
pub mod fast;
pub mod history;
pub mod losses;
pub mod schedule;
pub mod trainer;

pub use config::{Task, TrainConfig};
pub use trainer::{train, RunOutcome, TrainError};
