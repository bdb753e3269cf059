//! Synthetic breast-ultrasound data in the official competition layout.
//!
//! Why: the real data set cannot ship with the repository, yet every stage of the
//! pipeline (readers, label validation, CutBlack, augmentation, training, evaluation)
//! needs realistic inputs for tests, demos and smoke runs. The images imitate B-mode
//! ultrasound closely enough to exercise the same code paths (speckle, black frames,
//! burned-in text, mixed JPEG/PNG, varied sizes) and the lesion appearance is driven
//! by the four feature labels, so a small CNN can actually learn from them.
//!
//! Everything is a pure function of the seed: every image draws from its own
//! ChaCha8 stream derived from `(seed, split, index)`, so parallel generation gives
//! byte-identical output whatever the number of threads.

use std::fs;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Class folder names, index = BI-RADS id 0..5 (categories 2, 3, 4A, 4B, 4C, 5).
pub const CLASS_DIRS: [&str; 6] = ["2类", "3类", "4A类", "4B类", "4C类", "5类"];
/// Feature names in label order; the folder is `<name>_labels`.
pub const FEATURE_NAMES: [&str; 4] = ["boundary", "calcification", "direction", "shape"];
/// Target class frequencies of the classification splits (2, 3, 4A, 4B, 4C, 5).
pub const CLASS_FREQ: [f64; 6] = [0.19, 0.30, 0.18, 0.13, 0.12, 0.08];
/// Marginal probability of each feature being 1 (boundary, calcification, direction, shape).
const FEATURE_RATE: [f64; 4] = [0.45, 0.30, 0.30, 0.45];
/// Weights of the suspicion score (boundary, calcification, direction, shape).
const SCORE_WEIGHT: [f64; 4] = [1.2, 0.9, 1.0, 1.3];
const SCORE_NOISE: f64 = 0.35;
/// Bin edges of the suspicion score, calibrated by simulation so that the natural
/// class frequencies of [`sample_spec`] come out close to [`CLASS_FREQ`].
const SCORE_EDGES: [f64; 5] = [0.27, 1.54, 2.34, 2.98, 3.70];

const CLS_ROOT: &str = "乳腺分类训练数据集";
const FEA_ROOT: &str = "乳腺特征训练数据集";

/// What to generate. Sizes are pixel bounds for width and height, drawn independently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthConfig {
    pub seed: u64,
    pub train_cls: usize,
    pub train_fea: usize,
    pub test_cls: usize,
    pub test_fea: usize,
    pub min_side: u32,
    pub max_side: u32,
}

impl Default for SynthConfig {
    /// 600 images: large enough to train a toy model, small enough to build in seconds.
    fn default() -> Self {
        Self {
            seed: 42,
            train_cls: 240,
            train_fea: 240,
            test_cls: 60,
            test_fea: 60,
            min_side: 320,
            max_side: 640,
        }
    }
}

/// Counts of what [`synthesize`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSummary {
    /// All images written (train + test, both tasks).
    pub images: usize,
    /// BI-RADS class counts over the classification images (train + test).
    pub class_counts: [usize; 6],
    /// Positive counts per feature (boundary, calcification, direction, shape) over
    /// the feature images (train + test).
    pub feature_positive: [usize; 4],
    /// The output root that was written.
    pub out: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode image {path}: {source}")]
    Image {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("invalid synth config: {0}")]
    Config(String),
}

/// The ground truth of one synthetic lesion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LesionSpec {
    /// BI-RADS id 0..5 = category 2, 3, 4A, 4B, 4C, 5.
    pub birads: usize,
    /// boundary (1 = not smooth), calcification (1 = present),
    /// direction (1 = taller than wide), shape (1 = irregular).
    pub features: [bool; 4],
}

impl LesionSpec {
    pub fn boundary(&self) -> bool {
        self.features[0]
    }
    pub fn calcification(&self) -> bool {
        self.features[1]
    }
    pub fn direction(&self) -> bool {
        self.features[2]
    }
    pub fn shape(&self) -> bool {
        self.features[3]
    }
}

/// Draws a lesion the way the data behave clinically: features first, correlated
/// through a latent malignancy, then the BI-RADS category from a noisy suspicion
/// score, so more suspicious features mean a higher category without being a
/// deterministic function of them.
pub fn sample_spec(rng: &mut impl Rng) -> LesionSpec {
    let m: f64 = rng.random();
    let mut features = [false; 4];
    for (i, f) in features.iter_mut().enumerate() {
        let mu = FEATURE_RATE[i];
        // Linear in m with mean mu: keeps the marginal exact while correlating features.
        let p = mu + 1.8 * mu.min(1.0 - mu) * (m - 0.5);
        *f = rng.random::<f64>() < p;
    }
    let mut s = SCORE_NOISE * gauss(rng);
    for i in 0..4 {
        if features[i] {
            s += SCORE_WEIGHT[i];
        }
    }
    let birads = SCORE_EDGES.iter().filter(|&&e| s > e).count();
    LesionSpec { birads, features }
}

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
    let r = render_full(spec, width, height, rng);
    let mut rgb = Vec::with_capacity(r.grey.len() * 3);
    for &g in &r.grey {
        rgb.extend_from_slice(&[g, g, g]);
    }
    let img = RgbImage::from_raw(width, height, rgb).expect("buffer size matches");
    (img, r.bbox)
}

/// Writes the whole data set under `out` (see the module docs for the layout).
///
/// `out` must be missing or empty: a rerun with other settings would otherwise leave
/// stale images of another class or extension behind and silently corrupt the set.
pub fn synthesize(out: &Path, cfg: &SynthConfig) -> Result<SynthSummary, SynthError> {
    validate(cfg)?;
    if out.exists() {
        let mut rd = fs::read_dir(out).map_err(|e| io_err(out, e))?;
        if rd.next().is_some() {
            return Err(SynthError::Config(format!(
                "output directory {} is not empty",
                out.display()
            )));
        }
    }

    // Specs are drawn sequentially per split (cheap), pixels in parallel (expensive).
    let mut jobs: Vec<Job> = Vec::new();
    for split in [
        Split::TrainCls,
        Split::TrainFea,
        Split::TestCls,
        Split::TestFea,
    ] {
        let n = split.count(cfg);
        let mut rng = split_rng(cfg.seed, split as u64, u64::MAX);
        let specs = if split.is_cls() && n >= 6 {
            quota_specs(n, &mut rng)
        } else {
            (0..n).map(|_| sample_spec(&mut rng)).collect()
        };
        jobs.extend(specs.into_iter().enumerate().map(|(i, spec)| Job {
            split,
            index: i + 1,
            spec,
        }));
    }

    let mut dirs = vec![out.join("testA").join("cla"), out.join("testA").join("fea")];
    for c in CLASS_DIRS {
        let base = out.join(CLS_ROOT).join("train").join(c);
        dirs.push(base.join("images"));
        dirs.push(base.join("labels"));
    }
    let fea = out.join(FEA_ROOT).join("train");
    dirs.push(fea.join("images"));
    for f in FEATURE_NAMES {
        dirs.push(fea.join(format!("{f}_labels")));
    }
    for d in &dirs {
        fs::create_dir_all(d).map_err(|e| io_err(d, e))?;
    }

    let done: Vec<Done> = jobs
        .par_iter()
        .map(|job| write_job(out, cfg, job))
        .collect::<Result<_, _>>()?;

    let mut summary = SynthSummary {
        images: done.len(),
        class_counts: [0; 6],
        feature_positive: [0; 4],
        out: out.to_path_buf(),
    };
    let mut cla_gt = String::from("img_name,label\n");
    let mut fea_gt = String::from("img_name,boundary,calcification,direction,shape\n");
    let mut boxes = String::from("img_name,cx,cy,w,h\n");
    for d in &done {
        let b = d.bbox;
        match d.split {
            Split::TrainCls | Split::TestCls => summary.class_counts[d.spec.birads] += 1,
            Split::TrainFea | Split::TestFea => {
                for (k, &f) in d.spec.features.iter().enumerate() {
                    summary.feature_positive[k] += f as usize;
                }
            }
        }
        match d.split {
            Split::TestCls => {
                cla_gt.push_str(&format!("{},{}\n", d.name, d.spec.birads));
                boxes.push_str(&format!(
                    "cla/{},{:.6},{:.6},{:.6},{:.6}\n",
                    d.name, b[0], b[1], b[2], b[3]
                ));
            }
            Split::TestFea => {
                let f = d.spec.features.map(|x| x as u8);
                fea_gt.push_str(&format!("{},{},{},{},{}\n", d.name, f[0], f[1], f[2], f[3]));
                boxes.push_str(&format!(
                    "fea/{},{:.6},{:.6},{:.6},{:.6}\n",
                    d.name, b[0], b[1], b[2], b[3]
                ));
            }
            _ => {}
        }
    }
    let test = out.join("testA");
    write_atomic(&test.join("cla_gt.csv"), cla_gt.as_bytes())?;
    write_atomic(&test.join("fea_gt.csv"), fea_gt.as_bytes())?;
    write_atomic(&test.join("boxes.csv"), boxes.as_bytes())?;
    let readme = format!(
        "Synthetic breast-ultrasound data generated by birads (birads_data::synth) with seed {seed}, \
         laid out like the official competition release so the full pipeline can run without the real data. \
         It holds {total} images ({min}-{max} px per side, about 1 in 4 PNG, the rest JPEG): \
         {tc} classification training images in {cls}/train/<class>/images with YOLO labels \"c cx cy w h\" \
         (c = 1..6 for BI-RADS 2, 3, 4A, 4B, 4C, 5; class counts {cc:?} over train and test), \
         {tf} feature training images in {fea}/train/images with one <feature>_labels file each \
         (c = 0/1; positives for boundary, calcification, direction, shape {fp:?} over train and test), \
         and {xc} + {xf} test images in testA/cla and testA/fea whose ground truth is in testA/cla_gt.csv, \
         testA/fea_gt.csv and testA/boxes.csv (img_name there is relative to testA). \
         Every image shows exactly one hypoechoic lesion whose shape, margin, orientation and \
         calcifications follow its labels; the images are not real patient data and say nothing clinical.\n",
        seed = cfg.seed,
        total = summary.images,
        min = cfg.min_side,
        max = cfg.max_side,
        tc = cfg.train_cls,
        cls = CLS_ROOT,
        cc = summary.class_counts,
        tf = cfg.train_fea,
        fea = FEA_ROOT,
        fp = summary.feature_positive,
        xc = cfg.test_cls,
        xf = cfg.test_fea,
    );
    write_atomic(&out.join("README.txt"), readme.as_bytes())?;
    Ok(summary)
}

// ---------------------------------------------------------------------------
// Orchestration helpers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    TrainCls = 1,
    TrainFea = 2,
    TestCls = 3,
    TestFea = 4,
}

impl Split {
    fn count(self, cfg: &SynthConfig) -> usize {
        match self {
            Split::TrainCls => cfg.train_cls,
            Split::TrainFea => cfg.train_fea,
            Split::TestCls => cfg.test_cls,
            Split::TestFea => cfg.test_fea,
        }
    }
    fn is_cls(self) -> bool {
        matches!(self, Split::TrainCls | Split::TestCls)
    }
}

struct Job {
    split: Split,
    index: usize,
    spec: LesionSpec,
}

struct Done {
    split: Split,
    name: String,
    spec: LesionSpec,
    bbox: [f32; 4],
}

fn validate(cfg: &SynthConfig) -> Result<(), SynthError> {
    let bad = |m: String| Err(SynthError::Config(m));
    if cfg.min_side < 64 {
        return bad(format!("min_side {} is below 64", cfg.min_side));
    }
    if cfg.min_side > cfg.max_side {
        return bad(format!(
            "min_side {} exceeds max_side {}",
            cfg.min_side, cfg.max_side
        ));
    }
    if cfg.max_side > 4096 {
        return bad(format!("max_side {} exceeds 4096", cfg.max_side));
    }
    if (1..6).contains(&cfg.train_cls) {
        return bad(format!(
            "train_cls {} cannot cover all 6 classes (use 0 or at least 6)",
            cfg.train_cls
        ));
    }
    if cfg.train_cls > 99_999 || cfg.train_fea > 99_999 {
        return bad("training splits are limited to 99999 images (5-digit names)".into());
    }
    if cfg.test_cls > 9_999 || cfg.test_fea > 9_999 {
        return bad("test splits are limited to 9999 images (4-digit names)".into());
    }
    if cfg.train_cls + cfg.train_fea + cfg.test_cls + cfg.test_fea == 0 {
        return bad("all split sizes are zero".into());
    }
    Ok(())
}

/// Per-class quotas for `n >= 6` images: close to [`CLASS_FREQ`], every class at
/// least 5 % (and at least one image) so that rare classes stay trainable.
fn class_quotas(n: usize) -> [usize; 6] {
    let min_each = ((n as f64 * 0.05).ceil() as usize).max(1);
    let mut q = CLASS_FREQ.map(|f| ((f * n as f64).round() as usize).max(min_each));
    loop {
        let sum: usize = q.iter().sum();
        if sum == n {
            return q;
        }
        // Adjust the class that is furthest from its target in the needed direction.
        let err = |c: usize| q[c] as f64 - CLASS_FREQ[c] * n as f64;
        if sum > n {
            let c = (0..6)
                .filter(|&c| q[c] > min_each)
                .max_by(|&a, &b| err(a).total_cmp(&err(b)));
            match c {
                Some(c) => q[c] -= 1,
                None => return q, // cannot happen for n >= 6: 6 * ceil(0.05 n) <= n
            }
        } else {
            let c = (0..6).min_by(|&a, &b| err(a).total_cmp(&err(b))).unwrap();
            q[c] += 1;
        }
    }
}

/// Rejection-samples natural specs into the class quotas, so the labels keep their
/// natural feature correlations while the class counts are exact.
fn quota_specs(n: usize, rng: &mut ChaCha8Rng) -> Vec<LesionSpec> {
    let quota = class_quotas(n);
    let mut have = [0usize; 6];
    let mut specs = Vec::with_capacity(n);
    let mut tries = 0usize;
    while specs.len() < n {
        tries += 1;
        let mut s = sample_spec(rng);
        if have[s.birads] >= quota[s.birads] {
            if tries < 1000 * n {
                continue;
            }
            // Practically unreachable safety net: force the first unfilled class.
            s.birads = (0..6).find(|&c| have[c] < quota[c]).unwrap();
        }
        have[s.birads] += 1;
        specs.push(s);
    }
    for i in (1..specs.len()).rev() {
        let j = rng.random_range(0..=i);
        specs.swap(i, j);
    }
    specs
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Independent stream per (seed, split, index): order of execution cannot matter.
fn split_rng(seed: u64, split: u64, index: u64) -> ChaCha8Rng {
    let k = splitmix64(splitmix64(splitmix64(seed) ^ split) ^ index);
    let mut key = [0u8; 32];
    for (i, chunk) in key.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(
            &splitmix64(k ^ (i as u64).wrapping_mul(0xa24b_aed4_963e_e407)).to_le_bytes(),
        );
    }
    ChaCha8Rng::from_seed(key)
}

fn write_job(out: &Path, cfg: &SynthConfig, job: &Job) -> Result<Done, SynthError> {
    let mut rng = split_rng(cfg.seed, job.split as u64, job.index as u64);
    let w = rng.random_range(cfg.min_side..=cfg.max_side);
    let h = rng.random_range(cfg.min_side..=cfg.max_side);
    let png = rng.random_bool(0.25);
    let ext = if png { "png" } else { "jpg" };
    let (img, bbox) = render(&job.spec, w, h, &mut rng);
    let line = |c: usize| {
        format!(
            "{} {:.6} {:.6} {:.6} {:.6}\n",
            c, bbox[0], bbox[1], bbox[2], bbox[3]
        )
    };
    let name = match job.split {
        Split::TrainCls => {
            let stem = format!("synth_cls_{:05}", job.index);
            let base = out
                .join(CLS_ROOT)
                .join("train")
                .join(CLASS_DIRS[job.spec.birads]);
            write_image(
                &base.join("images").join(format!("{stem}.{ext}")),
                &img,
                png,
            )?;
            write_atomic(
                &base.join("labels").join(format!("{stem}.txt")),
                line(job.spec.birads + 1).as_bytes(),
            )?;
            format!("{stem}.{ext}")
        }
        Split::TrainFea => {
            let stem = format!("synth_fea_{:05}", job.index);
            let base = out.join(FEA_ROOT).join("train");
            write_image(
                &base.join("images").join(format!("{stem}.{ext}")),
                &img,
                png,
            )?;
            for (f, &v) in FEATURE_NAMES.iter().zip(&job.spec.features) {
                let p = base.join(format!("{f}_labels")).join(format!("{stem}.txt"));
                write_atomic(&p, line(v as usize).as_bytes())?;
            }
            format!("{stem}.{ext}")
        }
        Split::TestCls | Split::TestFea => {
            let name = format!("{:04}.{ext}", job.index);
            let sub = if job.split == Split::TestCls {
                "cla"
            } else {
                "fea"
            };
            write_image(&out.join("testA").join(sub).join(&name), &img, png)?;
            name
        }
    };
    Ok(Done {
        split: job.split,
        name,
        spec: job.spec,
        bbox,
    })
}

fn io_err(path: &Path, source: std::io::Error) -> SynthError {
    SynthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write-then-rename so an interrupted run never leaves a truncated file behind.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SynthError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// JPEG at quality 90 like scanner exports; PNG at zlib level 1, which on speckle is
/// ~10x faster than the default level for ~10 % larger files (PNG time dominated).
fn write_image(path: &Path, img: &RgbImage, png: bool) -> Result<(), SynthError> {
    let mut buf = Vec::with_capacity(img.as_raw().len() / 4);
    let (w, h) = img.dimensions();
    let res = if png {
        PngEncoder::new_with_quality(&mut buf, CompressionType::Level(1), FilterType::Adaptive)
            .write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8)
    } else {
        JpegEncoder::new_with_quality(&mut buf, 90).write_image(
            img.as_raw(),
            w,
            h,
            ExtendedColorType::Rgb8,
        )
    };
    res.map_err(|e| SynthError::Image {
        path: path.to_path_buf(),
        source: e,
    })?;
    write_atomic(path, &buf)
}

// ---------------------------------------------------------------------------
// Rendering

/// Standard normal via Box-Muller (only used for a handful of draws per image).
fn gauss(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn uni(rng: &mut impl Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

#[inline]
fn smooth01(z: f32) -> f32 {
    let z = z.clamp(0.0, 1.0);
    z * z * (3.0 - 2.0 * z)
}

/// Smooth step from 0 at `c - hw` to 1 at `c + hw`.
#[inline]
fn step(v: f32, c: f32, hw: f32) -> f32 {
    smooth01((v - c) / (2.0 * hw) + 0.5)
}

/// wyrand: the per-pixel speckle needs ~10^5-10^6 numbers per image; ChaCha decides
/// everything else and seeds this, so determinism is unaffected.
struct WyRand(u64);

impl WyRand {
    #[inline]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.0 as u128).wrapping_mul((self.0 ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) as u64) ^ (t as u64)
    }
}

/// Fully developed speckle: magnitude of a spatially low-passed complex Gaussian
/// field (Rayleigh distributed), normalised to mean 1. The low-pass is wider
/// horizontally because the lateral resolution of a probe is worse than the axial.
fn speckle_field(w: usize, h: usize, seed: u64, kx: usize, ky: usize) -> Vec<f32> {
    let n = w * h;
    let mut g = WyRand(seed);
    let mut re = vec![0f32; n];
    let mut im = vec![0f32; n];
    for (a, b) in re.iter_mut().zip(im.iter_mut()) {
        let r = g.next();
        // Sum of two uniforms per component; the box filter below makes it Gaussian.
        *a = ((r & 0xffff) as i32 + ((r >> 16) & 0xffff) as i32 - 65535) as f32;
        *b = (((r >> 32) & 0xffff) as i32 + ((r >> 48) & 0xffff) as i32 - 65535) as f32;
    }
    // Horizontal running box sums (window [x, x + kx), clamped at the right edge).
    let mut hre = vec![0f32; n];
    let mut him = vec![0f32; n];
    for y in 0..h {
        let row = y * w;
        let (ra, rb) = (&re[row..row + w], &im[row..row + w]);
        let (oa, ob) = (&mut hre[row..row + w], &mut him[row..row + w]);
        let (mut sa, mut sb) = (0f32, 0f32);
        for j in 0..kx {
            sa += ra[j.min(w - 1)];
            sb += rb[j.min(w - 1)];
        }
        for x in 0..w {
            oa[x] = sa;
            ob[x] = sb;
            let nx = (x + kx).min(w - 1);
            sa += ra[nx] - ra[x];
            sb += rb[nx] - rb[x];
        }
    }
    let mut sum = 0f64;
    let mut acc_a = vec![0f32; w];
    let mut acc_b = vec![0f32; w];
    for y in 0..h {
        acc_a.fill(0.0);
        acc_b.fill(0.0);
        for j in 0..ky {
            let r = (y + j).min(h - 1) * w;
            for (a, v) in acc_a.iter_mut().zip(&hre[r..r + w]) {
                *a += v;
            }
            for (b, v) in acc_b.iter_mut().zip(&him[r..r + w]) {
                *b += v;
            }
        }
        let mut rowsum = 0f32;
        for ((o, a), b) in re[y * w..(y + 1) * w].iter_mut().zip(&acc_a).zip(&acc_b) {
            let m = (a * a + b * b).sqrt();
            *o = m;
            rowsum += m;
        }
        sum += rowsum as f64;
    }
    let inv = if sum > 0.0 {
        (n as f64 / sum) as f32
    } else {
        1.0
    };
    for v in re.iter_mut() {
        *v *= inv;
    }
    re
}

/// Bilinear value noise on a coarse random grid: cheap blotchy tissue texture.
struct ValueNoise {
    gw: usize,
    v: Vec<f32>,
    ix: Vec<u32>,
    wx: Vec<f32>,
    cell_y: f32,
}

impl ValueNoise {
    fn new(rng: &mut impl Rng, w: usize, h: usize, cell_x: f32, cell_y: f32) -> Self {
        let gw = (w as f32 / cell_x).ceil() as usize + 2;
        let gh = (h as f32 / cell_y).ceil() as usize + 2;
        let v = (0..gw * gh).map(|_| rng.random::<f32>()).collect();
        let mut ix = Vec::with_capacity(w);
        let mut wx = Vec::with_capacity(w);
        for x in 0..w {
            let fx = x as f32 / cell_x;
            ix.push(fx as u32);
            wx.push(smooth01(fx.fract()));
        }
        Self {
            gw,
            v,
            ix,
            wx,
            cell_y,
        }
    }

    /// Returns the two interpolated grid rows' start and the vertical weight.
    #[inline]
    fn row(&self, y: usize) -> (usize, f32) {
        let fy = y as f32 / self.cell_y;
        ((fy as usize) * self.gw, smooth01(fy.fract()))
    }

    #[inline]
    fn at(&self, row: (usize, f32), x: usize) -> f32 {
        let i = row.0 + self.ix[x] as usize;
        let wx = self.wx[x];
        let top = self.v[i] + (self.v[i + 1] - self.v[i]) * wx;
        let j = i + self.gw;
        let bot = self.v[j] + (self.v[j + 1] - self.v[j]) * wx;
        top + (bot - top) * row.1
    }
}

/// The imaging area inside the black frame: a linear-probe rectangle or a
/// convex-probe sector (annulus segment around an apex above the image).
#[derive(Debug, Clone, Copy)]
enum Area {
    Rect {
        l: f32,
        r: f32,
        t: f32,
        b: f32,
    },
    Sector {
        ax: f32,
        ay: f32,
        r_in: f32,
        r_out: f32,
        tan_half: f32,
    },
}

impl Area {
    /// Normalised depth 0 (skin) .. 1 (deepest) when (x, y) is inside, else None.
    #[inline]
    fn depth(&self, x: f32, y: f32) -> Option<f32> {
        match *self {
            Area::Rect { l, r, t, b } => {
                if x >= l && x < r && y >= t && y < b {
                    Some((y - t) / (b - t))
                } else {
                    None
                }
            }
            Area::Sector {
                ax,
                ay,
                r_in,
                r_out,
                tan_half,
            } => {
                let dx = x - ax;
                let dy = y - ay;
                if dy <= 0.0 || dx.abs() > dy * tan_half {
                    return None;
                }
                let rr = (dx * dx + dy * dy).sqrt();
                if rr < r_in || rr >= r_out {
                    None
                } else {
                    Some((rr - r_in) / (r_out - r_in))
                }
            }
        }
    }

    /// Depth clamped to [0, 1] everywhere (for the coarse tissue grid, which also
    /// needs values just outside the area to interpolate up to its edge).
    fn depth_clamped(&self, x: f32, y: f32) -> f32 {
        let t = match *self {
            Area::Rect { t, b, .. } => (y - t) / (b - t),
            Area::Sector {
                ax,
                ay,
                r_in,
                r_out,
                ..
            } => {
                let (dx, dy) = (x - ax, y - ay);
                ((dx * dx + dy * dy).sqrt() - r_in) / (r_out - r_in)
            }
        };
        t.clamp(0.0, 1.0)
    }

    /// Bounding rectangle (clipped to the image) used to sample lesion positions.
    fn bounds(&self, w: f32, h: f32) -> (f32, f32, f32, f32) {
        match *self {
            Area::Rect { l, r, t, b } => (l, r, t, b),
            Area::Sector {
                ax,
                ay,
                r_in,
                r_out,
                tan_half,
            } => {
                let half = (r_out * tan_half / (1.0 + tan_half * tan_half).sqrt()).min(w);
                (
                    (ax - half).max(0.0),
                    (ax + half).min(w),
                    (ay + r_in).max(0.0),
                    (ay + r_out).min(h),
                )
            }
        }
    }
}

fn sample_area(rng: &mut impl Rng, w: f32, h: f32) -> Area {
    if rng.random_bool(0.35) {
        let y_top = if rng.random_bool(0.6) {
            h * uni(rng, 0.02, 0.10)
        } else {
            0.0
        };
        let y_bot = h * uni(rng, 0.88, 1.08);
        let ax = w * (0.5 + uni(rng, -0.04, 0.04));
        let ht = w * uni(rng, 0.26, 0.40);
        let hb = ht + w * uni(rng, 0.12, 0.30);
        let tan_half = (hb - ht) / (y_bot - y_top);
        let ay = y_top - ht / tan_half;
        Area::Sector {
            ax,
            ay,
            r_in: y_top - ay,
            r_out: y_bot - ay,
            tan_half,
        }
    } else {
        let mut side = |p: f64, lo: f32, hi: f32| {
            if rng.random_bool(p) {
                uni(rng, lo, hi)
            } else {
                0.0
            }
        };
        let mut l = side(0.65, 0.02, 0.16);
        let mut r = side(0.65, 0.02, 0.16);
        let t = side(0.5, 0.02, 0.12);
        let b = side(0.5, 0.02, 0.10);
        if l + r > 0.28 {
            let k = 0.28 / (l + r);
            l *= k;
            r *= k;
        }
        Area::Rect {
            l: (l * w).round(),
            r: ((1.0 - r) * w).round(),
            t: (t * h).round(),
            b: ((1.0 - b) * h).round(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Rect {
    x0: i32,
    y0: i32,
    x1: i32, // exclusive
    y1: i32,
}

impl Rect {
    fn overlaps(&self, o: &Rect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }
    #[cfg(test)]
    fn contains(&self, x: i32, y: i32) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }
}

const TABLE: usize = 720;

/// A lesion in its own frame: polar radius table over angle (unit-ish circle,
/// perturbed by lobulation / spicules), then rotation and anisotropic scaling to
/// pixels. Scaling is chosen from the table's extents so the *tight* box has exactly
/// the wanted aspect, which keeps the direction label honest for irregular shapes.
struct Lesion {
    table: Vec<f32>,
    cx: f32,
    cy: f32,
    sx: f32,
    sy: f32,
    cos: f32,
    sin: f32,
    s_eff: f32,
    halo_amp: f32,
    halo_w: f32,
    value: f32,
}

impl Lesion {
    #[inline]
    fn radius(&self, theta: f32) -> f32 {
        let f = (theta + std::f32::consts::PI) * (TABLE as f32 / std::f32::consts::TAU);
        let i = (f as usize).min(TABLE - 1);
        let t = f - i as f32;
        let a = self.table[i];
        let b = self.table[(i + 1) % TABLE];
        a + (b - a) * t
    }

    /// Approximate signed distance in pixels from the margin (negative inside).
    #[inline]
    fn dist(&self, px: f32, py: f32) -> f32 {
        let u0 = (px - self.cx) / self.sx;
        let v0 = (py - self.cy) / self.sy;
        let u = u0 * self.cos + v0 * self.sin;
        let v = -u0 * self.sin + v0 * self.cos;
        let rho = (u * u + v * v).sqrt();
        (rho - self.radius(v.atan2(u))) * self.s_eff
    }

    /// Extents (umin, umax, vmin, vmax) of the outline in the unscaled image frame.
    fn extents(table: &[f32], cos: f32, sin: f32) -> (f32, f32, f32, f32) {
        let mut e = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for (i, &r) in table.iter().enumerate() {
            let th = i as f32 / TABLE as f32 * std::f32::consts::TAU - std::f32::consts::PI;
            let (u, v) = (r * th.cos(), r * th.sin());
            let (x, y) = (u * cos - v * sin, u * sin + v * cos);
            e = (e.0.min(x), e.1.max(x), e.2.min(y), e.3.max(y));
        }
        e
    }

    /// Pixel position of a point at polar (theta, rho) in the lesion frame.
    fn point(&self, theta: f32, rho: f32) -> (f32, f32) {
        let (u, v) = (rho * theta.cos(), rho * theta.sin());
        let (x, y) = (u * self.cos - v * self.sin, u * self.sin + v * self.cos);
        (self.cx + x * self.sx, self.cy + y * self.sy)
    }
}

fn lesion_table(spec: &LesionSpec, rng: &mut impl Rng) -> (Vec<f32>, bool, bool) {
    use std::f32::consts::{PI, TAU};
    let mut harmonics: Vec<(f32, f32, f32)> = Vec::new();
    if spec.shape() {
        // Lobulated: several large low-order harmonics, clearly not an ellipse.
        let mut ks = [3.0f32, 4.0, 5.0, 6.0];
        for i in (1..4).rev() {
            ks.swap(i, rng.random_range(0..=i));
        }
        for &k in &ks[..3] {
            harmonics.push((k, uni(rng, 0.09, 0.17), uni(rng, 0.0, TAU)));
        }
    } else {
        harmonics.push((3.0, uni(rng, 0.0, 0.025), uni(rng, 0.0, TAU)));
    }
    // Not-smooth margin: angular micro-lobulation always, plus spicules and/or blur.
    let (mut spiculated, mut blurred) = (false, false);
    let mut micro = (0.0f32, 0.0f32, 0.0f32);
    let mut spikes: Vec<(f32, f32, f32)> = Vec::new();
    if spec.boundary() {
        let r: f32 = rng.random();
        spiculated = r < 0.75;
        blurred = r >= 0.45;
        micro = (
            rng.random_range(10..=18) as f32,
            uni(rng, 0.07, 0.13),
            uni(rng, 0.0, TAU),
        );
        if spiculated {
            for _ in 0..rng.random_range(7..=14) {
                spikes.push((
                    uni(rng, -PI, PI),
                    uni(rng, 0.05, 0.11),
                    uni(rng, 0.25, 0.55),
                ));
            }
        }
    }
    let table = (0..TABLE)
        .map(|i| {
            let th = i as f32 / TABLE as f32 * TAU - PI;
            let mut r = 1.0;
            for &(k, a, p) in &harmonics {
                r += a * (k * th + p).cos();
            }
            if micro.1 > 0.0 {
                // |sin| has cusps: angular rather than wavy bumps.
                r += micro.1 * ((micro.0 * th * 0.5 + micro.2).sin().abs() - 0.64);
            }
            for &(c, wdt, len) in &spikes {
                let mut d = (th - c).abs();
                if d > PI {
                    d = TAU - d;
                }
                if d < wdt {
                    r += len * (1.0 - d / wdt).powf(1.5);
                }
            }
            r.max(0.3)
        })
        .collect();
    (table, spiculated, blurred)
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

fn render_full(spec: &LesionSpec, width: u32, height: u32, rng: &mut impl Rng) -> Rendered {
    assert!(
        width >= 64 && height >= 64,
        "render needs at least 64x64 pixels, got {width}x{height}"
    );
    let (w, h) = (width as usize, height as usize);
    let (wf, hf) = (w as f32, h as f32);
    let min_side = wf.min(hf);
    let area = sample_area(rng, wf, hf);

    // --- burned-in text (decided early: the lesion must not sit under it)
    let mut overlays = Vec::new();
    let mut texts: Vec<Text> = Vec::new();
    let scale = if min_side >= 300.0 && rng.random_bool(0.6) {
        2
    } else {
        1
    };
    let mut lines = vec![
        [
            "L BREAST",
            "R BREAST",
            "LT BREAST",
            "RT BREAST",
            "BREAST L",
            "BREAST R",
        ][rng.random_range(0..6)]
        .to_string(),
        format!(
            "{}MHZ",
            ["7.5", "10", "12", "13", "14", "18"][rng.random_range(0..6)]
        ),
    ];
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
    let x0 = rng.random_range(3..10);
    let mut y = rng.random_range(3..10);
    for s in lines {
        let v = rng.random_range(200..=255u8);
        texts.push(Text {
            x: x0,
            y,
            s,
            scale,
            v,
        });
        y += 9 * scale;
    }
    if rng.random_bool(0.6) {
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
        texts.push(Text {
            x,
            y,
            s,
            scale: 1,
            v,
        });
    }
    if rng.random_bool(0.5) {
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
        texts.push(Text {
            x,
            y,
            s,
            scale: 1,
            v,
        });
    }
    let text_rects: Vec<Rect> = texts
        .iter()
        .map(|t| Rect {
            x0: t.x,
            y0: t.y,
            x1: t.x + text_width(&t.s, t.scale),
            y1: t.y + 7 * t.scale,
        })
        .collect();

    // --- lesion geometry
    let (table, spiculated, blurred) = lesion_table(spec, rng);
    let rot = uni(rng, -0.25, 0.25);
    let (cos, sin) = (rot.cos(), rot.sin());
    let (umin, umax, vmin, vmax) = Lesion::extents(&table, cos, sin);
    let ratio = if spec.direction() {
        uni(rng, 0.5, 0.75)
    } else {
        uni(rng, 1.4, 2.0)
    };
    let mut diam = (min_side * uni(rng, 0.15, 0.35)).max(20.0);
    let tw = if blurred {
        uni(rng, 0.035, 0.07) * diam
    } else if spiculated {
        1.1
    } else {
        0.8
    };
    let halo = spec.boundary() && rng.random_bool(0.5);
    let margin = (0.03 * min_side).max(10.0) + 2.0 * tw + if halo { 0.06 * diam } else { 0.0 };
    let (bl, br, bt, bb) = area.bounds(wf, hf);
    let fits = |x0: f32, y0: f32, bw: f32, bh: f32| -> bool {
        let (ex0, ey0, ex1, ey1) = (x0 - margin, y0 - margin, x0 + bw + margin, y0 + bh + margin);
        let (mx, my) = (0.5 * (ex0 + ex1), 0.5 * (ey0 + ey1));
        for (px, py) in [
            (ex0, ey0),
            (ex1, ey0),
            (ex0, ey1),
            (ex1, ey1),
            (mx, ey0),
            (mx, ey1),
            (ex0, my),
            (ex1, my),
        ] {
            if area.depth(px, py).is_none() {
                return false;
            }
        }
        let top_ok = [(x0, y0), (x0 + bw, y0)]
            .iter()
            .all(|&(x, y)| area.depth(x, y).is_some_and(|t| t > 0.12));
        let bot_ok = [(x0, y0 + bh), (x0 + bw, y0 + bh)]
            .iter()
            .all(|&(x, y)| area.depth(x, y).is_some_and(|t| t < 0.88));
        let r = Rect {
            x0: ex0 as i32 - 2,
            y0: ey0 as i32 - 2,
            x1: ex1 as i32 + 3,
            y1: ey1 as i32 + 3,
        };
        top_ok && bot_ok && !text_rects.iter().any(|t| t.overlaps(&r))
    };
    let mut placed = None;
    for attempt in 0..400 {
        if attempt > 0 && attempt % 40 == 0 {
            diam *= 0.9;
        }
        let bw = diam * ratio.sqrt();
        let bh = diam / ratio.sqrt();
        if bw >= br - bl || bh >= bb - bt {
            continue;
        }
        let x0 = uni(rng, bl, br - bw);
        let y0 = uni(rng, bt, bb - bh);
        if fits(x0, y0, bw, bh) {
            placed = Some((x0, y0, bw, bh));
            break;
        }
    }
    // Fallback (tiny or heavily framed images): a small lesion in the middle of the area.
    let (x0, y0, bw, bh) = placed.unwrap_or_else(|| {
        let d = 0.12 * min_side;
        let (bw, bh) = (d * ratio.sqrt(), d / ratio.sqrt());
        (
            0.5 * (bl + br - bw),
            bt + 0.55 * (bb - bt) - 0.5 * bh,
            bw,
            bh,
        )
    });
    let sx = bw / (umax - umin);
    let sy = bh / (vmax - vmin);
    let lesion = Lesion {
        cx: x0 - umin * sx,
        cy: y0 - vmin * sy,
        sx,
        sy,
        cos,
        sin,
        s_eff: (sx * sy).sqrt(),
        halo_amp: if halo { uni(rng, 35.0, 70.0) } else { 0.0 },
        halo_w: (0.05 * diam).max(2.0),
        value: uni(rng, 18.0, 40.0),
        table,
    };
    let reach = 2.0 * tw + if halo { 4.0 * lesion.halo_w } else { 0.0 } + 2.0;
    let lx0 = ((x0 - reach).floor().max(0.0)) as usize;
    let lx1 = ((x0 + bw + reach).ceil() as usize).min(w);
    let ly0 = ((y0 - reach).floor().max(0.0)) as usize;
    let ly1 = ((y0 + bh + reach).ceil() as usize).min(h);

    // Posterior acoustic features: shadowing behind suspicious masses, enhancement
    // behind benign-looking (cyst-like) ones.
    let posterior = match spec.birads {
        3..=5 if rng.random_bool(0.55) => -uni(rng, 0.35, 0.65),
        2 if rng.random_bool(0.2) => -uni(rng, 0.25, 0.45),
        0 | 1 if rng.random_bool(0.35) => uni(rng, 0.2, 0.45),
        _ => 0.0,
    };
    let (pcx, pcy) = (x0 + 0.5 * bw, y0 + 0.5 * bh);

    // --- tissue model
    let skin_t = uni(rng, 0.015, 0.035);
    let skin_val = uni(rng, 170.0, 210.0);
    let fat_val = uni(rng, 45.0, 80.0);
    let gland_val = uni(rng, 130.0, 180.0);
    let musc_val = uni(rng, 75.0, 110.0);
    let att = uni(rng, 0.35, 0.9);
    let gain = uni(rng, 0.95, 1.15);
    let b1_base = uni(rng, 0.12, 0.28);
    let b2_base = uni(rng, 0.72, 0.9);
    let waves: Vec<(f32, f32, f32)> = (0..6)
        .map(|i| {
            (
                uni(rng, 0.5, 3.5),
                if i < 3 { 0.04 } else { 0.035 } * rng.random::<f32>(),
                uni(rng, 0.0, 6.3),
            )
        })
        .collect();
    let mut b1 = vec![0f32; w];
    let mut b2 = vec![0f32; w];
    let mut wob = vec![0f32; w];
    let wob_a = uni(rng, 0.0, 2.0);
    for x in 0..w {
        let u = x as f32 / wf * std::f32::consts::TAU;
        b1[x] = b1_base
            + waves[..3]
                .iter()
                .map(|&(f, a, p)| a * (f * u + p).sin())
                .sum::<f32>();
        b2[x] = b2_base
            + waves[3..]
                .iter()
                .map(|&(f, a, p)| a * (f * u + p).sin())
                .sum::<f32>();
        wob[x] = wob_a * (u * 1.3 + waves[0].2).sin();
    }
    let stri_f = uni(rng, 25.0, 45.0);
    let (lcx, lcy) = (
        min_side * uni(rng, 0.05, 0.09),
        min_side * uni(rng, 0.035, 0.06),
    );
    let lob = ValueNoise::new(rng, w, h, lcx, lcy);
    let (tcx, tcy) = (
        min_side * uni(rng, 0.08, 0.16),
        min_side * uni(rng, 0.04, 0.08),
    );
    let tex = ValueNoise::new(rng, w, h, tcx, tcy);
    // Speckle grain scales with the image like a real probe's resolution cell.
    let kx = ((min_side / 110.0) * uni(rng, 0.8, 1.3))
        .round()
        .clamp(2.0, 8.0) as usize;
    let ky = ((min_side / 220.0) * uni(rng, 0.8, 1.3))
        .round()
        .clamp(1.0, 4.0) as usize;
    let speckle = speckle_field(w, h, rng.random(), kx, ky);
    let c_tissue = uni(rng, 0.55, 0.75);
    let c_lesion = uni(rng, 0.5, 0.7);

    // Depth-only terms (attenuation with gain, skin blend) from a table: exp per pixel is costly.
    const LUT: usize = 2048;
    let depth_lut: Vec<(f32, f32)> = (0..=LUT)
        .map(|i| {
            let t = i as f32 / LUT as f32;
            (gain * (-att * t).exp(), step(t, skin_t, 0.008))
        })
        .collect();
    // Smooth tissue echogenicity (layers, texture, attenuation, posterior effects).
    let tissue = |x: usize, y: usize, t: f32| -> f32 {
        let nl = lob.at(lob.row(y), x);
        let nt = tex.at(tex.row(y), x);
        let fat = fat_val * (0.55 + 0.9 * nl);
        let gland = gland_val * (0.7 + 0.6 * nt);
        let mut e = fat + (gland - fat) * step(t, b1[x], 0.03);
        let m = step(t, b2[x], 0.02);
        if m > 0.0 {
            let stri = 0.8 + 0.4 * (0.5 + 0.5 * (t * stri_f + wob[x]).sin());
            e += (musc_val * stri - e) * m;
        }
        let (atten, skin) = depth_lut[((t * LUT as f32) as usize).min(LUT)];
        e = (skin_val + (e - skin_val) * skin) * atten;
        if posterior != 0.0 {
            let dep = step(y as f32 + 0.5, pcy + 0.25 * bh, 0.3 * bh);
            let lat = 1.0 - step((x as f32 + 0.5 - pcx).abs(), 0.42 * bw, 0.1 * bw);
            e *= 1.0 + posterior * lat * dep;
        }
        e
    };
    // It varies slowly, so it is evaluated on a coarse grid and interpolated: this
    // keeps the per-pixel work to speckle, lesion and tone mapping (~4x faster).
    const G: usize = 4;
    let (gw, gh) = (w / G + 2, h / G + 2);
    let mut grid = vec![0f32; gw * gh];
    for gy in 0..gh {
        let y = (gy * G).min(h - 1);
        for gx in 0..gw {
            let x = (gx * G).min(w - 1);
            let t = area.depth_clamped(x as f32 + 0.5, y as f32 + 0.5);
            grid[gy * gw + gx] = tissue(x, y, t);
        }
    }
    let mut grid_row = vec![0f32; gw];
    let mut grey = vec![0u8; w * h];
    let (mut mx0, mut my0, mut mx1, mut my1) = (usize::MAX, usize::MAX, 0usize, 0usize);
    for y in 0..h {
        let yc = y as f32 + 0.5;
        let (gy, fy) = (y / G, (y % G) as f32 / G as f32);
        for (gx, o) in grid_row.iter_mut().enumerate() {
            let (a, b) = (grid[gy * gw + gx], grid[(gy + 1) * gw + gx]);
            *o = a + (b - a) * fy;
        }
        let trow = tex.row(y);
        let in_lrows = y >= ly0 && y < ly1;
        let srow = &speckle[y * w..(y + 1) * w];
        let orow = &mut grey[y * w..(y + 1) * w];
        for x in 0..w {
            let xc = x as f32 + 0.5;
            if area.depth(xc, yc).is_none() {
                continue;
            }
            let (gx, fx) = (x / G, (x % G) as f32 / G as f32);
            let mut e = grid_row[gx] + (grid_row[gx + 1] - grid_row[gx]) * fx;
            let mut c = c_tissue;
            if in_lrows && x >= lx0 && x < lx1 {
                let d = lesion.dist(xc, yc);
                if d > 0.0 && lesion.halo_amp > 0.0 {
                    e += lesion.halo_amp
                        * (-d / lesion.halo_w).exp()
                        * step(d, 0.5 * tw, 0.5 * tw + 0.5);
                }
                let a = 1.0 - step(d, 0.0, tw);
                if a > 0.0 {
                    let lv = lesion.value * (0.75 + 0.5 * tex.at(trow, x));
                    e += (lv - e) * a;
                    c += (c_lesion - c) * a;
                }
                if d <= 0.0 {
                    mx0 = mx0.min(x);
                    mx1 = mx1.max(x);
                    my0 = my0.min(y);
                    my1 = my1.max(y);
                }
            }
            let mut v = e * (1.0 + c * (srow[x] - 1.0));
            // Soft knee like log compression: tissue never saturates, so only
            // calcifications and overlays reach the top of the grey range.
            if v > 170.0 {
                v = 170.0 + 35.0 * (1.0 - (-(v - 170.0) / 35.0).exp());
            }
            orow[x] = v.clamp(0.0, 255.0) as u8;
        }
    }
    if mx0 == usize::MAX {
        // Degenerate (cannot happen for >= 64 px): fall back to the placed box.
        (mx0, my0, mx1, my1) = (
            x0 as usize,
            y0 as usize,
            (x0 + bw) as usize,
            (y0 + bh) as usize,
        );
    }
    let pbox = Rect {
        x0: mx0 as i32,
        y0: my0 as i32,
        x1: mx1 as i32 + 1,
        y1: my1 as i32 + 1,
    };

    // --- calcifications: bright specks well inside the mass
    if spec.calcification() {
        let n = rng.random_range(3..=8);
        let mut drawn = 0;
        for attempt in 0..400 {
            if drawn == n {
                break;
            }
            // Small or very spiculated masses leave little room: relax after 200 tries.
            let relaxed = attempt >= 200;
            let th = uni(rng, -std::f32::consts::PI, std::f32::consts::PI);
            let rho = lesion.radius(th) * uni(rng, 0.0, 0.6);
            let (px, py) = lesion.point(th, rho);
            let size = if relaxed { 2 } else { rng.random_range(2..=4) };
            let (sx0, sy0) = (
                (px - size as f32 * 0.5).round() as i32,
                (py - size as f32 * 0.5).round() as i32,
            );
            let limit = if relaxed { -0.2 } else { -1.0 };
            // Every speck pixel must be inside the mask (so they stay inside the box).
            let ok = (0..size).all(|j| {
                (0..size)
                    .all(|i| lesion.dist((sx0 + i) as f32 + 0.5, (sy0 + j) as f32 + 0.5) < limit)
            });
            if !ok {
                continue;
            }
            let v = rng.random_range(230..=255u8);
            for j in 0..size {
                for i in 0..size {
                    let corner = size == 4 && (i == 0 || i == 3) && (j == 0 || j == 3);
                    if !corner {
                        grey[(sy0 + j) as usize * w + (sx0 + i) as usize] = v;
                    }
                }
            }
            drawn += 1;
        }
    }

    // --- calipers: '+' marks just outside the ends of the long axis
    if rng.random_bool(0.5) {
        let off = rng.random_range(4..=8);
        let arm = rng.random_range(2..=4);
        let (cxm, cym) = ((pbox.x0 + pbox.x1) / 2, (pbox.y0 + pbox.y1) / 2);
        let ends = if spec.direction() {
            [(cxm, pbox.y0 - off - arm - 1), (cxm, pbox.y1 + off + arm)]
        } else {
            [(pbox.x0 - off - arm - 1, cym), (pbox.x1 + off + arm, cym)]
        };
        let v = rng.random_range(210..=255u8);
        for (px, py) in ends {
            if area.depth(px as f32, py as f32).is_none() || px - arm < 0 || py - arm < 0 {
                continue;
            }
            if px + arm >= w as i32 || py + arm >= h as i32 {
                continue;
            }
            for k in -arm..=arm {
                grey[py as usize * w + (px + k) as usize] = v;
                grey[(py + k) as usize * w + px as usize] = v;
            }
            overlays.push(Rect {
                x0: px - arm,
                y0: py - arm,
                x1: px + arm + 1,
                y1: py + arm + 1,
            });
        }
    }

    // --- depth scale ticks along the right edge of a linear-probe image
    if let Area::Rect { r, t, b, .. } = area {
        if rng.random_bool(0.6) {
            let xr = r as i32;
            let x_start = if (w as i32 - xr) >= 10 {
                xr + 3
            } else {
                xr - 7
            };
            let step_px = ((b - t) / uni(rng, 6.0, 10.0)).max(8.0);
            let v = rng.random_range(150..=220u8);
            let mut k = 0;
            let mut yy = t + 2.0;
            while yy < b - 2.0 {
                let len = if k % 5 == 0 { 5 } else { 3 };
                let ty = yy as i32;
                let rct = Rect {
                    x0: x_start,
                    y0: ty,
                    x1: (x_start + len).min(w as i32),
                    y1: ty + 1,
                };
                for x in rct.x0.max(0)..rct.x1 {
                    grey[ty as usize * w + x as usize] = v;
                }
                overlays.push(rct);
                yy += step_px;
                k += 1;
            }
        }
    }

    for (t, rct) in texts.iter().zip(&text_rects) {
        draw_text(&mut grey, w, h, t);
        overlays.push(*rct);
    }

    let bbox = [
        (pbox.x0 + pbox.x1) as f32 * 0.5 / wf,
        (pbox.y0 + pbox.y1) as f32 * 0.5 / hf,
        (pbox.x1 - pbox.x0) as f32 / wf,
        (pbox.y1 - pbox.y0) as f32 / hf,
    ];
    Rendered {
        grey,
        bbox,
        area,
        overlays,
        pbox,
    }
}

fn text_width(s: &str, scale: i32) -> i32 {
    (s.chars().count() as i32 * 6 - 1).max(0) * scale
}

/// One burned-in annotation: top-left corner, upper-case text, pixel scale, grey value.
struct Text {
    x: i32,
    y: i32,
    s: String,
    scale: i32,
    v: u8,
}

fn draw_text(grey: &mut [u8], w: usize, h: usize, t: &Text) {
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
                        if px >= 0 && py >= 0 && (px as usize) < w && (py as usize) < h {
                            grey[py as usize * w + px as usize] = v;
                        }
                    }
                }
            }
        }
    }
}

/// A 5x7 bitmap font for the burned-in annotations (rows top to bottom, bit 4 = left).
mod font {
    pub fn glyph(c: char) -> [u8; 7] {
        match c.to_ascii_uppercase() {
            'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
            'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
            'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
            'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
            'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
            'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
            'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
            'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
            'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
            'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
            'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
            'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
            'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
            'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
            'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
            'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
            'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
            'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
            'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
            'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
            'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
            'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
            'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
            'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
            'Y' => [0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04],
            'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
            '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
            '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
            '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
            '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
            '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
            '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
            '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
            '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
            '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
            '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
            '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
            ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
            '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
            '/' => [0x01, 0x02, 0x02, 0x04, 0x08, 0x08, 0x10],
            _ => [0; 7], // space and anything unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn small_cfg(seed: u64) -> SynthConfig {
        SynthConfig {
            seed,
            train_cls: 12,
            train_fea: 8,
            test_cls: 6,
            test_fea: 4,
            min_side: 96,
            max_side: 160,
        }
    }

    /// All files under `root`, keyed by relative path.
    fn walk(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        fn rec(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    rec(root, &p, out);
                } else {
                    out.insert(
                        p.strip_prefix(root).unwrap().to_path_buf(),
                        fs::read(&p).unwrap(),
                    );
                }
            }
        }
        let mut m = BTreeMap::new();
        rec(root, root, &mut m);
        m
    }

    fn run_in_pool(threads: usize, out: &Path, cfg: &SynthConfig) -> SynthSummary {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| synthesize(out, cfg)).unwrap()
    }

    /// Parses "c cx cy w h" strictly: single spaces, 6 decimals, newline-terminated.
    fn parse_label(text: &str) -> (usize, [f32; 4]) {
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "one line: {text:?}"
        );
        let parts: Vec<&str> = text.trim_end_matches('\n').split(' ').collect();
        assert_eq!(parts.len(), 5, "{text:?}");
        for p in &parts[1..] {
            let (_, frac) = p.split_once('.').expect("decimal point");
            assert_eq!(frac.len(), 6, "{text:?}");
        }
        let b: Vec<f32> = parts[1..].iter().map(|p| p.parse().unwrap()).collect();
        let b = [b[0], b[1], b[2], b[3]];
        assert_box(b);
        (parts[0].parse().unwrap(), b)
    }

    fn assert_box(b: [f32; 4]) {
        assert!(b.iter().all(|v| (0.0..=1.0).contains(v)), "{b:?}");
        assert!(b[2] > 0.0 && b[3] > 0.0, "{b:?}");
        assert!(
            b[0] - b[2] / 2.0 >= -1e-5 && b[0] + b[2] / 2.0 <= 1.0 + 1e-5,
            "{b:?}"
        );
        assert!(
            b[1] - b[3] / 2.0 >= -1e-5 && b[1] + b[3] / 2.0 <= 1.0 + 1e-5,
            "{b:?}"
        );
    }

    /// The lesion must be the dark thing in its box: core mean well below the
    /// tissue ring around the box (frame pixels and bright overlays excluded).
    fn assert_dark_lesion(path: &Path, b: [f32; 4]) {
        let img = image::open(path).unwrap().to_luma8();
        let (w, h) = (img.width() as f32, img.height() as f32);
        let (cx, cy, bw, bh) = (b[0] * w, b[1] * h, b[2] * w, b[3] * h);
        let mut core = (0f64, 0usize);
        let mut ring = (0f64, 0usize);
        for y in 0..img.height() {
            for x in 0..img.width() {
                let (dx, dy) = (((x as f32 + 0.5) - cx).abs(), ((y as f32 + 0.5) - cy).abs());
                let v = img.get_pixel(x, y)[0];
                if dx < 0.15 * bw && dy < 0.15 * bh && v < 215 {
                    core = (core.0 + v as f64, core.1 + 1);
                } else if (dx > 0.5 * bw || dy > 0.5 * bh)
                    && dx < bw
                    && dy < bh
                    && v > 10
                    && v < 215
                {
                    ring = (ring.0 + v as f64, ring.1 + 1);
                }
            }
        }
        assert!(core.1 > 0 && ring.1 > 0, "{path:?}");
        let (c, r) = (core.0 / core.1 as f64, ring.0 / ring.1 as f64);
        assert!(
            c < 60.0 && c < 0.6 * r,
            "{path:?}: core {c:.1} vs ring {r:.1}"
        );
    }

    #[test]
    fn config_validation() {
        let ok = SynthConfig::default();
        assert!(validate(&ok).is_ok());
        assert_eq!(ok.train_cls + ok.train_fea + ok.test_cls + ok.test_fea, 600);
        let bad = [
            SynthConfig {
                min_side: 63,
                ..ok.clone()
            },
            SynthConfig {
                min_side: 300,
                max_side: 200,
                ..ok.clone()
            },
            SynthConfig {
                max_side: 5000,
                ..ok.clone()
            },
            SynthConfig {
                train_cls: 5,
                ..ok.clone()
            },
            SynthConfig {
                train_cls: 0,
                train_fea: 0,
                test_cls: 0,
                test_fea: 0,
                ..ok.clone()
            },
            SynthConfig {
                test_fea: 10_000,
                ..ok.clone()
            },
        ];
        for cfg in bad {
            assert!(
                matches!(validate(&cfg), Err(SynthError::Config(_))),
                "{cfg:?}"
            );
        }
        assert!(validate(&SynthConfig {
            train_cls: 0,
            test_cls: 3,
            ..ok.clone()
        })
        .is_ok());
        let dir = tempfile::tempdir().unwrap();
        let err = synthesize(dir.path(), &SynthConfig { min_side: 10, ..ok }).unwrap_err();
        assert!(matches!(err, SynthError::Config(_)));
    }

    #[test]
    fn refuses_non_empty_output() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("x.txt"), b"x").unwrap();
        assert!(matches!(
            synthesize(dir.path(), &small_cfg(1)),
            Err(SynthError::Config(_))
        ));
    }

    #[test]
    fn deterministic_across_runs_and_thread_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        let sa = run_in_pool(1, &a, &small_cfg(11));
        let sb = run_in_pool(3, &b, &small_cfg(11));
        let sc = run_in_pool(2, &c, &small_cfg(12));
        assert_eq!(sa.class_counts, sb.class_counts);
        let (fa, fb, fc) = (walk(&a), walk(&b), walk(&c));
        assert_eq!(fa.len(), fb.len());
        for (k, v) in &fa {
            assert!(fb.get(k) == Some(v), "{k:?} differs between identical runs");
        }
        assert!(
            !fa.keys().any(|k| k.to_string_lossy().ends_with(".tmp")),
            "temporary files left"
        );
        // Another seed: other labels (and images).
        let labels = |m: &BTreeMap<PathBuf, Vec<u8>>| -> Vec<Vec<u8>> {
            m.iter()
                .filter(|(k, _)| k.extension().is_some_and(|e| e == "txt" || e == "csv"))
                .map(|(_, v)| v.clone())
                .collect()
        };
        assert_ne!(labels(&fa), labels(&fc));
        assert_ne!(
            sa.feature_positive.iter().sum::<usize>() + 1000 * sa.images,
            0
        );
        let _ = sc;
        // render itself is a pure function of the RNG state.
        let spec = LesionSpec {
            birads: 3,
            features: [true, false, true, false],
        };
        let r1 = render(&spec, 150, 120, &mut ChaCha8Rng::seed_from_u64(5));
        let r2 = render(&spec, 150, 120, &mut ChaCha8Rng::seed_from_u64(5));
        let r3 = render(&spec, 150, 120, &mut ChaCha8Rng::seed_from_u64(6));
        assert!(r1 == r2);
        assert!(r1.0 != r3.0);
    }

    #[test]
    fn layout_labels_and_boxes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ds");
        let cfg = small_cfg(3);
        let sum = synthesize(&out, &cfg).unwrap();
        assert_eq!(sum.images, 30);
        assert_eq!(sum.out, out);
        assert!(fs::read_to_string(out.join("README.txt"))
            .unwrap()
            .contains("seed 3"));
        let check_image = |p: &Path| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            assert!(name.ends_with(".jpg") || name.ends_with(".png"), "{name}");
            let img = image::open(p).unwrap();
            assert!(
                (cfg.min_side..=cfg.max_side).contains(&img.width()),
                "{name}"
            );
            assert!(
                (cfg.min_side..=cfg.max_side).contains(&img.height()),
                "{name}"
            );
            let rgb = img.to_rgb8();
            // Grey: JPEG colour conversion may round channels apart by a level or two.
            assert!(
                rgb.pixels()
                    .all(|p| p[0].abs_diff(p[1]) <= 3 && p[1].abs_diff(p[2]) <= 3),
                "{name}"
            );
        };

        // Classification training set.
        let cls = out.join(CLS_ROOT).join("train");
        let mut class_counts = [0usize; 6];
        for (c, dir_name) in CLASS_DIRS.iter().enumerate() {
            let images: Vec<PathBuf> = fs::read_dir(cls.join(dir_name).join("images"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            let n_labels = fs::read_dir(cls.join(dir_name).join("labels"))
                .unwrap()
                .count();
            assert_eq!(images.len(), n_labels, "{dir_name}");
            assert!(!images.is_empty(), "class {dir_name} empty");
            class_counts[c] = images.len();
            for img in images {
                let stem = img.file_stem().unwrap().to_string_lossy().to_string();
                assert!(stem.starts_with("synth_cls_") && stem.len() == 15, "{stem}");
                let id: usize = stem[10..].parse().unwrap();
                assert!((1..=cfg.train_cls).contains(&id));
                let text = fs::read_to_string(
                    cls.join(dir_name)
                        .join("labels")
                        .join(format!("{stem}.txt")),
                )
                .unwrap();
                let (label, b) = parse_label(&text);
                assert_eq!(label, c + 1);
                check_image(&img);
                assert_dark_lesion(&img, b);
            }
        }
        assert_eq!(class_counts.iter().sum::<usize>(), cfg.train_cls);
        assert_eq!(class_counts, class_quotas(cfg.train_cls));

        // Feature training set: four label files with one shared box.
        let fea = out.join(FEA_ROOT).join("train");
        let images: Vec<PathBuf> = fs::read_dir(fea.join("images"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(images.len(), cfg.train_fea);
        let mut positives = [0usize; 4];
        for img in &images {
            let stem = img.file_stem().unwrap().to_string_lossy().to_string();
            assert!(stem.starts_with("synth_fea_"), "{stem}");
            let mut boxes = Vec::new();
            for (k, f) in FEATURE_NAMES.iter().enumerate() {
                let text =
                    fs::read_to_string(fea.join(format!("{f}_labels")).join(format!("{stem}.txt")))
                        .unwrap();
                let (v, b) = parse_label(&text);
                assert!(v <= 1);
                positives[k] += v;
                boxes.push(text.split_once(' ').unwrap().1.to_string());
                if k == 0 {
                    assert_dark_lesion(img, b);
                }
            }
            assert!(boxes.iter().all(|b| b == &boxes[0]));
            check_image(img);
        }

        // Test set: CSVs with exact headers referring to existing images.
        let test = out.join("testA");
        let cla_gt = fs::read_to_string(test.join("cla_gt.csv")).unwrap();
        let fea_gt = fs::read_to_string(test.join("fea_gt.csv")).unwrap();
        let boxes = fs::read_to_string(test.join("boxes.csv")).unwrap();
        assert!(cla_gt.starts_with("img_name,label\n"));
        assert!(fea_gt.starts_with("img_name,boundary,calcification,direction,shape\n"));
        assert!(boxes.starts_with("img_name,cx,cy,w,h\n"));
        assert_eq!(cla_gt.lines().count(), cfg.test_cls + 1);
        assert_eq!(fea_gt.lines().count(), cfg.test_fea + 1);
        assert_eq!(boxes.lines().count(), cfg.test_cls + cfg.test_fea + 1);
        for line in cla_gt.lines().skip(1) {
            let (name, label) = line.split_once(',').unwrap();
            assert_eq!(name.len(), 8, "{name}");
            class_counts[label.parse::<usize>().unwrap()] += 1;
            check_image(&test.join("cla").join(name));
        }
        for line in fea_gt.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 5);
            for k in 0..4 {
                positives[k] += f[k + 1].parse::<usize>().unwrap();
            }
            check_image(&test.join("fea").join(f[0]));
        }
        for line in boxes.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let b: Vec<f32> = f[1..].iter().map(|v| v.parse().unwrap()).collect();
            assert_box([b[0], b[1], b[2], b[3]]);
            assert_dark_lesion(&test.join(f[0]), [b[0], b[1], b[2], b[3]]);
        }
        assert_eq!(
            fs::read_dir(test.join("cla")).unwrap().count(),
            cfg.test_cls
        );
        assert_eq!(
            fs::read_dir(test.join("fea")).unwrap().count(),
            cfg.test_fea
        );
        assert_eq!(sum.class_counts, class_counts);
        assert_eq!(sum.feature_positive, positives);
    }

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
            let r = render_full(&spec, w, h, &mut rng);
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
    fn shape_and_margin_tables_differ() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        // Relative amplitude of the outline's angular harmonics in [lo, hi]: shape lives
        // in the low orders (lobulation), an unsmooth margin in the high orders.
        let band = |t: &[f32], lo: usize, hi: usize| {
            let n = t.len() as f32;
            let mean = t.iter().sum::<f32>() / n;
            let mut e = 0f32;
            for k in lo..=hi {
                let (mut c, mut s) = (0f32, 0f32);
                for (i, r) in t.iter().enumerate() {
                    let a = std::f32::consts::TAU * k as f32 * i as f32 / n;
                    c += r * a.cos();
                    s += r * a.sin();
                }
                e += (c * c + s * s) * 4.0 / (n * n);
            }
            e.sqrt() / mean
        };
        for _ in 0..20 {
            let mk = |b: bool, s: bool| LesionSpec {
                birads: 0,
                features: [b, false, false, s],
            };
            let (plain, _, _) = lesion_table(&mk(false, false), &mut rng);
            let (lobed, _, _) = lesion_table(&mk(false, true), &mut rng);
            let (rough, _, _) = lesion_table(&mk(true, false), &mut rng);
            let (lp, ll) = (band(&plain, 2, 7), band(&lobed, 2, 7));
            assert!(
                lp < 0.03 && ll > 0.15,
                "low band: plain {lp}, lobulated {ll}"
            );
            let (hp, hl, hr) = (
                band(&plain, 9, 60),
                band(&lobed, 9, 60),
                band(&rough, 9, 60),
            );
            assert!(
                hp < 0.005 && hl < 0.005 && hr > 0.03,
                "high band: {hp} {hl} {hr}"
            );
        }
    }

    #[test]
    fn birads_rises_with_suspicious_features() {
        let mut rng = ChaCha8Rng::seed_from_u64(2024);
        let n = 20_000;
        let mut counts = [0usize; 6];
        let mut feat_sum = [0usize; 6];
        let mut rate = [0usize; 4];
        for _ in 0..n {
            let s = sample_spec(&mut rng);
            counts[s.birads] += 1;
            feat_sum[s.birads] += s.features.iter().filter(|&&f| f).count();
            for (r, &f) in rate.iter_mut().zip(&s.features) {
                *r += f as usize;
            }
        }
        for c in 0..6 {
            let f = counts[c] as f64 / n as f64;
            assert!((f - CLASS_FREQ[c]).abs() < 0.02, "class {c}: {f}");
        }
        for k in 0..4 {
            let f = rate[k] as f64 / n as f64;
            assert!((f - FEATURE_RATE[k]).abs() < 0.02, "feature {k}: {f}");
        }
        let mean: Vec<f64> = (0..6)
            .map(|c| feat_sum[c] as f64 / counts[c] as f64)
            .collect();
        assert!(mean.windows(2).all(|w| w[0] < w[1]), "{mean:?}");
    }

    #[test]
    fn quotas_cover_every_class() {
        for n in [6, 7, 13, 30, 60, 240, 1000] {
            let q = class_quotas(n);
            assert_eq!(q.iter().sum::<usize>(), n, "{n}");
            let min_each = ((n as f64 * 0.05).ceil() as usize).max(1);
            assert!(q.iter().all(|&c| c >= min_each), "{n}: {q:?}");
        }
        assert_eq!(class_quotas(300), [57, 90, 54, 39, 36, 24]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let specs = quota_specs(240, &mut rng);
        let mut have = [0; 6];
        specs.iter().for_each(|s| have[s.birads] += 1);
        assert_eq!(have, class_quotas(240));
    }

    #[test]
    fn font_has_the_needed_glyphs() {
        let chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:-";
        let glyphs: Vec<[u8; 7]> = chars.chars().map(font::glyph).collect();
        for (c, g) in chars.chars().zip(&glyphs) {
            assert!(
                g.iter().any(|&r| r != 0) && g.iter().all(|&r| r < 32),
                "{c}"
            );
        }
        for i in 0..glyphs.len() {
            for j in i + 1..glyphs.len() {
                assert_ne!(glyphs[i], glyphs[j], "duplicate glyphs");
            }
        }
        assert_eq!(font::glyph(' '), [0; 7]);
    }
}
