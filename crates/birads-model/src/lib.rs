//! birads-model: MyConvNeXt (BI-RADS, 6 classes) and MyDenseNet (4 binary lesion features)
//! as burn modules, generic over the backend, with weight import from the original PyTorch
//! checkpoints and torchvision's ImageNet weights.

pub mod adamw;
pub mod amp;
pub mod batch_norm;
pub mod blocks;
pub mod builtin;
pub mod checkpoint;
pub mod convnext;
#[cfg(feature = "cubecl-kernels")]
pub mod cube;
pub mod densenet;
pub mod depthwise;
pub mod fast;
pub mod gelu;
pub mod gradcheck;
pub mod layer_norm;
pub mod matmuls;
mod own_ops;
pub mod precision;
pub mod weights;

pub use convnext::{MyConvNeXt, MyConvNeXtConfig};
pub use densenet::{MyDenseNet, MyDenseNetConfig};

/// The CPU backend: burn's `flex` (pure Rust, SIMD GEMM).
pub type Cpu = burn::backend::Flex;
/// CPU with autodiff, for training.
pub type CpuTrain = burn::backend::Autodiff<Cpu>;
/// burn's CUDA backend (feature `cuda`), with kernel fusion and autotuning.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;
/// The same CUDA backend without fusion: every tensor operation its own kernel launch
/// (benchmarks measure what fusion buys).
#[cfg(feature = "cuda")]
pub type CudaUnfused = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;
/// burn's CUDA backend computing in bfloat16: the whole model in bf16 (bf16 needs no loss
/// scaling; the optimisers' moments stay f32, `adamw`). Its runs claim the device's type first
/// (`precision`), and their checkpoints hold bf16 tensors, which every loader casts to its
/// device's type.
#[cfg(feature = "cuda")]
pub type CudaBf16 = burn::backend::Cuda<burn::tensor::bf16>;
/// `CudaBf16` without fusion.
#[cfg(feature = "cuda")]
pub type CudaUnfusedBf16 =
    burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, burn::tensor::bf16, i32, u8>;
/// burn's wgpu backend (feature `wgpu`): any GPU with Vulkan, Metal or DirectX 12, with the
/// same burn-cubecl kernels, fusion and autotuning as `Cuda` (and, without a GPU, Mesa's
/// software Vulkan driver, on which the tests run the GPU code paths).
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu;

/// What a build without the GPU backend `feature` (`"cuda"` or `"wgpu"`) says when asked for
/// it, and how to build it in; the binary and `birads-infer` both answer with it.
pub fn not_built(feature: &str) -> String {
    format!(
        "this birads was built without {feature}; rebuild with \
         `cargo build --release --features {feature}`"
    )
}

/// Install birads' own backward passes (`batch_norm`, `depthwise`, `gelu`, `layer_norm`, amp's
/// weight casts) and kernels (`batch_norm::cube`, `depthwise::cube`, `layer_norm::cube`, AdamW's
/// update, `adamw::cube`, and the casts of many tensors, `amp::cube`) on the GPU training backends this build has: CUDA's (feature `cuda`) and
/// wgpu's (feature `wgpu`, the software-Vulkan check of the same kernels).
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub fn install_gpu_ops() {
    fn both<B: burn::tensor::backend::Backend>() {
        use burn_autodiff::checkpoint::strategy::NoCheckpointing;
        amp::install::<B, NoCheckpointing>();
        batch_norm::install::<B, NoCheckpointing>();
        depthwise::install::<B, NoCheckpointing>();
        gelu::install::<B, NoCheckpointing>();
        layer_norm::install::<B, NoCheckpointing>();
    }
    #[cfg(feature = "cuda")]
    {
        use burn::tensor::bf16;
        use cubecl::cuda::CudaRuntime;
        cube::set::<batch_norm::cube::BatchNorm, CudaRuntime, f32, i32, u8>(true);
        cube::set::<batch_norm::cube::BatchNorm, CudaRuntime, bf16, i32, u8>(true);
        cube::set::<depthwise::cube::WeightGradient, CudaRuntime, f32, i32, u8>(true);
        cube::set::<depthwise::cube::WeightGradient, CudaRuntime, bf16, i32, u8>(true);
        cube::set::<layer_norm::cube::Rows, CudaRuntime, f32, i32, u8>(true);
        cube::set::<layer_norm::cube::Rows, CudaRuntime, bf16, i32, u8>(true);
        cube::set::<adamw::cube::Update, CudaRuntime, f32, i32, u8>(true);
        cube::set::<amp::cube::Casts, CudaRuntime, f32, i32, u8>(true);
        cube::set::<adamw::cube::Update, CudaRuntime, bf16, i32, u8>(true);
        cube::set::<amp::cube::Casts, CudaRuntime, bf16, i32, u8>(true);
        both::<Cuda>();
        both::<CudaBf16>();
        both::<CudaUnfused>();
        both::<CudaUnfusedBf16>();
    }
    #[cfg(feature = "wgpu")]
    {
        use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
        cube::set::<batch_norm::cube::BatchNorm, WgpuRuntime, f32, i32, u32>(true);
        cube::set::<depthwise::cube::WeightGradient, WgpuRuntime, f32, i32, u32>(true);
        cube::set::<layer_norm::cube::Rows, WgpuRuntime, f32, i32, u32>(true);
        cube::set::<adamw::cube::Update, WgpuRuntime, f32, i32, u32>(true);
        cube::set::<amp::cube::Casts, WgpuRuntime, f32, i32, u32>(true);
        both::<Wgpu>();
        both::<CubeBackend<WgpuRuntime, f32, i32, u32>>();
        // f16 (wgpu has no bf16): the software check of CUDA's bf16 backend.
        use burn::tensor::f16;
        cube::set::<batch_norm::cube::BatchNorm, WgpuRuntime, f16, i32, u32>(true);
        cube::set::<depthwise::cube::WeightGradient, WgpuRuntime, f16, i32, u32>(true);
        cube::set::<layer_norm::cube::Rows, WgpuRuntime, f16, i32, u32>(true);
        cube::set::<adamw::cube::Update, WgpuRuntime, f16, i32, u32>(true);
        cube::set::<amp::cube::Casts, WgpuRuntime, f16, i32, u32>(true);
        both::<burn::backend::Wgpu<f16>>();
        both::<CubeBackend<WgpuRuntime, f16, i32, u32>>();
    }
}
