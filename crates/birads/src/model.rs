//! `birads model info`.

use std::path::PathBuf;

use birads_infer::loaded::load_model;
use birads_model::builtin;
use birads_model::checkpoint::AnyModel;
use birads_model::{Cpu, MyConvNeXtConfig, MyDenseNetConfig};
use burn::prelude::*;
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Architectures, parameter counts and output shapes of MyConvNeXt, MyDenseNet and the
    /// built-in BI-RADS model (or of the model in a weights file).
    Info(InfoArgs),
}

#[derive(Args)]
pub struct InfoArgs {
    /// A weights file (.pth original/torchvision, .safetensors) to describe instead of the
    /// default full-size configurations.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// What original weights are for: cls (MyConvNeXt) or fea (MyDenseNet); birads
    /// checkpoints say it themselves. `--weights builtin` describes the built-in model.
    #[arg(long, value_parser = ["cls", "fea"], requires = "weights")]
    pub task: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: ModelCommand) -> anyhow::Result<u8> {
    match cmd {
        ModelCommand::Info(a) => info(a),
    }
}

fn describe(model: &AnyModel<Cpu>) -> serde_json::Value {
    let device = Default::default();
    let x = Tensor::<Cpu, 4>::zeros([1, 3, 224, 224], &device);
    match model {
        AnyModel::ConvNeXt(m) => {
            let cfg = birads_model::checkpoint::convnext_config_of(m);
            let out = m.forward(x).dims();
            serde_json::json!({
                "model": "MyConvNeXt",
                "task": "BI-RADS classes",
                "config": cfg,
                "stochastic_depth": cfg.drop_path_schedule(),
                "parameters": m.num_params(),
                "running_statistics": 0,
                "fp32_megabytes": m.num_params() as f64 * 4.0 / 1e6,
                "output_shape": out,
            })
        }
        AnyModel::DenseNet(m) => {
            let cfg = birads_model::checkpoint::densenet_config_of(m);
            let out = m.forward(x).dims();
            let cbam: Vec<_> = m
                .blocks
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let [hidden, c, _, _] = b.cbam.channel_attention.fc1.weight.dims();
                    serde_json::json!({"block": i + 1, "channels": c, "ratio": MyDenseNetConfig::cbam_ratio(i + 1), "hidden": hidden})
                })
                .collect();
            serde_json::json!({
                "model": "MyDenseNet",
                "task": if m.classes > 0 {
                    "BI-RADS classes (one class head)"
                } else {
                    "lesion features (boundary, calcification, direction, shape)"
                },
                "config": cfg,
                "cbam": cbam,
                "parameters": m.trainable_params(),
                "running_statistics": m.running_stat_count(),
                "fp32_megabytes": m.num_params() as f64 * 4.0 / 1e6,
                "output_shape": out,
            })
        }
    }
}

fn info(a: InfoArgs) -> anyhow::Result<u8> {
    let device = Default::default();
    let (models, builtin_meta) = match &a.weights {
        Some(path) => {
            // Own checkpoints say what they are; original files default to MyConvNeXt.
            let purpose = crate::export::purpose_of(path, a.task.as_deref());
            let loaded = load_model::<Cpu>(path, purpose, &device)?;
            eprintln!("loaded {}", loaded.source);
            (vec![loaded.model], None)
        }
        None => {
            let (m, meta) = builtin::load::<Cpu>(&device)?;
            (
                vec![
                    AnyModel::ConvNeXt(MyConvNeXtConfig::new().init::<Cpu>(&device)),
                    AnyModel::DenseNet(MyDenseNetConfig::new().init::<Cpu>(&device)),
                    m,
                ],
                Some(meta),
            )
        }
    };
    let mut infos: Vec<serde_json::Value> = models.iter().map(describe).collect();
    if let (Some(meta), Some(last)) = (builtin_meta, infos.last_mut()) {
        last["builtin"] = serde_json::json!({
            "name": builtin::NAME,
            "use": format!("the default of predict and serve (or --cla-weights {})", builtin::KEYWORD),
            "card": builtin::CARD_PATH,
            "classes": meta.extra.get("classes"),
            "preprocess": meta.extra.get("preprocess"),
        });
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
        return Ok(0);
    }
    for i in &infos {
        if let Some(b) = i.get("builtin") {
            println!(
                "Built-in model {} — {}; card: {}",
                b["name"].as_str().unwrap_or(""),
                b["use"].as_str().unwrap_or(""),
                b["card"].as_str().unwrap_or("")
            );
            println!("  classes: {}", b["classes"]);
        }
        println!(
            "{} — {}",
            i["model"].as_str().unwrap_or(""),
            i["task"].as_str().unwrap_or("")
        );
        println!(
            "  parameters:         {}",
            group(i["parameters"].as_u64().unwrap_or(0))
        );
        if i["running_statistics"].as_u64().unwrap_or(0) > 0 {
            println!(
                "  + BatchNorm running statistics: {}",
                group(i["running_statistics"].as_u64().unwrap_or(0))
            );
        }
        println!(
            "  size (fp32):        {:.1} MB",
            i["fp32_megabytes"].as_f64().unwrap_or(0.0)
        );
        println!("  output for 1×3×224×224: {}", i["output_shape"]);
        println!("  config: {}", i["config"]);
        if let Some(sd) = i["stochastic_depth"].as_array() {
            let v: Vec<String> = sd
                .iter()
                .map(|p| format!("{:.3}", p.as_f64().unwrap_or(0.0)))
                .collect();
            println!("  stochastic depth per CNBlock: {}", v.join(" "));
        }
        if let Some(cbam) = i["cbam"].as_array() {
            for c in cbam {
                println!(
                    "  CBAM after dense block {}: {} channels, reduction {}, hidden {}",
                    c["block"], c["channels"], c["ratio"], c["hidden"]
                );
            }
        }
        println!();
    }
    Ok(0)
}

/// 28117734 → "28,117,734".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
