//! Rendering one job and writing its files: the image (JPEG or PNG) and, for the
//! training splits, its YOLO label files. Every file goes through the crate's atomic
//! writer, so an interrupted run never leaves a truncated file behind.

use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder, RgbImage};
use rand::Rng;

use super::config::{io_err, SynthConfig, SynthError, FEATURE_NAMES};
use super::layout::{cls_train_dir, fea_train_dir, test_dir};
use super::plan::{split_rng, Job, Split};
use super::render::render_scaled;
use super::spec::LesionSpec;

/// What was written for one job, for the summary and the test-set CSVs.
pub(super) struct Done {
    pub(super) split: Split,
    /// Image file name (no folder).
    pub(super) name: String,
    pub(super) spec: LesionSpec,
    /// YOLO box `[cx, cy, w, h]`, normalised.
    pub(super) bbox: [f32; 4],
}

/// Renders the image of `job` from its own stream (size, format, then pixels) and
/// writes it with its labels.
pub(super) fn write_job(out: &Path, cfg: &SynthConfig, job: &Job) -> Result<Done, SynthError> {
    let mut rng = split_rng(cfg.seed, job.split as u64, job.index as u64);
    let w = rng.random_range(cfg.min_side..=cfg.max_side);
    let h = rng.random_range(cfg.min_side..=cfg.max_side);
    let png = rng.random_bool(0.25);
    let ext = if png { "png" } else { "jpg" };
    let (img, bbox) = render_scaled(&job.spec, w, h, cfg.lesion_scale, &mut rng);
    let label = |c: usize| yolo_line(c, bbox);
    let name = match job.split {
        Split::TrainCls => {
            let stem = format!("synth_cls_{:05}", job.index);
            let base = cls_train_dir(out, job.spec.birads);
            write_image(
                &base.join("images").join(format!("{stem}.{ext}")),
                &img,
                png,
            )?;
            write_file(
                &base.join("labels").join(format!("{stem}.txt")),
                label(job.spec.birads + 1).as_bytes(),
            )?;
            format!("{stem}.{ext}")
        }
        Split::TrainFea => {
            let stem = format!("synth_fea_{:05}", job.index);
            let base = fea_train_dir(out);
            write_image(
                &base.join("images").join(format!("{stem}.{ext}")),
                &img,
                png,
            )?;
            for (f, &v) in FEATURE_NAMES.iter().zip(&job.spec.features) {
                let p = base.join(format!("{f}_labels")).join(format!("{stem}.txt"));
                write_file(&p, label(v as usize).as_bytes())?;
            }
            format!("{stem}.{ext}")
        }
        Split::TestCls | Split::TestFea => {
            let name = format!("{:04}.{ext}", job.index);
            let sub = if job.split == Split::TestCls {
                "cla"
            } else {
                "fea"
            };
            write_image(&test_dir(out).join(sub).join(&name), &img, png)?;
            name
        }
    };
    Ok(Done {
        split: job.split,
        name,
        spec: job.spec,
        bbox,
    })
}

/// One YOLO label line, `"c cx cy w h\n"` with six decimals.
fn yolo_line(class: usize, bbox: [f32; 4]) -> String {
    format!(
        "{} {:.6} {:.6} {:.6} {:.6}\n",
        class, bbox[0], bbox[1], bbox[2], bbox[3]
    )
}

/// Writes `bytes` to `path` atomically (see [`crate::atomic`]).
pub(super) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SynthError> {
    crate::atomic::write_atomic(path, bytes).map_err(|e| io_err(path, e))
}

/// JPEG at quality 90 like scanner exports; PNG at zlib level 1, which on speckle is
/// ~10x faster than the default level for ~10 % larger files (PNG time dominated).
fn write_image(path: &Path, img: &RgbImage, png: bool) -> Result<(), SynthError> {
    let mut buf = Vec::with_capacity(img.as_raw().len() / 4);
    let (w, h) = img.dimensions();
    let res = if png {
        PngEncoder::new_with_quality(&mut buf, CompressionType::Level(1), FilterType::Adaptive)
            .write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8)
    } else {
        JpegEncoder::new_with_quality(&mut buf, 90).write_image(
            img.as_raw(),
            w,
            h,
            ExtendedColorType::Rgb8,
        )
    };
    res.map_err(|e| SynthError::Image {
        path: path.to_path_buf(),
        source: e,
    })?;
    write_file(path, &buf)
}
