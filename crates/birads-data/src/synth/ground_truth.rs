//! What the written images add up to: the [`SynthSummary`] counts and the test set's
//! ground-truth CSVs (`cla_gt.csv`, `fea_gt.csv`, `boxes.csv` in testA).

use std::path::Path;

use super::config::{SynthError, SynthSummary};
use super::layout::test_dir;
use super::plan::Split;
use super::write::{write_file, Done};

/// Image count, class counts of the classification images and positive counts per
/// feature of the feature images, over train and test.
pub(super) fn summarize(out: &Path, done: &[Done]) -> SynthSummary {
    let mut summary = SynthSummary {
        images: done.len(),
        class_counts: [0; 6],
        feature_positive: [0; 4],
        out: out.to_path_buf(),
    };
    for d in done {
        match d.split {
            Split::TrainCls | Split::TestCls => summary.class_counts[d.spec.birads] += 1,
            Split::TrainFea | Split::TestFea => {
                for (k, &f) in d.spec.features.iter().enumerate() {
                    summary.feature_positive[k] += f as usize;
                }
            }
        }
    }
    summary
}

/// Writes the test set's labels: the class per image, the features per image, and the
/// box of every test image (`img_name` relative to testA), in job order.
pub(super) fn write_test_csvs(out: &Path, done: &[Done]) -> Result<(), SynthError> {
    let mut cla_gt = String::from("img_name,label\n");
    let mut fea_gt = String::from("img_name,boundary,calcification,direction,shape\n");
    let mut boxes = String::from("img_name,cx,cy,w,h\n");
    for d in done {
        let b = d.bbox;
        match d.split {
            Split::TestCls => {
                cla_gt.push_str(&format!("{},{}\n", d.name, d.spec.birads));
                boxes.push_str(&format!(
                    "cla/{},{:.6},{:.6},{:.6},{:.6}\n",
                    d.name, b[0], b[1], b[2], b[3]
                ));
            }
            Split::TestFea => {
                let f = d.spec.features.map(|x| x as u8);
                fea_gt.push_str(&format!("{},{},{},{},{}\n", d.name, f[0], f[1], f[2], f[3]));
                boxes.push_str(&format!(
                    "fea/{},{:.6},{:.6},{:.6},{:.6}\n",
                    d.name, b[0], b[1], b[2], b[3]
                ));
            }
            Split::TrainCls | Split::TrainFea => {}
        }
    }
    let test = test_dir(out);
    write_file(&test.join("cla_gt.csv"), cla_gt.as_bytes())?;
    write_file(&test.join("fea_gt.csv"), fea_gt.as_bytes())?;
    write_file(&test.join("boxes.csv"), boxes.as_bytes())
}
