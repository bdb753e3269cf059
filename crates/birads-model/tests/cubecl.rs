//! The GPU training code paths on a machine without a GPU: burn's wgpu backend runs the same
//! burn-cubecl kernels (convolution, matmul, pooling, reductions), the same burn-fusion
//! elementwise fusion and autotune as burn's CUDA backend, only compiled to WGSL instead of
//! CUDA C++. Mesa's software Vulkan driver (lavapipe) gives it a device on the CPU.
//!
//! What it checks, before any time is spent on a real GPU:
//! - birads' own depthwise backward (`birads_model::depthwise`), written for CUDA, computes
//!   the same gradients on a cubecl backend as burn's convolution backward does on the CPU;
//! - birads' own kernels (BatchNorm's statistics, normalisation and backward, the depthwise
//!   weight gradient, LayerNorm's forward and backward) equal a plain reference, in f32 and
//!   in f16;
//! - one training-mode forward and backward of both models on the cubecl backend, with
//!   birads' own operations installed as on CUDA (GELU's exact backward, BatchNorm's backward;
//!   the depthwise backward and LayerNorm, and for comparison without them), equals the CPU's
//!   f32 pass within the limit `birads bench device-check` holds CUDA to (1e-4 relative per
//!   tensor).
//!
//! Without the own GELU the ConvNeXt gradients are 2–6·10⁻⁴ away from the CPU on this
//! backend: burn-cubecl inherits a GELU backward that differentiates the tanh approximation
//! (measured against an f64 CPU pass, where the CPU's f32 pass is within 10⁻⁶).
//!
//! Run: `bash scripts/cubecl_check.sh` (installs lavapipe when missing), or
//! `cargo test -p birads-model --features wgpu --test cubecl`.
#![cfg(feature = "wgpu")]

mod common;

use birads_model::amp::in_dtype_if;
use birads_model::batch_norm::cube::{own_kernels, BatchNorm};
use birads_model::batch_norm::{OwnKernels, Running, Saved};
use birads_model::checkpoint::AnyModel;
use birads_model::cube::{self, Cube, Fused, Launch};
use birads_model::depthwise::cube::WeightGradient;
use birads_model::depthwise::{input_gradient, install, uninstall, weight_gradient_in_chunks};
use birads_model::gradcheck::{
    compare, convnext_config, densenet_config, moved, snapshot, Difference, Snapshot,
};
use birads_model::layer_norm::cube::{row_kernels, Rows};
use birads_model::{batch_norm, depthwise, gelu, layer_norm, Cpu, CpuTrain};
use burn::backend::wgpu::WgpuRuntime;
use burn::backend::{Autodiff, Wgpu};
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::{f16, DType, Distribution, FloatDType};
use burn_autodiff::checkpoint::strategy::NoCheckpointing;

use common::{
    assert_own_depthwise_ran, depthwise_reference, max_abs_diff, max_abs_diff_f64, own_dtype,
    own_float, running_statistics, DEPTHWISE_CASES,
};

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
/// BatchNorm's ε and momentum.
const EPSILON: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn on_gpu<const D: usize>(t: Tensor<Cpu, D>) -> Tensor<G, D> {
    own_float(t.to_data())
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

/// The cubecl pass and the CPU's f32 pass of `model` (moved through the checkpoint format).
fn passes(model: &AnyModel<CpuTrain>, seed: u64) -> (Snapshot, Snapshot) {
    let (got, want, _) = passes_and_running(model, seed);
    (got, want)
}

/// `passes`, and for a MyDenseNet a few of its BatchNorms' running estimates after each
/// (`common::running_statistics`; the cubecl model is moved before the CPU's pass updates them).
fn passes_and_running(
    model: &AnyModel<CpuTrain>,
    seed: u64,
) -> (Snapshot, Snapshot, [Vec<f64>; 2]) {
    let device = Default::default();
    <CpuTrain as Backend>::seed(&device, seed);
    let x =
        Tensor::<CpuTrain, 4>::random([2, 3, 64, 64], Distribution::Uniform(-2.0, 2.0), &device);
    let classes = match model {
        AnyModel::ConvNeXt(_) => 6,
        AnyModel::DenseNet(_) => 8,
    };
    let r = Tensor::<CpuTrain, 2>::random([2, classes], Distribution::Uniform(-1.0, 1.0), &device);
    let dir = tempfile::tempdir().unwrap();
    let gpu_model = moved::<_, GTrain>(model, dir.path()).unwrap();
    let want = snapshot(model, x.clone(), r.clone());
    let (gpu_x, gpu_r) = (own_float::<GTrain, 4>(x.to_data()), own_float(r.to_data()));
    let got = snapshot(&gpu_model, gpu_x, gpu_r);
    (got, want, [running(&gpu_model), running(model)])
}

fn running<B: Backend>(model: &AnyModel<B>) -> Vec<f64> {
    match model {
        AnyModel::DenseNet(m) => running_statistics(m),
        AnyModel::ConvNeXt(_) => Vec::new(),
    }
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
/// with its own per-channel sums always; the own depthwise backward (and its weight-gradient
/// kernel) when `own_depthwise`, the own LayerNorm (and its kernels) when `own_layer_norm`.
fn with_own_ops<T>(own_depthwise: bool, own_layer_norm: bool, f: impl FnOnce() -> T) -> T {
    gelu::install::<G, NoCheckpointing>();
    batch_norm::install::<G, NoCheckpointing>();
    cube::set::<BatchNorm, WgpuRuntime, f32, i32, u32>(true);
    if own_depthwise {
        install::<G, NoCheckpointing>();
        cube::set::<WeightGradient, WgpuRuntime, f32, i32, u32>(true);
    }
    if own_layer_norm {
        layer_norm::install::<G, NoCheckpointing>();
        cube::set::<Rows, WgpuRuntime, f32, i32, u32>(true);
    }
    let out = f();
    layer_norm::uninstall::<G, NoCheckpointing>();
    cube::set::<Rows, WgpuRuntime, f32, i32, u32>(false);
    uninstall::<G, NoCheckpointing>();
    cube::set::<WeightGradient, WgpuRuntime, f32, i32, u32>(false);
    cube::set::<BatchNorm, WgpuRuntime, f32, i32, u32>(false);
    batch_norm::uninstall::<G, NoCheckpointing>();
    gelu::uninstall::<G, NoCheckpointing>();
    out
}

#[test]
fn convnext_pass_on_cubecl_equals_the_cpu_with_burns_or_the_own_operations() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = AnyModel::ConvNeXt(convnext_config(true).init(&Default::default()));
    let (burns, want) = with_own_ops(false, false, || passes(&model, 5));
    let (own_depthwise, _) = with_own_ops(true, false, || passes(&model, 5));
    let (own, _) = with_own_ops(true, true, || passes(&model, 5));
    for (what, got) in [
        ("burn's depthwise backward and LayerNorm", &burns),
        ("own depthwise backward", &own_depthwise),
        ("own depthwise backward and LayerNorm", &own),
    ] {
        assert_within_limit(what, &compare(got, &want).unwrap());
    }
    assert_own_depthwise_ran(&own_depthwise, &burns);
    let between = compare(&own, &own_depthwise).unwrap();
    assert!(
        between
            .iter()
            .any(|d| d.name.contains("norm") && d.relative > 0.0),
        "the own LayerNorm did not run"
    );
}

#[test]
fn densenet_pass_on_cubecl_equals_the_cpu() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = AnyModel::DenseNet(densenet_config(true).init(&Default::default()));
    let (got, want, [running, want_running]) =
        with_own_ops(false, false, || passes_and_running(&model, 7));
    // The running estimates (updated in the own statistics kernel) as the CPU's.
    let worst = max_abs_diff_f64(&running, &want_running);
    assert!(
        !running.is_empty() && worst < 1e-5,
        "running estimates: {worst:.2e}"
    );
    let (burns, _) = with_own_ops(false, false, || {
        cube::set::<BatchNorm, WgpuRuntime, f32, i32, u32>(false);
        passes(&model, 7)
    });
    assert_within_limit("MyDenseNet", &compare(&got, &want).unwrap());
    assert_within_limit(
        "MyDenseNet, burn's operations in BatchNorm",
        &compare(&burns, &want).unwrap(),
    );
    let between = compare(&got, &burns).unwrap();
    assert!(
        between
            .iter()
            .any(|d| d.name.contains("norm") && d.relative > 0.0),
        "BatchNorm's own kernels did not run"
    );
}

/// A value and the sum of its terms' magnitudes (what f32 rounding scales with).
type Reference = (f64, f64);

/// BatchNorm's kernels (`batch_norm::cube`) on one backend against a plain f64 computation
/// from the values as `B` holds them: `x`, `g` `[N, C, H, W]` (channels-last underneath when
/// `strided`, so the kernels read a non-contiguous view), random γ and β; each kernel is fed
/// the reference's inputs (the exact statistics rounded to `B`, the kernel's own sums for
/// ∂x), so that each is checked on its own. Each result must be within 1e-5 of its terms'
/// magnitude (f32 sums of a few thousand terms are within about 1e-6 of it; a wrong index,
/// channel or lost partial sum is off by far more), plus `rounding` of its value (the result
/// stored in `B`'s precision). With `amp`'s precisions, a result stored in f16 (`y`, ∂x) is
/// held to its rounding instead (2⁻¹¹ of the value, 1e-3, or half the subnormal step).
fn check_batch_norm_kernels<B: Backend>(
    kernels: OwnKernels<B>,
    dims: [usize; 4],
    strided: bool,
    relu: bool,
    rounding: f64,
    amp: Amp,
) {
    let case = BnCase::<B>::new(dims, strided, relu, rounding, amp);
    let (mean, var) = case.check_moments(&kernels);
    let (y, yv) = case.check_normalize(&kernels, mean.clone(), var.clone());
    let saved = Saved {
        x: case.x.clone(),
        mean,
        var,
        weight: case.weight.clone(),
        epsilon: EPSILON,
        relu_output: relu.then_some(y),
    };
    case.check_backward(&kernels, &saved, &yv);
}

/// One case of [`check_batch_norm_kernels`]: its inputs on `B` and as `B` holds them.
struct BnCase<B: Backend> {
    name: String,
    dims: [usize; 4],
    relu: bool,
    rounding: f64,
    amp: Amp,
    x: Tensor<B, 4>,
    g: Tensor<B, 4>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    xv: Vec<f32>,
    gv: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// The statistics the kernels after `moments` are fed, as `B` holds them.
struct Stats {
    mu: Vec<f32>,
    sigma2: Vec<f32>,
}

impl Stats {
    fn inv(&self, ch: usize) -> f64 {
        1.0 / (f64::from(self.sigma2[ch]) + EPSILON).sqrt()
    }
}

impl<B: Backend> BnCase<B> {
    fn new(dims: [usize; 4], strided: bool, relu: bool, rounding: f64, amp: Amp) -> Self {
        let name = format!("{dims:?} strided {strided} relu {relu} {amp:?}");
        let [_, c, _, _] = dims;
        let device = Default::default();
        let random = |shape: [usize; 4]| {
            Tensor::<Cpu, 4>::random(shape, Distribution::Normal(0.5, 2.0), &device)
        };
        let to_b = |t: Tensor<Cpu, 4>, dtype: Option<FloatDType>| -> Tensor<B, 4> {
            if strided {
                // Channels-last underneath, as a convolution's output is: [N, H, W, C]
                // contiguous, then a permuted view of it.
                let data = t.permute([0, 2, 3, 1]).into_data();
                in_dtype_if(own_float(data), dtype).permute([0, 3, 1, 2])
            } else {
                in_dtype_if(own_float(t.into_data()), dtype)
            }
        };
        let x = to_b(random(dims) + 3.0, amp.input);
        let g = to_b(random(dims), amp.output);
        let own = own_dtype::<B>();
        let x_type = amp.input.map_or(own, DType::from);
        assert_eq!(x.dtype(), x_type, "{name}: x's precision");
        let g_type = amp.output.map_or(own, DType::from);
        assert_eq!(g.dtype(), g_type, "{name}: g's precision");
        let weight = per_channel::<B>(&values(random([1, c, 1, 1])));
        let bias = per_channel::<B>(&values(random([1, c, 1, 1])));
        BnCase {
            name,
            dims,
            relu,
            rounding,
            amp,
            xv: values(x.clone()),
            gv: values(g.clone()),
            gamma: values(weight.clone()),
            beta: values(bias.clone()),
            x,
            g,
            weight,
            bias,
        }
    }

    /// Where value `i` of channel `ch` (in N, H, W order) is in `[N, C, H, W]`.
    fn at(&self, ch: usize, i: usize) -> usize {
        let [_, c, h, w] = self.dims;
        let plane = h * w;
        (i / plane) * c * plane + ch * plane + i % plane
    }

    /// Values per channel.
    fn count(&self) -> usize {
        let [n, _, h, w] = self.dims;
        n * h * w
    }

    fn hat(&self, stats: &Stats, ch: usize, i: usize) -> f64 {
        (f64::from(self.xv[self.at(ch, i)]) - f64::from(stats.mu[ch])) * stats.inv(ch)
    }

    /// `got` against the reference: within 1e-5 of its terms' magnitude plus the rounding of
    /// the precision it is stored in.
    fn check(&self, what: &str, index: usize, got: f32, (want, magnitude): Reference) {
        let error = (f64::from(got) - want).abs();
        let stored = match what {
            "y" => self.amp.output,
            "∂x" => self.amp.input,
            _ => None,
        };
        // f16: 2⁻¹¹ of the value, and half its subnormal step (2⁻²⁵) below 2⁻¹⁴, whether amp
        // or `B` itself stores the result in f16.
        let rounding = if stored.is_some() {
            1e-3
        } else {
            self.rounding
        };
        let floor = match stored.map_or(own_dtype::<B>(), DType::from) {
            DType::F16 => 2f64.powi(-25),
            _ => 0.0,
        };
        assert!(
            error <= 1e-5 * magnitude.max(1e-30) + rounding * want.abs() + floor,
            "{}, {what} {index}: {got} against {want} (error {error:.2e}, terms {magnitude:.2e})",
            self.name
        );
    }

    /// `moments` and the running estimates after it; returns the exact statistics, rounded to
    /// `B`, for the kernels after it.
    fn check_moments(&self, kernels: &OwnKernels<B>) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let c = self.dims[1];
        let device = Default::default();
        let random = |shift: f64| {
            values(Tensor::<Cpu, 1>::random([c], Distribution::Normal(0.5, 2.0), &device) + shift)
        };
        let running = Running {
            mean: per_channel(&random(0.0)),
            var: per_channel(&random(4.0)),
            momentum: MOMENTUM,
        };
        let (old_mean, old_var) = (values(running.mean.clone()), values(running.var.clone()));
        let ((got_mean, got_var), running) = (kernels.moments)(self.x.clone(), running);
        let [got_mean, got_var, new_mean, new_var] =
            [got_mean, got_var, running.mean, running.var].map(values);
        let m = self.count() as f64;
        let mut exact = vec![(0.0, 0.0); c];
        for ch in 0..c {
            let xs: Vec<f64> = (0..self.count())
                .map(|i| f64::from(self.xv[self.at(ch, i)]))
                .collect();
            let mean = xs.iter().sum::<f64>() / m;
            let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m;
            let magnitude = xs.iter().map(|v| v.abs()).sum::<f64>() / m;
            self.check("mean", ch, got_mean[ch], (mean, magnitude));
            self.check("variance", ch, got_var[ch], (var, var));
            let (keep, unbiased) = (1.0 - MOMENTUM, var * m / (m - 1.0).max(1.0));
            let mean_after = (f64::from(old_mean[ch]) * keep, mean * MOMENTUM);
            let var_after = (f64::from(old_var[ch]) * keep, unbiased * MOMENTUM);
            for (what, got, (old, new)) in [
                ("running mean", new_mean[ch], mean_after),
                ("running variance", new_var[ch], var_after),
            ] {
                self.check(what, ch, got, (old + new, old.abs() + new.abs()));
            }
            exact[ch] = (mean, var);
        }
        let rounded = |f: fn(&(f64, f64)) -> f64| {
            per_channel(&exact.iter().map(|e| f(e) as f32).collect::<Vec<_>>())
        };
        (rounded(|e| e.0), rounded(|e| e.1))
    }

    /// `normalize` (and the ReLU) from the given statistics: `y` and its values.
    fn check_normalize(
        &self,
        kernels: &OwnKernels<B>,
        mean: Tensor<B, 1>,
        var: Tensor<B, 1>,
    ) -> (Tensor<B, 4>, Vec<f32>) {
        let out = self.amp.output.map_or(self.weight.dtype(), DType::from);
        let stats = Stats {
            mu: values(mean.clone()),
            sigma2: values(var.clone()),
        };
        let (x, weight, bias) = (self.x.clone(), self.weight.clone(), self.bias.clone());
        let y = (kernels.normalize)(x, mean, var, weight, bias, EPSILON, self.relu, out);
        assert_eq!(y.dtype(), out, "{}: y's precision", self.name);
        let yv = values(y.clone());
        for ch in 0..self.dims[1] {
            let (gm, bt) = (f64::from(self.gamma[ch]), f64::from(self.beta[ch]));
            for i in 0..self.count() {
                let scaled = gm * self.hat(&stats, ch, i);
                let v = if self.relu {
                    (scaled + bt).max(0.0)
                } else {
                    scaled + bt
                };
                let at = self.at(ch, i);
                self.check("y", at, yv[at], (v, scaled.abs() + bt.abs()));
            }
        }
        (y, yv)
    }

    /// ∂β and ∂γ (`gradient_sums`), then ∂x from the kernel's own sums.
    fn check_backward(&self, kernels: &OwnKernels<B>, saved: &Saved<B>, yv: &[f32]) {
        let stats = Stats {
            mu: values(saved.mean.clone()),
            sigma2: values(saved.var.clone()),
        };
        let through = |ch: usize, i: usize| {
            let at = self.at(ch, i);
            if self.relu && yv[at] <= 0.0 {
                0.0
            } else {
                f64::from(self.gv[at])
            }
        };
        let (sum_g, sum_gx) = (kernels.gradient_sums)(self.g.clone(), saved);
        let sums = (sum_g.clone(), sum_gx.clone());
        let (sum_g, sum_gx) = (values(sum_g), values(sum_gx));
        let c = self.dims[1];
        for ch in 0..c {
            let terms: Vec<(f64, f64)> = (0..self.count())
                .map(|i| (through(ch, i), self.hat(&stats, ch, i)))
                .collect();
            let plain = (
                terms.iter().map(|t| t.0).sum(),
                terms.iter().map(|t| t.0.abs()).sum(),
            );
            let centred = terms.iter().map(|t| t.0 * t.1);
            let centred = (centred.clone().sum(), centred.map(f64::abs).sum());
            self.check("Σg", ch, sum_g[ch], plain);
            self.check("Σg·x̂", ch, sum_gx[ch], centred);
        }
        let dx = (kernels.input_gradient)(self.g.clone(), saved, sums);
        assert_eq!(dx.dtype(), saved.x.dtype(), "{}: ∂x's precision", self.name);
        let dx = values(dx);
        let m = self.count() as f64;
        for ch in 0..c {
            let scale = f64::from(self.gamma[ch]) * stats.inv(ch);
            let (db, dw) = (f64::from(sum_g[ch]) / m, f64::from(sum_gx[ch]) / m);
            for i in 0..self.count() {
                let (gi, xh) = (through(ch, i), self.hat(&stats, ch, i));
                let want = scale * (gi - db - xh * dw);
                let magnitude = scale.abs() * (gi.abs() + db.abs() + (xh * dw).abs());
                let at = self.at(ch, i);
                self.check("∂x", at, dx[at], (want, magnitude));
            }
        }
    }
}

fn per_channel<B: Backend>(v: &[f32]) -> Tensor<B, 1> {
    own_float::<B, 1>(TensorData::new(v.to_vec(), [v.len()]))
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
            let x = own_float::<B, 4>(want.x.to_data());
            let x = if strided {
                own_float::<B, 4>(x.swap_dims(2, 3).into_data()).swap_dims(2, 3)
            } else {
                x
            };
            let r = own_float::<B, 4>(want.r.to_data());
            assert_eq!([x.dtype(), r.dtype()], [own_dtype::<B>(); 2]);
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
fn batch_norm_kernels_equal_a_plain_reference() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Fewer values per channel than threads, more and not a multiple, one value, and
    // MyDenseNet's last block at batch 2 (1,024 channels of 7×7).
    for shape in [[3, 5, 37, 1], [4, 3, 7, 43], [1, 2, 1, 1], [2, 1024, 7, 7]] {
        for (strided, relu) in [(false, false), (true, false), (false, true), (true, true)] {
            let same = Amp::default();
            check_batch_norm_kernels(own_kernels::<Unfused>(), shape, strided, relu, 0.0, same);
            check_batch_norm_kernels(own_kernels::<G>(), shape, strided, relu, 0.0, same);
        }
    }
}

/// A normalisation's precisions under amp where they are not the backend's (f16 standing for
/// bf16: wgpu has none); the statistics and parameters stay the backend's f32.
#[derive(Clone, Copy, Debug, Default)]
struct Amp {
    /// `x` and ∂x: a convolution's product, as it was computed.
    input: Option<FloatDType>,
    /// `y` and `g`: the input of the layer after it.
    output: Option<FloatDType>,
}

impl Amp {
    /// f16 out, in, and both.
    const MIXED: [Amp; 3] = [
        Amp {
            input: None,
            output: Some(FloatDType::F16),
        },
        Amp {
            input: Some(FloatDType::F16),
            output: None,
        },
        Amp {
            input: Some(FloatDType::F16),
            output: Some(FloatDType::F16),
        },
    ];
}

/// Under amp a BatchNorm reads a convolution's product in its precision and hands ∂x back in
/// it, and one before a convolution writes its output in the convolution's precision and
/// reads the gradient in it.
#[test]
fn batch_norm_kernels_read_and_write_the_products_precision() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for shape in [[3, 5, 37, 1], [2, 64, 7, 7]] {
        for (strided, relu) in [(false, true), (true, true), (true, false)] {
            for amp in Amp::MIXED {
                check_batch_norm_kernels(own_kernels::<Unfused>(), shape, strided, relu, 0.0, amp);
                check_batch_norm_kernels(own_kernels::<G>(), shape, strided, relu, 0.0, amp);
            }
        }
    }
}

/// LayerNorm of rows `[R, C]` in f64, forward and backward: `y`, mean, 1/σ, `∂x`, `∂γ`, `∂β`
/// for output gradient `g`.
fn layer_norm_reference(
    [x, g, weight, bias]: [&[f32]; 4],
    [rows, columns]: [usize; 2],
    epsilon: f64,
) -> [Vec<f64>; 6] {
    let mut out: [Vec<f64>; 6] = Default::default();
    let (mut dw, mut db) = (vec![0.0; columns], vec![0.0; columns]);
    let count = columns as f64;
    for r in 0..rows {
        let row = |t: &[f32]| -> Vec<f64> {
            t[r * columns..(r + 1) * columns]
                .iter()
                .map(|&v| f64::from(v))
                .collect()
        };
        let (xs, gs) = (row(x), row(g));
        let mean = xs.iter().sum::<f64>() / count;
        let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / count;
        let inv = 1.0 / (var + epsilon).sqrt();
        let normalised: Vec<f64> = xs.iter().map(|v| (v - mean) * inv).collect();
        let scaled: Vec<f64> = (0..columns).map(|c| gs[c] * f64::from(weight[c])).collect();
        let plain = scaled.iter().sum::<f64>() / count;
        let along = (0..columns).map(|c| scaled[c] * normalised[c]).sum::<f64>() / count;
        for c in 0..columns {
            out[0].push(normalised[c] * f64::from(weight[c]) + f64::from(bias[c]));
            out[3].push((scaled[c] - plain - normalised[c] * along) * inv);
            dw[c] += gs[c] * normalised[c];
            db[c] += gs[c];
        }
        out[1].push(mean);
        out[2].push(inv);
    }
    out[4] = dw;
    out[5] = db;
    out
}

/// LayerNorm's kernels on backend `B` against `layer_norm_reference` of the values as `B`
/// holds them, rows contiguous or (`strided`) a transposed view: every result within `limit`
/// of its tensor's largest value, or 1e-3 where `amp` stores it in f16 (`y`, ∂x).
fn check_layer_norm_kernels<B: Backend>(
    kernels: layer_norm::Kernels<B>,
    [rows, columns]: [usize; 2],
    strided: bool,
    limit: f64,
    amp: Amp,
) {
    let to_b = |t: Tensor<Cpu, 2>, dtype: Option<FloatDType>| -> Tensor<B, 2> {
        if strided {
            in_dtype_if(own_float(t.transpose().into_data()), dtype).transpose()
        } else {
            in_dtype_if(own_float(t.into_data()), dtype)
        }
    };
    let random = |shape: [usize; 2], low, high| {
        Tensor::<Cpu, 2>::random(shape, Distribution::Uniform(low, high), &Default::default())
    };
    let x = to_b(
        random([rows, columns], -1.0, 1.0) * random([rows, 1], 0.5, 3.0)
            + random([rows, 1], -2.0, 2.0),
        amp.input,
    );
    let g = to_b(random([rows, columns], -1.0, 1.0), amp.output);
    let one = |low, high| to_b(random([1, columns], low, high), None).reshape([columns]);
    let (weight, bias) = (one(0.5, 1.5), one(-1.0, 1.0));
    let own = own_dtype::<B>();
    assert_eq!(
        x.dtype(),
        amp.input.map_or(own, DType::from),
        "x's precision"
    );
    assert_eq!(weight.dtype(), own, "γ's precision");
    let inputs = [&x, &g].map(|t| values(t.clone()));
    let params = [&weight, &bias].map(|t| values(t.clone()));
    let epsilon = 1e-6;
    let want = layer_norm_reference(
        [&inputs[0], &inputs[1], &params[0], &params[1]],
        [rows, columns],
        epsilon,
    );
    let out = amp.output.map_or(weight.dtype(), DType::from);
    let (y, mean, inv_std) = (kernels.forward)(x.clone(), weight.clone(), bias, epsilon, out);
    let case = format!("{rows}×{columns} strided {strided} {amp:?}");
    assert_eq!(y.dtype(), out, "{case}: y's precision");
    let input = x.dtype();
    let (dx, dw, db) = (kernels.backward)(g, x, weight, mean.clone(), inv_std.clone());
    assert_eq!(dx.dtype(), input, "{case}: ∂x's precision");
    let got = [
        values(y),
        values(mean),
        values(inv_std),
        values(dx),
        values(dw),
        values(db),
    ];
    for (name, (got, want)) in ["y", "mean", "1/σ", "∂x", "∂γ", "∂β"]
        .iter()
        .zip(got.iter().zip(&want))
    {
        let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        let error = relative(got, &want);
        let stored = match *name {
            "y" => amp.output,
            "∂x" => amp.input,
            _ => None,
        };
        let limit = if stored.is_some() { 1e-3 } else { limit };
        assert!(
            error < limit,
            "{case}, {name}: {error:.2e} (limit {limit:.0e})"
        );
    }
}

/// Fewer columns than threads to a row, ConvNeXt's widths, a row alone, rows not a multiple
/// of a cube's and more rows than one share takes.
const LAYER_NORM_SHAPES: [[usize; 2]; 5] = [[3, 5], [37, 96], [98, 768], [1, 33], [4001, 40]];

#[test]
fn layer_norm_kernels_equal_a_plain_reference() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    <Cpu as Backend>::seed(&Default::default(), 8);
    for shape in LAYER_NORM_SHAPES {
        for strided in [false, true] {
            let same = Amp::default();
            check_layer_norm_kernels(row_kernels::<Unfused>(), shape, strided, 1e-5, same);
            check_layer_norm_kernels(row_kernels::<G>(), shape, strided, 1e-5, same);
        }
    }
}

/// Under amp a LayerNorm reads a convolution's product in its precision and hands ∂x back in
/// it, and writes its output in the precision of the linear layer after it and reads the
/// gradient in it; the statistics and ∂γ, ∂β stay f32.
#[test]
fn layer_norm_kernels_read_and_write_the_products_precision() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    <Cpu as Backend>::seed(&Default::default(), 8);
    for shape in [[37, 96], [4001, 40]] {
        for strided in [false, true] {
            for amp in Amp::MIXED {
                check_layer_norm_kernels(row_kernels::<Unfused>(), shape, strided, 1e-5, amp);
                check_layer_norm_kernels(row_kernels::<G>(), shape, strided, 1e-5, amp);
            }
        }
    }
}

/// Inference (no autodiff) on a cubecl backend with the kernels set runs the forward kernel
/// alone, through the models' `layer_norm::rows`, and gives burn's LayerNorm of the CPU.
#[test]
fn layer_norm_inference_runs_the_forward_kernel() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    <Cpu as Backend>::seed(&device, 9);
    let config = burn::nn::LayerNormConfig::new(96).with_epsilon(1e-6);
    let (mut norm, mut on_g) = (
        config.init::<Cpu>(&device),
        config.init::<G>(&Default::default()),
    );
    let gamma = Tensor::<Cpu, 1>::random([96], Distribution::Uniform(0.5, 1.5), &device);
    let beta = Tensor::<Cpu, 1>::random([96], Distribution::Uniform(-1.0, 1.0), &device);
    norm.gamma = Param::from_tensor(gamma.clone());
    norm.beta = Some(Param::from_tensor(beta.clone()));
    on_g.gamma = Param::from_tensor(on_gpu(gamma));
    on_g.beta = Some(Param::from_tensor(on_gpu(beta)));
    let x = Tensor::<Cpu, 2>::random([50, 96], Distribution::Normal(1.0, 3.0), &device);
    let want = values(norm.forward(x.clone()));
    assert!(layer_norm::installed::<G>().is_none());
    cube::set::<Rows, WgpuRuntime, f32, i32, u32>(true);
    let installed = layer_norm::installed::<G>().is_some();
    let got = values(layer_norm::rows(&on_g, 1e-6, on_gpu(x)));
    cube::set::<Rows, WgpuRuntime, f32, i32, u32>(false);
    assert!(
        installed,
        "the forward kernel is not installed for inference"
    );
    assert!(layer_norm::installed::<G>().is_none());
    let error = relative(&got, &want);
    assert!(error < 1e-5, "{error:.2e}");
}

/// The kernels read and write 16-bit floats where the tensors are (bf16 in CUDA's mixed
/// precision, which wgpu lacks; f16 has the same path: load, widen to f32, accumulate, round
/// back). The inputs are the f16 values; the sums are f32, so only the stored result's
/// rounding (2⁻¹¹ relative, held to 1e-3, and half a subnormal step below 2⁻¹⁴: results of a
/// few 10⁻⁶ occur) is added to the f32 limits. The depthwise
/// reference is burn's f32 backward of the unrounded inputs: their f16 rounding moves the
/// gradient by a few 10⁻⁴ of its largest value (held to 2e-3).
#[test]
fn the_kernels_take_half_precision_tensors() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    <Cpu as Backend>::seed(&Default::default(), 4);
    for shape in [[3, 5, 37, 1], [2, 64, 7, 7]] {
        for (strided, relu) in [(false, true), (true, false)] {
            let same = Amp::default();
            check_batch_norm_kernels(own_kernels::<Half>(), shape, strided, relu, 1e-3, same);
            check_batch_norm_kernels(own_kernels::<HalfFused>(), shape, strided, relu, 1e-3, same);
        }
    }
    <CpuTrain as Backend>::seed(&Default::default(), 4);
    check_depthwise_kernel::<Half>(2e-3);
    check_depthwise_kernel::<HalfFused>(2e-3);
    // LayerNorm: the output and ∂x stored in f16 (2⁻¹¹ of a value at most the largest), the
    // statistics and ∂γ, ∂β in f32.
    for shape in [[37, 96], [4001, 40]] {
        for strided in [false, true] {
            let same = Amp::default();
            check_layer_norm_kernels(row_kernels::<Half>(), shape, strided, 1e-3, same);
            check_layer_norm_kernels(row_kernels::<HalfFused>(), shape, strided, 1e-3, same);
        }
    }
}
