//! Small numeric helpers shared by the label sampler and the renderer: random draws
//! with a given distribution, and smooth steps for soft edges.

use rand::Rng;

/// Standard normal via Box-Muller (only used for a handful of draws per image).
pub(super) fn gauss(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Uniform in `[lo, hi)` from one `f32` draw.
pub(super) fn uni(rng: &mut impl Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// Smoothstep on `[0, 1]`: 0 below, 1 above, `3z² - 2z³` between.
#[inline]
pub(super) fn smooth01(z: f32) -> f32 {
    let z = z.clamp(0.0, 1.0);
    z * z * (3.0 - 2.0 * z)
}

/// Smooth step from 0 at `c - hw` to 1 at `c + hw`.
#[inline]
pub(super) fn step(v: f32, c: f32, hw: f32) -> f32 {
    smooth01((v - c) / (2.0 * hw) + 0.5)
}
