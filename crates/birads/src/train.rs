//! `birads train cls|fea`: the SEED.md recipe, resumable, with per-epoch reports.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use birads_data::split::group_split;
use birads_data::{Problem, Sample};
use birads_train::history::EpochRecord;
use birads_train::trainer::{Observer, RunOptions, RunOutcome};
use birads_train::{Task, TrainConfig};
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, ValueEnum};

use crate::device::{on_backend, DeviceArg, OnBackend, PrecisionArg};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TaskArg {
    /// BI-RADS grading (MyConvNeXt).
    Cls,
    /// Lesion features (MyDenseNet).
    Fea,
}

/// amp casts inside burn's modules: the fast engine's backbone would stay f32.
pub fn amp_needs_burn(precision: PrecisionArg, burn_engine: bool) -> anyhow::Result<()> {
    if precision == PrecisionArg::Amp && !burn_engine {
        anyhow::bail!("--precision amp runs on burn's autodiff: add --engine burn");
    }
    Ok(())
}

/// Which code trains the backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TrainEngineArg {
    /// The dedicated CPU path (5–7× burn's autodiff there).
    Fast,
    /// burn's autodiff (any device; the only one on a GPU).
    Burn,
}

impl TrainEngineArg {
    /// The engine for `task` on `device`: the asked one, or the default (fast on the CPU,
    /// burn on a GPU). The task is taken so that a per-model default stays possible.
    pub fn resolve(
        asked: Option<Self>,
        device: DeviceArg,
        _task: Task,
    ) -> anyhow::Result<birads_train::trainer::Engine> {
        use birads_train::trainer::Engine;
        match (asked, device) {
            (Some(Self::Fast), d) if d.is_gpu() => anyhow::bail!(
                "--engine fast runs on the CPU; use --engine burn with --device {}",
                d.name()
            ),
            (Some(Self::Burn), _) => Ok(Engine::Burn),
            (_, d) if d.is_gpu() => Ok(Engine::Burn),
            (Some(Self::Fast) | None, _) => Ok(Engine::Fast),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelSize {
    /// The original architectures (ConvNeXt-Tiny, DenseNet-121 widths).
    Original,
    /// Reduced widths and depths: minutes on a CPU, for small datasets and the demo.
    Small,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchArg {
    /// MyConvNeXt (the original BI-RADS model).
    Convnext,
    /// MyDenseNet's backbone with one class head (learns from fewer images).
    Densenet,
}

#[derive(Args)]
pub struct TrainArgs {
    pub task: TaskArg,
    /// Training data in any layout `birads data check` reads.
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    /// Validation data; without it a patient-level split of --data is used.
    #[arg(long, conflicts_with = "val_split")]
    pub val: Option<PathBuf>,
    /// Fraction of --data held out for validation (patient-level, class-stratified).
    #[arg(long, default_value_t = 0.2)]
    pub val_split: f64,
    /// The run folder: config.toml, metrics.csv, curves, checkpoints.
    #[arg(long, required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Continue a run from its last completed epoch (its saved config is used; --epochs may
    /// extend it).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    #[command(flatten)]
    pub recipe: RecipeArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The hyperparameters of a run: a config file, then flags over it.
#[derive(Args, Clone, Default)]
pub struct RecipeArgs {
    /// Hyperparameters (TOML; keys left out keep the recipe's defaults; `configs/` holds
    /// ready ones).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Initial weights: MyConv.pth / MyDense.pth, torchvision ImageNet weights, or a run's
    /// checkpoint.
    #[arg(long)]
    pub init: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub model: Option<ModelSize>,
    /// The BI-RADS model's architecture [default: the config's, else convnext].
    #[arg(long, value_enum)]
    pub arch: Option<ArchArg>,
    #[arg(long)]
    pub epochs: Option<u64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    /// Model input side in pixels.
    #[arg(long)]
    pub image_size: Option<u32>,
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Where and how a run computes.
#[derive(Args, Clone, Copy)]
pub struct EngineArgs {
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Compute precision: f32; amp (f32 weights, bf16 products, as PyTorch AMP; no loss
    /// scaling needed with bf16); bf16 (all bf16, --device cuda only).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
    /// Training engine [default: fast on the CPU, burn on a GPU]. A resumed run
    /// keeps the engine it started with.
    #[arg(long, value_enum)]
    pub engine: Option<TrainEngineArg>,
}

/// Reduced architectures for quick runs (the BI-RADS architecture choice is kept).
pub fn small_models(cfg: &mut TrainConfig) {
    let arch = cfg.model.arch;
    cfg.model = birads_train::config::ModelConfig::small(cfg.classes.len().max(1));
    cfg.model.arch = arch;
}

fn task_of(t: TaskArg) -> Task {
    match t {
        TaskArg::Cls => Task::Cls,
        TaskArg::Fea => Task::Fea,
    }
}

/// The effective configuration: file (or a resumed run's), then flags.
fn config(a: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let task = task_of(a.task);
    match &a.resume {
        Some(run) => {
            let mut cfg = read_config(&run.join("config.toml"), task)?;
            if let Some(e) = a.recipe.epochs {
                cfg.epochs = e;
            }
            Ok(cfg)
        }
        None => a.recipe.config_for(task),
    }
}

/// A config file, with the task's defaults for what it leaves out.
pub fn read_config(path: &Path, task: Task) -> anyhow::Result<TrainConfig> {
    parse_config(path, |text| TrainConfig::from_toml(text, task))
}

/// A training config for the task it names itself (see `TrainConfig::from_toml_own_task`).
pub fn read_config_own_task(path: &Path) -> anyhow::Result<TrainConfig> {
    parse_config(path, TrainConfig::from_toml_own_task)
}

fn parse_config(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<TrainConfig, String>,
) -> anyhow::Result<TrainConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

impl RecipeArgs {
    /// The config file (or the task's defaults), then the flags over it.
    pub fn config_for(&self, task: Task) -> anyhow::Result<TrainConfig> {
        let mut cfg = match &self.config {
            Some(f) => read_config(f, task)?,
            None => TrainConfig::for_task(task),
        };
        if let Some(arch) = self.arch {
            cfg.model.arch = match arch {
                ArchArg::Convnext => birads_train::config::Arch::ConvNeXt,
                ArchArg::Densenet => birads_train::config::Arch::DenseNet,
            };
        }
        if self.model == Some(ModelSize::Small) {
            small_models(&mut cfg);
        }
        if let Some(v) = self.epochs {
            cfg.epochs = v;
        }
        if let Some(v) = self.batch_size {
            cfg.batch_size = v;
        }
        if let Some(v) = self.lr {
            cfg.learning_rate = v;
        }
        if let Some(v) = self.image_size {
            cfg.preprocess.size = v;
        }
        if let Some(v) = self.seed {
            cfg.seed = v;
        }
        cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(cfg)
    }
}

/// Patient-level, class-stratified split of samples into (train, validation).
pub fn split_samples(
    samples: Vec<Sample>,
    val_fraction: f64,
    seed: u64,
) -> (Vec<Sample>, Vec<Sample>) {
    let split = group_split(&samples, val_fraction, seed);
    let pick = |idx: &[usize]| idx.iter().map(|&i| samples[i].clone()).collect::<Vec<_>>();
    (pick(&split.train), pick(&split.val))
}

/// Does the sample carry the labels the task trains on?
pub fn labelled(task: Task, s: &Sample) -> bool {
    match task {
        Task::Cls => s.class.is_some(),
        Task::Fea => s.features.iter().all(Option::is_some),
    }
}

/// A competition package also holds its test sets (with ground truth when present): they
/// are never training data, so they are left out (and said so) when training sets are there.
pub fn without_test_sets(samples: Vec<Sample>) -> Vec<Sample> {
    let is_test = |s: &Sample| s.source.contains('/');
    if !samples.iter().any(|s| !is_test(s)) {
        return samples; // a test set given on purpose
    }
    let before = samples.len();
    let kept: Vec<Sample> = samples.into_iter().filter(|s| !is_test(s)).collect();
    if kept.len() < before {
        println!(
            "left out {} test-set images found beside the training sets (validate on them with --val)",
            before - kept.len()
        );
    }
    kept
}

/// Read the data, map class names onto the config's class list, split off validation.
/// Also returns how many items the readers left out (each reported on stderr).
fn data(
    a: &TrainArgs,
    cfg: &mut TrainConfig,
    out: &Path,
) -> anyhow::Result<(Vec<Sample>, Vec<Sample>, usize)> {
    let mut reader = Reader::default();
    // A resumed run uses the very split it started with.
    if let Some(run) = &a.resume {
        let (train, val) = resumed_split(run, &mut reader, cfg)?;
        return Ok((train, val, reader.left_out));
    }
    let data = a.data.as_ref().expect("clap requires --data");
    let ds = reader.load(data)?;
    if cfg.task == Task::Cls {
        resolve_classes(cfg, &ds.classes)?;
    }
    let all = task_samples(ds, cfg)?;
    let (train, val, val_sources) = match &a.val {
        Some(v) => (all, reader.samples(v, cfg)?, vec![v.display().to_string()]),
        None => {
            let (train, val) = split_samples(all, a.val_split, cfg.seed);
            (train, val, vec![data.display().to_string()])
        }
    };
    let sources = (vec![data.display().to_string()], val_sources);
    save_split(&out.join("split.json"), cfg.task, sources, &train, &val)?;
    Ok((train, val, reader.left_out))
}

/// Reads datasets, reporting each item a reader left out on stderr and counting them.
#[derive(Default)]
struct Reader {
    left_out: usize,
}

impl Reader {
    fn load(&mut self, p: &Path) -> anyhow::Result<birads_data::Dataset> {
        let ds = crate::read_dataset(p)?;
        let errors = ds
            .problems
            .iter()
            .filter(|p| p.severity == birads_data::Severity::Error);
        for pr in errors {
            eprintln!("{pr}");
            self.left_out += 1;
        }
        Ok(ds)
    }

    /// The task's labelled samples of the dataset at `p`.
    fn samples(&mut self, p: &Path, cfg: &TrainConfig) -> anyhow::Result<Vec<Sample>> {
        task_samples(self.load(p)?, cfg)
    }
}

/// The task's labelled samples, classes mapped onto the config's class list.
fn task_samples(ds: birads_data::Dataset, cfg: &TrainConfig) -> anyhow::Result<Vec<Sample>> {
    let classes = birads_data::ClassList(cfg.classes.clone());
    let mut v = Vec::new();
    for mut s in without_test_sets(ds.samples) {
        if let (Task::Cls, Some(c)) = (cfg.task, s.class) {
            let name = ds.classes.name(c).unwrap_or("?").to_string();
            let Some(i) = classes.index_of(&name) else {
                anyhow::bail!(
                    "{}: class {name} is not in the configured classes {} (set `classes` in the config)",
                    s.origin,
                    cfg.classes.join(",")
                );
            };
            s.class = Some(i);
        }
        if labelled(cfg.task, &s) {
            v.push(s);
        }
    }
    Ok(v)
}

/// The training and validation samples of the run in `run`, read again from the sources its
/// `split.json` names, in its order (the sampler and the shuffles index into it).
fn resumed_split(
    run: &Path,
    reader: &mut Reader,
    cfg: &TrainConfig,
) -> anyhow::Result<(Vec<Sample>, Vec<Sample>)> {
    let text = std::fs::read_to_string(run.join("split.json"))
        .with_context(|| format!("{}: the run's split", run.display()))?;
    let saved: SavedSplit = serde_json::from_str(&text)?;
    let mut read_all = |sources: &[String]| -> anyhow::Result<Vec<Sample>> {
        let mut all = Vec::new();
        for p in sources {
            all.extend(reader.samples(Path::new(p), cfg)?);
        }
        Ok(all)
    };
    let train = read_all(&saved.train_sources)?;
    let val = read_all(&saved.val_sources)?;
    Ok((
        in_saved_order(train, &saved.train_images)?,
        in_saved_order(val, &saved.val_images)?,
    ))
}

/// `samples` in the order of `images`; an image of the split that is no longer in the data
/// is an error.
fn in_saved_order(samples: Vec<Sample>, images: &[String]) -> anyhow::Result<Vec<Sample>> {
    let mut by_image: std::collections::HashMap<String, Sample> = samples
        .into_iter()
        .map(|s| (s.image.to_string(), s))
        .collect();
    images
        .iter()
        .map(|i| {
            by_image
                .remove(i)
                .ok_or_else(|| anyhow::anyhow!("{i}: in the run's split but no longer in its data"))
        })
        .collect()
}

/// Write a run's `split.json`: where its data came from and its training and validation
/// images with their labels.
pub fn save_split(
    path: &Path,
    task: Task,
    (train_sources, val_sources): (Vec<String>, Vec<String>),
    train: &[Sample],
    val: &[Sample],
) -> anyhow::Result<()> {
    let saved = SavedSplit {
        train_sources,
        val_sources,
        train: train.iter().map(|s| s.origin.clone()).collect(),
        val: val.iter().map(|s| s.origin.clone()).collect(),
        train_images: train.iter().map(|s| s.image.to_string()).collect(),
        val_images: val.iter().map(|s| s.image.to_string()).collect(),
        train_labels: train.iter().map(|s| label_json(task, s)).collect(),
        val_labels: val.iter().map(|s| label_json(task, s)).collect(),
        train_malignant: train.iter().map(|s| s.malignant).collect(),
        val_malignant: val.iter().map(|s| s.malignant).collect(),
        train_lesions: train.iter().map(|s| s.lesion).collect(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    birads_data::atomic::write_atomic(path, &serde_json::to_vec_pretty(&saved)?)?;
    Ok(())
}

/// A BI-RADS run's class list: the config's, else the data's own (e.g. BUS-BRA's 2/3/4/5),
/// with the model's class count and the oversampling weights made to follow it.
pub fn resolve_classes(
    cfg: &mut TrainConfig,
    data_classes: &birads_data::ClassList,
) -> anyhow::Result<()> {
    let classes = if cfg.classes.is_empty() {
        println!("classes from the data: {data_classes}");
        data_classes.0.clone()
    } else {
        cfg.classes.clone()
    };
    if let Some(note) = cfg
        .set_classes(classes)
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        println!("{note}");
    }
    Ok(())
}

/// The split of a run, so that `--resume` and the PyTorch reference see the same images.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedSplit {
    train_sources: Vec<String>,
    val_sources: Vec<String>,
    /// Sample origins (file and line of the label).
    train: Vec<String>,
    val: Vec<String>,
    /// Image paths and labels (class index, or the four 0/1 features), for other tools such
    /// as `scripts/train_reference.py`.
    train_images: Vec<String>,
    val_images: Vec<String>,
    #[serde(default)]
    train_labels: Vec<serde_json::Value>,
    #[serde(default)]
    val_labels: Vec<serde_json::Value>,
    /// Pathology (true: malignant) where the data has it.
    #[serde(default)]
    train_malignant: Vec<Option<bool>>,
    #[serde(default)]
    val_malignant: Vec<Option<bool>>,
    /// Lesion boxes of the training images (normalised cx, cy, w, h), for the lesion zoom.
    #[serde(default)]
    train_lesions: Vec<Option<birads_data::LesionBox>>,
}

fn label_json(task: Task, s: &Sample) -> serde_json::Value {
    match task {
        Task::Cls => serde_json::json!(s.class),
        Task::Fea => serde_json::json!(s.features.map(|f| u8::from(f.unwrap_or(false)))),
    }
}

/// Progress bar on a terminal, one line per epoch always.
struct Console {
    bar: Option<indicatif::ProgressBar>,
    task: Task,
}

impl Observer for Console {
    fn batch(&mut self, epoch: u64, done: usize, total: usize, loss: f64) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        bar.set_position(done as u64);
        bar.set_message(format!("epoch {epoch} loss {loss:.4}"));
    }

    fn epoch(&mut self, r: &EpochRecord, best: bool) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let f = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "–".into());
        let (acc, f1) = match self.task {
            Task::Cls => ("acc", "macro-F1"),
            Task::Fea => ("mean acc", "mean F1"),
        };
        let mal = r
            .val_malignancy_auc
            .map(|v| format!(" malignancy AUC {v:.4}"))
            .unwrap_or_default();
        println!(
            "epoch {:>3}  lr {:.2e}  train loss {:.4} acc {:.4}  val loss {} {acc} {} {f1} {} score {} AUC {}{mal}  {:.1} s, {:.1} img/s, {:.1} s waiting for data{}",
            r.epoch,
            r.lr,
            r.train_loss,
            r.train_accuracy,
            f(r.val_loss),
            f(r.val_accuracy),
            f(r.val_f1),
            f(r.val_score),
            f(r.val_auc),
            r.seconds,
            r.images_per_second,
            r.data_wait_seconds,
            if best { "  *best" } else { "" }
        );
    }

    fn skipped(&mut self, p: &Problem) {
        eprintln!("skipped {}: {}", p.item, p.reason);
    }
}

/// Train with a ready configuration (also used by `demo`).
pub fn train_with(
    cfg: &TrainConfig,
    train: Vec<Sample>,
    val: Vec<Sample>,
    opts: &RunOptions,
    device: DeviceArg,
    precision: PrecisionArg,
) -> anyhow::Result<RunOutcome> {
    let mut console = Console {
        bar: None,
        task: cfg.task,
    };
    struct Training<'a> {
        cfg: &'a TrainConfig,
        train: Vec<Sample>,
        val: Vec<Sample>,
        opts: &'a RunOptions,
        console: &'a mut Console,
    }
    impl OnBackend for Training<'_> {
        type Output = RunOutcome;
        fn run<B: AutodiffBackend>(self) -> anyhow::Result<RunOutcome> {
            Ok(birads_train::train::<B>(
                self.cfg,
                self.train,
                self.val,
                self.opts,
                self.console,
                &Default::default(),
            )?)
        }
    }
    amp_needs_burn(
        precision,
        opts.engine == birads_train::trainer::Engine::Burn,
    )?;
    let work = Training {
        cfg,
        train,
        val,
        opts,
        console: &mut console,
    };
    let outcome = on_backend(device, precision, false, work)?;
    Ok(outcome)
}

pub fn run(a: TrainArgs) -> anyhow::Result<u8> {
    a.engine.device.ready_for(a.engine.precision)?;
    let mut cfg = config(&a)?;
    let out = a
        .resume
        .clone()
        .or_else(|| a.out.clone())
        .expect("clap requires --out or --resume");
    let (train, val, left_out) = data(&a, &mut cfg, &out)?;
    println!(
        "training {} on {} images, validating on {} ({} epochs, batch {}, {}px) → {}",
        match (cfg.task, cfg.model.arch) {
            (Task::Cls, birads_train::config::Arch::ConvNeXt) => "BI-RADS (MyConvNeXt)",
            (Task::Cls, birads_train::config::Arch::DenseNet) => "BI-RADS (MyDenseNet)",
            (Task::Fea, _) => "features (MyDenseNet)",
        },
        train.len(),
        val.len(),
        cfg.epochs,
        cfg.batch_size,
        cfg.preprocess.size,
        out.display()
    );
    let opts = RunOptions {
        out: out.clone(),
        resume: a.resume.is_some(),
        init: a.recipe.init.clone(),
        engine: TrainEngineArg::resolve(a.engine.engine, a.engine.device, cfg.task)?,
    };
    let outcome = train_with(&cfg, train, val, &opts, a.engine.device, a.engine.precision)?;
    println!(
        "done: best epoch {} ({} {}), checkpoints {} and {}; metrics in {}",
        outcome
            .best_epoch
            .map(|e| e.to_string())
            .unwrap_or_else(|| "–".into()),
        cfg.best_metric,
        outcome
            .best_value
            .map(|v| format!("{:.4}", v.abs()))
            .unwrap_or_else(|| "–".into()),
        outcome.best.display(),
        outcome.last.display(),
        out.join("metrics.csv").display()
    );
    if left_out > 0 {
        eprintln!("{left_out} item(s) of the data were left out (listed above)");
    }
    Ok(if outcome.skipped_images > 0 || left_out > 0 {
        crate::EXIT_SKIPPED
    } else {
        0
    })
}
