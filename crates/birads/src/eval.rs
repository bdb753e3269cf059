//! `birads eval`: metrics, competition score and an HTML report from prediction CSVs and
//! ground truth.

use std::path::PathBuf;

use anyhow::Context;
use birads_infer::eval::{evaluate, Evaluation, Predictions, Truth};
use clap::Args;

#[derive(Args)]
pub struct EvalArgs {
    /// Predictions: a folder written by `birads predict` (cla_pre.csv, fea_pre.csv and, with
    /// --probabilities, cla_prob.csv, fea_prob.csv) or any of those files. Repeatable.
    #[arg(long = "pred", required = true, num_args = 1..)]
    pub pred: Vec<PathBuf>,
    /// Ground truth: cla_gt.csv / fea_gt.csv, or a labelled dataset in any layout
    /// `birads data check` reads (a test set with *_gt.csv, a training package, a manifest).
    /// Repeatable.
    #[arg(long = "truth", required = true, num_args = 1..)]
    pub truth: Vec<PathBuf>,
    /// Where eval.json, report.html and the plots go.
    #[arg(long, default_value = "out/eval")]
    pub out: PathBuf,
}

/// Print the headline figures.
pub fn print_summary(ev: &Evaluation) {
    if let Some(c) = &ev.classification {
        let auc = c
            .auc_macro
            .map(|a| format!(", macro AUC {a:.4}, ECE {:.4}", c.ece.unwrap_or(f64::NAN)))
            .unwrap_or_default();
        println!(
            "BI-RADS  ({} images): accuracy {:.4}, macro-F1 {:.4}, QWK {:.4}{auc}",
            c.images, c.accuracy, c.macro_f1, c.quadratic_kappa
        );
    }
    if let Some(f) = &ev.features {
        let per: Vec<String> = f
            .features
            .iter()
            .map(|x| format!("{} {:.3}/{:.3}", x.name, x.accuracy, x.f1))
            .collect();
        println!(
            "features: mean accuracy {:.4}, mean F1 {:.4} (acc/F1: {})",
            f.mean_accuracy,
            f.mean_f1,
            per.join(", ")
        );
    }
    let s = &ev.competition;
    let f = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into());
    println!(
        "competition score: {} (classification {}, features {})",
        f(s.overall),
        f(s.classification),
        f(s.features)
    );
}

pub fn run(a: EvalArgs) -> anyhow::Result<u8> {
    let pred = Predictions::read(&a.pred).map_err(|e| anyhow::anyhow!("predictions: {e}"))?;
    let truth = Truth::read(&a.truth).map_err(|e| anyhow::anyhow!("ground truth: {e}"))?;
    let ev = evaluate(&pred, &truth);
    anyhow::ensure!(
        ev.classification.is_some() || ev.features.is_some(),
        "nothing to evaluate: the predictions and the ground truth share no task \
         (BI-RADS needs cla_pre/cla_prob with BI-RADS labels, features need fea_pre/fea_prob with feature labels)"
    );
    for p in &ev.problems {
        eprintln!("{p}");
    }
    if !ev.missing_predictions.is_empty() {
        let shown: Vec<&str> = ev
            .missing_predictions
            .iter()
            .take(10)
            .map(String::as_str)
            .collect();
        eprintln!(
            "warning: {} labelled images have no prediction and are left out of the figures: {}{}",
            ev.missing_predictions.len(),
            shown.join(", "),
            if ev.missing_predictions.len() > 10 {
                ", …"
            } else {
                ""
            }
        );
    }
    if ev.unlabelled_predictions > 0 {
        eprintln!(
            "note: {} predicted images have no ground truth",
            ev.unlabelled_predictions
        );
    }
    print_summary(&ev);
    let sources = format!(
        "predictions: {}; ground truth: {}",
        a.pred
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        a.truth
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    birads_infer::report::write_report(&ev, &a.out, &sources)
        .with_context(|| format!("writing the report to {}", a.out.display()))?;
    println!(
        "report: {}  (metrics: {})",
        a.out.join("report.html").display(),
        a.out.join("eval.json").display()
    );
    let skipped = !ev.missing_predictions.is_empty()
        || ev
            .problems
            .iter()
            .any(|p| p.severity == birads_data::Severity::Error);
    Ok(if skipped { crate::EXIT_SKIPPED } else { 0 })
}
