//! The fusion model: its solver against scikit-learn (fixture written by
//! scripts/make_fusion_fixture.py), its calibration, and its file.

use std::path::Path;

use birads_infer::fusion::{
    fit_fusion, fit_logistic, raw_inputs, scores, standardiser, FusionError, FusionModel, Row,
    Scores,
};
use serde_json::Value;

fn fixture() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fusion/sklearn.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn rows_of(v: &Value) -> Vec<Row> {
    let p = v["class_probabilities"].as_array().unwrap();
    let q = v["descriptors"].as_array().unwrap();
    let y = v["labels"].as_array().unwrap();
    (0..p.len())
        .map(|i| Row {
            class_probabilities: floats(&p[i]).iter().map(|&x| x as f32).collect(),
            descriptors: std::array::from_fn(|j| floats(&q[i])[j] as f32),
            label: y[i].as_u64().unwrap() as usize,
            group: format!("patient{}", i / 2),
        })
        .collect()
}

fn close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "{what}[{i}]: {x} vs {y}");
    }
}

#[test]
fn the_solver_equals_scikit_learn_logistic_regression() {
    let f = fixture();
    let rows = rows_of(&f);
    let raw: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| raw_inputs(&r.class_probabilities, &r.descriptors))
        .collect();
    let (mean, scale) = standardiser(&raw);
    close(&mean, &floats(&f["mean"]), 1e-9, "mean");
    close(&scale, &floats(&f["scale"]), 1e-9, "scale");
    let x: Vec<Vec<f64>> = raw
        .iter()
        .map(|r| {
            r.iter()
                .zip(&mean)
                .zip(&scale)
                .map(|((v, m), s)| (v - m) / s)
                .collect()
        })
        .collect();
    let y: Vec<usize> = rows.iter().map(|r| r.label).collect();
    let m = fit_logistic(&x, &y, 4, f["c"].as_f64().unwrap());
    for (k, row) in f["coef"].as_array().unwrap().iter().enumerate() {
        close(&m.coef[k], &floats(row), 1e-4, &format!("coef[{k}]"));
    }
    close(&m.intercept, &floats(&f["intercept"]), 1e-4, "intercept");
    for (i, p) in f["probabilities"].as_array().unwrap().iter().enumerate() {
        close(
            &m.probabilities(&x[i]),
            &floats(p),
            1e-4,
            &format!("p[{i}]"),
        );
    }
}

/// A small deterministic generator (the test must not depend on a random crate's stream).
struct Lcg(u64);
impl Lcg {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (-2.0 * self.uniform().ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }
}

/// Images whose label follows a known logistic model of the inputs.
fn well_specified(n: usize, seed: u64) -> Vec<Row> {
    let mut g = Lcg(seed);
    (0..n)
        .map(|i| {
            let z: Vec<f64> = (0..3).map(|_| g.normal()).collect();
            let e: Vec<f64> = z.iter().map(|v| v.exp()).collect();
            let s: f64 = e.iter().sum();
            let p: Vec<f32> = e.iter().map(|v| (v / s) as f32).collect();
            let q: [f32; 4] = std::array::from_fn(|_| (1.0 / (1.0 + (-g.normal()).exp())) as f32);
            let raw = raw_inputs(&p, &q);
            let true_logits = [
                0.0,
                1.2 * raw[1] - 0.8 * raw[3],
                1.5 * raw[2] + raw[4] + 0.7 * raw[6],
            ];
            let m = true_logits.iter().cloned().fold(f64::MIN, f64::max);
            let w: Vec<f64> = true_logits.iter().map(|v| (v - m).exp()).collect();
            let u = g.uniform() * w.iter().sum::<f64>();
            let (mut acc, mut label) = (0.0, 2);
            for (k, v) in w.iter().enumerate() {
                acc += v;
                if u < acc {
                    label = k;
                    break;
                }
            }
            Row {
                class_probabilities: p,
                descriptors: q,
                label,
                group: format!("g{i}"),
            }
        })
        .collect()
}

#[test]
fn the_fitted_fusion_is_calibrated() {
    let rows = well_specified(4000, 7);
    let (fit, held) = rows.split_at(3000);
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let m = fit_fusion(
        names(&["a", "b", "c"]),
        names(&["a", "b", "c"]),
        fit,
        held,
        vec![],
    )
    .unwrap();
    // Calibration in the large: free intercepts make the fitted probabilities of each class
    // sum to its count on the fitting data.
    for k in 0..3 {
        let expected = fit.iter().filter(|r| r.label == k).count() as f64;
        let got: f64 = fit
            .iter()
            .map(|r| m.probabilities(&r.class_probabilities, &r.descriptors)[k])
            .sum();
        assert!(
            (got - expected).abs() < 1e-6,
            "class {k}: {got} vs {expected}"
        );
    }
    let fused = m.report.held_out_fused.as_ref().unwrap();
    let image = m.report.held_out_image.as_ref().unwrap();
    assert_eq!(fused.images, 1000);
    assert!(fused.ece < 0.04, "held-out ECE {}", fused.ece);
    // The labels depend on the descriptors: fusing them must beat the image model alone.
    assert!(
        fused.log_loss < image.log_loss - 0.1,
        "{fused:?} vs {image:?}"
    );
    assert!(fused.accuracy > image.accuracy, "{fused:?} vs {image:?}");
    // C was chosen by cross-validation from the grid, the fitted one is the chosen one.
    assert_eq!(
        m.report.cv_log_loss.len(),
        birads_infer::fusion::C_GRID.len()
    );
    let best = m
        .report
        .cv_log_loss
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert_eq!(best.0, m.c);
}

#[test]
fn the_file_round_trips_and_refuses_what_it_is_not() {
    let rows = rows_of(&fixture());
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let classes = names(&["2", "3", "4", "5"]);
    let m = fit_fusion(
        classes.clone(),
        classes.clone(),
        &rows[..200],
        &rows[200..],
        vec!["x".into()],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fusion.json");
    m.save(&path).unwrap();
    let back = FusionModel::load(&path).unwrap();
    // JSON keeps every number to within an ulp or so.
    assert_eq!(
        (&back.classes, &back.image_classes, back.c),
        (&m.classes, &m.image_classes, m.c)
    );
    assert_eq!(back.report.cv_log_loss.len(), m.report.cv_log_loss.len());
    for r in &rows {
        let (a, b) = (
            back.probabilities(&r.class_probabilities, &r.descriptors),
            m.probabilities(&r.class_probabilities, &r.descriptors),
        );
        close(&a, &b, 1e-12, "reloaded");
    }
    assert!(back.check_image_classes(&classes).is_ok());
    let six = names(&["2", "3", "4A", "4B", "4C", "5"]);
    assert!(matches!(
        back.check_image_classes(&six),
        Err(FusionError::Classes { .. })
    ));
    std::fs::write(&path, "{\"format\": \"something\"}").unwrap();
    let e = FusionModel::load(&path).unwrap_err().to_string();
    assert!(e.contains("not a birads fusion model"), "{e}");
    let mut broken = serde_json::to_value(&m).unwrap();
    broken["mean"] = serde_json::json!([0.0]);
    std::fs::write(&path, broken.to_string()).unwrap();
    let e = FusionModel::load(&path).unwrap_err().to_string();
    assert!(e.contains("inconsistent sizes"), "{e}");
    assert!(fit_fusion(classes.clone(), classes, &rows[..5], &[], vec![]).is_err());
}

/// Held-out images of one class, all predicted as it, have no κ (scikit-learn: NaN). The
/// scores keep it absent, so a fusion file that carries them reads back (a NaN would be
/// written as `null` and fail to parse as a number).
#[test]
fn undefined_kappa_is_absent_and_the_scores_read_back() {
    let probs = vec![vec![0.8, 0.1, 0.1]; 4];
    let s = scores(&probs, &[0, 0, 0, 0], 3);
    assert_eq!(s.accuracy, 1.0);
    assert_eq!(s.quadratic_kappa, None);
    let back: Scores = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    let mixed = scores(&probs, &[0, 1, 2, 0], 3);
    assert!(mixed.quadratic_kappa.is_some_and(f64::is_finite));
}
