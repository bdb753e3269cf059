//! Per-epoch records: `metrics.csv`, learning curves and the validation confusion matrix.

use std::path::Path;

use birads_data::atomic::write_atomic;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// One completed epoch. Task-specific columns are `None` where they do not apply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: u64,
    pub lr: f64,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: Option<f64>,
    /// BI-RADS: accuracy; features: mean accuracy over the four tasks.
    pub val_accuracy: Option<f64>,
    /// BI-RADS: macro-F1; features: mean F1.
    pub val_f1: Option<f64>,
    pub val_score: Option<f64>,
    /// Features: per-task validation accuracy and F1 (boundary, calcification, direction, shape).
    pub val_task_accuracy: Option<[f64; 4]>,
    pub val_task_f1: Option<[f64; 4]>,
    /// BI-RADS: macro one-vs-rest AUC; features: mean AUC over the four tasks.
    #[serde(default)]
    pub val_auc: Option<f64>,
    /// BI-RADS: malignancy AUC (P(4) + P(5) against pathology) where validation images have it.
    #[serde(default)]
    pub val_malignancy_auc: Option<f64>,
    pub seconds: f64,
    pub images_per_second: f64,
    /// Seconds of the training pass spent waiting for the loader's next batch (the rest is
    /// the steps themselves): how far decoding and augmentation keep up with the device.
    #[serde(default)]
    pub data_wait_seconds: f64,
    /// Batches skipped for a non-finite loss (policy `skip`).
    pub skipped_batches: u64,
}

const HEADER: [&str; 22] = [
    "epoch",
    "lr",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "val_f1",
    "val_score",
    "val_acc_boundary",
    "val_acc_calcification",
    "val_acc_direction",
    "val_acc_shape",
    "val_f1_boundary",
    "val_f1_calcification",
    "val_f1_direction",
    "val_f1_shape",
    "seconds",
    "images_per_second",
    "skipped_batches",
    "val_auc",
    "val_malignancy_auc",
    "data_wait_seconds",
];

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.6}")).unwrap_or_default()
}

/// Rewrite `metrics.csv` (atomically) from the whole history.
pub fn write_csv(path: &Path, history: &[EpochRecord]) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(HEADER)?;
    for r in history {
        let ta = r
            .val_task_accuracy
            .map(|a| a.map(Some))
            .unwrap_or([None; 4]);
        let tf = r.val_task_f1.map(|a| a.map(Some)).unwrap_or([None; 4]);
        let mut row = vec![
            r.epoch.to_string(),
            format!("{:.8}", r.lr),
            format!("{:.6}", r.train_loss),
            format!("{:.6}", r.train_accuracy),
            opt(r.val_loss),
            opt(r.val_accuracy),
            opt(r.val_f1),
            opt(r.val_score),
        ];
        row.extend(ta.iter().map(|v| opt(*v)));
        row.extend(tf.iter().map(|v| opt(*v)));
        row.push(format!("{:.2}", r.seconds));
        row.push(format!("{:.2}", r.images_per_second));
        row.push(r.skipped_batches.to_string());
        row.push(opt(r.val_auc));
        row.push(opt(r.val_malignancy_auc));
        row.push(format!("{:.3}", r.data_wait_seconds));
        w.write_record(&row)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Loss, accuracy/F1 and learning-rate curves in one PNG.
pub fn plot_curves(path: &Path, history: &[EpochRecord]) -> Result<(), String> {
    if history.is_empty() {
        return Ok(());
    }
    let (w, h) = (1200u32, 400u32);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let panels = root.split_evenly((1, 3));
        let last = history.len() as f64 + 0.5;
        let font = ("sans-serif", 14);
        let series = |panel: &DrawingArea<BitMapBackend, _>,
                      title: &str,
                      lines: Vec<(&str, Vec<(f64, f64)>)>,
                      log: bool|
         -> Result<(), String> {
            let all: Vec<f64> = lines
                .iter()
                .flat_map(|(_, p)| p.iter().map(|q| q.1))
                .collect();
            let (mut lo, mut hi) = all
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            if !(lo.is_finite() && hi.is_finite()) {
                return Ok(());
            }
            if hi - lo < 1e-9 {
                hi += 0.5 * hi.abs().max(1e-3);
                lo -= 0.5 * lo.abs().max(1e-3);
            }
            let pad = (hi - lo) * 0.08;
            let _ = log;
            let mut chart = ChartBuilder::on(panel)
                .caption(title, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(55)
                .build_cartesian_2d(0.5f64..last, (lo - pad)..(hi + pad))
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .label_style(font)
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, (name, pts)) in lines.into_iter().enumerate() {
                let colour = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(name)
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2))
                    });
                chart
                    .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
                    .map_err(|e| e.to_string())?;
            }
            chart
                .configure_series_labels()
                .label_font(font)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK.mix(0.3))
                .draw()
                .map_err(|e| e.to_string())?;
            Ok(())
        };
        let pts = |f: &dyn Fn(&EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
            history
                .iter()
                .filter_map(|r| Some((r.epoch as f64, f(r)?)))
                .collect()
        };
        series(
            &panels[0],
            "loss",
            vec![
                ("train", pts(&|r| Some(r.train_loss))),
                ("validation", pts(&|r| r.val_loss)),
            ],
            false,
        )?;
        series(
            &panels[1],
            "accuracy / F1",
            vec![
                ("train accuracy", pts(&|r| Some(r.train_accuracy))),
                ("val accuracy", pts(&|r| r.val_accuracy)),
                ("val F1", pts(&|r| r.val_f1)),
                ("val score", pts(&|r| r.val_score)),
                ("val AUC", pts(&|r| r.val_auc)),
                ("val malignancy AUC", pts(&|r| r.val_malignancy_auc)),
            ],
            false,
        )?;
        series(
            &panels[2],
            "learning rate",
            vec![("lr", pts(&|r| Some(r.lr)))],
            false,
        )?;
        root.present().map_err(|e| e.to_string())?;
    }
    let img = image::RgbImage::from_raw(w, h, rgb).ok_or("buffer")?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    write_atomic(path, &png).map_err(|e| e.to_string())
}
