//! Synthetic breast-ultrasound data in the official competition layout.
//!
//! Why: the real data set cannot ship with the repository, yet every stage of the
//! pipeline (readers, label validation, CutBlack, augmentation, training, evaluation)
//! needs realistic inputs for tests, demos and smoke runs. The images imitate B-mode
//! ultrasound closely enough to exercise the same code paths (speckle, black frames,
//! burned-in text, mixed JPEG/PNG, varied sizes) and the lesion appearance is driven
//! by the four feature labels, so a small CNN can actually learn from them.
//!
//! Layout written under the output folder (folder names verbatim):
//! ```text
//! 乳腺分类训练数据集/train/<2类|3类|4A类|4B类|4C类|5类>/images/synth_cls_NNNNN.jpg|png
//! 乳腺分类训练数据集/train/<class>/labels/synth_cls_NNNNN.txt      "c cx cy w h", c = 1..6
//! 乳腺特征训练数据集/train/images/synth_fea_NNNNN.jpg|png
//! 乳腺特征训练数据集/train/<feature>_labels/synth_fea_NNNNN.txt      c = 0/1, same box
//!     (<feature> = boundary | calcification | direction | shape)
//! testA/cla/NNNN.jpg|png, testA/fea/NNNN.jpg|png                    images only
//! testA/cla_gt.csv   img_name,label          (label 0..5 = 2, 3, 4A, 4B, 4C, 5)
//! testA/fea_gt.csv   img_name,boundary,calcification,direction,shape
//! testA/boxes.csv    img_name,cx,cy,w,h      (img_name relative to testA: cla/0001.jpg)
//! README.txt
//! ```
//! Boxes are YOLO-normalised, six decimals, tight around the lesion mask.
//!
//! Everything is a pure function of the seed: every image draws from its own
//! ChaCha8 stream derived from `(seed, split, index)`, so parallel generation gives
//! byte-identical output whatever the number of threads.
//!
//! Source files, one idea each: `config` (what to generate, fixed names, checks),
//! `spec` (the labels of a lesion), `plan` and `quota` (which lesion each image gets,
//! from which random stream), `render` (the pixels, step by step, from the building
//! blocks `area`, `lesion`, `noise`, `canvas`, `text`, `font` and `math`), and
//! `layout`, `write`, `ground_truth` and `readme` (the files on disk).

mod area;
mod canvas;
mod config;
mod font;
mod ground_truth;
mod layout;
mod lesion;
mod math;
mod noise;
mod plan;
mod quota;
mod readme;
mod render;
mod spec;
mod text;
mod write;

#[cfg(test)]
mod tests;

use std::path::Path;

use rayon::prelude::*;

pub use self::config::{
    SynthConfig, SynthError, SynthSummary, CLASS_DIRS, CLASS_FREQ, FEATURE_NAMES,
};
pub use self::render::{render, render_scaled};
pub use self::spec::{sample_spec, LesionSpec};

use self::write::{write_file, write_job, Done};

/// Writes the whole data set under `out` (see the module docs for the layout).
///
/// `out` may be missing, empty, or an earlier output of this function (recognised by
/// its README.txt). In the last case the previous synthetic images and labels are
/// deleted first, because a rerun with another seed or size would otherwise leave
/// images of another class or extension behind and silently corrupt the set; files
/// with other names are left alone. Any other non-empty folder is refused, so real
/// data can never be overwritten by mistake.
pub fn synthesize(out: &Path, cfg: &SynthConfig) -> Result<SynthSummary, SynthError> {
    config::validate(cfg)?;
    layout::prepare_output(out)?;
    let jobs = plan::plan_jobs(cfg);
    layout::create_dirs(out)?;
    let done: Vec<Done> = jobs
        .par_iter()
        .map(|job| write_job(out, cfg, job))
        .collect::<Result<_, _>>()?;
    let summary = ground_truth::summarize(out, &done);
    ground_truth::write_test_csvs(out, &done)?;
    let readme = readme::readme_text(cfg, &summary);
    write_file(&out.join("README.txt"), readme.as_bytes())?;
    Ok(summary)
}
