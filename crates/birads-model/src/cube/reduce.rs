//! What birads' cubecl kernels share: sums over the threads of a cube (along its rows or its
//! columns), the number of threads to launch, and an output tensor to write.

use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

/// The sum of `value` over the threads of one row of the cube (the threads with this
/// thread's `UNIT_POS_Y`; in a 1-D cube, all of them), which all of them get: a tree in
/// shared memory, which holds one value per thread (`CUBE_DIM_X` a power of two).
#[cube]
pub fn cube_sum(shared: &mut SharedMemory<f32>, value: f32) -> f32 {
    let lane = UNIT_POS_X as usize;
    let row = UNIT_POS_Y as usize * CUBE_DIM_X as usize;
    shared[row + lane] = value;
    sync_cube();
    let mut half = CUBE_DIM_X as usize / 2;
    while half > 0 {
        if lane < half {
            let pair = shared[row + lane] + shared[row + lane + half];
            shared[row + lane] = pair;
        }
        sync_cube();
        half /= 2;
    }
    let total = shared[row];
    sync_cube();
    total
}

/// The sum of `value` over the threads of one column of a 2-D cube (the threads with this
/// thread's `UNIT_POS_X`), which all of them get (`CUBE_DIM_Y` a power of two).
#[cube]
pub fn column_sum(shared: &mut SharedMemory<f32>, value: f32) -> f32 {
    let (lane, width) = (UNIT_POS_X as usize, CUBE_DIM_X as usize);
    let row = UNIT_POS_Y as usize;
    shared[row * width + lane] = value;
    sync_cube();
    let mut half = CUBE_DIM_Y as usize / 2;
    while half > 0 {
        if row < half {
            let pair = shared[row * width + lane] + shared[(row + half) * width + lane];
            shared[row * width + lane] = pair;
        }
        sync_cube();
        half /= 2;
    }
    let total = shared[lane];
    sync_cube();
    total
}

/// Threads per cube: `wanted` (a power of two), or the largest power of two the device
/// allows.
pub fn threads<R: CubeRuntime>(client: &ComputeClient<R>, wanted: u32) -> u32 {
    let most = client.properties().hardware.max_cube_dim.0.max(1);
    let mut threads = wanted.max(1);
    while threads > most {
        threads /= 2;
    }
    threads
}

/// An uninitialised tensor on the device of `like`.
pub fn empty<R: CubeRuntime>(like: &CubeTensor<R>, shape: Shape, dtype: DType) -> CubeTensor<R> {
    empty_device_dtype(like.client.clone(), like.device.clone(), shape, dtype)
}
