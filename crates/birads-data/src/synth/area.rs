//! The imaging area: the part of the image inside the black frame where tissue is
//! shown, either a linear-probe rectangle or a convex-probe sector, with the depth
//! below the skin at every point inside it.

use rand::Rng;

use super::math::uni;

/// The imaging area inside the black frame: a linear-probe rectangle or a
/// convex-probe sector (annulus segment around an apex above the image).
#[derive(Debug, Clone, Copy)]
pub(super) enum Area {
    Rect {
        l: f32,
        r: f32,
        t: f32,
        b: f32,
    },
    Sector {
        ax: f32,
        ay: f32,
        r_in: f32,
        r_out: f32,
        tan_half: f32,
    },
}

impl Area {
    /// Normalised depth 0 (skin) .. 1 (deepest) when (x, y) is inside, else None.
    #[inline]
    pub(super) fn depth(&self, x: f32, y: f32) -> Option<f32> {
        match *self {
            Area::Rect { l, r, t, b } => {
                if x >= l && x < r && y >= t && y < b {
                    Some((y - t) / (b - t))
                } else {
                    None
                }
            }
            Area::Sector {
                ax,
                ay,
                r_in,
                r_out,
                tan_half,
            } => {
                let dx = x - ax;
                let dy = y - ay;
                if dy <= 0.0 || dx.abs() > dy * tan_half {
                    return None;
                }
                let rr = (dx * dx + dy * dy).sqrt();
                if rr < r_in || rr >= r_out {
                    None
                } else {
                    Some((rr - r_in) / (r_out - r_in))
                }
            }
        }
    }

    /// Depth clamped to [0, 1] everywhere (for the coarse tissue grid, which also
    /// needs values just outside the area to interpolate up to its edge).
    pub(super) fn depth_clamped(&self, x: f32, y: f32) -> f32 {
        let t = match *self {
            Area::Rect { t, b, .. } => (y - t) / (b - t),
            Area::Sector {
                ax,
                ay,
                r_in,
                r_out,
                ..
            } => {
                let (dx, dy) = (x - ax, y - ay);
                ((dx * dx + dy * dy).sqrt() - r_in) / (r_out - r_in)
            }
        };
        t.clamp(0.0, 1.0)
    }

    /// Pixel columns of row centre `yc` that may be inside: exact for a rectangle,
    /// a superset for a sector (the caller then checks each pixel).
    pub(super) fn row_span(&self, yc: f32, w: usize) -> (usize, usize, bool) {
        match *self {
            Area::Rect { l, r, t, b } => {
                if yc >= t && yc < b {
                    // l and r are whole numbers: x + 0.5 >= l  <=>  x >= l.
                    (l as usize, (r as usize).min(w), true)
                } else {
                    (0, 0, true)
                }
            }
            Area::Sector {
                ax,
                ay,
                r_out,
                tan_half,
                ..
            } => {
                let dy = yc - ay;
                if dy <= 0.0 || dy >= r_out {
                    return (0, 0, false);
                }
                let half = (r_out * r_out - dy * dy).sqrt().min(dy * tan_half) + 1.0;
                let xs = (ax - half).floor().max(0.0) as usize;
                let xe = ((ax + half).ceil().max(0.0) as usize).min(w);
                (xs.min(xe), xe, false)
            }
        }
    }

    /// Bounding rectangle (clipped to the image) used to sample lesion positions.
    pub(super) fn bounds(&self, w: f32, h: f32) -> (f32, f32, f32, f32) {
        match *self {
            Area::Rect { l, r, t, b } => (l, r, t, b),
            Area::Sector {
                ax,
                ay,
                r_in,
                r_out,
                tan_half,
            } => {
                let half = (r_out * tan_half / (1.0 + tan_half * tan_half).sqrt()).min(w);
                (
                    (ax - half).max(0.0),
                    (ax + half).min(w),
                    (ay + r_in).max(0.0),
                    (ay + r_out).min(h),
                )
            }
        }
    }
}

/// Draws the probe geometry: a convex-probe sector (35 %) or a linear-probe rectangle
/// with black bars on some sides (left and right together at most 28 % of the width).
pub(super) fn sample_area(rng: &mut impl Rng, w: f32, h: f32) -> Area {
    if rng.random_bool(0.35) {
        let y_top = if rng.random_bool(0.6) {
            h * uni(rng, 0.02, 0.10)
        } else {
            0.0
        };
        let y_bot = h * uni(rng, 0.88, 1.08);
        let ax = w * (0.5 + uni(rng, -0.04, 0.04));
        let ht = w * uni(rng, 0.26, 0.40);
        let hb = ht + w * uni(rng, 0.12, 0.30);
        let tan_half = (hb - ht) / (y_bot - y_top);
        let ay = y_top - ht / tan_half;
        Area::Sector {
            ax,
            ay,
            r_in: y_top - ay,
            r_out: y_bot - ay,
            tan_half,
        }
    } else {
        let mut side = |p: f64, lo: f32, hi: f32| {
            if rng.random_bool(p) {
                uni(rng, lo, hi)
            } else {
                0.0
            }
        };
        let mut l = side(0.65, 0.02, 0.16);
        let mut r = side(0.65, 0.02, 0.16);
        let t = side(0.5, 0.02, 0.12);
        let b = side(0.5, 0.02, 0.10);
        if l + r > 0.28 {
            let k = 0.28 / (l + r);
            l *= k;
            r *= k;
        }
        Area::Rect {
            l: (l * w).round(),
            r: ((1.0 - r) * w).round(),
            t: (t * h).round(),
            b: ((1.0 - b) * h).round(),
        }
    }
}
