//! Every dataset layout, and every label problem reported item by item.

use std::fs;
use std::path::{Path, PathBuf};

use birads_data::readers::{detect_layout, Layout, CLS_PACKAGE, FEA_PACKAGE};
use birads_data::{read_dataset, Dataset, Severity};

fn img(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let ext = path.extension().unwrap().to_str().unwrap();
    let im = image::RgbImage::from_pixel(40, 30, image::Rgb([90, 90, 90]));
    let fmt = if ext == "png" {
        image::ImageFormat::Png
    } else {
        image::ImageFormat::Jpeg
    };
    im.save_with_format(path, fmt).unwrap();
}

fn txt(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn problems_for<'a>(ds: &'a Dataset, needle: &str) -> Vec<&'a birads_data::Problem> {
    ds.problems
        .iter()
        .filter(|p| p.item.contains(needle))
        .collect()
}

fn has_problem(ds: &Dataset, item: &str, reason: &str, sev: Severity) -> bool {
    problems_for(ds, item)
        .iter()
        .any(|p| p.reason.contains(reason) && p.severity == sev)
}

fn names(ds: &Dataset) -> Vec<String> {
    ds.samples.iter().map(|s| s.image.file_name()).collect()
}

/// A classification package with every kind of problem.
fn cls_fixture(root: &Path) -> PathBuf {
    let train = root.join(CLS_PACKAGE).join("train");
    let c = |class: &str| train.join(class);
    img(&c("2类").join("images/good.jpg"));
    txt(&c("2类").join("labels/good.txt"), "1 0.5 0.5 0.2 0.3\n");
    img(&c("4A类").join("images/0010.png"));
    txt(&c("4A类").join("labels/0010.txt"), "3 0.4 0.4 0.1 0.1\n");
    img(&c("4A类").join("images/0002.jpg"));
    txt(&c("4A类").join("labels/0002.txt"), "3 0.4 0.4 0.1 0.1\n");
    // Problems.
    img(&c("3类").join("images/nolabel.jpg"));
    img(&c("3类").join("images/empty.jpg"));
    txt(&c("3类").join("labels/empty.txt"), "");
    img(&c("3类").join("images/zero.jpg"));
    txt(&c("3类").join("labels/zero.txt"), "0 0.5 0.5 0.1 0.1\n");
    img(&c("3类").join("images/seven.jpg"));
    txt(&c("3类").join("labels/seven.txt"), "7 0.5 0.5 0.1 0.1\n");
    img(&c("3类").join("images/nan.jpg"));
    txt(&c("3类").join("labels/nan.txt"), "2 nan 0.5 0.1 0.1\n");
    img(&c("3类").join("images/outside.jpg"));
    txt(&c("3类").join("labels/outside.txt"), "2 0.5 1.5 0.1 0.1\n");
    img(&c("3类").join("images/multi.jpg"));
    txt(
        &c("3类").join("labels/multi.txt"),
        "2 0.5 0.5 0.1 0.1\n2 0.3 0.3 0.1 0.1\n",
    );
    img(&c("3类").join("images/mismatch.jpg"));
    txt(&c("3类").join("labels/mismatch.txt"), "5 0.5 0.5 0.1 0.1\n");
    img(&c("3类").join("images/dup.jpg"));
    img(&c("3类").join("images/dup.png"));
    txt(&c("3类").join("labels/dup.txt"), "2 0.5 0.5 0.1 0.1\n");
    txt(&c("3类").join("labels/orphan.txt"), "2 0.5 0.5 0.1 0.1\n");
    img(&c("3类").join("images/letters.jpg"));
    txt(&c("3类").join("labels/letters.txt"), "2 a b c d\n");
    img(&c("3类").join("images/short.jpg"));
    txt(&c("3类").join("labels/short.txt"), "2 0.5 0.5\n");
    img(&c("6类").join("images/x.jpg"));
    txt(&c("3类").join("images/notes.txt"), "not an image");
    root.join(CLS_PACKAGE)
}

#[test]
fn classification_layout_reads_good_items_and_reports_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cls = cls_fixture(dir.path());
    assert_eq!(detect_layout(&cls).unwrap(), Layout::CompetitionCls);
    let ds = read_dataset(&cls).unwrap();
    // Natural order inside a folder: 0002 before 0010.
    assert_eq!(
        names(&ds),
        [
            "good.jpg",
            "multi.jpg",
            "nolabel.jpg",
            "0002.jpg",
            "0010.png"
        ]
    );
    let good = &ds.samples[0];
    assert_eq!(good.class, Some(0));
    assert_eq!(good.lesion.unwrap().w, 0.2);
    assert_eq!(ds.samples[3].class, Some(2));
    assert!(ds.samples[2].lesion.is_none());

    use Severity::*;
    assert!(has_problem(&ds, "nolabel.jpg", "no label file", Warning));
    assert!(has_problem(&ds, "empty.txt", "empty label file", Error));
    assert!(has_problem(&ds, "zero.txt", "out of range 1..=6", Error));
    assert!(has_problem(&ds, "seven.txt", "out of range", Error));
    assert!(has_problem(&ds, "nan.txt", "not finite", Error));
    assert!(has_problem(&ds, "outside.txt", "outside [0,1]", Error));
    assert!(has_problem(&ds, "multi.txt", "2 lines", Warning));
    assert!(has_problem(
        &ds,
        "mismatch.txt",
        "label says class 5",
        Error
    ));
    assert!(has_problem(&ds, "dup", "duplicate stem", Error));
    assert!(has_problem(&ds, "orphan.txt", "without an image", Error));
    assert!(has_problem(&ds, "letters.txt", "not a number", Error));
    assert!(has_problem(&ds, "short.txt", "expected 5 fields", Error));
    assert!(has_problem(&ds, "6类", "unknown class folder '6类'", Error));
    assert!(has_problem(&ds, "6类", "1 images were left out", Error));
    assert!(has_problem(&ds, "notes.txt", "not an image file", Warning));
    // Nothing vanished: every image is either a sample or named in a problem.
    for entry in walk(&cls) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        if entry.extension().is_some_and(|e| e == "jpg" || e == "png") {
            let stem = entry.file_stem().unwrap().to_string_lossy().to_string();
            let accounted = names(&ds).contains(&name)
                || ds
                    .problems
                    .iter()
                    .any(|p| p.item.contains(&stem) || p.item.contains("6类"));
            assert!(accounted, "{name} vanished silently");
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn feature_layout_allows_partial_labels_and_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let fea = dir.path().join(FEA_PACKAGE).join("train");
    img(&fea.join("images/a.jpg"));
    img(&fea.join("images/b.png"));
    img(&fea.join("images/c.jpg"));
    img(&fea.join("images/d.jpg"));
    for (f, a, b) in [
        ("boundary", "1", "0"),
        ("calcification", "0", "1"),
        ("direction", "1", "1"),
        ("shape", "0", "0"),
    ] {
        txt(
            &fea.join(format!("{f}_labels/a.txt")),
            &format!("{a} 0.5 0.5 0.2 0.2\n"),
        );
        if f != "shape" {
            txt(
                &fea.join(format!("{f}_labels/b.txt")),
                &format!("{b} 0.4 0.4 0.2 0.2\n"),
            );
        }
    }
    txt(&fea.join("shape_labels/b.txt"), ""); // empty file: that feature unlabelled
    txt(&fea.join("boundary_labels/c.txt"), "3 0.5 0.5 0.2 0.2\n"); // not 0/1
    txt(&fea.join("shape_labels/ghost.txt"), "1 0.5 0.5 0.2 0.2\n");
    txt(&fea.join("margin_labels/a.txt"), "1 0.5 0.5 0.2 0.2\n");
    assert_eq!(detect_layout(&fea).unwrap(), Layout::CompetitionFea);
    let ds = read_dataset(&fea).unwrap();
    assert_eq!(names(&ds), ["a.jpg", "b.png"]);
    assert_eq!(
        ds.samples[0].features,
        [Some(true), Some(false), Some(true), Some(false)]
    );
    assert_eq!(
        ds.samples[1].features,
        [Some(false), Some(true), Some(true), None]
    );
    assert_eq!(ds.samples[1].lesion.unwrap().cx, 0.4);
    use Severity::*;
    assert!(has_problem(
        &ds,
        "shape_labels/b.txt",
        "empty label file",
        Error
    ));
    assert!(has_problem(
        &ds,
        "boundary_labels/c.txt",
        "not 0 or 1",
        Error
    ));
    assert!(has_problem(&ds, "c.jpg", "no usable feature label", Error));
    assert!(has_problem(&ds, "d.jpg", "no usable feature label", Error));
    assert!(has_problem(&ds, "ghost.txt", "without an image", Error));
    assert!(has_problem(
        &ds,
        "margin_labels",
        "unknown feature folder",
        Warning
    ));
}

#[test]
fn reorganised_layouts_and_test_sets() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("cls");
    img(&r.join("cla/x1.jpg"));
    img(&r.join("cla/x2.jpg"));
    txt(&r.join("labels/x1.txt"), "6 0.5 0.5 0.3 0.3\n");
    assert_eq!(detect_layout(&r).unwrap(), Layout::ReorganisedCls);
    let ds = read_dataset(&r).unwrap();
    assert_eq!(ds.samples.len(), 1);
    assert_eq!(ds.samples[0].class, Some(5));
    assert!(has_problem(&ds, "x2.jpg", "no label file", Severity::Error));

    let f = dir.path().join("fea");
    img(&f.join("cla/y.jpg"));
    for feat in ["boundary", "calcification", "direction", "shape"] {
        txt(
            &f.join(format!("labels/{feat}_labels/y.txt")),
            "1 0.5 0.5 0.3 0.3\n",
        );
    }
    assert_eq!(detect_layout(&f).unwrap(), Layout::ReorganisedFea);
    let ds = read_dataset(&f).unwrap();
    assert_eq!(ds.samples[0].features, [Some(true); 4]);

    // testB-like: cla/ and fea/ images only; same stem as jpg and png are two images here.
    let t = dir.path().join("testB");
    img(&t.join("cla/10.jpg"));
    img(&t.join("cla/9.jpg"));
    img(&t.join("cla/9.png"));
    img(&t.join("fea/1.png"));
    txt(
        &t.join("cla_gt.csv"),
        "img_name,label\n9.jpg,4\n10.jpg,0\nmissing.jpg,1\n9.png,9\n",
    );
    assert_eq!(detect_layout(&t).unwrap(), Layout::TestSet);
    let ds = read_dataset(&t).unwrap();
    assert_eq!(names(&ds), ["9.jpg", "9.png", "10.jpg", "1.png"]);
    assert_eq!(ds.samples[0].source, "testB/cla");
    assert_eq!(ds.samples[0].class, Some(4));
    assert_eq!(ds.samples[2].class, Some(0));
    assert_eq!(ds.samples[3].source, "testB/fea");
    assert!(has_problem(
        &ds,
        "missing.jpg",
        "no such image",
        Severity::Error
    ));
    assert!(has_problem(
        &ds,
        "cla_gt.csv:5",
        "label must be 0..5",
        Severity::Error
    ));

    // A flat folder.
    let flat = dir.path().join("flat");
    img(&flat.join("b.jpg"));
    img(&flat.join("a.png"));
    assert_eq!(detect_layout(&flat).unwrap(), Layout::Flat);
    assert_eq!(names(&read_dataset(&flat).unwrap()), ["a.png", "b.jpg"]);

    assert!(read_dataset(&dir.path().join("nope")).is_err());
    let empty = dir.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    assert!(read_dataset(&empty)
        .unwrap_err()
        .to_string()
        .contains("no dataset layout"));
}

#[test]
fn package_root_reads_both_tasks_and_unicode_names() {
    let dir = tempfile::tempdir().unwrap();
    cls_fixture(dir.path());
    let fea = dir.path().join(FEA_PACKAGE).join("train");
    img(&fea.join("images/超声 01.jpg"));
    for feat in ["boundary", "calcification", "direction", "shape"] {
        txt(
            &fea.join(format!("{feat}_labels/超声 01.txt")),
            "0 0.5 0.5 0.3 0.3\n",
        );
    }
    img(&dir.path().join("testA/cla/0001.jpg"));
    assert_eq!(detect_layout(dir.path()).unwrap(), Layout::Package);
    let ds = read_dataset(dir.path()).unwrap();
    assert_eq!(ds.classified().count(), 5);
    assert_eq!(ds.featured().count(), 1);
    assert!(ds
        .samples
        .iter()
        .any(|s| s.image.file_name() == "超声 01.jpg"));
    assert!(ds.samples.iter().any(|s| s.source == "testA/cla"));
}

#[cfg(unix)]
#[test]
fn symlink_loops_and_non_utf8_names_are_reported_not_fatal() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let flat = dir.path().join("flat");
    img(&flat.join("ok.jpg"));
    std::os::unix::fs::symlink(flat.join("loop.jpg"), flat.join("loop.jpg")).unwrap();
    let weird = flat.join(std::ffi::OsStr::from_bytes(b"caf\xe9.jpg"));
    fs::copy(flat.join("ok.jpg"), &weird).unwrap();
    let ds = read_dataset(&flat).unwrap();
    assert_eq!(ds.samples.len(), 2, "{:?}", ds.samples);
    assert!(has_problem(
        &ds,
        "loop.jpg",
        "unreadable entry",
        Severity::Error
    ));
}

#[test]
fn csv_manifest_reads_busbra_as_it_is() {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/bus-bra");
    assert!(
        root.join("labels.csv").is_file(),
        "BUS-BRA expected at {}",
        root.display()
    );
    let ds = read_dataset(&root.join("labels.csv")).unwrap();
    assert_eq!(ds.samples.len(), 1875);
    assert_eq!(
        ds.error_count(),
        0,
        "{:?}",
        &ds.problems[..ds.problems.len().min(5)]
    );
    assert_eq!(ds.classes.names(), ["2", "3", "4", "5"]);
    let count = |c| ds.samples.iter().filter(|s| s.class == Some(c)).count();
    assert_eq!(
        [count(0), count(1), count(2), count(3)],
        [562, 463, 693, 157]
    );
    let groups: std::collections::HashSet<_> = ds.samples.iter().map(|s| s.group_key()).collect();
    assert_eq!(groups.len(), 1064);
    // busbra_0001-l: box 90,23 104×80 in a 274×353 image.
    let s = &ds.samples[0];
    assert_eq!(s.image.file_name(), "busbra_0001-l.jpg");
    let b = s.lesion.unwrap();
    assert!((b.cx - (90.0 + 52.0) / 274.0).abs() < 1e-6 && (b.h - 80.0 / 353.0).abs() < 1e-6);
}

#[test]
fn csv_manifest_reports_bad_rows_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    img(&dir.path().join("a.jpg"));
    img(&dir.path().join("b.jpg"));
    img(&dir.path().join("c.jpg"));
    let m = dir.path().join("m.csv");
    txt(
        &m,
        "image,birads,boundary,calcification,direction,shape,cx,cy,w,h,patient\n\
         a.jpg,4A,1,0,,1,0.5,0.5,0.2,0.2,p1\n\
         b.jpg,4b,0,0,0,0,,,,,p1\n\
         missing.jpg,3,,,,,,,,,p2\n\
         c.jpg,3,2,,,,,,,,p3\n\
         a.jpg,3,,,,,,,,,p1\n\
         c.jpg,3,,,,,nan,0.5,0.1,0.1,p3\n",
    );
    let ds = read_dataset(&m).unwrap();
    assert_eq!(ds.classes.names(), ["2", "3", "4A", "4B", "4C", "5"]);
    assert_eq!(names(&ds), ["a.jpg", "b.jpg"]);
    assert_eq!(
        ds.samples[0].features,
        [Some(true), Some(false), None, Some(true)]
    );
    assert_eq!(ds.samples[1].class, Some(3));
    assert_eq!(ds.samples[0].group.as_deref(), Some("p1"));
    assert!(has_problem(&ds, "m.csv:4", "not found", Severity::Error));
    assert!(has_problem(
        &ds,
        "m.csv:5",
        "boundary must be 0 or 1",
        Severity::Error
    ));
    assert!(has_problem(&ds, "m.csv:6", "listed twice", Severity::Error));
    assert!(has_problem(
        &ds,
        "m.csv:7",
        "not a finite number",
        Severity::Error
    ));

    let out = dir.path().join("out.csv");
    let refs: Vec<_> = ds.samples.iter().collect();
    birads_data::manifest::write_manifest(&out, &refs, &ds.classes).unwrap();
    let back = read_dataset(&out).unwrap();
    assert_eq!(back.samples.len(), 2);
    for (x, y) in back.samples.iter().zip(&ds.samples) {
        assert_eq!(
            (x.class, x.features, x.group.clone()),
            (y.class, y.features, y.group.clone())
        );
        assert_eq!(x.lesion.is_some(), y.lesion.is_some());
    }
}
