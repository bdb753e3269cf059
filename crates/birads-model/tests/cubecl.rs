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

use birads_model::batch_norm::cube::{reductions, Sums};
use birads_model::batch_norm::Reductions;
use birads_model::checkpoint::AnyModel;
use birads_model::cube::{self, Cube, Fused, Launch};
use birads_model::depthwise::cube::WeightGradient;
use birads_model::depthwise::{input_gradient, install, uninstall, weight_gradient_in_chunks};
use birads_model::gradcheck::{
    compare, convnext_config, densenet_config, moved, snapshot, Difference, Snapshot,
};
use birads_model::{batch_norm, depthwise, gelu, Cpu, CpuTrain};
use burn::backend::wgpu::WgpuRuntime;
use burn::backend::{Autodiff, Wgpu};
use burn::prelude::*;
use burn::tensor::{f16, Distribution};
use burn_autodiff::checkpoint::strategy::NoCheckpointing;

use common::{assert_own_depthwise_ran, depthwise_reference, max_abs_diff, DEPTHWISE_CASES};

/// burn's wgpu backend with fusion and autotune, as `birads_model::Cuda` is for CUDA.
type G = Wgpu;
type GTrain = Autodiff<G>;
/// The same backend without fusion.
type Unfused = Cube<WgpuRuntime, f32, i32, u32>;
/// The same in half precision, without and with fusion.
type Half = Cube<WgpuRuntime, f16, i32, u32>;
type HalfFused = Fused<WgpuRuntime, f16, i32, u32>;

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
/// with its own per-channel sums always, the own depthwise backward (and its weight-gradient
/// kernel) when `own_depthwise`.
fn with_own_ops<T>(own_depthwise: bool, f: impl FnOnce() -> T) -> T {
    gelu::install::<G, NoCheckpointing>();
    batch_norm::install::<G, NoCheckpointing>();
    cube::set::<Sums, WgpuRuntime, f32, i32, u32>(true);
    if own_depthwise {
        install::<G, NoCheckpointing>();
        cube::set::<WeightGradient, WgpuRuntime, f32, i32, u32>(true);
    }
    let out = f();
    uninstall::<G, NoCheckpointing>();
    cube::set::<WeightGradient, WgpuRuntime, f32, i32, u32>(false);
    cube::set::<Sums, WgpuRuntime, f32, i32, u32>(false);
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
    let (burns, _) = with_own_ops(false, || {
        cube::set::<Sums, WgpuRuntime, f32, i32, u32>(false);
        passes(&model, 7)
    });
    assert_within_limit("MyDenseNet", &compare(&got, &want).unwrap());
    assert_within_limit(
        "MyDenseNet, burn's sums in BatchNorm",
        &compare(&burns, &want).unwrap(),
    );
    let between = compare(&got, &burns).unwrap();
    assert!(
        between
            .iter()
            .any(|d| d.name.contains("norm") && d.relative > 0.0),
        "BatchNorm's own sum kernels did not run"
    );
}

/// Per channel of `[N, C, L]` values, in f64: mean, biased variance, Σ g, Σ g·(x − m) with
/// `m` the channel's value in `means` (the mean as the kernel gets it) or else the mean, and
/// for each the sum of its terms' magnitudes (what f32 rounding scales with).
fn channel_reference(
    x: &[f32],
    g: &[f32],
    [n, c, l]: [usize; 3],
    means: Option<&[f32]>,
) -> Vec<[(f64, f64); 4]> {
    (0..c)
        .map(|ch| {
            let at = |i: usize| (i / l) * c * l + ch * l + i % l;
            let m = (n * l) as f64;
            let xs: Vec<f64> = (0..n * l).map(|i| f64::from(x[at(i)])).collect();
            let gs: Vec<f64> = (0..n * l).map(|i| f64::from(g[at(i)])).collect();
            let mean = xs.iter().sum::<f64>() / m;
            let squares = xs.iter().map(|v| (v - mean) * (v - mean));
            let var = squares.sum::<f64>() / m;
            let centre = means.map_or(mean, |means| f64::from(means[ch]));
            let centred: Vec<f64> = gs.iter().zip(&xs).map(|(g, x)| g * (x - centre)).collect();
            [
                (mean, xs.iter().map(|v| v.abs()).sum::<f64>() / m),
                (var, var),
                (gs.iter().sum(), gs.iter().map(|v| v.abs()).sum()),
                (centred.iter().sum(), centred.iter().map(|v| v.abs()).sum()),
            ]
        })
        .collect()
}

/// `reductions` on `x` and `g` `[N, C, H, W]` (channels-last underneath when `strided`, so
/// the kernels read a non-contiguous view) against `channel_reference` of the values as
/// backend `B` holds them: each result within 1e-5 of its terms' magnitude (f32 sums of a
/// few thousand terms are within about 1e-6 of it; a wrong index or a lost partial sum is off
/// by far more), plus `rounding` of its value (the result stored in `B`'s precision).
fn check_reductions<B: Backend>(
    reductions: Reductions<B>,
    shape: [usize; 4],
    strided: bool,
    rounding: f64,
) {
    let [n, c, h, w] = shape;
    let device = Default::default();
    let random = || {
        Tensor::<Cpu, 4>::random([n, h, w, c], Distribution::Normal(0.5, 2.0), &device)
            .permute([0, 3, 1, 2])
    };
    let to_b = |t: Tensor<Cpu, 4>| -> Tensor<B, 4> {
        let t = Tensor::<B, 4>::from_data(t.to_data(), &Default::default());
        if strided {
            // Channels-last underneath, as a convolution's output is: [N, H, W, C]
            // contiguous, then a permuted view of it.
            let data = t.permute([0, 2, 3, 1]).into_data();
            Tensor::<B, 4>::from_data(data, &Default::default()).permute([0, 3, 1, 2])
        } else {
            t
        }
    };
    let (x, g) = (to_b(random() + 3.0), to_b(random()));
    let (xv, gv) = (values(x.clone()), values(g.clone()));
    let exact = channel_reference(&xv, &gv, [n, c, h * w], None);
    let mean: Vec<f32> = exact.iter().map(|w| w[0].0 as f32).collect();
    let mean = Tensor::<B, 1>::from_floats(mean.as_slice(), &Default::default());
    let want = channel_reference(&xv, &gv, [n, c, h * w], Some(&values(mean.clone())));
    let (got_mean, got_var) = (reductions.moments)(x.clone());
    let (sum_g, sum_gx) = (reductions.gradient_sums)(g, x, mean);
    let got = [got_mean, got_var, sum_g, sum_gx].map(values);
    for (ch, want) in want.iter().enumerate() {
        for (k, name) in ["mean", "variance", "Σg", "Σg(x−μ)"].iter().enumerate() {
            let (value, magnitude) = want[k];
            let error = (f64::from(got[k][ch]) - value).abs();
            assert!(
                error <= 1e-5 * magnitude.max(1e-30) + rounding * value.abs(),
                "{shape:?} strided {strided}, channel {ch}, {name}: {} against {value} \
                 (error {error:.2e}, terms {magnitude:.2e})",
                got[k][ch]
            );
        }
    }
}

/// The depthwise weight-gradient kernel on one backend against burn's backward on the CPU:
/// the shared cases, one with 13 shares per channel, and a transposed (strided) input; within
/// `limit` of the largest value.
fn check_depthwise_kernel<B: Launch>(limit: f64) {
    let mut cases = DEPTHWISE_CASES.to_vec();
    cases.push((2, 3, 40, 40, 7, 3, 0));
    for case in cases {
        let (n, c, h, w, k, p, _) = case;
        let want = depthwise_reference(case);
        for strided in [false, true] {
            let x = Tensor::<B, 4>::from_data(want.x.to_data(), &Default::default());
            let x = if strided {
                let flipped = x.swap_dims(2, 3).into_data();
                Tensor::<B, 4>::from_data(flipped, &Default::default()).swap_dims(2, 3)
            } else {
                x
            };
            let r = Tensor::<B, 4>::from_data(want.r.to_data(), &Default::default());
            let got = values(depthwise::cube::weight_gradient(x, r, k, p));
            let error = relative(&got, &want.grad_w);
            let case = format!("{n}×{c}×{h}×{w}, k {k}, p {p}, strided {strided}");
            assert!(error < limit, "∂w {case}: {error:.2e} (limit {limit:.0e})");
        }
    }
}

#[test]
fn depthwise_weight_kernel_equals_burns_cpu_backward() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    <CpuTrain as Backend>::seed(&Default::default(), 4);
    check_depthwise_kernel::<Unfused>(1e-5);
    check_depthwise_kernel::<G>(1e-5);
}

#[test]
fn batch_norm_sum_kernels_equal_a_plain_reference() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Fewer values per channel than threads, more and not a multiple, one value, and
    // MyDenseNet's last block at batch 2 (1,024 channels of 7×7).
    for shape in [[3, 5, 37, 1], [4, 3, 7, 43], [1, 2, 1, 1], [2, 1024, 7, 7]] {
        for strided in [false, true] {
            check_reductions(reductions::<Unfused>(), shape, strided, 0.0);
            check_reductions(reductions::<G>(), shape, strided, 0.0);
        }
    }
}

/// The kernels read and write 16-bit floats where the tensors are (bf16 in CUDA's mixed
/// precision, which wgpu lacks; f16 has the same path: load, widen to f32, accumulate, round
/// back). The inputs are the f16 values; the sums are f32, so only the stored result's
/// rounding (2⁻¹¹ relative, held to 1e-3) is added to the f32 limits. The depthwise
/// reference is burn's f32 backward of the unrounded inputs: their f16 rounding moves the
/// gradient by a few 10⁻⁴ of its largest value (held to 2e-3).
#[test]
fn the_kernels_take_half_precision_tensors() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for shape in [[3, 5, 37, 1], [2, 64, 7, 7]] {
        for strided in [false, true] {
            check_reductions(reductions::<Half>(), shape, strided, 1e-3);
            check_reductions(reductions::<HalfFused>(), shape, strided, 1e-3);
        }
    }
    <CpuTrain as Backend>::seed(&Default::default(), 4);
    check_depthwise_kernel::<Half>(2e-3);
    check_depthwise_kernel::<HalfFused>(2e-3);
}
