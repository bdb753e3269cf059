//! AdamW's update kernel (`kernel.rs`) on burn's cubecl backends: the whole optimiser step in
//! a few launches (one per group of parameters alike), and on a fusion backend one custom
//! operation in burn-fusion's stream (`crate::cube`).

use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorMetadata;

use super::{kernel, Item, Scalars};
use crate::cube::{Kernels, Launch};

/// The updates of `items` on backend `B` (`[p, g]` and the moments, none on a first step →
/// `[p, m, v]`, the moments in f32, `kernel::MOMENTS`), all as one operation.
pub fn update<B: Launch>(items: Vec<Item<FloatTensor<B>>>, s: Scalars) -> Vec<[FloatTensor<B>; 3]> {
    let mut inputs = Vec::with_capacity(4 * items.len());
    let mut outputs = Vec::with_capacity(3 * items.len());
    let mut with_moments = Vec::with_capacity(items.len());
    for Item {
        param,
        grad,
        moments,
    } in items
    {
        let shape = param.shape();
        outputs.extend([
            (shape.clone(), param.dtype()),
            (shape.clone(), kernel::MOMENTS),
            (shape, kernel::MOMENTS),
        ]);
        with_moments.push(moments.is_some());
        inputs.extend([param, grad]);
        inputs.extend(moments.into_iter().flatten());
    }
    let run = move |inputs: Vec<_>| {
        let mut inputs = inputs.into_iter();
        let mut next = || inputs.next().expect("the inputs launched");
        let items = with_moments
            .iter()
            .map(|&with| Item {
                param: next(),
                grad: next(),
                moments: with.then(|| [next(), next()]),
            })
            .collect();
        kernel::update(items, s).into_iter().flatten().collect()
    };
    let results = B::launch_all("birads_adamw_update", inputs, outputs, Box::new(run));
    let mut results = results.into_iter();
    std::iter::from_fn(|| Some([results.next()?, results.next()?, results.next()?])).collect()
}

/// The kernel, for `crate::cube::set`: the step of [`super::AdamW`] on `B` (not where
/// `BIRADS_ADAMW_KERNEL=burn`).
pub struct Update;

impl Kernels for Update {
    fn install<B: Launch>() {
        super::install::<B>(update::<B>);
    }

    fn uninstall<B: Launch>() {
        super::uninstall::<B>();
    }
}
