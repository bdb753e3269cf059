//! The device options without a GPU: `bench device-check` on the CPU (its amp pass against
//! f32 runs the whole comparison path) and clear refusals of `--device cuda` in a build
//! without the `cuda` feature.

use std::process::{Command, Output};

fn birads(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_birads"))
        .args(args)
        .output()
        .expect("run birads")
}

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

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_is_refused_clearly_without_the_feature() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for args in [
        vec!["bench", "device-check", "--device", "cuda", "--small"],
        vec!["bench", "train", "--device", "cuda", "--no-python"],
        vec!["predict", "--input", d, "--output", d, "--device", "cuda"],
    ] {
        let o = birads(&args);
        assert_ne!(o.status.code(), Some(0), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("without") && err.contains("cuda"),
            "{args:?}: {err}"
        );
    }
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
