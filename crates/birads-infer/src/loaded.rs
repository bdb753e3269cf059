//! A weights file → the model, the preprocessing it expects and its class list.

use std::path::Path;

use birads_data::pipeline::Preprocess;
use birads_data::BIRADS6;
use birads_model::checkpoint::{load_any, AnyModel, ModelKind};
use birads_model::weights::WeightsError;
use birads_model::{MyConvNeXtConfig, MyDenseNetConfig};
use burn::prelude::Backend;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading {0}: {1}")]
    Weights(String, WeightsError),
    #[error("{0}: checkpoint metadata '{1}' is malformed: {2}")]
    Meta(String, &'static str, serde_json::Error),
}

/// A model ready for inference.
pub struct LoadedModel<B: Backend> {
    pub model: AnyModel<B>,
    pub preprocess: Preprocess,
    /// BI-RADS class names in logit order (the six competition classes for original weights).
    pub classes: Vec<String>,
}

/// Load original `.pth`/safetensors weights (which get the original inference chain) or a
/// birads checkpoint (which carries its own preprocessing and class list).
pub fn load_model<B: Backend>(
    path: &Path,
    kind: ModelKind,
    device: &B::Device,
) -> Result<LoadedModel<B>, LoadError> {
    let shown = path.display().to_string();
    let (model, meta, _) = load_any::<B>(
        path,
        kind,
        &MyConvNeXtConfig::new(),
        &MyDenseNetConfig::new(),
        device,
    )
    .map_err(|e| LoadError::Weights(shown.clone(), e))?;
    let extra = meta.map(|m| m.extra).unwrap_or_default();
    let preprocess = match extra.get("preprocess") {
        Some(p) => serde_json::from_value::<Preprocess>(p.clone())
            .map_err(|e| LoadError::Meta(shown.clone(), "preprocess", e))?,
        None => Preprocess::original_inference(),
    };
    let classes = match extra.get("classes") {
        Some(c) => serde_json::from_value::<Vec<String>>(c.clone())
            .map_err(|e| LoadError::Meta(shown.clone(), "classes", e))?,
        None => BIRADS6.iter().map(|s| s.to_string()).collect(),
    };
    Ok(LoadedModel {
        model,
        preprocess,
        classes,
    })
}
