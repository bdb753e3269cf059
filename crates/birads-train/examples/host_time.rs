//! The host's share of a training step on burn's cubecl backends, measured without a GPU. A
//! GPU runs kernels asynchronously, so a step can go no faster than the CPU work that issues
//! them: burn's autodiff on the calling thread, burn-fusion's planning on its device thread,
//! and cubecl's launches (memory pool, kernel arguments) on the server's thread. Here one
//! step of either model runs again and again on burn's wgpu backend, over Mesa's software
//! Vulkan driver, at batch 1 and 32 px, so the driver's own compute stays small; sampling it
//! with `perf` (`bash scripts/cubecl_check.sh --host`, `scripts/host_profile.py`) splits the
//! CPU time by thread and by crate.
//!
//! Prints the wall time of each phase (median over the steps); with `HOST_TIME_PERF=CTL,ACK`
//! it switches `perf record -D -1 --control fifo:CTL,ACK` on after the warm-up, so the
//! profile holds the measured steps only, and with `HOST_TIME_PHASE=forward`, `backward` or
//! `optimiser` as well, only that phase of each (the phase ends with a synchronisation, so
//! the work it queued is in it).
//!
//! Arguments: `convnext` or `densenet`, then the number of steps (default 10), then `--amp`
//! for the mixed-precision step that the GPU benchmark times (products in f16 here, as wgpu
//! has no bf16; the casts, and so the host's work, are the same).

use std::time::Instant;

use birads_model::{MyConvNeXtConfig, MyDenseNetConfig};
use birads_train::benchmark;
use birads_train::trainer::Net;
use burn::backend::{Autodiff, Wgpu};
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::Backend;
use burn::tensor::FloatDType;

const BATCH: usize = 1;
const SIZE: usize = 32;
/// Steps before the measured ones: autotune's trials and fusion's first compilations.
const WARMUP: usize = 3;

type B = Autodiff<Wgpu>;

/// The allocator of the `birads` binary built for CUDA, whose host work this stands for.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().map(String::as_str).unwrap_or("convnext");
    let steps: usize = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .max(1);
    let amp = args.iter().any(|a| a == "--amp");
    birads_model::install_gpu_ops();
    let device = Default::default();
    B::seed(&device, 0);
    let times = match model {
        "convnext" => {
            let m = MyConvNeXtConfig::new()
                .with_dropout(0.05)
                .init::<B>(&device);
            run(m, false, amp, steps, &device)
        }
        "densenet" => run(
            MyDenseNetConfig::new().init::<B>(&device),
            true,
            amp,
            steps,
            &device,
        ),
        _ => {
            eprintln!("model: convnext or densenet");
            std::process::exit(2)
        }
    };
    let precision = if amp { "amp" } else { "f32" };
    println!(
        "{model} ({precision}), batch {BATCH} at {SIZE} px, wall ms per phase (median of {steps} steps):"
    );
    for (i, phase) in ["forward", "backward", "optimiser", "step"]
        .iter()
        .enumerate()
    {
        let mut v: Vec<f64> = times.iter().map(|t| t[i]).collect();
        v.sort_by(f64::total_cmp);
        println!("  {phase:<10} {:>9.1}", v[v.len() / 2]);
    }
}

/// Per measured step: forward + loss, backward, AdamW, and the whole step (ms).
fn run<M>(
    mut model: M,
    features: bool,
    amp: bool,
    steps: usize,
    device: &burn::tensor::Device<B>,
) -> Vec<[f64; 4]>
where
    M: AutodiffModule<B> + Net<B> + Clone + 'static,
{
    let mut optim = benchmark::optimizer::<B, M>();
    let x = benchmark::images::<B>(BATCH, SIZE, device);
    let mut out = Vec::new();
    let phase = std::env::var("HOST_TIME_PHASE").ok();
    let phase = ["forward", "backward", "optimiser"]
        .iter()
        .position(|p| phase.as_deref() == Some(*p));
    for step in 0..WARMUP + steps {
        let measured = step >= WARMUP;
        // Sampling on for the whole step (no phase named) or for the named phase only.
        let sample = |i: usize, on: bool| {
            if measured && phase.map_or(i == 0 && on, |p| p == i) {
                perf(if on { "enable" } else { "disable" });
            }
        };
        let start = Instant::now();
        let mut marks = [0.0; 4];
        let mut mark = |i: usize| {
            B::sync(device).ok();
            marks[i] = start.elapsed().as_secs_f64() * 1e3;
        };
        sample(0, true);
        let loss = {
            let _scope = amp.then(|| birads_model::amp::autocast(FloatDType::F16));
            benchmark::loss(model.logits(x.clone()), features)
        };
        mark(0);
        sample(0, false);
        sample(1, true);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        mark(1);
        sample(1, false);
        sample(2, true);
        model = optim.step(1e-4, model, grads);
        mark(2);
        sample(2, false);
        if step >= WARMUP {
            out.push([marks[0], marks[1] - marks[0], marks[2] - marks[1], marks[2]]);
        }
    }
    out
}

/// Under `perf record -D -1 --control fifo:CTL,ACK` with `HOST_TIME_PERF=CTL,ACK`: `enable`
/// or `disable` sampling now, and wait for perf's acknowledgement.
fn perf(command: &str) {
    let Ok(paths) = std::env::var("HOST_TIME_PERF") else {
        return;
    };
    let (ctl, ack) = paths.split_once(',').unwrap_or((&paths, ""));
    std::fs::write(ctl, format!("{command}\n")).expect("perf's control fifo");
    if !ack.is_empty() {
        use std::io::Read;
        let mut reply = [0u8; 4];
        let _ = std::fs::File::open(ack).and_then(|mut f| f.read(&mut reply));
    }
}
