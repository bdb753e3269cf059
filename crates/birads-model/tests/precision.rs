//! `precision::claim` on the CPU backend. burn keeps a device's default float type for the
//! whole process, so this file is one test: its own process, run in order.

use std::collections::BTreeSet;

use birads_model::checkpoint::AnyModel;
use birads_model::precision::{claim, claim_own};
use birads_model::Cpu;
use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

/// The float types of a module's parameters and running statistics.
#[derive(Default)]
struct Types(BTreeSet<String>);

impl<B: Backend> ModuleVisitor<B> for Types {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.insert(format!("{:?}", param.val().dtype()));
    }
}

#[test]
fn a_device_makes_the_claimed_float_type_and_refuses_another() {
    let device = Default::default();
    claim::<Cpu>(&device, FloatDType::BF16).expect("a fresh device takes bf16");
    // Every way a model or a loader makes a tensor now makes bf16 ones.
    let made = [
        Tensor::<Cpu, 2>::zeros([2, 3], &device).dtype(),
        Tensor::<Cpu, 1>::from_floats([1.0, 2.0], &device).dtype(),
        Tensor::<Cpu, 1>::from_data(TensorData::from([1.0f32, 2.0]), &device).dtype(),
        Tensor::<Cpu, 2>::random([2, 2], burn::tensor::Distribution::Default, &device).dtype(),
    ];
    assert_eq!(made, [DType::BF16; 4]);
    // Asking again for the same type is fine; another one is refused, and says why.
    claim::<Cpu>(&device, FloatDType::BF16).expect("the same type again");
    let error = claim_own::<Cpu>(&device).expect_err("f32 on a bf16 device");
    let message = error.to_string();
    assert!(
        message.contains("BF16") && message.contains("F32") && message.contains("own process"),
        "{message}"
    );
    assert_eq!((error.wanted, error.now), (DType::F32, DType::BF16));

    // An f32 checkpoint (the built-in model) loads in the device's type, and runs there.
    let (model, _) = birads_model::builtin::load::<Cpu>(&device).unwrap();
    let mut types = Types::default();
    match &model {
        AnyModel::ConvNeXt(m) => m.visit(&mut types),
        AnyModel::DenseNet(m) => m.visit(&mut types),
    }
    assert_eq!(types.0.into_iter().collect::<Vec<_>>(), ["BF16"]);
    let x = Tensor::<Cpu, 4>::zeros([1, 3, 64, 64], &device);
    let out = birads_model::gradcheck::output_of(&model, x);
    assert_eq!(out.dtype(), DType::BF16);
    let values = out.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()), "{values:?}");
}
