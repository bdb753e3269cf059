//! Tests of [`synthesize`] as a whole (layout, labels, determinism, reruns), and the
//! helpers the other test modules of `synth` share.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::config::{CLS_ROOT, FEA_ROOT};
use super::quota::class_quotas;
use super::*;

fn small_cfg(seed: u64) -> SynthConfig {
    SynthConfig {
        seed,
        train_cls: 12,
        train_fea: 8,
        test_cls: 6,
        test_fea: 4,
        min_side: 96,
        max_side: 160,
        lesion_scale: 1.0,
    }
}

/// All files under `root`, keyed by relative path.
fn walk(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn rec(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                rec(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut m = BTreeMap::new();
    rec(root, root, &mut m);
    m
}

fn run_in_pool(threads: usize, out: &Path, cfg: &SynthConfig) -> SynthSummary {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| synthesize(out, cfg)).unwrap()
}

/// Parses "c cx cy w h" strictly: single spaces, 6 decimals, newline-terminated.
fn parse_label(text: &str) -> (usize, [f32; 4]) {
    assert!(
        text.ends_with('\n') && text.matches('\n').count() == 1,
        "one line: {text:?}"
    );
    let parts: Vec<&str> = text.trim_end_matches('\n').split(' ').collect();
    assert_eq!(parts.len(), 5, "{text:?}");
    for p in &parts[1..] {
        let (_, frac) = p.split_once('.').expect("decimal point");
        assert_eq!(frac.len(), 6, "{text:?}");
    }
    let b: Vec<f32> = parts[1..].iter().map(|p| p.parse().unwrap()).collect();
    let b = [b[0], b[1], b[2], b[3]];
    assert_box(b);
    (parts[0].parse().unwrap(), b)
}

/// A valid YOLO box: normalised, positive size, inside the image.
pub(super) fn assert_box(b: [f32; 4]) {
    assert!(b.iter().all(|v| (0.0..=1.0).contains(v)), "{b:?}");
    assert!(b[2] > 0.0 && b[3] > 0.0, "{b:?}");
    assert!(
        b[0] - b[2] / 2.0 >= -1e-5 && b[0] + b[2] / 2.0 <= 1.0 + 1e-5,
        "{b:?}"
    );
    assert!(
        b[1] - b[3] / 2.0 >= -1e-5 && b[1] + b[3] / 2.0 <= 1.0 + 1e-5,
        "{b:?}"
    );
}

/// The lesion must be the dark thing in its box: core mean well below the
/// tissue ring around the box (frame pixels and bright overlays excluded).
fn assert_dark_lesion(path: &Path, b: [f32; 4]) {
    let img = image::open(path).unwrap().to_luma8();
    let (w, h) = (img.width() as f32, img.height() as f32);
    let (cx, cy, bw, bh) = (b[0] * w, b[1] * h, b[2] * w, b[3] * h);
    let mut core = (0f64, 0usize);
    let mut ring = (0f64, 0usize);
    for y in 0..img.height() {
        for x in 0..img.width() {
            let (dx, dy) = (((x as f32 + 0.5) - cx).abs(), ((y as f32 + 0.5) - cy).abs());
            let v = img.get_pixel(x, y)[0];
            if dx < 0.15 * bw && dy < 0.15 * bh && v < 215 {
                core = (core.0 + v as f64, core.1 + 1);
            } else if (dx > 0.5 * bw || dy > 0.5 * bh) && dx < bw && dy < bh && v > 10 && v < 215 {
                ring = (ring.0 + v as f64, ring.1 + 1);
            }
        }
    }
    assert!(core.1 > 0 && ring.1 > 0, "{path:?}");
    let (c, r) = (core.0 / core.1 as f64, ring.0 / ring.1 as f64);
    assert!(
        c < 60.0 && c < 0.6 * r,
        "{path:?}: core {c:.1} vs ring {r:.1}"
    );
}

#[test]
fn refuses_foreign_folders_and_replaces_own_output() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("x.txt"), b"x").unwrap();
    assert!(matches!(
        synthesize(dir.path(), &small_cfg(1)),
        Err(SynthError::Config(_))
    ));

    // A rerun over an earlier synthetic set leaves no stale files of the first run.
    let out = dir.path().join("ds");
    synthesize(&out, &small_cfg(1)).unwrap();
    fs::write(out.join("notes.md"), b"mine").unwrap();
    let cfg = SynthConfig {
        train_cls: 6,
        train_fea: 2,
        test_cls: 1,
        test_fea: 1,
        ..small_cfg(2)
    };
    synthesize(&out, &cfg).unwrap();
    let files = walk(&out);
    assert!(files.contains_key(Path::new("notes.md")));
    let count = |ext: &str| {
        files
            .keys()
            .filter(|k| k.extension().is_some_and(|e| e == ext))
            .count()
    };
    assert_eq!(count("jpg") + count("png"), 10);
    assert_eq!(count("txt"), 6 + 4 * 2 + 1); // labels + README
    let fresh = tempfile::tempdir().unwrap();
    synthesize(fresh.path(), &cfg).unwrap();
    let mut expected = walk(fresh.path());
    expected.insert(PathBuf::from("notes.md"), b"mine".to_vec());
    assert!(expected == files, "rerun differs from a fresh run");
    // The file-name patterns themselves: layout::tests::recognises_generated_names.
}

#[test]
fn deterministic_across_runs_and_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let sa = run_in_pool(1, &a, &small_cfg(11));
    let sb = run_in_pool(3, &b, &small_cfg(11));
    let sc = run_in_pool(2, &c, &small_cfg(12));
    assert_eq!(sa.class_counts, sb.class_counts);
    let (fa, fb, fc) = (walk(&a), walk(&b), walk(&c));
    assert_eq!(fa.len(), fb.len());
    for (k, v) in &fa {
        assert!(fb.get(k) == Some(v), "{k:?} differs between identical runs");
    }
    assert!(
        !fa.keys().any(|k| k.to_string_lossy().ends_with(".tmp")),
        "temporary files left"
    );
    // Another seed: other labels (and images).
    let labels = |m: &BTreeMap<PathBuf, Vec<u8>>| -> Vec<Vec<u8>> {
        m.iter()
            .filter(|(k, _)| k.extension().is_some_and(|e| e == "txt" || e == "csv"))
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_ne!(labels(&fa), labels(&fc));
    assert_eq!(sc.images, sa.images);
    assert_eq!(
        sa.class_counts, sc.class_counts,
        "class quotas do not depend on the seed"
    );
    // render itself is a pure function of the RNG state.
    let spec = LesionSpec {
        birads: 3,
        features: [true, false, true, false],
    };
    let r1 = render(&spec, 150, 120, &mut ChaCha8Rng::seed_from_u64(5));
    let r2 = render(&spec, 150, 120, &mut ChaCha8Rng::seed_from_u64(5));
    let r3 = render(&spec, 150, 120, &mut ChaCha8Rng::seed_from_u64(6));
    assert!(r1 == r2);
    assert!(r1.0 != r3.0);
}

#[test]
fn layout_labels_and_boxes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let cfg = small_cfg(3);
    let sum = synthesize(&out, &cfg).unwrap();
    assert_eq!(sum.images, 30);
    assert_eq!(sum.out, out);
    assert!(fs::read_to_string(out.join("README.txt"))
        .unwrap()
        .contains("seed 3"));
    let mut class_counts = check_cls_train(&out, &cfg);
    assert_eq!(class_counts.iter().sum::<usize>(), cfg.train_cls);
    assert_eq!(class_counts, class_quotas(cfg.train_cls));
    let mut positives = check_fea_train(&out, &cfg);
    check_test_set(&out, &cfg, &mut class_counts, &mut positives);
    assert_eq!(sum.class_counts, class_counts);
    assert_eq!(sum.feature_positive, positives);
}

/// An image of the set: JPEG or PNG, size within the configured bounds, grey.
fn check_image(p: &Path, cfg: &SynthConfig) {
    let name = p.file_name().unwrap().to_string_lossy().to_string();
    assert!(name.ends_with(".jpg") || name.ends_with(".png"), "{name}");
    let img = image::open(p).unwrap();
    assert!(
        (cfg.min_side..=cfg.max_side).contains(&img.width()),
        "{name}"
    );
    assert!(
        (cfg.min_side..=cfg.max_side).contains(&img.height()),
        "{name}"
    );
    let rgb = img.to_rgb8();
    // Grey: JPEG colour conversion may round channels apart by a level or two.
    assert!(
        rgb.pixels()
            .all(|p| p[0].abs_diff(p[1]) <= 3 && p[1].abs_diff(p[2]) <= 3),
        "{name}"
    );
}

/// Checks the classification training set (names, labels, boxes, dark lesions) and
/// returns its class counts.
fn check_cls_train(out: &Path, cfg: &SynthConfig) -> [usize; 6] {
    let cls = out.join(CLS_ROOT).join("train");
    let mut class_counts = [0usize; 6];
    for (c, dir_name) in CLASS_DIRS.iter().enumerate() {
        let images: Vec<PathBuf> = fs::read_dir(cls.join(dir_name).join("images"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let n_labels = fs::read_dir(cls.join(dir_name).join("labels"))
            .unwrap()
            .count();
        assert_eq!(images.len(), n_labels, "{dir_name}");
        assert!(!images.is_empty(), "class {dir_name} empty");
        class_counts[c] = images.len();
        for img in images {
            let stem = img.file_stem().unwrap().to_string_lossy().to_string();
            assert!(stem.starts_with("synth_cls_") && stem.len() == 15, "{stem}");
            let id: usize = stem[10..].parse().unwrap();
            assert!((1..=cfg.train_cls).contains(&id));
            let text = fs::read_to_string(
                cls.join(dir_name)
                    .join("labels")
                    .join(format!("{stem}.txt")),
            )
            .unwrap();
            let (label, b) = parse_label(&text);
            assert_eq!(label, c + 1);
            check_image(&img, cfg);
            assert_dark_lesion(&img, b);
        }
    }
    class_counts
}

/// Checks the feature training set (four label files with one shared box) and returns
/// its positive counts per feature.
fn check_fea_train(out: &Path, cfg: &SynthConfig) -> [usize; 4] {
    let fea = out.join(FEA_ROOT).join("train");
    let images: Vec<PathBuf> = fs::read_dir(fea.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(images.len(), cfg.train_fea);
    let mut positives = [0usize; 4];
    for img in &images {
        let stem = img.file_stem().unwrap().to_string_lossy().to_string();
        assert!(stem.starts_with("synth_fea_"), "{stem}");
        let mut boxes = Vec::new();
        for (k, f) in FEATURE_NAMES.iter().enumerate() {
            let text =
                fs::read_to_string(fea.join(format!("{f}_labels")).join(format!("{stem}.txt")))
                    .unwrap();
            let (v, b) = parse_label(&text);
            assert!(v <= 1);
            positives[k] += v;
            boxes.push(text.split_once(' ').unwrap().1.to_string());
            if k == 0 {
                assert_dark_lesion(img, b);
            }
        }
        assert!(boxes.iter().all(|b| b == &boxes[0]));
        check_image(img, cfg);
    }
    positives
}

/// Checks the test set (CSVs with exact headers referring to existing images) and adds
/// its class and feature counts to `class_counts` and `positives`.
fn check_test_set(
    out: &Path,
    cfg: &SynthConfig,
    class_counts: &mut [usize; 6],
    positives: &mut [usize; 4],
) {
    let test = out.join("testA");
    let cla_gt = fs::read_to_string(test.join("cla_gt.csv")).unwrap();
    let fea_gt = fs::read_to_string(test.join("fea_gt.csv")).unwrap();
    let boxes = fs::read_to_string(test.join("boxes.csv")).unwrap();
    assert!(cla_gt.starts_with("img_name,label\n"));
    assert!(fea_gt.starts_with("img_name,boundary,calcification,direction,shape\n"));
    assert!(boxes.starts_with("img_name,cx,cy,w,h\n"));
    assert_eq!(cla_gt.lines().count(), cfg.test_cls + 1);
    assert_eq!(fea_gt.lines().count(), cfg.test_fea + 1);
    assert_eq!(boxes.lines().count(), cfg.test_cls + cfg.test_fea + 1);
    for line in cla_gt.lines().skip(1) {
        let (name, label) = line.split_once(',').unwrap();
        assert_eq!(name.len(), 8, "{name}");
        class_counts[label.parse::<usize>().unwrap()] += 1;
        check_image(&test.join("cla").join(name), cfg);
    }
    for line in fea_gt.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 5);
        for k in 0..4 {
            positives[k] += f[k + 1].parse::<usize>().unwrap();
        }
        check_image(&test.join("fea").join(f[0]), cfg);
    }
    for line in boxes.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let b: Vec<f32> = f[1..].iter().map(|v| v.parse().unwrap()).collect();
        assert_box([b[0], b[1], b[2], b[3]]);
        assert_dark_lesion(&test.join(f[0]), [b[0], b[1], b[2], b[3]]);
    }
    assert_eq!(
        fs::read_dir(test.join("cla")).unwrap().count(),
        cfg.test_cls
    );
    assert_eq!(
        fs::read_dir(test.join("fea")).unwrap().count(),
        cfg.test_fea
    );
}
