//! Eval-mode outputs equal PyTorch's on checkpoints written by
//! `scripts/make_model_fixtures.py` (small configurations of both models).

use std::path::{Path, PathBuf};

use birads_model::weights::{load_convnext, load_densenet, Source};
use birads_model::{Cpu, MyConvNeXtConfig, MyDenseNetConfig};
use burn::module::AutodiffModule;
use burn::prelude::*;

mod common;
use common::{convnext_config, densenet_config, max_abs_diff, read_f32, usizes};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Case {
    config: serde_json::Value,
    input: Tensor<Cpu, 4>,
    input_shape: Vec<usize>,
    expected: Vec<f32>,
}

fn case(name: &str) -> Case {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("{name}.json"))).unwrap(),
    )
    .unwrap();
    let shape: Vec<usize> = meta["input_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let data = read_f32(&fixtures().join(format!("{name}.input.bin")));
    let input =
        Tensor::<Cpu, 4>::from_data(TensorData::new(data, shape.clone()), &Default::default());
    Case {
        config: meta["config"].clone(),
        input,
        input_shape: shape,
        expected: read_f32(&fixtures().join(format!("{name}.output.bin"))),
    }
}

#[test]
fn convnext_small_matches_pytorch() {
    let c = case("myconvnext_small");
    let model = convnext_config(&c.config).init::<Cpu>(&Default::default());
    let (model, report) = load_convnext(
        model,
        &fixtures().join("myconvnext_small.pth"),
        Source::Original,
    )
    .unwrap();
    assert!(report.loaded > 50 && report.fresh.is_empty());
    let out = model.forward(c.input.clone());
    assert_eq!(out.dims(), [c.input_shape[0], 6]);
    let diff = max_abs_diff(&out.into_data().to_vec::<f32>().unwrap(), &c.expected);
    assert!(diff <= 1e-4, "max abs diff {diff}");
}

#[test]
fn densenet_small_matches_pytorch() {
    let c = case("mydensenet_small");
    let model = densenet_config(&c.config).init::<Cpu>(&Default::default());
    let (model, report) = load_densenet(
        model,
        &fixtures().join("mydensenet_small.pth"),
        Source::Original,
    )
    .unwrap();
    assert!(report
        .ignored
        .iter()
        .any(|k| k.ends_with("num_batches_tracked")));
    let out = model.forward(c.input.clone());
    assert_eq!(out.dims(), [c.input_shape[0], 4, 2]);
    let diff = max_abs_diff(&out.into_data().to_vec::<f32>().unwrap(), &c.expected);
    assert!(diff <= 1e-4, "max abs diff {diff}");
}

#[test]
fn checkpoint_problems_name_every_key() {
    use birads_model::weights::{apply_pytorch, convnext_key, read_pth, Target};
    let path = fixtures().join("myconvnext_small.pth");
    let small = convnext_config(&case("myconvnext_small").config);

    // Mis-shaped: the same layout at other widths.
    let wider = small
        .clone()
        .with_dims(vec![8, 16, 24, 40])
        .init::<Cpu>(&Default::default());
    let err = load_convnext(wider, &path, Source::Original)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mis-shaped"), "{err}");
    assert!(
        err.contains("convnext_tiny.features.7.0.block.block.0.weight"),
        "{err}"
    );

    // Missing: keys the checkpoint lacks are named.
    let mut model = small.init::<Cpu>(&Default::default());
    let tensors = read_pth(&path).unwrap();
    let err = apply_pytorch(
        &mut model,
        &path,
        tensors,
        |k| {
            if k.contains("features.3.1.") {
                Target::Ignore
            } else {
                convnext_key(k, Source::Original)
            }
        },
        |_| false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("missing keys"), "{err}");
    assert!(err.contains("stages.1.blocks.1.dwconv.weight"), "{err}");

    // Unexpected: a MyDenseNet checkpoint offered to MyConvNeXt.
    let model = small.init::<Cpu>(&Default::default());
    let err = load_convnext(
        model,
        &fixtures().join("mydensenet_small.pth"),
        Source::Original,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unexpected keys"), "{err}");
    assert!(err.contains("densenet.features.conv0.weight"), "{err}");

    // Not a checkpoint at all.
    let model = small.init::<Cpu>(&Default::default());
    let err = load_convnext(
        model,
        &fixtures().join("myconvnext_small.json"),
        Source::Original,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn torchvision_backbones_load_into_the_backbone_only() {
    let c = case("myconvnext_small");
    let cfg = convnext_config(&c.config);
    let (reference, _) = load_convnext(
        cfg.init::<Cpu>(&Default::default()),
        &fixtures().join("myconvnext_small.pth"),
        Source::Original,
    )
    .unwrap();
    let (tv, report) = load_convnext(
        cfg.init::<Cpu>(&Default::default()),
        &fixtures().join("convnext_small_tv.pth"),
        Source::Torchvision,
    )
    .unwrap();
    assert!(
        report.fresh.iter().all(|p| p.starts_with("head_")) && !report.fresh.is_empty(),
        "{:?}",
        report.fresh
    );
    let a = reference
        .features(c.input.clone())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let b = tv
        .features(c.input.clone())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert!(max_abs_diff(&a, &b) == 0.0, "backbone features identical");

    let d = case("mydensenet_small");
    let cfg = densenet_config(&d.config);
    let (tv, report) = load_densenet(
        cfg.init::<Cpu>(&Default::default()),
        &fixtures().join("densenet_small_tv.pth"),
        Source::Torchvision,
    )
    .unwrap();
    assert!(report.fresh.iter().any(|p| p.contains("cbam")));
    assert!(
        report
            .fresh
            .iter()
            .all(|p| !p.starts_with("blocks.0.layers") && !p.starts_with("conv0")),
        "{:?}",
        report.fresh
    );
    let (reference, _) = load_densenet(
        cfg.init::<Cpu>(&Default::default()),
        &fixtures().join("mydensenet_small.pth"),
        Source::Original,
    )
    .unwrap();
    // Same stem and first dense block weights: identical output before the first CBAM.
    let stem = |m: &birads_model::MyDenseNet<Cpu>| {
        let x = m.pool0.forward(burn::tensor::activation::relu(
            m.norm0.forward(m.conv0.forward(d.input.clone())),
        ));
        let mut feats = vec![x];
        for layer in &m.blocks[0].layers {
            let inp = Tensor::cat(feats.clone(), 1);
            feats.push(layer.forward(inp));
        }
        Tensor::cat(feats, 1).into_data().to_vec::<f32>().unwrap()
    };
    assert_eq!(max_abs_diff(&stem(&tv), &stem(&reference)), 0.0);
}

/// Full-size parity, run locally: `scripts/make_model_fixtures.py --full --out DIR`, then
/// `BIRADS_FULL_FIXTURES=DIR cargo test -p birads-model --release -- --ignored full`.
#[test]
#[ignore = "needs full-size checkpoints (too large to commit)"]
fn full_size_models_match_pytorch() {
    let dir =
        PathBuf::from(std::env::var("BIRADS_FULL_FIXTURES").expect("set BIRADS_FULL_FIXTURES"));
    let read = |name: &str| {
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let shape: Vec<usize> = usizes(&meta["input_shape"]);
        let x = Tensor::<Cpu, 4>::from_data(
            TensorData::new(read_f32(&dir.join(format!("{name}.input.bin"))), shape),
            &Default::default(),
        );
        (x, read_f32(&dir.join(format!("{name}.output.bin"))))
    };
    let (x, want) = read("myconvnext_full");
    let (m, _) = load_convnext(
        MyConvNeXtConfig::new().init::<Cpu>(&Default::default()),
        &dir.join("myconvnext_full.pth"),
        Source::Original,
    )
    .unwrap();
    let d = max_abs_diff(&m.forward(x).into_data().to_vec::<f32>().unwrap(), &want);
    println!("MyConvNeXt full: max abs diff {d:e}");
    assert!(d <= 1e-4);
    let (x, want) = read("mydensenet_full");
    let (m, _) = load_densenet(
        MyDenseNetConfig::new().init::<Cpu>(&Default::default()),
        &dir.join("mydensenet_full.pth"),
        Source::Original,
    )
    .unwrap();
    let d = max_abs_diff(&m.forward(x).into_data().to_vec::<f32>().unwrap(), &want);
    println!("MyDenseNet full: max abs diff {d:e}");
    assert!(d <= 1e-4);
}

#[test]
fn training_mode_batchnorm_matches_pytorch() {
    use birads_model::CpuTrain;
    let d = case("mydensenet_small");
    let cfg = densenet_config(&d.config).with_dp1(0.0).with_dp2(0.0);
    let (model, _) = load_densenet(
        cfg.init::<CpuTrain>(&Default::default()),
        &fixtures().join("mydensenet_small.pth"),
        Source::Original,
    )
    .unwrap();
    let x = read_f32(&fixtures().join("mydensenet_small_train.input.bin"));
    let x =
        Tensor::<CpuTrain, 4>::from_data(TensorData::new(x, [4, 3, 64, 64]), &Default::default());
    let y = model.forward(x).into_data().to_vec::<f32>().unwrap();
    let want = read_f32(&fixtures().join("mydensenet_small_train.output.bin"));
    let diff = max_abs_diff(&y, &want);
    assert!(diff <= 1e-4, "training-mode output differs by {diff}");
    // Eval-mode output on the same batch differs: batch statistics were used.
    let eval = model.valid();
    let xe = Tensor::<Cpu, 4>::from_data(
        TensorData::new(
            read_f32(&fixtures().join("mydensenet_small_train.input.bin")),
            [4, 3, 64, 64],
        ),
        &Default::default(),
    );
    assert!(
        max_abs_diff(
            &eval.forward(xe).into_data().to_vec::<f32>().unwrap(),
            &want
        ) > 1e-3
    );
    // Running statistics moved exactly as PyTorch's (momentum 0.1, unbiased variance).
    for (name, bn) in [("norm0", &eval.norm0), ("norm5", &eval.norm5)] {
        let want = read_f32(&fixtures().join(format!("mydensenet_small_train.{name}.bin")));
        let mut got = bn.running_mean.value().into_data().to_vec::<f32>().unwrap();
        got.extend(bn.running_var.value().into_data().to_vec::<f32>().unwrap());
        let diff = max_abs_diff(&got, &want);
        assert!(diff <= 1e-5, "{name} running stats differ by {diff}");
    }
}

#[test]
fn dropout_and_stochastic_depth_only_in_training() {
    use birads_model::CpuTrain;
    let c = case("myconvnext_small");
    let cfg = convnext_config(&c.config)
        .with_dropout(0.3)
        .with_sd_rate(0.9);
    let schedule = cfg.drop_path_schedule();
    assert_eq!(schedule.len(), 6);
    assert_eq!(schedule[0], 0.0);
    assert!((schedule[5] - 0.9).abs() < 1e-12 && (schedule[1] - 0.18).abs() < 1e-12);
    let full = MyConvNeXtConfig::new().drop_path_schedule();
    assert_eq!(full.len(), 18);
    assert!((full[17] - 0.6).abs() < 1e-12 && (full[1] - 0.6 / 17.0).abs() < 1e-12);

    let train = cfg.init::<CpuTrain>(&Default::default());
    let xt = Tensor::<CpuTrain, 4>::from_data(c.input.to_data(), &Default::default());
    let a = train
        .forward(xt.clone())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let b = train.forward(xt).into_data().to_vec::<f32>().unwrap();
    assert!(
        max_abs_diff(&a, &b) > 1e-6,
        "training passes are stochastic"
    );
    let eval = train.valid();
    let a = eval
        .forward(c.input.clone())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let b = eval
        .forward(c.input.clone())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(a, b, "evaluation is deterministic");
}
