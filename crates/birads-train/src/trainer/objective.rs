//! The objective of a batch: its targets, its loss on any backend, and how many of its
//! decisions are right.

use birads_data::loader::Batch;
use birads_model::amp::in_dtype;
use burn::prelude::*;
use burn::tensor::DType;

use crate::config::{Smoothing, Task, TrainConfig};
use crate::losses::{
    feature_loss, ordinal_targets, smoothed_cross_entropy, soft_target_cross_entropy,
};

/// Targets of a batch: class indices, or 0/1 per feature flattened `[N·4]`.
pub(super) fn targets(task: Task, b: &Batch) -> Vec<i64> {
    match task {
        Task::Cls => b.classes.iter().map(|c| c.unwrap_or(0) as i64).collect(),
        Task::Fea => b
            .features
            .iter()
            .flat_map(|f| f.map(|v| i64::from(v.unwrap_or(false))))
            .collect(),
    }
}

/// Loss of a batch of logits, on any backend, computed in f32 whatever the model's precision
/// (as PyTorch AMP computes it): in a bf16 run the logits are cast up first, and their
/// gradient comes back in bf16 through the cast.
pub(super) fn batch_loss<B: Backend>(
    cfg: &TrainConfig,
    logits: Tensor<B, 2>,
    t: Vec<i64>,
    device: &B::Device,
) -> Tensor<B, 1> {
    let logits = in_dtype(logits, DType::F32);
    let n = logits.dims()[0];
    match cfg.task {
        Task::Cls => {
            let y = Tensor::<B, 1, Int>::from_data(TensorData::new(t, [n]), device);
            match cfg.smoothing {
                Smoothing::Uniform => smoothed_cross_entropy(logits, y, cfg.label_smoothing),
                Smoothing::Ordinal => {
                    let k = logits.dims()[1];
                    let table = ordinal_targets(k, cfg.label_smoothing);
                    soft_target_cross_entropy(logits, y, &table)
                }
            }
        }
        Task::Fea => {
            let y = Tensor::<B, 2, Int>::from_data(TensorData::new(t, [n, 4]), device);
            feature_loss(
                logits,
                y,
                cfg.task_weights,
                cfg.label_smoothing,
                cfg.f1_loss_weight,
            )
            .total
        }
    }
}

/// A loss's value in f64, from its own type (`into_scalar` would round an f32 loss to a bf16
/// backend's element type).
pub(super) fn value_of<B: Backend>(loss: Tensor<B, 1>) -> f64 {
    loss.into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("a loss")[0]
}

/// The logits `[N, K]` on the host, flattened, in f32 whatever the model's precision.
pub(super) fn logit_values<B: Backend>(logits: Tensor<B, 2>) -> Vec<f32> {
    logits
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("logits")
}

/// Correct predictions in a batch (features: per task, summed over tasks).
pub(super) fn hits(task: Task, logits: &[f32], width: usize, t: &[i64]) -> usize {
    match task {
        Task::Cls => logits
            .chunks(width)
            .zip(t)
            .filter(|(z, &y)| birads_infer::predict::argmax(z) as i64 == y)
            .count(),
        Task::Fea => logits
            .chunks(2)
            .zip(t)
            .filter(|(z, &y)| i64::from(z[1] > z[0]) == y)
            .count(),
    }
}
