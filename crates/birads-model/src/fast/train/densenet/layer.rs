//! One dense layer in training — BN → ReLU → 1×1 conv → BN → ReLU → 3×3 conv → dropout —
//! reading the first `cin` channels of its block's buffer and writing the next `growth`,
//! and its backward pass, which adds its input gradient into the channels it read.
//!
//! The 3×3 convolution runs on a zero-bordered copy of its input: each of the nine taps is
//! then one product over a contiguous run of positions (see `tap_offset`).

use burn::prelude::*;

use super::bn::{bn_sums, Bn};
use super::weight_matrix;
use crate::densenet::DenseLayer;
use crate::fast::train::{
    accumulate, dropout_backward, dropout_forward, for_rows_acc, gemm_strided, give, set_param,
    take, take_zeroed, Weight,
};
use crate::fast::{for_rows, simd, SharedMut};

pub(super) struct Layer {
    pub(super) cin: usize,
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

impl Layer {
    pub(super) fn from<B: Backend>(l: &DenseLayer<B>) -> Self {
        Self {
            cin: l.conv1.weight.dims()[1],
            norm1: Bn::from(&l.norm1),
            w1: weight_matrix(&l.conv1),
            norm2: Bn::from(&l.norm2),
            w2: weight_matrix(&l.conv2),
            dropout: l.dropout as f32,
            z: Vec::new(),
            padded: Vec::new(),
            mask: Vec::new(),
        }
    }

    /// The trainable tensors, in the trainer's order.
    pub(super) fn weights_mut(&mut self) -> [&mut Weight; 6] {
        [
            &mut self.norm1.gamma,
            &mut self.norm1.beta,
            &mut self.w1,
            &mut self.norm2.gamma,
            &mut self.norm2.beta,
            &mut self.w2,
        ]
    }

    /// Write the weights and running statistics into burn's layer.
    pub(super) fn write_to<B: Backend>(&self, t: &mut DenseLayer<B>, mid: usize, growth: usize) {
        self.norm1.write_to(&mut t.norm1);
        set_param(
            &mut t.conv1.weight,
            crate::fast::conv_weight(&self.w1.value, mid, self.cin, 1),
        );
        self.norm2.write_to(&mut t.norm2);
        set_param(
            &mut t.conv2.weight,
            crate::fast::conv_weight(&self.w2.value, growth, mid, 3),
        );
    }
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
    accumulate(&pieces, par, init, |(img, q), acc, par| {
        f(*img, q.clone(), acc, par)
    })
}

/// One dense layer in training: reads channels `0..cin` of `buf`, writes `cin..cin+growth`.
pub(super) fn dense_layer_forward(
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
    conv1x1_forward(l, buf, m, width, mid);
    // BN2's statistics in a pass of their own, with shifted sums (uncentred `Σz²/m − mean²`
    // cancels for channels whose mean is large against their spread).
    l.norm2.stats(&l.z, m, mid);
    bn2_relu_padded(l, (n, h, w), mid);
    let mut out = conv3x3_forward(l, (n, h, w), mid, growth);
    dropout_forward(&mut out, &mut l.mask, l.dropout, seed);
    for (dst, src) in buf.chunks_exact_mut(width).zip(out.chunks_exact(growth)) {
        dst[cin..cin + growth].copy_from_slice(src);
    }
    give(out);
}

/// BN1 → ReLU → 1×1 convolution of channels `0..cin` of `buf` (row stride `width`) into
/// `l.z` (`m` rows of `mid`).
fn conv1x1_forward(l: &mut Layer, buf: &[f32], m: usize, width: usize, mid: usize) {
    let cin = l.cin;
    let (sc1, sh1) = l.norm1.affine();
    l.z.resize(m * mid, 0.0);
    let zp = SharedMut(l.z.as_mut_ptr());
    let w1 = &l.w1.value;
    for_rows(m, |rows, par| {
        let r = rows.len();
        let mut t = crate::fast::scratch(r * cin);
        simd(
            #[inline(always)]
            || {
                for (d, p) in t.chunks_exact_mut(cin).zip(rows.clone()) {
                    let s = &buf[p * width..p * width + cin];
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
}

/// ReLU(BN2(z)) into the interior of the zero-bordered map `l.padded`.
fn bn2_relu_padded(l: &mut Layer, (n, h, w): (usize, usize, usize), mid: usize) {
    let m = n * h * w;
    let (sc2, sh2) = l.norm2.affine();
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
}

/// 3×3 convolution of `l.padded`: nine shifted products per piece of the run; returns the
/// `m × growth` output (interior pixels only).
fn conv3x3_forward(
    l: &Layer,
    (n, h, w): (usize, usize, usize),
    mid: usize,
    growth: usize,
) -> Vec<f32> {
    let m = n * h * w;
    let (ph, pw) = (h + 2, w + 2);
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
    out
}

/// Backward of `dense_layer_forward`: reads the gradient of channels `cin..cin+growth` of
/// `dbuf`, adds the input gradient into channels `0..cin`.
pub(super) fn dense_layer_backward(
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
    let dpad = padded_output_gradient(l, dbuf, (n, h, w), width, growth);
    let mut dz = take(m * mid);
    let bn2 = conv3x3_backward(l, &dpad, &mut dz, (n, h, w), mid, growth);
    give(dpad);
    let mut t_all = take(m * cin);
    let bn1 = conv1x1_backward(l, buf, &mut dz, &mut t_all, &bn2, (m, width, mid));
    give(dz);
    add_bn1_input_gradient(dbuf, buf, &t_all, &bn1, (m, width, cin));
    give(t_all);
}

/// The output gradient (channels `cin..cin+growth` of `dbuf`, through dropout) on a
/// zero-bordered map like the input's.
fn padded_output_gradient(
    l: &Layer,
    dbuf: &[f32],
    (n, h, w): (usize, usize, usize),
    width: usize,
    growth: usize,
) -> Vec<f32> {
    let m = n * h * w;
    let cin = l.cin;
    let (ph, pw) = (h + 2, w + 2);
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
    dpad
}

/// 3×3 convolution: tap gradients (accumulated into `l.w2`), and into `dz` the gradient of
/// ReLU(BN2(z)) masked by the ReLU, with BN2's two sums on the way; returns BN2's
/// `(A, B, C)` (see `Bn::finish`).
fn conv3x3_backward(
    l: &mut Layer,
    dpad: &[f32],
    dz: &mut [f32],
    (n, h, w): (usize, usize, usize),
    mid: usize,
    growth: usize,
) -> [Vec<f32>; 3] {
    let m = n * h * w;
    let (ph, pw) = (h + 2, w + 2);
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
    let bn2 = l.norm2.finish(&acc[9 * mid * growth..], m);
    give(acc);
    bn2
}

/// BN2's input gradient (in place in `dz`, from BN2's `(A, B, C)`) → 1×1 convolution:
/// weight gradient from the recomputed ReLU(BN1(x)) (accumulated into `l.w1`), and into
/// `t_all` the input gradient masked by that ReLU, with BN1's two sums on the way; returns
/// BN1's `(A, B, C)`.
fn conv1x1_backward(
    l: &mut Layer,
    buf: &[f32],
    dz: &mut [f32],
    t_all: &mut [f32],
    [a2, b2, c2]: &[Vec<f32>; 3],
    (m, width, mid): (usize, usize, usize),
) -> [Vec<f32>; 3] {
    let cin = l.cin;
    let dzp = SharedMut(dz.as_mut_ptr());
    let z = &l.z;
    let (sc1, sh1) = l.norm1.affine();
    let mean1 = &l.norm1.mean.clone();
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
                        for ((((d, zv), a), b), c) in gr.iter_mut().zip(zr).zip(a2).zip(b2).zip(c2)
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
    let bn1 = l.norm1.finish(&acc[cin * mid..], m);
    give(acc);
    bn1
}

/// BN1's input gradient (from `t_all`, the gradient of its output, and BN1's `(A, B, C)`),
/// added into the channels `0..cin` this layer read.
fn add_bn1_input_gradient(
    dbuf: &mut [f32],
    buf: &[f32],
    t_all: &[f32],
    [a1, b1, c1]: &[Vec<f32>; 3],
    (m, width, cin): (usize, usize, usize),
) {
    let dp = SharedMut(dbuf.as_mut_ptr());
    for_rows(m, |rows, _| {
        simd(
            #[inline(always)]
            || {
                for p in rows.clone() {
                    // SAFETY: each chunk owns its rows of `dbuf`.
                    let d = unsafe { std::slice::from_raw_parts_mut(dp.at(p * width), cin) };
                    let x = &buf[p * width..p * width + cin];
                    let t = &t_all[p * cin..(p + 1) * cin];
                    for (((((d, t), x), a), b), c) in
                        d.iter_mut().zip(t).zip(x).zip(a1).zip(b1).zip(c1)
                    {
                        *d += a * t + b + c * x;
                    }
                }
            },
        )
    });
}
