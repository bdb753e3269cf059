//! `birads`: BI-RADS grading and lesion-feature recognition for breast ultrasound.
//!
//! Exit codes: 0 all good; 1 usage or fatal error (and `data check` finding errors);
//! 2 finished but some items were skipped.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bench_compare;
mod bench_device;
mod bench_matmuls;
mod cv;
mod data;
mod demo;
mod device;
mod eval;
mod explain;
mod export;
mod fuse;
mod model;
mod predict;
mod preview;
mod serve;
mod synth;
mod train;

/// mimalloc instead of the C library's allocator where the GPU backend is built in. On the GPU
/// a training step can go no faster than the host work that issues it, and burn's autodiff,
/// burn-fusion and cubecl allocate for every tensor operation: with mimalloc a MyDenseNet
/// step's work on burn-fusion's thread fell about 5 % and on cubecl's server thread about
/// 10 % (`scripts/cubecl_check.sh --host`, three runs each, alternating). The CPU build keeps
/// the C library's: there mimalloc changed neither predict's time nor training's images/s,
/// and doubled predict's peak memory (44 → 96 MB on 64 images).
#[cfg(feature = "cuda")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Finished, but some items were skipped (reported on stderr).
pub const EXIT_SKIPPED: u8 = 2;

#[derive(Parser)]
#[command(
    name = "birads",
    version,
    about = "BI-RADS grading (2, 3, 4A, 4B, 4C, 5) and lesion features (boundary, calcification, direction, shape) for breast ultrasound",
    long_about = None,
    after_help = "Exit codes: 0 all good, 1 usage or fatal error (or `data check` found errors), 2 finished but some items were skipped.\nLogs: set RUST_LOG (e.g. RUST_LOG=debug)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the built-in demonstration end to end on synthetic data.
    Demo(demo::DemoArgs),
    /// Write a synthetic ultrasound dataset in the competition layout (plus a labelled testA).
    Synth(synth::SynthArgs),
    /// Validate datasets and make group-aware splits.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Write PNGs of augmented training samples with the lesion box drawn.
    Preview(preview::PreviewArgs),
    /// Train MyConvNeXt (cls) or MyDenseNet (fea) with the original recipe; resumable.
    Train(train::TrainArgs),
    /// Cross-validate a BI-RADS recipe from a partition file (e.g. BUS-BRA's folds-5.csv):
    /// per fold train, choose on validation, test; one report with mean ± sd.
    Cv(cv::CvArgs),
    /// The competition entry point: predict BI-RADS (cla_pre.csv) and features (fea_pre.csv).
    Predict(predict::PredictArgs),
    /// Learn the fused category from both models' outputs on BI-RADS-labelled images
    /// (calibrated logistic regression; measured on held-out patients).
    Fuse(fuse::FuseArgs),
    /// Evaluate predictions against ground truth: metrics, competition score, HTML report.
    Eval(eval::EvalArgs),
    /// Grad-CAM: which parts of an image drove a BI-RADS class or a lesion feature.
    Explain(explain::ExplainArgs),
    /// Export a model to ONNX (original weights, birads checkpoints or the built-in model).
    Export(export::ExportArgs),
    /// Describe the models: architecture, parameter counts, output shapes.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// HTTP API and web page: predict and explain uploaded images (JPEG, PNG, DICOM).
    Serve(serve::ServeArgs),
    /// Measure speed (images/s) beside the original Python implementation.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Log levels unless `RUST_LOG` says otherwise: birads' own messages from `info`, other
/// crates' from `warn` (the GPU runtimes describe every adapter and device at `info`).
const LOG_LEVELS: &str =
    "warn,birads=info,birads_data=info,birads_model=info,birads_infer=info,birads_train=info";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(LOG_LEVELS)),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    let cli = Cli::parse();
    // birads' own backward passes and kernels on the GPU backends (see birads_model::depthwise).
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    birads_model::install_gpu_ops();
    let result = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Data(c) => data::run(c),
        Command::Preview(a) => preview::run(a),
        Command::Train(a) => train::run(a),
        Command::Cv(a) => cv::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Fuse(a) => fuse::run(a),
        Command::Explain(a) => explain::run(a),
        Command::Export(a) => export::run(a),
        Command::Model(c) => model::run(c),
        Command::Serve(a) => serve::run(a),
        Command::Bench(c) => bench::run(c),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Read a dataset, turning a fatal reader error into a friendly message.
pub fn read_dataset(path: &std::path::Path) -> anyhow::Result<birads_data::Dataset> {
    birads_data::read_dataset(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Default output folder under the current directory.
pub fn default_out(name: &str) -> PathBuf {
    PathBuf::from("out").join(name)
}
