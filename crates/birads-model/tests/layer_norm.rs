//! birads' LayerNorm training pass with its own backward (`birads_model::layer_norm`,
//! installed on the GPU training backends): its forward against burn's `LayerNorm`, the
//! closed-form backward against burn's autodiff of the same forward in f64, then a whole
//! MyConvNeXt with it installed on the CPU's autodiff backend against burn's operations.
//! (`tests/cubecl/` checks the kernels that run it on the cubecl backends.)

mod common;

use birads_model::checkpoint::AnyModel;
use birads_model::gradcheck::{convnext_config, snapshot};
use birads_model::layer_norm::{backward, forward, install, installed, rows, rows_for, uninstall};
use birads_model::{amp, Cpu, CpuTrain};
use burn::module::{Module, Param};
use burn::nn::LayerNormConfig;
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use common::{
    assert_passes_agree, bf16_if, relative_f64 as relative, serial, uniform as random,
    values_f64 as values, OWN_AND_BF16_INPUT, OWN_PASS_LIMIT,
};

/// Rows off centre and of different scale, as LayerNorm meets them.
fn rows_input<B: Backend>(r: usize, c: usize) -> Tensor<B, 2> {
    random::<B, 2>([r, c], -1.0, 1.0) * random([r, 1], 0.5, 3.0) + random([r, 1], -2.0, 2.0)
}

#[test]
fn forward_equals_burns_layer_norm() {
    let _serial = serial();
    let device = Default::default();
    <Cpu as Backend>::seed(&device, 3);
    for (r, c, epsilon) in [(7, 13, 1e-6), (50, 96, 1e-5), (1, 768, 1e-6)] {
        let mut norm = LayerNormConfig::new(c)
            .with_epsilon(epsilon)
            .init::<Cpu>(&device);
        norm.gamma = Param::from_tensor(random([c], 0.5, 1.5));
        norm.beta = Some(Param::from_tensor(random([c], -1.0, 1.0)));
        let x = rows_input::<Cpu>(r, c);
        let want = values(norm.forward(x.clone()));
        let beta = norm.beta.as_ref().unwrap().val();
        let (y, mean, inv_std) = forward(x.clone(), norm.gamma.val(), beta, epsilon, DType::F32);
        // f32 rounding of two ways to write it (measured up to 1.5e-6).
        let d = relative(&values(y), &want);
        assert!(d < 1e-5, "{r}×{c}: output {d:.2e}");
        // The statistics the backward receives, by hand.
        let xs = values(x);
        for (i, (m, s)) in values(mean).iter().zip(values(inv_std)).enumerate() {
            let row = &xs[i * c..(i + 1) * c];
            let mu = row.iter().sum::<f64>() / c as f64;
            let var = row.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / c as f64;
            assert!(
                (m - mu).abs() < 1e-5 * (1.0 + mu.abs()),
                "row {i}: mean {m}"
            );
            let want = 1.0 / (var + epsilon).sqrt();
            assert!(
                (s - want).abs() < 1e-5 * want,
                "row {i}: 1/σ {s} against {want}"
            );
        }
    }
}

#[test]
fn closed_form_backward_equals_burns_autodiff_in_f64() {
    let _serial = serial();
    let device = Default::default();
    <CpuTrain as Backend>::seed(&device, 4);
    let f64 = FloatDType::F64;
    let x = rows_input::<CpuTrain>(9, 21).cast(f64).require_grad();
    let weight = random::<CpuTrain, 1>([21], 0.5, 1.5)
        .cast(f64)
        .require_grad();
    let bias = random::<CpuTrain, 1>([21], -1.0, 1.0)
        .cast(f64)
        .require_grad();
    let r = random::<CpuTrain, 2>([9, 21], -1.0, 1.0).cast(f64);
    let (y, mean, inv_std) = forward(x.clone(), weight.clone(), bias.clone(), 1e-6, f64.into());
    let grads = (y * r.clone()).sum().backward();
    let (dx, dw, db) = backward(
        r.inner(),
        x.clone().inner(),
        weight.clone().inner(),
        mean.inner(),
        inv_std.inner(),
    );
    for (what, got, want) in [
        ("∂x", values(dx), values(x.grad(&grads).unwrap())),
        ("∂γ", values(dw), values(weight.grad(&grads).unwrap())),
        ("∂β", values(db), values(bias.grad(&grads).unwrap())),
    ] {
        // Both sides round in f64; leaving out any term of the closed form moves the result
        // by 1e-2 or more.
        let d = relative(&got, &want);
        assert!(d < 1e-8, "{what}: {d:.2e}");
    }
}

#[test]
fn own_training_pass_equals_burns_layer_norm() {
    let _serial = serial();
    let device = Default::default();
    <CpuTrain as Backend>::seed(&device, 5);
    let mut norm = LayerNormConfig::new(40)
        .with_epsilon(1e-6)
        .init::<CpuTrain>(&device);
    norm.gamma = Param::from_tensor(random([40], 0.5, 1.5));
    norm.beta = Some(Param::from_tensor(random([40], -1.0, 1.0)));
    let x = rows_input::<CpuTrain>(30, 40);
    let r = random::<CpuTrain, 2>([30, 40], -1.0, 1.0);
    let pass = || {
        let x = x.clone().require_grad();
        let y = rows(&norm, 1e-6, x.clone());
        let grads = (y.clone() * r.clone()).sum().backward();
        [
            values(y),
            values(x.grad(&grads).unwrap()),
            values(norm.gamma.val().grad(&grads).unwrap()),
            values(norm.beta.as_ref().unwrap().val().grad(&grads).unwrap()),
        ]
    };
    assert!(installed::<CpuTrain>().is_none());
    let burns = pass();
    install::<Cpu, NoCheckpointing>();
    assert!(installed::<CpuTrain>().is_some());
    let own = pass();
    uninstall::<Cpu, NoCheckpointing>();
    for ((name, got), want) in ["output", "∂x", "∂γ", "∂β"].iter().zip(&own).zip(&burns) {
        let d = relative(got, want);
        assert!(d < 1e-5, "{name}: {d:.2e}");
    }
}

/// Under amp a LayerNorm takes a convolution's product in the precision it was computed in
/// and writes the precision of the linear layer after it (`rows_for`): the same values and
/// gradients as casts around an f32 LayerNorm, with burn's LayerNorm and with the own pass.
#[test]
fn products_precision_in_and_out_equals_casts_around() {
    let _serial = serial();
    let device = Default::default();
    <CpuTrain as Backend>::seed(&device, 6);
    let mut norm = LayerNormConfig::new(40)
        .with_epsilon(1e-6)
        .init::<CpuTrain>(&device);
    norm.gamma = Param::from_tensor(random([40], 0.5, 1.5));
    norm.beta = Some(Param::from_tensor(random([40], -1.0, 1.0)));
    let r = random::<CpuTrain, 2>([30, 40], -1.0, 1.0);
    let bf16 = FloatDType::BF16;
    let pass = |x: Tensor<CpuTrain, 2>, around: bool| {
        let x = x.require_grad();
        let y = if around {
            rows(&norm, 1e-6, amp::in_dtype(x.clone(), DType::F32)).cast(bf16)
        } else {
            rows_for(&norm, 1e-6, x.clone(), Some(bf16))
        };
        assert_eq!(y.dtype(), DType::BF16);
        let grads = (y.clone().cast(FloatDType::F32) * r.clone())
            .sum()
            .backward();
        [
            values(y),
            values(x.grad(&grads).unwrap()),
            values(norm.gamma.val().grad(&grads).unwrap()),
            values(norm.beta.as_ref().unwrap().val().grad(&grads).unwrap()),
        ]
    };
    let x = rows_input::<CpuTrain>(30, 40);
    for (own, product_in) in OWN_AND_BF16_INPUT {
        let case = format!("own pass {own}, bf16 input {product_in}");
        let x = bf16_if(x.clone(), product_in);
        if own {
            install::<Cpu, NoCheckpointing>();
        }
        let (want, got) = (pass(x.clone(), true), pass(x.clone(), false));
        let unrounded = values(rows(&norm, 1e-6, amp::in_dtype(x, DType::F32)));
        if own {
            uninstall::<Cpu, NoCheckpointing>();
        }
        for ((name, got), want) in ["output", "∂x", "∂γ", "∂β"].iter().zip(&got).zip(&want)
        {
            assert_eq!(got, want, "{case}, {name}");
        }
        assert_ne!(got[0], unrounded, "{case}: the output is not bf16");
    }
}

#[test]
fn convnext_gradients_are_the_same_with_the_own_layer_norm() {
    let _serial = serial();
    let device = Default::default();
    <CpuTrain as Backend>::seed(&device, 12);
    let config = convnext_config(true);
    // Loaded from its record, so that its parameters are drawn now: a clone of a freshly built
    // model draws its lazily initialised parameters anew.
    let model = config
        .init::<CpuTrain>(&device)
        .load_record(config.init::<CpuTrain>(&device).into_record());
    let model = AnyModel::ConvNeXt(model);
    let x = random::<CpuTrain, 4>([2, 3, 64, 64], -2.0, 2.0);
    let r = random::<CpuTrain, 2>([2, 6], -1.0, 1.0);
    let burns = snapshot(&model, x.clone(), r.clone());
    install::<Cpu, NoCheckpointing>();
    let own = snapshot(&model, x, r);
    uninstall::<Cpu, NoCheckpointing>();
    let diffs = assert_passes_agree(&own, &burns, OWN_PASS_LIMIT);
    // The two differ by rounding in the normalisations' parameters (else the own one never
    // ran): the stem's LayerNorm2d, a block's LayerNorm and the head's.
    let by_name = |n: &str| {
        let d = diffs.iter().find(|d| d.name.contains(n));
        d.unwrap_or_else(|| panic!("no gradient named like {n}"))
            .relative
    };
    for name in ["stem_norm.weight", "norm.gamma", "head_norm.beta"] {
        assert!(
            by_name(name) > 0.0,
            "the own LayerNorm did not run ({name})"
        );
    }
}
