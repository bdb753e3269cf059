//! MyConvNeXt: torchvision's `convnext_tiny` with the original program's changes — every
//! element of every stage (stem conv and norm, downsample norm and conv, each CNBlock) is
//! followed by Dropout, stochastic depth grows linearly over the CNBlocks
//! (`p_k = sd_rate · k / (n − 1)`), and the head is
//! `avgpool → flatten → LayerNorm → Linear(C, C/2) → GELU → Dropout → Linear(C/2, classes)`.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;

use crate::amp;
use crate::blocks::{conv2d, dropout, linear, DropoutMask, Init, LayerNorm2d};
use crate::depthwise;
use crate::gelu::gelu;
use crate::layer_norm;

/// ε of the blocks' LayerNorms (torchvision's `convnext_tiny`; the stem's and the
/// downsamplings' `LayerNorm2d` too).
const BLOCK_EPSILON: f64 = 1e-6;
/// ε of the head's LayerNorm (PyTorch's default, as the original program builds it).
const HEAD_EPSILON: f64 = 1e-5;

#[derive(Config, Debug)]
pub struct MyConvNeXtConfig {
    /// Channels per stage.
    #[config(default = "vec![96, 192, 384, 768]")]
    pub dims: Vec<usize>,
    /// CNBlocks per stage.
    #[config(default = "vec![3, 3, 9, 3]")]
    pub depths: Vec<usize>,
    #[config(default = 6)]
    pub num_classes: usize,
    /// Dropout after every stage element and in the head (0.03 at inference in the
    /// original, 0.05 in training).
    #[config(default = 0.03)]
    pub dropout: f64,
    /// Stochastic depth of the last CNBlock (linear from 0).
    #[config(default = 0.6)]
    pub sd_rate: f64,
    #[config(default = 1e-6)]
    pub layer_scale_init: f64,
}

/// ConvNeXt block: depthwise 7×7 → LayerNorm (channels last) → Linear 4× → GELU → Linear →
/// layer scale → stochastic depth → residual; then the wrapper's Dropout.
#[derive(Module, Debug)]
pub struct CnBlock<B: Backend> {
    pub dwconv: Conv2d<B>,
    pub norm: LayerNorm<B>,
    pub pwconv1: Linear<B>,
    pub pwconv2: Linear<B>,
    pub layer_scale: Param<Tensor<B, 3>>,
    pub drop_path: f64,
    pub dropout: f64,
}

impl<B: Backend> CnBlock<B> {
    fn new(dim: usize, drop_path: f64, dropout: f64, layer_scale: f64, device: &B::Device) -> Self {
        Self {
            dwconv: conv2d(Init::ConvNeXt, dim, dim, 7, 1, 3, dim, true, device),
            norm: LayerNormConfig::new(dim)
                .with_epsilon(BLOCK_EPSILON)
                .init(device),
            pwconv1: linear(Init::ConvNeXt, dim, 4 * dim, device),
            pwconv2: linear(Init::ConvNeXt, 4 * dim, dim, device),
            layer_scale: Param::from_tensor(Tensor::full([dim, 1, 1], layer_scale, device)),
            drop_path,
            dropout,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        // The stochastic-depth and dropout masks are drawn first (in the order `drop_path`
        // and `dropout` draw them, nothing else between draws at random): with no draw
        // between the last product and the block's end, burn-fusion makes the layer scale,
        // stochastic depth, residual sum and dropout one launch (`DropoutMask`).
        let (device, dtype) = (x.device(), self.pwconv2.weight.val().dtype());
        let drop_path = DropoutMask::draw([n, 1, 1, 1], dtype, self.drop_path, &device);
        let dropout = DropoutMask::draw([n, h, w, c], dtype, self.dropout, &device);
        let residual = x.clone().permute([0, 2, 3, 1]);
        // Channels-last rows, contiguous after the reshape: LayerNorm and both Linears run on
        // a plain [N·H·W, C] matrix and the layer scale is a broadcast along rows (the CPU
        // backend's fast paths); permuted 4-D views fell back to strided loops.
        // Under amp the LayerNorm reads the depthwise product in bf16 as it was computed and
        // writes bf16 for `pwconv1`: no cast between them (the values are the same).
        let rows = depthwise::conv2d_as_computed(&self.dwconv, x)
            .permute([0, 2, 3, 1])
            .reshape([n * h * w, c]);
        let low = amp::compute_dtype();
        let normalised = layer_norm::rows_for(&self.norm, BLOCK_EPSILON, rows, low);
        let hidden = gelu(amp::linear(&self.pwconv1, normalised));
        let rows = amp::linear(&self.pwconv2, hidden);
        let rows = rows * self.layer_scale.val().reshape([1, c]);
        // The residual sum in channels-last order too: its result is channels-last
        // underneath, as the next block's depthwise convolution takes its input on the GPU
        // backends (an elementwise result is written in the order of its dimensions, and
        // burn-cubecl's convolutions first copy an input that is not channels-last).
        let y = drop_path.apply(rows.reshape([n, h, w, c]));
        let sum = dropout.apply(y + residual);
        sum.permute([0, 3, 1, 2])
    }
}

/// LayerNorm2d then a 2×2 stride-2 conv, each followed by Dropout.
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    pub norm: LayerNorm2d<B>,
    pub conv: Conv2d<B>,
}

#[derive(Module, Debug)]
pub struct Stage<B: Backend> {
    pub blocks: Vec<CnBlock<B>>,
}

#[derive(Module, Debug)]
pub struct MyConvNeXt<B: Backend> {
    pub stem_conv: Conv2d<B>,
    pub stem_norm: LayerNorm2d<B>,
    pub stages: Vec<Stage<B>>,
    /// Between stages: `downsamples[i]` precedes `stages[i + 1]`.
    pub downsamples: Vec<Downsample<B>>,
    pub head_norm: LayerNorm<B>,
    pub head_fc1: Linear<B>,
    pub head_fc2: Linear<B>,
    pub dropout: f64,
}

impl MyConvNeXtConfig {
    /// The stochastic-depth probability of each CNBlock, in order.
    pub fn drop_path_schedule(&self) -> Vec<f64> {
        let total: usize = self.depths.iter().sum();
        (0..total)
            .map(|k| {
                if total > 1 {
                    self.sd_rate * k as f64 / (total - 1) as f64
                } else {
                    0.0
                }
            })
            .collect()
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> MyConvNeXt<B> {
        assert_eq!(self.dims.len(), self.depths.len(), "one depth per stage");
        let schedule = self.drop_path_schedule();
        let mut k = 0;
        let stages = self
            .dims
            .iter()
            .zip(&self.depths)
            .map(|(&dim, &depth)| Stage {
                blocks: (0..depth)
                    .map(|_| {
                        k += 1;
                        CnBlock::new(
                            dim,
                            schedule[k - 1],
                            self.dropout,
                            self.layer_scale_init,
                            device,
                        )
                    })
                    .collect(),
            })
            .collect();
        let downsamples = self
            .dims
            .windows(2)
            .map(|w| Downsample {
                norm: LayerNorm2d::new(w[0], BLOCK_EPSILON, device),
                conv: conv2d(Init::ConvNeXt, w[0], w[1], 2, 2, 0, 1, true, device),
            })
            .collect();
        let last = *self.dims.last().expect("at least one stage");
        MyConvNeXt {
            stem_conv: conv2d(Init::ConvNeXt, 3, self.dims[0], 4, 4, 0, 1, true, device),
            stem_norm: LayerNorm2d::new(self.dims[0], BLOCK_EPSILON, device),
            stages,
            downsamples,
            head_norm: LayerNormConfig::new(last)
                .with_epsilon(HEAD_EPSILON)
                .init(device),
            head_fc1: LinearConfig::new(last, last / 2).init(device),
            head_fc2: LinearConfig::new(last / 2, self.num_classes).init(device),
            dropout: self.dropout,
        }
    }
}

impl<B: Backend> MyConvNeXt<B> {
    /// Feature maps of the last stage, `[N, C, H/32, W/32]` (Grad-CAM's target layer).
    pub fn features(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let p = self.dropout;
        let mut x = dropout(
            self.stem_norm
                .forward(dropout(amp::conv2d(&self.stem_conv, x), p)),
            p,
        );
        for (i, stage) in self.stages.iter().enumerate() {
            if i > 0 {
                let d = &self.downsamples[i - 1];
                x = dropout(amp::conv2d(&d.conv, dropout(d.norm.forward(x), p)), p);
            }
            for block in &stage.blocks {
                x = block.forward(x);
            }
        }
        x
    }

    /// Logits `[N, classes]` from pooled features.
    pub fn head(&self, features: Tensor<B, 4>) -> Tensor<B, 2> {
        let pooled: Tensor<B, 2> = features.mean_dims(&[2, 3]).flatten(1, 3);
        let low = amp::compute_dtype();
        let normalised = layer_norm::rows_for(&self.head_norm, HEAD_EPSILON, pooled, low);
        let h = gelu(amp::linear(&self.head_fc1, normalised));
        amp::linear(&self.head_fc2, dropout(h, self.dropout))
    }

    /// `[N, 3, H, W]` normalised images → `[N, classes]` logits.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        // Under amp, the weights' casts for the products, made at once (`amp::cast_weights`).
        let _casts = amp::cast_weights(self);
        self.head(self.features(x))
    }
}
