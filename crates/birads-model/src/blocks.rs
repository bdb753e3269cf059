//! Building blocks shared by the two models, with PyTorch's semantics where burn's differ:
//! channels-first LayerNorm (torchvision's `LayerNorm2d`), BatchNorm whose running variance
//! is updated with the *unbiased* batch variance as PyTorch does, per-sample stochastic
//! depth, and CBAM attention.
//!
//! Training vs evaluation follows burn's convention: on an autodiff backend (training) dropout,
//! stochastic depth and batch statistics are active; on a plain backend (`model.valid()`,
//! inference) they are not.

use crate::{amp, batch_norm, layer_norm};
use burn::module::{Initializer, Module, Param, RunningState};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{DType, Distribution, FloatDType};

std::thread_local! {
    static EVAL_WITH_GRADIENTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Is this forward pass a training pass?
pub fn training<B: Backend>(device: &B::Device) -> bool {
    B::ad_enabled(device) && !EVAL_WITH_GRADIENTS.with(|c| c.get())
}

/// Evaluation semantics (no dropout, running BatchNorm statistics) on an autodiff backend
/// while the guard lives on this thread: gradients of the *inference* model, as Grad-CAM
/// needs. burn itself has no such mode; `training` is the one place that decides.
pub struct EvalWithGradients {
    previous: bool,
}

impl EvalWithGradients {
    pub fn enter() -> Self {
        let previous = EVAL_WITH_GRADIENTS.with(|c| c.replace(true));
        Self { previous }
    }
}

impl Drop for EvalWithGradients {
    fn drop(&mut self) {
        EVAL_WITH_GRADIENTS.with(|c| c.set(self.previous));
    }
}

/// Dropout (inverted scaling) in training; identity otherwise.
pub fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, p: f64) -> Tensor<B, D> {
    DropoutMask::draw(x.dims(), x.dtype(), p, &x.device()).apply(x)
}

/// [`dropout`] in two halves: the mask for a tensor of `shape` and type `dtype` drawn now
/// (none when nothing is dropped), applied later by [`DropoutMask::apply`]. With a shape of
/// `[N, 1, 1, 1]` it is stochastic depth in torchvision's "row" mode: each sample's residual
/// branch dropped with probability `p`, survivors scaled by `1/(1-p)`.
///
/// Drawn before the operation whose output it masks, the draw no longer stands between that
/// operation and the masking: burn-fusion then fuses an elementwise step between them (a cast
/// under amp) with the masking, one launch where there were two.
pub struct DropoutMask<B: Backend, const D: usize> {
    mask: Option<(Tensor<B, D>, f64)>,
}

impl<B: Backend, const D: usize> DropoutMask<B, D> {
    pub fn draw(shape: [usize; D], dtype: DType, p: f64, device: &B::Device) -> Self {
        if p <= 0.0 || !training::<B>(device) {
            return DropoutMask { mask: None };
        }
        let keep = 1.0 - p;
        let options = (device, dtype);
        let mask = Tensor::random(shape, Distribution::Bernoulli(keep), options);
        DropoutMask {
            mask: Some((mask, keep)),
        }
    }

    pub fn apply(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self.mask {
            Some((mask, keep)) => x * mask / keep,
            None => x,
        }
    }
}

/// `x · scale[c] + shift[c]` over the channels of an NCHW tensor. The per-channel vectors
/// are materialised as `[N, C, 1, 1]` first: the CPU backend's SIMD broadcast kernel needs
/// the non-broadcast dims of the right-hand side to be contiguous, which a `[1, C, 1, 1]`
/// view expanded over the batch is not (it fell back to a strided loop 5–10× slower).
pub fn channel_affine<B: Backend>(
    x: Tensor<B, 4>,
    scale: Tensor<B, 1>,
    shift: Option<Tensor<B, 1>>,
) -> Tensor<B, 4> {
    let [n, c, _, _] = x.dims();
    let per_sample = |v: Tensor<B, 1>| v.reshape([1, c, 1, 1]).repeat_dim(0, n);
    let y = x * per_sample(scale);
    match shift {
        Some(b) => y + per_sample(b),
        None => y,
    }
}

/// How a layer's weights are first drawn. The original models are torchvision's DenseNet and
/// ConvNeXt, whose constructors re-initialise the layers they build; what the original adds
/// afterwards (CBAM, the new heads) keeps PyTorch's default, which is burn's default
/// (`KaimingUniform`, gain 1/√3: U(±1/√fan_in) for weights and biases).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// PyTorch's (and burn's) default.
    Default,
    /// torchvision DenseNet: `kaiming_normal_` (fan in, ReLU gain √2) on every convolution.
    DenseNet,
    /// torchvision ConvNeXt: `trunc_normal_(std = 0.02)` on convolutions and linears, zero
    /// biases. The cut at ±2 lies 100 σ out, so a plain normal draws the same distribution.
    ConvNeXt,
}

impl Init {
    fn initializer(self) -> Option<Initializer> {
        match self {
            Init::Default => None,
            Init::DenseNet => Some(Initializer::KaimingNormal {
                gain: std::f64::consts::SQRT_2,
                fan_out_only: false,
            }),
            Init::ConvNeXt => Some(Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }),
        }
    }

    fn zero_bias(self) -> bool {
        self == Init::ConvNeXt
    }
}

/// A convolution as torchvision builds them (square kernel, symmetric zero padding).
#[allow(clippy::too_many_arguments)] // mirrors nn.Conv2d's positional arguments
pub fn conv2d<B: Backend>(
    init: Init,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    groups: usize,
    bias: bool,
    device: &B::Device,
) -> Conv2d<B> {
    let mut config = Conv2dConfig::new([cin, cout], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .with_groups(groups)
        .with_bias(bias);
    if let Some(i) = init.initializer() {
        config = config.with_initializer(i);
    }
    let mut conv = config.init(device);
    if bias && init.zero_bias() {
        conv.bias = Some(Initializer::Zeros.init([cout], device));
    }
    conv
}

/// A linear layer drawn as `init` says.
pub fn linear<B: Backend>(init: Init, cin: usize, cout: usize, device: &B::Device) -> Linear<B> {
    let mut config = LinearConfig::new(cin, cout);
    if let Some(i) = init.initializer() {
        config = config.with_initializer(i);
    }
    let mut layer = config.init(device);
    if init.zero_bias() {
        layer.bias = Some(Initializer::Zeros.init([cout], device));
    }
    layer
}

/// LayerNorm over the channels of an NCHW tensor (torchvision's `LayerNorm2d`).
#[derive(Module, Debug)]
pub struct LayerNorm2d<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    pub epsilon: f64,
}

impl<B: Backend> LayerNorm2d<B> {
    pub fn new(channels: usize, epsilon: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            epsilon,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        // Normalise channels-last rows (contiguous after the reshape), as torchvision does.
        let rows = x.permute([0, 2, 3, 1]).reshape([n * h * w, c]);
        let (weight, bias) = (self.weight.val(), self.bias.val());
        let rows = match layer_norm::installed::<B>() {
            Some(own) => own(rows, weight, bias, self.epsilon, None),
            None => {
                let (var, mean) = rows.clone().var_mean_bias(1);
                let rows = (rows - mean) / (var + self.epsilon).sqrt();
                rows * weight.reshape([1, c]) + bias.reshape([1, c])
            }
        };
        rows.reshape([n, h, w, c]).permute([0, 3, 1, 2])
    }
}

/// `nn.BatchNorm2d` with PyTorch's exact semantics: batch statistics in training (biased
/// variance to normalise, unbiased variance into the running estimate, momentum 0.1), running
/// statistics in evaluation. Parameter names follow PyTorch (`weight`, `bias`).
#[derive(Module, Debug)]
pub struct BatchNorm2d<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    pub running_mean: RunningState<Tensor<B, 1>>,
    pub running_var: RunningState<Tensor<B, 1>>,
    pub momentum: f64,
    pub epsilon: f64,
}

impl<B: Backend> BatchNorm2d<B> {
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            running_mean: RunningState::new(Tensor::zeros([channels], device)),
            running_var: RunningState::new(Tensor::ones([channels], device)),
            momentum: 0.1,
            epsilon: 1e-5,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_then(x, false, None)
    }

    /// `relu(self.forward(x))`: on the GPU training backends one operation of birads' own,
    /// whose result is channels-last underneath, as the convolution after it takes its input
    /// (`batch_norm::normalize_channels_last`).
    pub fn forward_relu(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_then(x, true, None)
    }

    /// `relu(self.forward(x))` in the precision of the convolution it feeds: under amp
    /// (`amp::compute_dtype`) the own operation writes bf16 itself, where a cast after it was
    /// one more launch and copy per convolution (and lost the channels-last order). The values
    /// are those of `forward_relu(x).cast(dtype)`.
    pub fn forward_relu_for(&self, x: Tensor<B, 4>, dtype: Option<FloatDType>) -> Tensor<B, 4> {
        self.forward_then(x, true, dtype)
    }

    fn forward_then(
        &self,
        x: Tensor<B, 4>,
        then_relu: bool,
        output: Option<FloatDType>,
    ) -> Tensor<B, 4> {
        let device = x.device();
        // burn's operations below compute in the parameters' precision (the own pass reads `x`
        // in its own, `amp::conv2d_as_computed`).
        let wide = |x: Tensor<B, 4>| amp::in_dtype(x, self.weight.val().dtype());
        let finish = |y: Tensor<B, 4>| {
            let y = if then_relu { relu(y) } else { y };
            amp::in_dtype_if(y, output)
        };
        if !training::<B>(&device) {
            // Inference: one multiply-add per value with the statistics folded in.
            let inv_std = (self.running_var.value().to_device(&device) + self.epsilon)
                .sqrt()
                .recip();
            let scale = self.weight.val() * inv_std;
            let shift =
                self.bias.val() - self.running_mean.value().to_device(&device) * scale.clone();
            return finish(channel_affine(wide(x), scale, Some(shift)));
        }
        let [n, _, h, w] = x.dims();
        let count = (n * h * w) as f64;
        if let Some(own) = batch_norm::installed::<B>() {
            let (weight, bias) = (self.weight.val(), self.bias.val());
            let (y, running) = own(
                x,
                weight,
                bias,
                self.epsilon,
                then_relu,
                self.running(&device),
                output,
            );
            self.running_mean.update(running.mean);
            self.running_var.update(running.var);
            return y;
        }
        let x = wide(x);
        let (mean, var) = batch_statistics(x.clone());
        self.update_running(mean.clone(), var.clone(), count);
        let inv_std = (var + self.epsilon).sqrt().recip();
        let scale = self.weight.val() * inv_std;
        let shift = self.bias.val() - mean * scale.clone();
        finish(channel_affine(x, scale, Some(shift)))
    }

    /// The running estimates now, on `device`.
    fn running(&self, device: &B::Device) -> batch_norm::Running<B> {
        batch_norm::Running {
            mean: self.running_mean.value_sync().to_device(device),
            var: self.running_var.value_sync().to_device(device),
            momentum: self.momentum,
        }
    }

    /// Running estimates from a batch's mean and biased variance `[C]` of `count` values per
    /// channel (`batch_norm::Running::updated`).
    fn update_running(&self, mean: Tensor<B, 1>, var: Tensor<B, 1>, count: f64) {
        let running = self.running(&mean.device()).updated(mean, var, count);
        self.running_mean.update(running.mean);
        self.running_var.update(running.var);
    }
}

/// Per-channel mean and biased variance `[C]` of `x`, differentiable, from reductions along the
/// last (contiguous) axis only: the channels-first view `swap_dims(0, 1)` made every BatchNorm
/// copy its input through burn-flex's strided iterator (≈ 30 % of a MyDenseNet training step).
/// Both are `[C]` from the reductions on, as the arithmetic that follows: burn-fusion does not
/// fuse operations of different ranks into one kernel, and with `[C, 1]` here a MyDenseNet
/// training step on burn-cubecl took 7,803 launches instead of 6,593.
fn batch_statistics<B: Backend>(x: Tensor<B, 4>) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let [n, c, h, w] = x.dims();
    let count = (n * h * w) as f64;
    let per_image = x.reshape([n, c, h * w]);
    let channel_sum = |t: Tensor<B, 3>| t.sum_dim(2).sum_dim(0).reshape([c]) / count;
    let mean = channel_sum(per_image.clone());
    let centered = per_image - mean.clone().reshape([1, c, 1]).repeat_dim(0, n);
    let var = channel_sum(centered.clone() * centered);
    (mean, var)
}

/// CBAM channel attention: a shared bias-free 1×1-conv MLP over the average- and max-pooled
/// descriptors, summed, sigmoid.
#[derive(Module, Debug)]
pub struct ChannelAttention<B: Backend> {
    pub fc1: Conv2d<B>,
    pub fc2: Conv2d<B>,
}

impl<B: Backend> ChannelAttention<B> {
    pub fn new(channels: usize, ratio: usize, device: &B::Device) -> Self {
        let hidden = (channels / ratio).max(1);
        Self {
            fc1: conv2d(Init::Default, channels, hidden, 1, 1, 0, 1, false, device),
            fc2: conv2d(Init::Default, hidden, channels, 1, 1, 0, 1, false, device),
        }
    }

    fn mlp(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        amp::conv2d(&self.fc2, relu(amp::conv2d(&self.fc1, x)))
    }

    /// The attention map `[N, C, 1, 1]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let avg = x.clone().mean_dims(&[2, 3]);
        let max = x.max_dim(3).max_dim(2);
        sigmoid(self.mlp(avg) + self.mlp(max))
    }
}

/// CBAM spatial attention: channel mean and max → 7×7 conv (no bias) → sigmoid.
#[derive(Module, Debug)]
pub struct SpatialAttention<B: Backend> {
    pub conv: Conv2d<B>,
}

impl<B: Backend> SpatialAttention<B> {
    pub fn new(device: &B::Device) -> Self {
        Self {
            conv: conv2d(Init::Default, 2, 1, 7, 1, 3, 1, false, device),
        }
    }

    /// The attention map `[N, 1, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let avg = x.clone().mean_dim(1);
        let max = x.max_dim(1);
        sigmoid(amp::conv2d(&self.conv, Tensor::cat(vec![avg, max], 1)))
    }
}

/// Channel then spatial attention, each multiplied in.
#[derive(Module, Debug)]
pub struct Cbam<B: Backend> {
    pub channel_attention: ChannelAttention<B>,
    pub spatial_attention: SpatialAttention<B>,
}

impl<B: Backend> Cbam<B> {
    pub fn new(channels: usize, ratio: usize, device: &B::Device) -> Self {
        Self {
            channel_attention: ChannelAttention::new(channels, ratio, device),
            spatial_attention: SpatialAttention::new(device),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.channel_attention.forward(x.clone()) * x;
        self.spatial_attention.forward(x.clone()) * x
    }
}
