//! `birads bench matmuls`: is every matrix-product kernel that burn's autotune may choose right
//! on this GPU, for the products a training step makes?
//!
//! burn times its candidate kernels on each product's key and keeps the fastest, without
//! comparing their results; on Mesa's software Vulkan driver one of them gave wrong values
//! (docs/gpu/README.md, "A known problem"). This runs each candidate on its own
//! (`birads_model::matmuls`) on the linear layers' and 1×1 convolutions' products of both
//! models at the training batch and compares it with an f64 reference. A wrong kernel that
//! autotune also finds fastest for that product's bucket would train wrong: the exit code is
//! 1 when any kernel is wrong. Each row also says of which stage lengths along k the product's
//! k is an odd multiple, where cubek's multi-stage kernels read past the operands.

use anyhow::bail;
use birads_model::matmuls::{odd_stages, Outcome, Product, Verdict};
use clap::Args;

use crate::device::{DeviceArg, PrecisionArg};

#[derive(Args)]
pub struct MatmulsArgs {
    #[arg(long, value_enum, default_value = "cuda")]
    pub device: DeviceArg,
    /// f32, or bf16 (amp's products are bf16's).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
    /// Models whose products to check: convnext, densenet.
    #[arg(long, value_delimiter = ',', default_value = "convnext,densenet")]
    pub models: Vec<String>,
    /// Images per step (default 32, or the config's).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Image side (default 224, or the config's).
    #[arg(long)]
    pub size: Option<usize>,
    /// The models of a training config (`birads train --config`), e.g. the small ones of
    /// configs/precision-fea.toml, instead of the original architectures; its batch and image
    /// size unless --batch and --size are given.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Largest error (|got − want| / Σ|aᵢbᵢ|) taken as right; default 1e-2: rounding gives
    /// 6e-8 in f32, about 1e-3 with TF32 tensor cores or a bf16 result, a wrong kernel ~1.
    #[arg(long, default_value_t = 1e-2)]
    pub limit: f64,
}

/// One product's line of the table.
#[derive(Debug, PartialEq)]
pub struct Row {
    /// Kernels that ran.
    pub ran: usize,
    pub right: usize,
    /// The largest error among the right ones.
    pub worst_right: f64,
    /// The wrong ones: name, error and one element's value against the reference.
    pub wrong: Vec<String>,
}

pub fn summarise(outcomes: &[Outcome]) -> Row {
    let mut row = Row {
        ran: 0,
        right: 0,
        worst_right: 0.0,
        wrong: Vec::new(),
    };
    for o in outcomes {
        match &o.verdict {
            Verdict::Refused(_) => continue,
            Verdict::Right(error) => {
                row.right += 1;
                row.worst_right = row.worst_right.max(*error);
            }
            Verdict::Wrong {
                error,
                index,
                got,
                want,
            } => row.wrong.push(format!(
                "{} ({error:.2e}: [{index}] {got} for {want:.6})",
                o.kernel
            )),
        }
        row.ran += 1;
    }
    row
}

pub fn matmuls(a: MatmulsArgs) -> anyhow::Result<u8> {
    if !a.device.is_gpu() {
        bail!("`bench matmuls` checks the kernels of burn's GPU backends: --device cuda or wgpu");
    }
    a.device.ready_for(a.precision)?;
    let bf16 = a.precision != PrecisionArg::F32;
    println!(
        "matmul kernels on {}, {}: each of autotune's candidates on its own, on the products of one \
         training step ({} models), against an f64 reference of the same rounded inputs; \
         error = |Δ| / Σ|aᵢbᵢ|, right within {:.0e}",
        a.device.name(),
        if bf16 { "bf16" } else { "f32" },
        match &a.config {
            Some(path) => format!("{}'s", path.display()),
            None => "the original".to_string(),
        },
        a.limit
    );
    println!();
    println!(
        "| model | product | shape | k odd in stages of | kernels ran | right | worst right error | wrong |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut wrong = 0;
    for model in &a.models {
        for (seed, (name, product)) in products(&a, model)?.into_iter().enumerate() {
            let outcomes = run(a.device, product, bf16, seed as u64, a.limit)?;
            let row = summarise(&outcomes);
            wrong += row.wrong.len();
            let odd = odd_stages(product.k);
            println!(
                "| {model} | {name} | {product} | {} | {} | {} | {:.1e} | {} |",
                if odd.is_empty() {
                    "-".to_string()
                } else {
                    format!("{odd:?}")
                },
                row.ran,
                row.right,
                row.worst_right,
                if row.wrong.is_empty() {
                    "none".to_string()
                } else {
                    row.wrong.join("; ")
                }
            );
        }
    }
    println!();
    println!("{wrong} wrong (kernel, product) pairs");
    Ok(if wrong == 0 { 0 } else { 1 })
}

/// The products of one training step of `model`, from `--config` or the originals.
fn products(a: &MatmulsArgs, model: &str) -> anyhow::Result<Vec<(String, Product)>> {
    use birads_model::matmuls::{convnext_products, densenet_products};
    let (models, batch, size) = match &a.config {
        Some(path) => {
            let cfg = crate::train::read_config_own_task(path)?;
            let size = a.size.unwrap_or(cfg.preprocess.size as usize);
            (cfg.model, a.batch.unwrap_or(cfg.batch_size), size)
        }
        None => {
            let models = birads_train::config::ModelConfig::default();
            (models, a.batch.unwrap_or(32), a.size.unwrap_or(224))
        }
    };
    Ok(match model {
        "convnext" => convnext_products(&models.convnext, batch, size),
        "densenet" => densenet_products(&models.densenet, batch, size),
        _ => bail!("unknown model {model:?} (convnext, densenet)"),
    })
}

/// Every candidate on `p` on `device` (a GPU that `DeviceArg::ready` accepted; bf16 on CUDA
/// only, as `supported` says).
#[cfg_attr(not(all(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
fn run(
    device: DeviceArg,
    p: Product,
    bf16: bool,
    seed: u64,
    limit: f64,
) -> anyhow::Result<Vec<Outcome>> {
    match device {
        #[cfg(feature = "cuda")]
        DeviceArg::Cuda => Ok(birads_model::matmuls::check_cuda(p, bf16, seed, limit)),
        #[cfg(feature = "wgpu")]
        DeviceArg::Wgpu => Ok(birads_model::matmuls::check_wgpu(p, seed, limit)),
        other => bail!("--device {}: not in this build", other.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(kernel: &str, verdict: Verdict) -> Outcome {
        Outcome {
            kernel: kernel.into(),
            verdict,
        }
    }

    #[test]
    fn a_row_counts_right_wrong_and_refused_kernels() {
        let row = summarise(&[
            outcome("a", Verdict::Right(1e-7)),
            outcome("b", Verdict::Refused("no tensor cores".into())),
            outcome("c", Verdict::Right(3e-4)),
            outcome(
                "d",
                Verdict::Wrong {
                    error: 0.5,
                    index: 9,
                    got: 1.0,
                    want: 2.0,
                },
            ),
        ]);
        assert_eq!((row.ran, row.right, row.worst_right), (3, 2, 3e-4));
        assert_eq!(
            row.wrong,
            vec!["d (5.00e-1: [9] 1 for 2.000000)".to_string()]
        );
    }
}
