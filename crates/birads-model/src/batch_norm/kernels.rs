//! The four kernels of `cube.rs` and their launches on a cubecl runtime. The two reductions
//! (`moments`, `gradient_sums`) give each channel one cube, whose threads stride over the
//! channel's N·H·W values, accumulate in f32 whatever the tensor's precision, and add their
//! partial sums up in shared memory (a tree, log₂ of the threads in steps). The two
//! elementwise kernels (`normalize`, `input_gradient`) give each value a thread and compute
//! in f32. All of them read their inputs through their strides.
//!
//! Each kind of tensor has a precision of its own, so that under amp no cast runs around a
//! BatchNorm (a cast is one more launch and a copy of every value, and it lost the
//! channels-last order): `F` the input `x` and `∂x` (bf16 where a convolution's product comes
//! in as it is computed), `P` the per-channel tensors (the parameters' f32), `O` the output
//! (bf16 where a convolution reads it) and `G` the output gradient and the output again in the
//! backward. Widening to f32 is exact, and each result is rounded once: the values are those
//! of casts around an f32 BatchNorm.

use burn::tensor::DType;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

use crate::cube::reduce::{cube_sum, empty, threads};

/// Threads per channel (fewer where the device allows fewer).
const THREADS: u32 = 256;
/// Threads per cube of the elementwise kernels (one value each).
const ELEMENTWISE: u32 = 256;

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

/// Mean and biased variance per channel of `x` `[N, C, H, W]`, and the running estimates
/// after them (`momentum`; PyTorch's update, with the unbiased variance): one cube per channel.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn moments_kernel<F: Float, P: Float>(
    x: &Tensor<F>,
    running_mean: &Tensor<P>,
    running_var: &Tensor<P>,
    mean: &mut Tensor<P>,
    var: &mut Tensor<P>,
    new_mean: &mut Tensor<P>,
    new_var: &mut Tensor<P>,
    momentum: f32,
    #[comptime] threads: u32,
    #[define(F, P)] _dtypes: [StorageType; 2],
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
    let values = f32::cast_from(count as u32);
    let variance = cube_sum(&mut shared, squares) / values;
    if UNIT_POS_X == 0 {
        mean[c] = P::cast_from(mu);
        var[c] = P::cast_from(variance);
        let unbiased = variance * (values / f32::max(values - 1.0, 1.0));
        let keep = 1.0 - momentum;
        new_mean[c] = P::cast_from(channel::<P>(running_mean, c) * keep + mu * momentum);
        new_var[c] = P::cast_from(channel::<P>(running_var, c) * keep + unbiased * momentum);
    }
}

/// Where value `o` of `[N, C, H, W]` in the order of its dimensions lies in `t` of that shape,
/// whatever its strides.
#[cube]
fn at_nchw<F: Float>(t: &Tensor<F>, o: usize) -> usize {
    let w = o % t.shape(3);
    let rest = o / t.shape(3);
    let h = rest % t.shape(2);
    let rest = rest / t.shape(2);
    let c = rest % t.shape(1);
    let n = rest / t.shape(1);
    n * t.stride(0) + c * t.stride(1) + h * t.stride(2) + w * t.stride(3)
}

/// Value `o` of `[N, H, W, C]` in that order, as its place in `t` `[N, C, H, W]` and its
/// channel.
#[cube]
fn at_nhwc<F: Float>(t: &Tensor<F>, o: usize) -> (usize, usize) {
    let c = o % t.shape(1);
    let rest = o / t.shape(1);
    let w = rest % t.shape(3);
    let rest = rest / t.shape(3);
    let h = rest % t.shape(2);
    let n = rest / t.shape(2);
    (
        n * t.stride(0) + c * t.stride(1) + h * t.stride(2) + w * t.stride(3),
        c,
    )
}

/// Value `c` of a `[C]` tensor, in f32.
#[cube]
fn channel<F: Float>(t: &Tensor<F>, c: usize) -> f32 {
    f32::cast_from(t[c * t.stride(0)])
}

/// `γ·(x − μ)/σ + β` of `x` `[N, C, H, W]` (any strides), with its ReLU when `relu`, written
/// to `y` `[N, H, W, C]` contiguous in its own precision: one thread per value, in the
/// output's order.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn normalize_kernel<F: Float, P: Float, O: Float>(
    x: &Tensor<F>,
    mean: &Tensor<P>,
    var: &Tensor<P>,
    weight: &Tensor<P>,
    bias: &Tensor<P>,
    y: &mut Tensor<O>,
    epsilon: f32,
    #[comptime] relu: bool,
    #[define(F, P, O)] _dtypes: [StorageType; 3],
) {
    let o = ABSOLUTE_POS;
    if o >= y.len() {
        terminate!();
    }
    let (i, c) = at_nhwc::<F>(x, o);
    let inv = 1.0 / (channel::<P>(var, c) + epsilon).sqrt();
    let normalised = (f32::cast_from(x[i]) - channel::<P>(mean, c)) * inv;
    let mut v = normalised * channel::<P>(weight, c) + channel::<P>(bias, c);
    if relu {
        v = v.max(0.0);
    }
    y[o] = O::cast_from(v);
}

/// The output gradient `g` where the forward's output `y` is positive (with `relu`), else `g`.
/// (`relu` is known when the kernel is compiled, the test inside it only when it runs: the
/// two `if`s stay apart.)
#[allow(clippy::collapsible_if)]
#[cube]
fn through_relu<F: Float>(g: &Tensor<F>, y: &Tensor<F>, o: usize, #[comptime] relu: bool) -> f32 {
    let mut v = f32::cast_from(g[at_nchw::<F>(g, o)]);
    if relu {
        if f32::cast_from(y[at_nchw::<F>(y, o)]) <= 0.0 {
            v = 0.0;
        }
    }
    v
}

/// `Σ g` and `Σ g·x̂` (∂β and ∂γ) per channel, with `x̂ = (x − mean)/√(var + ε)`, of `g`, `x`
/// `[N, C, H, W]` (with `relu`, `g` through the ReLU of the forward's output `y`, both in the
/// output's precision `G`): one cube per channel.
#[allow(clippy::collapsible_if, clippy::too_many_arguments)]
#[cube(launch)]
fn gradient_sums_kernel<F: Float, P: Float, G: Float>(
    g: &Tensor<G>,
    x: &Tensor<F>,
    y: &Tensor<G>,
    mean: &Tensor<P>,
    var: &Tensor<P>,
    sum_g: &mut Tensor<P>,
    sum_gx: &mut Tensor<P>,
    epsilon: f32,
    #[comptime] relu: bool,
    #[comptime] threads: u32,
    #[define(F, P, G)] _dtypes: [StorageType; 3],
) {
    let c = CUBE_POS_X as usize;
    let count = x.shape(0) * x.shape(2) * x.shape(3);
    let step = CUBE_DIM_X as usize;
    let mu = channel::<P>(mean, c);
    let mut shared = SharedMemory::<f32>::new(threads as usize);

    let mut plain = 0.0f32;
    let mut centred = 0.0f32;
    let mut i = UNIT_POS_X as usize;
    while i < count {
        let mut gi = f32::cast_from(g[at::<G>(g, c, i)]);
        if relu {
            if f32::cast_from(y[at::<G>(y, c, i)]) <= 0.0 {
                gi = 0.0;
            }
        }
        let xi = f32::cast_from(x[at::<F>(x, c, i)]);
        plain += gi;
        centred += gi * (xi - mu);
        i += step;
    }
    let plain = cube_sum(&mut shared, plain);
    let centred = cube_sum(&mut shared, centred);
    if UNIT_POS_X == 0 {
        let inv = 1.0 / (channel::<P>(var, c) + epsilon).sqrt();
        sum_g[c] = P::cast_from(plain);
        sum_gx[c] = P::cast_from(centred * inv);
    }
}

/// `∂x = γ/σ·(g − ∂β/M − x̂·∂γ/M)` of `[N, C, H, W]` (M values per channel; with `relu`, `g`
/// through the forward's ReLU; `g` and `y` in `G`), written in the order of its dimensions
/// in `x`'s precision: one thread per value.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn input_gradient_kernel<F: Float, P: Float, G: Float>(
    g: &Tensor<G>,
    x: &Tensor<F>,
    y: &Tensor<G>,
    mean: &Tensor<P>,
    var: &Tensor<P>,
    weight: &Tensor<P>,
    sum_g: &Tensor<P>,
    sum_gx: &Tensor<P>,
    dx: &mut Tensor<F>,
    epsilon: f32,
    #[comptime] relu: bool,
    #[define(F, P, G)] _dtypes: [StorageType; 3],
) {
    let o = ABSOLUTE_POS;
    if o >= dx.len() {
        terminate!();
    }
    let c = (o / (dx.shape(2) * dx.shape(3))) % dx.shape(1);
    let count = f32::cast_from((x.shape(0) * x.shape(2) * x.shape(3)) as u32);
    let inv = 1.0 / (channel::<P>(var, c) + epsilon).sqrt();
    let normalised = (f32::cast_from(x[at_nchw::<F>(x, o)]) - channel::<P>(mean, c)) * inv;
    let gi = through_relu::<G>(g, y, o, relu);
    let centred =
        gi - channel::<P>(sum_g, c) / count - normalised * channel::<P>(sum_gx, c) / count;
    dx[o] = F::cast_from(channel::<P>(weight, c) * inv * centred);
}

/// `[x, running mean, running var]` → `[mean, var, new running mean, new running var]` `[C]`
/// on a cubecl runtime (`moments_kernel`).
pub fn moments<R: CubeRuntime>(
    [x, running_mean, running_var]: [CubeTensor<R>; 3],
    momentum: f64,
) -> [CubeTensor<R>; 4] {
    let (channels, per_channel) = (x.meta.shape()[1], running_mean.dtype);
    let [mean, var, new_mean, new_var] = [(); 4].map(|_| empty(&x, [channels].into(), per_channel));
    let dtypes = [x.dtype.into(), per_channel.into()];
    let (client, threads) = (x.client.clone(), threads(&x.client, THREADS));
    moments_kernel::launch::<R>(
        &client,
        CubeCount::Static(channels as u32, 1, 1),
        CubeDim::new_1d(threads),
        x.into_tensor_arg(),
        running_mean.into_tensor_arg(),
        running_var.into_tensor_arg(),
        mean.clone().into_tensor_arg(),
        var.clone().into_tensor_arg(),
        new_mean.clone().into_tensor_arg(),
        new_var.clone().into_tensor_arg(),
        momentum as f32,
        threads,
        dtypes,
    );
    [mean, var, new_mean, new_var]
}

/// `[x, mean, var, weight, bias]` → `[y]` `[N, H, W, C]` in `output`'s precision
/// (`normalize_kernel`).
pub fn normalize<R: CubeRuntime>(
    [x, mean, var, weight, bias]: [CubeTensor<R>; 5],
    epsilon: f64,
    relu: bool,
    output: DType,
) -> [CubeTensor<R>; 1] {
    let [n, c, h, w] = x.meta.shape().dims::<4>();
    let y = empty(&x, [n, h, w, c].into(), output);
    let dtypes = [x.dtype.into(), mean.dtype.into(), output.into()];
    let client = x.client.clone();
    let cube_dim = CubeDim::new_1d(threads(&client, ELEMENTWISE));
    normalize_kernel::launch::<R>(
        &client,
        calculate_cube_count_elemwise(&client, n * h * w * c, cube_dim),
        cube_dim,
        x.into_tensor_arg(),
        mean.into_tensor_arg(),
        var.into_tensor_arg(),
        weight.into_tensor_arg(),
        bias.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        epsilon as f32,
        relu,
        dtypes,
    );
    [y]
}

/// `[g, x, y, mean, var]` → `[Σ g, Σ g·x̂]` `[C]` in `x`'s precision (`gradient_sums_kernel`;
/// `y`, in `g`'s precision, is read with `relu` only).
pub fn gradient_sums<R: CubeRuntime>(
    [g, x, y, mean, var]: [CubeTensor<R>; 5],
    epsilon: f64,
    relu: bool,
) -> [CubeTensor<R>; 2] {
    let channels = x.meta.shape()[1];
    let [sum_g, sum_gx] = [(); 2].map(|_| empty(&x, [channels].into(), mean.dtype));
    let dtypes = [x.dtype.into(), mean.dtype.into(), g.dtype.into()];
    let (client, threads) = (x.client.clone(), threads(&x.client, THREADS));
    gradient_sums_kernel::launch::<R>(
        &client,
        CubeCount::Static(channels as u32, 1, 1),
        CubeDim::new_1d(threads),
        g.into_tensor_arg(),
        x.into_tensor_arg(),
        y.into_tensor_arg(),
        mean.into_tensor_arg(),
        var.into_tensor_arg(),
        sum_g.clone().into_tensor_arg(),
        sum_gx.clone().into_tensor_arg(),
        epsilon as f32,
        relu,
        threads,
        dtypes,
    );
    [sum_g, sum_gx]
}

/// `[g, x, y, mean, var, weight, Σ g, Σ g·x̂]` → `[∂x]` `[N, C, H, W]` contiguous in `x`'s
/// precision (`input_gradient_kernel`; `y`, in `g`'s precision, is read with `relu` only).
pub fn input_gradient<R: CubeRuntime>(
    [g, x, y, mean, var, weight, sum_g, sum_gx]: [CubeTensor<R>; 8],
    epsilon: f64,
    relu: bool,
) -> [CubeTensor<R>; 1] {
    let shape = x.meta.shape().clone();
    let dx = empty(&x, shape.clone(), x.dtype);
    let dtypes = [x.dtype.into(), mean.dtype.into(), g.dtype.into()];
    let client = x.client.clone();
    let cube_dim = CubeDim::new_1d(threads(&client, ELEMENTWISE));
    input_gradient_kernel::launch::<R>(
        &client,
        calculate_cube_count_elemwise(&client, shape.num_elements(), cube_dim),
        cube_dim,
        g.into_tensor_arg(),
        x.into_tensor_arg(),
        y.into_tensor_arg(),
        mean.into_tensor_arg(),
        var.into_tensor_arg(),
        weight.into_tensor_arg(),
        sum_g.into_tensor_arg(),
        sum_gx.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        epsilon as f32,
        relu,
        dtypes,
    );
    [dx]
}
