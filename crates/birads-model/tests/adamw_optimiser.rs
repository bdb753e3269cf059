//! `adamw::Optimiser` with an update installed takes every parameter of a step in one call
//! (`Gather`, the update, `Scatter`), and the steps are burn's: on the CPU, a host update with
//! the kernel's contract stands in for the cubecl kernel (its own process, as installing is
//! global), against the same two steps with nothing installed, which are burn's AdamW and
//! Adam (`tests/adamw.rs`). This is the check `birads bench device-check` runs on a GPU.

#[path = "common/host_update.rs"]
mod host_update;

use std::sync::Mutex;

use birads_model::adamw::{self, check, Item, Scalars};
use birads_model::{Cpu, CpuTrain};
use burn::tensor::ops::FloatTensor;

/// How many parameters each call of the update was given.
static CALLS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

fn counted(items: Vec<Item<FloatTensor<Cpu>>>, s: Scalars) -> Vec<[FloatTensor<Cpu>; 3]> {
    CALLS.lock().unwrap().push(items.len());
    host_update::update(items, s)
}

#[test]
fn all_parameters_of_a_step_are_one_update_and_the_steps_are_burns() {
    for adam in [false, true] {
        adamw::uninstall::<Cpu>();
        let want = check::two_steps::<CpuTrain>(adam);
        assert!(CALLS.lock().unwrap().is_empty(), "nothing installed yet");
        adamw::install::<Cpu>(counted);
        let got = check::two_steps::<CpuTrain>(adam);
        let calls = std::mem::take(&mut *CALLS.lock().unwrap());
        assert_eq!(
            calls,
            [41, 41],
            "adam {adam}: one call per step, every parameter in it"
        );
        // 41 tensors, each with its two moments.
        assert_eq!(got.len(), 3 * 41);
        let worst = check::worst(&got, &want).unwrap();
        assert!(worst <= 1e-6, "adam {adam}: {worst:e}");
    }
}
