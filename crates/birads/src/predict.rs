//! `birads predict`: the competition entry point (the original `run.py`), batched.

use std::io::IsTerminal;
use std::path::PathBuf;

use birads_infer::folder::{predict_folder, Engine, FolderOptions, Stage};
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
}

/// Which code runs the models at inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineArg {
    /// `birads_model::fast`: channels-last, fused, BatchNorm folded.
    Fast,
    /// burn's CPU backend, the same modules training uses.
    Burn,
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

pub fn run(a: PredictArgs) -> anyhow::Result<u8> {
    let opts = FolderOptions {
        input: a.input,
        output: a.output,
        cla_weights: a.cla_weights,
        fea_weights: a.fea_weights,
        probabilities: a.probabilities,
        batch_size: a.batch_size,
        tta: a.tta,
        engine: match a.engine {
            EngineArg::Fast => Engine::Fast,
            EngineArg::Burn => Engine::Burn,
        },
    };
    let t = std::time::Instant::now();
    let s = with_progress(|tick| predict_folder(&opts, tick))?;
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
    Ok(if s.skipped.is_empty() {
        0
    } else {
        crate::EXIT_SKIPPED
    })
}
