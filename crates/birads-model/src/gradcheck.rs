//! One forward and backward pass of a model, kept as plain numbers, so that two backends (or
//! two precisions) can be compared tensor by tensor: the outputs and every parameter's
//! gradient. `birads bench device-check` runs it for CUDA against the CPU.
//!
//! The loss is `Σ r ⊙ output` with a fixed `r`, so every output element carries a different
//! weight into the backward pass. Run it with dropout and stochastic depth at zero: random
//! masks differ between backends, while BatchNorm's batch statistics (training mode) do not.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, FloatDType, Tensor};

use crate::checkpoint::{self, AnyModel, ModelKind};
use crate::precision::to_float;
use crate::weights::WeightsError;
use crate::{MyConvNeXtConfig, MyDenseNetConfig};

/// MyConvNeXt for a check: dropout and stochastic depth off, layer scale 0.5 (at its 1e-6
/// default the blocks would pass almost no gradient); `small`: 16–128 channels, 5 blocks.
pub fn convnext_config(small: bool) -> MyConvNeXtConfig {
    let c = MyConvNeXtConfig::new()
        .with_dropout(0.0)
        .with_sd_rate(0.0)
        .with_layer_scale_init(0.5);
    if small {
        c.with_dims(vec![16, 32, 64, 128])
            .with_depths(vec![1, 1, 2, 1])
    } else {
        c
    }
}

/// MyDenseNet for a check: dropout off; `small`: growth 8, two layers per block.
pub fn densenet_config(small: bool) -> MyDenseNetConfig {
    let c = MyDenseNetConfig::new().with_dp1(0.0).with_dp2(0.0);
    if small {
        c.with_growth(8)
            .with_blocks(vec![2, 2, 2, 2])
            .with_init_features(16)
            .with_bn_size(2)
    } else {
        c
    }
}

/// `m`'s weights on backend `B` and its default device, through the checkpoint format as a
/// user's weights travel (written to `dir/weights.safetensors`).
pub fn moved<A: burn::tensor::backend::Backend, B: burn::tensor::backend::Backend>(
    m: &AnyModel<A>,
    dir: &std::path::Path,
) -> Result<AnyModel<B>, WeightsError> {
    let path = dir.join("weights.safetensors");
    checkpoint::save(m, serde_json::Value::Null, &path)?;
    let (kind, c, d) = match m {
        AnyModel::ConvNeXt(x) => (
            ModelKind::ConvNeXt,
            checkpoint::convnext_config_of(x),
            MyDenseNetConfig::new(),
        ),
        AnyModel::DenseNet(x) => (
            ModelKind::DenseNet,
            MyConvNeXtConfig::new(),
            checkpoint::densenet_config_of(x),
        ),
    };
    let (model, _, _) = checkpoint::load_any::<B>(&path, kind, &c, &d, &Default::default())?;
    Ok(model)
}

/// Outputs and gradients of one pass, as f32 values.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The model's output, flattened `[N, K]`.
    pub output: Vec<f32>,
    /// `(parameter path, dtype of the gradient, values)` in the module's visiting order.
    pub grads: Vec<(String, DType, Vec<f32>)>,
}

/// Output `[N, K]` of either model (DenseNet's `[N, tasks, 2]` flattened per image).
pub fn output_of<B: burn::tensor::backend::Backend>(
    model: &AnyModel<B>,
    x: Tensor<B, 4>,
) -> Tensor<B, 2> {
    match model {
        AnyModel::ConvNeXt(m) => m.forward(x),
        AnyModel::DenseNet(m) => m.forward(x).flatten(1, 2),
    }
}

/// Forward `x`, backward `Σ r ⊙ output`, and read everything back.
pub fn snapshot<B: AutodiffBackend>(
    model: &AnyModel<B>,
    x: Tensor<B, 4>,
    r: Tensor<B, 2>,
) -> Snapshot {
    let output = output_of(model, x);
    let grads = (output.clone() * r).sum().backward();
    let mut visitor = Gradients {
        path: Vec::new(),
        grads: &grads,
        out: Vec::new(),
    };
    match model {
        AnyModel::ConvNeXt(m) => m.visit(&mut visitor),
        AnyModel::DenseNet(m) => m.visit(&mut visitor),
    }
    Snapshot {
        output: f32s(output.inner()),
        grads: visitor.out,
    }
}

/// [`snapshot`] of a full-bf16 `m`: a copy of its weights ([`moved`], so that `m`'s running
/// statistics are not shared) cast to bf16, the input and the output weights in bf16. The
/// device's own float type may stay f32: nothing in a pass makes a float tensor of the
/// device's type where its input's belongs (a mismatch would stop the pass).
pub fn bf16_snapshot<B: AutodiffBackend>(
    m: &AnyModel<B>,
    x: Tensor<B, 4>,
    r: Tensor<B, 2>,
    dir: &std::path::Path,
) -> Result<Snapshot, WeightsError> {
    let bf16 = FloatDType::BF16;
    let m = match moved::<B, B>(m, dir)? {
        AnyModel::ConvNeXt(c) => AnyModel::ConvNeXt(to_float(c, bf16)),
        AnyModel::DenseNet(d) => AnyModel::DenseNet(to_float(d, bf16)),
    };
    Ok(snapshot(&m, x.cast(bf16), r.cast(bf16)))
}

/// The values of `t` as f32, whatever its precision.
pub fn f32s<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.cast(burn::tensor::FloatDType::F32)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 values")
}

struct Gradients<'a, B: AutodiffBackend> {
    path: Vec<String>,
    grads: &'a B::Gradients,
    out: Vec<(String, DType, Vec<f32>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Gradients<'_, B> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        // Parameters outside the graph (BatchNorm's running statistics) have no gradient.
        if let Some(g) = param.val().grad(self.grads) {
            let name = self.path.join(".");
            self.out.push((name, g.dtype(), f32s(g)));
        }
    }
}

/// How far one tensor is from its reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub name: String,
    /// max |got − want| / max |want| (0 when both are all zero).
    pub relative: f64,
    /// Cosine similarity of the two as vectors (1 when both are all zero).
    pub cosine: f64,
}

/// Compare `got` against the reference `want`: the output first, then each gradient by path.
/// A gradient missing on either side, or of another length, is an error.
pub fn compare(got: &Snapshot, want: &Snapshot) -> Result<Vec<Difference>, String> {
    let mut out = vec![difference("output", &got.output, &want.output)?];
    if got.grads.len() != want.grads.len() {
        return Err(format!(
            "{} gradients against {} in the reference",
            got.grads.len(),
            want.grads.len()
        ));
    }
    for ((gn, _, g), (wn, _, w)) in got.grads.iter().zip(&want.grads) {
        if gn != wn {
            return Err(format!("gradient {gn} where the reference has {wn}"));
        }
        out.push(difference(gn, g, w)?);
    }
    Ok(out)
}

/// Cosine similarity of all gradients laid end to end (parameters matched by position; call
/// after [`compare`] has checked that they line up).
pub fn gradient_cosine(got: &Snapshot, want: &Snapshot) -> f64 {
    let (mut dot, mut gg, mut ww) = (0f64, 0f64, 0f64);
    for ((_, _, g), (_, _, w)) in got.grads.iter().zip(&want.grads) {
        for (&g, &w) in g.iter().zip(w) {
            let (g, w) = (g as f64, w as f64);
            dot += g * w;
            gg += g * g;
            ww += w * w;
        }
    }
    if gg > 0.0 && ww > 0.0 {
        dot / (gg.sqrt() * ww.sqrt())
    } else {
        f64::from(u8::from(gg == ww))
    }
}

/// How far `got` is from `want` (an error when the lengths differ or `got` is not finite).
pub fn difference(name: &str, got: &[f32], want: &[f32]) -> Result<Difference, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{name}: {} values against {}",
            got.len(),
            want.len()
        ));
    }
    let (mut diff, mut scale, mut dot, mut gg, mut ww) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        let (g, w) = (g as f64, w as f64);
        if !g.is_finite() {
            return Err(format!("{name}: non-finite value {g}"));
        }
        diff = diff.max((g - w).abs());
        scale = scale.max(w.abs());
        dot += g * w;
        gg += g * g;
        ww += w * w;
    }
    let relative = if scale > 0.0 {
        diff / scale
    } else if diff > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    let cosine = if gg > 0.0 && ww > 0.0 {
        dot / (gg.sqrt() * ww.sqrt())
    } else if gg == ww {
        1.0
    } else {
        0.0
    };
    Ok(Difference {
        name: name.to_string(),
        relative,
        cosine,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(output: Vec<f32>, grad: Vec<f32>) -> Snapshot {
        Snapshot {
            output,
            grads: vec![("w".into(), DType::F32, grad)],
        }
    }

    #[test]
    fn equal_tensors_have_no_difference() {
        let a = snap(vec![1.0, -2.0], vec![0.0, 0.0]);
        let d = compare(&a, &a).unwrap();
        assert_eq!(d.len(), 2);
        assert!(
            d.iter()
                .all(|d| d.relative == 0.0 && (d.cosine - 1.0).abs() < 1e-12),
            "{d:?}"
        );
    }

    #[test]
    fn relative_difference_is_scaled_by_the_reference() {
        let want = snap(vec![4.0, -2.0], vec![1.0, 1.0]);
        let got = snap(vec![4.0, -1.0], vec![-1.0, -1.0]);
        let d = compare(&got, &want).unwrap();
        assert!((d[0].relative - 0.25).abs() < 1e-12, "{d:?}");
        assert!((d[1].relative - 2.0).abs() < 1e-12 && (d[1].cosine + 1.0).abs() < 1e-12);
    }

    #[test]
    fn mismatched_or_broken_snapshots_are_errors() {
        let want = snap(vec![1.0], vec![1.0]);
        assert!(compare(&snap(vec![1.0, 2.0], vec![1.0]), &want).is_err());
        assert!(compare(&snap(vec![f32::NAN], vec![1.0]), &want).is_err());
        let mut other = want.clone();
        other.grads[0].0 = "v".into();
        assert!(compare(&other, &want).is_err());
        other.grads.clear();
        assert!(compare(&other, &want).is_err());
        let zero = snap(vec![0.0], vec![1.0]);
        assert_eq!(compare(&want, &zero).unwrap()[0].relative, f64::INFINITY);
    }
}
