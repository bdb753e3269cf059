//! Shared by the integration tests that run `birads serve` or need synthetic test images.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A child process killed when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `birads serve`; `base` is `http://127.0.0.1:PORT`.
pub struct Server {
    _child: Kill,
    pub base: String,
    /// What it printed before it listened.
    pub before: Vec<String>,
}

/// Runs the `birads` binary under test.
pub fn birads(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_birads"))
        .args(args)
        .output()
        .expect("run birads")
}

/// Its stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// BUS-BRA beside the checkout (`../shared/data/bus-bra`).
pub fn busbra() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/bus-bra")
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../birads-model/tests/fixtures")
}

/// Starts `birads serve` on a free port with the small fixture models and `extra` flags.
pub fn start_server(extra: &[&str]) -> Server {
    let cls = fixtures().join("myconvnext_small.pth");
    let fea = fixtures().join("mydensenet_small.pth");
    let weights = [
        "--cla-weights",
        cls.to_str().unwrap(),
        "--fea-weights",
        fea.to_str().unwrap(),
    ];
    start_server_with(&[&weights[..], extra].concat())
}

/// Starts `birads serve` on a free port with `args` (weights and flags), once it listens:
/// the lines it prints before (notes, a GPU's warm-up) are skipped.
pub fn start_server_with(args: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_birads"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .env_remove("BIRADS_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start birads serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut before = Vec::new();
    let base = loop {
        match lines.next() {
            Some(Ok(line)) => match line.strip_prefix("listening on ") {
                Some(base) => break base.trim().to_string(),
                None => before.push(line),
            },
            _ => panic!("birads serve stopped before listening; it printed {before:?}"),
        }
    };
    Server {
        _child: Kill(child),
        base,
        before,
    }
}

/// A labelled synthetic test set (`testA` with `cla/` and `fea/`) of `min`–`max` px; returns
/// the `testA` folder.
pub fn synth_test_set(
    dir: &Path,
    seed: u64,
    [min, max]: [u32; 2],
    [cls, fea]: [usize; 2],
) -> PathBuf {
    let out = dir.join("synth");
    let n = |v: usize| v.to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_birads"))
        .args(["synth", "--out"])
        .arg(&out)
        .args(["--train-cls", "0", "--train-fea", "0"])
        .args(["--test-cls", &n(cls), "--test-fea", &n(fea)])
        .args([
            "--min-side",
            &min.to_string(),
            "--max-side",
            &max.to_string(),
        ])
        .args(["--seed", &seed.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out.join("testA")
}

/// Six labelled synthetic test images (testA/cla) of `min`–`max` px, sorted by name.
pub fn synth_images(dir: &Path, seed: u64, min: u32, max: u32) -> Vec<PathBuf> {
    let test = synth_test_set(dir, seed, [min, max], [6, 0]);
    let mut files: Vec<PathBuf> = std::fs::read_dir(test.join("cla"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}
