//! `birads predict`: the competition entry point (the original `run.py`), batched.

use std::io::IsTerminal;
use std::path::PathBuf;

use std::ops::Not;

use anyhow::Context;
use birads_infer::assess_folder::{fused_predictions, write_fused, write_reports, ReportInputs};
use birads_infer::folder::{predict_folder, Engine, FolderOptions, FolderSummary, Stage};
use birads_infer::fusion::FusionModel;
use birads_infer::loaded::load_model;
use birads_model::builtin;
use birads_model::checkpoint::Purpose;
use birads_model::CpuTrain;
use clap::Args;

#[derive(Args)]
pub struct PredictArgs {
    /// A testB-like folder with cla/ and fea/ (each model on its own folder), or a flat
    /// folder of images (both models on every image).
    #[arg(long)]
    pub input: PathBuf,
    /// Where cla_pre.csv and fea_pre.csv go (default: the current folder, as run.py did).
    #[arg(long, default_value = ".")]
    pub output: PathBuf,
    /// BI-RADS weights: the original MyConv.pth, a birads checkpoint (.safetensors), or
    /// `builtin` (the built-in BUS-BRA model, used when no weights are given at all).
    #[arg(long)]
    pub cla_weights: Option<PathBuf>,
    /// Feature weights: the original MyDense.pth, or a birads checkpoint (.safetensors).
    #[arg(long)]
    pub fea_weights: Option<PathBuf>,
    /// Also write cla_prob.csv and fea_prob.csv (six decimals).
    #[arg(long)]
    pub probabilities: bool,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Test-time augmentation: average with the horizontally flipped image.
    #[arg(long)]
    pub tta: bool,
    /// Inference engine: the dedicated CPU path (`fast`) or burn's generic ops (`burn`);
    /// both give the same outputs to about 1e-6.
    #[arg(long, value_enum, default_value_t = EngineArg::Fast)]
    pub engine: EngineArg,
    /// Where the models run: the CPU (with --engine), `cuda`, the first NVIDIA GPU through
    /// burn's CUDA backend (a build with `--features cuda`), or `wgpu`, the first GPU burn's
    /// wgpu backend finds (`--features wgpu`); on a GPU the same outputs to about 1e-5.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: crate::device::DeviceArg,
    /// A fusion model from `birads fuse`: the fused category of every image both models saw,
    /// written to OUTPUT/fused/ (cla_pre.csv, cla_prob.csv; `birads eval --pred OUTPUT/fused`).
    #[arg(long)]
    pub fusion: Option<PathBuf>,
    /// Also write a printable one-page report per image (HTML, self-contained: image, crop
    /// box, Grad-CAM of the BI-RADS model, category and its meaning, descriptors in the
    /// lexicon's words, fused category, discordance flags) and index.html into this folder.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// Which code runs the models at inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineArg {
    /// `birads_model::fast`: channels-last, fused, BatchNorm folded.
    Fast,
    /// burn's CPU backend, the same modules training uses.
    Burn,
}

/// The inference engine for `--engine` on `--device`.
pub fn engine(engine: EngineArg, device: crate::device::DeviceArg) -> Engine {
    use crate::device::DeviceArg;
    match (device, engine) {
        (DeviceArg::Cuda, _) => Engine::Cuda,
        (DeviceArg::Wgpu, _) => Engine::Wgpu,
        (DeviceArg::Cpu, EngineArg::Fast) => Engine::Fast,
        (DeviceArg::Cpu, EngineArg::Burn) => Engine::Burn,
    }
}

/// Run `work` with a progress bar on a terminal (nothing otherwise); `work` gets a callback
/// taking the number of images done and the total.
fn with_progress<T>(work: impl FnOnce(&mut dyn FnMut(Stage, usize, usize)) -> T) -> T {
    let terminal = std::io::stderr().is_terminal();
    let mut bar: Option<(Stage, indicatif::ProgressBar)> = None;
    let out = work(&mut |stage, done, total| {
        if !terminal || total == 0 {
            return;
        }
        if bar.as_ref().map(|b| b.0) != Some(stage) {
            if let Some((_, b)) = bar.take() {
                b.finish_and_clear();
            }
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.set_message(match stage {
                Stage::Birads => "BI-RADS",
                Stage::Features => "features",
            });
            bar = Some((stage, b));
        }
        if let Some((_, b)) = &bar {
            b.set_position(done as u64);
        }
    });
    if let Some((_, b)) = bar {
        b.finish_and_clear();
    }
    out
}

/// The reports of `--report`; returns how many images had none.
fn reports(
    dir: &std::path::Path,
    opts: &FolderOptions,
    s: &FolderSummary,
    fusion: Option<&FusionModel>,
    fusion_path: Option<&std::path::Path>,
) -> anyhow::Result<usize> {
    let cls = s.classes.is_empty().not().then(|| {
        let w = opts
            .cla_weights
            .clone()
            .unwrap_or_else(|| builtin::KEYWORD.into());
        load_model::<CpuTrain>(&w, Purpose::Grading, &Default::default())
    });
    let explain = cls.transpose()?;
    let mut models: Vec<(String, String)> = Vec::new();
    let roles = ["BI-RADS model", "feature model"];
    let with_cls = !s.classes.is_empty();
    for (i, src) in s.sources.iter().enumerate() {
        let role = roles[if with_cls { i } else { 1 }];
        models.push((role.into(), src.clone()));
    }
    if let Some(p) = fusion_path {
        models.push(("fusion".into(), p.display().to_string()));
    }
    let inputs = ReportInputs {
        fusion,
        explain: explain.as_ref(),
        models,
    };
    let (written, failed) = write_reports(dir, &opts.input, s, &inputs, &mut |_, _| {})
        .with_context(|| format!("writing reports into {}", dir.display()))?;
    println!(
        "{} reports and index.html in {}{}",
        written.len() - 1,
        dir.display(),
        if failed > 0 {
            format!(" ({failed} images could not be reported)")
        } else {
            String::new()
        }
    );
    Ok(failed)
}

pub fn run(a: PredictArgs) -> anyhow::Result<u8> {
    a.device.ready()?;
    let opts = FolderOptions {
        input: a.input,
        output: a.output,
        cla_weights: a.cla_weights,
        fea_weights: a.fea_weights,
        probabilities: a.probabilities,
        batch_size: a.batch_size,
        tta: a.tta,
        engine: engine(a.engine, a.device),
        every_image: a.fusion.is_some() || a.report.is_some(),
    };
    let fusion = a.fusion.as_deref().map(FusionModel::load).transpose()?;
    if fusion.is_some() && opts.fea_weights.is_none() {
        anyhow::bail!("--fusion needs a feature model (--fea-weights) besides the BI-RADS model");
    }
    let t = std::time::Instant::now();
    let s = with_progress(|tick| predict_folder(&opts, tick))?;
    let mut failed = 0;
    if let Some(f) = &fusion {
        f.check_image_classes(&s.classes)?;
        let preds = fused_predictions(&s.outputs, f);
        let dir = opts.output.join("fused");
        write_fused(&dir, f, &preds).with_context(|| format!("writing {}", dir.display()))?;
        println!(
            "fused category of {} images in {}",
            preds.len(),
            dir.display()
        );
    }
    if let Some(dir) = &a.report {
        failed += reports(dir, &opts, &s, fusion.as_ref(), a.fusion.as_deref())?;
    }
    for n in &s.notes {
        println!("{n}");
    }
    // Entries the listing could not read are errors of the folder; the rest failed to decode.
    let (unreadable, undecodable) = s.skipped.split_at(s.unreadable);
    for f in unreadable {
        eprintln!("{f}");
    }
    for f in undecodable {
        eprintln!("skipped {}: {}", f.item, f.reason);
    }
    let mut done = Vec::new();
    if let Some(n) = s.birads {
        done.push(format!("{n} BI-RADS"));
    }
    if let Some(n) = s.features {
        done.push(format!("{n} feature"));
    }
    println!(
        "predicted {} images in {:.1} s, {} skipped; CSVs in {}",
        done.join(" + "),
        t.elapsed().as_secs_f32(),
        s.skipped.len(),
        opts.output.display()
    );
    Ok(if s.skipped.is_empty() && failed == 0 {
        0
    } else {
        crate::EXIT_SKIPPED
    })
}
