//! Casts of many tensors as one cubecl kernel: one thread per value of the outputs' buffers
//! taken one after the other, each output laid out as its input where that is a permutation of a
//! contiguous tensor (the parameters are; then every value is read and written at the
//! thread's own place), else contiguous.

use burn::tensor::DType;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

use crate::cube::many::{at, laid_out_like, launches, per_launch, sequence};
use crate::cube::reduce::threads;

/// Threads per cube.
const ELEMENTWISE: u32 = 256;

/// The most tensors one launch casts. Each binds two buffers, and on CUDA every buffer is a
/// kernel argument of about 48 bytes (its address and static metadata, `adamw/kernel.rs`):
/// 32 tensors take 3 KB of the 4 KB that CUDA drivers before 12.1 allow.
const MOST_PER_LAUNCH: usize = 32;

/// `outputs[i] = inputs[i]` in the outputs' precision, for several tensors at once (`same`:
/// all inputs laid out as their outputs).
#[cube(launch)]
fn cast_kernel<P: Float, Q: Float>(
    inputs: &Sequence<Tensor<P>>,
    outputs: &mut Sequence<Tensor<Q>>,
    #[comptime] same: bool,
    #[define(P, Q)] _dtypes: [StorageType; 2],
) {
    let position = ABSOLUTE_POS;
    let mut start = 0usize;
    #[unroll]
    for i in 0..outputs.len() {
        let output = outputs.index_mut(i);
        let end = start + output.len();
        if position >= start && position < end {
            let o = position - start;
            let input = inputs.index(i);
            output[o] = Q::cast_from(input[at::<P, Q>(input, output, o, same)]);
        }
        start = end;
    }
}

/// What tensors cast by one launch share: the kernel's element types and layout argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    from: DType,
    same: bool,
}

/// Each of `tensors` in `dtype` (a copy where it is in `dtype` already), in launches of up to
/// [`MOST_PER_LAUNCH`] tensors alike (fewer where the device binds fewer buffers).
pub fn casts<R: CubeRuntime>(tensors: Vec<CubeTensor<R>>, dtype: DType) -> Vec<CubeTensor<R>> {
    let Some(client) = tensors.first().map(|t| t.client.clone()) else {
        return Vec::new();
    };
    let pairs: Vec<[CubeTensor<R>; 2]> = tensors
        .into_iter()
        .map(|t| {
            let out = laid_out_like(&t, dtype);
            [t, out]
        })
        .collect();
    let key = |[t, out]: &[CubeTensor<R>; 2]| Key {
        from: t.dtype,
        same: t.meta.strides() == out.meta.strides(),
    };
    for (key, chunk) in launches(&pairs, key, per_launch(&client, 2, MOST_PER_LAUNCH)) {
        let total: usize = chunk.iter().map(|[_, out]| out.meta.num_elements()).sum();
        let cube_dim = CubeDim::new_1d(threads(&client, ELEMENTWISE));
        let count = calculate_cube_count_elemwise(&client, total, cube_dim);
        cast_kernel::launch::<R>(
            &client,
            count,
            cube_dim,
            sequence(&chunk, |[t, _]| t),
            sequence(&chunk, |[_, out]| out),
            key.same,
            [key.from, dtype].map(Into::into),
        );
    }
    pairs.into_iter().map(|[_, out]| out).collect()
}
