//! The optimisers' state, and how it is saved and read back.
//!
//! burn's moment state (`AdaptiveMomentumState`) reads its tensors back in the backend's
//! float type: a bf16 run that saved f32 moments (the kernel keeps them in f32) would resume
//! with moments rounded to bf16, and its next steps would differ from the run that did not
//! stop. [`State`] is laid out as burn's `AdamWState` and `AdamState` (a record of one is a
//! record of the other), but its moments come back in the type the step keeps them in: f32
//! where the update kernel is installed, the device's float type where burn's step runs.

use burn::optim::{AdamState, AdamWState, AdaptiveMomentumState};
use burn::record::{PrecisionSettings, Record};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{get_device_settings, DType, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::installed;
use crate::own_ops::{float, primitive};

/// The state of one parameter: [`AdamW`](super::AdamW)'s and [`Adam`](super::Adam)'s.
#[derive(Record, Clone)]
pub struct State<B: Backend, const D: usize> {
    pub momentum: Momentum<B, D>,
}

impl<B: Backend, const D: usize> State<B, D> {
    /// The step that follows `state` (1 without one) and the moments it starts from (none on
    /// a first step), as the update takes them.
    pub fn next(state: Option<Self>) -> (usize, Option<[FloatTensor<B>; 2]>) {
        match state {
            Some(State { momentum: m }) => (
                m.time + 1,
                Some([primitive(m.moment_1.0), primitive(m.moment_2.0)]),
            ),
            None => (1, None),
        }
    }

    /// The state after step `time`, whose update gave moments `m` and `v`.
    pub fn after(time: usize, [m, v]: [FloatTensor<B>; 2]) -> Self {
        let momentum = Momentum {
            time,
            moment_1: Moment(float(m)),
            moment_2: Moment(float(v)),
            max_moment_2: None,
        };
        State { momentum }
    }
}

/// burn's `AdaptiveMomentumState` with [`Moment`]s.
#[derive(Record, Clone)]
pub struct Momentum<B: Backend, const D: usize> {
    /// The number of steps taken.
    pub time: usize,
    pub moment_1: Moment<B, D>,
    pub moment_2: Moment<B, D>,
    /// AMSGrad's maximum (never set here; kept so that the record is burn's).
    pub max_moment_2: Option<Moment<B, D>>,
}

/// A moment tensor, saved as burn saves a float tensor and read back in [`moment_dtype`].
#[derive(Clone, Debug)]
pub struct Moment<B: Backend, const D: usize>(pub Tensor<B, D>);

/// What a [`Moment`] is saved as: the tensor's data, as burn writes a float tensor's.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(transparent)]
pub struct MomentItem(TensorData);

impl<B: Backend, const D: usize> Record<B> for Moment<B, D> {
    type Item<S: PrecisionSettings> = MomentItem;

    fn into_item<S: PrecisionSettings>(self) -> MomentItem {
        MomentItem(self.0.into_data().convert::<S::FloatElem>())
    }

    fn from_item<S: PrecisionSettings>(item: MomentItem, device: &B::Device) -> Self {
        let dtype = moment_dtype::<B>(device);
        Moment(Tensor::from_data(
            item.0.convert_dtype(dtype),
            (device, dtype),
        ))
    }
}

/// The type a step on `B` keeps its moments in: f32 with the update kernel, else the
/// device's float type (burn's step makes its moments in it).
pub fn moment_dtype<B: Backend>(device: &B::Device) -> DType {
    if installed::<B>().is_some() {
        DType::F32
    } else {
        get_device_settings::<B>(device).float_dtype.into()
    }
}

impl<B: Backend, const D: usize> State<B, D> {
    pub fn to_device(self, device: &B::Device) -> Self {
        let m = self.momentum;
        let to = |t: Moment<B, D>| Moment(t.0.to_device(device));
        State {
            momentum: Momentum {
                time: m.time,
                moment_1: to(m.moment_1),
                moment_2: to(m.moment_2),
                max_moment_2: m.max_moment_2.map(to),
            },
        }
    }
}

impl<B: Backend, const D: usize> From<AdaptiveMomentumState<B, D>> for State<B, D> {
    fn from(m: AdaptiveMomentumState<B, D>) -> Self {
        State {
            momentum: Momentum {
                time: m.time,
                moment_1: Moment(m.moment_1),
                moment_2: Moment(m.moment_2),
                max_moment_2: m.max_moment_2.map(Moment),
            },
        }
    }
}

impl<B: Backend, const D: usize> From<State<B, D>> for AdaptiveMomentumState<B, D> {
    fn from(s: State<B, D>) -> Self {
        let m = s.momentum;
        let mut burn = AdaptiveMomentumState::new(m.time, m.moment_1.0, m.moment_2.0);
        burn.max_moment_2 = m.max_moment_2.map(|t| t.0);
        burn
    }
}

impl<B: Backend, const D: usize> From<State<B, D>> for AdamWState<B, D> {
    fn from(s: State<B, D>) -> Self {
        AdamWState::new(s.into())
    }
}

impl<B: Backend, const D: usize> From<State<B, D>> for AdamState<B, D> {
    fn from(s: State<B, D>) -> Self {
        AdamState::new(s.into())
    }
}

impl<B: Backend, const D: usize> From<AdamWState<B, D>> for State<B, D> {
    fn from(s: AdamWState<B, D>) -> Self {
        s.momentum.into()
    }
}

impl<B: Backend, const D: usize> From<AdamState<B, D>> for State<B, D> {
    fn from(s: AdamState<B, D>) -> Self {
        s.momentum.into()
    }
}
