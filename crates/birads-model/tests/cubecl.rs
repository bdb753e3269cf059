//! The GPU training code paths on a machine without a GPU: burn's wgpu backend runs the same
//! burn-cubecl kernels (convolution, matmul, pooling, reductions), the same burn-fusion
//! elementwise fusion and autotune as burn's CUDA backend, only compiled to WGSL instead of
//! CUDA C++. Mesa's software Vulkan driver (lavapipe) gives it a device on the CPU.
//!
//! What it checks, before any time is spent on a real GPU:
//! - birads' own depthwise backward (`birads_model::depthwise`), written for CUDA, computes
//!   the same gradients on a cubecl backend as burn's convolution backward does on the CPU;
//! - one training-mode forward and backward of both models on the cubecl backend, with
//!   birads' own operations installed as on CUDA (GELU's exact backward, BatchNorm's backward;
//!   the depthwise backward, and for comparison without it), equals the CPU's f32 pass within the limit
//!   `birads bench device-check` holds CUDA to (1e-4 relative per tensor).
//!
//! Without the own GELU the ConvNeXt gradients are 2–6·10⁻⁴ away from the CPU on this
//! backend: burn-cubecl inherits a GELU backward that differentiates the tanh approximation
//! (measured against an f64 CPU pass, where the CPU's f32 pass is within 10⁻⁶).
//!
//! Run: `bash scripts/cubecl_check.sh` (installs lavapipe when missing), or
//! `cargo test -p birads-model --features wgpu --test cubecl`.
#![cfg(feature = "wgpu")]

mod common;

use birads_model::checkpoint::AnyModel;
use birads_model::depthwise::{input_gradient, install, uninstall, weight_gradient_in_chunks};
use birads_model::gradcheck::{
    compare, convnext_config, densenet_config, moved, snapshot, Difference, Snapshot,
};
use birads_model::{batch_norm, gelu, Cpu, CpuTrain};
use burn::backend::{Autodiff, Wgpu};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;

use common::{assert_own_depthwise_ran, depthwise_reference, max_abs_diff, DEPTHWISE_CASES};

/// burn's wgpu backend with fusion and autotune, as `birads_model::Cuda` is for CUDA.
type G = Wgpu;
type GTrain = Autodiff<G>;

/// The per-tensor limit of `birads bench device-check` in f32.
const LIMIT: f64 = 1e-4;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn on_gpu<const D: usize>(t: Tensor<Cpu, D>) -> Tensor<G, D> {
    Tensor::from_data(t.to_data(), &Default::default())
}

fn relative(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    f64::from(max_abs_diff(got, want)) / f64::from(scale.max(f32::MIN_POSITIVE))
}

#[test]
fn depthwise_gradients_on_cubecl_equal_burns_cpu_backward() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    <CpuTrain as Backend>::seed(&device, 3);
    for case in DEPTHWISE_CASES {
        let (n, c, h, w, k, p, chunk) = case;
        let want = depthwise_reference(case);
        let (x, weight, r) = (on_gpu(want.x), on_gpu(want.weight), on_gpu(want.r));
        let got_x = values(input_gradient::<G>(r.clone(), weight, p));
        let got_w = values(weight_gradient_in_chunks::<G>(x, r, k, p, chunk));
        let case = format!("{n}×{c}×{h}×{w}, k {k}, p {p}, chunk {chunk}");
        let (dx, dw) = (
            relative(&got_x, &want.grad_x),
            relative(&got_w, &want.grad_w),
        );
        assert!(dx < 1e-5, "∂x {case}: {dx:.2e}");
        assert!(dw < 1e-5, "∂w {case}: {dw:.2e}");
    }
}

/// The CPU's f32 pass and the cubecl pass of `model` (moved through the checkpoint format).
fn passes(model: &AnyModel<CpuTrain>, seed: u64) -> (Snapshot, Snapshot) {
    let device = Default::default();
    <CpuTrain as Backend>::seed(&device, seed);
    let x =
        Tensor::<CpuTrain, 4>::random([2, 3, 64, 64], Distribution::Uniform(-2.0, 2.0), &device);
    let classes = match model {
        AnyModel::ConvNeXt(_) => 6,
        AnyModel::DenseNet(_) => 8,
    };
    let r = Tensor::<CpuTrain, 2>::random([2, classes], Distribution::Uniform(-1.0, 1.0), &device);
    let want = snapshot(model, x.clone(), r.clone());
    let dir = tempfile::tempdir().unwrap();
    let gpu_model = moved::<_, GTrain>(model, dir.path()).unwrap();
    let gpu_x = Tensor::<GTrain, 4>::from_data(x.to_data(), &Default::default());
    let gpu_r = Tensor::<GTrain, 2>::from_data(r.to_data(), &Default::default());
    (snapshot(&gpu_model, gpu_x, gpu_r), want)
}

fn assert_within_limit(what: &str, diffs: &[Difference]) {
    let worst = diffs
        .iter()
        .max_by(|a, b| a.relative.total_cmp(&b.relative))
        .unwrap();
    eprintln!("{what}: worst {} {:.2e}", worst.name, worst.relative);
    assert!(
        worst.relative < LIMIT,
        "{what}: {} is {:.2e} from the CPU (limit {LIMIT:.0e})",
        worst.name,
        worst.relative
    );
}

/// birads' own operations on the cubecl training backend: the exact GELU backward (burn-
/// cubecl's is the tanh approximation's, see `birads_model::gelu`) and BatchNorm's backward
/// always, the own depthwise backward when `depthwise`.
fn with_own_ops<T>(depthwise: bool, f: impl FnOnce() -> T) -> T {
    gelu::install::<G, NoCheckpointing>();
    batch_norm::install::<G, NoCheckpointing>();
    if depthwise {
        install::<G, NoCheckpointing>();
    }
    let out = f();
    uninstall::<G, NoCheckpointing>();
    batch_norm::uninstall::<G, NoCheckpointing>();
    gelu::uninstall::<G, NoCheckpointing>();
    out
}

#[test]
fn convnext_pass_on_cubecl_equals_the_cpu_with_either_depthwise_backward() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = AnyModel::ConvNeXt(convnext_config(true).init(&Default::default()));
    let (burns, want) = with_own_ops(false, || passes(&model, 5));
    let (own, _) = with_own_ops(true, || passes(&model, 5));
    assert_within_limit(
        "burn's depthwise backward",
        &compare(&burns, &want).unwrap(),
    );
    assert_within_limit("own depthwise backward", &compare(&own, &want).unwrap());
    assert_own_depthwise_ran(&own, &burns);
}

#[test]
fn densenet_pass_on_cubecl_equals_the_cpu() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = AnyModel::DenseNet(densenet_config(true).init(&Default::default()));
    let (got, want) = with_own_ops(false, || passes(&model, 7));
    assert_within_limit("MyDenseNet", &compare(&got, &want).unwrap());
}
