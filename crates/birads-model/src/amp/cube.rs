//! The casts of many tensors (`kernel.rs`) on burn's cubecl backends, on a fusion backend one
//! custom operation in burn-fusion's stream (`crate::cube`).

use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, FloatDType, TensorMetadata};

use super::kernel;
use crate::cube::{Kernels, Launch};

/// `tensors` in `dtype`, all as one operation.
pub fn casts<B: Launch>(tensors: Vec<FloatTensor<B>>, dtype: FloatDType) -> Vec<FloatTensor<B>> {
    if tensors.is_empty() {
        return Vec::new();
    }
    let dtype = DType::from(dtype);
    let outputs = tensors.iter().map(|t| (t.shape(), dtype)).collect();
    let run = move |inputs| kernel::casts(inputs, dtype);
    B::launch_all("birads_amp_casts", tensors, outputs, Box::new(run))
}

/// The kernel, for `crate::cube::set` (not where `BIRADS_AMP_CASTS=burn`).
pub struct Casts;

impl Kernels for Casts {
    fn install<B: Launch>() {
        super::casts::install_kernel::<B>(casts::<B>);
    }

    fn uninstall<B: Launch>() {
        super::casts::uninstall_kernel::<B>();
    }
}
