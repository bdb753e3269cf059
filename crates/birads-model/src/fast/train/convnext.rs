//! MyConvNeXt's backbone in training: stem, downsamples and CNBlocks with their dropout and
//! stochastic depth, forward and backward, channels last. A CNBlock's forward pass keeps its
//! input, the normalised depthwise output, the pre-GELU hidden layer and the second Linear's
//! output; its backward pass runs the four products per row chunk with per-worker weight
//! gradients, then the depthwise convolution's two gradients in a second pass (they need the
//! neighbouring rows).

use std::ops::Range;

use burn::prelude::*;

use super::{
    drop_path_factors, dropout_backward, dropout_forward, for_rows_acc, gelu_with_grad,
    gemm_strided, give, layer_norm_row, layer_norm_row_backward, set_param, substream, take,
    take_zeroed, ColConv, RowNorm, Weight,
};
use crate::convnext::{CnBlock, MyConvNeXt};
use crate::fast::{
    for_rows, global_mean, matmul, scratch, simd, to_nhwc, values, Scratch, SharedMut,
};

/// Epsilon of the blocks' LayerNorm (see `fast::convnext`).
const BLOCK_EPS: f32 = 1e-6;

struct Block {
    /// Depthwise taps `[(ky, kx), C]`.
    dw: Weight,
    dw_b: Weight,
    gamma: Weight,
    beta: Weight,
    /// `[C, 4C]` and `[4C, C]` (burn's `Linear` layout).
    w1: Weight,
    b1: Weight,
    w2: Weight,
    b2: Weight,
    scale: Weight,
    drop_path: f32,
    dropout: f32,
    // Saved by the forward pass.
    input: Vec<f32>,
    xhat: Vec<f32>,
    inv: Vec<f32>,
    hidden: Vec<f32>,
    branch: Vec<f32>,
    factors: Vec<f32>,
    mask: Vec<u8>,
    geometry: (usize, usize, usize),
}

struct Down {
    norm: RowNorm,
    conv: ColConv,
    masks: (Vec<u8>, Vec<u8>),
}

struct Stage {
    down: Option<Down>,
    blocks: Vec<Block>,
}

/// MyConvNeXt's backbone with its weights, optimiser moments and saved activations.
pub struct ConvNeXtTrainer {
    stem: ColConv,
    stem_norm: RowNorm,
    stem_masks: (Vec<u8>, Vec<u8>),
    stages: Vec<Stage>,
    dropout: f32,
    pub steps: i32,
    /// Final feature map `(n, h·w, C)` of the last forward pass.
    last: (usize, usize, usize),
}

fn block_from<B: Backend>(b: &CnBlock<B>) -> Block {
    let [c, _, k, _] = b.dwconv.weight.dims();
    assert_eq!(k, 7, "ConvNeXt's depthwise kernel is 7×7");
    let lin = |l: &burn::nn::Linear<B>| {
        (
            Weight::new(values(l.weight.val())),
            Weight::new(
                l.bias
                    .as_ref()
                    .map(|b| values(b.val()))
                    .unwrap_or(vec![0.0; l.weight.dims()[1]]),
            ),
        )
    };
    let (w1, b1) = lin(&b.pwconv1);
    let (w2, b2) = lin(&b.pwconv2);
    Block {
        dw: Weight::new(crate::fast::convnext::depthwise_taps(&b.dwconv)),
        dw_b: Weight::new(
            b.dwconv
                .bias
                .as_ref()
                .map(|b| values(b.val()))
                .unwrap_or(vec![0.0; c]),
        ),
        gamma: Weight::new(values(b.norm.gamma.val())),
        beta: Weight::new(
            b.norm
                .beta
                .as_ref()
                .map(|b| values(b.val()))
                .unwrap_or(vec![0.0; c]),
        ),
        w1,
        b1,
        w2,
        b2,
        scale: Weight::new(values(b.layer_scale.val())),
        drop_path: b.drop_path as f32,
        dropout: b.dropout as f32,
        input: Vec::new(),
        xhat: Vec::new(),
        inv: Vec::new(),
        hidden: Vec::new(),
        branch: Vec::new(),
        factors: Vec::new(),
        mask: Vec::new(),
        geometry: (0, 0, 0),
    }
}

fn norm_2d<B: Backend>(l: &crate::blocks::LayerNorm2d<B>) -> RowNorm {
    RowNorm::new(
        values(l.weight.val()),
        values(l.bias.val()),
        l.epsilon as f32,
    )
}

impl ConvNeXtTrainer {
    pub fn from_model<B: Backend>(m: &MyConvNeXt<B>) -> Self {
        let stages = m
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| Stage {
                down: (i > 0).then(|| {
                    let d = &m.downsamples[i - 1];
                    Down {
                        norm: norm_2d(&d.norm),
                        conv: ColConv::from_conv(&d.conv),
                        masks: Default::default(),
                    }
                }),
                blocks: s.blocks.iter().map(block_from).collect(),
            })
            .collect();
        Self {
            stem: ColConv::from_conv(&m.stem_conv),
            stem_norm: norm_2d(&m.stem_norm),
            stem_masks: Default::default(),
            stages,
            dropout: m.dropout as f32,
            steps: 0,
            last: (0, 0, 0),
        }
    }

    pub fn weights_mut(&mut self) -> Vec<&mut Weight> {
        let mut v = vec![
            &mut self.stem.w,
            &mut self.stem.b,
            &mut self.stem_norm.gamma,
            &mut self.stem_norm.beta,
        ];
        for s in &mut self.stages {
            if let Some(d) = &mut s.down {
                v.extend([
                    &mut d.norm.gamma,
                    &mut d.norm.beta,
                    &mut d.conv.w,
                    &mut d.conv.b,
                ]);
            }
            for b in &mut s.blocks {
                v.extend([
                    &mut b.dw,
                    &mut b.dw_b,
                    &mut b.gamma,
                    &mut b.beta,
                    &mut b.w1,
                    &mut b.b1,
                    &mut b.w2,
                    &mut b.b2,
                    &mut b.scale,
                ]);
            }
        }
        v
    }

    pub fn forward(&mut self, x: &[f32], n: usize, h: usize, w: usize, seed: u64) -> Vec<f32> {
        assert_eq!(x.len(), n * 3 * h * w, "input is n × 3 × h × w");
        let mut img = take(x.len());
        img.copy_from_slice(&to_nhwc(x, n, 3, h * w));
        let p = self.dropout;
        let mut stream = 0u64;
        let mut next = || {
            stream += 1;
            substream(seed, stream)
        };
        let mut x = self.stem.forward(img, n, h, w);
        let (mut h, mut w) = self.stem.out_size(h, w);
        let mut c = self.stem.cout;
        dropout_forward(&mut x, &mut self.stem_masks.0, p, next());
        self.stem_norm.forward(&mut x);
        dropout_forward(&mut x, &mut self.stem_masks.1, p, next());
        for stage in &mut self.stages {
            if let Some(d) = &mut stage.down {
                d.norm.forward(&mut x);
                dropout_forward(&mut x, &mut d.masks.0, p, next());
                x = d.conv.forward(x, n, h, w);
                (h, w) = d.conv.out_size(h, w);
                c = d.conv.cout;
                dropout_forward(&mut x, &mut d.masks.1, p, next());
            }
            for b in &mut stage.blocks {
                x = block_forward(b, x, (n, h, w, c), (next(), next()));
            }
        }
        self.last = (n, h * w, c);
        let pooled = global_mean(&x, n, h * w, c);
        give(x);
        pooled
    }

    pub fn backward(&mut self, d_pooled: &[f32]) {
        let (n, hw, c) = self.last;
        assert_eq!(d_pooled.len(), n * c, "one gradient per pooled feature");
        for w in self.weights_mut() {
            w.grad.fill(0.0);
        }
        let mut d = take(n * hw * c);
        for (img, dp) in d_pooled.chunks_exact(c).enumerate() {
            for row in d[img * hw * c..(img + 1) * hw * c].chunks_exact_mut(c) {
                for (v, g) in row.iter_mut().zip(dp) {
                    *v = g / hw as f32;
                }
            }
        }
        let p = self.dropout;
        for stage in self.stages.iter_mut().rev() {
            for b in stage.blocks.iter_mut().rev() {
                d = block_backward(b, d);
            }
            if let Some(down) = &mut stage.down {
                dropout_backward(&mut d, &down.masks.1, p);
                let dx = down
                    .conv
                    .backward(&d, true)
                    .expect("patchify input gradient");
                give(std::mem::replace(&mut d, dx));
                dropout_backward(&mut d, &down.masks.0, p);
                down.norm.backward(&mut d);
            }
        }
        dropout_backward(&mut d, &self.stem_masks.1, p);
        self.stem_norm.backward(&mut d);
        dropout_backward(&mut d, &self.stem_masks.0, p);
        self.stem.backward(&d, false);
        give(d);
    }

    /// `m` with this backbone's weights.
    pub fn write_to<B: Backend>(&self, mut m: MyConvNeXt<B>) -> MyConvNeXt<B> {
        self.stem.write_to(&mut m.stem_conv);
        set_param(&mut m.stem_norm.weight, self.stem_norm.gamma.value.clone());
        set_param(&mut m.stem_norm.bias, self.stem_norm.beta.value.clone());
        for (i, (ours, theirs)) in self.stages.iter().zip(&mut m.stages).enumerate() {
            if let Some(d) = &ours.down {
                let t = &mut m.downsamples[i - 1];
                set_param(&mut t.norm.weight, d.norm.gamma.value.clone());
                set_param(&mut t.norm.bias, d.norm.beta.value.clone());
                d.conv.write_to(&mut t.conv);
            }
            for (b, t) in ours.blocks.iter().zip(&mut theirs.blocks) {
                // The inverse of `depthwise_taps`.
                let c = b.dw_b.value.len();
                set_param(
                    &mut t.dwconv.weight,
                    crate::fast::conv_weight(&b.dw.value, 1, c, 7),
                );
                if let Some(bias) = &mut t.dwconv.bias {
                    set_param(bias, b.dw_b.value.clone());
                }
                set_param(&mut t.norm.gamma, b.gamma.value.clone());
                if let Some(beta) = &mut t.norm.beta {
                    set_param(beta, b.beta.value.clone());
                }
                set_param(&mut t.pwconv1.weight, b.w1.value.clone());
                if let Some(bias) = &mut t.pwconv1.bias {
                    set_param(bias, b.b1.value.clone());
                }
                set_param(&mut t.pwconv2.weight, b.w2.value.clone());
                if let Some(bias) = &mut t.pwconv2.bias {
                    set_param(bias, b.b2.value.clone());
                }
                set_param(&mut t.layer_scale, b.scale.value.clone());
            }
        }
        m
    }
}

/// One CNBlock in training: `x` (kept) → `dropout(x + drop_path(γ ⊙ branch(x)))`.
fn block_forward(
    b: &mut Block,
    x: Vec<f32>,
    (n, h, w, c): (usize, usize, usize, usize),
    (seed_path, seed_drop): (u64, u64),
) -> Vec<f32> {
    let m = n * h * w;
    let hid = b.w1.value.len() / c;
    b.xhat.resize(m * c, 0.0);
    b.inv.resize(m, 0.0);
    b.hidden.resize(m * hid, 0.0);
    b.branch.resize(m * c, 0.0);
    b.factors = drop_path_factors(n, b.drop_path, seed_path);
    let mut out = take(m * c);
    {
        let ptrs = (
            SharedMut(b.xhat.as_mut_ptr()),
            SharedMut(b.inv.as_mut_ptr()),
            SharedMut(b.hidden.as_mut_ptr()),
            SharedMut(b.branch.as_mut_ptr()),
            SharedMut(out.as_mut_ptr()),
        );
        let b = &*b;
        let x = &x;
        for_rows(m, |rows, par| {
            let r = rows.len();
            // SAFETY: each chunk owns its rows of every saved buffer and of `out`.
            let (xhat, inv, hidden, branch, out) = unsafe {
                (
                    std::slice::from_raw_parts_mut(ptrs.0.at(rows.start * c), r * c),
                    std::slice::from_raw_parts_mut(ptrs.1.at(rows.start), r),
                    std::slice::from_raw_parts_mut(ptrs.2.at(rows.start * hid), r * hid),
                    std::slice::from_raw_parts_mut(ptrs.3.at(rows.start * c), r * c),
                    std::slice::from_raw_parts_mut(ptrs.4.at(rows.start * c), r * c),
                )
            };
            let a = depthwise_norm_forward(b, x, (h, w, c), rows.clone(), xhat, inv);
            mlp_forward(b, &a, (r, c, hid), hidden, branch, par);
            residual_forward(b, x, (h, w, c), rows, branch, out);
        });
    }
    dropout_forward(&mut out, &mut b.mask, b.dropout, seed_drop);
    give(std::mem::replace(&mut b.input, x));
    b.geometry = (n, h, w);
    out
}

/// Depthwise convolution then LayerNorm of the pixel rows `rows`: saves the normalised rows
/// (`xhat`) and their inverse deviations (`inv`) and returns the LayerNorm's output, the
/// first Linear's input.
fn depthwise_norm_forward(
    b: &Block,
    x: &[f32],
    (h, w, c): (usize, usize, usize),
    rows: Range<usize>,
    xhat: &mut [f32],
    inv: &mut [f32],
) -> Scratch {
    let r = rows.len();
    let mut t = scratch(r * c);
    let mut a = scratch(r * c);
    simd(
        #[inline(always)]
        || {
            depthwise(&b.dw.value, &b.dw_b.value, x, (h, w, c), rows, &mut t);
            for (((t, xh), a), inv) in t
                .chunks_exact(c)
                .zip(xhat.chunks_exact_mut(c))
                .zip(a.chunks_exact_mut(c))
                .zip(inv.iter_mut())
            {
                *inv = layer_norm_row(t, &b.gamma.value, &b.beta.value, BLOCK_EPS, xh, a);
            }
        },
    );
    a
}

/// The pointwise MLP of `r` rows `a`: `hidden = a·W1 + b1` (kept, before GELU) and
/// `branch = GELU(hidden)·W2`, still without its bias (`residual_forward` adds it).
fn mlp_forward(
    b: &Block,
    a: &[f32],
    (r, c, hid): (usize, usize, usize),
    hidden: &mut [f32],
    branch: &mut [f32],
    par: bool,
) {
    matmul(
        (r, hid, c),
        a,
        c,
        &b.w1.value,
        hid,
        hidden.as_mut_ptr(),
        hid,
        false,
        par,
    );
    let mut g = scratch(r * hid);
    simd(
        #[inline(always)]
        || {
            for (hr, gr) in hidden.chunks_exact_mut(hid).zip(g.chunks_exact_mut(hid)) {
                crate::fast::add(hr, &b.b1.value);
                gr.copy_from_slice(hr);
            }
        },
    );
    crate::fast::gelu(&mut g);
    matmul(
        (r, c, hid),
        &g,
        hid,
        &b.w2.value,
        c,
        branch.as_mut_ptr(),
        c,
        false,
        par,
    );
}

/// The branch's end and the residual for the pixel rows `rows`: adds `b2` to `branch` (kept
/// so) and writes `out = x + f · scale ⊙ branch`, `f` the image's drop-path factor.
fn residual_forward(
    b: &Block,
    x: &[f32],
    (h, w, c): (usize, usize, usize),
    rows: Range<usize>,
    branch: &mut [f32],
    out: &mut [f32],
) {
    simd(
        #[inline(always)]
        || {
            for (i, ((o, br), xr)) in out
                .chunks_exact_mut(c)
                .zip(branch.chunks_exact_mut(c))
                .zip(x[rows.start * c..rows.end * c].chunks_exact(c))
                .enumerate()
            {
                let f = b.factors[(rows.start + i) / (h * w)];
                for ((((o, br), x), s), bias) in o
                    .iter_mut()
                    .zip(br.iter_mut())
                    .zip(xr)
                    .zip(&b.scale.value)
                    .zip(&b.b2.value)
                {
                    *br += bias;
                    *o = x + f * s * *br;
                }
            }
        },
    );
}

/// Depthwise 7×7 (zero padding 3) + bias of the pixel rows `rows` into `out`.
#[inline(always)]
fn depthwise(
    taps: &[f32],
    bias: &[f32],
    x: &[f32],
    (h, w, c): (usize, usize, usize),
    rows: Range<usize>,
    out: &mut [f32],
) {
    for (r, p) in rows.enumerate() {
        let acc = &mut out[r * c..(r + 1) * c];
        acc.copy_from_slice(bias);
        crate::fast::convnext::depthwise_pixel(taps, x, (h, w, c), p, acc);
    }
}

/// Backward of `block_forward`: the gradient of its input from that of its output.
fn block_backward(b: &mut Block, mut d: Vec<f32>) -> Vec<f32> {
    dropout_backward(&mut d, &b.mask, b.dropout);
    // The residual passes `d` on unchanged; the branch's gradient is added below.
    let mut dx = take(d.len());
    dx.copy_from_slice(&d);
    branch_backward(b, &mut d);
    depthwise_backward_pass(b, &d, &mut dx);
    give(d);
    dx
}

/// One worker's gradients of the branch's weights, in one buffer
/// `[W2 | b2 | W1 | b1 | layer scale | γ | β]`.
struct BranchGrads<'a> {
    w2: &'a mut [f32],
    b2: &'a mut [f32],
    w1: &'a mut [f32],
    b1: &'a mut [f32],
    scale: &'a mut [f32],
    gamma: &'a mut [f32],
    beta: &'a mut [f32],
}

impl<'a> BranchGrads<'a> {
    /// The buffer's length for `c` channels and `hid` hidden units.
    fn len(c: usize, hid: usize) -> usize {
        2 * hid * c + hid + 4 * c
    }

    /// `acc` cut into the seven gradients.
    fn split(acc: &'a mut [f32], c: usize, hid: usize) -> Self {
        let (w2, rest) = acc.split_at_mut(hid * c);
        let (b2, rest) = rest.split_at_mut(c);
        let (w1, rest) = rest.split_at_mut(hid * c);
        let (b1, rest) = rest.split_at_mut(hid);
        let (scale, rest) = rest.split_at_mut(c);
        let (gamma, beta) = rest.split_at_mut(c);
        Self {
            w2,
            b2,
            w1,
            b1,
            scale,
            gamma,
            beta,
        }
    }
}

/// Pass 1, per row chunk: layer scale, both Linears, GELU, LayerNorm → gradient of the
/// depthwise output (`d`, overwritten row by row); the weights' gradients are summed over
/// the workers and added to theirs.
fn branch_backward(b: &mut Block, d: &mut [f32]) {
    let (n, h, w) = b.geometry;
    let c = b.dw_b.value.len();
    let hid = b.w1.value.len() / c;
    let dp = SharedMut(d.as_mut_ptr());
    let mut acc = {
        let b = &*b;
        for_rows_acc(
            n * h * w,
            || take_zeroed(BranchGrads::len(c, hid)),
            |rows, acc, par| {
                let r = rows.len();
                // SAFETY: each chunk owns its rows of `d`.
                let dr = unsafe { std::slice::from_raw_parts_mut(dp.at(rows.start * c), r * c) };
                let mut grads = BranchGrads::split(acc, c, hid);
                let mut d_o = scratch(r * c);
                residual_backward(b, (h, w, c), rows.clone(), dr, &mut d_o, &mut grads);
                let d_a = mlp_backward(b, (c, hid), rows.clone(), &d_o, &mut grads, par);
                norm_backward(b, c, rows, &d_a, dr, &mut grads);
            },
        )
    };
    let grads = BranchGrads::split(&mut acc, c, hid);
    b.w2.accumulate(grads.w2);
    b.b2.accumulate(grads.b2);
    b.w1.accumulate(grads.w1);
    b.b1.accumulate(grads.b1);
    b.scale.accumulate(grads.scale);
    b.gamma.accumulate(grads.gamma);
    b.beta.accumulate(grads.beta);
    give(acc);
}

/// Backward of `residual_forward` for the pixel rows `rows`: the gradient `d_o` of the
/// branch (the second Linear's output) from the block's output gradient `dr`; adds the
/// layer scale's and `b2`'s gradients to `grads`.
fn residual_backward(
    b: &Block,
    (h, w, c): (usize, usize, usize),
    rows: Range<usize>,
    dr: &[f32],
    d_o: &mut [f32],
    grads: &mut BranchGrads,
) {
    let branch = &b.branch[rows.start * c..rows.end * c];
    simd(
        #[inline(always)]
        || {
            for (i, ((dor, dr), br)) in d_o
                .chunks_exact_mut(c)
                .zip(dr.chunks_exact(c))
                .zip(branch.chunks_exact(c))
                .enumerate()
            {
                let f = b.factors[(rows.start + i) / (h * w)];
                for ((((o, d), br), s), ds) in dor
                    .iter_mut()
                    .zip(dr)
                    .zip(br)
                    .zip(&b.scale.value)
                    .zip(grads.scale.iter_mut())
                {
                    *ds += d * f * br;
                    *o = d * f * s;
                }
                crate::fast::add(grads.b2, dor);
            }
        },
    );
}

/// Backward of `mlp_forward` for the pixel rows `rows`, from the gradient `d_o` of its
/// output: recomputes its input `a` from the saved normalised rows and GELU with its
/// derivative from the saved hidden layer, adds W2's, W1's and b1's gradients to `grads`
/// and returns the gradient of `a`.
fn mlp_backward(
    b: &Block,
    (c, hid): (usize, usize),
    rows: Range<usize>,
    d_o: &[f32],
    grads: &mut BranchGrads,
    par: bool,
) -> Scratch {
    let r = rows.len();
    let xhat = &b.xhat[rows.start * c..rows.end * c];
    let hidden = &b.hidden[rows.start * hid..rows.end * hid];
    let mut a = scratch(r * c);
    let mut g = scratch(r * hid);
    let mut gp = scratch(r * hid);
    simd(
        #[inline(always)]
        || {
            for (ar, xr) in a.chunks_exact_mut(c).zip(xhat.chunks_exact(c)) {
                for (((a, x), g), be) in
                    ar.iter_mut().zip(xr).zip(&b.gamma.value).zip(&b.beta.value)
                {
                    *a = x * g + be;
                }
            }
            gelu_with_grad(hidden, &mut g, &mut gp);
        },
    );
    // dW2 += gᵀ·d_o; d_g = d_o·W2ᵀ (into g, no longer needed).
    gemm_strided(
        (hid, c, r),
        (&g, 1, hid),
        (d_o, c, 1),
        (grads.w2.as_mut_ptr(), c, 1),
        true,
        par,
    );
    gemm_strided(
        (r, hid, c),
        (d_o, c, 1),
        (&b.w2.value, 1, c),
        (g.as_mut_ptr(), hid, 1),
        false,
        par,
    );
    simd(
        #[inline(always)]
        || {
            for (gr, pr) in g.chunks_exact_mut(hid).zip(gp.chunks_exact(hid)) {
                for (g, p) in gr.iter_mut().zip(pr) {
                    *g *= p;
                }
                crate::fast::add(grads.b1, gr);
            }
        },
    );
    // dW1 += aᵀ·d_h; d_a = d_h·W1ᵀ (into a).
    gemm_strided(
        (c, hid, r),
        (&a, 1, c),
        (&g, hid, 1),
        (grads.w1.as_mut_ptr(), hid, 1),
        true,
        par,
    );
    gemm_strided(
        (r, c, hid),
        (&g, hid, 1),
        (&b.w1.value, 1, hid),
        (a.as_mut_ptr(), c, 1),
        false,
        par,
    );
    a
}

/// LayerNorm's backward for the pixel rows `rows`: overwrites `dr` with the gradient of the
/// depthwise output from `d_a`, that of the LayerNorm's output; adds γ's and β's gradients
/// to `grads`.
fn norm_backward(
    b: &Block,
    c: usize,
    rows: Range<usize>,
    d_a: &[f32],
    dr: &mut [f32],
    grads: &mut BranchGrads,
) {
    let xhat = &b.xhat[rows.start * c..rows.end * c];
    simd(
        #[inline(always)]
        || {
            for (i, (ar, dr)) in d_a.chunks_exact(c).zip(dr.chunks_exact_mut(c)).enumerate() {
                let xh = &xhat[i * c..(i + 1) * c];
                layer_norm_row_backward(
                    ar,
                    xh,
                    b.inv[rows.start + i],
                    &b.gamma.value,
                    grads.gamma,
                    grads.beta,
                    dr,
                );
            }
        },
    );
}

/// Pass 2: the depthwise convolution's weight and bias gradients (added to theirs) and its
/// input gradient (added to `dx`), from the gradient `d` of its output.
fn depthwise_backward_pass(b: &mut Block, d: &[f32], dx: &mut [f32]) {
    let (n, h, w) = b.geometry;
    let c = b.dw_b.value.len();
    let dxp = SharedMut(dx.as_mut_ptr());
    let acc = {
        let (x, taps) = (&b.input, &b.dw.value);
        for_rows_acc(
            n * h * w,
            || take_zeroed(50 * c),
            |rows, acc, _| {
                // SAFETY: each chunk owns its rows of `dx`.
                let dxr = unsafe {
                    std::slice::from_raw_parts_mut(dxp.at(rows.start * c), rows.len() * c)
                };
                simd(
                    #[inline(always)]
                    || depthwise_backward(taps, d, x, (h, w, c), rows.clone(), acc, dxr),
                );
            },
        )
    };
    b.dw.accumulate(&acc[..49 * c]);
    b.dw_b.accumulate(&acc[49 * c..]);
    give(acc);
}

/// For the pixel rows `rows`: accumulate the tap gradients (`acc[..49·C]`) and bias
/// gradient (`acc[49·C..]`) from the output gradient `d`, and add the input gradient of
/// these pixels (a correlation of `d` with the mirrored taps) to `dx`.
#[inline(always)]
fn depthwise_backward(
    taps: &[f32],
    d: &[f32],
    x: &[f32],
    (h, w, c): (usize, usize, usize),
    rows: Range<usize>,
    acc: &mut [f32],
    dx: &mut [f32],
) {
    let (dtaps, dbias) = acc.split_at_mut(49 * c);
    for (r, p) in rows.enumerate() {
        let (img, rest) = (p / (h * w), p % (h * w));
        let (y, xx) = (rest / w, rest % w);
        let dp = &d[p * c..(p + 1) * c];
        crate::fast::add(dbias, dp);
        let dxr = &mut dx[r * c..(r + 1) * c];
        for ky in 0..7 {
            // Output pixel p read input row y + ky − 3; input pixel p fed output row y − ky + 3.
            let iy = y as isize + ky as isize - 3;
            let oy = y as isize - ky as isize + 3;
            for kx in 0..7 {
                let t = ky * 7 + kx;
                let ix = xx as isize + kx as isize - 3;
                if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                    let src = &x[((img * h + iy as usize) * w + ix as usize) * c..][..c];
                    for ((g, s), dv) in dtaps[t * c..(t + 1) * c].iter_mut().zip(src).zip(dp) {
                        *g += s * dv;
                    }
                }
                let ox = xx as isize - kx as isize + 3;
                if oy >= 0 && oy < h as isize && ox >= 0 && ox < w as isize {
                    let dq = &d[((img * h + oy as usize) * w + ox as usize) * c..][..c];
                    for ((o, g), tap) in dxr.iter_mut().zip(dq).zip(&taps[t * c..(t + 1) * c]) {
                        *o += g * tap;
                    }
                }
            }
        }
    }
}
