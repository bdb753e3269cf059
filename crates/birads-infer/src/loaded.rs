//! A weights file → the model, the preprocessing it expects and its class list.

use std::path::Path;

use birads_data::pipeline::Preprocess;
use birads_data::BIRADS6;
use birads_model::builtin;
use birads_model::checkpoint::{load_for, AnyModel, Purpose};
use birads_model::weights::WeightsError;
use burn::prelude::Backend;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading {0}: {1}")]
    Weights(String, WeightsError),
    #[error("{0}: checkpoint metadata '{1}' is malformed: {2}")]
    Meta(String, &'static str, serde_json::Error),
    #[error("birads has a built-in BI-RADS model, but not {0}: give its weights file")]
    NoBuiltin(&'static str),
    #[error("{0}")]
    Unavailable(String),
}

/// A model ready for inference.
pub struct LoadedModel<B: Backend> {
    pub model: AnyModel<B>,
    pub preprocess: Preprocess,
    /// BI-RADS class names in logit order (the six competition classes for original weights).
    pub classes: Vec<String>,
    /// Where it came from: the weights file, or the built-in model's name.
    pub source: String,
}

/// Load a model for `purpose`: original `.pth`/safetensors weights (which get the original
/// inference chain), a birads checkpoint of either architecture (which carries its own
/// preprocessing and class list), or `builtin` (the built-in BI-RADS model).
pub fn load_model<B: Backend>(
    path: &Path,
    purpose: Purpose,
    device: &B::Device,
) -> Result<LoadedModel<B>, LoadError> {
    let shown = path.display().to_string();
    let (model, meta, source) = if builtin::is_builtin(path) {
        if purpose != Purpose::Grading {
            return Err(LoadError::NoBuiltin(purpose.describe()));
        }
        let (m, meta) =
            builtin::load::<B>(device).map_err(|e| LoadError::Weights(shown.clone(), e))?;
        (
            m,
            Some(meta),
            format!("{} (built-in, {})", builtin::NAME, builtin::CARD_PATH),
        )
    } else {
        let (m, meta, _) = load_for::<B>(path, purpose, device)
            .map_err(|e| LoadError::Weights(shown.clone(), e))?;
        (m, meta, shown.clone())
    };
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
        source,
    })
}
