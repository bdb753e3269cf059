//! The recipe's losses, with PyTorch's definitions (checked against PyTorch fixtures).

use birads_model::amp::in_dtype;
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};

/// `nn.CrossEntropyLoss(label_smoothing=ε)` with mean reduction:
/// `(1−ε)·NLL(y) + ε·mean_c(−log p_c)` per sample, averaged over the batch.
pub fn smoothed_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    smoothing: f64,
) -> Tensor<B, 1> {
    let [n, c] = logits.dims();
    let logp = log_softmax(logits, 1);
    let nll = logp
        .clone()
        .gather(1, targets.reshape([n, 1]))
        .neg()
        .reshape([n]);
    let uniform = logp.sum_dim(1).neg().reshape([n]) / c as f64;
    (nll * (1.0 - smoothing) + uniform * smoothing).mean()
}

/// Targets of ordinal label smoothing for `k` ordered classes: `1 − ε` on the true class and
/// `ε` spread over the others in proportion to `2^−|c − y|`, so that a neighbouring category
/// gets more than a distant one (BI-RADS 3 is nearer 2 than 5 is). Row `y` is the target of
/// class `y`.
pub fn ordinal_targets(k: usize, smoothing: f64) -> Vec<f64> {
    let mut m = vec![0.0; k * k];
    for y in 0..k {
        let w: Vec<f64> = (0..k)
            .map(|c| {
                if c == y {
                    0.0
                } else {
                    0.5f64.powi((c as i32 - y as i32).abs())
                }
            })
            .collect();
        let total: f64 = w.iter().sum();
        for c in 0..k {
            m[y * k + c] = if c == y {
                1.0 - if total > 0.0 { smoothing } else { 0.0 }
            } else {
                smoothing * w[c] / total
            };
        }
    }
    m
}

/// Cross-entropy against soft targets: row `y` of `table` (`[k, k]`, see [`ordinal_targets`])
/// for a sample of class `y`; `−Σ_c q_c log p_c`, averaged over the batch.
pub fn soft_target_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    table: &[f64],
) -> Tensor<B, 1> {
    let [n, k] = logits.dims();
    let device = logits.device();
    // In the logits' type, which need not be the device's default (the f32 loss of a bf16
    // model).
    let t = Tensor::<B, 2>::from_data(
        TensorData::new(
            table.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
            [k, k],
        ),
        (&device, logits.dtype()),
    );
    let q = t.select(0, targets);
    let logp = log_softmax(logits, 1);
    (q * logp).sum_dim(1).neg().reshape([n]).mean()
}

/// Feature losses on logits `[N, 4·2]` (`(z₀, z₁)` per feature) and 0/1 targets `[N, 4]`:
/// `Σ_t w_t·CE_t` (label-smoothed) plus `λ·(1 − mean_t softF1_t)`, where the soft F1 of a
/// feature uses `p = P(finding)` over the batch: `TP = Σp·y`, `FP = Σp·(1−y)`,
/// `FN = Σ(1−p)·y`, `F1 = 2TP / (2TP + FP + FN + 1e-7)`.
pub struct FeatureLoss<B: Backend> {
    pub total: Tensor<B, 1>,
    pub cross_entropy: Tensor<B, 1>,
    pub soft_f1: Tensor<B, 1>,
}

pub fn feature_loss<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 2, Int>,
    task_weights: [f64; 4],
    smoothing: f64,
    f1_weight: f64,
) -> FeatureLoss<B> {
    let [n, _] = logits.dims();
    let mut ce: Option<Tensor<B, 1>> = None;
    let mut f1_sum: Option<Tensor<B, 1>> = None;
    for (t, &w) in task_weights.iter().enumerate() {
        let z = logits.clone().slice([0..n, 2 * t..2 * t + 2]);
        let y = targets.clone().slice([0..n, t..t + 1]).reshape([n]);
        let l = smoothed_cross_entropy(z.clone(), y.clone(), smoothing) * w;
        ce = Some(match ce {
            Some(acc) => acc + l,
            None => l,
        });
        let p = softmax(z, 1).slice([0..n, 1..2]).reshape([n]);
        // `float()` gives the device's default type; the loss is in the logits'.
        let yf = in_dtype(y.float(), p.dtype());
        let tp = (p.clone() * yf.clone()).sum();
        let fp = (p.clone() * (yf.clone().neg() + 1.0)).sum();
        let fneg = ((p.neg() + 1.0) * yf).sum();
        let f1 = tp.clone() * 2.0 / (tp * 2.0 + fp + fneg + 1e-7);
        f1_sum = Some(match f1_sum {
            Some(acc) => acc + f1,
            None => f1,
        });
    }
    let ce = ce.expect("four tasks");
    let soft_f1 = f1_sum.expect("four tasks") / task_weights.len() as f64;
    let total = if f1_weight > 0.0 {
        ce.clone() + (soft_f1.clone().neg() + 1.0) * f1_weight
    } else {
        ce.clone()
    };
    FeatureLoss {
        total,
        cross_entropy: ce,
        soft_f1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = birads_model::Cpu;

    #[test]
    fn ordinal_targets_sum_to_one_and_favour_neighbours() {
        let m = ordinal_targets(4, 0.2);
        for y in 0..4 {
            let row = &m[y * 4..y * 4 + 4];
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert!((row[y] - 0.8).abs() < 1e-12);
        }
        // Class 0: 0.2 split 4:2:1 over classes 1, 2, 3.
        assert!((m[1] - 0.2 * 4.0 / 7.0).abs() < 1e-12 && (m[3] - 0.2 / 7.0).abs() < 1e-12);
        // Class 1: neighbours 0 and 2 equally, 3 at distance 2 half as much.
        assert!((m[4] - m[6]).abs() < 1e-12 && (m[7] - m[4] / 2.0).abs() < 1e-12);
        assert_eq!(ordinal_targets(1, 0.2), vec![1.0]);
    }

    #[test]
    fn soft_targets_with_uniform_rows_equal_pytorch_label_smoothing() {
        let device = Default::default();
        let logits = Tensor::<B, 2>::from_floats(
            [
                [1.0, -0.5, 0.3, 2.0],
                [0.1, 0.2, -1.0, 0.0],
                [3.0, 0.0, 0.0, -2.0],
            ],
            &device,
        );
        let y = Tensor::<B, 1, Int>::from_ints([3, 0, 2], &device);
        let eps = 0.2;
        // PyTorch's smoothing: (1 − ε) on the class plus ε/k on every class.
        let uniform: Vec<f64> = (0..16)
            .map(|i| eps / 4.0 + if i / 4 == i % 4 { 1.0 - eps } else { 0.0 })
            .collect();
        let a: f32 = soft_target_cross_entropy(logits.clone(), y.clone(), &uniform).into_scalar();
        let b: f32 = smoothed_cross_entropy(logits.clone(), y.clone(), eps).into_scalar();
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        // Ordinal smoothing penalises the same logits differently.
        let c: f32 = soft_target_cross_entropy(logits, y, &ordinal_targets(4, eps)).into_scalar();
        assert!((c - b).abs() > 1e-4);
    }
}
