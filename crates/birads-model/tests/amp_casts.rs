//! amp's weight casts made at once (`amp::cast_weights`), with each gradient handed on in the
//! product's precision, give the passes and steps of burn's casts: on the CPU, with a host
//! function in the place of the cubecl kernel (its own process, as installing is global). The
//! GPU backends install the same operation with the kernel (`tests/amp_kernel.rs` checks the kernel).

use std::sync::Mutex;

use birads_model::adamw::AdamW;
use birads_model::amp::{self, autocast};
use birads_model::checkpoint::AnyModel;
use birads_model::gradcheck::{convnext_config, densenet_config, f32s, output_of, snapshot};
use birads_model::{Cpu, CpuTrain, MyConvNeXt};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{DType, Distribution, FloatDType};
use burn_autodiff::checkpoint::strategy::NoCheckpointing;

type B = CpuTrain;

/// How many tensors each call of the casts was given.
static CALLS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

fn counted(tensors: Vec<FloatTensor<Cpu>>, dtype: FloatDType) -> Vec<FloatTensor<Cpu>> {
    CALLS.lock().unwrap().push(tensors.len());
    tensors
        .into_iter()
        .map(|t| <Cpu as FloatTensorOps<Cpu>>::float_cast(t, dtype))
        .collect()
}

fn install(on: bool) {
    if on {
        amp::install::<Cpu, NoCheckpointing>();
        amp::install_kernel::<Cpu>(counted);
    } else {
        amp::uninstall::<Cpu, NoCheckpointing>();
        amp::uninstall_kernel::<Cpu>();
    }
}

fn inputs(outputs: usize) -> (Tensor<B, 4>, Tensor<B, 2>) {
    let device = Default::default();
    <B as Backend>::seed(&device, 7);
    let x = Tensor::<B, 4>::random([2, 3, 64, 64], Distribution::Uniform(-2.0, 2.0), &device);
    let r = Tensor::<B, 2>::random([2, outputs], Distribution::Uniform(-1.0, 1.0), &device);
    (x, r)
}

/// Every parameter's values, in visiting order.
struct Values(Vec<Vec<f32>>);

impl ModuleVisitor<B> for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(f32s(param.val()));
    }
}

/// One amp step of AdamW on `model`: its parameters after it.
fn step(model: MyConvNeXt<B>) -> Vec<Vec<f32>> {
    let (x, r) = inputs(6);
    let mut optim = AdamW::init::<B, MyConvNeXt<B>>(0.05, 1e-8);
    let grads = {
        let _amp = autocast(FloatDType::BF16);
        (model.forward(x) * r).sum().backward()
    };
    let grads = GradientsParams::from_grads(grads, &model);
    let model = optim.step(1e-2, model, grads);
    let mut values = Values(Vec::new());
    model.visit(&mut values);
    values.0
}

#[test]
fn casts_made_at_once_give_burns_passes_and_steps() {
    let device = Default::default();
    for (model, outputs) in [
        (AnyModel::ConvNeXt(convnext_config(true).init(&device)), 6),
        (AnyModel::DenseNet(densenet_config(true).init(&device)), 8),
    ] {
        let name = match model {
            AnyModel::ConvNeXt(_) => "convnext",
            AnyModel::DenseNet(_) => "densenet",
        };
        let _amp = autocast(FloatDType::BF16);
        install(false);
        let pass = || {
            let (x, r) = inputs(outputs);
            snapshot(&model, x, r)
        };
        let want = pass();
        assert!(want.grads.iter().all(|g| g.1 == DType::F32), "{name}");
        assert!(CALLS.lock().unwrap().is_empty(), "nothing installed yet");

        install(true);
        // The first pass casts each weight alone and learns which; the second casts them all in
        // one call.
        for pass_number in [1, 2] {
            let got = pass();
            let calls = std::mem::take(&mut *CALLS.lock().unwrap());
            let low: Vec<&String> = got
                .grads
                .iter()
                .filter(|g| g.1 == DType::BF16)
                .map(|g| &g.0)
                .collect();
            assert!(low.len() > 10, "{name}: {} gradients in bf16", low.len());
            assert!(
                low.iter()
                    .all(|n| n.ends_with("weight") || n.ends_with("bias")),
                "{name}: {low:?}"
            );
            // CBAM's channel MLP serves two products: its weights' two gradients are summed
            // in f32, as burn's casts sum them.
            let shared: Vec<&(String, DType, Vec<f32>)> = got
                .grads
                .iter()
                .filter(|g| g.0.contains("channel_attention.fc"))
                .collect();
            assert_eq!(shared.is_empty(), name == "convnext", "{name}");
            assert!(shared.iter().all(|g| g.1 == DType::F32), "{name}");
            let want_calls = if pass_number == 1 {
                vec![]
            } else {
                vec![low.len() + shared.len()]
            };
            assert_eq!(calls, want_calls, "{name} pass {pass_number}: calls");
            assert_eq!(got.output, want.output, "{name} pass {pass_number}: output");
            assert_eq!(got.grads.len(), want.grads.len());
            for (g, w) in got.grads.iter().zip(&want.grads) {
                assert_eq!(g.0, w.0);
                assert_eq!(g.2, w.2, "{name} pass {pass_number}: gradient {}", g.0);
            }
        }
        // Outside autocast nothing is cast.
        drop(_amp);
        let plain = output_of(&model, inputs(outputs).0);
        assert_eq!(plain.dtype(), DType::F32);
        assert!(CALLS.lock().unwrap().is_empty(), "{name}: no casts in f32");
        install(false);
    }

    // The optimiser widens the bf16 gradients: the step is the one with f32 gradients.
    let model: MyConvNeXt<B> = convnext_config(true).init(&device);
    // burn draws a parameter when it is first read, in each clone anew: read them all once.
    model.visit(&mut Values(Vec::new()));
    let want = step(model.clone());
    install(true);
    let _ = step(model.clone()); // learns the casts
    let got = step(model);
    install(false);
    assert!(!CALLS.lock().unwrap().is_empty(), "the casts ran");
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "parameter {i} after the step");
    }
}
