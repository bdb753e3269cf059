//! A small builder for ONNX graphs on the schema types of `onnx-protobuf`: initializers, nodes
//! with one output each, and the few operators the two model families need, named after what
//! they compute so that a graph reads like the model's `forward`.

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{AttributeProto, NodeProto, TensorProto};

/// Nodes and initializers being assembled; every value has a unique name.
#[derive(Default)]
pub struct Graph {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    counter: usize,
}

/// An attribute: integer, integers or float.
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

fn attribute(name: &str, a: Attr) -> AttributeProto {
    let mut p = AttributeProto::new();
    p.name = name.to_string();
    match a {
        Attr::Int(i) => {
            p.i = i;
            p.type_ = AttributeType::INT.into();
        }
        Attr::Ints(v) => {
            p.ints = v;
            p.type_ = AttributeType::INTS.into();
        }
        Attr::Float(f) => {
            p.f = f;
            p.type_ = AttributeType::FLOAT.into();
        }
    }
    p
}

impl Graph {
    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// A float initializer (little-endian raw data).
    pub fn weight(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        assert_eq!(
            dims.iter().product::<usize>(),
            values.len(),
            "{name}: shape {dims:?} for {} values",
            values.len()
        );
        let mut t = TensorProto::new();
        t.name = name.to_string();
        t.dims = dims.iter().map(|&d| d as i64).collect();
        t.data_type = DataType::FLOAT as i32;
        t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(t);
        name.to_string()
    }

    /// An int64 initializer (shapes, axes).
    pub fn ints(&mut self, hint: &str, values: &[i64]) -> String {
        let name = self.fresh(hint);
        let mut t = TensorProto::new();
        t.name = name.clone();
        t.dims = vec![values.len() as i64];
        t.data_type = DataType::INT64 as i32;
        t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(t);
        name
    }

    /// A scalar float constant.
    pub fn scalar(&mut self, hint: &str, v: f32) -> String {
        let name = self.fresh(hint);
        self.weight(&name, &[], &[v])
    }

    /// Append a node with one output (named from `hint`), returning the output's name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.fresh(&op.to_ascii_lowercase());
        self.op_into(op, inputs, attrs, &out);
        out
    }

    /// Append a node writing to a given output name (the graph's outputs).
    pub fn op_into(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>, out: &str) {
        let mut n = NodeProto::new();
        n.op_type = op.to_string();
        n.name = format!("{op}_{}", self.nodes.len());
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![out.to_string()];
        n.attribute = attrs.into_iter().map(|(k, a)| attribute(k, a)).collect();
        self.nodes.push(n);
    }

    /// `Conv` with square kernel, stride and symmetric padding.
    pub fn conv(
        &mut self,
        x: &str,
        w: &str,
        b: Option<&str>,
        stride: usize,
        pad: usize,
        group: usize,
    ) -> String {
        let mut inputs = vec![x, w];
        inputs.extend(b);
        let p = pad as i64;
        self.op(
            "Conv",
            &inputs,
            vec![
                ("strides", Attr::Ints(vec![stride as i64; 2])),
                ("pads", Attr::Ints(vec![p, p, p, p])),
                ("group", Attr::Int(group as i64)),
            ],
        )
    }

    /// `x·W + b` for `W` stored `[in, out]` (burn's Linear layout).
    pub fn linear(&mut self, x: &str, w: &str, b: Option<&str>) -> String {
        let y = self.op("MatMul", &[x, w], vec![]);
        match b {
            Some(b) => self.op("Add", &[&y, b], vec![]),
            None => y,
        }
    }

    /// LayerNormalization over the last axis.
    pub fn layer_norm(&mut self, x: &str, scale: &str, bias: &str, eps: f64) -> String {
        self.op(
            "LayerNormalization",
            &[x, scale, bias],
            vec![
                ("axis", Attr::Int(-1)),
                ("epsilon", Attr::Float(eps as f32)),
            ],
        )
    }

    /// GELU with the exact erf, as PyTorch's default: `x · ½ (1 + erf(x / √2))`.
    pub fn gelu(&mut self, x: &str) -> String {
        let root2 = self.scalar("sqrt2", std::f32::consts::SQRT_2);
        let one = self.scalar("one", 1.0);
        let half = self.scalar("half", 0.5);
        let e = self.op("Div", &[x, &root2], vec![]);
        let e = self.op("Erf", &[&e], vec![]);
        let e = self.op("Add", &[&e, &one], vec![]);
        let y = self.op("Mul", &[x, &e], vec![]);
        self.op("Mul", &[&y, &half], vec![])
    }

    pub fn unary(&mut self, op: &str, x: &str) -> String {
        self.op(op, &[x], vec![])
    }

    pub fn binary(&mut self, op: &str, a: &str, b: &str) -> String {
        self.op(op, &[a, b], vec![])
    }

    pub fn transpose(&mut self, x: &str, perm: [i64; 4]) -> String {
        self.op("Transpose", &[x], vec![("perm", Attr::Ints(perm.to_vec()))])
    }

    /// `[N, C, H, W]` → `[N, C]` by the spatial mean.
    pub fn pooled(&mut self, x: &str) -> String {
        let p = self.op("GlobalAveragePool", &[x], vec![]);
        self.op("Flatten", &[&p], vec![("axis", Attr::Int(1))])
    }

    pub fn concat(&mut self, xs: &[&str], axis: i64) -> String {
        self.op("Concat", xs, vec![("axis", Attr::Int(axis))])
    }

    /// ReduceMean / ReduceMax over `axes`, keeping them (opset 17: axes as an attribute).
    pub fn reduce(&mut self, op: &str, x: &str, axes: &[i64]) -> String {
        self.op(
            op,
            &[x],
            vec![
                ("axes", Attr::Ints(axes.to_vec())),
                ("keepdims", Attr::Int(1)),
            ],
        )
    }

    pub fn pool(&mut self, op: &str, x: &str, kernel: usize, stride: usize, pad: usize) -> String {
        let p = pad as i64;
        self.op(
            op,
            &[x],
            vec![
                ("kernel_shape", Attr::Ints(vec![kernel as i64; 2])),
                ("strides", Attr::Ints(vec![stride as i64; 2])),
                ("pads", Attr::Ints(vec![p, p, p, p])),
            ],
        )
    }
}
