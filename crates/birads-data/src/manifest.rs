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
    let cols = Columns::find(&headers).ok_or_else(|| {
        err(format!(
            "no image column (image, path, file, filename or img_name) in {headers:?}"
        ))
    })?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();

    let records: Vec<(usize, csv::Result<csv::StringRecord>)> =
        rdr.records().enumerate().map(|(i, r)| (i + 2, r)).collect();
    // First pass: the class names present, so the class list is known before indexing.
    let classes = match cols.class {
        Some(c) => infer_class_list(&class_names(&records, c)),
        None => ClassList::birads6(),
    };
    let mut ds = Dataset::new(format!("CSV manifest {}", path.display()), classes.clone());
    let mut rows = Rows {
        cols,
        base,
        classes,
        seen: HashSet::new(),
        dims_cache: HashMap::new(),
    };
    for (line, rec) in records {
        let item = format!("{}:{line}", path.display());
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let reason = format!("unreadable CSV row: {e}");
                ds.problems.push(Problem::error(item, reason));
                continue;
            }
        };
        match rows.sample(&rec, &item) {
            Ok((s, warning)) => {
                ds.problems
                    .extend(warning.map(|w| Problem::warning(item, w)));
                ds.samples.push(s);
            }
            Err(reasons) => {
                let problems = reasons.into_iter().map(|r| Problem::error(item.clone(), r));
                ds.problems.extend(problems);
            }
        }
    }
    Ok(ds)
}

/// The category names present in column `c` (normalised).
fn class_names(records: &[(usize, csv::Result<csv::StringRecord>)], c: usize) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for r in records.iter().filter_map(|(_, r)| r.as_ref().ok()) {
        let v = r.get(c).unwrap_or("").trim();
        if !v.is_empty() {
            names.insert(normalise_class_name(v));
        }
    }
    names
}

/// Where each kind of value is in a manifest's rows (see the module documentation).
struct Columns {
    image: usize,
    /// Category names.
    class: Option<usize>,
    /// Indices into the six categories (only without a name column).
    index: Option<usize>,
    features: Vec<Option<usize>>,
    /// Normalised `cx, cy, w, h`.
    norm: Option<[usize; 4]>,
    /// Pixel `x, y, w, h`.
    px: Option<[usize; 4]>,
    /// The image's `width, height`.
    size: Option<(usize, usize)>,
    group: Option<usize>,
    id: Option<usize>,
    pathology: Option<usize>,
}

impl Columns {
    /// The columns named in `headers` (lower case); none without an image column.
    fn find(headers: &[String]) -> Option<Self> {
        let f = |names: &[&str]| find(headers, names);
        let four = |names: [&[&str]; 4]| -> Option<[usize; 4]> {
            Some([f(names[0])?, f(names[1])?, f(names[2])?, f(names[3])?])
        };
        let class = f(&["birads", "bi-rads", "category", "class"]);
        Some(Self {
            image: f(&["image", "path", "file", "filename", "img_name"])?,
            class,
            index: if class.is_none() { f(&["label"]) } else { None },
            features: FEATURE_NAMES.iter().map(|n| f(&[n])).collect(),
            norm: four([&["cx"], &["cy"], &["w"], &["h"]]),
            px: four([
                &["bbox_x"],
                &["bbox_y"],
                &["bbox_w", "bbox_width"],
                &["bbox_h", "bbox_height"],
            ]),
            size: f(&["width"]).zip(f(&["height"])),
            group: f(&["group", "patient", "patient_id"]),
            id: f(&["id", "image_id"]),
            pathology: f(&["pathology", "malignant", "malignancy"]),
        })
    }
}

/// A row's fields, trimmed; a missing field reads as empty.
struct Fields<'a>(&'a csv::StringRecord);

impl<'a> Fields<'a> {
    fn get(&self, c: usize) -> &'a str {
        self.0.get(c).unwrap_or("").trim()
    }
}

/// Turns a manifest's rows into samples, remembering the images already listed and the
/// image sizes already read.
struct Rows {
    cols: Columns,
    base: PathBuf,
    classes: ClassList,
    seen: HashSet<PathBuf>,
    dims_cache: HashMap<PathBuf, (u32, u32)>,
}

impl Rows {
    /// The sample of one row (`item` names it), with a warning about its pathology value if
    /// any; or why the row is left out.
    fn sample(
        &mut self,
        rec: &csv::StringRecord,
        item: &str,
    ) -> Result<(Sample, Option<String>), Vec<String>> {
        let row = Fields(rec);
        let img = self.image(row.get(self.cols.image)).map_err(|e| vec![e])?;
        let mut s = Sample::unlabelled(ImageSource::Path(img.clone()), "manifest");
        s.origin = item.to_string();
        s.class = self.class(&row).map_err(|e| vec![e])?;
        s.features = features(&self.cols, &row)?;
        s.lesion = self.lesion(&row, &img).map_err(|e| vec![e])?;
        let text = |c: Option<usize>| {
            let v = row.get(c?);
            (!v.is_empty()).then(|| v.to_string())
        };
        s.group = text(self.cols.group);
        s.id = text(self.cols.id);
        let mut warning = None;
        if let Some(c) = self.cols.pathology {
            match parse_pathology(row.get(c)) {
                Ok(m) => s.malignant = m,
                Err(e) => warning = Some(e),
            }
        }
        self.seen.insert(img);
        Ok((s, warning))
    }

    /// The image a row names: resolved against the manifest's folder, present, and not
    /// listed before.
    fn image(&self, raw: &str) -> Result<PathBuf, String> {
        if raw.is_empty() {
            return Err("empty image path".into());
        }
        let p = PathBuf::from(raw);
        let img = if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        };
        if !img.is_file() {
            return Err(format!("image {} not found", img.display()));
        }
        if self.seen.contains(&img) {
            let shown = img.display();
            return Err(format!("image {shown} listed twice: later row left out"));
        }
        Ok(img)
    }

    /// The row's category: by name, or by index into the six categories.
    fn class(&self, row: &Fields) -> Result<Option<usize>, String> {
        let classes = &self.classes;
        if let Some(c) = self.cols.class {
            let v = row.get(c);
            if v.is_empty() {
                return Ok(None);
            }
            return match classes.index_of(v) {
                Some(k) => Ok(Some(k)),
                None => Err(format!("unknown category '{v}' (classes {classes})")),
            };
        }
        let Some(c) = self.cols.index else {
            return Ok(None);
        };
        match row.get(c) {
            "" => Ok(None),
            v => match v.parse::<usize>() {
                Ok(k) if k < BIRADS6.len() => Ok(Some(k)),
                _ => Err(format!("label '{v}' is not an index 0..5")),
            },
        }
    }

    /// The lesion box, normalised or in pixels (then with the image's size from its columns
    /// or its header), validated.
    fn lesion(&mut self, row: &Fields, img: &Path) -> Result<Option<LesionBox>, String> {
        let cols = &self.cols;
        let b = if let Some(four) = cols.norm {
            let Some(v) = box_values(four, row)? else {
                return Ok(None);
            };
            LesionBox {
                cx: v[0],
                cy: v[1],
                w: v[2],
                h: v[3],
            }
        } else if let Some(four) = cols.px {
            let Some(v) = box_values(four, row)? else {
                return Ok(None);
            };
            let size = match cols.size {
                Some((cw, ch)) => match (row.get(cw).parse::<u32>(), row.get(ch).parse::<u32>()) {
                    (Ok(w), Ok(h)) if w > 0 && h > 0 => (w, h),
                    _ => return Err("width/height are not positive integers".to_string()),
                },
                None => match self.dims_cache.get(img) {
                    Some(d) => *d,
                    None => crate::image_ops::dimensions(img).map_err(|e| e.to_string())?,
                },
            };
            self.dims_cache.insert(img.to_path_buf(), size);
            LesionBox::from_pixels(v[0], v[1], v[2], v[3], size.0, size.1)
        } else {
            return Ok(None);
        };
        b.validate()?;
        Ok(Some(b))
    }
}

/// The four features as 0/1 (empty: unknown); every malformed value is reported.
fn features(cols: &Columns, row: &Fields) -> Result<[Option<bool>; 4], Vec<String>> {
    let mut out = [None; 4];
    let mut bad = Vec::new();
    for (f, col) in cols.features.iter().enumerate() {
        let Some(c) = col else { continue };
        match row.get(*c) {
            "" => {}
            "0" => out[f] = Some(false),
            "1" => out[f] = Some(true),
            v => bad.push(format!("{} must be 0 or 1, got '{v}'", FEATURE_NAMES[f])),
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(bad)
    }
}

/// Four box values from `cols`: none when all four are empty, an error when one is not a
/// finite number.
fn box_values(cols: [usize; 4], row: &Fields) -> Result<Option<[f32; 4]>, String> {
    let raw: Vec<&str> = cols.iter().map(|&c| row.get(c)).collect();
    if raw.iter().all(|v| v.is_empty()) {
        return Ok(None);
    }
    let mut v = [0f32; 4];
    for (k, r) in raw.iter().enumerate() {
        match r.parse::<f32>() {
            Ok(x) if x.is_finite() => v[k] = x,
            _ => return Err(format!("box value '{r}' is not a finite number")),
        }
    }
    Ok(Some(v))
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
