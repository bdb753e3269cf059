//! The pixel grid: a grey image being drawn on, and integer rectangles on it (text
//! boxes, overlay marks, the lesion's pixel box).

/// A `w` × `h` grey image, row-major, one byte per pixel.
pub(super) struct Canvas {
    pub(super) grey: Vec<u8>,
    pub(super) w: usize,
    pub(super) h: usize,
}

impl Canvas {
    /// An all-black canvas: everything not drawn is frame.
    pub(super) fn new(w: usize, h: usize) -> Self {
        Self {
            grey: vec![0u8; w * h],
            w,
            h,
        }
    }

    /// Whether pixel (x, y) lies on the canvas.
    #[inline]
    pub(super) fn contains(&self, x: i32, y: i32) -> bool {
        x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h
    }

    /// The pixel at (x, y), which must be on the canvas.
    #[inline]
    pub(super) fn get(&self, x: i32, y: i32) -> u8 {
        self.grey[y as usize * self.w + x as usize]
    }

    /// Sets the pixel at (x, y), which must be on the canvas.
    #[inline]
    pub(super) fn set(&mut self, x: i32, y: i32, v: u8) {
        self.grey[y as usize * self.w + x as usize] = v;
    }
}

/// A pixel rectangle, upper bounds exclusive.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rect {
    pub(super) x0: i32,
    pub(super) y0: i32,
    pub(super) x1: i32, // exclusive
    pub(super) y1: i32,
}

impl Rect {
    pub(super) fn overlaps(&self, o: &Rect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }
    #[cfg(test)]
    pub(super) fn contains(&self, x: i32, y: i32) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }
}
