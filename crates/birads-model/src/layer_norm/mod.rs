//! LayerNorm of rows `[R, C]` (over the C values of each row) with a backward pass of its own,
//! for the autodiff backends it is installed on (the GPU training backends, by
//! `install_gpu_ops`). MyConvNeXt has 23 of them: one in each block (channels-last rows of
//! the depthwise convolution's output), the stem's and three downsamplings' `LayerNorm2d`
//! (permuted to rows), and the head's.
//!
//! burn 0.21 writes LayerNorm as its operations (`Backend::layer_norm`'s default: mean,
//! centring, mean of squares, square root, division, scale, shift) and differentiates them
//! one by one, a reduction for every broadcast. The closed form needs, per row r with
//! x̂ = (x − μ)/σ and σ = √(var + ε) (biased variance), two row sums, and per column two
//! column sums:
//!
//! ```text
//!   ∂x = (ĝ − mean_c(ĝ) − x̂·mean_c(ĝ·x̂)) / σ  with ĝ = γ·g      ∂γ = Σ_r g·x̂      ∂β = Σ_r g
//! ```
//!
//! On the cubecl backends the forward and the backward are kernels of birads' own (`cube.rs`,
//! installed with `install_kernels`): the forward one launch, the backward three (∂x; the
//! column sums per share of the rows; their total). Elsewhere, and with
//! `BIRADS_LAYERNORM_KERNELS=burn`, the same formulas run as burn's operations.
//!
//! Under amp a LayerNorm reads a convolution's product in the precision it was computed in
//! and writes the precision of the linear layer after it (`rows_for`); its backward hands the
//! gradients back in the same precisions. The statistics and parameters stay f32, and the
//! values are those of casts around an f32 LayerNorm (widening is exact, each result is
//! rounded once), with none of the casts' launches.
//!
//! Inference on the cubecl backends runs the forward kernel alone (`install_forward`). Where
//! nothing is installed (the CPU, which trains on its own engine and infers with burn or its
//! own engine) the models run burn's LayerNorm as before. `BIRADS_LAYERNORM=burn` keeps
//! burn's on the GPU too.

use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, FloatDType, Tensor};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_autodiff::{Autodiff, NodeId};

use crate::amp::{cast_like, in_dtype};
use crate::own_ops::{self, float, primitive};

#[cfg(feature = "cubecl-kernels")]
pub mod cube;
#[cfg(feature = "cubecl-kernels")]
mod kernels;

/// `(x [R, C], weight [C], bias [C], epsilon, output) → y [R, C]` in training, on one backend
/// (`y` in `output`'s precision where one is given, else the weight's).
pub type LayerNormFn<B> =
    fn(Tensor<B, 2>, Tensor<B, 1>, Tensor<B, 1>, f64, Option<FloatDType>) -> Tensor<B, 2>;

/// Use the own backward on `Autodiff<B, C>` from now on (unless `BIRADS_LAYERNORM=burn`).
pub fn install<B: Backend, C: CheckpointStrategy>() {
    own_ops::install::<LayerNormFn<Autodiff<B, C>>>(tracked::<B, C>, "BIRADS_LAYERNORM");
}

/// Back to burn's operations on `Autodiff<B, C>`.
pub fn uninstall<B: Backend, C: CheckpointStrategy>() {
    own_ops::uninstall::<LayerNormFn<Autodiff<B, C>>>();
}

/// Use `f` for LayerNorm on `B` itself, outside autodiff (inference: the forward kernel on
/// the cubecl backends), unless `BIRADS_LAYERNORM=burn`.
pub fn install_forward<B: Backend>(f: LayerNormFn<B>) {
    own_ops::install::<LayerNormFn<B>>(f, "BIRADS_LAYERNORM");
}

/// Back to burn's LayerNorm on `B` itself.
pub fn uninstall_forward<B: Backend>() {
    own_ops::uninstall::<LayerNormFn<B>>();
}

/// The own LayerNorm for `B`, if installed.
pub fn installed<B: Backend>() -> Option<LayerNormFn<B>> {
    own_ops::installed::<LayerNormFn<B>>()
}

/// burn's `norm` (built with `epsilon`, which burn keeps private) on rows `[R, C]`: the own
/// operation where installed for `B`, else burn's.
pub fn rows<B: Backend>(norm: &LayerNorm<B>, epsilon: f64, x: Tensor<B, 2>) -> Tensor<B, 2> {
    rows_for(norm, epsilon, x, None)
}

/// `rows(norm, epsilon, x)` written in `output`'s precision (under amp, that of the linear
/// layer it feeds, `amp::compute_dtype`), from `x` in any precision (a convolution's product
/// as computed): the values of casts around it.
pub fn rows_for<B: Backend>(
    norm: &LayerNorm<B>,
    epsilon: f64,
    x: Tensor<B, 2>,
    output: Option<FloatDType>,
) -> Tensor<B, 2> {
    let gamma = norm.gamma.val();
    match (installed::<B>(), &norm.beta) {
        (Some(f), Some(beta)) => f(x, gamma, beta.val(), epsilon, output),
        _ => {
            let wide = gamma.dtype();
            let y = norm.forward(in_dtype(x, wide));
            in_dtype(y, output.map_or(wide, DType::from))
        }
    }
}

/// LayerNorm's forward and backward on one backend as kernels of its own (`cube.rs` on the
/// cubecl backends).
pub struct Kernels<B: Backend> {
    pub forward: ForwardFn<B>,
    pub backward: BackwardFn<B>,
}

/// `(x [R, C], weight, bias [C], epsilon, y's precision) → (y [R, C], mean [R], 1/σ [R])`.
pub type ForwardFn<B> = fn(Tensor<B, 2>, Tensor<B, 1>, Tensor<B, 1>, f64, DType) -> Normalised<B>;

/// `(g [R, C], x [R, C], weight [C], mean [R], 1/σ [R]) → (∂x, ∂weight, ∂bias)`.
pub type BackwardFn<B> =
    fn(Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>) -> Gradient<B>;

/// The output and the row statistics the backward needs.
pub type Normalised<B> = (Tensor<B, 2>, Tensor<B, 1>, Tensor<B, 1>);

/// `∂x [R, C]`, `∂weight [C]`, `∂bias [C]`.
pub type Gradient<B> = (Tensor<B, 2>, Tensor<B, 1>, Tensor<B, 1>);

impl<B: Backend> Clone for Kernels<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for Kernels<B> {}

/// Use `kernels` inside the own LayerNorm on `B` (the inner backend of the autodiff one)
/// from now on, unless `BIRADS_LAYERNORM_KERNELS=burn`.
pub fn install_kernels<B: Backend>(kernels: Kernels<B>) {
    own_ops::install::<Kernels<B>>(kernels, "BIRADS_LAYERNORM_KERNELS");
}

/// Back to burn's operations inside the own LayerNorm on `B`.
pub fn uninstall_kernels<B: Backend>() {
    own_ops::uninstall::<Kernels<B>>();
}

/// The installed kernels, else the formulas as burn's operations.
fn kernels<B: Backend>() -> Kernels<B> {
    own_ops::installed::<Kernels<B>>().unwrap_or(Kernels {
        forward: forward::<B>,
        backward: backward::<B>,
    })
}

/// The forward with burn's operations in the weight's precision: mean and biased variance
/// (two passes), `x̂·γ + β`, written in `output`'s.
pub fn forward<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    epsilon: f64,
    output: DType,
) -> Normalised<B> {
    let [r, c] = x.dims();
    let x = in_dtype(x, weight.dtype());
    let mean = x.clone().mean_dim(1);
    let centred = x - mean.clone();
    let var = (centred.clone() * centred.clone()).mean_dim(1);
    let inv_std = (var + epsilon).sqrt().recip();
    let y = centred * inv_std.clone() * weight.reshape([1, c]) + bias.reshape([1, c]);
    (in_dtype(y, output), mean.reshape([r]), inv_std.reshape([r]))
}

/// The closed-form backward (module docs) with burn's operations in the weight's precision,
/// ∂x in `x`'s.
pub fn backward<B: Backend>(
    g: Tensor<B, 2>,
    x: Tensor<B, 2>,
    weight: Tensor<B, 1>,
    mean: Tensor<B, 1>,
    inv_std: Tensor<B, 1>,
) -> Gradient<B> {
    let [r, c] = x.dims();
    let (input, wide) = (x.dtype(), weight.dtype());
    let (g, x) = (in_dtype(g, wide), in_dtype(x, wide));
    let inv_std = inv_std.reshape([r, 1]);
    let normalised = (x - mean.reshape([r, 1])) * inv_std.clone();
    let d_bias = g.clone().sum_dim(0).reshape([c]);
    let d_weight = (g.clone() * normalised.clone()).sum_dim(0).reshape([c]);
    let scaled = g * weight.reshape([1, c]);
    let plain = scaled.clone().mean_dim(1);
    let along = (scaled.clone() * normalised.clone()).mean_dim(1);
    let dx = (scaled - plain - normalised * along) * inv_std;
    (in_dtype(dx, input), d_weight, d_bias)
}

#[derive(Debug)]
struct LayerNormBackward;

/// The input (checkpointed), the weight, the rows' mean and 1/σ.
type State<B> = (NodeId, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

impl<B: Backend> Backward<B, 3> for LayerNormBackward {
    type State = State<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let g = float::<B, 2>(grads.consume::<B>(&ops.node));
        let (x_id, weight, mean, inv_std) = ops.state;
        let x = float::<B, 2>(checkpointer.retrieve_node_output(x_id));
        let weight = float::<B, 1>(weight);
        let (dx, d_weight, d_bias) =
            (kernels::<B>().backward)(g, x, weight.clone(), float(mean), float(inv_std));
        let d_weight = cast_like(d_weight, &weight);
        let d_bias = cast_like(d_bias, &weight);
        for (node, grad) in [
            (node_x, primitive(dx)),
            (node_weight, primitive(d_weight)),
            (node_bias, primitive(d_bias)),
        ] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// LayerNorm's training pass on `Autodiff<B, C>` with `LayerNormBackward`.
fn tracked<B: Backend, C: CheckpointStrategy>(
    x: Tensor<Autodiff<B, C>, 2>,
    weight: Tensor<Autodiff<B, C>, 1>,
    bias: Tensor<Autodiff<B, C>, 1>,
    epsilon: f64,
    output: Option<FloatDType>,
) -> Tensor<Autodiff<B, C>, 2> {
    let x = primitive(x);
    let weight = primitive(weight);
    let bias = primitive(bias);
    let gamma = float::<B, 1>(weight.primitive.clone());
    let output = output.map_or(gamma.dtype(), DType::from);
    let (y, mean, inv_std) = (kernels::<B>().forward)(
        float(x.primitive.clone()),
        gamma,
        float(bias.primitive),
        epsilon,
        output,
    );
    let y = primitive(y);
    let parents = [x.node.clone(), weight.node.clone(), bias.node];
    let y = match LayerNormBackward
        .prepare::<C>(parents)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let x_id = prep.checkpoint(&x);
            let state = (x_id, weight.primitive, primitive(mean), primitive(inv_std));
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    float(y)
}
