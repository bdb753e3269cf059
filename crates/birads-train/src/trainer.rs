//! The training loop: sampling, augmentation (parallel loader), forward/backward, the
//! optimiser step with the scheduled rate, validation, and after every epoch a checkpoint
//! from which `--resume` continues exactly (model, optimiser moments, epoch counter; the
//! sampler and augmentation streams are derived from the seed and the epoch).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use birads_data::atomic::write_atomic;
use birads_data::loader::{Batch, Loader};
use birads_data::rng::{derive, STREAM_MODEL};
use birads_data::sampler::{shuffled, WeightedSampler};
use birads_data::{Problem, Sample};
use birads_infer::metrics;
use birads_model::checkpoint::{load_any, save, AnyModel, ModelKind, Purpose};
use birads_model::fast::train::{OptimConfig, UpdateRule};
use birads_model::fast::FastModel;
use birads_model::{MyConvNeXt, MyDenseNet};
use burn::module::AutodiffModule;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::config::{Arch, NanPolicy, OptimizerKind, Smoothing, Task, TrainConfig};
use crate::fast::FastBackbone;
use crate::history::{plot_curves, write_csv, EpochRecord};
use crate::losses::{
    feature_loss, ordinal_targets, smoothed_cross_entropy, soft_target_cross_entropy,
};
use crate::schedule::rate_for_batch;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("data: {0}")]
    Data(String),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("weights: {0}")]
    Weights(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error(
        "the loss became {value} at epoch {epoch}, batch {batch}; stopped (the last checkpoint is intact). \
         Lower the learning rate, or set on_nan = \"skip\" to skip such batches"
    )]
    NonFinite {
        epoch: u64,
        batch: usize,
        value: f64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io(path.to_path_buf(), e)
}

/// A model the loop can train: logits as `[N, outputs]` (features: `(z₀, z₁)` per task).
pub trait Net<B: Backend>: Module<B> {
    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2>;
    /// Logits from the backbone's final feature maps (`[N, C, 1, 1]`: already pooled).
    fn head_logits(&self, features: Tensor<B, 4>) -> Tensor<B, 2>;
    fn into_any(self) -> AnyModel<B>;
    /// Back from `into_any` (the same family).
    fn from_any(m: AnyModel<B>) -> Self;
}

impl<B: Backend> Net<B> for MyConvNeXt<B> {
    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(x)
    }
    fn head_logits(&self, features: Tensor<B, 4>) -> Tensor<B, 2> {
        self.head(features)
    }
    fn into_any(self) -> AnyModel<B> {
        AnyModel::ConvNeXt(self)
    }
    fn from_any(m: AnyModel<B>) -> Self {
        match m {
            AnyModel::ConvNeXt(m) => m,
            AnyModel::DenseNet(_) => unreachable!("a MyConvNeXt was converted"),
        }
    }
}

impl<B: Backend> Net<B> for MyDenseNet<B> {
    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(x).flatten(1, 2)
    }
    fn head_logits(&self, features: Tensor<B, 4>) -> Tensor<B, 2> {
        self.head(features).flatten(1, 2)
    }
    fn into_any(self) -> AnyModel<B> {
        AnyModel::DenseNet(self)
    }
    fn from_any(m: AnyModel<B>) -> Self {
        match m {
            AnyModel::DenseNet(m) => m,
            AnyModel::ConvNeXt(_) => unreachable!("a MyDenseNet was converted"),
        }
    }
}

/// Draw every lazily initialised parameter now, in declaration order. burn initialises a
/// parameter when it is first read, so the initial weights would otherwise depend on which
/// code reads them first (the fast engine copies them in another order than burn's forward
/// pass); this way a seed gives the same model whatever trains it.
fn materialize<B: Backend, M: Module<B>>(m: M) -> M {
    struct Touch;
    impl<B: Backend> burn::module::ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<B, D>>) {
            let _ = p.val();
        }
    }
    m.visit(&mut Touch);
    m
}

/// What the loop reports while it runs.
pub trait Observer {
    /// After each batch: images done this epoch, of `total`, and the running mean loss.
    fn batch(&mut self, _epoch: u64, _done: usize, _total: usize, _loss: f64) {}
    fn epoch(&mut self, _record: &EpochRecord, _best: bool) {}
    /// An image that could not be loaded (reported once per image).
    fn skipped(&mut self, _problem: &Problem) {}
}

/// Reports nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// Where a run goes and how it starts.
pub struct RunOptions {
    pub out: PathBuf,
    /// Continue the run in `out` from its last completed epoch.
    pub resume: bool,
    /// Initial weights: original `.pth`, torchvision ImageNet weights or a birads checkpoint.
    pub init: Option<PathBuf>,
    /// Where the backbone trains (see `Engine`).
    pub engine: Engine,
}

/// Which code trains the backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// The dedicated CPU path (`birads_model::fast::train`, ≈ 5× burn's autodiff on the
    /// CPU); the head and the losses stay in burn. Validation uses the CPU inference path.
    #[default]
    Fast,
    /// burn's autodiff on the chosen backend (any device, e.g. CUDA).
    Burn,
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub history: Vec<EpochRecord>,
    pub best_epoch: Option<u64>,
    pub best_value: Option<f64>,
    pub best: PathBuf,
    pub last: PathBuf,
    pub skipped_images: usize,
}

/// Saved after every epoch; the commit point of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    epochs_done: u64,
    best_value: Option<f64>,
    best_epoch: Option<u64>,
    history: Vec<EpochRecord>,
    model_file: String,
    optimizer_file: String,
    /// The fast engine's backbone optimiser state (empty: the run trains with burn).
    #[serde(default)]
    fast_file: String,
}

const STATE: &str = "state/train_state.json";

/// Train `cfg.task` on `train` (validated on `val`, which may be empty) into `opts.out`.
pub fn train<B: AutodiffBackend>(
    cfg: &TrainConfig,
    train: Vec<Sample>,
    val: Vec<Sample>,
    opts: &RunOptions,
    observer: &mut dyn Observer,
    device: &B::Device,
) -> Result<RunOutcome, TrainError> {
    cfg.validate().map_err(TrainError::Config)?;
    if cfg.task == Task::Cls && cfg.classes.is_empty() {
        return Err(TrainError::Config(
            "no class list: set `classes` (TrainConfig::set_classes)".into(),
        ));
    }
    let keep = |s: &Sample| match cfg.task {
        Task::Cls => s.class.is_some_and(|c| c < cfg.classes.len()),
        Task::Fea => s.features.iter().all(Option::is_some),
    };
    let train: Vec<Sample> = train.into_iter().filter(keep).collect();
    let val: Vec<Sample> = val.into_iter().filter(keep).collect();
    if train.is_empty() {
        return Err(TrainError::Data(format!(
            "no training images with {} labels",
            match cfg.task {
                Task::Cls => "BI-RADS",
                Task::Fea => "all four feature",
            }
        )));
    }
    // Initial weights and every dropout mask come from the seed: runs are reproducible.
    B::seed(device, derive(cfg.seed, &[STREAM_MODEL, u64::MAX]));
    let init = match &opts.init {
        Some(path) if !opts.resume => {
            let kind = match (cfg.task, cfg.model.arch) {
                (Task::Cls, Arch::ConvNeXt) => ModelKind::ConvNeXt,
                _ => ModelKind::DenseNet,
            };
            let (m, _, _) =
                load_any::<B>(path, kind, &cfg.model.convnext, &cfg.model.densenet, device)
                    .map_err(|e| TrainError::Weights(format!("{}: {e}", path.display())))?;
            let want = match cfg.task {
                Task::Cls => Purpose::Grading,
                Task::Fea => Purpose::Features,
            };
            if m.purpose() != want {
                return Err(TrainError::Weights(format!(
                    "{}: holds {}, {} is trained here",
                    path.display(),
                    m.purpose().describe(),
                    want.describe()
                )));
            }
            Some(m)
        }
        _ => None,
    };
    match (cfg.task, cfg.model.arch, cfg.optimizer) {
        (Task::Cls, Arch::ConvNeXt, kind) => {
            let model = match init {
                Some(AnyModel::ConvNeXt(m)) => m,
                _ => {
                    let c = cfg.model.convnext.clone();
                    materialize(c.with_num_classes(cfg.classes.len()).init::<B>(device))
                }
            };
            dispatch_optimizer(cfg, kind, model, train, val, opts, observer, device)
        }
        (_, _, kind) => {
            let model = match init {
                Some(AnyModel::DenseNet(m)) => m,
                _ => {
                    let classes = match cfg.task {
                        Task::Cls => cfg.classes.len(),
                        Task::Fea => 0,
                    };
                    let c = cfg.model.densenet.clone().with_classes(classes);
                    materialize(c.init::<B>(device))
                }
            };
            dispatch_optimizer(cfg, kind, model, train, val, opts, observer, device)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn dispatch_optimizer<B, M>(
    cfg: &TrainConfig,
    kind: OptimizerKind,
    model: M,
    train: Vec<Sample>,
    val: Vec<Sample>,
    opts: &RunOptions,
    observer: &mut dyn Observer,
    device: &B::Device,
) -> Result<RunOutcome, TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Net<B> + Clone + 'static,
    M::InnerModule: Net<B::InnerBackend>,
{
    // PyTorch's Adam/AdamW epsilon (burn's default is 1e-5).
    match kind {
        OptimizerKind::AdamW => {
            let optim = AdamWConfig::new()
                .with_weight_decay(cfg.weight_decay as f32)
                .with_epsilon(1e-8)
                .init::<B, M>();
            let rule = UpdateRule::AdamW;
            run(cfg, model, optim, rule, train, val, opts, observer, device)
        }
        OptimizerKind::Adam => {
            let optim = AdamConfig::new()
                .with_weight_decay(
                    (cfg.weight_decay > 0.0)
                        .then(|| WeightDecayConfig::new(cfg.weight_decay as f32)),
                )
                .with_epsilon(1e-8)
                .init::<B, M>();
            let rule = UpdateRule::Adam;
            run(cfg, model, optim, rule, train, val, opts, observer, device)
        }
    }
}

/// Targets of a batch: class indices, or 0/1 per feature flattened `[N·4]`.
fn targets(task: Task, b: &Batch) -> Vec<i64> {
    match task {
        Task::Cls => b.classes.iter().map(|c| c.unwrap_or(0) as i64).collect(),
        Task::Fea => b
            .features
            .iter()
            .flat_map(|f| f.map(|v| i64::from(v.unwrap_or(false))))
            .collect(),
    }
}

/// Loss of a batch of logits, on any backend.
fn batch_loss<B: Backend>(
    cfg: &TrainConfig,
    logits: Tensor<B, 2>,
    t: Vec<i64>,
    device: &B::Device,
) -> Tensor<B, 1> {
    let n = logits.dims()[0];
    match cfg.task {
        Task::Cls => {
            let y = Tensor::<B, 1, Int>::from_data(TensorData::new(t, [n]), device);
            match cfg.smoothing {
                Smoothing::Uniform => smoothed_cross_entropy(logits, y, cfg.label_smoothing),
                Smoothing::Ordinal => {
                    let k = logits.dims()[1];
                    let table = ordinal_targets(k, cfg.label_smoothing);
                    soft_target_cross_entropy(logits, y, &table)
                }
            }
        }
        Task::Fea => {
            let y = Tensor::<B, 2, Int>::from_data(TensorData::new(t, [n, 4]), device);
            feature_loss(
                logits,
                y,
                cfg.task_weights,
                cfg.label_smoothing,
                cfg.f1_loss_weight,
            )
            .total
        }
    }
}

/// Correct predictions in a batch (features: per task, summed over tasks).
fn hits(task: Task, logits: &[f32], width: usize, t: &[i64]) -> usize {
    match task {
        Task::Cls => logits
            .chunks(width)
            .zip(t)
            .filter(|(z, &y)| birads_infer::predict::argmax(z) as i64 == y)
            .count(),
        Task::Fea => logits
            .chunks(2)
            .zip(t)
            .filter(|(z, &y)| i64::from(z[1] > z[0]) == y)
            .count(),
    }
}

/// Validation figures.
struct ValResult {
    loss: f64,
    accuracy: f64,
    f1: f64,
    score: f64,
    task_accuracy: Option<[f64; 4]>,
    task_f1: Option<[f64; 4]>,
    /// BI-RADS: macro one-vs-rest AUC; features: mean AUC over the four tasks.
    auc: Option<f64>,
    /// BI-RADS: AUC of the malignancy score against pathology, where the images have it.
    malignancy_auc: Option<f64>,
    confusion: Vec<Vec<Vec<u64>>>,
}

/// Softmax over consecutive groups of `width` logits, as f64.
fn softmax_rows(z: &[f32], width: usize) -> Vec<Vec<f64>> {
    z.chunks(width)
        .map(|g| {
            let max = g.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) as f64;
            let e: Vec<f64> = g.iter().map(|&v| (v as f64 - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.into_iter().map(|v| v / sum).collect()
        })
        .collect()
}

fn validate<B: Backend, M: Net<B>>(
    cfg: &TrainConfig,
    model: &M,
    fast: Option<&FastModel>,
    loader: &Loader,
    device: &B::Device,
    skipped: &mut BTreeSet<String>,
    observer: &mut dyn Observer,
) -> Option<ValResult> {
    let n = loader.samples().len();
    if n == 0 {
        return None;
    }
    let (mut loss_sum, mut count) = (0.0, 0usize);
    let (mut truth, mut pred): (Vec<Vec<usize>>, Vec<Vec<usize>>) = match cfg.task {
        Task::Cls => (vec![Vec::new()], vec![Vec::new()]),
        Task::Fea => (vec![Vec::new(); 4], vec![Vec::new(); 4]),
    };
    // Per image: class probabilities (BI-RADS) or P(suspicious) per task (features), and
    // the pathology where known.
    let mut probs: Vec<Vec<f64>> = Vec::new();
    let mut malignant: Vec<Option<bool>> = Vec::new();
    for b in loader.prefetch(0, (0..n).collect(), cfg.batch_size, cfg.prefetch) {
        for f in &b.failures {
            if skipped.insert(f.item.clone()) {
                observer.skipped(f);
            }
        }
        if b.is_empty() {
            continue;
        }
        let s = b.size;
        let logits = match fast {
            Some(f) => {
                let z = f.forward(&b.images, b.len(), s, s);
                let width = z.len() / b.len();
                Tensor::<B, 2>::from_data(TensorData::new(z, [b.len(), width]), device)
            }
            None => model.logits(Tensor::<B, 4>::from_data(
                TensorData::new(b.images.clone(), [b.len(), 3, s, s]),
                device,
            )),
        };
        let t = targets(cfg.task, &b);
        let width = logits.dims()[1];
        let z: Vec<f32> = logits.clone().into_data().to_vec().expect("f32 logits");
        let l: f64 = batch_loss(cfg, logits, t.clone(), device)
            .into_scalar()
            .elem::<f64>();
        loss_sum += l * b.len() as f64;
        count += b.len();
        match cfg.task {
            Task::Cls => {
                for (row, &y) in z.chunks(width).zip(&t) {
                    truth[0].push(y as usize);
                    pred[0].push(birads_infer::predict::argmax(row));
                }
                probs.extend(softmax_rows(&z, width));
            }
            Task::Fea => {
                for (k, (pair, &y)) in z.chunks(2).zip(&t).enumerate() {
                    truth[k % 4].push(y as usize);
                    pred[k % 4].push(usize::from(pair[1] > pair[0]));
                }
                let p = softmax_rows(&z, 2);
                probs.extend(p.chunks(4).map(|img| img.iter().map(|q| q[1]).collect()));
            }
        }
        malignant.extend(b.indices.iter().map(|&i| loader.samples()[i].malignant));
    }
    if count == 0 {
        return None;
    }
    let loss = loss_sum / count as f64;
    Some(match cfg.task {
        Task::Cls => {
            let with_probs: Vec<Option<Vec<f64>>> = probs.iter().cloned().map(Some).collect();
            let ev =
                birads_infer::eval::cls_eval(cfg.classes.clone(), &truth[0], &pred[0], &with_probs);
            let (known, score): (Vec<bool>, Vec<f64>) = malignant
                .iter()
                .zip(&probs)
                .filter_map(|(m, p)| {
                    let p32: Vec<f32> = p.iter().map(|&v| v as f32).collect();
                    Some((
                        m.as_ref().copied()?,
                        metrics::malignancy_score(&cfg.classes, &p32),
                    ))
                })
                .unzip();
            ValResult {
                loss,
                accuracy: ev.accuracy,
                f1: ev.macro_f1,
                score: 0.6 * ev.accuracy + 0.4 * ev.macro_f1,
                task_accuracy: None,
                task_f1: None,
                auc: ev.auc_macro,
                malignancy_auc: metrics::roc_auc(&known, &score),
                confusion: vec![ev.confusion],
            }
        }
        Task::Fea => {
            let mut acc = [0.0; 4];
            let mut f1 = [0.0; 4];
            let mut confusion = Vec::new();
            for k in 0..4 {
                let c = metrics::confusion(&truth[k], &pred[k], 2);
                acc[k] = metrics::accuracy(&truth[k], &pred[k]);
                f1[k] = metrics::per_class(&c)[1].f1;
                confusion.push(c);
            }
            let (ma, mf) = (acc.iter().sum::<f64>() / 4.0, f1.iter().sum::<f64>() / 4.0);
            let aucs: Vec<f64> = (0..4)
                .filter_map(|k| {
                    let pos: Vec<bool> = truth[k].iter().map(|&t| t == 1).collect();
                    let s: Vec<f64> = probs.iter().map(|p| p[k]).collect();
                    metrics::roc_auc(&pos, &s)
                })
                .collect();
            ValResult {
                loss,
                accuracy: ma,
                f1: mf,
                score: 0.6 * ma + 0.4 * mf,
                task_accuracy: Some(acc),
                task_f1: Some(f1),
                auc: (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64),
                malignancy_auc: None,
                confusion,
            }
        }
    })
}

/// The metric that selects the best checkpoint, oriented so that larger is better.
fn selection_value(cfg: &TrainConfig, v: &ValResult) -> f64 {
    match cfg.best_metric.as_str() {
        "loss" => -v.loss,
        "macro_f1" | "mean_f1" => v.f1,
        "score" => v.score,
        // An AUC that cannot be computed (one class only) never selects a checkpoint.
        "auc" | "mean_auc" => v.auc.unwrap_or(f64::NEG_INFINITY),
        "malignancy_auc" => v.malignancy_auc.unwrap_or(f64::NEG_INFINITY),
        _ => v.accuracy,
    }
}

fn meta(cfg: &TrainConfig, epoch: u64, val: Option<&ValResult>) -> serde_json::Value {
    serde_json::json!({
        "preprocess": cfg.preprocess,
        "classes": cfg.classes,
        "task": cfg.task,
        "epoch": epoch,
        "val_accuracy": val.map(|v| v.accuracy),
        "val_f1": val.map(|v| v.f1),
        "trained_with": format!("birads {}", env!("CARGO_PKG_VERSION")),
    })
}

#[allow(clippy::too_many_arguments)]
fn run<B, M, O>(
    cfg: &TrainConfig,
    mut model: M,
    mut optim: O,
    rule: UpdateRule,
    train: Vec<Sample>,
    val: Vec<Sample>,
    opts: &RunOptions,
    observer: &mut dyn Observer,
    device: &B::Device,
) -> Result<RunOutcome, TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Net<B> + Clone + 'static,
    M::InnerModule: Net<B::InnerBackend>,
    O: Optimizer<M, B>,
{
    let out = &opts.out;
    std::fs::create_dir_all(out.join("state")).map_err(io(out))?;
    let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
    let mut state = TrainState {
        epochs_done: 0,
        best_value: None,
        best_epoch: None,
        history: Vec::new(),
        model_file: String::new(),
        optimizer_file: String::new(),
        fast_file: String::new(),
    };
    if opts.resume {
        let path = out.join(STATE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            TrainError::Checkpoint(format!(
                "cannot resume: {} ({e}); no epoch of this run completed yet?",
                path.display()
            ))
        })?;
        state = serde_json::from_str(&text)
            .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", path.display())))?;
        let mp = out.join("state").join(&state.model_file);
        let record = recorder
            .load(mp.clone(), device)
            .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", mp.display())))?;
        model = model.load_record(record);
        let op = out.join("state").join(&state.optimizer_file);
        let record = recorder
            .load(op.clone(), device)
            .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", op.display())))?;
        optim = optim.load_record(record);
        tracing::info!(
            "resuming {} after epoch {} of {}",
            out.display(),
            state.epochs_done,
            cfg.epochs
        );
    }
    let mut fast = (opts.engine == Engine::Fast)
        .then(|| FastBackbone::new(&model, OptimConfig::new(rule, cfg.weight_decay as f32)));
    if opts.resume && state.epochs_done > 0 {
        match (&mut fast, state.fast_file.is_empty()) {
            (Some(f), false) => {
                let p = out.join("state").join(&state.fast_file);
                f.load(&p)
                    .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", p.display())))?;
            }
            (None, true) => {}
            (Some(_), true) => {
                return Err(TrainError::Checkpoint(
                    "this run trained with --engine burn; resume it with --engine burn".into(),
                ))
            }
            (None, false) => {
                return Err(TrainError::Checkpoint(
                    "this run trained with the fast CPU engine; resume it with --engine fast \
                     (on the CPU)"
                        .into(),
                ))
            }
        }
    }
    write_atomic(&out.join("config.toml"), cfg.to_toml().as_bytes()).map_err(io(out))?;

    let sampler = match (cfg.task, cfg.class_weights.is_empty()) {
        (Task::Cls, false) => {
            let classes: Vec<usize> = train.iter().map(|s| s.class.unwrap_or(0)).collect();
            Some(
                WeightedSampler::from_classes(&classes, &cfg.class_weights)
                    .map_err(TrainError::Config)?,
            )
        }
        _ => None,
    };
    let n_train = train.len();
    let loader = Loader::new(
        Arc::new(train),
        cfg.preprocess.clone(),
        Some(cfg.augment.clone()),
        cfg.seed,
    );
    let val_loader = Loader::new(Arc::new(val), cfg.preprocess.clone(), None, cfg.seed);
    let mut skipped: BTreeSet<String> = BTreeSet::new();
    let (best_path, last_path) = (out.join("best.safetensors"), out.join("last.safetensors"));

    for epoch in state.epochs_done..cfg.epochs {
        let t0 = Instant::now();
        // Dropout masks of this epoch: the same whether the run was resumed or not.
        B::seed(device, derive(cfg.seed, &[STREAM_MODEL, epoch]));
        let order = match &sampler {
            Some(s) => s.epoch(cfg.seed, epoch),
            None => shuffled(n_train, cfg.seed, epoch),
        };
        let batches = order.len().div_ceil(cfg.batch_size);
        let (mut loss_sum, mut seen, mut correct, mut decisions) = (0.0, 0usize, 0usize, 0usize);
        let mut skipped_batches = 0u64;
        let mut lr = rate_for_batch(&cfg.schedule, cfg.learning_rate, epoch, 0, batches);
        let mut data_wait = 0.0;
        let mut batches_in = loader
            .prefetch(epoch, order, cfg.batch_size, cfg.prefetch)
            .into_iter()
            .enumerate();
        loop {
            // The previous step ended with its loss read back (a device sync), so this is
            // time the device sits idle for want of data.
            let waited = Instant::now();
            let Some((bi, b)) = batches_in.next() else {
                break;
            };
            data_wait += waited.elapsed().as_secs_f64();
            for f in &b.failures {
                if skipped.insert(f.item.clone()) {
                    observer.skipped(f);
                }
            }
            if b.is_empty() {
                continue;
            }
            lr = rate_for_batch(&cfg.schedule, cfg.learning_rate, epoch, bi, batches);
            let s = b.size;
            let (logits, leaf) = match &mut fast {
                Some(f) => {
                    // Masks of this batch: the same whether the run was resumed or not.
                    let seed = derive(cfg.seed, &[STREAM_MODEL, epoch, bi as u64]);
                    let (logits, leaf) = f.forward(&model, &b.images, b.len(), s, seed, device);
                    (logits, Some(leaf))
                }
                None => {
                    let x = Tensor::<B, 4>::from_data(
                        TensorData::new(b.images.clone(), [b.len(), 3, s, s]),
                        device,
                    );
                    (model.logits(x), None)
                }
            };
            let t = targets(cfg.task, &b);
            let width = logits.dims()[1];
            let loss = batch_loss(cfg, logits.clone(), t.clone(), device);
            let value: f64 = loss.clone().into_scalar().elem::<f64>();
            if !value.is_finite() {
                match cfg.on_nan {
                    NanPolicy::Stop => {
                        return Err(TrainError::NonFinite {
                            epoch: epoch + 1,
                            batch: bi + 1,
                            value,
                        })
                    }
                    NanPolicy::Skip => {
                        skipped_batches += 1;
                        tracing::warn!(
                            "epoch {}: batch {} has loss {value}; skipped",
                            epoch + 1,
                            bi + 1
                        );
                        continue;
                    }
                }
            }
            let z: Vec<f32> = logits.into_data().to_vec().expect("f32 logits");
            correct += hits(cfg.task, &z, width, &t);
            decisions += t.len();
            let grads = loss.backward();
            if let (Some(f), Some(leaf)) = (&mut fast, &leaf) {
                f.step(leaf, &grads, lr);
            }
            // burn's optimiser updates what has gradients here: the whole model, or only the
            // head when the fast engine trains the backbone.
            let grads = GradientsParams::from_grads(grads, &model);
            model = optim.step(lr, model, grads);
            loss_sum += value * b.len() as f64;
            seen += b.len();
            observer.batch(epoch + 1, seen, n_train, loss_sum / seen as f64);
        }
        let train_seconds = t0.elapsed().as_secs_f64();
        if let Some(f) = &fast {
            model = f.sync(model);
        }
        let valid = model.valid();
        let fast_valid = fast
            .is_some()
            .then(|| FastModel::from_model(&valid.clone().into_any()));
        let v = validate(
            cfg,
            &valid,
            fast_valid.as_ref(),
            &val_loader,
            device,
            &mut skipped,
            observer,
        );
        let record = EpochRecord {
            epoch: epoch + 1,
            lr,
            train_loss: if seen > 0 {
                loss_sum / seen as f64
            } else {
                f64::NAN
            },
            train_accuracy: if decisions > 0 {
                correct as f64 / decisions as f64
            } else {
                f64::NAN
            },
            val_loss: v.as_ref().map(|v| v.loss),
            val_accuracy: v.as_ref().map(|v| v.accuracy),
            val_f1: v.as_ref().map(|v| v.f1),
            val_score: v.as_ref().map(|v| v.score),
            val_task_accuracy: v.as_ref().and_then(|v| v.task_accuracy),
            val_task_f1: v.as_ref().and_then(|v| v.task_f1),
            val_auc: v.as_ref().and_then(|v| v.auc),
            val_malignancy_auc: v.as_ref().and_then(|v| v.malignancy_auc),
            seconds: t0.elapsed().as_secs_f64(),
            images_per_second: seen as f64 / train_seconds.max(1e-9),
            data_wait_seconds: data_wait,
            skipped_batches,
        };

        // Best model: by the validation metric (or the last epoch without validation).
        let candidate = v.as_ref().map(|v| selection_value(cfg, v));
        let improved = match (candidate, state.best_value) {
            (Some(c), Some(b)) => c > b,
            (Some(_), None) => true,
            (None, _) => true,
        } && match (candidate, cfg.best_threshold) {
            (Some(c), Some(th)) => c >= th,
            _ => true,
        };
        let any = valid.into_any();
        save(&any, meta(cfg, epoch + 1, v.as_ref()), &last_path)
            .map_err(|e| TrainError::Checkpoint(e.to_string()))?;
        if improved {
            save(&any, meta(cfg, epoch + 1, v.as_ref()), &best_path)
                .map_err(|e| TrainError::Checkpoint(e.to_string()))?;
            state.best_value = candidate;
            state.best_epoch = Some(epoch + 1);
        }

        // Resumable state: new files first, then the state file that points at them.
        let (mf, of) = (
            format!("model-{:04}", epoch + 1),
            format!("optim-{:04}", epoch + 1),
        );
        recorder
            .record(model.clone().into_record(), out.join("state").join(&mf))
            .map_err(|e| TrainError::Checkpoint(e.to_string()))?;
        recorder
            .record(optim.to_record(), out.join("state").join(&of))
            .map_err(|e| TrainError::Checkpoint(e.to_string()))?;
        let previous = (
            state.model_file.clone(),
            state.optimizer_file.clone(),
            state.fast_file.clone(),
        );
        if let Some(f) = &mut fast {
            let ff = format!("fast-{:04}.bin", epoch + 1);
            f.save(&out.join("state").join(&ff))
                .map_err(|e| TrainError::Checkpoint(e.to_string()))?;
            state.fast_file = ff;
        }
        state.model_file = format!("{mf}.bin");
        state.optimizer_file = format!("{of}.bin");
        state.epochs_done = epoch + 1;
        state.history.push(record.clone());
        let json = serde_json::to_vec_pretty(&state).expect("serialisable state");
        write_atomic(&out.join(STATE), &json).map_err(io(out))?;
        for old in [previous.0, previous.1, previous.2] {
            if !old.is_empty()
                && old != state.model_file
                && old != state.optimizer_file
                && old != state.fast_file
            {
                let _ = std::fs::remove_file(out.join("state").join(old));
            }
        }

        write_csv(&out.join("metrics.csv"), &state.history).map_err(io(out))?;
        birads_infer::report::register_font();
        if let Err(e) = plot_curves(&out.join("curves.png"), &state.history) {
            tracing::warn!("curves.png: {e}");
        }
        if let Some(v) = &v {
            plot_confusions(cfg, &v.confusion, out);
        }
        observer.epoch(&record, improved);
    }
    Ok(RunOutcome {
        history: state.history,
        best_epoch: state.best_epoch,
        best_value: state.best_value,
        best: best_path,
        last: last_path,
        skipped_images: skipped.len(),
    })
}

fn plot_confusions(cfg: &TrainConfig, confusion: &[Vec<Vec<u64>>], out: &Path) {
    let write = |name: &str, title: &str, labels: &[String], c: &[Vec<u64>]| {
        match birads_infer::report::confusion_plot(title, labels, c) {
            Ok(png) => {
                if let Err(e) = write_atomic(&out.join(name), &png) {
                    tracing::warn!("{name}: {e}");
                }
            }
            Err(e) => tracing::warn!("{name}: {e}"),
        }
    };
    match cfg.task {
        Task::Cls => write(
            "confusion_val.png",
            "validation confusion (row-normalised)",
            &cfg.classes,
            &confusion[0],
        ),
        Task::Fea => {
            let labels = ["0".to_string(), "1".to_string()];
            for (k, c) in confusion.iter().enumerate() {
                let f = birads_data::FEATURE_NAMES[k];
                write(
                    &format!("confusion_val_{f}.png"),
                    &format!("validation: {f}"),
                    &labels,
                    c,
                );
            }
        }
    }
}
