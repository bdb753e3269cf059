//! AdamW's update kernel (`kernel.rs`) on burn's cubecl backends: one launch per parameter,
//! and on a fusion backend one custom operation in burn-fusion's stream (`crate::cube`).

use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorMetadata;

use super::{kernel, Scalars};
use crate::cube::{Kernels, Launch};

/// The update on backend `B`: `[p, g]` and the moments (none on the first step) → `[p, m, v]`,
/// the moments in f32 (`kernel::MOMENTS`).
pub fn update<B: Launch>(
    param: FloatTensor<B>,
    grad: FloatTensor<B>,
    moments: Option<[FloatTensor<B>; 2]>,
    s: Scalars,
) -> [FloatTensor<B>; 3] {
    let shape = param.shape();
    let outputs = [
        (shape.clone(), param.dtype()),
        (shape.clone(), kernel::MOMENTS),
        (shape, kernel::MOMENTS),
    ];
    match moments {
        Some([m, v]) => B::launch(
            "birads_adamw_update",
            [param, grad, m, v],
            outputs,
            Box::new(move |[p, g, m, v]| kernel::update(p, g, Some([m, v]), s)),
        ),
        None => B::launch(
            "birads_adamw_first_update",
            [param, grad],
            outputs,
            Box::new(move |[p, g]| kernel::update(p, g, None, s)),
        ),
    }
}

/// The kernel, for `crate::cube::set`: the step of [`super::AdamW`] on `B` (not where
/// `BIRADS_ADAMW_KERNEL=burn`).
pub struct Update;

impl Kernels for Update {
    fn install<B: Launch>() {
        super::install::<B>(update::<B>);
    }

    fn uninstall<B: Launch>() {
        super::uninstall::<B>();
    }
}
