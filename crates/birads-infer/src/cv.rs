//! Cross-validation results of a BI-RADS model: each fold's test metrics, their mean ± sd
//! over folds, metrics of all test predictions pooled, and the report (`cv.json` for
//! programs, a self-contained `report.html` for people).
//!
//! Malignancy is scored by [`metrics::malignancy_score`] (P(4) + P(5)) and ranked against
//! biopsy pathology; the radiologist's own score is the true BI-RADS category itself (its
//! index in the ordered class list), on the same test images.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::eval::cls_eval;
use crate::metrics;
use crate::report::{confusion_plot, esc, fmt_opt, plots_section, roc_plot, write_files, Plot};

/// One test image of a fold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestPrediction {
    /// The image's name in the partition file.
    pub id: String,
    pub image: String,
    /// True class index.
    pub truth: usize,
    /// Biopsy or follow-up outcome, where known.
    pub malignant: Option<bool>,
    pub probabilities: Vec<f32>,
}

/// Test metrics of one fold (or of all folds' test images pooled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldMetrics {
    pub images: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// Undefined (none) when truth and prediction are both one class: it is written as `null`
    /// in `result.json` and left out of the mean.
    pub quadratic_kappa: Option<f64>,
    /// Mean one-vs-rest AUC over the classes present.
    pub auc_macro: Option<f64>,
    /// AUC of the malignancy score against pathology.
    pub malignancy_auc: Option<f64>,
    /// AUC of the true BI-RADS category (the radiologist's reading) against pathology.
    pub radiologist_auc: Option<f64>,
    /// Images with a known pathology (the AUCs above use these).
    pub with_pathology: usize,
    /// Rows: truth; columns: prediction.
    pub confusion: Vec<Vec<u64>>,
}

/// Every metric of a set of test predictions.
pub fn fold_metrics(classes: &[String], preds: &[TestPrediction]) -> FoldMetrics {
    let truth: Vec<usize> = preds.iter().map(|p| p.truth).collect();
    let pred: Vec<usize> = preds
        .iter()
        .map(|p| crate::predict::argmax(&p.probabilities))
        .collect();
    let probs: Vec<Option<Vec<f64>>> = preds
        .iter()
        .map(|p| Some(p.probabilities.iter().map(|&v| v as f64).collect()))
        .collect();
    let ev = cls_eval(classes.to_vec(), &truth, &pred, &probs);
    let known: Vec<&TestPrediction> = preds.iter().filter(|p| p.malignant.is_some()).collect();
    let positive: Vec<bool> = known.iter().map(|p| p.malignant == Some(true)).collect();
    let model: Vec<f64> = known
        .iter()
        .map(|p| metrics::malignancy_score(classes, &p.probabilities))
        .collect();
    let reader: Vec<f64> = known.iter().map(|p| p.truth as f64).collect();
    FoldMetrics {
        images: preds.len(),
        accuracy: ev.accuracy,
        macro_f1: ev.macro_f1,
        quadratic_kappa: Some(ev.quadratic_kappa).filter(|k| k.is_finite()),
        auc_macro: ev.auc_macro,
        malignancy_auc: metrics::roc_auc(&positive, &model),
        radiologist_auc: metrics::roc_auc(&positive, &reader),
        with_pathology: known.len(),
        confusion: ev.confusion,
    }
}

/// One finished fold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldResult {
    /// 1-based.
    pub fold: usize,
    pub train_images: usize,
    pub val_images: usize,
    pub test_images: usize,
    /// The epoch whose checkpoint was chosen on the validation images.
    pub best_epoch: Option<u64>,
    pub epochs: u64,
    /// Wall-clock seconds of training (all sessions of a resumed fold).
    pub train_seconds: f64,
    pub metrics: FoldMetrics,
    pub predictions: Vec<TestPrediction>,
}

/// A metric over folds: mean and sample standard deviation (`None` with fewer than two
/// folds), and the per-fold values it came from (folds where it is undefined left out).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    pub metric: String,
    pub mean: f64,
    pub sd: Option<f64>,
    pub folds: usize,
    pub values: Vec<f64>,
}

impl Spread {
    pub fn of(metric: &str, values: Vec<f64>) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = (n > 1).then(|| {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        });
        Some(Self {
            metric: metric.to_string(),
            mean,
            sd,
            folds: n,
            values,
        })
    }

    /// `0.812 ± 0.021`.
    pub fn show(&self) -> String {
        match self.sd {
            Some(sd) => format!("{:.3} ± {:.3}", self.mean, sd),
            None => format!("{:.3}", self.mean),
        }
    }
}

/// The whole cross-validation.
#[derive(Debug, Clone, Serialize)]
pub struct CvReport {
    pub classes: Vec<String>,
    /// Folds in the partition (the report may cover fewer: those finished).
    pub folds_total: usize,
    pub folds: Vec<FoldResult>,
    /// Mean ± sd over the finished folds, in the order of [`METRICS`].
    pub summary: Vec<Spread>,
    /// All finished folds' test images together.
    pub pooled: FoldMetrics,
    pub malignancy_score: &'static str,
}

/// How to read one metric from a fold.
pub type MetricOf = fn(&FoldMetrics) -> Option<f64>;

/// The summarised metrics: name and how to read it from a fold.
pub const METRICS: [(&str, MetricOf); 7] = [
    ("accuracy", |m| Some(m.accuracy)),
    ("macro_f1", |m| Some(m.macro_f1)),
    ("quadratic_kappa", |m| m.quadratic_kappa),
    ("auc_macro", |m| m.auc_macro),
    ("malignancy_auc", |m| m.malignancy_auc),
    ("radiologist_auc", |m| m.radiologist_auc),
    ("competition_score", |m| {
        Some(0.6 * m.accuracy + 0.4 * m.macro_f1)
    }),
];

/// Summarise finished folds (in fold order).
pub fn summarise(classes: Vec<String>, folds_total: usize, mut folds: Vec<FoldResult>) -> CvReport {
    folds.sort_by_key(|f| f.fold);
    let summary = METRICS
        .iter()
        .filter_map(|(name, get)| {
            Spread::of(name, folds.iter().filter_map(|f| get(&f.metrics)).collect())
        })
        .collect();
    let all: Vec<TestPrediction> = folds
        .iter()
        .flat_map(|f| f.predictions.iter().cloned())
        .collect();
    CvReport {
        pooled: fold_metrics(&classes, &all),
        classes,
        folds_total,
        folds,
        summary,
        malignancy_score: "P(4) + P(5): the probability of a category that recommends biopsy \
                           (4, 4A, 4B, 4C) or is highly suggestive of malignancy (5)",
    }
}

fn plots(r: &CvReport) -> Result<Vec<Plot>, String> {
    let roc = |p: &[TestPrediction], reader: bool| -> (Vec<(f64, f64)>, Option<f64>) {
        let known: Vec<&TestPrediction> = p.iter().filter(|p| p.malignant.is_some()).collect();
        let pos: Vec<bool> = known.iter().map(|p| p.malignant == Some(true)).collect();
        let score: Vec<f64> = known
            .iter()
            .map(|p| match reader {
                true => p.truth as f64,
                false => metrics::malignancy_score(&r.classes, &p.probabilities),
            })
            .collect();
        (
            metrics::roc_curve(&pos, &score),
            metrics::roc_auc(&pos, &score),
        )
    };
    // (label, ROC points, AUC) per fold, then pooled.
    type Curve = (String, Vec<(f64, f64)>, Option<f64>);
    let mut curves: Vec<Curve> = r
        .folds
        .iter()
        .map(|f| {
            let (pts, auc) = roc(&f.predictions, false);
            (format!("fold {}", f.fold), pts, auc)
        })
        .collect();
    let all: Vec<TestPrediction> = r
        .folds
        .iter()
        .flat_map(|f| f.predictions.iter().cloned())
        .collect();
    let (pts, auc) = roc(&all, false);
    curves.push(("model, pooled".into(), pts, auc));
    let (pts, auc) = roc(&all, true);
    curves.push(("radiologist's BI-RADS, pooled".into(), pts, auc));
    let series: Vec<_> = curves
        .iter()
        .map(|(n, p, a)| (n.clone(), p.as_slice(), *a))
        .collect();
    Ok(vec![
        Plot {
            name: "malignancy_roc.png".into(),
            title: "Malignancy ROC on the test folds".into(),
            png: roc_plot("Malignancy (pathology) ROC", &series)?,
        },
        Plot {
            name: "confusion_pooled.png".into(),
            title: "BI-RADS confusion, all test folds".into(),
            png: confusion_plot(
                "BI-RADS, test folds pooled",
                &r.classes,
                &r.pooled.confusion,
            )?,
        },
    ])
}

fn metrics_row(h: &mut String, label: &str, m: &FoldMetrics) {
    let _ = write!(
        h,
        "<tr><th>{}</th><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        esc(label),
        m.images,
        m.accuracy,
        m.macro_f1,
        fmt_opt(m.quadratic_kappa),
        fmt_opt(m.auc_macro),
        fmt_opt(m.malignancy_auc),
        fmt_opt(m.radiologist_auc)
    );
}

/// The report as one HTML document (`about`: what was cross-validated, in words).
pub fn html(r: &CvReport, plots: &[Plot], about: &str) -> String {
    let mut h = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>birads cross-validation</title>\
         <style>body{font-family:sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}\
         table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}\
         th{background:#f3f3f7}.plots img{max-width:540px;margin:.3em;border:1px solid #ddd}</style></head>\
         <body><h1>birads cross-validation</h1>",
    );
    let _ = write!(
        h,
        "<p>{}</p><p>{} of {} folds finished. Classes: {}. Malignancy score: {}; the radiologist's score is the \
         true BI-RADS category of the same test images.</p>",
        esc(about),
        r.folds.len(),
        r.folds_total,
        esc(&r.classes.join(", ")),
        esc(r.malignancy_score)
    );
    h.push_str("<h2>Mean ± sd over folds</h2><table><tr><th>metric</th><th>mean ± sd</th><th>per fold</th></tr>");
    for s in &r.summary {
        let per: Vec<String> = s.values.iter().map(|v| format!("{v:.3}")).collect();
        let _ = write!(
            h,
            "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            esc(&s.metric),
            s.show(),
            per.join(" · ")
        );
    }
    h.push_str("</table><h2>Per fold (test images)</h2><table><tr><th>fold</th><th>images</th><th>accuracy</th>\
                <th>macro-F1</th><th>quadratic κ</th><th>macro AUC</th><th>malignancy AUC</th><th>radiologist AUC</th></tr>");
    for f in &r.folds {
        metrics_row(&mut h, &format!("fold {}", f.fold), &f.metrics);
    }
    metrics_row(&mut h, "pooled", &r.pooled);
    h.push_str("</table><h2>Training</h2><table><tr><th>fold</th><th>train</th><th>validation</th><th>test</th>\
                <th>epochs</th><th>chosen epoch</th><th>training time</th></tr>");
    for f in &r.folds {
        let _ = write!(
            h,
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0} s</td></tr>",
            f.fold,
            f.train_images,
            f.val_images,
            f.test_images,
            f.epochs,
            f.best_epoch.map(|e| e.to_string()).unwrap_or_else(|| "–".into()),
            f.train_seconds
        );
    }
    h.push_str("</table>");
    plots_section(&mut h, plots);
    h.push_str("</body></html>\n");
    h
}

/// Write `cv.json` and `report.html` (plus the plots as PNG files) into `dir`, atomically.
pub fn write_cv_report(r: &CvReport, dir: &Path, about: &str) -> std::io::Result<Vec<PathBuf>> {
    let plots = plots(r).map_err(std::io::Error::other)?;
    let json = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
    write_files(dir, ("cv.json", &json), &html(r, &plots, about), &plots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(truth: usize, malignant: Option<bool>, probs: [f32; 4]) -> TestPrediction {
        TestPrediction {
            id: String::new(),
            image: String::new(),
            truth,
            malignant,
            probabilities: probs.to_vec(),
        }
    }

    #[test]
    fn spread_is_the_sample_standard_deviation() {
        let s = Spread::of("x", vec![0.7, 0.8, 0.9]).unwrap();
        assert!((s.mean - 0.8).abs() < 1e-12);
        assert!((s.sd.unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(s.show(), "0.800 ± 0.100");
        assert_eq!(Spread::of("x", vec![0.5]).unwrap().sd, None);
        assert!(Spread::of("x", vec![]).is_none());
    }

    #[test]
    fn malignancy_and_reader_auc_use_only_known_pathology() {
        let classes: Vec<String> = ["2", "3", "4", "5"].iter().map(|s| s.to_string()).collect();
        let preds = vec![
            p(0, Some(false), [0.7, 0.2, 0.1, 0.0]),
            p(1, Some(false), [0.2, 0.5, 0.2, 0.1]),
            p(2, Some(true), [0.1, 0.2, 0.6, 0.1]),
            p(3, Some(true), [0.0, 0.1, 0.3, 0.6]),
            // Unknown pathology: counted in the BI-RADS metrics only.
            p(2, None, [0.9, 0.1, 0.0, 0.0]),
            p(2, Some(false), [0.1, 0.1, 0.7, 0.1]),
        ];
        let m = fold_metrics(&classes, &preds);
        assert_eq!((m.images, m.with_pathology), (6, 5));
        // Scores: 0.1, 0.3, 0.7, 0.9 | benign 4 at 0.8 ranks above one malignant: 5/6.
        assert!((m.malignancy_auc.unwrap() - 5.0 / 6.0).abs() < 1e-12);
        // Reader: benign at 0, 1, 2; malignant at 2, 3 → (1 + 1 + 0.5 + 1 + 1 + 1) / 6.
        assert!((m.radiologist_auc.unwrap() - 5.5 / 6.0).abs() < 1e-12);
        assert!((m.accuracy - 5.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn the_report_summarises_folds_in_order() {
        let classes: Vec<String> = ["2", "3", "4", "5"].iter().map(|s| s.to_string()).collect();
        let fold = |k: usize, preds: Vec<TestPrediction>| FoldResult {
            fold: k,
            train_images: 10,
            val_images: 3,
            test_images: preds.len(),
            best_epoch: Some(2),
            epochs: 3,
            train_seconds: 1.0,
            metrics: fold_metrics(&classes, &preds),
            predictions: preds,
        };
        let a = vec![
            p(0, Some(false), [0.7, 0.2, 0.1, 0.0]),
            p(3, Some(true), [0.0, 0.1, 0.3, 0.6]),
        ];
        let b = vec![
            p(1, Some(false), [0.1, 0.2, 0.6, 0.1]),
            p(2, Some(true), [0.6, 0.2, 0.1, 0.1]),
        ];
        let folds = vec![fold(2, b), fold(1, a)];
        let r = summarise(classes.clone(), 5, folds);
        assert_eq!(r.folds.iter().map(|f| f.fold).collect::<Vec<_>>(), [1, 2]);
        let acc = &r.summary[0];
        assert_eq!(acc.metric, "accuracy");
        assert_eq!(acc.values, vec![1.0, 0.0]);
        let mal = r
            .summary
            .iter()
            .find(|s| s.metric == "malignancy_auc")
            .unwrap();
        assert_eq!(mal.values, vec![1.0, 0.0]);
        assert_eq!(r.pooled.images, 4);
        let html = html(&r, &[], "test");
        assert!(html.contains("2 of 5 folds finished"));
        assert!(html.contains("0.500 ± 0.707"), "{html}");
    }
}
