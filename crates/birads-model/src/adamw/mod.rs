//! AdamW and Adam with the whole optimiser step as a few kernel launches on the cubecl
//! backends.
//!
//! burn's `AdamW` updates a parameter with about 18 tensor operations (the two moments, their
//! bias corrections, the step, the decay). burn-fusion fuses them into one or two launches,
//! but it records, matches and plans every one of them on its device thread: for MyDenseNet's
//! parameters that was about 6,000 operations and 15 ms of host work per training step
//! (`examples/host_time.rs`), a quarter of the step's host work and more than PyTorch AMP
//! takes for the whole step on a GPU. Here the step of all parameters is one operation in
//! burn-fusion's stream ([`Optimiser`]), and the kernel (`kernel.rs`) updates up to 8
//! parameter tensors per launch (MyDenseNet's 406 in 51; PyTorch's multi-tensor AdamW also
//! updates many per launch): the parameter, its gradient and both moments read, the new
//! parameter and moments written, everything computed in f32.
//!
//! [`AdamW`] is a `SimpleOptimizer` whose [`State`] is laid out as burn's `AdamWState`, and
//! [`Optimiser`]'s record is burn's adaptor's, so its records are burn's `AdamW` records: a
//! run resumes with either. Where no kernel is installed (the CPU, and
//! `BIRADS_ADAMW_KERNEL=burn`) its step is burn's `AdamW` step itself. The formula is burn's
//! (and PyTorch's `torch.optim.AdamW`), in the same order:
//!
//! ```text
//! m ← β₁·m + (1 − β₁)·g            v ← β₂·v + (1 − β₂)·g²      (first step: m, v from 0)
//! p ← p·(1 − lr·λ) − lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
//! ```
//!
//! [`Adam`] (MyDenseNet's recipe) is the same kernel with the L2 penalty added to the gradient,
//! `g ← g + λ·p`, and no decay; its records are burn's `Adam` records, its fallback burn's
//! `Adam`.
//!
//! The kernel keeps the moments in f32 whatever the parameter's precision, as AMP's
//! optimisers do: in f16 a gradient below about 10⁻² has a (1 − β₂)·g² that rounds to zero
//! or to a few bits, and a second moment stuck near zero makes the steps grow (m/√v; burn's
//! own ε, 10⁻⁸, is zero in f16 too: 0/0 where a gradient is 0). With f32 parameters (the f32
//! and amp runs) its steps equal burn's; with bf16 parameters (a bf16 run) burn's AdamW
//! (`BIRADS_ADAMW_KERNEL=burn`) keeps bf16 moments and the kernel f32 ones. A record keeps the
//! moments in the recorder's precision (f32 in the trainer's), and they are read back in the
//! type the step keeps them in ([`moment_dtype`]), so a resumed bf16 run takes the steps of the
//! run that did not stop. The kernel also reads moments in their own type (bf16 moments from a
//! record that a bf16 run with burn's step saved).

pub mod check;
#[cfg(feature = "cubecl-kernels")]
pub mod cube;
#[cfg(feature = "cubecl-kernels")]
mod kernel;
mod optimiser;
mod state;

pub use optimiser::{Optimiser, Rule};
pub use state::{moment_dtype, Moment, Momentum, State};

use burn::module::AutodiffModule;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, AdamWConfig, LearningRate, SimpleOptimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::Tensor;

use crate::own_ops::{self, float, primitive};

/// The scalars of one update, in f32 as burn's operations apply them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scalars {
    pub beta_1: f32,
    pub beta_2: f32,
    /// 1 − β₁ and 1 − β₂.
    pub factor_1: f32,
    pub factor_2: f32,
    /// The bias corrections 1 − β₁ᵗ and 1 − β₂ᵗ.
    pub correction_1: f32,
    pub correction_2: f32,
    pub epsilon: f32,
    /// 1 − lr·λ, what the parameter is multiplied by before the step (AdamW; 1 for Adam).
    pub decay: f32,
    /// λ·p added to the gradient before the moments (Adam's L2 penalty; 0 for AdamW).
    pub l2: f32,
    pub lr: f32,
}

/// One parameter's update: the parameter, its gradient, and its moments (none on its first
/// step).
pub struct Item<T> {
    pub param: T,
    pub grad: T,
    pub moments: Option<[T; 2]>,
}

/// The updates of parameters at the same step, on a backend's primitives: each `[p, g, m, v]`
/// (no moments on a first step) → `[p, m, v]`, in the order given.
pub type UpdateFn<B> = fn(Vec<Item<FloatTensor<B>>>, Scalars) -> Vec<[FloatTensor<B>; 3]>;

/// Use `update` on `B` from now on (unless `BIRADS_ADAMW_KERNEL=burn`).
pub fn install<B: Backend>(update: UpdateFn<B>) {
    own_ops::install::<UpdateFn<B>>(update, "BIRADS_ADAMW_KERNEL");
}

/// Back to burn's operations on `B`.
pub fn uninstall<B: Backend>() {
    own_ops::uninstall::<UpdateFn<B>>();
}

/// The update installed on `B`, if any.
pub fn installed<B: Backend>() -> Option<UpdateFn<B>> {
    own_ops::installed::<UpdateFn<B>>()
}

/// β₁ and β₂: burn's and PyTorch's defaults.
const BETAS: (f32, f32) = (0.9, 0.999);

/// AdamW with β₁ = 0.9, β₂ = 0.999.
#[derive(Clone)]
pub struct AdamW {
    /// burn's, for the backends without the kernel.
    burn: burn::optim::AdamW,
    epsilon: f32,
    weight_decay: f32,
}

impl AdamW {
    pub fn new(weight_decay: f32, epsilon: f32) -> Self {
        let config = AdamWConfig::new()
            .with_beta_1(BETAS.0)
            .with_beta_2(BETAS.1)
            .with_weight_decay(weight_decay)
            .with_epsilon(epsilon);
        AdamW {
            burn: config.build(),
            epsilon,
            weight_decay,
        }
    }

    /// The optimiser for module `M` (what burn's `AdamWConfig::init` gives, with this step;
    /// its records are burn's).
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(
        weight_decay: f32,
        epsilon: f32,
    ) -> Optimiser<AdamW, M, B> {
        Optimiser::new(AdamW::new(weight_decay, epsilon))
    }

    /// The scalars of step `time` (from 1) at learning rate `lr`, computed as burn does.
    pub fn scalars(&self, lr: LearningRate, time: usize) -> Scalars {
        let decay = (1.0 - lr * f64::from(self.weight_decay)) as f32;
        scalars(self.epsilon, lr, time, decay, 0.0)
    }
}

/// The scalars of step `time` with β = `BETAS`.
fn scalars(epsilon: f32, lr: LearningRate, time: usize, decay: f32, l2: f32) -> Scalars {
    let (beta_1, beta_2) = BETAS;
    let t = time as i32;
    Scalars {
        beta_1,
        beta_2,
        factor_1: 1.0 - beta_1,
        factor_2: 1.0 - beta_2,
        correction_1: 1f32 - beta_1.powi(t),
        correction_2: 1f32 - beta_2.powi(t),
        epsilon,
        decay,
        l2,
        lr: lr as f32,
    }
}

/// One step of either optimiser: the installed kernel's with the scalars of the step's time,
/// or without one, the step of burn's optimiser `burn` (its state burn's, converted both ways).
fn step<B: Backend, O, const D: usize>(
    burn: &O,
    lr: LearningRate,
    [tensor, grad]: [Tensor<B, D>; 2],
    state: Option<State<B, D>>,
    scalars: impl FnOnce(usize) -> Scalars,
) -> (Tensor<B, D>, Option<State<B, D>>)
where
    O: SimpleOptimizer<B>,
    O::State<D>: From<State<B, D>>,
    State<B, D>: From<O::State<D>>,
{
    let Some(update) = installed::<B>() else {
        let (p, s) = burn.step(lr, tensor, grad, state.map(Into::into));
        return (p, s.map(Into::into));
    };
    let (time, moments) = State::next(state);
    let item = Item {
        param: primitive(tensor),
        grad: primitive(grad),
        moments,
    };
    let [p, m, v] = update(vec![item], scalars(time))
        .pop()
        .expect("an update per parameter");
    (float(p), Some(State::after(time, [m, v])))
}

/// Adam (the L2 penalty λ·p added to the gradient, as `torch.optim.Adam(weight_decay=λ)`) with
/// β₁ = 0.9, β₂ = 0.999: [`AdamW`]'s kernel with the penalty in place of the decay; its
/// records are burn's `Adam` records, and without the kernel its step is burn's `Adam` step.
#[derive(Clone)]
pub struct Adam {
    /// burn's, for the backends without the kernel.
    burn: burn::optim::Adam,
    epsilon: f32,
    weight_decay: f32,
}

impl Adam {
    pub fn new(weight_decay: f32, epsilon: f32) -> Self {
        let config = AdamConfig::new()
            .with_beta_1(BETAS.0)
            .with_beta_2(BETAS.1)
            .with_weight_decay((weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay)))
            .with_epsilon(epsilon);
        Adam {
            burn: config.build(),
            epsilon,
            weight_decay,
        }
    }

    /// The optimiser for module `M` (what burn's `AdamConfig::init` gives, with this step;
    /// its records are burn's).
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(
        weight_decay: f32,
        epsilon: f32,
    ) -> Optimiser<Adam, M, B> {
        Optimiser::new(Adam::new(weight_decay, epsilon))
    }

    /// The scalars of step `time` (from 1) at learning rate `lr`.
    pub fn scalars(&self, lr: LearningRate, time: usize) -> Scalars {
        scalars(self.epsilon, lr, time, 1.0, self.weight_decay)
    }
}

impl<B: Backend> Rule<B> for Adam {
    fn scalars(&self, lr: LearningRate, time: usize) -> Scalars {
        Adam::scalars(self, lr, time)
    }

    fn into_state<const D: usize>(state: State<B, D>) -> State<B, D> {
        state
    }

    fn from_state<const D: usize>(state: State<B, D>) -> State<B, D> {
        state
    }
}

impl<B: Backend> SimpleOptimizer<B> for Adam {
    type State<const D: usize> = State<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<State<B, D>>,
    ) -> (Tensor<B, D>, Option<State<B, D>>) {
        step(&self.burn, lr, [tensor, grad], state, |t| {
            self.scalars(lr, t)
        })
    }

    fn to_device<const D: usize>(state: State<B, D>, device: &B::Device) -> State<B, D> {
        state.to_device(device)
    }
}

impl<B: Backend> Rule<B> for AdamW {
    fn scalars(&self, lr: LearningRate, time: usize) -> Scalars {
        AdamW::scalars(self, lr, time)
    }

    fn into_state<const D: usize>(state: State<B, D>) -> State<B, D> {
        state
    }

    fn from_state<const D: usize>(state: State<B, D>) -> State<B, D> {
        state
    }
}

impl<B: Backend> SimpleOptimizer<B> for AdamW {
    type State<const D: usize> = State<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<State<B, D>>,
    ) -> (Tensor<B, D>, Option<State<B, D>>) {
        step(&self.burn, lr, [tensor, grad], state, |t| {
            self.scalars(lr, t)
        })
    }

    fn to_device<const D: usize>(state: State<B, D>, device: &B::Device) -> State<B, D> {
        state.to_device(device)
    }
}
