//! The recipe's losses, with PyTorch's definitions (checked against PyTorch fixtures).

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
        let yf = y.float();
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
