//! `birads bench device-check` and `birads bench infer`: is the GPU path right, and how fast
//! does it predict beside PyTorch on the same device.
//!
//! `device-check` runs one training-mode forward and backward of both models (dropout and
//! stochastic depth off, BatchNorm on batch statistics) on the CPU in f32 and on the chosen
//! device and precision, from the same weights and input, and compares the outputs and every
//! parameter gradient. `infer` times eval-mode forward passes with the probabilities read
//! back, as `predict` and `serve` run them.

use std::time::Instant;

use anyhow::{bail, Context};
use birads_model::adamw;
use birads_model::checkpoint::AnyModel;
use birads_model::gradcheck::{
    bf16_snapshot, compare, convnext_config, densenet_config, gradient_cosine, moved, output_of,
    snapshot, Difference, Snapshot,
};
use birads_model::{CpuTrain, MyConvNeXtConfig, MyDenseNetConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, FloatDType};
use clap::Args;

use crate::bench::median;
use crate::device::{on_backend, DeviceArg, OnBackend, PrecisionArg};

#[derive(Args)]
pub struct DeviceCheckArgs {
    #[arg(long, value_enum, default_value = "cuda")]
    pub device: DeviceArg,
    /// f32 must match the CPU within --tolerance; amp and bf16 are held to agreement limits
    /// (see the output).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
    /// Models: convnext, densenet.
    #[arg(long, value_delimiter = ',', default_value = "convnext,densenet")]
    pub models: Vec<String>,
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Reduced widths and depths (seconds on a CPU) instead of the original architectures.
    #[arg(long)]
    pub small: bool,
    /// Largest relative difference allowed in f32 (max |got − want| / max |want| per tensor).
    #[arg(long, default_value_t = 1e-4)]
    pub tolerance: f64,
}

/// What the device must reach against the CPU's f32 pass.
struct Limits {
    /// Per tensor: max |got − want| / max |want|.
    each: Option<f64>,
    /// The output's relative difference.
    output: f64,
    /// Cosine similarity of all gradients laid end to end.
    all_gradients: f64,
}

/// f32: the tolerance on every tensor. Low precision: bf16 keeps 8 bits of mantissa, and where
/// rounding makes two values equal a max-pool or CBAM's max picks another element, so a
/// DenseNet's single gradients can move by tens of percent (crates/birads-model/tests/amp.rs).
/// The yardstick is then the CPU's own pass in the same precision (amp: autocast; bf16: the
/// model, input and output weights in bf16): the device may differ from f32 at most twice as
/// much as that pass does (plus a little), in the output and in the gradients' cosine taken as
/// a whole.
fn limits(a: &DeviceCheckArgs, cpu_low: Option<(f64, f64)>) -> Limits {
    match cpu_low {
        None => Limits {
            each: Some(a.tolerance),
            output: a.tolerance,
            all_gradients: 1.0 - a.tolerance,
        },
        Some((output, cosine)) => Limits {
            each: None,
            output: (2.0 * output).max(1e-3),
            all_gradients: 1.0 - (2.0 * (1.0 - cosine) + 1e-3),
        },
    }
}

fn model(name: &str, small: bool) -> anyhow::Result<AnyModel<CpuTrain>> {
    let device = Default::default();
    Ok(match name {
        "convnext" => AnyModel::ConvNeXt(convnext_config(small).init(&device)),
        "densenet" => AnyModel::DenseNet(densenet_config(small).init(&device)),
        other => bail!("unknown model {other} (convnext, densenet)"),
    })
}

fn snapshot_on<B: AutodiffBackend>(
    m: &AnyModel<CpuTrain>,
    x: &TensorData,
    r: &TensorData,
    dir: &std::path::Path,
) -> anyhow::Result<Snapshot> {
    let model = moved::<_, B>(m, dir)?;
    let device = Default::default();
    let x = Tensor::<B, 4>::from_data(x.clone(), &device);
    let r = Tensor::<B, 2>::from_data(r.clone(), &device);
    // The second pass, as every training step after the first runs: the first autotunes and
    // learns which weights amp casts, the second casts them at once (`birads_model::amp`).
    snapshot(&model, x.clone(), r.clone());
    Ok(snapshot(&model, x, r))
}

/// The snapshot of `m` on the backend `OnBackend` is run on.
struct DeviceSnapshot<'a> {
    m: &'a AnyModel<CpuTrain>,
    x: &'a TensorData,
    r: &'a TensorData,
    dir: &'a std::path::Path,
}

impl OnBackend for DeviceSnapshot<'_> {
    type Output = Snapshot;
    fn run<B: AutodiffBackend>(self) -> anyhow::Result<Snapshot> {
        snapshot_on::<B>(self.m, self.x, self.r, self.dir)
    }
}

/// One model: prints the comparison, returns whether it holds.
fn check_model(a: &DeviceCheckArgs, name: &str, dir: &std::path::Path) -> anyhow::Result<bool> {
    let device = Default::default();
    <CpuTrain as Backend>::seed(&device, 11);
    let m = model(name, a.small)?;
    let x = Tensor::<CpuTrain, 4>::random(
        [a.batch, 3, a.size, a.size],
        Distribution::Uniform(-2.0, 2.0),
        &device,
    );
    let width = output_of(&m, x.clone()).dims()[1];
    let r =
        Tensor::<CpuTrain, 2>::random([a.batch, width], Distribution::Uniform(-1.0, 1.0), &device);
    let (xd, rd) = (x.to_data(), r.to_data());
    let t = Instant::now();
    let want = snapshot(&m, x.clone(), r.clone());
    let cpu_s = t.elapsed().as_secs_f64();
    let cpu_low = yardstick(a.precision, &m, x, r, &want, dir)?;
    let t = Instant::now();
    let work = DeviceSnapshot {
        m: &m,
        x: &xd,
        r: &rd,
        dir,
    };
    let got = on_backend(a.device, a.precision, false, work)?;
    let device_s = t.elapsed().as_secs_f64();
    let verdict = Verdict::of(a, &got, &want, cpu_low)?;
    let yardstick = cpu_low
        .map(|(o, c)| format!("{o:.2e} / {c:.6}"))
        .unwrap_or("–".into());
    let (worst, least) = (&verdict.worst, &verdict.least);
    println!(
        "| {name} | {} | {:.2e} | {:.2e} ({}) | {:.6} ({}) | {:.6} | {yardstick} | {cpu_s:.1} s / {device_s:.1} s | {} |",
        got.grads.len(),
        verdict.output,
        worst.relative,
        worst.name,
        least.cosine,
        least.name,
        verdict.cosine,
        if verdict.ok { "ok" } else { "FAILED" }
    );
    for d in verdict.over.iter().take(10) {
        println!(
            "    over {:.1e}: {} ({:.2e})",
            a.tolerance, d.name, d.relative
        );
    }
    for n in verdict.wrong_dtype.iter().take(5) {
        println!("    gradient of {n} is in none of {:?}", verdict.expected);
    }
    Ok(verdict.ok)
}

/// Low precision: how far the CPU's own pass in that precision is from f32 (`want`), as the
/// output's relative difference and all gradients' cosine: the yardstick of [`limits`].
fn yardstick(
    precision: PrecisionArg,
    m: &AnyModel<CpuTrain>,
    x: Tensor<CpuTrain, 4>,
    r: Tensor<CpuTrain, 2>,
    want: &Snapshot,
    dir: &std::path::Path,
) -> anyhow::Result<Option<(f64, f64)>> {
    let low = match precision {
        PrecisionArg::F32 => return Ok(None),
        PrecisionArg::Amp => {
            let _amp = birads_model::amp::autocast(FloatDType::BF16);
            snapshot(m, x, r)
        }
        PrecisionArg::Bf16 => bf16_snapshot(m, x, r, dir)?,
    };
    let d = compare(&low, want).map_err(anyhow::Error::msg)?;
    Ok(Some((d[0].relative, gradient_cosine(&low, want))))
}

/// The device's pass against the CPU's in f32.
struct Verdict {
    /// The output's relative difference and all gradients' cosine.
    output: f64,
    cosine: f64,
    /// The tensor furthest off, and the one of least cosine.
    worst: Difference,
    least: Difference,
    /// f32: the tensors beyond the tolerance.
    over: Vec<Difference>,
    /// The gradient type the run's precision keeps, and the gradients in another.
    expected: Vec<burn::tensor::DType>,
    wrong_dtype: Vec<String>,
    ok: bool,
}

impl Verdict {
    fn of(
        a: &DeviceCheckArgs,
        got: &Snapshot,
        want: &Snapshot,
        cpu_low: Option<(f64, f64)>,
    ) -> anyhow::Result<Self> {
        let diffs = compare(got, want).map_err(anyhow::Error::msg)?;
        let cosine = gradient_cosine(got, want);
        let lim = limits(a, cpu_low);
        let worst = diffs
            .iter()
            .max_by(|p, q| p.relative.total_cmp(&q.relative));
        let worst = worst.cloned().context("no output")?;
        let least = diffs.iter().min_by(|p, q| p.cosine.total_cmp(&q.cosine));
        let least = least.cloned().context("no output")?;
        // amp keeps f32 parameters, so f32 gradients, except that a weight cast for a product
        // gets its gradient in bf16 where the own casts are installed (`birads_model::amp`,
        // exact values; the optimiser widens them); bf16 holds the whole model in bf16 (an f32
        // gradient there would mean the run fell back to f32: `birads_model::precision`).
        use burn::tensor::DType;
        let expected = match a.precision {
            PrecisionArg::Bf16 => vec![DType::BF16],
            PrecisionArg::Amp => vec![DType::F32, DType::BF16],
            _ => vec![DType::F32],
        };
        let wrong_dtype: Vec<String> = got
            .grads
            .iter()
            .filter(|g| !expected.contains(&g.1))
            .map(|g| g.0.clone())
            .collect();
        let over: Vec<Difference> = match lim.each {
            Some(e) => diffs.iter().filter(|d| d.relative > e).cloned().collect(),
            None => Vec::new(),
        };
        let output = diffs[0].relative;
        let ok = output <= lim.output
            && cosine >= lim.all_gradients
            && over.is_empty()
            && wrong_dtype.is_empty();
        Ok(Verdict {
            output,
            cosine,
            worst,
            least,
            over,
            expected,
            wrong_dtype,
            ok,
        })
    }
}

pub fn device_check(a: DeviceCheckArgs) -> anyhow::Result<u8> {
    a.device.ready_for(a.precision)?;
    println!(
        "device check: {} {} against the CPU in f32; batch {}, {}×{}, {} models, training mode (batch statistics), dropout off",
        a.device.name(),
        precision_name(a.precision),
        a.batch,
        a.size,
        a.size,
        if a.small { "small" } else { "original" }
    );
    match a.precision {
        PrecisionArg::F32 => println!(
            "limits: every tensor (output and each gradient) within {:.0e} relative (max |Δ| / max |CPU|)",
            a.tolerance
        ),
        p => println!(
            "limits: output and all gradients' cosine no further from f32 than twice the CPU's own {} pass (+1e-3)",
            low_name(p)
        ),
    }
    println!();
    println!("| model | gradients | output rel. | worst rel. (tensor) | least cosine (tensor) | all gradients' cosine | CPU {}: output rel. / cosine | CPU / device time | |", low_name(a.precision));
    println!("|---|---|---|---|---|---|---|---|---|");
    let dir = tempfile::tempdir().context("temporary folder")?;
    let mut ok = true;
    for name in &a.models {
        ok &= check_model(&a, name, dir.path())?;
    }
    ok &= check_optimiser(&a)?;
    Ok(if ok { 0 } else { 1 })
}

/// AdamW and Adam on the device (`birads_model::adamw`: its own update kernel where
/// installed) against burn's on the CPU: two steps through the trainer's optimiser of 41
/// parameter tensors (more than one launch of the kernel takes) from the same values and
/// gradients, the parameters and both moments compared (max |Δ| / max |CPU| per tensor,
/// `adamw::check`). f32 within 1e-5: the same formula in the same order, where a GPU may fuse
/// a multiply and an add; bf16 keeps 8 bits (within 1e-2).
fn check_optimiser(a: &DeviceCheckArgs) -> anyhow::Result<bool> {
    let (relative, kernel) = on_backend(a.device, a.precision, false, OptimiserCheck)?;
    let limit = if a.precision == PrecisionArg::Bf16 {
        1e-2
    } else {
        1e-5
    };
    let ok = relative <= limit;
    let how = if kernel {
        "birads' kernel"
    } else {
        "burn's operations"
    };
    println!();
    println!(
        "AdamW and Adam updates on the device ({how}), 41 tensors, two steps each against burn's on the CPU: max rel. {relative:.2e} (limit {limit:.0e}) {}",
        if ok { "ok" } else { "FAILED" }
    );
    Ok(ok)
}

struct OptimiserCheck;

impl OnBackend for OptimiserCheck {
    /// The largest relative difference, and whether the own kernel ran.
    type Output = (f64, bool);
    fn run<B: AutodiffBackend>(self) -> anyhow::Result<(f64, bool)> {
        let mut worst = 0f64;
        for adam in [false, true] {
            let want = adamw::check::two_steps::<CpuTrain>(adam);
            let got = adamw::check::two_steps::<B>(adam);
            worst = worst.max(adamw::check::worst(&got, &want).map_err(anyhow::Error::msg)?);
        }
        let kernel = adamw::installed::<<B as AutodiffBackend>::InnerBackend>().is_some();
        Ok((worst, kernel))
    }
}

/// The CPU pass a low precision is held to.
fn low_name(p: PrecisionArg) -> &'static str {
    match p {
        PrecisionArg::Bf16 => "bf16",
        _ => "amp",
    }
}

fn precision_name(p: PrecisionArg) -> &'static str {
    match p {
        PrecisionArg::F32 => "f32",
        PrecisionArg::Bf16 => "bf16",
        PrecisionArg::Amp => "amp (f32 weights, bf16 products)",
    }
}

#[derive(Args)]
pub struct InferBenchArgs {
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
    /// Models: convnext, densenet.
    #[arg(long, value_delimiter = ',', default_value = "convnext,densenet")]
    pub models: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub batches: Vec<usize>,
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Timed runs (each at least one second); medians are reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Python with torch for the side-by-side figure (PyTorch eager, eval mode,
    /// inference_mode; amp and bf16: autocast bf16).
    #[arg(long, default_value = "python3")]
    pub python: String,
    #[arg(long)]
    pub no_python: bool,
}

/// Images/s of burn forward passes (probabilities read back) of `name` on `B`.
fn burn_infer_rate<B: Backend>(
    name: &str,
    batch: usize,
    a: &InferBenchArgs,
) -> anyhow::Result<f64> {
    let device = B::Device::default();
    B::seed(&device, 0);
    let m: AnyModel<B> = match name {
        "convnext" => AnyModel::ConvNeXt(MyConvNeXtConfig::new().init(&device)),
        "densenet" => AnyModel::DenseNet(MyDenseNetConfig::new().init(&device)),
        other => bail!("unknown model {other} (convnext, densenet)"),
    };
    let images: Vec<f32> = (0..batch * 3 * a.size * a.size)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let runner = birads_infer::predict::BurnRunner::new(m, device);
    use birads_infer::predict::Runner;
    let step = || {
        std::hint::black_box(runner.probabilities(&images, batch, a.size, false));
    };
    step();
    step();
    let mut rates = Vec::new();
    for _ in 0..a.runs {
        let (mut n, t) = (0usize, Instant::now());
        while n == 0 || t.elapsed().as_secs_f64() < 1.0 {
            step();
            n += 1;
        }
        rates.push((n * batch) as f64 / t.elapsed().as_secs_f64());
    }
    Ok(median(rates))
}

/// birads' images/s on the device and precision of `a` (the autodiff backend's inner one).
fn birads_infer_rate(name: &str, batch: usize, a: &InferBenchArgs) -> anyhow::Result<f64> {
    struct Rate<'a>(&'a str, usize, &'a InferBenchArgs);
    impl OnBackend for Rate<'_> {
        type Output = f64;
        fn run<B: AutodiffBackend>(self) -> anyhow::Result<f64> {
            burn_infer_rate::<B::InnerBackend>(self.0, self.1, self.2)
        }
    }
    on_backend(a.device, a.precision, false, Rate(name, batch, a))
}

pub fn infer(a: InferBenchArgs) -> anyhow::Result<u8> {
    a.device.ready_for(a.precision)?;
    let work = tempfile::tempdir()?;
    let script = work.path().join("bench_pipeline.py");
    std::fs::write(&script, crate::bench_compare::PY_PIPELINE)?;
    std::fs::write(
        work.path().join("make_model_fixtures.py"),
        crate::bench_compare::PY_MODEL_DEFS,
    )?;
    println!(
        "inference benchmark (burn's modules; probabilities read back): {} {}, {}×{}, {} runs ≥ 1 s, medians",
        a.device.name(),
        precision_name(a.precision),
        a.size,
        a.size,
        a.runs
    );
    println!();
    println!("| model | batch | PyTorch (img/s) | birads (img/s) | birads ÷ PyTorch |");
    println!("|---|---|---|---|---|");
    for name in &a.models {
        for &batch in &a.batches {
            let ours = birads_infer_rate(name, batch, &a)?;
            let theirs = (!a.no_python && a.device.in_pytorch())
                .then(|| {
                    let mut c = std::process::Command::new(&a.python);
                    c.arg(&script).args([
                        "infer",
                        "--model",
                        name,
                        "--batch",
                        &batch.to_string(),
                        "--size",
                        &a.size.to_string(),
                        "--runs",
                        &a.runs.to_string(),
                        "--device",
                        a.device.name(),
                    ]);
                    if a.precision != PrecisionArg::F32 {
                        c.arg("--amp");
                    }
                    if a.device == DeviceArg::Cpu {
                        c.args(["--threads", &rayon::current_num_threads().to_string()]);
                    }
                    crate::bench::python_json(&a.python, c.output())
                        .and_then(|v| v["img_s"].as_f64())
                })
                .flatten();
            println!(
                "| {name} | {batch} | {} | {ours:.1} | {} |",
                theirs.map(|t| format!("{t:.1}")).unwrap_or("–".into()),
                theirs
                    .map(|t| format!("{:.2}×", ours / t))
                    .unwrap_or("–".into())
            );
        }
    }
    Ok(0)
}
