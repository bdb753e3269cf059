//! The `birads` binary end to end: exit codes, outputs, and `data check` on real and
//! synthetic data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn birads(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_birads"))
        .args(args)
        .output()
        .expect("run birads")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn busbra() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/bus-bra");
    assert!(
        p.join("labels.csv").is_file(),
        "BUS-BRA expected at {} (../shared beside the clone)",
        p.display()
    );
    p
}

fn synth_small(dir: &Path) -> PathBuf {
    let out = dir.join("synth");
    let o = birads(&[
        "synth",
        "--out",
        out.to_str().unwrap(),
        "--train-cls",
        "36",
        "--train-fea",
        "24",
        "--test-cls",
        "12",
        "--test-fea",
        "12",
        "--min-side",
        "160",
        "--max-side",
        "300",
        "--seed",
        "3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn help_works_for_every_subcommand() {
    for args in [
        vec!["--help"],
        vec!["demo", "--help"],
        vec!["synth", "--help"],
        vec!["data", "check", "--help"],
        vec!["data", "split", "--help"],
        vec!["preview", "--help"],
        vec!["bench", "preprocess", "--help"],
        vec!["eval", "--help"],
        vec!["explain", "--help"],
        vec!["predict", "--help"],
    ] {
        let o = birads(&args);
        assert!(o.status.success(), "{args:?}");
        assert!(stdout(&o).contains("Usage"), "{args:?}");
    }
    assert_eq!(
        birads(&["no-such-command"]).status.code(),
        Some(2),
        "clap usage errors exit 2"
    );
}

#[test]
fn data_check_is_right_on_busbra() {
    let o = birads(&[
        "data",
        "check",
        busbra().join("labels.csv").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["samples"], 1875);
    assert_eq!(v["groups"], 1064);
    assert_eq!(v["errors"], 0);
    assert_eq!(v["with_lesion_box"], 1875);
    let per_class: Vec<(String, u64)> = v["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_u64().unwrap()))
        .collect();
    assert_eq!(
        per_class,
        [
            ("2".into(), 562),
            ("3".into(), 463),
            ("4".into(), 693),
            ("5".into(), 157)
        ]
    );
    assert_eq!(v["sizes"]["count"], 1875);
    assert!(v["sizes"]["max_width"].as_u64().unwrap() <= 512);
    // Text mode says the same.
    let text = stdout(&birads(&[
        "data",
        "check",
        busbra().join("labels.csv").to_str().unwrap(),
    ]));
    assert!(text.contains("samples: 1875 (1064 groups"), "{text}");
    assert!(text.contains("0 errors"), "{text}");
}

#[test]
fn data_check_is_right_on_synth_and_split_keeps_groups() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_small(dir.path());
    let o = birads(&["data", "check", data.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["samples"], 36 + 24 + 12 + 12);
    assert_eq!(v["errors"], 0);
    assert_eq!(v["warnings"], 0);
    let classified: u64 = v["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_u64().unwrap())
        .sum();
    assert_eq!(classified, 36 + 12, "training and labelled testA images");
    let sources: Vec<String> = v["per_source"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sources, ["cls", "fea", "testA/cla", "testA/fea"]);
    for f in v["per_feature"].as_array().unwrap() {
        assert_eq!(
            f["positive"].as_u64().unwrap() + f["negative"].as_u64().unwrap(),
            24 + 12
        );
    }

    // Group-aware split of BUS-BRA: deterministic, no patient on both sides.
    let out = dir.path().join("split");
    let bb = busbra().join("labels.csv");
    let o = birads(&[
        "data",
        "split",
        bb.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--val-fraction",
        "0.2",
        "--seed",
        "5",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let train = birads_data::read_dataset(&out.join("train.csv")).unwrap();
    let val = birads_data::read_dataset(&out.join("val.csv")).unwrap();
    assert_eq!(train.samples.len() + val.samples.len(), 1875);
    let frac = val.samples.len() as f64 / 1875.0;
    assert!((frac - 0.2).abs() < 0.02, "{frac}");
    let val_groups: std::collections::HashSet<_> =
        val.samples.iter().map(|s| s.group_key()).collect();
    assert!(train
        .samples
        .iter()
        .all(|s| !val_groups.contains(&s.group_key())));
    let first = std::fs::read(out.join("val.csv")).unwrap();
    birads(&[
        "data",
        "split",
        bb.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--val-fraction",
        "0.2",
        "--seed",
        "5",
    ]);
    assert_eq!(
        std::fs::read(out.join("val.csv")).unwrap(),
        first,
        "same seed, same split"
    );
}

#[test]
fn data_check_exits_1_and_names_every_bad_item() {
    let dir = tempfile::tempdir().unwrap();
    let cls = dir.path().join("乳腺分类训练数据集/train");
    for (class, stem, label) in [
        ("2类", "ok", "1 0.5 0.5 0.2 0.2"),
        ("3类", "bad", "9 0.5 0.5 0.2 0.2"),
        ("4A类", "nan", "3 nan 0.5 0.2 0.2"),
    ] {
        let d = cls.join(class);
        std::fs::create_dir_all(d.join("images")).unwrap();
        std::fs::create_dir_all(d.join("labels")).unwrap();
        image::RgbImage::new(20, 20)
            .save(d.join("images").join(format!("{stem}.png")))
            .unwrap();
        std::fs::write(d.join("labels").join(format!("{stem}.txt")), label).unwrap();
    }
    std::fs::write(
        cls.join("2类/images/trunc.jpg"),
        b"\xff\xd8\xff\xe0 not really",
    )
    .unwrap();
    std::fs::write(cls.join("2类/labels/trunc.txt"), "1 0.5 0.5 0.2 0.2").unwrap();
    let o = birads(&["data", "check", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(text.contains("bad.txt: class id 9 out of range"), "{text}");
    assert!(
        text.contains("nan.txt: line 1: box field 'nan' is not finite"),
        "{text}"
    );
    assert!(text.contains("trunc.jpg: unreadable image"), "{text}");
    assert!(text.contains("samples: 2"), "{text}");
    // A path that does not exist is a fatal error, exit 1 with a message.
    let o = birads(&["data", "check", "/definitely/not/here"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such file"));
}

#[test]
fn preview_writes_pngs_with_boxes() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_small(dir.path());
    let out = dir.path().join("preview");
    let o = birads(&[
        "preview",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--count",
        "3",
        "--task",
        "cls",
        "--size",
        "96",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for k in 0..3 {
        let tile = image::open(out.join(format!("sample_{k:03}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(tile.height(), 96);
        // The augmented panels carry the yellow lesion box.
        let yellow = tile.pixels().filter(|p| p.0 == [255, 200, 0]).count();
        assert!(yellow > 20, "sample {k}: {yellow} box pixels");
    }
    assert!(out.join("grid.png").is_file());
    let index = std::fs::read_to_string(out.join("index.txt")).unwrap();
    assert_eq!(index.matches("version 0").count(), 3);
}

#[test]
fn model_info_reports_the_original_parameter_counts() {
    let o = birads(&["model", "info", "--json"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["model"], "MyConvNeXt");
    assert_eq!(v[0]["parameters"], 28_117_734);
    assert_eq!(v[0]["output_shape"], serde_json::json!([1, 6]));
    assert_eq!(v[1]["model"], "MyDenseNet");
    assert_eq!(v[1]["parameters"], 9_475_192);
    assert_eq!(v[1]["output_shape"], serde_json::json!([1, 4, 2]));
    let hidden: Vec<u64> = v[1]["cbam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["hidden"].as_u64().unwrap())
        .collect();
    assert_eq!(hidden, [16, 21, 32, 25]);
    // A weights file is described with its own configuration, and a bad one is a clear error.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../birads-model/tests/fixtures");
    let o = birads(&[
        "model",
        "info",
        "--json",
        "--weights",
        fixtures.join("mydensenet_small.pth").to_str().unwrap(),
        "--task",
        "cls",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("holds DenseNet weights"));
}

/// `birads predict` against the original run.py chain (PIL + torchvision + PyTorch) on real
/// images: `predict_reference.csv` from `scripts/make_model_fixtures.py`. The tolerance is
/// 1e-3, not 1e-4: the JPEG decoder (zune-jpeg) differs from PIL's libjpeg-turbo by ±1 on
/// about 0.5 % of pixels, which moves this small random model's probabilities by ~1e-4.
#[test]
fn predict_matches_the_original_pipeline_and_reports_bad_images() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../birads-model/tests/fixtures");
    let mut rdr = csv::Reader::from_path(fixtures.join("predict_reference.csv")).unwrap();
    let reference: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert!(reference.len() >= 5);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("testB");
    std::fs::create_dir_all(input.join("cla")).unwrap();
    std::fs::create_dir_all(input.join("fea")).unwrap();
    for r in &reference {
        for part in ["cla", "fea"] {
            std::fs::copy(
                busbra().join("images").join(&r[0]),
                input.join(part).join(&r[0]),
            )
            .unwrap();
        }
    }
    std::fs::write(input.join("cla/broken.jpg"), b"\xff\xd8\xff truncated").unwrap();
    let out = dir.path().join("out");
    let o = birads(&[
        "predict",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--cla-weights",
        fixtures.join("myconvnext_small.pth").to_str().unwrap(),
        "--fea-weights",
        fixtures.join("mydensenet_small.pth").to_str().unwrap(),
        "--probabilities",
        "--batch-size",
        "3",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(2),
        "one image skipped → exit 2; {stderr}"
    );
    assert!(stderr.contains("broken.jpg"), "{stderr}");
    let cla = std::fs::read_to_string(out.join("cla_pre.csv")).unwrap();
    assert!(cla.starts_with("img_name,label\r\n"));
    assert!(!cla.contains("broken.jpg"));
    let read = |name: &str| -> Vec<csv::StringRecord> {
        csv::Reader::from_path(out.join(name))
            .unwrap()
            .records()
            .map(|r| r.unwrap())
            .collect()
    };
    let (cla, cla_p, fea, fea_p) = (
        read("cla_pre.csv"),
        read("cla_prob.csv"),
        read("fea_pre.csv"),
        read("fea_prob.csv"),
    );
    assert_eq!(cla.len(), reference.len());
    // Rows in natural file-name order.
    let mut names: Vec<String> = reference.iter().map(|r| r[0].to_string()).collect();
    names.sort();
    assert_eq!(
        cla.iter().map(|r| r[0].to_string()).collect::<Vec<_>>(),
        names
    );
    for want in &reference {
        let row =
            |rows: &[csv::StringRecord]| rows.iter().find(|r| r[0] == want[0]).unwrap().clone();
        let f = |s: &str| s.parse::<f64>().unwrap();
        let (c, cp, fe, fp) = (row(&cla), row(&cla_p), row(&fea), row(&fea_p));
        for k in 0..6 {
            assert!(
                (f(&cp[1 + k]) - f(&want[2 + k])).abs() < 2e-6,
                "{}: p{k} {} vs {}",
                &want[0],
                &cp[1 + k],
                &want[2 + k]
            );
        }
        // Labels agree unless the reference's top two are within the tolerance.
        let mut p: Vec<f64> = (0..6).map(|k| f(&want[2 + k])).collect();
        p.sort_by(|a, b| b.partial_cmp(a).unwrap());
        if p[0] - p[1] > 2e-3 {
            assert_eq!(&c[1], &want[1], "{}", &want[0]);
        }
        for t in 0..4 {
            let pt = f(&want[12 + t]);
            assert!(
                (f(&fp[1 + t]) - pt).abs() < 2e-6,
                "{}: feature {t}",
                &want[0]
            );
            if (pt - 0.5).abs() > 2e-3 {
                assert_eq!(&fe[1 + t], &want[8 + t], "{}: feature {t}", &want[0]);
            }
        }
    }
    // No weights: the built-in BI-RADS model, said so, and no invented features; the bad
    // images are still skipped (exit 2).
    let plain = dir.path().join("builtin");
    let o = birads(&[
        "predict",
        "--input",
        input.to_str().unwrap(),
        "--output",
        plain.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{said}");
    assert!(said.contains("built-in model birads-busbra"), "{said}");
    assert!(plain.join("cla_pre.csv").exists() && !plain.join("fea_pre.csv").exists());
}

#[test]
fn eval_scores_predict_output_against_a_labelled_test_set() {
    let dir = tempfile::tempdir().unwrap();
    let synth = synth_small(dir.path());
    let test_a = synth.join("testA");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../birads-model/tests/fixtures");
    let pred = dir.path().join("pred");
    let o = birads(&[
        "predict",
        "--input",
        test_a.to_str().unwrap(),
        "--output",
        pred.to_str().unwrap(),
        "--cla-weights",
        fixtures.join("myconvnext_small.pth").to_str().unwrap(),
        "--fea-weights",
        fixtures.join("mydensenet_small.pth").to_str().unwrap(),
        "--probabilities",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = dir.path().join("report");
    // The test set folder itself is the ground truth (cla_gt.csv / fea_gt.csv inside).
    let o = birads(&[
        "eval",
        "--pred",
        pred.to_str().unwrap(),
        "--truth",
        test_a.to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("competition score"), "{}", stdout(&o));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("eval.json")).unwrap()).unwrap();
    assert_eq!(json["classification"]["images"], 12);
    assert_eq!(json["features"]["features"][0]["images"], 12);
    // The competition score is recomputed from the reported parts.
    let acc = json["classification"]["accuracy"].as_f64().unwrap();
    let f1 = json["classification"]["macro_f1"].as_f64().unwrap();
    let score = json["competition"]["classification"].as_f64().unwrap();
    assert!((score - (0.6 * acc + 0.4 * f1)).abs() < 1e-12);
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("Competition score") && html.contains("data:image/png;base64,"));

    // One image without a prediction: still a report, but exit 2 and the image named.
    let cla = std::fs::read_to_string(pred.join("cla_pre.csv")).unwrap();
    let kept: Vec<&str> = cla.lines().filter(|l| !l.starts_with("0003.")).collect();
    std::fs::write(pred.join("cla_pre.csv"), kept.join("\n")).unwrap();
    let o = birads(&[
        "eval",
        "--pred",
        pred.join("cla_pre.csv").to_str().unwrap(),
        "--truth",
        test_a.join("cla_gt.csv").to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cla/0003."), "{stderr}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("eval.json")).unwrap()).unwrap();
    assert_eq!(json["classification"]["images"], 11);
    assert!(json["features"].is_null());
}

#[test]
fn explain_writes_an_overlay_and_rejects_foreign_targets() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../birads-model/tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let img = busbra().join("images/busbra_0001-l.jpg");
    let out = dir.path().join("cam/overlay.png");
    let explain = |target: &str| {
        birads(&[
            "explain",
            "--image",
            img.to_str().unwrap(),
            "--weights",
            fixtures.join("mydensenet_small.pth").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--target",
            target,
        ])
    };
    let o = explain("shape");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("Grad-CAM shape"), "{}", stdout(&o));
    let png = image::open(&out).unwrap();
    assert!(png.width() > png.height(), "input beside overlay");
    // A BI-RADS class is not something the feature model can explain.
    let o = explain("4A");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("lesion features"));
}

/// A quick recipe for tests: small model, small images, light augmentation.
const QUICK_CLS: &str = r#"
task = "cls"
epochs = 2
batch_size = 8
learning_rate = 1e-3
[preprocess]
size = 48
crop = 0
[augment]
blur = false
[schedule]
t0 = 2
"#;

/// Arguments of `birads train cls` on `data` into `out` with a config file and small models.
fn train_small_args<'a>(data: &'a Path, out: &'a Path, cfg: &'a Path) -> Vec<&'a str> {
    vec![
        "train",
        "cls",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--model",
        "small",
    ]
}

fn train_small(data: &Path, out: &Path, cfg: &Path, extra: &[&str]) -> Output {
    let mut args = train_small_args(data, out, cfg);
    args.extend_from_slice(extra);
    birads(&args)
}

fn metrics_rows(run: &Path) -> Vec<csv::StringRecord> {
    csv::Reader::from_path(run.join("metrics.csv"))
        .unwrap()
        .records()
        .map(|r| r.unwrap())
        .collect()
}

/// Mixed precision (`--precision amp`) trains through burn's autodiff with bf16 products;
/// the CPU runs it too (slowly), so the path is exercised without a GPU: it must train to
/// a loss near the f32 run's from the same seed, and refuse the fast engine (all f32).
#[test]
fn train_with_amp_follows_the_f32_run() {
    let dir = tempfile::tempdir().unwrap();
    let synth = synth_small(dir.path());
    let cfg = dir.path().join("quick.toml");
    std::fs::write(&cfg, QUICK_CLS).unwrap();
    let (f32_run, amp_run) = (dir.path().join("f32"), dir.path().join("amp"));
    let o = train_small(&synth, &f32_run, &cfg, &["--engine", "burn"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = train_small(
        &synth,
        &amp_run,
        &cfg,
        &["--engine", "burn", "--precision", "amp"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (metrics_rows(&f32_run), metrics_rows(&amp_run));
    assert_eq!((a.len(), b.len()), (2, 2));
    for (x, y) in a.iter().zip(&b) {
        let (x, y): (f64, f64) = (x[2].parse().unwrap(), y[2].parse().unwrap());
        assert!(
            y.is_finite() && x != y,
            "amp loss {y}, f32 loss {x}: bf16 did not run"
        );
        assert!(
            (x - y).abs() < 0.05 * x,
            "amp loss {y} far from f32 loss {x}"
        );
    }
    let o = train_small(&synth, &dir.path().join("c"), &cfg, &["--precision", "amp"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--engine burn"));
}

#[test]
fn train_writes_reports_and_resume_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let synth = synth_small(dir.path());
    let cfg = dir.path().join("quick.toml");
    std::fs::write(&cfg, QUICK_CLS).unwrap();
    let train = |out: &Path, extra: &[&str]| {
        let o = train_small(&synth, out, &cfg, extra);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    // Two epochs, then one more by resuming; and three in one go.
    let a = dir.path().join("a");
    train(&a, &[]);
    assert_eq!(metrics_rows(&a).len(), 2);
    for f in [
        "config.toml",
        "split.json",
        "metrics.csv",
        "curves.png",
        "confusion_val.png",
        "best.safetensors",
        "last.safetensors",
        "state/train_state.json",
    ] {
        assert!(a.join(f).is_file(), "{f} missing");
    }
    let o = birads(&[
        "train",
        "cls",
        "--resume",
        a.to_str().unwrap(),
        "--epochs",
        "3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The backbone's optimiser state belongs to the engine that trained it.
    let o = birads(&[
        "train",
        "cls",
        "--resume",
        a.to_str().unwrap(),
        "--epochs",
        "4",
        "--engine",
        "burn",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--engine fast"));
    let b = dir.path().join("b");
    train(&b, &["--epochs", "3"]);
    let (ra, rb) = (metrics_rows(&a), metrics_rows(&b));
    assert_eq!(ra.len(), 3, "resume continues at epoch 3");
    // Same seed, same data: the resumed run retraces the uninterrupted one.
    for col in [1usize, 2, 3, 4, 5] {
        let (x, y): (f64, f64) = (ra[2][col].parse().unwrap(), rb[2][col].parse().unwrap());
        assert!(
            (x - y).abs() < 1e-4,
            "column {col}: resumed {x} vs straight {y}"
        );
    }
    // Resuming a finished run does nothing and says so; a run that never started cannot resume.
    let o = birads(&[
        "train",
        "cls",
        "--resume",
        dir.path().join("nowhere").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));

    // The checkpoint carries its preprocessing and classes: predict uses it as is.
    let pred = dir.path().join("pred");
    let o = birads(&[
        "predict",
        "--input",
        synth.join("testA").to_str().unwrap(),
        "--output",
        pred.to_str().unwrap(),
        "--cla-weights",
        b.join("best.safetensors").to_str().unwrap(),
        "--probabilities",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        csv::Reader::from_path(pred.join("cla_pre.csv"))
            .unwrap()
            .records()
            .count(),
        12
    );
}

#[test]
fn a_killed_run_resumes_and_a_diverging_run_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let synth = synth_small(dir.path());
    let cfg = dir.path().join("quick.toml");
    // Far more epochs than will run: the kill always lands mid-run.
    std::fs::write(&cfg, QUICK_CLS.replace("epochs = 2", "epochs = 500")).unwrap();
    let run = dir.path().join("run");
    // SIGKILL in the middle of training (after the first checkpoint), then --resume.
    let mut child = Command::new(env!("CARGO_BIN_EXE_birads"))
        .args(train_small_args(&synth, &run, &cfg))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = run.join("state/train_state.json");
    let t = std::time::Instant::now();
    while !state.is_file() && t.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(state.is_file(), "no checkpoint within 2 minutes");
    let done: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let done = done["epochs_done"].as_u64().unwrap();
    assert!(done < 500, "killed before the end");
    // Resume, finishing two epochs after the last completed one.
    let total = (done + 2).to_string();
    let o = birads(&[
        "train",
        "cls",
        "--resume",
        run.to_str().unwrap(),
        "--epochs",
        &total,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let epochs: Vec<u64> = metrics_rows(&run)
        .iter()
        .map(|r| r[0].parse().unwrap())
        .collect();
    assert_eq!(
        epochs,
        (1..=done + 2).collect::<Vec<u64>>(),
        "no epoch lost or repeated"
    );

    // A learning rate that blows up: stop with a clear message, exit 1, checkpoints finite.
    std::fs::write(
        &cfg,
        QUICK_CLS.replace("learning_rate = 1e-3", "learning_rate = 1e30"),
    )
    .unwrap();
    let bad = dir.path().join("bad");
    let o = train_small(&synth, &bad, &cfg, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the loss became"), "{stderr}");
    if bad.join("last.safetensors").is_file() {
        // Whatever was checkpointed before the stop still predicts finite probabilities.
        let pred = dir.path().join("bad_pred");
        let o = birads(&[
            "predict",
            "--input",
            synth.join("testA").to_str().unwrap(),
            "--output",
            pred.to_str().unwrap(),
            "--cla-weights",
            bad.join("last.safetensors").to_str().unwrap(),
            "--probabilities",
        ]);
        assert!(o.status.success());
        let probs = std::fs::read_to_string(pred.join("cla_prob.csv")).unwrap();
        assert!(!probs.to_lowercase().contains("nan"), "{probs}");
    }
    // The same with on_nan = "skip": the run finishes and counts the skipped batches.
    std::fs::write(
        &cfg,
        format!(
            "on_nan = \"skip\"\n{}",
            QUICK_CLS.replace("learning_rate = 1e-3", "learning_rate = 1e30")
        ),
    )
    .unwrap();
    let skip = dir.path().join("skip");
    let o = train_small(&synth, &skip, &cfg, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let skipped: u64 = metrics_rows(&skip)
        .iter()
        .map(|r| r[18].parse::<u64>().unwrap())
        .sum();
    assert!(skipped > 0, "non-finite batches are counted");
}

#[test]
fn demo_runs_the_whole_pipeline() {
    // The README's first command, cut down: synth → train both → predict → report.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let o = birads(&[
        "demo",
        "--out",
        out.to_str().unwrap(),
        "--cls-images",
        "40",
        "--fea-images",
        "40",
        "--test-images",
        "12",
        "--cls-epochs",
        "1",
        "--fea-epochs",
        "1",
        "--image-size",
        "48",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    assert!(text.contains("competition score"), "{text}");
    for f in [
        "run_cls/best.safetensors",
        "run_fea/best.safetensors",
        "predictions/cla_pre.csv",
        "predictions/fea_prob.csv",
        "report/report.html",
        "report/eval.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
}

#[test]
fn predictions_are_deterministic_and_independent_of_batch_size_and_engine() {
    let dir = tempfile::tempdir().unwrap();
    let synth = synth_small(dir.path());
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../birads-model/tests/fixtures");
    let run = |name: &str, batch: &str, engine: &str, extra: &[&str]| -> Vec<Vec<f64>> {
        let out = dir.path().join(name);
        let o = birads(
            &[
                "predict",
                "--input",
                synth.join("testA").to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
                "--cla-weights",
                fixtures.join("myconvnext_small.pth").to_str().unwrap(),
                "--fea-weights",
                fixtures.join("mydensenet_small.pth").to_str().unwrap(),
                "--probabilities",
                "--batch-size",
                batch,
                "--engine",
                engine,
            ]
            .into_iter()
            .chain(extra.iter().copied())
            .collect::<Vec<_>>(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        ["cla_prob.csv", "fea_prob.csv"]
            .iter()
            .flat_map(|f| {
                csv::Reader::from_path(out.join(f))
                    .unwrap()
                    .records()
                    .map(|r| {
                        let r = r.unwrap();
                        (1..r.len())
                            .map(|i| r[i].parse::<f64>().unwrap())
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let one = run("b1", "1", "fast", &[]);
    let again = run("b1_again", "1", "fast", &[]);
    let seven = run("b7", "7", "fast", &[]);
    // burn's generic ops and the dedicated inference path agree.
    let burn = run("b7_burn", "7", "burn", &[]);
    assert_eq!(one.len(), burn.len());
    for (a, b) in seven.iter().flatten().zip(burn.iter().flatten()) {
        assert!((a - b).abs() <= 1e-5, "fast {a} vs burn {b}");
    }
    // Test-time augmentation too (the fast path flips the batch itself).
    let (tta_fast, tta_burn) = (
        run("tta_fast", "7", "fast", &["--tta"]),
        run("tta_burn", "7", "burn", &["--tta"]),
    );
    assert_ne!(tta_fast, seven, "--tta changes the probabilities");
    for (a, b) in tta_fast.iter().flatten().zip(tta_burn.iter().flatten()) {
        assert!((a - b).abs() <= 1e-5, "tta: fast {a} vs burn {b}");
    }
    assert_eq!(one, again, "same input, same output");
    assert_eq!(one.len(), seven.len());
    for (a, b) in one.iter().flatten().zip(seven.iter().flatten()) {
        assert!((a - b).abs() <= 1e-5, "batch 1 {a} vs batch 7 {b}");
    }
}

#[test]
fn training_starts_from_original_weights_or_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let synth = synth_small(dir.path());
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../birads-model/tests/fixtures");
    let cfg = dir.path().join("quick.toml");
    std::fs::write(&cfg, QUICK_CLS.replace("epochs = 2", "epochs = 1")).unwrap();
    // The original checkpoint format (here the small parity fixture): its architecture is
    // read from the tensor shapes.
    let a = dir.path().join("from_pth");
    let pth = fixtures.join("myconvnext_small.pth");
    let o = train_small(&synth, &a, &cfg, &["--init", pth.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A run's checkpoint continues into a new run.
    let b = dir.path().join("from_run");
    let best = a.join("best.safetensors");
    let o = train_small(&synth, &b, &cfg, &["--init", best.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Feature weights cannot start a BI-RADS model: a clear error.
    let dense = fixtures.join("mydensenet_small.pth");
    let o = train_small(
        &synth,
        &dir.path().join("bad"),
        &cfg,
        &["--init", dense.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("weights"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_crash_while_writing_leaves_the_previous_outputs_intact() {
    // `BIRADS_CRASH_BEFORE_RENAME` aborts the process right after a new version is written to
    // its temporary file, before the rename: the moment a kill would do most harm.
    let dir = tempfile::tempdir().unwrap();
    let synth = synth_small(dir.path());
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../birads-model/tests/fixtures");
    let out = dir.path().join("pred");
    let predict = |crash: bool, input: &Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_birads"));
        c.args(["predict", "--input"])
            .arg(input)
            .arg("--output")
            .arg(&out)
            .arg("--cla-weights")
            .arg(fixtures.join("myconvnext_small.pth"))
            .arg("--fea-weights")
            .arg(fixtures.join("mydensenet_small.pth"));
        if crash {
            c.env("BIRADS_CRASH_BEFORE_RENAME", "1");
        }
        c.output().unwrap()
    };
    assert!(predict(false, &synth.join("testA")).status.success());
    let before: Vec<Vec<u8>> = ["cla_pre.csv", "fea_pre.csv"]
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect();
    // A different input, so the new CSVs would differ.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    for e in std::fs::read_dir(synth.join("testA/cla")).unwrap().take(3) {
        let p = e.unwrap().path();
        std::fs::copy(&p, other.join(p.file_name().unwrap())).unwrap();
    }
    let o = predict(true, &other);
    assert!(!o.status.success(), "the injected crash happened");
    for (f, old) in ["cla_pre.csv", "fea_pre.csv"].iter().zip(&before) {
        assert_eq!(&std::fs::read(out.join(f)).unwrap(), old, "{f} intact");
    }
    // Without the crash the same command replaces them.
    assert!(predict(false, &other).status.success());
    assert_ne!(std::fs::read(out.join("cla_pre.csv")).unwrap(), before[0]);

    // The evaluation report: same story.
    let report = dir.path().join("report");
    let eval = |crash: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_birads"));
        c.args(["eval", "--pred"])
            .arg(&out)
            .arg("--truth")
            .arg(synth.join("testA"))
            .arg("--out")
            .arg(&report);
        if crash {
            c.env("BIRADS_CRASH_BEFORE_RENAME", "1");
        }
        c.output().unwrap()
    };
    assert!(predict(false, &synth.join("testA")).status.success());
    let o = eval(false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let old = std::fs::read(report.join("eval.json")).unwrap();
    std::fs::write(report.join("eval.json"), b"{\"marker\": 1}").unwrap();
    let o = eval(true);
    assert!(!o.status.success());
    assert_eq!(
        std::fs::read(report.join("eval.json")).unwrap(),
        b"{\"marker\": 1}",
        "the previous eval.json survives"
    );
    assert!(eval(false).status.success());
    assert_eq!(std::fs::read(report.join("eval.json")).unwrap(), old);
}
