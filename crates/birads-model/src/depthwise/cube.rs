//! The depthwise weight gradient's kernel (`kernel.rs`) on burn's cubecl backends.

use burn::tensor::{DType, Tensor};

use super::kernel;
use crate::amp::cast_like;
use crate::cube::{float, primitive, Kernels, Launch};

/// `∂w` `[C, 1, k, k]` in f32 of the depthwise convolution of `x` (stride 1, `padding`)
/// whose output gradient is `g`: one launch, and one reduction over the shares.
pub fn weight_gradient<B: Launch>(
    x: Tensor<B, 4>,
    g: Tensor<B, 4>,
    k: usize,
    padding: usize,
) -> Tensor<B, 4> {
    let [n, c, h, w] = g.dims();
    let g = cast_like(g, &x);
    let shares = kernel::shares(c, n * h * w);
    let [partial] = B::launch(
        "birads_depthwise_weight_gradient",
        [primitive(x), primitive(g)],
        [([shares, c, k * k].into(), DType::F32)],
        Box::new(move |inputs| [kernel::weight_gradient(inputs, k, padding, shares)]),
    );
    let partial = float::<B, 3>(partial);
    let sum = if shares > 1 {
        partial.sum_dim(0)
    } else {
        partial
    };
    sum.reshape([c, 1, k, k])
}

/// The kernel, for `crate::cube::set` (not used where `BIRADS_DEPTHWISE_KERNEL=burn`).
pub struct WeightGradient;

impl Kernels for WeightGradient {
    fn install<B: Launch>() {
        super::install_weight_gradient(weight_gradient::<B>);
    }

    fn uninstall<B: Launch>() {
        super::uninstall_weight_gradient::<B>();
    }
}
