//! The device options without a GPU: `bench device-check` on the CPU (its amp pass against
//! f32 runs the whole comparison path), clear refusals of a device the build lacks, and, in a
//! build with `wgpu` (as `scripts/test.sh` builds it), `--device wgpu` on Mesa's software
//! Vulkan driver: the GPU code paths of the binary (burn's cubecl backend, fusion, autotune,
//! birads' own kernels) against the CPU.

mod support;
use support::birads;

#[test]
fn device_check_compares_amp_with_f32_on_the_cpu() {
    let o = birads(&[
        "bench",
        "device-check",
        "--device",
        "cpu",
        "--precision",
        "amp",
        "--small",
        "--batch",
        "2",
        "--size",
        "64",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.starts_with("| convnext") || l.starts_with("| densenet"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    for r in &rows {
        let gradients: usize = r[2].parse().unwrap();
        let output: f64 = r[3].parse().unwrap();
        assert!(gradients > 50, "{r:?}");
        assert!(
            output > 1e-5 && output < 0.05,
            "bf16 output difference {output}: {r:?}"
        );
        assert_eq!(r[9], "ok", "{r:?}");
    }
}

#[test]
fn device_check_in_f32_on_the_cpu_is_exact() {
    let o = birads(&[
        "bench",
        "device-check",
        "--device",
        "cpu",
        "--small",
        "--models",
        "densenet",
        "--batch",
        "2",
        "--size",
        "64",
        "--tolerance",
        "0",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("| densenet |") && out.contains("| ok |"),
        "{out}"
    );
}

/// Every command that takes `--device` refuses `device` clearly, saying how to build it in.
fn refused_clearly_without_its_feature(device: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for args in [
        vec!["bench", "device-check", "--device", device, "--small"],
        vec!["bench", "train", "--device", device, "--no-python"],
        vec!["predict", "--input", d, "--output", d, "--device", device],
    ] {
        let o = birads(&args);
        assert_ne!(o.status.code(), Some(0), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("built without") && err.contains(&format!("--features {device}")),
            "{args:?}: {err}"
        );
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_is_refused_clearly_without_the_feature() {
    refused_clearly_without_its_feature("cuda");
}

#[cfg(not(feature = "wgpu"))]
#[test]
fn wgpu_is_refused_clearly_without_the_feature() {
    refused_clearly_without_its_feature("wgpu");
}

/// bf16 needs a GPU: on the CPU every command that takes `--precision` refuses it before it
/// prints, reads or writes anything (`train` is given data that does not exist, so a later
/// refusal would be a different error), and says what runs instead.
#[test]
fn bf16_on_the_cpu_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out = out.to_str().unwrap();
    let on_the_cpu_in_bf16 = ["--device", "cpu", "--precision", "bf16"];
    for command in [
        &["bench", "device-check", "--small"][..],
        &["bench", "train", "--no-python"],
        &["bench", "infer", "--no-python"],
        &["train", "cls", "--data", "no-such-data", "--out", out],
    ] {
        let args = [command, &on_the_cpu_in_bf16].concat();
        let o = birads(&args);
        assert_ne!(o.status.code(), Some(0), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("bf16 needs --device cuda") && err.contains("amp runs on the CPU"),
            "{args:?}: {err}"
        );
        assert!(
            o.stdout.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    assert!(!dir.path().join("run").exists(), "train wrote its folder");
}

/// wgpu computes in f32: amp and bf16 are refused before anything runs, naming the device
/// that runs them.
#[test]
fn wgpu_refuses_the_low_precisions() {
    for p in ["amp", "bf16"] {
        let o = birads(&[
            "bench",
            "device-check",
            "--device",
            "wgpu",
            "--precision",
            p,
            "--small",
        ]);
        assert_ne!(o.status.code(), Some(0), "{p}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("--device wgpu computes in f32") && err.contains("--device cuda"),
            "{p}: {err}"
        );
        assert!(o.stdout.is_empty(), "{p}");
    }
}

/// The models of the wgpu tests: reduced, with every product's inner size a multiple of 16.
/// On the software driver, cubek-matmul 0.2's double-buffered unit kernels are wrong for an
/// inner size that is an odd multiple of 8 (`docs/gpu/README.md`, "A known problem"), and
/// autotune may pick them: the reduced MyDenseNet of `--small` (growth 8 from 16 channels)
/// makes such products, these do not.
#[cfg(feature = "wgpu")]
mod on_wgpu {
    use super::support::{birads, busbra, start_server_with, text};
    use birads_data::pipeline::Preprocess;
    use birads_model::checkpoint::{save, AnyModel};
    use birads_model::{Cpu, MyConvNeXtConfig, MyDenseNetConfig};
    use burn::prelude::*;
    use std::path::Path;

    fn convnext() -> AnyModel<Cpu> {
        AnyModel::ConvNeXt(
            MyConvNeXtConfig::new()
                .with_dims(vec![16, 32, 64, 128])
                .with_depths(vec![1, 1, 2, 1])
                .with_layer_scale_init(0.5)
                .init::<Cpu>(&Default::default()),
        )
    }

    fn densenet() -> AnyModel<Cpu> {
        AnyModel::DenseNet(
            MyDenseNetConfig::new()
                .with_growth(16)
                .with_blocks(vec![2, 2, 2, 2])
                .with_init_features(32)
                .with_bn_size(2)
                .init::<Cpu>(&Default::default()),
        )
    }

    /// `[image, values…]` rows of a probability CSV.
    fn rows(path: &Path) -> Vec<(String, Vec<f64>)> {
        let mut r = csv::Reader::from_path(path).unwrap();
        r.records()
            .map(|x| {
                let x = x.unwrap();
                let v = x.iter().skip(1).map(|v| v.parse().unwrap()).collect();
                (x[0].to_string(), v)
            })
            .collect()
    }

    /// `birads bench device-check --device wgpu`: a training-mode forward and backward of a
    /// reduced MyConvNeXt on wgpu against the CPU, output and every parameter gradient within
    /// 1e-4 (the tolerance the GPU is held to). Two minutes on the software driver, most of
    /// them autotune's trials of the backward's convolutions: `scripts/cubecl_check.sh`.
    #[test]
    #[ignore = "2 minutes of autotune on the software driver: scripts/cubecl_check.sh runs it"]
    fn device_check_on_wgpu_agrees_with_the_cpu() {
        let o = birads(&[
            "bench",
            "device-check",
            "--device",
            "wgpu",
            "--small",
            "--models",
            "convnext",
            "--batch",
            "2",
            "--size",
            "32",
        ]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", text(&o));
        let row: Vec<&str> = out
            .lines()
            .find(|l| l.starts_with("| convnext"))
            .map(|l| l.split('|').map(str::trim).collect())
            .unwrap_or_else(|| panic!("no convnext row: {out}"));
        let gradients: usize = row[2].parse().unwrap();
        assert!(gradients > 30, "{row:?}");
        assert_eq!(row[9], "ok", "{row:?}");
    }

    /// A reduced MyConvNeXt checkpoint for 64 px images in `dir`, its path.
    fn small_convnext_checkpoint(dir: &Path) -> std::path::PathBuf {
        // 64 px: the shapes autotune has to time on the software driver, and so the test's
        // time, shrink with the image.
        let pre = Preprocess {
            size: 64,
            ..Preprocess::original_inference()
        };
        let extra = serde_json::json!({ "preprocess": pre, "classes": birads_data::BIRADS6 });
        let path = dir.join("cls.safetensors");
        save(&convnext(), extra, &path).unwrap();
        path
    }

    /// `birads serve --device wgpu`: warmed up at every batch size it forms (`--max-batch` 8)
    /// before it listens, so that no request waits for the first passes' compiling and
    /// autotuning (with the builtin model they took the first requests past the server's
    /// 30 s: 408); then the CPU server's label and probabilities within 1e-5.
    #[test]
    fn serve_on_wgpu_answers_the_first_request_as_the_cpu_does() {
        Cpu::seed(&Default::default(), 6);
        let dir = tempfile::tempdir().unwrap();
        let weights = small_convnext_checkpoint(dir.path());
        let w = weights.to_str().unwrap();
        let image = std::fs::read(busbra().join("images/busbra_0001-l.jpg")).unwrap();
        let answer = |device: &str| -> serde_json::Value {
            let s = start_server_with(&["--cla-weights", w, "--device", device]);
            let warmed = s
                .before
                .iter()
                .any(|l| l.contains("batches of [1, 2, 4, 8]"));
            assert_eq!(warmed, device == "wgpu", "{device}: {:?}", s.before);
            let r = ureq::post(&format!("{}/v1/predict", s.base))
                .timeout(std::time::Duration::from_secs(20))
                .send_bytes(&image)
                .unwrap_or_else(|e| panic!("{device}: {e}"));
            serde_json::from_str(&r.into_string().unwrap()).unwrap()
        };
        let (cpu, gpu) = (answer("cpu"), answer("wgpu"));
        assert_eq!(cpu["birads"]["label"], gpu["birads"]["label"]);
        let (p, q) = (
            &cpu["birads"]["probabilities"],
            &gpu["birads"]["probabilities"],
        );
        let classes = p.as_object().unwrap();
        assert_eq!(classes.len(), 6, "{p}");
        for (c, v) in classes {
            let (a, b) = (v.as_f64().unwrap(), q[c].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-5, "{c}: cpu {a}, wgpu {b}");
        }
    }

    /// `birads predict --device wgpu` with the BI-RADS model: the CPU's labels, probabilities
    /// within 1e-5, on real BUS-BRA images.
    #[test]
    fn predict_on_wgpu_matches_the_cpu() {
        predict_matches_the_cpu(false);
    }

    /// The same with the feature model too: its dense layers' convolutions take autotune two
    /// minutes on the software driver (`scripts/cubecl_check.sh` runs it).
    #[test]
    #[ignore = "2 minutes of autotune on the software driver: scripts/cubecl_check.sh runs it"]
    fn predict_on_wgpu_matches_the_cpu_with_both_models() {
        predict_matches_the_cpu(true);
    }

    fn predict_matches_the_cpu(features: bool) {
        Cpu::seed(&Default::default(), 5);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cls = small_convnext_checkpoint(d);
        let fea = d.join("fea.safetensors");
        if features {
            let pre = Preprocess {
                size: 64,
                ..Preprocess::original_inference()
            };
            let extra = serde_json::json!({ "preprocess": pre, "classes": birads_data::BIRADS6 });
            save(&densenet(), extra, &fea).unwrap();
        }
        let images = d.join("images");
        std::fs::create_dir(&images).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(busbra().join("images"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names.iter().step_by(400) {
            std::os::unix::fs::symlink(p, images.join(p.file_name().unwrap())).unwrap();
        }
        for device in ["cpu", "wgpu"] {
            let out = d.join(device);
            let mut args = vec![
                "predict",
                "--input",
                images.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
                "--cla-weights",
                cls.to_str().unwrap(),
                "--probabilities",
                "--device",
                device,
            ];
            if features {
                args.extend(["--fea-weights", fea.to_str().unwrap()]);
            }
            let o = birads(&args);
            assert!(o.status.success(), "{device}: {}", text(&o));
        }
        let tables: &[&str] = if features { &["cla", "fea"] } else { &["cla"] };
        for name in tables.iter().map(|t| format!("{t}_pre.csv")) {
            let read = |dev: &str| std::fs::read_to_string(d.join(dev).join(&name)).unwrap();
            assert_eq!(read("cpu"), read("wgpu"), "{name}");
        }
        for name in tables.iter().map(|t| format!("{t}_prob.csv")) {
            let (cpu, gpu) = (
                rows(&d.join("cpu").join(&name)),
                rows(&d.join("wgpu").join(&name)),
            );
            assert_eq!(cpu.len(), names.len().div_ceil(400), "{name}");
            assert_eq!(cpu.len(), gpu.len(), "{name}");
            let all: Vec<f64> = cpu.iter().flat_map(|r| r.1.clone()).collect();
            let mean = all.iter().sum::<f64>() / all.len() as f64;
            let spread = all.iter().map(|v| (v - mean).abs()).fold(0.0, f64::max);
            assert!(
                spread > 1e-2,
                "{name}: probabilities too flat to tell devices apart"
            );
            for ((a, x), (b, y)) in cpu.iter().zip(&gpu) {
                assert_eq!(a, b, "{name}");
                let worst = x
                    .iter()
                    .zip(y)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0.0, f64::max);
                assert!(worst <= 1e-5, "{name} {a}: |cpu - wgpu| = {worst:e}");
            }
        }
    }
}
