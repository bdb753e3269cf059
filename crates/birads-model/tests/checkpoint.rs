//! Every weights format in, the own format out and back.

use std::path::{Path, PathBuf};

use birads_model::checkpoint::{load_any, read_meta, save, AnyModel, ModelKind};
use birads_model::{Cpu, MyConvNeXtConfig, MyDenseNetConfig};
use burn::prelude::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn small_convnext() -> MyConvNeXtConfig {
    MyConvNeXtConfig::new()
        .with_dims(vec![8, 16, 24, 32])
        .with_depths(vec![1, 2, 2, 1])
}

fn small_densenet() -> MyDenseNetConfig {
    MyDenseNetConfig::new()
        .with_growth(12)
        .with_blocks(vec![2, 2, 2, 2])
        .with_init_features(24)
        .with_bn_size(2)
}

fn input() -> Tensor<Cpu, 4> {
    let bytes = std::fs::read(fixtures().join("myconvnext_small.input.bin")).unwrap();
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Tensor::from_data(TensorData::new(v, [2, 3, 64, 64]), &Default::default())
}

fn run(m: &AnyModel<Cpu>) -> Vec<f32> {
    match m {
        AnyModel::ConvNeXt(m) => m.forward(input()).into_data().to_vec().unwrap(),
        AnyModel::DenseNet(m) => m
            .forward(input())
            .flatten::<2>(1, 2)
            .into_data()
            .to_vec()
            .unwrap(),
    }
}

fn load(path: &Path, kind: ModelKind) -> AnyModel<Cpu> {
    load_any::<Cpu>(
        path,
        kind,
        &small_convnext(),
        &small_densenet(),
        &Default::default(),
    )
    .unwrap()
    .0
}

#[test]
fn safetensors_with_original_keys_equals_the_pth() {
    let a = run(&load(
        &fixtures().join("myconvnext_small.pth"),
        ModelKind::ConvNeXt,
    ));
    let b = run(&load(
        &fixtures().join("myconvnext_small.safetensors"),
        ModelKind::ConvNeXt,
    ));
    assert_eq!(a, b);
}

#[test]
fn own_format_round_trips_weights_config_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    for (pth, kind) in [
        ("myconvnext_small.pth", ModelKind::ConvNeXt),
        ("mydensenet_small.pth", ModelKind::DenseNet),
    ] {
        let model = load(&fixtures().join(pth), kind);
        let out = dir.path().join(format!("{kind:?}.safetensors"));
        let extra = serde_json::json!({"classes": ["2", "3", "4A", "4B", "4C", "5"], "preprocess": {"size": 64}});
        save(&model, extra.clone(), &out).unwrap();
        let meta = read_meta(&out).unwrap().expect("own format");
        assert_eq!(meta.kind, kind);
        assert_eq!(meta.extra, extra);
        // No default configuration is needed: the file says how to build the model.
        let (back, meta2, report) = load_any::<Cpu>(
            &out,
            kind,
            &MyConvNeXtConfig::new(),
            &MyDenseNetConfig::new(),
            &Default::default(),
        )
        .unwrap();
        assert!(meta2.is_some() && report.loaded > 20);
        assert_eq!(run(&back), run(&model), "{pth}");
        // Saving again over an existing file works (atomic replace) and leaves no temp files.
        save(&back, extra, &out).unwrap();
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
}

#[test]
fn wrong_model_kind_and_torchvision_files_are_recognised() {
    let e = load_any::<Cpu>(
        &fixtures().join("mydensenet_small.pth"),
        ModelKind::ConvNeXt,
        &small_convnext(),
        &small_densenet(),
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("holds DenseNet weights"), "{e}");
    let (_, meta, report) = load_any::<Cpu>(
        &fixtures().join("convnext_small_tv.pth"),
        ModelKind::ConvNeXt,
        &small_convnext(),
        &small_densenet(),
        &Default::default(),
    )
    .unwrap();
    assert!(meta.is_none());
    assert!(!report.fresh.is_empty() && report.fresh.iter().all(|p| p.starts_with("head_")));
    let (_, _, report) = load_any::<Cpu>(
        &fixtures().join("densenet_small_tv.pth"),
        ModelKind::DenseNet,
        &small_convnext(),
        &small_densenet(),
        &Default::default(),
    )
    .unwrap();
    assert!(report.fresh.iter().any(|p| p.starts_with("task_heads")));
}

#[test]
fn full_configurations_have_the_original_parameter_counts() {
    let device = Default::default();
    let c = MyConvNeXtConfig::new().init::<Cpu>(&device);
    assert_eq!(c.num_params(), 28_117_734);
    let d = MyDenseNetConfig::new().init::<Cpu>(&device);
    assert_eq!(d.trainable_params(), 9_475_192);
    assert_eq!(d.running_stat_count(), 83_648);
    assert_eq!(
        MyDenseNetConfig::new().block_channels(),
        vec![256, 512, 1024, 1024]
    );
    let hidden: Vec<usize> = d
        .blocks
        .iter()
        .map(|b| b.cbam.channel_attention.fc1.weight.dims()[0])
        .collect();
    assert_eq!(hidden, vec![16, 21, 32, 25]);
}
