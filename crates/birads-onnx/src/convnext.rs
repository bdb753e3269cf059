//! MyConvNeXt as ONNX nodes: stem, stages of CNBlocks with LayerNorm2d + 2×2 downsampling
//! between them, and the head. Dropout and stochastic depth are identities at inference.

use birads_model::blocks::LayerNorm2d;
use birads_model::convnext::CnBlock;
use birads_model::MyConvNeXt;
use burn::prelude::Backend;

use crate::graph::Graph;
use crate::{conv_params, layer_norm_params, linear_params, values};

/// LayerNorm over channels of an NCHW map: to channels-last, normalise, back.
fn layer_norm_2d<B: Backend>(g: &mut Graph, x: &str, n: &LayerNorm2d<B>, name: &str) -> String {
    let c = n.weight.dims()[0];
    let s = g.weight(&format!("{name}.weight"), &[c], &values(n.weight.val()));
    let b = g.weight(&format!("{name}.bias"), &[c], &values(n.bias.val()));
    let t = g.transpose(x, [0, 2, 3, 1]);
    let t = g.layer_norm(&t, &s, &b, n.epsilon);
    g.transpose(&t, [0, 3, 1, 2])
}

fn block<B: Backend>(g: &mut Graph, x: &str, b: &CnBlock<B>, name: &str) -> String {
    let c = b.dwconv.weight.dims()[0];
    let (w, bias) = conv_params(g, &b.dwconv, &format!("{name}.dwconv"));
    let y = g.conv(x, &w, bias.as_deref(), 1, 3, c);
    let y = g.transpose(&y, [0, 2, 3, 1]);
    let (s, sb) = layer_norm_params(g, &b.norm, &format!("{name}.norm"));
    // torchvision's CNBlock LayerNorm has eps 1e-6 (burn keeps it private).
    let y = g.layer_norm(&y, &s, &sb, 1e-6);
    let (w1, b1) = linear_params(g, &b.pwconv1, &format!("{name}.pwconv1"));
    let y = g.linear(&y, &w1, b1.as_deref());
    let y = g.gelu(&y);
    let (w2, b2) = linear_params(g, &b.pwconv2, &format!("{name}.pwconv2"));
    let y = g.linear(&y, &w2, b2.as_deref());
    let ls = g.weight(
        &format!("{name}.layer_scale"),
        &[c],
        &values(b.layer_scale.val()),
    );
    let y = g.binary("Mul", &y, &ls);
    let y = g.transpose(&y, [0, 3, 1, 2]);
    g.binary("Add", &y, x)
}

/// Logits `[N, classes]` of `image`.
pub fn graph<B: Backend>(g: &mut Graph, m: &MyConvNeXt<B>, image: &str) -> String {
    let (w, b) = conv_params(g, &m.stem_conv, "stem_conv");
    let mut x = g.conv(image, &w, b.as_deref(), 4, 0, 1);
    x = layer_norm_2d(g, &x, &m.stem_norm, "stem_norm");
    for (i, stage) in m.stages.iter().enumerate() {
        if i > 0 {
            let d = &m.downsamples[i - 1];
            x = layer_norm_2d(g, &x, &d.norm, &format!("downsamples.{}.norm", i - 1));
            let (w, b) = conv_params(g, &d.conv, &format!("downsamples.{}.conv", i - 1));
            x = g.conv(&x, &w, b.as_deref(), 2, 0, 1);
        }
        for (j, blk) in stage.blocks.iter().enumerate() {
            x = block(g, &x, blk, &format!("stages.{i}.blocks.{j}"));
        }
    }
    let p = g.pooled(&x);
    let (s, sb) = layer_norm_params(g, &m.head_norm, "head_norm");
    let h = g.layer_norm(&p, &s, &sb, 1e-5);
    let (w1, b1) = linear_params(g, &m.head_fc1, "head_fc1");
    let h = g.linear(&h, &w1, b1.as_deref());
    let h = g.gelu(&h);
    let (w2, b2) = linear_params(g, &m.head_fc2, "head_fc2");
    g.linear(&h, &w2, b2.as_deref())
}
