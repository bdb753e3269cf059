//! Helpers shared by the integration tests: reading `scripts/make_model_fixtures.py`'s files,
//! comparing tensors, the depthwise reference.
#![allow(dead_code)]

use std::path::Path;

use birads_model::gradcheck::{compare, Difference, Snapshot};
use birads_model::{MyConvNeXtConfig, MyDenseNet, MyDenseNetConfig};
use burn::prelude::*;
use burn::tensor::Distribution;

/// The tests of one binary run on parallel threads, and burn's CPU backend draws every random
/// tensor and parameter from one global generator. A test that seeds it and draws holds this
/// lock throughout: otherwise another test's draws can come between its seed and its own, and
/// its inputs, and so its result, depend on timing. Installing one of birads' own operations is
/// global to a backend too: a test that installs one holds the lock as well.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// How far a pass with one of birads' own CPU operations may be from burn's pass of the same
/// model and inputs, per tensor, relative to its largest value. Both passes are f32 and differ
/// by the rounding of one operation, which the backward carries through up to a hundred layers
/// and which depends on the CPU (gemm picks its kernels at run time): MyDenseNet's BatchNorm
/// test measured 1.4·10⁻⁵ on an AVX2 machine (AMD Zen 3). A wrong operation is off by 10⁻² or
/// more. `bench device-check` holds CUDA to the same limit.
pub const OWN_PASS_LIMIT: f64 = 1e-4;

pub fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn usizes(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

pub fn convnext_config(c: &serde_json::Value) -> MyConvNeXtConfig {
    MyConvNeXtConfig::new()
        .with_dims(usizes(&c["dims"]))
        .with_depths(usizes(&c["depths"]))
}

pub fn densenet_config(c: &serde_json::Value) -> MyDenseNetConfig {
    MyDenseNetConfig::new()
        .with_growth(c["growth"].as_u64().unwrap() as usize)
        .with_blocks(usizes(&c["blocks"]))
        .with_init_features(c["init"].as_u64().unwrap() as usize)
        .with_bn_size(c["bn_size"].as_u64().unwrap() as usize)
}

pub fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

pub fn max_abs_diff_f64(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// One depthwise convolution case: `(batch, channels, height, width, kernel, padding, chunk
/// values)` for `depthwise::weight_gradient_in_chunks`.
pub type DepthwiseCase = (usize, usize, usize, usize, usize, usize, usize);

/// ConvNeXt's 7×7 with padding 3 in one piece and one image per chunk, a 3×3 in chunks, and a
/// 5×5 without padding (a smaller output).
pub const DEPTHWISE_CASES: [DepthwiseCase; 4] = [
    (3, 5, 9, 11, 7, 3, usize::MAX),
    (3, 5, 9, 11, 7, 3, 1),
    (2, 4, 8, 8, 3, 1, 700),
    (2, 3, 10, 9, 5, 0, usize::MAX),
];

/// Random `x`, `weight` and output weights `r` of one case on the CPU, with burn's gradients
/// of `Σ r ⊙ depthwise(x, weight)`: the reference the own backward is held to.
pub struct DepthwiseReference {
    pub x: burn::tensor::Tensor<birads_model::Cpu, 4>,
    pub weight: burn::tensor::Tensor<birads_model::Cpu, 4>,
    pub r: burn::tensor::Tensor<birads_model::Cpu, 4>,
    pub grad_x: Vec<f32>,
    pub grad_w: Vec<f32>,
}

pub fn depthwise_reference((n, c, h, w, k, p, _): DepthwiseCase) -> DepthwiseReference {
    use birads_model::CpuTrain;
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Distribution, Tensor};
    let device = Default::default();
    let uniform = Distribution::Uniform(-1.0, 1.0);
    let x = Tensor::<CpuTrain, 4>::random([n, c, h, w], uniform, &device).require_grad();
    let weight = Tensor::<CpuTrain, 4>::random([c, 1, k, k], uniform, &device).require_grad();
    let options = ConvOptions::new([1, 1], [p, p], [1, 1], c);
    let y = conv2d(x.clone(), weight.clone(), None, options);
    let r = Tensor::<CpuTrain, 4>::random(y.dims(), uniform, &device);
    let grads = (y * r.clone()).sum().backward();
    let f32s = |t: Tensor<birads_model::Cpu, 4>| t.into_data().to_vec::<f32>().unwrap();
    DepthwiseReference {
        grad_x: f32s(x.grad(&grads).unwrap()),
        grad_w: f32s(weight.grad(&grads).unwrap()),
        x: x.inner(),
        weight: weight.inner(),
        r: r.inner(),
    }
}

/// Asserts that the own depthwise backward ran in `own` (against a pass `without` it): the
/// five depthwise weight gradients of the small ConvNeXt are summed in another order, so
/// they are equal to rounding but not to the bit.
pub fn assert_own_depthwise_ran(
    own: &birads_model::gradcheck::Snapshot,
    without: &birads_model::gradcheck::Snapshot,
) {
    let diffs = birads_model::gradcheck::compare(own, without).unwrap();
    let dw: Vec<_> = diffs
        .iter()
        .filter(|d| d.name.ends_with("dwconv.weight"))
        .collect();
    assert_eq!(dw.len(), 5, "one depthwise weight per block");
    assert!(
        dw.iter().any(|d| d.relative > 0.0),
        "the own depthwise backward did not run"
    );
}

/// A tensor's values in f64.
pub fn values_f64<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec().unwrap()
}

/// max |got − want| / max |want|.
pub fn relative_f64(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (g, w)| m.max((g - w).abs()));
    diff / scale.max(f64::MIN_POSITIVE)
}

/// Uniform in `[low, high)` on `B`'s default device.
pub fn uniform<B: Backend, const D: usize>(shape: [usize; D], low: f64, high: f64) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Uniform(low, high), &Default::default())
}

/// Every tensor of `own` (a pass with one of birads' own operations installed) within `limit`
/// relative of `burns` (burn's pass of the same model and inputs); the differences, by name.
pub fn assert_passes_agree(own: &Snapshot, burns: &Snapshot, limit: f64) -> Vec<Difference> {
    let diffs = compare(own, burns).unwrap();
    for d in &diffs {
        assert!(d.relative < limit, "{}: {:.2e}", d.name, d.relative);
    }
    diffs
}

/// Running mean and variance of a few of a MyDenseNet's BatchNorms, in order.
pub fn running_statistics<B: Backend>(m: &MyDenseNet<B>) -> Vec<f64> {
    let layer = &m.blocks[1].layers[1];
    let bns = [
        &m.norm0,
        &layer.norm1,
        &layer.norm2,
        &m.transitions[2].norm,
        &m.norm5,
    ];
    bns.iter()
        .flat_map(|bn| {
            [
                values_f64(bn.running_mean.value_sync()),
                values_f64(bn.running_var.value_sync()),
            ]
        })
        .flatten()
        .collect()
}

/// The amp cases of a normalisation's precision test: without and with its own pass installed,
/// the input in f32 or (a convolution's product as computed) in bf16.
pub const OWN_AND_BF16_INPUT: [(bool, bool); 4] =
    [(false, false), (false, true), (true, false), (true, true)];

/// `t` in bf16 where `bf16`, else as it is.
pub fn bf16_if<B: Backend, const D: usize>(t: Tensor<B, D>, bf16: bool) -> Tensor<B, D> {
    if bf16 {
        t.cast(burn::tensor::FloatDType::BF16)
    } else {
        t
    }
}

/// `data` as a tensor of `B`'s own float type (`B::FloatElem`) on its default device. burn
/// keeps one default float type per device for the whole process
/// (`birads_model::precision`): wgpu's f16 and f32 backends share a device, so `from_data`
/// alone gives an f16 backend f32 tensors once an f32 test ran first.
pub fn own_float<B: Backend, const D: usize>(data: TensorData) -> Tensor<B, D> {
    Tensor::from_data(data, (&Default::default(), own_dtype::<B>()))
}

/// `B`'s own float type.
pub fn own_dtype<B: Backend>() -> burn::tensor::DType {
    <B::FloatElem as burn::tensor::Element>::dtype()
}
