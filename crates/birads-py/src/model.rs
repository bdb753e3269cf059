//! `birads.Model`: a loaded model (original weights, a birads checkpoint or the built-in
//! model) predicting probabilities from paths, pixel arrays or preprocessed tensors.

use std::path::PathBuf;
use std::sync::Arc;

use birads_data::pipeline::{preprocess as preprocess_op, Preprocess};
use birads_data::{ImageSource, Sample};
use birads_infer::folder::{load_predictor, Engine, Loaded};
use birads_model::checkpoint::{AnyModel, Purpose};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray4, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyList;
use rayon::prelude::*;

use crate::{err, ImageArg};

/// A BI-RADS model (probabilities over its classes) or the lesion-feature model (probability
/// of each suspicious finding), ready to predict on the CPU.
#[pyclass(module = "birads", frozen)]
pub struct Model {
    inner: Arc<Loaded>,
    purpose: Purpose,
}

/// What `predict` gets: image arguments, or preprocessed tensors `[N, 3, S, S]`.
enum Batch {
    Images(Vec<ImageArg>),
    Tensors(Vec<f32>, usize),
}

impl Model {
    pub(crate) fn chain(&self) -> Preprocess {
        self.inner.predictor.preprocess.clone()
    }

    fn size(&self) -> usize {
        self.inner.predictor.preprocess.size as usize
    }

    fn batch(&self, images: &Bound<'_, PyAny>) -> PyResult<Batch> {
        if let Ok(t) = images.extract::<PyReadonlyArray4<'_, f32>>() {
            let s = t.shape().to_vec();
            let want = self.size();
            if s[1] != 3 || s[2] != want || s[3] != want {
                return Err(err(format!(
                    "preprocessed tensors must be [N, 3, {want}, {want}] for this model, got {s:?}"
                )));
            }
            return Ok(Batch::Tensors(t.as_array().iter().copied().collect(), s[0]));
        }
        if images.is_instance_of::<PyList>() || images.is_instance_of::<pyo3::types::PyTuple>() {
            let mut out = Vec::new();
            for item in images.try_iter()? {
                out.push(ImageArg::extract(&item?)?);
            }
            return Ok(Batch::Images(out));
        }
        Ok(Batch::Images(vec![ImageArg::extract(images)?]))
    }

    /// Probabilities per image: class probabilities, or P(suspicious) per feature.
    fn run(&self, batch: Batch, batch_size: usize) -> Result<(Vec<f32>, usize), String> {
        let p = &self.inner.predictor;
        let size = self.size();
        let per_image = |probs: Vec<Vec<f32>>| -> Vec<Vec<f32>> {
            match self.purpose {
                Purpose::Grading => probs,
                // [4, 2] per image → P(present) per feature.
                Purpose::Features => probs
                    .into_iter()
                    .map(|v| v.chunks(2).map(|c| c[1]).collect())
                    .collect(),
            }
        };
        let rows: Vec<Vec<f32>> = match batch {
            Batch::Tensors(data, n) => {
                let plane = 3 * size * size;
                let mut rows = Vec::with_capacity(n);
                for chunk in data.chunks(plane * batch_size).filter(|c| !c.is_empty()) {
                    let m = chunk.len() / plane;
                    rows.extend(p.probabilities(chunk.to_vec(), m, size));
                }
                per_image(rows)
            }
            Batch::Images(items) => {
                let all_paths = items.iter().all(|i| matches!(i, ImageArg::Path(_)));
                if all_paths {
                    // The same parallel decoding loader `birads predict` uses.
                    let samples: Vec<Sample> = items
                        .into_iter()
                        .map(|i| match i {
                            ImageArg::Path(path) => {
                                Sample::unlabelled(ImageSource::Path(path), "python")
                            }
                            ImageArg::Pixels(_) => unreachable!("all paths"),
                        })
                        .collect();
                    let n = samples.len();
                    let run = p.run(samples, batch_size, |_| {});
                    if !run.failures.is_empty() {
                        let reasons: Vec<String> = run
                            .failures
                            .iter()
                            .map(|f| format!("{}: {}", f.item, f.reason))
                            .collect();
                        return Err(format!(
                            "{} of {n} images could not be read: {}",
                            reasons.len(),
                            reasons.join("; ")
                        ));
                    }
                    per_image(run.predictions.into_iter().map(|(_, v)| v).collect())
                } else {
                    let pre = &p.preprocess;
                    let tensors: Vec<Result<Vec<f32>, String>> = items
                        .into_par_iter()
                        .map(|i| {
                            i.pixels()
                                .map(|img| preprocess_op(&img, None, pre).tensor.data)
                        })
                        .collect();
                    let n = tensors.len();
                    let mut flat = Vec::new();
                    for t in tensors {
                        flat.extend(t?);
                    }
                    return self.run(Batch::Tensors(flat, n), batch_size);
                }
            }
        };
        let width = rows.first().map_or(0, Vec::len);
        Ok((rows.into_iter().flatten().collect(), width))
    }
}

#[pymethods]
impl Model {
    /// Load weights: `"builtin"` (the built-in BI-RADS model), the original `MyConv.pth` /
    /// `MyDense.pth`, or a birads checkpoint (`.safetensors`). `task` (`"cls"` or `"fea"`)
    /// says what original weights are for; checkpoints say it themselves.
    #[staticmethod]
    #[pyo3(signature = (path=PathBuf::from("builtin"), *, task=None))]
    fn load(py: Python<'_>, path: PathBuf, task: Option<&str>) -> PyResult<Self> {
        let purpose = match task {
            Some("fea") => Purpose::Features,
            Some("cls") => Purpose::Grading,
            Some(t) => return Err(err(format!("task '{t}': use \"cls\" or \"fea\""))),
            None if birads_model::builtin::is_builtin(&path) => Purpose::Grading,
            None => match birads_model::checkpoint::read_meta(&path).ok().flatten() {
                Some(meta) => meta.purpose(),
                None => Purpose::Grading,
            },
        };
        let loaded = py
            .detach(|| load_predictor(&path, purpose, false, Engine::Fast))
            .map_err(err)?;
        Ok(Self {
            inner: Arc::new(loaded),
            purpose,
        })
    }

    /// Class names in output order (BI-RADS), or the four feature names.
    #[getter]
    fn classes(&self) -> Vec<String> {
        match self.purpose {
            Purpose::Grading => self.inner.classes.clone(),
            Purpose::Features => birads_data::FEATURE_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    /// `"grading"` or `"features"`.
    #[getter]
    fn purpose(&self) -> &'static str {
        match self.purpose {
            Purpose::Grading => "grading",
            Purpose::Features => "features",
        }
    }

    /// `"MyConvNeXt"` or `"MyDenseNet"`.
    #[getter]
    fn architecture(&self) -> &'static str {
        match self.inner.predictor.model {
            AnyModel::ConvNeXt(_) => "MyConvNeXt",
            AnyModel::DenseNet(_) => "MyDenseNet",
        }
    }

    /// Where the weights came from.
    #[getter]
    fn source(&self) -> String {
        self.inner.source.clone()
    }

    /// Model input side in pixels.
    #[getter]
    fn input_size(&self) -> usize {
        self.size()
    }

    /// The preprocessing chain (CutBlack, crop, size, mean, std) as a dict.
    #[getter]
    fn preprocess<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v = serde_json::to_value(&self.inner.predictor.preprocess).map_err(err)?;
        py.import("json")?.call_method1("loads", (v.to_string(),))
    }

    /// Probabilities for `images` — a path, a uint8 image array, a list of those, or
    /// preprocessed float32 tensors `[N, 3, S, S]` — as float32 `[N, classes]` (BI-RADS) or
    /// `[N, 4]` (P(suspicious) per feature). `threads` limits the CPU threads (default: all).
    /// Raises `BiradsError` naming every image that cannot be read.
    #[pyo3(signature = (images, *, batch_size=8, threads=None))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        batch_size: usize,
        threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let batch = self.batch(images)?;
        let bs = batch_size.max(1);
        let (flat, width) = py
            .detach(|| match threads {
                Some(t) => rayon::ThreadPoolBuilder::new()
                    .num_threads(t.max(1))
                    .build()
                    .map_err(|e| e.to_string())?
                    .install(|| self.run(batch, bs)),
                None => self.run(batch, bs),
            })
            .map_err(err)?;
        let n = flat.len().checked_div(width).unwrap_or(0);
        PyArray1::from_vec(py, flat)
            .reshape([n, width])
            .map_err(err)
    }

    /// Write the model as ONNX (see `birads export --onnx`).
    fn export_onnx(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| -> Result<(), String> {
            let p = &self.inner.predictor;
            let info = birads_onnx::ExportInfo {
                classes: self.inner.classes.clone(),
                preprocess: serde_json::to_value(&p.preprocess).map_err(|e| e.to_string())?,
                size: p.preprocess.size as usize,
                source: self.inner.source.clone(),
            };
            let bytes = birads_onnx::export(&p.model, &info).map_err(|e| e.to_string())?;
            birads_data::atomic::write_atomic(&path, &bytes)
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .map_err(err)
    }

    fn __repr__(&self) -> String {
        format!(
            "Model({}, {}, classes={:?}, input {}px, from {})",
            self.architecture(),
            self.purpose(),
            self.classes(),
            self.size(),
            self.inner.source
        )
    }
}
