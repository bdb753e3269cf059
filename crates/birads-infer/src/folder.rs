//! The competition entry point as a library function: a testB-like folder (`cla/` and `fea/`)
//! or a flat folder of images → `cla_pre.csv` / `fea_pre.csv` (and the probability CSVs).
//! `birads predict` and the Python package's `predict_folder` both call [`predict_folder`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use birads_data::readers::list_images;
use birads_data::{ImageSource, Problem, Sample, Severity};
use birads_model::builtin;
use birads_model::checkpoint::Purpose;
use birads_model::fast::FastModel;
use birads_model::Cpu;

use crate::csvout::{write_cla_pre, write_cla_prob, write_fea_pre, write_fea_prob};
use crate::loaded::{load_model, LoadError};
#[cfg(any(feature = "cuda", feature = "wgpu"))]
use crate::predict::BurnRunner;
use crate::predict::Runner;
use crate::predict::{ClsPrediction, FeaPrediction};
use crate::Predictor;

/// Which code runs the models at inference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// `birads_model::fast`: channels-last, fused, BatchNorm folded.
    #[default]
    Fast,
    /// burn's CPU backend, the same modules training uses.
    Burn,
    /// burn's CUDA backend on the first NVIDIA GPU (a build with the `cuda` feature).
    Cuda,
    /// burn's wgpu backend on the first GPU it finds (a build with the `wgpu` feature).
    Wgpu,
}

/// A model ready to predict, with its class list and where it came from.
pub struct Loaded {
    pub predictor: Predictor<Cpu>,
    pub classes: Vec<String>,
    pub source: String,
}

/// Load weights (a file or `builtin`) for `purpose` onto the CPU, with the chosen engine.
pub fn load_predictor(
    path: &Path,
    purpose: Purpose,
    tta: bool,
    engine: Engine,
) -> Result<Loaded, LoadError> {
    let device = Default::default();
    let loaded = load_model::<Cpu>(path, purpose, &device)?;
    let runner: Option<Box<dyn Runner>> = match engine {
        Engine::Fast => Some(Box::new(FastModel::from_model(&loaded.model))),
        Engine::Burn => None,
        Engine::Cuda => Some(cuda_runner(path, purpose)?),
        Engine::Wgpu => Some(wgpu_runner(path, purpose)?),
    };
    Ok(Loaded {
        predictor: Predictor {
            model: loaded.model,
            preprocess: loaded.preprocess,
            device,
            tta,
            runner,
        },
        classes: loaded.classes,
        source: loaded.source,
    })
}

/// The same weights on a GPU backend `B`, for `Engine::Cuda` and `Engine::Wgpu`.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn gpu_runner<B: burn::tensor::backend::Backend>(
    path: &Path,
    purpose: Purpose,
) -> Result<Box<dyn Runner>, LoadError> {
    let device = Default::default();
    let loaded = load_model::<B>(path, purpose, &device)?;
    Ok(Box::new(BurnRunner::<B>::new(loaded.model, device)))
}

#[cfg(feature = "cuda")]
fn cuda_runner(path: &Path, purpose: Purpose) -> Result<Box<dyn Runner>, LoadError> {
    gpu_runner::<birads_model::Cuda>(path, purpose)
}

#[cfg(not(feature = "cuda"))]
fn cuda_runner(_path: &Path, _purpose: Purpose) -> Result<Box<dyn Runner>, LoadError> {
    Err(not_built("cuda"))
}

#[cfg(feature = "wgpu")]
fn wgpu_runner(path: &Path, purpose: Purpose) -> Result<Box<dyn Runner>, LoadError> {
    gpu_runner::<birads_model::Wgpu>(path, purpose)
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_runner(_path: &Path, _purpose: Purpose) -> Result<Box<dyn Runner>, LoadError> {
    Err(not_built("wgpu"))
}

/// A GPU backend this build lacks, and how to build it in.
#[cfg(not(all(feature = "cuda", feature = "wgpu")))]
fn not_built(feature: &str) -> LoadError {
    LoadError::Unavailable(birads_model::not_built(feature))
}

/// What `predict_folder` does.
#[derive(Debug, Clone)]
pub struct FolderOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    /// BI-RADS weights; with neither this nor `fea_weights`, the built-in model.
    pub cla_weights: Option<PathBuf>,
    pub fea_weights: Option<PathBuf>,
    /// Also write `cla_prob.csv` / `fea_prob.csv`.
    pub probabilities: bool,
    pub batch_size: usize,
    pub tta: bool,
    pub engine: Engine,
    /// In a testB-like folder, run both models on the images of both folders (for
    /// assessments, fusion and reports: every image gets a category and descriptors); the
    /// CSVs still hold each model's own folder.
    pub every_image: bool,
}

/// Which model a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Birads,
    Features,
}

/// What `predict_folder` did.
#[derive(Debug, Default)]
pub struct FolderSummary {
    /// Images predicted by the BI-RADS and by the feature model.
    pub birads: Option<usize>,
    pub features: Option<usize>,
    /// Files written, in order.
    pub written: Vec<PathBuf>,
    /// Images (or folder entries) left out, each with its reason: first the entries the
    /// folder listing could not read (`unreadable` of them, e.g. a symbolic-link loop), then
    /// the images that could not be decoded.
    pub skipped: Vec<Problem>,
    pub unreadable: usize,
    /// Things said but not fatal (a folder without weights, a non-UTF-8 name, …).
    pub notes: Vec<String>,
    /// Where the models came from.
    pub sources: Vec<String>,
    /// The BI-RADS model's classes (empty without one).
    pub classes: Vec<String>,
    /// What the models said about each image, by path (for assessments and reports).
    pub outputs: Vec<ImageOutputs>,
}

/// Both models' outputs on one image (either may be missing: in a testB-like folder each
/// model sees its own folder).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageOutputs {
    pub path: PathBuf,
    pub img_name: String,
    /// Softmax over `FolderSummary::classes`.
    pub birads: Option<Vec<f32>>,
    /// P(suspicious) per feature.
    pub features: Option<[f32; 4]>,
    /// The image is one of those `cla_pre.csv` covers (in a testB-like folder: from `cla/`).
    pub in_birads_csv: bool,
}

/// Join the two runs' outputs by image path, in path order.
fn join_outputs(
    cla_files: &[PathBuf],
    cls: &[crate::ClsPrediction],
    fea_files: &[PathBuf],
    fea: &[crate::FeaPrediction],
) -> Vec<ImageOutputs> {
    type ByPath = std::collections::BTreeMap<PathBuf, ImageOutputs>;
    fn slot<'a>(m: &'a mut ByPath, path: &Path, name: &str) -> &'a mut ImageOutputs {
        m.entry(path.to_path_buf()).or_insert_with(|| ImageOutputs {
            path: path.to_path_buf(),
            img_name: name.to_string(),
            birads: None,
            features: None,
            in_birads_csv: false,
        })
    }
    let mut by_path = ByPath::new();
    for p in cls {
        let o = slot(&mut by_path, &cla_files[p.index], &p.img_name);
        o.birads = Some(p.probabilities.clone());
        o.in_birads_csv = true;
    }
    for p in fea {
        slot(&mut by_path, &fea_files[p.index], &p.img_name).features = Some(p.probabilities);
    }
    by_path.into_values().collect()
}

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("{0}: not a folder")]
    NotAFolder(PathBuf),
    #[error("{0}")]
    Listing(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// The note printed when no weights are given.
pub fn builtin_note() -> String {
    format!(
        "no weights given: BI-RADS by the built-in model {} (trained on BUS-BRA: categories 2, 3, 4, 5; \
         see {}); birads has no built-in feature model (--fea-weights MyDense.pth or a checkpoint)",
        builtin::NAME,
        builtin::CARD_PATH
    )
}

fn samples(files: Vec<PathBuf>) -> Vec<Sample> {
    files
        .into_iter()
        .map(|p| Sample::unlabelled(ImageSource::Path(p), "predict"))
        .collect()
}

/// The images of the BI-RADS and the feature model: `cla/` and `fea/` of a testB-like
/// folder, or every image of a flat folder for both.
fn listing(
    input: &Path,
    s: &mut FolderSummary,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>, bool), FolderError> {
    if !input.is_dir() {
        return Err(FolderError::NotAFolder(input.to_path_buf()));
    }
    let (cla_dir, fea_dir) = (input.join("cla"), input.join("fea"));
    let split = cla_dir.is_dir() || fea_dir.is_dir();
    let mut problems = Vec::new();
    let mut list = |d: &Path| -> Result<Vec<PathBuf>, FolderError> {
        if d.is_dir() {
            list_images(d, &mut problems).map_err(|e| FolderError::Listing(e.to_string()))
        } else {
            Ok(Vec::new())
        }
    };
    let (cla, fea) = if split {
        (list(&cla_dir)?, list(&fea_dir)?)
    } else {
        let all = list(input)?;
        (all.clone(), all)
    };
    // The CSVs hold names as text: a name that is not UTF-8 cannot be written as it is.
    let mut seen = std::collections::BTreeSet::new();
    for f in cla.iter().chain(&fea) {
        if f.file_name().is_some_and(|n| n.to_str().is_none()) && seen.insert(f.clone()) {
            problems.push(Problem::warning(
                f.display(),
                "file name is not valid UTF-8: the CSVs show it with U+FFFD in place of the bad bytes",
            ));
        }
    }
    for p in problems {
        match p.severity {
            // Entries the listing could not read (e.g. a symlink loop) count as skipped.
            Severity::Error => {
                s.skipped.push(p);
                s.unreadable += 1;
            }
            Severity::Warning => s.notes.push(p.to_string()),
        }
    }
    Ok((cla, fea, split))
}

/// Predict every image of `o.input` and write the competition CSVs into `o.output`.
/// `progress(stage, done, total)` follows each model's run. Images that cannot be read are
/// listed in the summary's `skipped` and left out of the CSVs; a model that cannot be loaded
/// is an error (nothing is written for it).
pub fn predict_folder(
    o: &FolderOptions,
    progress: &mut dyn FnMut(Stage, usize, usize),
) -> Result<FolderSummary, FolderError> {
    let mut s = FolderSummary::default();
    let (cla_files, fea_files, split) = listing(&o.input, &mut s)?;
    let mut cla_weights = o.cla_weights.clone();
    if cla_weights.is_none() && o.fea_weights.is_none() {
        s.notes.push(builtin_note());
        cla_weights = Some(PathBuf::from(builtin::KEYWORD));
    }
    std::fs::create_dir_all(&o.output).map_err(|e| FolderError::Write(o.output.clone(), e))?;
    let plan = Plan::new(cla_files, fea_files, o.every_image && split);
    let (mut cls_preds, mut fea_preds) = (Vec::new(), Vec::new());
    // The feature model loads on another thread while the BI-RADS model loads and runs:
    // reading a checkpoint is single-threaded, and cold start is mostly loading.
    std::thread::scope(|scope| -> Result<(), FolderError> {
        let fea_loader = o.fea_weights.as_ref().map(|w| {
            let (tta, engine) = (o.tta, o.engine);
            scope.spawn(move || load_predictor(w, Purpose::Features, tta, engine))
        });
        match &cla_weights {
            Some(w) => {
                let m = load_predictor(w, Purpose::Grading, o.tta, o.engine)?;
                cls_preds = birads_csvs(o, &m, &plan, progress, &mut s)?;
            }
            None if !plan.cla_files.is_empty() && split => s.notes.push(format!(
                "{} has images but no BI-RADS weights were given (`builtin` for the built-in model): skipped",
                o.input.join("cla").display()
            )),
            None => {}
        }
        if let (Some(w), Some(loader)) = (&o.fea_weights, fea_loader) {
            let m = loader
                .join()
                .map_err(|_| FolderError::Listing(format!("loading {} panicked", w.display())))??;
            fea_preds = feature_csvs(o, &m, &plan, progress, &mut s)?;
        } else if !plan.fea_files.is_empty() && split {
            s.notes.push(format!(
                "{} has images but no feature weights were given (there is no built-in feature model): skipped",
                o.input.join("fea").display()
            ));
        }
        Ok(())
    })?;
    if plan.union {
        // Both models saw every image: an unreadable one failed twice.
        let mut seen = std::collections::BTreeSet::new();
        s.skipped
            .retain(|p| seen.insert((p.item.clone(), p.reason.clone())));
    }
    s.outputs = join_outputs(&plan.cla_files, &cls_preds, &plan.fea_files, &fea_preds);
    for out in &mut s.outputs {
        out.in_birads_csv &= plan.keeps(&plan.cla_set, &out.path);
    }
    Ok(s)
}

/// What each model runs on, and which of its predictions go into its CSV: with
/// `every_image` on a split folder (`union`) both models run on every image of `cla/` and
/// `fea/`, and each CSV keeps its own folder's images.
struct Plan {
    union: bool,
    cla_set: BTreeSet<PathBuf>,
    fea_set: BTreeSet<PathBuf>,
    cla_files: Vec<PathBuf>,
    fea_files: Vec<PathBuf>,
}

impl Plan {
    fn new(cla_files: Vec<PathBuf>, fea_files: Vec<PathBuf>, union: bool) -> Self {
        let cla_set: BTreeSet<PathBuf> = cla_files.iter().cloned().collect();
        let fea_set: BTreeSet<PathBuf> = fea_files.iter().cloned().collect();
        let (cla_files, fea_files) = if union {
            let all: Vec<PathBuf> = cla_set.union(&fea_set).cloned().collect();
            (all.clone(), all)
        } else {
            (cla_files, fea_files)
        };
        Self {
            union,
            cla_set,
            fea_set,
            cla_files,
            fea_files,
        }
    }

    /// Does the CSV of the folder whose images are `own` keep `path`'s prediction?
    fn keeps(&self, own: &BTreeSet<PathBuf>, path: &Path) -> bool {
        !self.union || own.contains(path)
    }
}

/// Record a written file in the summary, or turn its failure into the error.
fn written(r: std::io::Result<()>, p: PathBuf, s: &mut FolderSummary) -> Result<(), FolderError> {
    match r {
        Ok(()) => {
            s.written.push(p);
            Ok(())
        }
        Err(e) => Err(FolderError::Write(p, e)),
    }
}

/// Run the BI-RADS model over its images and write `cla_pre.csv` (and `cla_prob.csv`);
/// returns every prediction.
fn birads_csvs(
    o: &FolderOptions,
    m: &Loaded,
    plan: &Plan,
    progress: &mut dyn FnMut(Stage, usize, usize),
    s: &mut FolderSummary,
) -> Result<Vec<ClsPrediction>, FolderError> {
    s.sources.push(m.source.clone());
    let files = &plan.cla_files;
    let total = files.len();
    let run = m
        .predictor
        .classify(samples(files.clone()), o.batch_size, |d| {
            progress(Stage::Birads, d, total)
        });
    s.classes = m.classes.clone();
    s.skipped.extend(run.failures);
    let preds: Vec<_> = run
        .predictions
        .iter()
        .filter(|p| plan.keeps(&plan.cla_set, &files[p.index]))
        .cloned()
        .collect();
    let p = o.output.join("cla_pre.csv");
    written(write_cla_pre(&p, &preds), p, s)?;
    if o.probabilities {
        let p = o.output.join("cla_prob.csv");
        written(write_cla_prob(&p, &m.classes, &preds), p, s)?;
    }
    s.birads = Some(preds.len());
    Ok(run.predictions)
}

/// Run the feature model over its images and write `fea_pre.csv` (and `fea_prob.csv`);
/// returns every prediction.
fn feature_csvs(
    o: &FolderOptions,
    m: &Loaded,
    plan: &Plan,
    progress: &mut dyn FnMut(Stage, usize, usize),
    s: &mut FolderSummary,
) -> Result<Vec<FeaPrediction>, FolderError> {
    s.sources.push(m.source.clone());
    let files = &plan.fea_files;
    let total = files.len();
    let run = m
        .predictor
        .features(samples(files.clone()), o.batch_size, |d| {
            progress(Stage::Features, d, total)
        });
    s.skipped.extend(run.failures);
    let preds: Vec<_> = run
        .predictions
        .iter()
        .filter(|p| plan.keeps(&plan.fea_set, &files[p.index]))
        .cloned()
        .collect();
    let p = o.output.join("fea_pre.csv");
    written(write_fea_pre(&p, &preds), p, s)?;
    if o.probabilities {
        let p = o.output.join("fea_prob.csv");
        written(write_fea_prob(&p, &preds), p, s)?;
    }
    s.features = Some(preds.len());
    Ok(run.predictions)
}
