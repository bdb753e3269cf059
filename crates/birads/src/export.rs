//! `birads export --onnx`: a model (original `.pth`, a birads checkpoint, or the built-in
//! model) as an ONNX file for ONNX Runtime, Triton and other inference servers.

use std::path::PathBuf;

use anyhow::Context;
use birads_infer::loaded::load_model;
use birads_model::builtin;
use birads_model::checkpoint::{read_meta, Purpose};
use birads_model::Cpu;
use clap::Args;

#[derive(Args)]
pub struct ExportArgs {
    /// Write ONNX (opset 17; input `image` [batch, 3, size, size], outputs `logits` and
    /// `probabilities`; class list and preprocessing in the model's metadata).
    #[arg(long, required = true)]
    pub onnx: bool,
    /// The weights: MyConv.pth / MyDense.pth, a birads checkpoint, or `builtin`.
    #[arg(long)]
    pub weights: PathBuf,
    /// What original weights are for: cls (MyConvNeXt) or fea (MyDenseNet); birads
    /// checkpoints say it themselves.
    #[arg(long, value_parser = ["cls", "fea"])]
    pub task: Option<String>,
    /// The ONNX file to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// The purpose of a weights argument: as asked, as its checkpoint says, else grading.
pub fn purpose_of(weights: &std::path::Path, task: Option<&str>) -> Purpose {
    match task {
        Some("fea") => Purpose::Features,
        Some(_) => Purpose::Grading,
        None if builtin::is_builtin(weights) => Purpose::Grading,
        None => match read_meta(weights).ok().flatten() {
            Some(meta) => meta.purpose(),
            None => Purpose::Grading,
        },
    }
}

pub fn run(a: ExportArgs) -> anyhow::Result<u8> {
    let purpose = purpose_of(&a.weights, a.task.as_deref());
    let loaded = load_model::<Cpu>(&a.weights, purpose, &Default::default())?;
    let info = birads_onnx::ExportInfo {
        classes: loaded.classes.clone(),
        preprocess: serde_json::to_value(&loaded.preprocess)?,
        size: loaded.preprocess.size as usize,
        source: loaded.source.clone(),
    };
    let bytes = birads_onnx::export(&loaded.model, &info)?;
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    birads_data::atomic::write_atomic(&a.out, &bytes)
        .with_context(|| format!("writing {}", a.out.display()))?;
    let s = loaded.preprocess.size;
    let outputs = match purpose {
        Purpose::Grading => format!(
            "[batch, {}] over classes {}",
            loaded.classes.len(),
            loaded.classes.join(",")
        ),
        Purpose::Features => {
            "[batch, 4, 2] (boundary, calcification, direction, shape × absent/present)".into()
        }
    };
    println!(
        "wrote {} ({:.1} MB, ONNX opset {}) from {}\n  input  {}: float32 [batch, 3, {s}, {s}], preprocessing {}\n  outputs {} and {}: {outputs}",
        a.out.display(),
        bytes.len() as f64 / 1e6,
        birads_onnx::OPSET,
        loaded.source,
        birads_onnx::INPUT,
        serde_json::to_string(&loaded.preprocess)?,
        birads_onnx::LOGITS,
        birads_onnx::PROBABILITIES,
    );
    Ok(0)
}
