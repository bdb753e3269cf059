//! `birads explain`: a Grad-CAM overlay for one image.

use std::path::{Path, PathBuf};

use anyhow::Context;
use birads_data::{ClassList, FEATURE_NAMES};
use birads_infer::explain::{explain, figure, Target};
use birads_infer::loaded::{load_model, LoadedModel};
use birads_model::checkpoint::{read_meta, Purpose};
use birads_model::CpuTrain;
use clap::Args;

#[derive(Args)]
pub struct ExplainArgs {
    /// The image to explain (JPEG or PNG).
    #[arg(long)]
    pub image: PathBuf,
    /// Weights: MyConv.pth / MyDense.pth or a birads checkpoint; the model kind is recognised.
    #[arg(long)]
    pub weights: PathBuf,
    /// The PNG to write: the model's input beside the heatmap overlay(s).
    #[arg(long)]
    pub out: PathBuf,
    /// What to explain: a BI-RADS class (2, 3, 4A, 4B, 4C, 5) for MyConvNeXt, a feature
    /// (boundary, calcification, direction, shape) for MyDenseNet. Repeatable. Default: the
    /// predicted class, or all four features.
    #[arg(long)]
    pub target: Vec<String>,
}

/// Load weights of either kind: birads checkpoints say which; original files are tried as
/// MyConvNeXt, then MyDenseNet.
fn load_either(path: &Path) -> anyhow::Result<LoadedModel<CpuTrain>> {
    let device = Default::default();
    let is_own = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if is_own {
        if let Some(meta) = read_meta(path).map_err(|e| anyhow::anyhow!("{e}"))? {
            return Ok(load_model::<CpuTrain>(path, meta.purpose(), &device)?);
        }
    }
    match load_model::<CpuTrain>(path, Purpose::Grading, &device) {
        Ok(m) => Ok(m),
        Err(as_convnext) => load_model::<CpuTrain>(path, Purpose::Features, &device)
            .map_err(|as_densenet| {
                anyhow::anyhow!(
                    "{} is neither MyConvNeXt nor MyDenseNet weights:\n  as MyConvNeXt: {as_convnext}\n  as MyDenseNet: {as_densenet}",
                    path.display()
                )
            }),
    }
}

pub fn run(a: ExplainArgs) -> anyhow::Result<u8> {
    let loaded = load_either(&a.weights)?;
    let classes = ClassList(loaded.classes.clone());
    let mut targets = Vec::new();
    for t in &a.target {
        targets.push(Target::parse(t, &classes).ok_or_else(|| {
            anyhow::anyhow!(
                "--target {t}: not a class ({classes}) or a feature ({})",
                FEATURE_NAMES.join(", ")
            )
        })?);
    }
    let image = birads_data::image_ops::decode_path(&a.image)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.image.display()))?;
    let ex = explain(
        &loaded.model,
        &loaded.preprocess,
        &image,
        None,
        &targets,
        &Default::default(),
    )?;
    let caption = match loaded.model.purpose() {
        Purpose::Grading => {
            let best = birads_infer::predict::argmax(&ex.probabilities);
            let all: Vec<String> = classes
                .names()
                .iter()
                .zip(&ex.probabilities)
                .map(|(c, p)| format!("{c} {p:.2}"))
                .collect();
            format!(
                "{}: BI-RADS {} (p {:.2})   [{}]",
                a.image.file_name().unwrap_or_default().to_string_lossy(),
                classes.name(best).unwrap_or("?"),
                ex.probabilities[best],
                all.join(", ")
            )
        }
        Purpose::Features => {
            let all: Vec<String> = FEATURE_NAMES
                .iter()
                .zip(&ex.probabilities)
                .map(|(f, p)| format!("{f} {p:.2}"))
                .collect();
            format!(
                "{}: P(suspicious finding) {}",
                a.image.file_name().unwrap_or_default().to_string_lossy(),
                all.join(", ")
            )
        }
    };
    println!("{caption}");
    for cam in &ex.cams {
        println!(
            "Grad-CAM {}: score {:.3} on a {}×{} feature map",
            cam.target.describe(&classes),
            cam.score,
            cam.feature_size[0],
            cam.feature_size[1]
        );
    }
    let fig = figure(&ex, &classes, &caption).map_err(|e| anyhow::anyhow!("drawing: {e}"))?;
    let mut png = Vec::new();
    fig.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    if let Some(parent) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    birads_data::atomic::write_atomic(&a.out, &png)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!("wrote {}", a.out.display());
    Ok(0)
}
