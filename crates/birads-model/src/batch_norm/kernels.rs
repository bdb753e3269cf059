//! The two kernels of `cube.rs` and their launches on a cubecl runtime: one cube per
//! channel, whose threads stride over the channel's N·L values, accumulate in f32 whatever
//! the tensor's precision, and add their partial sums up in shared memory (a tree, log₂ of
//! the threads in steps).

use burn::tensor::Shape;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

/// Threads per channel (fewer where the device allows fewer).
const THREADS: u32 = 256;

/// The sum of every thread's `value` in the cube (all threads get it); `shared` holds one
/// value per thread.
#[cube]
fn cube_sum(shared: &mut SharedMemory<f32>, value: f32) -> f32 {
    let unit = UNIT_POS_X as usize;
    shared[unit] = value;
    sync_cube();
    let mut half = CUBE_DIM_X as usize / 2;
    while half > 0 {
        if unit < half {
            let pair = shared[unit] + shared[unit + half];
            shared[unit] = pair;
        }
        sync_cube();
        half /= 2;
    }
    let total = shared[0];
    sync_cube();
    total
}

/// Where value `i` (of the N·L values) of channel `c` lies in `t` `[N, C, L]`.
#[cube]
fn at<F: Float>(t: &Tensor<F>, c: usize, i: usize, positions: usize) -> usize {
    let n = i / positions;
    let l = i - n * positions;
    n * t.stride(0) + c * t.stride(1) + l * t.stride(2)
}

/// Mean and biased variance per channel of `x` `[N, C, L]`: one cube per channel.
#[cube(launch)]
fn moments_kernel<F: Float>(
    x: &Tensor<F>,
    mean: &mut Tensor<F>,
    var: &mut Tensor<F>,
    #[comptime] threads: u32,
    #[define(F)] _dtype: StorageType,
) {
    let c = CUBE_POS_X as usize;
    let positions = x.shape(2);
    let count = x.shape(0) * positions;
    let step = CUBE_DIM_X as usize;
    let mut shared = SharedMemory::<f32>::new(threads as usize);

    let mut sum = 0.0f32;
    let mut i = UNIT_POS_X as usize;
    while i < count {
        sum += f32::cast_from(x[at::<F>(x, c, i, positions)]);
        i += step;
    }
    let mu = cube_sum(&mut shared, sum) / f32::cast_from(count as u32);

    let mut squares = 0.0f32;
    let mut i = UNIT_POS_X as usize;
    while i < count {
        let d = f32::cast_from(x[at::<F>(x, c, i, positions)]) - mu;
        squares += d * d;
        i += step;
    }
    let variance = cube_sum(&mut shared, squares) / f32::cast_from(count as u32);
    if UNIT_POS_X == 0 {
        mean[c] = F::cast_from(mu);
        var[c] = F::cast_from(variance);
    }
}

/// `Σ g` and `Σ g·(x − mean)` per channel of `g`, `x` `[N, C, L]` with `mean` `[1, C, 1]`:
/// one cube per channel.
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
    let positions = x.shape(2);
    let count = x.shape(0) * positions;
    let step = CUBE_DIM_X as usize;
    let mu = f32::cast_from(mean[c * mean.stride(1)]);
    let mut shared = SharedMemory::<f32>::new(threads as usize);

    let mut plain = 0.0f32;
    let mut centred = 0.0f32;
    let mut i = UNIT_POS_X as usize;
    while i < count {
        let gi = f32::cast_from(g[at::<F>(g, c, i, positions)]);
        let xi = f32::cast_from(x[at::<F>(x, c, i, positions)]);
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

/// Threads per cube on this device: `THREADS`, or the largest power of two it allows.
fn threads<R: CubeRuntime>(client: &ComputeClient<R>) -> u32 {
    let most = client.properties().hardware.max_cube_dim.0.max(1);
    let mut threads = THREADS;
    while threads > most {
        threads /= 2;
    }
    threads
}

/// Two `[C]` outputs of the dtype of `like`, on its device.
fn two_outputs<R: CubeRuntime>(like: &CubeTensor<R>, channels: usize) -> [CubeTensor<R>; 2] {
    let new = || {
        empty_device_dtype(
            like.client.clone(),
            like.device.clone(),
            Shape::new([channels]),
            like.dtype,
        )
    };
    [new(), new()]
}

/// `[x]` `[N, C, L]` → `[mean, var]` `[C]` on a cubecl runtime.
pub(super) fn moments<R: CubeRuntime>([x]: [CubeTensor<R>; 1]) -> [CubeTensor<R>; 2] {
    let channels = x.meta.shape()[1];
    let [mean, var] = two_outputs(&x, channels);
    let (client, dtype, threads) = (x.client.clone(), x.dtype, threads(&x.client));
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

/// `[g, x, mean]` (`mean` as `[1, C, 1]`) → `[Σ g, Σ g·(x − mean)]` `[C]` on a cubecl runtime.
pub(super) fn gradient_sums<R: CubeRuntime>(
    [g, x, mean]: [CubeTensor<R>; 3],
) -> [CubeTensor<R>; 2] {
    let channels = x.meta.shape()[1];
    let [sum_g, sum_gx] = two_outputs(&x, channels);
    let (client, dtype, threads) = (x.client.clone(), x.dtype, threads(&x.client));
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
