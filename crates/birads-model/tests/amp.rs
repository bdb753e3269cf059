//! Mixed precision (`amp::autocast`): parameters stay f32, convolutions and linear layers
//! compute in bf16. On the CPU backend (which holds bf16 tensors too) the result must be
//! close to the f32 pass — within what bf16's 8-bit mantissa allows — but not equal to it
//! (the products really ran in bf16), and every gradient must come back f32. The full-bf16
//! pass (`gradcheck::bf16_snapshot`, device-check's yardstick for `--precision bf16`) must run
//! in bf16 throughout and stay near f32 too.

use birads_model::amp::{autocast, compute_dtype};
use birads_model::checkpoint::AnyModel;
use birads_model::gradcheck::{
    bf16_snapshot, compare, convnext_config, densenet_config, gradient_cosine, snapshot,
};
use birads_model::CpuTrain;
use burn::prelude::*;
use burn::tensor::{DType, Distribution, FloatDType};

type B = CpuTrain;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn check(model: AnyModel<B>, outputs: usize, limits: Limits) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    <B as Backend>::seed(&device, 7);
    let x = Tensor::<B, 4>::random([8, 3, 64, 64], Distribution::Uniform(-2.0, 2.0), &device);
    let r = Tensor::<B, 2>::random([8, outputs], Distribution::Uniform(-1.0, 1.0), &device);
    let f32_pass = snapshot(&model, x.clone(), r.clone());

    let bf16_pass = {
        let _amp = autocast(FloatDType::BF16);
        snapshot(&model, x, r)
    };
    assert_eq!(compute_dtype(), None, "the scope ended with its guard");
    assert!(bf16_pass.grads.len() > 10);
    for (name, dtype, _) in &bf16_pass.grads {
        assert_eq!(*dtype, DType::F32, "{name}: gradient of an f32 parameter");
    }
    let diffs = compare(&bf16_pass, &f32_pass).unwrap();
    let output = &diffs[0];
    assert!(
        output.relative > 1e-4 && output.relative < 0.02,
        "output {} from f32 (bf16 should be near but not equal)",
        output.relative
    );
    let cosine = gradient_cosine(&bf16_pass, &f32_pass);
    assert!(
        cosine > limits.all_gradients,
        "all gradients: cosine {cosine}"
    );
    if let Some((relative, cosine)) = limits.each_gradient {
        for d in &diffs {
            assert!(
                d.relative < relative && d.cosine > cosine,
                "{}: relative {:.4}, cosine {:.5}",
                d.name,
                d.relative,
                d.cosine
            );
        }
    }
}

/// How close the bf16 pass must come. A freshly drawn DenseNet in training mode is
/// sensitive: jittering its input by 2^-8 alone moves single gradients by up to 25 %, so only
/// the gradient as a whole is held to a bound there; ConvNeXt is held tensor by tensor.
struct Limits {
    all_gradients: f64,
    each_gradient: Option<(f64, f64)>,
}

#[test]
fn convnext_under_autocast_is_close_to_f32() {
    let config = convnext_config(true);
    let limits = Limits {
        all_gradients: 0.9999,
        each_gradient: Some((0.05, 0.999)),
    };
    check(
        AnyModel::ConvNeXt(config.init(&Default::default())),
        6,
        limits,
    );
}

#[test]
fn densenet_under_autocast_is_close_to_f32() {
    let config = densenet_config(true);
    let limits = Limits {
        all_gradients: 0.95,
        each_gradient: None,
    };
    check(
        AnyModel::DenseNet(config.init(&Default::default())),
        8,
        limits,
    );
}

#[test]
fn autocast_scopes_nest_and_restore() {
    assert_eq!(compute_dtype(), None);
    {
        let _outer = autocast(FloatDType::BF16);
        {
            let _inner = autocast(FloatDType::F16);
            assert_eq!(compute_dtype(), Some(FloatDType::F16));
        }
        assert_eq!(compute_dtype(), Some(FloatDType::BF16));
    }
    assert_eq!(compute_dtype(), None);
}

/// The full-bf16 pass: every gradient bf16, the output near f32 but not equal, and
/// ConvNeXt's gradients as a whole close to f32's (DenseNet's move much more in bf16: the
/// limits of `densenet_under_autocast_is_close_to_f32`).
#[test]
fn a_full_bf16_pass_runs_in_bf16() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    for (model, outputs, cosine) in [
        (
            AnyModel::ConvNeXt(convnext_config(true).init(&device)),
            6,
            0.9995,
        ),
        (
            AnyModel::DenseNet(densenet_config(true).init(&device)),
            8,
            0.8,
        ),
    ] {
        <B as Backend>::seed(&device, 7);
        let x = Tensor::<B, 4>::random([4, 3, 64, 64], Distribution::Uniform(-2.0, 2.0), &device);
        let r = Tensor::<B, 2>::random([4, outputs], Distribution::Uniform(-1.0, 1.0), &device);
        let f32_pass = snapshot(&model, x.clone(), r.clone());
        let bf16_pass = bf16_snapshot(&model, x, r, dir.path()).unwrap();
        assert_eq!(bf16_pass.grads.len(), f32_pass.grads.len());
        for (name, dtype, _) in &bf16_pass.grads {
            assert_eq!(*dtype, DType::BF16, "{name}: gradient of a bf16 parameter");
        }
        let full = compare(&bf16_pass, &f32_pass).unwrap()[0].relative;
        let c = gradient_cosine(&bf16_pass, &f32_pass);
        println!("output {full:.2e}, all gradients' cosine {c:.6}");
        assert!(full > 1e-4 && full < 0.05, "output: {full} from f32");
        assert!(c > cosine, "all gradients: cosine {c}");
    }
}
