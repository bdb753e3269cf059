//! `birads export --onnx` checked by ONNX Runtime: full-size MyConvNeXt and MyDenseNet (random
//! weights with every LayerNorm/BatchNorm parameter and statistic moved off its identity value,
//! order-one layer scales), exported, run by ONNX Runtime on real BUS-BRA images preprocessed
//! by birads, and compared with `birads predict --probabilities` (≤ 1e-4); `onnx.checker`
//! validates each file. Needs a Python with `onnx` and `onnxruntime` (`BIRADS_PYTHON`, else
//! `python3`); `scripts/test.sh` installs them.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;
use support::{birads, busbra, text};

use birads_data::pipeline::{preprocess, Preprocess};
use birads_model::blocks::{BatchNorm2d, LayerNorm2d};
use birads_model::checkpoint::{save, AnyModel};
use birads_model::{Cpu, MyConvNeXtConfig, MyDenseNetConfig};
use burn::module::{Param, RunningState};
use burn::prelude::*;
use burn::tensor::Distribution;

fn uniform<const D: usize>(shape: [usize; D], lo: f64, hi: f64) -> Tensor<Cpu, D> {
    Tensor::random(shape, Distribution::Uniform(lo, hi), &Default::default())
}

fn moved_batch_norm(bn: &mut BatchNorm2d<Cpu>) {
    let [c] = bn.weight.dims();
    bn.weight = Param::from_tensor(uniform([c], 0.5, 1.5));
    bn.bias = Param::from_tensor(uniform([c], -0.3, 0.3));
    bn.running_mean = RunningState::new(uniform([c], -0.5, 0.5));
    bn.running_var = RunningState::new(uniform([c], 0.5, 2.0));
}

fn moved_layer_norm(n: &mut burn::nn::LayerNorm<Cpu>) {
    let [c] = n.gamma.dims();
    n.gamma = Param::from_tensor(uniform([c], 0.5, 1.5));
    n.beta = Some(Param::from_tensor(uniform([c], -0.3, 0.3)));
}

fn moved_layer_norm_2d(n: &mut LayerNorm2d<Cpu>) {
    let [c] = n.weight.dims();
    n.weight = Param::from_tensor(uniform([c], 0.5, 1.5));
    n.bias = Param::from_tensor(uniform([c], -0.3, 0.3));
}

fn convnext() -> AnyModel<Cpu> {
    let mut m = MyConvNeXtConfig::new().init::<Cpu>(&Default::default());
    moved_layer_norm_2d(&mut m.stem_norm);
    for d in &mut m.downsamples {
        moved_layer_norm_2d(&mut d.norm);
    }
    for s in &mut m.stages {
        for b in &mut s.blocks {
            let [c, _, _] = b.layer_scale.dims();
            b.layer_scale = Param::from_tensor(uniform([c, 1, 1], 0.2, 1.0));
            moved_layer_norm(&mut b.norm);
        }
    }
    moved_layer_norm(&mut m.head_norm);
    AnyModel::ConvNeXt(m)
}

fn densenet() -> AnyModel<Cpu> {
    let mut m = MyDenseNetConfig::new().init::<Cpu>(&Default::default());
    moved_batch_norm(&mut m.norm0);
    moved_batch_norm(&mut m.norm5);
    for b in &mut m.blocks {
        for l in &mut b.layers {
            moved_batch_norm(&mut l.norm1);
            moved_batch_norm(&mut l.norm2);
        }
    }
    for t in &mut m.transitions {
        moved_batch_norm(&mut t.norm);
    }
    moved_layer_norm(&mut m.head_norm);
    AnyModel::DenseNet(m)
}

/// Every 150th BUS-BRA image (13 images).
fn busbra_images(dir: &Path) -> Vec<PathBuf> {
    let busbra = busbra();
    let mut names: Vec<PathBuf> = std::fs::read_dir(busbra.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    std::fs::create_dir_all(dir).unwrap();
    names
        .into_iter()
        .step_by(150)
        .map(|p| {
            let link = dir.join(p.file_name().unwrap());
            std::os::unix::fs::symlink(&p, &link).unwrap();
            link
        })
        .collect()
}

/// The ONNX Runtime side: check each file, run it on the tensors, compare with the CSVs.
const CHECK: &str = r#"
import csv, sys
import numpy as np, onnx, onnxruntime as ort
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
x = np.fromfile(f"{d}/inputs.f32", dtype="<f4").reshape(n, 3, size, size)
worst = 0.0
for name, csv_name in (("cls", "cla_prob.csv"), ("fea", "fea_prob.csv")):
    model = onnx.load(f"{d}/{name}.onnx")
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["birads.purpose"] == {"cls": "grading", "fea": "features"}[name], meta
    s = ort.InferenceSession(f"{d}/{name}.onnx", providers=["CPUExecutionProvider"])
    assert [i.name for i in s.get_inputs()] == ["image"]
    assert [o.name for o in s.get_outputs()] == ["logits", "probabilities"]
    assert s.get_inputs()[0].shape[0] == "batch", s.get_inputs()[0].shape
    # Two batches of different sizes through the dynamic batch axis.
    p = np.concatenate([s.run(["probabilities"], {"image": x[:5]})[0], s.run(["probabilities"], {"image": x[5:]})[0]])
    with open(f"{d}/{csv_name}") as f:
        rows = list(csv.reader(f))[1:]
    want = np.array([[float(v) for v in r[1:]] for r in rows])
    got = p if name == "cls" else p[:, :, 1]
    assert got.shape == want.shape, (got.shape, want.shape)
    assert want.std() > 1e-3, "probabilities too flat to tell models apart"
    diff = float(np.abs(got - want).max())
    print(f"{name}: max |ONNX Runtime - birads| = {diff:.2e} over {n} images")
    worst = max(worst, diff)
sys.exit(0 if worst <= 1e-4 else 1)
"#;

#[test]
fn onnx_runtime_reproduces_birads_on_both_full_size_models() {
    Cpu::seed(&Default::default(), 21);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pre = Preprocess::original_inference();
    let extra = serde_json::json!({ "preprocess": pre, "classes": birads_data::BIRADS6 });
    save(&convnext(), extra.clone(), &d.join("cls.safetensors")).unwrap();
    save(&densenet(), extra, &d.join("fea.safetensors")).unwrap();
    for name in ["cls", "fea"] {
        let o = birads(&[
            "export",
            "--onnx",
            "--weights",
            d.join(format!("{name}.safetensors")).to_str().unwrap(),
            "--out",
            d.join(format!("{name}.onnx")).to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let images = busbra_images(&d.join("images"));
    let o = birads(&[
        "predict",
        "--input",
        d.join("images").to_str().unwrap(),
        "--output",
        d.to_str().unwrap(),
        "--cla-weights",
        d.join("cls.safetensors").to_str().unwrap(),
        "--fea-weights",
        d.join("fea.safetensors").to_str().unwrap(),
        "--probabilities",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // The tensors predict fed the models, in the CSVs' (natural file-name) order.
    let mut inputs = Vec::new();
    for p in &images {
        let img = birads_data::image_ops::decode_path(p).unwrap();
        inputs.extend(preprocess(&img, None, &pre).tensor.data);
    }
    let bytes: Vec<u8> = inputs.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(d.join("inputs.f32"), bytes).unwrap();
    let python = std::env::var("BIRADS_PYTHON").unwrap_or_else(|_| "python3".into());
    let o = Command::new(&python)
        .args([
            "-c",
            CHECK,
            d.to_str().unwrap(),
            &images.len().to_string(),
            "224",
        ])
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    assert!(
        o.status.success(),
        "ONNX Runtime check failed (needs onnx and onnxruntime in {python}; scripts/test.sh installs them):\n{}",
        text(&o)
    );
    println!("{}", text(&o));
}
