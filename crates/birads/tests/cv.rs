//! `birads cv` end to end on a small part of BUS-BRA: folds follow the partition file, a
//! finished fold is not redone, `--fold` selects, the recipe is fixed by the first start, the
//! report covers the finished folds, and bad partitions are refused with the reason.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod support;
use support::{birads, busbra, text};

/// The first `n` rows of BUS-BRA's labels.csv (absolute image paths) and a 3-fold
/// patient-level partition of them: patient p is tested in fold p mod 3 + 1, and in the other
/// folds every fourth patient validates. Returns (manifest, partition, ids per fold role).
fn small_busbra(dir: &Path, n: usize) -> (PathBuf, PathBuf, Vec<[BTreeSet<String>; 3]>) {
    let mut rdr = csv::Reader::from_path(busbra().join("labels.csv")).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let manifest = dir.join("labels.csv");
    let mut w = csv::Writer::from_path(&manifest).unwrap();
    w.write_record(&headers).unwrap();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (ci, cimg, cp) = (col("id"), col("image"), col("patient"));
    let mut rows = Vec::new();
    for r in rdr.records().take(n) {
        let r = r.unwrap();
        let mut v: Vec<String> = r.iter().map(String::from).collect();
        v[cimg] = busbra().join(&v[cimg]).display().to_string();
        w.write_record(&v).unwrap();
        rows.push((v[ci].clone(), v[cp].clone()));
    }
    w.flush().unwrap();
    let patients: Vec<String> = rows
        .iter()
        .map(|r| r.1.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index = |p: &str| patients.iter().position(|q| q == p).unwrap();
    let partition = dir.join("folds.csv");
    let mut w = csv::Writer::from_path(&partition).unwrap();
    w.write_record(["id", "test_fold", "valid_1", "valid_2", "valid_3"])
        .unwrap();
    let mut roles = vec![<[BTreeSet<String>; 3]>::default(); 3];
    for (id, patient) in &rows {
        let p = index(patient);
        let test = p % 3 + 1;
        let mut rec = vec![id.clone(), test.to_string()];
        for k in 1..=3 {
            let role = if k == test {
                2
            } else if p % 4 == 0 {
                1
            } else {
                0
            };
            roles[k - 1][role].insert(id.clone());
            rec.push(["1", "0", "NaN"][role].to_string());
        }
        w.write_record(&rec).unwrap();
    }
    w.flush().unwrap();
    (manifest, partition, roles)
}

const TINY: &str = "epochs = 2\nbatch_size = 8\nlearning_rate = 0.003\n\
                    [preprocess]\ncrop = 0\nsize = 32\n\
                    [augment]\naffine = false\nblur = false\nerasing = false\n[augment.cutmix]\nkind = \"off\"\n\
                    [model]\narch = \"densenet\"\n\
                    [model.densenet]\ngrowth = 4\nblocks = [1, 1, 1, 1]\ninit_features = 8\n";

fn ids_of(split: &serde_json::Value, key: &str) -> BTreeSet<String> {
    split[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            Path::new(v.as_str().unwrap())
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn folds_follow_the_partition_resume_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, partition, roles) = small_busbra(dir.path(), 48);
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(&cfg, TINY).unwrap();
    let out = dir.path().join("cv");
    let args = |extra: &[&str]| {
        let mut v: Vec<String> = [
            "cv",
            "--data",
            manifest.to_str().unwrap(),
            "--folds",
            partition.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        birads(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // Fold 2 alone.
    let o = run(&["--fold", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.join("fold-2/result.json").is_file());
    assert!(!out.join("fold-1").exists() && !out.join("fold-3").exists());
    let split: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("fold-2/run/split.json")).unwrap()).unwrap();
    assert_eq!(
        ids_of(&split, "train_images"),
        roles[1][0],
        "training = valid_2 = 1"
    );
    assert_eq!(
        ids_of(&split, "val_images"),
        roles[1][1],
        "validation = valid_2 = 0"
    );
    let mut rdr = csv::Reader::from_path(out.join("fold-2/test_predictions.csv")).unwrap();
    let tested: BTreeSet<String> = rdr.records().map(|r| r.unwrap()[0].to_string()).collect();
    assert_eq!(tested, roles[1][2], "test = valid_2 = NaN");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("cv.json")).unwrap()).unwrap();
    assert_eq!(report["folds"].as_array().unwrap().len(), 1);
    assert_eq!(report["folds_total"], 3);
    assert_eq!(report["classes"], serde_json::json!(["2", "3", "4", "5"]));

    // Another recipe in the same folder is refused.
    let o = run(&["--lr", "0.1"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("another recipe"), "{}", text(&o));

    // All folds: fold 2 is kept as it was, 1 and 3 run.
    let before = std::fs::read(out.join("fold-2/result.json")).unwrap();
    let o = run(&[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("fold 2: finished earlier"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(out.join("fold-2/result.json")).unwrap(),
        before
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("cv.json")).unwrap()).unwrap();
    let folds: Vec<u64> = report["folds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fold"].as_u64().unwrap())
        .collect();
    assert_eq!(folds, [1, 2, 3]);
    let pooled = report["pooled"]["images"].as_u64().unwrap();
    assert_eq!(pooled, 48, "every image is tested exactly once");
    for name in ["accuracy", "malignancy_auc", "radiologist_auc"] {
        let s = report["summary"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["metric"] == name)
            .unwrap_or_else(|| panic!("{name} summarised"));
        assert_eq!(s["values"].as_array().unwrap().len(), 3, "{name}");
        assert!(s["sd"].as_f64().unwrap().is_finite());
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("3 of 3 folds finished") && html.contains("data:image/png;base64,"));
}

#[test]
fn bad_partitions_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, partition, _) = small_busbra(dir.path(), 12);
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(&cfg, TINY).unwrap();
    let cv = |part: &Path, out: &str, extra: &[&str]| {
        let (out, data) = (dir.path().join(out), manifest.to_str().unwrap());
        let mut args = vec!["cv", "--data", data, "--folds", part.to_str().unwrap()];
        args.extend([
            "--out",
            out.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ]);
        args.extend_from_slice(extra);
        birads(&args)
    };
    let try_with = |part: &Path| cv(part, "cv", &[]);
    let good = std::fs::read_to_string(&partition).unwrap();
    // An id that the data does not have.
    let missing = dir.path().join("missing.csv");
    std::fs::write(&missing, format!("{good}busbra_9999-s,1,NaN,1,1\n")).unwrap();
    let o = try_with(&missing);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("not in the data: busbra_9999-s"),
        "{}",
        text(&o)
    );
    // The first image tested in two folds.
    let mut lines: Vec<String> = good.lines().map(String::from).collect();
    let f: Vec<&str> = lines[1].split(',').collect();
    lines[1] = format!("{},{},NaN,NaN,NaN", f[0], f[1]);
    let overlap = dir.path().join("overlap.csv");
    std::fs::write(&overlap, lines.join("\n")).unwrap();
    let o = try_with(&overlap);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("test folds overlap"), "{}", text(&o));
    // --fold beyond the partition.
    let o = cv(&partition, "cv2", &["--fold", "4"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("folds 1..3"), "{}", text(&o));
}
