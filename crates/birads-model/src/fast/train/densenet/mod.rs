//! MyDenseNet's backbone in training, channels last: stem (7×7/2 conv, BatchNorm, ReLU,
//! 3×3/2 max-pool), dense blocks with CBAM, transitions and norm5, forward and backward,
//! with batch statistics (and running-statistics updates) as PyTorch's training mode.
//!
//! As at inference each dense block writes into one buffer as wide as its output, so the
//! concatenations are free; its gradient buffer has the same shape, and the backward pass
//! runs the layers in reverse, each reading the gradient of its 32 channels (complete once
//! every later layer has added to it) and adding into the channels it read. A BatchNorm's
//! input gradient is an affine function of the output gradient and the input per channel
//! (`dx = A·dy + B + C·x`), so it needs only two sums per channel and no saved `x̂`.
//!
//! One part per file: `bn` (BatchNorm), `stem`, `layer` (a dense layer), `cbam` (the
//! attention after each block) and `transition`; this file holds the trainer, which runs
//! them in order, and norm5.

mod bn;
mod cbam;
mod layer;
mod stem;
mod transition;

use burn::prelude::*;

use super::{give, set_param, substream, take, ColConv, Weight};
use crate::densenet::MyDenseNet;
use crate::fast::{conv_matrix, global_mean, values};
use bn::Bn;
use cbam::{cbam_backward, cbam_forward, Attention};
use layer::{dense_layer_backward, dense_layer_forward, Layer};
use transition::{transition_backward, transition_forward, Transition};

struct Block {
    layers: Vec<Layer>,
    growth: usize,
    mid: usize,
    width: usize,
    cbam: Attention,
    /// The block's buffer (input channels and every layer's output, before CBAM).
    buf: Vec<f32>,
    geometry: (usize, usize, usize),
}

/// MyDenseNet's backbone with its weights, optimiser moments and saved activations.
pub struct DenseNetTrainer {
    conv0: ColConv,
    norm0: Bn,
    blocks: Vec<Block>,
    transitions: Vec<Transition>,
    norm5: Bn,
    pub steps: i32,
    // Saved: the stem's convolution output and pool geometry, the max-pool's choices, the
    // last block's CBAM output.
    stem_z: Vec<f32>,
    stem_geometry: (usize, usize, usize),
    pool_argmax: Vec<u32>,
    last: Vec<f32>,
}

fn weight_matrix<B: Backend>(c: &burn::nn::conv::Conv2d<B>) -> Weight {
    let [cout, cin, k, _] = c.weight.dims();
    Weight::new(conv_matrix(&values(c.weight.val()), cout, cin, k))
}

impl DenseNetTrainer {
    pub fn from_model<B: Backend>(m: &MyDenseNet<B>) -> Self {
        let blocks = m
            .blocks
            .iter()
            .map(|b| {
                let [mid, _, _, _] = b.layers[0].conv1.weight.dims();
                let [growth, _, _, _] = b.layers[0].conv2.weight.dims();
                let layers: Vec<Layer> = b.layers.iter().map(Layer::from).collect();
                let width = layers[0].cin + layers.len() * growth;
                Block {
                    layers,
                    growth,
                    mid,
                    width,
                    cbam: Attention::from(&b.cbam),
                    buf: Vec::new(),
                    geometry: (0, 0, 0),
                }
            })
            .collect();
        // Before conv0 and the norms: burn initialises parameters lazily, on first access,
        // so this order fixes which random values each tensor gets.
        let transitions = m.transitions.iter().map(Transition::from).collect();
        Self {
            conv0: ColConv::from_conv(&m.conv0),
            norm0: Bn::from(&m.norm0),
            blocks,
            transitions,
            norm5: Bn::from(&m.norm5),
            steps: 0,
            stem_z: Vec::new(),
            stem_geometry: (0, 0, 0),
            pool_argmax: Vec::new(),
            last: Vec::new(),
        }
    }

    pub fn weights_mut(&mut self) -> Vec<&mut Weight> {
        let mut v = vec![
            &mut self.conv0.w,
            &mut self.norm0.gamma,
            &mut self.norm0.beta,
        ];
        for b in &mut self.blocks {
            for l in &mut b.layers {
                v.extend(l.weights_mut());
            }
            v.extend(b.cbam.weights_mut());
        }
        for t in &mut self.transitions {
            v.extend(t.weights_mut());
        }
        v.extend([&mut self.norm5.gamma, &mut self.norm5.beta]);
        v
    }

    /// `m` with this backbone's weights and running statistics.
    pub fn write_to<B: Backend>(&self, mut m: MyDenseNet<B>) -> MyDenseNet<B> {
        set_param(&mut m.conv0.weight, self.conv0.burn_weight());
        self.norm0.write_to(&mut m.norm0);
        for (ours, theirs) in self.blocks.iter().zip(&mut m.blocks) {
            for (l, t) in ours.layers.iter().zip(&mut theirs.layers) {
                l.write_to(t, ours.mid, ours.growth);
            }
            ours.cbam.write_to(&mut theirs.cbam);
        }
        for (ours, theirs) in self.transitions.iter().zip(&mut m.transitions) {
            ours.write_to(theirs);
        }
        self.norm5.write_to(&mut m.norm5);
        m
    }

    pub fn forward(&mut self, x: &[f32], n: usize, h: usize, w: usize, seed: u64) -> Vec<f32> {
        assert_eq!(x.len(), n * 3 * h * w, "input is n × 3 × h × w");
        // Stem: conv → BN → ReLU → max-pool into block 1's buffer.
        let (mut buf, mut h, mut w) = self.stem_forward(x, n, h, w);
        let mut stream = 0u64;
        let mut next = || {
            stream += 1;
            substream(seed, stream)
        };
        let mut y = Vec::new();
        for i in 0..self.blocks.len() {
            let block = &mut self.blocks[i];
            block.geometry = (n, h, w);
            for l in &mut block.layers {
                dense_layer_forward(
                    l,
                    &mut buf,
                    (n, h, w),
                    block.width,
                    block.mid,
                    block.growth,
                    next(),
                );
            }
            y = take(buf.len());
            cbam_forward(&mut block.cbam, &buf, &mut y, (n, h, w));
            give(std::mem::replace(&mut block.buf, buf));
            if let Some(t) = self.transitions.get_mut(i) {
                let next_width = self.blocks[i + 1].width;
                let (oh, ow) = (h / 2, w / 2);
                buf = take(n * oh * ow * next_width);
                transition_forward(t, y, (n, h, w), &mut buf, next_width);
                (h, w) = (oh, ow);
                y = Vec::new();
            } else {
                buf = Vec::new();
            }
        }
        let c = self.norm5.channels();
        self.norm5.stats(&y, n * h * w, c);
        // norm5 is affine per channel: it commutes with the spatial mean.
        let mut pooled = global_mean(&y, n, h * w, c);
        let (scale, shift) = self.norm5.affine();
        for r in pooled.chunks_exact_mut(c) {
            for ((v, s), b) in r.iter_mut().zip(&scale).zip(&shift) {
                *v = *v * s + b;
            }
        }
        give(std::mem::replace(&mut self.last, y));
        pooled
    }

    pub fn backward(&mut self, d_pooled: &[f32]) {
        for w in self.weights_mut() {
            w.grad.fill(0.0);
        }
        let dy = self.norm5_backward(d_pooled);
        let dbuf = self.blocks_backward(dy);
        self.stem_backward(dbuf);
    }

    /// norm5's backward from the gradient of the pooled features: accumulates its `dγ`,
    /// `dβ` and returns the gradient of the last block's CBAM output.
    fn norm5_backward(&mut self, d_pooled: &[f32]) -> Vec<f32> {
        let c = self.norm5.channels();
        let (n, h, w) = self.blocks.last().expect("one block").geometry;
        let hw = h * w;
        assert_eq!(d_pooled.len(), n * c, "one gradient per pooled feature");
        // norm5: dy is the same at every pixel of an image.
        let mean5 = self.norm5.mean.clone();
        let mut sums64 = vec![0.0f64; 2 * c];
        {
            let (s1, s2) = sums64.split_at_mut(c);
            for img in 0..n {
                let dp = &d_pooled[img * c..(img + 1) * c];
                for row in self.last[img * hw * c..(img + 1) * hw * c].chunks_exact(c) {
                    for (ch, (((a, b), d), x)) in s1
                        .iter_mut()
                        .zip(s2.iter_mut())
                        .zip(dp)
                        .zip(row)
                        .enumerate()
                    {
                        *a += (d / hw as f32) as f64;
                        *b += (d / hw as f32 * (x - mean5[ch])) as f64;
                    }
                }
            }
        }
        let sums: Vec<f32> = sums64.iter().map(|v| *v as f32).collect();
        let [a, b, cc] = self.norm5.finish(&sums, n * hw);
        let mut dy = take(n * hw * c);
        for img in 0..n {
            let dp = &d_pooled[img * c..(img + 1) * c];
            for (drow, row) in dy[img * hw * c..(img + 1) * hw * c]
                .chunks_exact_mut(c)
                .zip(self.last[img * hw * c..(img + 1) * hw * c].chunks_exact(c))
            {
                for (ch, (d, x)) in drow.iter_mut().zip(row).enumerate() {
                    *d = a[ch] * dp[ch] / hw as f32 + b[ch] + cc[ch] * x;
                }
            }
        }
        dy
    }

    /// The blocks and transitions in reverse, from the gradient `dy` of the last block's
    /// CBAM output; returns the gradient of block 1's input buffer.
    fn blocks_backward(&mut self, mut dy: Vec<f32>) -> Vec<f32> {
        let mut d_block_in: Option<Vec<f32>> = None;
        for i in (0..self.blocks.len()).rev() {
            if let Some(t) = self.transitions.get_mut(i) {
                let d_next = d_block_in.take().expect("the next block's input gradient");
                let next_width = self.blocks[i + 1].width;
                dy = transition_backward(
                    t,
                    &d_next,
                    self.blocks[i + 1].geometry,
                    next_width,
                    self.blocks[i].geometry,
                );
                give(d_next);
            }
            let block = &mut self.blocks[i];
            let (n, h, w) = block.geometry;
            let mut dbuf = take(n * h * w * block.width);
            cbam_backward(&mut block.cbam, &block.buf, &dy, &mut dbuf, (n, h, w));
            give(std::mem::take(&mut dy));
            for l in block.layers.iter_mut().rev() {
                dense_layer_backward(
                    l,
                    &block.buf,
                    &mut dbuf,
                    (n, h, w),
                    block.width,
                    block.mid,
                    block.growth,
                );
            }
            d_block_in = Some(dbuf);
        }
        d_block_in.expect("block 1's input gradient")
    }
}
