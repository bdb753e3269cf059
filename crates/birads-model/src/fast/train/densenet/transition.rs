//! A transition in training — BN → ReLU → 2×2 average pool → 1×1 convolution, halving the
//! channels and the resolution into the next block's buffer — and its backward pass. The
//! pool runs before the convolution (they commute), so the product is on a quarter of the
//! pixels.

use burn::prelude::*;

use super::bn::{bn_sums, Bn};
use super::weight_matrix;
use crate::densenet::Transition as BurnTransition;
use crate::fast::train::{for_rows_acc, gemm_strided, give, set_param, take, take_zeroed, Weight};
use crate::fast::{for_rows, simd, SharedMut};

pub(super) struct Transition {
    norm: Bn,
    /// `[C, C/2]`.
    w: Weight,
    cout: usize,
    /// Input (CBAM's output) and the pooled ReLU(BN(·)) that multiplied `w`.
    input: Vec<f32>,
    pooled: Vec<f32>,
}

impl Transition {
    pub(super) fn from<B: Backend>(t: &BurnTransition<B>) -> Self {
        Self {
            norm: Bn::from(&t.norm),
            w: weight_matrix(&t.conv),
            cout: t.conv.weight.dims()[0],
            input: Vec::new(),
            pooled: Vec::new(),
        }
    }

    /// The trainable tensors, in the trainer's order.
    pub(super) fn weights_mut(&mut self) -> [&mut Weight; 3] {
        [&mut self.norm.gamma, &mut self.norm.beta, &mut self.w]
    }

    /// Write the weights and running statistics into burn's module.
    pub(super) fn write_to<B: Backend>(&self, t: &mut BurnTransition<B>) {
        self.norm.write_to(&mut t.norm);
        let cin = self.norm.channels();
        set_param(
            &mut t.conv.weight,
            crate::fast::conv_weight(&self.w.value, self.cout, cin, 1),
        );
    }
}

/// BN → ReLU → 2×2 average pool → 1×1 convolution into the first `cout` channels of `out`.
pub(super) fn transition_forward(
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
pub(super) fn transition_backward(
    t: &mut Transition,
    d_next: &[f32],
    (n, oh, ow): (usize, usize, usize),
    width: usize,
    (_, h, w): (usize, usize, usize),
) -> Vec<f32> {
    let c = t.norm.channels();
    let m = n * oh * ow;
    // dW = pooledᵀ · d; d(pooled) = d · Wᵀ.
    let dpool = conv_backward(t, d_next, m, width);
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

/// The 1×1 convolution's backward on the `m` pooled pixels: `dW = pooledᵀ · d` (accumulated
/// into `t.w`); returns `d(pooled) = d · Wᵀ`.
fn conv_backward(t: &mut Transition, d_next: &[f32], m: usize, width: usize) -> Vec<f32> {
    let c = t.norm.channels();
    let cout = t.cout;
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
    dpool
}
