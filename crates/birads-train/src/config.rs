//! Every hyperparameter of the recipe, with SEED.md's values as defaults per task. Read from
//! TOML (any field may be left out), overridden by command-line flags, and saved as the
//! effective `config.toml` of a run.

use birads_data::pipeline::{Augment, CutMix, Preprocess};
use birads_data::sampler::BIRADS6_OVERSAMPLING;
use birads_data::BIRADS6;
use birads_model::{MyConvNeXtConfig, MyDenseNetConfig};
use serde::{Deserialize, Serialize};

/// Which model/task is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// BI-RADS grading with MyConvNeXt.
    Cls,
    /// The four lesion features with MyDenseNet.
    Fea,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Decoupled weight decay (the classification recipe).
    AdamW,
    /// L2 weight decay added to the gradient, as `torch.optim.Adam(weight_decay=…)`.
    Adam,
}

/// `torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub t0: u64,
    pub t_mult: u64,
    pub eta_min: f64,
    /// Step with fractional epochs after every batch (`scheduler.step(epoch + i / iters)`)
    /// instead of once per epoch.
    pub per_batch: bool,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            t0: 10,
            t_mult: 2,
            eta_min: 0.0,
            per_batch: false,
        }
    }
}

/// The BI-RADS model's architecture (features always use MyDenseNet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// MyConvNeXt, the original BI-RADS model.
    #[default]
    ConvNeXt,
    /// MyDenseNet's backbone and head with one class head in place of the feature heads.
    DenseNet,
}

/// Model architecture: sizes may be reduced (small widths/depths) for quick runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Which network grades BI-RADS (`convnext` or `densenet`); ignored for features.
    #[serde(default)]
    pub arch: Arch,
    pub convnext: MyConvNeXtConfig,
    pub densenet: MyDenseNetConfig,
}

impl ModelConfig {
    /// Reduced widths and depths for quick runs (`--model small`, the demo): trains from
    /// scratch in minutes on a CPU at 64–128 px.
    pub fn small(num_classes: usize) -> Self {
        Self {
            arch: Arch::ConvNeXt,
            convnext: MyConvNeXtConfig::new()
                .with_dims(vec![24, 48, 96, 192])
                .with_depths(vec![1, 1, 2, 1])
                .with_num_classes(num_classes)
                .with_dropout(0.05)
                .with_sd_rate(0.1)
                // From scratch on a few hundred images, near-identity blocks (1e-6) learn too
                // slowly.
                .with_layer_scale_init(0.1),
            densenet: MyDenseNetConfig::new()
                .with_growth(12)
                .with_blocks(vec![2, 2, 3, 2])
                .with_init_features(24)
                .with_dp1(0.2),
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: Arch::ConvNeXt,
            // Training uses dropout 0.05 (0.03 was the inference setting).
            convnext: MyConvNeXtConfig::new().with_dropout(0.05),
            densenet: MyDenseNetConfig::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub task: Task,
    pub epochs: u64,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub optimizer: OptimizerKind,
    pub weight_decay: f64,
    pub schedule: Schedule,
    /// Cross-entropy label smoothing (both tasks).
    pub label_smoothing: f64,
    /// How BI-RADS smoothing spreads its mass: `uniform` over all classes (PyTorch's
    /// `label_smoothing`, the original recipe) or `ordinal` (more to neighbouring categories).
    pub smoothing: Smoothing,
    /// BI-RADS oversampling: one weight per class (empty: no oversampling, plain shuffling).
    pub class_weights: Vec<f64>,
    /// Feature task weights: boundary, calcification, direction, shape.
    pub task_weights: [f64; 4],
    /// Add the soft-F1 loss (features), with this weight; 0 switches it off.
    pub f1_loss_weight: f64,
    pub preprocess: Preprocess,
    pub augment: Augment,
    /// BI-RADS class names in logit order; empty: the training data's own list (the six
    /// competition categories, or e.g. BUS-BRA's `2, 3, 4, 5`). The model's class count
    /// always follows this list.
    pub classes: Vec<String>,
    pub model: ModelConfig,
    /// Validation metric that selects the best checkpoint: `accuracy`, `macro_f1`, `score`
    /// (competition score), `auc` (macro one-vs-rest), `malignancy_auc` (P(4) + P(5) against
    /// the validation images' pathology) or `loss` (lower is better); for features
    /// `mean_accuracy`, `mean_f1`, `score`, `mean_auc` or `loss`.
    pub best_metric: String,
    /// Save `best` only when the metric also beats this (the original used 0.77 / 0.87).
    pub best_threshold: Option<f64>,
    pub seed: u64,
    /// What to do with a non-finite loss: `stop` (default) or `skip` the batch (counted).
    pub on_nan: NanPolicy,
    /// Batches prepared ahead by the parallel loader.
    pub prefetch: usize,
}

/// How label smoothing spreads its mass over the other classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Smoothing {
    Uniform,
    /// In proportion to `2^−|c − y|`: ordered categories (BI-RADS) keep their order.
    Ordinal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NanPolicy {
    Stop,
    Skip,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self::for_task(Task::Cls)
    }
}

impl TrainConfig {
    /// SEED.md's recipe for a task.
    pub fn for_task(task: Task) -> Self {
        let cls = task == Task::Cls;
        Self {
            task,
            epochs: 70,
            batch_size: if cls { 32 } else { 256 },
            learning_rate: 1e-4,
            optimizer: if cls {
                OptimizerKind::AdamW
            } else {
                OptimizerKind::Adam
            },
            weight_decay: if cls { 1e-3 } else { 1e-4 },
            schedule: Schedule::default(),
            label_smoothing: 0.2,
            smoothing: Smoothing::Uniform,
            class_weights: if cls {
                BIRADS6_OVERSAMPLING.to_vec()
            } else {
                Vec::new()
            },
            task_weights: [1.2, 1.5, 1.0, 1.0],
            f1_loss_weight: if cls { 0.0 } else { 1.0 },
            preprocess: Preprocess {
                // The feature model was trained on CutBlack-trimmed images.
                cut_black: !cls,
                ..Preprocess::original_inference()
            },
            augment: Augment::original(if cls {
                CutMix::Lesion { p: 0.5 }
            } else {
                CutMix::Rectangle { p: 0.25 }
            }),
            classes: Vec::new(),
            model: ModelConfig::default(),
            best_metric: if cls { "accuracy" } else { "mean_accuracy" }.into(),
            best_threshold: None,
            seed: 42,
            on_nan: NanPolicy::Stop,
            prefetch: 2,
        }
    }

    /// A config file's own recipe: the task its `task` key names (BI-RADS grading when it
    /// names none), for readers that take any task's models (`birads bench matmuls`).
    pub fn from_toml_own_task(text: &str) -> Result<Self, String> {
        let table = text.parse::<toml::Table>().map_err(|e| e.to_string())?;
        let task = match table.get("task") {
            Some(t) => t
                .clone()
                .try_into::<Task>()
                .map_err(|e| format!("task: {e}"))?,
            None => Task::Cls,
        };
        Self::from_toml(text, task)
    }

    /// Parse a TOML file: fields left out take the task's defaults.
    pub fn from_toml(text: &str, task: Task) -> Result<Self, String> {
        // Merge: defaults as a TOML table, the file's keys on top (one level of nesting).
        let mut base = toml::Value::try_from(Self::for_task(task)).map_err(|e| e.to_string())?;
        let over: toml::Value = text
            .parse::<toml::Table>()
            .map(toml::Value::Table)
            .map_err(|e| e.to_string())?;
        merge(&mut base, over);
        switches_from_toml(&mut base)?;
        let mut cfg: Self = base
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        // TOML has no null: `crop = 0` switches the CenterCrop off.
        if cfg.preprocess.crop == Some(0) {
            cfg.preprocess.crop = None;
        }
        if cfg.task != task {
            return Err(format!(
                "the config is for task {:?} but {:?} was asked for",
                cfg.task, task
            ));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        let mut v = match toml::Value::try_from(self) {
            Ok(v) => v,
            Err(e) => return format!("# cannot serialise: {e}\n"),
        };
        // TOML has no null: no CenterCrop is written `crop = 0`, a switched-off transform
        // `name = false`.
        if let Some(pre) = v.get_mut("preprocess").and_then(|a| a.as_table_mut()) {
            pre.entry("crop").or_insert(toml::Value::Integer(0));
        }
        if let Some(aug) = v.get_mut("augment").and_then(|a| a.as_table_mut()) {
            for k in SWITCHES {
                aug.entry(k).or_insert(toml::Value::Boolean(false));
            }
        }
        toml::to_string_pretty(&v).unwrap_or_else(|e| format!("# cannot serialise: {e}\n"))
    }

    /// Fix the class list (a BI-RADS run's, before training) and make everything sized by it
    /// follow: the model's class count, and the oversampling weights when they are the
    /// six-class default (returns a note saying so); other weights of the wrong length are
    /// an error.
    pub fn set_classes(&mut self, classes: Vec<String>) -> Result<Option<String>, String> {
        if classes.is_empty() {
            return Err("the class list is empty".into());
        }
        let n = classes.len();
        self.classes = classes;
        self.model.convnext.num_classes = n;
        self.model.densenet.classes = match (self.task, self.model.arch) {
            (Task::Cls, Arch::DenseNet) => n,
            _ => 0,
        };
        let mut note = None;
        if !self.class_weights.is_empty() && self.class_weights.len() != n {
            if self.class_weights == BIRADS6_OVERSAMPLING {
                self.class_weights = Vec::new();
                note = Some(format!(
                    "the six-class oversampling weights do not fit the {n} classes {}: plain shuffling",
                    self.classes.join(",")
                ));
            } else {
                return Err(format!(
                    "class_weights has {} entries for the {n} classes {}",
                    self.class_weights.len(),
                    self.classes.join(",")
                ));
            }
        }
        Ok(note)
    }

    /// The six competition categories (what the original recipe trained on).
    pub fn with_birads6(mut self) -> Self {
        let six = BIRADS6.iter().map(|s| s.to_string()).collect();
        // The default weights fit six classes: cannot fail.
        let _ = self.set_classes(six);
        self
    }

    /// Reject settings that cannot train.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 {
            return Err("batch_size must be at least 1".into());
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err("learning_rate must be positive".into());
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err("label_smoothing must be in [0, 1)".into());
        }
        if self.schedule.t0 == 0 || self.schedule.t_mult == 0 {
            return Err("schedule.t0 and schedule.t_mult must be at least 1".into());
        }
        // The six-class default weights are reset by `set_classes` for other class lists.
        if self.task == Task::Cls
            && !self.classes.is_empty()
            && !self.class_weights.is_empty()
            && self.class_weights.len() != self.classes.len()
            && self.class_weights != BIRADS6_OVERSAMPLING
        {
            return Err(format!(
                "class_weights has {} entries for {} classes",
                self.class_weights.len(),
                self.classes.len()
            ));
        }
        if self.task == Task::Fea && self.model.densenet.classes > 0 {
            return Err("model.densenet.classes must be 0 for the feature model".into());
        }
        let known: &[&str] = match self.task {
            Task::Cls => &[
                "accuracy",
                "macro_f1",
                "score",
                "loss",
                "auc",
                "malignancy_auc",
            ],
            Task::Fea => &["mean_accuracy", "mean_f1", "score", "loss", "mean_auc"],
        };
        if !known.contains(&self.best_metric.as_str()) {
            return Err(format!(
                "best_metric {} is not one of {}",
                self.best_metric,
                known.join(", ")
            ));
        }
        Ok(())
    }
}

/// Augmentations that can be switched off with `name = false` (or on, with their defaults,
/// with `name = true`).
const SWITCHES: [&str; 5] = ["affine", "blur", "erasing", "zoom", "intensity"];

fn switches_from_toml(v: &mut toml::Value) -> Result<(), String> {
    let Some(aug) = v.get_mut("augment").and_then(|a| a.as_table_mut()) else {
        return Ok(());
    };
    let defaults = toml::Value::try_from(Augment::all_defaults()).map_err(|e| e.to_string())?;
    for k in SWITCHES {
        match aug.get(k) {
            Some(toml::Value::Boolean(false)) => {
                aug.remove(k);
            }
            Some(toml::Value::Boolean(true)) => {
                if let Some(d) = defaults.get(k) {
                    aug.insert(k.to_string(), d.clone());
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_table() && v.is_table() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seed_recipe_and_round_trip() {
        let c = TrainConfig::for_task(Task::Cls);
        assert_eq!(c.class_weights, vec![1.0, 1.0, 10.0, 5.0, 5.0, 2.0]);
        assert_eq!(c.label_smoothing, 0.2);
        assert_eq!((c.schedule.t0, c.schedule.t_mult), (10, 2));
        assert_eq!(c.batch_size, 32);
        assert_eq!(c.optimizer, OptimizerKind::AdamW);
        let f = TrainConfig::for_task(Task::Fea);
        assert_eq!(f.task_weights, [1.2, 1.5, 1.0, 1.0]);
        assert_eq!(f.optimizer, OptimizerKind::Adam);
        assert_eq!(f.batch_size, 256);
        let back = TrainConfig::from_toml(&f.to_toml(), Task::Fea).unwrap();
        assert_eq!(back.to_toml(), f.to_toml());
    }

    #[test]
    fn a_file_read_for_its_own_task_gets_that_tasks_defaults() {
        let f = TrainConfig::from_toml_own_task("task = \"fea\"\nepochs = 3").unwrap();
        assert_eq!((f.task, f.epochs), (Task::Fea, 3));
        assert_eq!(f.optimizer, OptimizerKind::Adam);
        let c = TrainConfig::from_toml_own_task("epochs = 3").unwrap();
        assert_eq!((c.task, c.optimizer), (Task::Cls, OptimizerKind::AdamW));
        let e = TrainConfig::from_toml_own_task("task = \"both\"").unwrap_err();
        assert!(e.starts_with("task:"), "{e}");
    }

    #[test]
    fn a_partial_file_overrides_only_its_keys() {
        let c = TrainConfig::from_toml(
            "task = \"cls\"\nepochs = 3\n[schedule]\nt0 = 2\n[preprocess]\nsize = 64\n",
            Task::Cls,
        )
        .unwrap();
        assert_eq!(c.epochs, 3);
        assert_eq!(c.schedule.t0, 2);
        assert_eq!(
            c.schedule.t_mult, 2,
            "untouched nested key keeps its default"
        );
        assert_eq!(c.preprocess.size, 64);
        assert_eq!(c.preprocess.crop, Some(672));
        let off =
            TrainConfig::from_toml("[augment]\nerasing = false\nhflip = 0.0\n", Task::Cls).unwrap();
        assert!(off.augment.erasing.is_none() && off.augment.affine.is_some());
        let back = TrainConfig::from_toml(&off.to_toml(), Task::Cls).unwrap();
        assert!(
            back.augment.erasing.is_none(),
            "a switched-off transform stays off"
        );
        let nocrop = TrainConfig::from_toml("[preprocess]\ncrop = 0\n", Task::Cls).unwrap();
        assert_eq!(nocrop.preprocess.crop, None);
        let back = TrainConfig::from_toml(&nocrop.to_toml(), Task::Cls).unwrap();
        assert_eq!(back.preprocess.crop, None, "no crop stays no crop");
        assert!(TrainConfig::from_toml("epochs = \"many\"", Task::Cls).is_err());
        assert!(TrainConfig::from_toml("no_such_key = 1", Task::Cls).is_err());
        assert!(TrainConfig::from_toml("best_metric = \"mean_f1\"", Task::Cls).is_err());
        assert!(TrainConfig::from_toml("task = \"fea\"", Task::Cls).is_err());
    }
}
