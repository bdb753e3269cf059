//! BatchNorm in training over the rows of a channels-last matrix: batch statistics (with the
//! running-statistics update) in the forward pass, and in the backward pass the affine form
//! `dx = A·dy + B + C·x` per channel, built from two sums per channel.

use burn::module::RunningState;
use burn::prelude::*;

use crate::blocks::BatchNorm2d;
use crate::fast::train::{for_rows_acc, give, set_param, take_zeroed, Weight};
use crate::fast::{simd, values};

/// BatchNorm with batch statistics over the rows of a channels-last matrix.
pub(super) struct Bn {
    pub(super) gamma: Weight,
    pub(super) beta: Weight,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    momentum: f32,
    eps: f32,
    /// Batch mean and `1/σ` of the last forward pass.
    pub(super) mean: Vec<f32>,
    inv: Vec<f32>,
}

impl Bn {
    pub(super) fn from<B: Backend>(bn: &BatchNorm2d<B>) -> Self {
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

    pub(super) fn channels(&self) -> usize {
        self.gamma.value.len()
    }

    pub(super) fn write_to<B: Backend>(&self, bn: &mut BatchNorm2d<B>) {
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
    pub(super) fn stats(&mut self, x: &[f32], m: usize, width: usize) {
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
    pub(super) fn affine(&self) -> (Vec<f32>, Vec<f32>) {
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
    pub(super) fn finish(&mut self, sums: &[f32], m: usize) -> [Vec<f32>; 3] {
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
pub(super) fn bn_sums(dy: &[f32], x: &[f32], mean: &[f32], acc: &mut [f32]) {
    let c = dy.len();
    let (s1, s2) = acc.split_at_mut(c);
    for ((((a, b), d), x), m) in s1.iter_mut().zip(s2.iter_mut()).zip(dy).zip(x).zip(mean) {
        *a += d;
        *b += d * (x - m);
    }
}
