//! `birads demo`: the whole pipeline on built-in synthetic data — synthesize a dataset in the
//! competition layout, check it, train both models with a small fast configuration, predict
//! on the labelled synthetic test set and write the evaluation report.

use std::path::{Path, PathBuf};

use birads_data::check::check;
use birads_data::Sample;
use birads_train::trainer::RunOptions;
use birads_train::{RunOutcome, Task, TrainConfig};
use clap::Args;

use crate::data::Task as PreviewTask;

#[derive(Args)]
pub struct DemoArgs {
    /// Where everything goes.
    #[arg(long, default_value = "out/demo")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// BI-RADS training images (more: a better model, a longer demo).
    #[arg(long, default_value_t = 2000)]
    pub cls_images: usize,
    /// Feature training images.
    #[arg(long, default_value_t = 1200)]
    pub fea_images: usize,
    /// Labelled test images per task (testA).
    #[arg(long, default_value_t = 200)]
    pub test_images: usize,
    #[arg(long, default_value_t = 14)]
    pub cls_epochs: u64,
    #[arg(long, default_value_t = 8)]
    pub fea_epochs: u64,
    /// BI-RADS model input side in pixels (the feature model looks a quarter closer).
    #[arg(long, default_value_t = 64)]
    pub image_size: u32,
    /// Training engine (as `birads train --engine`; default: fast).
    #[arg(long, value_enum)]
    pub engine: Option<crate::train::TrainEngineArg>,
}

/// The demo's recipe: the original's losses, optimisers and schedule shape on small models,
/// small images and mild augmentation, so that it learns within a few minutes on a CPU.
pub fn quick_config(task: Task, epochs: u64, size: u32, seed: u64) -> TrainConfig {
    let mut cfg = TrainConfig::for_task(task);
    if task == Task::Cls {
        cfg = cfg.with_birads6();
    }
    crate::train::small_models(&mut cfg);
    cfg.epochs = epochs;
    cfg.batch_size = 32;
    // From scratch both need a step larger than the usual 1e-3 to learn within ten epochs:
    // ConvNeXt to leave the majority class (1e-3 and 4e-3 did no better on the demo's
    // validation images, 8e-3 stayed there), DenseNet from its kaiming-normal start (validation
    // AUC 0.90 at 2e-3 against 0.84 at 1e-3 and 4e-3).
    cfg.learning_rate = 2e-3;
    cfg.schedule.t0 = epochs.max(1);
    cfg.preprocess.crop = None;
    cfg.preprocess.cut_black = false;
    cfg.preprocess.size = size;
    cfg.augment = birads_data::pipeline::Augment {
        hflip: 0.5,
        ..birads_data::pipeline::Augment::none()
    };
    // The synthetic classes are roughly balanced: no oversampling.
    cfg.class_weights = Vec::new();
    cfg.seed = seed;
    cfg
}

fn train_one(data: &Path, out: &Path, task: Task, a: &DemoArgs) -> anyhow::Result<RunOutcome> {
    let ds = crate::read_dataset(data)?;
    let samples: Vec<Sample> = crate::train::without_test_sets(ds.samples)
        .into_iter()
        .filter(|s| crate::train::labelled(task, s))
        .collect();
    let (train, val) = crate::train::split_samples(samples, 0.15, a.seed);
    let (size, epochs) = match task {
        Task::Cls => (a.image_size, a.cls_epochs),
        // Margins and calcifications are fine detail: the feature model looks closer.
        Task::Fea => (a.image_size + a.image_size / 4, a.fea_epochs),
    };
    let cfg = quick_config(task, epochs, size, a.seed);
    println!(
        "{} on {} images (validation {}), {} epochs at {size}px",
        match task {
            Task::Cls => "MyConvNeXt (BI-RADS)",
            Task::Fea => "MyDenseNet (features)",
        },
        train.len(),
        val.len(),
        cfg.epochs
    );
    let opts = RunOptions {
        out: out.to_path_buf(),
        resume: false,
        init: None,
        // The defaults of `birads train` (see `TrainEngineArg::resolve`).
        engine: crate::train::TrainEngineArg::resolve(
            a.engine,
            crate::device::DeviceArg::Cpu,
            task,
        )?,
    };
    crate::train::train_with(
        &cfg,
        train,
        val,
        &opts,
        crate::device::DeviceArg::Cpu,
        crate::device::PrecisionArg::F32,
    )
}

pub fn run(a: DemoArgs) -> anyhow::Result<u8> {
    let t = std::time::Instant::now();
    let data = a.out.join("synth");
    println!("== 1/6 synthesize a dataset in the competition layout");
    synthesize(&a, &data)?;
    println!("\n== 2/6 check it");
    let mut ds = crate::read_dataset(&data)?;
    let summary = check(&mut ds, false);
    print!("{summary}");
    anyhow::ensure!(
        summary.errors == 0,
        "the synthetic dataset has {} errors",
        summary.errors
    );

    println!("\n== 3/6 train BI-RADS");
    let cls = train_one(&data, &a.out.join("run_cls"), Task::Cls, &a)?;
    println!("\n== 4/6 train features");
    let fea = train_one(&data, &a.out.join("run_fea"), Task::Fea, &a)?;

    println!("\n== 5/6 predict the labelled synthetic test set (testA)");
    let pred = a.out.join("predictions");
    predict(&data.join("testA"), &pred, &cls, &fea)?;

    println!("\n== 6/6 evaluate");
    let code = crate::eval::run(crate::eval::EvalArgs {
        pred: vec![pred],
        truth: vec![data.join("testA")],
        out: a.out.join("report"),
    })?;
    previews(&a, &data)?;
    println!(
        "\ndemo finished in {:.0} s; everything is under {}",
        t.elapsed().as_secs_f32(),
        a.out.display()
    );
    print_outputs(&a.out, &cls, &fea);
    Ok(code)
}

/// Step 1: the synthetic dataset in the competition layout.
fn synthesize(a: &DemoArgs, data: &Path) -> anyhow::Result<()> {
    let code = crate::synth::run(crate::synth::SynthArgs {
        out: data.to_path_buf(),
        seed: a.seed,
        train_cls: a.cls_images,
        train_fea: a.fea_images,
        test_cls: a.test_images,
        test_fea: a.test_images,
        // Small images with large lesions: what small models learn from scratch in minutes
        // at 64–80 px (the default lesions are 1–3 px of margin detail at that size).
        min_side: 128,
        max_side: 176,
        lesion_scale: 1.8,
    })?;
    anyhow::ensure!(code == 0, "synthesizing the dataset failed");
    Ok(())
}

/// Step 5: both trained models on the test set, with probabilities; skipped images fail it.
fn predict(test: &Path, pred: &Path, cls: &RunOutcome, fea: &RunOutcome) -> anyhow::Result<()> {
    let code = crate::predict::run(crate::predict::PredictArgs {
        input: test.to_path_buf(),
        output: pred.to_path_buf(),
        cla_weights: Some(cls.best.clone()),
        fea_weights: Some(fea.best.clone()),
        probabilities: true,
        batch_size: 16,
        tta: false,
        engine: crate::predict::EngineArg::Fast,
        device: crate::device::DeviceArg::Cpu,
        fusion: None,
        report: None,
    })?;
    anyhow::ensure!(code == 0, "prediction skipped images");
    Ok(())
}

/// Augmented previews of a few training images of each task.
fn previews(a: &DemoArgs, data: &Path) -> anyhow::Result<()> {
    for (task, name) in [(PreviewTask::Cls, "cls"), (PreviewTask::Fea, "fea")] {
        crate::preview::run(crate::preview::PreviewArgs {
            dataset: data.to_path_buf(),
            out: a.out.join("preview").join(name),
            count: 8,
            versions: 3,
            seed: a.seed,
            task,
            size: 224,
            cutmix: None,
            cutmix_p: 0.5,
            cut_black: task == PreviewTask::Fea,
        })?;
    }
    Ok(())
}

/// Where the demo put everything.
fn print_outputs(out: &Path, cls: &RunOutcome, fea: &RunOutcome) {
    println!("  dataset:      {}", out.join("synth").display());
    println!(
        "  checkpoints:  {} and {} (use with `birads predict --cla-weights … --fea-weights …`)",
        cls.best.display(),
        fea.best.display()
    );
    println!(
        "  training:     {}/metrics.csv, curves.png (and run_fea/)",
        out.join("run_cls").display()
    );
    println!(
        "  predictions:  {} (cla_pre.csv, fea_pre.csv, probabilities)",
        out.join("predictions").display()
    );
    println!(
        "  report:       {}",
        out.join("report").join("report.html").display()
    );
    println!("  previews:     {}", out.join("preview").display());
}
