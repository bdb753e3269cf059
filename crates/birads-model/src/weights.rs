//! Weights in and out.
//!
//! * the original `MyConv.pth` / `MyDense.pth` (PyTorch zip+pickle state_dicts, keys as in
//!   `shared/spec/*.tsv`), loaded as they are;
//! * torchvision's ImageNet `convnext_tiny` / `densenet121` checkpoints into the backbones
//!   (densenet's old `norm.1`/`conv.2` key style included); heads keep their fresh init;
//! * safetensors with the original key names (what PyTorch users exchange);
//! * the project's own format (burnpack, burn's native container).
//!
//! PyTorch keys are translated to this crate's module paths by [`convnext_key`] and
//! [`densenet_key`]; anything missing, unexpected or mis-shaped is one [`WeightsError`]
//! naming every offending key.

use std::path::Path;

use burn::prelude::*;
use burn_store::pytorch::PytorchReader;
use burn_store::{ApplyError, ModuleSnapshot, PyTorchToBurnAdapter, TensorSnapshot};

/// What a checkpoint's keys look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The original program's state_dict (`convnext_tiny.features.0.0.block.weight`, …).
    Original,
    /// torchvision's ImageNet checkpoint (`features.0.0.weight`, …); heads are not loaded.
    Torchvision,
}

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: checkpoint does not fit the model:{details}")]
    Mismatch { path: String, details: String },
}

/// The target of a checkpoint key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Param(String),
    /// Known and deliberately not loaded (e.g. `num_batches_tracked`, ImageNet heads).
    Ignore,
    /// Not something this model has.
    Unknown,
}

/// burn's `LayerNorm` calls PyTorch's `weight`/`bias` `gamma`/`beta`.
fn layer_norm(prefix: &str, param: &str) -> Target {
    match param {
        "weight" => Target::Param(format!("{prefix}.gamma")),
        "bias" => Target::Param(format!("{prefix}.beta")),
        _ => Target::Unknown,
    }
}

fn numbers(s: &str) -> Option<Vec<usize>> {
    s.split('.').map(|p| p.parse().ok()).collect()
}

/// Map a MyConvNeXt key (original or torchvision layout) to this crate's module path.
pub fn convnext_key(key: &str, source: Source) -> Target {
    let k = key.strip_prefix("convnext_tiny.").unwrap_or(key);
    if let Some(rest) = k.strip_prefix("classifier.") {
        if source == Source::Torchvision {
            return Target::Ignore;
        }
        return match rest.split_once('.') {
            Some(("0", p)) => layer_norm("head_norm", p),
            Some(("1", p)) => Target::Param(format!("head_fc1.{p}")),
            Some(("4", p)) => Target::Param(format!("head_fc2.{p}")),
            _ => Target::Unknown,
        };
    }
    let Some(rest) = k.strip_prefix("features.") else {
        return Target::Unknown;
    };
    let parts: Vec<&str> = rest.splitn(3, '.').collect();
    if parts.len() < 3 {
        return Target::Unknown;
    }
    let (Some(stage), Some(elem)) = (numbers(parts[0]), numbers(parts[1])) else {
        return Target::Unknown;
    };
    let (stage, elem) = (stage[0], elem[0]);
    // The original wraps every element as `.block`; torchvision has no wrapper level.
    let tail = parts[2]
        .strip_prefix("block.")
        .filter(|_| source == Source::Original)
        .unwrap_or(parts[2]);
    match stage {
        0 => match elem {
            0 => Target::Param(format!("stem_conv.{tail}")),
            1 => Target::Param(format!("stem_norm.{tail}")),
            _ => Target::Unknown,
        },
        s if s % 2 == 0 => {
            let d = s / 2 - 1;
            match elem {
                0 => Target::Param(format!("downsamples.{d}.norm.{tail}")),
                1 => Target::Param(format!("downsamples.{d}.conv.{tail}")),
                _ => Target::Unknown,
            }
        }
        s => {
            let prefix = format!("stages.{}.blocks.{elem}", s / 2);
            if tail == "layer_scale" {
                return Target::Param(format!("{prefix}.layer_scale"));
            }
            match tail.strip_prefix("block.").and_then(|t| t.split_once('.')) {
                Some(("0", p)) => Target::Param(format!("{prefix}.dwconv.{p}")),
                Some(("2", p)) => layer_norm(&format!("{prefix}.norm"), p),
                Some(("3", p)) => Target::Param(format!("{prefix}.pwconv1.{p}")),
                Some(("5", p)) => Target::Param(format!("{prefix}.pwconv2.{p}")),
                _ => Target::Unknown,
            }
        }
    }
}

/// Map a MyDenseNet key (original, or torchvision's densenet121 in either key style) to this
/// crate's module path.
pub fn densenet_key(key: &str, source: Source) -> Target {
    if key.ends_with("num_batches_tracked") {
        return Target::Ignore;
    }
    let k = key.strip_prefix("densenet.").unwrap_or(key);
    if source == Source::Original {
        if let Some(target) = original_densenet_head(k) {
            return target;
        }
    } else if let Some(p) = k.strip_prefix("classifier.") {
        // torchvision's ImageNet head is the model's unused `imagenet_classifier`.
        return Target::Param(format!("imagenet_classifier.{p}"));
    }
    match k.strip_prefix("features.") {
        Some(f) => densenet_features_key(f),
        None => Target::Unknown,
    }
}

/// The original MyDenseNet's parts after the backbone (its heads and the decoupling
/// projections); `None` for a key of the backbone.
fn original_densenet_head(k: &str) -> Option<Target> {
    if let Some(rest) = k.strip_prefix("classifier.") {
        return Some(match rest.split_once('.') {
            Some(("0", p)) => layer_norm("head_norm", p),
            Some(("1", p)) => Target::Param(format!("head_fc1.{p}")),
            Some(("4", p)) => Target::Param(format!("head_fc2.{p}")),
            // `densenet.classifier` (the unused ImageNet head) arrives here stripped.
            Some(("weight" | "bias", _)) | None => {
                Target::Param(format!("imagenet_classifier.{rest}"))
            }
            _ => Target::Unknown,
        });
    }
    if let Some(rest) = k.strip_prefix("decoupling.") {
        let projection = ["shared_proj.", "task_proj."]
            .into_iter()
            .find(|p| rest.starts_with(p));
        return Some(match projection {
            Some(_) => Target::Param(rest.to_string()),
            None => Target::Unknown,
        });
    }
    let rest = k.strip_prefix("task_classifiers.")?;
    let parts: Vec<&str> = rest.splitn(3, '.').collect();
    Some(match parts.as_slice() {
        [t, "0", p] => Target::Param(format!("task_heads.{t}.fc1.{p}")),
        [t, "2", p] => Target::Param(format!("task_heads.{t}.fc2.{p}")),
        _ => Target::Unknown,
    })
}

/// A key of DenseNet's `features` (the stem, the transitions, the dense blocks), without
/// that prefix.
fn densenet_features_key(f: &str) -> Target {
    if ["conv0.", "norm0.", "norm5."]
        .iter()
        .any(|s| f.starts_with(s))
    {
        return Target::Param(f.to_string());
    }
    if let Some(rest) = f.strip_prefix("transition") {
        let (i, p) = rest.split_once('.').unwrap_or(("", ""));
        return match i.parse::<usize>() {
            Ok(i) => Target::Param(format!("transitions.{}.{p}", i - 1)),
            Err(_) => Target::Unknown,
        };
    }
    let Some(rest) = f.strip_prefix("denseblock") else {
        return Target::Unknown;
    };
    let (i, rest) = rest.split_once('.').unwrap_or(("", ""));
    match i.parse::<usize>() {
        Ok(i) => dense_block_key(i.saturating_sub(1), rest),
        Err(_) => Target::Unknown,
    }
}

/// A key inside dense block `b` (from 0): its CBAM or one of its layers.
fn dense_block_key(b: usize, rest: &str) -> Target {
    if let Some(p) = rest.strip_prefix("channel_attention.shared_MLP.") {
        return match p.split_once('.') {
            Some(("0", q)) => Target::Param(format!("blocks.{b}.cbam.channel_attention.fc1.{q}")),
            Some(("2", q)) => Target::Param(format!("blocks.{b}.cbam.channel_attention.fc2.{q}")),
            _ => Target::Unknown,
        };
    }
    if let Some(p) = rest.strip_prefix("spatial_attention.") {
        return Target::Param(format!("blocks.{b}.cbam.spatial_attention.{p}"));
    }
    // Original: `denseblock1.denseblock.denselayer1.0.norm1.weight`;
    // torchvision: `denseblock1.denselayer1.norm1.weight` or old-style `….norm.1.weight`.
    let rest = rest.strip_prefix("denseblock.").unwrap_or(rest);
    let Some(rest) = rest.strip_prefix("denselayer") else {
        return Target::Unknown;
    };
    let (j, rest) = rest.split_once('.').unwrap_or(("", ""));
    let Ok(j) = j.parse::<usize>() else {
        return Target::Unknown;
    };
    let rest = rest.strip_prefix("0.").unwrap_or(rest);
    let rest = rest
        .replacen("norm.1.", "norm1.", 1)
        .replacen("norm.2.", "norm2.", 1)
        .replacen("conv.1.", "conv1.", 1)
        .replacen("conv.2.", "conv2.", 1);
    Target::Param(format!("blocks.{b}.layers.{}.{rest}", j.saturating_sub(1)))
}

/// Every tensor of a PyTorch `.pth` (zip or legacy pickle), keyed by its state_dict name.
pub fn read_pth(path: &Path) -> Result<Vec<(String, TensorSnapshot)>, WeightsError> {
    let reader = PytorchReader::new(path).map_err(|e| WeightsError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut v: Vec<(String, TensorSnapshot)> = reader.into_tensors().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// What loading did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub loaded: usize,
    pub ignored: Vec<String>,
    /// Model parameters the checkpoint did not provide (allowed only for heads of a
    /// torchvision backbone).
    pub fresh: Vec<String>,
}

/// Load renamed snapshots into a module; `allow_missing` says which model paths may stay at
/// their initial values.
pub fn apply_pytorch<B: Backend, M: ModuleSnapshot<B>>(
    model: &mut M,
    path: &Path,
    tensors: Vec<(String, TensorSnapshot)>,
    map: impl Fn(&str) -> Target,
    allow_missing: impl Fn(&str) -> bool,
) -> Result<LoadReport, WeightsError> {
    let mut report = LoadReport::default();
    let mut unknown = Vec::new();
    let mut snapshots = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (key, mut snap) in tensors {
        match map(&key) {
            Target::Param(p) => {
                if let Some(prev) = seen.insert(p.clone(), key.clone()) {
                    unknown.push(format!("{key} (maps to {p}, already given by {prev})"));
                    continue;
                }
                snap.path_stack = Some(p.split('.').map(String::from).collect());
                snapshots.push(snap);
            }
            Target::Ignore => report.ignored.push(key),
            Target::Unknown => unknown.push(key),
        }
    }
    let result = model.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), false);
    let reverse = |p: &str| seen.get(p).cloned().unwrap_or_else(|| p.to_string());
    let unused: Vec<String> = result.unused.iter().map(|p| reverse(p)).collect();
    let (fresh, missing): (Vec<String>, Vec<String>) = result
        .missing
        .iter()
        .map(|(p, _)| p.clone())
        .partition(|p| allow_missing(p));
    let errors: Vec<String> = result
        .errors
        .iter()
        .map(|e| match e {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => format!(
                "{} has shape {found:?}, the model expects {expected:?}",
                reverse(path)
            ),
            other => other.to_string(),
        })
        .collect();
    let details = [
        ("unexpected keys", unknown.join(", "), unknown.len()),
        (
            "keys with no place in the model",
            unused.join(", "),
            unused.len(),
        ),
        ("missing keys", missing.join(", "), missing.len()),
        ("mis-shaped or unreadable", errors.join("; "), errors.len()),
    ]
    .into_iter()
    .filter(|(_, _, n)| *n > 0)
    .map(|(what, list, n)| format!("\n  {what} ({n}): {list}"))
    .collect::<String>();
    if !details.is_empty() {
        return Err(WeightsError::Mismatch {
            path: path.display().to_string(),
            details,
        });
    }
    report.loaded = result.applied.len();
    report.fresh = fresh;
    Ok(report)
}

/// Parts of MyConvNeXt a torchvision backbone checkpoint does not provide.
pub(crate) fn is_convnext_head(p: &str) -> bool {
    p.starts_with("head_")
}

/// Parts of MyDenseNet a torchvision backbone checkpoint does not provide.
pub(crate) fn is_densenet_addition(p: &str) -> bool {
    p.starts_with("head_")
        || p.starts_with("shared_proj")
        || p.starts_with("task_")
        || p.contains(".cbam.")
}

/// Load a MyConvNeXt checkpoint: the original `MyConv.pth` (every key required) or
/// torchvision's `convnext_tiny` (backbone only; the head keeps its initialisation).
pub fn load_convnext<B: Backend>(
    mut model: crate::MyConvNeXt<B>,
    path: &Path,
    source: Source,
) -> Result<(crate::MyConvNeXt<B>, LoadReport), WeightsError> {
    let tensors = read_pth(path)?;
    let report = apply_pytorch(
        &mut model,
        path,
        tensors,
        |k| convnext_key(k, source),
        |p| source == Source::Torchvision && is_convnext_head(p),
    )?;
    Ok((model, report))
}

/// Load a MyDenseNet checkpoint: the original `MyDense.pth` (every key required) or
/// torchvision's `densenet121` (backbone only; CBAM, head and task heads stay fresh).
pub fn load_densenet<B: Backend>(
    mut model: crate::MyDenseNet<B>,
    path: &Path,
    source: Source,
) -> Result<(crate::MyDenseNet<B>, LoadReport), WeightsError> {
    let tensors = read_pth(path)?;
    let report = apply_pytorch(
        &mut model,
        path,
        tensors,
        |k| densenet_key(k, source),
        |p| source == Source::Torchvision && is_densenet_addition(p),
    )?;
    Ok((model, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convnext_keys_map_from_both_layouts() {
        use Target::Param;
        let o = Source::Original;
        let t = Source::Torchvision;
        assert_eq!(
            convnext_key("convnext_tiny.features.0.0.block.weight", o),
            Param("stem_conv.weight".into())
        );
        assert_eq!(
            convnext_key("features.0.0.weight", t),
            Param("stem_conv.weight".into())
        );
        assert_eq!(
            convnext_key("convnext_tiny.features.0.1.block.bias", o),
            Param("stem_norm.bias".into())
        );
        assert_eq!(
            convnext_key("convnext_tiny.features.4.1.block.weight", o),
            Param("downsamples.1.conv.weight".into())
        );
        assert_eq!(
            convnext_key("features.6.0.bias", t),
            Param("downsamples.2.norm.bias".into())
        );
        assert_eq!(
            convnext_key("convnext_tiny.features.5.8.block.block.3.weight", o),
            Param("stages.2.blocks.8.pwconv1.weight".into())
        );
        assert_eq!(
            convnext_key("features.5.8.block.3.weight", t),
            Param("stages.2.blocks.8.pwconv1.weight".into())
        );
        assert_eq!(
            convnext_key("convnext_tiny.features.7.2.block.layer_scale", o),
            Param("stages.3.blocks.2.layer_scale".into())
        );
        assert_eq!(
            convnext_key("features.1.0.layer_scale", t),
            Param("stages.0.blocks.0.layer_scale".into())
        );
        assert_eq!(
            convnext_key("convnext_tiny.classifier.4.bias", o),
            Param("head_fc2.bias".into())
        );
        assert_eq!(convnext_key("classifier.2.weight", t), Target::Ignore);
        assert_eq!(
            convnext_key("convnext_tiny.classifier.2.weight", o),
            Target::Unknown
        );
        assert_eq!(convnext_key("something.else", o), Target::Unknown);
    }

    #[test]
    fn densenet_keys_map_from_both_layouts() {
        use Target::Param;
        let o = Source::Original;
        let t = Source::Torchvision;
        assert_eq!(
            densenet_key(
                "densenet.features.denseblock3.denseblock.denselayer24.0.conv2.weight",
                o
            ),
            Param("blocks.2.layers.23.conv2.weight".into())
        );
        assert_eq!(
            densenet_key("features.denseblock1.denselayer1.norm.1.running_var", t),
            Param("blocks.0.layers.0.norm1.running_var".into())
        );
        assert_eq!(
            densenet_key("features.denseblock1.denselayer2.conv2.weight", t),
            Param("blocks.0.layers.1.conv2.weight".into())
        );
        assert_eq!(
            densenet_key(
                "densenet.features.denseblock2.channel_attention.shared_MLP.2.weight",
                o
            ),
            Param("blocks.1.cbam.channel_attention.fc2.weight".into())
        );
        assert_eq!(
            densenet_key("densenet.features.transition3.conv.weight", o),
            Param("transitions.2.conv.weight".into())
        );
        assert_eq!(
            densenet_key("densenet.features.norm0.num_batches_tracked", o),
            Target::Ignore
        );
        assert_eq!(
            densenet_key("densenet.classifier.weight", o),
            Param("imagenet_classifier.weight".into())
        );
        assert_eq!(
            densenet_key("classifier.4.bias", o),
            Param("head_fc2.bias".into())
        );
        assert_eq!(
            densenet_key("decoupling.task_proj.3.weight", o),
            Param("task_proj.3.weight".into())
        );
        assert_eq!(
            densenet_key("task_classifiers.1.2.bias", o),
            Param("task_heads.1.fc2.bias".into())
        );
        assert_eq!(
            densenet_key("classifier.bias", t),
            Param("imagenet_classifier.bias".into())
        );
    }
}
