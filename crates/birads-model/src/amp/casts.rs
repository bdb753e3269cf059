//! The casts of the weights that amp's products compute with, made all at once at the start of
//! a forward pass, and with a backward that hands each gradient on as the product computed it.
//!
//! Under amp every convolution and linear layer casts its weight and bias to the low precision
//! and, backward, the gradient back to f32: two operations per parameter, and on burn-fusion
//! two launches, as a cast between two operations it cannot fuse runs alone (about 240 of a
//! MyConvNeXt amp step's 1,086 launches). Where an own version is installed (the GPU training
//! backends, `install_gpu_ops`):
//!
//! - A model's `forward` opens [`cast_weights`] over itself. It casts, in one operation (a few
//!   launches of `cube.rs`'s kernel on the cubecl backends), every parameter that a product
//!   cast before on this thread: from the second forward pass on, all of them. The products
//!   take their cast from there (`weight`); one that finds none casts its parameter alone and
//!   is remembered for the next pass. PyTorch's autocast also casts a weight once per region
//!   and hands every product in it that cast.
//! - Each cast is an autodiff operation of its own whose backward passes the gradient on in
//!   the low precision instead of casting it to f32. The parameter's gradient is then bf16 (f16
//!   on wgpu), holding exactly the values the f32 cast would hold (widening is exact); the
//!   optimiser widens it as it reads it (`adamw`: the update kernel reads any precision,
//!   burn's step gets it cast first). A weight that two products use (CBAM's channel MLP) has
//!   both gradients widened and summed in its precision, as burn's casts sum them. A
//!   parameter must not also be used outside the products (a gradient in bf16 and one in f32
//!   would meet in burn's sum); none of these models' is.
//!
//! Where nothing is installed (the CPU, and `BIRADS_AMP_CASTS=burn`) the products cast as
//! before, burn's casts both ways. The values are the same either way, forward and backward
//! (`tests/amp_casts.rs`).

use std::any::Any;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{FloatDType, Tensor, TensorMetadata};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_autodiff::Autodiff;

use crate::own_ops::{self, float, primitive};

/// Casts of several tensors to one precision, on one backend's primitives, in order.
pub type CastsFn<B> = fn(Vec<FloatTensor<B>>, FloatDType) -> Vec<FloatTensor<B>>;

/// What switches the own casts off (`burn`): burn's casts both ways.
const SWITCH: &str = "BIRADS_AMP_CASTS";

/// Use `casts` for the casts of many tensors on `B` from now on (a kernel; unless
/// `BIRADS_AMP_CASTS=burn`).
pub fn install_kernel<B: Backend>(casts: CastsFn<B>) {
    own_ops::install::<CastsFn<B>>(casts, SWITCH);
}

/// Back to one burn cast per tensor on `B`.
pub fn uninstall_kernel<B: Backend>() {
    own_ops::uninstall::<CastsFn<B>>();
}

/// The casts, made at once and passing gradients on in the low precision, on `Autodiff<B, C>`
/// from now on (unless `BIRADS_AMP_CASTS=burn`); with `B`'s kernel where one is installed.
pub fn install<B: Backend, C: CheckpointStrategy>() {
    own_ops::install::<CastsFn<Autodiff<B, C>>>(tracked::<B, C>, SWITCH);
}

/// Back to burn's casts on `Autodiff<B, C>`.
pub fn uninstall<B: Backend, C: CheckpointStrategy>() {
    own_ops::uninstall::<CastsFn<Autodiff<B, C>>>();
}

thread_local! {
    /// The parameters a product has cast on this thread: what a forward pass casts at its
    /// start.
    static CAST: RefCell<HashSet<ParamId>> = RefCell::new(HashSet::new());
    /// The casts made at the start of the forward pass now running.
    static MADE: RefCell<Option<Made>> = const { RefCell::new(None) };
}

/// Casts made for one forward pass: one backend's primitives, by parameter.
struct Made {
    dtype: FloatDType,
    /// `HashMap<ParamId, FloatTensor<B>>` for the pass's backend `B`.
    tensors: Box<dyn Any>,
}

/// Keeps a forward pass's casts until dropped.
#[must_use = "the casts are forgotten when the guard is dropped"]
pub struct WeightCasts(());

impl Drop for WeightCasts {
    fn drop(&mut self) {
        MADE.with(|m| m.borrow_mut().take());
    }
}

/// Cast, in one call, the parameters of `module` that products have cast before on this thread,
/// for the products of the forward pass that runs until the guard drops. `None` (nothing to
/// keep) outside autocast, where `B` has no own casts, or inside another pass's casts.
pub fn cast_weights<B: Backend, M: Module<B>>(module: &M) -> Option<WeightCasts> {
    let dtype = super::compute_dtype()?;
    let casts = own_ops::installed::<CastsFn<B>>()?;
    if MADE.with(|m| m.borrow().is_some()) {
        return None;
    }
    // The set is borrowed while the module is visited: reading a parameter does not cast.
    let (ids, tensors) = CAST.with(|cast| {
        let mut wanted = Wanted::<B> {
            cast: &cast.borrow(),
            ids: Vec::new(),
            tensors: Vec::new(),
        };
        module.visit(&mut wanted);
        (wanted.ids, wanted.tensors)
    });
    let cast = if tensors.is_empty() {
        Vec::new()
    } else {
        casts(tensors, dtype)
    };
    let tensors: HashMap<ParamId, FloatTensor<B>> = ids.into_iter().zip(cast).collect();
    MADE.with(|m| {
        *m.borrow_mut() = Some(Made {
            dtype,
            tensors: Box::new(tensors),
        })
    });
    Some(WeightCasts(()))
}

/// Collects the parameters to cast.
struct Wanted<'a, B: Backend> {
    cast: &'a HashSet<ParamId>,
    ids: Vec<ParamId>,
    tensors: Vec<FloatTensor<B>>,
}

impl<B: Backend> ModuleVisitor<B> for Wanted<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.cast.contains(&param.id) {
            self.ids.push(param.id);
            self.tensors.push(primitive(param.val()));
        }
    }
}

/// `param` in `dtype` for a product: the pass's cast where [`cast_weights`] made one (for the
/// first product of `param` in the pass), else its own (the own operation where `B` has one,
/// remembered for the next pass; else burn's cast).
pub(super) fn weight<B: Backend, const D: usize>(
    param: &Param<Tensor<B, D>>,
    dtype: FloatDType,
) -> Tensor<B, D> {
    // Taken out: a second product of the same weight casts it again, so that each use has its
    // own node and the two gradients meet in `PassOn`, which sums them in the weight's
    // precision (one node would have summed them in the low precision first).
    let made = MADE.with(|m| {
        let mut m = m.borrow_mut();
        let made = m.as_mut().filter(|made| made.dtype == dtype)?;
        let tensors = made
            .tensors
            .downcast_mut::<HashMap<ParamId, FloatTensor<B>>>()?;
        tensors.remove(&param.id)
    });
    if let Some(t) = made {
        return float(t);
    }
    match own_ops::installed::<CastsFn<B>>() {
        Some(casts) => {
            CAST.with(|c| c.borrow_mut().insert(param.id));
            let [t] = casts(vec![primitive(param.val())], dtype)
                .try_into()
                .unwrap_or_else(|_| unreachable!("one cast per tensor"));
            float(t)
        }
        None => param.val().cast(dtype),
    }
}

/// `tensors` in `dtype`, each as it is where it is in `dtype` already: with `B`'s kernel where
/// one is installed and more than one needs a cast, else burn's cast each.
fn cast_all<B: Backend>(
    mut tensors: Vec<FloatTensor<B>>,
    dtype: FloatDType,
) -> Vec<FloatTensor<B>> {
    let to_cast: Vec<usize> = (0..tensors.len())
        .filter(|&i| tensors[i].dtype() != dtype.into())
        .collect();
    match own_ops::installed::<CastsFn<B>>() {
        Some(casts) if to_cast.len() > 1 => {
            let cast = casts(to_cast.iter().map(|&i| tensors[i].clone()).collect(), dtype);
            for (i, t) in to_cast.into_iter().zip(cast) {
                tensors[i] = t;
            }
        }
        _ => {
            for i in to_cast {
                tensors[i] = B::float_cast(tensors[i].clone(), dtype);
            }
        }
    }
    tensors
}

/// The casts on `Autodiff<B, C>`: made together, each its own node with [`PassOn`].
fn tracked<B: Backend, C: CheckpointStrategy>(
    tensors: Vec<FloatTensor<Autodiff<B, C>>>,
    dtype: FloatDType,
) -> Vec<FloatTensor<Autodiff<B, C>>> {
    let inner = tensors.iter().map(|t| t.primitive.clone()).collect();
    let cast = cast_all::<B>(inner, dtype);
    tensors
        .into_iter()
        .zip(cast)
        .map(|(t, c)| {
            let pass_on = PassOn::<C>(PhantomData);
            match pass_on
                .prepare::<C>([t.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(t, c),
                OpsKind::UnTracked(prep) => prep.finish(c),
            }
        })
        .collect()
}

/// A cast's backward that hands the gradient to the parameter (the state) in the precision it
/// came in, unless the parameter has a gradient from another use already (a weight shared by
/// two products, as in CBAM's channel MLP): then both are widened to the parameter's precision
/// and summed, as burn's casts would have summed them.
#[derive(Debug)]
struct PassOn<C>(PhantomData<C>);

impl<B: Backend, C: CheckpointStrategy> Backward<B, 1> for PassOn<C> {
    type State = FloatTensor<Autodiff<B, C>>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let Some(parent) = parent else {
            return;
        };
        let param = ops.state;
        let grad = match grads.remove::<B>(&param) {
            None => grad,
            Some(earlier) => {
                let own = param.primitive.dtype();
                let widen = |t: FloatTensor<B>| {
                    if t.dtype() == own {
                        t
                    } else {
                        B::float_cast(t, own.into())
                    }
                };
                B::float_add(widen(grad), widen(earlier))
            }
        };
        grads.register::<B>(parent.id, grad);
    }
}
