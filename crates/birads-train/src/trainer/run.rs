//! The loop over epochs: one pass over the shuffled (or oversampled) training images with the
//! scheduled rate, validation, the best and last checkpoints, the resumable state and the
//! reports (`metrics.csv`, curves, confusion matrices).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use birads_data::atomic::write_atomic;
use birads_data::loader::{Batch, Loader};
use birads_data::rng::{derive, STREAM_MODEL};
use birads_data::sampler::{shuffled, WeightedSampler};
use birads_data::Sample;
use birads_model::checkpoint::save;
use birads_model::fast::train::{OptimConfig, UpdateRule};
use birads_model::fast::FastModel;
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::objective::{batch_loss, hits, logit_values, targets, value_of};
use super::state::{commit_epoch, meta, resume, resume_fast, TrainState};
use super::validate::{selection_value, validate, ValResult};
use super::{io, Engine, Job, Net, Observer, RunOptions, RunOutcome, TrainError};
use crate::config::{NanPolicy, Task, TrainConfig};
use crate::fast::FastBackbone;
use crate::history::{plot_curves, write_csv, EpochRecord};
use crate::schedule::rate_for_batch;

/// Train `model` with `optim` (whose update `rule` the fast engine repeats) for the epochs
/// `cfg` asks for that the run in `opts.out` has not done yet.
pub(super) fn run<B, M, O>(
    job: Job<B>,
    model: M,
    optim: O,
    rule: UpdateRule,
) -> Result<RunOutcome, TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Net<B> + Clone + 'static,
    M::InnerModule: Net<B::InnerBackend>,
    O: Optimizer<M, B>,
{
    let Job {
        cfg,
        train,
        val,
        opts,
        observer,
        device,
    } = job;
    let out = &opts.out;
    let (mut state, mut model, mut optim, mut fast) = start(cfg, opts, model, optim, rule, device)?;

    let sampler = sampler(cfg, &train)?;
    let n_train = train.len();
    let augment = Some(cfg.augment.clone());
    let loader = Loader::new(Arc::new(train), cfg.preprocess.clone(), augment, cfg.seed);
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
        let mut pass = Pass {
            cfg,
            device,
            optim: &mut optim,
            fast: fast.as_mut(),
            skipped: &mut skipped,
            observer: &mut *observer,
            n_train,
        };
        let (trained, totals) = pass.epoch(model, &loader, epoch, order)?;
        model = trained;
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
        let record = totals.record(epoch + 1, v.as_ref(), t0, train_seconds);

        let paths = (best_path.as_path(), last_path.as_path());
        let improved = save_checkpoints(cfg, epoch, valid, v.as_ref(), &mut state, paths)?;
        commit_epoch::<B, _, _>(
            out,
            &mut state,
            record.clone(),
            &model,
            &optim,
            fast.as_mut(),
        )?;
        write_reports(cfg, out, &state.history, v.as_ref())?;
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

/// The run's state, model, optimiser and fast engine (`opts.engine`) to start from: fresh, or
/// where the run in `opts.out` stopped (`opts.resume`); the config written beside it.
fn start<B, M, O>(
    cfg: &TrainConfig,
    opts: &RunOptions,
    model: M,
    optim: O,
    rule: UpdateRule,
    device: &B::Device,
) -> Result<(TrainState, M, O, Option<FastBackbone>), TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Net<B> + Clone + 'static,
    O: Optimizer<M, B>,
{
    let out = &opts.out;
    std::fs::create_dir_all(out.join("state")).map_err(io(out))?;
    let (state, model, optim) = if opts.resume {
        resume::<B, _, _>(out, model, optim, device)?
    } else {
        (TrainState::default(), model, optim)
    };
    let mut fast = (opts.engine == Engine::Fast)
        .then(|| FastBackbone::new(&model, OptimConfig::new(rule, cfg.weight_decay as f32)));
    if opts.resume {
        let (done, of) = (state.epochs_done, cfg.epochs);
        tracing::info!("resuming {} after epoch {done} of {of}", out.display());
        if done > 0 {
            resume_fast(out, &state, fast.as_mut())?;
        }
    }
    write_atomic(&out.join("config.toml"), cfg.to_toml().as_bytes()).map_err(io(out))?;
    Ok((state, model, optim, fast))
}

/// Write the last checkpoint of epoch `epoch` (from 0), and the best one when its validation
/// metric improves on the run's best (or without validation); says whether it did.
fn save_checkpoints<B: Backend, M: Net<B>>(
    cfg: &TrainConfig,
    epoch: u64,
    valid: M,
    v: Option<&ValResult>,
    state: &mut TrainState,
    (best, last): (&Path, &Path),
) -> Result<bool, TrainError> {
    let candidate = v.map(|v| selection_value(cfg, v));
    let improved = improves(cfg, candidate, state.best_value);
    let any = valid.into_any();
    let saved = |path: &Path| {
        save(&any, meta(cfg, epoch + 1, v), path).map_err(|e| TrainError::Checkpoint(e.to_string()))
    };
    saved(last)?;
    if improved {
        saved(best)?;
        state.best_value = candidate;
        state.best_epoch = Some(epoch + 1);
    }
    Ok(improved)
}

/// The oversampling sampler when BI-RADS class weights are set.
fn sampler(cfg: &TrainConfig, train: &[Sample]) -> Result<Option<WeightedSampler>, TrainError> {
    if cfg.task != Task::Cls || cfg.class_weights.is_empty() {
        return Ok(None);
    }
    let classes: Vec<usize> = train.iter().map(|s| s.class.unwrap_or(0)).collect();
    WeightedSampler::from_classes(&classes, &cfg.class_weights)
        .map(Some)
        .map_err(TrainError::Config)
}

/// Is `candidate` (larger is better; none without validation) a new best checkpoint?
fn improves(cfg: &TrainConfig, candidate: Option<f64>, best: Option<f64>) -> bool {
    let better = match (candidate, best) {
        (Some(c), Some(b)) => c > b,
        (Some(_), None) => true,
        (None, _) => true,
    };
    better
        && match (candidate, cfg.best_threshold) {
            (Some(c), Some(th)) => c >= th,
            _ => true,
        }
}

/// What one epoch's training pass adds up.
#[derive(Default)]
struct Totals {
    loss_sum: f64,
    seen: usize,
    correct: usize,
    decisions: usize,
    skipped_batches: u64,
    /// The rate of the last batch.
    lr: f64,
    data_wait: f64,
}

impl Totals {
    fn record(
        &self,
        epoch: u64,
        v: Option<&ValResult>,
        t0: Instant,
        train_seconds: f64,
    ) -> EpochRecord {
        let mean = |sum: f64, n: usize| if n > 0 { sum / n as f64 } else { f64::NAN };
        EpochRecord {
            epoch,
            lr: self.lr,
            train_loss: mean(self.loss_sum, self.seen),
            train_accuracy: mean(self.correct as f64, self.decisions),
            val_loss: v.map(|v| v.loss),
            val_accuracy: v.map(|v| v.accuracy),
            val_f1: v.map(|v| v.f1),
            val_score: v.map(|v| v.score),
            val_task_accuracy: v.and_then(|v| v.task_accuracy),
            val_task_f1: v.and_then(|v| v.task_f1),
            val_auc: v.and_then(|v| v.auc),
            val_malignancy_auc: v.and_then(|v| v.malignancy_auc),
            seconds: t0.elapsed().as_secs_f64(),
            images_per_second: self.seen as f64 / train_seconds.max(1e-9),
            data_wait_seconds: self.data_wait,
            skipped_batches: self.skipped_batches,
        }
    }
}

/// What a training pass over one epoch works with.
struct Pass<'a, B: AutodiffBackend, O> {
    cfg: &'a TrainConfig,
    device: &'a B::Device,
    optim: &'a mut O,
    fast: Option<&'a mut FastBackbone>,
    skipped: &'a mut BTreeSet<String>,
    observer: &'a mut dyn Observer,
    n_train: usize,
}

impl<B: AutodiffBackend, O> Pass<'_, B, O> {
    /// Train on the batches of `order` (epoch `epoch`, 0-based); the model after the last.
    fn epoch<M>(
        &mut self,
        mut model: M,
        loader: &Loader,
        epoch: u64,
        order: Vec<usize>,
    ) -> Result<(M, Totals), TrainError>
    where
        M: AutodiffModule<B> + Net<B> + Clone + 'static,
        O: Optimizer<M, B>,
    {
        let cfg = self.cfg;
        let batches = order.len().div_ceil(cfg.batch_size);
        let mut totals = Totals {
            lr: rate_for_batch(&cfg.schedule, cfg.learning_rate, epoch, 0, batches),
            ..Totals::default()
        };
        let mut batches_in = loader
            .prefetch(epoch, order, cfg.batch_size, cfg.prefetch)
            .into_iter()
            .enumerate();
        loop {
            // Time the host waits for data. The previous step read its loss back after the
            // forward pass (a device sync), so on a GPU its backward pass and update may still
            // be running meanwhile: an upper bound on the time the device waits for data.
            let waited = Instant::now();
            let Some((bi, b)) = batches_in.next() else {
                break;
            };
            totals.data_wait += waited.elapsed().as_secs_f64();
            for f in &b.failures {
                if self.skipped.insert(f.item.clone()) {
                    self.observer.skipped(f);
                }
            }
            if b.is_empty() {
                continue;
            }
            totals.lr = rate_for_batch(&cfg.schedule, cfg.learning_rate, epoch, bi, batches);
            model = self.step(model, &b, epoch, bi, &mut totals)?;
        }
        Ok((model, totals))
    }

    /// One optimiser step on batch `bi` (skipped, with a warning, when its loss is not finite
    /// and the configuration says so).
    fn step<M>(
        &mut self,
        model: M,
        b: &Batch,
        epoch: u64,
        bi: usize,
        totals: &mut Totals,
    ) -> Result<M, TrainError>
    where
        M: AutodiffModule<B> + Net<B> + Clone + 'static,
        O: Optimizer<M, B>,
    {
        let (cfg, device) = (self.cfg, self.device);
        let s = b.size;
        let (logits, leaf) = match &mut self.fast {
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
        let t = targets(cfg.task, b);
        let width = logits.dims()[1];
        let loss = batch_loss(cfg, logits.clone(), t.clone(), device);
        let value = value_of(loss.clone());
        if !value.is_finite() {
            return match cfg.on_nan {
                NanPolicy::Stop => Err(TrainError::NonFinite {
                    epoch: epoch + 1,
                    batch: bi + 1,
                    value,
                }),
                NanPolicy::Skip => {
                    totals.skipped_batches += 1;
                    let (e, n) = (epoch + 1, bi + 1);
                    tracing::warn!("epoch {e}: batch {n} has loss {value}; skipped");
                    Ok(model)
                }
            };
        }
        let z = logit_values(logits);
        totals.correct += hits(cfg.task, &z, width, &t);
        totals.decisions += t.len();
        let grads = loss.backward();
        if let (Some(f), Some(leaf)) = (&mut self.fast, &leaf) {
            f.step(leaf, &grads, totals.lr);
        }
        // burn's optimiser updates what has gradients here: the whole model, or only the
        // head when the fast engine trains the backbone.
        let grads = GradientsParams::from_grads(grads, &model);
        let model = self.optim.step(totals.lr, model, grads);
        totals.loss_sum += value * b.len() as f64;
        totals.seen += b.len();
        let mean = totals.loss_sum / totals.seen as f64;
        self.observer
            .batch(epoch + 1, totals.seen, self.n_train, mean);
        Ok(model)
    }
}

/// `metrics.csv`, `curves.png` and the validation confusion matrices, after every epoch.
fn write_reports(
    cfg: &TrainConfig,
    out: &Path,
    history: &[EpochRecord],
    v: Option<&ValResult>,
) -> Result<(), TrainError> {
    write_csv(&out.join("metrics.csv"), history).map_err(io(out))?;
    birads_infer::report::register_font();
    if let Err(e) = plot_curves(&out.join("curves.png"), history) {
        tracing::warn!("curves.png: {e}");
    }
    if let Some(v) = v {
        plot_confusions(cfg, &v.confusion, out);
    }
    Ok(())
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
