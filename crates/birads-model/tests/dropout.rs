//! `blocks::DropoutMask`, dropout drawn ahead of the tensor it masks, and `blocks::dropout`,
//! which draws and applies it at once: a Bernoulli mask and its scaling, stochastic depth per
//! sample with a `[N, 1, 1, 1]` mask, no draw at all where nothing is dropped, and the mask in
//! the type asked for. One test: the backend's random generator is shared by the whole
//! process.

use birads_model::blocks::{dropout, DropoutMask, EvalWithGradients};
use birads_model::{Cpu, CpuTrain};
use burn::prelude::*;
use burn::tensor::{DType, Distribution};

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// The next value the generator gives: whether something drew in between.
fn next<B: Backend>(device: &B::Device) -> Vec<f32> {
    values(Tensor::<B, 1>::random([4], Distribution::Default, device))
}

#[test]
fn a_mask_drawn_ahead_is_dropouts_mask() {
    let device = Default::default();
    let p = 0.3;
    let x = Tensor::<CpuTrain, 4>::random([3, 4, 5, 6], Distribution::Uniform(0.5, 1.5), &device);

    // A Bernoulli(1 − p) draw, applied later, scaled by 1/(1 − p); `dropout` is the same.
    CpuTrain::seed(&device, 21);
    let keep =
        Tensor::<CpuTrain, 4>::random([3, 4, 5, 6], Distribution::Bernoulli(1.0 - p), &device);
    let want = values(x.clone() * keep / (1.0 - p));
    CpuTrain::seed(&device, 21);
    let mask = DropoutMask::<CpuTrain, 4>::draw([3, 4, 5, 6], DType::F32, p, &device);
    let got = values(mask.apply(x.clone()));
    assert_eq!(got, want);
    CpuTrain::seed(&device, 21);
    assert_eq!(values(dropout(x.clone(), p)), want, "dropout");
    let kept = got.iter().filter(|&&v| v != 0.0).count();
    assert!(kept > 0 && kept < got.len(), "{kept} of {} kept", got.len());
    let x_values = values(x.clone());
    for (g, v) in got.iter().zip(&x_values) {
        assert!(*g == 0.0 || (g - v / (1.0 - p) as f32).abs() < 1e-6);
    }

    // Stochastic depth: each sample's values all dropped or all kept and scaled.
    let mask = DropoutMask::<CpuTrain, 4>::draw([3, 1, 1, 1], DType::F32, 0.5, &device);
    let got = values(mask.apply(x.clone()));
    let per_sample = got.len() / 3;
    for (s, v) in got.chunks(per_sample).zip(x_values.chunks(per_sample)) {
        let dropped = s.iter().all(|&a| a == 0.0);
        let kept = s.iter().zip(v).all(|(a, b)| (a - 2.0 * b).abs() < 1e-6);
        assert!(dropped ^ kept, "a sample is either dropped or kept whole");
    }

    // The mask takes the type asked for, and masks a tensor of that type.
    let half = x.clone().cast(burn::tensor::FloatDType::BF16);
    let mask = DropoutMask::<CpuTrain, 4>::draw([3, 4, 5, 6], DType::BF16, p, &device);
    assert_eq!(mask.apply(half).dtype(), DType::BF16);

    // Nothing dropped: p = 0, evaluation, a backend without autodiff. No draw is made.
    let full = [3, 4, 5, 6];
    let zero = untouched::<CpuTrain>(&device, || {
        DropoutMask::draw(full, DType::F32, 0.0, &device)
    });
    assert_eq!(values(zero.apply(x.clone())), x_values, "p = 0");
    let eval = untouched::<CpuTrain>(&device, || {
        let _eval = EvalWithGradients::enter();
        DropoutMask::draw(full, DType::F32, p, &device)
    });
    assert_eq!(values(eval.apply(x.clone())), x_values, "evaluation");
    let inference = untouched::<Cpu>(&device, || DropoutMask::draw(full, DType::F32, p, &device));
    assert_eq!(values(inference.apply(x.inner())), x_values, "no autodiff");
}

/// `draw()`'s mask, checked to have left the generator where it was.
fn untouched<B: Backend>(
    device: &B::Device,
    draw: impl FnOnce() -> DropoutMask<B, 4>,
) -> DropoutMask<B, 4> {
    B::seed(device, 5);
    let mask = draw();
    let after = next::<B>(device);
    B::seed(device, 5);
    assert_eq!(after, next::<B>(device), "the generator moved");
    mask
}
