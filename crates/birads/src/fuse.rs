//! `birads fuse`: learn the fused category from the image model's BI-RADS probabilities and
//! the feature model's descriptor probabilities, on images with BI-RADS labels. A share of
//! patients is held out to measure the fusion against the image model alone.

use std::path::PathBuf;

use birads_data::split::group_split;
use birads_data::{Sample, Severity};
use birads_infer::folder::{load_predictor, Engine};
use birads_infer::fusion::{fit_fusion, Row, Scores};
use birads_infer::predict::suspicious;
use birads_model::checkpoint::Purpose;
use clap::Args;

#[derive(Args)]
pub struct FuseArgs {
    /// Images with BI-RADS labels, in any layout `birads data check` reads (a manifest, a
    /// competition training folder, a labelled test set with cla_gt.csv). Features come from
    /// the feature model, never from labels.
    #[arg(long)]
    pub data: PathBuf,
    /// BI-RADS weights (original MyConv.pth, a checkpoint, or `builtin`).
    #[arg(long)]
    pub cla_weights: PathBuf,
    /// Feature weights (original MyDense.pth or a checkpoint).
    #[arg(long)]
    pub fea_weights: PathBuf,
    /// Where the fusion model goes (JSON; `predict`/`serve --fusion` read it).
    #[arg(long)]
    pub out: PathBuf,
    /// Share of patients (groups) held out of fitting, to measure the fusion.
    #[arg(long, default_value_t = 0.3)]
    pub held_out: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
}

fn show(name: &str, s: &Scores) {
    println!(
        "  {name:<11} accuracy {:.4}  macro-F1 {:.4}  QWK {}  log-loss {:.4}  ECE {:.4}  ({} images)",
        s.accuracy,
        s.macro_f1,
        s.quadratic_kappa.map_or("–".into(), |k| format!("{k:.4}")),
        s.log_loss,
        s.ece,
        s.images
    );
}

/// Both models' outputs, by sample: `rows[i]` is `None` where either model failed.
struct Outputs {
    rows: Vec<Option<Row>>,
    /// The grading model's class names.
    classes: Vec<String>,
    /// Where the two models came from (grading, features).
    sources: Vec<String>,
}

/// Both models' outputs for every labelled sample that could be read.
fn rows(a: &FuseArgs, samples: &[Sample]) -> anyhow::Result<Outputs> {
    let cls = load_predictor(&a.cla_weights, Purpose::Grading, false, Engine::Fast)?;
    let fea = load_predictor(&a.fea_weights, Purpose::Features, false, Engine::Fast)?;
    let c = cls.predictor.run(samples.to_vec(), a.batch_size, |_| {});
    let f = fea.predictor.run(samples.to_vec(), a.batch_size, |_| {});
    for p in c.failures.iter().chain(&f.failures) {
        eprintln!("skipped {}: {}", p.item, p.reason);
    }
    let mut out: Vec<Option<Row>> = vec![None; samples.len()];
    let mut q: Vec<Option<[f32; 4]>> = vec![None; samples.len()];
    for (i, p) in f.predictions {
        q[i] = Some(suspicious(&p));
    }
    for (i, p) in c.predictions {
        if let (Some(d), Some(label)) = (q[i], samples[i].class) {
            out[i] = Some(Row {
                class_probabilities: p,
                descriptors: d,
                label,
                group: samples[i].group_key(),
            });
        }
    }
    Ok(Outputs {
        rows: out,
        classes: cls.classes,
        sources: vec![cls.source, fea.source],
    })
}

pub fn run(a: FuseArgs) -> anyhow::Result<u8> {
    let ds = crate::read_dataset(&a.data)?;
    for p in ds.problems.iter().filter(|p| p.severity == Severity::Error) {
        eprintln!("skipped {}: {}", p.item, p.reason);
    }
    let samples: Vec<Sample> = ds
        .samples
        .into_iter()
        .filter(|s| s.class.is_some())
        .collect();
    anyhow::ensure!(
        !samples.is_empty(),
        "{}: no images with a BI-RADS label",
        a.data.display()
    );
    anyhow::ensure!(
        (0.0..0.9).contains(&a.held_out),
        "--held-out must be in [0, 0.9)"
    );
    let split = group_split(&samples, a.held_out, a.seed);
    let Outputs {
        rows,
        classes: image_classes,
        sources,
    } = rows(&a, &samples)?;
    let pick =
        |idx: &[usize]| -> Vec<Row> { idx.iter().filter_map(|&i| rows[i].clone()).collect() };
    let (fit, held) = (pick(&split.train), pick(&split.val));
    let unread = rows.iter().filter(|r| r.is_none()).count();
    println!(
        "{} labelled images ({} classes: {}): fitting on {}, holding out {} (whole patients){}",
        samples.len(),
        ds.classes.len(),
        ds.classes.names().join(", "),
        fit.len(),
        held.len(),
        if unread > 0 {
            format!(", {unread} unreadable")
        } else {
            String::new()
        }
    );
    let m = fit_fusion(
        ds.classes.names().to_vec(),
        image_classes,
        &fit,
        &held,
        sources,
    )?;
    println!(
        "chosen C = {} (5-fold cross-validated log-loss on the fitting images)",
        m.c
    );
    if let Some(s) = &m.report.held_out_fused {
        println!("held out:");
        show("fused", s);
    }
    match &m.report.held_out_image {
        Some(s) => show("image only", s),
        None if m.report.held_out_fused.is_some() => println!(
            "  image only: not comparable (the image model's classes {:?} are not all among the labels')",
            m.image_classes
        ),
        None => {}
    }
    m.save(&a.out)?;
    println!("fusion model written to {}", a.out.display());
    Ok(if unread > 0 { crate::EXIT_SKIPPED } else { 0 })
}
