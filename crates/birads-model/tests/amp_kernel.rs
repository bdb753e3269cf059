//! amp's casts of many tensors on a cubecl backend (`--features wgpu`, Mesa's software Vulkan):
//! the kernel (`amp::cube::casts`) equals burn's cast tensor by tensor, for more tensors than
//! one launch takes, contiguous, permuted and broadcast, f32 → f16 and back, with and without
//! fusion; and a training pass of each model under autocast with the own casts installed (as
//! on CUDA) equals the pass with burn's casts, output and every gradient, on the second pass
//! too, where the weights are cast at once. `tests/amp_casts.rs` checks the same on the CPU
//! without the kernel.
#![cfg(feature = "wgpu")]

use birads_model::amp::{self, autocast, cube::casts};
use birads_model::checkpoint::AnyModel;
use birads_model::cube::{Cube, Fused, Launch};
use birads_model::gradcheck::{convnext_config, densenet_config, moved, snapshot, Snapshot};
use birads_model::{Cpu, CpuTrain};
use burn::backend::wgpu::WgpuRuntime;
use burn::backend::{Autodiff, Wgpu};
use burn::prelude::*;
use burn::tensor::{DType, Distribution, FloatDType, TensorPrimitive};
use burn_autodiff::checkpoint::strategy::NoCheckpointing;

type Unfused = Cube<WgpuRuntime, f32, i32, u32>;
type Fusion = Fused<WgpuRuntime, f32, i32, u32>;

/// Tensor `i` of the cases: a shape that changes with `i`, laid out three ways in turn.
fn case<B: Backend>(i: usize) -> Tensor<B, 3> {
    let [a, b, c] = [1 + i % 3, 2 + i % 5, 1 + i % 7 * 9];
    let random = |shape: [usize; 3]| {
        let cpu =
            Tensor::<Cpu, 3>::random(shape, Distribution::Uniform(-3.0, 3.0), &Default::default());
        Tensor::<B, 3>::from_data(cpu.into_data(), &Default::default())
    };
    match i % 3 {
        0 => random([a, b, c]),
        1 => random([c, b, a]).permute([2, 1, 0]),
        // Not a permutation of a dense tensor: read through its strides (0 along `b`).
        _ => random([a, 1, c]).expand([a, b, c]),
    }
}

fn check_kernel<B: Launch>() {
    let inputs: Vec<Tensor<B, 3>> = (0..40).map(case::<B>).collect();
    for (from, to) in [
        (None, FloatDType::F16),
        (Some(FloatDType::F16), FloatDType::F32),
    ] {
        let inputs: Vec<Tensor<B, 3>> = match from {
            Some(d) => inputs.iter().map(|t| t.clone().cast(d)).collect(),
            None => inputs.clone(),
        };
        let primitives = inputs
            .iter()
            .map(|t| t.clone().into_primitive().tensor())
            .collect();
        let got = casts::<B>(primitives, to);
        assert_eq!(got.len(), inputs.len());
        for (i, (t, g)) in inputs.iter().zip(got).enumerate() {
            let g = Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(g));
            assert_eq!(g.dtype(), DType::from(to), "tensor {i}");
            assert_eq!(g.dims(), t.dims(), "tensor {i}");
            let want = t.clone().cast(to).into_data();
            assert_eq!(g.into_data(), want, "tensor {i} ({from:?} → {to:?})");
        }
    }
}

#[test]
fn many_casts_in_few_launches_equal_burns_casts() {
    check_kernel::<Unfused>();
    check_kernel::<Fusion>();
}

/// Two training-mode passes of `m` on wgpu under autocast (f16: wgpu has no bf16).
fn two_passes(m: &AnyModel<CpuTrain>, outputs: usize, dir: &std::path::Path) -> [Snapshot; 2] {
    type G = Autodiff<Wgpu>;
    let model = moved::<_, G>(m, dir).unwrap();
    let device = Default::default();
    <G as Backend>::seed(&device, 3);
    let x = Tensor::<G, 4>::random([2, 3, 64, 64], Distribution::Uniform(-2.0, 2.0), &device);
    let r = Tensor::<G, 2>::random([2, outputs], Distribution::Uniform(-1.0, 1.0), &device);
    let _amp = autocast(FloatDType::F16);
    [
        snapshot(&model, x.clone(), r.clone()),
        snapshot(&model, x, r),
    ]
}

#[test]
#[ignore = "both models' passes on the software driver, minutes: scripts/cubecl_check.sh"]
fn passes_with_the_own_casts_equal_passes_with_burns() {
    birads_model::install_gpu_ops();
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    for (m, outputs) in [
        (AnyModel::ConvNeXt(convnext_config(true).init(&device)), 6),
        (AnyModel::DenseNet(densenet_config(true).init(&device)), 8),
    ] {
        // Autotune's first runs of a shape may take another kernel: once before comparing.
        two_passes(&m, outputs, dir.path());
        amp::uninstall::<Wgpu, NoCheckpointing>();
        let want = two_passes(&m, outputs, dir.path());
        amp::install::<Wgpu, NoCheckpointing>();
        let got = two_passes(&m, outputs, dir.path());
        for (pass, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.output, w.output, "pass {pass}: output");
            assert_eq!(g.grads.len(), w.grads.len());
            let low = g.grads.iter().filter(|t| t.1 == DType::F16).count();
            assert!(low > 10, "pass {pass}: {low} gradients in f16");
            for (a, b) in g.grads.iter().zip(&w.grads) {
                assert_eq!(b.1, DType::F32, "{}: burn's casts widen", b.0);
                assert_eq!(a.2, b.2, "pass {pass}: gradient {}", a.0);
            }
        }
    }
}
