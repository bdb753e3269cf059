//! The dedicated inference path (`birads_model::fast`) against the burn path and PyTorch:
//! the small fixture checkpoints of `scripts/make_model_fixtures.py` (PyTorch's outputs),
//! and randomly initialised full-width models with perturbed BatchNorm statistics and layer
//! scales at batch sizes that exercise both the chunked and the whole-matrix code.

use std::path::{Path, PathBuf};

use birads_model::fast::{FastConvNeXt, FastDenseNet};
use birads_model::weights::{load_convnext, load_densenet, Source};
use birads_model::{Cpu, MyConvNeXtConfig, MyDenseNetConfig};
use burn::module::{Param, RunningState};
use burn::prelude::*;
use burn::tensor::Distribution;

mod common;
use common::{convnext_config, densenet_config, max_abs_diff, read_f32, serial};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn meta(name: &str) -> (serde_json::Value, Vec<usize>) {
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("{name}.json"))).unwrap(),
    )
    .unwrap();
    let shape = m["input_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    (m["config"].clone(), shape)
}

/// Fast-path outputs within 1e-4 of the burn path's, relative to the largest logit (the
/// float error is ~1e-6 of it; a wrong scale, epsilon or activation is ≥ 1e-3).
fn assert_close(got: &[f32], want: &[f32], what: &str) {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(got, want);
    assert!(
        diff <= 1e-4 * scale,
        "{what}: max abs diff {diff}, max |logit| {scale}"
    );
}

/// Eval-mode logits of a burn model, and the same input flattened for the fast path.
fn burn_logits<const D: usize>(out: Tensor<Cpu, D>, x: Tensor<Cpu, 4>) -> (Vec<f32>, Vec<f32>) {
    (
        out.into_data().to_vec::<f32>().unwrap(),
        x.into_data().to_vec::<f32>().unwrap(),
    )
}

#[test]
fn fast_convnext_matches_pytorch_on_the_fixture() {
    let (config, shape) = meta("myconvnext_small");
    let model = convnext_config(&config).init::<Cpu>(&Default::default());
    let (model, _) = load_convnext(
        model,
        &fixtures().join("myconvnext_small.pth"),
        Source::Original,
    )
    .unwrap();
    let x = read_f32(&fixtures().join("myconvnext_small.input.bin"));
    let got = FastConvNeXt::from_model(&model).forward(&x, shape[0], shape[2], shape[3]);
    let want = read_f32(&fixtures().join("myconvnext_small.output.bin"));
    let diff = max_abs_diff(&got, &want);
    assert!(diff <= 1e-4, "max abs diff {diff}");
}

#[test]
fn fast_densenet_matches_pytorch_on_the_fixture() {
    let (config, shape) = meta("mydensenet_small");
    let model = densenet_config(&config).init::<Cpu>(&Default::default());
    let (model, _) = load_densenet(
        model,
        &fixtures().join("mydensenet_small.pth"),
        Source::Original,
    )
    .unwrap();
    let x = read_f32(&fixtures().join("mydensenet_small.input.bin"));
    let got = FastDenseNet::from_model(&model).forward(&x, shape[0], shape[2], shape[3]);
    let want = read_f32(&fixtures().join("mydensenet_small.output.bin"));
    let diff = max_abs_diff(&got, &want);
    assert!(diff <= 1e-4, "max abs diff {diff}");
}

fn random<const D: usize>(shape: [usize; D], lo: f64, hi: f64) -> Tensor<Cpu, D> {
    Tensor::random(shape, Distribution::Uniform(lo, hi), &Default::default())
}

/// Layer scales of order one, so every block changes its input (the 1e-6 initial value
/// would hide a wrong block).
fn convnext_with_active_blocks(cfg: &MyConvNeXtConfig) -> birads_model::MyConvNeXt<Cpu> {
    let mut m = cfg.init::<Cpu>(&Default::default());
    for s in &mut m.stages {
        for b in &mut s.blocks {
            let [c, _, _] = b.layer_scale.dims();
            b.layer_scale = Param::from_tensor(random([c, 1, 1], 0.2, 1.0));
        }
    }
    m
}

/// BatchNorm statistics and affine parameters away from their identity initial values.
fn densenet_with_statistics(cfg: &MyDenseNetConfig) -> birads_model::MyDenseNet<Cpu> {
    fn perturb(bn: &mut birads_model::blocks::BatchNorm2d<Cpu>) {
        let [c] = bn.weight.dims();
        bn.weight = Param::from_tensor(random([c], 0.5, 1.5));
        bn.bias = Param::from_tensor(random([c], -0.3, 0.3));
        bn.running_mean = RunningState::new(random([c], -0.5, 0.5));
        bn.running_var = RunningState::new(random([c], 0.5, 2.0));
    }
    let mut m = cfg.init::<Cpu>(&Default::default());
    perturb(&mut m.norm0);
    perturb(&mut m.norm5);
    for b in &mut m.blocks {
        for l in &mut b.layers {
            perturb(&mut l.norm1);
            perturb(&mut l.norm2);
        }
    }
    for t in &mut m.transitions {
        perturb(&mut t.norm);
    }
    m
}

fn input(n: usize, side: usize) -> Tensor<Cpu, 4> {
    Tensor::random(
        [n, 3, side, side],
        Distribution::Normal(0.0, 1.0),
        &Default::default(),
    )
}

#[test]
fn fast_convnext_equals_the_burn_path() {
    let _serial = serial();
    // Full widths at 64 px, batch 1 (whole-matrix products) and 3 (row chunks).
    Cpu::seed(&Default::default(), 7);
    let model = convnext_with_active_blocks(&MyConvNeXtConfig::new());
    let fast = FastConvNeXt::from_model(&model);
    for n in [1, 3] {
        let x = input(n, 64);
        let (want, flat) = burn_logits(model.forward(x.clone()), x);
        assert_close(
            &fast.forward(&flat, n, 64, 64),
            &want,
            &format!("batch {n}"),
        );
    }
}

#[test]
fn fast_densenet_equals_the_burn_path() {
    let _serial = serial();
    Cpu::seed(&Default::default(), 11);
    let model = densenet_with_statistics(&MyDenseNetConfig::new());
    let fast = FastDenseNet::from_model(&model);
    for n in [1, 2] {
        let x = input(n, 96);
        let (want, flat) = burn_logits(model.forward(x.clone()), x);
        assert_close(
            &fast.forward(&flat, n, 96, 96),
            &want,
            &format!("batch {n}"),
        );
    }
}

/// The BI-RADS grader on the DenseNet backbone: one head of class logits.
#[test]
fn fast_densenet_grader_equals_the_burn_path() {
    let _serial = serial();
    Cpu::seed(&Default::default(), 12);
    let cfg = MyDenseNetConfig::new()
        .with_growth(12)
        .with_blocks(vec![2, 3, 4, 2])
        .with_init_features(24)
        .with_classes(4);
    let model = densenet_with_statistics(&cfg);
    let fast = FastDenseNet::from_model(&model);
    assert_eq!(fast.head_width(), 4);
    let x = input(3, 80);
    let (want, flat) = burn_logits(model.forward(x.clone()), x);
    assert_eq!(want.len(), 3 * 4, "[N, 1, classes]");
    assert_close(&fast.forward(&flat, 3, 80, 80), &want, "grader");
}

#[test]
fn every_vector_width_gives_the_same_outputs() {
    let _serial = serial();
    // AVX2 and baseline code paths of the elementwise kernels, run on whatever this CPU is
    // (the default picks the widest unit at run time).
    Cpu::seed(&Default::default(), 5);
    let (c, _) = meta("myconvnext_small");
    let cfg = convnext_config(&c);
    let model = convnext_with_active_blocks(&cfg);
    let fast = FastConvNeXt::from_model(&model);
    let (d, _) = meta("mydensenet_small");
    let dense = densenet_with_statistics(&densenet_config(&d));
    let fast_dense = FastDenseNet::from_model(&dense);
    let x = input(2, 64);
    let (want, flat) = burn_logits(model.forward(x.clone()), x.clone());
    let (want_dense, _) = burn_logits(dense.forward(x.clone()), x);
    for level in [0, 1, 2] {
        birads_model::fast::limit_simd(level);
        let got = fast.forward(&flat, 2, 64, 64);
        let got_dense = fast_dense.forward(&flat, 2, 64, 64);
        birads_model::fast::limit_simd(2);
        assert_close(&got, &want, &format!("level {level}: convnext"));
        assert_close(&got_dense, &want_dense, &format!("level {level}: densenet"));
    }
}
