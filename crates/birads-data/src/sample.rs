//! The contract every later stage relies on: a [`Sample`] is one image plus whatever labels
//! its dataset carried, and a [`Dataset`] is the samples plus every [`Problem`] met while
//! reading them. Readers never panic on bad input; they report.

use std::fmt;
use std::path::PathBuf;

/// The four lesion descriptors, in the column order of `fea_pre.csv`.
pub const FEATURE_NAMES: [&str; 4] = ["boundary", "calcification", "direction", "shape"];

/// The competition's BI-RADS categories, in logit order (index 0..5).
pub const BIRADS6: [&str; 6] = ["2", "3", "4A", "4B", "4C", "5"];

/// Ordered class names of a dataset. A property of the dataset, not a constant: BUS-BRA
/// grades 2/3/4/5 without subdividing category 4.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClassList(pub Vec<String>);

impl ClassList {
    /// The six competition categories `2, 3, 4A, 4B, 4C, 5`.
    pub fn birads6() -> Self {
        Self(BIRADS6.iter().map(|s| s.to_string()).collect())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// Index of a category name; accepts `4a`/`4A` and a trailing `类` or `BI-RADS ` prefix.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        let norm = normalise_class_name(name);
        self.0.iter().position(|c| c.eq_ignore_ascii_case(&norm))
    }

    pub fn name(&self, index: usize) -> Option<&str> {
        self.0.get(index).map(String::as_str)
    }
}

impl fmt::Display for ClassList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.join(","))
    }
}

/// `"4A类"`, `"BI-RADS 4a"`, `" 3 "` → `"4A"`, `"4A"`, `"3"`.
pub fn normalise_class_name(name: &str) -> String {
    let s = name.trim();
    let s = s.strip_suffix('类').unwrap_or(s);
    let lower = s.to_ascii_lowercase();
    let s = if lower.starts_with("bi-rads") {
        s["bi-rads".len()..].trim()
    } else if lower.starts_with("birads") {
        s["birads".len()..].trim()
    } else {
        s
    };
    s.to_ascii_uppercase()
}

/// Lesion box in normalised image coordinates (YOLO convention: centre and size in [0,1]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LesionBox {
    pub cx: f32,
    pub cy: f32,
    pub w: f32,
    pub h: f32,
}

impl LesionBox {
    /// From a pixel box (top-left corner, width, height) in an image of `img_w × img_h`.
    pub fn from_pixels(x: f32, y: f32, w: f32, h: f32, img_w: u32, img_h: u32) -> Self {
        let (iw, ih) = (img_w as f32, img_h as f32);
        Self {
            cx: (x + w / 2.0) / iw,
            cy: (y + h / 2.0) / ih,
            w: w / iw,
            h: h / ih,
        }
    }

    /// Pixel box `(x0, y0, x1, y1)` (exclusive right/bottom, floating point) in an image of
    /// the given size.
    pub fn to_pixels(&self, img_w: u32, img_h: u32) -> [f32; 4] {
        let (iw, ih) = (img_w as f32, img_h as f32);
        [
            (self.cx - self.w / 2.0) * iw,
            (self.cy - self.h / 2.0) * ih,
            (self.cx + self.w / 2.0) * iw,
            (self.cy + self.h / 2.0) * ih,
        ]
    }

    /// Every coordinate finite, centre inside the image, size in (0, 1].
    pub fn validate(&self) -> Result<(), String> {
        let vals = [self.cx, self.cy, self.w, self.h];
        if vals.iter().any(|v| !v.is_finite()) {
            return Err(format!("box has a non-finite coordinate {vals:?}"));
        }
        if vals.iter().any(|v| !(0.0..=1.0).contains(v)) {
            return Err(format!("box coordinates outside [0,1]: {vals:?}"));
        }
        if self.w <= 0.0 || self.h <= 0.0 {
            return Err(format!("box has zero size: {vals:?}"));
        }
        Ok(())
    }
}

/// Where a sample's pixels come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    Path(PathBuf),
    /// In-memory encoded bytes (an upload), with a display name.
    Bytes {
        name: String,
        data: std::sync::Arc<Vec<u8>>,
    },
}

impl ImageSource {
    /// The file name shown in CSVs (`img_name`): file name with extension.
    pub fn file_name(&self) -> String {
        match self {
            ImageSource::Path(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            ImageSource::Bytes { name, .. } => name.clone(),
        }
    }

    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            ImageSource::Path(p) => Some(p),
            ImageSource::Bytes { .. } => None,
        }
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageSource::Path(p) => write!(f, "{}", p.display()),
            ImageSource::Bytes { name, .. } => write!(f, "{name}"),
        }
    }
}

/// One image and its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub image: ImageSource,
    /// Index into the dataset's [`ClassList`].
    pub class: Option<usize>,
    /// boundary, calcification, direction, shape; `None` where the dataset had no label.
    pub features: [Option<bool>; 4],
    pub lesion: Option<LesionBox>,
    /// Patient or acquisition group: splits never separate a group.
    pub group: Option<String>,
    /// The dataset's own identifier of the image (a manifest's `id` column), which partition
    /// files name; see [`Sample::key`].
    pub id: Option<String>,
    /// Biopsy or follow-up outcome: `Some(true)` malignant, `Some(false)` benign.
    pub malignant: Option<bool>,
    /// Which part of a dataset the sample came from (`cls`, `fea`, `manifest`, ...).
    pub source: String,
    /// File (and line) the labels came from, for messages.
    pub origin: String,
}

impl Sample {
    pub fn unlabelled(image: ImageSource, source: &str) -> Self {
        let origin = image.to_string();
        Self {
            image,
            class: None,
            features: [None; 4],
            lesion: None,
            group: None,
            id: None,
            malignant: None,
            source: source.to_string(),
            origin,
        }
    }

    pub fn has_features(&self) -> bool {
        self.features.iter().any(Option::is_some)
    }

    /// The group used by splits: the explicit group, else the image's file stem.
    pub fn group_key(&self) -> String {
        match &self.group {
            Some(g) => g.clone(),
            None => self.stem(),
        }
    }

    /// The name partition files use for this image: its `id`, else its file stem.
    pub fn key(&self) -> String {
        match &self.id {
            Some(id) => id.clone(),
            None => self.stem(),
        }
    }

    fn stem(&self) -> String {
        let name = self.image.file_name();
        match name.rsplit_once('.') {
            Some((stem, _)) => stem.to_string(),
            None => name,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The item was kept, with a caveat.
    Warning,
    /// The item (or part of its labels) was left out.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// A problem with one item of a dataset: never a panic, never silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub severity: Severity,
    /// The file (or file:line) concerned.
    pub item: String,
    pub reason: String,
}

impl Problem {
    pub fn error(item: impl fmt::Display, reason: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            item: item.to_string(),
            reason: reason.into(),
        }
    }

    pub fn warning(item: impl fmt::Display, reason: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            item: item.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.severity, self.item, self.reason)
    }
}

/// Samples plus the problems met while reading them.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// What was read, e.g. `competition classification layout at …`.
    pub description: String,
    pub classes: ClassList,
    pub samples: Vec<Sample>,
    pub problems: Vec<Problem>,
}

impl Dataset {
    pub fn new(description: impl Into<String>, classes: ClassList) -> Self {
        Self {
            description: description.into(),
            classes,
            samples: Vec::new(),
            problems: Vec::new(),
        }
    }

    pub fn error_count(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count()
    }

    pub fn warning_count(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
            .count()
    }

    /// Samples with a BI-RADS class (the classification task).
    pub fn classified(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(|s| s.class.is_some())
    }

    /// Samples with at least one feature label (the feature task).
    pub fn featured(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(|s| s.has_features())
    }

    /// Merge another dataset read with the same class list.
    pub fn extend(&mut self, other: Dataset) {
        self.samples.extend(other.samples);
        self.problems.extend(other.problems);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_normalise() {
        let c = ClassList::birads6();
        assert_eq!(c.index_of("4A类"), Some(2));
        assert_eq!(c.index_of("4b"), Some(3));
        assert_eq!(c.index_of("BI-RADS 5"), Some(5));
        assert_eq!(c.index_of("6类"), None);
        assert_eq!(c.index_of("4"), None);
    }

    #[test]
    fn pixel_box_round_trip() {
        let b = LesionBox::from_pixels(90.0, 23.0, 104.0, 80.0, 274, 353);
        let [x0, y0, x1, y1] = b.to_pixels(274, 353);
        assert!((x0 - 90.0).abs() < 1e-3 && (y0 - 23.0).abs() < 1e-3);
        assert!((x1 - 194.0).abs() < 1e-3 && (y1 - 103.0).abs() < 1e-3);
        assert!(b.validate().is_ok());
        let bad = LesionBox { cx: f32::NAN, ..b };
        assert!(bad.validate().is_err());
        let out = LesionBox { cx: 1.2, ..b };
        assert!(out.validate().unwrap_err().contains("outside"));
    }

    #[test]
    fn group_key_defaults_to_stem() {
        let s = Sample::unlabelled(ImageSource::Path("/a/b/0001.jpg".into()), "cla");
        assert_eq!(s.group_key(), "0001");
        assert_eq!(s.image.file_name(), "0001.jpg");
    }
}
