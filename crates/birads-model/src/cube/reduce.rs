//! What birads' cubecl kernels share: a sum over the threads of a cube, the number of
//! threads to launch, and an output tensor to write.

use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

/// The sum of every thread's `value` in the cube (all threads get it): a tree in shared
/// memory, which holds one value per thread (the cube's threads a power of two).
#[cube]
pub fn cube_sum(shared: &mut SharedMemory<f32>, value: f32) -> f32 {
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
