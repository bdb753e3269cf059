//! LayerNorm's forward and backward as cubecl kernels of birads' own (`kernels.rs`), for the
//! cubecl backends (CUDA's; wgpu's for the check without a GPU).
//!
//! With burn's operations a LayerNorm's forward is two row reductions and the arithmetic
//! between them; its backward (burn's autodiff, or the closed form) four reductions, two over
//! rows and two over columns. Here the forward is one launch that reads a row, keeps its mean
//! and 1/σ (f32), and writes it normalised; the backward one launch for ∂x (both row sums and
//! the formula, row by row) and two for ∂γ and ∂β (column sums per share of the rows, then
//! their total over the shares). On a fusion backend each kernel is one custom operation in
//! burn-fusion's stream (`crate::cube`).

use burn::tensor::{DType, FloatDType, Tensor};

use super::kernels;
use super::{Gradient, Kernels, Normalised};
use crate::amp::cast_like;
use crate::cube::{float, primitive, Kernels as KernelSet, Launch};

/// The forward, `y` in `output`'s precision: one launch.
fn forward<B: Launch>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    epsilon: f64,
    output: DType,
) -> Normalised<B> {
    let [r, c] = x.dims();
    let bias = cast_like(bias, &weight);
    let outputs = [
        ([r, c].into(), output),
        ([r].into(), DType::F32),
        ([r].into(), DType::F32),
    ];
    let [y, mean, inv_std] = B::launch(
        "birads_layer_norm_forward",
        [primitive(x), primitive(weight), primitive(bias)],
        outputs,
        Box::new(move |inputs| kernels::forward(inputs, epsilon, output)),
    );
    (float(y), float(mean), float(inv_std))
}

/// The backward: one launch for ∂x (in `x`'s precision), one for the column sums per share
/// and one reduction over the shares (where there is more than one); ∂γ and ∂β in f32.
fn backward<B: Launch>(
    g: Tensor<B, 2>,
    x: Tensor<B, 2>,
    weight: Tensor<B, 1>,
    mean: Tensor<B, 1>,
    inv_std: Tensor<B, 1>,
) -> Gradient<B> {
    let ([r, c], dtype) = (x.dims(), x.dtype());
    let inputs = [
        primitive(g.clone()),
        primitive(x.clone()),
        primitive(weight),
        primitive(mean.clone()),
        primitive(inv_std.clone()),
    ];
    let [dx] = B::launch(
        "birads_layer_norm_input_gradient",
        inputs,
        [([r, c].into(), dtype)],
        Box::new(|inputs| [kernels::input_gradient(inputs)]),
    );
    let shares = kernels::shares(r, c);
    let inputs = [
        primitive(g),
        primitive(x),
        primitive(mean),
        primitive(inv_std),
    ];
    let [partial] = B::launch(
        "birads_layer_norm_parameter_gradient",
        inputs,
        [([2, shares, c].into(), DType::F32)],
        Box::new(move |inputs| [kernels::parameter_gradient(inputs, shares)]),
    );
    let partial = float::<B, 3>(partial);
    let sums = if shares > 1 {
        partial.sum_dim(1)
    } else {
        partial
    };
    let d_weight = sums.clone().narrow(0, 0, 1).reshape([c]);
    let d_bias = sums.narrow(0, 1, 1).reshape([c]);
    (float(dx), d_weight, d_bias)
}

/// LayerNorm outside autodiff (inference): the forward kernel, its statistics dropped.
fn inference<B: Launch>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    epsilon: f64,
    output: Option<FloatDType>,
) -> Tensor<B, 2> {
    let output = output.map_or(weight.dtype(), DType::from);
    forward(x, weight, bias, epsilon, output).0
}

/// The kernels on backend `B` (burn's `CubeBackend`, or burn's fusion backend over it).
pub fn row_kernels<B: Launch>() -> Kernels<B> {
    Kernels {
        forward: forward::<B>,
        backward: backward::<B>,
    }
}

/// The kernels, for `crate::cube::set`: inside the own LayerNorm's training pass (not where
/// `BIRADS_LAYERNORM_KERNELS=burn`) and, the forward alone, for inference on `B` (not where
/// `BIRADS_LAYERNORM=burn`).
pub struct Rows;

impl KernelSet for Rows {
    fn install<B: Launch>() {
        super::install_kernels(row_kernels::<B>());
        super::install_forward::<B>(inference::<B>);
    }

    fn uninstall<B: Launch>() {
        super::uninstall_kernels::<B>();
        super::uninstall_forward::<B>();
    }
}
