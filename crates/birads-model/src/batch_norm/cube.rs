//! BatchNorm's training pass as cubecl kernels of birads' own, one launch each, for the cubecl
//! backends (CUDA's; wgpu's for the check without a GPU).
//!
//! burn reduces one axis per launch, so a sum over batch and positions of `[N, C, L]` is two
//! launches, and BatchNorm needs two such sums in each direction; the arithmetic around them
//! (the `[C]` coefficients, their broadcasts, the ReLU and its mask) is some 25 more operations
//! for burn-fusion to record and plan per BatchNorm, 121 BatchNorms per MyDenseNet step. Here:
//!
//! - `moments`: mean and biased variance of `x`, in two passes over the values (the mean
//!   first, then the squared deviations from it), as the generic path computes them, and the
//!   running estimates after them;
//! - `normalize`: `γ·(x − μ)/σ + β` and its ReLU, written channels-last, as the convolution
//!   after it reads its input;
//! - `gradient_sums`: `∂β = Σ g` and `∂γ = Σ g·x̂` for the backward, `g` through the ReLU;
//! - `input_gradient`: `∂x = γ/σ·(g − ∂β/M − x̂·∂γ/M)`.
//!
//! The reductions give a channel one cube, whose threads stride over the channel's N·H·W
//! values, accumulate in f32 whatever the tensor's precision, and add their partial sums up
//! in shared memory; the elementwise kernels give each value a thread. On a fusion backend
//! each is one custom operation in burn-fusion's stream (`crate::cube`).

use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor};

use super::kernels;
use super::{OwnKernels, PerChannel, Running, Saved};
use crate::amp::in_dtype;
use crate::cube::{float, primitive, Kernels, Launch};

/// Mean and biased variance per channel of `x` `[N, C, H, W]`, and the running estimates
/// after them: one launch.
fn moments<B: Launch>(x: Tensor<B, 4>, running: Running<B>) -> (PerChannel<B>, Running<B>) {
    // The statistics in the running estimates' precision (the parameters'), whatever `x`'s.
    let ([_, c, _, _], dtype) = (x.dims(), running.mean.dtype());
    let momentum = running.momentum;
    let [running_mean, running_var] = [running.mean, running.var].map(|t| in_dtype(t, dtype));
    let [mean, var, new_mean, new_var] = B::launch(
        "birads_batch_norm_moments",
        [
            primitive(x),
            primitive(running_mean),
            primitive(running_var),
        ],
        [(); 4].map(|_| ([c].into(), dtype)),
        Box::new(move |t| kernels::moments::<B::Runtime>(t, momentum)),
    );
    let running = Running {
        mean: float(new_mean),
        var: float(new_var),
        momentum,
    };
    ((float(mean), float(var)), running)
}

/// `γ·(x − μ)/σ + β` (its ReLU with `relu`) of `x` `[N, C, H, W]`, written `[N, H, W, C]`
/// in `output`'s precision and returned as a view `[N, C, H, W]` of it: one launch.
#[allow(clippy::too_many_arguments)]
fn normalize<B: Launch>(
    x: Tensor<B, 4>,
    mean: Tensor<B, 1>,
    var: Tensor<B, 1>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    epsilon: f64,
    relu: bool,
    output: DType,
) -> Tensor<B, 4> {
    // The per-channel tensors in one precision, the weight's.
    let ([n, c, h, w], dtype) = (x.dims(), weight.dtype());
    let per_channel = [mean, var, weight, bias].map(|t| primitive(in_dtype(t, dtype)));
    let [mean, var, weight, bias] = per_channel;
    let inputs = [primitive(x), mean, var, weight, bias];
    let [y] = B::launch(
        // The variant in the name, for burn-fusion's logs.
        if relu {
            "birads_batch_norm_normalize_relu"
        } else {
            "birads_batch_norm_normalize"
        },
        inputs,
        [([n, h, w, c].into(), output)],
        Box::new(move |t| kernels::normalize::<B::Runtime>(t, epsilon, relu, output)),
    );
    float::<B, 4>(y).permute([0, 3, 1, 2])
}

/// What both backward kernels read: `g`, the forward's input, its output (for the ReLU's
/// mask, in `g`'s precision; `g` again where there was no ReLU), the mean and the variance;
/// and whether there was a ReLU, and ε.
fn backward_inputs<B: Launch>(
    g: Tensor<B, 4>,
    saved: &Saved<B>,
) -> ([FloatTensor<B>; 5], bool, f64) {
    let relu_output = saved.relu_output.clone();
    let relu = relu_output.is_some();
    let y = relu_output.unwrap_or_else(|| g.clone());
    let (x, mean, var) = (saved.x.clone(), saved.mean.clone(), saved.var.clone());
    let inputs = [
        primitive(g),
        primitive(x),
        primitive(y),
        primitive(mean),
        primitive(var),
    ];
    (inputs, relu, saved.epsilon)
}

/// `∂β = Σ g` and `∂γ = Σ g·x̂` per channel, in the statistics' precision: one launch.
fn gradient_sums<B: Launch>(g: Tensor<B, 4>, saved: &Saved<B>) -> PerChannel<B> {
    let ([_, c, _, _], dtype) = (g.dims(), saved.mean.dtype());
    let (inputs, relu, epsilon) = backward_inputs(g, saved);
    let [sum_g, sum_gx] = B::launch(
        if relu {
            "birads_batch_norm_gradient_sums_relu"
        } else {
            "birads_batch_norm_gradient_sums"
        },
        inputs,
        [([c].into(), dtype), ([c].into(), dtype)],
        Box::new(move |t| kernels::gradient_sums::<B::Runtime>(t, epsilon, relu)),
    );
    (float(sum_g), float(sum_gx))
}

/// `∂x = γ/σ·(g − ∂β/M − x̂·∂γ/M)` `[N, C, H, W]`, in the input's precision: one launch.
fn input_gradient<B: Launch>(
    g: Tensor<B, 4>,
    saved: &Saved<B>,
    (d_bias, d_weight): PerChannel<B>,
) -> Tensor<B, 4> {
    let (dims, dtype) = (g.dims(), saved.x.dtype());
    let ([g, x, y, mean, var], relu, epsilon) = backward_inputs(g, saved);
    let weight = primitive(in_dtype(saved.weight.clone(), saved.mean.dtype()));
    let inputs = [
        g,
        x,
        y,
        mean,
        var,
        weight,
        primitive(d_bias),
        primitive(d_weight),
    ];
    let [dx] = B::launch(
        if relu {
            "birads_batch_norm_input_gradient_relu"
        } else {
            "birads_batch_norm_input_gradient"
        },
        inputs,
        [(dims.into(), dtype)],
        Box::new(move |t| kernels::input_gradient::<B::Runtime>(t, epsilon, relu)),
    );
    float(dx)
}

/// The kernels on backend `B` (burn's `CubeBackend`, or burn's fusion backend over it).
pub fn own_kernels<B: Launch>() -> OwnKernels<B> {
    OwnKernels {
        moments: moments::<B>,
        normalize: normalize::<B>,
        gradient_sums: gradient_sums::<B>,
        input_gradient: input_gradient::<B>,
    }
}

/// The four kernels, for `crate::cube::set`.
pub struct BatchNorm;

impl Kernels for BatchNorm {
    fn install<B: Launch>() {
        super::install_kernels(own_kernels::<B>());
    }

    fn uninstall<B: Launch>() {
        super::uninstall_kernels::<B>();
    }
}
