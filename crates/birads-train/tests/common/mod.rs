//! Synthetic training sets, a quick recipe and a run from shared initial weights, for the
//! training tests.
#![allow(dead_code)]

use birads_data::synth::{synthesize, SynthConfig};
use birads_data::Sample;
use birads_model::{MyConvNeXtConfig, MyDenseNetConfig};
use birads_train::{Task, TrainConfig};

/// 32 training images of one task (the first two of testA are unused).
pub fn data(task: Task, dir: &std::path::Path) -> Vec<Sample> {
    synth(task, dir, 32, 2, 1.0).0
}

/// Training and testA samples of one task from a fresh synthetic set.
pub fn synth(
    task: Task,
    dir: &std::path::Path,
    train: usize,
    test: usize,
    lesion_scale: f32,
) -> (Vec<Sample>, Vec<Sample>) {
    let root = dir.join("synth");
    synthesize(
        &root,
        &SynthConfig {
            seed: 11,
            train_cls: if task == Task::Cls { train } else { 0 },
            train_fea: if task == Task::Fea { train } else { 0 },
            test_cls: test,
            test_fea: test,
            min_side: if lesion_scale > 1.0 { 128 } else { 160 },
            max_side: if lesion_scale > 1.0 { 176 } else { 220 },
            lesion_scale,
        },
    )
    .unwrap();
    let part = match task {
        Task::Cls => "乳腺分类训练数据集",
        Task::Fea => "乳腺特征训练数据集",
    };
    let train = birads_data::read_dataset(&root.join(part)).unwrap().samples;
    let test = birads_data::read_dataset(&root.join("testA"))
        .unwrap()
        .samples
        .into_iter()
        .filter(|s| match task {
            Task::Cls => s.class.is_some(),
            Task::Fea => s.features.iter().all(Option::is_some),
        })
        .collect();
    (train, test)
}

pub fn quick(task: Task) -> TrainConfig {
    let mut c = TrainConfig::for_task(task).with_birads6();
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

/// Initial weights for `cfg` and `task` in `dir/init.safetensors`, drawn from the config's
/// seed on the CPU, so that runs on two backends start from the same numbers (and every run of
/// a test from the same draw).
pub fn write_init(cfg: &TrainConfig, task: Task, dir: &std::path::Path) {
    use birads_model::checkpoint::{self, AnyModel};
    use birads_model::CpuTrain;
    let device = Default::default();
    <CpuTrain as burn::tensor::backend::Backend>::seed(&device, cfg.seed);
    let model: AnyModel<CpuTrain> = match task {
        Task::Cls => AnyModel::ConvNeXt(
            cfg.model
                .convnext
                .clone()
                .with_num_classes(cfg.classes.len())
                .init(&device),
        ),
        Task::Fea => AnyModel::DenseNet(cfg.model.densenet.clone().init(&device)),
    };
    let path = dir.join("init.safetensors");
    checkpoint::save(&model, serde_json::Value::Null, &path).unwrap();
}

/// `cfg` trained on `B` with burn's autodiff from `write_init`'s weights, on `data`'s set
/// (validated on the same images), into `dir/name`.
pub fn train_from_init<B: burn::tensor::backend::AutodiffBackend>(
    cfg: &TrainConfig,
    task: Task,
    dir: &std::path::Path,
    name: &str,
) -> birads_train::RunOutcome {
    use birads_train::trainer::{Engine, Quiet, RunOptions};
    let samples = data(task, dir);
    let opts = RunOptions {
        out: dir.join(name),
        resume: false,
        init: Some(dir.join("init.safetensors")),
        engine: Engine::Burn,
    };
    birads_train::train::<B>(
        cfg,
        samples.clone(),
        samples,
        &opts,
        &mut Quiet,
        &Default::default(),
    )
    .unwrap()
}

/// Two runs of `epochs` epochs agree: `got` has every epoch, each epoch's training loss is
/// within `tolerance(epoch)` of `want`'s (relative to the larger of |want| and 1), and so is
/// its validation loss where `check_val(epoch)`; and `got` learns (its last training loss is
/// below its first). `what` names the comparison in the messages.
pub fn assert_histories_agree(
    what: &str,
    epochs: u64,
    got: &[birads_train::history::EpochRecord],
    want: &[birads_train::history::EpochRecord],
    tolerance: impl Fn(u64) -> f64,
    check_val: impl Fn(u64) -> bool,
) {
    assert_eq!(got.len(), epochs as usize, "{what}: epochs");
    for (g, w) in got.iter().zip(want) {
        eprintln!(
            "{what} epoch {}: train loss {} ({}), val loss {:?} ({:?})",
            g.epoch, g.train_loss, w.train_loss, g.val_loss, w.val_loss
        );
        let tolerance = tolerance(g.epoch);
        let close = |x: f64, y: f64| (x - y).abs() <= tolerance * y.abs().max(1.0);
        assert!(
            close(g.train_loss, w.train_loss),
            "{what} epoch {}: train loss {} against {} (tolerance {tolerance:e})",
            g.epoch,
            g.train_loss,
            w.train_loss
        );
        assert!(
            !check_val(g.epoch) || close(g.val_loss.unwrap(), w.val_loss.unwrap()),
            "{what} epoch {}: val loss {:?} against {:?} (tolerance {tolerance:e})",
            g.epoch,
            g.val_loss,
            w.val_loss
        );
    }
    assert!(
        got.last().unwrap().train_loss < got[0].train_loss,
        "{what}: learns"
    );
}
