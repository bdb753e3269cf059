//! CSV manifests: one row per image, any subset of the label columns.
//!
//! Columns (case-insensitive, any order):
//! * image path — `image`, `path`, `file`, `filename` or `img_name`; relative paths are
//!   resolved against the CSV's folder;
//! * BI-RADS — `birads` / `category` / `class` as a category name (`2`, `4A`, `4` …), or
//!   `label` as an index 0..5 into `2,3,4A,4B,4C,5` (the competition's CSV convention);
//! * features — `boundary`, `calcification`, `direction`, `shape` as 0/1 (empty = unknown);
//! * lesion box — normalised `cx,cy,w,h`, or pixel `bbox_x,bbox_y,bbox_w,bbox_h` with the
//!   image size from `width,height` columns or the image header;
//! * group — `group` or `patient`;
//! * id — `id`: the image's name in partition files (default: the file stem);
//! * pathology — `pathology` (`benign`/`malignant`, `b`/`m`) or `malignant` (0/1): the
//!   biopsy or follow-up outcome, for malignancy figures.
//!
//! This covers BUS-BRA's `labels.csv` as it is (BI-RADS 2/3/4/5, pixel boxes, patients): the
//! class list is taken from the values present, so an undivided category 4 gives the list
//! `2,3,4,5` rather than being forced into 4A/4B/4C.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::readers::ReadError;
use crate::sample::{
    normalise_class_name, ClassList, Dataset, ImageSource, LesionBox, Problem, Sample, BIRADS6,
    FEATURE_NAMES,
};

fn find(headers: &[String], names: &[&str]) -> Option<usize> {
    names
        .iter()
        .find_map(|n| headers.iter().position(|h| h == n))
}

/// The class list implied by the category names present: the competition's six when they
/// fit, `2,3,4,5` when category 4 is undivided, else the names in natural order.
pub fn infer_class_list(names: &BTreeSet<String>) -> ClassList {
    let six = ClassList::birads6();
    if names.iter().all(|n| six.index_of(n).is_some()) {
        return six;
    }
    let four = ClassList(["2", "3", "4", "5"].iter().map(|s| s.to_string()).collect());
    if names.iter().all(|n| four.index_of(n).is_some()) {
        return four;
    }
    let mut v: Vec<String> = names.iter().cloned().collect();
    v.sort_by(|a, b| natord::compare(a, b));
    ClassList(v)
}

/// Read a CSV manifest (see the module documentation).
pub fn read_manifest(path: &Path) -> Result<Dataset, ReadError> {
    let file = std::fs::File::open(path).map_err(|e| ReadError::Manifest {
        path: path.to_path_buf(),
        reason: format!("cannot open: {e}"),
    })?;
    parse_manifest(file, path)
}

/// [`read_manifest`] on any reader; `path` names the manifest in messages and relative image
/// paths are resolved against its folder (also the fuzzing entry point).
pub fn parse_manifest(reader: impl std::io::Read, path: &Path) -> Result<Dataset, ReadError> {
    let err = |reason: String| ReadError::Manifest {
        path: path.to_path_buf(),
        reason,
    };
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| err(format!("cannot read the header: {e}")))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let col_image =
        find(&headers, &["image", "path", "file", "filename", "img_name"]).ok_or_else(|| {
            err(format!(
                "no image column (image, path, file, filename or img_name) in {headers:?}"
            ))
        })?;
    let col_class = find(&headers, &["birads", "bi-rads", "category", "class"]);
    let col_index = if col_class.is_none() {
        find(&headers, &["label"])
    } else {
        None
    };
    let col_feat: Vec<Option<usize>> = FEATURE_NAMES.iter().map(|f| find(&headers, &[f])).collect();
    let col_norm: Option<[usize; 4]> = match (
        find(&headers, &["cx"]),
        find(&headers, &["cy"]),
        find(&headers, &["w"]),
        find(&headers, &["h"]),
    ) {
        (Some(a), Some(b), Some(c), Some(d)) => Some([a, b, c, d]),
        _ => None,
    };
    let col_px: Option<[usize; 4]> = match (
        find(&headers, &["bbox_x"]),
        find(&headers, &["bbox_y"]),
        find(&headers, &["bbox_w", "bbox_width"]),
        find(&headers, &["bbox_h", "bbox_height"]),
    ) {
        (Some(a), Some(b), Some(c), Some(d)) => Some([a, b, c, d]),
        _ => None,
    };
    let col_size = match (find(&headers, &["width"]), find(&headers, &["height"])) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    };
    let col_group = find(&headers, &["group", "patient", "patient_id"]);
    let col_id = find(&headers, &["id", "image_id"]);
    let col_pathology = find(&headers, &["pathology", "malignant", "malignancy"]);
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();

    let records: Vec<(usize, csv::Result<csv::StringRecord>)> =
        rdr.records().enumerate().map(|(i, r)| (i + 2, r)).collect();
    // First pass: the class names present, so the class list is known before indexing.
    let mut class_names = BTreeSet::new();
    if let Some(c) = col_class {
        for r in records.iter().filter_map(|(_, r)| r.as_ref().ok()) {
            let v = r.get(c).unwrap_or("").trim();
            if !v.is_empty() {
                class_names.insert(normalise_class_name(v));
            }
        }
    }
    let classes = if col_class.is_some() {
        infer_class_list(&class_names)
    } else {
        ClassList::birads6()
    };
    let mut ds = Dataset::new(format!("CSV manifest {}", path.display()), classes.clone());
    let mut problems = Vec::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut dims_cache: HashMap<PathBuf, (u32, u32)> = HashMap::new();
    for (line, rec) in records {
        let item = format!("{}:{line}", path.display());
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                problems.push(Problem::error(item, format!("unreadable CSV row: {e}")));
                continue;
            }
        };
        let get = |c: usize| rec.get(c).unwrap_or("").trim();
        let raw = get(col_image);
        if raw.is_empty() {
            problems.push(Problem::error(item, "empty image path"));
            continue;
        }
        let img = {
            let p = PathBuf::from(raw);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        };
        if !img.is_file() {
            problems.push(Problem::error(
                item,
                format!("image {} not found", img.display()),
            ));
            continue;
        }
        if seen.contains(&img) {
            problems.push(Problem::error(
                item,
                format!("image {} listed twice: later row left out", img.display()),
            ));
            continue;
        }
        let mut s = Sample::unlabelled(ImageSource::Path(img.clone()), "manifest");
        s.origin = item.clone();
        if let Some(c) = col_class {
            let v = get(c);
            if !v.is_empty() {
                match classes.index_of(v) {
                    Some(k) => s.class = Some(k),
                    None => {
                        problems.push(Problem::error(
                            item,
                            format!("unknown category '{v}' (classes {classes})"),
                        ));
                        continue;
                    }
                }
            }
        } else if let Some(c) = col_index {
            let v = get(c);
            if !v.is_empty() {
                match v.parse::<usize>() {
                    Ok(k) if k < BIRADS6.len() => s.class = Some(k),
                    _ => {
                        problems.push(Problem::error(
                            item,
                            format!("label '{v}' is not an index 0..5"),
                        ));
                        continue;
                    }
                }
            }
        }
        let mut bad = false;
        for (f, col) in col_feat.iter().enumerate() {
            let Some(c) = col else { continue };
            match get(*c) {
                "" => {}
                "0" => s.features[f] = Some(false),
                "1" => s.features[f] = Some(true),
                v => {
                    problems.push(Problem::error(
                        item.clone(),
                        format!("{} must be 0 or 1, got '{v}'", FEATURE_NAMES[f]),
                    ));
                    bad = true;
                }
            }
        }
        if bad {
            continue;
        }
        let parse4 = |cols: [usize; 4]| -> Option<Result<[f32; 4], String>> {
            let raw: Vec<&str> = cols.iter().map(|&c| get(c)).collect();
            if raw.iter().all(|v| v.is_empty()) {
                return None;
            }
            let mut v = [0f32; 4];
            for (k, r) in raw.iter().enumerate() {
                match r.parse::<f32>() {
                    Ok(x) if x.is_finite() => v[k] = x,
                    _ => return Some(Err(format!("box value '{r}' is not a finite number"))),
                }
            }
            Some(Ok(v))
        };
        let bbox = if let Some(cols) = col_norm {
            parse4(cols).map(|r| {
                r.map(|v| LesionBox {
                    cx: v[0],
                    cy: v[1],
                    w: v[2],
                    h: v[3],
                })
            })
        } else if let Some(cols) = col_px {
            parse4(cols).map(|r| {
                r.and_then(|v| {
                    let size = match col_size {
                        Some((cw, ch)) => match (get(cw).parse::<u32>(), get(ch).parse::<u32>()) {
                            (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok((w, h)),
                            _ => Err("width/height are not positive integers".to_string()),
                        },
                        None => match dims_cache.get(&img) {
                            Some(d) => Ok(*d),
                            None => crate::image_ops::dimensions(&img).map_err(|e| e.to_string()),
                        },
                    }?;
                    dims_cache.insert(img.clone(), size);
                    Ok(LesionBox::from_pixels(
                        v[0], v[1], v[2], v[3], size.0, size.1,
                    ))
                })
            })
        } else {
            None
        };
        match bbox {
            None => {}
            Some(Ok(b)) => match b.validate() {
                Ok(()) => s.lesion = Some(b),
                Err(e) => {
                    problems.push(Problem::error(item, e));
                    continue;
                }
            },
            Some(Err(e)) => {
                problems.push(Problem::error(item, e));
                continue;
            }
        }
        if let Some(c) = col_group {
            let g = get(c);
            if !g.is_empty() {
                s.group = Some(g.to_string());
            }
        }
        if let Some(c) = col_id {
            let v = get(c);
            if !v.is_empty() {
                s.id = Some(v.to_string());
            }
        }
        if let Some(c) = col_pathology {
            match parse_pathology(get(c)) {
                Ok(m) => s.malignant = m,
                Err(e) => problems.push(Problem::warning(item.clone(), e)),
            }
        }
        seen.insert(img);
        ds.samples.push(s);
    }
    ds.problems.extend(problems);
    Ok(ds)
}

/// `malignant`/`benign` (any case, or `m`/`b`, `1`/`0`) → the outcome; empty → unknown.
pub fn parse_pathology(v: &str) -> Result<Option<bool>, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "nan" | "na" | "unknown" => Ok(None),
        "malignant" | "m" | "1" | "true" => Ok(Some(true)),
        "benign" | "b" | "0" | "false" => Ok(Some(false)),
        other => Err(format!(
            "pathology '{other}' is neither benign nor malignant: kept without it"
        )),
    }
}

/// Write samples as a manifest that [`read_manifest`] reads back (absolute image paths).
pub fn write_manifest(
    path: &Path,
    samples: &[&Sample],
    classes: &ClassList,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    {
        let mut w = csv::Writer::from_writer(&mut buf);
        w.write_record([
            "image",
            "birads",
            "boundary",
            "calcification",
            "direction",
            "shape",
            "cx",
            "cy",
            "w",
            "h",
            "group",
            "id",
            "pathology",
        ])?;
        for s in samples {
            let img = match &s.image {
                ImageSource::Path(p) => std::fs::canonicalize(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string(),
                ImageSource::Bytes { name, .. } => name.clone(),
            };
            let mut rec = vec![
                img,
                s.class
                    .and_then(|c| classes.name(c))
                    .unwrap_or("")
                    .to_string(),
            ];
            for f in s.features {
                rec.push(
                    f.map(|b| if b { "1" } else { "0" }.to_string())
                        .unwrap_or_default(),
                );
            }
            match s.lesion {
                Some(b) => rec.extend([b.cx, b.cy, b.w, b.h].iter().map(|v| format!("{v:.6}"))),
                None => rec.extend(std::iter::repeat_n(String::new(), 4)),
            }
            rec.push(s.group.clone().unwrap_or_default());
            rec.push(s.id.clone().unwrap_or_default());
            rec.push(
                match s.malignant {
                    Some(true) => "malignant",
                    Some(false) => "benign",
                    None => "",
                }
                .to_string(),
            );
            w.write_record(&rec)?;
        }
        w.flush()?;
    }
    crate::atomic::write_atomic(path, &buf)
}
