//! The preprocessing chains, assembled from the small transforms of [`image_ops`] and
//! [`augment`]. [`Preprocess`] travels with a model's weights, so prediction reproduces
//! what training saw.
//!
//! Training, as the original recipe: decode RGB → CutMix (with probability) → CutBlack
//! (if on) → CenterCrop(672) → [lesion zoom] → horizontal / vertical flips → RandomAffine →
//! GaussianBlur → [brightness/contrast] → Resize(224) → ToTensor + Normalize → RandomErasing
//! (the bracketed two are birads' additions, off in the original recipe).
//! Inference: decode RGB → CutBlack (if on) → CenterCrop → Resize → ToTensor + Normalize.

use std::borrow::Cow;

use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::augment::{
    apply_flips_affine, flip_box, gaussian_blur, lesion_cutmix, random_erasing, rectangle_cutmix,
    Affine, AffineParams, BlurParams, ErasingParams, PixelBox,
};
use crate::augment_more::{
    apply_intensity, apply_zoom, sample_intensity, sample_zoom, IntensityParams, ZoomParams,
};
use crate::image_ops::{
    center_crop, center_crop_origin, cut_black, resize_bilinear, to_tensor_normalized, Chw,
    CropBox, CutBlackParams, IMAGENET_MEAN, IMAGENET_STD,
};
use crate::sample::LesionBox;

/// Deterministic preprocessing shared by training and inference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Trim black borders first (the original feature model was trained with it).
    pub cut_black: bool,
    #[serde(default)]
    pub cut_black_params: CutBlackParams,
    /// Square CenterCrop side in source pixels (zero padded when larger); `None` skips it.
    pub crop: Option<u32>,
    /// Model input side.
    pub size: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocess {
    /// The original `run.py` chain: CenterCrop(672) → Resize(224) → Normalize(ImageNet).
    pub fn original_inference() -> Self {
        Self {
            cut_black: false,
            cut_black_params: CutBlackParams::default(),
            crop: Some(672),
            size: 224,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    /// The same chain at another model input size; the crop (the field of view in source
    /// pixels) stays.
    pub fn with_size(mut self, size: u32) -> Self {
        self.size = size;
        self
    }
}

impl Default for Preprocess {
    fn default() -> Self {
        Self::original_inference()
    }
}

/// Which CutMix the training set uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CutMix {
    Off,
    /// The classification dataset's lesion-aware CutMix, applied with probability `p`.
    Lesion {
        p: f32,
    },
    /// The feature dataset's random-rectangle CutMix. The original drew twice at 0.5 each,
    /// so its effective probability was 0.25.
    Rectangle {
        p: f32,
    },
}

/// Random training augmentation; `None` switches a transform off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    pub hflip: f32,
    pub vflip: f32,
    pub affine: Option<AffineParams>,
    pub blur: Option<BlurParams>,
    pub erasing: Option<ErasingParams>,
    pub cutmix: CutMix,
    /// Lesion-centred zoom (needs lesion boxes; images without one are left whole).
    #[serde(default)]
    pub zoom: Option<ZoomParams>,
    /// Brightness/contrast jitter.
    #[serde(default)]
    pub intensity: Option<IntensityParams>,
}

impl Augment {
    /// The original recipe, with the classification dataset's CutMix at probability `p`.
    pub fn original(cutmix: CutMix) -> Self {
        Self {
            hflip: 0.5,
            vflip: 0.5,
            affine: Some(AffineParams::default()),
            blur: Some(BlurParams::default()),
            erasing: Some(ErasingParams::default()),
            cutmix,
            zoom: None,
            intensity: None,
        }
    }

    /// Every transform on with its default parameters (what `name = true` in a config file
    /// switches on).
    pub fn all_defaults() -> Self {
        Self {
            zoom: Some(ZoomParams::default()),
            intensity: Some(IntensityParams::default()),
            ..Self::original(CutMix::Off)
        }
    }

    /// No randomness at all: training then sees exactly the inference chain.
    pub fn none() -> Self {
        Self {
            hflip: 0.0,
            vflip: 0.0,
            affine: None,
            blur: None,
            erasing: None,
            cutmix: CutMix::Off,
            zoom: None,
            intensity: None,
        }
    }
}

/// The image before tensor conversion plus where things went, for previews and serving.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub tensor: Chw,
    /// The final-size RGB image the tensor was made from.
    pub image: RgbImage,
    /// Lesion box in the final image, if known.
    pub lesion: Option<PixelBox>,
    /// CutBlack's crop box in the source image.
    pub cut_box: CropBox,
    /// What the augmentation did, in words (for previews).
    pub applied: Vec<String>,
}

fn to_pixels(b: &LesionBox, w: u32, h: u32) -> PixelBox {
    b.to_pixels(w, h)
}

fn shift(b: PixelBox, dx: f32, dy: f32) -> PixelBox {
    [b[0] - dx, b[1] - dy, b[2] - dx, b[3] - dy]
}

fn clip(b: PixelBox, w: u32, h: u32) -> Option<PixelBox> {
    let c = [
        b[0].max(0.0),
        b[1].max(0.0),
        b[2].min(w as f32),
        b[3].min(h as f32),
    ];
    (c[2] > c[0] && c[3] > c[1]).then_some(c)
}

/// CutBlack + CenterCrop, carrying the lesion box.
fn crop_stage(
    img: &RgbImage,
    lesion: Option<PixelBox>,
    p: &Preprocess,
) -> (RgbImage, Option<PixelBox>, CropBox) {
    let (mut img, cut) = if p.cut_black {
        cut_black(img, &p.cut_black_params)
    } else {
        (img.clone(), CropBox::full(img.width(), img.height()))
    };
    let mut lesion = lesion.map(|b| shift(b, cut.x0 as f32, cut.y0 as f32));
    if let Some(c) = p.crop {
        let (x0, y0) = center_crop_origin(img.width(), img.height(), c, c);
        img = center_crop(&img, c, c);
        lesion = lesion.map(|b| shift(b, x0 as f32, y0 as f32));
    }
    let lesion = lesion.and_then(|b| clip(b, img.width(), img.height()));
    (img, lesion, cut)
}

fn resize_stage(
    img: &RgbImage,
    lesion: Option<PixelBox>,
    size: u32,
) -> (RgbImage, Option<PixelBox>) {
    let (sx, sy) = (
        size as f32 / img.width() as f32,
        size as f32 / img.height() as f32,
    );
    (
        resize_bilinear(img, size, size),
        lesion.map(|b| [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]),
    )
}

/// The inference chain.
pub fn preprocess(img: &RgbImage, lesion: Option<&LesionBox>, p: &Preprocess) -> Prepared {
    let lesion = lesion.map(|b| to_pixels(b, img.width(), img.height()));
    let (img, lesion, cut_box) = crop_stage(img, lesion, p);
    let (img, lesion) = resize_stage(&img, lesion, p.size);
    Prepared {
        tensor: to_tensor_normalized(&img, p.mean, p.std),
        image: img,
        lesion,
        cut_box,
        applied: Vec::new(),
    }
}

/// Another training image for CutMix.
pub struct Partner<'a> {
    pub image: &'a RgbImage,
    pub lesion: Option<LesionBox>,
}

/// The training chain. All randomness comes from `rng`, so one seed gives one result: the
/// stages draw in the original's order (CutMix, zoom, flips and affine, blur, intensity,
/// erasing).
pub fn augment(
    img: &RgbImage,
    lesion: Option<&LesionBox>,
    partner: Option<Partner<'_>>,
    p: &Preprocess,
    a: &Augment,
    rng: &mut impl Rng,
) -> Prepared {
    let mut applied = Vec::new();
    let (src, lesion_px) = cutmix_stage(img, lesion, partner, a.cutmix, rng, &mut applied);
    let (mut im, mut lesion_px, cut_box) = crop_stage(&src, lesion_px, p);
    if let (Some(zp), Some(b)) = (&a.zoom, lesion_px) {
        let (w, h) = im.dimensions();
        if let Some(win) = sample_zoom(zp, w, h, b, rng) {
            (im, lesion_px) = apply_zoom(&im, win, lesion_px);
            applied.push(format!("zoom {}×{} at ({},{})", win.2, win.3, win.0, win.1));
        }
    }
    let (im, lesion_px) = geometry_stage(im, lesion_px, a, rng, &mut applied);
    let im = photometric_stage(im, a, rng, &mut applied);
    let (im, lesion_px) = resize_stage(&im, lesion_px, p.size);
    let mut tensor = to_tensor_normalized(&im, p.mean, p.std);
    if let Some(ep) = &a.erasing {
        if let Some((i, j, eh, ew)) = random_erasing(&mut tensor, ep, rng) {
            applied.push(format!("erase {ew}×{eh} at ({j},{i})"));
        }
    }
    Prepared {
        tensor,
        image: im,
        lesion: lesion_px,
        cut_box,
        applied,
    }
}

/// CutMix with the partner, when drawn: the image to go on with and its lesion in pixels.
fn cutmix_stage<'a>(
    img: &'a RgbImage,
    lesion: Option<&LesionBox>,
    partner: Option<Partner<'_>>,
    cutmix: CutMix,
    rng: &mut impl Rng,
    applied: &mut Vec<String>,
) -> (Cow<'a, RgbImage>, Option<PixelBox>) {
    let lesion_px = lesion.map(|b| to_pixels(b, img.width(), img.height()));
    match (cutmix, partner) {
        // Decide first, as the original did, so the draw count does not depend on boxes.
        (CutMix::Lesion { p: prob }, Some(partner)) if rng.random::<f32>() < prob => {
            if let (Some(box_a), Some(box_b)) = (lesion, partner.lesion) {
                let (mixed, pasted) = lesion_cutmix(img, box_a, partner.image, &box_b);
                applied.push("lesion cutmix".to_string());
                return (Cow::Owned(mixed), Some(pasted));
            }
        }
        (CutMix::Rectangle { p: prob }, Some(partner)) if rng.random::<f32>() < prob => {
            let (mixed, _) = rectangle_cutmix(img, partner.image, rng);
            applied.push("rectangle cutmix".to_string());
            return (Cow::Owned(mixed), lesion_px);
        }
        _ => {}
    }
    (Cow::Borrowed(img), lesion_px)
}

/// Flips and the random affine (one resampling when both apply), the lesion box with them.
fn geometry_stage(
    im: RgbImage,
    lesion_px: Option<PixelBox>,
    a: &Augment,
    rng: &mut impl Rng,
    applied: &mut Vec<String>,
) -> (RgbImage, Option<PixelBox>) {
    let (w, h) = im.dimensions();
    // Draw in the original order (hflip, vflip, affine) so one seed means one augmentation.
    let hflip = rng.random::<f32>() < a.hflip;
    let vflip = rng.random::<f32>() < a.vflip;
    if hflip {
        applied.push("hflip".into());
    }
    if vflip {
        applied.push("vflip".into());
    }
    if let Some(ap) = &a.affine {
        let t = Affine::sample(ap, w, h, rng);
        applied.push(format!(
            "affine {:.1}° t=({},{}) s={:.2} shear={:.1}°",
            t.angle, t.tx, t.ty, t.scale, t.shear_x
        ));
        return apply_flips_affine(&im, hflip, vflip, &t, lesion_px);
    }
    let mut im = im;
    if hflip {
        im = crate::image_ops::flip_horizontal(&im);
    }
    if vflip {
        im = crate::image_ops::flip_vertical(&im);
    }
    (im, lesion_px.map(|b| flip_box(b, w, h, hflip, vflip)))
}

/// Gaussian blur and brightness/contrast, where configured.
fn photometric_stage(
    mut im: RgbImage,
    a: &Augment,
    rng: &mut impl Rng,
    applied: &mut Vec<String>,
) -> RgbImage {
    if let Some(bp) = &a.blur {
        let sigma = if bp.sigma_max > bp.sigma_min {
            rng.random_range(bp.sigma_min..bp.sigma_max)
        } else {
            bp.sigma_min
        };
        im = gaussian_blur(&im, bp.kernel, sigma);
        applied.push(format!("blur σ={sigma:.2}"));
    }
    if let Some(ip) = &a.intensity {
        let (b, c) = sample_intensity(ip, rng);
        im = apply_intensity(&im, b, c);
        applied.push(format!("brightness ×{b:.2} contrast ×{c:.2}"));
    }
    im
}

/// Turn a normalised tensor back into an RGB image (erased areas show as the mean colour).
pub fn denormalize(t: &Chw, mean: [f32; 3], std: [f32; 3]) -> RgbImage {
    let plane = t.height * t.width;
    RgbImage::from_fn(t.width as u32, t.height as u32, |x, y| {
        let i = y as usize * t.width + x as usize;
        let px = |c: usize| {
            ((t.data[c * plane + i] * std[c] + mean[c]) * 255.0)
                .round()
                .clamp(0.0, 255.0) as u8
        };
        image::Rgb([px(0), px(1), px(2)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;

    fn test_image() -> RgbImage {
        RgbImage::from_fn(500, 400, |x, y| {
            if x < 30 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([(x % 200 + 30) as u8, (y % 180 + 40) as u8, 90])
            }
        })
    }

    #[test]
    fn inference_chain_is_the_composition_of_its_steps() {
        let img = test_image();
        let p = Preprocess::original_inference();
        let out = preprocess(&img, None, &p);
        let manual = to_tensor_normalized(
            &resize_bilinear(&center_crop(&img, 672, 672), 224, 224),
            IMAGENET_MEAN,
            IMAGENET_STD,
        );
        assert_eq!(out.tensor, manual);
        assert_eq!(
            (out.tensor.channels, out.tensor.height, out.tensor.width),
            (3, 224, 224)
        );
    }

    #[test]
    fn lesion_box_follows_cutblack_crop_and_resize() {
        let img = test_image();
        let b = LesionBox::from_pixels(130.0, 100.0, 100.0, 50.0, 500, 400);
        let p = Preprocess {
            cut_black: true,
            crop: Some(400),
            size: 200,
            ..Preprocess::original_inference()
        };
        let out = preprocess(&img, Some(&b), &p);
        // CutBlack removes 30 columns (470 wide), CenterCrop(400) starts at round(35.0) = 35.
        assert_eq!(
            out.cut_box,
            CropBox {
                x0: 30,
                y0: 0,
                x1: 500,
                y1: 400
            }
        );
        let l = out.lesion.unwrap();
        let expect = [
            (130.0 - 30.0 - 35.0) / 2.0,
            50.0,
            (230.0 - 65.0) / 2.0,
            75.0,
        ];
        for k in 0..4 {
            assert!((l[k] - expect[k]).abs() < 1e-3, "{l:?} vs {expect:?}");
        }
    }

    #[test]
    fn same_seed_same_augmentation() {
        let img = test_image();
        let b = LesionBox {
            cx: 0.5,
            cy: 0.5,
            w: 0.2,
            h: 0.2,
        };
        let p = Preprocess {
            size: 64,
            ..Preprocess::original_inference()
        };
        let a = Augment::original(CutMix::Lesion { p: 0.5 });
        let run = |seed| {
            let mut rng = stream(seed, &[1]);
            augment(
                &img,
                Some(&b),
                Some(Partner {
                    image: &img,
                    lesion: Some(b),
                }),
                &p,
                &a,
                &mut rng,
            )
        };
        let (x, y, z) = (run(1), run(1), run(2));
        assert_eq!(x.tensor, y.tensor);
        assert_eq!(x.applied, y.applied);
        assert_ne!(x.tensor, z.tensor);
        assert_eq!(x.tensor.len(), 3 * 64 * 64);
    }

    #[test]
    fn no_augmentation_equals_inference() {
        let img = test_image();
        let p = Preprocess {
            size: 96,
            ..Preprocess::original_inference()
        };
        let mut rng = stream(0, &[]);
        let a = augment(&img, None, None, &p, &Augment::none(), &mut rng);
        assert_eq!(a.tensor, preprocess(&img, None, &p).tensor);
    }

    #[test]
    fn denormalize_inverts_normalize() {
        let img = test_image();
        let t = to_tensor_normalized(&img, IMAGENET_MEAN, IMAGENET_STD);
        assert_eq!(denormalize(&t, IMAGENET_MEAN, IMAGENET_STD), img);
    }
}
