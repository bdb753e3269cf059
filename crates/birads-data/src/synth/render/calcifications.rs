//! Calcifications: bright specks well inside the mass, the only tissue pixels that
//! reach the top of the grey range.

use std::f32::consts::PI;

use rand::Rng;

use crate::synth::canvas::Canvas;
use crate::synth::lesion::Lesion;
use crate::synth::math::uni;

/// Draws 3–8 specks of 2–4 pixels at random points of the inner 60 % of the lesion's
/// radius, each entirely inside the mask (so they stay inside the box) and not
/// touching another. Small or very spiculated masses leave little room: after 200
/// attempts only 2-pixel specks are tried, with a looser inside test; after 400 the
/// lesion keeps what it has.
pub(super) fn draw_calcifications(canvas: &mut Canvas, lesion: &Lesion, rng: &mut impl Rng) {
    let n: i32 = rng.random_range(3..=8);
    let mut drawn: i32 = 0;
    for attempt in 0..400 {
        if drawn == n {
            break;
        }
        let relaxed = attempt >= 200;
        let th = uni(rng, -PI, PI);
        let rho = lesion.radius(th) * uni(rng, 0.0, 0.6);
        let (px, py) = lesion.point(th, rho);
        let size: i32 = if relaxed { 2 } else { rng.random_range(2..=4) };
        let (sx0, sy0) = (
            (px - size as f32 * 0.5).round() as i32,
            (py - size as f32 * 0.5).round() as i32,
        );
        let limit = if relaxed { -0.2 } else { -1.0 };
        if !(speck_is_free(canvas, sx0, sy0, size)
            && speck_is_inside(lesion, sx0, sy0, size, limit))
        {
            continue;
        }
        let v = rng.random_range(230..=255u8);
        draw_speck(canvas, sx0, sy0, size, v);
        drawn += 1;
    }
}

/// Whether the `size` × `size` speck at (x0, y0) and a one-pixel ring around it hold
/// no earlier speck (pixels off the canvas count as free).
fn speck_is_free(canvas: &Canvas, x0: i32, y0: i32, size: i32) -> bool {
    (-1..=size).all(|j| {
        (-1..=size).all(|i| {
            let (x, y) = (x0 + i, y0 + j);
            !canvas.contains(x, y) || canvas.get(x, y) < 220
        })
    })
}

/// Whether every pixel centre of the speck lies at least `-limit` pixels inside the
/// lesion's margin.
fn speck_is_inside(lesion: &Lesion, x0: i32, y0: i32, size: i32, limit: f32) -> bool {
    (0..size).all(|j| {
        (0..size).all(|i| lesion.dist((x0 + i) as f32 + 0.5, (y0 + j) as f32 + 0.5) < limit)
    })
}

/// A `size` × `size` block of grey `v`, its corners cut at size 4 (roughly round).
fn draw_speck(canvas: &mut Canvas, x0: i32, y0: i32, size: i32, v: u8) {
    for j in 0..size {
        for i in 0..size {
            let corner = size == 4 && (i == 0 || i == 3) && (j == 0 || j == 3);
            if !corner {
                canvas.set(x0 + i, y0 + j, v);
            }
        }
    }
}
