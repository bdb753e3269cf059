//! Losses and learning-rate schedule against PyTorch (fixtures from
//! `scripts/make_train_fixtures.py`).

use birads_model::CpuTrain;
use birads_train::config::Schedule;
use birads_train::losses::{feature_loss, smoothed_cross_entropy};
use birads_train::schedule::learning_rate;
use burn::prelude::*;
use serde_json::Value;

type B = CpuTrain;

fn fixtures() -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/train_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn matrix(v: &Value) -> (Vec<f32>, usize, usize) {
    let rows = v.as_array().unwrap();
    let cols = rows[0].as_array().unwrap().len();
    let data = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    (data, rows.len(), cols)
}

fn ints(v: &Value) -> Vec<i64> {
    match v.as_array().unwrap()[0] {
        Value::Array(_) => v
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
            .collect(),
        _ => v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect(),
    }
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs PyTorch {w}");
    }
}

#[test]
fn label_smoothed_cross_entropy_equals_pytorch() {
    let device = Default::default();
    for case in fixtures()["cross_entropy"].as_array().unwrap() {
        let (z, n, c) = matrix(&case["logits"]);
        let logits = Tensor::<B, 2>::from_data(TensorData::new(z, [n, c]), &device).require_grad();
        let y =
            Tensor::<B, 1, Int>::from_data(TensorData::new(ints(&case["targets"]), [n]), &device);
        let loss = smoothed_cross_entropy(logits.clone(), y, case["smoothing"].as_f64().unwrap());
        let value: f32 = loss.clone().into_scalar();
        assert_close(
            "loss",
            &[value],
            &[case["loss"].as_f64().unwrap() as f32],
            1e-5,
        );
        let grads = loss.backward();
        let g: Vec<f32> = logits.grad(&grads).unwrap().into_data().to_vec().unwrap();
        assert_close("gradient", &g, &matrix(&case["grad"]).0, 1e-6);
    }
}

#[test]
fn feature_loss_with_soft_f1_equals_pytorch() {
    let device = Default::default();
    for case in fixtures()["feature_loss"].as_array().unwrap() {
        let (z, n, c) = matrix(&case["logits"]);
        let logits = Tensor::<B, 2>::from_data(TensorData::new(z, [n, c]), &device).require_grad();
        let y = Tensor::<B, 2, Int>::from_data(
            TensorData::new(ints(&case["targets"]), [n, 4]),
            &device,
        );
        let l = feature_loss(
            logits.clone(),
            y,
            [1.2, 1.5, 1.0, 1.0],
            case["smoothing"].as_f64().unwrap(),
            case["f1_weight"].as_f64().unwrap(),
        );
        let value: f32 = l.total.clone().into_scalar();
        assert_close(
            "loss",
            &[value],
            &[case["loss"].as_f64().unwrap() as f32],
            2e-5,
        );
        let grads = l.total.backward();
        let g: Vec<f32> = logits.grad(&grads).unwrap().into_data().to_vec().unwrap();
        assert_close("gradient", &g, &matrix(&case["grad"]).0, 1e-6);
    }
}

#[test]
fn cosine_warm_restarts_equal_pytorch_step_by_step() {
    for case in fixtures()["schedule"].as_array().unwrap() {
        let s = Schedule {
            t0: case["t0"].as_u64().unwrap(),
            t_mult: case["t_mult"].as_u64().unwrap(),
            eta_min: case["eta_min"].as_f64().unwrap(),
            per_batch: false,
        };
        let base = case["base"].as_f64().unwrap();
        for (e, want) in case["per_epoch"].as_array().unwrap().iter().enumerate() {
            let got = learning_rate(&s, base, e as f64);
            let want = want.as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-12 + 1e-9 * want,
                "T0 {} epoch {e}: {got} vs {want}",
                s.t0
            );
        }
        for pair in case["fractional"].as_array().unwrap() {
            let (e, want) = (pair[0].as_f64().unwrap(), pair[1].as_f64().unwrap());
            let got = learning_rate(&s, base, e);
            assert!(
                (got - want).abs() <= 1e-12 + 1e-9 * want,
                "T0 {} epoch {e}: {got} vs {want}",
                s.t0
            );
        }
    }
}
