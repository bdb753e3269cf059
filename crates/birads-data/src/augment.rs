//! Training augmentation, each transform small and separately tested, reproducing the
//! torchvision transforms (on PIL images) of the original recipe: random flips,
//! `RandomAffine`, `GaussianBlur`, `RandomErasing`, and the two CutMix variants of the
//! original datasets. Boxes are carried through so previews can draw the lesion.

use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::image_ops::{crop_padded, resize_bilinear, resize_bilinear_box, Chw};
use crate::sample::LesionBox;

/// A pixel-space box `[x0, y0, x1, y1]` (floating point, exclusive ends).
pub type PixelBox = [f32; 4];

/// `RandomAffine(degrees, translate, scale, shear)` parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AffineParams {
    /// Rotation drawn from ±degrees.
    pub degrees: f32,
    /// Maximum translation as a fraction of width and height.
    pub translate: f32,
    pub scale_min: f32,
    pub scale_max: f32,
    /// x-shear drawn from ±shear degrees (torchvision's single-number form).
    pub shear: f32,
}

impl Default for AffineParams {
    fn default() -> Self {
        Self {
            degrees: 15.0,
            translate: 0.1,
            scale_min: 0.9,
            scale_max: 1.1,
            shear: 10.0,
        }
    }
}

/// The drawn parameters of one affine transform.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub angle: f32,
    pub tx: f32,
    pub ty: f32,
    pub scale: f32,
    pub shear_x: f32,
    pub shear_y: f32,
}

impl Affine {
    /// Draw as torchvision's `RandomAffine.get_params` does (integer-rounded translation).
    pub fn sample(p: &AffineParams, width: u32, height: u32, rng: &mut impl Rng) -> Self {
        let uni = |rng: &mut dyn rand::RngCore, lo: f32, hi: f32| -> f32 {
            if hi > lo {
                rng.random_range(lo..hi)
            } else {
                lo
            }
        };
        let angle = uni(rng, -p.degrees, p.degrees);
        let max_dx = p.translate * width as f32;
        let max_dy = p.translate * height as f32;
        let tx = uni(rng, -max_dx, max_dx).round();
        let ty = uni(rng, -max_dy, max_dy).round();
        let scale = uni(rng, p.scale_min, p.scale_max);
        let shear_x = uni(rng, -p.shear, p.shear);
        Self {
            angle,
            tx,
            ty,
            scale,
            shear_x,
            shear_y: 0.0,
        }
    }

    /// torchvision's inverse affine matrix (output → input coordinates) about the image
    /// centre `(w/2, h/2)`, as used for PIL images: `[a, b, c, d, e, f]`.
    pub fn inverse_matrix(&self, width: u32, height: u32) -> [f64; 6] {
        let (cx, cy) = (width as f64 * 0.5, height as f64 * 0.5);
        let rot = (self.angle as f64).to_radians();
        let sx = (self.shear_x as f64).to_radians();
        let sy = (self.shear_y as f64).to_radians();
        let (tx, ty) = (self.tx as f64, self.ty as f64);
        let a = (rot - sy).cos() / sy.cos();
        let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
        let c = (rot - sy).sin() / sy.cos();
        let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
        let s = self.scale as f64;
        let mut m = [d / s, -b / s, 0.0, -c / s, a / s, 0.0];
        m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty);
        m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty);
        m[2] += cx;
        m[5] += cy;
        m
    }
}

fn invert_affine(m: &[f64; 6]) -> [f64; 6] {
    let det = m[0] * m[4] - m[1] * m[3];
    let (a, b, d, e) = (m[4] / det, -m[1] / det, -m[3] / det, m[0] / det);
    [a, b, -(a * m[2] + b * m[5]), d, e, -(d * m[2] + e * m[5])]
}

/// Apply an affine transform with nearest-neighbour sampling and black fill, as PIL's
/// `Image.transform(AFFINE, …, NEAREST)` does (pixel centres at +0.5, floor). The box, if
/// any, becomes the bounding box of its transformed corners, clipped to the image.
pub fn apply_affine(
    img: &RgbImage,
    t: &Affine,
    lesion: Option<PixelBox>,
) -> (RgbImage, Option<PixelBox>) {
    apply_flips_affine(img, false, false, t, lesion)
}

/// Horizontal/vertical flips followed by an affine transform, in one pass over the output:
/// the flips mirror the source index after the nearest-neighbour lookup, which is exactly
/// flipping first and then transforming, without the two intermediate copies.
///
/// The sampling is Pillow's `affine_fixed` (what `Image.transform(AFFINE, NEAREST)` runs
/// for images under 32768 px): the matrix in 16.16 fixed point with pixel-centre offsets
/// folded into the translation, stepped incrementally, floor by arithmetic shift. Doing the
/// same integer steps gives the same pixels as the original, and is fast.
pub fn apply_flips_affine(
    img: &RgbImage,
    hflip: bool,
    vflip: bool,
    t: &Affine,
    lesion: Option<PixelBox>,
) -> (RgbImage, Option<PixelBox>) {
    let (w, h) = img.dimensions();
    let m = t.inverse_matrix(w, h);
    let mut out = RgbImage::new(w, h);
    let src = img.as_raw();
    let dst = out.as_mut();
    let stride = w as usize * 3;
    let fix = |v: f64| -> i64 { (v * 65536.0 + 0.5).floor() as i64 };
    let (a0, a1, a3, a4) = (fix(m[0]), fix(m[1]), fix(m[3]), fix(m[4]));
    let mut a2 = fix(m[2] + m[0] * 0.5 + m[1] * 0.5);
    let mut a5 = fix(m[5] + m[3] * 0.5 + m[4] * 0.5);
    let (wi, hi) = (w as i64, h as i64);
    for y in 0..h as usize {
        let (mut xx, mut yy) = (a2, a5);
        let row = &mut dst[y * stride..(y + 1) * stride];
        for px in row.chunks_exact_mut(3) {
            let xin = xx >> 16;
            let yin = yy >> 16;
            if xin >= 0 && xin < wi && yin >= 0 && yin < hi {
                let xs = if hflip { wi - 1 - xin } else { xin } as usize;
                let ys = if vflip { hi - 1 - yin } else { yin } as usize;
                let s = ys * stride + xs * 3;
                px.copy_from_slice(&src[s..s + 3]);
            }
            xx += a0;
            yy += a3;
        }
        a2 += a1;
        a5 += a4;
    }
    let lesion = lesion.and_then(|b| {
        let b = flip_box(b, w, h, hflip, vflip);
        let f = invert_affine(&m);
        let corners = [(b[0], b[1]), (b[2], b[1]), (b[0], b[3]), (b[2], b[3])];
        let pts: Vec<(f64, f64)> = corners
            .iter()
            .map(|&(x, y)| {
                let (x, y) = (x as f64, y as f64);
                (f[0] * x + f[1] * y + f[2], f[3] * x + f[4] * y + f[5])
            })
            .collect();
        let x0 = pts
            .iter()
            .map(|p| p.0)
            .fold(f64::INFINITY, f64::min)
            .max(0.0);
        let y0 = pts
            .iter()
            .map(|p| p.1)
            .fold(f64::INFINITY, f64::min)
            .max(0.0);
        let x1 = pts
            .iter()
            .map(|p| p.0)
            .fold(f64::NEG_INFINITY, f64::max)
            .min(w as f64);
        let y1 = pts
            .iter()
            .map(|p| p.1)
            .fold(f64::NEG_INFINITY, f64::max)
            .min(h as f64);
        (x1 > x0 && y1 > y0).then_some([x0 as f32, y0 as f32, x1 as f32, y1 as f32])
    });
    (out, lesion)
}

/// Where a box goes when an image of `w × h` is mirrored.
pub fn flip_box(b: PixelBox, w: u32, h: u32, hflip: bool, vflip: bool) -> PixelBox {
    let (w, h) = (w as f32, h as f32);
    let b = if hflip {
        [w - b[2], b[1], w - b[0], b[3]]
    } else {
        b
    };
    if vflip {
        [b[0], h - b[3], b[2], h - b[1]]
    } else {
        b
    }
}

/// `GaussianBlur(kernel_size, sigma=(min, max))`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BlurParams {
    pub kernel: u32,
    pub sigma_min: f32,
    pub sigma_max: f32,
}

impl Default for BlurParams {
    fn default() -> Self {
        Self {
            kernel: 5,
            sigma_min: 0.1,
            sigma_max: 2.0,
        }
    }
}

/// torchvision's 1-D Gaussian kernel: `exp(-x²/2σ²)` at `linspace(-(k-1)/2, (k-1)/2, k)`,
/// normalised to sum 1.
pub fn gaussian_kernel(k: u32, sigma: f32) -> Vec<f32> {
    let half = (k as f32 - 1.0) * 0.5;
    let pdf: Vec<f32> = (0..k)
        .map(|i| {
            let x = -half + i as f32;
            (-0.5 * (x / sigma) * (x / sigma)).exp()
        })
        .collect();
    let sum: f32 = pdf.iter().sum();
    pdf.into_iter().map(|v| v / sum).collect()
}

/// Round half to even and saturate to u8. Adding and subtracting 1.5·2²³ makes the FPU's
/// round-to-nearest-even do the rounding, which vectorises on baseline x86-64 where
/// `f32::round_ties_even` becomes a libm call per value.
#[inline(always)]
fn round_u8(v: f32) -> u8 {
    const MAGIC: f32 = 12_582_912.0;
    let c = v.clamp(0.0, 255.0);
    ((c + MAGIC) - MAGIC) as u8
}

/// Reflect index into `0..n` without repeating the edge (torch's `reflect` padding).
fn reflect(i: isize, n: isize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let mut m = i.rem_euclid(period);
    if m >= n {
        m = period - m;
    }
    m as usize
}

/// Gaussian blur with reflect padding, computed in f32 and rounded back to u8 (half to
/// even, as `torch.round`), like torchvision's `gaussian_blur` on a uint8 image. Separable:
/// the same kernel along x, then y; each pass runs over whole contiguous rows so the
/// compiler vectorises it.
pub fn gaussian_blur(img: &RgbImage, kernel: u32, sigma: f32) -> RgbImage {
    let k = gaussian_kernel(kernel, sigma);
    let taps = k.len();
    let r = taps / 2;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let cw = w * 3;
    let src = img.as_raw();
    let mut pad = vec![0f32; (w + 2 * r) * 3];
    // Horizontally blurred rows, kept in a small ring (cache-resident) keyed by source row.
    let mut ring: Vec<(usize, Vec<f32>)> =
        (0..taps).map(|_| (usize::MAX, vec![0f32; cw])).collect();
    let mut horizontal = |sy: usize, out: &mut [f32]| {
        let row = &src[sy * cw..(sy + 1) * cw];
        for (p, &v) in pad[r * 3..r * 3 + cw].iter_mut().zip(row) {
            *p = v as f32;
        }
        for px in (0..r).chain(w + r..w + 2 * r) {
            let sx = reflect(px as isize - r as isize, w as isize);
            for c in 0..3 {
                pad[px * 3 + c] = row[sx * 3 + c] as f32;
            }
        }
        if taps == 5 {
            // The recipe's kernel: one fused pass, using the kernel's symmetry.
            let (k0, k1, k2) = (k[0], k[1], k[2]);
            let (p0, p1, p2, p3, p4) = (
                &pad[0..cw],
                &pad[3..3 + cw],
                &pad[6..6 + cw],
                &pad[9..9 + cw],
                &pad[12..12 + cw],
            );
            let taps = p0.iter().zip(p1).zip(p2).zip(p3).zip(p4);
            for (o, ((((a, b), c), d), e)) in out.iter_mut().zip(taps) {
                *o = k0 * (a + e) + k1 * (b + d) + k2 * c;
            }
            return;
        }
        out.fill(0.0);
        for (j, &kv) in k.iter().enumerate() {
            for (o, &v) in out.iter_mut().zip(&pad[j * 3..j * 3 + cw]) {
                *o += kv * v;
            }
        }
    };
    let mut out = RgbImage::new(img.width(), img.height());
    let dst = out.as_mut();
    let mut acc = vec![0f32; cw];
    let mut slots = vec![0usize; taps];
    for y in 0..h {
        for (j, slot_of_tap) in slots.iter_mut().enumerate() {
            let sy = reflect(y as isize + j as isize - r as isize, h as isize);
            let slot = sy % taps;
            if ring[slot].0 != sy {
                horizontal(sy, &mut ring[slot].1);
                ring[slot].0 = sy;
            }
            *slot_of_tap = slot;
        }
        let row = &mut dst[y * cw..(y + 1) * cw];
        if taps == 5 {
            let (k0, k1, k2) = (k[0], k[1], k[2]);
            let [r0, r1, r2, r3, r4] = [0, 1, 2, 3, 4].map(|j| &ring[slots[j]].1[..cw]);
            let taps = r0.iter().zip(r1).zip(r2).zip(r3).zip(r4);
            for (d, ((((a, b), c), e3), e4)) in row.iter_mut().zip(taps) {
                *d = round_u8(k0 * (a + e4) + k1 * (b + e3) + k2 * c);
            }
            continue;
        }
        acc.fill(0.0);
        for (j, &kv) in k.iter().enumerate() {
            for (a, &v) in acc.iter_mut().zip(&ring[slots[j]].1) {
                *a += kv * v;
            }
        }
        for (d, &a) in row.iter_mut().zip(&acc) {
            *d = round_u8(a);
        }
    }
    out
}

/// `RandomErasing(p, scale, ratio, value)` on the normalised tensor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ErasingParams {
    pub p: f32,
    pub area_min: f32,
    pub area_max: f32,
    pub ratio_min: f32,
    pub ratio_max: f32,
    /// Fill value in normalised units (0 = the dataset mean colour).
    pub value: f32,
}

impl Default for ErasingParams {
    fn default() -> Self {
        Self {
            p: 0.9,
            area_min: 0.02,
            area_max: 0.33,
            ratio_min: 0.3,
            ratio_max: 3.3,
            value: 0.0,
        }
    }
}

/// The rectangle `(top, left, height, width)` torchvision's `RandomErasing.get_params`
/// picks, or `None` when it gives up after 10 attempts.
pub fn erasing_rect(
    p: &ErasingParams,
    img_h: usize,
    img_w: usize,
    rng: &mut impl Rng,
) -> Option<(usize, usize, usize, usize)> {
    let area = (img_h * img_w) as f32;
    let (lr0, lr1) = (p.ratio_min.ln(), p.ratio_max.ln());
    for _ in 0..10 {
        let erase_area = area * rng.random_range(p.area_min..=p.area_max);
        let aspect = rng.random_range(lr0..=lr1).exp();
        let h = (erase_area * aspect).sqrt().round() as usize;
        let w = (erase_area / aspect).sqrt().round() as usize;
        if !(h < img_h && w < img_w) {
            continue;
        }
        let i = rng.random_range(0..=img_h - h);
        let j = rng.random_range(0..=img_w - w);
        return Some((i, j, h, w));
    }
    None
}

/// Apply `RandomErasing`; returns the erased rectangle, if any.
pub fn random_erasing(
    t: &mut Chw,
    p: &ErasingParams,
    rng: &mut impl Rng,
) -> Option<(usize, usize, usize, usize)> {
    if rng.random::<f32>() >= p.p {
        return None;
    }
    let rect = erasing_rect(p, t.height, t.width, rng)?;
    let (i, j, h, w) = rect;
    for c in 0..t.channels {
        for y in i..i + h {
            let row = c * t.height * t.width + y * t.width;
            t.data[row + j..row + j + w].fill(p.value);
        }
    }
    Some(rect)
}

/// Python's `int()` of a float: truncation towards zero.
fn py_int(v: f32) -> i64 {
    v.trunc() as i64
}

/// Lesion-aware CutMix of the original classification dataset: image A's lesion box is cut
/// out, resized onto B's lesion box (grown to B's box when smaller in either side, else
/// capped at twice B's box), and pasted centred on B's lesion centre. The caller keeps A's
/// label. Returns the mixed image and the pasted box in its pixel coordinates.
pub fn lesion_cutmix(
    a: &RgbImage,
    box_a: &LesionBox,
    b: &RgbImage,
    box_b: &LesionBox,
) -> (RgbImage, PixelBox) {
    let (w1, h1) = (a.width() as f32, a.height() as f32);
    let (w2, h2) = (b.width() as f32, b.height() as f32);
    let x1_min = py_int(box_a.cx * w1 - box_a.w * w1 / 2.0).max(0);
    let y1_min = py_int(box_a.cy * h1 - box_a.h * h1 / 2.0).max(0);
    let x1_max = py_int(box_a.cx * w1 + box_a.w * w1 / 2.0).min(w1 as i64);
    let y1_max = py_int(box_a.cy * h1 + box_a.h * h1 / 2.0).min(h1 as i64);
    let cw = (x1_max - x1_min).max(1) as u32;
    let ch = (y1_max - y1_min).max(1) as u32;
    let patch = crop_padded(a, x1_min, y1_min, cw, ch);
    let (rw, rh) = if box_a.w < box_b.w || box_a.h < box_b.h {
        (py_int(box_b.w * w2), py_int(box_b.h * h2))
    } else {
        (
            (cw as i64).min(py_int(box_b.w * w2 * 2.0)),
            (ch as i64).min(py_int(box_b.h * h2 * 2.0)),
        )
    };
    // PIL refuses a zero-sized resize; one pixel is the closest meaningful patch.
    let (rw, rh) = (rw.max(1) as u32, rh.max(1) as u32);
    let resized = resize_bilinear(&patch, rw, rh);
    let cx2 = py_int(box_b.cx * w2);
    let cy2 = py_int(box_b.cy * h2);
    let x2 = py_int(cx2 as f32 - rw as f32 / 2.0).max(0);
    let y2 = py_int(cy2 as f32 - rh as f32 / 2.0).max(0);
    let mut out = b.clone();
    // PIL's paste clips at the image border.
    let x_end = (x2 + rw as i64).min(b.width() as i64);
    let y_end = (y2 + rh as i64).min(b.height() as i64);
    for y in y2..y_end {
        for x in x2..x_end {
            out.put_pixel(
                x as u32,
                y as u32,
                *resized.get_pixel((x - x2) as u32, (y - y2) as u32),
            );
        }
    }
    (out, [x2 as f32, y2 as f32, x_end as f32, y_end as f32])
}

/// `ImageOps.fit(img, (w, h), BILINEAR)`: centre-crop to the target aspect ratio, then resize.
pub fn fit(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (lw, lh) = (img.width() as f64, img.height() as f64);
    let live = lw / lh;
    let target = width as f64 / height as f64;
    let (cw, ch) = if live == target {
        (lw, lh)
    } else if live >= target {
        (target * lh, lh)
    } else {
        (lw, lw / target)
    };
    let left = (lw - cw) * 0.5;
    let top = (lh - ch) * 0.5;
    resize_bilinear_box(img, (left, top, cw, ch), width, height)
}

/// Random-rectangle CutMix of the original feature dataset: B is fitted to A's size and a
/// rectangle of it (at a random corner, at least half of A's width and height before
/// clipping) replaces A's pixels. The caller keeps A's labels. Returns the rectangle.
pub fn rectangle_cutmix(a: &RgbImage, b: &RgbImage, rng: &mut impl Rng) -> (RgbImage, PixelBox) {
    let (w, h) = a.dimensions();
    let x = rng.random_range(0..=w);
    let y = rng.random_range(0..=h);
    let bw = rng.random_range(w / 2..=w);
    let bh = rng.random_range(h / 2..=h);
    let b = fit(b, w, h);
    let mut out = a.clone();
    // PIL's rectangle includes both corners: columns x..=min(x+bw, w), clipped to the image.
    let x_end = (x + bw).min(w).saturating_add(1).min(w);
    let y_end = (y + bh).min(h).saturating_add(1).min(h);
    for yy in y..y_end {
        for xx in x..x_end {
            out.put_pixel(xx, yy, *b.get_pixel(xx, yy));
        }
    }
    (out, [x as f32, y as f32, x_end as f32, y_end as f32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use rand::SeedableRng;

    fn rng() -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(3)
    }

    fn ramp(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                (x * 3 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x + y) % 256) as u8,
            ])
        })
    }

    #[test]
    fn identity_affine_changes_nothing() {
        let img = ramp(37, 23);
        let t = Affine {
            angle: 0.0,
            tx: 0.0,
            ty: 0.0,
            scale: 1.0,
            shear_x: 0.0,
            shear_y: 0.0,
        };
        let (out, b) = apply_affine(&img, &t, Some([2.0, 3.0, 10.0, 12.0]));
        assert_eq!(out, img);
        let b = b.unwrap();
        assert!((b[0] - 2.0).abs() < 1e-4 && (b[3] - 12.0).abs() < 1e-4);
    }

    #[test]
    fn affine_translation_and_rotation_move_pixels_as_expected() {
        let img = ramp(40, 30);
        let t = Affine {
            angle: 0.0,
            tx: 5.0,
            ty: -2.0,
            scale: 1.0,
            shear_x: 0.0,
            shear_y: 0.0,
        };
        let (out, b) = apply_affine(&img, &t, Some([10.0, 10.0, 20.0, 20.0]));
        assert_eq!(out.get_pixel(15, 10), img.get_pixel(10, 12));
        assert_eq!(
            out.get_pixel(2, 5),
            &Rgb([0, 0, 0]),
            "uncovered area is black"
        );
        assert_eq!(b.unwrap(), [15.0, 8.0, 25.0, 18.0]);
        // 90° on a square image is a quarter turn of the pixel grid (the sign convention
        // does not matter to training: angles are drawn symmetrically).
        let sq = ramp(16, 16);
        let t = Affine {
            angle: 90.0,
            tx: 0.0,
            ty: 0.0,
            scale: 1.0,
            shear_x: 0.0,
            shear_y: 0.0,
        };
        let (out, _) = apply_affine(&sq, &t, None);
        let expect = image::imageops::rotate90(&sq);
        let same = out
            .pixels()
            .zip(expect.pixels())
            .filter(|(a, b)| a == b)
            .count();
        assert!(same >= 16 * 15, "{same} of 256 pixels agree with rot90");
    }

    #[test]
    fn fused_flips_equal_flipping_first() {
        let img = ramp(41, 29);
        let t = Affine {
            angle: 7.0,
            tx: 3.0,
            ty: -4.0,
            scale: 1.05,
            shear_x: -6.0,
            shear_y: 0.0,
        };
        let b0 = [5.0, 6.0, 20.0, 18.0];
        let b = Some(b0);
        for (hf, vf) in [(true, false), (false, true), (true, true)] {
            let mut flipped = img.clone();
            if hf {
                flipped = image::imageops::flip_horizontal(&flipped);
            }
            if vf {
                flipped = image::imageops::flip_vertical(&flipped);
            }
            let fb = flip_box(b0, 41, 29, hf, vf);
            assert_eq!(
                flip_box(fb, 41, 29, hf, vf),
                b0,
                "flipping twice is the identity"
            );
            let (want, wb) = apply_affine(&flipped, &t, Some(fb));
            let (got, gb) = apply_flips_affine(&img, hf, vf, &t, b);
            assert_eq!(got, want, "hflip {hf} vflip {vf}");
            assert_eq!(gb, wb);
        }
    }

    #[test]
    fn affine_params_stay_in_range() {
        let p = AffineParams::default();
        let mut r = rng();
        for _ in 0..200 {
            let a = Affine::sample(&p, 224, 224, &mut r);
            assert!(a.angle.abs() <= 15.0 && a.shear_x.abs() <= 10.0);
            assert!((0.9..=1.1).contains(&a.scale));
            assert!(a.tx.abs() <= 22.0 && a.tx.fract() == 0.0);
        }
    }

    #[test]
    fn gaussian_kernel_and_blur() {
        let k = gaussian_kernel(5, 1.0);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((k[2] - 0.402_619_9).abs() < 1e-5, "{k:?}");
        assert!((k[0] - k[4]).abs() < 1e-7);
        // A constant image stays constant; an impulse spreads symmetrically.
        let flat = RgbImage::from_pixel(9, 9, Rgb([77, 77, 77]));
        assert_eq!(gaussian_blur(&flat, 5, 1.5), flat);
        let mut dot = RgbImage::new(9, 9);
        dot.put_pixel(4, 4, Rgb([255, 255, 255]));
        let b = gaussian_blur(&dot, 5, 1.0);
        assert!(b.get_pixel(4, 4)[0] < 255 && b.get_pixel(4, 4)[0] > 30);
        assert_eq!(b.get_pixel(3, 4), b.get_pixel(5, 4));
        assert_eq!(b.get_pixel(4, 3), b.get_pixel(4, 5));
        assert_eq!(b.get_pixel(0, 0)[0], 0);
        // The generic path (other kernel sizes) agrees with the fused 5-tap path when the
        // outer taps carry no weight.
        let img = ramp(23, 17);
        let five = gaussian_blur(&img, 5, 0.3);
        let seven = gaussian_blur(&img, 7, 0.3);
        assert_eq!(five, seven);
        // Tiny sigma is (nearly) the identity.
        let img = ramp(12, 12);
        assert_eq!(gaussian_blur(&img, 5, 0.1), img);
        assert_eq!(reflect(-1, 5), 1);
        assert_eq!(reflect(5, 5), 3);
        assert_eq!(reflect(-2, 5), 2);
        for (v, want) in [
            (0.5f32, 0u8),
            (1.5, 2),
            (2.5, 2),
            (254.5, 254),
            (-3.0, 0),
            (300.0, 255),
            (7.49, 7),
            (7.51, 8),
        ] {
            assert_eq!(round_u8(v), want, "{v}");
        }
    }

    #[test]
    fn random_erasing_respects_area_and_ratio() {
        let p = ErasingParams::default();
        let mut r = rng();
        let mut erased = 0;
        for _ in 0..500 {
            let mut t = Chw {
                channels: 3,
                height: 64,
                width: 64,
                data: vec![1.0; 3 * 64 * 64],
            };
            if let Some((i, j, h, w)) = random_erasing(&mut t, &p, &mut r) {
                erased += 1;
                let frac = (h * w) as f32 / 4096.0;
                assert!(frac > 0.01 && frac < 0.36, "{frac}");
                assert!(i + h <= 64 && j + w <= 64);
                let zeros = t.data.iter().filter(|v| **v == 0.0).count();
                assert_eq!(zeros, 3 * h * w);
            } else {
                assert!(t.data.iter().all(|v| *v == 1.0));
            }
        }
        // p = 0.9 minus the rare give-ups.
        assert!((400..=480).contains(&erased), "{erased}");
    }

    #[test]
    fn lesion_cutmix_pastes_a_lesion_onto_b() {
        let a = RgbImage::from_pixel(100, 80, Rgb([200, 200, 200]));
        let b = RgbImage::from_pixel(120, 100, Rgb([10, 10, 10]));
        // A's lesion (20×16 px) is smaller than B's (30×30 px): grown to B's box size.
        let box_a = LesionBox {
            cx: 0.5,
            cy: 0.5,
            w: 0.2,
            h: 0.2,
        };
        let box_b = LesionBox {
            cx: 0.25,
            cy: 0.3,
            w: 0.25,
            h: 0.3,
        };
        let (out, pasted) = lesion_cutmix(&a, &box_a, &b, &box_b);
        assert_eq!(out.dimensions(), (120, 100));
        assert_eq!(pasted, [15.0, 15.0, 45.0, 45.0]);
        assert_eq!(out.get_pixel(30, 30), &Rgb([200, 200, 200]));
        assert_eq!(out.get_pixel(50, 30), &Rgb([10, 10, 10]));
        // A bigger lesion is capped at twice B's box.
        let big = LesionBox {
            cx: 0.5,
            cy: 0.5,
            w: 0.9,
            h: 0.9,
        };
        let small = LesionBox {
            cx: 0.5,
            cy: 0.5,
            w: 0.1,
            h: 0.1,
        };
        let (_, pasted) = lesion_cutmix(&a, &big, &b, &small);
        assert_eq!((pasted[2] - pasted[0], pasted[3] - pasted[1]), (24.0, 20.0));
    }

    #[test]
    fn rectangle_cutmix_covers_at_least_a_quarter_when_inside() {
        let a = RgbImage::from_pixel(64, 48, Rgb([255, 0, 0]));
        let b = RgbImage::from_pixel(30, 90, Rgb([0, 0, 255]));
        let mut r = rng();
        for _ in 0..50 {
            let (out, rect) = rectangle_cutmix(&a, &b, &mut r);
            let blue = out.pixels().filter(|p| p[2] == 255).count() as f32;
            let area = (rect[2] - rect[0]) * (rect[3] - rect[1]);
            assert_eq!(blue, area);
            assert!(rect[2] <= 64.0 && rect[3] <= 48.0);
        }
    }

    #[test]
    fn fit_keeps_the_centre() {
        let img = RgbImage::from_fn(40, 10, |x, _| {
            if (10..30).contains(&x) {
                Rgb([255, 255, 255])
            } else {
                Rgb([0, 0, 0])
            }
        });
        let f = fit(&img, 10, 10);
        assert!(
            f.pixels().all(|p| p[0] == 255),
            "centre 10×10 is all white after fitting"
        );
    }
}
