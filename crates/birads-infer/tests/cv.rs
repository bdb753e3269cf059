//! Cross-validation metrics against scikit-learn (fixture from `scripts/make_cv_fixtures.py`).

use std::path::PathBuf;

use birads_infer::cv::{fold_metrics, TestPrediction};
use serde_json::Value;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cv")
}

#[test]
fn malignancy_and_birads_metrics_equal_scikit_learn() {
    let classes: Vec<String> = ["2", "3", "4", "5"].iter().map(|s| s.to_string()).collect();
    let mut rdr = csv::Reader::from_path(fixture().join("predictions.csv")).unwrap();
    let preds: Vec<TestPrediction> = rdr
        .records()
        .enumerate()
        .map(|(i, r)| {
            let r = r.unwrap();
            TestPrediction {
                id: format!("row{i}"),
                image: String::new(),
                truth: classes.iter().position(|c| c == &r[0]).unwrap(),
                malignant: birads_data::manifest::parse_pathology(&r[1]).unwrap(),
                probabilities: (2..6).map(|k| r[k].parse().unwrap()).collect(),
            }
        })
        .collect();
    let want: Value =
        serde_json::from_slice(&std::fs::read(fixture().join("expected.json")).unwrap()).unwrap();
    let got = fold_metrics(&classes, &preds);
    assert_eq!(got.images as u64, want["images"].as_u64().unwrap());
    assert_eq!(
        got.with_pathology as u64,
        want["with_pathology"].as_u64().unwrap()
    );
    let close = |name: &str, v: f64| {
        let w = want[name].as_f64().unwrap();
        // The probabilities are multiples of 1/64: exact in f32 and in sums, so ties match.
        assert!((v - w).abs() < 1e-6, "{name}: {v} vs scikit-learn {w}");
    };
    close("accuracy", got.accuracy);
    close("macro_f1", got.macro_f1);
    close("quadratic_kappa", got.quadratic_kappa.unwrap());
    close("auc_macro", got.auc_macro.unwrap());
    close("malignancy_auc", got.malignancy_auc.unwrap());
    close("radiologist_auc", got.radiologist_auc.unwrap());
}

/// A fold whose test images are all one class, predicted as that class, has no κ (scikit-learn
/// gives NaN): it is absent rather than NaN, so `result.json` reads back (a NaN would be
/// written as `null` and fail to parse as a number), and the summary leaves it out.
#[test]
fn undefined_kappa_is_absent_and_the_fold_result_reads_back() {
    use birads_infer::cv::{summarise, FoldResult};
    let classes: Vec<String> = ["2", "3", "4", "5"].iter().map(|s| s.to_string()).collect();
    let preds: Vec<TestPrediction> = (0..6)
        .map(|i| TestPrediction {
            id: format!("img{i}"),
            image: String::new(),
            truth: 0,
            malignant: Some(i == 5),
            probabilities: vec![0.7, 0.1, 0.1 + 0.01 * i as f32, 0.1],
        })
        .collect();
    let m = fold_metrics(&classes, &preds);
    assert_eq!(m.accuracy, 1.0);
    assert_eq!(m.quadratic_kappa, None);
    assert_eq!(m.malignancy_auc, Some(1.0));
    let fold = FoldResult {
        fold: 1,
        train_images: 10,
        val_images: 2,
        test_images: preds.len(),
        best_epoch: Some(1),
        epochs: 1,
        train_seconds: 0.5,
        metrics: m,
        predictions: preds,
    };
    let json = serde_json::to_string(&fold).unwrap();
    let back: FoldResult = serde_json::from_str(&json).unwrap();
    assert_eq!(back, fold);
    let r = summarise(classes, 1, vec![back]);
    let names: Vec<&str> = r.summary.iter().map(|s| s.metric.as_str()).collect();
    assert!(
        names.contains(&"accuracy") && !names.contains(&"quadratic_kappa"),
        "{names:?}"
    );
}
