//! birads models out to ONNX, for ONNX Runtime, Triton and other inference servers.
//!
//! One graph per model, opset 17, written with the `onnx-protobuf` schema types:
//!
//! * input `image`: `float32 [batch, 3, size, size]`, normalised as the model's preprocessing
//!   says (the `birads.preprocess` metadata entry: CutBlack, crop, size, mean, std); `batch` is
//!   a dynamic axis;
//! * output `logits`: `[batch, classes]` for a BI-RADS model, `[batch, 4, 2]` for the feature
//!   model (boundary, calcification, direction, shape; logits of absent/present);
//! * output `probabilities`: softmax of `logits` over the last axis.
//!
//! Metadata (`metadata_props`): `birads.purpose` (`grading` or `features`), `birads.classes`
//! (JSON list, logit order), `birads.features` (JSON list), `birads.preprocess` (JSON),
//! `birads.source` (the weights it came from), `birads.version`.

mod convnext;
mod densenet;
pub mod graph;

use birads_model::checkpoint::{AnyModel, Purpose};
use burn::prelude::*;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::type_proto;
use onnx_protobuf::{
    tensor_shape_proto, GraphProto, Message, ModelProto, OperatorSetIdProto,
    StringStringEntryProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use graph::{Attr, Graph};

/// The ONNX operator set the graphs use.
pub const OPSET: i64 = 17;
/// ONNX IR version 8 (ONNX 1.10+, ONNX Runtime 1.10+).
pub const IR_VERSION: i64 = 8;

pub const INPUT: &str = "image";
pub const LOGITS: &str = "logits";
pub const PROBABILITIES: &str = "probabilities";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("encoding the ONNX model: {0}")]
    Encode(String),
}

/// What the exported file says about itself besides the weights.
pub struct ExportInfo {
    /// BI-RADS class names in logit order (ignored for the feature model).
    pub classes: Vec<String>,
    /// The model's preprocessing, as JSON (birads' `Preprocess`).
    pub preprocess: serde_json::Value,
    /// Input side in pixels.
    pub size: usize,
    /// Where the weights came from.
    pub source: String,
}

pub(crate) fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 weights")
}

/// A convolution's weight (and bias) as initializers named `{name}.weight` / `.bias`.
pub(crate) fn conv_params<B: Backend>(
    g: &mut Graph,
    c: &burn::nn::conv::Conv2d<B>,
    name: &str,
) -> (String, Option<String>) {
    let dims = c.weight.dims();
    let w = g.weight(&format!("{name}.weight"), &dims, &values(c.weight.val()));
    let b = c
        .bias
        .as_ref()
        .map(|b| g.weight(&format!("{name}.bias"), &[dims[0]], &values(b.val())));
    (w, b)
}

/// A Linear layer's `[in, out]` weight and bias.
pub(crate) fn linear_params<B: Backend>(
    g: &mut Graph,
    l: &burn::nn::Linear<B>,
    name: &str,
) -> (String, Option<String>) {
    let dims = l.weight.dims();
    let w = g.weight(&format!("{name}.weight"), &dims, &values(l.weight.val()));
    let b = l
        .bias
        .as_ref()
        .map(|b| g.weight(&format!("{name}.bias"), &[dims[1]], &values(b.val())));
    (w, b)
}

/// A LayerNorm's scale and bias (zeros when it has none).
pub(crate) fn layer_norm_params<B: Backend>(
    g: &mut Graph,
    l: &burn::nn::LayerNorm<B>,
    name: &str,
) -> (String, String) {
    let gamma = values(l.gamma.val());
    let beta = match &l.beta {
        Some(b) => values(b.val()),
        None => vec![0.0; gamma.len()],
    };
    let n = gamma.len();
    (
        g.weight(&format!("{name}.weight"), &[n], &gamma),
        g.weight(&format!("{name}.bias"), &[n], &beta),
    )
}

fn dim(v: Result<i64, &str>) -> tensor_shape_proto::Dimension {
    let mut d = tensor_shape_proto::Dimension::new();
    match v {
        Ok(n) => d.set_dim_value(n),
        Err(p) => d.set_dim_param(p.to_string()),
    }
    d
}

fn value_info(name: &str, dims: Vec<Result<i64, &str>>) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    shape.dim = dims.into_iter().map(dim).collect();
    let mut t = type_proto::Tensor::new();
    t.elem_type = DataType::FLOAT as i32;
    t.shape = Some(shape).into();
    let mut ty = TypeProto::new();
    ty.set_tensor_type(t);
    let mut v = ValueInfoProto::new();
    v.name = name.to_string();
    v.type_ = Some(ty).into();
    v
}

fn entry(key: &str, value: String) -> StringStringEntryProto {
    let mut e = StringStringEntryProto::new();
    e.key = key.to_string();
    e.value = value;
    e
}

/// The model as an ONNX `ModelProto` (see the crate documentation for names and metadata).
pub fn model_proto<B: Backend>(model: &AnyModel<B>, info: &ExportInfo) -> ModelProto {
    let mut g = Graph::default();
    let (logits, out_dims): (String, Vec<Result<i64, &str>>) = match model {
        AnyModel::ConvNeXt(m) => {
            let k = m.head_fc2.weight.dims()[1] as i64;
            (convnext::graph(&mut g, m, INPUT), vec![Err("batch"), Ok(k)])
        }
        AnyModel::DenseNet(m) => {
            let heads = m.task_heads.len() as i64;
            let width = m.task_heads[0].fc2.weight.dims()[1] as i64;
            let z = densenet::graph(&mut g, m, INPUT);
            let z = if model.purpose() == Purpose::Grading {
                // One head of class logits: [batch, 1, K] → [batch, K].
                let shape = g.ints("shape", &[0, width]);
                g.binary("Reshape", &z, &shape)
            } else {
                z
            };
            let dims = match model.purpose() {
                Purpose::Grading => vec![Err("batch"), Ok(width)],
                Purpose::Features => vec![Err("batch"), Ok(heads), Ok(width)],
            };
            (z, dims)
        }
    };
    g.op_into("Identity", &[&logits], vec![], LOGITS);
    g.op_into(
        "Softmax",
        &[LOGITS],
        vec![("axis", Attr::Int(-1))],
        PROBABILITIES,
    );
    let s = info.size as i64;
    let mut graph = GraphProto::new();
    graph.name = "birads".into();
    graph.node = g.nodes;
    graph.initializer = g.initializers;
    graph.input = vec![value_info(INPUT, vec![Err("batch"), Ok(3), Ok(s), Ok(s)])];
    graph.output = vec![
        value_info(LOGITS, out_dims.clone()),
        value_info(PROBABILITIES, out_dims),
    ];
    let mut opset = OperatorSetIdProto::new();
    opset.domain = String::new();
    opset.version = OPSET;
    let purpose = match model.purpose() {
        Purpose::Grading => "grading",
        Purpose::Features => "features",
    };
    let mut m = ModelProto::new();
    m.ir_version = IR_VERSION;
    m.opset_import = vec![opset];
    m.producer_name = "birads".into();
    m.producer_version = env!("CARGO_PKG_VERSION").into();
    m.doc_string = format!(
        "birads {purpose} model ({}). Input `image` [batch, 3, {s}, {s}] normalised per \
         birads.preprocess; outputs `logits` and `probabilities` (softmax over the last axis).",
        match model {
            AnyModel::ConvNeXt(_) => "MyConvNeXt",
            AnyModel::DenseNet(_) => "MyDenseNet",
        }
    );
    m.graph = Some(graph).into();
    let features = serde_json::json!(["boundary", "calcification", "direction", "shape"]);
    m.metadata_props = vec![
        entry("birads.purpose", purpose.into()),
        entry(
            "birads.classes",
            serde_json::to_string(&info.classes).unwrap_or_default(),
        ),
        entry("birads.features", features.to_string()),
        entry("birads.preprocess", info.preprocess.to_string()),
        entry("birads.source", info.source.clone()),
        entry("birads.version", env!("CARGO_PKG_VERSION").into()),
    ];
    m
}

/// The model as ONNX bytes.
pub fn export<B: Backend>(model: &AnyModel<B>, info: &ExportInfo) -> Result<Vec<u8>, ExportError> {
    model_proto(model, info)
        .write_to_bytes()
        .map_err(|e| ExportError::Encode(e.to_string()))
}
