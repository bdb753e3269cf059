//! `birads bench`: speed figures, side by side with the original Python implementation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use birads_data::image_ops::decode;
use birads_data::loader::Loader;
use birads_data::pipeline::{augment, preprocess, Augment, CutMix, Preprocess};
use birads_data::readers::list_images;
use birads_data::rng::{stream, STREAM_AUGMENT};
use birads_data::synth::{synthesize, SynthConfig};
use birads_data::{ImageSource, Sample};
use clap::{Args, Subcommand};

/// The Python side: the original chain with PIL, numpy and torchvision, embedded so the
/// benchmark runs from any folder.
const PY_SCRIPT: &str = include_str!("../../../scripts/bench_preprocess.py");

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Preprocessing throughput (decode → CutBlack → CenterCrop → Resize → Normalize, and
    /// the training augmentation chain), single core and with the parallel loader.
    Preprocess(PreprocessArgs),
    /// Forward images/s of MyConvNeXt and MyDenseNet (batch 1 and 8) on burn's CPU backend,
    /// beside PyTorch eager and ONNX Runtime in the same run.
    Models(ModelsArgs),
    /// The issue-8 table: `birads predict` end to end against the original run.py (PyTorch,
    /// batch 1) and ONNX Runtime (same models and batching) on a testB-like folder — speed,
    /// peak memory, cold start — plus training images/s against PyTorch eager. Each pipeline
    /// runs in its own process, interleaved, medians.
    Compare(crate::bench_compare::CompareArgs),
    /// Training images/s (AdamW steps, train mode) of both models beside PyTorch; with
    /// `--device cuda --precision bf16` beside PyTorch AMP (bf16 autocast).
    Train(crate::bench_compare::TrainBenchArgs),
    /// Forward images/s through burn's modules on a device (`--device cuda`: the GPU path of
    /// predict and serve), batch 1 and 32, beside PyTorch eager on the same device.
    Infer(crate::bench_device::InferBenchArgs),
    /// Is the device right? One training-mode forward and backward of both models on the
    /// device against the CPU in f32: outputs and every parameter gradient compared; exits
    /// non-zero when a limit is broken.
    DeviceCheck(crate::bench_device::DeviceCheckArgs),
    /// Is each matrix-product kernel burn's autotune may choose right on the GPU? Every
    /// candidate on its own, on the linear layers' and 1×1 convolutions' products of a
    /// training step, against an f64 reference; exits non-zero when one is wrong.
    Matmuls(crate::bench_matmuls::MatmulsArgs),
}

#[derive(Args)]
pub struct ModelsArgs {
    /// Models to run: convnext, densenet.
    #[arg(long, value_delimiter = ',', default_value = "convnext,densenet")]
    pub models: Vec<String>,
    /// Skip burn's generic path (time only the dedicated inference path).
    #[arg(long)]
    pub fast_only: bool,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub batches: Vec<usize>,
    /// Timed repetitions (each at least one second); medians are reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Image side.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Python with torch, torchvision, onnx and onnxruntime for the side-by-side figures.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Skip the Python side.
    #[arg(long)]
    pub no_python: bool,
}

const PY_MODELS: &str = include_str!("../../../scripts/bench_models.py");
const PY_MODEL_DEFS: &str = include_str!("../../../scripts/make_model_fixtures.py");

#[derive(Args)]
pub struct PreprocessArgs {
    /// Folder of images to use (default: a synthetic set of 200 images, 320–640 px).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Use at most this many images.
    #[arg(long, default_value_t = 200)]
    pub limit: usize,
    /// Timed repetitions; medians are reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Python interpreter with Pillow, numpy and torchvision for the side-by-side figures
    /// (skipped when absent).
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Skip the Python side.
    #[arg(long)]
    pub no_python: bool,
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// CPU seconds (user + system) used by this process so far, from /proc (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

struct Row {
    name: &'static str,
    rust_1: f64,
    rust_all: f64,
    cpu_util: f64,
    python: Option<f64>,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<u8> {
    match cmd {
        BenchCommand::Preprocess(a) => bench_preprocess(a),
        BenchCommand::Models(a) => bench_models(a),
        BenchCommand::Compare(a) => crate::bench_compare::compare(a),
        BenchCommand::Train(a) => crate::bench_compare::train(a),
        BenchCommand::Infer(a) => crate::bench_device::infer(a),
        BenchCommand::DeviceCheck(a) => crate::bench_device::device_check(a),
        BenchCommand::Matmuls(a) => crate::bench_matmuls::matmuls(a),
    }
}

fn bench_preprocess(a: PreprocessArgs) -> anyhow::Result<u8> {
    let (dir, tmp) = bench_images(&a)?;
    let mut problems = Vec::new();
    let mut files = list_images(&dir, &mut problems).map_err(|e| anyhow::anyhow!("{e}"))?;
    files.truncate(a.limit);
    anyhow::ensure!(!files.is_empty(), "no images in {}", dir.display());
    let samples: Arc<Vec<Sample>> = Arc::new(
        files
            .iter()
            .map(|p| Sample::unlabelled(ImageSource::Path(p.clone()), "bench"))
            .collect(),
    );
    let threads = rayon::current_num_threads();
    println!(
        "preprocessing benchmark: {} images from {}, {} repeats, medians",
        samples.len(),
        dir.display(),
        a.repeats
    );
    let chains = Chains {
        infer: Preprocess {
            cut_black: true,
            ..Preprocess::original_inference()
        },
        aug: Augment::original(CutMix::Off),
        repeats: a.repeats,
    };
    // Warm-up (file cache, allocator).
    for s in samples.iter().take(10) {
        let _ = decode(&s.image).map(|im| preprocess(&im, None, &chains.infer));
    }
    breakdown(&samples, &chains.infer, &chains.aug);
    let py = if a.no_python {
        None
    } else {
        run_python(&a.python, &dir, samples.len(), a.repeats)
    };
    let mut rows = Vec::new();
    for (name, train) in [("inference chain", false), ("training chain", true)] {
        let rust_1 = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()?
            .install(|| chains.single_core(&samples, train));
        let (rust_all, cpu_util) = chains.loader(&samples, train);
        let python = py
            .as_ref()
            .and_then(|v| v.get(if train { "train" } else { "inference" })?.as_f64());
        rows.push(Row {
            name,
            rust_1,
            rust_all,
            cpu_util,
            python,
        });
    }
    print_rows(&rows, threads);
    drop(tmp);
    if py.is_none() && !a.no_python {
        println!("\n(Python side skipped: `{} scripts/bench_preprocess.py` needs Pillow, numpy and torchvision; pass --python)", a.python);
    }
    Ok(0)
}

/// The images to time: `--images`, else a synthetic set (removed when the guard drops).
fn bench_images(a: &PreprocessArgs) -> anyhow::Result<(PathBuf, Option<RemoveOnDrop>)> {
    if let Some(d) = &a.images {
        return Ok((d.clone(), None));
    }
    let t = tempfile_dir()?;
    let guard = RemoveOnDrop(t.clone());
    let cfg = SynthConfig {
        seed: 7,
        train_cls: 0,
        train_fea: 0,
        test_cls: a.limit,
        test_fea: 0,
        ..SynthConfig::default()
    };
    synthesize(&t, &cfg)?;
    Ok((t.join("testA/cla"), Some(guard)))
}

/// The two chains under test: inference preprocessing, and it with the training augmentation.
struct Chains {
    infer: Preprocess,
    aug: Augment,
    repeats: usize,
}

impl Chains {
    /// Images/s on the calling thread (median over the repeats).
    fn single_core(&self, samples: &[Sample], train: bool) -> f64 {
        let times: Vec<f64> = (0..self.repeats)
            .map(|r| {
                let t = Instant::now();
                for (k, s) in samples.iter().enumerate() {
                    let Ok(im) = decode(&s.image) else { continue };
                    let out = if train {
                        let mut rng = stream(r as u64, &[STREAM_AUGMENT, k as u64]);
                        augment(&im, None, None, &self.infer, &self.aug, &mut rng)
                    } else {
                        preprocess(&im, None, &self.infer)
                    };
                    std::hint::black_box(out);
                }
                samples.len() as f64 / t.elapsed().as_secs_f64()
            })
            .collect();
        median(times)
    }

    /// Images/s through the parallel loader (batches of 32, two ahead) and the share of the
    /// machine's cores it kept busy (medians over the repeats).
    fn loader(&self, samples: &Arc<Vec<Sample>>, train: bool) -> (f64, f64) {
        let threads = rayon::current_num_threads();
        let augment = train.then(|| self.aug.clone());
        let loader = Loader::new(samples.clone(), self.infer.clone(), augment, 0);
        let order: Vec<usize> = (0..samples.len()).collect();
        let mut rates = Vec::new();
        let mut utils = Vec::new();
        for r in 0..self.repeats {
            let (c0, t) = (cpu_seconds(), Instant::now());
            let got: usize = loader
                .prefetch(r as u64, order.clone(), 32, 2)
                .into_iter()
                .map(|b| b.len())
                .sum();
            let wall = t.elapsed().as_secs_f64();
            rates.push(got as f64 / wall);
            if let (Some(c0), Some(c1)) = (c0, cpu_seconds()) {
                utils.push((c1 - c0) / wall / threads as f64);
            }
        }
        let busy = if utils.is_empty() {
            f64::NAN
        } else {
            median(utils)
        };
        (median(rates), busy)
    }
}

fn print_rows(rows: &[Row], threads: usize) {
    println!();
    println!("| chain | Python 1 core (img/s) | birads 1 core (img/s) | ratio | birads loader, {threads} threads (img/s) | CPU busy |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        let (py, ratio) = match r.python {
            Some(p) => (format!("{p:.1}"), format!("{:.1}×", r.rust_1 / p)),
            None => ("–".into(), "–".into()),
        };
        println!(
            "| {} | {py} | {:.1} | {ratio} | {:.1} | {:.0}% |",
            r.name,
            r.rust_1,
            r.rust_all,
            r.cpu_util * 100.0
        );
    }
}

/// Deletes the synthetic benchmark images however the benchmark ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("birads-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

/// Run the embedded Python benchmark on the same images; `None` (with a note) if it fails.
fn run_python(python: &str, dir: &Path, limit: usize, repeats: usize) -> Option<serde_json::Value> {
    let script =
        std::env::temp_dir().join(format!("birads_bench_preprocess_{}.py", std::process::id()));
    std::fs::write(&script, PY_SCRIPT).ok()?;
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg("--images")
        .arg(dir)
        .args([
            "--limit",
            &limit.to_string(),
            "--repeats",
            &repeats.to_string(),
            "--json",
        ])
        .env("OMP_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .output();
    let _ = std::fs::remove_file(&script);
    python_json(python, out)
}

/// Single-core time per stage (µs per image, medians over images), to see where time goes.
fn breakdown(samples: &[Sample], pre: &Preprocess, aug: &Augment) {
    use birads_data::augment::{apply_flips_affine, gaussian_blur, random_erasing, Affine};
    use birads_data::image_ops::{center_crop, cut_black, resize_bilinear, to_tensor_normalized};
    let mut stages: Vec<(&str, Vec<f64>)> = [
        "decode",
        "cut_black",
        "center_crop",
        "resize",
        "normalize",
        "flips+affine",
        "blur",
        "erasing",
    ]
    .iter()
    .map(|n| (*n, Vec::new()))
    .collect();
    let mut rng = stream(1, &[]);
    let c = pre.crop.unwrap_or(672);
    for s in samples.iter().take(60) {
        let mut t = Instant::now();
        let mut lap = |k: usize, stages: &mut Vec<(&str, Vec<f64>)>| {
            stages[k].1.push(t.elapsed().as_secs_f64() * 1e6);
            t = Instant::now();
        };
        let Ok(im) = decode(&s.image) else { continue };
        lap(0, &mut stages);
        let (im, _) = cut_black(&im, &pre.cut_black_params);
        lap(1, &mut stages);
        let im = center_crop(&im, c, c);
        lap(2, &mut stages);
        let small = resize_bilinear(&im, pre.size, pre.size);
        lap(3, &mut stages);
        let mut tensor = to_tensor_normalized(&small, pre.mean, pre.std);
        lap(4, &mut stages);
        let tr = Affine::sample(aug.affine.as_ref().unwrap(), c, c, &mut rng);
        let (im, _) = apply_flips_affine(&im, true, false, &tr, None);
        lap(5, &mut stages);
        std::hint::black_box(gaussian_blur(&im, 5, 1.0));
        lap(6, &mut stages);
        random_erasing(&mut tensor, aug.erasing.as_ref().unwrap(), &mut rng);
        lap(7, &mut stages);
    }
    let parts: Vec<String> = stages
        .into_iter()
        .filter(|s| !s.1.is_empty())
        .map(|(n, v)| format!("{n} {:.0}", median(v)))
        .collect();
    println!("single-core stage medians (µs/image): {}", parts.join(", "));
}

/// Images/s of `forward` on batches of `batch`, median over `repeats` runs of ≥ 1 s each.
fn forward_rate(batch: usize, repeats: usize, mut forward: impl FnMut()) -> f64 {
    forward(); // warm-up
    let runs: Vec<f64> = (0..repeats)
        .map(|_| {
            let (mut n, t) = (0usize, Instant::now());
            while n == 0 || t.elapsed().as_secs_f64() < 1.0 {
                forward();
                n += 1;
            }
            (n * batch) as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    median(runs)
}

fn bench_models(a: ModelsArgs) -> anyhow::Result<u8> {
    use birads_model::{Cpu, MyConvNeXtConfig, MyDenseNetConfig};
    use burn::prelude::*;
    let device = Default::default();
    let threads = rayon::current_num_threads();
    println!("model forward benchmark: {}×{} inputs, eval mode, {threads} threads, {} repeats ≥ 1 s, medians", a.size, a.size, a.repeats);
    let convnext = MyConvNeXtConfig::new().init::<Cpu>(&device);
    let densenet = MyDenseNetConfig::new().init::<Cpu>(&device);
    let fast_convnext = birads_model::fast::FastConvNeXt::from_model(&convnext);
    let fast_densenet = birads_model::fast::FastDenseNet::from_model(&densenet);
    let mut rows = Vec::new();
    for name in ["convnext", "densenet"] {
        if !a.models.iter().any(|m| m == name) {
            continue;
        }
        for &b in &a.batches {
            let x = Tensor::<Cpu, 4>::random(
                [b, 3, a.size, a.size],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &device,
            );
            let flat: Vec<f32> = x.clone().into_data().to_vec().expect("f32");
            let s = a.size;
            let (burn_rate, fast_rate) = if name == "convnext" {
                (
                    (!a.fast_only).then(|| {
                        forward_rate(b, a.repeats, || {
                            std::hint::black_box(convnext.forward(x.clone()).into_data());
                        })
                    }),
                    forward_rate(b, a.repeats, || {
                        std::hint::black_box(fast_convnext.forward(&flat, b, s, s));
                    }),
                )
            } else {
                (
                    (!a.fast_only).then(|| {
                        forward_rate(b, a.repeats, || {
                            std::hint::black_box(densenet.forward(x.clone()).into_data());
                        })
                    }),
                    forward_rate(b, a.repeats, || {
                        std::hint::black_box(fast_densenet.forward(&flat, b, s, s));
                    }),
                )
            };
            rows.push((name, b, burn_rate, fast_rate));
        }
    }
    let py = if a.no_python {
        None
    } else {
        run_python_models(&a, threads)
    };
    let lookup = |name: &str, b: usize, key: &str| -> Option<f64> {
        py.as_ref()?["results"]
            .as_array()?
            .iter()
            .find(|r| r["model"] == name && r["batch"] == b)?[key]
            .as_f64()
    };
    println!();
    println!("| model | batch | PyTorch eager (img/s) | ONNX Runtime (img/s) | birads burn-flex (img/s) | birads fast path (img/s) | fast / PyTorch | fast / ORT |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, b, r, f) in rows {
        let label = if name == "convnext" {
            "MyConvNeXt"
        } else {
            "MyDenseNet"
        };
        let (pt, ort) = (lookup(name, b, "pytorch"), lookup(name, b, "onnxruntime"));
        println!(
            "| {label} | {b} | {} | {} | {} | {f:.1} | {} | {} |",
            fmt_opt(pt),
            fmt_opt(ort),
            fmt_opt(r),
            ratio(f, pt),
            ratio(f, ort)
        );
    }
    Ok(0)
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "–".into())
}

/// `ours / theirs` to two decimals, or a dash without their figure.
fn ratio(ours: f64, theirs: Option<f64>) -> String {
    theirs
        .map(|x| format!("{:.2}", ours / x))
        .unwrap_or_else(|| "–".into())
}

fn run_python_models(a: &ModelsArgs, threads: usize) -> Option<serde_json::Value> {
    let dir = tempfile_dir().ok()?;
    let _cleanup = RemoveOnDrop(dir.clone());
    std::fs::write(dir.join("bench_models.py"), PY_MODELS).ok()?;
    std::fs::write(dir.join("make_model_fixtures.py"), PY_MODEL_DEFS).ok()?;
    let batches: Vec<String> = a.batches.iter().map(|b| b.to_string()).collect();
    let out = std::process::Command::new(&a.python)
        .arg(dir.join("bench_models.py"))
        .args([
            "--batches",
            &batches.join(","),
            "--repeats",
            &a.repeats.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .args(["--size", &a.size.to_string(), "--json"])
        .output();
    python_json(&a.python, out)
}

/// The last JSON line a Python benchmark printed, or `None` with the reason on stderr.
pub(crate) fn python_json(
    python: &str,
    out: std::io::Result<std::process::Output>,
) -> Option<serde_json::Value> {
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok()),
        Ok(o) => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            eprintln!(
                "python benchmark failed: {}",
                stderr.lines().last().unwrap_or("")
            );
            None
        }
        Err(e) => {
            eprintln!("cannot run {python}: {e}");
            None
        }
    }
}
