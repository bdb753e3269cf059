//! The burned-in text of a scanner screen: side and probe frequency top left, maybe
//! depth and clock position below them, gain top right, date bottom left. Decided
//! before the lesion is placed, because the lesion must not sit under the text.

use rand::Rng;

use crate::synth::canvas::{Canvas, Rect};
use crate::synth::math::uni;
use crate::synth::text::{draw_text, text_width, Text};

/// The annotations that fit the image, in drawing order.
pub(super) struct Annotations {
    texts: Vec<Text>,
}

impl Annotations {
    /// Draws the annotation lines of a `w` × `h` image and keeps those that fit.
    pub(super) fn sample(rng: &mut impl Rng, w: usize, h: usize) -> Self {
        let min_side = (w as f32).min(h as f32);
        let mut texts = left_column(rng, min_side);
        if rng.random_bool(0.6) {
            texts.push(gain_label(rng, w));
        }
        if rng.random_bool(0.5) {
            texts.push(date_label(rng, h));
        }
        Self {
            texts: keep_fitting(texts, w, h),
        }
    }

    /// Whether any annotation overlaps `r`.
    pub(super) fn overlaps(&self, r: &Rect) -> bool {
        self.texts.iter().any(|t| t.rect().overlaps(r))
    }

    /// Drops the annotations that overlap `r` (to uncover a lesion that had to be placed
    /// under them).
    pub(super) fn remove_overlapping(&mut self, r: &Rect) {
        self.texts.retain(|t| !t.rect().overlaps(r));
    }

    /// Draws every annotation and records its box in `overlays`.
    pub(super) fn draw(&self, canvas: &mut Canvas, overlays: &mut Vec<Rect>) {
        for t in &self.texts {
            draw_text(canvas, t);
            overlays.push(t.rect());
        }
    }
}

/// The top-left column: breast side and probe frequency, then maybe depth and clock
/// position; large (scale 2) on most images of at least 300 px.
fn left_column(rng: &mut impl Rng, min_side: f32) -> Vec<Text> {
    let scale = if min_side >= 300.0 && rng.random_bool(0.6) {
        2
    } else {
        1
    };
    const SIDES: [&str; 6] = [
        "L BREAST",
        "R BREAST",
        "LT BREAST",
        "RT BREAST",
        "BREAST L",
        "BREAST R",
    ];
    const MHZ: [&str; 6] = ["7.5", "10", "12", "13", "14", "18"];
    let side = SIDES[rng.random_range(0..6)].to_string();
    let mhz = format!("{}MHZ", MHZ[rng.random_range(0..6)]);
    let mut lines = vec![side, mhz];
    if rng.random_bool(0.7) {
        lines.push(format!("D {:.1}CM", uni(rng, 2.5, 5.5)));
    }
    if rng.random_bool(0.3) {
        lines.push(format!(
            "{}:00 {}CM FN",
            rng.random_range(1..=12),
            rng.random_range(1..=6)
        ));
    }
    let x: i32 = rng.random_range(3..10);
    let mut y: i32 = rng.random_range(3..10);
    let mut texts = Vec::with_capacity(lines.len());
    for s in lines {
        let v = rng.random_range(200..=255u8);
        texts.push(Text { x, y, s, scale, v });
        y += 9 * scale;
    }
    texts
}

/// Gain and dynamic range, right-aligned at the top.
fn gain_label(rng: &mut impl Rng, w: usize) -> Text {
    let s = format!(
        "G{} DR{}",
        rng.random_range(40..70),
        rng.random_range(50..80)
    );
    let tw = text_width(&s, 1);
    let (x, y, v) = (
        w as i32 - tw - rng.random_range(3..10),
        rng.random_range(3..10),
        rng.random_range(190..=255u8),
    );
    Text {
        x,
        y,
        s,
        scale: 1,
        v,
    }
}

/// Date and time of the exam at the bottom left.
fn date_label(rng: &mut impl Rng, h: usize) -> Text {
    let s = format!(
        "20{:02}-{:02}-{:02} {:02}:{:02}",
        rng.random_range(15..25),
        rng.random_range(1..13),
        rng.random_range(1..29),
        rng.random_range(7..19),
        rng.random_range(0..60)
    );
    let (x, y, v) = (
        rng.random_range(3..10),
        h as i32 - 7 - rng.random_range(3..8),
        rng.random_range(190..=255u8),
    );
    Text {
        x,
        y,
        s,
        scale: 1,
        v,
    }
}

/// Small images cannot hold every annotation: keeps, in order, what fits in the image,
/// stays off the annotations kept so far and (beyond the first line) lies in the top
/// 30 % or the bottom 20 %.
fn keep_fitting(texts: Vec<Text>, w: usize, h: usize) -> Vec<Text> {
    let hf = h as f32;
    let mut kept: Vec<Text> = Vec::new();
    for (i, t) in texts.into_iter().enumerate() {
        let r = t.rect();
        let in_image = r.x0 >= 0 && r.x1 <= w as i32 - 2 && r.y0 >= 0 && r.y1 <= h as i32;
        let in_band = i == 0 || r.y1 as f32 <= 0.3 * hf || r.y0 as f32 >= 0.8 * hf;
        let grown = Rect {
            x0: r.x0 - 3,
            y0: r.y0 - 1,
            x1: r.x1 + 3,
            y1: r.y1 + 1,
        };
        if in_image && in_band && !kept.iter().any(|o| o.rect().overlaps(&grown)) {
            kept.push(t);
        }
    }
    kept
}
