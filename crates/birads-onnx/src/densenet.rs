//! MyDenseNet as ONNX nodes: stem, dense blocks (each layer's output concatenated to its
//! input) with CBAM, transitions, norm5 (no ReLU), the head, the task-specific decoupling and
//! the per-task heads. Dropout is an identity at inference.

use birads_model::blocks::{BatchNorm2d, Cbam};
use birads_model::MyDenseNet;
use burn::prelude::Backend;

use crate::graph::{Attr, Graph};
use crate::{conv_params, layer_norm_params, linear_params, values};

fn batch_norm<B: Backend>(g: &mut Graph, x: &str, n: &BatchNorm2d<B>, name: &str) -> String {
    let c = n.weight.dims()[0];
    let s = g.weight(&format!("{name}.weight"), &[c], &values(n.weight.val()));
    let b = g.weight(&format!("{name}.bias"), &[c], &values(n.bias.val()));
    let m = g.weight(
        &format!("{name}.running_mean"),
        &[c],
        &values(n.running_mean.value()),
    );
    let v = g.weight(
        &format!("{name}.running_var"),
        &[c],
        &values(n.running_var.value()),
    );
    g.op(
        "BatchNormalization",
        &[x, &s, &b, &m, &v],
        vec![("epsilon", Attr::Float(n.epsilon as f32))],
    )
}

fn cbam<B: Backend>(g: &mut Graph, x: &str, c: &Cbam<B>, name: &str) -> String {
    let ca = &c.channel_attention;
    let (w1, _) = conv_params(g, &ca.fc1, &format!("{name}.channel_attention.fc1"));
    let (w2, _) = conv_params(g, &ca.fc2, &format!("{name}.channel_attention.fc2"));
    let mlp = |g: &mut Graph, v: &str| {
        let h = g.conv(v, &w1, None, 1, 0, 1);
        let h = g.unary("Relu", &h);
        g.conv(&h, &w2, None, 1, 0, 1)
    };
    let avg = g.op("GlobalAveragePool", &[x], vec![]);
    let max = g.op("GlobalMaxPool", &[x], vec![]);
    let (a, m) = (mlp(g, &avg), mlp(g, &max));
    let att = g.binary("Add", &a, &m);
    let att = g.unary("Sigmoid", &att);
    let x = g.binary("Mul", &att, x);
    let mean = g.reduce("ReduceMean", &x, &[1]);
    let max = g.reduce("ReduceMax", &x, &[1]);
    let both = g.concat(&[&mean, &max], 1);
    let (ws, _) = conv_params(
        g,
        &c.spatial_attention.conv,
        &format!("{name}.spatial_attention.conv"),
    );
    let s = g.conv(&both, &ws, None, 1, 3, 1);
    let s = g.unary("Sigmoid", &s);
    g.binary("Mul", &s, &x)
}

/// Logits `[N, heads, width]` of `image` (features: 4 × 2; a grader: 1 × classes).
pub fn graph<B: Backend>(g: &mut Graph, m: &MyDenseNet<B>, image: &str) -> String {
    let (w, _) = conv_params(g, &m.conv0, "conv0");
    let x = g.conv(image, &w, None, 2, 3, 1);
    let x = batch_norm(g, &x, &m.norm0, "norm0");
    let x = g.unary("Relu", &x);
    let mut x = g.pool("MaxPool", &x, 3, 2, 1);
    for (i, block) in m.blocks.iter().enumerate() {
        for (j, l) in block.layers.iter().enumerate() {
            let name = format!("blocks.{i}.layers.{j}");
            let y = batch_norm(g, &x, &l.norm1, &format!("{name}.norm1"));
            let y = g.unary("Relu", &y);
            let (w1, _) = conv_params(g, &l.conv1, &format!("{name}.conv1"));
            let y = g.conv(&y, &w1, None, 1, 0, 1);
            let y = batch_norm(g, &y, &l.norm2, &format!("{name}.norm2"));
            let y = g.unary("Relu", &y);
            let (w2, _) = conv_params(g, &l.conv2, &format!("{name}.conv2"));
            let y = g.conv(&y, &w2, None, 1, 1, 1);
            x = g.concat(&[&x, &y], 1);
        }
        x = cbam(g, &x, &block.cbam, &format!("blocks.{i}.cbam"));
        if let Some(t) = m.transitions.get(i) {
            let name = format!("transitions.{i}");
            let y = batch_norm(g, &x, &t.norm, &format!("{name}.norm"));
            let y = g.unary("Relu", &y);
            let (w, _) = conv_params(g, &t.conv, &format!("{name}.conv"));
            let y = g.conv(&y, &w, None, 1, 0, 1);
            x = g.pool("AveragePool", &y, 2, 2, 0);
        }
    }
    let x = batch_norm(g, &x, &m.norm5, "norm5");
    let p = g.pooled(&x);
    let (s, sb) = layer_norm_params(g, &m.head_norm, "head_norm");
    let h = g.layer_norm(&p, &s, &sb, 1e-5);
    let (w1, b1) = linear_params(g, &m.head_fc1, "head_fc1");
    let h = g.linear(&h, &w1, b1.as_deref());
    let h = g.unary("Relu", &h);
    let (w2, b2) = linear_params(g, &m.head_fc2, "head_fc2");
    let h = g.linear(&h, &w2, b2.as_deref());
    let h = g.gelu(&h);
    let (ws, bs) = linear_params(g, &m.shared_proj, "shared_proj");
    let shared = g.linear(&h, &ws, bs.as_deref());
    let mut heads = Vec::new();
    for (t, (proj, head)) in m.task_proj.iter().zip(&m.task_heads).enumerate() {
        let (wp, bp) = linear_params(g, proj, &format!("task_proj.{t}"));
        let own = g.linear(&h, &wp, bp.as_deref());
        let f = g.concat(&[&shared, &own], 1);
        let (wa, ba) = linear_params(g, &head.fc1, &format!("task_heads.{t}.fc1"));
        let z = g.linear(&f, &wa, ba.as_deref());
        let z = g.unary("Relu", &z);
        let (wb, bb) = linear_params(g, &head.fc2, &format!("task_heads.{t}.fc2"));
        let z = g.linear(&z, &wb, bb.as_deref());
        let axis = g.ints("axis1", &[1]);
        heads.push(g.binary("Unsqueeze", &z, &axis));
    }
    let refs: Vec<&str> = heads.iter().map(String::as_str).collect();
    g.concat(&refs, 1)
}
