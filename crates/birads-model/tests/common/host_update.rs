//! AdamW's update on the host, in f32, with the update kernel's contract (`[p, g, m, v]` →
//! `[p, m, v]`, f32 moments, the parameter in its own type): installed on the CPU in place of
//! the cubecl kernel, which `tests/adamw.rs` checks against the formula on wgpu.

use birads_model::adamw::{Item, Scalars};
use birads_model::Cpu;
use burn::prelude::*;
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{FloatDType, TensorMetadata, TensorPrimitive};

/// The updates on the host, in f32, as the kernel computes them.
pub fn update(items: Vec<Item<FloatTensor<Cpu>>>, s: Scalars) -> Vec<[FloatTensor<Cpu>; 3]> {
    items
        .into_iter()
        .map(|i| update_one(i.param, i.grad, i.moments, s))
        .collect()
}

fn update_one(
    p: FloatTensor<Cpu>,
    g: FloatTensor<Cpu>,
    moments: Option<[FloatTensor<Cpu>; 2]>,
    s: Scalars,
) -> [FloatTensor<Cpu>; 3] {
    let shape = p.shape();
    let n = shape.num_elements();
    let flat = |t: FloatTensor<Cpu>| {
        Tensor::<Cpu, 1>::from_primitive(TensorPrimitive::Float(Cpu::float_reshape(
            t,
            Shape::new([n]),
        )))
    };
    let p = flat(p);
    let dtype = p.dtype();
    let p = p.cast(FloatDType::F32);
    let g = flat(g).cast(FloatDType::F32) + p.clone().mul_scalar(s.l2);
    let (m, v) = match moments {
        Some([m, v]) => (flat(m).cast(FloatDType::F32), flat(v).cast(FloatDType::F32)),
        None => (g.zeros_like(), g.zeros_like()),
    };
    let m = m.mul_scalar(s.beta_1) + g.clone().mul_scalar(s.factor_1);
    let v = v.mul_scalar(s.beta_2) + g.powi_scalar(2).mul_scalar(s.factor_2);
    let step = m.clone().div_scalar(s.correction_1)
        / (v.clone()
            .div_scalar(s.correction_2)
            .sqrt()
            .add_scalar(s.epsilon));
    let p = p.mul_scalar(s.decay) - step.mul_scalar(s.lr);
    let back = |t: Tensor<Cpu, 1>| Cpu::float_reshape(t.into_primitive().tensor(), shape.clone());
    [back(p.cast(dtype)), back(m), back(v)]
}
