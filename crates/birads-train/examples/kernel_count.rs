//! Kernel launches of one training step, phase by phase (forward + loss, backward, AdamW), on
//! burn's wgpu backend: the burn-cubecl kernels and burn-fusion that CUDA runs, here over
//! Mesa's software Vulkan driver, so the count needs no GPU. A launch costs a few
//! microseconds on a GPU whatever its size, so this count is the floor of a step's time
//! there; it also shows what fusion and birads' own backward passes save.
//!
//! Run by `bash scripts/cubecl_check.sh --count`, or directly:
//!
//!   CUBECL_DEBUG_LOG=/tmp/k.log CUBECL_DEBUG_OPTION=profile \
//!     cargo run --release -p birads-train --features wgpu --example kernel_count -- convnext
//!
//! Arguments: `convnext` or `densenet`, then `--unfused` for burn's backend without fusion,
//! `--amp` for the mixed-precision step the GPU benchmark times (products in f16 here, as wgpu
//! has no bf16; the casts are the same), `--all` to list every kernel of each phase (else the
//! six most launched).
//! `BIRADS_DEPTHWISE=burn` keeps burn's own depthwise backward, `BIRADS_LAYERNORM=burn` burn's
//! LayerNorm, `BIRADS_BATCHNORM=burn` burn's BatchNorm backward. Counts come from cubecl's
//! profiling log (one line per launch), read after each phase has been synchronised.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use birads_model::{MyConvNeXtConfig, MyDenseNetConfig};
use birads_train::benchmark;
use birads_train::trainer::Net;
use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
use burn::backend::{Autodiff, Wgpu};
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::FloatDType;

/// Images per step and their side: launches do not depend on them (lavapipe is slow).
const BATCH: usize = 2;
const SIZE: usize = 64;
/// Steps before the counted one: autotune's trials and fusion's first compilations.
const WARMUP: usize = 2;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().map(String::as_str).unwrap_or("convnext");
    let unfused = args.iter().any(|a| a == "--unfused");
    let amp = args.iter().any(|a| a == "--amp");
    let shown = if args.iter().any(|a| a == "--all") {
        usize::MAX
    } else {
        6
    };
    let log = std::env::var("CUBECL_DEBUG_LOG")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            eprintln!("set CUBECL_DEBUG_LOG=FILE and CUBECL_DEBUG_OPTION=profile");
            std::process::exit(2)
        });
    birads_model::install_gpu_ops();
    if !["convnext", "densenet"].contains(&model) {
        eprintln!("model: convnext or densenet");
        std::process::exit(2)
    }
    let counts = if unfused {
        count::<Autodiff<Unfused>>(model, amp, &log)
    } else {
        count::<Autodiff<Wgpu>>(model, amp, &log)
    };
    let depthwise = match std::env::var("BIRADS_DEPTHWISE").as_deref() {
        Ok("burn") => "burn's depthwise backward",
        _ => "own depthwise backward",
    };
    let batch_norm = match std::env::var("BIRADS_BATCHNORM").as_deref() {
        Ok("burn") => "burn's BatchNorm backward",
        _ => "own BatchNorm backward",
    };
    let fusion = match (unfused, amp) {
        (true, false) => "no fusion",
        (false, false) => "fusion",
        (true, true) => "no fusion, amp",
        (false, true) => "fusion, amp",
    };
    let total: usize = counts.iter().map(|(_, c)| c.values().sum::<usize>()).sum();
    let own = if model == "convnext" {
        depthwise
    } else {
        batch_norm
    };
    println!("{model} ({fusion}, {own}): {total} kernel launches per training step");
    for (phase, kernels) in &counts {
        let n: usize = kernels.values().sum();
        let mut top: Vec<_> = kernels.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let top: Vec<String> = top
            .iter()
            .take(shown)
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        println!("  {phase:<10} {n:>6}   most: {}", top.join(", "));
    }
}

/// burn's wgpu backend without fusion: every tensor operation its own launch.
type Unfused = CubeBackend<WgpuRuntime, f32, i32, u32>;

/// Launches per phase of the step after the warm-up, by kernel name.
fn count<B: AutodiffBackend>(
    model: &str,
    amp: bool,
    log: &std::path::Path,
) -> Vec<(&'static str, Kernels)> {
    let device = B::Device::default();
    B::seed(&device, 0);
    if model == "convnext" {
        let m = MyConvNeXtConfig::new()
            .with_dropout(0.05)
            .init::<B>(&device);
        phases(m, false, amp, log, &device)
    } else {
        let m = MyDenseNetConfig::new().init::<B>(&device);
        phases(m, true, amp, log, &device)
    }
}

type Kernels = BTreeMap<String, usize>;

fn phases<B, M>(
    mut model: M,
    features: bool,
    amp: bool,
    log: &std::path::Path,
    device: &B::Device,
) -> Vec<(&'static str, Kernels)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Net<B> + Clone + 'static,
{
    let mut optim = benchmark::optimizer::<B, M>();
    let x = benchmark::images::<B>(BATCH, SIZE, device);
    let mut reader = LogReader::new(log);
    let mut counted = Vec::new();
    for step in 0..=WARMUP {
        let mut mark = |name: &'static str| {
            B::sync(device).ok();
            let kernels = reader.since_last();
            if step == WARMUP {
                counted.push((name, kernels));
            }
        };
        let loss = {
            let _scope = amp.then(|| birads_model::amp::autocast(FloatDType::F16));
            benchmark::loss(model.logits(x.clone()), features)
        };
        mark("forward");
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        mark("backward");
        model = optim.step(1e-4, model, grads);
        mark("optimiser");
    }
    counted
}

/// Reads the launch lines cubecl's logger appends (`| <duration> | <kernel>`), skipping its
/// summary tables.
struct LogReader {
    path: PathBuf,
    seen: usize,
}

impl LogReader {
    fn new(path: &std::path::Path) -> Self {
        LogReader {
            path: path.to_path_buf(),
            seen: 0,
        }
    }

    fn launches(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("| ")?;
                let (duration, name) = rest.split_once(" | ")?;
                let timed = duration.trim_end().ends_with('s') && !name.trim_end().ends_with('|');
                timed.then(|| name.trim().to_string())
            })
            .collect()
    }

    /// The launches logged since the last call, once the asynchronous logger has caught up
    /// (the count held still for 300 ms), by kernel name.
    fn since_last(&mut self) -> Kernels {
        let (mut lines, mut still) = (self.launches(), Instant::now());
        while still.elapsed() < Duration::from_millis(300) {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.launches();
            if now.len() != lines.len() {
                (lines, still) = (now, Instant::now());
            }
        }
        let mut kernels = Kernels::new();
        for name in &lines[self.seen..] {
            *kernels.entry(short(name)).or_default() += 1;
        }
        self.seen = lines.len();
        kernels
    }
}

/// A kernel's name without its type parameters (cubecl writes them after ` | `, or in `<…>`)
/// and module path.
fn short(name: &str) -> String {
    let base = name.split(" | ").next().unwrap_or(name);
    let base = base.split('<').next().unwrap_or(base);
    base.rsplit("::").next().unwrap_or(base).to_string()
}
