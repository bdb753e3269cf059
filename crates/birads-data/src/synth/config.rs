//! What to generate and what went wrong: the public configuration, summary and error
//! types, the fixed names of the competition layout, and the checks a configuration
//! must pass before anything is written.

use std::path::{Path, PathBuf};

/// Class folder names, index = BI-RADS id 0..5 (categories 2, 3, 4A, 4B, 4C, 5).
pub const CLASS_DIRS: [&str; 6] = ["2类", "3类", "4A类", "4B类", "4C类", "5类"];
/// Feature names in label order; the folder is `<name>_labels`.
pub const FEATURE_NAMES: [&str; 4] = ["boundary", "calcification", "direction", "shape"];
/// Target class frequencies of the classification splits (2, 3, 4A, 4B, 4C, 5).
pub const CLASS_FREQ: [f64; 6] = [0.19, 0.30, 0.18, 0.13, 0.12, 0.08];

/// Root folder of the classification training set.
pub(super) const CLS_ROOT: &str = "乳腺分类训练数据集";
/// Root folder of the feature training set.
pub(super) const FEA_ROOT: &str = "乳腺特征训练数据集";

/// What to generate. Sizes are pixel bounds for width and height, drawn independently.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub seed: u64,
    pub train_cls: usize,
    pub train_fea: usize,
    pub test_cls: usize,
    pub test_fea: usize,
    pub min_side: u32,
    pub max_side: u32,
    /// Lesion diameter relative to the default (15–35 % of the shorter side). Larger
    /// lesions make a dataset that small models trained from scratch at low resolution can
    /// learn within minutes (the demo uses 1.8); the labels' meaning does not change.
    pub lesion_scale: f32,
}

impl Default for SynthConfig {
    /// 600 images: large enough to train a toy model, small enough to build in seconds.
    fn default() -> Self {
        Self {
            seed: 42,
            train_cls: 240,
            train_fea: 240,
            test_cls: 60,
            test_fea: 60,
            min_side: 320,
            max_side: 640,
            lesion_scale: 1.0,
        }
    }
}

/// Counts of what [`synthesize`](super::synthesize) wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSummary {
    /// All images written (train + test, both tasks).
    pub images: usize,
    /// BI-RADS class counts over the classification images (train + test).
    pub class_counts: [usize; 6],
    /// Positive counts per feature (boundary, calcification, direction, shape) over
    /// the feature images (train + test).
    pub feature_positive: [usize; 4],
    /// The output root that was written.
    pub out: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode image {path}: {source}")]
    Image {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("invalid synth config: {0}")]
    Config(String),
}

/// Attaches the path an I/O operation failed on.
pub(super) fn io_err(path: &Path, source: std::io::Error) -> SynthError {
    SynthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Rejects configurations that cannot produce a valid data set: images too small for
/// frame, text and lesion (or absurdly large), lesion scales outside the tested range,
/// a classification training split too small to hold every class, and counts that do
/// not fit the fixed-width file names.
pub(super) fn validate(cfg: &SynthConfig) -> Result<(), SynthError> {
    let bad = |m: String| Err(SynthError::Config(m));
    if cfg.min_side < 64 {
        return bad(format!("min_side {} is below 64", cfg.min_side));
    }
    if cfg.min_side > cfg.max_side {
        return bad(format!(
            "min_side {} exceeds max_side {}",
            cfg.min_side, cfg.max_side
        ));
    }
    if cfg.max_side > 4096 {
        return bad(format!("max_side {} exceeds 4096", cfg.max_side));
    }
    if !(0.25..=3.0).contains(&cfg.lesion_scale) {
        return bad(format!(
            "lesion_scale {} is outside 0.25..=3",
            cfg.lesion_scale
        ));
    }
    if (1..6).contains(&cfg.train_cls) {
        return bad(format!(
            "train_cls {} cannot cover all 6 classes (use 0 or at least 6)",
            cfg.train_cls
        ));
    }
    if cfg.train_cls > 99_999 || cfg.train_fea > 99_999 {
        return bad("training splits are limited to 99999 images (5-digit names)".into());
    }
    if cfg.test_cls > 9_999 || cfg.test_fea > 9_999 {
        return bad("test splits are limited to 9999 images (4-digit names)".into());
    }
    if cfg.train_cls + cfg.train_fea + cfg.test_cls + cfg.test_fea == 0 {
        return bad("all split sizes are zero".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::synthesize;

    #[test]
    fn config_validation() {
        let ok = SynthConfig::default();
        assert!(validate(&ok).is_ok());
        assert_eq!(ok.train_cls + ok.train_fea + ok.test_cls + ok.test_fea, 600);
        let bad = [
            SynthConfig {
                min_side: 63,
                ..ok.clone()
            },
            SynthConfig {
                min_side: 300,
                max_side: 200,
                ..ok.clone()
            },
            SynthConfig {
                max_side: 5000,
                ..ok.clone()
            },
            SynthConfig {
                lesion_scale: 0.1,
                ..ok.clone()
            },
            SynthConfig {
                lesion_scale: f32::NAN,
                ..ok.clone()
            },
            SynthConfig {
                train_cls: 5,
                ..ok.clone()
            },
            SynthConfig {
                train_cls: 0,
                train_fea: 0,
                test_cls: 0,
                test_fea: 0,
                ..ok.clone()
            },
            SynthConfig {
                test_fea: 10_000,
                ..ok.clone()
            },
        ];
        for cfg in bad {
            assert!(
                matches!(validate(&cfg), Err(SynthError::Config(_))),
                "{cfg:?}"
            );
        }
        assert!(validate(&SynthConfig {
            train_cls: 0,
            test_cls: 3,
            ..ok.clone()
        })
        .is_ok());
        let dir = tempfile::tempdir().unwrap();
        let err = synthesize(dir.path(), &SynthConfig { min_side: 10, ..ok }).unwrap_err();
        assert!(matches!(err, SynthError::Config(_)));
    }
}
