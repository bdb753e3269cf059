//! BatchNorm's per-channel sums as cubecl kernels of birads' own, one launch each, for the
//! cubecl backends (CUDA's; wgpu's for the check without a GPU).
//!
//! burn reduces one axis per launch, so a sum over batch and positions of `[N, C, L]` is two
//! launches, and BatchNorm needs two such sums in each direction: 4 launches forward and 4
//! backward per BatchNorm, 546 each way in a MyDenseNet training step. Each kernel here
//! gives a channel one cube, whose threads stride over the channel's N·H·W values, accumulate
//! in f32 whatever the tensor's precision, and add their partial sums up in shared memory:
//!
//! - `moments`: mean and biased variance of `x`, in two passes over the values (the mean
//!   first, then the squared deviations from it), as the generic path computes them;
//! - `gradient_sums`: `Σ g` and `Σ g·(x − mean)` for the backward.
//!
//! On a fusion backend each is one custom operation in burn-fusion's stream (`crate::cube`;
//! it ends the fused run before it, as burn's reductions did).

use burn::tensor::Tensor;

use super::kernels::{gradient_sums, moments};
use super::{PerChannel, Reductions};
use crate::cube::{float, primitive, Kernels, Launch};

/// Mean and biased variance per channel of `x` `[N, C, H, W]`: one launch.
fn moments_of<B: Launch>(x: Tensor<B, 4>) -> PerChannel<B> {
    let ([_, c, _, _], dtype) = (x.dims(), x.dtype());
    let outputs = [([c].into(), dtype), ([c].into(), dtype)];
    let [mean, var] = B::launch(
        "birads_batch_norm_moments",
        [primitive(x)],
        outputs,
        Box::new(moments::<B::Runtime>),
    );
    (float(mean), float(var))
}

/// `Σ g` and `Σ g·(x − mean)` per channel: one launch.
fn gradient_sums_of<B: Launch>(
    g: Tensor<B, 4>,
    x: Tensor<B, 4>,
    mean: Tensor<B, 1>,
) -> PerChannel<B> {
    let ([_, c, _, _], dtype) = (x.dims(), x.dtype());
    let outputs = [([c].into(), dtype), ([c].into(), dtype)];
    let inputs = [primitive(g), primitive(x), primitive(mean)];
    let [sum_g, sum_gx] = B::launch(
        "birads_batch_norm_gradient_sums",
        inputs,
        outputs,
        Box::new(gradient_sums::<B::Runtime>),
    );
    (float(sum_g), float(sum_gx))
}

/// The kernels on backend `B` (burn's `CubeBackend`, or burn's fusion backend over it).
pub fn reductions<B: Launch>() -> Reductions<B> {
    Reductions {
        moments: moments_of::<B>,
        gradient_sums: gradient_sums_of::<B>,
    }
}

/// The two kernels, for `crate::cube::set`.
pub struct Sums;

impl Kernels for Sums {
    fn install<B: Launch>() {
        super::install_reductions(reductions::<B>());
    }

    fn uninstall<B: Launch>() {
        super::uninstall_reductions::<B>();
    }
}
