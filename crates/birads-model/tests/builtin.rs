//! The built-in BI-RADS model is an ordinary birads checkpoint compiled into the library.

use birads_model::builtin;
use birads_model::checkpoint::{AnyModel, Purpose};
use birads_model::fast::FastModel;
use birads_model::Cpu;
use burn::prelude::*;

#[test]
fn the_builtin_model_loads_as_a_four_class_grader_within_the_size_limit() {
    assert!(
        builtin::weights().len() <= 40_000_000,
        "the repository keeps at most 40 MB of model ({} bytes)",
        builtin::weights().len()
    );
    assert!(builtin::is_builtin(std::path::Path::new("builtin")));
    assert!(!builtin::is_builtin(std::path::Path::new(
        "./builtin.safetensors"
    )));
    assert!(builtin::CARD.contains("BUS-BRA"), "the card names its data");
    let device = Default::default();
    let (model, meta) = builtin::load::<Cpu>(&device).unwrap();
    assert_eq!(model.purpose(), Purpose::Grading);
    assert_eq!(meta.purpose(), Purpose::Grading);
    assert_eq!(
        meta.extra["classes"],
        serde_json::json!(["2", "3", "4", "5"])
    );
    let size = meta.extra["preprocess"]["size"].as_u64().unwrap() as usize;
    // Logits on a smooth ramp image, on burn's path and the fast path alike.
    let x = Tensor::<Cpu, 1, Int>::arange(0..(3 * size * size) as i64, &device)
        .float()
        .div_scalar((3 * size * size) as f32)
        .reshape([1, 3, size, size]);
    let flat: Vec<f32> = x.clone().into_data().to_vec().unwrap();
    let logits: Vec<f32> = match &model {
        AnyModel::DenseNet(m) => m.forward(x).into_data().to_vec().unwrap(),
        AnyModel::ConvNeXt(m) => m.forward(x).into_data().to_vec().unwrap(),
    };
    assert_eq!(logits.len(), 4);
    assert!(logits.iter().all(|v| v.is_finite()));
    let fast = FastModel::from_model(&model).forward(&flat, 1, size, size);
    for (a, b) in fast.iter().zip(&logits) {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
            "{fast:?} vs {logits:?}"
        );
    }
}

#[test]
fn asking_for_a_builtin_feature_model_is_an_error() {
    let err = birads_model::checkpoint::load_own_bytes::<Cpu>(
        builtin::weights(),
        builtin::NAME,
        Purpose::Features,
        &Default::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("a lesion-feature model is needed"),
        "{err}"
    );
}
