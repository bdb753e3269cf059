//! `birads synth`.

use std::path::PathBuf;

use birads_data::synth::{synthesize, SynthConfig};
use birads_data::{BIRADS6, FEATURE_NAMES};
use clap::Args;

#[derive(Args)]
pub struct SynthArgs {
    /// Output folder (created; existing files with the same names are replaced).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = SynthConfig::default().seed)]
    pub seed: u64,
    /// Images in the classification training set.
    #[arg(long, default_value_t = SynthConfig::default().train_cls)]
    pub train_cls: usize,
    /// Images in the feature training set.
    #[arg(long, default_value_t = SynthConfig::default().train_fea)]
    pub train_fea: usize,
    /// Images in testA/cla.
    #[arg(long, default_value_t = SynthConfig::default().test_cls)]
    pub test_cls: usize,
    /// Images in testA/fea.
    #[arg(long, default_value_t = SynthConfig::default().test_fea)]
    pub test_fea: usize,
    /// Smallest image side in pixels.
    #[arg(long, default_value_t = SynthConfig::default().min_side)]
    pub min_side: u32,
    /// Largest image side in pixels.
    #[arg(long, default_value_t = SynthConfig::default().max_side)]
    pub max_side: u32,
    /// Lesion size relative to the default (15–35 % of the shorter side); > 1 makes a set
    /// that small models learn from scratch at low resolution.
    #[arg(long, default_value_t = SynthConfig::default().lesion_scale)]
    pub lesion_scale: f32,
}

impl SynthArgs {
    pub fn config(&self) -> SynthConfig {
        SynthConfig {
            seed: self.seed,
            train_cls: self.train_cls,
            train_fea: self.train_fea,
            test_cls: self.test_cls,
            test_fea: self.test_fea,
            min_side: self.min_side,
            max_side: self.max_side,
            lesion_scale: self.lesion_scale,
        }
    }
}

pub fn run(a: SynthArgs) -> anyhow::Result<u8> {
    let t = std::time::Instant::now();
    let s = synthesize(&a.out, &a.config())?;
    println!(
        "wrote {} synthetic images to {} in {:.1} s",
        s.images,
        s.out.display(),
        t.elapsed().as_secs_f32()
    );
    let classes: Vec<String> = BIRADS6
        .iter()
        .zip(s.class_counts)
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    println!(
        "  classification training set, BI-RADS {}",
        classes.join(", ")
    );
    let feats: Vec<String> = FEATURE_NAMES
        .iter()
        .zip(s.feature_positive)
        .map(|(f, n)| format!("{f} {n}"))
        .collect();
    println!("  feature training set, positives: {}", feats.join(", "));
    println!(
        "  testA with cla_gt.csv and fea_gt.csv; check it with: birads data check {}",
        a.out.display()
    );
    Ok(0)
}
