//! Rendering one B-mode-like image with one lesion, step by step. Every step draws
//! from the same random stream in a fixed order, so the image is a pure function of
//! the stream's state:
//!
//! 1. the imaged area (probe geometry and black frame), [`sample_area`];
//! 2. the burned-in text, [`annotations`] (before the lesion, which must not sit under it);
//! 3. the lesion's outline, size and position, [`placement`];
//! 4. the posterior acoustic effect and the tissue model, [`tissue`];
//! 5. the speckle and the composed image with the lesion and its pixel box, [`mod@compose`];
//! 6. calcifications, [`calcifications`]; calipers and depth scale, [`marks`];
//! 7. the text drawn last, on top.

mod annotations;
mod calcifications;
mod compose;
mod marks;
mod placement;
mod tissue;

use image::RgbImage;
use rand::Rng;

use self::annotations::Annotations;
use self::calcifications::draw_calcifications;
use self::compose::{compose, Speckle};
use self::marks::{draw_calipers, draw_depth_scale};
use self::placement::place_lesion;
use self::tissue::{Posterior, Tissue};
use super::area::{sample_area, Area};
use super::canvas::{Canvas, Rect};
use super::spec::LesionSpec;

/// Renders one B-mode-like image with exactly one lesion described by `spec`.
/// Returns the grey (R = G = B) image and the tight lesion box `[cx, cy, w, h]`
/// normalised to the image size.
///
/// # Panics
/// If `width` or `height` is below 64 (too small to hold frame, text and lesion).
pub fn render(
    spec: &LesionSpec,
    width: u32,
    height: u32,
    rng: &mut impl Rng,
) -> (RgbImage, [f32; 4]) {
    render_scaled(spec, width, height, 1.0, rng)
}

/// [`render`] with the lesion diameter multiplied by `lesion_scale` (see
/// [`SynthConfig::lesion_scale`](crate::synth::SynthConfig::lesion_scale)); the lesion
/// still fits inside the imaged area.
pub fn render_scaled(
    spec: &LesionSpec,
    width: u32,
    height: u32,
    lesion_scale: f32,
    rng: &mut impl Rng,
) -> (RgbImage, [f32; 4]) {
    let r = render_full(spec, width, height, lesion_scale, rng);
    let mut rgb = Vec::with_capacity(r.grey.len() * 3);
    for &g in &r.grey {
        rgb.extend_from_slice(&[g, g, g]);
    }
    let img = RgbImage::from_raw(width, height, rgb).expect("buffer size matches");
    (img, r.bbox)
}

/// Output of [`render_full`]; the extra geometry is what the tests check against.
struct Rendered {
    grey: Vec<u8>,
    bbox: [f32; 4],
    #[cfg_attr(not(test), allow(dead_code))]
    area: Area,
    /// Text, caliper and scale marks: the only non-black pixels allowed in the frame.
    #[cfg_attr(not(test), allow(dead_code))]
    overlays: Vec<Rect>,
    /// Pixel box (x0, y0, x1, y1), exclusive upper bounds.
    #[cfg_attr(not(test), allow(dead_code))]
    pbox: Rect,
}

/// The whole image in grey with its geometry (see the module docs for the steps).
fn render_full(
    spec: &LesionSpec,
    width: u32,
    height: u32,
    lesion_scale: f32,
    rng: &mut impl Rng,
) -> Rendered {
    assert!(
        width >= 64 && height >= 64,
        "render needs at least 64x64 pixels, got {width}x{height}"
    );
    let (w, h) = (width as usize, height as usize);
    let (wf, hf) = (w as f32, h as f32);
    let area = sample_area(rng, wf, hf);
    let mut annotations = Annotations::sample(rng, w, h);
    let placed = place_lesion(spec, &area, &annotations, (wf, hf), lesion_scale, rng);
    if placed.fallback {
        // The fallback may sit under annotations: drop those rather than cover the mass.
        annotations.remove_overlapping(&placed.keep_clear());
    }
    let posterior = Posterior::sample(spec, placed.bx, rng);
    let tissue = Tissue::sample(rng, w, h, posterior);
    let speckle = Speckle::sample(rng, w, h);
    let mut canvas = Canvas::new(w, h);
    let pbox = compose(&mut canvas, &area, &tissue, &speckle, &placed);
    if spec.calcification() {
        draw_calcifications(&mut canvas, &placed.lesion, rng);
    }
    let mut overlays = Vec::new();
    draw_calipers(
        &mut canvas,
        &area,
        pbox,
        spec.direction(),
        rng,
        &mut overlays,
    );
    draw_depth_scale(&mut canvas, &area, rng, &mut overlays);
    annotations.draw(&mut canvas, &mut overlays);
    Rendered {
        grey: canvas.grey,
        bbox: normalised_box(pbox, wf, hf),
        area,
        overlays,
        pbox,
    }
}

/// YOLO box `[cx, cy, w, h]` of the pixel box, relative to a `wf` × `hf` image.
fn normalised_box(pbox: Rect, wf: f32, hf: f32) -> [f32; 4] {
    [
        (pbox.x0 + pbox.x1) as f32 * 0.5 / wf,
        (pbox.y0 + pbox.y1) as f32 * 0.5 / hf,
        (pbox.x1 - pbox.x0) as f32 / wf,
        (pbox.y1 - pbox.y0) as f32 / hf,
    ]
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::synth::sample_spec;
    use crate::synth::tests::assert_box;

    #[test]
    fn rendered_pixels_follow_the_features() {
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        let mut framed = 0;
        for i in 0..64usize {
            let features = [i & 1 != 0, i & 2 != 0, i & 4 != 0, i & 8 != 0];
            let spec = LesionSpec {
                birads: i % 6,
                features,
            };
            let (w, h) = (rng.random_range(96..=320u32), rng.random_range(96..=320u32));
            let r = render_full(&spec, w, h, 1.0, &mut rng);
            let (w, h) = (w as usize, h as usize);
            let pb = r.pbox;
            let (bw, bh) = ((pb.x1 - pb.x0) as f32, (pb.y1 - pb.y0) as f32);
            assert!(
                (r.bbox[2] * w as f32 - bw).abs() < 1e-3
                    && (r.bbox[3] * h as f32 - bh).abs() < 1e-3
            );
            assert_box(r.bbox);
            // direction: taller than wide exactly when the label says so.
            if spec.direction() {
                assert!(bh > 1.15 * bw, "case {i}: {bw}x{bh}");
            } else {
                assert!(bw > 1.15 * bh, "case {i}: {bw}x{bh}");
            }
            // calcification: bright specks inside the box, nothing that bright otherwise.
            let mut bright = 0;
            for y in pb.y0..pb.y1 {
                for x in pb.x0..pb.x1 {
                    bright += (r.grey[y as usize * w + x as usize] >= 220) as usize;
                }
            }
            if spec.calcification() {
                assert!(bright >= 12, "case {i}: only {bright} bright pixels");
            } else {
                assert_eq!(bright, 0, "case {i}");
            }
            // frame: black except for burned-in overlays.
            for y in 0..h {
                for x in 0..w {
                    if r.area.depth(x as f32 + 0.5, y as f32 + 0.5).is_none() {
                        framed += 1;
                        let ov = r.overlays.iter().any(|o| o.contains(x as i32, y as i32));
                        assert!(
                            ov || r.grey[y * w + x] <= 10,
                            "case {i}: frame pixel {x},{y}"
                        );
                    }
                }
            }
            // the tissue itself stays within the B-mode range (overlays/specks aside).
            let inside: Vec<u8> = (0..w * h)
                .filter(|&k| {
                    r.area
                        .depth((k % w) as f32 + 0.5, (k / w) as f32 + 0.5)
                        .is_some()
                })
                .map(|k| r.grey[k])
                .collect();
            let mean = inside.iter().map(|&v| v as f64).sum::<f64>() / inside.len() as f64;
            assert!((40.0..=170.0).contains(&mean), "case {i}: mean {mean}");
        }
        assert!(framed > 0, "no image had a black frame");
        // The public render gives R = G = B.
        let (img, b) = render(
            &LesionSpec {
                birads: 0,
                features: [false; 4],
            },
            128,
            100,
            &mut rng,
        );
        assert!(img.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
        assert_box(b);
    }

    #[test]
    fn lesion_scale_grows_the_lesion() {
        // Same lesions drawn at default and 1.8× size: mean box area grows by about 1.8²
        // (less where the enlarged lesion had to shrink to fit the imaged area).
        let mut areas = [0f32; 2];
        for (k, scale) in [1.0f32, 1.8].into_iter().enumerate() {
            for i in 0..40u64 {
                let spec = sample_spec(&mut ChaCha8Rng::seed_from_u64(i));
                let mut rng = ChaCha8Rng::seed_from_u64(1000 + i);
                let (_, b) = render_scaled(&spec, 200, 180, scale, &mut rng);
                assert_box(b);
                areas[k] += b[2] * b[3];
            }
        }
        let ratio = areas[1] / areas[0];
        assert!((2.0..=3.6).contains(&ratio), "area ratio {ratio}");
    }
}
