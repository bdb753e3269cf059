//! `birads.Augment`: the training augmentation chain as a seeded callable for a PyTorch
//! `Dataset`, with the lesion box carried through.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use birads_data::pipeline::{augment, Augment as AugmentCfg, CutMix, Preprocess};
use birads_data::rng::{stream, STREAM_AUGMENT};
use birads_data::LesionBox;
use birads_train::{Task, TrainConfig};
use numpy::PyArray3;
use pyo3::prelude::*;

use crate::{chw_to_numpy, err, ImageArg};

/// The BUS-BRA recipe's config (`configs/busbra.toml`), for `Augment(preset="busbra")`.
const BUSBRA: &str = include_str!("../../../configs/busbra.toml");

/// The training chain — CutBlack, crop, lesion zoom, flips, RandomAffine, GaussianBlur,
/// brightness/contrast, Resize, Normalize, RandomErasing, as a config switches them on — as a
/// callable: `aug(image, box=None, *, index=None, epoch=0)` → `(tensor, box)` with the float32
/// `[3, size, size]` tensor and the lesion box `(x0, y0, x1, y1)` in its pixels (or `None`).
///
/// The same `(seed, epoch, index)` always gives the same result, the one `birads train` draws
/// for the image at position `index` of that epoch; without `index` the calls are numbered
/// 0, 1, 2, … CutMix needs a second image and is left to the dataset: it is never applied here.
#[pyclass(module = "birads", frozen)]
pub struct Augment {
    pre: Preprocess,
    aug: AugmentCfg,
    seed: u64,
    calls: AtomicU64,
}

#[pymethods]
impl Augment {
    /// `preset`: `"original"` (the competition recipe: CenterCrop 672 → 224, flips, affine,
    /// blur, erasing) or `"busbra"` (birads' BUS-BRA recipe); `config`: a `birads train`
    /// config file (TOML) whose `preprocess` and `augment` sections are used instead; `size`
    /// overrides the output side.
    #[new]
    #[pyo3(signature = (seed=0, *, preset="original", config=None, size=None))]
    fn new(seed: u64, preset: &str, config: Option<PathBuf>, size: Option<u32>) -> PyResult<Self> {
        let cfg = match (&config, preset) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| err(format!("{}: {e}", path.display())))?;
                TrainConfig::from_toml(&text, Task::Cls)
                    .map_err(|e| err(format!("{}: {e}", path.display())))?
            }
            (None, "busbra") => TrainConfig::from_toml(BUSBRA, Task::Cls).map_err(err)?,
            (None, "original") => TrainConfig::for_task(Task::Cls),
            (None, other) => {
                return Err(err(format!(
                    "preset '{other}': use \"original\" or \"busbra\" (or config=PATH)"
                )))
            }
        };
        let mut pre = cfg.preprocess;
        if let Some(s) = size {
            pre.size = s;
        }
        Ok(Self {
            pre,
            aug: AugmentCfg {
                cutmix: CutMix::Off,
                ..cfg.augment
            },
            seed,
            calls: AtomicU64::new(0),
        })
    }

    /// Output side in pixels.
    #[getter]
    fn size(&self) -> u32 {
        self.pre.size
    }

    /// `box`: the lesion as normalised `(cx, cy, w, h)` (YOLO style), if known.
    #[pyo3(signature = (image, r#box=None, *, index=None, epoch=0))]
    #[allow(clippy::type_complexity)]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
        r#box: Option<(f32, f32, f32, f32)>,
        index: Option<u64>,
        epoch: u64,
    ) -> PyResult<(Bound<'py, PyArray3<f32>>, Option<(f32, f32, f32, f32)>)> {
        let arg = ImageArg::extract(image)?;
        let lesion = match r#box {
            Some((cx, cy, w, h)) => {
                let b = LesionBox { cx, cy, w, h };
                b.validate().map_err(err)?;
                Some(b)
            }
            None => None,
        };
        let index = index.unwrap_or_else(|| self.calls.fetch_add(1, Ordering::Relaxed));
        let out = py
            .detach(|| {
                arg.pixels().map(|img| {
                    let mut rng = stream(self.seed, &[STREAM_AUGMENT, epoch, index]);
                    augment(&img, lesion.as_ref(), None, &self.pre, &self.aug, &mut rng)
                })
            })
            .map_err(err)?;
        let t = out.tensor;
        let b = out.lesion.map(|b| (b[0], b[1], b[2], b[3]));
        Ok((chw_to_numpy(py, t.data, t.channels, t.height, t.width), b))
    }

    fn __repr__(&self) -> String {
        format!(
            "Augment(seed={}, size={}, preprocess={}, augment={})",
            self.seed,
            self.pre.size,
            serde_json::to_string(&self.pre).unwrap_or_default(),
            serde_json::to_string(&self.aug).unwrap_or_default()
        )
    }
}
