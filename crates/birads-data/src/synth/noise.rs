//! Noise fields of the B-mode image: fully developed speckle (the grain of every
//! ultrasound image) and bilinear value noise (blotchy tissue texture).

use rand::Rng;

use super::math::smooth01;

/// wyrand: the per-pixel speckle needs ~10^5-10^6 numbers per image; ChaCha decides
/// everything else and seeds this, so determinism is unaffected.
struct WyRand(u64);

impl WyRand {
    #[inline]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.0 as u128).wrapping_mul((self.0 ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) as u64) ^ (t as u64)
    }
}

/// Fully developed speckle: magnitude of a spatially low-passed complex Gaussian
/// field (Rayleigh distributed), normalised to mean 1. The low-pass (a `kx` × `ky` box)
/// is wider horizontally because the lateral resolution of a probe is worse than the
/// axial.
pub(super) fn speckle_field(w: usize, h: usize, seed: u64, kx: usize, ky: usize) -> Vec<f32> {
    let (re, im) = complex_white_noise(w * h, seed);
    let re = horizontal_box_sums(&re, w, h, kx);
    let im = horizontal_box_sums(&im, w, h, kx);
    let (mut field, sum) = vertical_box_magnitude(&re, &im, w, h, ky);
    let inv = if sum > 0.0 {
        ((w * h) as f64 / sum) as f32
    } else {
        1.0
    };
    for v in field.iter_mut() {
        *v *= inv;
    }
    field
}

/// Real and imaginary parts of `n` complex samples, each component the sum of two
/// 16-bit uniforms (centred); the box filters afterwards make them Gaussian.
fn complex_white_noise(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut g = WyRand(seed);
    let mut re = vec![0f32; n];
    let mut im = vec![0f32; n];
    for (a, b) in re.iter_mut().zip(im.iter_mut()) {
        let r = g.next();
        *a = ((r & 0xffff) as i32 + ((r >> 16) & 0xffff) as i32 - 65535) as f32;
        *b = (((r >> 32) & 0xffff) as i32 + ((r >> 48) & 0xffff) as i32 - 65535) as f32;
    }
    (re, im)
}

/// Horizontal running box sums of a `w` × `h` field: window `[x, x + kx)`, the last
/// column repeated past the right edge.
fn horizontal_box_sums(src: &[f32], w: usize, h: usize, kx: usize) -> Vec<f32> {
    let mut out = vec![0f32; w * h];
    for y in 0..h {
        let row = y * w;
        let (r, o) = (&src[row..row + w], &mut out[row..row + w]);
        let mut s = 0f32;
        for j in 0..kx {
            s += r[j.min(w - 1)];
        }
        for x in 0..w {
            o[x] = s;
            let nx = (x + kx).min(w - 1);
            s += r[nx] - r[x];
        }
    }
    out
}

/// Vertical box sums (window `[y, y + ky)`, the last row repeated past the bottom) of
/// both components and their magnitude per pixel, with the sum of all magnitudes
/// (accumulated per row in `f32`, over rows in `f64`).
fn vertical_box_magnitude(
    re: &[f32],
    im: &[f32],
    w: usize,
    h: usize,
    ky: usize,
) -> (Vec<f32>, f64) {
    let mut out = vec![0f32; w * h];
    let mut sum = 0f64;
    let mut acc_a = vec![0f32; w];
    let mut acc_b = vec![0f32; w];
    for y in 0..h {
        acc_a.fill(0.0);
        acc_b.fill(0.0);
        for j in 0..ky {
            let r = (y + j).min(h - 1) * w;
            for (a, v) in acc_a.iter_mut().zip(&re[r..r + w]) {
                *a += v;
            }
            for (b, v) in acc_b.iter_mut().zip(&im[r..r + w]) {
                *b += v;
            }
        }
        let mut rowsum = 0f32;
        for ((o, a), b) in out[y * w..(y + 1) * w].iter_mut().zip(&acc_a).zip(&acc_b) {
            let m = (a * a + b * b).sqrt();
            *o = m;
            rowsum += m;
        }
        sum += rowsum as f64;
    }
    (out, sum)
}

/// Bilinear value noise on a coarse random grid: cheap blotchy tissue texture.
pub(super) struct ValueNoise {
    gw: usize,
    v: Vec<f32>,
    ix: Vec<u32>,
    wx: Vec<f32>,
    cell_y: f32,
}

impl ValueNoise {
    /// A `w` × `h` field with grid cells of `cell_x` × `cell_y` pixels; draws one `f32`
    /// per grid node.
    pub(super) fn new(rng: &mut impl Rng, w: usize, h: usize, cell_x: f32, cell_y: f32) -> Self {
        let gw = (w as f32 / cell_x).ceil() as usize + 2;
        let gh = (h as f32 / cell_y).ceil() as usize + 2;
        let v = (0..gw * gh).map(|_| rng.random::<f32>()).collect();
        let mut ix = Vec::with_capacity(w);
        let mut wx = Vec::with_capacity(w);
        for x in 0..w {
            let fx = x as f32 / cell_x;
            ix.push(fx as u32);
            wx.push(smooth01(fx.fract()));
        }
        Self {
            gw,
            v,
            ix,
            wx,
            cell_y,
        }
    }

    /// Returns the two interpolated grid rows' start and the vertical weight.
    #[inline]
    pub(super) fn row(&self, y: usize) -> (usize, f32) {
        let fy = y as f32 / self.cell_y;
        ((fy as usize) * self.gw, smooth01(fy.fract()))
    }

    /// The noise value at column `x` of the row given by [`ValueNoise::row`].
    #[inline]
    pub(super) fn at(&self, row: (usize, f32), x: usize) -> f32 {
        let i = row.0 + self.ix[x] as usize;
        let wx = self.wx[x];
        let top = self.v[i] + (self.v[i + 1] - self.v[i]) * wx;
        let j = i + self.gw;
        let bot = self.v[j] + (self.v[j + 1] - self.v[j]) * wx;
        top + (bot - top) * row.1
    }
}
