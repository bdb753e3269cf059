//! A training step without data, for timing it (`birads bench train`) and for counting its
//! kernel launches (`examples/kernel_count.rs`): the recipe's optimiser, random images and
//! fixed targets, so both measure the same step.

use birads_model::adamw::AdamW;
use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::losses::{feature_loss, smoothed_cross_entropy};

/// The recipe's AdamW (weight decay 0.05, ε 1e-8).
pub fn optimizer<B: AutodiffBackend, M: AutodiffModule<B>>() -> impl Optimizer<M, B> {
    AdamW::init::<B, M>(0.05, 1e-8)
}

/// `batch` random images `[batch, 3, size, size]` drawn from N(0, 1).
pub fn images<B: Backend>(batch: usize, size: usize, device: &B::Device) -> Tensor<B, 4> {
    Tensor::random(
        [batch, 3, size, size],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        device,
    )
}

/// The recipe's loss against fixed targets: class `i mod 6` per image (`features`: feature
/// labels alternating 0, 1).
pub fn loss<B: Backend>(logits: Tensor<B, 2>, features: bool) -> Tensor<B, 1> {
    let device = logits.device();
    let batch = logits.dims()[0];
    if features {
        let y: Vec<i64> = (0..batch * 4).map(|i| (i % 2) as i64).collect();
        let y = Tensor::<B, 2, Int>::from_data(TensorData::new(y, [batch, 4]), &device);
        feature_loss(logits, y, [1.0; 4], 0.1, 1.0).total
    } else {
        let y: Vec<i64> = (0..batch).map(|i| (i % 6) as i64).collect();
        let y = Tensor::<B, 1, Int>::from_data(TensorData::new(y, [batch]), &device);
        smoothed_cross_entropy(logits, y, 0.1)
    }
}
