//! AdamW with its update as one kernel per parameter on the cubecl backends.
//!
//! burn's `AdamW` updates a parameter with about 18 tensor operations (the two moments, their
//! bias corrections, the step, the decay). burn-fusion fuses them into one or two launches,
//! but it records, matches and plans every one of them on its device thread: for MyDenseNet's
//! 364 parameters that was about 6,000 operations and 15 ms of host work per training step
//! (`examples/host_time.rs`), a quarter of the step's host work and more than PyTorch AMP
//! takes for the whole step on a GPU. Here the update is one operation in burn-fusion's
//! stream and one launch (`kernel.rs`): the parameter, its gradient and both moments read,
//! the new parameter and moments written, everything computed in f32.
//!
//! [`AdamW`] is a `SimpleOptimizer` whose state is burn's `AdamWState`, so its records are
//! burn's `AdamW` records: a run resumes with either. Where no kernel is installed (the CPU,
//! and `BIRADS_ADAMW_KERNEL=burn`) its step is burn's `AdamW` step itself. The formula is
//! burn's (and PyTorch's `torch.optim.AdamW`), in the same order:
//!
//! ```text
//! m ← β₁·m + (1 − β₁)·g            v ← β₂·v + (1 − β₂)·g²      (first step: m, v from 0)
//! p ← p·(1 − lr·λ) − lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
//! ```
//!
//! The kernel keeps the moments in f32 whatever the parameter's precision, as AMP's
//! optimisers do: in f16 a gradient below about 10⁻² has a (1 − β₂)·g² that rounds to zero
//! or to a few bits, and a second moment stuck near zero makes the steps grow (m/√v; burn's
//! own ε, 10⁻⁸, is zero in f16 too: 0/0 where a gradient is 0). With f32 parameters (the f32
//! and amp runs) its steps equal burn's; with bf16 parameters (a bf16 run) burn's AdamW
//! (`BIRADS_ADAMW_KERNEL=burn`) keeps bf16 moments and the kernel f32 ones. A record saved
//! by a bf16 run stores the moments in bf16 (burn's recorder writes the backend's type); the
//! kernel reads them in that precision and carries on in f32.

#[cfg(feature = "cubecl-kernels")]
pub mod cube;
#[cfg(feature = "cubecl-kernels")]
mod kernel;

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamWConfig, AdamWState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
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
    /// 1 − lr·λ, what the parameter is multiplied by before the step.
    pub decay: f32,
    pub lr: f32,
}

/// One update on a backend's primitives: `[p, g, m, v]` (no moments on the first step) →
/// `[p, m, v]`.
pub type UpdateFn<B> =
    fn(FloatTensor<B>, FloatTensor<B>, Option<[FloatTensor<B>; 2]>, Scalars) -> [FloatTensor<B>; 3];

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
    beta_1: f32,
    beta_2: f32,
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
            beta_1: BETAS.0,
            beta_2: BETAS.1,
            epsilon,
            weight_decay,
        }
    }

    /// The optimiser for module `M` (what burn's `AdamWConfig::init` gives, with this step).
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(
        weight_decay: f32,
        epsilon: f32,
    ) -> OptimizerAdaptor<AdamW, M, B> {
        OptimizerAdaptor::from(AdamW::new(weight_decay, epsilon))
    }

    /// The scalars of step `time` (from 1) at learning rate `lr`, computed as burn does.
    pub fn scalars(&self, lr: LearningRate, time: usize) -> Scalars {
        let t = time as i32;
        Scalars {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            factor_1: 1.0 - self.beta_1,
            factor_2: 1.0 - self.beta_2,
            correction_1: 1f32 - self.beta_1.powi(t),
            correction_2: 1f32 - self.beta_2.powi(t),
            epsilon: self.epsilon,
            decay: (1.0 - lr * f64::from(self.weight_decay)) as f32,
            lr: lr as f32,
        }
    }
}

impl<B: Backend> SimpleOptimizer<B> for AdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let Some(update) = installed::<B>() else {
            return self.burn.step(lr, tensor, grad, state);
        };
        let (time, moments) = match state {
            Some(AdamWState { momentum: m }) => (
                m.time + 1,
                Some([primitive(m.moment_1), primitive(m.moment_2)]),
            ),
            None => (1, None),
        };
        let scalars = self.scalars(lr, time);
        let [p, m, v] = update(primitive(tensor), primitive(grad), moments, scalars);
        let momentum = AdaptiveMomentumState::new(time, float(m), float(v));
        (float(p), Some(AdamWState::new(momentum)))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <burn::optim::AdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}
