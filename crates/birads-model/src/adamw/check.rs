//! The optimiser on a device against the CPU (`birads bench device-check`): two steps of
//! AdamW or Adam through [`Optimiser`], as the trainer takes them, on parameter tensors of
//! assorted shapes and ranks, more of them than one launch of the update kernel takes, from
//! the same values and gradients everywhere.

use burn::module::{Module, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::{Adam, AdamW, Optimiser, Rule, State};
use crate::gradcheck::{difference, f32s};

/// Convolution weights and vectors: 41 tensors (the kernel takes up to 8 per launch), from
/// 3 to 18,432 values.
#[derive(Module, Debug)]
pub struct Parameters<B: Backend> {
    weights: Vec<Param<Tensor<B, 4>>>,
    vectors: Vec<Param<Tensor<B, 1>>>,
}

fn weight_shapes() -> Vec<[usize; 4]> {
    let mut shapes: Vec<[usize; 4]> = (0..19).map(|i| [4 + i, 1 + i % 5, 3, 3]).collect();
    shapes.push([64, 32, 3, 3]);
    shapes
}

fn vector_shapes() -> Vec<[usize; 1]> {
    (0..21).map(|i| [3 + 205 * i]).collect()
}

/// Values spread over `[-scale, scale)`, the same on every device and for every call with the
/// same `salt`: computed on the host, from no random generator (the backends' generators are
/// global, and a test running beside this one would draw from them between two runs).
fn values<B: Backend, const D: usize>(shape: [usize; D], scale: f32, salt: usize) -> Tensor<B, D> {
    let n = shape.iter().product::<usize>();
    let value = |i: usize| {
        let x = ((i * 7919 + salt * 104_729) % 1_000_003) as f32;
        ((x * 12.9898).sin() * 43_758.547).fract() * scale
    };
    let data = TensorData::new((0..n).map(value).collect::<Vec<f32>>(), shape);
    Tensor::from_data(data, &Default::default())
}

/// Two steps of the optimiser of `adam` (Adam with its L2 penalty) or AdamW on `B`: each
/// parameter, then both its moments, named, as f32, in a fixed order.
pub fn two_steps<B: AutodiffBackend>(adam: bool) -> Vec<(String, Vec<f32>)> {
    if adam {
        steps::<B, Adam>(Adam::new(0.05, 1e-8))
    } else {
        steps::<B, AdamW>(AdamW::new(0.05, 1e-8))
    }
}

fn steps<B: AutodiffBackend, O: Rule<B::InnerBackend>>(rule: O) -> Vec<(String, Vec<f32>)> {
    let mut module = Parameters::<B> {
        weights: weight_shapes()
            .into_iter()
            .enumerate()
            .map(|(i, s)| Param::from_tensor(values(s, 0.1, i)))
            .collect(),
        vectors: vector_shapes()
            .into_iter()
            .enumerate()
            .map(|(i, s)| Param::from_tensor(values(s, 0.1, 100 + i)))
            .collect(),
    };
    let mut optim = Optimiser::<O, Parameters<B>, B>::new(rule);
    // The learning rates are large, so that the step, not the parameter, dominates.
    for (step, lr) in [0.05, 0.02].into_iter().enumerate() {
        let mut grads = GradientsParams::new();
        let salt = 1000 * (step + 1);
        for (i, w) in module.weights.iter().enumerate() {
            let g = values(w.shape().dims(), 1.0, salt + i);
            grads.register::<B::InnerBackend, 4>(w.id, g);
        }
        for (i, v) in module.vectors.iter().enumerate() {
            let g = values(v.shape().dims(), 1.0, salt + 100 + i);
            grads.register::<B::InnerBackend, 1>(v.id, g);
        }
        module = optim.step(lr, module, grads);
    }
    let mut record = optim.to_record();
    let mut out = Vec::new();
    for (i, w) in module.weights.iter().enumerate() {
        let state = O::into_state(record.remove(&w.id).expect("a state").into_state::<4>());
        out.extend(named(format!("weight {i}"), w.val().inner(), state));
    }
    for (i, v) in module.vectors.iter().enumerate() {
        let state = O::into_state(record.remove(&v.id).expect("a state").into_state::<1>());
        out.extend(named(format!("vector {i}"), v.val().inner(), state));
    }
    out
}

/// A parameter `p` called `what` and its moments, as f32.
fn named<B: Backend, const D: usize>(
    what: String,
    p: Tensor<B, D>,
    state: State<B, D>,
) -> [(String, Vec<f32>); 3] {
    let m = state.momentum;
    [
        (what.clone(), f32s(p)),
        (format!("{what}, first moment"), f32s(m.moment_1.0)),
        (format!("{what}, second moment"), f32s(m.moment_2.0)),
    ]
}

/// The largest relative difference (max |Δ| / max |want| per tensor) of `got` from `want`.
pub fn worst(got: &[(String, Vec<f32>)], want: &[(String, Vec<f32>)]) -> Result<f64, String> {
    if got.len() != want.len() {
        return Err(format!("{} tensors against {}", got.len(), want.len()));
    }
    let mut worst = 0f64;
    for ((name, g), (_, w)) in got.iter().zip(want) {
        worst = worst.max(difference(name, g, w)?.relative);
    }
    Ok(worst)
}
