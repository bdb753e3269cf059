//! The `birads` Python package's native module (`birads._native`): thin wrappers over the
//! library functions the CLI calls, so both give the same results by construction. Heavy work
//! runs with the GIL released; errors become `birads.BiradsError` with the CLI's messages.

use std::path::PathBuf;

use birads_data::image_ops::{cut_black as cut_black_op, decode, CutBlackParams};
use birads_data::pipeline::{preprocess as preprocess_op, Preprocess};
use birads_data::ImageSource;
use image::RgbImage;
use numpy::{
    PyArray1, PyArray3, PyArrayMethods, PyReadonlyArray2, PyReadonlyArray3, PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyDict;

mod augment;
mod model;

create_exception!(
    _native,
    BiradsError,
    PyException,
    "An error from birads, with the message the command-line tool gives."
);

pub(crate) fn err(e: impl std::fmt::Display) -> PyErr {
    BiradsError::new_err(e.to_string())
}

/// An image argument: a path (str or os.PathLike), or pixels as a uint8 array `[H, W, 3]`
/// (RGB) or `[H, W]` (grey).
pub(crate) enum ImageArg {
    Path(PathBuf),
    Pixels(RgbImage),
}

impl ImageArg {
    pub(crate) fn extract(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(a) = obj.extract::<PyReadonlyArray3<'_, u8>>() {
            let s = a.shape();
            if s[2] != 3 {
                return Err(err(format!(
                    "an image array must be [height, width, 3] RGB or [height, width] grey uint8, got shape {s:?}"
                )));
            }
            let data: Vec<u8> = a.as_array().iter().copied().collect();
            return RgbImage::from_raw(s[1] as u32, s[0] as u32, data)
                .map(ImageArg::Pixels)
                .ok_or_else(|| err("image buffer size mismatch"));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray2<'_, u8>>() {
            let s = a.shape();
            let data: Vec<u8> = a.as_array().iter().flat_map(|&v| [v, v, v]).collect();
            return RgbImage::from_raw(s[1] as u32, s[0] as u32, data)
                .map(ImageArg::Pixels)
                .ok_or_else(|| err("image buffer size mismatch"));
        }
        if let Ok(p) = obj.extract::<PathBuf>() {
            return Ok(ImageArg::Path(p));
        }
        Err(err(format!(
            "expected a path or a uint8 image array, got {}",
            obj.get_type().name()?
        )))
    }

    /// The pixels, decoding a path as `birads predict` does.
    pub(crate) fn pixels(self) -> Result<RgbImage, String> {
        match self {
            ImageArg::Pixels(p) => Ok(p),
            ImageArg::Path(p) => {
                decode(&ImageSource::Path(p.clone())).map_err(|e| format!("{}: {e}", p.display()))
            }
        }
    }
}

pub(crate) fn image_to_numpy<'py>(py: Python<'py>, img: &RgbImage) -> Bound<'py, PyArray3<u8>> {
    let (w, h) = img.dimensions();
    PyArray1::from_vec(py, img.as_raw().clone())
        .reshape([h as usize, w as usize, 3])
        .expect("h·w·3 values")
}

pub(crate) fn chw_to_numpy<'py>(
    py: Python<'py>,
    data: Vec<f32>,
    c: usize,
    h: usize,
    w: usize,
) -> Bound<'py, PyArray3<f32>> {
    PyArray1::from_vec(py, data)
        .reshape([c, h, w])
        .expect("c·h·w values")
}

/// Decode an image file (JPEG, PNG, BMP, DICOM) to RGB pixels as `birads predict` does:
/// uint8 `[height, width, 3]`.
#[pyfunction]
fn load_image(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyArray3<u8>>> {
    let img = py.detach(|| ImageArg::Path(path).pixels()).map_err(err)?;
    Ok(image_to_numpy(py, &img))
}

/// The preprocessing chain of `chain` with optional overrides.
pub(crate) fn chain_with(
    base: Preprocess,
    size: Option<u32>,
    crop: Option<u32>,
    cut_black: Option<bool>,
) -> Preprocess {
    let mut p = base;
    if let Some(s) = size {
        p.size = s;
    }
    if let Some(c) = crop {
        p.crop = (c > 0).then_some(c);
    }
    if let Some(c) = cut_black {
        p.cut_black = c;
    }
    p
}

/// The model-input tensor of an image: float32 `[3, size, size]`, exactly what `birads
/// predict` feeds the model. By default the original inference chain (CenterCrop 672 →
/// Resize 224 → Normalize with ImageNet's mean and std); with `model`, that model's own chain.
/// `size`, `crop` (0: none) and `cut_black` override single steps.
#[pyfunction]
#[pyo3(signature = (image, model=None, *, size=None, crop=None, cut_black=None))]
fn preprocess<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    model: Option<PyRef<'py, model::Model>>,
    size: Option<u32>,
    crop: Option<u32>,
    cut_black: Option<bool>,
) -> PyResult<Bound<'py, PyArray3<f32>>> {
    let base = match &model {
        Some(m) => m.chain(),
        None => Preprocess::original_inference(),
    };
    let p = chain_with(base, size, crop, cut_black);
    let arg = ImageArg::extract(image)?;
    let t = py
        .detach(|| arg.pixels().map(|img| preprocess_op(&img, None, &p).tensor))
        .map_err(err)?;
    Ok(chw_to_numpy(py, t.data, t.channels, t.height, t.width))
}

/// CutBlack (the original program's black-border trim) on its own: the trimmed image and its
/// box `(x0, y0, x1, y1)` in the input (the whole image when it keeps it).
#[pyfunction]
#[allow(clippy::type_complexity)]
fn cut_black<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyArray3<u8>>, (u32, u32, u32, u32))> {
    let arg = ImageArg::extract(image)?;
    let (img, b) = py
        .detach(|| {
            arg.pixels()
                .map(|img| cut_black_op(&img, &CutBlackParams::default()))
        })
        .map_err(err)?;
    Ok((image_to_numpy(py, &img), (b.x0, b.y0, b.x1, b.y1)))
}

fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    let json = py.import("json")?;
    json.call_method1("loads", (v.to_string(),))
}

/// The competition entry point, as `birads predict`: a testB-like folder (`cla/`, `fea/`) or a
/// flat folder of images → `cla_pre.csv` / `fea_pre.csv` (and `cla_prob.csv` / `fea_prob.csv`
/// with `probabilities`) in `output`. Without weights, the built-in BI-RADS model. Returns what
/// was done: counts, files written, skipped images with their reasons, notes.
#[pyfunction]
#[pyo3(signature = (input, output=PathBuf::from("."), *, cla_weights=None, fea_weights=None, probabilities=false, batch_size=8, tta=false))]
#[allow(clippy::too_many_arguments)]
fn predict_folder<'py>(
    py: Python<'py>,
    input: PathBuf,
    output: PathBuf,
    cla_weights: Option<PathBuf>,
    fea_weights: Option<PathBuf>,
    probabilities: bool,
    batch_size: usize,
    tta: bool,
) -> PyResult<Bound<'py, PyDict>> {
    use birads_infer::folder::{predict_folder as run, Engine, FolderOptions};
    let o = FolderOptions {
        input,
        output,
        cla_weights,
        fea_weights,
        probabilities,
        batch_size: batch_size.max(1),
        tta,
        engine: Engine::Fast,
        every_image: false,
    };
    let s = py.detach(|| run(&o, &mut |_, _, _| {})).map_err(err)?;
    let d = PyDict::new(py);
    d.set_item("birads", s.birads)?;
    d.set_item("features", s.features)?;
    d.set_item("written", s.written)?;
    let skipped: Vec<(String, String)> = s
        .skipped
        .iter()
        .map(|p| (p.item.clone(), p.reason.clone()))
        .collect();
    d.set_item("skipped", skipped)?;
    d.set_item("notes", s.notes)?;
    d.set_item("sources", s.sources)?;
    Ok(d)
}

fn paths(obj: &Bound<'_, PyAny>) -> PyResult<Vec<PathBuf>> {
    if let Ok(p) = obj.extract::<PathBuf>() {
        return Ok(vec![p]);
    }
    obj.extract::<Vec<PathBuf>>()
}

/// Metrics of predictions against ground truth, as `birads eval` writes them to `eval.json`:
/// `pred` a folder written by `predict_folder` or its CSVs; `truth` `cla_gt.csv` /
/// `fea_gt.csv` or any labelled dataset. With `report`, also writes `eval.json`,
/// `report.html` and the plots there.
#[pyfunction]
#[pyo3(signature = (pred, truth, *, report=None))]
fn evaluate<'py>(
    py: Python<'py>,
    pred: &Bound<'py, PyAny>,
    truth: &Bound<'py, PyAny>,
    report: Option<PathBuf>,
) -> PyResult<Bound<'py, PyAny>> {
    use birads_infer::eval::{evaluate as run, Predictions, Truth};
    let (pred, truth) = (paths(pred)?, paths(truth)?);
    let json = py
        .detach(|| -> Result<serde_json::Value, String> {
            let p = Predictions::read(&pred).map_err(|e| format!("predictions: {e}"))?;
            let t = Truth::read(&truth).map_err(|e| format!("ground truth: {e}"))?;
            let ev = run(&p, &t);
            if ev.classification.is_none() && ev.features.is_none() {
                return Err(
                    "nothing to evaluate: the predictions and the ground truth share no task"
                        .into(),
                );
            }
            if let Some(dir) = &report {
                let sources = format!("predictions: {pred:?}; ground truth: {truth:?}");
                birads_infer::report::write_report(&ev, dir, &sources)
                    .map_err(|e| format!("writing the report to {}: {e}", dir.display()))?;
            }
            serde_json::to_value(&ev).map_err(|e| e.to_string())
        })
        .map_err(err)?;
    json_to_py(py, &json)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("BiradsError", m.py().get_type::<BiradsError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(load_image, m)?)?;
    m.add_function(wrap_pyfunction!(preprocess, m)?)?;
    m.add_function(wrap_pyfunction!(cut_black, m)?)?;
    m.add_function(wrap_pyfunction!(predict_folder, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_class::<model::Model>()?;
    m.add_class::<augment::Augment>()?;
    Ok(())
}
