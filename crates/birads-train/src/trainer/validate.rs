//! Validation after an epoch: the loss and the figures of the held-out images (accuracy, F1,
//! AUCs, confusion matrices), and the metric that picks the best checkpoint.

use std::collections::BTreeSet;

use birads_data::loader::{Batch, Loader};
use birads_infer::metrics;
use birads_model::fast::FastModel;
use burn::prelude::*;

use super::objective::{batch_loss, logit_values, targets, value_of};
use super::{Net, Observer};
use crate::config::{Task, TrainConfig};

/// Validation figures.
pub(super) struct ValResult {
    pub loss: f64,
    pub accuracy: f64,
    pub f1: f64,
    pub score: f64,
    pub task_accuracy: Option<[f64; 4]>,
    pub task_f1: Option<[f64; 4]>,
    /// BI-RADS: macro one-vs-rest AUC; features: mean AUC over the four tasks.
    pub auc: Option<f64>,
    /// BI-RADS: AUC of the malignancy score against pathology, where the images have it.
    pub malignancy_auc: Option<f64>,
    pub confusion: Vec<Vec<Vec<u64>>>,
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

/// What the validation pass gathers, image by image.
struct Collected {
    loss_sum: f64,
    count: usize,
    /// Per task (one for BI-RADS, four for the features): true and predicted labels.
    truth: Vec<Vec<usize>>,
    pred: Vec<Vec<usize>>,
    /// Per image: class probabilities (BI-RADS) or P(suspicious) per task (features).
    probs: Vec<Vec<f64>>,
    /// Per image: the pathology where known.
    malignant: Vec<Option<bool>>,
}

impl Collected {
    fn new(task: Task) -> Self {
        let tasks = match task {
            Task::Cls => 1,
            Task::Fea => 4,
        };
        Self {
            loss_sum: 0.0,
            count: 0,
            truth: vec![Vec::new(); tasks],
            pred: vec![Vec::new(); tasks],
            probs: Vec::new(),
            malignant: Vec::new(),
        }
    }

    /// Add a batch's logits `z` (`width` per image) and its targets `t`.
    fn add(&mut self, task: Task, z: &[f32], width: usize, t: &[i64]) {
        match task {
            Task::Cls => {
                for (row, &y) in z.chunks(width).zip(t) {
                    self.truth[0].push(y as usize);
                    self.pred[0].push(birads_infer::predict::argmax(row));
                }
                self.probs.extend(softmax_rows(z, width));
            }
            Task::Fea => {
                for (k, (pair, &y)) in z.chunks(2).zip(t).enumerate() {
                    self.truth[k % 4].push(y as usize);
                    self.pred[k % 4].push(usize::from(pair[1] > pair[0]));
                }
                let p = softmax_rows(z, 2);
                let per_image = p.chunks(4).map(|img| img.iter().map(|q| q[1]).collect());
                self.probs.extend(per_image);
            }
        }
    }
}

/// Logits of a validation batch: through the CPU inference path when given, else `model`.
fn batch_logits<B: Backend, M: Net<B>>(
    model: &M,
    fast: Option<&FastModel>,
    b: &Batch,
    device: &B::Device,
) -> Tensor<B, 2> {
    let s = b.size;
    match fast {
        Some(f) => {
            let z = f.forward(&b.images, b.len(), s, s);
            let width = z.len() / b.len();
            Tensor::<B, 2>::from_data(TensorData::new(z, [b.len(), width]), device)
        }
        None => model.logits(Tensor::<B, 4>::from_data(
            TensorData::new(b.images.clone(), [b.len(), 3, s, s]),
            device,
        )),
    }
}

/// The validation pass over `loader` (none without images). Images that cannot be read are
/// reported once (through `skipped`) and left out.
pub(super) fn validate<B: Backend, M: Net<B>>(
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
    let mut c = Collected::new(cfg.task);
    for b in loader.prefetch(0, (0..n).collect(), cfg.batch_size, cfg.prefetch) {
        for f in &b.failures {
            if skipped.insert(f.item.clone()) {
                observer.skipped(f);
            }
        }
        if b.is_empty() {
            continue;
        }
        let logits = batch_logits(model, fast, &b, device);
        let t = targets(cfg.task, &b);
        let width = logits.dims()[1];
        let z = logit_values(logits.clone());
        let l = value_of(batch_loss(cfg, logits, t.clone(), device));
        c.loss_sum += l * b.len() as f64;
        c.count += b.len();
        c.add(cfg.task, &z, width, &t);
        let pathology = b.indices.iter().map(|&i| loader.samples()[i].malignant);
        c.malignant.extend(pathology);
    }
    if c.count == 0 {
        return None;
    }
    Some(match cfg.task {
        Task::Cls => cls_figures(cfg, &c),
        Task::Fea => fea_figures(&c),
    })
}

/// BI-RADS: accuracy, macro-F1, macro AUC and the malignancy AUC where pathology is known.
fn cls_figures(cfg: &TrainConfig, c: &Collected) -> ValResult {
    let with_probs: Vec<Option<Vec<f64>>> = c.probs.iter().cloned().map(Some).collect();
    let ev =
        birads_infer::eval::cls_eval(cfg.classes.clone(), &c.truth[0], &c.pred[0], &with_probs);
    let (known, score): (Vec<bool>, Vec<f64>) = c
        .malignant
        .iter()
        .zip(&c.probs)
        .filter_map(|(m, p)| {
            let p32: Vec<f32> = p.iter().map(|&v| v as f32).collect();
            Some((
                m.as_ref().copied()?,
                metrics::malignancy_score(&cfg.classes, &p32),
            ))
        })
        .unzip();
    ValResult {
        loss: c.loss_sum / c.count as f64,
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

/// Features: accuracy and F1 per task and their means, the mean AUC over the tasks.
fn fea_figures(c: &Collected) -> ValResult {
    let (truth, pred) = (&c.truth, &c.pred);
    let mut acc = [0.0; 4];
    let mut f1 = [0.0; 4];
    let mut confusion = Vec::new();
    for k in 0..4 {
        let m = metrics::confusion(&truth[k], &pred[k], 2);
        acc[k] = metrics::accuracy(&truth[k], &pred[k]);
        f1[k] = metrics::per_class(&m)[1].f1;
        confusion.push(m);
    }
    let (ma, mf) = (acc.iter().sum::<f64>() / 4.0, f1.iter().sum::<f64>() / 4.0);
    let aucs: Vec<f64> = (0..4)
        .filter_map(|k| {
            let pos: Vec<bool> = truth[k].iter().map(|&t| t == 1).collect();
            let s: Vec<f64> = c.probs.iter().map(|p| p[k]).collect();
            metrics::roc_auc(&pos, &s)
        })
        .collect();
    ValResult {
        loss: c.loss_sum / c.count as f64,
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

/// The metric that selects the best checkpoint, oriented so that larger is better.
pub(super) fn selection_value(cfg: &TrainConfig, v: &ValResult) -> f64 {
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
