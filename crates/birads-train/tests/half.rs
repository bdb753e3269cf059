//! Training in half precision on a cubecl backend without a GPU: what `birads train --device
//! cuda --precision bf16` runs, on burn's wgpu backend in f16 (wgpu has no bf16; the
//! operations, kernels and dtype handling are the same). Its own process (one test): burn
//! fixes the device's float type for the whole process, and this test claims f16 for it.
//!
//! It checks that the parameters really are in half precision while training (the saved
//! checkpoints carry f16 tensors), that both models learn, and that their losses stay near
//! burn's f32 training on the CPU from the same initial weights.
//!
//! Run: `bash scripts/cubecl_check.sh` (both crates' cubecl tests).
#![cfg(feature = "wgpu")]

mod common;

use birads_model::CpuTrain;
use birads_train::Task;
use burn::backend::{Autodiff, Wgpu};
use burn::tensor::f16;

use common::{assert_histories_agree, quick, train_from_init, write_init};

type Half = Autodiff<Wgpu<f16>>;

/// The float types of a safetensors file's tensors, with how many tensors have each.
fn dtypes(path: &std::path::Path) -> Vec<(String, usize)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for (_, view) in file.tensors() {
        *counts.entry(format!("{:?}", view.dtype())).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

/// One task: f16 on wgpu against f32 on the CPU, training losses within `tolerance`
/// (relative) in every epoch.
fn agree(task: Task, epochs: u64, tolerance: f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = quick(task);
    cfg.epochs = epochs;
    write_init(&cfg, task, dir.path());
    let cpu = train_from_init::<CpuTrain>(&cfg, task, dir.path(), "cpu").history;
    let trained = train_from_init::<Half>(&cfg, task, dir.path(), "f16");
    let (half, kinds) = (trained.history, dtypes(&trained.last));
    eprintln!("{task:?} f16 checkpoint tensors: {kinds:?}");
    assert!(
        kinds.iter().all(|(k, _)| k == "F16" || k.starts_with('I')),
        "{task:?}: the trained parameters are not all f16: {kinds:?}"
    );
    let what = format!("{task:?} f16 against the CPU's f32");
    assert_histories_agree(&what, epochs, &half, &cpu, |_| tolerance, |_| false);
}

#[test]
fn both_models_train_in_half_precision_near_the_cpus_f32() {
    birads_model::install_gpu_ops();
    birads_model::precision::claim_own::<Half>(&Default::default()).unwrap();
    // Measured: MyConvNeXt within 2·10⁻⁴ in each of three epochs, MyDenseNet within 4·10⁻³
    // in two (its BatchNorm backwards amplify the rounding, as between CPU and wgpu in f32).
    // With f16 moments in AdamW's kernel the MyConvNeXt run was 0.33 off in its second epoch.
    agree(Task::Cls, 3, 1e-2);
    agree(Task::Fea, 2, 1e-2);
}
