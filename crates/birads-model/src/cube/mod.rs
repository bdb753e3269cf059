//! How birads' own cubecl kernels reach burn's cubecl backends: `Launch::launch` runs a
//! kernel on the primitives of a backend, directly on burn's `CubeBackend`, and as one custom
//! operation in the stream of burn's fusion backend over it (burn's `Cuda`, `Wgpu`), which
//! hands the kernel the underlying `CubeTensor`s when the stream reaches it.
//!
//! The kernels (`batch_norm/kernels.rs`, `depthwise/kernel.rs`) are written once against a
//! cubecl runtime `R`, with the pieces they share in `reduce.rs`; the operations that use
//! them are written once against `B: Launch`.

pub mod many;
pub mod reduce;

pub use crate::own_ops::{float, primitive};

use std::marker::PhantomData;

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape};
use burn_cubecl::fusion::FusionCubeRuntime;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionHandle, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

/// burn's cubecl backend without fusion.
pub type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;
/// burn's fusion backend over it.
pub type Fused<R, F, I, BT> = Fusion<Cube<R, F, I, BT>>;

/// A computation on the tensors of cubecl runtime `R`: `IN` inputs, `OUT` outputs.
pub type Kernel<R, const IN: usize, const OUT: usize> =
    Box<dyn Fn([CubeTensor<R>; IN]) -> [CubeTensor<R>; OUT] + Send + Sync>;

/// A computation on any number of tensors (as many outputs as the launch names).
pub type AnyKernel<R> = Box<dyn Fn(Vec<CubeTensor<R>>) -> Vec<CubeTensor<R>> + Send + Sync>;

/// Shape and element type of a kernel's output.
pub type Spec = (Shape, DType);

/// A backend that runs birads' cubecl kernels.
pub trait Launch: Backend {
    /// The cubecl runtime underneath.
    type Runtime: CubeRuntime;

    /// `kernel` on `inputs`; `outputs` says what it returns (fusion needs to know before it
    /// runs). `id` names the operation in burn-fusion's logs.
    fn launch_all(
        id: &'static str,
        inputs: Vec<FloatTensor<Self>>,
        outputs: Vec<Spec>,
        kernel: AnyKernel<Self::Runtime>,
    ) -> Vec<FloatTensor<Self>>;

    /// [`Launch::launch_all`] with a number of inputs and outputs fixed in the types.
    fn launch<const IN: usize, const OUT: usize>(
        id: &'static str,
        inputs: [FloatTensor<Self>; IN],
        outputs: [Spec; OUT],
        kernel: Kernel<Self::Runtime, IN, OUT>,
    ) -> [FloatTensor<Self>; OUT] {
        let kernel: AnyKernel<Self::Runtime> = Box::new(move |inputs| {
            let inputs = inputs
                .try_into()
                .unwrap_or_else(|_| unreachable!("the inputs launched"));
            kernel(inputs).into()
        });
        Self::launch_all(id, inputs.into(), outputs.into(), kernel)
            .try_into()
            .unwrap_or_else(|_| unreachable!("the outputs launched"))
    }
}

impl<R, F, I, BT> Launch for Cube<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    type Runtime = R;

    fn launch_all(
        _id: &'static str,
        inputs: Vec<CubeTensor<R>>,
        outputs: Vec<Spec>,
        kernel: AnyKernel<R>,
    ) -> Vec<CubeTensor<R>> {
        let results = kernel(inputs);
        assert_eq!(results.len(), outputs.len(), "the outputs declared");
        results
    }
}

impl<R, F, I, BT> Launch for Fused<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    type Runtime = R;

    fn launch_all(
        id: &'static str,
        inputs: Vec<FusionTensor<FusionCubeRuntime<R>>>,
        outputs: Vec<Spec>,
        kernel: AnyKernel<R>,
    ) -> Vec<FusionTensor<FusionCubeRuntime<R>>> {
        let client = inputs
            .first()
            .expect("a kernel with at least one input")
            .client
            .clone();
        let streams = OperationStreams::with_inputs(inputs.iter());
        let outputs: Vec<_> = outputs
            .into_iter()
            .map(|(shape, dtype)| TensorIr::uninit(client.create_empty_handle(), shape, dtype))
            .collect();
        let inputs: Vec<_> = inputs.into_iter().map(FusionTensor::into_ir).collect();
        let desc = CustomOpIr::new(id, &inputs, &outputs);
        let operation = Custom::<R, Cube<R, F, I, BT>> {
            desc: desc.clone(),
            kernel,
            _backend: PhantomData,
        };
        client.register(streams, OperationIr::Custom(desc), operation)
    }
}

/// A kernel as one custom operation in burn-fusion's stream.
struct Custom<R: CubeRuntime, B> {
    desc: CustomOpIr,
    kernel: AnyKernel<R>,
    _backend: PhantomData<fn() -> B>,
}

impl<R: CubeRuntime, B> std::fmt::Debug for Custom<R, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Custom").field("desc", &self.desc).finish()
    }
}

impl<R, F, I, BT> Operation<FusionCubeRuntime<R>> for Custom<R, Cube<R, F, I, BT>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn execute(&self, handles: &mut HandleContainer<FusionHandle<FusionCubeRuntime<R>>>) {
        let inputs = self
            .desc
            .inputs
            .iter()
            .map(|t| handles.get_float_tensor::<Cube<R, F, I, BT>>(t))
            .collect();
        let results = (self.kernel)(inputs);
        assert_eq!(
            results.len(),
            self.desc.outputs.len(),
            "the outputs declared"
        );
        for (ir, result) in self.desc.outputs.iter().zip(results) {
            handles.register_float_tensor::<Cube<R, F, I, BT>>(&ir.id, result);
        }
    }
}

/// A set of birads' kernels that operations find per backend (`crate::own_ops`).
pub trait Kernels {
    /// Use them on `B` from now on.
    fn install<B: Launch>();
    /// Back to burn's operations on `B`.
    fn uninstall<B: Launch>();
}

/// Use kernels `K` on `Cube<R, F, I, BT>` and the fusion backend over it, or (`on` false) stop.
pub fn set<K, R, F, I, BT>(on: bool)
where
    K: Kernels,
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    if on {
        K::install::<Cube<R, F, I, BT>>();
        K::install::<Fused<R, F, I, BT>>();
    } else {
        K::uninstall::<Cube<R, F, I, BT>>();
        K::uninstall::<Fused<R, F, I, BT>>();
    }
}
