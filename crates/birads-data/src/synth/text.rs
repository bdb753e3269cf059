//! Burned-in annotation text: one line of upper-case text in the 5x7 bitmap
//! [`font`], its size on screen and drawing it.

use super::canvas::{Canvas, Rect};
use super::font;

/// One burned-in annotation: top-left corner, upper-case text, pixel scale, grey value.
pub(super) struct Text {
    pub(super) x: i32,
    pub(super) y: i32,
    pub(super) s: String,
    pub(super) scale: i32,
    pub(super) v: u8,
}

impl Text {
    /// The pixels the text covers (glyph cells, without the gap after the last one).
    pub(super) fn rect(&self) -> Rect {
        Rect {
            x0: self.x,
            y0: self.y,
            x1: self.x + text_width(&self.s, self.scale),
            y1: self.y + 7 * self.scale,
        }
    }
}

/// Width in pixels of `s` at `scale`: 5-pixel glyphs with 1-pixel gaps.
pub(super) fn text_width(s: &str, scale: i32) -> i32 {
    (s.chars().count() as i32 * 6 - 1).max(0) * scale
}

/// Draws `t` onto the canvas, clipped to it; every glyph pixel becomes a
/// `scale` × `scale` block.
pub(super) fn draw_text(canvas: &mut Canvas, t: &Text) {
    let (x0, y0, scale, v) = (t.x, t.y, t.scale, t.v);
    for (ci, ch) in t.s.chars().enumerate() {
        let g = font::glyph(ch);
        let gx = x0 + ci as i32 * 6 * scale;
        for (row, bits) in g.iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (gx + col * scale + dx, y0 + row as i32 * scale + dy);
                        if canvas.contains(px, py) {
                            canvas.set(px, py, v);
                        }
                    }
                }
            }
        }
    }
}
