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

#[path = "../common/mod.rs"]
mod common;

use common::serial;

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

mod batch_norm_kernels;
mod depthwise_backward;
mod layer_norm_kernels;
mod matmul_kernels;
mod models;

use batch_norm_kernels::check_batch_norm_kernels;
use depthwise_backward::check_depthwise_kernel;
use layer_norm_kernels::check_layer_norm_kernels;

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

/// The kernels read and write 16-bit floats where the tensors are (bf16 in CUDA's mixed
/// precision, which wgpu lacks; f16 has the same path: load, widen to f32, accumulate, round
/// back). The inputs are the f16 values; the sums are f32, so only the stored result's
/// rounding (2⁻¹¹ relative, held to 1e-3, and half a subnormal step below 2⁻¹⁴: results of a
/// few 10⁻⁶ occur) is added to the f32 limits. The depthwise reference is burn's f32 backward
/// of the unrounded inputs: their f16 rounding moves the gradient by a few 10⁻⁴ of its largest
/// value (held to 2e-3).
#[test]
fn the_kernels_take_half_precision_tensors() {
    let _serial = serial();
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
