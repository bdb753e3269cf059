//! The tissue behind the speckle: skin, subcutaneous fat, glandular layer and pectoral
//! muscle with wavy boundaries and blotchy texture, depth attenuation, and the
//! posterior acoustic effect of the lesion. It varies slowly, so it is evaluated on a
//! coarse grid and interpolated.

use std::f32::consts::TAU;

use rand::Rng;

use super::placement::BoxF;
use crate::synth::area::Area;
use crate::synth::math::{step, uni};
use crate::synth::noise::ValueNoise;
use crate::synth::spec::LesionSpec;

/// Posterior acoustic features: shadowing behind suspicious masses, enhancement
/// behind benign-looking (cyst-like) ones, in a column below the lesion.
pub(super) struct Posterior {
    /// Relative echo change (negative: shadow, 0: none).
    strength: f32,
    /// Centre of the lesion box and its size, pixels.
    cx: f32,
    cy: f32,
    bw: f32,
    bh: f32,
}

impl Posterior {
    /// Draws the effect for a lesion of `spec` whose box is `bx`.
    pub(super) fn sample(spec: &LesionSpec, bx: BoxF, rng: &mut impl Rng) -> Self {
        let strength = match spec.birads {
            3..=5 if rng.random_bool(0.55) => -uni(rng, 0.35, 0.65),
            2 if rng.random_bool(0.2) => -uni(rng, 0.25, 0.45),
            0 | 1 if rng.random_bool(0.35) => uni(rng, 0.2, 0.45),
            _ => 0.0,
        };
        Self {
            strength,
            cx: bx.x0 + 0.5 * bx.w,
            cy: bx.y0 + 0.5 * bx.h,
            bw: bx.w,
            bh: bx.h,
        }
    }

    /// `e` with the effect applied at pixel (x, y): full strength from the lower half of
    /// the lesion down, over a column as wide as the lesion, with soft edges.
    #[inline]
    fn apply(&self, e: f32, x: usize, y: usize) -> f32 {
        if self.strength == 0.0 {
            return e;
        }
        let dep = step(y as f32 + 0.5, self.cy + 0.25 * self.bh, 0.3 * self.bh);
        let dx = (x as f32 + 0.5 - self.cx).abs();
        let lat = 1.0 - step(dx, 0.42 * self.bw, 0.1 * self.bw);
        e * (1.0 + self.strength * lat * dep)
    }
}

/// Entries of the depth look-up table.
const LUT: usize = 2048;

/// The tissue model of one image.
pub(super) struct Tissue {
    skin_val: f32,
    fat_val: f32,
    gland_val: f32,
    musc_val: f32,
    layers: LayerCurves,
    /// Spatial frequency of the muscle striation over depth.
    stri_f: f32,
    /// Fat lobules (large blotches).
    lob: ValueNoise,
    /// Gland texture, also the lesion's internal texture.
    pub(super) tex: ValueNoise,
    /// Depth-only terms (attenuation with gain, skin blend) from a table: exp per pixel
    /// is costly.
    depth_lut: Vec<(f32, f32)>,
    posterior: Posterior,
}

impl Tissue {
    /// Draws the tissue of a `w` × `h` image (texture cells scale with its shorter side).
    pub(super) fn sample(rng: &mut impl Rng, w: usize, h: usize, posterior: Posterior) -> Self {
        let min_side = (w as f32).min(h as f32);
        let skin_t = uni(rng, 0.015, 0.035);
        let skin_val = uni(rng, 170.0, 210.0);
        let fat_val = uni(rng, 45.0, 80.0);
        let gland_val = uni(rng, 130.0, 180.0);
        let musc_val = uni(rng, 75.0, 110.0);
        let att = uni(rng, 0.35, 0.9);
        let gain = uni(rng, 0.95, 1.15);
        let layers = LayerCurves::sample(rng, w);
        let stri_f = uni(rng, 25.0, 45.0);
        let (lcx, lcy) = (
            min_side * uni(rng, 0.05, 0.09),
            min_side * uni(rng, 0.035, 0.06),
        );
        let lob = ValueNoise::new(rng, w, h, lcx, lcy);
        let (tcx, tcy) = (
            min_side * uni(rng, 0.08, 0.16),
            min_side * uni(rng, 0.04, 0.08),
        );
        let tex = ValueNoise::new(rng, w, h, tcx, tcy);
        let depth_lut = (0..=LUT)
            .map(|i| {
                let t = i as f32 / LUT as f32;
                (gain * (-att * t).exp(), step(t, skin_t, 0.008))
            })
            .collect();
        Self {
            skin_val,
            fat_val,
            gland_val,
            musc_val,
            layers,
            stri_f,
            lob,
            tex,
            depth_lut,
            posterior,
        }
    }

    /// Smooth tissue echogenicity at pixel (x, y) of normalised depth `t` (layers,
    /// texture, attenuation, posterior effects).
    fn echo(&self, x: usize, y: usize, t: f32) -> f32 {
        let nl = self.lob.at(self.lob.row(y), x);
        let nt = self.tex.at(self.tex.row(y), x);
        let fat = self.fat_val * (0.55 + 0.9 * nl);
        let gland = self.gland_val * (0.7 + 0.6 * nt);
        let l = &self.layers;
        let mut e = fat + (gland - fat) * step(t, l.b1[x], 0.03);
        let m = step(t, l.b2[x], 0.02);
        if m > 0.0 {
            let stri = 0.8 + 0.4 * (0.5 + 0.5 * (t * self.stri_f + l.wob[x]).sin());
            e += (self.musc_val * stri - e) * m;
        }
        let (atten, skin) = self.depth_lut[((t * LUT as f32) as usize).min(LUT)];
        e = (self.skin_val + (e - self.skin_val) * skin) * atten;
        self.posterior.apply(e, x, y)
    }
}

/// The layer boundaries per column, as normalised depths: fat/gland (`b1`) and
/// gland/muscle (`b2`), each a base depth plus three sine waves across the image, and
/// the phase wobble of the muscle striation.
struct LayerCurves {
    b1: Vec<f32>,
    b2: Vec<f32>,
    wob: Vec<f32>,
}

impl LayerCurves {
    fn sample(rng: &mut impl Rng, w: usize) -> Self {
        let b1_base = uni(rng, 0.12, 0.28);
        let b2_base = uni(rng, 0.72, 0.9);
        let waves: Vec<(f32, f32, f32)> = (0..6)
            .map(|i| {
                (
                    uni(rng, 0.5, 3.5),
                    if i < 3 { 0.04 } else { 0.035 } * rng.random::<f32>(),
                    uni(rng, 0.0, 6.3),
                )
            })
            .collect();
        let wob_a = uni(rng, 0.0, 2.0);
        let wf = w as f32;
        let mut b1 = vec![0f32; w];
        let mut b2 = vec![0f32; w];
        let mut wob = vec![0f32; w];
        for x in 0..w {
            let u = x as f32 / wf * TAU;
            b1[x] = b1_base
                + waves[..3]
                    .iter()
                    .map(|&(f, a, p)| a * (f * u + p).sin())
                    .sum::<f32>();
            b2[x] = b2_base
                + waves[3..]
                    .iter()
                    .map(|&(f, a, p)| a * (f * u + p).sin())
                    .sum::<f32>();
            wob[x] = wob_a * (u * 1.3 + waves[0].2).sin();
        }
        Self { b1, b2, wob }
    }
}

/// Spacing of the coarse tissue grid in pixels.
const G: usize = 4;

/// The tissue echo on a grid every [`G`] pixels, bilinearly interpolated: this keeps
/// the per-pixel work to speckle, lesion and tone mapping (~4x faster).
pub(super) struct TissueGrid {
    gw: usize,
    values: Vec<f32>,
}

impl TissueGrid {
    pub(super) fn new(tissue: &Tissue, area: &Area, w: usize, h: usize) -> Self {
        let (gw, gh) = (w / G + 2, h / G + 2);
        let mut values = vec![0f32; gw * gh];
        for gy in 0..gh {
            let y = (gy * G).min(h - 1);
            for gx in 0..gw {
                let x = (gx * G).min(w - 1);
                let t = area.depth_clamped(x as f32 + 0.5, y as f32 + 0.5);
                values[gy * gw + gx] = tissue.echo(x, y, t);
            }
        }
        Self { gw, values }
    }

    /// A buffer for [`TissueGrid::interpolate_row`].
    pub(super) fn row_buffer(&self) -> Vec<f32> {
        vec![0f32; self.gw]
    }

    /// The grid interpolated vertically to image row `y`, one value per grid column.
    pub(super) fn interpolate_row(&self, y: usize, out: &mut [f32]) {
        let gw = self.gw;
        let (gy, fy) = (y / G, (y % G) as f32 / G as f32);
        for (gx, o) in out.iter_mut().enumerate() {
            let (a, b) = (self.values[gy * gw + gx], self.values[(gy + 1) * gw + gx]);
            *o = a + (b - a) * fy;
        }
    }

    /// The tissue echo at column `x` of a row from [`TissueGrid::interpolate_row`].
    #[inline]
    pub(super) fn at(row: &[f32], x: usize) -> f32 {
        let (gx, fx) = (x / G, (x % G) as f32 / G as f32);
        row[gx] + (row[gx + 1] - row[gx]) * fx
    }
}
