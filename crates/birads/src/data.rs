//! `birads data check|split`.

use std::path::PathBuf;

use anyhow::Context;
use birads_data::check::check;
use birads_data::manifest::write_manifest;
use birads_data::split::group_split;
use birads_data::Sample;
use clap::{Args, Subcommand, ValueEnum};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Count samples per class, feature, source and image size, and list every problem.
    ///
    /// PATH is a competition folder (乳腺分类训练数据集 / 乳腺特征训练数据集 or the package
    /// holding them), a reorganised cla/ + labels/ folder, a test folder (cla/, fea/), a
    /// folder of images or a CSV manifest (e.g. BUS-BRA's labels.csv). Exit code 1 when
    /// there are errors (items left out), 0 otherwise (warnings allowed).
    Check(CheckArgs),
    /// Deterministic, group-aware (patient) train/validation split, stratified by class;
    /// writes train.csv and val.csv manifests.
    Split(SplitArgs),
}

#[derive(Args)]
pub struct CheckArgs {
    /// Dataset folder or CSV manifest.
    pub path: PathBuf,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Decode every image fully instead of reading headers only (slower, catches truncation).
    #[arg(long)]
    pub decode: bool,
    /// Print at most this many problems in text mode (all are in --json).
    #[arg(long, default_value_t = 200)]
    pub max_problems: usize,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Task {
    /// Samples with a BI-RADS class.
    Cls,
    /// Samples with feature labels.
    Fea,
    /// Every sample.
    All,
}

#[derive(Args)]
pub struct SplitArgs {
    /// Dataset folder or CSV manifest.
    pub path: PathBuf,
    /// Output folder for train.csv and val.csv.
    #[arg(long)]
    pub out: PathBuf,
    /// Fraction of each class (of its patients) that goes to validation.
    #[arg(long, default_value_t = 0.2)]
    pub val_fraction: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Which samples to split.
    #[arg(long, value_enum, default_value_t = Task::All)]
    pub task: Task,
}

pub fn run(cmd: DataCommand) -> anyhow::Result<u8> {
    match cmd {
        DataCommand::Check(a) => run_check(a),
        DataCommand::Split(a) => run_split(a),
    }
}

fn run_check(a: CheckArgs) -> anyhow::Result<u8> {
    let mut ds = crate::read_dataset(&a.path)?;
    let summary = check(&mut ds, a.decode);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let mut shown = summary.clone();
        let hidden = shown.problems.len().saturating_sub(a.max_problems);
        // Errors first, so a truncated list still shows what matters.
        shown
            .problems
            .sort_by_key(|p| std::cmp::Reverse(p.severity));
        shown.problems.truncate(a.max_problems);
        print!("{shown}");
        if hidden > 0 {
            println!("    … {hidden} more (use --json or --max-problems)");
        }
    }
    Ok(if summary.errors > 0 { 1 } else { 0 })
}

pub fn select(samples: &[Sample], task: Task) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| match task {
            Task::Cls => s.class.is_some(),
            Task::Fea => s.has_features(),
            Task::All => true,
        })
        .collect()
}

fn run_split(a: SplitArgs) -> anyhow::Result<u8> {
    anyhow::ensure!(
        a.val_fraction > 0.0 && a.val_fraction < 1.0,
        "--val-fraction must be between 0 and 1"
    );
    let ds = crate::read_dataset(&a.path)?;
    for p in &ds.problems {
        eprintln!("{p}");
    }
    let chosen: Vec<Sample> = select(&ds.samples, a.task).into_iter().cloned().collect();
    anyhow::ensure!(
        !chosen.is_empty(),
        "no samples to split in {}",
        a.path.display()
    );
    let split = group_split(&chosen, a.val_fraction, a.seed);
    let pick = |idx: &[usize]| idx.iter().map(|&i| &chosen[i]).collect::<Vec<_>>();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    write_manifest(&a.out.join("train.csv"), &pick(&split.train), &ds.classes)?;
    write_manifest(&a.out.join("val.csv"), &pick(&split.val), &ds.classes)?;
    println!(
        "split {} samples into {} train / {} validation (seed {}, groups kept together) → {}",
        chosen.len(),
        split.train.len(),
        split.val.len(),
        a.seed,
        a.out.display()
    );
    Ok(if ds.error_count() > 0 {
        crate::EXIT_SKIPPED
    } else {
        0
    })
}
