//! Per-epoch records: `metrics.csv`, learning curves and the validation confusion matrix.

use std::path::Path;

use birads_data::atomic::write_atomic;
use birads_infer::report::{render, DrawResult, FONT};
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

/// One named line of a panel: `(epoch, value)` points.
type Line<'a> = (&'a str, Vec<(f64, f64)>);

type Panel<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Loss, accuracy/F1 and learning-rate curves in one PNG.
pub fn plot_curves(path: &Path, history: &[EpochRecord]) -> Result<(), String> {
    if history.is_empty() {
        return Ok(());
    }
    let pts = |f: &dyn Fn(&EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .iter()
            .filter_map(|r| Some((r.epoch as f64, f(r)?)))
            .collect()
    };
    let loss = vec![
        ("train", pts(&|r| Some(r.train_loss))),
        ("validation", pts(&|r| r.val_loss)),
    ];
    let scores = vec![
        ("train accuracy", pts(&|r| Some(r.train_accuracy))),
        ("val accuracy", pts(&|r| r.val_accuracy)),
        ("val F1", pts(&|r| r.val_f1)),
        ("val score", pts(&|r| r.val_score)),
        ("val AUC", pts(&|r| r.val_auc)),
        ("val malignancy AUC", pts(&|r| r.val_malignancy_auc)),
    ];
    let lr = vec![("lr", pts(&|r| Some(r.lr)))];
    let epochs = history.len() as f64 + 0.5;
    let png = render(1200, 400, |root| {
        let panels = root.split_evenly((1, 3));
        draw_panel(&panels[0], "loss", loss, epochs)?;
        draw_panel(&panels[1], "accuracy / F1", scores, epochs)?;
        draw_panel(&panels[2], "learning rate", lr, epochs)
    })?;
    write_atomic(path, &png).map_err(|e| e.to_string())
}

/// The value axis of a panel: every finite point with a margin, widened where all values are
/// equal; `None` when there is nothing finite to draw.
fn value_range(lines: &[Line]) -> Option<std::ops::Range<f64>> {
    let mut values = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .filter(|v| v.is_finite());
    let first = values.next()?;
    let (mut lo, mut hi) = values.fold((first, first), |(a, b), v| (a.min(v), b.max(v)));
    if hi - lo < 1e-9 {
        hi += 0.5 * hi.abs().max(1e-3);
        lo -= 0.5 * lo.abs().max(1e-3);
    }
    let pad = (hi - lo) * 0.08;
    Some((lo - pad)..(hi + pad))
}

/// One panel: its lines (with a dot per epoch) over epochs 1..=`epochs`, and a legend.
fn draw_panel(panel: &Panel, title: &str, lines: Vec<Line>, epochs: f64) -> DrawResult {
    let Some(range) = value_range(&lines) else {
        return Ok(());
    };
    let font = (FONT, 14);
    let mut chart = ChartBuilder::on(panel)
        .caption(title, (FONT, 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(0.5f64..epochs, range)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .label_style(font)
        .draw()?;
    for (i, (name, pts)) in lines.into_iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
    }
    chart
        .configure_series_labels()
        .label_font(font)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: u64, val_loss: Option<f64>) -> EpochRecord {
        EpochRecord {
            epoch,
            lr: 1e-4 / epoch as f64,
            train_loss: 2.0 / epoch as f64,
            train_accuracy: 0.2 * epoch as f64,
            val_loss,
            val_accuracy: val_loss.map(|_| 0.5),
            val_f1: None,
            val_score: None,
            val_task_accuracy: None,
            val_task_f1: None,
            val_auc: None,
            val_malignancy_auc: None,
            seconds: 1.0,
            images_per_second: 10.0,
            data_wait_seconds: 0.0,
            skipped_batches: 0,
        }
    }

    #[test]
    fn value_range_pads_and_widens_flat_lines() {
        let r = value_range(&[("a", vec![(1.0, 1.0), (2.0, 3.0)])]).unwrap();
        assert!((r.start - (1.0 - 0.16)).abs() < 1e-12 && (r.end - (3.0 + 0.16)).abs() < 1e-12);
        let flat = value_range(&[("a", vec![(1.0, 0.5), (2.0, 0.5)])]).unwrap();
        assert!(flat.start < 0.5 && flat.end > 0.5, "{flat:?}");
        assert!(value_range(&[("a", vec![])]).is_none());
        assert!(value_range(&[("a", vec![(1.0, f64::NAN)])]).is_none());
        let r = value_range(&[("a", vec![(1.0, f64::INFINITY), (2.0, 2.0), (3.0, 4.0)])]).unwrap();
        assert!(
            r.start > 1.0 && r.end < 5.0,
            "non-finite values are left out: {r:?}"
        );
    }

    /// Three panels with curves and text, also without validation (no font was registered by
    /// a confusion matrix first).
    #[test]
    fn curves_are_a_png_with_three_drawn_panels() {
        let dir = tempfile::tempdir().unwrap();
        for val in [None, Some(1.0)] {
            let history: Vec<_> = (1..=3)
                .map(|e| record(e, val.map(|v| v / e as f64)))
                .collect();
            let path = dir.path().join("curves.png");
            plot_curves(&path, &history).unwrap();
            let img = image::open(&path).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (1200, 400));
            for panel in 0..3 {
                let inked = img
                    .enumerate_pixels()
                    .filter(|(x, _, p)| *x / 400 == panel && p.0 != [255, 255, 255])
                    .count();
                assert!(inked > 2000, "panel {panel}: {inked} non-white pixels");
            }
        }
        let empty = dir.path().join("none.png");
        plot_curves(&empty, &[]).unwrap();
        assert!(!empty.exists());
    }
}
