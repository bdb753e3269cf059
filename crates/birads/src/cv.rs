//! `birads cv`: k-fold cross-validation of a BI-RADS model from a partition file. Each fold
//! trains on its training images, chooses its checkpoint on its validation images only,
//! predicts its test images and is evaluated; one report then covers every finished fold.
//!
//! Layout of `--out`: `config.toml` (the recipe, fixed at the first start), `fold-K/run/` (a
//! `birads train` run folder, resumable), `fold-K/result.json` (written last: a fold with it
//! is finished and is not redone), `fold-K/test_predictions.csv`, and `cv.json` +
//! `report.html` for all finished folds.

use std::path::{Path, PathBuf};

use anyhow::Context;
use birads_data::folds::Partition;
use birads_data::{ClassList, Sample, Severity};
use birads_infer::cv::{fold_metrics, summarise, write_cv_report, FoldResult, TestPrediction};
use birads_infer::folder::{load_predictor, Engine};
use birads_model::checkpoint::Purpose;
use birads_train::trainer::RunOptions;
use birads_train::{Task, TrainConfig};
use clap::Args;

use crate::train::{EngineArgs, RecipeArgs, TrainEngineArg};

#[derive(Args)]
pub struct CvArgs {
    /// Labelled images: a CSV manifest (e.g. BUS-BRA's labels.csv) or any layout `birads data
    /// check` reads. Partition ids name its `id` column, else the images' file stems.
    #[arg(long)]
    pub data: PathBuf,
    /// The partition: `id`, `test_fold`, `valid_1` … `valid_K` (1 train, 0 validation, NaN
    /// test), optional `pathology`, as BUS-BRA's folds-5.csv / folds-10.csv.
    #[arg(long)]
    pub folds: PathBuf,
    /// The cross-validation folder (resumable: finished folds are kept).
    #[arg(long)]
    pub out: PathBuf,
    /// Run only these folds (repeatable); the report covers every finished fold.
    #[arg(long)]
    pub fold: Vec<usize>,
    #[arg(long, default_value_t = 32)]
    pub batch_size_predict: usize,
    #[command(flatten)]
    pub recipe: RecipeArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The recipe of the whole cross-validation: fixed by the first start, so that every fold
/// trains the same way; a later start with other settings is refused.
fn recipe(a: &CvArgs, classes: &ClassList) -> anyhow::Result<TrainConfig> {
    let mut cfg = a.recipe.config_for(Task::Cls)?;
    crate::train::resolve_classes(&mut cfg, classes)?;
    let saved = a.out.join("config.toml");
    if saved.is_file() {
        let before = crate::train::read_config(&saved, Task::Cls)?;
        anyhow::ensure!(
            before.to_toml() == cfg.to_toml(),
            "{} holds a cross-validation with another recipe (its config.toml); give the same \
             settings to continue it, or a new --out",
            a.out.display()
        );
    } else {
        std::fs::create_dir_all(&a.out)?;
        birads_data::atomic::write_atomic(&saved, cfg.to_toml().as_bytes())?;
    }
    Ok(cfg)
}

pub fn run(a: CvArgs) -> anyhow::Result<u8> {
    a.engine.device.ready_for(a.engine.precision)?;
    let partition = Partition::read(&a.folds)?;
    let ds = crate::read_dataset(&a.data)?;
    let mut skipped = 0;
    for p in &ds.problems {
        eprintln!("{p}");
        skipped += usize::from(p.severity == Severity::Error);
    }
    anyhow::ensure!(
        skipped == 0,
        "{skipped} item(s) of {} could not be read (listed above): the partition needs every image",
        a.data.display()
    );
    let mut samples = ds.samples;
    let assignment = partition.assign(&mut samples)?;
    let cfg = recipe(&a, &ds.classes)?;
    let wanted: Vec<usize> = if a.fold.is_empty() {
        (1..=partition.folds).collect()
    } else {
        a.fold.clone()
    };
    for &k in &wanted {
        anyhow::ensure!(
            (1..=partition.folds).contains(&k),
            "--fold {k}: the partition has folds 1..{}",
            partition.folds
        );
    }
    println!(
        "cross-validation of {} images, {} folds ({} to run now) → {}",
        samples.len(),
        partition.folds,
        wanted.len(),
        a.out.display()
    );
    let mut failed_images = 0;
    for (i, &k) in wanted.iter().enumerate() {
        let dir = a.out.join(format!("fold-{k}"));
        if dir.join("result.json").is_file() {
            println!("fold {k}: finished earlier ({})", dir.display());
            continue;
        }
        let split = partition.fold_samples(&assignment, k);
        let pick = |idx: &[usize]| idx.iter().map(|&j| samples[j].clone()).collect::<Vec<_>>();
        let (train, val, test) = (pick(&split.train), pick(&split.val), pick(&split.test));
        println!(
            "fold {k} ({} of {} now): training on {}, choosing on {} validation images, testing on {}",
            i + 1,
            wanted.len(),
            train.len(),
            val.len(),
            test.len()
        );
        let (result, failed) = run_fold(&a, &cfg, k, &dir, train, val, test)?;
        failed_images += failed;
        let m = &result.metrics;
        println!(
            "fold {k}: test accuracy {:.3}, macro-F1 {:.3}, κ {}, macro AUC {}, malignancy AUC {} (radiologist {}), {:.0} s",
            m.accuracy,
            m.macro_f1,
            show(m.quadratic_kappa),
            show(m.auc_macro),
            show(m.malignancy_auc),
            show(m.radiologist_auc),
            result.train_seconds
        );
    }
    report(&a, &cfg, partition.folds)?;
    Ok(if failed_images > 0 {
        crate::EXIT_SKIPPED
    } else {
        0
    })
}

fn show(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into())
}

/// Train (or resume) one fold, predict its test images with the checkpoint chosen on
/// validation, and write its result. Returns the result and how many images failed to load.
fn run_fold(
    a: &CvArgs,
    cfg: &TrainConfig,
    k: usize,
    dir: &Path,
    train: Vec<Sample>,
    val: Vec<Sample>,
    test: Vec<Sample>,
) -> anyhow::Result<(FoldResult, usize)> {
    let run_dir = dir.join("run");
    let resume = run_dir.join("state/train_state.json").is_file();
    if resume {
        println!("fold {k}: resuming {}", run_dir.display());
    }
    let source = vec![a.data.display().to_string()];
    crate::train::save_split(
        &run_dir.join("split.json"),
        Task::Cls,
        (source.clone(), source),
        &train,
        &val,
    )?;
    let opts = RunOptions {
        out: run_dir.clone(),
        resume,
        init: a.recipe.init.clone(),
        engine: TrainEngineArg::resolve(a.engine.engine, a.engine.device, Task::Cls)?,
    };
    let (n_train, n_val) = (train.len(), val.len());
    let outcome =
        crate::train::train_with(cfg, train, val, &opts, a.engine.device, a.engine.precision)?;
    let train_seconds = outcome.history.iter().map(|r| r.seconds).sum::<f64>();
    let (predictions, failed) = predict_test(&outcome.best, &test, a.batch_size_predict)?;
    let result = FoldResult {
        fold: k,
        train_images: n_train,
        val_images: n_val,
        test_images: test.len(),
        best_epoch: outcome.best_epoch,
        epochs: cfg.epochs,
        train_seconds,
        metrics: fold_metrics(&cfg.classes, &predictions),
        predictions,
    };
    write_predictions(&dir.join("test_predictions.csv"), &cfg.classes, &result)?;
    birads_data::atomic::write_atomic(
        &dir.join("result.json"),
        &serde_json::to_vec_pretty(&result)?,
    )?;
    Ok((result, failed))
}

/// Probabilities of the test images from a checkpoint, on the CPU inference path.
fn predict_test(
    weights: &Path,
    test: &[Sample],
    batch_size: usize,
) -> anyhow::Result<(Vec<TestPrediction>, usize)> {
    let predictor = load_predictor(weights, Purpose::Grading, false, Engine::Fast)?.predictor;
    let run = predictor.run(test.to_vec(), batch_size, |_| {});
    for f in &run.failures {
        eprintln!("skipped {}: {}", f.item, f.reason);
    }
    let mut out = Vec::with_capacity(run.predictions.len());
    for (i, probabilities) in run.predictions {
        let s = &test[i];
        out.push(TestPrediction {
            id: s.key(),
            image: s.image.to_string(),
            truth: s.class.context("a test image without a BI-RADS label")?,
            malignant: s.malignant,
            probabilities,
        });
    }
    Ok((out, run.failures.len()))
}

fn write_predictions(path: &Path, classes: &[String], r: &FoldResult) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec![
        "id".to_string(),
        "image".into(),
        "birads".into(),
        "pathology".into(),
        "predicted".into(),
        "malignancy_score".into(),
    ];
    header.extend(classes.iter().map(|c| format!("p_{c}")));
    w.write_record(&header)?;
    for p in &r.predictions {
        let mut row = vec![
            p.id.clone(),
            p.image.clone(),
            classes[p.truth].clone(),
            match p.malignant {
                Some(true) => "malignant".into(),
                Some(false) => "benign".into(),
                None => String::new(),
            },
            classes[birads_infer::predict::argmax(&p.probabilities)].clone(),
            format!(
                "{:.6}",
                birads_infer::metrics::malignancy_score(classes, &p.probabilities)
            ),
        ];
        row.extend(p.probabilities.iter().map(|v| format!("{v:.6}")));
        w.write_record(&row)?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    birads_data::atomic::write_atomic(path, &bytes)?;
    Ok(())
}

/// Summarise every finished fold into `cv.json` and `report.html`.
fn report(a: &CvArgs, cfg: &TrainConfig, folds_total: usize) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for k in 1..=folds_total {
        let p = a.out.join(format!("fold-{k}/result.json"));
        if p.is_file() {
            let text = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            results.push(
                serde_json::from_slice::<FoldResult>(&text)
                    .with_context(|| format!("{}: not a fold result", p.display()))?,
            );
        }
    }
    if results.is_empty() {
        return Ok(());
    }
    let r = summarise(cfg.classes.clone(), folds_total, results);
    let about = format!(
        "{} with the partition {}; recipe in {}",
        a.data.display(),
        a.folds.display(),
        a.out.join("config.toml").display()
    );
    write_cv_report(&r, &a.out, &about)?;
    println!(
        "{} of {} folds finished; mean ± sd over them:",
        r.folds.len(),
        folds_total
    );
    for s in &r.summary {
        println!("  {:<20} {}", s.metric, s.show());
    }
    println!(
        "report: {} and {}",
        a.out.join("report.html").display(),
        a.out.join("cv.json").display()
    );
    Ok(())
}
