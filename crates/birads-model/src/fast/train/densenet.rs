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

use burn::module::RunningState;
use burn::prelude::*;
use rayon::prelude::*;

use super::{
    dropout_backward, dropout_forward, for_rows_acc, gemm_strided, give, reduce, set_param,
    substream, take, take_zeroed, ColConv, Weight,
};
use crate::blocks::{BatchNorm2d, Cbam};
use crate::densenet::MyDenseNet;
use crate::fast::{conv_matrix, for_rows, global_mean, im2col, simd, to_nhwc, values, SharedMut};

/// BatchNorm with batch statistics over the rows of a channels-last matrix.
struct Bn {
    gamma: Weight,
    beta: Weight,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    momentum: f32,
    eps: f32,
    /// Batch mean and `1/σ` of the last forward pass.
    mean: Vec<f32>,
    inv: Vec<f32>,
}

impl Bn {
    fn from<B: Backend>(bn: &BatchNorm2d<B>) -> Self {
        Self {
            gamma: Weight::new(values(bn.weight.val())),
            beta: Weight::new(values(bn.bias.val())),
            running_mean: values(bn.running_mean.value()),
            running_var: values(bn.running_var.value()),
            momentum: bn.momentum as f32,
            eps: bn.epsilon as f32,
            mean: Vec::new(),
            inv: Vec::new(),
        }
    }

    fn channels(&self) -> usize {
        self.gamma.value.len()
    }

    fn write_to<B: Backend>(&self, bn: &mut BatchNorm2d<B>) {
        set_param(&mut bn.weight, self.gamma.value.clone());
        set_param(&mut bn.bias, self.beta.value.clone());
        let device = bn.running_mean.value().device();
        let t = |v: &Vec<f32>| {
            Tensor::<B, 1>::from_data(TensorData::new(v.clone(), [v.len()]), &device)
        };
        bn.running_mean = RunningState::new(t(&self.running_mean));
        bn.running_var = RunningState::new(t(&self.running_var));
    }

    /// Batch statistics of columns `0..C` of the `m` rows of `x` (row stride `width`), then
    /// the running-statistics update (unbiased variance, as PyTorch).
    fn stats(&mut self, x: &[f32], m: usize, width: usize) {
        let c = self.channels();
        // Sums of `x − K` and its square with `K` = the first row: shifting by a sample
        // keeps the one-pass variance accurate when |mean| ≫ σ.
        let shift: Vec<f32> = x[..c].to_vec();
        let sums = for_rows_acc(
            m,
            || take_zeroed(2 * c),
            |rows, acc, _| {
                let (s1, s2) = acc.split_at_mut(c);
                simd(
                    #[inline(always)]
                    || {
                        for p in rows.clone() {
                            let row = &x[p * width..p * width + c];
                            for (((a, b), v), k) in
                                s1.iter_mut().zip(s2.iter_mut()).zip(row).zip(&shift)
                            {
                                let d = v - k;
                                *a += d;
                                *b += d * d;
                            }
                        }
                    },
                )
            },
        );
        self.set_stats(&sums, &shift, m);
        give(sums);
    }

    /// Statistics from `Σ(x − K)` and `Σ(x − K)²` (`sums`, 2·C values) over `m` rows.
    fn set_stats(&mut self, sums: &[f32], shift: &[f32], m: usize) {
        let c = self.channels();
        self.mean.resize(c, 0.0);
        self.inv.resize(c, 0.0);
        let (mf, mom) = (m as f64, self.momentum);
        for ch in 0..c {
            let s1 = sums[ch] as f64 / mf;
            let var = (sums[c + ch] as f64 / mf - s1 * s1).max(0.0);
            let mean = shift[ch] as f64 + s1;
            self.mean[ch] = mean as f32;
            self.inv[ch] = (1.0 / (var + self.eps as f64).sqrt()) as f32;
            let unbiased = var * mf / (mf - 1.0).max(1.0);
            self.running_mean[ch] = (1.0 - mom) * self.running_mean[ch] + mom * mean as f32;
            self.running_var[ch] = (1.0 - mom) * self.running_var[ch] + mom * unbiased as f32;
        }
    }

    /// `y = x·scale + shift` with the batch statistics.
    fn affine(&self) -> (Vec<f32>, Vec<f32>) {
        let scale: Vec<f32> = self
            .gamma
            .value
            .iter()
            .zip(&self.inv)
            .map(|(g, i)| g * i)
            .collect();
        let shift = self
            .beta
            .value
            .iter()
            .zip(&self.mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        (scale, shift)
    }

    /// From `Σdy` and `Σdy·(x − mean)` per channel (2·C values) over `m` rows: accumulates `dγ`, `dβ`
    /// and returns `(A, B, C)` with `dx = A·dy + B + C·x`.
    fn finish(&mut self, sums: &[f32], m: usize) -> [Vec<f32>; 3] {
        let c = self.channels();
        let mf = m as f32;
        let (mut a, mut b, mut cc) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
        let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
        for ch in 0..c {
            let (sdy, sdyx) = (sums[ch], sums[c + ch]);
            let (mean, inv, g) = (self.mean[ch], self.inv[ch], self.gamma.value[ch]);
            let sdyxh = inv * sdyx;
            db[ch] = sdy;
            dg[ch] = sdyxh;
            a[ch] = g * inv;
            cc[ch] = -a[ch] * inv * sdyxh / mf;
            b[ch] = -a[ch] * sdy / mf - cc[ch] * mean;
        }
        self.gamma.accumulate(&dg);
        self.beta.accumulate(&db);
        [a, b, cc]
    }
}

/// `Σdy` and `Σdy·(x − mean)` of a row (added to `acc`). Centred: the uncentred `Σdy·x`
/// lost the difference to cancellation for channels whose mean is large against their
/// spread.
#[inline(always)]
fn bn_sums(dy: &[f32], x: &[f32], mean: &[f32], acc: &mut [f32]) {
    let c = dy.len();
    let (s1, s2) = acc.split_at_mut(c);
    for ((((a, b), d), x), m) in s1.iter_mut().zip(s2.iter_mut()).zip(dy).zip(x).zip(mean) {
        *a += d;
        *b += d * (x - m);
    }
}

struct Layer {
    cin: usize,
    norm1: Bn,
    /// 1×1 convolution `[cin, mid]`.
    w1: Weight,
    norm2: Bn,
    /// 3×3 convolution `[(ky, kx, mid), growth]`.
    w2: Weight,
    dropout: f32,
    // Saved: the 1×1 output, ReLU(BN2(·)) on a zero-bordered `[n, h+2, w+2, mid]` map, and
    // the dropout mask of the 32 new channels.
    z: Vec<f32>,
    padded: Vec<f32>,
    mask: Vec<u8>,
}

struct Attention {
    channels: usize,
    hidden: usize,
    /// `[C, hidden]` and `[hidden, C]`.
    fc1: Weight,
    fc2: Weight,
    /// 7×7 taps over the (mean, max) maps, `[(ky, kx), 2]`.
    spatial: Weight,
    saved: Vec<AttentionSaved>,
}

/// What CBAM's backward pass needs, per image.
#[derive(Default)]
struct AttentionSaved {
    mean: Vec<f32>,
    max: Vec<f32>,
    argmax: Vec<u32>,
    hidden_mean: Vec<f32>,
    hidden_max: Vec<f32>,
    att: Vec<f32>,
    maps: Vec<f32>,
    map_argmax: Vec<u32>,
    spatial: Vec<f32>,
}

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

struct Transition {
    norm: Bn,
    /// `[C, C/2]`.
    w: Weight,
    cout: usize,
    /// Input (CBAM's output) and the pooled ReLU(BN(·)) that multiplied `w`.
    input: Vec<f32>,
    pooled: Vec<f32>,
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

fn attention<B: Backend>(c: &Cbam<B>) -> Attention {
    let [hidden, channels, _, _] = c.channel_attention.fc1.weight.dims();
    let spatial = crate::fast::densenet::spatial_taps(c);
    Attention {
        channels,
        hidden,
        fc1: weight_matrix(&c.channel_attention.fc1),
        fc2: weight_matrix(&c.channel_attention.fc2),
        spatial: Weight::new(spatial),
        saved: Vec::new(),
    }
}

impl DenseNetTrainer {
    pub fn from_model<B: Backend>(m: &MyDenseNet<B>) -> Self {
        let blocks = m
            .blocks
            .iter()
            .map(|b| {
                let [mid, _, _, _] = b.layers[0].conv1.weight.dims();
                let [growth, _, _, _] = b.layers[0].conv2.weight.dims();
                let layers: Vec<Layer> = b
                    .layers
                    .iter()
                    .map(|l| Layer {
                        cin: l.conv1.weight.dims()[1],
                        norm1: Bn::from(&l.norm1),
                        w1: weight_matrix(&l.conv1),
                        norm2: Bn::from(&l.norm2),
                        w2: weight_matrix(&l.conv2),
                        dropout: l.dropout as f32,
                        z: Vec::new(),
                        padded: Vec::new(),
                        mask: Vec::new(),
                    })
                    .collect();
                let width = layers[0].cin + layers.len() * growth;
                Block {
                    layers,
                    growth,
                    mid,
                    width,
                    cbam: attention(&b.cbam),
                    buf: Vec::new(),
                    geometry: (0, 0, 0),
                }
            })
            .collect();
        let transitions = m
            .transitions
            .iter()
            .map(|t| Transition {
                norm: Bn::from(&t.norm),
                w: weight_matrix(&t.conv),
                cout: t.conv.weight.dims()[0],
                input: Vec::new(),
                pooled: Vec::new(),
            })
            .collect();
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
                v.extend([
                    &mut l.norm1.gamma,
                    &mut l.norm1.beta,
                    &mut l.w1,
                    &mut l.norm2.gamma,
                    &mut l.norm2.beta,
                    &mut l.w2,
                ]);
            }
            v.extend([&mut b.cbam.fc1, &mut b.cbam.fc2, &mut b.cbam.spatial]);
        }
        for t in &mut self.transitions {
            v.extend([&mut t.norm.gamma, &mut t.norm.beta, &mut t.w]);
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
                l.norm1.write_to(&mut t.norm1);
                set_param(
                    &mut t.conv1.weight,
                    crate::fast::conv_weight(&l.w1.value, ours.mid, l.cin, 1),
                );
                l.norm2.write_to(&mut t.norm2);
                set_param(
                    &mut t.conv2.weight,
                    crate::fast::conv_weight(&l.w2.value, ours.growth, ours.mid, 3),
                );
            }
            let a = &ours.cbam;
            let ca = &mut theirs.cbam.channel_attention;
            set_param(
                &mut ca.fc1.weight,
                crate::fast::conv_weight(&a.fc1.value, a.hidden, a.channels, 1),
            );
            set_param(
                &mut ca.fc2.weight,
                crate::fast::conv_weight(&a.fc2.value, a.channels, a.hidden, 1),
            );
            let mut s = vec![0.0; 98];
            for ch in 0..2 {
                for t in 0..49 {
                    s[ch * 49 + t] = a.spatial.value[t * 2 + ch];
                }
            }
            set_param(&mut theirs.cbam.spatial_attention.conv.weight, s);
        }
        for (ours, theirs) in self.transitions.iter().zip(&mut m.transitions) {
            ours.norm.write_to(&mut theirs.norm);
            let cin = ours.norm.channels();
            set_param(
                &mut theirs.conv.weight,
                crate::fast::conv_weight(&ours.w.value, ours.cout, cin, 1),
            );
        }
        self.norm5.write_to(&mut m.norm5);
        m
    }

    pub fn forward(&mut self, x: &[f32], n: usize, h: usize, w: usize, seed: u64) -> Vec<f32> {
        assert_eq!(x.len(), n * 3 * h * w, "input is n × 3 × h × w");
        let mut img = take(x.len());
        img.copy_from_slice(&to_nhwc(x, n, 3, h * w));
        // Stem: conv → BN → ReLU → max-pool into block 1's buffer.
        let z = self.conv0.forward(img, n, h, w);
        let (sh, sw) = self.conv0.out_size(h, w);
        let c0 = self.conv0.cout;
        self.norm0.stats(&z, n * sh * sw, c0);
        let (oh, ow) = ((sh + 2 - 3) / 2 + 1, (sw + 2 - 3) / 2 + 1);
        let width = self.blocks[0].width;
        let mut buf = take(n * oh * ow * width);
        max_pool_forward(
            &z,
            &self.norm0.affine(),
            (n, sh, sw, c0),
            (oh, ow),
            &mut buf,
            width,
            &mut self.pool_argmax,
        );
        give(std::mem::replace(&mut self.stem_z, z));
        self.stem_geometry = (n, sh, sw);
        let (mut h, mut w) = (oh, ow);
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
        // Stem: max-pool → ReLU → BN → conv weights.
        let dbuf = d_block_in.expect("block 1's input gradient");
        let (n, sh, sw) = self.stem_geometry;
        let c0 = self.conv0.cout;
        let width = self.blocks[0].width;
        let mut dz = take_zeroed(n * sh * sw * c0);
        for (o, &src) in self.pool_argmax.iter().enumerate() {
            let (p, ch) = (o / c0, o % c0);
            dz[src as usize * c0 + ch] += dbuf[p * width + ch];
        }
        give(dbuf);
        let (scale, shift) = self.norm0.affine();
        let mean0 = self.norm0.mean.clone();
        let z = &self.stem_z;
        let sums = for_rows_acc(
            n * sh * sw,
            || take_zeroed(2 * c0),
            |rows, acc, _| {
                let part = &dz[rows.start * c0..rows.end * c0];
                let mut masked = vec![0.0; c0];
                for (i, drow) in part.chunks_exact(c0).enumerate() {
                    let zr = &z[(rows.start + i) * c0..][..c0];
                    for ch in 0..c0 {
                        masked[ch] = if zr[ch] * scale[ch] + shift[ch] > 0.0 {
                            drow[ch]
                        } else {
                            0.0
                        };
                    }
                    bn_sums(&masked, zr, &mean0, acc);
                }
            },
        );
        let [a, b, cc] = self.norm0.finish(&sums, n * sh * sw);
        give(sums);
        for (drow, zr) in dz.chunks_exact_mut(c0).zip(z.chunks_exact(c0)) {
            for ch in 0..c0 {
                let dy = if zr[ch] * scale[ch] + shift[ch] > 0.0 {
                    drow[ch]
                } else {
                    0.0
                };
                drow[ch] = a[ch] * dy + b[ch] + cc[ch] * zr[ch];
            }
        }
        self.conv0.backward(&dz, false);
        give(dz);
    }
}

/// ReLU(BN(z)) then 3×3/2 max-pool (pad 1) into the first `c` channels of `out` (row width
/// `width`), recording the source pixel of every maximum.
fn max_pool_forward(
    z: &[f32],
    (scale, shift): &(Vec<f32>, Vec<f32>),
    (n, h, w, c): (usize, usize, usize, usize),
    (oh, ow): (usize, usize),
    out: &mut [f32],
    width: usize,
    argmax: &mut Vec<u32>,
) {
    argmax.resize(n * oh * ow * c, 0);
    out.par_chunks_mut(oh * ow * width)
        .zip(argmax.par_chunks_mut(oh * ow * c))
        .enumerate()
        .for_each(|(img, (out, arg))| {
            let mut v = vec![0.0f32; c];
            for oy in 0..oh {
                for ox in 0..ow {
                    let o = oy * ow + ox;
                    let dst = &mut out[o * width..o * width + c];
                    let am = &mut arg[o * c..(o + 1) * c];
                    dst.fill(f32::NEG_INFINITY);
                    for ky in 0..3 {
                        let iy = (oy * 2 + ky) as isize - 1;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..3 {
                            let ix = (ox * 2 + kx) as isize - 1;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            let p = (img * h + iy as usize) * w + ix as usize;
                            let src = &z[p * c..(p + 1) * c];
                            for ch in 0..c {
                                v[ch] = (src[ch] * scale[ch] + shift[ch]).max(0.0);
                            }
                            for ch in 0..c {
                                // Strictly greater: the first maximum in window order wins.
                                if v[ch] > dst[ch] {
                                    dst[ch] = v[ch];
                                    am[ch] = p as u32;
                                }
                            }
                        }
                    }
                }
            }
        });
}

/// Positions of the 3×3 convolution's run on the zero-bordered map: for each image the
/// flattened positions `pw+1 ..= h·pw + w` cover every interior pixel (border columns in
/// between are computed and dropped); tap `(ky, kx)` reads position `q + off(ky, kx)`.
fn tap_offset(t: usize, pw: usize) -> isize {
    (t / 3) as isize * pw as isize + (t % 3) as isize - pw as isize - 1
}

/// Run `f(img, positions, acc, parallel)` over pieces of every image's run (each with a fresh
/// accumulator from `init`) and return the accumulators' sum (see `accumulate`).
fn for_runs_acc(
    n: usize,
    (h, w): (usize, usize),
    init: impl Fn() -> Vec<f32> + Sync,
    f: impl Fn(usize, std::ops::Range<usize>, &mut Vec<f32>, bool) + Sync,
) -> Vec<f32> {
    let pw = w + 2;
    let (start, end) = (pw + 1, h * pw + w + 1);
    let len = end - start;
    let (rows, par) = match crate::fast::chunk_rows(n * len) {
        Some(r) => (r, false),
        None => (len, true),
    };
    let per = len.div_ceil(rows);
    let pieces: Vec<(usize, std::ops::Range<usize>)> = (0..n * per)
        .map(|i| {
            let (img, k) = (i / per, i % per);
            (img, start + k * rows..(start + (k + 1) * rows).min(end))
        })
        .collect();
    super::accumulate(&pieces, par, init, |(img, q), acc, par| {
        f(*img, q.clone(), acc, par)
    })
}

/// One dense layer in training: reads channels `0..cin` of `buf`, writes `cin..cin+growth`.
fn dense_layer_forward(
    l: &mut Layer,
    buf: &mut [f32],
    (n, h, w): (usize, usize, usize),
    width: usize,
    mid: usize,
    growth: usize,
    seed: u64,
) {
    let m = n * h * w;
    let cin = l.cin;
    l.norm1.stats(buf, m, width);
    let (sc1, sh1) = l.norm1.affine();
    // BN1 → ReLU → 1×1 conv into `z`.
    l.z.resize(m * mid, 0.0);
    let zp = SharedMut(l.z.as_mut_ptr());
    let src: &[f32] = buf;
    let w1 = &l.w1.value;
    for_rows(m, |rows, par| {
        let r = rows.len();
        let mut t = crate::fast::scratch(r * cin);
        simd(
            #[inline(always)]
            || {
                for (d, p) in t.chunks_exact_mut(cin).zip(rows.clone()) {
                    let s = &src[p * width..p * width + cin];
                    for (((d, s), a), b) in d.iter_mut().zip(s).zip(&sc1).zip(&sh1) {
                        *d = (s * a + b).max(0.0);
                    }
                }
            },
        );
        // SAFETY: each chunk owns its rows of `z`.
        let z = unsafe { std::slice::from_raw_parts_mut(zp.at(rows.start * mid), r * mid) };
        crate::fast::matmul(
            (r, mid, cin),
            &t,
            cin,
            w1,
            mid,
            z.as_mut_ptr(),
            mid,
            false,
            par,
        );
    });
    // BN2's statistics in a pass of their own, with shifted sums (uncentred `Σz²/m − mean²`
    // cancels for channels whose mean is large against their spread).
    l.norm2.stats(&l.z, m, mid);
    let (sc2, sh2) = l.norm2.affine();
    // ReLU(BN2(z)) into the interior of the zero-bordered map.
    let (ph, pw) = (h + 2, w + 2);
    l.padded.resize(n * ph * pw * mid, 0.0);
    l.padded.fill(0.0);
    let pp = SharedMut(l.padded.as_mut_ptr());
    let z = &l.z;
    for_rows(m, |rows, _| {
        simd(
            #[inline(always)]
            || {
                for p in rows.clone() {
                    let (img, rest) = (p / (h * w), p % (h * w));
                    let (y, x) = (rest / w, rest % w);
                    // SAFETY: one interior row per pixel; each chunk owns its pixels.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            pp.at(((img * ph + y + 1) * pw + x + 1) * mid),
                            mid,
                        )
                    };
                    for (((d, v), a), b) in dst
                        .iter_mut()
                        .zip(&z[p * mid..(p + 1) * mid])
                        .zip(&sc2)
                        .zip(&sh2)
                    {
                        *d = (v * a + b).max(0.0);
                    }
                }
            },
        )
    });
    // 3×3 convolution: nine shifted products per piece of the run.
    let mut out = take(m * growth);
    let op = SharedMut(out.as_mut_ptr());
    let (padded, w2) = (&l.padded, &l.w2.value);
    for_runs_acc(n, (h, w), Vec::new, |img, q, _, par| {
        let r = q.len();
        let mut acc = crate::fast::scratch(r * growth);
        let base = img * ph * pw;
        for t in 0..9 {
            let s = (base + q.start) as isize + tap_offset(t, pw);
            gemm_strided(
                (r, growth, mid),
                (&padded[s as usize * mid..], mid, 1),
                (&w2[t * mid * growth..(t + 1) * mid * growth], growth, 1),
                (acc.as_mut_ptr(), growth, 1),
                t > 0,
                par,
            );
        }
        for (row, qq) in acc.chunks_exact(growth).zip(q) {
            let (y, x) = (qq / pw, qq % pw);
            if (1..=w).contains(&x) {
                let p = (img * h + y - 1) * w + x - 1;
                // SAFETY: each output pixel belongs to one piece.
                unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), op.at(p * growth), growth) };
            }
        }
    });
    dropout_forward(&mut out, &mut l.mask, l.dropout, seed);
    for (dst, src) in buf.chunks_exact_mut(width).zip(out.chunks_exact(growth)) {
        dst[cin..cin + growth].copy_from_slice(src);
    }
    give(out);
}

/// Backward of `dense_layer_forward`: reads the gradient of channels `cin..cin+growth` of
/// `dbuf`, adds the input gradient into channels `0..cin`.
fn dense_layer_backward(
    l: &mut Layer,
    buf: &[f32],
    dbuf: &mut [f32],
    (n, h, w): (usize, usize, usize),
    width: usize,
    mid: usize,
    growth: usize,
) {
    let m = n * h * w;
    let cin = l.cin;
    let (ph, pw) = (h + 2, w + 2);
    // Output gradient (through dropout) on a zero-bordered map like the input's.
    let mut dout = take(m * growth);
    for (d, s) in dout.chunks_exact_mut(growth).zip(dbuf.chunks_exact(width)) {
        d.copy_from_slice(&s[cin..cin + growth]);
    }
    dropout_backward(&mut dout, &l.mask, l.dropout);
    let mut dpad = take_zeroed(n * ph * pw * growth);
    for (p, d) in dout.chunks_exact(growth).enumerate() {
        let (img, rest) = (p / (h * w), p % (h * w));
        let (y, x) = (rest / w, rest % w);
        let at = ((img * ph + y + 1) * pw + x + 1) * growth;
        dpad[at..at + growth].copy_from_slice(d);
    }
    give(dout);
    // 3×3 convolution: tap gradients, and the gradient of ReLU(BN2(z)) masked by the ReLU,
    // with BN2's two sums on the way.
    let mut dz = take(m * mid);
    let dzp = SharedMut(dz.as_mut_ptr());
    let (padded, w2, z) = (&l.padded, &l.w2.value, &l.z);
    let (sc2, sh2) = l.norm2.affine();
    let mean2 = &l.norm2.mean.clone();
    let acc = for_runs_acc(
        n,
        (h, w),
        || take_zeroed(9 * mid * growth + 2 * mid),
        |img, q, acc, par| {
            let r = q.len();
            let base = img * ph * pw;
            let (dw, sums) = acc.split_at_mut(9 * mid * growth);
            let d = &dpad[(base + q.start) * growth..(base + q.end) * growth];
            let mut da = crate::fast::scratch(r * mid);
            for t in 0..9 {
                let off = tap_offset(t, pw);
                let s = ((base + q.start) as isize + off) as usize;
                // dW[t] += a2[q + off]ᵀ · d[q]
                gemm_strided(
                    (mid, growth, r),
                    (&padded[s * mid..], 1, mid),
                    (d, growth, 1),
                    (dw[t * mid * growth..].as_mut_ptr(), growth, 1),
                    true,
                    par,
                );
                // da[q] += d[q − off] · W[t]ᵀ
                let s = ((base + q.start) as isize - off) as usize;
                gemm_strided(
                    (r, mid, growth),
                    (&dpad[s * growth..], growth, 1),
                    (&w2[t * mid * growth..(t + 1) * mid * growth], 1, growth),
                    (da.as_mut_ptr(), mid, 1),
                    t > 0,
                    par,
                );
            }
            simd(
                #[inline(always)]
                || {
                    for (row, qq) in da.chunks_exact(mid).zip(q) {
                        let (y, x) = (qq / pw, qq % pw);
                        if !(1..=w).contains(&x) {
                            continue;
                        }
                        let p = (img * h + y - 1) * w + x - 1;
                        // SAFETY: each pixel belongs to one piece.
                        let dst = unsafe { std::slice::from_raw_parts_mut(dzp.at(p * mid), mid) };
                        let zr = &z[p * mid..(p + 1) * mid];
                        for ((((d, g), zv), a), b) in
                            dst.iter_mut().zip(row).zip(zr).zip(&sc2).zip(&sh2)
                        {
                            *d = if zv * a + b > 0.0 { *g } else { 0.0 };
                        }
                        bn_sums(dst, zr, mean2, sums);
                    }
                },
            );
        },
    );
    l.w2.accumulate(&acc[..9 * mid * growth]);
    let [a2, b2, c2] = l.norm2.finish(&acc[9 * mid * growth..], m);
    give(acc);
    give(dpad);
    // BN2's input gradient → 1×1 convolution (weights from the recomputed ReLU(BN1(x)),
    // input gradient masked by that ReLU) with BN1's two sums on the way.
    let (sc1, sh1) = l.norm1.affine();
    let mean1 = &l.norm1.mean.clone();
    let mut t_all = take(m * cin);
    let tp = SharedMut(t_all.as_mut_ptr());
    let w1 = &l.w1.value;
    let acc = for_rows_acc(
        m,
        || take_zeroed(cin * mid + 2 * cin),
        |rows, acc, par| {
            let r = rows.len();
            // SAFETY: each chunk owns its rows of `dz` and `t_all`.
            let g = unsafe { std::slice::from_raw_parts_mut(dzp.at(rows.start * mid), r * mid) };
            let tr = unsafe { std::slice::from_raw_parts_mut(tp.at(rows.start * cin), r * cin) };
            let mut a1 = crate::fast::scratch(r * cin);
            simd(
                #[inline(always)]
                || {
                    for (i, gr) in g.chunks_exact_mut(mid).enumerate() {
                        let zr = &z[(rows.start + i) * mid..][..mid];
                        for ((((d, zv), a), b), c) in
                            gr.iter_mut().zip(zr).zip(&a2).zip(&b2).zip(&c2)
                        {
                            *d = a * *d + b + c * zv;
                        }
                    }
                    for (d, p) in a1.chunks_exact_mut(cin).zip(rows.clone()) {
                        let s = &buf[p * width..p * width + cin];
                        for (((d, s), a), b) in d.iter_mut().zip(s).zip(&sc1).zip(&sh1) {
                            *d = (s * a + b).max(0.0);
                        }
                    }
                },
            );
            let (dw1, sums) = acc.split_at_mut(cin * mid);
            gemm_strided(
                (cin, mid, r),
                (&a1, 1, cin),
                (g, mid, 1),
                (dw1.as_mut_ptr(), mid, 1),
                true,
                par,
            );
            gemm_strided(
                (r, cin, mid),
                (g, mid, 1),
                (w1, 1, mid),
                (tr.as_mut_ptr(), cin, 1),
                false,
                par,
            );
            simd(
                #[inline(always)]
                || {
                    for (i, (tr, ar)) in tr
                        .chunks_exact_mut(cin)
                        .zip(a1.chunks_exact(cin))
                        .enumerate()
                    {
                        for (t, a) in tr.iter_mut().zip(ar) {
                            if *a <= 0.0 {
                                *t = 0.0;
                            }
                        }
                        let p = rows.start + i;
                        bn_sums(tr, &buf[p * width..p * width + cin], mean1, sums);
                    }
                },
            );
        },
    );
    l.w1.accumulate(&acc[..cin * mid]);
    let [a1, b1, c1] = l.norm1.finish(&acc[cin * mid..], m);
    give(acc);
    give(dz);
    // BN1's input gradient, added into the channels this layer read.
    let dp = SharedMut(dbuf.as_mut_ptr());
    let t_ref = &t_all;
    for_rows(m, |rows, _| {
        simd(
            #[inline(always)]
            || {
                for p in rows.clone() {
                    // SAFETY: each chunk owns its rows of `dbuf`.
                    let d = unsafe { std::slice::from_raw_parts_mut(dp.at(p * width), cin) };
                    let x = &buf[p * width..p * width + cin];
                    let t = &t_ref[p * cin..(p + 1) * cin];
                    for (((((d, t), x), a), b), c) in
                        d.iter_mut().zip(t).zip(x).zip(&a1).zip(&b1).zip(&c1)
                    {
                        *d += a * t + b + c * x;
                    }
                }
            },
        )
    });
    give(t_all);
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + super::exp(-v))
}

/// CBAM in training, image by image: `y = x ⊙ att_c ⊙ att_s`.
fn cbam_forward(a: &mut Attention, x: &[f32], y: &mut [f32], (n, h, w): (usize, usize, usize)) {
    let (c, hw, hid) = (a.channels, h * w, a.hidden);
    a.saved.resize_with(n, Default::default);
    let (fc1, fc2, spatial) = (&a.fc1.value, &a.fc2.value, &a.spatial.value);
    a.saved
        .par_iter_mut()
        .zip(y.par_chunks_mut(hw * c))
        .enumerate()
        .for_each(|(img, (s, y))| {
            let x = &x[img * hw * c..(img + 1) * hw * c];
            s.mean = vec![0.0; c];
            s.max = vec![f32::NEG_INFINITY; c];
            s.argmax = vec![0; c];
            let mut total = vec![0.0f64; c];
            for (p, r) in x.chunks_exact(c).enumerate() {
                for (((mean, max), arg), v) in total
                    .iter_mut()
                    .zip(s.max.iter_mut())
                    .zip(s.argmax.iter_mut())
                    .zip(r)
                {
                    *mean += *v as f64;
                    if *v > *max {
                        *max = *v;
                        *arg = p as u32;
                    }
                }
            }
            s.mean = total.iter().map(|v| (v / hw as f64) as f32).collect();
            let mlp_hidden = |d: &[f32]| -> Vec<f32> {
                let mut o = vec![0.0f32; hid];
                crate::fast::matmul(
                    (1, hid, c),
                    d,
                    c,
                    fc1,
                    hid,
                    o.as_mut_ptr(),
                    hid,
                    false,
                    false,
                );
                o.iter_mut().for_each(|v| *v = v.max(0.0));
                o
            };
            s.hidden_mean = mlp_hidden(&s.mean);
            s.hidden_max = mlp_hidden(&s.max);
            let hsum: Vec<f32> = s
                .hidden_mean
                .iter()
                .zip(&s.hidden_max)
                .map(|(a, b)| a + b)
                .collect();
            let mut att = vec![0.0f32; c];
            crate::fast::matmul(
                (1, c, hid),
                &hsum,
                hid,
                fc2,
                c,
                att.as_mut_ptr(),
                c,
                false,
                false,
            );
            att.iter_mut().for_each(|v| *v = sigmoid(*v));
            s.maps = vec![0.0; hw * 2];
            s.map_argmax = vec![0; hw];
            for (p, (yr, xr)) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)).enumerate() {
                let (mut best, mut arg, mut total) = (f32::NEG_INFINITY, 0u32, 0.0f32);
                for ch in 0..c {
                    let v = xr[ch] * att[ch];
                    yr[ch] = v;
                    total += v;
                    if v > best {
                        best = v;
                        arg = ch as u32;
                    }
                }
                s.maps[2 * p] = total / c as f32;
                s.maps[2 * p + 1] = best;
                s.map_argmax[p] = arg;
            }
            let mut cols = vec![0.0f32; hw * 98];
            im2col(&s.maps, (h, w, 2), (h, w), 7, 1, 3, 0..hw, &mut cols);
            let mut pre = vec![0.0f32; hw];
            crate::fast::matmul(
                (hw, 1, 98),
                &cols,
                98,
                spatial,
                1,
                pre.as_mut_ptr(),
                1,
                false,
                false,
            );
            s.spatial = pre.iter().map(|v| sigmoid(*v)).collect();
            for (yr, g) in y.chunks_exact_mut(c).zip(&s.spatial) {
                yr.iter_mut().for_each(|v| *v *= g);
            }
            s.att = att;
        });
}

/// Backward of `cbam_forward`: from `dy`, writes the input gradient into `dx` (full width,
/// overwritten) and accumulates the MLP and spatial taps' gradients.
fn cbam_backward(
    a: &mut Attention,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    (_, h, w): (usize, usize, usize),
) {
    let (c, hw, hid) = (a.channels, h * w, a.hidden);
    let (fc1, fc2, spatial) = (&a.fc1.value, &a.fc2.value, &a.spatial.value);
    let saved = &a.saved;
    let grads: Vec<Vec<f32>> = dx
        .par_chunks_mut(hw * c)
        .enumerate()
        .map(|(img, dx)| {
            let s = &saved[img];
            let x = &x[img * hw * c..(img + 1) * hw * c];
            let dy = &dy[img * hw * c..(img + 1) * hw * c];
            let mut g = vec![0.0f32; c * hid + hid * c + 98];
            // Spatial attention: dx1 = dy·sa, d(pre) = Σ_c dy·x1 · sa(1 − sa).
            let mut dpre = vec![0.0f32; hw];
            for p in 0..hw {
                let (dr, xr, o) = (
                    &dy[p * c..(p + 1) * c],
                    &x[p * c..(p + 1) * c],
                    &mut dx[p * c..(p + 1) * c],
                );
                let sa = s.spatial[p];
                let mut dsa = 0.0f32;
                for ch in 0..c {
                    dsa += dr[ch] * xr[ch] * s.att[ch];
                    o[ch] = dr[ch] * sa;
                }
                dpre[p] = dsa * sa * (1.0 - sa);
            }
            let mut cols = vec![0.0f32; hw * 98];
            im2col(&s.maps, (h, w, 2), (h, w), 7, 1, 3, 0..hw, &mut cols);
            let gs = &mut g[2 * c * hid..];
            gemm_strided(
                (98, 1, hw),
                (&cols, 1, 98),
                (&dpre, 1, 1),
                (gs.as_mut_ptr(), 1, 1),
                true,
                false,
            );
            // Gradient of the (mean, max) maps: the transposed 7×7 correlation.
            let mut dmaps = vec![0.0f32; hw * 2];
            for y in 0..h {
                for xx in 0..w {
                    let d = dpre[y * w + xx];
                    if d == 0.0 {
                        continue;
                    }
                    for ky in 0..7 {
                        let iy = y as isize + ky as isize - 3;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..7 {
                            let ix = xx as isize + kx as isize - 3;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            let q = iy as usize * w + ix as usize;
                            let t = ky * 7 + kx;
                            dmaps[2 * q] += d * spatial[2 * t];
                            dmaps[2 * q + 1] += d * spatial[2 * t + 1];
                        }
                    }
                }
            }
            // f64: a sum over every pixel of the image.
            let mut datt = vec![0.0f64; c];
            for p in 0..hw {
                let o = &mut dx[p * c..(p + 1) * c];
                let dm = dmaps[2 * p] / c as f32;
                o.iter_mut().for_each(|v| *v += dm);
                o[s.map_argmax[p] as usize] += dmaps[2 * p + 1];
                // Channel attention: dx = dx1·att, d(att) = Σ_p dx1·x.
                let xr = &x[p * c..(p + 1) * c];
                for ch in 0..c {
                    datt[ch] += (o[ch] * xr[ch]) as f64;
                    o[ch] *= s.att[ch];
                }
            }
            let ds: Vec<f32> = datt
                .iter()
                .zip(&s.att)
                .map(|(d, a)| *d as f32 * a * (1.0 - a))
                .collect();
            // fc2 saw hidden_mean + hidden_max.
            let hsum: Vec<f32> = s
                .hidden_mean
                .iter()
                .zip(&s.hidden_max)
                .map(|(a, b)| a + b)
                .collect();
            let (g1, rest) = g.split_at_mut(c * hid);
            let g2 = &mut rest[..hid * c];
            gemm_strided(
                (hid, c, 1),
                (&hsum, 1, 1),
                (&ds, c, 1),
                (g2.as_mut_ptr(), c, 1),
                true,
                false,
            );
            let mut dh = vec![0.0f32; hid];
            gemm_strided(
                (1, hid, c),
                (&ds, c, 1),
                (fc2, 1, c),
                (dh.as_mut_ptr(), hid, 1),
                false,
                false,
            );
            for (is_mean, src, hidden) in [
                (true, &s.mean, &s.hidden_mean),
                (false, &s.max, &s.hidden_max),
            ] {
                let dhm: Vec<f32> = dh
                    .iter()
                    .zip(hidden)
                    .map(|(d, h)| if *h > 0.0 { *d } else { 0.0 })
                    .collect();
                gemm_strided(
                    (c, hid, 1),
                    (src, 1, 1),
                    (&dhm, hid, 1),
                    (g1.as_mut_ptr(), hid, 1),
                    true,
                    false,
                );
                let mut din = vec![0.0f32; c];
                gemm_strided(
                    (1, c, hid),
                    (&dhm, hid, 1),
                    (fc1, 1, hid),
                    (din.as_mut_ptr(), c, 1),
                    false,
                    false,
                );
                if is_mean {
                    for p in 0..hw {
                        for (o, d) in dx[p * c..(p + 1) * c].iter_mut().zip(&din) {
                            *o += d / hw as f32;
                        }
                    }
                } else {
                    for ch in 0..c {
                        dx[s.argmax[ch] as usize * c + ch] += din[ch];
                    }
                }
            }
            g
        })
        .collect();
    let g = reduce(grads);
    a.fc1.accumulate(&g[..c * hid]);
    a.fc2.accumulate(&g[c * hid..2 * c * hid]);
    a.spatial.accumulate(&g[2 * c * hid..]);
}

/// BN → ReLU → 2×2 average pool → 1×1 convolution into the first `cout` channels of `out`.
fn transition_forward(
    t: &mut Transition,
    x: Vec<f32>,
    (n, h, w): (usize, usize, usize),
    out: &mut [f32],
    width: usize,
) {
    let c = t.norm.channels();
    t.norm.stats(&x, n * h * w, c);
    let (scale, shift) = t.norm.affine();
    let (oh, ow) = (h / 2, w / 2);
    let m = n * oh * ow;
    t.pooled.resize(m * c, 0.0);
    let pp = SharedMut(t.pooled.as_mut_ptr());
    let op = SharedMut(out.as_mut_ptr());
    let wm = &t.w.value;
    let cout = t.cout;
    let xs = &x;
    for_rows(m, |rows, par| {
        // SAFETY: each chunk owns its rows of `pooled` and of `out`.
        let d = unsafe { std::slice::from_raw_parts_mut(pp.at(rows.start * c), rows.len() * c) };
        simd(
            #[inline(always)]
            || {
                d.fill(0.0);
                for (r, p) in rows.clone().enumerate() {
                    let (img, rest) = (p / (oh * ow), p % (oh * ow));
                    let (oy, ox) = (rest / ow, rest % ow);
                    let dr = &mut d[r * c..(r + 1) * c];
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let s = &xs[((img * h + oy * 2 + dy) * w + ox * 2 + dx) * c..][..c];
                        for (((d, s), a), b) in dr.iter_mut().zip(s).zip(&scale).zip(&shift) {
                            *d += (s * a + b).max(0.0);
                        }
                    }
                    dr.iter_mut().for_each(|v| *v *= 0.25);
                }
            },
        );
        crate::fast::matmul(
            (rows.len(), cout, c),
            d,
            c,
            wm,
            cout,
            op.at(rows.start * width),
            width,
            false,
            par,
        );
    });
    give(std::mem::replace(&mut t.input, x));
}

/// Backward of `transition_forward` from the gradient in the first `cout` channels of the
/// next block's input gradient `d_next`; returns the gradient of the transition's input.
fn transition_backward(
    t: &mut Transition,
    d_next: &[f32],
    (n, oh, ow): (usize, usize, usize),
    width: usize,
    (_, h, w): (usize, usize, usize),
) -> Vec<f32> {
    let c = t.norm.channels();
    let cout = t.cout;
    let m = n * oh * ow;
    // dW = pooledᵀ · d; d(pooled) = d · Wᵀ.
    let mut dpool = take(m * c);
    let dpp = SharedMut(dpool.as_mut_ptr());
    let (pooled, wm) = (&t.pooled, &t.w.value);
    let acc = for_rows_acc(
        m,
        || take_zeroed(c * cout),
        |rows, acc, par| {
            let r = rows.len();
            let d = &d_next[rows.start * width..];
            gemm_strided(
                (c, cout, r),
                (&pooled[rows.start * c..], 1, c),
                (d, width, 1),
                (acc.as_mut_ptr(), cout, 1),
                true,
                par,
            );
            gemm_strided(
                (r, c, cout),
                (d, width, 1),
                (wm, 1, cout),
                (dpp.at(rows.start * c), c, 1),
                false,
                par,
            );
        },
    );
    t.w.accumulate(&acc);
    give(acc);
    // Spread over the 2×2 windows, through the ReLU, with BN's sums.
    let (scale, shift) = t.norm.affine();
    let mean = t.norm.mean.clone();
    let x = &t.input;
    let mut dx = take_zeroed(n * h * w * c);
    let dxp = SharedMut(dx.as_mut_ptr());
    let sums = for_rows_acc(
        m,
        || take_zeroed(2 * c),
        |rows, acc, _| {
            simd(
                #[inline(always)]
                || {
                    for p in rows.clone() {
                        let (img, rest) = (p / (oh * ow), p % (oh * ow));
                        let (oy, ox) = (rest / ow, rest % ow);
                        let g = &dpool[p * c..(p + 1) * c];
                        for (dy, dxx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            let q = (img * h + oy * 2 + dy) * w + ox * 2 + dxx;
                            let xr = &x[q * c..(q + 1) * c];
                            // SAFETY: the 2×2 windows of the chunk's pooled pixels are its own.
                            let o = unsafe { std::slice::from_raw_parts_mut(dxp.at(q * c), c) };
                            for ((((o, g), xv), a), b) in
                                o.iter_mut().zip(g).zip(xr).zip(&scale).zip(&shift)
                            {
                                *o = if xv * a + b > 0.0 { 0.25 * g } else { 0.0 };
                            }
                            bn_sums(o, xr, &mean, acc);
                        }
                    }
                },
            )
        },
    );
    give(dpool);
    let [a, b, cc] = t.norm.finish(&sums, n * h * w);
    give(sums);
    for_rows(n * h * w, |rows, _| {
        simd(
            #[inline(always)]
            || {
                for q in rows.clone() {
                    // SAFETY: each chunk owns its rows.
                    let o = unsafe { std::slice::from_raw_parts_mut(dxp.at(q * c), c) };
                    let xr = &x[q * c..(q + 1) * c];
                    for ((((o, xv), a), b), cc) in o.iter_mut().zip(xr).zip(&a).zip(&b).zip(&cc) {
                        *o = a * *o + b + cc * xv;
                    }
                }
            },
        )
    });
    dx
}
