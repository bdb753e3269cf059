//! The folders of the competition layout on disk (see the module docs of
//! [`synth`](super)), which file names the generator writes into each, and the
//! preparation of the output folder: refuse foreign data, clear an earlier run.

use std::fs;
use std::path::{Path, PathBuf};

use super::config::{io_err, SynthError, CLASS_DIRS, CLS_ROOT, FEATURE_NAMES, FEA_ROOT};
use super::readme;

/// `<out>/乳腺分类训练数据集/train/<class>`: images/ and labels/ of one BI-RADS class.
pub(super) fn cls_train_dir(out: &Path, birads: usize) -> PathBuf {
    out.join(CLS_ROOT).join("train").join(CLASS_DIRS[birads])
}

/// `<out>/乳腺特征训练数据集/train`: images/ and one `<feature>_labels/` per feature.
pub(super) fn fea_train_dir(out: &Path) -> PathBuf {
    out.join(FEA_ROOT).join("train")
}

/// `<out>/testA`: cla/, fea/ and the ground-truth CSVs.
pub(super) fn test_dir(out: &Path) -> PathBuf {
    out.join("testA")
}

const IMG: &[&str] = &["jpg", "png"];
const TXT: &[&str] = &["txt"];

/// A folder the generator writes files into, and the pattern of those files' names:
/// `<prefix><digits>.<ext>`.
struct OutputDir {
    path: PathBuf,
    prefix: &'static str,
    digits: usize,
    exts: &'static [&'static str],
}

/// Every folder of the layout that receives generated files.
fn output_dirs(out: &Path) -> Vec<OutputDir> {
    let dir = |path: PathBuf, prefix, digits, exts| OutputDir {
        path,
        prefix,
        digits,
        exts,
    };
    let test = test_dir(out);
    let mut dirs = vec![
        dir(test.join("cla"), "", 4, IMG),
        dir(test.join("fea"), "", 4, IMG),
    ];
    for c in 0..CLASS_DIRS.len() {
        let base = cls_train_dir(out, c);
        dirs.push(dir(base.join("images"), "synth_cls_", 5, IMG));
        dirs.push(dir(base.join("labels"), "synth_cls_", 5, TXT));
    }
    let fea = fea_train_dir(out);
    dirs.push(dir(fea.join("images"), "synth_fea_", 5, IMG));
    for f in FEATURE_NAMES {
        dirs.push(dir(fea.join(format!("{f}_labels")), "synth_fea_", 5, TXT));
    }
    dirs
}

/// Makes `out` ready for a new run: nothing to do when it is missing or empty; an
/// earlier output of [`synthesize`](super::synthesize) (recognised by its README.txt)
/// loses its generated images and labels, so a rerun leaves no stale ones behind; any
/// other non-empty folder is refused, so real data is never overwritten.
pub(super) fn prepare_output(out: &Path) -> Result<(), SynthError> {
    if !out.exists() {
        return Ok(());
    }
    let mut rd = fs::read_dir(out).map_err(|e| io_err(out, e))?;
    if rd.next().is_none() {
        return Ok(());
    }
    if !readme::marks_synthetic_set(out) {
        return Err(SynthError::Config(format!(
            "output directory {} is not empty and holds no earlier synthetic data set",
            out.display()
        )));
    }
    remove_stale(out)
}

/// Creates every folder of the layout.
pub(super) fn create_dirs(out: &Path) -> Result<(), SynthError> {
    for d in output_dirs(out) {
        fs::create_dir_all(&d.path).map_err(|e| io_err(&d.path, e))?;
    }
    Ok(())
}

/// Deletes the images and labels of an earlier run (only generator-named files, so
/// anything a user put next to them stays).
fn remove_stale(out: &Path) -> Result<(), SynthError> {
    for d in output_dirs(out) {
        let Ok(rd) = fs::read_dir(&d.path) else {
            continue;
        };
        for e in rd {
            let p = e.map_err(|e| io_err(&d.path, e))?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if p.is_file() && is_generated(name, d.prefix, d.digits, d.exts) {
                fs::remove_file(&p).map_err(|e| io_err(&p, e))?;
            }
        }
    }
    Ok(())
}

/// Whether `name` is one of the file names this generator writes into a folder:
/// `<prefix><digits>.<ext>`, or the temporary file of an interrupted write of one.
fn is_generated(name: &str, prefix: &str, digits: usize, exts: &[&str]) -> bool {
    let name = interrupted_target(name).unwrap_or(name);
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return false;
    };
    let Some(num) = stem.strip_prefix(prefix) else {
        return false;
    };
    num.len() == digits && all_digits(num) && exts.contains(&ext)
}

/// The file a temporary file was going to become: `NAME` for `NAME.tmp` (the temporary
/// names of earlier versions of this generator) and for `.NAME.<pid>.<n>.tmp` (those of
/// [`crate::atomic::write_atomic`], which the generator writes with now).
fn interrupted_target(name: &str) -> Option<&str> {
    let base = name.strip_suffix(".tmp")?;
    let atomic = base.strip_prefix('.').and_then(|hidden| {
        let mut parts = hidden.rsplitn(3, '.');
        let (n, pid, target) = (parts.next()?, parts.next()?, parts.next()?);
        (all_digits(n) && all_digits(pid)).then_some(target)
    });
    Some(atomic.unwrap_or(base))
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Split out of `refuses_foreign_folders_and_replaces_own_output` (synth/tests.rs),
    /// plus the temporary names of the atomic writer.
    #[test]
    fn recognises_generated_names() {
        assert!(is_generated(
            "synth_cls_00012.jpg",
            "synth_cls_",
            5,
            &["jpg", "png"]
        ));
        assert!(is_generated("0001.png.tmp", "", 4, &["jpg", "png"]));
        assert!(!is_generated("IMG_0001.png", "", 4, &["jpg", "png"]));
        assert!(!is_generated(
            "synth_cls_0012.jpg",
            "synth_cls_",
            5,
            &["jpg"]
        ));
        // Temporary files of crate::atomic::write_atomic.
        assert!(is_generated(".0001.png.4242.7.tmp", "", 4, &["jpg", "png"]));
        assert!(is_generated(
            ".synth_fea_00003.txt.1.0.tmp",
            "synth_fea_",
            5,
            &["txt"]
        ));
        assert!(!is_generated(".notes.png.4242.7.tmp", "", 4, &["png"]));
        assert!(!is_generated(".0001.png.x.7.tmp", "", 4, &["png"]));
        assert_eq!(interrupted_target(".0001.jpg.4242.3.tmp"), Some("0001.jpg"));
        assert_eq!(interrupted_target("0001.jpg.tmp"), Some("0001.jpg"));
        assert_eq!(interrupted_target("0001.jpg"), None);
    }
}
