//! `birads preview`: look at what training sees.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use birads_data::atomic::write_atomic;
use birads_data::image_ops::{decode, resize_bilinear};
use birads_data::loader::Loader;
use birads_data::pipeline::{denormalize, Augment, CutMix, Preprocess};
use birads_data::rng::{stream, STREAM_PREVIEW};
use clap::{Args, ValueEnum};
use image::{Rgb, RgbImage};
use rand::seq::index::sample;

use crate::data::{select, Task};
use birads_data::draw;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CutMixArg {
    Off,
    Lesion,
    Rectangle,
}

#[derive(Args)]
pub struct PreviewArgs {
    /// Dataset folder or CSV manifest.
    pub dataset: PathBuf,
    /// Output folder for the PNGs.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of samples to show.
    #[arg(long, default_value_t = 12)]
    pub count: usize,
    /// Augmented versions per sample.
    #[arg(long, default_value_t = 3)]
    pub versions: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Which samples: with a BI-RADS class (cls), with features (fea), or all.
    #[arg(long, value_enum, default_value_t = Task::All)]
    pub task: Task,
    /// Model input size.
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// CutMix variant (default: lesion for cls, rectangle otherwise).
    #[arg(long, value_enum)]
    pub cutmix: Option<CutMixArg>,
    /// CutMix probability.
    #[arg(long, default_value_t = 0.5)]
    pub cutmix_p: f32,
    /// Trim black borders before cropping.
    #[arg(long)]
    pub cut_black: bool,
}

const BOX_SOURCE: Rgb<u8> = Rgb([40, 220, 90]);
const BOX_AUGMENTED: Rgb<u8> = Rgb([255, 200, 0]);

pub fn run(a: PreviewArgs) -> anyhow::Result<u8> {
    let ds = crate::read_dataset(&a.dataset)?;
    let chosen: Vec<_> = select(&ds.samples, a.task).into_iter().cloned().collect();
    anyhow::ensure!(!chosen.is_empty(), "no samples in {}", a.dataset.display());
    let cutmix = match a.cutmix.unwrap_or(if a.task == Task::Cls {
        CutMixArg::Lesion
    } else {
        CutMixArg::Rectangle
    }) {
        CutMixArg::Off => CutMix::Off,
        CutMixArg::Lesion => CutMix::Lesion { p: a.cutmix_p },
        CutMixArg::Rectangle => CutMix::Rectangle { p: a.cutmix_p },
    };
    let pre = Preprocess {
        cut_black: a.cut_black,
        ..Preprocess::original_inference().with_size(a.size)
    };
    let samples = Arc::new(chosen);
    let loader = Loader::new(
        samples.clone(),
        pre.clone(),
        Some(Augment::original(cutmix)),
        a.seed,
    );
    let mut rng = stream(a.seed, &[STREAM_PREVIEW]);
    let picks = sample(&mut rng, samples.len(), a.count.min(samples.len())).into_vec();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut index = String::new();
    let mut tiles = Vec::new();
    let mut failed = 0;
    for (k, &i) in picks.iter().enumerate() {
        let s = &samples[i];
        let src = match decode(&s.image) {
            Ok(im) => im,
            Err(e) => {
                eprintln!("error: {}: {e}", s.image);
                failed += 1;
                continue;
            }
        };
        // Source panel: the whole image scaled to the preview height, lesion box in green.
        let scale = a.size as f32 / src.height() as f32;
        let sw = ((src.width() as f32 * scale).round() as u32).max(1);
        let mut left = resize_bilinear(&src, sw, a.size);
        if let Some(b) = s.lesion {
            let p = b.to_pixels(src.width(), src.height());
            draw::rect(
                &mut left,
                [p[0] * scale, p[1] * scale, p[2] * scale, p[3] * scale],
                BOX_SOURCE,
                2,
            );
        }
        let mut panels = vec![left];
        let class = s.class.and_then(|c| ds.classes.name(c)).unwrap_or("-");
        writeln!(
            index,
            "sample_{k:03}.png  {}  class {class}  features {:?}",
            s.image, s.features
        )?;
        for v in 0..a.versions {
            let prepared = loader
                .load(v as u64, k, i)
                .map_err(|p| anyhow::anyhow!("{p}"))?;
            let mut im: RgbImage = denormalize(&prepared.tensor, pre.mean, pre.std);
            if let Some(b) = prepared.lesion {
                draw::rect(&mut im, b, BOX_AUGMENTED, 2);
            }
            writeln!(index, "    version {v}: {}", prepared.applied.join(", "))?;
            panels.push(im);
        }
        let tile = draw::hstack(&panels, 4);
        save_png(&a.out.join(format!("sample_{k:03}.png")), &tile)?;
        tiles.push(tile);
    }
    if !tiles.is_empty() {
        save_png(&a.out.join("grid.png"), &draw::grid(&tiles, 1, 6))?;
    }
    write_atomic(&a.out.join("index.txt"), index.as_bytes())?;
    println!(
        "wrote {} previews (source with lesion box in green, then {} augmented versions with the box in yellow) to {}",
        tiles.len(),
        a.versions,
        a.out.display()
    );
    Ok(if failed > 0 { crate::EXIT_SKIPPED } else { 0 })
}

pub fn save_png(path: &std::path::Path, img: &RgbImage) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png)?;
    write_atomic(path, &buf).with_context(|| format!("writing {}", path.display()))
}
