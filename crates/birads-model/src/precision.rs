//! The float type that a device's new tensors get.
//!
//! burn 0.21 keeps one default float type per device (its type and index), not per backend,
//! and the first tensor made on a device fixes it for the whole process. `Cuda` (f32) and
//! `CudaBf16` share `CudaDevice`; so do wgpu's f32 and f16 backends. A bf16 run on a device
//! that an f32 tensor touched first (a probe, a check) would make every parameter and input
//! in f32 and train in f32 while reporting bf16. [`claim`] fixes the device's type before its
//! first tensor and refuses a device already fixed to another type.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{get_device_settings, set_default_dtypes, DType, Element, FloatDType, Tensor};

/// A device whose new tensors cannot get the float type asked for.
#[derive(Debug, thiserror::Error)]
#[error(
    "{device} makes {now:?} tensors, not the {wanted:?} asked for ({why}); \
     one process runs one precision per device: run the other precision in its own process"
)]
pub struct PrecisionError {
    pub device: String,
    pub wanted: DType,
    pub now: DType,
    pub why: String,
}

/// Make `float` the type of the float tensors created on `device` from now on (burn's
/// default for `from_data`, `zeros`, `random` and module initialisation). Succeeds when the
/// device already makes `float` tensors; fails when an earlier tensor fixed another type.
pub fn claim<B: Backend>(device: &B::Device, float: FloatDType) -> Result<(), PrecisionError> {
    let int = <B::IntElem as Element>::dtype();
    let result = set_default_dtypes::<B>(device, float, int);
    // Read back whatever holds now: set here, or fixed before.
    let now = get_device_settings::<B>(device).float_dtype;
    if now == float {
        return Ok(());
    }
    Err(PrecisionError {
        device: format!("{device:?}"),
        wanted: float.into(),
        now: now.into(),
        why: result.err().map_or_else(String::new, |e| e.to_string()),
    })
}

/// [`claim`] the backend's own float type (`B::FloatElem`: bf16 for `CudaBf16`).
pub fn claim_own<B: Backend>(device: &B::Device) -> Result<(), PrecisionError> {
    claim::<B>(device, <B::FloatElem as Element>::dtype().into())
}

/// `module` with every float parameter and running statistic in the float type of
/// `device`'s new tensors. burn's loaders keep a file's type (an f32 checkpoint gives f32
/// parameters on a bf16 device, whose inputs are bf16, and the first convolution fails on
/// the mismatch; a bf16 checkpoint gives bf16 parameters on the CPU); every load passes its
/// model through here.
pub fn to_device_float<B: Backend, M: Module<B>>(module: M, device: &B::Device) -> M {
    to_float(module, get_device_settings::<B>(device).float_dtype)
}

/// `module` with every float parameter and running statistic in `dtype`. burn's running
/// statistics are shared between a module and its clones, so a clone kept elsewhere sees
/// them cast too: cast a module of its own (a fresh load, `gradcheck::moved`).
pub fn to_float<B: Backend, M: Module<B>>(module: M, dtype: FloatDType) -> M {
    module.map(&mut Cast {
        dtype: dtype.into(),
    })
}

/// The mapper of [`to_float`].
struct Cast {
    dtype: DType,
}

impl<B: Backend> ModuleMapper<B> for Cast {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        if tensor.dtype() == self.dtype {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        // A new leaf: the cast itself must not enter the autodiff graph.
        let tracked = tensor.is_require_grad();
        let tensor = tensor.cast(self.dtype).detach().set_require_grad(tracked);
        Param::from_mapped_value(id, tensor, mapper)
    }
}
