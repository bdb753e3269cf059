//! Two augmentations beyond the original recipe, for training from scratch on few images:
//! a lesion-centred zoom (the lesion box is known at training time) and brightness/contrast
//! jitter (scanner gain and dynamic range differ between devices). Both are off unless a
//! config switches them on; the original recipe does not use them.

use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::augment::PixelBox;

/// Crop a region around the lesion (then the rest of the chain resizes it to the model's
/// input): with probability `p`, a window of the image's aspect ratio, `margin` times the
/// smallest such window holding the lesion box (`margin` drawn from [`margin_min`,
/// `margin_max`], capped at the whole image), placed at random where it still holds the box.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoomParams {
    pub p: f32,
    pub margin_min: f32,
    pub margin_max: f32,
}

impl Default for ZoomParams {
    fn default() -> Self {
        Self {
            p: 0.5,
            margin_min: 1.5,
            margin_max: 3.0,
        }
    }
}

/// Where a zoom crops: `(x0, y0, width, height)` in whole pixels.
pub type Window = (u32, u32, u32, u32);

/// Draw a zoom window for `lesion` in a `w × h` image (`None`: not applied this time). Draws
/// one number for the decision, and three more when it applies.
pub fn sample_zoom(
    p: &ZoomParams,
    w: u32,
    h: u32,
    lesion: PixelBox,
    rng: &mut impl Rng,
) -> Option<Window> {
    if rng.random::<f32>() >= p.p {
        return None;
    }
    let margin = if p.margin_max > p.margin_min {
        rng.random_range(p.margin_min..p.margin_max)
    } else {
        p.margin_min
    };
    let (fw, fh) = (w as f32, h as f32);
    let bw = (lesion[2] - lesion[0]).max(1.0);
    let bh = (lesion[3] - lesion[1]).max(1.0);
    // The smallest window of the image's shape that holds the box, times the margin.
    let scale = ((bw / fw).max(bh / fh) * margin).min(1.0);
    let cw = ((fw * scale).round() as u32).clamp(1, w);
    let ch = ((fh * scale).round() as u32).clamp(1, h);
    // Left edges that keep the box inside (as far as the window is wide enough).
    let place = |lo: f32, hi: f32, size: u32, full: u32, u: f32| -> u32 {
        let first = (hi - size as f32).ceil().max(0.0) as u32;
        let last = (lo.floor().max(0.0) as u32).min(full - size);
        let (a, b) = if first <= last {
            (first, last)
        } else {
            (last, first)
        };
        a + ((b - a + 1) as f32 * u).floor().min((b - a) as f32) as u32
    };
    let ux: f32 = rng.random();
    let uy: f32 = rng.random();
    let x0 = place(lesion[0], lesion[2], cw, w, ux);
    let y0 = place(lesion[1], lesion[3], ch, h, uy);
    Some((x0, y0, cw, ch))
}

/// Crop `img` to a window; the lesion box moves with it (clipped).
pub fn apply_zoom(
    img: &RgbImage,
    (x0, y0, cw, ch): Window,
    lesion: Option<PixelBox>,
) -> (RgbImage, Option<PixelBox>) {
    let out = image::imageops::crop_imm(img, x0, y0, cw, ch).to_image();
    let lesion = lesion.map(|b| {
        let (x, y) = (x0 as f32, y0 as f32);
        [
            (b[0] - x).clamp(0.0, cw as f32),
            (b[1] - y).clamp(0.0, ch as f32),
            (b[2] - x).clamp(0.0, cw as f32),
            (b[3] - y).clamp(0.0, ch as f32),
        ]
    });
    (out, lesion)
}

/// Brightness and contrast factors drawn from `[1 − brightness, 1 + brightness]` and
/// `[1 − contrast, 1 + contrast]`, as torchvision's `ColorJitter(brightness, contrast)`; here
/// always brightness first.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntensityParams {
    pub brightness: f32,
    pub contrast: f32,
}

impl Default for IntensityParams {
    fn default() -> Self {
        Self {
            brightness: 0.2,
            contrast: 0.2,
        }
    }
}

/// Draw the two factors (always two draws).
pub fn sample_intensity(p: &IntensityParams, rng: &mut impl Rng) -> (f32, f32) {
    let mut factor = |r: f32| {
        if r > 0.0 {
            rng.random_range(1.0 - r..1.0 + r)
        } else {
            1.0
        }
    };
    let b = factor(p.brightness);
    let c = factor(p.contrast);
    (b, c)
}

/// Scale every value by `brightness`, then pull it towards (`contrast` < 1) or push it away
/// from the mean grey level by `contrast`, rounding and clamping to 0..255 after each step as
/// Pillow's `ImageEnhance` does on 8-bit images. The mean grey level is that of ITU-R 601-2
/// luma (`L = 0.299 R + 0.587 G + 0.114 B`), as torchvision's `adjust_contrast`.
pub fn apply_intensity(img: &RgbImage, brightness: f32, contrast: f32) -> RgbImage {
    let clamp = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    let mut out = img.clone();
    for v in out.iter_mut() {
        *v = clamp(*v as f32 * brightness);
    }
    let n = (out.width() as f64 * out.height() as f64).max(1.0);
    let luma: f64 = out
        .pixels()
        .map(|p| 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64)
        .sum::<f64>()
        / n;
    let mean = luma.round() as f32;
    for v in out.iter_mut() {
        *v = clamp(mean + contrast * (*v as f32 - mean));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 100])
        })
    }

    #[test]
    fn zoom_windows_keep_the_lesion_and_the_image_shape() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let p = ZoomParams {
            p: 1.0,
            margin_min: 1.2,
            margin_max: 2.5,
        };
        let (w, h) = (300u32, 400u32);
        for _ in 0..500 {
            let x0 = rng.random_range(0.0..250.0f32);
            let y0 = rng.random_range(0.0..350.0f32);
            let b = [
                x0,
                y0,
                x0 + rng.random_range(5.0..50.0),
                y0 + rng.random_range(5.0..50.0),
            ];
            let (cx, cy, cw, ch) = sample_zoom(&p, w, h, b, &mut rng).unwrap();
            assert!(cx + cw <= w && cy + ch <= h, "inside the image");
            // The image's 3:4 shape, to the pixel the rounding allows.
            assert!(
                (cw as f32 - 0.75 * ch as f32).abs() <= 1.0,
                "image aspect kept: {cw}×{ch}"
            );
            assert!(
                cx as f32 <= b[0].floor() + 0.5 && (cx + cw) as f32 >= b[2].ceil() - 0.5,
                "{b:?} in x {cx}+{cw}"
            );
            assert!(
                cy as f32 <= b[1].floor() + 0.5 && (cy + ch) as f32 >= b[3].ceil() - 0.5,
                "{b:?} in y {cy}+{ch}"
            );
            let (img, moved) = apply_zoom(&gradient(w, h), (cx, cy, cw, ch), Some(b));
            assert_eq!(img.dimensions(), (cw, ch));
            assert_eq!(
                img.get_pixel(0, 0)[0],
                (cx % 256) as u8,
                "the crop starts at the window"
            );
            let m = moved.unwrap();
            assert!(
                (m[2] - m[0] - (b[2] - b[0])).abs() < 1e-3,
                "the box keeps its size"
            );
        }
        let never = ZoomParams { p: 0.0, ..p };
        assert!(sample_zoom(&never, w, h, [10.0, 10.0, 20.0, 20.0], &mut rng).is_none());
    }

    #[test]
    fn a_box_larger_than_the_margin_allows_gives_the_whole_image() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let p = ZoomParams {
            p: 1.0,
            margin_min: 2.0,
            margin_max: 2.0,
        };
        let win = sample_zoom(&p, 200, 100, [20.0, 10.0, 180.0, 90.0], &mut rng).unwrap();
        assert_eq!(win, (0, 0, 200, 100));
    }

    #[test]
    fn intensity_matches_the_formula_and_identity_leaves_pixels() {
        let img = gradient(64, 48);
        assert_eq!(apply_intensity(&img, 1.0, 1.0), img);
        let out = apply_intensity(&img, 1.1, 0.8);
        let bright: Vec<f32> = img
            .iter()
            .map(|&v| (v as f32 * 1.1).round().min(255.0))
            .collect();
        let n = (64 * 48) as f64;
        let mean = (bright
            .chunks(3)
            .map(|p| 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64)
            .sum::<f64>()
            / n)
            .round() as f32;
        for (o, b) in out.iter().zip(&bright) {
            assert_eq!(
                *o,
                (mean + 0.8 * (b - mean)).round().clamp(0.0, 255.0) as u8
            );
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        for _ in 0..100 {
            let (b, c) = sample_intensity(&IntensityParams::default(), &mut rng);
            assert!((0.8..1.2).contains(&b) && (0.8..1.2).contains(&c));
        }
    }
}
