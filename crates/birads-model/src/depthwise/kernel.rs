//! The depthwise convolution's weight gradient as one cubecl kernel:
//! `∂w[c, i, j] = Σ_{n,y,x} g[n, c, y, x] · x[n, c, y + i − p, x + j − p]` (zero outside).
//!
//! Cube `(c, s)` takes share `s` of channel `c`'s N·H·W output positions; each thread keeps
//! the k² sums of its positions in registers, reading one gradient value and its k×k window
//! of the input (neighbouring threads read neighbouring values, so the loads coalesce and
//! the window's overlap comes from cache), in f32 whatever the tensors' precision. The cube
//! then adds its threads' sums up tap by tap in shared memory and writes `out[s, c, ·]`;
//! the shares are summed outside (one reduction) where there is more than one. Nothing of
//! the size of k² activations is ever written, where the generic path forms the whole
//! product of the windows and the gradient.

use burn::tensor::DType;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

use crate::cube::reduce::{cube_sum, empty, threads};

/// Threads per cube (fewer where the device allows fewer).
const THREADS: u32 = 256;

/// Cubes to aim for over all channels and shares: enough to keep every multiprocessor of a
/// large GPU busy several times over.
const CUBES: usize = 1024;

#[cube(launch)]
fn weight_gradient_kernel<F: Float>(
    x: &Tensor<F>,
    g: &Tensor<F>,
    out: &mut Tensor<f32>,
    padding: u32,
    shares: u32,
    #[comptime] k: usize,
    #[comptime] threads: usize,
    #[define(F)] _dtype: StorageType,
) {
    let c = CUBE_POS_X as usize;
    let share = CUBE_POS_Y as usize;
    let (h, w) = (g.shape(2), g.shape(3));
    let (hx, wx) = (x.shape(2), x.shape(3));
    let plane = h * w;
    let count = g.shape(0) * plane;
    let per_share = count.div_ceil(shares as usize);
    let start = share * per_share;
    let mut end = start + per_share;
    if end > count {
        end = count;
    }
    let p = padding as usize;

    let mut acc = Array::<f32>::new(k * k);
    #[unroll]
    for t in 0..k * k {
        acc[t] = 0.0;
    }
    let mut pos = start + UNIT_POS_X as usize;
    while pos < end {
        let n = pos / plane;
        let rest = pos - n * plane;
        let y = rest / w;
        let col = rest - y * w;
        let at = n * g.stride(0) + c * g.stride(1) + y * g.stride(2) + col * g.stride(3);
        let gv = f32::cast_from(g[at]);
        let image = n * x.stride(0) + c * x.stride(1);
        #[unroll]
        for i in 0..k {
            // Row y + i of the padded input: row y + i − p of x, if inside.
            if y + i >= p && y + i < hx + p {
                let row = image + (y + i - p) * x.stride(2);
                #[unroll]
                for j in 0..k {
                    if col + j >= p && col + j < wx + p {
                        let v = f32::cast_from(x[row + (col + j - p) * x.stride(3)]);
                        acc[i * k + j] += gv * v;
                    }
                }
            }
        }
        pos += CUBE_DIM_X as usize;
    }

    let mut shared = SharedMemory::<f32>::new(threads);
    let first = (share * x.shape(1) + c) * (k * k);
    #[unroll]
    for t in 0..k * k {
        let total = cube_sum(&mut shared, acc[t]);
        if UNIT_POS_X == 0 {
            out[first + t] = total;
        }
    }
}

/// How many shares to split each channel's positions into.
pub fn shares(channels: usize, positions: usize) -> usize {
    let most = positions.div_ceil(THREADS as usize).max(1);
    CUBES.div_ceil(channels.max(1)).clamp(1, most)
}

/// `[x, g]` (one dtype; `x` `[N, C, Hx, Wx]`, `g` `[N, C, H, W]`) → partial sums
/// `[shares, C, k²]` in f32.
pub fn weight_gradient<R: CubeRuntime>(
    [x, g]: [CubeTensor<R>; 2],
    k: usize,
    padding: usize,
    shares: usize,
) -> CubeTensor<R> {
    let channels = x.meta.shape()[1];
    let out = empty(&x, [shares, channels, k * k].into(), DType::F32);
    let (client, dtype) = (x.client.clone(), x.dtype);
    let threads = threads(&client, THREADS);
    weight_gradient_kernel::launch::<R>(
        &client,
        CubeCount::Static(channels as u32, shares as u32, 1),
        CubeDim::new_1d(threads),
        x.into_tensor_arg(),
        g.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        padding as u32,
        shares as u32,
        k,
        threads as usize,
        dtype.into(),
    );
    out
}
