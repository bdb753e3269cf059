//! The loop learns: both models fit a small synthetic training set from scratch (the
//! shortened CI version of the "learns on synthetic data" check; figures on held-out data
//! come from `birads demo` and are reported in the README).

use birads_data::synth::{synthesize, SynthConfig};
use birads_data::Sample;
use birads_model::{CpuTrain, MyConvNeXtConfig, MyDenseNetConfig};
use birads_train::trainer::{Quiet, RunOptions};
use birads_train::{Task, TrainConfig};

fn data(task: Task, dir: &std::path::Path) -> Vec<Sample> {
    let root = dir.join("synth");
    synthesize(
        &root,
        &SynthConfig {
            seed: 11,
            train_cls: 32,
            train_fea: 32,
            test_cls: 2,
            test_fea: 2,
            min_side: 160,
            max_side: 220,
        },
    )
    .unwrap();
    let part = match task {
        Task::Cls => "乳腺分类训练数据集",
        Task::Fea => "乳腺特征训练数据集",
    };
    birads_data::read_dataset(&root.join(part)).unwrap().samples
}

fn quick(task: Task) -> TrainConfig {
    let mut c = TrainConfig::for_task(task);
    c.epochs = if task == Task::Cls { 24 } else { 32 };
    c.batch_size = 8;
    c.learning_rate = if task == Task::Cls { 2e-3 } else { 5e-3 };
    c.schedule.t0 = c.epochs;
    c.preprocess.crop = None;
    c.preprocess.cut_black = false;
    c.preprocess.size = 64;
    c.augment = birads_data::pipeline::Augment::none();
    c.class_weights = Vec::new();
    c.model.convnext = MyConvNeXtConfig::new()
        .with_dims(vec![16, 32, 64, 128])
        .with_depths(vec![1, 1, 1, 1])
        .with_dropout(0.0)
        .with_sd_rate(0.0)
        .with_layer_scale_init(0.1);
    c.model.densenet = MyDenseNetConfig::new()
        .with_growth(12)
        .with_blocks(vec![2, 2, 2, 2])
        .with_init_features(16)
        .with_dp1(0.0)
        .with_dp2(0.0);
    c
}

/// burn's CPU backend has one global RNG (seeded by the trainer): tests that train must not
/// interleave, or their initial weights depend on scheduling.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fit(task: Task) -> f64 {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let samples = data(task, dir.path());
    let cfg = quick(task);
    let opts = RunOptions {
        out: dir.path().join("run"),
        resume: false,
        init: None,
    };
    let out = birads_train::train::<CpuTrain>(
        &cfg,
        samples.clone(),
        samples,
        &opts,
        &mut Quiet,
        &Default::default(),
    )
    .unwrap();
    let first = &out.history[0];
    let last = out.history.last().unwrap();
    assert!(last.train_loss < first.train_loss, "the loss falls");
    eprintln!(
        "train-mode accuracy {} loss {} -> {}",
        last.train_accuracy, first.train_loss, last.train_loss
    );
    // Evaluated with the inference model on the training images themselves.
    last.val_accuracy.unwrap()
}

#[test]
fn convnext_fits_a_small_training_set() {
    let acc = fit(Task::Cls);
    assert!(
        acc >= 0.8,
        "BI-RADS training accuracy {acc} after 24 epochs"
    );
}

#[test]
fn densenet_fits_a_small_training_set() {
    let acc = fit(Task::Fea);
    assert!(
        acc >= 0.8,
        "feature training accuracy {acc} after 32 epochs"
    );
}
