//! `birads predict`: the competition entry point (the original `run.py`), batched.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use birads_data::readers::list_images;
use birads_data::{ImageSource, Sample};
use birads_infer::csvout::{write_cla_pre, write_cla_prob, write_fea_pre, write_fea_prob};
use birads_infer::loaded::load_model;
use birads_infer::Predictor;
use birads_model::checkpoint::ModelKind;
use birads_model::fast::FastModel;
use birads_model::Cpu;
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
    /// BI-RADS weights: the original MyConv.pth, or a birads checkpoint (.safetensors).
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
    #[arg(long, value_enum, default_value_t = Engine::Fast)]
    pub engine: Engine,
}

/// Which code runs the models at inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// `birads_model::fast`: channels-last, fused, BatchNorm folded.
    Fast,
    /// burn's CPU backend, the same modules training uses.
    Burn,
}

fn samples(files: Vec<PathBuf>) -> Vec<Sample> {
    files
        .into_iter()
        .map(|p| Sample::unlabelled(ImageSource::Path(p), "predict"))
        .collect()
}

/// Model, preprocessing and class names for one weights file.
pub(crate) fn predictor(
    path: &Path,
    kind: ModelKind,
    tta: bool,
    engine: Engine,
) -> anyhow::Result<(Predictor<Cpu>, Vec<String>)> {
    let device = Default::default();
    let loaded = load_model::<Cpu>(path, kind, &device)?;
    let fast = (engine == Engine::Fast).then(|| FastModel::from_model(&loaded.model));
    Ok((
        Predictor {
            model: loaded.model,
            preprocess: loaded.preprocess,
            device,
            tta,
            fast,
        },
        loaded.classes,
    ))
}

/// Run `work` with a progress bar on a terminal (nothing otherwise); `work` gets a callback
/// taking the number of images done.
fn with_progress<T>(len: usize, what: &str, work: impl FnOnce(&mut dyn FnMut(usize)) -> T) -> T {
    let bar = (std::io::stderr().is_terminal() && len > 0).then(|| {
        let bar = indicatif::ProgressBar::new(len as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(what.to_string());
        bar
    });
    let out = work(&mut |done| {
        if let Some(b) = &bar {
            b.set_position(done as u64)
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    out
}

/// Name every image left out, and count them.
fn report_skipped(failures: &[birads_data::Problem]) -> usize {
    for f in failures {
        eprintln!("skipped {}: {}", f.item, f.reason);
    }
    failures.len()
}

pub fn run(a: PredictArgs) -> anyhow::Result<u8> {
    if a.cla_weights.is_none() && a.fea_weights.is_none() {
        anyhow::bail!(
            "no weights given: pass --cla-weights MyConv.pth (BI-RADS) and/or --fea-weights MyDense.pth (features) — \
             the original .pth files work as they are, and `birads demo` trains small ones under out/demo"
        );
    }
    anyhow::ensure!(a.input.is_dir(), "{}: not a folder", a.input.display());
    let (cla_dir, fea_dir) = (a.input.join("cla"), a.input.join("fea"));
    let split = cla_dir.is_dir() || fea_dir.is_dir();
    let mut problems = Vec::new();
    let list =
        |d: &Path, problems: &mut Vec<birads_data::Problem>| -> anyhow::Result<Vec<PathBuf>> {
            if d.is_dir() {
                list_images(d, problems).map_err(|e| anyhow::anyhow!("{e}"))
            } else {
                Ok(Vec::new())
            }
        };
    let (cla_files, fea_files) = if split {
        (
            list(&cla_dir, &mut problems)?,
            list(&fea_dir, &mut problems)?,
        )
    } else {
        let all = list(&a.input, &mut problems)?;
        (all.clone(), all)
    };
    // The CSVs hold names as text: a name that is not UTF-8 cannot be written as it is.
    let mut seen = std::collections::BTreeSet::new();
    for f in cla_files.iter().chain(&fea_files) {
        if f.file_name().is_some_and(|n| n.to_str().is_none()) && seen.insert(f.clone()) {
            problems.push(birads_data::Problem::warning(
                f.display(),
                "file name is not valid UTF-8: the CSVs show it with U+FFFD in place of the bad bytes",
            ));
        }
    }
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    let t = std::time::Instant::now();
    // Entries the listing could not read (e.g. a symlink loop) count as skipped images.
    let mut skipped = problems
        .iter()
        .filter(|p| p.severity == birads_data::Severity::Error)
        .count();
    let mut summary = Vec::new();
    for p in &problems {
        eprintln!("{p}");
    }
    // The feature model loads on another thread while the BI-RADS model loads and runs:
    // reading a checkpoint is single-threaded, and cold start is mostly loading.
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut fea_loader = a.fea_weights.as_ref().map(|w| {
            let (tta, engine) = (a.tta, a.engine);
            scope.spawn(move || predictor(w, ModelKind::DenseNet, tta, engine))
        });
        match &a.cla_weights {
            Some(w) => {
                let (pred, classes) = predictor(w, ModelKind::ConvNeXt, a.tta, a.engine)?;
                let run = with_progress(cla_files.len(), "BI-RADS", |tick| {
                    pred.classify(samples(cla_files), a.batch_size, tick)
                });
                skipped += report_skipped(&run.failures);
                write_cla_pre(&a.output.join("cla_pre.csv"), &run.predictions)?;
                if a.probabilities {
                    write_cla_prob(&a.output.join("cla_prob.csv"), &classes, &run.predictions)?;
                }
                summary.push(format!("{} BI-RADS", run.predictions.len()));
            }
            None if !cla_files.is_empty() && split => eprintln!(
                "warning: {} has images but no --cla-weights was given: skipped",
                cla_dir.display()
            ),
            None => {}
        }
        match &a.fea_weights {
            Some(w) => {
                let (pred, _) = fea_loader
                    .take()
                    .expect("started when there are feature weights")
                    .join()
                    .map_err(|_| anyhow::anyhow!("loading {} panicked", w.display()))??;
                let run = with_progress(fea_files.len(), "features", |tick| {
                    pred.features(samples(fea_files), a.batch_size, tick)
                });
                skipped += report_skipped(&run.failures);
                write_fea_pre(&a.output.join("fea_pre.csv"), &run.predictions)?;
                if a.probabilities {
                    write_fea_prob(&a.output.join("fea_prob.csv"), &run.predictions)?;
                }
                summary.push(format!("{} feature", run.predictions.len()));
            }
            None if !fea_files.is_empty() && split => eprintln!(
                "warning: {} has images but no --fea-weights was given: skipped",
                fea_dir.display()
            ),
            None => {}
        }
        Ok(())
    })?;
    println!(
        "predicted {} images in {:.1} s, {skipped} skipped; CSVs in {}",
        summary.join(" + "),
        t.elapsed().as_secs_f32(),
        a.output.display()
    );
    Ok(if skipped > 0 { crate::EXIT_SKIPPED } else { 0 })
}
