//! The losses in f32 on a device whose default float type is bf16, as a bf16 run computes
//! them (the logits cast up first): no tensor made inside them may take the device's bf16, and
//! each equals its formula computed on the host in f64. Its own process (one test): it claims
//! bf16 for the CPU device.

use birads_model::precision::claim;
use birads_model::Cpu;
use birads_train::losses::{
    feature_loss, ordinal_targets, smoothed_cross_entropy, soft_target_cross_entropy,
};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

/// log-softmax of one row.
fn log_softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().cloned().fold(f64::MIN, f64::max);
    let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
    z.iter().map(|v| v - max - sum.ln()).collect()
}

/// Cross-entropy of `rows` against the soft targets `q(y)`, averaged.
fn cross_entropy(rows: &[Vec<f64>], ys: &[usize], q: impl Fn(usize, usize) -> f64) -> f64 {
    let total: f64 = rows
        .iter()
        .zip(ys)
        .map(|(z, &y)| {
            let lp = log_softmax(z);
            -(0..z.len()).map(|c| q(y, c) * lp[c]).sum::<f64>()
        })
        .sum();
    total / rows.len() as f64
}

fn scalar(t: Tensor<Cpu, 1>) -> f64 {
    assert_eq!(t.dtype(), DType::F32, "the loss is f32");
    t.into_data().convert::<f64>().to_vec::<f64>().unwrap()[0]
}

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
        "{what}: {got} against {want}"
    );
}

#[test]
fn losses_of_f32_logits_stay_f32_on_a_bf16_device() {
    let device = Default::default();
    claim::<Cpu>(&device, FloatDType::BF16).unwrap();
    let (n, k, eps) = (5, 6, 0.1);
    let values: Vec<f32> = (0..n * 8)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0)
        .collect();
    let logits = |width: usize| {
        let v = values[..n * width].to_vec();
        Tensor::<Cpu, 2>::from_data(TensorData::new(v, [n, width]), (&device, DType::F32))
    };
    let rows = |width: usize| -> Vec<Vec<f64>> {
        values[..n * width]
            .chunks(width)
            .map(|r| r.iter().map(|&v| f64::from(v)).collect())
            .collect()
    };
    let ys: Vec<usize> = vec![0, 3, 5, 2, 1];
    let y = Tensor::<Cpu, 1, Int>::from_data(
        TensorData::new(ys.iter().map(|&v| v as i64).collect::<Vec<_>>(), [n]),
        &device,
    );

    let got = scalar(smoothed_cross_entropy(logits(k), y.clone(), eps));
    let smooth = |y: usize, c: usize| (if c == y { 1.0 - eps } else { 0.0 }) + eps / k as f64;
    close(got, cross_entropy(&rows(k), &ys, smooth), "smoothed");

    let table = ordinal_targets(k, eps);
    let got = scalar(soft_target_cross_entropy(logits(k), y, &table));
    let ordinal = |y: usize, c: usize| f64::from(table[y * k + c] as f32);
    close(got, cross_entropy(&rows(k), &ys, ordinal), "ordinal");

    // Four features: cross-entropy weighted per task, plus λ·(1 − mean soft F1).
    let flags: Vec<i64> = (0..n * 4).map(|i| (i * 5 % 3 == 0) as i64).collect();
    let targets = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(flags.clone(), [n, 4]), &device);
    let (weights, lambda) = ([1.0, 0.5, 2.0, 1.5], 0.3);
    let loss = feature_loss(logits(8), targets, weights, eps, lambda);
    let all = rows(8);
    let mut want = 0.0;
    let mut f1 = 0.0;
    for (t, w) in weights.iter().enumerate() {
        let z: Vec<Vec<f64>> = all.iter().map(|r| r[2 * t..2 * t + 2].to_vec()).collect();
        let yt: Vec<usize> = (0..n).map(|i| flags[i * 4 + t] as usize).collect();
        let two = |y: usize, c: usize| (if c == y { 1.0 - eps } else { 0.0 }) + eps / 2.0;
        want += w * cross_entropy(&z, &yt, two);
        let (mut tp, mut fp, mut fneg) = (0.0, 0.0, 0.0);
        for (r, &y) in z.iter().zip(&yt) {
            let p = log_softmax(r)[1].exp();
            let y = y as f64;
            (tp, fp, fneg) = (tp + p * y, fp + p * (1.0 - y), fneg + (1.0 - p) * y);
        }
        f1 += 2.0 * tp / (2.0 * tp + fp + fneg + 1e-7) / 4.0;
    }
    close(scalar(loss.total), want + lambda * (1.0 - f1), "features");
}
