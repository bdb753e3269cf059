//! Grad-CAM (Selvaraju et al., 2017) on the last stage of the backbone: which parts of the
//! image raised the score of a BI-RADS class or a lesion feature.
//!
//! The map is `ReLU(Σ_k α_k A_k)` where `A` is the backbone's last feature map (ConvNeXt
//! stage 4, 7×7 at 224 px; DenseNet after `norm5`) and `α_k` the spatial mean of the score's
//! gradient with respect to `A_k`. Gradients are taken with evaluation semantics (no dropout,
//! running BatchNorm statistics), so the map explains the model that predicts.

use birads_data::pipeline::{preprocess, Prepared, Preprocess};
use birads_data::sample::LesionBox;
use birads_data::{ClassList, FEATURE_NAMES};
use birads_model::blocks::EvalWithGradients;
use birads_model::checkpoint::{AnyModel, Purpose};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use image::{Rgb, RgbImage};

/// What the map explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A BI-RADS class index (MyConvNeXt): its logit.
    Class(usize),
    /// A lesion feature index (MyDenseNet): the log-odds of the suspicious finding,
    /// `z₁ − z₀`.
    Feature(usize),
}

impl Target {
    /// Parse `4A`, `BI-RADS 5`, `boundary`, ... against a class list.
    pub fn parse(s: &str, classes: &ClassList) -> Option<Self> {
        if let Some(f) = FEATURE_NAMES
            .iter()
            .position(|f| f.eq_ignore_ascii_case(s.trim()))
        {
            return Some(Target::Feature(f));
        }
        classes.index_of(s).map(Target::Class)
    }

    pub fn describe(&self, classes: &ClassList) -> String {
        match self {
            Target::Class(c) => format!("BI-RADS {}", classes.name(*c).unwrap_or("?")),
            Target::Feature(f) => FEATURE_NAMES[*f].to_string(),
        }
    }
}

/// One Grad-CAM map.
#[derive(Debug, Clone)]
pub struct Cam {
    pub target: Target,
    /// Map at the model's input resolution, row-major, scaled to [0, 1] (all zeros when no
    /// location raises the score).
    pub map: Vec<f32>,
    pub size: usize,
    /// Resolution of the feature map the CAM was computed on.
    pub feature_size: [usize; 2],
    /// Per-channel weights α (for checking and for research use).
    pub weights: Vec<f32>,
    /// The target's score (logit or log-odds).
    pub score: f32,
}

/// The model's outputs on the image plus one map per target.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// Softmax over classes (ConvNeXt) or P(suspicious) per feature (DenseNet).
    pub probabilities: Vec<f32>,
    pub cams: Vec<Cam>,
    pub prepared: Prepared,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("target {0} does not belong to this model ({1})")]
    Target(String, &'static str),
}

/// The classifier head as a function of the feature map: `[1, K]` logits, or `[1, 8]`
/// (z₀, z₁ per feature) for MyDenseNet.
type Head<B> = Box<dyn Fn(Tensor<B, 4>) -> Tensor<B, 2>>;

/// Grad-CAM for `targets` (empty: the predicted class for MyConvNeXt, all four features for
/// MyDenseNet) on one decoded image.
pub fn explain<B: AutodiffBackend>(
    model: &AnyModel<B>,
    pre: &Preprocess,
    image: &RgbImage,
    lesion: Option<&LesionBox>,
    targets: &[Target],
    device: &B::Device,
) -> Result<Explanation, ExplainError> {
    let _eval = EvalWithGradients::enter();
    let prepared = preprocess(image, lesion, pre);
    let t = &prepared.tensor;
    let x = Tensor::<B, 4>::from_data(
        TensorData::new(t.data.clone(), [1, t.channels, t.height, t.width]),
        device,
    );
    // Backbone without a graph; the head with one, from a leaf at the feature map.
    let (features, head) = split(model, x);
    let features = features.detach();
    let logits = head(features.clone())
        .into_data()
        .to_vec::<f32>()
        .expect("f32 logits");
    let purpose = model.purpose();
    let probabilities = probabilities::<B>(purpose, &logits);
    let targets: Vec<Target> = if !targets.is_empty() {
        targets.to_vec()
    } else {
        match purpose {
            Purpose::Grading => vec![Target::Class(crate::predict::argmax(&probabilities))],
            Purpose::Features => (0..4).map(Target::Feature).collect(),
        }
    };
    let cams = targets
        .into_iter()
        .map(|target| {
            let select = selector(purpose, target, logits.len())?;
            let select =
                Tensor::<B, 2>::from_data(TensorData::new(select, [1, logits.len()]), device);
            Ok(target_cam(
                &features,
                &head,
                select,
                target,
                pre.size as usize,
            ))
        })
        .collect::<Result<_, _>>()?;
    Ok(Explanation {
        probabilities,
        cams,
        prepared,
    })
}

/// The feature map of `x` and the head that turns a feature map into logits.
fn split<B: AutodiffBackend>(model: &AnyModel<B>, x: Tensor<B, 4>) -> (Tensor<B, 4>, Head<B>) {
    match model {
        AnyModel::ConvNeXt(m) => {
            let m = m.clone();
            (m.features(x), Box::new(move |a| m.head(a)))
        }
        AnyModel::DenseNet(m) => {
            let m = m.clone();
            // [1, 4, 2] → [1, 8]: (z₀, z₁) per feature ([1, 1, K] → [1, K] when grading).
            (m.features(x), Box::new(move |a| m.head(a).flatten(1, 2)))
        }
    }
}

/// Softmax over the classes when grading; P(suspicious) = σ(z₁ − z₀) per feature.
fn probabilities<B: AutodiffBackend>(purpose: Purpose, logits: &[f32]) -> Vec<f32> {
    match purpose {
        Purpose::Grading => {
            let l = Tensor::<B::InnerBackend, 1>::from_floats(logits, &Default::default());
            softmax(l, 0).into_data().to_vec::<f32>().expect("f32")
        }
        Purpose::Features => logits
            .chunks(2)
            .map(|z| 1.0 / (1.0 + (z[0] - z[1]).exp()))
            .collect(),
    }
}

/// The weights over the `n_out` logits whose sum is the target's score: the class logit, or
/// a feature's log-odds z₁ − z₀.
fn selector(purpose: Purpose, target: Target, n_out: usize) -> Result<Vec<f32>, ExplainError> {
    let mut w = vec![0f32; n_out];
    match (purpose, target) {
        (Purpose::Grading, Target::Class(c)) if c < n_out => w[c] = 1.0,
        (Purpose::Features, Target::Feature(f)) if 2 * f + 1 < n_out => {
            w[2 * f] = -1.0;
            w[2 * f + 1] = 1.0;
        }
        (Purpose::Grading, t) => {
            return Err(ExplainError::Target(
                format!("{t:?}"),
                "it grades BI-RADS classes",
            ))
        }
        (Purpose::Features, t) => {
            return Err(ExplainError::Target(
                format!("{t:?}"),
                "it recognises the four lesion features",
            ))
        }
    }
    Ok(w)
}

/// The map of one target: its score's gradient at the feature map, through the head only.
fn target_cam<B: AutodiffBackend>(
    features: &Tensor<B, 4>,
    head: &Head<B>,
    select: Tensor<B, 2>,
    target: Target,
    size: usize,
) -> Cam {
    let a = features.clone().require_grad();
    let score = (head(a.clone()) * select).sum();
    let score_value = score.clone().into_scalar().elem::<f32>();
    let grads = score.backward();
    let g = a
        .grad(&grads)
        .expect("the feature map is a leaf with a gradient");
    cam_from(a.inner(), g, target, score_value, size)
}

/// `ReLU(Σ_k α_k A_k)`, upsampled bilinearly (half-pixel centres) to the input size and
/// scaled to [0, 1].
fn cam_from<B: Backend>(
    a: Tensor<B, 4>,
    g: Tensor<B, 4>,
    target: Target,
    score: f32,
    size: usize,
) -> Cam {
    let [_, c, h, w] = a.dims();
    let alpha = g.mean_dims(&[2, 3]); // [1, C, 1, 1]
    let weights = alpha
        .clone()
        .into_data()
        .to_vec::<f32>()
        .expect("f32 weights");
    let raw = (a * alpha).sum_dim(1).clamp_min(0.0); // [1, 1, h, w]
    let up = interpolate(
        raw,
        [size, size],
        InterpolateOptions {
            mode: InterpolateMode::Bilinear,
            align_corners: false,
        },
    );
    let mut map = up.into_data().to_vec::<f32>().expect("f32 map");
    let max = map.iter().copied().fold(0.0f32, f32::max);
    for v in &mut map {
        *v = if max > 0.0 { (*v / max).max(0.0) } else { 0.0 };
    }
    debug_assert_eq!(weights.len(), c);
    Cam {
        target,
        map,
        size,
        feature_size: [h, w],
        weights,
        score,
    }
}

/// Colour of a map value: the Turbo colour map.
fn heat(v: f32) -> Rgb<u8> {
    let c = colorous::TURBO.eval_continuous(v.clamp(0.0, 1.0) as f64);
    Rgb([c.r, c.g, c.b])
}

/// The map over the image: `alpha` of heat colour where the map is high, fading out where it
/// is zero so the anatomy stays visible.
pub fn overlay(image: &RgbImage, cam: &Cam, alpha: f32) -> RgbImage {
    let s = cam.size as u32;
    let base = if image.dimensions() == (s, s) {
        image.clone()
    } else {
        image::imageops::resize(image, s, s, image::imageops::FilterType::Triangle)
    };
    RgbImage::from_fn(s, s, |x, y| {
        let v = cam.map[(y * s + x) as usize];
        let a = alpha * v.sqrt();
        let h = heat(v);
        let p = base.get_pixel(x, y);
        Rgb(std::array::from_fn(|i| {
            (p[i] as f32 * (1.0 - a) + h[i] as f32 * a).round() as u8
        }))
    })
}

/// Each map over the model input, enlarged to at least 256 px for print, captioned
/// `Grad-CAM: <target>` (what the one-page reports show).
pub fn captioned_overlays(ex: &Explanation, classes: &ClassList) -> Vec<(String, RgbImage)> {
    ex.cams
        .iter()
        .map(|cam| {
            let o = overlay(&ex.prepared.image, cam, 0.6);
            let side = o.width().max(256);
            let big =
                image::imageops::resize(&o, side, side, image::imageops::FilterType::Triangle);
            (format!("Grad-CAM: {}", cam.target.describe(classes)), big)
        })
        .collect()
}

/// Share of the map's mass inside a box (pixel coordinates `[x0, y0, x1, y1]` in the model
/// input): how well the explanation points at the lesion.
pub fn mass_inside(cam: &Cam, b: [f32; 4]) -> f32 {
    let s = cam.size;
    let (mut inside, mut total) = (0.0f64, 0.0f64);
    for y in 0..s {
        for x in 0..s {
            let v = cam.map[y * s + x] as f64;
            total += v;
            let (cx, cy) = (x as f32 + 0.5, y as f32 + 0.5);
            if cx >= b[0] && cx < b[2] && cy >= b[1] && cy < b[3] {
                inside += v;
            }
        }
    }
    if total > 0.0 {
        (inside / total) as f32
    } else {
        0.0
    }
}

/// The picture `birads explain` writes: the model's input beside one overlay per map, with a
/// caption of the prediction.
pub fn figure(ex: &Explanation, classes: &ClassList, caption: &str) -> Result<RgbImage, String> {
    use plotters::prelude::*;
    let panel = (ex.prepared.image.width()).max(320);
    let (band, label_h) = (48u32, 26u32);
    let n = 1 + ex.cams.len() as u32;
    let (w, h) = (n * panel + (n + 1) * 8, band + label_h + panel + 8);
    let mut canvas = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let scale = |img: &RgbImage| {
        image::imageops::resize(img, panel, panel, image::imageops::FilterType::Triangle)
    };
    let top = (band + label_h) as i64;
    image::imageops::overlay(&mut canvas, &scale(&ex.prepared.image), 8, top);
    let mut labels = vec!["model input".to_string()];
    for (i, cam) in ex.cams.iter().enumerate() {
        let x = 8 + (i as i64 + 1) * (panel as i64 + 8);
        image::imageops::overlay(
            &mut canvas,
            &scale(&overlay(&ex.prepared.image, cam, 0.6)),
            x,
            top,
        );
        labels.push(format!("Grad-CAM: {}", cam.target.describe(classes)));
    }
    crate::report::register_font();
    let mut raw = canvas.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut raw, (w, h)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.draw_text(
            caption,
            &(crate::report::FONT, 18).into_font().color(&BLACK),
            (10, 14),
        )
        .map_err(err)?;
        for (i, l) in labels.iter().enumerate() {
            let x = 8 + i as i32 * (panel as i32 + 8);
            root.draw_text(
                l,
                &(crate::report::FONT, 15).into_font().color(&BLACK),
                (x, band as i32),
            )
            .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    RgbImage::from_raw(w, h, raw).ok_or_else(|| "figure buffer".to_string())
}
