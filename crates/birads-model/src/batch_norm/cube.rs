//! BatchNorm's per-channel sums as cubecl kernels of birads' own, one launch each, for the
//! cubecl backends (CUDA's; wgpu's for the check without a GPU).
//!
//! burn reduces one axis per launch, so a sum over batch and positions of `[N, C, L]` is two
//! launches, and BatchNorm needs two such sums in each direction: 4 launches forward and 4
//! backward per BatchNorm, 546 each way in a MyDenseNet training step. Each kernel here
//! gives a channel one cube, whose threads stride over the channel's N·L values, accumulate
//! in f32 whatever the tensor's precision, and add their partial sums up in shared memory:
//!
//! - `moments`: mean and biased variance of `x`, in two passes over the values (the mean
//!   first, then the squared deviations from it), as the generic path computes them;
//! - `gradient_sums`: `Σ g` and `Σ g·(x − mean)` for the backward.
//!
//! On a fusion backend each is one custom operation in burn-fusion's stream (it ends the
//! fused run before it, as burn's reductions did).

use std::marker::PhantomData;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Shape, Tensor, TensorPrimitive};
use burn_cubecl::fusion::FusionCubeRuntime;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionHandle, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

use super::kernels::{gradient_sums, moments};
use super::Reductions;

fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> B::FloatTensorPrimitive {
    t.into_primitive().tensor()
}

fn float<B: Backend, const D: usize>(t: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// burn's cubecl backend without fusion.
type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;
/// burn's fusion backend over it.
type Fused<R, F, I, BT> = Fusion<Cube<R, F, I, BT>>;

/// `f` on a backend without fusion: a direct launch. Inputs of one dtype (the kernels'
/// single element type).
fn direct<R, F, I, BT, const IN: usize>(
    inputs: [Tensor<Cube<R, F, I, BT>, 3>; IN],
    f: fn([CubeTensor<R>; IN]) -> [CubeTensor<R>; 2],
) -> [Tensor<Cube<R, F, I, BT>, 1>; 2]
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    f(inputs.map(primitive)).map(float)
}

/// A kernel of this file as one custom operation in burn-fusion's stream.
struct Custom<R: CubeRuntime, B, const IN: usize> {
    desc: CustomOpIr,
    kernel: fn([CubeTensor<R>; IN]) -> [CubeTensor<R>; 2],
    _backend: PhantomData<fn() -> B>,
}

impl<R: CubeRuntime, B, const IN: usize> std::fmt::Debug for Custom<R, B, IN> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Custom").field("desc", &self.desc).finish()
    }
}

impl<R, F, I, BT, const IN: usize> Operation<FusionCubeRuntime<R>>
    for Custom<R, Cube<R, F, I, BT>, IN>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn execute(&self, handles: &mut HandleContainer<FusionHandle<FusionCubeRuntime<R>>>) {
        let (inputs, outputs) = self.desc.as_fixed::<IN, 2>();
        let inputs = inputs
            .each_ref()
            .map(|t| handles.get_float_tensor::<Cube<R, F, I, BT>>(t));
        let results = (self.kernel)(inputs);
        for (ir, result) in outputs.iter().zip(results) {
            handles.register_float_tensor::<Cube<R, F, I, BT>>(&ir.id, result);
        }
    }
}

/// `f` on burn's fusion backend: registered in the stream as a custom operation named `id`,
/// with two `[C]` outputs of the inputs' dtype.
fn fused<R, F, I, BT, const IN: usize>(
    id: &'static str,
    inputs: [Tensor<Fused<R, F, I, BT>, 3>; IN],
    kernel: fn([CubeTensor<R>; IN]) -> [CubeTensor<R>; 2],
) -> [Tensor<Fused<R, F, I, BT>, 1>; 2]
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let inputs: [FusionTensor<FusionCubeRuntime<R>>; IN] = inputs.map(primitive);
    let client = inputs[0].client.clone();
    let (channels, dtype): (usize, DType) = (inputs[0].shape[1], inputs[0].dtype);
    let streams = OperationStreams::with_inputs(inputs.iter());
    let output = || TensorIr::uninit(client.create_empty_handle(), Shape::new([channels]), dtype);
    let outputs = [output(), output()];
    let inputs = inputs.map(FusionTensor::into_ir);
    let desc = CustomOpIr::new(id, &inputs, &outputs);
    let operation = Custom::<R, Cube<R, F, I, BT>, IN> {
        desc: desc.clone(),
        kernel,
        _backend: PhantomData,
    };
    let results = client.register(streams, OperationIr::Custom(desc), operation);
    let [a, b]: [FusionTensor<FusionCubeRuntime<R>>; 2] =
        results.try_into().expect("two outputs, as registered");
    [float(a), float(b)]
}

/// The kernels for burn's cubecl backend `Cube<R, F, I, BT>` (unfused).
pub fn direct_reductions<R, F, I, BT>() -> Reductions<Cube<R, F, I, BT>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    Reductions {
        moments: |x| {
            let [mean, var] = direct([x], moments::<R>);
            (mean, var)
        },
        gradient_sums: |g, x, mean| {
            let [c] = mean.dims();
            let [a, b] = direct([g, x, mean.reshape([1, c, 1])], gradient_sums::<R>);
            (a, b)
        },
    }
}

/// The kernels for burn's fusion backend over `Cube<R, F, I, BT>` (burn's `Cuda`, `Wgpu`).
pub fn fused_reductions<R, F, I, BT>() -> Reductions<Fused<R, F, I, BT>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    Reductions {
        moments: |x| {
            let [mean, var] = fused("birads_batch_norm_moments", [x], moments::<R>);
            (mean, var)
        },
        gradient_sums: |g, x, mean| {
            let [c] = mean.dims();
            let inputs = [g, x, mean.reshape([1, c, 1])];
            let [a, b] = fused(
                "birads_batch_norm_gradient_sums",
                inputs,
                gradient_sums::<R>,
            );
            (a, b)
        },
    }
}

/// Install the kernels for `Cube<R, F, I, BT>` and the fusion backend over it.
pub fn install<R, F, I, BT>()
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    super::install_reductions(direct_reductions::<R, F, I, BT>());
    super::install_reductions(fused_reductions::<R, F, I, BT>());
}

/// Remove what `install` put in.
pub fn uninstall<R, F, I, BT>()
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    super::uninstall_reductions::<Cube<R, F, I, BT>>();
    super::uninstall_reductions::<Fused<R, F, I, BT>>();
}
