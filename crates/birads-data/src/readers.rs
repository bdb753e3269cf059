//! Dataset readers: every layout users have, into one [`Dataset`].
//!
//! * the official competition package (`乳腺分类训练数据集/train/<2类…5类>/{images,labels}`,
//!   `乳腺特征训练数据集/train/{images,<feature>_labels}`),
//! * the original program's reorganised layouts (`<root>/cla` + `<root>/labels[/<feature>_labels]`),
//! * image-only test folders (`testA`/`testB` with `cla/` and `fea/`, optionally with
//!   `cla_gt.csv`/`fea_gt.csv`), or a flat folder of images,
//! * CSV manifests (see [`crate::manifest`]).
//!
//! Fatal errors (the path does not exist, no layout recognised) are `Err`; everything about
//! individual items becomes a [`Problem`] and the rest is still read.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::labels::{interpret, ClassIds};
use crate::sample::{ClassList, Dataset, ImageSource, LesionBox, Problem, Sample, FEATURE_NAMES};

/// Folder names of the official training package.
pub const CLS_PACKAGE: &str = "乳腺分类训练数据集";
pub const FEA_PACKAGE: &str = "乳腺特征训练数据集";

/// Image file extensions read (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "dcm"];

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}: no such file or folder")]
    NotFound(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no dataset layout recognised (expected a competition folder, cla/ + labels/, cla/ + fea/, a folder of images or a .csv manifest)")]
    UnknownLayout(PathBuf),
    #[error("{path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
}

/// The layouts [`read_dataset`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A folder holding `乳腺分类训练数据集` and/or `乳腺特征训练数据集` (and maybe test sets).
    Package,
    /// `<2类|3类|…>/{images,labels}` class folders.
    CompetitionCls,
    /// `images/` + `<feature>_labels/`.
    CompetitionFea,
    /// `cla/` + `labels/*.txt`.
    ReorganisedCls,
    /// `cla/` + `labels/<feature>_labels/*.txt`.
    ReorganisedFea,
    /// `cla/` and/or `fea/` of images only.
    TestSet,
    /// Images directly in the folder.
    Flat,
    /// A CSV file.
    Manifest,
}

pub fn is_image_name(name: &Path) -> bool {
    name.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

/// Entries of a folder, in natural name order, split into folders and files. Entries whose
/// type cannot be determined (broken links, symlink loops, no permission) become problems.
struct Listing {
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

fn list_dir(dir: &Path, problems: &mut Vec<Problem>) -> Result<Listing, ReadError> {
    let rd = std::fs::read_dir(dir).map_err(|e| ReadError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for entry in rd {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                problems.push(Problem::error(
                    dir.display(),
                    format!("cannot list entry: {e}"),
                ));
                continue;
            }
        };
        let path = entry.path();
        // Follow symlinks; a loop or dangling link fails here and is reported.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => dirs.push(path),
            Ok(_) => files.push(path),
            Err(e) => problems.push(Problem::error(
                path.display(),
                format!("unreadable entry: {e}"),
            )),
        }
    }
    let key = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    dirs.sort_by(|a, b| natord::compare(&key(a), &key(b)));
    files.sort_by(|a, b| natord::compare(&key(a), &key(b)));
    Ok(Listing { dirs, files })
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn child(dir: &Path, name: &str) -> Option<PathBuf> {
    let p = dir.join(name);
    p.is_dir().then_some(p)
}

/// Images of a folder keyed by file stem. Non-image files and duplicate stems (`a.jpg` and
/// `a.png`: a label could belong to either) are reported; duplicates are left out.
fn images_by_stem(
    dir: &Path,
    problems: &mut Vec<Problem>,
) -> Result<BTreeMap<OsString, PathBuf>, ReadError> {
    let listing = list_dir(dir, problems)?;
    let mut by_stem: BTreeMap<OsString, Vec<PathBuf>> = BTreeMap::new();
    for f in listing.files {
        if is_image_name(&f) {
            let stem = f.file_stem().unwrap_or_default().to_os_string();
            by_stem.entry(stem).or_default().push(f);
        } else {
            problems.push(Problem::warning(
                f.display(),
                "not an image file (jpg, png, bmp, dcm): ignored",
            ));
        }
    }
    for d in listing.dirs {
        problems.push(Problem::warning(
            d.display(),
            "unexpected folder inside an image folder: ignored",
        ));
    }
    let mut out = BTreeMap::new();
    for (stem, paths) in by_stem {
        if paths.len() > 1 {
            let names: Vec<String> = paths.iter().map(|p| name_of(p)).collect();
            problems.push(Problem::error(
                dir.join(&stem).display(),
                format!(
                    "duplicate stem: {} share one label file; all left out",
                    names.join(" and ")
                ),
            ));
        } else {
            out.insert(stem, paths.into_iter().next().unwrap());
        }
    }
    Ok(out)
}

/// Label files of a folder keyed by stem; other files are reported.
fn labels_by_stem(
    dir: &Path,
    problems: &mut Vec<Problem>,
) -> Result<BTreeMap<OsString, PathBuf>, ReadError> {
    let listing = list_dir(dir, problems)?;
    let mut out = BTreeMap::new();
    for f in listing.files {
        if f.extension()
            .map(|e| e.eq_ignore_ascii_case("txt"))
            .unwrap_or(false)
        {
            out.insert(f.file_stem().unwrap_or_default().to_os_string(), f);
        } else {
            problems.push(Problem::warning(
                f.display(),
                "not a .txt label file: ignored",
            ));
        }
    }
    Ok(out)
}

fn read_label(
    path: &Path,
    ids: ClassIds,
    problems: &mut Vec<Problem>,
) -> Option<crate::labels::Label> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            problems.push(Problem::error(
                path.display(),
                format!("cannot read label file: {e}"),
            ));
            return None;
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(_) => {
            problems.push(Problem::error(
                path.display(),
                "label file is not UTF-8 text",
            ));
            return None;
        }
    };
    match interpret(&text, ids) {
        Ok(l) => {
            for w in &l.warnings {
                problems.push(Problem::warning(path.display(), w.clone()));
            }
            Some(l)
        }
        Err(e) => {
            problems.push(Problem::error(path.display(), e));
            None
        }
    }
}

fn report_orphan_labels(
    labels: &BTreeMap<OsString, PathBuf>,
    images: &BTreeMap<OsString, PathBuf>,
    problems: &mut Vec<Problem>,
) {
    for (stem, path) in labels {
        if !images.contains_key(stem) {
            problems.push(Problem::error(
                path.display(),
                "label file without an image",
            ));
        }
    }
}

/// Work out which layout a path holds.
pub fn detect_layout(path: &Path) -> Result<Layout, ReadError> {
    if !path.exists() {
        return Err(ReadError::NotFound(path.to_path_buf()));
    }
    if path.is_file() {
        return if path
            .extension()
            .map(|e| e.eq_ignore_ascii_case("csv"))
            .unwrap_or(false)
        {
            Ok(Layout::Manifest)
        } else {
            Err(ReadError::UnknownLayout(path.to_path_buf()))
        };
    }
    if child(path, CLS_PACKAGE).is_some() || child(path, FEA_PACKAGE).is_some() {
        return Ok(Layout::Package);
    }
    let mut scratch = Vec::new();
    let listing = list_dir(path, &mut scratch)?;
    let dir_names: Vec<String> = listing.dirs.iter().map(|d| name_of(d)).collect();
    if dir_names.iter().any(|n| n.ends_with('类')) {
        return Ok(Layout::CompetitionCls);
    }
    if dir_names.iter().any(|n| n == "images") && dir_names.iter().any(|n| n.ends_with("_labels")) {
        return Ok(Layout::CompetitionFea);
    }
    if dir_names.iter().any(|n| n == "cla") {
        if let Some(labels) = child(path, "labels") {
            let mut s = Vec::new();
            let l = list_dir(&labels, &mut s)?;
            return Ok(if l.dirs.iter().any(|d| name_of(d).ends_with("_labels")) {
                Layout::ReorganisedFea
            } else {
                Layout::ReorganisedCls
            });
        }
        return Ok(Layout::TestSet);
    }
    if dir_names.iter().any(|n| n == "fea") {
        return Ok(Layout::TestSet);
    }
    // `train/` inside a competition folder.
    if dir_names.iter().any(|n| n == "train") {
        return detect_layout(&path.join("train"));
    }
    if listing.files.iter().any(|f| is_image_name(f)) {
        return Ok(Layout::Flat);
    }
    Err(ReadError::UnknownLayout(path.to_path_buf()))
}

/// Read any supported dataset layout.
pub fn read_dataset(path: &Path) -> Result<Dataset, ReadError> {
    match detect_layout(path)? {
        Layout::Package => read_package(path),
        Layout::CompetitionCls => read_competition_cls(&train_dir(path)),
        Layout::CompetitionFea => read_competition_fea(&train_dir(path)),
        Layout::ReorganisedCls => read_reorganised_cls(path),
        Layout::ReorganisedFea => read_reorganised_fea(path),
        Layout::TestSet => read_test_set(path),
        Layout::Flat => read_flat(path),
        Layout::Manifest => crate::manifest::read_manifest(path),
    }
}

/// A competition folder may be given with or without its `train/` level.
fn train_dir(path: &Path) -> PathBuf {
    match child(path, "train") {
        Some(t) if !path.join("images").is_dir() && !has_class_dirs(path) => t,
        _ => path.to_path_buf(),
    }
}

fn has_class_dirs(path: &Path) -> bool {
    std::fs::read_dir(path)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with('类') && e.path().is_dir())
        })
        .unwrap_or(false)
}

/// The whole package: both training sets and any test sets beside them.
pub fn read_package(root: &Path) -> Result<Dataset, ReadError> {
    let mut ds = Dataset::new(
        format!("competition package at {}", root.display()),
        ClassList::birads6(),
    );
    if let Some(cls) = child(root, CLS_PACKAGE) {
        ds.extend(read_competition_cls(&train_dir(&cls))?);
    }
    if let Some(fea) = child(root, FEA_PACKAGE) {
        ds.extend(read_competition_fea(&train_dir(&fea))?);
    }
    let mut problems = Vec::new();
    for d in list_dir(root, &mut problems)?.dirs {
        let name = name_of(&d);
        if name == CLS_PACKAGE || name == FEA_PACKAGE {
            continue;
        }
        if d.join("cla").is_dir() || d.join("fea").is_dir() {
            ds.extend(read_test_set(&d)?);
        } else {
            problems.push(Problem::warning(
                d.display(),
                "unrecognised folder in the package: ignored",
            ));
        }
    }
    ds.problems.extend(problems);
    Ok(ds)
}

/// `<root>/<2类|…|5类>/{images,labels}`: the class comes from the folder and must agree with
/// the (1-based) id in the label file, which also gives the lesion box.
pub fn read_competition_cls(root: &Path) -> Result<Dataset, ReadError> {
    let classes = ClassList::birads6();
    let mut ds = Dataset::new(
        format!("competition classification layout at {}", root.display()),
        classes.clone(),
    );
    let mut problems = Vec::new();
    let listing = list_dir(root, &mut problems)?;
    for f in &listing.files {
        problems.push(Problem::warning(
            f.display(),
            "file outside the class folders: ignored",
        ));
    }
    for class_dir in &listing.dirs {
        let name = name_of(class_dir);
        let Some(class) = classes.index_of(&name) else {
            let n = count_images(class_dir);
            problems.push(Problem::error(
                class_dir.display(),
                format!("unknown class folder '{name}' (expected 2类, 3类, 4A类, 4B类, 4C类, 5类): its {n} images were left out"),
            ));
            continue;
        };
        let Some(img_dir) = child(class_dir, "images") else {
            problems.push(Problem::error(
                class_dir.display(),
                "class folder has no images/ folder",
            ));
            continue;
        };
        let images = images_by_stem(&img_dir, &mut problems)?;
        let labels = match child(class_dir, "labels") {
            Some(l) => labels_by_stem(&l, &mut problems)?,
            None => {
                problems.push(Problem::warning(
                    class_dir.display(),
                    "class folder has no labels/ folder: no lesion boxes",
                ));
                BTreeMap::new()
            }
        };
        report_orphan_labels(&labels, &images, &mut problems);
        for (stem, img) in images {
            let mut sample = Sample::unlabelled(ImageSource::Path(img.clone()), "cls");
            sample.class = Some(class);
            match labels.get(&stem) {
                None => {
                    problems.push(Problem::warning(
                        img.display(),
                        "no label file: class taken from the folder, no lesion box",
                    ));
                }
                Some(lp) => {
                    sample.origin = lp.display().to_string();
                    match read_label(lp, ClassIds::OneBased(classes.len()), &mut problems) {
                        None => continue,
                        Some(l) if l.value != class => {
                            problems.push(Problem::error(
                                lp.display(),
                                format!(
                                    "label says class {} ({}类) but the image is in {name}: left out",
                                    l.value + 1,
                                    classes.name(l.value).unwrap_or("?")
                                ),
                            ));
                            continue;
                        }
                        Some(l) => sample.lesion = l.bbox,
                    }
                }
            }
            ds.samples.push(sample);
        }
    }
    ds.problems.extend(problems);
    Ok(ds)
}

fn count_images(dir: &Path) -> usize {
    walk_images(dir).len()
}

fn walk_images(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut depth_guard = 0;
    while let Some(d) = stack.pop() {
        depth_guard += 1;
        if depth_guard > 10_000 {
            break;
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(p);
                } else if is_image_name(&p) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Which feature a `<feature>_labels` folder holds.
fn feature_index(folder: &str) -> Option<usize> {
    let name = folder.strip_suffix("_labels")?;
    FEATURE_NAMES
        .iter()
        .position(|f| f.eq_ignore_ascii_case(name))
}

/// Features from per-feature label folders; shared by the competition and reorganised layouts.
fn read_feature_labels(
    image_dir: &Path,
    labels_root: &Path,
    description: String,
) -> Result<Dataset, ReadError> {
    let mut ds = Dataset::new(description, ClassList::birads6());
    let mut problems = Vec::new();
    let images = images_by_stem(image_dir, &mut problems)?;
    let mut feature_labels: [Option<BTreeMap<OsString, PathBuf>>; 4] = Default::default();
    for d in list_dir(labels_root, &mut problems)?.dirs {
        let name = name_of(&d);
        if d == image_dir {
            continue;
        }
        match feature_index(&name) {
            Some(i) => feature_labels[i] = Some(labels_by_stem(&d, &mut problems)?),
            None if name.ends_with("_labels") => {
                problems.push(Problem::warning(d.display(), format!("unknown feature folder '{name}' (expected boundary, calcification, direction, shape): ignored")))
            }
            None => {}
        }
    }
    for (i, fl) in feature_labels.iter().enumerate() {
        match fl {
            Some(labels) => report_orphan_labels(labels, &images, &mut problems),
            None => problems.push(Problem::warning(
                labels_root.display(),
                format!(
                    "no {}_labels folder: that feature is unlabelled",
                    FEATURE_NAMES[i]
                ),
            )),
        }
    }
    for (stem, img) in images {
        let mut sample = Sample::unlabelled(ImageSource::Path(img.clone()), "fea");
        let mut missing = Vec::new();
        for (i, fl) in feature_labels.iter().enumerate() {
            let Some(labels) = fl else { continue };
            match labels.get(&stem) {
                None => missing.push(FEATURE_NAMES[i]),
                Some(lp) => {
                    // A bad file is reported by read_label and leaves that feature unlabelled.
                    if let Some(l) = read_label(lp, ClassIds::Binary, &mut problems) {
                        sample.features[i] = Some(l.value == 1);
                        if sample.lesion.is_none() {
                            sample.lesion = l.bbox;
                        }
                    }
                }
            }
        }
        if !sample.has_features() {
            problems.push(Problem::error(
                img.display(),
                "no usable feature label: left out",
            ));
            continue;
        }
        if !missing.is_empty() {
            problems.push(Problem::warning(
                img.display(),
                format!(
                    "no label for {}: those features unlabelled",
                    missing.join(", ")
                ),
            ));
        }
        sample.origin = img.display().to_string();
        ds.samples.push(sample);
    }
    ds.problems.extend(problems);
    Ok(ds)
}

/// `<root>/images` + `<root>/<feature>_labels`.
pub fn read_competition_fea(root: &Path) -> Result<Dataset, ReadError> {
    let images = root.join("images");
    if !images.is_dir() {
        return Err(ReadError::UnknownLayout(root.to_path_buf()));
    }
    let mut ds = read_feature_labels(
        &images,
        root,
        format!("competition feature layout at {}", root.display()),
    )?;
    let mut problems = Vec::new();
    for d in list_dir(root, &mut problems)?.dirs {
        let n = name_of(&d);
        if n != "images" && !n.ends_with("_labels") {
            problems.push(Problem::warning(d.display(), "unexpected folder: ignored"));
        }
    }
    ds.problems.extend(problems);
    Ok(ds)
}

/// The original program's `<root>/cla` + `<root>/labels/*.txt` (class id in the file).
pub fn read_reorganised_cls(root: &Path) -> Result<Dataset, ReadError> {
    let classes = ClassList::birads6();
    let mut ds = Dataset::new(
        format!("reorganised classification layout at {}", root.display()),
        classes.clone(),
    );
    let mut problems = Vec::new();
    let images = images_by_stem(&root.join("cla"), &mut problems)?;
    let labels = labels_by_stem(&root.join("labels"), &mut problems)?;
    report_orphan_labels(&labels, &images, &mut problems);
    for (stem, img) in images {
        let Some(lp) = labels.get(&stem) else {
            problems.push(Problem::error(img.display(), "no label file: left out"));
            continue;
        };
        let Some(l) = read_label(lp, ClassIds::OneBased(classes.len()), &mut problems) else {
            continue;
        };
        let mut s = Sample::unlabelled(ImageSource::Path(img), "cls");
        s.class = Some(l.value);
        s.lesion = l.bbox;
        s.origin = lp.display().to_string();
        ds.samples.push(s);
    }
    ds.problems.extend(problems);
    Ok(ds)
}

/// The original program's `<root>/cla` + `<root>/labels/<feature>_labels/*.txt`.
pub fn read_reorganised_fea(root: &Path) -> Result<Dataset, ReadError> {
    read_feature_labels(
        &root.join("cla"),
        &root.join("labels"),
        format!("reorganised feature layout at {}", root.display()),
    )
}

/// Image-only test folders; ground truth is attached when `cla_gt.csv` / `fea_gt.csv` (the
/// format of the prediction CSVs) lie beside the folders.
pub fn read_test_set(root: &Path) -> Result<Dataset, ReadError> {
    let set = name_of(root);
    let mut ds = Dataset::new(
        format!("test set at {}", root.display()),
        ClassList::birads6(),
    );
    let mut problems = Vec::new();
    let boxes = read_gt_boxes(&root.join("boxes.csv"), &mut problems);
    for part in ["cla", "fea"] {
        let Some(dir) = child(root, part) else {
            continue;
        };
        let images = list_images(&dir, &mut problems)?;
        let gt = read_gt(&root.join(format!("{part}_gt.csv")), part, &mut problems);
        let mut seen = BTreeSet::new();
        for img in images {
            let name = name_of(&img);
            let mut s =
                Sample::unlabelled(ImageSource::Path(img.clone()), &format!("{set}/{part}"));
            if let Some(gt) = &gt {
                match gt.get(&name) {
                    Some(row) => {
                        s.class = row.class;
                        s.features = row.features;
                        seen.insert(name.clone());
                    }
                    None => problems.push(Problem::warning(
                        img.display(),
                        format!("not listed in {part}_gt.csv"),
                    )),
                }
            }
            // boxes.csv names images `cla/0001.jpg` (cla and fea reuse names) or just `0001.jpg`.
            s.lesion = boxes
                .get(&format!("{part}/{name}"))
                .or_else(|| boxes.get(&name))
                .copied();
            ds.samples.push(s);
        }
        if let Some(gt) = &gt {
            for name in gt.keys().filter(|n| !seen.contains(*n)) {
                problems.push(Problem::error(
                    format!("{}/{part}_gt.csv: {name}", root.display()),
                    "listed but no such image",
                ));
            }
        }
    }
    ds.problems.extend(problems);
    Ok(ds)
}

#[derive(Debug, Clone, Default)]
struct GtRow {
    class: Option<usize>,
    features: [Option<bool>; 4],
}

/// `cla_gt.csv` (`img_name,label` with label 0..5) or `fea_gt.csv`
/// (`img_name,boundary,calcification,direction,shape`).
fn read_gt(
    path: &Path,
    part: &str,
    problems: &mut Vec<Problem>,
) -> Option<BTreeMap<String, GtRow>> {
    if !path.is_file() {
        return None;
    }
    let mut rdr = match csv::Reader::from_path(path) {
        Ok(r) => r,
        Err(e) => {
            problems.push(Problem::error(path.display(), format!("cannot read: {e}")));
            return None;
        }
    };
    let mut out = BTreeMap::new();
    for (i, rec) in rdr.records().enumerate() {
        let item = format!("{}:{}", path.display(), i + 2);
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                problems.push(Problem::error(item, format!("bad CSV row: {e}")));
                continue;
            }
        };
        let name = rec.get(0).unwrap_or("").to_string();
        let mut row = GtRow::default();
        let parse01 = |v: &str| -> Result<usize, String> {
            v.trim()
                .parse::<usize>()
                .map_err(|_| format!("'{v}' is not an integer"))
        };
        let ok = if part == "cla" {
            match rec.get(1).map(parse01) {
                Some(Ok(v)) if v < 6 => {
                    row.class = Some(v);
                    true
                }
                other => {
                    problems.push(Problem::error(
                        item,
                        format!("label must be 0..5, got {other:?}"),
                    ));
                    false
                }
            }
        } else {
            let mut ok = true;
            for (f, name) in FEATURE_NAMES.iter().enumerate() {
                match rec.get(f + 1).map(parse01) {
                    Some(Ok(v)) if v < 2 => row.features[f] = Some(v == 1),
                    other => {
                        problems.push(Problem::error(
                            item.clone(),
                            format!("{name} must be 0/1, got {other:?}"),
                        ));
                        ok = false;
                        break;
                    }
                }
            }
            ok
        };
        if ok {
            out.insert(name, row);
        }
    }
    Some(out)
}

fn read_gt_boxes(path: &Path, problems: &mut Vec<Problem>) -> BTreeMap<String, LesionBox> {
    let mut out = BTreeMap::new();
    if !path.is_file() {
        return out;
    }
    let Ok(mut rdr) = csv::Reader::from_path(path) else {
        problems.push(Problem::error(path.display(), "cannot read"));
        return out;
    };
    for (i, rec) in rdr.records().enumerate() {
        let Ok(rec) = rec else { continue };
        let vals: Vec<f32> = (1..5)
            .filter_map(|k| rec.get(k)?.trim().parse().ok())
            .collect();
        if vals.len() != 4 {
            problems.push(Problem::error(
                format!("{}:{}", path.display(), i + 2),
                "expected img_name,cx,cy,w,h",
            ));
            continue;
        }
        let b = LesionBox {
            cx: vals[0],
            cy: vals[1],
            w: vals[2],
            h: vals[3],
        };
        match b.validate() {
            Ok(()) => {
                out.insert(rec.get(0).unwrap_or("").to_string(), b);
            }
            Err(e) => problems.push(Problem::error(format!("{}:{}", path.display(), i + 2), e)),
        }
    }
    out
}

/// A flat folder of images, unlabelled.
pub fn read_flat(root: &Path) -> Result<Dataset, ReadError> {
    let mut ds = Dataset::new(
        format!("image folder {}", root.display()),
        ClassList::birads6(),
    );
    let mut problems = Vec::new();
    for f in list_images(root, &mut problems)? {
        ds.samples
            .push(Sample::unlabelled(ImageSource::Path(f), "flat"));
    }
    ds.problems.extend(problems);
    Ok(ds)
}

/// Image files of a folder in natural order (test folders: `a.jpg` and `a.png` are two
/// different images here, since no label file has to be matched).
pub fn list_images(dir: &Path, problems: &mut Vec<Problem>) -> Result<Vec<PathBuf>, ReadError> {
    let listing = list_dir(dir, problems)?;
    for d in &listing.dirs {
        problems.push(Problem::warning(
            d.display(),
            "sub-folder of an image folder: ignored",
        ));
    }
    let mut out = Vec::new();
    for f in listing.files {
        if is_image_name(&f) {
            out.push(f);
        } else {
            problems.push(Problem::warning(
                f.display(),
                "not an image file (jpg, png, bmp, dcm): ignored",
            ));
        }
    }
    Ok(out)
}
