//! The optimiser of a whole module: burn's `OptimizerAdaptor` (a `SimpleOptimizer` applied
//! parameter by parameter), except that where the update kernel is installed every parameter
//! is updated by one call of it, so the step is one operation in burn-fusion's stream and a
//! few launches instead of one per parameter (MyDenseNet: 364 parameters).
//!
//! Its record is the adaptor's record, a map from parameter to [`AdaptorRecord`], so
//! checkpoints of either resume with the other. Where no kernel is installed (the CPU,
//! `BIRADS_ADAMW_KERNEL=burn`) each parameter takes the rule's own `SimpleOptimizer` step, as
//! in the adaptor.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::GradAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::optim::{
    GradientsParams, LearningRate, MultiGradientsParams, Optimizer, SimpleOptimizer,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::Tensor;
use hashbrown::HashMap;

use super::{installed, Item, Scalars, State};
use crate::own_ops::{float, primitive};

/// An update rule that the kernel runs ([`super::AdamW`], [`super::Adam`]): its scalars at a
/// step, and its state as a [`State`].
pub trait Rule<B: Backend>: SimpleOptimizer<B> {
    /// The scalars of step `time` (from 1) at learning rate `lr`.
    fn scalars(&self, lr: LearningRate, time: usize) -> Scalars;
    fn into_state<const D: usize>(state: Self::State<D>) -> State<B, D>;
    fn from_state<const D: usize>(state: State<B, D>) -> Self::State<D>;
}

/// Rule `O` on the parameters of module `M` (what `AdamW::init` and `Adam::init` give).
#[derive(Clone)]
pub struct Optimiser<O, M, B>
where
    O: Rule<B::InnerBackend>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    rule: O,
    records: HashMap<ParamId, AdaptorRecord<O, B>>,
    module: PhantomData<M>,
}

impl<O, M, B> Optimiser<O, M, B>
where
    O: Rule<B::InnerBackend>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    pub fn new(rule: O) -> Self {
        Optimiser {
            rule,
            records: HashMap::new(),
            module: PhantomData,
        }
    }

    fn step_all(&mut self, lr: LearningRate, module: M, mut grads: GradAdaptor) -> M {
        let Some(update) = installed::<B::InnerBackend>() else {
            return module.map(&mut EachAlone {
                rule: &self.rule,
                records: &mut self.records,
                grads: &mut grads,
                lr,
            });
        };
        let mut gather = Gather::<O, B> {
            records: &mut self.records,
            grads: &mut grads,
            by_time: BTreeMap::new(),
        };
        module.visit(&mut gather);
        // Parameters at different steps (one added to a resumed run) take different scalars.
        let mut updated = HashMap::new();
        for (time, (ids, items)) in gather.by_time {
            let results = update(items, self.rule.scalars(lr, time));
            assert_eq!(results.len(), ids.len(), "an update per parameter");
            updated.extend(ids.into_iter().zip(results.into_iter().map(|r| (time, r))));
        }
        module.map(&mut Scatter::<O, B> {
            records: &mut self.records,
            updated,
        })
    }
}

impl<O, M, B> Optimizer<M, B> for Optimiser<O, M, B>
where
    O: Rule<B::InnerBackend>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    type Record = HashMap<ParamId, AdaptorRecord<O, B>>;

    fn step(&mut self, lr: LearningRate, module: M, grads: GradientsParams) -> M {
        self.step_all(lr, module, grads.into())
    }

    fn step_multi(&mut self, lr: LearningRate, module: M, grads: MultiGradientsParams) -> M {
        self.step_all(lr, module, grads.into())
    }

    fn to_record(&self) -> Self::Record {
        self.records.clone()
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        self.records = record;
        self
    }
}

/// A float tensor of the backend under autodiff `B`.
type Primitive<B> = FloatTensor<<B as AutodiffBackend>::InnerBackend>;

/// Parameters at the same step, and what their update takes.
type Batch<B> = (Vec<ParamId>, Vec<Item<Primitive<B>>>);

/// Without the kernel: each parameter with a gradient takes the rule's step (burn's
/// adaptor, without gradient clipping, which birads does not use).
struct EachAlone<'a, O: SimpleOptimizer<B::InnerBackend>, B: AutodiffBackend> {
    rule: &'a O,
    records: &'a mut HashMap<ParamId, AdaptorRecord<O, B>>,
    grads: &'a mut GradAdaptor,
    lr: LearningRate,
}

impl<O: SimpleOptimizer<B::InnerBackend>, B: AutodiffBackend> ModuleMapper<B>
    for EachAlone<'_, O, B>
{
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some((grad, device)) = self.grads.remove::<B::InnerBackend, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let state = self
            .records
            .remove(&id)
            .map(|r| O::to_device(r.into_state(), &device));
        // A gradient amp's casts handed on in the product's precision (`amp::casts`) is
        // widened first (exactly); burn's steps take one precision.
        let grad = crate::amp::in_dtype(grad, tensor.dtype());
        let (value, state) = self
            .rule
            .step(self.lr, on(tensor, &device).inner(), grad, state);
        if let Some(state) = state {
            self.records.insert(id, AdaptorRecord::from_state(state));
        }
        Param::from_mapped_value(id, require(Tensor::from_inner(value), require_grad), mapper)
    }
}

/// With the kernel, first: every parameter with a gradient, its state taken out of the
/// records, grouped by the step it is at.
struct Gather<'a, O: SimpleOptimizer<B::InnerBackend>, B: AutodiffBackend> {
    records: &'a mut HashMap<ParamId, AdaptorRecord<O, B>>,
    grads: &'a mut GradAdaptor,
    by_time: BTreeMap<usize, Batch<B>>,
}

impl<O: Rule<B::InnerBackend>, B: AutodiffBackend> ModuleVisitor<B> for Gather<'_, O, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some((grad, device)) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let state = self
            .records
            .remove(&param.id)
            .map(|r| O::into_state(O::to_device(r.into_state::<D>(), &device)));
        let (time, moments) = State::next(state);
        let item = Item {
            param: primitive(on(param.val(), &device).inner()),
            grad: primitive(grad),
            moments,
        };
        let (ids, items) = self.by_time.entry(time).or_default();
        ids.push(param.id);
        items.push(item);
    }
}

/// Then: each updated parameter replaced by its new value, its new state recorded.
struct Scatter<'a, O: SimpleOptimizer<B::InnerBackend>, B: AutodiffBackend> {
    records: &'a mut HashMap<ParamId, AdaptorRecord<O, B>>,
    updated: HashMap<ParamId, (usize, [Primitive<B>; 3])>,
}

impl<O: Rule<B::InnerBackend>, B: AutodiffBackend> ModuleMapper<B> for Scatter<'_, O, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some((time, [p, m, v])) = self.updated.remove(&id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let state = O::from_state::<D>(State::after(time, [m, v]));
        self.records.insert(id, AdaptorRecord::from_state(state));
        let value = Tensor::from_inner(float(p));
        Param::from_mapped_value(id, require(value, tensor.is_require_grad()), mapper)
    }
}

/// `tensor`, tracked by autodiff where the parameter it replaces was.
fn require<B: AutodiffBackend, const D: usize>(
    tensor: Tensor<B, D>,
    require_grad: bool,
) -> Tensor<B, D> {
    if require_grad {
        tensor.require_grad()
    } else {
        tensor
    }
}

/// `tensor` on `device` (moved only where it is elsewhere, as burn's adaptor does).
fn on<B: Backend, const D: usize>(tensor: Tensor<B, D>, device: &B::Device) -> Tensor<B, D> {
    if tensor.device() == *device {
        tensor
    } else {
        tensor.to_device(device)
    }
}
