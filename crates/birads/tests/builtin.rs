//! The built-in BI-RADS model through the binary: `predict` without weight flags, the
//! absence of a built-in feature model said out loud, `model info`, and real BI-RADS
//! probabilities on BUS-BRA images.

use std::path::{Path, PathBuf};
use std::process::Output;

mod support;
use support::{birads, busbra, text};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/builtin")
}

fn probabilities(csv_path: &Path) -> (Vec<String>, Vec<(String, Vec<f64>)>) {
    let mut rdr = csv::Reader::from_path(csv_path).unwrap();
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    let rows = rdr
        .records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[0].to_string(),
                r.iter().skip(1).map(|v| v.parse().unwrap()).collect(),
            )
        })
        .collect();
    (header, rows)
}

/// `birads predict` on the committed fixture folder into `out`, with `extra` flags.
fn predict_fixture(out: &Path, extra: &[&str]) -> Output {
    let (input, output) = (fixture(), out.to_str().unwrap().to_string());
    let mut args = vec![
        "predict",
        "--input",
        input.to_str().unwrap(),
        "--output",
        &output,
    ];
    args.extend_from_slice(extra);
    birads(&args)
}

#[test]
fn predict_without_weights_uses_the_builtin_model_and_says_features_are_missing() {
    let out = tempfile::tempdir().unwrap();
    let o = predict_fixture(out.path(), &["--probabilities"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("built-in model birads-busbra"), "{t}");
    assert!(t.contains("no built-in feature model"), "{t}");
    assert!(
        !out.path().join("fea_pre.csv").exists(),
        "features are never invented"
    );
    let mut rdr = csv::Reader::from_path(out.path().join("cla_pre.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0][0], "synthetic_lesion.jpg");
    let label: usize = rows[0][1].parse().unwrap();
    let (header, probs) = probabilities(&out.path().join("cla_prob.csv"));
    assert_eq!(
        header[1..],
        ["p_2", "p_3", "p_4", "p_5"],
        "BUS-BRA's categories"
    );
    let p = &probs[0].1;
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{p:?}");
    let best = (0..4).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
    assert_eq!(label, best, "the label is the most probable category");

    // The same with `--cla-weights builtin`, and the model described by `model info`.
    let again = tempfile::tempdir().unwrap();
    let o = predict_fixture(
        again.path(),
        &["--probabilities", "--cla-weights", "builtin"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(probabilities(&again.path().join("cla_prob.csv")).1, probs);
    let o = birads(&["model", "info"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("Built-in model birads-busbra") && t.contains("models/MODEL_CARD.md"),
        "{t}"
    );
    // There is no built-in feature model: asking for one is a clear error.
    let o = predict_fixture(again.path(), &["--fea-weights", "builtin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("not a lesion-feature model"),
        "{}",
        text(&o)
    );
}

/// Real BI-RADS probabilities: on every tenth BUS-BRA image, P(4) + P(5) ranks malignant
/// lesions above benign ones. These images were in the model's training data, so this checks
/// that the trained weights and their preprocessing arrived intact, not how well the model
/// generalises (the card's cross-validated figures say that).
#[test]
fn builtin_probabilities_rank_malignant_busbra_lesions_higher() {
    let busbra = busbra();
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let mut rdr = csv::Reader::from_path(busbra.join("labels.csv")).unwrap();
    let mut malignant = std::collections::HashMap::new();
    for (i, r) in rdr.records().enumerate() {
        let r = r.unwrap();
        if i % 10 == 0 {
            let src = busbra.join(&r[1]);
            let name = src.file_name().unwrap().to_owned();
            std::os::unix::fs::symlink(&src, images.join(&name)).unwrap();
            malignant.insert(name.to_string_lossy().into_owned(), &r[6] == "malignant");
        }
    }
    let out = dir.path().join("out");
    let o = birads(&[
        "predict",
        "--input",
        images.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--probabilities",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let (_, probs) = probabilities(&out.join("cla_prob.csv"));
    assert_eq!(probs.len(), malignant.len());
    let positive: Vec<bool> = probs.iter().map(|(n, _)| malignant[n]).collect();
    let score: Vec<f64> = probs.iter().map(|(_, p)| p[2] + p[3]).collect();
    let auc = birads_infer::metrics::roc_auc(&positive, &score).unwrap();
    assert!(
        auc > 0.8,
        "malignancy AUC {auc:.3} on images the model was trained on"
    );
}
