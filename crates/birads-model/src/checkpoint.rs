//! Loading any supported weights file into the right model, and the project's own checkpoint
//! format.
//!
//! The own format is a single safetensors file: tensors under this crate's module paths,
//! and in the safetensors metadata a `birads` JSON record with the model kind, its
//! configuration and whatever the caller adds (preprocessing, class list, training state), so
//! a checkpoint says how to rebuild its model and how to feed it.

use std::path::Path;

use burn::prelude::*;
use burn_store::{ModuleSnapshot, SafetensorsStore, TensorSnapshot};
use serde::{Deserialize, Serialize};

use crate::precision::to_device_float;
use crate::weights::{
    apply_pytorch, convnext_key, densenet_key, is_convnext_head, is_densenet_addition, read_pth,
    LoadReport, Source, WeightsError,
};
use crate::{MyConvNeXt, MyConvNeXtConfig, MyDenseNet, MyDenseNetConfig};

/// Metadata key of the own format.
pub const META_KEY: &str = "birads";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// MyConvNeXt, BI-RADS classes.
    ConvNeXt,
    /// MyDenseNet, lesion features.
    DenseNet,
}

/// What a model is for, whatever its architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// BI-RADS categories: logits `[N, classes]` (MyConvNeXt, or MyDenseNet with `classes`).
    Grading,
    /// The four lesion features: logits `[N, 4, 2]` (MyDenseNet).
    Features,
}

impl Purpose {
    /// The architecture of the original program's weights for this purpose.
    pub fn original_kind(self) -> ModelKind {
        match self {
            Purpose::Grading => ModelKind::ConvNeXt,
            Purpose::Features => ModelKind::DenseNet,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Purpose::Grading => "a BI-RADS model",
            Purpose::Features => "a lesion-feature model",
        }
    }
}

/// What the own format records besides the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub version: u32,
    pub kind: ModelKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convnext: Option<MyConvNeXtConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub densenet: Option<MyDenseNetConfig>,
    /// Preprocessing, class list, training provenance: owned by the caller.
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// Either model.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per process; boxing would only add indirection
pub enum AnyModel<B: Backend> {
    ConvNeXt(MyConvNeXt<B>),
    DenseNet(MyDenseNet<B>),
}

impl<B: Backend> AnyModel<B> {
    pub fn kind(&self) -> ModelKind {
        match self {
            AnyModel::ConvNeXt(_) => ModelKind::ConvNeXt,
            AnyModel::DenseNet(_) => ModelKind::DenseNet,
        }
    }

    pub fn purpose(&self) -> Purpose {
        match self {
            AnyModel::DenseNet(m) if m.classes == 0 => Purpose::Features,
            _ => Purpose::Grading,
        }
    }
}

impl CheckpointMeta {
    pub fn purpose(&self) -> Purpose {
        match (self.kind, &self.densenet) {
            (ModelKind::DenseNet, Some(c)) if c.classes > 0 => Purpose::Grading,
            (ModelKind::DenseNet, _) => Purpose::Features,
            (ModelKind::ConvNeXt, _) => Purpose::Grading,
        }
    }
}

fn err(path: &Path, reason: impl ToString) -> WeightsError {
    WeightsError::Read {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The `birads` metadata of a safetensors file, if it is in the own format.
pub fn read_meta(path: &Path) -> Result<Option<CheckpointMeta>, WeightsError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e))?;
    meta_of(&bytes, path)
}

/// The `birads` metadata of safetensors bytes (`path` names them in messages).
fn meta_of(bytes: &[u8], path: &Path) -> Result<Option<CheckpointMeta>, WeightsError> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| err(path, format!("not a safetensors file: {e}")))?;
    match header.metadata().as_ref().and_then(|m| m.get(META_KEY)) {
        None => Ok(None),
        Some(json) => serde_json::from_str(json)
            .map(Some)
            .map_err(|e| err(path, format!("bad birads metadata: {e}"))),
    }
}

/// A checkpoint that holds the other kind of model than the one asked for.
fn wrong_purpose(path: &Path, found: Purpose, wanted: Purpose) -> WeightsError {
    err(
        path,
        format!(
            "holds {}, {} is needed here",
            found.describe(),
            wanted.describe()
        ),
    )
}

/// Load an own-format checkpoint held in memory (the built-in model), named `name` in
/// messages, for `purpose`.
pub fn load_own_bytes<B: Backend>(
    bytes: &[u8],
    name: &str,
    purpose: Purpose,
    device: &B::Device,
) -> Result<(AnyModel<B>, CheckpointMeta), WeightsError> {
    let path = Path::new(name);
    let meta = meta_of(bytes, path)?
        .ok_or_else(|| err(path, "not a birads checkpoint (no birads metadata)"))?;
    if meta.purpose() != purpose {
        return Err(wrong_purpose(path, meta.purpose(), purpose));
    }
    let mut store = SafetensorsStore::from_bytes(Some(bytes.to_vec()));
    let (model, _) = load_own_from::<B>(&mut store, path, &meta, device)?;
    Ok((model, meta))
}

/// Every float tensor of a safetensors file (f32, f16 or bf16, read as f32), keyed by name.
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, TensorSnapshot)>, WeightsError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| err(path, format!("not a safetensors file: {e}")))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let raw = view.data();
        let values: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            safetensors::Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            safetensors::Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            // Integer counters such as BatchNorm's num_batches_tracked carry no weights.
            _ => continue,
        };
        let path_stack = name.split('.').map(String::from).collect();
        let data = TensorData::new(values, shape);
        out.push((
            name.clone(),
            TensorSnapshot::from_data(data, path_stack, Vec::new(), burn::module::ParamId::new()),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// IEEE half → f32 (safetensors files exported from fp16 models).
fn half_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// Which family a PyTorch-style key set belongs to.
fn guess_kind(keys: &[String]) -> Option<ModelKind> {
    if keys.iter().any(|k| k.contains("denseblock")) {
        Some(ModelKind::DenseNet)
    } else if keys
        .iter()
        .any(|k| k.contains("features.1.0.") || k.contains("layer_scale"))
    {
        Some(ModelKind::ConvNeXt)
    } else {
        None
    }
}

/// Load weights for a model of `kind` (built from `convnext`/`densenet` configs when the file
/// does not carry its own): an original or torchvision `.pth`, a safetensors file with the
/// original key names, or an own-format checkpoint. Returns the model, the metadata of an
/// own-format file, and what was loaded.
pub fn load_any<B: Backend>(
    path: &Path,
    kind: ModelKind,
    convnext: &MyConvNeXtConfig,
    densenet: &MyDenseNetConfig,
    device: &B::Device,
) -> Result<(AnyModel<B>, Option<CheckpointMeta>, LoadReport), WeightsError> {
    let is_safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if is_safetensors {
        if let Some(meta) = read_meta(path)? {
            if meta.kind != kind {
                let held = meta.kind;
                let why = format!("holds a {held:?} model, a {kind:?} model is needed here");
                return Err(err(path, why));
            }
            let (model, report) = load_own::<B>(path, &meta, device)?;
            return Ok((model, Some(meta), report));
        }
    }
    let tensors = if is_safetensors {
        read_safetensors(path)?
    } else {
        read_pth(path)?
    };
    let (model, report) = load_pytorch(path, tensors, kind, convnext, densenet, device)?;
    Ok((model, None, report))
}

/// A model of `kind` from the tensors of a PyTorch file (the original program's or
/// torchvision's key names).
fn load_pytorch<B: Backend>(
    path: &Path,
    tensors: Vec<(String, TensorSnapshot)>,
    kind: ModelKind,
    convnext: &MyConvNeXtConfig,
    densenet: &MyDenseNetConfig,
    device: &B::Device,
) -> Result<(AnyModel<B>, LoadReport), WeightsError> {
    let keys: Vec<String> = tensors.iter().map(|t| t.0.clone()).collect();
    if let Some(found) = guess_kind(&keys).filter(|&found| found != kind) {
        let why = format!("holds {found:?} weights, {kind:?} weights are needed here");
        return Err(err(path, why));
    }
    let source = source_of(&keys);
    let torchvision = source == Source::Torchvision;
    // The architecture's sizes follow from the tensor shapes, so small or custom variants
    // load without being described; the given configs supply dropout rates and defaults.
    let shapes = param_shapes(&tensors, kind, source);
    match kind {
        ModelKind::ConvNeXt => {
            let mut m = infer_convnext(&shapes, convnext).init::<B>(device);
            let key = |k: &str| convnext_key(k, source);
            let new = |p: &str| torchvision && is_convnext_head(p);
            let r = apply_pytorch(&mut m, path, tensors, key, new)?;
            Ok((AnyModel::ConvNeXt(to_device_float(m, device)), r))
        }
        ModelKind::DenseNet => {
            let mut m = infer_densenet(&shapes, densenet).init::<B>(device);
            let key = |k: &str| densenet_key(k, source);
            let new = |p: &str| torchvision && is_densenet_addition(p);
            let r = apply_pytorch(&mut m, path, tensors, key, new)?;
            Ok((AnyModel::DenseNet(to_device_float(m, device)), r))
        }
    }
}

/// Whose key names these are: the original files prefix every backbone key; torchvision's
/// do not.
fn source_of(keys: &[String]) -> Source {
    let original = keys
        .iter()
        .any(|k| k.starts_with("convnext_tiny.") || k.starts_with("densenet."));
    if original {
        Source::Original
    } else {
        Source::Torchvision
    }
}

/// The shape of each parameter of a `kind` model the tensors fill, by its path.
fn param_shapes(
    tensors: &[(String, TensorSnapshot)],
    kind: ModelKind,
    source: Source,
) -> std::collections::HashMap<String, Vec<usize>> {
    let target = |k: &str| match kind {
        ModelKind::ConvNeXt => convnext_key(k, source),
        ModelKind::DenseNet => densenet_key(k, source),
    };
    tensors
        .iter()
        .filter_map(|(k, t)| match target(k) {
            crate::weights::Target::Param(p) => Some((p, t.shape.to_vec())),
            _ => None,
        })
        .collect()
}

/// Load a model for `purpose` whatever its architecture: an own-format checkpoint of either
/// family (it records which), or the original program's weights (MyConvNeXt for grading,
/// MyDenseNet for features, default configurations).
pub fn load_for<B: Backend>(
    path: &Path,
    purpose: Purpose,
    device: &B::Device,
) -> Result<(AnyModel<B>, Option<CheckpointMeta>, LoadReport), WeightsError> {
    let is_safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let kind = match is_safetensors
        .then(|| read_meta(path))
        .transpose()?
        .flatten()
    {
        Some(meta) if meta.purpose() != purpose => {
            return Err(wrong_purpose(path, meta.purpose(), purpose))
        }
        Some(meta) => meta.kind,
        None => purpose.original_kind(),
    };
    load_any(
        path,
        kind,
        &MyConvNeXtConfig::new(),
        &MyDenseNetConfig::new(),
        device,
    )
}

/// Count `prefix{i}` indices present among the keys (largest index + 1).
fn count_indexed(
    shapes: &std::collections::HashMap<String, Vec<usize>>,
    prefix: &str,
    suffix: &str,
) -> usize {
    shapes
        .keys()
        .filter_map(|k| {
            k.strip_prefix(prefix)?
                .split_once('.')
                .filter(|(_, rest)| rest.ends_with(suffix))?
                .0
                .parse::<usize>()
                .ok()
        })
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

fn infer_convnext(
    shapes: &std::collections::HashMap<String, Vec<usize>>,
    base: &MyConvNeXtConfig,
) -> MyConvNeXtConfig {
    let stages = count_indexed(shapes, "stages.", "dwconv.weight");
    if stages == 0 {
        return base.clone();
    }
    let mut dims = Vec::new();
    let mut depths = Vec::new();
    for s in 0..stages {
        depths.push(count_indexed(
            shapes,
            &format!("stages.{s}.blocks."),
            "dwconv.weight",
        ));
        dims.push(
            shapes
                .get(&format!("stages.{s}.blocks.0.dwconv.weight"))
                .map(|v| v[0])
                .unwrap_or(0),
        );
    }
    let mut cfg = base.clone().with_dims(dims).with_depths(depths);
    if let Some(w) = shapes.get("head_fc2.weight") {
        cfg = cfg.with_num_classes(w[0]);
    }
    cfg
}

fn infer_densenet(
    shapes: &std::collections::HashMap<String, Vec<usize>>,
    base: &MyDenseNetConfig,
) -> MyDenseNetConfig {
    let nblocks = count_indexed(shapes, "blocks.", "conv1.weight");
    let (Some(conv0), Some(c1), Some(c2)) = (
        shapes.get("conv0.weight"),
        shapes.get("blocks.0.layers.0.conv1.weight"),
        shapes.get("blocks.0.layers.0.conv2.weight"),
    ) else {
        return base.clone();
    };
    let growth = c2[0].max(1);
    let blocks = (0..nblocks)
        .map(|b| count_indexed(shapes, &format!("blocks.{b}.layers."), "conv1.weight"))
        .collect();
    let tasks = count_indexed(shapes, "task_heads.", "fc2.weight");
    base.clone()
        .with_init_features(conv0[0])
        .with_growth(growth)
        .with_bn_size(c1[0] / growth)
        .with_blocks(blocks)
        .with_tasks(if tasks > 0 { tasks } else { base.tasks })
}

fn load_own<B: Backend>(
    path: &Path,
    meta: &CheckpointMeta,
    device: &B::Device,
) -> Result<(AnyModel<B>, LoadReport), WeightsError> {
    load_own_from(&mut SafetensorsStore::from_file(path), path, meta, device)
}

fn load_own_from<B: Backend>(
    store: &mut SafetensorsStore,
    path: &Path,
    meta: &CheckpointMeta,
    device: &B::Device,
) -> Result<(AnyModel<B>, LoadReport), WeightsError> {
    let (model, result) = match meta.kind {
        ModelKind::ConvNeXt => {
            let cfg = meta
                .convnext
                .clone()
                .ok_or_else(|| err(path, "convnext checkpoint without its configuration"))?;
            let mut m = cfg.init::<B>(device);
            let r = m.load_from(store).map_err(|e| err(path, e))?;
            (AnyModel::ConvNeXt(to_device_float(m, device)), r)
        }
        ModelKind::DenseNet => {
            let cfg = meta
                .densenet
                .clone()
                .ok_or_else(|| err(path, "densenet checkpoint without its configuration"))?;
            let mut m = cfg.init::<B>(device);
            let r = m.load_from(store).map_err(|e| err(path, e))?;
            (AnyModel::DenseNet(to_device_float(m, device)), r)
        }
    };
    let mut details = String::new();
    if !result.missing.is_empty() {
        let v: Vec<&str> = result.missing.iter().map(|(p, _)| p.as_str()).collect();
        details.push_str(&format!("\n  missing keys ({}): {}", v.len(), v.join(", ")));
    }
    if !result.unused.is_empty() {
        details.push_str(&format!(
            "\n  unexpected keys ({}): {}",
            result.unused.len(),
            result.unused.join(", ")
        ));
    }
    if !result.errors.is_empty() {
        let v: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
        details.push_str(&format!(
            "\n  mis-shaped or unreadable ({}): {}",
            v.len(),
            v.join("; ")
        ));
    }
    if !details.is_empty() {
        return Err(WeightsError::Mismatch {
            path: path.display().to_string(),
            details,
        });
    }
    Ok((
        model,
        LoadReport {
            loaded: result.applied.len(),
            ..Default::default()
        },
    ))
}

/// Write a model in the own format, atomically (temporary file, then rename).
pub fn save<B: Backend>(
    model: &AnyModel<B>,
    extra: serde_json::Value,
    path: &Path,
) -> Result<(), WeightsError> {
    let meta = CheckpointMeta {
        version: FORMAT_VERSION,
        kind: model.kind(),
        convnext: match model {
            AnyModel::ConvNeXt(m) => Some(convnext_config_of(m)),
            _ => None,
        },
        densenet: match model {
            AnyModel::DenseNet(m) => Some(densenet_config_of(m)),
            _ => None,
        },
        extra,
    };
    let json = serde_json::to_string(&meta).map_err(|e| err(path, e))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| err(path, e))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("checkpoint"),
        std::process::id()
    ));
    let mut store = SafetensorsStore::from_file(&tmp)
        .metadata(META_KEY, json)
        .overwrite(true);
    let saved = match model {
        AnyModel::ConvNeXt(m) => m.save_into(&mut store),
        AnyModel::DenseNet(m) => m.save_into(&mut store),
    };
    saved.map_err(|e| err(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(path, e))
}

/// The configuration a MyConvNeXt was built with, read back from its structure.
pub fn convnext_config_of<B: Backend>(m: &MyConvNeXt<B>) -> MyConvNeXtConfig {
    let dims: Vec<usize> = m
        .stages
        .iter()
        .map(|s| {
            s.blocks
                .first()
                .map(|b| b.dwconv.weight.dims()[0])
                .unwrap_or(0)
        })
        .collect();
    let depths: Vec<usize> = m.stages.iter().map(|s| s.blocks.len()).collect();
    let last = m.stages.last().and_then(|s| s.blocks.last());
    let sd_rate = last.map(|b| b.drop_path).unwrap_or(0.0);
    MyConvNeXtConfig::new()
        .with_dims(dims)
        .with_depths(depths)
        .with_num_classes(m.head_fc2.weight.dims()[1])
        .with_dropout(m.dropout)
        .with_sd_rate(sd_rate)
}

/// The configuration a MyDenseNet was built with, read back from its structure.
pub fn densenet_config_of<B: Backend>(m: &MyDenseNet<B>) -> MyDenseNetConfig {
    let blocks: Vec<usize> = m.blocks.iter().map(|b| b.layers.len()).collect();
    let init = m.conv0.weight.dims()[0];
    let growth = m.blocks[0].layers[0].conv2.weight.dims()[0];
    let bn_size = m.blocks[0].layers[0].conv1.weight.dims()[0] / growth;
    let dp2 = m.blocks[0].layers[0].dropout;
    MyDenseNetConfig::new()
        .with_growth(growth)
        .with_blocks(blocks)
        .with_init_features(init)
        .with_bn_size(bn_size)
        .with_tasks(if m.classes > 0 { 4 } else { m.task_heads.len() })
        .with_classes(m.classes)
        .with_dp1(m.dp1)
        .with_dp2(dp2)
}

#[cfg(test)]
mod tests {
    use super::half_to_f32;

    #[test]
    fn half_floats_convert() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0000), 0.0);
        assert_eq!(half_to_f32(0x0001), 5.960_464_5e-8);
        assert!(half_to_f32(0x7c00).is_infinite());
        assert_eq!(half_to_f32(0x3555), 0.333_251_95);
    }
}
