//! Cross-validation partitions: which images train, validate and test in each fold.
//!
//! The format is that of BUS-BRA's official partitions (`folds-5.csv`, `folds-10.csv`), a CSV
//! with one row per image:
//!
//! | column | meaning |
//! |---|---|
//! | `id` | the image's name: a manifest's `id` column, else the image's file stem |
//! | `pathology` (optional) | `benign` / `malignant`, used when the manifest has none |
//! | `test_fold` | the fold (1-based) in which this image is a test image |
//! | `valid_1` … `valid_K` | per fold k: `1` training, `0` validation, `NaN` (or empty) test |
//!
//! Every row is a test image in exactly one fold, the one `test_fold` names. Column names are
//! case-insensitive. [`Partition::read`] checks the file on its own; [`Partition::assign`]
//! checks it against the dataset: every id names exactly one image and every image has a row,
//! and no patient (the samples' `group`) is a test patient in two folds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::manifest::parse_pathology;
use crate::sample::Sample;

/// What an image is in one fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Train,
    Val,
    Test,
}

/// A partition file that failed a check; the message names the rows and ids concerned.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct PartitionError {
    pub path: PathBuf,
    pub reason: String,
}

/// One row of a partition file.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionRow {
    pub id: String,
    pub pathology: Option<bool>,
    /// 1-based.
    pub test_fold: usize,
    /// One role per fold (index 0 is fold 1).
    pub roles: Vec<Role>,
}

/// A checked partition file.
#[derive(Debug, Clone)]
pub struct Partition {
    pub path: PathBuf,
    pub folds: usize,
    pub rows: Vec<PartitionRow>,
}

/// Indices (into whatever the partition was assigned to) of one fold's three parts, in the
/// partition file's row order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoldSplit {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

/// A partition matched to a dataset: `sample[r]` is the sample index of row `r`.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub sample: Vec<usize>,
}

/// At most this many offending items are named in a message (then a count).
const NAMED: usize = 8;

fn listed(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > NAMED {
        s.push_str(&format!(" … ({} in all)", items.len()));
    }
    s
}

impl Partition {
    pub fn read(path: &Path) -> Result<Self, PartitionError> {
        let file = std::fs::File::open(path).map_err(|e| PartitionError {
            path: path.to_path_buf(),
            reason: format!("cannot open: {e}"),
        })?;
        Self::parse(file, path)
    }

    /// Parse and check a partition from any reader (`path` names it in messages).
    pub fn parse(reader: impl std::io::Read, path: &Path) -> Result<Self, PartitionError> {
        let fail = |reason: String| PartitionError {
            path: path.to_path_buf(),
            reason,
        };
        let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
        let headers: Vec<String> = rdr
            .headers()
            .map_err(|e| fail(format!("cannot read the header: {e}")))?
            .iter()
            .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
            .collect();
        let col = |name: &str| headers.iter().position(|h| h == name);
        let col_id = col("id").ok_or_else(|| fail("no `id` column".into()))?;
        let col_test = col("test_fold").ok_or_else(|| fail("no `test_fold` column".into()))?;
        let col_path = col("pathology");
        let mut col_valid = Vec::new();
        while let Some(c) = col(&format!("valid_{}", col_valid.len() + 1)) {
            col_valid.push(c);
        }
        let folds = col_valid.len();
        if folds < 2 {
            return Err(fail(format!(
                "needs columns valid_1 … valid_K for K ≥ 2 folds, found {folds}"
            )));
        }
        let mut rows = Vec::new();
        let mut problems = Vec::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        for (i, rec) in rdr.records().enumerate() {
            let line = i + 2;
            let rec = match rec {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!("line {line}: unreadable row ({e})"));
                    continue;
                }
            };
            match parse_row(&rec, line, col_id, col_test, col_path, &col_valid) {
                Ok(row) => {
                    if let Some(prev) = first_line.insert(row.id.clone(), line) {
                        problems.push(format!("line {line}: id {} already on line {prev}", row.id));
                    } else {
                        rows.push(row);
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        if !problems.is_empty() {
            return Err(fail(listed(&problems)));
        }
        for k in 1..=folds {
            let count = |r: Role| rows.iter().filter(|row| row.roles[k - 1] == r).count();
            if count(Role::Train) == 0 || count(Role::Test) == 0 {
                return Err(fail(format!(
                    "fold {k} has {} training and {} test images (each needs at least one)",
                    count(Role::Train),
                    count(Role::Test)
                )));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            folds,
            rows,
        })
    }

    /// Row indices of fold `k` (1-based).
    pub fn fold_rows(&self, k: usize) -> FoldSplit {
        let mut s = FoldSplit::default();
        for (r, row) in self.rows.iter().enumerate() {
            match row.roles[k - 1] {
                Role::Train => s.train.push(r),
                Role::Val => s.val.push(r),
                Role::Test => s.test.push(r),
            }
        }
        s
    }

    /// Sample indices of fold `k` (1-based) under an assignment.
    pub fn fold_samples(&self, assignment: &Assignment, k: usize) -> FoldSplit {
        let map = |v: Vec<usize>| v.into_iter().map(|r| assignment.sample[r]).collect();
        let rows = self.fold_rows(k);
        FoldSplit {
            train: map(rows.train),
            val: map(rows.val),
            test: map(rows.test),
        }
    }

    /// Match every row to a sample by [`Sample::key`] and check the partition against the
    /// dataset. Samples without pathology take the partition's; a contradiction is an error.
    pub fn assign(&self, samples: &mut [Sample]) -> Result<Assignment, PartitionError> {
        let fail = |reason: String| PartitionError {
            path: self.path.clone(),
            reason,
        };
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let mut twice = Vec::new();
        for (i, s) in samples.iter().enumerate() {
            if by_key.insert(s.key(), i).is_some() {
                twice.push(s.key());
            }
        }
        if !twice.is_empty() {
            return Err(fail(format!(
                "these ids name more than one image of the data: {}",
                listed(&twice)
            )));
        }
        let mut sample = Vec::with_capacity(self.rows.len());
        let mut missing = Vec::new();
        for row in &self.rows {
            match by_key.remove(&row.id) {
                Some(i) => sample.push(i),
                None => missing.push(row.id.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(fail(format!(
                "{} id(s) of the partition are not in the data: {}",
                missing.len(),
                listed(&missing)
            )));
        }
        if !by_key.is_empty() {
            let mut extra: Vec<String> = by_key.into_keys().collect();
            extra.sort();
            return Err(fail(format!(
                "{} image(s) of the data have no row in the partition: {}",
                extra.len(),
                listed(&extra)
            )));
        }
        // No patient may be tested in two folds (its other images would train the model).
        let mut test_folds: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        for (row, &i) in self.rows.iter().zip(&sample) {
            if let Some(g) = &samples[i].group {
                test_folds
                    .entry(g.clone())
                    .or_default()
                    .insert(row.test_fold);
            }
        }
        let split: Vec<String> = test_folds
            .iter()
            .filter(|(_, f)| f.len() > 1)
            .map(|(g, f)| {
                let f: Vec<String> = f.iter().map(|k| k.to_string()).collect();
                format!("{g} (folds {})", f.join(", "))
            })
            .collect();
        if !split.is_empty() {
            return Err(fail(format!(
                "patients in more than one test fold (the split is not patient-level): {}",
                listed(&split)
            )));
        }
        let mut conflicts = Vec::new();
        for (row, &i) in self.rows.iter().zip(&sample) {
            match (samples[i].malignant, row.pathology) {
                (None, p) => samples[i].malignant = p,
                (Some(a), Some(b)) if a != b => conflicts.push(row.id.clone()),
                _ => {}
            }
        }
        if !conflicts.is_empty() {
            return Err(fail(format!(
                "pathology differs between the data and the partition for {}",
                listed(&conflicts)
            )));
        }
        Ok(Assignment { sample })
    }
}

fn parse_row(
    rec: &csv::StringRecord,
    line: usize,
    col_id: usize,
    col_test: usize,
    col_path: Option<usize>,
    col_valid: &[usize],
) -> Result<PartitionRow, String> {
    let get = |c: usize| rec.get(c).unwrap_or("").trim();
    let id = get(col_id);
    if id.is_empty() {
        return Err(format!("line {line}: empty id"));
    }
    let folds = col_valid.len();
    let test_fold = match get(col_test).parse::<f64>() {
        Ok(v) if v.fract() == 0.0 && v >= 1.0 && v <= folds as f64 => v as usize,
        _ => {
            return Err(format!(
                "line {line} ({id}): test_fold '{}' is not a fold 1..{folds}",
                get(col_test)
            ))
        }
    };
    let mut roles = Vec::with_capacity(folds);
    for (k, &c) in col_valid.iter().enumerate() {
        roles.push(match get(c).to_ascii_lowercase().as_str() {
            "1" | "1.0" => Role::Train,
            "0" | "0.0" => Role::Val,
            "" | "nan" | "na" => Role::Test,
            v => {
                return Err(format!(
                    "line {line} ({id}): valid_{} is '{v}', not 1 (train), 0 (validation) or NaN (test)",
                    k + 1
                ))
            }
        });
    }
    let tests: Vec<String> = (0..folds)
        .filter(|&k| roles[k] == Role::Test)
        .map(|k| (k + 1).to_string())
        .collect();
    if tests.len() > 1 {
        return Err(format!(
            "line {line} ({id}): a test image in folds {} (test folds overlap)",
            tests.join(" and ")
        ));
    }
    if tests.first().map(String::as_str) != Some(&test_fold.to_string()) {
        return Err(format!(
            "line {line} ({id}): test_fold is {test_fold} but valid_{test_fold} is not NaN"
        ));
    }
    let pathology = match col_path {
        Some(c) => parse_pathology(get(c)).map_err(|e| format!("line {line} ({id}): {e}"))?,
        None => None,
    };
    Ok(PartitionRow {
        id: id.to_string(),
        pathology,
        test_fold,
        roles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::ImageSource;

    fn parse(text: &str) -> Result<Partition, PartitionError> {
        Partition::parse(text.as_bytes(), Path::new("p.csv"))
    }

    const GOOD: &str = "id,Pathology,test_fold,valid_1,valid_2\n\
                        a,benign,1,NaN,1\n\
                        b,malignant,2,0,NaN\n\
                        c,benign,1,NaN,0\n\
                        d,benign,2,1,NaN\n\
                        e,malignant,1,NaN,1\n";

    fn samples(ids: &[(&str, &str)]) -> Vec<Sample> {
        ids.iter()
            .map(|(id, patient)| {
                let mut s = Sample::unlabelled(
                    ImageSource::Path(PathBuf::from(format!("/x/{id}.png"))),
                    "t",
                );
                s.group = Some(patient.to_string());
                s
            })
            .collect()
    }

    #[test]
    fn folds_follow_the_file() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.folds, 2);
        let f1 = p.fold_rows(1);
        assert_eq!(
            (f1.train, f1.val, f1.test),
            (vec![3], vec![1], vec![0, 2, 4])
        );
        let f2 = p.fold_rows(2);
        assert_eq!(
            (f2.train, f2.val, f2.test),
            (vec![0, 4], vec![2], vec![1, 3])
        );
        assert_eq!(p.rows[1].pathology, Some(true));
    }

    #[test]
    fn bad_files_are_refused_with_the_row_named() {
        let overlap = GOOD.replace("b,malignant,2,0,NaN", "b,malignant,2,NaN,NaN");
        let e = parse(&overlap).unwrap_err().to_string();
        assert!(e.contains("folds 1 and 2") && e.contains("(b)"), "{e}");
        let wrong = GOOD.replace("d,benign,2,1,NaN", "d,benign,1,1,NaN");
        let e = parse(&wrong).unwrap_err().to_string();
        assert!(e.contains("test_fold is 1 but valid_1 is not NaN"), "{e}");
        let dup = format!("{GOOD}a,benign,1,NaN,1\n");
        assert!(parse(&dup)
            .unwrap_err()
            .to_string()
            .contains("id a already on line 2"));
        let bad_value = GOOD.replace("c,benign,1,NaN,0", "c,benign,1,NaN,2");
        assert!(parse(&bad_value)
            .unwrap_err()
            .to_string()
            .contains("valid_2 is '2'"));
        let out_of_range = GOOD.replace("e,malignant,1,", "e,malignant,3,");
        assert!(parse(&out_of_range)
            .unwrap_err()
            .to_string()
            .contains("not a fold 1..2"));
        assert!(parse("id,test_fold,valid_1\na,1,NaN\n")
            .unwrap_err()
            .to_string()
            .contains("K ≥ 2"));
        assert!(parse("test_fold,valid_1,valid_2\n")
            .unwrap_err()
            .to_string()
            .contains("no `id`"));
        let no_train = "id,test_fold,valid_1,valid_2\na,1,NaN,0\nb,2,0,NaN\n";
        assert!(parse(no_train)
            .unwrap_err()
            .to_string()
            .contains("fold 1 has 0 training"));
    }

    #[test]
    fn assignment_checks_ids_patients_and_pathology() {
        let p = parse(GOOD).unwrap();
        let mut s = samples(&[
            ("e", "p3"),
            ("a", "p1"),
            ("b", "p2"),
            ("c", "p1"),
            ("d", "p4"),
        ]);
        s[0].malignant = Some(true);
        let a = p.assign(&mut s).unwrap();
        assert_eq!(a.sample, vec![1, 2, 3, 4, 0]);
        assert_eq!(s[1].malignant, Some(false), "taken from the partition");
        let f = p.fold_samples(&a, 2);
        assert_eq!((f.train, f.val, f.test), (vec![1, 0], vec![3], vec![2, 4]));

        let mut missing = samples(&[("a", "p1"), ("b", "p2"), ("c", "p1"), ("d", "p4")]);
        let e = p.assign(&mut missing).unwrap_err().to_string();
        assert!(e.contains("not in the data: e"), "{e}");
        let mut extra = samples(&[
            ("a", "1"),
            ("b", "2"),
            ("c", "1"),
            ("d", "4"),
            ("e", "3"),
            ("z", "9"),
        ]);
        let e = p.assign(&mut extra).unwrap_err().to_string();
        assert!(e.contains("no row in the partition: z"), "{e}");
        // Patient p1 has an image tested in fold 1 and one tested in fold 2.
        let mut leak = samples(&[
            ("a", "p1"),
            ("b", "p1"),
            ("c", "p3"),
            ("d", "p4"),
            ("e", "p5"),
        ]);
        let e = p.assign(&mut leak).unwrap_err().to_string();
        assert!(e.contains("p1 (folds 1, 2)"), "{e}");
        let mut contra = samples(&[
            ("a", "p1"),
            ("b", "p2"),
            ("c", "p1"),
            ("d", "p4"),
            ("e", "p3"),
        ]);
        contra[4].malignant = Some(false);
        let e = p.assign(&mut contra).unwrap_err().to_string();
        assert!(e.contains("pathology differs") && e.contains(" e"), "{e}");
        let mut twice = samples(&[("a", "p1"), ("a", "p2")]);
        assert!(p
            .assign(&mut twice)
            .unwrap_err()
            .to_string()
            .contains("more than one image"));
    }

    #[test]
    fn the_bus_bra_partitions_read_and_are_patient_level() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/bus-bra");
        let manifest = crate::manifest::read_manifest(&dir.join("labels.csv")).unwrap();
        for (file, k) in [("folds-5.csv", 5), ("folds-10.csv", 10)] {
            let p = Partition::read(&dir.join(file)).unwrap();
            assert_eq!((p.folds, p.rows.len()), (k, 1875));
            let mut samples = manifest.samples.clone();
            let a = p.assign(&mut samples).unwrap();
            let mut tested = vec![0usize; samples.len()];
            for f in 1..=k {
                let s = p.fold_samples(&a, f);
                assert_eq!(s.train.len() + s.val.len() + s.test.len(), 1875);
                for &i in &s.test {
                    tested[i] += 1;
                }
                // No patient on both sides of the train/test boundary of a fold.
                let test_patients: BTreeSet<_> =
                    s.test.iter().map(|&i| samples[i].group_key()).collect();
                assert!(s
                    .train
                    .iter()
                    .chain(&s.val)
                    .all(|&i| !test_patients.contains(&samples[i].group_key())));
            }
            assert!(tested.iter().all(|&t| t == 1), "every image tested once");
            assert!(samples.iter().all(|s| s.malignant.is_some()));
        }
    }
}
