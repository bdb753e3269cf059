//! Sizing and placing the lesion: its outline, orientation and aspect (the direction
//! label), its diameter, and a position well inside the imaged area, off the
//! annotations and clear of skin and chest wall.

use rand::Rng;

use super::annotations::Annotations;
use crate::synth::area::Area;
use crate::synth::canvas::Rect;
use crate::synth::lesion::{lesion_table, Lesion};
use crate::synth::math::uni;
use crate::synth::spec::LesionSpec;

/// A box in continuous pixel coordinates: top-left corner and size.
#[derive(Debug, Clone, Copy)]
pub(super) struct BoxF {
    pub(super) x0: f32,
    pub(super) y0: f32,
    pub(super) w: f32,
    pub(super) h: f32,
}

/// The lesion placed in the image.
pub(super) struct Placed {
    pub(super) lesion: Lesion,
    /// The box the outline was scaled into (its tight box, up to rasterisation).
    pub(super) bx: BoxF,
    /// How far beyond the box the lesion changes pixels (soft edge, halo), pixels.
    pub(super) reach: f32,
    /// No random position fitted: the lesion sits in the middle of the area, maybe
    /// under annotations.
    pub(super) fallback: bool,
}

impl Placed {
    /// The pixel window the lesion can affect: (x0, x1, y0, y1), upper bounds exclusive,
    /// clipped to a `w` × `h` image.
    pub(super) fn window(&self, w: usize, h: usize) -> (usize, usize, usize, usize) {
        let (b, reach) = (self.bx, self.reach);
        let lx0 = ((b.x0 - reach).floor().max(0.0)) as usize;
        let lx1 = ((b.x0 + b.w + reach).ceil() as usize).min(w);
        let ly0 = ((b.y0 - reach).floor().max(0.0)) as usize;
        let ly1 = ((b.y0 + b.h + reach).ceil() as usize).min(h);
        (lx0, lx1, ly0, ly1)
    }

    /// The region annotations must leave free so that they do not cover the mass.
    pub(super) fn keep_clear(&self) -> Rect {
        let (b, reach) = (self.bx, self.reach);
        Rect {
            x0: (b.x0 - reach) as i32 - 8,
            y0: (b.y0 - reach) as i32 - 8,
            x1: (b.x0 + b.w + reach) as i32 + 9,
            y1: (b.y0 + b.h + reach) as i32 + 9,
        }
    }
}

/// Draws the lesion of `spec` and places it in `area` of a `wf` × `hf` image. Its
/// diameter is 15–35 % of the shorter side times `lesion_scale`; the aspect of the
/// tight box is 0.5–0.75 (taller than wide) exactly when the direction label is set.
pub(super) fn place_lesion(
    spec: &LesionSpec,
    area: &Area,
    annotations: &Annotations,
    (wf, hf): (f32, f32),
    lesion_scale: f32,
    rng: &mut impl Rng,
) -> Placed {
    let min_side = wf.min(hf);
    let outline = lesion_table(spec, rng);
    let rot = uni(rng, -0.25, 0.25);
    let (cos, sin) = (rot.cos(), rot.sin());
    let (umin, umax, vmin, vmax) = Lesion::extents(&outline.table, cos, sin);
    let ratio = if spec.direction() {
        uni(rng, 0.5, 0.75)
    } else {
        uni(rng, 1.4, 2.0)
    };
    let mut diam = (min_side * lesion_scale * uni(rng, 0.15, 0.35)).max(20.0);
    let tw = if outline.blurred {
        uni(rng, 0.06, 0.11) * diam
    } else if outline.spiculated {
        1.1
    } else {
        0.8
    };
    let halo = spec.boundary() && rng.random_bool(0.5);
    let margin = (0.03 * min_side).max(10.0) + 2.0 * tw + if halo { 0.06 * diam } else { 0.0 };
    let bounds = area.bounds(wf, hf);
    let fit = Fit {
        area,
        annotations,
        margin,
    };
    let placed = search_position(rng, bounds, ratio, &mut diam, &fit);
    let bx = placed.unwrap_or_else(|| central_box(bounds, min_side, ratio));
    let sx = bx.w / (umax - umin);
    let sy = bx.h / (vmax - vmin);
    let lesion = Lesion {
        cx: bx.x0 - umin * sx,
        cy: bx.y0 - vmin * sy,
        sx,
        sy,
        cos,
        sin,
        s_eff: (sx * sy).sqrt(),
        edge_w: tw,
        halo_amp: if halo { uni(rng, 35.0, 70.0) } else { 0.0 },
        halo_w: (0.05 * diam).max(2.0),
        value: uni(rng, 18.0, 40.0),
        table: outline.table,
    };
    let reach = 2.0 * tw + if halo { 4.0 * lesion.halo_w } else { 0.0 } + 2.0;
    Placed {
        lesion,
        bx,
        reach,
        fallback: placed.is_none(),
    }
}

/// Up to 400 random positions inside the area's bounding rectangle `bounds` (left,
/// right, top, bottom); every 40 attempts the diameter shrinks by 10 %, so a lesion
/// too large for a heavily framed image still finds room. Returns the first box that
/// fits; `diam` is left at the diameter of the last attempt.
fn search_position(
    rng: &mut impl Rng,
    (bl, br, bt, bb): (f32, f32, f32, f32),
    ratio: f32,
    diam: &mut f32,
    fit: &Fit,
) -> Option<BoxF> {
    for attempt in 0..400 {
        if attempt > 0 && attempt % 40 == 0 {
            *diam *= 0.9;
        }
        let bw = *diam * ratio.sqrt();
        let bh = *diam / ratio.sqrt();
        if bw >= br - bl || bh >= bb - bt {
            continue;
        }
        let x0 = uni(rng, bl, br - bw);
        let y0 = uni(rng, bt, bb - bh);
        let bx = BoxF {
            x0,
            y0,
            w: bw,
            h: bh,
        };
        if fit.fits(bx) {
            return Some(bx);
        }
    }
    None
}

/// Fallback (tiny or heavily framed images): a small lesion (12 % of the shorter side)
/// in the middle of the area, a little below half depth.
fn central_box((bl, br, bt, bb): (f32, f32, f32, f32), min_side: f32, ratio: f32) -> BoxF {
    let d = 0.12 * min_side;
    let (bw, bh) = (d * ratio.sqrt(), d / ratio.sqrt());
    BoxF {
        x0: 0.5 * (bl + br - bw),
        y0: bt + 0.55 * (bb - bt) - 0.5 * bh,
        w: bw,
        h: bh,
    }
}

/// Where a lesion box may go: with `margin` pixels of tissue all around inside the
/// area, its top below 12 % and its bottom above 88 % of the depth (skin and chest
/// wall), and its surroundings off the annotations.
struct Fit<'a> {
    area: &'a Area,
    annotations: &'a Annotations,
    margin: f32,
}

impl Fit<'_> {
    fn fits(&self, b: BoxF) -> bool {
        let (area, margin) = (self.area, self.margin);
        let (x0, y0, bw, bh) = (b.x0, b.y0, b.w, b.h);
        let (ex0, ey0, ex1, ey1) = (x0 - margin, y0 - margin, x0 + bw + margin, y0 + bh + margin);
        let (mx, my) = (0.5 * (ex0 + ex1), 0.5 * (ey0 + ey1));
        for (px, py) in [
            (ex0, ey0),
            (ex1, ey0),
            (ex0, ey1),
            (ex1, ey1),
            (mx, ey0),
            (mx, ey1),
            (ex0, my),
            (ex1, my),
        ] {
            if area.depth(px, py).is_none() {
                return false;
            }
        }
        let top_ok = [(x0, y0), (x0 + bw, y0)]
            .iter()
            .all(|&(x, y)| area.depth(x, y).is_some_and(|t| t > 0.12));
        let bot_ok = [(x0, y0 + bh), (x0 + bw, y0 + bh)]
            .iter()
            .all(|&(x, y)| area.depth(x, y).is_some_and(|t| t < 0.88));
        let r = Rect {
            x0: ex0 as i32 - 2,
            y0: ey0 as i32 - 2,
            x1: ex1 as i32 + 3,
            y1: ey1 as i32 + 3,
        };
        top_ok && bot_ok && !self.annotations.overlaps(&r)
    }
}
