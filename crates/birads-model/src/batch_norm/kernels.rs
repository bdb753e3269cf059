//! The two kernels of `cube.rs` and their launches on a cubecl runtime: one cube per
//! channel, whose threads stride over the channel's N·H·W values, accumulate in f32 whatever
//! the tensor's precision, and add their partial sums up in shared memory (a tree, log₂ of
//! the threads in steps).

use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

use crate::cube::reduce::{cube_sum, empty, threads};

/// Threads per channel (fewer where the device allows fewer).
const THREADS: u32 = 256;

/// Where value `i` (of the N·H·W values) of channel `c` lies in `t` `[N, C, H, W]`, whatever
/// its strides (a convolution's output is channels-last underneath).
#[cube]
fn at<F: Float>(t: &Tensor<F>, c: usize, i: usize) -> usize {
    let plane = t.shape(2) * t.shape(3);
    let n = i / plane;
    let rest = i - n * plane;
    let h = rest / t.shape(3);
    let w = rest - h * t.shape(3);
    n * t.stride(0) + c * t.stride(1) + h * t.stride(2) + w * t.stride(3)
}

/// Mean and biased variance per channel of `x` `[N, C, H, W]`: one cube per channel.
#[cube(launch)]
fn moments_kernel<F: Float>(
    x: &Tensor<F>,
    mean: &mut Tensor<F>,
    var: &mut Tensor<F>,
    #[comptime] threads: u32,
    #[define(F)] _dtype: StorageType,
) {
    let c = CUBE_POS_X as usize;
    let count = x.shape(0) * x.shape(2) * x.shape(3);
    let step = CUBE_DIM_X as usize;
    let mut shared = SharedMemory::<f32>::new(threads as usize);

    let mut sum = 0.0f32;
    let mut i = UNIT_POS_X as usize;
    while i < count {
        sum += f32::cast_from(x[at::<F>(x, c, i)]);
        i += step;
    }
    let mu = cube_sum(&mut shared, sum) / f32::cast_from(count as u32);

    let mut squares = 0.0f32;
    let mut i = UNIT_POS_X as usize;
    while i < count {
        let d = f32::cast_from(x[at::<F>(x, c, i)]) - mu;
        squares += d * d;
        i += step;
    }
    let variance = cube_sum(&mut shared, squares) / f32::cast_from(count as u32);
    if UNIT_POS_X == 0 {
        mean[c] = F::cast_from(mu);
        var[c] = F::cast_from(variance);
    }
}

/// `Σ g` and `Σ g·(x − mean)` per channel of `g`, `x` `[N, C, H, W]` with `mean` `[C]`: one
/// cube per channel.
#[cube(launch)]
fn gradient_sums_kernel<F: Float>(
    g: &Tensor<F>,
    x: &Tensor<F>,
    mean: &Tensor<F>,
    sum_g: &mut Tensor<F>,
    sum_gx: &mut Tensor<F>,
    #[comptime] threads: u32,
    #[define(F)] _dtype: StorageType,
) {
    let c = CUBE_POS_X as usize;
    let count = x.shape(0) * x.shape(2) * x.shape(3);
    let step = CUBE_DIM_X as usize;
    let mu = f32::cast_from(mean[c * mean.stride(0)]);
    let mut shared = SharedMemory::<f32>::new(threads as usize);

    let mut plain = 0.0f32;
    let mut centred = 0.0f32;
    let mut i = UNIT_POS_X as usize;
    while i < count {
        let gi = f32::cast_from(g[at::<F>(g, c, i)]);
        let xi = f32::cast_from(x[at::<F>(x, c, i)]);
        plain += gi;
        centred += gi * (xi - mu);
        i += step;
    }
    let plain = cube_sum(&mut shared, plain);
    let centred = cube_sum(&mut shared, centred);
    if UNIT_POS_X == 0 {
        sum_g[c] = F::cast_from(plain);
        sum_gx[c] = F::cast_from(centred);
    }
}

/// `[x]` `[N, C, H, W]` → `[mean, var]` `[C]` on a cubecl runtime.
pub fn moments<R: CubeRuntime>([x]: [CubeTensor<R>; 1]) -> [CubeTensor<R>; 2] {
    let channels = x.meta.shape()[1];
    let [mean, var] = [(); 2].map(|_| empty(&x, [channels].into(), x.dtype));
    let (client, dtype, threads) = (x.client.clone(), x.dtype, threads(&x.client, THREADS));
    moments_kernel::launch::<R>(
        &client,
        CubeCount::Static(channels as u32, 1, 1),
        CubeDim::new_1d(threads),
        x.into_tensor_arg(),
        mean.clone().into_tensor_arg(),
        var.clone().into_tensor_arg(),
        threads,
        dtype.into(),
    );
    [mean, var]
}

/// `[g, x, mean]` → `[Σ g, Σ g·(x − mean)]` `[C]` on a cubecl runtime.
pub fn gradient_sums<R: CubeRuntime>([g, x, mean]: [CubeTensor<R>; 3]) -> [CubeTensor<R>; 2] {
    let channels = x.meta.shape()[1];
    let [sum_g, sum_gx] = [(); 2].map(|_| empty(&x, [channels].into(), x.dtype));
    let (client, dtype, threads) = (x.client.clone(), x.dtype, threads(&x.client, THREADS));
    gradient_sums_kernel::launch::<R>(
        &client,
        CubeCount::Static(channels as u32, 1, 1),
        CubeDim::new_1d(threads),
        g.into_tensor_arg(),
        x.into_tensor_arg(),
        mean.into_tensor_arg(),
        sum_g.clone().into_tensor_arg(),
        sum_gx.clone().into_tensor_arg(),
        threads,
        dtype.into(),
    );
    [sum_g, sum_gx]
}
