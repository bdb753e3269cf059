//! Measurement overlays a sonographer leaves on the screen: caliper crosses at the
//! ends of the lesion's long axis and depth-scale ticks beside a linear-probe image.
//! Every mark's box goes to the overlay list (the only bright pixels allowed in the
//! black frame).

use rand::Rng;

use crate::synth::area::Area;
use crate::synth::canvas::{Canvas, Rect};
use crate::synth::math::uni;

/// On half the images, '+' marks just outside the ends of the long axis of the lesion
/// box `pbox` (vertical when the lesion is taller than wide); a mark that would leave
/// the imaged area or the canvas is skipped.
pub(super) fn draw_calipers(
    canvas: &mut Canvas,
    area: &Area,
    pbox: Rect,
    taller_than_wide: bool,
    rng: &mut impl Rng,
    overlays: &mut Vec<Rect>,
) {
    if !rng.random_bool(0.5) {
        return;
    }
    let off: i32 = rng.random_range(4..=8);
    let arm: i32 = rng.random_range(2..=4);
    let (cxm, cym) = ((pbox.x0 + pbox.x1) / 2, (pbox.y0 + pbox.y1) / 2);
    let ends = if taller_than_wide {
        [(cxm, pbox.y0 - off - arm - 1), (cxm, pbox.y1 + off + arm)]
    } else {
        [(pbox.x0 - off - arm - 1, cym), (pbox.x1 + off + arm, cym)]
    };
    let v = rng.random_range(210..=255u8);
    let (w, h) = (canvas.w as i32, canvas.h as i32);
    for (px, py) in ends {
        if area.depth(px as f32, py as f32).is_none() || px - arm < 0 || py - arm < 0 {
            continue;
        }
        if px + arm >= w || py + arm >= h {
            continue;
        }
        for k in -arm..=arm {
            canvas.set(px + k, py, v);
            canvas.set(px, py + k, v);
        }
        overlays.push(Rect {
            x0: px - arm,
            y0: py - arm,
            x1: px + arm + 1,
            y1: py + arm + 1,
        });
    }
}

/// On 60 % of the linear-probe images, a depth scale right of the imaged area (or just
/// inside it when the frame is narrow): a tick every 1/6–1/10 of the depth (at least 8
/// px), every fifth one longer. Sector images draw nothing (and draw no random number).
pub(super) fn draw_depth_scale(
    canvas: &mut Canvas,
    area: &Area,
    rng: &mut impl Rng,
    overlays: &mut Vec<Rect>,
) {
    let Area::Rect { r, t, b, .. } = *area else {
        return;
    };
    if !rng.random_bool(0.6) {
        return;
    }
    let w = canvas.w as i32;
    let xr = r as i32;
    let x_start = if (w - xr) >= 10 { xr + 3 } else { xr - 7 };
    let step_px = ((b - t) / uni(rng, 6.0, 10.0)).max(8.0);
    let v = rng.random_range(150..=220u8);
    let mut k = 0;
    let mut yy = t + 2.0;
    while yy < b - 2.0 {
        let len = if k % 5 == 0 { 5 } else { 3 };
        let ty = yy as i32;
        let tick = Rect {
            x0: x_start,
            y0: ty,
            x1: (x_start + len).min(w),
            y1: ty + 1,
        };
        for x in tick.x0.max(0)..tick.x1 {
            canvas.set(x, ty, v);
        }
        overlays.push(tick);
        yy += step_px;
        k += 1;
    }
}
