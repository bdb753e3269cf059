//! `birads demo`: the built-in end-to-end run on synthetic data. For now: synthesize a
//! dataset, check it, and write augmentation previews; later stages (train → predict →
//! report) join as they land.

use std::path::PathBuf;

use birads_data::check::check;
use clap::Args;

use crate::data::Task;

#[derive(Args)]
pub struct DemoArgs {
    /// Where everything goes.
    #[arg(long, default_value = "out/demo")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

pub fn run(a: DemoArgs) -> anyhow::Result<u8> {
    let t = std::time::Instant::now();
    let data = a.out.join("synth");
    println!("== 1/3 synthesize a dataset in the competition layout");
    let d = birads_data::synth::SynthConfig::default();
    crate::synth::run(crate::synth::SynthArgs {
        out: data.clone(),
        seed: a.seed,
        train_cls: d.train_cls,
        train_fea: d.train_fea,
        test_cls: d.test_cls,
        test_fea: d.test_fea,
        min_side: d.min_side,
        max_side: d.max_side,
    })?;
    println!("\n== 2/3 check it");
    let mut ds = crate::read_dataset(&data)?;
    let summary = check(&mut ds, false);
    print!("{summary}");
    anyhow::ensure!(
        summary.errors == 0,
        "the synthetic dataset has {} errors",
        summary.errors
    );
    println!("\n== 3/3 augmentation previews");
    for (task, name) in [(Task::Cls, "cls"), (Task::Fea, "fea")] {
        crate::preview::run(crate::preview::PreviewArgs {
            dataset: data.clone(),
            out: a.out.join("preview").join(name),
            count: 8,
            versions: 3,
            seed: a.seed,
            task,
            size: 224,
            cutmix: None,
            cutmix_p: 0.5,
            cut_black: task == Task::Fea,
        })?;
    }
    println!(
        "\ndemo finished in {:.1} s; outputs under {}",
        t.elapsed().as_secs_f32(),
        a.out.display()
    );
    println!("  dataset:  {}", data.display());
    println!("  previews: {}", a.out.join("preview").display());
    Ok(0)
}
