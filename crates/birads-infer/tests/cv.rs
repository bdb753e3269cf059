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
    close("quadratic_kappa", got.quadratic_kappa);
    close("auc_macro", got.auc_macro.unwrap());
    close("malignancy_auc", got.malignancy_auc.unwrap());
    close("radiologist_auc", got.radiologist_auc.unwrap());
}
