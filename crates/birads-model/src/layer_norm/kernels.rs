//! The kernels of `cube.rs` and their launches on a cubecl runtime, for rows `[R, C]` with any
//! strides, accumulating in f32 whatever the tensors' precision:
//!
//! - `forward` and `input_gradient`: a cube of `ROWS` rows, `WIDTH` threads to a row striding
//!   over its C values (neighbouring threads read neighbouring values), the row sums added up
//!   in shared memory; each thread reads its values of the row again where the formula needs
//!   them (a row of ConvNeXt's is at most 768 values: from cache);
//! - `parameter_gradient`: a cube of `WIDTH` columns, `ROWS` threads to a column striding over
//!   one share of the rows, the column sums added up in shared memory and written per share
//!   (`[2, shares, C]`: ∂γ's, then ∂β's), to be summed outside over the shares.
//!
//! The rows `x` and ∂x (`F`), the parameters (`P`), the output (`O`) and its gradient (`G`)
//! each have a precision of their own: under amp a LayerNorm reads a convolution's bf16
//! product as it is and writes bf16 for the linear layer after it, with no cast between them
//! (widening is exact, and each result is rounded once).

use burn::tensor::DType;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

use crate::cube::reduce::{column_sum, cube_sum, empty, threads};

/// Threads along a row (a power of two).
const WIDTH: u32 = 32;

/// Rows per cube, or threads along a column (a power of two; fewer where the device allows
/// fewer threads per cube).
const ROWS: u32 = 8;

/// Cubes to aim for in `parameter_gradient`: enough to keep every multiprocessor of a large
/// GPU busy several times over.
const CUBES: usize = 1024;

/// The largest cube count along one axis every runtime takes.
const MOST_CUBES: usize = 65_535;

/// The row of this thread in `forward` and `input_gradient` (past the last row in the last
/// cube when R is not a multiple of the rows per cube).
#[cube]
fn row() -> usize {
    let cube = CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize;
    cube * CUBE_DIM_Y as usize + UNIT_POS_Y as usize
}

/// Where `[r, c]` lies in `t`.
#[cube]
fn at<F: Float>(t: &Tensor<F>, r: usize, c: usize) -> usize {
    r * t.stride(0) + c * t.stride(1)
}

/// `y = (x − μ)/σ·γ + β` per row, and the row's μ and 1/σ in f32.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn forward_kernel<F: Float, P: Float, O: Float>(
    x: &Tensor<F>,
    weight: &Tensor<P>,
    bias: &Tensor<P>,
    y: &mut Tensor<O>,
    mean: &mut Tensor<f32>,
    inv_std: &mut Tensor<f32>,
    epsilon: f32,
    #[comptime] threads: usize,
    #[define(F, P, O)] _dtypes: [StorageType; 3],
) {
    let r = row();
    let (rows, columns) = (x.shape(0), x.shape(1));
    let live = r < rows;
    let step = CUBE_DIM_X as usize;
    let count = f32::cast_from(columns as u32);
    let mut shared = SharedMemory::<f32>::new(threads);

    let mut sum = 0.0f32;
    if live {
        let mut c = UNIT_POS_X as usize;
        while c < columns {
            sum += f32::cast_from(x[at::<F>(x, r, c)]);
            c += step;
        }
    }
    let mu = cube_sum(&mut shared, sum) / count;

    let mut squares = 0.0f32;
    if live {
        let mut c = UNIT_POS_X as usize;
        while c < columns {
            let d = f32::cast_from(x[at::<F>(x, r, c)]) - mu;
            squares += d * d;
            c += step;
        }
    }
    let inv = 1.0 / (cube_sum(&mut shared, squares) / count + epsilon).sqrt();

    if live {
        let mut c = UNIT_POS_X as usize;
        while c < columns {
            let normalised = (f32::cast_from(x[at::<F>(x, r, c)]) - mu) * inv;
            let gamma = f32::cast_from(weight[c * weight.stride(0)]);
            let beta = f32::cast_from(bias[c * bias.stride(0)]);
            y[at::<O>(y, r, c)] = O::cast_from(normalised * gamma + beta);
            c += step;
        }
        if UNIT_POS_X == 0 {
            mean[r] = mu;
            inv_std[r] = inv;
        }
    }
}

/// `∂x = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))/σ` per row, with `ĝ = γ·g`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn input_gradient_kernel<F: Float, P: Float, G: Float>(
    g: &Tensor<G>,
    x: &Tensor<F>,
    weight: &Tensor<P>,
    mean: &Tensor<f32>,
    inv_std: &Tensor<f32>,
    dx: &mut Tensor<F>,
    #[comptime] threads: usize,
    #[define(F, P, G)] _dtypes: [StorageType; 3],
) {
    let r = row();
    let (rows, columns) = (x.shape(0), x.shape(1));
    let live = r < rows;
    let step = CUBE_DIM_X as usize;
    let count = f32::cast_from(columns as u32);
    let mut shared = SharedMemory::<f32>::new(threads);

    let mut mu = 0.0f32;
    let mut inv = 0.0f32;
    let mut plain = 0.0f32;
    let mut along = 0.0f32;
    if live {
        mu = mean[r * mean.stride(0)];
        inv = inv_std[r * inv_std.stride(0)];
        let mut c = UNIT_POS_X as usize;
        while c < columns {
            let scaled =
                f32::cast_from(g[at::<G>(g, r, c)]) * f32::cast_from(weight[c * weight.stride(0)]);
            let normalised = (f32::cast_from(x[at::<F>(x, r, c)]) - mu) * inv;
            plain += scaled;
            along += scaled * normalised;
            c += step;
        }
    }
    let plain = cube_sum(&mut shared, plain) / count;
    let along = cube_sum(&mut shared, along) / count;

    if live {
        let mut c = UNIT_POS_X as usize;
        while c < columns {
            let scaled =
                f32::cast_from(g[at::<G>(g, r, c)]) * f32::cast_from(weight[c * weight.stride(0)]);
            let normalised = (f32::cast_from(x[at::<F>(x, r, c)]) - mu) * inv;
            dx[at::<F>(dx, r, c)] = F::cast_from((scaled - plain - normalised * along) * inv);
            c += step;
        }
    }
}

/// `Σ g·x̂` and `Σ g` per column over one share of the rows: `out[0, share, c]` and
/// `out[1, share, c]`.
#[cube(launch)]
fn parameter_gradient_kernel<F: Float, G: Float>(
    g: &Tensor<G>,
    x: &Tensor<F>,
    mean: &Tensor<f32>,
    inv_std: &Tensor<f32>,
    out: &mut Tensor<f32>,
    #[comptime] threads: usize,
    #[define(F, G)] _dtypes: [StorageType; 2],
) {
    let (rows, columns) = (x.shape(0), x.shape(1));
    let c = CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    let (share, shares) = (CUBE_POS_Y as usize, CUBE_COUNT_Y as usize);
    let per_share = rows.div_ceil(shares);
    let start = share * per_share;
    let mut end = start + per_share;
    if end > rows {
        end = rows;
    }
    let mut shared = SharedMemory::<f32>::new(threads);

    let mut along = 0.0f32;
    let mut plain = 0.0f32;
    if c < columns {
        let mut r = start + UNIT_POS_Y as usize;
        while r < end {
            let gv = f32::cast_from(g[at::<G>(g, r, c)]);
            let mu = mean[r * mean.stride(0)];
            let inv = inv_std[r * inv_std.stride(0)];
            along += gv * (f32::cast_from(x[at::<F>(x, r, c)]) - mu) * inv;
            plain += gv;
            r += CUBE_DIM_Y as usize;
        }
    }
    let along = column_sum(&mut shared, along);
    let plain = column_sum(&mut shared, plain);
    if UNIT_POS_Y == 0 && c < columns {
        out[share * columns + c] = along;
        out[(shares + share) * columns + c] = plain;
    }
}

/// `[WIDTH, rows]` threads per cube: as many rows as the device allows, at most `ROWS`.
fn cube_dim<R: CubeRuntime>(client: &ComputeClient<R>) -> CubeDim {
    let rows = (threads(client, WIDTH * ROWS) / WIDTH).max(1);
    CubeDim::new_2d(WIDTH, rows)
}

/// Cubes for `rows` rows, `per_cube` to a cube: along x up to `MOST_CUBES`, the rest along y.
fn row_cubes(rows: usize, per_cube: u32) -> CubeCount {
    let cubes = rows.div_ceil(per_cube as usize).max(1);
    let x = cubes.min(MOST_CUBES);
    CubeCount::Static(x as u32, cubes.div_ceil(x) as u32, 1)
}

/// `[x, weight, bias]` (weight and bias in one precision) → `[y, mean, 1/σ]` (`y` in
/// `output`, the statistics `[R]` in f32).
pub fn forward<R: CubeRuntime>(
    [x, weight, bias]: [CubeTensor<R>; 3],
    epsilon: f64,
    output: DType,
) -> [CubeTensor<R>; 3] {
    let shape = x.meta.shape().clone();
    let rows = shape[0];
    let y = empty(&x, shape, output);
    let [mean, inv_std] = [(); 2].map(|_| empty(&x, [rows].into(), DType::F32));
    let dtypes = [x.dtype.into(), weight.dtype.into(), output.into()];
    let client = x.client.clone();
    let dim = cube_dim(&client);
    forward_kernel::launch::<R>(
        &client,
        row_cubes(rows, dim.y),
        dim,
        x.into_tensor_arg(),
        weight.into_tensor_arg(),
        bias.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        mean.clone().into_tensor_arg(),
        inv_std.clone().into_tensor_arg(),
        epsilon as f32,
        dim.num_elems() as usize,
        dtypes,
    );
    [y, mean, inv_std]
}

/// `[g, x, weight, mean, 1/σ]` → `∂x` (in `x`'s precision).
pub fn input_gradient<R: CubeRuntime>(
    [g, x, weight, mean, inv_std]: [CubeTensor<R>; 5],
) -> CubeTensor<R> {
    let shape = x.meta.shape().clone();
    let rows = shape[0];
    let dx = empty(&x, shape, x.dtype);
    let dtypes = [x.dtype.into(), weight.dtype.into(), g.dtype.into()];
    let client = x.client.clone();
    let dim = cube_dim(&client);
    input_gradient_kernel::launch::<R>(
        &client,
        row_cubes(rows, dim.y),
        dim,
        g.into_tensor_arg(),
        x.into_tensor_arg(),
        weight.into_tensor_arg(),
        mean.into_tensor_arg(),
        inv_std.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        dim.num_elems() as usize,
        dtypes,
    );
    dx
}

/// How many shares to split the rows into for `parameter_gradient`.
pub fn shares(rows: usize, columns: usize) -> usize {
    let tiles = columns.div_ceil(WIDTH as usize).max(1);
    let most = rows.div_ceil(ROWS as usize).clamp(1, MOST_CUBES);
    CUBES.div_ceil(tiles).clamp(1, most)
}

/// `[g, x, mean, 1/σ]` → `[2, shares, C]` in f32: per share of the rows, `Σ g·x̂` then `Σ g`.
pub fn parameter_gradient<R: CubeRuntime>(
    [g, x, mean, inv_std]: [CubeTensor<R>; 4],
    shares: usize,
) -> CubeTensor<R> {
    let columns = x.meta.shape()[1];
    let out = empty(&x, [2, shares, columns].into(), DType::F32);
    let dtypes = [x.dtype.into(), g.dtype.into()];
    let client = x.client.clone();
    let dim = cube_dim(&client);
    let tiles = columns.div_ceil(WIDTH as usize) as u32;
    parameter_gradient_kernel::launch::<R>(
        &client,
        CubeCount::Static(tiles, shares as u32, 1),
        dim,
        g.into_tensor_arg(),
        x.into_tensor_arg(),
        mean.into_tensor_arg(),
        inv_std.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        dim.num_elems() as usize,
        dtypes,
    );
    out
}
