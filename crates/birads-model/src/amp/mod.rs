//! Mixed precision in the manner of `torch.autocast`: the parameters (and the optimiser's
//! copy of them) stay f32, and inside an [`autocast`] scope the convolutions and linear
//! layers cast their input, weight and bias to a lower precision, compute there, and hand
//! back f32. Normalisation, activations, pooling, attention gates and the losses stay f32 —
//! the split AMP makes, and the reason it keeps f32 accuracy where a model held entirely in
//! bf16 loses the small updates that bf16's 8-bit mantissa rounds away.
//!
//! The casts are autodiff operations, so the backward pass runs the products in the low
//! precision too. Each gradient arrives at its f32 parameter with the values of an f32 cast:
//! in f32 through burn's casts, or in the low precision where the own casts are installed (the
//! GPU backends, `casts.rs`: the weights are cast once per forward pass, all together, and
//! their gradients are handed on for the optimiser to widen).
//!
//! Where a normalisation's own pass sits next to a product, the cast between them is left out:
//! the product's output stays in the low precision (`conv2d_as_computed`) and the
//! normalisation reads it as it is, or writes the low precision itself
//! (`BatchNorm2d::forward_relu_for`, `layer_norm::rows_for`). It computes in f32 either way, so
//! the values are those of the casts; burn-fusion ran each of those casts as a launch of its
//! own.
//!
//! The scope is per thread, as autocast's is: the training loop enters it around forward and
//! loss; data loading on other threads is unaffected.

mod casts;
#[cfg(feature = "cubecl-kernels")]
pub mod cube;
#[cfg(feature = "cubecl-kernels")]
mod kernel;

pub use casts::{
    cast_weights, install, install_kernel, uninstall, uninstall_kernel, CastsFn, WeightCasts,
};

use std::cell::Cell;

use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::module::{conv2d as conv2d_op, linear as linear_op};
use burn::tensor::ops::PaddedConvOptions;
use burn::tensor::{DType, FloatDType, Tensor};

thread_local! {
    static COMPUTE: Cell<Option<FloatDType>> = const { Cell::new(None) };
}

/// Products in `dtype` until the guard drops (then whatever was in force before).
#[must_use = "autocast ends when the guard is dropped"]
pub fn autocast(dtype: FloatDType) -> AutocastGuard {
    AutocastGuard {
        previous: COMPUTE.with(|c| c.replace(Some(dtype))),
    }
}

/// Ends an [`autocast`] scope when dropped.
pub struct AutocastGuard {
    previous: Option<FloatDType>,
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        COMPUTE.with(|c| c.set(self.previous));
    }
}

/// The compute precision of products on this thread now (`None`: the tensors' own).
pub fn compute_dtype() -> Option<FloatDType> {
    COMPUTE.with(Cell::get)
}

/// `t` in `dtype`: itself where it is already (a cast would still be an operation, and a
/// node of the graph).
pub fn in_dtype<B: Backend, const D: usize>(t: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if t.dtype() == dtype {
        t
    } else {
        t.cast(dtype)
    }
}

/// `t` in `dtype` where one is given, else as it is.
pub fn in_dtype_if<B: Backend, const D: usize>(
    t: Tensor<B, D>,
    dtype: Option<FloatDType>,
) -> Tensor<B, D> {
    match dtype {
        Some(d) => in_dtype(t, d.into()),
        None => t,
    }
}

/// `conv.forward(x)`, its product in the autocast precision when a scope is open (and back
/// in the parameters' precision).
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let back = conv.weight.val().dtype();
    in_dtype(conv2d_as_computed(conv, x), back)
}

/// `conv.forward(x)`, its product in the autocast precision when a scope is open, left in
/// it: for a layer after it that reads any precision and computes in f32 (a BatchNorm's own
/// pass), so that no cast to f32 runs between them. Widening is exact, so the values are those
/// of `conv2d`.
pub fn conv2d_as_computed<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let Some(low) = compute_dtype() else {
        return conv.forward(x);
    };
    // The models pad explicitly (as PyTorch does); `Same` is burn's own and never built here.
    let [top, left, bottom, right] = match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) => [t, l, b, r],
        PaddingConfig2d::Valid => [0; 4],
        PaddingConfig2d::Same => return conv.forward(x),
    };
    let options = PaddedConvOptions::asymmetric(
        conv.stride,
        [top, left],
        [bottom, right],
        conv.dilation,
        conv.groups,
    );
    // `x` may be in `low` already: a BatchNorm before it writes it so (`forward_relu_for`).
    // The weight's cast may have been made at the pass's start (`cast_weights`).
    conv2d_op(
        in_dtype(x, low.into()),
        casts::weight(&conv.weight, low),
        conv.bias.as_ref().map(|b| casts::weight(b, low)),
        options,
    )
}

/// `linear.forward(x)`, its product in the autocast precision when a scope is open.
pub fn linear<B: Backend, const D: usize>(linear: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let Some(low) = compute_dtype() else {
        return linear.forward(x);
    };
    let back = linear.weight.val().dtype();
    let y = linear_op(
        in_dtype(x, low.into()),
        casts::weight(&linear.weight, low),
        linear.bias.as_ref().map(|b| casts::weight(b, low)),
    );
    y.cast(back)
}

/// `t` in the float precision of `like` (as it is where they agree).
pub fn cast_like<B: Backend, const D: usize, const E: usize>(
    t: Tensor<B, D>,
    like: &Tensor<B, E>,
) -> Tensor<B, D> {
    in_dtype(t, like.dtype())
}
