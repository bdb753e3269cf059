//! AdamW's update of one parameter as one cubecl kernel: one thread per value, reading the
//! parameter, its gradient and both moments (any strides, each in its own precision),
//! computing in f32, writing the parameter in its precision and the moments in f32.

use burn::tensor::DType;
use burn_cubecl::ops::permute;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

use super::Scalars;
use crate::cube::reduce::{empty, threads};

/// Threads per cube.
const ELEMENTWISE: u32 = 256;

/// The moments' precision, whatever the parameter's (as AMP's optimisers keep them): in half
/// precision (1 − β₂)·g² of a small gradient rounds to zero in f16 and to 8 bits in bf16, and
/// a second moment that stays near zero makes every later step m/√v too large (a tenfold
/// step after a hundred steps). Moments read back from a record in another precision are
/// read in theirs and written in this one.
pub(super) const MOMENTS: DType = DType::F32;

/// Where the value at `o` in `out`'s buffer lies in `t`: `o` itself where `t` is laid out as
/// `out` (`same`), else through its coordinates (`out` is dense, so the coordinate along `d`
/// is `o / stride(d) mod shape(d)` in any order of its dimensions).
#[cube]
fn at<F: Float, O: Float>(
    t: &Tensor<F>,
    out: &Tensor<O>,
    o: usize,
    #[comptime] same: bool,
) -> usize {
    let mut offset = o;
    if !same {
        offset = 0;
        for d in 0..t.rank() {
            offset += (o / out.stride(d)) % out.shape(d) * t.stride(d);
        }
    }
    offset
}

/// `g ← g + l2·p` (Adam's penalty; 0 for AdamW), `m ← β₁·m + (1 − β₁)·g`,
/// `v ← β₂·v + (1 − β₂)·g²` (from zero when `first`), then
/// `p ← p·decay − lr·(m/c₁)/(√(v/c₂) + ε)`, in burn's order of operations; one thread per
/// value of the outputs' buffer (`same`: which of p, g, m, v are laid out as the outputs).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn update_kernel<P: Float, G: Float, M: Float, N: Float>(
    param: &Tensor<P>,
    grad: &Tensor<G>,
    moment_1: &Tensor<M>,
    moment_2: &Tensor<M>,
    param_out: &mut Tensor<P>,
    moment_1_out: &mut Tensor<N>,
    moment_2_out: &mut Tensor<N>,
    beta_1: f32,
    beta_2: f32,
    factor_1: f32,
    factor_2: f32,
    correction_1: f32,
    correction_2: f32,
    epsilon: f32,
    decay: f32,
    l2: f32,
    lr: f32,
    #[comptime] first: bool,
    #[comptime] same: [bool; 4],
    #[define(P, G, M, N)] _dtypes: [StorageType; 4],
) {
    let o = ABSOLUTE_POS;
    if o >= param_out.len() {
        terminate!();
    }
    let p = f32::cast_from(param[at::<P, P>(param, param_out, o, same[0])]);
    let g = f32::cast_from(grad[at::<G, P>(grad, param_out, o, same[1])]) + p * l2;
    let mut m = g * factor_1;
    let mut v = g * g * factor_2;
    if !first {
        m += f32::cast_from(moment_1[at::<M, P>(moment_1, param_out, o, same[2])]) * beta_1;
        v += f32::cast_from(moment_2[at::<M, P>(moment_2, param_out, o, same[3])]) * beta_2;
    }
    moment_1_out[o] = N::cast_from(m);
    moment_2_out[o] = N::cast_from(v);
    // The step from the moments as computed (the same as stored, in f32).
    let m_hat = m / correction_1;
    let v_hat = v / correction_2;
    let delta = m_hat / (v_hat.sqrt() + epsilon);
    param_out[o] = P::cast_from(p * decay - delta * lr);
}

/// `[p, g]` and the moments `[m, v]` (none on the first step) → `[p, m, v]`, the parameter in
/// its precision, the moments in f32 (`MOMENTS`).
///
/// The outputs are laid out as the parameter (where that is a permutation of a contiguous
/// tensor, else contiguous): the convolutions read their weights in that layout without a copy,
/// and from the second step on the moments share it, so only a gradient laid out otherwise (a
/// convolution's weight gradient comes channels-last from burn-cubecl) is read through its
/// coordinates; the rest is read and written at the thread's own place in each buffer. (Laid
/// out as the gradient instead, the weights cost MyDenseNet 252 more launches per f32 step,
/// copies before its convolutions.)
pub fn update<R: CubeRuntime>(
    param: CubeTensor<R>,
    grad: CubeTensor<R>,
    moments: Option<[CubeTensor<R>; 2]>,
    s: Scalars,
) -> [CubeTensor<R>; 3] {
    let first = moments.is_none();
    let [m, v] = moments.unwrap_or_else(|| [grad.clone(), grad.clone()]);
    let shape = param.meta.shape().clone();
    let order = dense_order(&param).unwrap_or_else(|| (0..shape.num_dims()).collect());
    let like_param = |dtype| laid_out(&param, &order, dtype);
    let (param_out, m_out, v_out) = (
        like_param(param.dtype),
        like_param(MOMENTS),
        like_param(MOMENTS),
    );
    let same = [&param, &grad, &m, &v].map(|t| t.meta.strides() == param_out.meta.strides());
    let dtypes = [param.dtype, grad.dtype, m.dtype, MOMENTS].map(Into::into);
    let client = param.client.clone();
    let cube_dim = CubeDim::new_1d(threads(&client, ELEMENTWISE));
    let count = calculate_cube_count_elemwise(&client, shape.num_elements(), cube_dim);
    update_kernel::launch::<R>(
        &client,
        count,
        cube_dim,
        param.into_tensor_arg(),
        grad.into_tensor_arg(),
        m.into_tensor_arg(),
        v.into_tensor_arg(),
        param_out.clone().into_tensor_arg(),
        m_out.clone().into_tensor_arg(),
        v_out.clone().into_tensor_arg(),
        s.beta_1,
        s.beta_2,
        s.factor_1,
        s.factor_2,
        s.correction_1,
        s.correction_2,
        s.epsilon,
        s.decay,
        s.l2,
        s.lr,
        first,
        same,
        dtypes,
    );
    [param_out, m_out, v_out]
}

/// `t`'s dimensions from the slowest to the fastest in memory, where `t` is a permutation of
/// a contiguous tensor (dimensions of size 1, whose stride means nothing, anywhere).
fn dense_order<R: CubeRuntime>(t: &CubeTensor<R>) -> Option<Vec<usize>> {
    let (shape, strides) = (t.meta.shape(), t.meta.strides());
    let mut order: Vec<usize> = (0..shape.num_dims()).collect();
    order.sort_by_key(|&d| (std::cmp::Reverse(strides[d]), shape[d] == 1));
    let mut expected = 1;
    for &d in order.iter().rev() {
        if shape[d] != 1 && strides[d] != expected {
            return None;
        }
        expected *= shape[d];
    }
    Some(order)
}

/// An uninitialised tensor of `like`'s shape whose dimensions lie in memory in `order`
/// (slowest first).
fn laid_out<R: CubeRuntime>(like: &CubeTensor<R>, order: &[usize], dtype: DType) -> CubeTensor<R> {
    let shape = like.meta.shape();
    let stored: Vec<usize> = order.iter().map(|&d| shape[d]).collect();
    let mut back = vec![0; order.len()];
    for (j, &d) in order.iter().enumerate() {
        back[d] = j;
    }
    permute(empty(like, stored.into(), dtype), &back)
}
