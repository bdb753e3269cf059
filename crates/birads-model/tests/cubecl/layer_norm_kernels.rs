//! LayerNorm's kernels against a plain f64 computation, in the backend's precision and in
//! amp's, and the forward kernel alone in inference.

use super::*;

/// LayerNorm of rows `[R, C]` in f64, forward and backward: `y`, mean, 1/σ, `∂x`, `∂γ`, `∂β`
/// for output gradient `g`.
fn layer_norm_reference(
    [x, g, weight, bias]: [&[f32]; 4],
    [rows, columns]: [usize; 2],
    epsilon: f64,
) -> [Vec<f64>; 6] {
    let mut out: [Vec<f64>; 6] = Default::default();
    let (mut dw, mut db) = (vec![0.0; columns], vec![0.0; columns]);
    let count = columns as f64;
    for r in 0..rows {
        let row = |t: &[f32]| -> Vec<f64> {
            t[r * columns..(r + 1) * columns]
                .iter()
                .map(|&v| f64::from(v))
                .collect()
        };
        let (xs, gs) = (row(x), row(g));
        let mean = xs.iter().sum::<f64>() / count;
        let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / count;
        let inv = 1.0 / (var + epsilon).sqrt();
        let normalised: Vec<f64> = xs.iter().map(|v| (v - mean) * inv).collect();
        let scaled: Vec<f64> = (0..columns).map(|c| gs[c] * f64::from(weight[c])).collect();
        let plain = scaled.iter().sum::<f64>() / count;
        let along = (0..columns).map(|c| scaled[c] * normalised[c]).sum::<f64>() / count;
        for c in 0..columns {
            out[0].push(normalised[c] * f64::from(weight[c]) + f64::from(bias[c]));
            out[3].push((scaled[c] - plain - normalised[c] * along) * inv);
            dw[c] += gs[c] * normalised[c];
            db[c] += gs[c];
        }
        out[1].push(mean);
        out[2].push(inv);
    }
    out[4] = dw;
    out[5] = db;
    out
}

/// LayerNorm's kernels on backend `B` against `layer_norm_reference` of the values as `B`
/// holds them, rows contiguous or (`strided`) a transposed view: every result within `limit`
/// of its tensor's largest value, or 1e-3 where `amp` stores it in f16 (`y`, ∂x).
pub(super) fn check_layer_norm_kernels<B: Backend>(
    kernels: layer_norm::Kernels<B>,
    [rows, columns]: [usize; 2],
    strided: bool,
    limit: f64,
    amp: Amp,
) {
    let to_b = |t: Tensor<Cpu, 2>, dtype: Option<FloatDType>| -> Tensor<B, 2> {
        if strided {
            in_dtype_if(own_float(t.transpose().into_data()), dtype).transpose()
        } else {
            in_dtype_if(own_float(t.into_data()), dtype)
        }
    };
    let random = |shape: [usize; 2], low, high| {
        Tensor::<Cpu, 2>::random(shape, Distribution::Uniform(low, high), &Default::default())
    };
    let x = to_b(
        random([rows, columns], -1.0, 1.0) * random([rows, 1], 0.5, 3.0)
            + random([rows, 1], -2.0, 2.0),
        amp.input,
    );
    let g = to_b(random([rows, columns], -1.0, 1.0), amp.output);
    let one = |low, high| to_b(random([1, columns], low, high), None).reshape([columns]);
    let (weight, bias) = (one(0.5, 1.5), one(-1.0, 1.0));
    let own = own_dtype::<B>();
    assert_eq!(
        x.dtype(),
        amp.input.map_or(own, DType::from),
        "x's precision"
    );
    assert_eq!(weight.dtype(), own, "γ's precision");
    let inputs = [&x, &g].map(|t| values(t.clone()));
    let params = [&weight, &bias].map(|t| values(t.clone()));
    let epsilon = 1e-6;
    let want = layer_norm_reference(
        [&inputs[0], &inputs[1], &params[0], &params[1]],
        [rows, columns],
        epsilon,
    );
    let out = amp.output.map_or(weight.dtype(), DType::from);
    let (y, mean, inv_std) = (kernels.forward)(x.clone(), weight.clone(), bias, epsilon, out);
    let case = format!("{rows}×{columns} strided {strided} {amp:?}");
    assert_eq!(y.dtype(), out, "{case}: y's precision");
    let input = x.dtype();
    let (dx, dw, db) = (kernels.backward)(g, x, weight, mean.clone(), inv_std.clone());
    assert_eq!(dx.dtype(), input, "{case}: ∂x's precision");
    let got = [
        values(y),
        values(mean),
        values(inv_std),
        values(dx),
        values(dw),
        values(db),
    ];
    for (name, (got, want)) in ["y", "mean", "1/σ", "∂x", "∂γ", "∂β"]
        .iter()
        .zip(got.iter().zip(&want))
    {
        let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        let error = relative(got, &want);
        let stored = match *name {
            "y" => amp.output,
            "∂x" => amp.input,
            _ => None,
        };
        let limit = if stored.is_some() { 1e-3 } else { limit };
        assert!(
            error < limit,
            "{case}, {name}: {error:.2e} (limit {limit:.0e})"
        );
    }
}

/// Fewer columns than threads to a row, ConvNeXt's widths, a row alone, rows not a multiple
/// of a cube's and more rows than one share takes.
const LAYER_NORM_SHAPES: [[usize; 2]; 5] = [[3, 5], [37, 96], [98, 768], [1, 33], [4001, 40]];

#[test]
fn layer_norm_kernels_equal_a_plain_reference() {
    let _serial = serial();
    <Cpu as Backend>::seed(&Default::default(), 8);
    for shape in LAYER_NORM_SHAPES {
        for strided in [false, true] {
            let same = Amp::default();
            check_layer_norm_kernels(row_kernels::<Unfused>(), shape, strided, 1e-5, same);
            check_layer_norm_kernels(row_kernels::<G>(), shape, strided, 1e-5, same);
        }
    }
}

/// Under amp a LayerNorm reads a convolution's product in its precision and hands ∂x back in
/// it, and writes its output in the precision of the linear layer after it and reads the
/// gradient in it; the statistics and ∂γ, ∂β stay f32.
#[test]
fn layer_norm_kernels_read_and_write_the_products_precision() {
    let _serial = serial();
    <Cpu as Backend>::seed(&Default::default(), 8);
    for shape in [[37, 96], [4001, 40]] {
        for strided in [false, true] {
            for amp in Amp::MIXED {
                check_layer_norm_kernels(row_kernels::<Unfused>(), shape, strided, 1e-5, amp);
                check_layer_norm_kernels(row_kernels::<G>(), shape, strided, 1e-5, amp);
            }
        }
    }
}

/// Inference (no autodiff) on a cubecl backend with the kernels set runs the forward kernel
/// alone, through the models' `layer_norm::rows`, and gives burn's LayerNorm of the CPU.
#[test]
fn layer_norm_inference_runs_the_forward_kernel() {
    let _serial = serial();
    let device = Default::default();
    <Cpu as Backend>::seed(&device, 9);
    let config = burn::nn::LayerNormConfig::new(96).with_epsilon(1e-6);
    let (mut norm, mut on_g) = (
        config.init::<Cpu>(&device),
        config.init::<G>(&Default::default()),
    );
    let gamma = Tensor::<Cpu, 1>::random([96], Distribution::Uniform(0.5, 1.5), &device);
    let beta = Tensor::<Cpu, 1>::random([96], Distribution::Uniform(-1.0, 1.0), &device);
    norm.gamma = Param::from_tensor(gamma.clone());
    norm.beta = Some(Param::from_tensor(beta.clone()));
    on_g.gamma = Param::from_tensor(on_gpu(gamma));
    on_g.beta = Some(Param::from_tensor(on_gpu(beta)));
    let x = Tensor::<Cpu, 2>::random([50, 96], Distribution::Normal(1.0, 3.0), &device);
    let want = values(norm.forward(x.clone()));
    assert!(layer_norm::installed::<G>().is_none());
    cube::set::<Rows, WgpuRuntime, f32, i32, u32>(true);
    let installed = layer_norm::installed::<G>().is_some();
    let got = values(layer_norm::rows(&on_g, 1e-6, on_gpu(x)));
    cube::set::<Rows, WgpuRuntime, f32, i32, u32>(false);
    assert!(
        installed,
        "the forward kernel is not installed for inference"
    );
    assert!(layer_norm::installed::<G>().is_none());
    let error = relative(&got, &want);
    assert!(error < 1e-5, "{error:.2e}");
}
