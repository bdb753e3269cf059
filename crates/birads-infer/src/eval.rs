//! `birads eval`: predictions (the competition CSVs, with or without probabilities) against
//! ground truth (a labelled dataset in any layout, or `cla_gt.csv`/`fea_gt.csv`), matched by
//! `img_name`. Every mismatch is a [`Problem`], never a silent drop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use birads_data::{ClassList, Problem, BIRADS6, FEATURE_NAMES};
use serde::Serialize;

use crate::metrics::{self, ClassScores, ReliabilityBin};
use crate::predict::argmax;

/// Bins of the reliability diagrams and of the expected calibration error.
pub const CALIBRATION_BINS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Csv(PathBuf, String),
    #[error("{0}")]
    Input(String),
}

/// BI-RADS predictions by image name.
#[derive(Debug, Clone, Default)]
pub struct ClsPredictions {
    pub classes: Vec<String>,
    pub labels: BTreeMap<String, usize>,
    pub probabilities: BTreeMap<String, Vec<f64>>,
}

/// Feature predictions by image name.
#[derive(Debug, Clone, Default)]
pub struct FeaPredictions {
    pub labels: BTreeMap<String, [u8; 4]>,
    /// Probability of the suspicious finding per feature.
    pub probabilities: BTreeMap<String, [f64; 4]>,
}

#[derive(Debug, Clone, Default)]
pub struct Predictions {
    pub cls: Option<ClsPredictions>,
    pub fea: Option<FeaPredictions>,
    pub problems: Vec<Problem>,
}

/// Ground truth by image name.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    /// BI-RADS category name per image.
    pub cls: BTreeMap<String, String>,
    pub fea: BTreeMap<String, [Option<bool>; 4]>,
    pub problems: Vec<Problem>,
}

/// The four files `birads predict` writes.
const PREDICTION_FILES: [&str; 4] = ["cla_pre.csv", "cla_prob.csv", "fea_pre.csv", "fea_prob.csv"];

/// A CSV's header and its rows with their line numbers.
type CsvRows = (Vec<String>, Vec<(usize, csv::StringRecord)>);

fn read_csv(path: &Path) -> Result<CsvRows, EvalError> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|e| EvalError::Csv(path.to_path_buf(), e.to_string()))?;
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| EvalError::Csv(path.to_path_buf(), e.to_string()))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
        .collect();
    let mut rows = Vec::new();
    for (i, r) in rdr.records().enumerate() {
        let r = r.map_err(|e| EvalError::Csv(path.to_path_buf(), e.to_string()))?;
        rows.push((i + 2, r));
    }
    Ok((header, rows))
}

fn is_feature_header(h: &[String], prefix: &str) -> bool {
    h.len() == 5
        && h[0] == "img_name"
        && FEATURE_NAMES
            .iter()
            .zip(&h[1..])
            .all(|(f, c)| *c == format!("{prefix}{f}"))
}

/// Insert once per image name; a repeated name is reported and the first row kept.
fn insert_once<T>(
    map: &mut BTreeMap<String, T>,
    name: String,
    value: T,
    item: String,
    problems: &mut Vec<Problem>,
) {
    match map.entry(name) {
        std::collections::btree_map::Entry::Occupied(e) => problems.push(Problem::warning(
            item,
            format!("{} appears more than once; the first row is used", e.key()),
        )),
        std::collections::btree_map::Entry::Vacant(e) => {
            e.insert(value);
        }
    }
}

impl Predictions {
    /// Read prediction CSVs: files recognised by their header, or folders holding any of
    /// `cla_pre.csv`, `cla_prob.csv`, `fea_pre.csv`, `fea_prob.csv`.
    pub fn read(paths: &[PathBuf]) -> Result<Self, EvalError> {
        let mut out = Predictions::default();
        for path in paths {
            if path.is_dir() {
                let found: Vec<PathBuf> = PREDICTION_FILES
                    .iter()
                    .map(|f| path.join(f))
                    .filter(|p| p.is_file())
                    .collect();
                if found.is_empty() {
                    return Err(EvalError::Input(format!(
                        "{}: no {} in this folder",
                        path.display(),
                        PREDICTION_FILES.join(" / ")
                    )));
                }
                for f in found {
                    out.read_file(&f)?;
                }
            } else {
                out.read_file(path)?;
            }
        }
        if out.cls.is_none() && out.fea.is_none() {
            return Err(EvalError::Input("no predictions given".into()));
        }
        // Labels follow from probabilities where only those were given.
        if let Some(c) = &mut out.cls {
            for (name, p) in &c.probabilities {
                c.labels.entry(name.clone()).or_insert_with(|| argmax(p));
            }
        }
        if let Some(f) = &mut out.fea {
            for (name, p) in &f.probabilities {
                f.labels
                    .entry(name.clone())
                    .or_insert_with(|| p.map(|v| u8::from(v > 0.5)));
            }
        }
        Ok(out)
    }

    /// One prediction CSV, by the kind its header names.
    fn read_file(&mut self, path: &Path) -> Result<(), EvalError> {
        let (header, rows) = read_csv(path)?;
        let problems = &mut self.problems;
        let Some(kind) = CsvKind::of(&header) else {
            return Err(EvalError::Input(format!(
                "{}: not a prediction CSV (header {:?}; expected that of cla_pre.csv, cla_prob.csv, fea_pre.csv or fea_prob.csv)",
                path.display(),
                header.join(",")
            )));
        };
        match kind {
            CsvKind::ClaPre => {
                let cls = self.cls.get_or_insert_with(|| ClsPredictions {
                    classes: ClassList::birads6().0,
                    ..Default::default()
                });
                let k = cls.classes.len();
                insert_rows(path, rows, &mut cls.labels, problems, |r| {
                    let label = r.get(1).and_then(|v| v.trim().parse::<usize>().ok());
                    label.filter(|l| *l < k).ok_or_else(|| {
                        format!(
                            "label must be 0..{}, got {:?}",
                            k - 1,
                            r.get(1).unwrap_or("")
                        )
                    })
                });
            }
            CsvKind::ClaProb(classes) => {
                let cls = self.cls.get_or_insert_with(Default::default);
                cls.name_classes(classes, path)?;
                let k = cls.classes.len();
                insert_rows(path, rows, &mut cls.probabilities, problems, |r| {
                    parse_probs(r, k).ok_or_else(|| format!("expected {k} probabilities in [0, 1]"))
                });
            }
            CsvKind::FeaPre => {
                let fea = self.fea.get_or_insert_with(Default::default);
                insert_rows(path, rows, &mut fea.labels, problems, |r| {
                    parse_flags(r).ok_or_else(|| {
                        "expected four 0/1 values (boundary, calcification, direction, shape)"
                            .to_string()
                    })
                });
            }
            CsvKind::FeaProb => {
                let fea = self.fea.get_or_insert_with(Default::default);
                insert_rows(path, rows, &mut fea.probabilities, problems, |r| {
                    let p = parse_probs(r, 4).and_then(|p| <[f64; 4]>::try_from(p).ok());
                    p.ok_or_else(|| "expected four probabilities in [0, 1]".to_string())
                });
            }
        }
        Ok(())
    }
}

impl ClsPredictions {
    /// The class list a `cla_prob.csv` names. `cla_pre.csv`'s labels index the model's class
    /// list (a BUS-BRA model's 2,3,4,5); read before it, they were taken as the six
    /// competition classes, so they must fit the named list.
    fn name_classes(&mut self, classes: Vec<String>, path: &Path) -> Result<(), EvalError> {
        if let Some(top) = self
            .labels
            .values()
            .copied()
            .max()
            .filter(|t| *t >= classes.len())
        {
            return Err(EvalError::Input(format!(
                "{}: {} classes ({}), but cla_pre.csv has label {top}",
                path.display(),
                classes.len(),
                classes.join(","),
            )));
        }
        self.classes = classes;
        Ok(())
    }
}

/// The four files a prediction folder may hold, told apart by their header.
enum CsvKind {
    /// `img_name,label`
    ClaPre,
    /// `img_name,p_<class>,…` with the class names.
    ClaProb(Vec<String>),
    /// `img_name,boundary,calcification,direction,shape`
    FeaPre,
    /// `img_name,p_boundary,…`
    FeaProb,
}

impl CsvKind {
    fn of(header: &[String]) -> Option<Self> {
        if header == ["img_name", "label"] {
            Some(CsvKind::ClaPre)
        } else if is_feature_header(header, "") {
            Some(CsvKind::FeaPre)
        } else if is_feature_header(header, "p_") {
            Some(CsvKind::FeaProb)
        } else if header.len() >= 3
            && header[0] == "img_name"
            && header[1..].iter().all(|h| h.starts_with("p_"))
        {
            Some(CsvKind::ClaProb(
                header[1..].iter().map(|h| h[2..].to_string()).collect(),
            ))
        } else {
            None
        }
    }
}

/// Each row's value, parsed, into `map` under the row's image name (once per name); a row
/// that does not parse is an error at its line, and the others are still read.
fn insert_rows<T>(
    path: &Path,
    rows: Vec<(usize, csv::StringRecord)>,
    map: &mut BTreeMap<String, T>,
    problems: &mut Vec<Problem>,
    parse: impl Fn(&csv::StringRecord) -> Result<T, String>,
) {
    for (line, r) in rows {
        let item = format!("{}:{line}", path.display());
        let name = r.get(0).unwrap_or("").to_string();
        match parse(&r) {
            Ok(v) => insert_once(map, name, v, item, problems),
            Err(message) => problems.push(Problem::error(item, message)),
        }
    }
}

/// The four 0/1 feature labels of a `fea_pre.csv` row.
fn parse_flags(r: &csv::StringRecord) -> Option<[u8; 4]> {
    let vals: Vec<u8> = (1..5)
        .filter_map(|i| match r.get(i).map(str::trim) {
            Some("0") => Some(0),
            Some("1") => Some(1),
            _ => None,
        })
        .collect();
    <[u8; 4]>::try_from(vals).ok()
}

fn parse_probs(r: &csv::StringRecord, k: usize) -> Option<Vec<f64>> {
    if r.len() != k + 1 {
        return None;
    }
    let v: Vec<f64> = (1..=k)
        .map(|i| r.get(i)?.trim().parse::<f64>().ok())
        .collect::<Option<_>>()?;
    v.iter().all(|p| (0.0..=1.0).contains(p)).then_some(v)
}

impl Truth {
    /// Ground truth from `cla_gt.csv` / `fea_gt.csv` files or from labelled datasets in any
    /// layout `birads data check` reads (test sets, competition packages, manifests).
    pub fn read(paths: &[PathBuf]) -> Result<Self, EvalError> {
        let mut out = Truth::default();
        for path in paths {
            if path.is_file() && out.read_gt_csv(path)? {
                continue;
            }
            let ds = birads_data::read_dataset(path)
                .map_err(|e| EvalError::Input(format!("{}: {e}", path.display())))?;
            out.problems.extend(ds.problems.iter().cloned());
            for s in &ds.samples {
                let name = s.image.file_name();
                if let Some(c) = s.class.and_then(|c| ds.classes.name(c)) {
                    insert_once(
                        &mut out.cls,
                        name.clone(),
                        c.to_string(),
                        s.origin.clone(),
                        &mut out.problems,
                    );
                }
                if s.has_features() {
                    insert_once(
                        &mut out.fea,
                        name,
                        s.features,
                        s.origin.clone(),
                        &mut out.problems,
                    );
                }
            }
        }
        if out.cls.is_empty() && out.fea.is_empty() {
            return Err(EvalError::Input(
                "the ground truth holds no labelled images".into(),
            ));
        }
        Ok(out)
    }

    /// `cla_gt.csv` (`img_name,label`, label 0..5) or `fea_gt.csv` (the `fea_pre.csv` header).
    /// Returns false when the file is not one of them (it may be a manifest).
    fn read_gt_csv(&mut self, path: &Path) -> Result<bool, EvalError> {
        let (header, rows) = read_csv(path)?;
        let item = |line: usize| format!("{}:{line}", path.display());
        if header == ["img_name", "label"] {
            for (line, r) in rows {
                let name = r.get(0).unwrap_or("").to_string();
                match r.get(1).and_then(|v| v.trim().parse::<usize>().ok()) {
                    Some(l) if l < BIRADS6.len() => insert_once(
                        &mut self.cls,
                        name,
                        BIRADS6[l].to_string(),
                        item(line),
                        &mut self.problems,
                    ),
                    _ => self.problems.push(Problem::error(
                        item(line),
                        format!("label must be 0..5, got {:?}", r.get(1).unwrap_or("")),
                    )),
                }
            }
            Ok(true)
        } else if is_feature_header(&header, "") {
            for (line, r) in rows {
                let name = r.get(0).unwrap_or("").to_string();
                let mut f = [None; 4];
                let mut ok = true;
                for (i, slot) in f.iter_mut().enumerate() {
                    match r.get(i + 1).map(str::trim) {
                        Some("0") => *slot = Some(false),
                        Some("1") => *slot = Some(true),
                        // An empty cell: this feature is not labelled for this image.
                        Some("") => {}
                        _ => ok = false,
                    }
                }
                if ok {
                    insert_once(&mut self.fea, name, f, item(line), &mut self.problems);
                } else {
                    self.problems.push(Problem::error(
                        item(line),
                        "expected four 0/1 values (or empty)",
                    ));
                }
            }
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

/// BI-RADS grading metrics.
#[derive(Debug, Clone, Serialize)]
pub struct ClsEval {
    pub classes: Vec<String>,
    pub images: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub quadratic_kappa: f64,
    pub per_class: Vec<ClassScores>,
    /// Rows: truth; columns: prediction.
    pub confusion: Vec<Vec<u64>>,
    /// One-vs-rest ROC AUC per class (null where a class has no positives or no negatives)
    /// and their mean; present when probabilities were given.
    pub auc_per_class: Option<Vec<Option<f64>>>,
    pub auc_macro: Option<f64>,
    /// Top-label calibration: confidence = the highest probability, observed = correct.
    pub ece: Option<f64>,
    pub reliability: Option<Vec<ReliabilityBin>>,
    #[serde(skip)]
    pub roc: Vec<Vec<(f64, f64)>>,
}

/// One lesion feature's metrics.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureEval {
    pub name: String,
    pub images: usize,
    pub accuracy: f64,
    /// Of the suspicious finding (label 1).
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub positives: u64,
    pub confusion: Vec<Vec<u64>>,
    pub auc: Option<f64>,
    /// Calibration of the probability of the suspicious finding (observed = positive rate).
    pub ece: Option<f64>,
    pub reliability: Option<Vec<ReliabilityBin>>,
    #[serde(skip)]
    pub roc: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FeaEval {
    pub features: Vec<FeatureEval>,
    pub mean_accuracy: f64,
    pub mean_f1: f64,
}

/// SEED.md: classification 0.6·accuracy + 0.4·macro-F1; features 0.6·mean accuracy +
/// 0.4·mean F1; overall the mean of those present.
#[derive(Debug, Clone, Serialize)]
pub struct CompetitionScore {
    pub classification: Option<f64>,
    pub features: Option<f64>,
    pub overall: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub classification: Option<ClsEval>,
    pub features: Option<FeaEval>,
    pub competition: CompetitionScore,
    /// Images with truth but no prediction (they lower nothing silently: listed here).
    pub missing_predictions: Vec<String>,
    /// Predicted images without ground truth.
    pub unlabelled_predictions: usize,
    pub problems: Vec<Problem>,
}

/// Match predictions with truth and compute every metric.
pub fn evaluate(pred: &Predictions, truth: &Truth) -> Evaluation {
    let mut m = Matching {
        problems: pred.problems.clone(),
        missing: Vec::new(),
        unlabelled: 0,
    };
    m.problems.extend(truth.problems.iter().cloned());
    let classification = pred
        .cls
        .as_ref()
        .filter(|_| !truth.cls.is_empty())
        .map(|p| m.classification(p, &truth.cls));
    let features = pred
        .fea
        .as_ref()
        .filter(|_| !truth.fea.is_empty())
        .map(|p| m.features(p, &truth.fea));

    if pred.cls.is_some() && truth.cls.is_empty() && !truth.fea.is_empty() {
        m.problems.push(Problem::warning(
            "classification",
            "predictions given but the ground truth has no BI-RADS labels",
        ));
    }
    if pred.fea.is_some() && truth.fea.is_empty() && !truth.cls.is_empty() {
        m.problems.push(Problem::warning(
            "features",
            "predictions given but the ground truth has no feature labels",
        ));
    }
    let c = classification
        .as_ref()
        .map(|c| 0.6 * c.accuracy + 0.4 * c.macro_f1);
    let f = features
        .as_ref()
        .map(|f| 0.6 * f.mean_accuracy + 0.4 * f.mean_f1);
    let overall = match (c, f) {
        (Some(a), Some(b)) => Some((a + b) / 2.0),
        (a, b) => a.or(b),
    };
    Evaluation {
        classification,
        features,
        competition: CompetitionScore {
            classification: c,
            features: f,
            overall,
        },
        missing_predictions: m.missing,
        unlabelled_predictions: m.unlabelled,
        problems: m.problems,
    }
}

/// What matching predictions with truth finds besides the pairs: problems, images with
/// truth but no prediction, and the number of predictions without truth.
struct Matching {
    problems: Vec<Problem>,
    missing: Vec<String>,
    unlabelled: usize,
}

impl Matching {
    /// BI-RADS metrics over the images with both a true class and a prediction.
    fn classification(&mut self, p: &ClsPredictions, truth: &BTreeMap<String, String>) -> ClsEval {
        let classes = ClassList(p.classes.clone());
        let (mut t, mut y, mut probs) = (Vec::new(), Vec::new(), Vec::new());
        for (name, class_name) in truth {
            let Some(ti) = classes.index_of(class_name) else {
                self.problems.push(Problem::error(
                    name,
                    format!(
                        "true class {class_name} is not one of the predicted classes {classes}"
                    ),
                ));
                continue;
            };
            let Some(&yi) = p.labels.get(name) else {
                self.missing.push(format!("cla/{name}"));
                continue;
            };
            t.push(ti);
            y.push(yi);
            probs.push(p.probabilities.get(name).cloned());
        }
        self.unlabelled += p.labels.keys().filter(|n| !truth.contains_key(*n)).count();
        cls_eval(p.classes.clone(), &t, &y, &probs)
    }

    /// Per-feature metrics over the images with that feature's truth and a prediction.
    fn features(
        &mut self,
        p: &FeaPredictions,
        truth: &BTreeMap<String, [Option<bool>; 4]>,
    ) -> FeaEval {
        for name in truth.keys() {
            if !p.labels.contains_key(name) {
                self.missing.push(format!("fea/{name}"));
            }
        }
        self.unlabelled += p.labels.keys().filter(|n| !truth.contains_key(*n)).count();
        let features: Vec<FeatureEval> = (0..4)
            .map(|f| {
                let (mut t, mut y, mut probs) = (Vec::new(), Vec::new(), Vec::new());
                for (name, tf) in truth {
                    if let (Some(v), Some(l)) = (tf[f], p.labels.get(name)) {
                        t.push(usize::from(v));
                        y.push(l[f] as usize);
                        probs.push(p.probabilities.get(name).map(|q| q[f]));
                    }
                }
                feature_eval(FEATURE_NAMES[f], &t, &y, &probs)
            })
            .collect();
        let mean = |g: fn(&FeatureEval) -> f64| {
            features.iter().map(g).sum::<f64>() / features.len() as f64
        };
        FeaEval {
            mean_accuracy: mean(|f| f.accuracy),
            mean_f1: mean(|f| f.f1),
            features,
        }
    }
}

/// BI-RADS metrics of true (`t`) and predicted (`y`) class indices, with each image's class
/// probabilities where known (AUC and calibration need them for every image).
pub fn cls_eval(
    classes: Vec<String>,
    t: &[usize],
    y: &[usize],
    probs: &[Option<Vec<f64>>],
) -> ClsEval {
    let k = classes.len();
    let confusion = metrics::confusion(t, y, k);
    let all_probs: Option<Vec<&Vec<f64>>> = if probs.is_empty() {
        None
    } else {
        probs.iter().map(Option::as_ref).collect()
    };
    let (mut auc_per_class, mut auc_macro, mut ece, mut reliability, mut roc) =
        (None, None, None, None, Vec::new());
    if let Some(p) = all_probs {
        let per: Vec<Option<f64>> = (0..k)
            .map(|c| {
                let pos: Vec<bool> = t.iter().map(|&ti| ti == c).collect();
                let s: Vec<f64> = p.iter().map(|row| row[c]).collect();
                roc.push(metrics::roc_curve(&pos, &s));
                metrics::roc_auc(&pos, &s)
            })
            .collect();
        let defined: Vec<f64> = per.iter().flatten().copied().collect();
        auc_macro =
            (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64);
        auc_per_class = Some(per);
        let conf: Vec<f64> = p.iter().map(|row| row[argmax(row)]).collect();
        let hit: Vec<f64> = p
            .iter()
            .zip(t)
            .map(|(row, &ti)| f64::from(u8::from(argmax(row) == ti)))
            .collect();
        let bins = metrics::reliability(&conf, &hit, CALIBRATION_BINS);
        ece = Some(metrics::expected_calibration_error(&bins));
        reliability = Some(bins);
    }
    ClsEval {
        images: t.len(),
        accuracy: metrics::accuracy(t, y),
        macro_f1: metrics::macro_f1(&confusion),
        quadratic_kappa: metrics::quadratic_kappa(&confusion),
        per_class: metrics::per_class(&confusion),
        confusion,
        auc_per_class,
        auc_macro,
        ece,
        reliability,
        roc,
        classes,
    }
}

fn feature_eval(name: &str, t: &[usize], y: &[usize], probs: &[Option<f64>]) -> FeatureEval {
    let confusion = metrics::confusion(t, y, 2);
    let scores = metrics::per_class(&confusion)[1];
    let all: Option<Vec<f64>> = if probs.is_empty() {
        None
    } else {
        probs.iter().copied().collect()
    };
    let (mut auc, mut ece, mut reliability, mut roc) = (None, None, None, Vec::new());
    if let Some(p) = all {
        let pos: Vec<bool> = t.iter().map(|&v| v == 1).collect();
        auc = metrics::roc_auc(&pos, &p);
        roc = metrics::roc_curve(&pos, &p);
        let observed: Vec<f64> = t.iter().map(|&v| v as f64).collect();
        let bins = metrics::reliability(&p, &observed, CALIBRATION_BINS);
        ece = Some(metrics::expected_calibration_error(&bins));
        reliability = Some(bins);
    }
    FeatureEval {
        name: name.to_string(),
        images: t.len(),
        accuracy: metrics::accuracy(t, y),
        precision: scores.precision,
        recall: scores.recall,
        f1: scores.f1,
        positives: scores.support,
        confusion,
        auc,
        ece,
        reliability,
        roc,
    }
}
