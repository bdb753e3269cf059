//! The dedicated training path (`fast::train`) against burn's autodiff on the same models:
//! pooled features, every backbone gradient (and BatchNorm's running statistics), with
//! dropout and stochastic depth off so that both sides compute the same function; then
//! the behaviour of the masks when they are on.

mod common;

use std::collections::HashMap;

use birads_model::checkpoint::AnyModel;
use birads_model::fast::train::{FastTrainer, OptimConfig, UpdateRule};
use birads_model::{CpuTrain, MyConvNeXtConfig, MyDenseNetConfig};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;

use common::{max_abs_diff, serial};

type B = CpuTrain;

/// burn's CPU random numbers come from one global generator: each test holds the binary's lock
/// (`common::serial`) and seeds it, so its models and inputs are the same on every run.
fn seeded(seed: u64) -> std::sync::MutexGuard<'static, ()> {
    let guard = serial();
    <B as burn::tensor::backend::Backend>::seed(&Default::default(), seed);
    guard
}

fn random<const D: usize>(shape: [usize; D], lo: f64, hi: f64) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Uniform(lo, hi), &Default::default())
}

/// Every float parameter of a module: id → values.
fn params<M: Module<B>>(m: &M) -> HashMap<ParamId, Vec<f32>> {
    struct Collect(HashMap<ParamId, Vec<f32>>);
    impl ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            self.0.insert(p.id, p.val().into_data().to_vec().unwrap());
        }
    }
    let mut c = Collect(HashMap::new());
    m.visit(&mut c);
    c.0
}

fn any_params(m: &AnyModel<B>) -> HashMap<ParamId, Vec<f32>> {
    match m {
        AnyModel::ConvNeXt(m) => params(m),
        AnyModel::DenseNet(m) => params(m),
    }
}

fn clone_any(m: &AnyModel<B>) -> AnyModel<B> {
    match m {
        AnyModel::ConvNeXt(m) => AnyModel::ConvNeXt(m.clone()),
        AnyModel::DenseNet(m) => AnyModel::DenseNet(m.clone()),
    }
}

/// Every float parameter's gradient: id → values (parameters without one are left out).
fn gradients<M: Module<B>>(
    m: &M,
    grads: &<B as AutodiffBackend>::Gradients,
) -> HashMap<ParamId, Vec<f32>> {
    struct Collect<'a>(
        HashMap<ParamId, Vec<f32>>,
        &'a <B as AutodiffBackend>::Gradients,
    );
    impl ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            if let Some(g) = p.val().grad(self.1) {
                self.0.insert(p.id, g.into_data().to_vec().unwrap());
            }
        }
    }
    let mut c = Collect(HashMap::new(), grads);
    m.visit(&mut c);
    c.0
}

/// Runs burn and the fast path on the same model and input with loss `Σ r·pooled`;
/// checks the pooled features and every backbone gradient. Returns the trainer.
fn check_against_autodiff(
    model: AnyModel<B>,
    n: usize,
    side: usize,
    tolerance: f32,
) -> (FastTrainer, AnyModel<B>) {
    let x = random([n, 3, side, side], -2.0, 2.0);
    let features = match &model {
        AnyModel::ConvNeXt(m) => m.features(x.clone()),
        AnyModel::DenseNet(m) => m.features(x.clone()),
    };
    let c = features.dims()[1];
    let pooled = features.mean_dims(&[2, 3]).reshape([n, c]);
    let r = random([n, c], -1.0, 1.0);
    let grads = (pooled.clone() * r.clone()).sum().backward();
    let want_grads = match &model {
        AnyModel::ConvNeXt(m) => gradients(m, &grads),
        AnyModel::DenseNet(m) => gradients(m, &grads),
    };

    let mut trainer = FastTrainer::from_model(&model);
    let xs: Vec<f32> = x.into_data().to_vec().unwrap();
    let got = trainer.forward(&xs, n, side, side, 1);
    let want: Vec<f32> = pooled.into_data().to_vec().unwrap();
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(
        max_abs_diff(&got, &want) <= tolerance * scale.max(1.0),
        "pooled features differ by {} (largest {scale})",
        max_abs_diff(&got, &want)
    );
    let rs: Vec<f32> = r.into_data().to_vec().unwrap();
    trainer.backward(&rs);

    // The gradients, written into a copy of the model as its values (same parameter ids).
    let mut as_values = FastTrainer::from_model(&model);
    as_values.forward(&xs, n, side, side, 1);
    as_values.backward(&rs);
    for w in as_values.weights_mut() {
        std::mem::swap(&mut w.value, &mut w.grad);
    }
    let ours = any_params(&as_values.write_to(clone_any(&model)));
    let mut compared = 0;
    for (id, want) in &want_grads {
        let got = &ours[id];
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(got, want);
        assert!(
            diff <= tolerance * scale.max(1e-3),
            "gradient of a {}-value parameter differs by {diff} (largest {scale})",
            want.len()
        );
        compared += 1;
    }
    assert_eq!(
        compared,
        trainer.weights_mut().len(),
        "every backbone weight has a burn gradient to compare with"
    );
    (trainer, model)
}

fn small_convnext(dropout: f64, sd_rate: f64) -> AnyModel<B> {
    let mut m = MyConvNeXtConfig::new()
        .with_dims(vec![16, 32])
        .with_depths(vec![1, 2])
        .with_dropout(dropout)
        .with_sd_rate(sd_rate)
        .with_layer_scale_init(0.5)
        .init::<B>(&Default::default());
    // Non-trivial LayerNorm affines and biases, so their gradients are exercised.
    m.stem_norm.bias = Param::from_tensor(random([16], -0.5, 0.5));
    for s in &mut m.stages {
        for b in &mut s.blocks {
            b.norm.gamma = Param::from_tensor(random([b.norm.gamma.dims()[0]], 0.5, 1.5));
            b.dwconv.bias = Some(Param::from_tensor(random(
                [b.norm.gamma.dims()[0]],
                -0.5,
                0.5,
            )));
        }
    }
    AnyModel::ConvNeXt(m)
}

#[test]
fn convnext_gradients_equal_burn_autodiff() {
    let _seeded = seeded(1);
    check_against_autodiff(small_convnext(0.0, 0.0), 2, 32, 2e-4);
}

#[test]
fn convnext_masks_are_seeded_and_change_the_pass() {
    let _seeded = seeded(2);
    let model = small_convnext(0.2, 0.5);
    let x: Vec<f32> = random([2, 3, 32, 32], -2.0, 2.0)
        .into_data()
        .to_vec()
        .unwrap();
    let mut t = FastTrainer::from_model(&model);
    let a = t.forward(&x, 2, 32, 32, 1);
    let b = t.forward(&x, 2, 32, 32, 1);
    let c = t.forward(&x, 2, 32, 32, 2);
    assert_eq!(a, b, "same seed, same masks");
    assert!(max_abs_diff(&a, &c) > 1e-3, "another seed, other masks");
    // Without dropout the pass is the deterministic one.
    let mut plain = FastTrainer::from_model(&small_convnext(0.0, 0.0));
    let p1 = plain.forward(&x, 2, 32, 32, 1);
    let p2 = plain.forward(&x, 2, 32, 32, 2);
    assert_eq!(p1, p2);
}

/// With masks on, the analytic gradient of `Σ r·pooled` still matches a central difference
/// of the same seeded (so identically masked) passes.
#[test]
fn convnext_gradients_with_masks_match_finite_differences() {
    let _seeded = seeded(3);
    finite_differences(small_convnext(0.1, 0.3), 2, 32);
}

/// Along each weight's gradient direction `u = g/|g|`, the central difference of the same
/// seeded (identically masked) passes must give `|g|`. Directional rather than per value:
/// DenseNet's ReLUs and max-pools make single-value differences in f32 too noisy, while the
/// slope along the gradient sums thousands of consistent terms.
fn finite_differences(model: AnyModel<B>, n: usize, side: usize) {
    let x: Vec<f32> = random([n, 3, side, side], -2.0, 2.0)
        .into_data()
        .to_vec()
        .unwrap();
    let mut t = FastTrainer::from_model(&model);
    let pooled = t.forward(&x, n, side, side, 5);
    let r: Vec<f32> = (0..pooled.len())
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0)
        .collect();
    t.backward(&r);
    let loss = |t: &mut FastTrainer| -> f64 {
        let p = t.forward(&x, n, side, side, 5);
        p.iter().zip(&r).map(|(a, b)| *a as f64 * *b as f64).sum()
    };
    let count = t.weights_mut().len();
    for wi in 0..count {
        let g = t.weights_mut()[wi].grad.clone();
        let norm = g.iter().map(|v| (v * v) as f64).sum::<f64>().sqrt();
        if norm < 1e-6 {
            continue;
        }
        let eps = 1e-3;
        let nudge = |t: &mut FastTrainer, by: f64| {
            for (v, gv) in t.weights_mut()[wi].value.iter_mut().zip(&g) {
                *v += (by * *gv as f64 / norm) as f32;
            }
        };
        nudge(&mut t, eps);
        let up = loss(&mut t);
        nudge(&mut t, -2.0 * eps);
        let down = loss(&mut t);
        nudge(&mut t, eps);
        let slope = (up - down) / (2.0 * eps);
        assert!(
            (slope - norm).abs() <= 0.05 * norm + 1e-3,
            "weight {wi} of {count}: |g| = {norm}, slope along g = {slope}"
        );
    }
}

#[test]
fn adamw_steps_move_the_weights_and_reach_the_model() {
    let _seeded = seeded(4);
    let model = small_convnext(0.0, 0.0);
    let (mut t, model) = check_against_autodiff(model, 2, 32, 2e-4);
    let before = any_params(&t.write_to(clone_any(&model)));
    t.step(&OptimConfig::new(UpdateRule::AdamW, 0.05), 1e-2);
    assert_eq!(t.steps(), 1);
    let after = any_params(&t.write_to(model));
    let moved = before
        .iter()
        .filter(|(id, v)| max_abs_diff(v, &after[*id]) > 1e-4)
        .count();
    assert!(moved >= t.weights_mut().len() - 2, "{moved} weights moved");
}

fn running_stats(m: &AnyModel<B>) -> Vec<f32> {
    let AnyModel::DenseNet(m) = m else {
        panic!("a MyDenseNet")
    };
    let mut bns = vec![&m.norm0, &m.norm5];
    for b in &m.blocks {
        for l in &b.layers {
            bns.extend([&l.norm1, &l.norm2]);
        }
    }
    bns.extend(m.transitions.iter().map(|t| &t.norm));
    bns.iter()
        .flat_map(|bn| {
            let mut v: Vec<f32> = bn.running_mean.value_sync().into_data().to_vec().unwrap();
            v.extend(
                bn.running_var
                    .value_sync()
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap(),
            );
            v
        })
        .collect()
}

fn small_densenet() -> AnyModel<B> {
    AnyModel::DenseNet(
        MyDenseNetConfig::new()
            .with_growth(8)
            .with_blocks(vec![2, 3])
            .with_init_features(16)
            .with_bn_size(2)
            .with_dp1(0.0)
            .with_dp2(0.0)
            .init::<B>(&Default::default()),
    )
}

#[test]
fn densenet_gradients_and_statistics_equal_burn_autodiff() {
    let _seeded = seeded(5);
    // burn's training-mode forward pass updates the running statistics inside `model`; the
    // trainer's one forward pass must give the same ones.
    let (trainer, model) = check_against_autodiff(small_densenet(), 3, 32, 3e-4);
    let ours = running_stats(&trainer.write_to(clone_any(&model)));
    let theirs = running_stats(&model);
    let initial = running_stats(&small_densenet());
    assert!(max_abs_diff(&theirs, &initial) > 1e-3, "burn updated them");
    assert!(
        max_abs_diff(&ours, &theirs) < 1e-4,
        "running statistics differ by {}",
        max_abs_diff(&ours, &theirs)
    );
}

#[test]
fn densenet_gradients_with_dropout_match_finite_differences() {
    let _seeded = seeded(6);
    let model = AnyModel::DenseNet(
        MyDenseNetConfig::new()
            .with_growth(8)
            .with_blocks(vec![2, 2])
            .with_init_features(16)
            .with_bn_size(2)
            .with_dp2(0.2)
            .init::<B>(&Default::default()),
    );
    finite_differences(model, 3, 32);
}

/// BatchNorm parameter gradients on large maps (thousands of rows per worker, sums over whole
/// images in CBAM and norm5): the stem's, the last layer's and norm5's must match burn's to
/// 5·10⁻⁵ of their largest value (measured ≤ 2·10⁻⁵).
#[test]
fn batchnorm_gradients_stay_accurate_on_large_maps() {
    let _seeded = seeded(7);
    let model = MyDenseNetConfig::new()
        .with_growth(12)
        .with_blocks(vec![2])
        .with_init_features(24)
        .with_dp1(0.0)
        .with_dp2(0.0)
        .init::<B>(&Default::default());
    let (n, side) = (8, 128);
    let x = random([n, 3, side, side], -2.0, 2.0);
    let features = model.features(x.clone());
    let c = features.dims()[1];
    let pooled = features.mean_dims(&[2, 3]).reshape([n, c]);
    let r = random([n, c], -1.0, 1.0);
    let grads = (pooled * r.clone()).sum().backward();
    let burn = |p: &Param<Tensor<B, 1>>| -> Vec<f32> {
        p.val().grad(&grads).unwrap().into_data().to_vec().unwrap()
    };
    let last = &model.blocks[0].layers[1];
    let want = [
        (1, burn(&model.norm0.weight)),
        (2, burn(&model.norm0.bias)),
        (9, burn(&last.norm1.weight)),
        (10, burn(&last.norm1.bias)),
        (12, burn(&last.norm2.weight)),
        (13, burn(&last.norm2.bias)),
        (18, burn(&model.norm5.weight)),
        (19, burn(&model.norm5.bias)),
    ];
    let mut t = FastTrainer::from_model(&AnyModel::DenseNet(model.clone()));
    t.forward(&x.into_data().to_vec::<f32>().unwrap(), n, side, side, 1);
    t.backward(&r.into_data().to_vec::<f32>().unwrap());
    let ws = t.weights_mut();
    for (i, want) in want {
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(&ws[i].grad, &want);
        assert!(
            diff <= 5e-5 * scale,
            "weight {i}: differs by {diff} (largest {scale})"
        );
    }
}
