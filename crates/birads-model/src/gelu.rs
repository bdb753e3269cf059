//! GELU with its exact backward on the autodiff backends it is installed on (CUDA's, by
//! `install_gpu_ops`).
//!
//! burn 0.21's forward GELU is the exact `x Φ(x)` (erf form) everywhere, and so is PyTorch's
//! default. Its backward is not the same everywhere: burn-flex (the CPU) differentiates
//! `x Φ(x)` exactly, while burn-backend's default `gelu_backward`, which burn-cubecl inherits
//! (CUDA, wgpu), is the derivative of the tanh approximation. On the cubecl backends that puts
//! every ConvNeXt gradient 2–6·10⁻⁴ (relative) away from an f64 pass, where the CPU's f32 pass
//! is within 10⁻⁶ (`tests/cubecl/`): more than `birads bench device-check` allows.
//!
//! Here the backward is `g · (Φ(x) + x φ(x))`, written with burn's erf and exp: one fused
//! elementwise kernel on CUDA. Where nothing is installed, `gelu` is burn's.
//! `BIRADS_GELU=burn` keeps burn's backward everywhere (to show the difference on a device).

use std::f64::consts::{FRAC_1_SQRT_2, PI};

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_autodiff::{Autodiff, NodeId};

use crate::own_ops;

/// GELU on one backend's float primitive.
pub type GeluFn<B> = fn(FloatTensor<B>) -> FloatTensor<B>;

/// Use the exact backward on `Autodiff<B, C>` from now on (unless `BIRADS_GELU=burn`).
pub fn install<B: Backend, C: CheckpointStrategy>() {
    own_ops::install::<GeluFn<Autodiff<B, C>>>(gelu_tracked::<B, C>, "BIRADS_GELU");
}

/// Back to burn's GELU on `Autodiff<B, C>`.
pub fn uninstall<B: Backend, C: CheckpointStrategy>() {
    own_ops::uninstall::<GeluFn<Autodiff<B, C>>>();
}

/// `x Φ(x)`: the own operation where installed for `B`, else burn's.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match own_ops::installed::<GeluFn<B>>() {
        Some(f) => {
            let y = f(x.into_primitive().tensor());
            Tensor::from_primitive(TensorPrimitive::Float(y))
        }
        None => burn::tensor::activation::gelu(x),
    }
}

/// `grad · (Φ(x) + x φ(x))`, elementwise, any rank.
pub fn exact_backward<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let inv_sqrt_2pi = 1.0 / (2.0 * PI).sqrt();
    let erf = B::float_erf(B::float_mul_scalar(x.clone(), FRAC_1_SQRT_2.into()));
    let cdf = B::float_mul_scalar(B::float_add_scalar(erf, 1.0.into()), 0.5.into());
    let square = B::float_mul(x.clone(), x.clone());
    let density = B::float_mul_scalar(
        B::float_exp(B::float_mul_scalar(square, (-0.5).into())),
        inv_sqrt_2pi.into(),
    );
    B::float_mul(grad, B::float_add(cdf, B::float_mul(x, density)))
}

#[derive(Debug)]
struct GeluBackward;

impl<B: Backend> Backward<B, 1> for GeluBackward {
    /// The input (checkpointed).
    type State = NodeId;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [parent] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(ops.state);
        if let Some(node) = parent {
            grads.register::<B>(node.id, exact_backward::<B>(x, grad));
        }
    }
}

/// burn's forward GELU on `Autodiff<B, C>` with `GeluBackward`.
fn gelu_tracked<B: Backend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    match GeluBackward
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = prep.checkpoint(&x);
            prep.finish(state, B::gelu(x.primitive))
        }
        OpsKind::UnTracked(prep) => prep.finish(B::gelu(x.primitive)),
    }
}
