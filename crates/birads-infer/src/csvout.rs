//! The competition CSVs, byte for byte as the original's `csv.writer` wrote them (CRLF line
//! ends), written atomically.

use std::path::Path;

use birads_data::atomic::write_atomic;

use crate::{ClsPrediction, FeaPrediction};

fn write(
    path: &Path,
    header: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(&mut buf);
        w.write_record(header)?;
        for r in rows {
            w.write_record(&r)?;
        }
        w.flush()?;
    }
    write_atomic(path, &buf)
}

/// `cla_pre.csv`: `img_name,label` with label 0..5.
pub fn write_cla_pre(path: &Path, preds: &[ClsPrediction]) -> std::io::Result<()> {
    write(
        path,
        &["img_name", "label"],
        preds
            .iter()
            .map(|p| vec![p.img_name.clone(), p.label.to_string()]),
    )
}

/// `fea_pre.csv`: `img_name,boundary,calcification,direction,shape` with 0/1 values.
pub fn write_fea_pre(path: &Path, preds: &[FeaPrediction]) -> std::io::Result<()> {
    write(
        path,
        &[
            "img_name",
            "boundary",
            "calcification",
            "direction",
            "shape",
        ],
        preds.iter().map(|p| {
            std::iter::once(p.img_name.clone())
                .chain(p.labels.iter().map(|l| l.to_string()))
                .collect()
        }),
    )
}

/// `cla_prob.csv`: `img_name,p_2,p_3,p_4A,p_4B,p_4C,p_5` (or the model's class names), six decimals.
pub fn write_cla_prob(
    path: &Path,
    classes: &[String],
    preds: &[ClsPrediction],
) -> std::io::Result<()> {
    let header: Vec<String> = std::iter::once("img_name".to_string())
        .chain(classes.iter().map(|c| format!("p_{c}")))
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    write(
        path,
        &header,
        preds.iter().map(|p| {
            std::iter::once(p.img_name.clone())
                .chain(p.probabilities.iter().map(|v| format!("{v:.6}")))
                .collect()
        }),
    )
}

/// `fea_prob.csv`: `img_name,p_boundary,p_calcification,p_direction,p_shape`, six decimals.
pub fn write_fea_prob(path: &Path, preds: &[FeaPrediction]) -> std::io::Result<()> {
    write(
        path,
        &[
            "img_name",
            "p_boundary",
            "p_calcification",
            "p_direction",
            "p_shape",
        ],
        preds.iter().map(|p| {
            std::iter::once(p.img_name.clone())
                .chain(p.probabilities.iter().map(|v| format!("{v:.6}")))
                .collect()
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csvs_have_the_original_headers_and_crlf() {
        let dir = tempfile::tempdir().unwrap();
        let cla = vec![ClsPrediction {
            img_name: "0001.jpg".into(),
            index: 0,
            label: 3,
            probabilities: vec![0.1, 0.1, 0.1, 0.5, 0.1, 0.1],
        }];
        write_cla_pre(&dir.path().join("c.csv"), &cla).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("c.csv")).unwrap(),
            "img_name,label\r\n0001.jpg,3\r\n"
        );
        let fea = vec![FeaPrediction {
            img_name: "a b.png".into(),
            index: 0,
            labels: [1, 0, 0, 1],
            probabilities: [0.9, 0.1, 0.2, 0.75],
        }];
        write_fea_pre(&dir.path().join("f.csv"), &fea).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("f.csv")).unwrap(),
            "img_name,boundary,calcification,direction,shape\r\na b.png,1,0,0,1\r\n"
        );
        write_fea_prob(&dir.path().join("fp.csv"), &fea).unwrap();
        assert!(std::fs::read_to_string(dir.path().join("fp.csv"))
            .unwrap()
            .contains("a b.png,0.900000,0.100000,0.200000,0.750000"));
        let classes: Vec<String> = birads_data::BIRADS6.iter().map(|s| s.to_string()).collect();
        write_cla_prob(&dir.path().join("cp.csv"), &classes, &cla).unwrap();
        assert!(std::fs::read_to_string(dir.path().join("cp.csv"))
            .unwrap()
            .starts_with("img_name,p_2,p_3,p_4A,p_4B,p_4C,p_5\r\n"));
    }
}
