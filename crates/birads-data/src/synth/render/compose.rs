//! The B-mode image proper: tissue echo times speckle inside the imaged area, the
//! lesion blended in with its soft edge and halo, then log-like compression to grey
//! levels. Also finds the lesion's tight pixel box from its mask.

use rand::Rng;

use super::placement::Placed;
use super::tissue::{Tissue, TissueGrid};
use crate::synth::area::Area;
use crate::synth::canvas::{Canvas, Rect};
use crate::synth::math::uni;
use crate::synth::noise::speckle_field;

/// The speckle of one image and how strongly it modulates tissue and lesion.
pub(super) struct Speckle {
    /// Mean-1 speckle field, row-major.
    field: Vec<f32>,
    /// Speckle contrast in tissue and inside the lesion.
    c_tissue: f32,
    c_lesion: f32,
}

impl Speckle {
    /// Speckle grain scales with the image like a real probe's resolution cell.
    pub(super) fn sample(rng: &mut impl Rng, w: usize, h: usize) -> Self {
        let min_side = (w as f32).min(h as f32);
        let kx = ((min_side / 110.0) * uni(rng, 0.8, 1.3))
            .round()
            .clamp(2.0, 8.0) as usize;
        let ky = ((min_side / 220.0) * uni(rng, 0.8, 1.3))
            .round()
            .clamp(1.0, 4.0) as usize;
        let field = speckle_field(w, h, rng.random(), kx, ky);
        let c_tissue = uni(rng, 0.55, 0.75);
        let c_lesion = uni(rng, 0.5, 0.7);
        Self {
            field,
            c_tissue,
            c_lesion,
        }
    }
}

/// Paints the imaged area of the (black) canvas and returns the lesion's tight pixel
/// box: the pixels whose centre lies inside the margin.
pub(super) fn compose(
    canvas: &mut Canvas,
    area: &Area,
    tissue: &Tissue,
    speckle: &Speckle,
    placed: &Placed,
) -> Rect {
    let (w, h) = (canvas.w, canvas.h);
    let grid = TissueGrid::new(tissue, area, w, h);
    let (lx0, lx1, ly0, ly1) = placed.window(w, h);
    let lesion = &placed.lesion;
    let mut grid_row = grid.row_buffer();
    let mut mask = MaskBounds::new();
    for y in 0..h {
        let yc = y as f32 + 0.5;
        grid.interpolate_row(y, &mut grid_row);
        let trow = tissue.tex.row(y);
        let in_lrows = y >= ly0 && y < ly1;
        let srow = &speckle.field[y * w..(y + 1) * w];
        let orow = &mut canvas.grey[y * w..(y + 1) * w];
        let (xs, xe, exact) = area.row_span(yc, w);
        for x in xs..xe {
            let xc = x as f32 + 0.5;
            if !exact && area.depth(xc, yc).is_none() {
                continue;
            }
            let mut e = TissueGrid::at(&grid_row, x);
            let mut c = speckle.c_tissue;
            if in_lrows && x >= lx0 && x < lx1 {
                let d = lesion.dist(xc, yc);
                if d > 0.0 && lesion.halo_amp > 0.0 {
                    e += lesion.halo(d);
                }
                let a = lesion.cover(d);
                if a > 0.0 {
                    let lv = lesion.value * (0.75 + 0.5 * tissue.tex.at(trow, x));
                    e += (lv - e) * a;
                    c += (speckle.c_lesion - c) * a;
                }
                if d <= 0.0 {
                    mask.include(x, y);
                }
            }
            orow[x] = compress(e * (1.0 + c * (srow[x] - 1.0)));
        }
    }
    mask.rect().unwrap_or_else(|| {
        // Degenerate (cannot happen for >= 64 px): fall back to the placed box.
        let b = placed.bx;
        pixel_box(
            b.x0 as usize,
            b.y0 as usize,
            (b.x0 + b.w) as usize,
            (b.y0 + b.h) as usize,
        )
    })
}

/// Soft knee like log compression: tissue never saturates, so only calcifications and
/// overlays reach the top of the grey range.
#[inline]
fn compress(mut v: f32) -> u8 {
    if v > 170.0 {
        v = 170.0 + 35.0 * (1.0 - (-(v - 170.0) / 35.0).exp());
    }
    v.clamp(0.0, 255.0) as u8
}

/// The box spanned by pixels (x0, y0) ..= (x1, y1).
fn pixel_box(x0: usize, y0: usize, x1: usize, y1: usize) -> Rect {
    Rect {
        x0: x0 as i32,
        y0: y0 as i32,
        x1: x1 as i32 + 1,
        y1: y1 as i32 + 1,
    }
}

/// Bounding box of a set of pixels, grown one pixel at a time.
struct MaskBounds {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

impl MaskBounds {
    fn new() -> Self {
        Self {
            x0: usize::MAX,
            y0: usize::MAX,
            x1: 0,
            y1: 0,
        }
    }

    #[inline]
    fn include(&mut self, x: usize, y: usize) {
        self.x0 = self.x0.min(x);
        self.x1 = self.x1.max(x);
        self.y0 = self.y0.min(y);
        self.y1 = self.y1.max(y);
    }

    /// The box, or `None` when no pixel was included.
    fn rect(&self) -> Option<Rect> {
        (self.x0 != usize::MAX).then(|| pixel_box(self.x0, self.y0, self.x1, self.y1))
    }
}
