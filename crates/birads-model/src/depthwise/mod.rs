//! ConvNeXt's depthwise 7×7 convolution with a backward pass of its own, for the autodiff
//! backends it is installed on (CUDA's, by `install_gpu_ops`).
//!
//! burn-cubecl 0.21 computes a grouped convolution's weight gradient one group at a time
//! (`kernel/conv/backward_weight/fallback.rs`: a slice, a convolution and a slice-assign per
//! channel), so every depthwise convolution of a training step costs 96 to 768 launches
//! there. Here, for stride 1 and no dilation:
//!
//! - the input gradient is the same depthwise convolution of the output gradient with the
//!   kernel flipped (padding k − 1 − p), so it runs on the forward kernel;
//! - the weight gradient is `Σ_{n,h,w} g[n,c,h,w] · x_pad[n,c,h+i,w+j]`: sliding windows of
//!   the padded input (a strided view, no copy) times the output gradient, summed over batch
//!   and positions, in f32 whatever the compute precision (as cuDNN accumulates), in batch
//!   chunks that bound the temporary product to 2^28 values.
//!
//! On the cubecl backends the weight gradient is instead one kernel of birads' own
//! (`kernel.rs`), which never forms the product; `BIRADS_DEPTHWISE_KERNEL=burn` keeps the
//! generic one.
//!
//! Where nothing is installed for a backend (the CPU, inference), `conv2d` is
//! `amp::conv2d`. `BIRADS_DEPTHWISE=burn` keeps burn's own backward everywhere (to measure
//! what this buys).

use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{FloatDType, Tensor, TensorPrimitive};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_autodiff::{Autodiff, NodeId};

use crate::{amp, own_ops};

#[cfg(feature = "cubecl-kernels")]
pub mod cube;
#[cfg(feature = "cubecl-kernels")]
mod kernel;

/// `(x, weight [C, 1, k, k], bias, padding) → y` on one backend.
pub type DepthwiseFn<B> =
    fn(Tensor<B, 4>, Tensor<B, 4>, Option<Tensor<B, 1>>, usize) -> Tensor<B, 4>;

/// Use the own backward on `Autodiff<B, C>` from now on (unless `BIRADS_DEPTHWISE=burn`).
pub fn install<B: Backend, C: CheckpointStrategy>() {
    own_ops::install::<DepthwiseFn<Autodiff<B, C>>>(depthwise::<B, C>, "BIRADS_DEPTHWISE");
}

/// `(x, g, k, padding) → ∂w` `[C, 1, k, k]` in f32 on one backend.
pub type WeightGradientFn<B> = fn(Tensor<B, 4>, Tensor<B, 4>, usize, usize) -> Tensor<B, 4>;

/// Use `f` for the weight gradient on `B` (the inner backend of the autodiff one) from now
/// on, unless `BIRADS_DEPTHWISE_KERNEL=burn`.
pub fn install_weight_gradient<B: Backend>(f: WeightGradientFn<B>) {
    own_ops::install::<WeightGradientFn<B>>(f, "BIRADS_DEPTHWISE_KERNEL");
}

/// Back to the generic weight gradient on `B`.
pub fn uninstall_weight_gradient<B: Backend>() {
    own_ops::uninstall::<WeightGradientFn<B>>();
}

/// Back to burn's convolution on `Autodiff<B, C>`.
pub fn uninstall<B: Backend, C: CheckpointStrategy>() {
    own_ops::uninstall::<DepthwiseFn<Autodiff<B, C>>>();
}

/// Symmetric padding of a depthwise, stride-1, undilated convolution: what the own backward
/// handles.
fn eligible<B: Backend>(conv: &Conv2d<B>) -> Option<usize> {
    let [out, per_group, kh, kw] = conv.weight.dims();
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) if t == l && l == b && b == r => t,
        _ => return None,
    };
    let plain = conv.stride == [1, 1] && conv.dilation == [1, 1] && kh == kw && padding < kh;
    (plain && per_group == 1 && conv.groups == out).then_some(padding)
}

/// `conv.forward(x)` for ConvNeXt's depthwise convolution: the own backward where installed,
/// in the autocast precision when a scope is open.
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let back = conv.weight.val().dtype();
    amp::in_dtype(conv2d_as_computed(conv, x), back)
}

/// `conv2d(conv, x)` left in the autocast precision it was computed in (as
/// `amp::conv2d_as_computed`), for a layer after it that reads any precision.
pub fn conv2d_as_computed<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let (Some(f), Some(padding)) = (own_ops::installed::<DepthwiseFn<B>>(), eligible(conv)) else {
        return amp::conv2d_as_computed(conv, x);
    };
    let low = amp::compute_dtype();
    let bias = conv.bias.as_ref().map(|b| amp::in_dtype_if(b.val(), low));
    let weight = amp::in_dtype_if(conv.weight.val(), low);
    f(amp::in_dtype_if(x, low), weight, bias, padding)
}

fn options(channels: usize, padding: usize) -> ConvOptions<2> {
    ConvOptions::new([1, 1], [padding, padding], [1, 1], channels)
}

#[derive(Debug)]
struct DepthwiseBackward;

impl<B: Backend> Backward<B, 2> for DepthwiseBackward {
    /// Input and weight (checkpointed), padding.
    type State = (NodeId, NodeId, usize);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_id, w_id, padding) = ops.state;
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_id);
        let w = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(w_id);
        let g = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(grad));
        let w = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(w));
        if let Some(node) = node_x {
            let dx = input_gradient(g.clone(), w.clone(), padding);
            grads.register::<B>(node.id, dx.into_primitive().tensor());
        }
        if let Some(node) = node_w {
            let x = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x));
            let dw = weight_gradient(x, g, w.dims()[2], padding).cast(FloatDType::from(w.dtype()));
            grads.register::<B>(node.id, dw.into_primitive().tensor());
        }
    }
}

/// The depthwise convolution on `Autodiff<B, C>` with `DepthwiseBackward`.
fn depthwise<B: Backend, C: CheckpointStrategy>(
    x: Tensor<Autodiff<B, C>, 4>,
    w: Tensor<Autodiff<B, C>, 4>,
    bias: Option<Tensor<Autodiff<B, C>, 1>>,
    padding: usize,
) -> Tensor<Autodiff<B, C>, 4> {
    let channels = w.dims()[0];
    let x = x.into_primitive().tensor();
    let w = w.into_primitive().tensor();
    let opts = options(channels, padding);
    let y = match DepthwiseBackward
        .prepare::<C>([x.node.clone(), w.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let x_id = prep.checkpoint(&x);
            let w_id = prep.checkpoint(&w);
            prep.finish(
                (x_id, w_id, padding),
                B::conv2d(x.primitive, w.primitive, None, opts),
            )
        }
        OpsKind::UnTracked(prep) => prep.finish(B::conv2d(x.primitive, w.primitive, None, opts)),
    };
    let y = Tensor::<Autodiff<B, C>, 4>::from_primitive(TensorPrimitive::Float(y));
    match bias {
        Some(b) => y + b.reshape([1, channels, 1, 1]),
        None => y,
    }
}

/// ∂L/∂x: the output gradient through the flipped kernel (stride 1, no dilation).
pub fn input_gradient<B: Backend>(
    g: Tensor<B, 4>,
    w: Tensor<B, 4>,
    padding: usize,
) -> Tensor<B, 4> {
    let [channels, _, k, _] = w.dims();
    let flipped = w.flip([2, 3]);
    burn::tensor::module::conv2d(g, flipped, None, options(channels, k - 1 - padding))
}

/// Largest temporary product of `weight_gradient`, in values.
const CHUNK_VALUES: usize = 1 << 28;

/// ∂L/∂w `[C, 1, k, k]` in f32: the installed kernel, else windows of the padded input times
/// the output gradient, summed over the batch (in chunks) and the positions.
pub fn weight_gradient<B: Backend>(
    x: Tensor<B, 4>,
    g: Tensor<B, 4>,
    k: usize,
    padding: usize,
) -> Tensor<B, 4> {
    match own_ops::installed::<WeightGradientFn<B>>() {
        Some(f) => f(x, g, k, padding),
        None => weight_gradient_in_chunks(x, g, k, padding, CHUNK_VALUES),
    }
}

/// `weight_gradient` with temporaries of at most `max_values` values (at least one image).
pub fn weight_gradient_in_chunks<B: Backend>(
    x: Tensor<B, 4>,
    g: Tensor<B, 4>,
    k: usize,
    padding: usize,
    max_values: usize,
) -> Tensor<B, 4> {
    let f32 = FloatDType::F32;
    let [n, c, h, w] = g.dims();
    let x = x
        .cast(f32)
        .pad((padding, padding, padding, padding), PadMode::Constant(0.0));
    let g = g.cast(f32);
    let per_image = c * h * w * k * k;
    let chunk = (max_values / per_image.max(1)).clamp(1, n.max(1));
    let mut sum: Option<Tensor<B, 2>> = None;
    for first in (0..n).step_by(chunk) {
        let last = (first + chunk).min(n);
        let m = last - first;
        let windows: Tensor<B, 6> = x
            .clone()
            .narrow(0, first, m)
            .unfold::<5, _>(2, k, 1)
            .unfold::<6, _>(3, k, 1);
        let grads = g.clone().narrow(0, first, m).reshape([m, c, h, w, 1, 1]);
        let part = (windows * grads)
            .sum_dim(0)
            .sum_dim(2)
            .sum_dim(3)
            .reshape([c, k * k]);
        sum = Some(match sum {
            Some(s) => s + part,
            None => part,
        });
    }
    sum.expect("a batch of at least one image")
        .reshape([c, 1, k, k])
}
