//! The training loop on a cubecl backend without a GPU: burn's wgpu backend (the same
//! burn-cubecl kernels, fusion and autotune as CUDA, on Mesa's software Vulkan driver) trains
//! both models for a few epochs from the same initial weights as burn's autodiff on the CPU,
//! with birads' own operations installed as `birads train --device cuda` installs them.
//! Without dropout, stochastic depth and augmentation the two take the same optimiser steps up
//! to float rounding, so the losses of every epoch agree: the batches reach the device, the
//! optimiser, schedule, loss and validation run there as on the CPU.
//!
//! Run: `bash scripts/cubecl_check.sh` (both crates' cubecl tests).
#![cfg(feature = "wgpu")]

mod common;

use birads_model::CpuTrain;
use birads_train::Task;
use burn::backend::{Autodiff, Wgpu};

use common::{assert_histories_agree, quick, train_from_init, write_init};

/// Losses agree within `first` (relative) in the first epoch and the training loss within
/// `later` after it.
fn agree(task: Task, epochs: u64, first: f64, later: f64) {
    birads_model::install_gpu_ops();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = quick(task);
    cfg.epochs = epochs;
    write_init(&cfg, task, dir.path());
    let cpu = train_from_init::<CpuTrain>(&cfg, task, dir.path(), "cpu").history;
    let gpu = train_from_init::<Autodiff<Wgpu>>(&cfg, task, dir.path(), "wgpu").history;
    // The validation loss too, where the tolerance does not widen.
    let tolerance = |epoch| if epoch == 1 { first } else { later };
    let check_val = |epoch| epoch == 1 || later == first;
    let what = format!("{task:?} wgpu against the CPU");
    assert_histories_agree(&what, epochs, &gpu, &cpu, tolerance, check_val);
}

#[test]
fn convnext_trains_on_cubecl_as_on_the_cpu() {
    agree(Task::Cls, 3, 1e-5, 1e-5);
}

#[test]
fn densenet_trains_on_cubecl_as_on_the_cpu() {
    // BatchNorm's batch statistics and Adam's sign-like steps on near-zero gradients
    // amplify last-bit differences (as between the CPU's two engines, `learns.rs`); cubecl's
    // tree reductions differ from the CPU's more than the two CPU engines do. Over three
    // initial draws the first epoch's validation loss came 1.6–4.0·10⁻³ apart, so the limit
    // is 10⁻² in every epoch; the gradients themselves are held to 10⁻⁴ by birads-model's
    // `tests/cubecl/`.
    agree(Task::Fea, 2, 1e-2, 1e-2);
}
