//! `birads eval` metrics against scikit-learn on the same CSVs
//! (fixtures from `scripts/make_eval_fixtures.py`).

use std::path::{Path, PathBuf};

use birads_infer::eval::{evaluate, Predictions, Truth};
use serde_json::Value;

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/eval")
        .join(name)
}

fn expected(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(case(name).join("expected.json")).unwrap())
        .unwrap()
}

#[track_caller]
fn close(what: &str, got: f64, want: &Value) {
    let want = want
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: no expected value"));
    assert!(
        (got - want).abs() < 1e-9,
        "{what}: birads {got} vs scikit-learn {want}"
    );
}

fn check(name: &str, pred_files: &[&str]) {
    let dir = case(name);
    let want = expected(name);
    let pred =
        Predictions::read(&pred_files.iter().map(|f| dir.join(f)).collect::<Vec<_>>()).unwrap();
    let truth = Truth::read(&[dir.join("cla_gt.csv"), dir.join("fea_gt.csv")]).unwrap();
    let ev = evaluate(&pred, &truth);
    assert!(ev.problems.is_empty(), "{:?}", ev.problems);
    assert!(ev.missing_predictions.is_empty());

    let c = ev.classification.as_ref().unwrap();
    let w = &want["classification"];
    assert_eq!(c.images as u64, w["images"].as_u64().unwrap());
    close("accuracy", c.accuracy, &w["accuracy"]);
    close("macro-F1", c.macro_f1, &w["macro_f1"]);
    close("QWK", c.quadratic_kappa, &w["quadratic_kappa"]);
    for (k, s) in c.per_class.iter().enumerate() {
        close(&format!("precision {k}"), s.precision, &w["precision"][k]);
        close(&format!("recall {k}"), s.recall, &w["recall"][k]);
        close(&format!("F1 {k}"), s.f1, &w["f1"][k]);
        assert_eq!(s.support, w["support"][k].as_u64().unwrap());
    }
    let conf: Vec<Vec<u64>> = serde_json::from_value(w["confusion"].clone()).unwrap();
    assert_eq!(c.confusion, conf);
    let auc = c.auc_per_class.as_ref().unwrap();
    for (k, a) in auc.iter().enumerate() {
        match a {
            Some(a) => close(&format!("AUC {k}"), *a, &w["auc_per_class"][k]),
            None => assert!(w["auc_per_class"][k].is_null(), "AUC {k} should be defined"),
        }
    }
    close("macro AUC", c.auc_macro.unwrap(), &w["auc_macro"]);
    if let Some(ovr) = w.get("auc_macro_sklearn_ovr") {
        close("roc_auc_score(multi_class=ovr)", c.auc_macro.unwrap(), ovr);
    }
    close("ECE", c.ece.unwrap(), &w["ece"]);

    let f = ev.features.as_ref().unwrap();
    let wf = &want["features"];
    close("mean accuracy", f.mean_accuracy, &wf["mean_accuracy"]);
    close("mean F1", f.mean_f1, &wf["mean_f1"]);
    for (j, x) in f.features.iter().enumerate() {
        let w = &wf["features"][j];
        assert_eq!(x.name, w["name"].as_str().unwrap());
        assert_eq!(x.images as u64, w["images"].as_u64().unwrap(), "{}", x.name);
        close(&format!("{} accuracy", x.name), x.accuracy, &w["accuracy"]);
        close(
            &format!("{} precision", x.name),
            x.precision,
            &w["precision"],
        );
        close(&format!("{} recall", x.name), x.recall, &w["recall"]);
        close(&format!("{} F1", x.name), x.f1, &w["f1"]);
        close(&format!("{} AUC", x.name), x.auc.unwrap(), &w["auc"]);
        close(&format!("{} ECE", x.name), x.ece.unwrap(), &w["ece"]);
        let conf: Vec<Vec<u64>> = serde_json::from_value(w["confusion"].clone()).unwrap();
        assert_eq!(x.confusion, conf, "{}", x.name);
    }
    let wc = &want["competition"];
    close(
        "score cls",
        ev.competition.classification.unwrap(),
        &wc["classification"],
    );
    close(
        "score fea",
        ev.competition.features.unwrap(),
        &wc["features"],
    );
    close(
        "score overall",
        ev.competition.overall.unwrap(),
        &wc["overall"],
    );
}

#[test]
fn metrics_equal_scikit_learn_with_all_classes() {
    check(
        "mixed",
        &["cla_pre.csv", "cla_prob.csv", "fea_pre.csv", "fea_prob.csv"],
    );
}

#[test]
fn metrics_equal_scikit_learn_with_absent_classes_and_unlabelled_cells() {
    check(
        "sparse",
        &["cla_pre.csv", "cla_prob.csv", "fea_pre.csv", "fea_prob.csv"],
    );
}

#[test]
fn labels_follow_from_probabilities_alone() {
    // Only the probability files: labels are derived (argmax / p > 0.5) as predict derives them.
    check("mixed", &["cla_prob.csv", "fea_prob.csv"]);
}

#[test]
fn missing_and_malformed_rows_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let src = case("mixed");
    let pre = std::fs::read_to_string(src.join("cla_pre.csv")).unwrap();
    let mut lines: Vec<&str> = pre.lines().collect();
    lines.remove(5); // one image without a prediction
    lines.push("extra.jpg,2"); // a prediction without truth
    lines.push("bad.jpg,9"); // out of range
    std::fs::write(dir.path().join("cla_pre.csv"), lines.join("\n")).unwrap();
    let pred = Predictions::read(&[dir.path().join("cla_pre.csv")]).unwrap();
    let truth = Truth::read(&[src.join("cla_gt.csv")]).unwrap();
    let ev = evaluate(&pred, &truth);
    assert_eq!(ev.missing_predictions.len(), 1);
    assert_eq!(ev.unlabelled_predictions, 1);
    assert!(ev
        .problems
        .iter()
        .any(|p| p.item.ends_with(":8") || p.reason.contains("0..5")));
    let c = ev.classification.unwrap();
    assert_eq!(c.images, 239);
    assert!(c.auc_per_class.is_none(), "no probabilities were given");
    assert!(ev.features.is_none());

    // A file that is no prediction CSV is a clear error, not an empty evaluation.
    std::fs::write(dir.path().join("x.csv"), "a,b\n1,2\n").unwrap();
    let err = Predictions::read(&[dir.path().join("x.csv")]).unwrap_err();
    assert!(err.to_string().contains("not a prediction CSV"), "{err}");
}

#[test]
fn report_is_self_contained_html_with_plots() {
    let src = case("mixed");
    let pred = Predictions::read(std::slice::from_ref(&src)).unwrap();
    let truth = Truth::read(&[src.join("cla_gt.csv"), src.join("fea_gt.csv")]).unwrap();
    let ev = evaluate(&pred, &truth);
    let out = tempfile::tempdir().unwrap();
    let files = birads_infer::report::write_report(&ev, out.path(), "test").unwrap();
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert_eq!(html.matches("data:image/png;base64,").count(), 9);
    for f in files.iter().filter(|f| f.extension().unwrap() == "png") {
        let img = image::open(f).unwrap().to_rgb8();
        // A plot, not a blank canvas: a good share of non-white pixels.
        let inked = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        assert!(inked > img.len() / 3 / 50, "{} looks empty", f.display());
    }
    let json: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("eval.json")).unwrap()).unwrap();
    assert!(json["classification"]["accuracy"].as_f64().unwrap() > 0.3);
}
