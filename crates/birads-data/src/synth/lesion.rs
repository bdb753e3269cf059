//! The lesion's outline and its placement in the image: a polar radius table whose
//! low-order harmonics carry the shape label and whose high-frequency detail
//! (micro-lobulation, spicules) carries the margin label, then rotation and
//! anisotropic scaling to pixels.

use std::f32::consts::{PI, TAU};

use rand::Rng;

use super::math::{step, uni};
use super::spec::LesionSpec;

/// Entries of the radius table (one per half degree).
pub(super) const TABLE: usize = 720;

/// A lesion outline before placement: the radius at each table angle (unit-ish circle,
/// angle from -π), and how its margin is to be drawn.
pub(super) struct Outline {
    pub(super) table: Vec<f32>,
    /// Spicules radiate from the margin: a slightly softer edge.
    pub(super) spiculated: bool,
    /// The margin is blurred (indistinct): a wide soft edge.
    pub(super) blurred: bool,
}

/// A lesion in its own frame: polar radius table over angle (unit-ish circle,
/// perturbed by lobulation / spicules), then rotation and anisotropic scaling to
/// pixels. Scaling is chosen from the table's extents so the *tight* box has exactly
/// the wanted aspect, which keeps the direction label honest for irregular shapes.
pub(super) struct Lesion {
    pub(super) table: Vec<f32>,
    /// Image position of the frame's origin, pixels.
    pub(super) cx: f32,
    pub(super) cy: f32,
    /// Pixels per unit along image x and y.
    pub(super) sx: f32,
    pub(super) sy: f32,
    /// Rotation of the frame.
    pub(super) cos: f32,
    pub(super) sin: f32,
    /// Geometric mean scale, turning frame distances into pixel distances.
    pub(super) s_eff: f32,
    /// Width in pixels of the soft transition from lesion to tissue.
    pub(super) edge_w: f32,
    /// Brightness of the echogenic halo around the margin (0: none), and its decay length.
    pub(super) halo_amp: f32,
    pub(super) halo_w: f32,
    /// Mean echo level inside the lesion (hypoechoic: dark).
    pub(super) value: f32,
}

impl Lesion {
    /// The outline's radius at frame angle `theta` (-π..π), linearly interpolated.
    #[inline]
    pub(super) fn radius(&self, theta: f32) -> f32 {
        let f = (theta + PI) * (TABLE as f32 / TAU);
        let i = (f as usize).min(TABLE - 1);
        let t = f - i as f32;
        let a = self.table[i];
        let b = self.table[(i + 1) % TABLE];
        a + (b - a) * t
    }

    /// Approximate signed distance in pixels from the margin (negative inside).
    #[inline]
    pub(super) fn dist(&self, px: f32, py: f32) -> f32 {
        let u0 = (px - self.cx) / self.sx;
        let v0 = (py - self.cy) / self.sy;
        let u = u0 * self.cos + v0 * self.sin;
        let v = -u0 * self.sin + v0 * self.cos;
        let rho = (u * u + v * v).sqrt();
        (rho - self.radius(v.atan2(u))) * self.s_eff
    }

    /// Extents (umin, umax, vmin, vmax) of the outline in the unscaled image frame.
    pub(super) fn extents(table: &[f32], cos: f32, sin: f32) -> (f32, f32, f32, f32) {
        let mut e = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for (i, &r) in table.iter().enumerate() {
            let th = i as f32 / TABLE as f32 * TAU - PI;
            let (u, v) = (r * th.cos(), r * th.sin());
            let (x, y) = (u * cos - v * sin, u * sin + v * cos);
            e = (e.0.min(x), e.1.max(x), e.2.min(y), e.3.max(y));
        }
        e
    }

    /// Pixel position of a point at polar (theta, rho) in the lesion frame.
    pub(super) fn point(&self, theta: f32, rho: f32) -> (f32, f32) {
        let (u, v) = (rho * theta.cos(), rho * theta.sin());
        let (x, y) = (u * self.cos - v * self.sin, u * self.sin + v * self.cos);
        (self.cx + x * self.sx, self.cy + y * self.sy)
    }

    /// Echo added by the halo at signed distance `d` (only outside, past the soft edge).
    #[inline]
    pub(super) fn halo(&self, d: f32) -> f32 {
        self.halo_amp
            * (-d / self.halo_w).exp()
            * step(d, 0.5 * self.edge_w, 0.5 * self.edge_w + 0.5)
    }

    /// How much of a pixel at signed distance `d` belongs to the lesion: 1 well inside,
    /// 0 well outside, smooth across the edge.
    #[inline]
    pub(super) fn cover(&self, d: f32) -> f32 {
        1.0 - step(d, 0.0, self.edge_w)
    }
}

/// One cosine term of the outline: (angular frequency, amplitude, phase).
type Harmonic = (f32, f32, f32);

/// Draws the outline of a lesion with the shape and margin of `spec`.
pub(super) fn lesion_table(spec: &LesionSpec, rng: &mut impl Rng) -> Outline {
    let harmonics = shape_harmonics(spec, rng);
    let margin = Margin::sample(spec, rng);
    let table = (0..TABLE)
        .map(|i| {
            let th = i as f32 / TABLE as f32 * TAU - PI;
            let mut r = 1.0;
            for &(k, a, p) in &harmonics {
                r += a * (k * th + p).cos();
            }
            margin.add_detail(th, &mut r);
            r.max(0.3)
        })
        .collect();
    Outline {
        table,
        spiculated: margin.spiculated,
        blurred: margin.blurred,
    }
}

/// The low-order harmonics that make the overall shape: an almost perfect ellipse
/// (before scaling), or clearly lobulated for an irregular shape.
fn shape_harmonics(spec: &LesionSpec, rng: &mut impl Rng) -> Vec<Harmonic> {
    let mut harmonics: Vec<Harmonic> = Vec::new();
    if spec.shape() {
        // Lobulated: several large low-order harmonics, clearly not an ellipse.
        let mut ks = [3.0f32, 4.0, 5.0, 6.0];
        for i in (1..4).rev() {
            ks.swap(i, rng.random_range(0..=i));
        }
        for &k in &ks[..3] {
            harmonics.push((k, uni(rng, 0.09, 0.17), uni(rng, 0.0, TAU)));
        }
    } else {
        harmonics.push((3.0, uni(rng, 0.0, 0.025), uni(rng, 0.0, TAU)));
    }
    harmonics
}

/// The margin's high-frequency detail. A not-smooth margin always gets angular
/// micro-lobulation, plus spicules and/or blur; a smooth one gets none of these.
struct Margin {
    spiculated: bool,
    blurred: bool,
    /// Micro-lobulation (frequency, amplitude, phase); amplitude 0 for none.
    micro: Harmonic,
    /// Spicules (centre angle, half width, length).
    spikes: Vec<(f32, f32, f32)>,
}

impl Margin {
    fn sample(spec: &LesionSpec, rng: &mut impl Rng) -> Self {
        let mut m = Margin {
            spiculated: false,
            blurred: false,
            micro: (0.0, 0.0, 0.0),
            spikes: Vec::new(),
        };
        if spec.boundary() {
            let r: f32 = rng.random();
            m.spiculated = r < 0.75;
            m.blurred = r >= 0.45;
            m.micro = (
                rng.random_range(10..=18) as f32,
                uni(rng, 0.07, 0.13),
                uni(rng, 0.0, TAU),
            );
            if m.spiculated {
                for _ in 0..rng.random_range(7..=14) {
                    m.spikes.push((
                        uni(rng, -PI, PI),
                        uni(rng, 0.05, 0.11),
                        uni(rng, 0.25, 0.55),
                    ));
                }
            }
        }
        m
    }

    /// Adds the margin detail at angle `th` to the radius `r` (term by term, in a fixed
    /// order: the floating-point sum, and so every pixel, depends on it).
    fn add_detail(&self, th: f32, r: &mut f32) {
        let micro = self.micro;
        if micro.1 > 0.0 {
            // |sin| has cusps: angular rather than wavy bumps.
            *r += micro.1 * ((micro.0 * th * 0.5 + micro.2).sin().abs() - 0.64);
        }
        for &(c, wdt, len) in &self.spikes {
            let mut d = (th - c).abs();
            if d > PI {
                d = TAU - d;
            }
            if d < wdt {
                *r += len * (1.0 - d / wdt).powf(1.5);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn shape_and_margin_tables_differ() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        // Relative amplitude of the outline's angular harmonics in [lo, hi]: shape lives
        // in the low orders (lobulation), an unsmooth margin in the high orders.
        let band = |t: &[f32], lo: usize, hi: usize| {
            let n = t.len() as f32;
            let mean = t.iter().sum::<f32>() / n;
            let mut e = 0f32;
            for k in lo..=hi {
                let (mut c, mut s) = (0f32, 0f32);
                for (i, r) in t.iter().enumerate() {
                    let a = std::f32::consts::TAU * k as f32 * i as f32 / n;
                    c += r * a.cos();
                    s += r * a.sin();
                }
                e += (c * c + s * s) * 4.0 / (n * n);
            }
            e.sqrt() / mean
        };
        for _ in 0..20 {
            let mk = |b: bool, s: bool| LesionSpec {
                birads: 0,
                features: [b, false, false, s],
            };
            let plain = lesion_table(&mk(false, false), &mut rng).table;
            let lobed = lesion_table(&mk(false, true), &mut rng).table;
            let rough = lesion_table(&mk(true, false), &mut rng).table;
            let (lp, ll) = (band(&plain, 2, 7), band(&lobed, 2, 7));
            assert!(
                lp < 0.03 && ll > 0.15,
                "low band: plain {lp}, lobulated {ll}"
            );
            let (hp, hl, hr) = (
                band(&plain, 9, 60),
                band(&lobed, 9, 60),
                band(&rough, 9, 60),
            );
            assert!(
                hp < 0.005 && hl < 0.005 && hr > 0.03,
                "high band: {hp} {hl} {hr}"
            );
        }
    }
}
