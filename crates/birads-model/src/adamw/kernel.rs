//! AdamW's update of many parameters as one cubecl kernel: one thread per value, reading the
//! parameter, its gradient and both moments (any strides, each in its own precision),
//! computing in f32, writing the parameter in its precision and the moments in f32.

use burn::tensor::DType;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

use super::{Item, Scalars};
use crate::cube::many::{at, laid_out_like, launches, per_launch, sequence};
use crate::cube::reduce::threads;

/// Threads per cube.
const ELEMENTWISE: u32 = 256;

/// The moments' precision, whatever the parameter's (as AMP's optimisers keep them): in half
/// precision (1 − β₂)·g² of a small gradient rounds to zero in f16 and to 8 bits in bf16, and
/// a second moment that stays near zero makes every later step m/√v too large (a tenfold
/// step after a hundred steps). Moments read back from a record in another precision are
/// read in theirs and written in this one.
pub(super) const MOMENTS: DType = DType::F32;

/// `g ← g + l2·p` (Adam's penalty; 0 for AdamW), `m ← β₁·m + (1 − β₁)·g`,
/// `v ← β₂·v + (1 − β₂)·g²` (from zero when `first`), then
/// `p ← p·decay − lr·(m/c₁)/(√(v/c₂) + ε)`, in burn's order of operations, for several
/// parameters at once: one thread per value of the outputs' buffers taken one after the other
/// (`same`: which of p, g, m, v are laid out as the outputs, for all of them).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn update_kernel<P: Float, G: Float, M: Float, N: Float>(
    params: &Sequence<Tensor<P>>,
    grads: &Sequence<Tensor<G>>,
    moments_1: &Sequence<Tensor<M>>,
    moments_2: &Sequence<Tensor<M>>,
    params_out: &mut Sequence<Tensor<P>>,
    moments_1_out: &mut Sequence<Tensor<N>>,
    moments_2_out: &mut Sequence<Tensor<N>>,
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
    let position = ABSOLUTE_POS;
    let mut start = 0usize;
    #[unroll]
    for i in 0..params_out.len() {
        let param_out = params_out.index_mut(i);
        let end = start + param_out.len();
        if position >= start && position < end {
            let o = position - start;
            let param = params.index(i);
            let grad = grads.index(i);
            let p = f32::cast_from(param[at::<P, P>(param, param_out, o, same[0])]);
            let g = f32::cast_from(grad[at::<G, P>(grad, param_out, o, same[1])]) + p * l2;
            let mut m = g * factor_1;
            let mut v = g * g * factor_2;
            if !first {
                let moment_1 = moments_1.index(i);
                let moment_2 = moments_2.index(i);
                m += f32::cast_from(moment_1[at::<M, P>(moment_1, param_out, o, same[2])]) * beta_1;
                v += f32::cast_from(moment_2[at::<M, P>(moment_2, param_out, o, same[3])]) * beta_2;
            }
            let moment_1_out = moments_1_out.index_mut(i);
            let moment_2_out = moments_2_out.index_mut(i);
            moment_1_out[o] = N::cast_from(m);
            moment_2_out[o] = N::cast_from(v);
            // The step from the moments as computed (the same as stored, in f32).
            let m_hat = m / correction_1;
            let v_hat = v / correction_2;
            let delta = m_hat / (v_hat.sqrt() + epsilon);
            param_out[o] = P::cast_from(p * decay - delta * lr);
        }
        start = end;
    }
}

/// The most parameters one launch updates. Each binds seven buffers, and on CUDA every buffer
/// is a kernel argument: its address and, as cubecl passes it from compute capability 6.0 on,
/// its static metadata (five values of up to 8 bytes), about 48 bytes a buffer, 336 a
/// parameter. Eight parameters (2.7 KB) stay inside the 4 KB of kernel arguments that drivers
/// before CUDA 12.1 allow. The kernel is unrolled parameter by parameter (compiled once per
/// group size and layout).
const MOST_PER_LAUNCH: usize = 8;

/// One parameter made ready for the kernel: its inputs (the gradient in place of the moments
/// on its first step), its outputs, laid out as the parameter, and what groups it with others.
struct Prepared<R: CubeRuntime> {
    inputs: [CubeTensor<R>; 4],
    outputs: [CubeTensor<R>; 3],
    key: Key,
}

/// What parameters updated by one launch share: the kernel's element types and comptime
/// arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    dtypes: [DType; 4],
    first: bool,
    same: [bool; 4],
}

impl<R: CubeRuntime> Prepared<R> {
    fn new(item: Item<CubeTensor<R>>) -> Self {
        let Item {
            param,
            grad,
            moments,
        } = item;
        let first = moments.is_none();
        let [m, v] = moments.unwrap_or_else(|| [grad.clone(), grad.clone()]);
        let like_param = |dtype| laid_out_like(&param, dtype);
        let outputs = [
            like_param(param.dtype),
            like_param(MOMENTS),
            like_param(MOMENTS),
        ];
        let inputs = [param, grad, m, v];
        let same = inputs
            .each_ref()
            .map(|t| t.meta.strides() == outputs[0].meta.strides());
        let dtypes = [inputs[0].dtype, inputs[1].dtype, inputs[2].dtype, MOMENTS];
        let key = Key {
            dtypes,
            first,
            same,
        };
        Prepared {
            inputs,
            outputs,
            key,
        }
    }
}

/// The updates of `items`, each `[p, g]` and the moments `[m, v]` (none on a first step) →
/// `[p, m, v]`, the parameter in its precision, the moments in f32 (`MOMENTS`): the
/// parameters that share a [`Key`] in launches of up to [`MOST_PER_LAUNCH`] (fewer where the
/// device binds fewer buffers).
///
/// The outputs are laid out as the parameter (where that is a permutation of a contiguous
/// tensor, else contiguous): the convolutions read their weights in that layout without a copy,
/// and from the second step on the moments share it, so only a gradient laid out otherwise (a
/// convolution's weight gradient comes channels-last from burn-cubecl) is read through its
/// coordinates; the rest is read and written at the thread's own place in each buffer. (Laid
/// out as the gradient instead, the weights cost MyDenseNet 252 more launches per f32 step,
/// copies before its convolutions.)
pub fn update<R: CubeRuntime>(
    items: Vec<Item<CubeTensor<R>>>,
    s: Scalars,
) -> Vec<[CubeTensor<R>; 3]> {
    let Some(client) = items.first().map(|item| item.param.client.clone()) else {
        return Vec::new();
    };
    let most = per_launch(&client, 7, MOST_PER_LAUNCH);
    let prepared: Vec<Prepared<R>> = items.into_iter().map(Prepared::new).collect();
    for (key, chunk) in launches(&prepared, |p| p.key, most) {
        launch(&client, &chunk, key, s);
    }
    prepared.into_iter().map(|p| p.outputs).collect()
}

/// One launch of the kernel over `chunk`, which shares `key`.
fn launch<R: CubeRuntime>(client: &ComputeClient<R>, chunk: &[&Prepared<R>], key: Key, s: Scalars) {
    let total: usize = chunk.iter().map(|p| p.outputs[0].meta.num_elements()).sum();
    let cube_dim = CubeDim::new_1d(threads(client, ELEMENTWISE));
    let count = calculate_cube_count_elemwise(client, total, cube_dim);
    update_kernel::launch::<R>(
        client,
        count,
        cube_dim,
        sequence(chunk, |p| &p.inputs[0]),
        sequence(chunk, |p| &p.inputs[1]),
        sequence(chunk, |p| &p.inputs[2]),
        sequence(chunk, |p| &p.inputs[3]),
        sequence(chunk, |p| &p.outputs[0]),
        sequence(chunk, |p| &p.outputs[1]),
        sequence(chunk, |p| &p.outputs[2]),
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
        key.first,
        key.same,
        key.dtypes.map(Into::into),
    );
}
