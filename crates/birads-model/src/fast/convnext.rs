//! MyConvNeXt inference, channels last. A CNBlock runs as one pass per chunk of pixel rows:
//! depthwise 7×7 + LayerNorm → Linear 4× + GELU → Linear → layer scale + residual, so the
//! chunk's activations stay in cache from the first operation to the last.

use burn::prelude::*;

use super::{
    conv_matrix, for_rows, global_mean, im2col, matmul, scratch, simd, to_nhwc, values, Dense,
    Norm, SharedMut,
};
use crate::convnext::{CnBlock, MyConvNeXt};

/// Epsilon of the blocks' LayerNorm (`CnBlock::new`) and of the head's (burn's default, as
/// `nn.LayerNorm`): burn keeps `LayerNorm::epsilon` private.
const BLOCK_EPS: f32 = 1e-6;
const HEAD_EPS: f32 = 1e-5;

struct Block {
    /// Depthwise taps `[(ky, kx), C]`.
    dw: Vec<f32>,
    dw_bias: Vec<f32>,
    norm: Norm,
    pw1: Dense,
    pw2: Dense,
    gamma: Vec<f32>,
}

/// Patchify convolution (kernel = stride, no padding) as a matrix `[(k, k, in), out]`.
struct Patchify {
    w: Vec<f32>,
    b: Vec<f32>,
    k: usize,
    cin: usize,
    cout: usize,
}

struct Stage {
    /// LayerNorm2d then the 2×2/2 convolution (absent for the first stage).
    down: Option<(Norm, Patchify)>,
    blocks: Vec<Block>,
}

/// MyConvNeXt's evaluation-mode forward pass on the CPU (see the module docs of `fast`).
pub struct FastConvNeXt {
    stem: Patchify,
    stem_norm: Norm,
    stages: Vec<Stage>,
    head_norm: Norm,
    fc1: Dense,
    fc2: Dense,
}

fn layer_norm_2d<B: Backend>(l: &crate::blocks::LayerNorm2d<B>) -> Norm {
    Norm {
        gamma: values(l.weight.val()),
        beta: values(l.bias.val()),
        eps: l.epsilon as f32,
    }
}

fn patchify<B: Backend>(c: &burn::nn::conv::Conv2d<B>) -> Patchify {
    let [cout, cin, k, _] = c.weight.dims();
    assert_eq!(
        c.stride,
        [k, k],
        "patchify convolutions have stride = kernel"
    );
    Patchify {
        w: conv_matrix(&values(c.weight.val()), cout, cin, k),
        b: c.bias
            .as_ref()
            .map(|b| values(b.val()))
            .unwrap_or(vec![0.0; cout]),
        k,
        cin,
        cout,
    }
}

fn block<B: Backend>(b: &CnBlock<B>) -> Block {
    let [c, _, k, _] = b.dwconv.weight.dims();
    assert_eq!(k, 7, "ConvNeXt's depthwise kernel is 7×7");
    Block {
        dw: depthwise_taps(&b.dwconv),
        dw_bias: b
            .dwconv
            .bias
            .as_ref()
            .map(|b| values(b.val()))
            .unwrap_or(vec![0.0; c]),
        norm: Norm::from_layer_norm(&b.norm, BLOCK_EPS),
        pw1: Dense::from_linear(&b.pwconv1),
        pw2: Dense::from_linear(&b.pwconv2),
        gamma: values(b.layer_scale.val()),
    }
}

impl FastConvNeXt {
    /// Copy the weights of an evaluation-mode model.
    pub fn from_model<B: Backend>(m: &MyConvNeXt<B>) -> Self {
        let stages = m
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| Stage {
                down: (i > 0).then(|| {
                    let d = &m.downsamples[i - 1];
                    (layer_norm_2d(&d.norm), patchify(&d.conv))
                }),
                blocks: s.blocks.iter().map(block).collect(),
            })
            .collect();
        Self {
            stem: patchify(&m.stem_conv),
            stem_norm: layer_norm_2d(&m.stem_norm),
            stages,
            head_norm: Norm::from_layer_norm(&m.head_norm, HEAD_EPS),
            fc1: Dense::from_linear(&m.head_fc1),
            fc2: Dense::from_linear(&m.head_fc2),
        }
    }

    /// Logits `[n, classes]` (row-major) for `n` NCHW images of `h×w` (3 channels).
    pub fn forward(&self, x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * 3 * h * w, "input is n × 3 × h × w");
        let mut x = to_nhwc(x, n, 3, h * w);
        // Stem: patchify + LayerNorm2d.
        x = patchify_forward(&self.stem, &x, n, (h, w), Some(&self.stem_norm));
        let (mut h, mut w, mut c) = (h / self.stem.k, w / self.stem.k, self.stem.cout);
        for stage in &self.stages {
            if let Some((norm, conv)) = &stage.down {
                debug_assert_eq!(conv.cin, c);
                layer_norm_rows(&mut x, norm);
                x = patchify_forward(conv, &x, n, (h, w), None);
                (h, w, c) = (h / conv.k, w / conv.k, conv.cout);
            }
            let mut out = scratch(x.len());
            for b in &stage.blocks {
                block_forward(b, &x, &mut out, (h, w, c));
                std::mem::swap(&mut x, &mut out);
            }
        }
        let mut pooled = global_mean(&x, n, h * w, c);
        self.head_norm.rows_in_place(&mut pooled);
        let mut hidden = self.fc1.apply(&pooled, n, false);
        super::gelu(&mut hidden);
        self.fc2.apply(&hidden, n, false)
    }
}

/// LayerNorm over the channels of every row, rows in parallel.
fn layer_norm_rows(x: &mut [f32], norm: &Norm) {
    let c = norm.gamma.len();
    let ptr = SharedMut(x.as_mut_ptr());
    for_rows(x.len() / c, |rows, _| {
        // SAFETY: each chunk owns its rows.
        let part =
            unsafe { std::slice::from_raw_parts_mut(ptr.at(rows.start * c), rows.len() * c) };
        simd(
            #[inline(always)]
            || norm.rows_in_place(part),
        );
    });
}

/// A kernel = stride convolution of an NHWC batch (then an optional LayerNorm per row).
fn patchify_forward(
    p: &Patchify,
    x: &[f32],
    n: usize,
    (h, w): (usize, usize),
    norm: Option<&Norm>,
) -> super::Scratch {
    let (oh, ow) = (h / p.k, w / p.k);
    let m = n * oh * ow;
    let mut out = scratch(m * p.cout);
    let ptr = SharedMut(out.as_mut_ptr());
    let width = p.k * p.k * p.cin;
    for_rows(m, |rows, par| {
        let mut cols = scratch(rows.len() * width);
        im2col(
            x,
            (h, w, p.cin),
            (oh, ow),
            p.k,
            p.k,
            0,
            rows.clone(),
            &mut cols,
        );
        // SAFETY: each chunk owns its rows of `out`.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(ptr.at(rows.start * p.cout), rows.len() * p.cout)
        };
        matmul(
            (rows.len(), p.cout, width),
            &cols,
            width,
            &p.w,
            p.cout,
            dst.as_mut_ptr(),
            p.cout,
            false,
            par,
        );
        simd(
            #[inline(always)]
            || {
                for r in dst.chunks_exact_mut(p.cout) {
                    super::add(r, &p.b);
                }
                if let Some(norm) = norm {
                    norm.rows_in_place(dst);
                }
            },
        );
    });
    out
}

/// One CNBlock from `x` into `out` (both `[n·h·w, c]`).
fn block_forward(b: &Block, x: &[f32], out: &mut [f32], (h, w, c): (usize, usize, usize)) {
    let m = x.len() / c;
    let ptr = SharedMut(out.as_mut_ptr());
    let hidden = b.pw1.dout;
    for_rows(m, |rows, par| {
        let r = rows.len();
        let mut t = scratch(r * c);
        simd(
            #[inline(always)]
            || dw_norm(b, x, (h, w, c), rows.clone(), &mut t),
        );
        let mut u = scratch(r * hidden);
        matmul(
            (r, hidden, c),
            &t,
            c,
            &b.pw1.w,
            hidden,
            u.as_mut_ptr(),
            hidden,
            false,
            par,
        );
        super::bias_gelu(&mut u, &b.pw1.b);
        matmul(
            (r, c, hidden),
            &u,
            hidden,
            &b.pw2.w,
            c,
            t.as_mut_ptr(),
            c,
            false,
            par,
        );
        // SAFETY: each chunk owns its rows of `out`.
        let dst = unsafe { std::slice::from_raw_parts_mut(ptr.at(rows.start * c), r * c) };
        simd(
            #[inline(always)]
            || {
                for ((d, y), xr) in dst
                    .chunks_exact_mut(c)
                    .zip(t.chunks_exact(c))
                    .zip(x[rows.start * c..rows.end * c].chunks_exact(c))
                {
                    for ((((d, x), y), g), bias) in
                        d.iter_mut().zip(xr).zip(y).zip(&b.gamma).zip(&b.pw2.b)
                    {
                        *d = x + g * (y + bias);
                    }
                }
            },
        );
    });
}

/// A depthwise convolution's weight `[C, 1, k, k]` as taps `[(ky, kx), C]`: the same memory
/// read as a `[1, C, k, k]` convolution, whose `conv_matrix` is exactly that layout.
pub(crate) fn depthwise_taps<B: Backend>(c: &burn::nn::conv::Conv2d<B>) -> Vec<f32> {
    let [channels, _, k, _] = c.weight.dims();
    conv_matrix(&values(c.weight.val()), 1, channels, k)
}

/// Depthwise 7×7 (zero padding 3) + bias, then LayerNorm, for the pixel rows `rows`.
#[inline(always)]
fn dw_norm(
    b: &Block,
    x: &[f32],
    (h, w, c): (usize, usize, usize),
    rows: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let mut acc = vec![0.0f32; c];
    for (r, p) in rows.enumerate() {
        acc.copy_from_slice(&b.dw_bias);
        depthwise_pixel(&b.dw, x, (h, w, c), p, &mut acc);
        b.norm.row(&acc, &mut out[r * c..(r + 1) * c]);
    }
}

/// Add the depthwise 7×7 (zero padding 3) of pixel `p` of an NHWC batch to `acc`; `taps` are
/// `[(ky, kx), C]`. Shared with the training path.
#[inline(always)]
pub(crate) fn depthwise_pixel(
    taps: &[f32],
    x: &[f32],
    (h, w, c): (usize, usize, usize),
    p: usize,
    acc: &mut [f32],
) {
    let (img, rest) = (p / (h * w), p % (h * w));
    let (y, xx) = (rest / w, rest % w);
    for ky in 0..7 {
        let iy = y as isize + ky as isize - 3;
        if iy < 0 || iy >= h as isize {
            continue;
        }
        let base = (img * h + iy as usize) * w;
        for kx in 0..7 {
            let ix = xx as isize + kx as isize - 3;
            if ix < 0 || ix >= w as isize {
                continue;
            }
            let src = &x[(base + ix as usize) * c..][..c];
            let tap = &taps[(ky * 7 + kx) * c..][..c];
            for ((a, s), t) in acc.iter_mut().zip(src).zip(tap) {
                *a += s * t;
            }
        }
    }
}
