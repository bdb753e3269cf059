//! The training loop: sampling, augmentation (parallel loader), forward/backward, the
//! optimiser step with the scheduled rate, validation, and after every epoch a checkpoint
//! from which `--resume` continues exactly (model, optimiser moments, epoch counter; the
//! sampler and augmentation streams are derived from the seed and the epoch).
//!
//! Here: what the loop trains and reports to (`Net`, `Observer`), its options and outcome,
//! and `train`, which builds the model and the optimiser. `run` holds the loop over epochs,
//! `objective` a batch's targets and loss, `validate` the validation pass and `state` the
//! resumable checkpoints.

mod objective;
mod run;
mod state;
mod validate;

use std::path::{Path, PathBuf};

use birads_data::rng::{derive, STREAM_MODEL};
use birads_data::{Problem, Sample};
use birads_model::adamw::{Adam, AdamW};
use birads_model::checkpoint::{load_any, AnyModel, ModelKind, Purpose};
use birads_model::fast::train::UpdateRule;
use birads_model::{MyConvNeXt, MyDenseNet};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::config::{Arch, OptimizerKind, Task, TrainConfig};
use crate::history::EpochRecord;
use run::run;

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
    let job = Job {
        cfg,
        train,
        val,
        opts,
        observer,
        device,
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
            dispatch_optimizer(job, kind, model)
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
            dispatch_optimizer(job, kind, model)
        }
    }
}

/// What a run trains on and where, besides the model and its optimiser.
pub(super) struct Job<'a, B: AutodiffBackend> {
    cfg: &'a TrainConfig,
    train: Vec<Sample>,
    val: Vec<Sample>,
    opts: &'a RunOptions,
    observer: &'a mut dyn Observer,
    device: &'a B::Device,
}

/// `run` with the optimiser `kind` names.
fn dispatch_optimizer<B, M>(
    job: Job<B>,
    kind: OptimizerKind,
    model: M,
) -> Result<RunOutcome, TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Net<B> + Clone + 'static,
    M::InnerModule: Net<B::InnerBackend>,
{
    let cfg = job.cfg;
    // PyTorch's Adam/AdamW epsilon (burn's default is 1e-5).
    match kind {
        OptimizerKind::AdamW => {
            // burn's AdamW, with the update as one kernel on the GPU (`birads_model::adamw`).
            let optim = AdamW::init::<B, M>(cfg.weight_decay as f32, 1e-8);
            let rule = UpdateRule::AdamW;
            run(job, model, optim, rule)
        }
        OptimizerKind::Adam => {
            // burn's Adam, with the update as AdamW's kernel on the GPU.
            let optim = Adam::init::<B, M>(cfg.weight_decay as f32, 1e-8);
            let rule = UpdateRule::Adam;
            run(job, model, optim, rule)
        }
    }
}
