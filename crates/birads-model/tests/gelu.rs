//! birads' GELU with the exact backward (`birads_model::gelu`, installed on the CUDA training
//! backends, whose inherited backward is the tanh approximation's): the formula against a
//! finite difference in f64 and against burn-flex's exact backward, then whole ConvNeXt
//! gradients with it installed on the CPU's autodiff backend.

mod common;

use birads_model::checkpoint::AnyModel;
use birads_model::gelu::{exact_backward, install, uninstall};
use birads_model::gradcheck::{convnext_config, snapshot};
use birads_model::{Cpu, CpuTrain};
use burn::prelude::*;
use burn::tensor::activation::gelu;
use burn::tensor::{Distribution, FloatDType};
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use common::{assert_passes_agree, serial, OWN_PASS_LIMIT};

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec().unwrap()
}

fn grid<B: Backend>(dtype: FloatDType) -> Tensor<B, 1> {
    let x: Vec<f32> = (0..=240).map(|i| -6.0 + i as f32 * 0.05).collect();
    Tensor::<B, 1>::from_floats(x.as_slice(), &Default::default()).cast(dtype)
}

fn own_backward<B: Backend>(x: Tensor<B, 1>, grad: Tensor<B, 1>) -> Tensor<B, 1> {
    let g = exact_backward::<B>(x.into_primitive().tensor(), grad.into_primitive().tensor());
    Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(g))
}

#[test]
fn exact_backward_is_the_derivative_of_the_forward() {
    // f64: a central difference of burn's forward GELU, step 1e-5 (error ~1e-10).
    let x = grid::<Cpu>(FloatDType::F64);
    let h = 1e-5;
    let slope = (gelu(x.clone().add_scalar(h)) - gelu(x.clone().sub_scalar(h))).div_scalar(2.0 * h);
    let got = values(own_backward(x.clone(), x.ones_like()));
    for (i, (g, w)) in got.iter().zip(values(slope)).enumerate() {
        assert!(
            (g - w).abs() < 1e-8,
            "x = {}: {g} against {w}",
            -6.0 + i as f64 * 0.05
        );
    }
}

#[test]
fn exact_backward_equals_burn_flexs_gelu_backward() {
    let _serial = serial();
    let x = grid::<CpuTrain>(FloatDType::F32).require_grad();
    let device = Default::default();
    let r = Tensor::<CpuTrain, 1>::random(x.dims(), Distribution::Uniform(-1.0, 1.0), &device);
    let grads = (gelu(x.clone()) * r.clone()).sum().backward();
    let want = values(x.grad(&grads).unwrap());
    let got = values(own_backward(x.inner(), r.inner()));
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-6, "{g} against {w}");
    }
}

#[test]
fn convnext_gradients_are_the_same_with_the_own_gelu() {
    let _serial = serial();
    let device = Default::default();
    <CpuTrain as Backend>::seed(&device, 9);
    let model = AnyModel::ConvNeXt(convnext_config(true).init(&device));
    let x =
        Tensor::<CpuTrain, 4>::random([2, 3, 64, 64], Distribution::Uniform(-2.0, 2.0), &device);
    let r = Tensor::<CpuTrain, 2>::random([2, 6], Distribution::Uniform(-1.0, 1.0), &device);
    let burns = snapshot(&model, x.clone(), r.clone());
    install::<Cpu, NoCheckpointing>();
    let own = snapshot(&model, x, r);
    uninstall::<Cpu, NoCheckpointing>();
    let diffs = assert_passes_agree(&own, &burns, OWN_PASS_LIMIT);
    // Behind the head's first GELU the two differ by rounding (else the own one never ran);
    // the last layer's gradient does not pass through a GELU.
    let by_name = |n: &str| diffs.iter().find(|d| d.name == n).unwrap().relative;
    assert!(by_name("head_fc1.weight") > 0.0, "the own GELU did not run");
    assert_eq!(by_name("head_fc2.weight"), 0.0);
}
