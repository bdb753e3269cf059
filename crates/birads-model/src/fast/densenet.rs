//! MyDenseNet inference, channels last. Each dense block writes into one buffer as wide as
//! the block's output, so the concatenations are free: a layer reads the first `c_in`
//! channels and writes its 32 new ones beside them. BatchNorm after a convolution is folded
//! into it; a transition pools before its 1×1 convolution (both are linear, so the order
//! can change) and multiplies 4× fewer rows.

use burn::prelude::*;

use super::{
    conv_matrix, for_rows, global_mean, im2col, matmul, max, scratch, simd, sum, to_nhwc, values,
    Affine, Dense, Norm, SharedMut,
};
use crate::blocks::{BatchNorm2d, Cbam};
use crate::densenet::MyDenseNet;

const HEAD_EPS: f32 = 1e-5;

struct Layer {
    cin: usize,
    norm1: Affine,
    /// 1×1 convolution `[cin, mid]` with norm2 folded in (`bias1`).
    w1: Vec<f32>,
    bias1: Vec<f32>,
    /// 3×3 convolution `[(3, 3, mid), growth]`.
    w2: Vec<f32>,
}

struct Attention {
    channels: usize,
    hidden: usize,
    /// Channel MLP `[C, hidden]` and `[hidden, C]`, no biases.
    fc1: Vec<f32>,
    fc2: Vec<f32>,
    /// Spatial 7×7 taps for the (mean, max) maps: `[(ky, kx), 2]`.
    spatial: Vec<f32>,
}

struct Block {
    layers: Vec<Layer>,
    growth: usize,
    mid: usize,
    cbam: Attention,
}

struct Transition {
    norm: Affine,
    /// `[C, C/2]`.
    w: Vec<f32>,
    cout: usize,
}

/// MyDenseNet's evaluation-mode forward pass on the CPU (see the module docs of `fast`).
pub struct FastDenseNet {
    /// conv0 (7×7/2, pad 3) with norm0 folded in, `[(7, 7, 3), C0]`.
    conv0: Vec<f32>,
    bias0: Vec<f32>,
    c0: usize,
    blocks: Vec<Block>,
    transitions: Vec<Transition>,
    norm5: Affine,
    head_norm: Norm,
    fc1: Dense,
    fc2: Dense,
    shared: Dense,
    task_proj: Vec<Dense>,
    task_fc1: Vec<Dense>,
    task_fc2: Vec<Dense>,
}

fn affine<B: Backend>(bn: &BatchNorm2d<B>) -> Affine {
    let (g, b) = (values(bn.weight.val()), values(bn.bias.val()));
    let (mean, var) = (
        values(bn.running_mean.value()),
        values(bn.running_var.value()),
    );
    let scale: Vec<f32> = g
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + bn.epsilon as f32).sqrt())
        .collect();
    let shift = b
        .iter()
        .zip(&mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    Affine { scale, shift }
}

/// A bias-free convolution followed by an affine map, as one matrix and a bias.
fn fold(w: Vec<f32>, cout: usize, a: &Affine) -> (Vec<f32>, Vec<f32>) {
    let mut w = w;
    for row in w.chunks_exact_mut(cout) {
        for (v, s) in row.iter_mut().zip(&a.scale) {
            *v *= s;
        }
    }
    (w, a.shift.clone())
}

fn attention<B: Backend>(c: &Cbam<B>) -> Attention {
    let w1 = &c.channel_attention.fc1.weight; // [hidden, C, 1, 1]
    let [hidden, channels, _, _] = w1.dims();
    let fc1 = conv_matrix(&values(w1.val()), hidden, channels, 1);
    let fc2 = conv_matrix(
        &values(c.channel_attention.fc2.weight.val()),
        channels,
        hidden,
        1,
    );
    let spatial = spatial_taps(c);
    Attention {
        channels,
        hidden,
        fc1,
        fc2,
        spatial,
    }
}

/// CBAM's spatial 7×7 taps `[1, 2, 7, 7]` as `[(ky, kx), 2]` (mean and max map per tap).
pub(crate) fn spatial_taps<B: Backend>(c: &Cbam<B>) -> Vec<f32> {
    let s = values(c.spatial_attention.conv.weight.val());
    let mut spatial = vec![0.0; 98];
    for ch in 0..2 {
        for t in 0..49 {
            spatial[t * 2 + ch] = s[ch * 49 + t];
        }
    }
    spatial
}

impl FastDenseNet {
    /// Copy (and fold) the weights of an evaluation-mode model.
    pub fn from_model<B: Backend>(m: &MyDenseNet<B>) -> Self {
        let [c0, _, _, _] = m.conv0.weight.dims();
        let (conv0, bias0) = fold(
            conv_matrix(&values(m.conv0.weight.val()), c0, 3, 7),
            c0,
            &affine(&m.norm0),
        );
        let blocks = m
            .blocks
            .iter()
            .map(|b| {
                let [mid, _, _, _] = b.layers[0].conv1.weight.dims();
                let [growth, _, _, _] = b.layers[0].conv2.weight.dims();
                Block {
                    layers: b
                        .layers
                        .iter()
                        .map(|l| {
                            let [_, cin, _, _] = l.conv1.weight.dims();
                            let (w1, bias1) = fold(
                                conv_matrix(&values(l.conv1.weight.val()), mid, cin, 1),
                                mid,
                                &affine(&l.norm2),
                            );
                            Layer {
                                cin,
                                norm1: affine(&l.norm1),
                                w1,
                                bias1,
                                w2: conv_matrix(&values(l.conv2.weight.val()), growth, mid, 3),
                            }
                        })
                        .collect(),
                    growth,
                    mid,
                    cbam: attention(&b.cbam),
                }
            })
            .collect();
        let transitions = m
            .transitions
            .iter()
            .map(|t| {
                let [cout, cin, _, _] = t.conv.weight.dims();
                Transition {
                    norm: affine(&t.norm),
                    w: conv_matrix(&values(t.conv.weight.val()), cout, cin, 1),
                    cout,
                }
            })
            .collect();
        Self {
            conv0,
            bias0,
            c0,
            blocks,
            transitions,
            norm5: affine(&m.norm5),
            head_norm: Norm::from_layer_norm(&m.head_norm, HEAD_EPS),
            fc1: Dense::from_linear(&m.head_fc1),
            fc2: Dense::from_linear(&m.head_fc2),
            shared: Dense::from_linear(&m.shared_proj),
            task_proj: m.task_proj.iter().map(Dense::from_linear).collect(),
            task_fc1: m
                .task_heads
                .iter()
                .map(|t| Dense::from_linear(&t.fc1))
                .collect(),
            task_fc2: m
                .task_heads
                .iter()
                .map(|t| Dense::from_linear(&t.fc2))
                .collect(),
        }
    }

    /// Logits `[n, tasks, 2]` or `[n, 1, classes]` (row-major) for `n` NCHW images of `h×w` (3 channels).
    pub fn forward(&self, x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * 3 * h * w, "input is n × 3 × h × w");
        let x = to_nhwc(x, n, 3, h * w);
        // Stem: conv 7×7/2 + BN + ReLU, then max-pool 3×3/2 (pad 1) into block 1's buffer.
        let (sh, sw) = ((h + 6 - 7) / 2 + 1, (w + 6 - 7) / 2 + 1);
        let m = n * sh * sw;
        let mut stem = scratch(m * self.c0);
        let ptr = SharedMut(stem.as_mut_ptr());
        for_rows(m, |rows, par| {
            let mut cols = scratch(rows.len() * 147);
            im2col(&x, (h, w, 3), (sh, sw), 7, 2, 3, rows.clone(), &mut cols);
            // SAFETY: each chunk owns its rows.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(ptr.at(rows.start * self.c0), rows.len() * self.c0)
            };
            matmul(
                (rows.len(), self.c0, 147),
                &cols,
                147,
                &self.conv0,
                self.c0,
                dst.as_mut_ptr(),
                self.c0,
                false,
                par,
            );
            simd(
                #[inline(always)]
                || {
                    for r in dst.chunks_exact_mut(self.c0) {
                        for (v, b) in r.iter_mut().zip(&self.bias0) {
                            *v = (*v + b).max(0.0);
                        }
                    }
                },
            );
        });
        let (mut h, mut w) = ((sh + 2 - 3) / 2 + 1, (sw + 2 - 3) / 2 + 1);
        let mut width = self.block_width(0);
        let mut buf = scratch(n * h * w * width);
        max_pool(&stem, (n, sh, sw, self.c0), (h, w), &mut buf, width);
        drop(stem);
        let mut c = self.c0;
        for (i, block) in self.blocks.iter().enumerate() {
            let mut padded = scratch(n * (h + 2) * (w + 2) * block.mid);
            padded.fill(0.0);
            for layer in &block.layers {
                debug_assert_eq!(layer.cin, c);
                dense_layer(layer, block, &mut buf, &mut padded, (n, h, w), width);
                c += block.growth;
            }
            cbam(&block.cbam, &mut buf, (n, h, w));
            if let Some(t) = self.transitions.get(i) {
                let (oh, ow) = (h / 2, w / 2);
                let next = self.block_width(i + 1);
                let mut out = scratch(n * oh * ow * next);
                transition(t, &buf, (n, h, w, c), &mut out, next);
                (buf, h, w, c, width) = (out, oh, ow, t.cout, next);
            }
        }
        // norm5 (affine, no ReLU) commutes with the mean: pool first.
        let mut pooled = global_mean(&buf, n, h * w, c);
        for r in pooled.chunks_exact_mut(c) {
            for ((v, s), b) in r.iter_mut().zip(&self.norm5.scale).zip(&self.norm5.shift) {
                *v = *v * s + b;
            }
        }
        self.head(pooled, n)
    }

    /// Logits per head: 2 for a feature, the class count for a grading model.
    pub fn head_width(&self) -> usize {
        self.task_fc2.first().map_or(2, |d| d.dout)
    }

    /// Channels of block `i`'s buffer (its output width).
    fn block_width(&self, i: usize) -> usize {
        let b = &self.blocks[i];
        b.layers[0].cin + b.layers.len() * b.growth
    }

    fn head(&self, pooled: Vec<f32>, n: usize) -> Vec<f32> {
        let mut x = pooled;
        self.head_norm.rows_in_place(&mut x);
        let mut h = self.fc1.apply(&x, n, false);
        h.iter_mut().for_each(|v| *v = v.max(0.0));
        let mut h = self.fc2.apply(&h, n, false);
        super::gelu(&mut h);
        let shared = self.shared.apply(&h, n, false);
        let tasks = self.task_proj.len();
        let width = self.head_width();
        let mut out = vec![0.0; n * tasks * width];
        for t in 0..tasks {
            let proj = self.task_proj[t].apply(&h, n, false);
            let (a, b) = (self.shared.dout, self.task_proj[t].dout);
            let mut f = Vec::with_capacity(n * (a + b));
            for i in 0..n {
                f.extend_from_slice(&shared[i * a..(i + 1) * a]);
                f.extend_from_slice(&proj[i * b..(i + 1) * b]);
            }
            let mut g = self.task_fc1[t].apply(&f, n, false);
            g.iter_mut().for_each(|v| *v = v.max(0.0));
            let y = self.task_fc2[t].apply(&g, n, false);
            for i in 0..n {
                let at = (i * tasks + t) * width;
                out[at..at + width].copy_from_slice(&y[i * width..(i + 1) * width]);
            }
        }
        out
    }
}

/// Max-pool 3×3/2 with padding 1 (padding never wins) into the first `c` channels of `out`
/// (row width `width`).
fn max_pool(
    x: &[f32],
    (n, h, w, c): (usize, usize, usize, usize),
    (oh, ow): (usize, usize),
    out: &mut [f32],
    width: usize,
) {
    for img in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                let dst = &mut out[((img * oh + oy) * ow + ox) * width..][..c];
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
                        let src = &x[((img * h + iy as usize) * w + ix as usize) * c..][..c];
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = d.max(*s);
                        }
                    }
                }
            }
        }
    }
}

/// One dense layer: reads channels `0..cin` of `buf`, writes `cin..cin + growth`.
/// `padded` is the block's `[n, h+2, w+2, mid]` scratch whose one-pixel border is zero: the
/// 3×3 convolution then needs no im2col (see `conv3x3`).
fn dense_layer(
    l: &Layer,
    b: &Block,
    buf: &mut [f32],
    padded: &mut [f32],
    (n, h, w): (usize, usize, usize),
    width: usize,
) {
    let m = n * h * w;
    let (cin, mid) = (l.cin, b.mid);
    let (ph, pw) = (h + 2, w + 2);
    // BN1 → ReLU → 1×1 conv (+ folded BN2) → ReLU, chunk by chunk, into the padded interior.
    let hid = SharedMut(padded.as_mut_ptr());
    let src: &[f32] = buf;
    for_rows(m, |rows, par| {
        let r = rows.len();
        let mut t = scratch(r * cin);
        simd(
            #[inline(always)]
            || {
                for (d, s) in t
                    .chunks_exact_mut(cin)
                    .zip(src[rows.start * width..].chunks(width))
                {
                    for (((d, s), sc), sh) in d
                        .iter_mut()
                        .zip(&s[..cin])
                        .zip(&l.norm1.scale)
                        .zip(&l.norm1.shift)
                    {
                        *d = (s * sc + sh).max(0.0);
                    }
                }
            },
        );
        let mut u = scratch(r * mid);
        matmul(
            (r, mid, cin),
            &t,
            cin,
            &l.w1,
            mid,
            u.as_mut_ptr(),
            mid,
            false,
            par,
        );
        simd(
            #[inline(always)]
            || {
                for (row, p) in u.chunks_exact(mid).zip(rows.clone()) {
                    let (img, rest) = (p / (h * w), p % (h * w));
                    let (y, x) = (rest / w, rest % w);
                    // SAFETY: each pixel has its own interior row of `padded`, and each
                    // chunk owns its pixels.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            hid.at(((img * ph + y + 1) * pw + x + 1) * mid),
                            mid,
                        )
                    };
                    for ((d, v), b) in dst.iter_mut().zip(row).zip(&l.bias1) {
                        *d = (v + b).max(0.0);
                    }
                }
            },
        );
    });
    conv3x3(&l.w2, b.growth, mid, padded, buf, (n, h, w), width, cin);
}

/// 3×3 convolution (pad 1) of the padded `[n, h+2, w+2, mid]` map into columns
/// `col..col + growth` of `out` (row width `width`). On the padded map, flattened per image,
/// the input of output position `q = y·(w+2) + x` under tap `(dy, dx)` is position
/// `q + dy·(w+2) + dx`: each tap is one matrix product over a contiguous run of rows, nine
/// accumulating products in all. Positions with `x ≥ w` are computed and dropped.
#[allow(clippy::too_many_arguments)]
fn conv3x3(
    w2: &[f32],
    growth: usize,
    mid: usize,
    padded: &[f32],
    out: &mut [f32],
    (n, h, w): (usize, usize, usize),
    width: usize,
    col: usize,
) {
    let pw = w + 2;
    let per_image = (h + 2) * pw;
    let q_len = h * pw - 2;
    let (rows, par) = match super::chunk_rows(n * q_len) {
        Some(r) => (r, false),
        None => (q_len, true),
    };
    let per = q_len.div_ceil(rows);
    let dst = SharedMut(out.as_mut_ptr());
    let task = |i: usize| {
        let (img, c) = (i / per, i % per);
        let q = c * rows..((c + 1) * rows).min(q_len);
        let r = q.len();
        let mut acc = scratch(r * growth);
        for t in 0..9 {
            let off = img * per_image + q.start + (t / 3) * pw + t % 3;
            matmul(
                (r, growth, mid),
                &padded[off * mid..(img + 1) * per_image * mid],
                mid,
                &w2[t * mid * growth..(t + 1) * mid * growth],
                growth,
                acc.as_mut_ptr(),
                growth,
                t > 0,
                par,
            );
        }
        for (row, qq) in acc.chunks_exact(growth).zip(q) {
            let (y, x) = (qq / pw, qq % pw);
            if x < w {
                // SAFETY: each output pixel belongs to one task; only columns
                // `col..col + growth` are written, which nothing reads in this pass.
                let d = unsafe {
                    std::slice::from_raw_parts_mut(
                        dst.at(((img * h + y) * w + x) * width + col),
                        growth,
                    )
                };
                d.copy_from_slice(row);
            }
        }
    };
    if par {
        (0..n * per).for_each(task);
    } else {
        use rayon::prelude::*;
        (0..n * per).into_par_iter().for_each(task);
    }
}

/// CBAM: channel attention (shared MLP on mean and max, sigmoid), then spatial attention
/// (7×7 conv over the channel mean and max, sigmoid), each multiplied in place.
fn cbam(a: &Attention, buf: &mut [f32], (n, h, w): (usize, usize, usize)) {
    let (c, hw) = (a.channels, h * w);
    for img in 0..n {
        let x = &mut buf[img * hw * c..(img + 1) * hw * c];
        let att = channel_attention(a, x);
        // Channel attention, and the per-pixel mean/max maps of its result.
        let mut maps = vec![0.0f32; hw * 2];
        simd(
            #[inline(always)]
            || {
                for (r, m) in x.chunks_exact_mut(c).zip(maps.chunks_exact_mut(2)) {
                    for (v, a) in r.iter_mut().zip(&att) {
                        *v *= a;
                    }
                    m[0] = sum(r) / c as f32;
                    m[1] = max(r);
                }
            },
        );
        let s = spatial_logits(a, &maps, (h, w));
        simd(
            #[inline(always)]
            || {
                for (r, v) in x.chunks_exact_mut(c).zip(&s) {
                    let g = sigmoid(*v);
                    r.iter_mut().for_each(|x| *x *= g);
                }
            },
        );
    }
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// The channel weights `[C]` of one image `x` `[HW, C]`: the shared MLP on the channels' mean
/// and max over the pixels, summed, through a sigmoid.
fn channel_attention(a: &Attention, x: &[f32]) -> Vec<f32> {
    let c = a.channels;
    let hw = x.len() / c;
    let (mut chan_mean, mut chan_max) = (vec![0.0f32; c], vec![f32::NEG_INFINITY; c]);
    simd(
        #[inline(always)]
        || {
            for r in x.chunks_exact(c) {
                for ((m, x), v) in chan_mean.iter_mut().zip(chan_max.iter_mut()).zip(r) {
                    *m += v;
                    *x = x.max(*v);
                }
            }
        },
    );
    chan_mean.iter_mut().for_each(|v| *v /= hw as f32);
    let mlp_hidden = |d: &[f32]| -> Vec<f32> {
        let mut hdn = vec![0.0f32; a.hidden];
        let dims = (1, a.hidden, c);
        matmul(
            dims,
            d,
            c,
            &a.fc1,
            a.hidden,
            hdn.as_mut_ptr(),
            a.hidden,
            false,
            false,
        );
        hdn.iter_mut().for_each(|v| *v = v.max(0.0));
        hdn
    };
    // fc2 is linear: fc2(h_mean) + fc2(h_max) = fc2(h_mean + h_max).
    let hsum: Vec<f32> = mlp_hidden(&chan_mean)
        .iter()
        .zip(mlp_hidden(&chan_max))
        .map(|(a, b)| a + b)
        .collect();
    let mut att = vec![0.0f32; c];
    let dims = (1, c, a.hidden);
    matmul(
        dims,
        &hsum,
        a.hidden,
        &a.fc2,
        c,
        att.as_mut_ptr(),
        c,
        false,
        false,
    );
    att.iter_mut().for_each(|v| *v = sigmoid(*v));
    att
}

/// The spatial attention's logits `[HW]`: the 7×7 convolution (padding 3) of the per-pixel
/// mean and max maps `[HW, 2]`.
fn spatial_logits(a: &Attention, maps: &[f32], (h, w): (usize, usize)) -> Vec<f32> {
    let hw = h * w;
    let mut cols = vec![0.0f32; hw * 98];
    im2col(maps, (h, w, 2), (h, w), 7, 1, 3, 0..hw, &mut cols);
    let mut s = vec![0.0f32; hw];
    matmul(
        (hw, 1, 98),
        &cols,
        98,
        &a.spatial,
        1,
        s.as_mut_ptr(),
        1,
        false,
        false,
    );
    s
}

/// BN → ReLU → 2×2 average pool → 1×1 conv into the first `cout` channels of `out`.
fn transition(
    t: &Transition,
    x: &[f32],
    (n, h, w, c): (usize, usize, usize, usize),
    out: &mut [f32],
    width: usize,
) {
    let (oh, ow) = (h / 2, w / 2);
    let m = n * oh * ow;
    let dst = SharedMut(out.as_mut_ptr());
    for_rows(m, |rows, par| {
        let mut t_rows = scratch(rows.len() * c);
        t_rows.fill(0.0);
        simd(
            #[inline(always)]
            || {
                for (r, p) in rows.clone().enumerate() {
                    let (img, rest) = (p / (oh * ow), p % (oh * ow));
                    let (oy, ox) = (rest / ow, rest % ow);
                    let d = &mut t_rows[r * c..(r + 1) * c];
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let s = &x[((img * h + oy * 2 + dy) * w + ox * 2 + dx) * c..][..c];
                        for (((d, s), sc), sh) in
                            d.iter_mut().zip(s).zip(&t.norm.scale).zip(&t.norm.shift)
                        {
                            *d += (s * sc + sh).max(0.0);
                        }
                    }
                    d.iter_mut().for_each(|v| *v *= 0.25);
                }
            },
        );
        // SAFETY: each chunk owns its rows of `out`.
        let d = dst.at(rows.start * width);
        matmul(
            (rows.len(), t.cout, c),
            &t_rows,
            c,
            &t.w,
            t.cout,
            d,
            width,
            false,
            par,
        );
    });
}
