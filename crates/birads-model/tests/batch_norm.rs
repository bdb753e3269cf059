//! birads' BatchNorm training pass with its own backward (`birads_model::batch_norm`,
//! installed on the GPU training backends): the closed-form backward against burn's autodiff
//! of the same forward in f64, then `BatchNorm2d` and a whole MyDenseNet with it installed on
//! the CPU's autodiff backend against burn's operations.

mod common;

use birads_model::batch_norm::{backward, install, normalize_channels_last, statistics, uninstall};
use birads_model::blocks::BatchNorm2d;
use birads_model::checkpoint::AnyModel;
use birads_model::gradcheck::{densenet_config, snapshot};
use birads_model::{amp, Cpu, CpuTrain};
use burn::module::{AutodiffModule, Module, Param};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use common::{
    assert_passes_agree, bf16_if, relative_f64 as relative, running_statistics, serial,
    uniform as random, values_f64 as values, OWN_AND_BF16_INPUT, OWN_PASS_LIMIT,
};

#[test]
fn closed_form_backward_equals_burns_autodiff_in_f64() {
    let _serial = serial();
    let device = Default::default();
    <CpuTrain as Backend>::seed(&device, 4);
    let f64 = FloatDType::F64;
    // Off-centre inputs of different scale per channel, as BatchNorm meets them.
    let x = (random::<CpuTrain, 4>([3, 5, 7, 2], -1.0, 1.0) * random([1, 5, 1, 1], 0.5, 3.0)
        + random([1, 5, 1, 1], -2.0, 2.0))
    .cast(f64)
    .require_grad();
    let weight = random::<CpuTrain, 1>([5], 0.5, 1.5)
        .cast(f64)
        .require_grad();
    let bias = random::<CpuTrain, 1>([5], -1.0, 1.0)
        .cast(f64)
        .require_grad();
    let r = random::<CpuTrain, 4>([3, 5, 7, 2], -1.0, 1.0).cast(f64);
    let stats = statistics(x.clone(), weight.clone(), bias.clone(), 1e-5);
    let y = normalize_channels_last(x.clone(), &stats, false);
    let grads = (y * r.clone()).sum().backward();
    let (dx, dw, db) = backward(
        x.clone().inner(),
        stats.mean.inner(),
        stats.inv_std.inner(),
        weight.clone().inner(),
        r.inner(),
    );
    for (what, got, want) in [
        ("∂x", values(dx), values(x.grad(&grads).unwrap())),
        ("∂γ", values(dw), values(weight.grad(&grads).unwrap())),
        ("∂β", values(db), values(bias.grad(&grads).unwrap())),
    ] {
        // Both sides round in f64 (they agree to 1e-9 or better); leaving out any term of the
        // closed form moves the result by 1e-2 or more.
        let d = relative(&got, &want);
        assert!(d < 1e-8, "{what}: {d:.2e}");
    }
}

/// A fresh `BatchNorm2d` (its own running statistics: a clone would share them) with these
/// affine parameters.
fn batch_norm(weight: &Tensor<CpuTrain, 1>, bias: &Tensor<CpuTrain, 1>) -> BatchNorm2d<CpuTrain> {
    let mut bn = BatchNorm2d::<CpuTrain>::new(weight.dims()[0], &Default::default());
    bn.weight = Param::from_tensor(weight.clone());
    bn.bias = Param::from_tensor(bias.clone());
    bn
}

/// Output (in f32, as a convolution after it hands back), ∂x, ∂γ, ∂β of one pass through
/// `forward` under a loss that weighs every output differently.
fn pass_through(
    bn: &BatchNorm2d<CpuTrain>,
    x: Tensor<CpuTrain, 4>,
    forward: impl Fn(&BatchNorm2d<CpuTrain>, Tensor<CpuTrain, 4>) -> Tensor<CpuTrain, 4>,
) -> Vec<Vec<f64>> {
    let x = x.require_grad();
    let y = amp::in_dtype(forward(bn, x.clone()), DType::F32);
    let r = Tensor::<CpuTrain, 4>::ones(y.dims(), &Default::default())
        .cumsum(3)
        .sin();
    let grads = (y.clone() * r).sum().backward();
    vec![
        values(y),
        values(x.grad(&grads).unwrap()),
        values(bn.weight.val().grad(&grads).unwrap()),
        values(bn.bias.val().grad(&grads).unwrap()),
    ]
}

/// One training pass (`forward`, or `forward_relu` with `relu`): output, ∂x, ∂γ, ∂β, running
/// mean and variance afterwards.
fn training_pass(bn: &BatchNorm2d<CpuTrain>, x: Tensor<CpuTrain, 4>, relu: bool) -> Vec<Vec<f64>> {
    let mut pass = pass_through(bn, x, |bn, x| {
        if relu {
            bn.forward_relu(x)
        } else {
            bn.forward(x)
        }
    });
    pass.push(values(bn.running_mean.value_sync()));
    pass.push(values(bn.running_var.value_sync()));
    pass
}

#[test]
fn own_training_pass_equals_burns_operations() {
    let _serial = serial();
    <CpuTrain as Backend>::seed(&Default::default(), 6);
    let x = random::<CpuTrain, 4>([4, 6, 5, 3], -1.0, 3.0);
    // Away from the identity initial values.
    let (weight, bias) = (random([6], 0.5, 1.5), random([6], -1.0, 1.0));
    let names = ["output", "∂x", "∂γ", "∂β", "running mean", "running var"];
    // With the ReLU after it (which zeroes about half the outputs and their gradients here).
    let burns = training_pass(&batch_norm(&weight, &bias), x.clone(), true);
    install::<Cpu, NoCheckpointing>();
    let own = training_pass(&batch_norm(&weight, &bias), x.clone(), true);
    uninstall::<Cpu, NoCheckpointing>();
    for ((name, got), want) in names.iter().zip(&own).zip(&burns) {
        let d = relative(got, want);
        assert!(d < 1e-5, "with ReLU, {name}: {d:.2e}");
    }
    let zeros = own[0].iter().filter(|&&v| v == 0.0).count();
    assert!(zeros > own[0].len() / 5, "the ReLU cut {zeros} values");
    let burns = training_pass(&batch_norm(&weight, &bias), x.clone(), false);
    let bn = batch_norm(&weight, &bias);
    install::<Cpu, NoCheckpointing>();
    let own = training_pass(&bn, x.clone(), false);
    uninstall::<Cpu, NoCheckpointing>();
    for ((name, got), want) in names.iter().zip(&own).zip(&burns) {
        let d = relative(got, want);
        assert!(d < 1e-5, "{name}: {d:.2e}");
    }
    // The running statistics moved (else comparing them says nothing), and evaluation uses
    // them, not the own training pass.
    assert!(own[4].iter().all(|&m| m != 0.0));
    let by_hand = with_running_statistics(&bn, &values(x.clone()), 5 * 3);
    let eval = values(bn.valid().forward(x.inner()));
    assert!(relative(&eval, &by_hand) < 1e-5);
}

/// Under amp a BatchNorm takes a convolution's product in the precision it was computed in
/// (`amp::conv2d_as_computed`) and writes the next convolution's precision itself
/// (`forward_relu_for`): the same values and gradients as casts around an f32 BatchNorm, with
/// burn's operations and with the own pass.
#[test]
fn products_precision_in_and_out_equals_casts_around() {
    let _serial = serial();
    <CpuTrain as Backend>::seed(&Default::default(), 7);
    let x = random::<CpuTrain, 4>([3, 5, 4, 6], -1.0, 3.0);
    let (weight, bias) = (random([5], 0.5, 1.5), random([5], -1.0, 1.0));
    let bf16 = FloatDType::BF16;
    let names = ["output", "∂x", "∂γ", "∂β"];
    for (own, product_in) in OWN_AND_BF16_INPUT {
        let case = format!("own pass {own}, bf16 input {product_in}");
        let x = bf16_if(x.clone(), product_in);
        let around = |bn: &BatchNorm2d<CpuTrain>, x: Tensor<CpuTrain, 4>| {
            bn.forward_relu(amp::in_dtype(x, DType::F32)).cast(bf16)
        };
        let within = |bn: &BatchNorm2d<CpuTrain>, x| {
            let y = bn.forward_relu_for(x, Some(bf16));
            assert_eq!(y.dtype(), DType::BF16, "{case}");
            y
        };
        if own {
            install::<Cpu, NoCheckpointing>();
        }
        let want = pass_through(&batch_norm(&weight, &bias), x.clone(), around);
        let got = pass_through(&batch_norm(&weight, &bias), x.clone(), within);
        let wide = amp::in_dtype(x.clone(), DType::F32);
        let unrounded = values(batch_norm(&weight, &bias).forward_relu(wide));
        if own {
            uninstall::<Cpu, NoCheckpointing>();
        }
        for ((name, got), want) in names.iter().zip(&got).zip(&want) {
            assert_eq!(got, want, "{case}, {name}");
        }
        // bf16 rounded the output (else the comparison would not see a missed cast).
        assert_ne!(got[0], unrounded, "{case}: the output is not bf16");
    }
}

/// `(x − running mean)/√(running var + ε)·γ + β` by hand, for `x` of `plane` values per
/// channel and image.
fn with_running_statistics(bn: &BatchNorm2d<CpuTrain>, x: &[f64], plane: usize) -> Vec<f64> {
    let [mean, var, weight, bias] = [
        values(bn.running_mean.value_sync()),
        values(bn.running_var.value_sync()),
        values(bn.weight.val()),
        values(bn.bias.val()),
    ];
    x.iter()
        .enumerate()
        .map(|(i, v)| {
            let c = (i / plane) % mean.len();
            (v - mean[c]) / (var[c] + 1e-5).sqrt() * weight[c] + bias[c]
        })
        .collect()
}

#[test]
fn densenet_gradients_are_the_same_with_the_own_batch_norm() {
    let _serial = serial();
    let device = Default::default();
    <CpuTrain as Backend>::seed(&device, 11);
    let config = densenet_config(true);
    // Loaded from its record, so that its parameters are drawn now: a clone of a freshly built
    // model draws its lazily initialised parameters anew.
    let base = config
        .init::<CpuTrain>(&device)
        .load_record(config.init::<CpuTrain>(&device).into_record());
    let x = random::<CpuTrain, 4>([2, 3, 64, 64], -2.0, 2.0);
    let r = random::<CpuTrain, 2>([2, 8], -1.0, 1.0);
    let pass = |own: bool| {
        // The same weights with running statistics of its own (a clone would share them).
        let model = config
            .init::<CpuTrain>(&device)
            .load_record(base.clone().into_record());
        let model = AnyModel::DenseNet(model);
        let (x, r) = (x.clone(), r.clone());
        if own {
            install::<Cpu, NoCheckpointing>();
        }
        let s = snapshot(&model, x, r);
        uninstall::<Cpu, NoCheckpointing>();
        let AnyModel::DenseNet(m) = model else {
            unreachable!()
        };
        (s, running_statistics(&m))
    };
    let (burns, burns_running) = pass(false);
    let (own, own_running) = pass(true);
    let diffs = assert_passes_agree(&own, &burns, OWN_PASS_LIMIT);
    let d = relative(&own_running, &burns_running);
    assert!(d < 1e-6, "running statistics: {d:.2e}");
    // Behind the first BatchNorm the two differ by rounding (else the own one never ran).
    let by_name = |n: &str| diffs.iter().find(|d| d.name == n).unwrap().relative;
    assert!(
        by_name("conv0.weight") > 0.0,
        "the own BatchNorm did not run"
    );
}
