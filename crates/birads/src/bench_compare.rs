//! `birads bench compare` and `birads bench train`: birads against the original PyTorch
//! pipeline and ONNX Runtime, each measured in its own process (wall time and peak resident
//! memory from `wait4`), runs interleaved, medians reported in one table with ratios.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use birads_model::fast::train::{OptimConfig, UpdateRule};
use birads_model::{MyConvNeXtConfig, MyDenseNetConfig};
use birads_train::fast::FastBackbone;
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;

use crate::bench::median;
use crate::device::{on_backend, DeviceArg, OnBackend, PrecisionArg};
use crate::train::{amp_needs_burn, TrainEngineArg};

pub(crate) const PY_PIPELINE: &str = include_str!("../../../scripts/bench_pipeline.py");
pub(crate) const PY_MODEL_DEFS: &str = include_str!("../../../scripts/make_model_fixtures.py");

#[derive(Args)]
pub struct CompareArgs {
    /// Images for the testB-like folder (default: BUS-BRA's images in ../shared, else
    /// synthetic ones).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Images in each of cla/ and fea/.
    #[arg(long, default_value_t = 40)]
    pub count: usize,
    /// Runs of each pipeline (interleaved); medians are reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// birads' and ONNX Runtime's batch size.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Python with torch, torchvision, pillow, onnx and onnxruntime.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Training benchmark batch size and image side (0: skip the training rows).
    #[arg(long, default_value_t = 8)]
    pub train_batch: usize,
    #[arg(long, default_value_t = 224)]
    pub train_size: usize,
    /// Keep the working folder (weights, test folder, outputs) here instead of a temp dir.
    #[arg(long)]
    pub keep: Option<PathBuf>,
}

#[derive(Args)]
pub struct TrainBenchArgs {
    /// Models: convnext, densenet.
    #[arg(long, value_delimiter = ',', default_value = "convnext,densenet")]
    pub models: Vec<String>,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Timed runs (each at least one second and one step); medians are reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Untimed steps first (kernel compilation and autotuning on CUDA).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
    /// Python with torch for the side-by-side figure (PyTorch eager; with --device cuda
    /// and --precision bf16, autocast bf16 = AMP).
    #[arg(long, default_value = "python3")]
    pub python: String,
    #[arg(long)]
    pub no_python: bool,
    /// birads' training path: `fast` (the dedicated CPU backbone, CPU only) or `burn`
    /// (burn's autodiff on the chosen device) [default: fast on the CPU, burn on CUDA].
    #[arg(long, value_enum)]
    pub engine: Option<TrainEngineArg>,
    /// CUDA without burn's kernel fusion (each tensor operation its own launch), to see what
    /// fusion buys.
    #[arg(long)]
    pub no_fusion: bool,
    /// Also time the phases of a step (forward, backward, optimiser; burn engine).
    #[arg(long)]
    pub phases: bool,
}

impl TrainBenchArgs {
    fn engine(&self) -> TrainEngineArg {
        self.engine.unwrap_or(if self.device.is_gpu() {
            TrainEngineArg::Burn
        } else {
            TrainEngineArg::Fast
        })
    }
}

/// Wall seconds and peak resident set (MiB) of one child process.
struct Measured {
    wall: f64,
    max_rss_mib: f64,
    ok: bool,
}

/// Run `cmd` to completion and measure it: wall clock around spawn..exit, `ru_maxrss` of
/// the child from `wait4` (std's `wait` drops the rusage).
fn measure(cmd: &mut Command) -> anyhow::Result<Measured> {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            use std::io::Read;
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain FFI call with valid out-pointers; the child is ours and not yet reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = t.elapsed().as_secs_f64();
    let err = reader.join().unwrap_or_default();
    if r != pid {
        bail!("wait4 failed for {cmd:?}");
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) <= 2;
    if !ok {
        eprintln!(
            "{cmd:?} failed: {}",
            err.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(Measured {
        wall,
        max_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        ok,
    })
}

/// A testB-like folder: `count` images in cla/ and the next `count` in fea/.
fn test_folder(src: &Path, dst: &Path, count: usize) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let files = birads_data::readers::list_images(src, &mut problems)
        .map_err(|e| anyhow::anyhow!("{}: {e}", src.display()))?;
    if files.len() < 2 * count {
        bail!(
            "{} has {} images, {} needed",
            src.display(),
            files.len(),
            2 * count
        );
    }
    for (part, chunk) in ["cla", "fea"].iter().zip(files.chunks(count)) {
        let dir = dst.join(part);
        std::fs::create_dir_all(&dir)?;
        for f in chunk {
            std::fs::copy(f, dir.join(f.file_name().expect("a file")))?;
        }
    }
    Ok(())
}

struct Pipelines {
    exe: PathBuf,
    python: String,
    script: PathBuf,
    weights: PathBuf,
    batch: usize,
}

impl Pipelines {
    fn birads(&self, input: &Path, out: &Path) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("predict")
            .arg("--input")
            .arg(input)
            .arg("--output")
            .arg(out)
            .arg("--cla-weights")
            .arg(self.weights.join("MyConv.pth"))
            .arg("--fea-weights")
            .arg(self.weights.join("MyDense.pth"))
            .args(["--batch-size", &self.batch.to_string()]);
        c
    }

    fn python(&self, which: &str, input: &Path, out: &Path) -> Command {
        let mut c = Command::new(&self.python);
        c.arg(&self.script)
            .arg(which)
            .arg("--input")
            .arg(input)
            .arg("--weights")
            .arg(&self.weights)
            .arg("--output")
            .arg(out)
            .args(["--batch-size", &self.batch.to_string()]);
        c
    }

    /// Median wall seconds and peak MiB of each pipeline over `runs` interleaved runs.
    fn time_all(&self, input: &Path, out: &Path, runs: usize) -> anyhow::Result<[(f64, f64); 3]> {
        let mut m: [Vec<Measured>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..runs {
            m[0].push(measure(&mut self.birads(input, &out.join("birads")))?);
            m[1].push(measure(&mut self.python(
                "runpy",
                input,
                &out.join("runpy"),
            ))?);
            m[2].push(measure(&mut self.python("ort", input, &out.join("ort")))?);
        }
        if m.iter().flatten().any(|r| !r.ok) {
            bail!("a pipeline failed (see above)");
        }
        Ok(m.map(|v| {
            (
                median(v.iter().map(|r| r.wall).collect()),
                median(v.iter().map(|r| r.max_rss_mib).collect()),
            )
        }))
    }
}

/// Share of images whose predicted labels agree between two `*_pre.csv` outputs.
fn agreement(a: &Path, b: &Path) -> anyhow::Result<f64> {
    let read = |d: &Path| -> anyhow::Result<Vec<Vec<String>>> {
        let mut rows = Vec::new();
        for f in ["cla_pre.csv", "fea_pre.csv"] {
            let mut r = csv::Reader::from_path(d.join(f))?;
            for rec in r.records() {
                rows.push(rec?.iter().map(str::to_string).collect());
            }
        }
        rows.sort();
        Ok(rows)
    };
    let (x, y) = (read(a)?, read(b)?);
    if x.len() != y.len() || x.is_empty() {
        bail!(
            "different image sets in {} and {}",
            a.display(),
            b.display()
        );
    }
    Ok(x.iter().zip(&y).filter(|(p, q)| p == q).count() as f64 / x.len() as f64)
}

/// A training row: the model, birads' images/s and PyTorch's (when it ran).
type TrainRow = (String, f64, Option<f64>);

/// The issue-8 table: predict end to end and cold, against run.py and ONNX Runtime, and
/// training against PyTorch eager; printed as markdown.
pub fn compare(a: CompareArgs) -> anyhow::Result<u8> {
    let tmp = tempfile::tempdir()?;
    let work = a.keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&work)?;
    let (script, weights) = python_setup(&a.python, &work)?;
    let src = source_images(&a, &work)?;
    let folder = work.join("testB");
    let single = work.join("single");
    let _ = std::fs::remove_dir_all(&folder);
    let _ = std::fs::remove_dir_all(&single);
    test_folder(&src, &folder, a.count)?;
    test_folder(&src, &single, 1)?;
    let p = Pipelines {
        exe: std::env::current_exe()?,
        python: a.python.clone(),
        script,
        weights,
        batch: a.batch_size,
    };
    let threads = rayon::current_num_threads();
    println!(
        "predict: {} + {} images from {}, {} interleaved runs per pipeline, {threads} cores …",
        a.count,
        a.count,
        src.display(),
        a.runs
    );
    let out = work.join("out");
    let predict = p.time_all(&folder, &out, a.runs)?;
    let agree_runpy = agreement(&out.join("birads"), &out.join("runpy"))?;
    let agree_ort = agreement(&out.join("birads"), &out.join("ort"))?;
    println!("cold start: one image in cla/ and one in fea/ …");
    let cold = p.time_all(&single, &work.join("out1"), a.runs)?;
    let train = match a.train_batch {
        0 => None,
        _ => Some(training_rows(&a, &work)?),
    };
    print_table(&a, predict, cold, train);
    println!(
        "labels equal to run.py's: {:.1} %, to ONNX Runtime's: {:.1} % (same weights; ties within float rounding may differ)",
        100.0 * agree_runpy,
        100.0 * agree_ort
    );
    println!("ratios: speed = their time ÷ ours (higher is better); memory and cold start = ours ÷ theirs (lower is better); medians of {} runs", a.runs);
    Ok(0)
}

/// The Python side in `work`: the pipeline script, and the original-architecture weights
/// (.pth) with their ONNX exports made by it. Returns (script, weights folder).
fn python_setup(python: &str, work: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let script = work.join("bench_pipeline.py");
    std::fs::write(&script, PY_PIPELINE)?;
    std::fs::write(work.join("make_model_fixtures.py"), PY_MODEL_DEFS)?;
    let weights = work.join("weights");
    println!("setting up: original-architecture weights (.pth) and their ONNX exports …");
    let o = Command::new(python)
        .arg(&script)
        .args(["setup", "--out"])
        .arg(&weights)
        .output()
        .with_context(|| format!("cannot run {python}"))?;
    if !o.status.success() {
        bail!(
            "{python} bench_pipeline.py setup failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok((script, weights))
}

/// Where the test images come from: `--images`, else BUS-BRA beside the checkout, else a
/// synthetic set made in `work`.
fn source_images(a: &CompareArgs, work: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = &a.images {
        return Ok(p.clone());
    }
    let busbra = Path::new("../shared/data/bus-bra/images");
    if busbra.is_dir() {
        return Ok(busbra.to_path_buf());
    }
    let dir = work.join("synth");
    let cfg = birads_data::synth::SynthConfig {
        seed: 7,
        train_cls: 0,
        train_fea: 0,
        test_cls: 2 * a.count,
        test_fea: 0,
        ..Default::default()
    };
    birads_data::synth::synthesize(&dir, &cfg)?;
    Ok(dir.join("testA/cla"))
}

/// Training images/s of both models on the CPU's fast engine beside PyTorch eager.
fn training_rows(a: &CompareArgs, work: &Path) -> anyhow::Result<Vec<TrainRow>> {
    println!(
        "training: batch {}, {}×{}, AdamW steps in train mode …",
        a.train_batch, a.train_size, a.train_size
    );
    let args = TrainBenchArgs {
        models: vec!["convnext".into(), "densenet".into()],
        batch: a.train_batch,
        size: a.train_size,
        runs: a.runs,
        warmup: 1,
        device: DeviceArg::Cpu,
        precision: PrecisionArg::F32,
        python: a.python.clone(),
        no_python: false,
        engine: Some(TrainEngineArg::Fast),
        no_fusion: false,
        phases: false,
    };
    train_rows(&args, work)
}

/// The markdown table: `predict` and `cold` are (seconds, peak MiB) of birads, run.py and
/// ONNX Runtime.
fn print_table(
    a: &CompareArgs,
    predict: [(f64, f64); 3],
    cold: [(f64, f64); 3],
    train: Option<Vec<TrainRow>>,
) {
    let ([b, r, o], [cb, cr, co]) = (predict, cold);
    let n = (2 * a.count) as f64;
    println!();
    println!("| measure | birads | PyTorch (run.py / eager) | ONNX Runtime | birads ÷ PyTorch | birads ÷ ORT | target |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| predict {} images end to end (img/s) | {:.2} | {:.2} | {:.2} | {:.2}× | {:.2}× | ≥ 1.5× PyTorch, ≥ 1.0× ORT |",
        2 * a.count,
        n / b.0,
        n / r.0,
        n / o.0,
        r.0 / b.0,
        o.0 / b.0
    );
    println!(
        "| peak memory during predict (MiB) | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | ≤ 0.7 PyTorch |",
        b.1,
        r.1,
        o.1,
        b.1 / r.1,
        b.1 / o.1
    );
    println!(
        "| cold start, 1 + 1 images (s) | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | ≤ 0.3 PyTorch |",
        cb.0,
        cr.0,
        co.0,
        cb.0 / cr.0,
        cb.0 / co.0
    );
    for (name, ours, theirs) in train.unwrap_or_default() {
        println!(
            "| training {name} (img/s, batch {}, {}²) | {ours:.2} | {} | – | {} | – | ≥ 1.0× PyTorch |",
            a.train_batch,
            a.train_size,
            theirs.map(|t| format!("{t:.2}")).unwrap_or("–".into()),
            theirs
                .map(|t| format!("{:.2}×", ours / t))
                .unwrap_or("–".into()),
        );
    }
    println!();
}

/// Milliseconds of a burn training step's phases (forward with the loss, backward, optimiser
/// update), each ended by a device sync, medians over `steps` steps; printed. The syncs stop
/// the device from overlapping phases, so the sum exceeds an unsynced step a little.
fn phases<B, M, O>(
    mut model: M,
    optim: &mut O,
    input: impl Fn() -> Tensor<B, 4>,
    loss_of: &dyn Fn(Tensor<B, 2>) -> Tensor<B, 1>,
    steps: usize,
    device: &B::Device,
) -> M
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + birads_train::trainer::Net<B> + Clone + 'static,
    O: Optimizer<M, B>,
{
    let mut times: [Vec<f64>; 3] = Default::default();
    let lap = |t: &mut Instant, v: &mut Vec<f64>| {
        B::sync(device).ok();
        v.push(t.elapsed().as_secs_f64() * 1e3);
        *t = Instant::now();
    };
    for _ in 0..steps {
        B::sync(device).ok();
        let mut t = Instant::now();
        let loss = loss_of(model.logits(input()));
        lap(&mut t, &mut times[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        lap(&mut t, &mut times[1]);
        model = optim.step(1e-4, model, grads);
        lap(&mut t, &mut times[2]);
    }
    let [f, b, o] = times.map(median);
    println!("    phases (ms, medians of {steps}): forward + loss {f:.2}, backward {b:.2}, optimiser {o:.2}");
    model
}

/// Images/s of `steps` training steps of `model`, median over runs of ≥ 1 s.
fn train_rate<B, M>(mut model: M, a: &TrainBenchArgs, features: bool, device: &B::Device) -> f64
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + birads_train::trainer::Net<B> + Clone + 'static,
{
    use birads_train::benchmark;
    let (batch, size) = (a.batch, a.size);
    let mut optim = benchmark::optimizer::<B, M>();
    let x = benchmark::images::<B>(batch, size, device);
    let loss_of = |logits: Tensor<B, 2>| benchmark::loss(logits, features);
    let mut fast = (a.engine() == TrainEngineArg::Fast)
        .then(|| FastBackbone::new(&model, OptimConfig::new(UpdateRule::AdamW, 0.05)));
    let images: Vec<f32> = x.to_data().convert::<f32>().to_vec().expect("f32 images");
    let mut seed = 0u64;
    let mut step = |model: M| -> M {
        let model = match &mut fast {
            Some(f) => {
                seed += 1;
                let (logits, leaf) = f.forward(&model, &images, batch, size, seed, device);
                let grads = loss_of(logits).backward();
                f.step(&leaf, &grads, 1e-4);
                let grads = GradientsParams::from_grads(grads, &model);
                optim.step(1e-4, model, grads)
            }
            None => {
                let grads = GradientsParams::from_grads(
                    loss_of(model.logits(x.clone())).backward(),
                    &model,
                );
                optim.step(1e-4, model, grads)
            }
        };
        // Wait for the device (asynchronous backends) before the clock is read.
        B::sync(device).ok();
        model
    };
    // The first step on a GPU compiles every kernel and autotunes every convolution and
    // product (both cached on disk by cubecl, see README): its time is the first-run cost.
    let mut warm = Vec::new();
    for _ in 0..a.warmup.max(1) {
        let t = Instant::now();
        model = step(model);
        warm.push(format!("{:.2}", t.elapsed().as_secs_f64()));
    }
    println!("    warm-up steps (s): {}", warm.join(", "));
    let mut rates = Vec::new();
    for _ in 0..a.runs {
        let (mut n, t) = (0usize, Instant::now());
        while n == 0 || t.elapsed().as_secs_f64() < 1.0 {
            model = step(model);
            n += 1;
        }
        rates.push((n * batch) as f64 / t.elapsed().as_secs_f64());
    }
    if a.phases && fast.is_none() {
        model = phases(
            model,
            &mut optim,
            || x.clone(),
            &loss_of,
            a.runs.max(3),
            device,
        );
    }
    drop(model);
    let shown: Vec<String> = rates.iter().map(|r| format!("{r:.2}")).collect();
    println!("    birads runs (img/s): {}", shown.join(", "));
    median(rates)
}

fn birads_train_rate<B: AutodiffBackend>(name: &str, a: &TrainBenchArgs) -> f64 {
    let device = B::Device::default();
    B::seed(&device, 0);
    if name == "convnext" {
        let m = MyConvNeXtConfig::new()
            .with_dropout(0.05)
            .init::<B>(&device);
        train_rate::<B, _>(m, a, false, &device)
    } else {
        let m = MyDenseNetConfig::new().init::<B>(&device);
        train_rate::<B, _>(m, a, true, &device)
    }
}

/// birads' images/s for `name` on the device, precision and engine of `a`.
fn birads_rate(name: &str, a: &TrainBenchArgs) -> anyhow::Result<f64> {
    struct Rate<'a>(&'a str, &'a TrainBenchArgs);
    impl OnBackend for Rate<'_> {
        type Output = f64;
        fn run<B: AutodiffBackend>(self) -> anyhow::Result<f64> {
            Ok(birads_train_rate::<B>(self.0, self.1))
        }
    }
    amp_needs_burn(a.precision, a.engine() == TrainEngineArg::Burn)?;
    if a.device.is_gpu() && a.engine() == TrainEngineArg::Fast {
        bail!(
            "the fast training path runs on the CPU; use --engine burn with --device {}",
            a.device.name()
        );
    }
    on_backend(a.device, a.precision, a.no_fusion, Rate(name, a))
}

/// (model, birads img/s, PyTorch img/s) for each model.
fn train_rows(a: &TrainBenchArgs, work: &Path) -> anyhow::Result<Vec<TrainRow>> {
    let script = work.join("bench_pipeline.py");
    if !script.exists() {
        std::fs::write(&script, PY_PIPELINE)?;
        std::fs::write(work.join("make_model_fixtures.py"), PY_MODEL_DEFS)?;
    }
    let mut rows = Vec::new();
    for name in &a.models {
        let ours = birads_rate(name, a)?;
        let theirs = if a.no_python || !a.device.in_pytorch() {
            None
        } else {
            let mut c = Command::new(&a.python);
            c.arg(&script).args([
                "train",
                "--model",
                name,
                "--batch",
                &a.batch.to_string(),
                "--size",
                &a.size.to_string(),
                "--runs",
                &a.runs.to_string(),
                "--warmup",
                &a.warmup.max(1).to_string(),
            ]);
            if a.device.is_gpu() {
                c.args(["--device", a.device.name()]);
            } else {
                c.args(["--threads", &rayon::current_num_threads().to_string()]);
            }
            if a.precision != PrecisionArg::F32 {
                c.arg("--amp");
            }
            let o = c.output();
            crate::bench::python_json(&a.python, o).and_then(|v| v["img_s"].as_f64())
        };
        println!(
            "  {name}: birads {ours:.2} img/s, PyTorch {}",
            theirs
                .map(|t| format!("{t:.2} img/s"))
                .unwrap_or("–".into())
        );
        rows.push((name.clone(), ours, theirs));
    }
    Ok(rows)
}

pub fn train(a: TrainBenchArgs) -> anyhow::Result<u8> {
    a.device.ready_for(a.precision)?;
    let tmp = tempfile::tempdir()?;
    println!(
        "training benchmark: batch {}, {}×{}, {:?} {:?}, {} runs ≥ 1 s, medians",
        a.batch,
        a.size,
        a.size,
        a.device.name(),
        match a.precision {
            PrecisionArg::F32 => "f32",
            PrecisionArg::Bf16 => "bf16 (PyTorch: AMP autocast bf16)",
            PrecisionArg::Amp => "amp: f32 weights, bf16 products (PyTorch: AMP autocast bf16)",
        },
        a.runs
    );
    let rows = train_rows(&a, tmp.path())?;
    println!();
    println!("| model | batch | PyTorch (img/s) | birads (img/s) | birads ÷ PyTorch |");
    println!("|---|---|---|---|---|");
    for (name, ours, theirs) in rows {
        println!(
            "| {name} | {} | {} | {ours:.2} | {} |",
            a.batch,
            theirs.map(|t| format!("{t:.2}")).unwrap_or("–".into()),
            theirs
                .map(|t| format!("{:.2}×", ours / t))
                .unwrap_or("–".into())
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn measure_reports_exit_status_time_and_peak_memory() {
        let small = measure(&mut sh("exit 0")).unwrap();
        assert!(small.ok && small.wall > 0.0);
        assert!(!measure(&mut sh("exit 3")).unwrap().ok);
        // A shell holding a 40 MB string peaks well above an idle one.
        let big = measure(&mut sh(
            "a=$(head -c 40000000 /dev/zero | tr '\\0' x); test ${#a} -eq 40000000",
        ))
        .unwrap();
        assert!(big.ok);
        assert!(
            big.max_rss_mib > small.max_rss_mib + 30.0,
            "{} vs {} MiB",
            big.max_rss_mib,
            small.max_rss_mib
        );
        let slow = measure(&mut sh("sleep 0.3")).unwrap();
        assert!(slow.wall >= 0.3 && slow.wall < 5.0, "{}", slow.wall);
    }

    #[test]
    fn agreement_counts_equal_label_rows() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, cla: &str, fea: &str| {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cla_pre.csv"), cla).unwrap();
            std::fs::write(d.join("fea_pre.csv"), fea).unwrap();
            d
        };
        let fea = "img_name,boundary,calcification,direction,shape\nc.png,0,1,0,1\n";
        let a = write("a", "img_name,label\na.jpg,3\nb.jpg,0\n", fea);
        // Other row order, one label different.
        let b = write("b", "img_name,label\nb.jpg,0\na.jpg,4\n", fea);
        assert!((agreement(&a, &b).unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(agreement(&a, &a).unwrap(), 1.0);
        let c = write("c", "img_name,label\na.jpg,3\n", fea);
        assert!(agreement(&a, &c).is_err(), "different image sets");
    }

    #[test]
    fn test_folder_splits_images_between_cla_and_fea() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        for i in 0..5 {
            image::RgbImage::new(8, 8)
                .save(src.join(format!("{i}.png")))
                .unwrap();
        }
        let dst = dir.path().join("testB");
        test_folder(&src, &dst, 2).unwrap();
        let names = |p: &str| {
            let mut v: Vec<String> = std::fs::read_dir(dst.join(p))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names("cla"), ["0.png", "1.png"]);
        assert_eq!(names("fea"), ["2.png", "3.png"]);
        assert!(test_folder(&src, &dir.path().join("x"), 3).is_err());
    }
}
