//! What `birads predict` adds after the competition CSVs: the fused category of every image
//! both models saw (`--fusion`, written as a prediction folder `fused/` that `birads eval`
//! reads), and the one-page report of every image plus an index (`--report`).

use std::path::{Path, PathBuf};

use birads_data::atomic::write_atomic;
use birads_data::image_ops::decode_path;
use birads_data::pipeline::preprocess;
use birads_data::ClassList;
use birads_model::CpuTrain;

use crate::assessment::{assess, Assessment};
use crate::csvout::{write_cla_pre, write_cla_prob};
use crate::explain::{captioned_overlays, explain, Target};
use crate::folder::{FolderSummary, ImageOutputs};
use crate::fusion::FusionModel;
use crate::lesion_report::{index_page, lesion_page, IndexRow, LesionReport};
use crate::loaded::LoadedModel;
use crate::predict::argmax;
use crate::ClsPrediction;

/// The fused predictions of the images `cla_pre.csv` covers (both models' outputs needed).
pub fn fused_predictions(outputs: &[ImageOutputs], fusion: &FusionModel) -> Vec<ClsPrediction> {
    outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| o.in_birads_csv)
        .filter_map(|(i, o)| {
            let p = fusion.probabilities(o.birads.as_deref()?, o.features.as_ref()?);
            let p: Vec<f32> = p.iter().map(|&v| v as f32).collect();
            Some(ClsPrediction {
                img_name: o.img_name.clone(),
                index: i,
                label: argmax(&p),
                probabilities: p,
            })
        })
        .collect()
}

/// `dir/cla_pre.csv` and `dir/cla_prob.csv` of the fused category (labels index the fusion's
/// classes, as `cla_pre.csv` indexes the model's).
pub fn write_fused(
    dir: &Path,
    fusion: &FusionModel,
    preds: &[ClsPrediction],
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let (pre, prob) = (dir.join("cla_pre.csv"), dir.join("cla_prob.csv"));
    write_cla_pre(&pre, preds)?;
    write_cla_prob(&prob, &fusion.classes, preds)?;
    Ok(vec![pre, prob])
}

/// The assessment of one image from its outputs.
pub fn assess_outputs(
    o: &ImageOutputs,
    classes: &[String],
    fusion: Option<&FusionModel>,
) -> Assessment {
    assess(classes, o.birads.as_deref(), o.features.as_ref(), fusion)
}

/// What goes into the reports besides the outputs.
pub struct ReportInputs<'a> {
    pub fusion: Option<&'a FusionModel>,
    /// The BI-RADS model with gradients (heatmaps; `None`: no heatmap).
    pub explain: Option<&'a LoadedModel<CpuTrain>>,
    /// (role, source) of each model.
    pub models: Vec<(String, String)>,
}

/// A file name for an image's report: its path under the input folder, `/` → `__`.
fn report_name(input: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(input).unwrap_or(path);
    let s: String = rel
        .to_string_lossy()
        .chars()
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .collect();
    format!("{s}.html")
}

fn short(a: &Assessment) -> (Option<String>, Option<String>, Option<String>, Vec<String>) {
    let g = |g: &crate::assessment::Grade| format!("BI-RADS {} ({:.2})", g.label, g.probability);
    let d = a.descriptors.as_ref().map(|d| {
        d.iter()
            .map(|r| format!("{} {}", r.lexicon, r.finding))
            .collect::<Vec<_>>()
            .join("; ")
    });
    let flags = a.flags.iter().map(|f| f.reason.clone()).collect();
    (a.birads.as_ref().map(g), a.fused.as_ref().map(g), d, flags)
}

/// One image's report page.
fn one_report(
    o: &ImageOutputs,
    classes: &[String],
    r: &ReportInputs,
) -> Result<(String, Assessment), String> {
    let image = decode_path(&o.path).map_err(|e| e.to_string())?;
    let a = assess_outputs(o, classes, r.fusion);
    let (mut crop, mut heatmaps) = (None, Vec::new());
    if let Some(m) = r.explain {
        crop = Some(preprocess(&image, None, &m.preprocess).cut_box);
        if let Some(g) = &a.birads {
            let c = classes.iter().position(|c| *c == g.label).unwrap_or(0);
            let ex = explain(
                &m.model,
                &m.preprocess,
                &image,
                None,
                &[Target::Class(c)],
                &Default::default(),
            )
            .map_err(|e| e.to_string())?;
            heatmaps = captioned_overlays(&ex, &ClassList(classes.to_vec()));
        }
    }
    let page = lesion_page(&LesionReport {
        name: &o.img_name,
        image: &image,
        crop,
        heatmaps,
        assessment: &a,
        models: r.models.clone(),
    });
    Ok((page, a))
}

/// Write one report per image and `index.html` (images that could not be read are listed
/// there with their reason). Returns the files written and the number of images that failed.
pub fn write_reports(
    dir: &Path,
    input: &Path,
    s: &FolderSummary,
    r: &ReportInputs,
    progress: &mut dyn FnMut(usize, usize),
) -> std::io::Result<(Vec<PathBuf>, usize)> {
    std::fs::create_dir_all(dir)?;
    let (mut rows, mut written, mut failed) = (Vec::new(), Vec::new(), 0);
    for (i, o) in s.outputs.iter().enumerate() {
        let name = report_name(input, &o.path);
        match one_report(o, &s.classes, r) {
            Ok((page, a)) => {
                let path = dir.join(&name);
                write_atomic(&path, page.as_bytes())?;
                written.push(path);
                let (category, fused, descriptors, flags) = short(&a);
                rows.push(IndexRow {
                    name: o.img_name.clone(),
                    link: Some(name),
                    category,
                    fused,
                    descriptors,
                    flags,
                    error: None,
                });
            }
            Err(e) => {
                failed += 1;
                rows.push(IndexRow {
                    name: o.img_name.clone(),
                    link: None,
                    category: None,
                    fused: None,
                    descriptors: None,
                    flags: Vec::new(),
                    error: Some(e),
                });
            }
        }
        progress(i + 1, s.outputs.len());
    }
    for p in &s.skipped {
        rows.push(IndexRow {
            name: p.item.clone(),
            link: None,
            category: None,
            fused: None,
            descriptors: None,
            flags: Vec::new(),
            error: Some(p.reason.clone()),
        });
    }
    let index = dir.join("index.html");
    write_atomic(
        &index,
        index_page(&format!("birads reports: {}", input.display()), &rows).as_bytes(),
    )?;
    written.push(index);
    Ok((written, failed))
}
