//! BatchNorm's training pass with a backward pass of its own, for the autodiff backends it is
//! installed on (the GPU training backends, by `install_gpu_ops`).
//!
//! burn differentiates `BatchNorm2d::forward` operation by operation: every reduction of the
//! statistics, every broadcast (a `repeat_dim`, whose backward is one more reduction) and the
//! affine map bring backward kernels of their own: on burn-cubecl, 4,336 of the 6,593 kernel
//! launches of a MyDenseNet training step were its backward (121 BatchNorms), 2,283 with this
//! one (`examples/kernel_count.rs` of birads-train). The closed form needs two per-channel
//! sums, over the M = N·H·W values of each channel:
//!
//! ```text
//!   x̂ = (x − μ) / σ        ∂β = Σ g        ∂γ = Σ g·x̂        ∂x = γ/σ · (g − ∂β/M − x̂·∂γ/M)
//! ```
//!
//! with σ = √(var + ε) from the biased batch variance, as in the forward. The forward keeps
//! two-pass statistics (the sum, then the squared deviations from the mean) and updates the
//! running estimates from them (`Running`), as `BatchNorm2d` does.
//!
//! `BatchNorm2d::forward_relu` takes the ReLU after it into the same operation, and the
//! output is written channels-last underneath, as burn-cubecl's convolutions take their
//! input: MyDenseNet's forward no longer copies the input of each convolution after a
//! BatchNorm (3,127 → 3,007 launches per step). The backward keeps the order of dimensions:
//! written channels-last too, its ∂x did not spare the convolutions' backward copies and cost
//! unfused additions where gradients of the two layouts meet.
//!
//! Under amp, a BatchNorm before a convolution writes its output in the convolution's
//! precision (`BatchNorm2d::forward_relu_for`) and its backward reads the gradient in it, and
//! one after a convolution takes the product in the precision it was computed in
//! (`amp::conv2d_as_computed`) and hands its gradient back in it, so that no cast runs between
//! them: burn-fusion ran each such cast as a launch of its own, and its output lost the
//! channels-last order. The statistics and parameters stay f32, and the values are those of
//! the casts (MyDenseNet's amp step: 3,703 → 3,230 launches).
//!
//! On the cubecl backends the whole pass is four kernels of birads' own (`cube.rs`, installed
//! with `install_kernels`): the statistics and the normalisation forward, the two sums and ∂x
//! backward, one operation and one launch each. With burn's operations (elsewhere, and with
//! `BIRADS_BATCHNORM_KERNELS=burn`: `statistics`, `normalize_channels_last`, `backward`) a
//! BatchNorm is about 25 operations forward for burn-fusion to record, match and plan, and
//! its reductions take one axis per launch. The kernels took MyDenseNet's step from 3,007 to
//! 2,832 launches and burn-fusion's host work per step by about a sixth
//! (`examples/kernel_count.rs` and `examples/host_time.rs` of birads-train).
//!
//! Where nothing is installed (the CPU, which trains on its own engine, and inference),
//! `BatchNorm2d` differentiates burn's operations as before. `BIRADS_BATCHNORM=burn` keeps
//! them on the GPU too (to measure what this buys).

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{activation, DType, FloatDType, Tensor};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_autodiff::{Autodiff, NodeId};

use crate::amp::in_dtype;
use crate::own_ops::{self, float, primitive};

#[cfg(feature = "cubecl-kernels")]
pub mod cube;
#[cfg(feature = "cubecl-kernels")]
mod kernels;

/// `(x, weight, bias, epsilon, relu, running, output) → (y, running after the batch)` in
/// training, on one backend (with `relu`, the ReLU of the normalised values; `y` in `output`'s
/// precision where one is given, else the weight's, as with burn's operations).
pub type BatchNormFn<B> = fn(
    Tensor<B, 4>,
    Tensor<B, 1>,
    Tensor<B, 1>,
    f64,
    bool,
    Running<B>,
    Option<FloatDType>,
) -> Trained<B>;

/// A training pass's output and the running estimates after it.
pub type Trained<B> = (Tensor<B, 4>, Running<B>);

/// A BatchNorm's running estimates `[C]` (outside the graph) and the momentum of their update.
#[derive(Debug, Clone)]
pub struct Running<B: Backend> {
    pub mean: Tensor<B, 1>,
    pub var: Tensor<B, 1>,
    pub momentum: f64,
}

impl<B: Backend> Running<B> {
    /// The estimates after a batch of `count` values per channel with this mean and biased
    /// variance: PyTorch's update, with the unbiased variance.
    pub fn updated(self, mean: Tensor<B, 1>, var: Tensor<B, 1>, count: f64) -> Self {
        let unbiased = var.detach() * (count / (count - 1.0).max(1.0));
        let m = self.momentum;
        Self {
            mean: (self.mean * (1.0 - m) + mean.detach() * m).detach(),
            var: (self.var * (1.0 - m) + unbiased * m).detach(),
            momentum: m,
        }
    }

    fn inner<I: Backend>(self) -> Running<I>
    where
        B: AutodiffBackend<InnerBackend = I>,
    {
        Running {
            mean: self.mean.inner(),
            var: self.var.inner(),
            momentum: self.momentum,
        }
    }
}

impl<I: Backend> Running<I> {
    fn outer<B: AutodiffBackend<InnerBackend = I>>(self) -> Running<B> {
        Running {
            mean: Tensor::from_inner(self.mean),
            var: Tensor::from_inner(self.var),
            momentum: self.momentum,
        }
    }
}

/// Use the own backward on `Autodiff<B, C>` from now on (unless `BIRADS_BATCHNORM=burn`).
pub fn install<B: Backend, C: CheckpointStrategy>() {
    own_ops::install::<BatchNormFn<Autodiff<B, C>>>(tracked::<B, C>, "BIRADS_BATCHNORM");
}

/// Back to burn's operations on `Autodiff<B, C>`.
pub fn uninstall<B: Backend, C: CheckpointStrategy>() {
    own_ops::uninstall::<BatchNormFn<Autodiff<B, C>>>();
}

/// The own training pass for `B`, if installed.
pub fn installed<B: Backend>() -> Option<BatchNormFn<B>> {
    own_ops::installed::<BatchNormFn<B>>()
}

/// BatchNorm's training pass on one backend as kernels of its own (`cube.rs` on the cubecl
/// backends): two per-channel reductions and two elementwise passes, one launch and one
/// operation each, where burn's operations take about 25 operations and 6 launches forward.
pub struct OwnKernels<B: Backend> {
    /// `x` `[N, C, H, W]` (any strides) and the running estimates → mean and biased variance
    /// `[C]` (two-pass), and the running estimates after the batch (`Running::updated`).
    pub moments: MomentsFn<B>,
    /// `γ·(x − μ)/σ + β` of `x` (its ReLU with `relu`), channels-last underneath, in the
    /// given precision.
    pub normalize: NormalizeFn<B>,
    /// `g` and what the forward kept → `∂β = Σ g` and `∂γ = Σ g·x̂` `[C]` (`g` in the output's
    /// precision, the sums in the input's).
    pub gradient_sums: fn(Tensor<B, 4>, &Saved<B>) -> PerChannel<B>,
    /// `g`, what the forward kept, and `(∂β, ∂γ)` → `∂x` `[N, C, H, W]` in the input's
    /// precision.
    pub input_gradient: InputGradientFn<B>,
}

/// `(x, mean, var, weight, bias, epsilon, relu, output precision) → y`.
pub type NormalizeFn<B> = fn(
    Tensor<B, 4>,
    Tensor<B, 1>,
    Tensor<B, 1>,
    Tensor<B, 1>,
    Tensor<B, 1>,
    f64,
    bool,
    DType,
) -> Tensor<B, 4>;

/// `(x, running) → ((mean, var), running after the batch)`.
pub type MomentsFn<B> = fn(Tensor<B, 4>, Running<B>) -> (PerChannel<B>, Running<B>);

/// `(g, saved, (∂β, ∂γ)) → ∂x`.
pub type InputGradientFn<B> = fn(Tensor<B, 4>, &Saved<B>, PerChannel<B>) -> Tensor<B, 4>;

/// Two values per channel, `[C]` each.
pub type PerChannel<B> = (Tensor<B, 1>, Tensor<B, 1>);

/// What the backward reads of the forward: its input `x` `[N, C, H, W]`, the batch's mean and
/// biased variance and the weight `[C]`, ε, and its output where it ended in a ReLU (where
/// that is zero, so is the gradient; in the output's precision, as the gradient is).
///
/// The variance rather than 1/σ: with 1/σ as a third output of the moments kernel, burn-fusion
/// ran the running estimates' update after it operation by operation (1,195–1,254 launches in
/// MyDenseNet's forward instead of 1,011).
#[derive(Debug, Clone)]
pub struct Saved<B: Backend> {
    pub x: Tensor<B, 4>,
    pub mean: Tensor<B, 1>,
    pub var: Tensor<B, 1>,
    pub weight: Tensor<B, 1>,
    pub epsilon: f64,
    pub relu_output: Option<Tensor<B, 4>>,
}

impl<B: Backend> Clone for OwnKernels<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for OwnKernels<B> {}

/// Use `kernels` inside the own BatchNorm on `B` (the inner backend of the autodiff one) from
/// now on, unless `BIRADS_BATCHNORM_KERNELS=burn`.
pub fn install_kernels<B: Backend>(kernels: OwnKernels<B>) {
    own_ops::install::<OwnKernels<B>>(kernels, "BIRADS_BATCHNORM_KERNELS");
}

/// Back to burn's operations on `B`.
pub fn uninstall_kernels<B: Backend>() {
    own_ops::uninstall::<OwnKernels<B>>();
}

/// `t` `[N, C, …]` as `[N, C, L]`: a view where the layout allows, else a copy.
fn flat<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, 3> {
    let dims = t.dims();
    let positions = dims[2..].iter().product();
    t.reshape([dims[0], dims[1], positions])
}

/// Per-channel sum of `[N, C, L]` over batch and positions: `[C]`.
fn channel_sum<B: Backend>(t: Tensor<B, 3>) -> Tensor<B, 1> {
    let c = t.dims()[1];
    t.sum_dim(2).sum_dim(0).reshape([c])
}

/// Per-channel values `[C]` as `[N, C, 1, …]`, to broadcast along the positions of
/// `[N, C, …]`.
fn per_image<B: Backend, const D: usize>(v: Tensor<B, 1>, n: usize) -> Tensor<B, D> {
    let mut shape = [1; D];
    shape[1] = v.dims()[0];
    v.reshape(shape).repeat_dim(0, n)
}

/// Per-channel values `[C]` as `[N, 1, 1, C]`, to broadcast along the positions of
/// `[N, H, W, C]`.
fn per_pixel<B: Backend>(v: Tensor<B, 1>, n: usize) -> Tensor<B, 4> {
    let c = v.dims()[0];
    v.reshape([1, 1, 1, c]).repeat_dim(0, n)
}

/// `[N, C, H, W]` as `[N, H, W, C]` (a view) and back.
fn channels_last<B: Backend>(t: Tensor<B, 4>) -> Tensor<B, 4> {
    t.permute([0, 2, 3, 1])
}

fn channels_first<B: Backend>(t: Tensor<B, 4>) -> Tensor<B, 4> {
    t.permute([0, 3, 1, 2])
}

/// Values per channel of `[N, C, …]`.
fn per_channel<const D: usize>(dims: [usize; D]) -> usize {
    dims.iter().product::<usize>() / dims[1].max(1)
}

// The order of operations below is chosen for burn-fusion 0.21, which fuses a run of
// consecutive elementwise operations only while their outputs keep one shape, and does not
// take `repeat_dim` in: the per-channel arithmetic on `[C]` is written as one run, the
// broadcasts (`per_image`, `per_pixel`) next, then the arithmetic on the whole tensor as one
// run. With burn's reductions a BatchNorm's forward is then 7 launches (4 of them reductions)
// and its backward about 8 (counted on wgpu), where the same formulas interleaved ran partly op
// by op (17 launches for the forward); with the own sum kernels, about 3 each way.

/// The forward's per-channel statistics `[C]`, and the affine map they give.
#[derive(Debug, Clone)]
pub struct Statistics<B: Backend> {
    pub mean: Tensor<B, 1>,
    /// Biased (divided by N·H·W), as the normalisation uses it.
    pub var: Tensor<B, 1>,
    pub inv_std: Tensor<B, 1>,
    /// γ/σ and β − μγ/σ: the output is `scale·x + shift`.
    pub scale: Tensor<B, 1>,
    pub shift: Tensor<B, 1>,
}

/// Mean and biased variance of `x` `[N, C, L]` per channel with burn's reductions, in two
/// passes: the sum S, then the squared deviations from the mean, taken as `(M·x − S)²/M³` so
/// that the subtraction joins the squaring in one kernel (multiplying by M instead of
/// dividing S by it: the same relative rounding).
fn moments<B: Backend, const D: usize>(x: Tensor<B, D>) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let x = flat(x);
    let [n, _, l] = x.dims();
    let count = (n * l) as f64;
    let sum = channel_sum(x.clone());
    let sums = per_image(sum.clone(), n);
    let deviation = x * count - sums;
    let squares = channel_sum(deviation.clone() * deviation);
    (sum / count, squares / count.powi(3))
}

/// Batch statistics of `x` `[N, C, …]` with burn's operations and the affine map they give.
pub fn statistics<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    epsilon: f64,
) -> Statistics<B> {
    let (mean, var) = moments(x);
    affine(mean, var, weight, bias, epsilon)
}

/// The affine map `scale·x + shift` that a mean and biased variance give.
fn affine<B: Backend>(
    mean: Tensor<B, 1>,
    var: Tensor<B, 1>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    epsilon: f64,
) -> Statistics<B> {
    let inv_std = (var.clone() + epsilon).sqrt().recip();
    let scale = weight * inv_std.clone();
    let shift = bias - mean.clone() * scale.clone();
    Statistics {
        mean,
        var,
        inv_std,
        scale,
        shift,
    }
}

/// `γ·x̂ + β` of `x` `[N, C, H, W]`, and its ReLU with `relu`, computed along
/// `[N, H, W, C]`: the result is channels-last underneath (a permuted view), as burn-cubecl's
/// convolutions take their input. burn-fusion writes an elementwise result contiguous in the
/// order of its dimensions, and a convolution first copies an input that is not channels-last
/// (`into_contiguous_aligned`): in MyDenseNet's BN → ReLU → convolution, a copy of every
/// activation per convolution.
pub fn normalize_channels_last<B: Backend>(
    x: Tensor<B, 4>,
    stats: &Statistics<B>,
    relu: bool,
) -> Tensor<B, 4> {
    let n = x.dims()[0];
    let (scale, shift) = (
        per_pixel(stats.scale.clone(), n),
        per_pixel(stats.shift.clone(), n),
    );
    let y = channels_last(x) * scale + shift;
    channels_first(if relu { activation::relu(y) } else { y })
}

/// `(∂x [N, C, …], ∂γ [C], ∂β [C])` from the output gradient `g` (the closed form above),
/// with the forward's mean and 1/σ `[C]`, from the sums `Σ g` and `Σ g·(x − μ)`, with burn's
/// operations. With x̂ = (x − μ)/σ written out, `∂x = γ/σ·g − k·x + (k·μ − ∂β·γ/(σM))` where
/// `k = γ∂γ/(σ²M)`: three `[C]` coefficients for one elementwise run over `[N, C, …]`, as the
/// forward's `scale·x + shift`.
pub fn backward<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    mean: Tensor<B, 1>,
    inv_std: Tensor<B, 1>,
    weight: Tensor<B, 1>,
    g: Tensor<B, D>,
) -> (Tensor<B, D>, Tensor<B, 1>, Tensor<B, 1>) {
    let dims = x.dims();
    let (n, count) = (dims[0], per_channel(dims) as f64);
    let (d_bias, centred) = gradient_sums(flat(g.clone()), flat(x.clone()), mean.clone());
    let d_weight = centred * inv_std.clone();
    let scale = weight * inv_std.clone();
    let per_value = scale.clone() / count;
    let k = per_value.clone() * d_weight.clone() * inv_std;
    let offset = k.clone() * mean - per_value * d_bias.clone();
    let (scale, k, offset) = (per_image(scale, n), per_image(k, n), per_image(offset, n));
    let dx = g * scale - x * k + offset;
    (dx, d_weight, d_bias)
}

/// `Σ g` and `Σ g·(x − mean)` per channel of `[N, C, L]` with burn's reductions.
fn gradient_sums<B: Backend>(
    g: Tensor<B, 3>,
    x: Tensor<B, 3>,
    mean: Tensor<B, 1>,
) -> PerChannel<B> {
    let centred = x - per_image(mean, g.dims()[0]);
    (channel_sum(g.clone()), channel_sum(g * centred))
}

#[derive(Debug)]
struct BatchNormBackward;

/// The input (checkpointed), the batch's mean and biased variance and the weight `[C]`, ε, and
/// the output where the forward ended in a ReLU. The output is the next convolution's input,
/// which autodiff keeps anyway.
type State<B> = (NodeId, [FloatTensor<B>; 3], f64, Option<FloatTensor<B>>);

impl<B: Backend> Backward<B, 3> for BatchNormBackward {
    type State = State<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let g = float::<B, 4>(grads.consume::<B>(&ops.node));
        let (x_id, [mean, var, weight], epsilon, relu_output) = ops.state;
        let saved = Saved {
            x: float(checkpointer.retrieve_node_output(x_id)),
            mean: float(mean),
            var: float(var),
            weight: float(weight),
            epsilon,
            relu_output: relu_output.map(float),
        };
        let (dx, d_weight, d_bias) = match own_ops::installed::<OwnKernels<B>>() {
            Some(kernels) => {
                let (d_bias, d_weight) = (kernels.gradient_sums)(g.clone(), &saved);
                let sums = (d_bias.clone(), d_weight.clone());
                ((kernels.input_gradient)(g, &saved, sums), d_weight, d_bias)
            }
            None => burns_backward(g, saved),
        };
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

/// The backward with burn's operations: through the ReLU first, where the forward ended in
/// one (burn's ReLU backward), then the closed form (`backward`) in the statistics' precision;
/// ∂x in the input's.
fn burns_backward<B: Backend>(
    g: Tensor<B, 4>,
    saved: Saved<B>,
) -> (Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 1>) {
    let g = match saved.relu_output {
        Some(y) => g.mask_fill(y.lower_equal_elem(0.0), 0.0),
        None => g,
    };
    let (input, wide) = (saved.x.dtype(), saved.mean.dtype());
    let (g, x) = (in_dtype(g, wide), in_dtype(saved.x, wide));
    let inv_std = (saved.var + saved.epsilon).sqrt().recip();
    let (dx, d_weight, d_bias) = backward(x, saved.mean, inv_std, saved.weight, g);
    (in_dtype(dx, input), d_weight, d_bias)
}

/// BatchNorm's training pass on `Autodiff<B, C>` with `BatchNormBackward`, channels-last
/// underneath: the installed `OwnKernels`, else burn's operations (`statistics`,
/// `normalize_channels_last`).
fn tracked<B: Backend, C: CheckpointStrategy>(
    x: Tensor<Autodiff<B, C>, 4>,
    weight: Tensor<Autodiff<B, C>, 1>,
    bias: Tensor<Autodiff<B, C>, 1>,
    epsilon: f64,
    relu: bool,
    running: Running<Autodiff<B, C>>,
    output: Option<FloatDType>,
) -> Trained<Autodiff<B, C>> {
    let x = primitive(x);
    let weight = primitive(weight);
    let bias = primitive(bias);
    let input = float::<B, 4>(x.primitive.clone());
    let (gamma, beta) = (
        float::<B, 1>(weight.primitive.clone()),
        float(bias.primitive),
    );
    let output = output.map_or(gamma.dtype(), DType::from);
    let running = running.inner();
    let (mean, var, y, running) = match own_ops::installed::<OwnKernels<B>>() {
        Some(kernels) => {
            // The running estimates' update is part of the statistics' kernel: some 7 fewer
            // operations per BatchNorm for burn-fusion (the launches stay: it had fused them
            // into others). As burn operations after a kernel with three outputs, fusion ran
            // them one by one (1,195–1,254 launches in MyDenseNet's forward instead of 1,011).
            let ((mean, var), running) = (kernels.moments)(input.clone(), running);
            let (m, v) = (mean.clone(), var.clone());
            let y = (kernels.normalize)(input, m, v, gamma, beta, epsilon, relu, output);
            (mean, var, y, running)
        }
        None => {
            // The running estimates are updated before the normalisation, as burn's
            // operations have it: that independent arithmetic on `[C]` ends burn-fusion's
            // search segment there. Without it, after a 1×1 convolution (which fusion does
            // not take in) the whole BatchNorm joined the convolution's segment and ran op by
            // op: MyDenseNet's forward took 2,667 launches instead of 1,801.
            let input = in_dtype(input, gamma.dtype());
            let stats = statistics(input.clone(), gamma, beta, epsilon);
            let count = per_channel(input.dims()) as f64;
            let running = running.updated(stats.mean.clone(), stats.var.clone(), count);
            let y = in_dtype(normalize_channels_last(input, &stats, relu), output);
            (stats.mean, stats.var, y, running)
        }
    };
    let y = primitive(y);
    let parents = [x.node.clone(), weight.node.clone(), bias.node];
    let y = match BatchNormBackward
        .prepare::<C>(parents)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let x_id = prep.checkpoint(&x);
            let relu_output = relu.then(|| y.clone());
            let per_channel = [primitive(mean), primitive(var), weight.primitive];
            prep.finish((x_id, per_channel, epsilon, relu_output), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    (float(y), running.outer())
}
