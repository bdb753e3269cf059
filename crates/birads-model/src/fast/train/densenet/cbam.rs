//! CBAM in training, image by image: channel attention (a shared two-layer MLP on the
//! spatial mean and max of every channel, then a sigmoid), then spatial attention (a 7×7
//! convolution over the channel mean and max maps, then a sigmoid), and the backward pass.

use burn::prelude::*;
use rayon::prelude::*;

use super::weight_matrix;
use crate::blocks::Cbam;
use crate::fast::im2col;
use crate::fast::train::{gemm_strided, reduce, set_param, Weight};

pub(super) struct Attention {
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

impl Attention {
    pub(super) fn from<B: Backend>(c: &Cbam<B>) -> Self {
        let [hidden, channels, _, _] = c.channel_attention.fc1.weight.dims();
        let spatial = crate::fast::densenet::spatial_taps(c);
        Self {
            channels,
            hidden,
            fc1: weight_matrix(&c.channel_attention.fc1),
            fc2: weight_matrix(&c.channel_attention.fc2),
            spatial: Weight::new(spatial),
            saved: Vec::new(),
        }
    }

    /// The trainable tensors, in the trainer's order.
    pub(super) fn weights_mut(&mut self) -> [&mut Weight; 3] {
        [&mut self.fc1, &mut self.fc2, &mut self.spatial]
    }

    /// Write the weights into burn's module.
    pub(super) fn write_to<B: Backend>(&self, c: &mut Cbam<B>) {
        let ca = &mut c.channel_attention;
        set_param(
            &mut ca.fc1.weight,
            crate::fast::conv_weight(&self.fc1.value, self.hidden, self.channels, 1),
        );
        set_param(
            &mut ca.fc2.weight,
            crate::fast::conv_weight(&self.fc2.value, self.channels, self.hidden, 1),
        );
        let mut s = vec![0.0; 98];
        for ch in 0..2 {
            for t in 0..49 {
                s[ch * 49 + t] = self.spatial.value[t * 2 + ch];
            }
        }
        set_param(&mut c.spatial_attention.conv.weight, s);
    }
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + crate::fast::train::exp(-v))
}

/// CBAM in training, image by image: `y = x ⊙ att_c ⊙ att_s`.
pub(super) fn cbam_forward(
    a: &mut Attention,
    x: &[f32],
    y: &mut [f32],
    (n, h, w): (usize, usize, usize),
) {
    let (c, hw, hid) = (a.channels, h * w, a.hidden);
    a.saved.resize_with(n, Default::default);
    let (fc1, fc2, spatial) = (&a.fc1.value, &a.fc2.value, &a.spatial.value);
    a.saved
        .par_iter_mut()
        .zip(y.par_chunks_mut(hw * c))
        .enumerate()
        .for_each(|(img, (s, y))| {
            let x = &x[img * hw * c..(img + 1) * hw * c];
            channel_pools(s, x, (c, hw));
            let att = channel_attention(s, (fc1, fc2), (c, hid));
            apply_channel_attention(s, x, y, &att, (c, hw));
            apply_spatial_attention(s, y, spatial, (h, w, c));
            s.att = att;
        });
}

/// The spatial mean and max of every channel of one image `x` (`hw` rows of `c`), with the
/// pixel of each maximum.
fn channel_pools(s: &mut AttentionSaved, x: &[f32], (c, hw): (usize, usize)) {
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
}

/// Channel attention `σ(fc2·(ReLU(fc1·mean) + ReLU(fc1·max)))`, saving the two hidden
/// vectors.
fn channel_attention(
    s: &mut AttentionSaved,
    (fc1, fc2): (&[f32], &[f32]),
    (c, hid): (usize, usize),
) -> Vec<f32> {
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
    att
}

/// `y = x ⊙ att` for one image, saving the (mean, max) maps over channels of `y` and the
/// channel of each maximum.
fn apply_channel_attention(
    s: &mut AttentionSaved,
    x: &[f32],
    y: &mut [f32],
    att: &[f32],
    (c, hw): (usize, usize),
) {
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
}

/// Spatial attention `σ(conv7×7(maps))`, saved, and `y ⊙= ` it, for one image.
fn apply_spatial_attention(
    s: &mut AttentionSaved,
    y: &mut [f32],
    spatial: &[f32],
    (h, w, c): (usize, usize, usize),
) {
    let hw = h * w;
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
}

/// Backward of `cbam_forward`: from `dy`, writes the input gradient into `dx` (full width,
/// overwritten) and accumulates the MLP and spatial taps' gradients.
pub(super) fn cbam_backward(
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
            let dpre = spatial_attention_backward(s, x, dy, dx, (c, hw));
            spatial_taps_gradient(s, &dpre, (h, w), &mut g[2 * c * hid..]);
            let dmaps = maps_gradient(&dpre, spatial, (h, w));
            let ds = channel_attention_backward(s, x, &dmaps, dx, (c, hw));
            mlp_backward(s, &ds, (fc1, fc2), (c, hid, hw), &mut g, dx);
            g
        })
        .collect();
    let g = reduce(grads);
    a.fc1.accumulate(&g[..c * hid]);
    a.fc2.accumulate(&g[c * hid..2 * c * hid]);
    a.spatial.accumulate(&g[2 * c * hid..]);
}

/// Spatial attention, one image: writes `dx1 = dy·sa` into `dx` and returns the gradient of
/// the attention's pre-sigmoid map, `d(pre) = Σ_c dy·x1 · sa(1 − sa)`.
fn spatial_attention_backward(
    s: &AttentionSaved,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    (c, hw): (usize, usize),
) -> Vec<f32> {
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
    dpre
}

/// The 7×7 taps' gradient from `d(pre)` and the saved (mean, max) maps, added to `gs`.
fn spatial_taps_gradient(s: &AttentionSaved, dpre: &[f32], (h, w): (usize, usize), gs: &mut [f32]) {
    let hw = h * w;
    let mut cols = vec![0.0f32; hw * 98];
    im2col(&s.maps, (h, w, 2), (h, w), 7, 1, 3, 0..hw, &mut cols);
    gemm_strided(
        (98, 1, hw),
        (&cols, 1, 98),
        (dpre, 1, 1),
        (gs.as_mut_ptr(), 1, 1),
        true,
        false,
    );
}

/// Gradient of the (mean, max) maps: the transposed 7×7 correlation of `d(pre)`.
fn maps_gradient(dpre: &[f32], spatial: &[f32], (h, w): (usize, usize)) -> Vec<f32> {
    let hw = h * w;
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
    dmaps
}

/// Channel attention, one image: adds the maps' gradient to `dx` (`dx1`, the gradient of
/// `x ⊙ att`), turns it into `dx1·att` and returns the gradient of the attention's
/// pre-sigmoid vector, `Σ_p dx1·x · att(1 − att)`.
fn channel_attention_backward(
    s: &AttentionSaved,
    x: &[f32],
    dmaps: &[f32],
    dx: &mut [f32],
    (c, hw): (usize, usize),
) -> Vec<f32> {
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
    datt.iter()
        .zip(&s.att)
        .map(|(d, a)| *d as f32 * a * (1.0 - a))
        .collect()
}

/// The shared MLP, one image, from the gradient `ds` of its pre-sigmoid output: the fc1 and
/// fc2 weight gradients (added to `g`'s first two parts) and the gradient through the
/// spatial mean and max pools, added into `dx`.
fn mlp_backward(
    s: &AttentionSaved,
    ds: &[f32],
    (fc1, fc2): (&[f32], &[f32]),
    (c, hid, hw): (usize, usize, usize),
    g: &mut [f32],
    dx: &mut [f32],
) {
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
        (ds, c, 1),
        (g2.as_mut_ptr(), c, 1),
        true,
        false,
    );
    let mut dh = vec![0.0f32; hid];
    gemm_strided(
        (1, hid, c),
        (ds, c, 1),
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
}
