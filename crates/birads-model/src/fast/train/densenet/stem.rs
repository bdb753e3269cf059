//! The stem in training: 7×7/2 convolution → BatchNorm → ReLU → 3×3/2 max-pool into block
//! 1's buffer, and its backward pass down to the convolution's weights.

use rayon::prelude::*;

use super::bn::{bn_sums, Bn};
use super::DenseNetTrainer;
use crate::fast::to_nhwc;
use crate::fast::train::{for_rows_acc, give, take, take_zeroed};

impl DenseNetTrainer {
    /// Stem: conv → BN → ReLU → max-pool of the `n × 3 × h × w` input into the first
    /// channels of a new buffer as wide as block 1's; returns it with the pooled size.
    pub(super) fn stem_forward(
        &mut self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
    ) -> (Vec<f32>, usize, usize) {
        let mut img = take(x.len());
        img.copy_from_slice(&to_nhwc(x, n, 3, h * w));
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
        (buf, oh, ow)
    }

    /// Stem, from block 1's input gradient `dbuf`: max-pool → ReLU → BN → conv weights.
    pub(super) fn stem_backward(&mut self, dbuf: Vec<f32>) {
        let (n, sh, sw) = self.stem_geometry;
        let c0 = self.conv0.cout;
        let width = self.blocks[0].width;
        let mut dz = take_zeroed(n * sh * sw * c0);
        for (o, &src) in self.pool_argmax.iter().enumerate() {
            let (p, ch) = (o / c0, o % c0);
            dz[src as usize * c0 + ch] += dbuf[p * width + ch];
        }
        give(dbuf);
        relu_bn_backward(&mut self.norm0, &self.stem_z, &mut dz, (n * sh * sw, c0));
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

/// Backward of ReLU(BN(z)) in place: `dz` (`m` rows of `c0`) from the gradient of the ReLU's
/// output to that of `z`, with BN's two sums on the way (accumulating `dγ`, `dβ`).
fn relu_bn_backward(bn: &mut Bn, z: &[f32], dz: &mut [f32], (m, c0): (usize, usize)) {
    let (scale, shift) = bn.affine();
    let mean0 = bn.mean.clone();
    let sums = for_rows_acc(
        m,
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
    let [a, b, cc] = bn.finish(&sums, m);
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
}
