//! `birads fuse`, then the fused category through `predict --fusion` (CSV folder `fused/`),
//! `predict --report` (one page per image + index) and `serve --fusion`, all on synthetic
//! labelled images with the small fixture models.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

use birads_infer::fusion::FusionModel;
use support::{fixtures, text};

fn birads(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_birads"))
        .args(args)
        .output()
        .unwrap()
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

/// Rows of a CSV as (first column, the other columns as numbers).
fn rows(p: &Path) -> Vec<(String, Vec<f64>)> {
    csv::Reader::from_path(p)
        .unwrap()
        .records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[0].to_string(),
                r.iter().skip(1).map(|x| x.parse().unwrap()).collect(),
            )
        })
        .collect()
}

/// `birads` with `args` must fail (exit 1) saying `message`.
fn fails_with(args: &[&std::ffi::OsStr], message: &str) {
    let o = birads(args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(message), "{}", text(&o));
}

/// The fixture models, the labelled test set and the fitted fusion.
struct Setup {
    dir: tempfile::TempDir,
    test: PathBuf,
    cls: PathBuf,
    fea: PathBuf,
    fusion: PathBuf,
    fitted: FusionModel,
}

#[test]
fn fuse_then_predict_report_and_serve_with_the_fusion() {
    let s = fit();
    let flat = flat_folder(&s);
    let first = predict_flat_with_plain_weights(&s, &flat);
    predict_competition_layout_with_reports(&s);
    wrong_combinations_are_said_plainly(&s, &flat);
    server_fuses_its_own_outputs(&s, &flat.join(first));
}

/// `birads fuse` on the test set with a quarter held out: the fitted model and its report.
fn fit() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let test = support::synth_test_set(dir.path(), 3, [96, 128], [48, 8]);
    let (cls, fea) = (
        fixtures().join("myconvnext_small.pth"),
        fixtures().join("mydensenet_small.pth"),
    );
    let fusion = dir.path().join("fusion.json");
    let o = birads(&[
        os("fuse"),
        os("--data"),
        os(&test),
        os("--cla-weights"),
        os(&cls),
        os("--fea-weights"),
        os(&fea),
        os("--out"),
        os(&fusion),
        os("--held-out"),
        os("0.25"),
    ]);
    let said = text(&o);
    assert!(o.status.success(), "{said}");
    assert!(
        said.contains("fused ") && said.contains("image only"),
        "{said}"
    );
    let fitted = FusionModel::load(&fusion).unwrap();
    assert_eq!(fitted.classes, ["2", "3", "4A", "4B", "4C", "5"]);
    assert_eq!(fitted.image_classes, fitted.classes);
    let held = fitted.report.held_out_fused.as_ref().unwrap();
    assert!(held.images > 0 && held.images < 48, "{held:?}");
    assert!(fitted.report.held_out_image.is_some());
    Setup {
        dir,
        test,
        cls,
        fea,
        fusion,
        fitted,
    }
}

/// The test set's cla/ images in one flat folder: both models see every image.
fn flat_folder(s: &Setup) -> PathBuf {
    let flat = s.dir.path().join("flat");
    std::fs::create_dir_all(&flat).unwrap();
    for e in std::fs::read_dir(s.test.join("cla")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, flat.join(p.file_name().unwrap())).unwrap();
    }
    flat
}

/// A fusion of the fitted one's shape with plain weights. The fixture models' outputs hardly
/// vary between images, so the fitted standardisation magnifies the CSVs' six-decimal
/// rounding; the CSV check uses this one (the server check uses the fitted one, at full
/// precision).
fn plain_weights(fitted: &FusionModel) -> FusionModel {
    let mut plain = fitted.clone();
    plain.mean.iter_mut().for_each(|v| *v = 0.0);
    plain.scale.iter_mut().for_each(|v| *v = 1.0);
    for (k, row) in plain.model.coef.iter_mut().enumerate() {
        for (j, w) in row.iter_mut().enumerate() {
            *w = ((k * 7 + j * 3) % 5) as f64 * 0.4 - 0.8;
        }
    }
    plain
}

/// `predict --fusion` on the flat folder: `fused/` holds the model applied to both CSVs, and
/// its labels are their argmax. Returns the first image's name.
fn predict_flat_with_plain_weights(s: &Setup, flat: &Path) -> String {
    let plain = plain_weights(&s.fitted);
    let plain_fusion = s.dir.path().join("plain_fusion.json");
    plain.save(&plain_fusion).unwrap();
    let out = s.dir.path().join("pred_flat");
    let o = birads(&[
        os("predict"),
        os("--input"),
        os(flat),
        os("--output"),
        os(&out),
        os("--cla-weights"),
        os(&s.cls),
        os("--fea-weights"),
        os(&s.fea),
        os("--probabilities"),
        os("--fusion"),
        os(&plain_fusion),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let (p, q, f) = (
        rows(&out.join("cla_prob.csv")),
        rows(&out.join("fea_prob.csv")),
        rows(&out.join("fused/cla_prob.csv")),
    );
    assert_eq!(f.len(), 48);
    let fused_labels = rows(&out.join("fused/cla_pre.csv"));
    for (((name, pv), (qn, qv)), ((fname, fv), (ln, lv))) in
        p.iter().zip(&q).zip(f.iter().zip(&fused_labels))
    {
        assert_eq!((name, qn, fname, ln), (name, name, name, name));
        let pv: Vec<f32> = pv.iter().map(|&x| x as f32).collect();
        let qv: [f32; 4] = std::array::from_fn(|k| qv[k] as f32);
        let expected = plain.probabilities(&pv, &qv);
        for (a, b) in expected.iter().zip(fv) {
            assert!((a - b).abs() < 1e-4, "{name}: {expected:?} vs {fv:?}");
        }
        let best = (0..6).fold(0, |b, k| if fv[k] > fv[b] { k } else { b });
        assert_eq!(lv[0] as usize, best, "{name}");
    }
    p[0].0.clone()
}

/// The testA layout: the competition CSVs unchanged by `--fusion`, fused labels for cla/, and
/// a report page per image with an index.
fn predict_competition_layout_with_reports(s: &Setup) {
    let plain = s.dir.path().join("plain");
    let with = s.dir.path().join("with");
    let reports = s.dir.path().join("reports");
    let base = [
        os("predict"),
        os("--input"),
        os(&s.test),
        os("--cla-weights"),
        os(&s.cls),
        os("--fea-weights"),
        os(&s.fea),
    ];
    let o = birads(&[&base[..], &[os("--output"), os(&plain)]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let extra = [
        os("--output"),
        os(&with),
        os("--fusion"),
        os(&s.fusion),
        os("--report"),
        os(&reports),
    ];
    let o = birads(&[&base[..], &extra].concat());
    assert!(o.status.success(), "{}", text(&o));
    for f in ["cla_pre.csv", "fea_pre.csv"] {
        assert_eq!(
            std::fs::read(plain.join(f)).unwrap(),
            std::fs::read(with.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(rows(&with.join("fused/cla_pre.csv")).len(), 48);
    let pages: Vec<String> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(pages.len(), 48 + 8 + 1, "{pages:?}");
    let index = std::fs::read_to_string(reports.join("index.html")).unwrap();
    assert!(index.contains("href=\"cla_") && index.contains("href=\"fea_"));
    // A cla/ image's page: its category as in cla_pre.csv, descriptors from the feature model
    // (it ran on cla/ too), the fused category, the notice.
    let (first, label) = &rows(&plain.join("cla_pre.csv"))[0];
    let page = std::fs::read_to_string(reports.join(format!("cla_{first}.html"))).unwrap();
    let class = &s.fitted.classes[label[0] as usize];
    assert!(
        page.contains(&format!("BI-RADS {class}")),
        "category {class}"
    );
    assert!(page.contains("Category (fusion of image and descriptors)"));
    assert!(page.contains("<td>margin</td>"));
    assert!(page.contains("Grad-CAM: BI-RADS"));
    assert!(page.contains("not a substitute for a radiologist"));
}

/// A fusion without a feature model, or fitted on another image model's classes: an error.
fn wrong_combinations_are_said_plainly(s: &Setup, flat: &Path) {
    let out = s.dir.path().join("pred_wrong");
    let flat_run = [
        os("predict"),
        os("--input"),
        os(flat),
        os("--output"),
        os(&out),
    ];
    let no_features = [os("--fusion"), os(&s.fusion)];
    fails_with(
        &[&flat_run[..], &no_features].concat(),
        "--fusion needs a feature model",
    );
    let builtin = [
        os("--cla-weights"),
        os("builtin"),
        os("--fea-weights"),
        os(&s.fea),
    ];
    fails_with(
        &[&flat_run[..], &builtin, &no_features].concat(),
        "fitted on an image model with classes",
    );
}

/// `serve --fusion`: the fused category equals the fitted model on the answer's own outputs.
fn server_fuses_its_own_outputs(s: &Setup, image: &Path) {
    let server = support::start_server(&["--fusion", s.fusion.to_str().unwrap()]);
    let img = std::fs::read(image).unwrap();
    let v: serde_json::Value = serde_json::from_str(
        &ureq::post(&format!("{}/v1/predict", server.base))
            .send_bytes(&img)
            .unwrap()
            .into_string()
            .unwrap(),
    )
    .unwrap();
    let m = &s.fitted;
    let pv: Vec<f32> = m
        .classes
        .iter()
        .map(|c| v["birads"]["probabilities"][c].as_f64().unwrap() as f32)
        .collect();
    let qv: [f32; 4] = std::array::from_fn(|k| {
        v["features"][birads_data::FEATURE_NAMES[k]]["probability"]
            .as_f64()
            .unwrap() as f32
    });
    let expected = m.probabilities(&pv, &qv);
    for (k, c) in m.classes.iter().enumerate() {
        let got = v["fused"]["probabilities"][c].as_f64().unwrap();
        assert!(
            (got - expected[k]).abs() < 1e-5,
            "{c}: {got} vs {}",
            expected[k]
        );
    }
    assert_eq!(v["models"]["fusion"], s.fusion.to_str().unwrap());
}
