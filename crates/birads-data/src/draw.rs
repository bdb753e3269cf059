//! Small drawing helpers for previews (boxes, panels, grids). Hand-written because they are a
//! few lines each; a drawing crate would add a font stack we do not need.

use image::{Rgb, RgbImage};

/// Draw a rectangle outline `[x0, y0, x1, y1]` (pixels, exclusive ends) `thickness` wide.
pub fn rect(img: &mut RgbImage, b: [f32; 4], color: Rgb<u8>, thickness: u32) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let x0 = (b[0].floor() as i64).clamp(0, w - 1);
    let y0 = (b[1].floor() as i64).clamp(0, h - 1);
    let x1 = (b[2].ceil() as i64 - 1).clamp(0, w - 1);
    let y1 = (b[3].ceil() as i64 - 1).clamp(0, h - 1);
    for t in 0..thickness as i64 {
        for x in x0..=x1 {
            for y in [y0 + t, y1 - t] {
                if (0..h).contains(&y) {
                    img.put_pixel(x as u32, y as u32, color);
                }
            }
        }
        for y in y0..=y1 {
            for x in [x0 + t, x1 - t] {
                if (0..w).contains(&x) {
                    img.put_pixel(x as u32, y as u32, color);
                }
            }
        }
    }
}

/// Images side by side on a dark background with a gap.
pub fn hstack(panels: &[RgbImage], gap: u32) -> RgbImage {
    let w: u32 = panels.iter().map(|p| p.width()).sum::<u32>()
        + gap * (panels.len() as u32).saturating_sub(1);
    let h = panels.iter().map(|p| p.height()).max().unwrap_or(1);
    let mut out = RgbImage::from_pixel(w.max(1), h, Rgb([24, 24, 24]));
    let mut x = 0;
    for p in panels {
        image::imageops::replace(&mut out, p, x as i64, 0);
        x += p.width() + gap;
    }
    out
}

/// Rows of images in a grid with `cols` columns.
pub fn grid(tiles: &[RgbImage], cols: usize, gap: u32) -> RgbImage {
    let rows: Vec<RgbImage> = tiles.chunks(cols.max(1)).map(|c| hstack(c, gap)).collect();
    let w = rows.iter().map(|r| r.width()).max().unwrap_or(1);
    let h: u32 =
        rows.iter().map(|r| r.height()).sum::<u32>() + gap * (rows.len() as u32).saturating_sub(1);
    let mut out = RgbImage::from_pixel(w, h.max(1), Rgb([24, 24, 24]));
    let mut y = 0;
    for r in &rows {
        image::imageops::replace(&mut out, r, 0, y as i64);
        y += r.height() + gap;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rect_draws_only_the_outline() {
        let mut img = RgbImage::new(10, 10);
        rect(&mut img, [2.0, 2.0, 8.0, 8.0], Rgb([255, 0, 0]), 1);
        assert_eq!(img.get_pixel(2, 5), &Rgb([255, 0, 0]));
        assert_eq!(img.get_pixel(7, 5), &Rgb([255, 0, 0]));
        assert_eq!(img.get_pixel(5, 5), &Rgb([0, 0, 0]));
        assert_eq!(img.get_pixel(8, 5), &Rgb([0, 0, 0]));
    }

    #[test]
    fn grid_places_tiles() {
        let a = RgbImage::from_pixel(4, 3, Rgb([1, 1, 1]));
        let g = grid(&[a.clone(), a.clone(), a], 2, 1);
        assert_eq!(g.dimensions(), (9, 7));
        assert_eq!(g.get_pixel(5, 1), &Rgb([1, 1, 1]));
        assert_eq!(g.get_pixel(2, 5), &Rgb([1, 1, 1]));
        assert_eq!(g.get_pixel(5, 5), &Rgb([24, 24, 24]));
        assert_eq!(g.get_pixel(4, 0), &Rgb([24, 24, 24]));
    }
}
