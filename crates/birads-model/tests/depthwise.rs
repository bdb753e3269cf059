//! The own backward of the depthwise convolution (`birads_model::depthwise`) against burn's
//! convolution backward: the two gradient formulas alone, then whole ConvNeXt gradients with
//! it installed on the CPU's autodiff backend (on CUDA it replaces burn-cubecl's
//! channel-by-channel weight gradient).

mod common;

use birads_model::amp::autocast;
use birads_model::checkpoint::AnyModel;
use birads_model::depthwise::{input_gradient, install, uninstall, weight_gradient_in_chunks};
use birads_model::gradcheck::{convnext_config, gradient_cosine, snapshot};
use birads_model::{Cpu, CpuTrain};
use burn::prelude::*;
use burn::tensor::{Distribution, FloatDType};
use burn_autodiff::checkpoint::strategy::NoCheckpointing;

use common::{
    assert_own_depthwise_ran, assert_passes_agree, depthwise_reference, max_abs_diff, serial,
    DEPTHWISE_CASES, OWN_PASS_LIMIT,
};

type B = CpuTrain;

fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn assert_close(what: &str, got: Vec<f32>, want: Vec<f32>) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(&got, &want);
    assert!(
        diff <= 1e-5 * scale.max(1.0),
        "{what}: {diff} (scale {scale})"
    );
}

#[test]
fn both_gradients_equal_burns_convolution_backward() {
    let _serial = serial();
    let device = Default::default();
    <B as Backend>::seed(&device, 3);
    for case in DEPTHWISE_CASES {
        let (n, c, h, w, k, p, chunk) = case;
        let want = depthwise_reference(case);
        let got_x = values(input_gradient::<Cpu>(want.r.clone(), want.weight, p));
        let got_w = values(weight_gradient_in_chunks::<Cpu>(
            want.x, want.r, k, p, chunk,
        ));
        let case = format!("{n}×{c}×{h}×{w}, k {k}, p {p}, chunk {chunk}");
        assert_close(&format!("∂x {case}"), got_x, want.grad_x);
        assert_close(&format!("∂w {case}"), got_w, want.grad_w);
    }
}

fn convnext() -> AnyModel<B> {
    AnyModel::ConvNeXt(convnext_config(true).init(&Default::default()))
}

#[test]
fn convnext_gradients_are_the_same_with_the_own_backward() {
    let _serial = serial();
    let device = Default::default();
    <B as Backend>::seed(&device, 5);
    let model = convnext();
    let x = Tensor::<B, 4>::random([2, 3, 64, 64], Distribution::Uniform(-2.0, 2.0), &device);
    let r = Tensor::<B, 2>::random([2, 6], Distribution::Uniform(-1.0, 1.0), &device);
    let burn_pass = snapshot(&model, x.clone(), r.clone());
    install::<Cpu, NoCheckpointing>();
    let own = snapshot(&model, x.clone(), r.clone());
    let own_amp = {
        let _amp = autocast(FloatDType::BF16);
        snapshot(&model, x, r)
    };
    uninstall::<Cpu, NoCheckpointing>();
    assert_own_depthwise_ran(&own, &burn_pass);
    assert_passes_agree(&own, &burn_pass, OWN_PASS_LIMIT);
    // Under autocast the own backward runs on bf16 inputs: close to f32 as a whole.
    let cosine = gradient_cosine(&own_amp, &burn_pass);
    assert!(
        cosine > 0.9999,
        "amp with the own backward: cosine {cosine}"
    );
    let dtypes_f32 = own_amp
        .grads
        .iter()
        .all(|g| g.1 == burn::tensor::DType::F32);
    assert!(dtypes_f32, "every gradient of an f32 parameter is f32");
}
