//! MyDenseNet: torchvision's `densenet121` features with the original program's changes —
//! Dropout(dp2) after every dense layer, CBAM after every dense block (reduction
//! `16·(i+1)//2`: 16, 24, 32, 40), no ReLU after `norm5`, then
//! `avgpool → LayerNorm → Linear(C, C/2) → ReLU → Dropout(dp1) → Linear(C/2, C/4) → GELU`,
//! task-specific decoupling (shared `Linear(C/4, C/8)` + per task `Linear(C/4, C/2 − C/8)`,
//! concatenated) and one `Linear(C/2, C/8) → ReLU → Linear(C/8, 2)` head per task.
//! Output `[N, tasks, 2]`. With C = 1024 these are the original's 512/256/128/384/128.
//!
//! With `classes = K > 0` the same network grades instead: one head of `K` logits in place of
//! the four feature heads, output `[N, 1, K]` (a BI-RADS model on the DenseNet backbone,
//! which learns from a few thousand images without pretraining where ConvNeXt does not).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::amp;
use crate::blocks::{conv2d, dropout, BatchNorm2d, Cbam, DropoutMask, Init};
use crate::gelu::gelu;
use crate::layer_norm;

/// ε of the head's LayerNorm (PyTorch's default, as the original program builds it).
const HEAD_EPSILON: f64 = 1e-5;

#[derive(Config, Debug)]
pub struct MyDenseNetConfig {
    #[config(default = 32)]
    pub growth: usize,
    #[config(default = "vec![6, 12, 24, 16]")]
    pub blocks: Vec<usize>,
    #[config(default = 64)]
    pub init_features: usize,
    #[config(default = 4)]
    pub bn_size: usize,
    #[config(default = 4)]
    pub tasks: usize,
    /// Head dropout (0.5; 0.2 when fine-tuning in the original).
    #[config(default = 0.5)]
    pub dp1: f64,
    /// Dropout after each dense layer.
    #[config(default = 0.03)]
    pub dp2: f64,
    /// 0: the four feature heads (`tasks` of them); `K > 0`: one head of `K` class logits.
    #[config(default = 0)]
    pub classes: usize,
}

/// BN → ReLU → 1×1 conv → BN → ReLU → 3×3 conv, on the concatenation of all earlier maps.
#[derive(Module, Debug)]
pub struct DenseLayer<B: Backend> {
    pub norm1: BatchNorm2d<B>,
    pub conv1: Conv2d<B>,
    pub norm2: BatchNorm2d<B>,
    pub conv2: Conv2d<B>,
    pub dropout: f64,
}

impl<B: Backend> DenseLayer<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let low = amp::compute_dtype();
        // The dropout mask is drawn first, so that under amp the cast of the last
        // convolution's output and the masking are one launch (`DropoutMask`); the values
        // are those of `dropout` after the convolutions (nothing between draws at random).
        let [n, _, h, w] = x.dims();
        let weight = self.conv2.weight.val();
        let out = [n, weight.dims()[0], h, w];
        let mask = DropoutMask::draw(out, weight.dtype(), self.dropout, &x.device());
        let y = amp::conv2d_as_computed(&self.conv1, self.norm1.forward_relu_for(x, low));
        mask.apply(amp::conv2d(
            &self.conv2,
            self.norm2.forward_relu_for(y, low),
        ))
    }
}

#[derive(Module, Debug)]
pub struct DenseBlock<B: Backend> {
    pub layers: Vec<DenseLayer<B>>,
    pub cbam: Cbam<B>,
}

impl<B: Backend> DenseBlock<B> {
    /// Each layer sees the concatenation of the block's input and every earlier layer's
    /// output, kept as one running tensor that grows by one layer's channels at a time: the
    /// same values as concatenating the whole list for every layer, with two copies per layer
    /// instead of one per earlier map. burn-cubecl copies each part of a concatenation with a
    /// kernel of its own, so this takes a training step of the original model from 8,908 to
    /// 7,803 launches (slice-assigns in the forward 613 → 136; `examples/kernel_count.rs` of
    /// birads-train).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut all = x;
        for layer in &self.layers {
            let new = layer.forward(all.clone());
            all = Tensor::cat(vec![all, new], 1);
        }
        self.cbam.forward(all)
    }
}

/// BN → ReLU → 1×1 conv (halving channels) → 2×2 average pool.
#[derive(Module, Debug)]
pub struct Transition<B: Backend> {
    pub norm: BatchNorm2d<B>,
    pub conv: Conv2d<B>,
    pub pool: AvgPool2d,
}

#[derive(Module, Debug)]
pub struct TaskHead<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

#[derive(Module, Debug)]
pub struct MyDenseNet<B: Backend> {
    pub conv0: Conv2d<B>,
    pub norm0: BatchNorm2d<B>,
    pub pool0: MaxPool2d,
    pub blocks: Vec<DenseBlock<B>>,
    pub transitions: Vec<Transition<B>>,
    pub norm5: BatchNorm2d<B>,
    /// torchvision's unused ImageNet classifier, kept so checkpoints round-trip.
    pub imagenet_classifier: Linear<B>,
    pub head_norm: LayerNorm<B>,
    pub head_fc1: Linear<B>,
    pub head_fc2: Linear<B>,
    pub shared_proj: Linear<B>,
    pub task_proj: Vec<Linear<B>>,
    pub task_heads: Vec<TaskHead<B>>,
    pub dp1: f64,
    /// 0 for the feature model, else the number of classes of its single head.
    pub classes: usize,
}

impl MyDenseNetConfig {
    /// Channels after each dense block (before its transition).
    pub fn block_channels(&self) -> Vec<usize> {
        let mut c = self.init_features;
        let mut out = Vec::new();
        for (i, &n) in self.blocks.iter().enumerate() {
            c += n * self.growth;
            out.push(c);
            if i + 1 < self.blocks.len() {
                c /= 2;
            }
        }
        out
    }

    /// Heads and logits per head: `(tasks, 2)` for features, `(1, classes)` for grading.
    pub fn heads(&self) -> (usize, usize) {
        if self.classes > 0 {
            (1, self.classes)
        } else {
            (self.tasks, 2)
        }
    }

    /// CBAM reduction after block `i` (1-based), as the original: `16·(i+1)//2`.
    pub fn cbam_ratio(i: usize) -> usize {
        16 * (i + 1) / 2
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> MyDenseNet<B> {
        let mut c = self.init_features;
        let mut blocks = Vec::new();
        let mut transitions = Vec::new();
        for (i, &n) in self.blocks.iter().enumerate() {
            let layers = (0..n)
                .map(|j| {
                    let cin = c + j * self.growth;
                    let mid = self.bn_size * self.growth;
                    DenseLayer {
                        norm1: BatchNorm2d::new(cin, device),
                        conv1: conv2d(Init::DenseNet, cin, mid, 1, 1, 0, 1, false, device),
                        norm2: BatchNorm2d::new(mid, device),
                        conv2: conv2d(Init::DenseNet, mid, self.growth, 3, 1, 1, 1, false, device),
                        dropout: self.dp2,
                    }
                })
                .collect();
            c += n * self.growth;
            blocks.push(DenseBlock {
                layers,
                cbam: Cbam::new(c, Self::cbam_ratio(i + 1), device),
            });
            if i + 1 < self.blocks.len() {
                transitions.push(Transition {
                    norm: BatchNorm2d::new(c, device),
                    conv: conv2d(Init::DenseNet, c, c / 2, 1, 1, 0, 1, false, device),
                    pool: AvgPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
                });
                c /= 2;
            }
        }
        let nf = c;
        let (heads, width) = self.heads();
        MyDenseNet {
            conv0: conv2d(
                Init::DenseNet,
                3,
                self.init_features,
                7,
                2,
                3,
                1,
                false,
                device,
            ),
            norm0: BatchNorm2d::new(self.init_features, device),
            pool0: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            blocks,
            transitions,
            norm5: BatchNorm2d::new(nf, device),
            imagenet_classifier: LinearConfig::new(nf, 1000).init(device),
            head_norm: LayerNormConfig::new(nf)
                .with_epsilon(HEAD_EPSILON)
                .init(device),
            head_fc1: LinearConfig::new(nf, nf / 2).init(device),
            head_fc2: LinearConfig::new(nf / 2, nf / 4).init(device),
            shared_proj: LinearConfig::new(nf / 4, nf / 8).init(device),
            task_proj: (0..heads)
                .map(|_| LinearConfig::new(nf / 4, nf / 2 - nf / 8).init(device))
                .collect(),
            task_heads: (0..heads)
                .map(|_| TaskHead {
                    fc1: LinearConfig::new(nf / 2, nf / 8).init(device),
                    fc2: LinearConfig::new(nf / 8, width).init(device),
                })
                .collect(),
            dp1: self.dp1,
            classes: self.classes,
        }
    }
}

impl<B: Backend> MyDenseNet<B> {
    /// Values held in BatchNorm running statistics (counted by `num_params`, not trained).
    pub fn running_stat_count(&self) -> usize {
        let bn = |b: &BatchNorm2d<B>| 2 * b.weight.dims()[0];
        let mut n = bn(&self.norm0) + bn(&self.norm5);
        for block in &self.blocks {
            n += block
                .layers
                .iter()
                .map(|l| bn(&l.norm1) + bn(&l.norm2))
                .sum::<usize>();
        }
        n + self.transitions.iter().map(|t| bn(&t.norm)).sum::<usize>()
    }

    /// Trainable parameters (the number PyTorch's `parameters()` gives).
    pub fn trainable_params(&self) -> usize {
        self.num_params() - self.running_stat_count()
    }

    /// Output of `norm5` (no ReLU), `[N, C, H/32, W/32]` (Grad-CAM's target layer).
    pub fn features(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self
            .pool0
            .forward(self.norm0.forward_relu(amp::conv2d(&self.conv0, x)));
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(x);
            if let Some(t) = self.transitions.get(i) {
                let low = amp::compute_dtype();
                x = t
                    .pool
                    .forward(amp::conv2d(&t.conv, t.norm.forward_relu_for(x, low)));
            }
        }
        self.norm5.forward(x)
    }

    /// Per-head logits `[N, tasks, 2]` (features) or `[N, 1, classes]` from feature maps.
    pub fn head(&self, features: Tensor<B, 4>) -> Tensor<B, 3> {
        let pooled: Tensor<B, 2> = features.mean_dims(&[2, 3]).flatten(1, 3);
        let low = amp::compute_dtype();
        let normalised = layer_norm::rows_for(&self.head_norm, HEAD_EPSILON, pooled, low);
        let h = relu(amp::linear(&self.head_fc1, normalised));
        let h = gelu(amp::linear(&self.head_fc2, dropout(h, self.dp1)));
        let shared = amp::linear(&self.shared_proj, h.clone());
        let outputs: Vec<Tensor<B, 2>> = self
            .task_proj
            .iter()
            .zip(&self.task_heads)
            .map(|(proj, head)| {
                let f = Tensor::cat(vec![shared.clone(), amp::linear(proj, h.clone())], 1);
                amp::linear(&head.fc2, relu(amp::linear(&head.fc1, f)))
            })
            .collect();
        Tensor::stack(outputs, 1)
    }

    /// `[N, 3, H, W]` normalised images → `[N, tasks, 2]` (or `[N, 1, classes]`) logits.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        // Under amp, the weights' casts for the products, made at once (`amp::cast_weights`).
        let _casts = amp::cast_weights(self);
        self.head(self.features(x))
    }
}
