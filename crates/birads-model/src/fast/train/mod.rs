//! Training the backbones on the dedicated CPU path: a hand-written forward pass that keeps
//! what its backward pass needs, the backward pass itself, and Adam/AdamW on the weights.
//!
//! Why: burn's autodiff ran the two backbones at 0.2–0.3× PyTorch's training speed on this
//! CPU (NCHW permute copies around every LayerNorm, depthwise-conv backward as a transposed
//! 3-D convolution, one core busy). Here the activations are channels last, every product
//! is a `gemm` call on row chunks, and the elementwise work is fused and vectorised.
//!
//! The split with burn: the backbone (everything up to the pooled feature vector) runs
//! here; the small heads and the losses stay burn modules on the autodiff backend, so their
//! semantics (dropout, the soft-F1 loss) are exactly the burn path's. `tests/train_fast.rs`
//! compares every gradient with burn's autodiff.

pub mod convnext;
pub mod densenet;

use std::ops::Range;

use burn::module::Param;
use burn::prelude::*;
use rayon::prelude::*;

pub use convnext::ConvNeXtTrainer;
pub use densenet::DenseNetTrainer;

pub(crate) use super::gemm_strided;
use super::{chunk_rows, simd};
use crate::checkpoint::AnyModel;

/// One trainable tensor: its values in our layout, the gradient of the last backward pass
/// and the optimiser's moments.
#[derive(Clone, Debug, Default)]
pub struct Weight {
    pub value: Vec<f32>,
    pub grad: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Weight {
    pub fn new(value: Vec<f32>) -> Self {
        let n = value.len();
        Self {
            value,
            grad: vec![0.0; n],
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// Add `g` (same length) to the gradient.
    pub(crate) fn accumulate(&mut self, g: &[f32]) {
        simd(
            #[inline(always)]
            || super::add(&mut self.grad, g),
        );
    }

    /// The two moments, for checkpoints.
    pub fn moments(&self) -> (&[f32], &[f32]) {
        (&self.m, &self.v)
    }

    /// Restore the moments saved with `moments`.
    pub fn set_moments(&mut self, m: &[f32], v: &[f32]) -> Result<(), String> {
        if m.len() != self.value.len() || v.len() != self.value.len() {
            return Err(format!(
                "optimiser moments of {} / {} values for a weight of {}",
                m.len(),
                v.len(),
                self.value.len()
            ));
        }
        self.m.copy_from_slice(m);
        self.v.copy_from_slice(v);
        Ok(())
    }
}

/// Which update rule, with burn's (= PyTorch's) definitions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UpdateRule {
    /// Decoupled weight decay: `w ← w·(1 − lr·λ) − lr·m̂/(√v̂ + ε)`.
    AdamW,
    /// L2 penalty added to the gradient, then Adam.
    Adam,
}

#[derive(Clone, Copy, Debug)]
pub struct OptimConfig {
    pub rule: UpdateRule,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

impl OptimConfig {
    /// The trainer's settings: PyTorch's betas and epsilon.
    pub fn new(rule: UpdateRule, weight_decay: f32) -> Self {
        Self {
            rule,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay,
        }
    }

    /// One update of `w` from its gradient; `time` counts updates from 1.
    pub fn update(&self, w: &mut Weight, lr: f32, time: i32) {
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 / (1.0 - b1.powi(time));
        let c2 = 1.0 / (1.0 - b2.powi(time));
        let decay = match self.rule {
            UpdateRule::AdamW => 1.0 - lr * self.weight_decay,
            UpdateRule::Adam => 1.0,
        };
        let l2 = match self.rule {
            UpdateRule::AdamW => 0.0,
            UpdateRule::Adam => self.weight_decay,
        };
        let eps = self.epsilon;
        let Weight { value, grad, m, v } = w;
        simd(
            #[inline(always)]
            || {
                for (((p, g), m), v) in value.iter_mut().zip(grad.iter()).zip(m).zip(v) {
                    let g = g + l2 * *p;
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    let delta = (*m * c1) / ((*v * c2).sqrt() + eps);
                    *p = *p * decay - lr * delta;
                }
            },
        );
    }
}

/// Either backbone in training.
#[allow(clippy::large_enum_variant)] // one per training run, never moved in a hot loop
pub enum FastTrainer {
    ConvNeXt(ConvNeXtTrainer),
    DenseNet(DenseNetTrainer),
}

impl FastTrainer {
    /// Copy the weights (and BatchNorm statistics) of a model; dropout rates come from it.
    pub fn from_model<B: Backend>(m: &AnyModel<B>) -> Self {
        match m {
            AnyModel::ConvNeXt(m) => Self::ConvNeXt(ConvNeXtTrainer::from_model(m)),
            AnyModel::DenseNet(m) => Self::DenseNet(DenseNetTrainer::from_model(m)),
        }
    }

    /// Training-mode forward pass of `n` NCHW images of `h×w`: the globally pooled final
    /// features `[n, C]` (what the head's average pool would give), keeping the activations
    /// for `backward`. `seed` fixes the dropout and stochastic-depth masks.
    pub fn forward(&mut self, x: &[f32], n: usize, h: usize, w: usize, seed: u64) -> Vec<f32> {
        match self {
            Self::ConvNeXt(t) => t.forward(x, n, h, w, seed),
            Self::DenseNet(t) => t.forward(x, n, h, w, seed),
        }
    }

    /// Gradients of every backbone weight from the gradient of the pooled features (they
    /// replace those of the previous step).
    pub fn backward(&mut self, d_pooled: &[f32]) {
        match self {
            Self::ConvNeXt(t) => t.backward(d_pooled),
            Self::DenseNet(t) => t.backward(d_pooled),
        }
    }

    pub fn weights_mut(&mut self) -> Vec<&mut Weight> {
        match self {
            Self::ConvNeXt(t) => t.weights_mut(),
            Self::DenseNet(t) => t.weights_mut(),
        }
    }

    /// Optimiser updates taken so far.
    pub fn steps(&self) -> i32 {
        match self {
            Self::ConvNeXt(t) => t.steps,
            Self::DenseNet(t) => t.steps,
        }
    }

    pub fn set_steps(&mut self, steps: i32) {
        match self {
            Self::ConvNeXt(t) => t.steps = steps,
            Self::DenseNet(t) => t.steps = steps,
        }
    }

    /// One optimiser update of every backbone weight from its gradient.
    pub fn step(&mut self, cfg: &OptimConfig, lr: f32) {
        let time = self.steps() + 1;
        self.set_steps(time);
        let mut weights = self.weights_mut();
        weights.par_iter_mut().for_each(|w| cfg.update(w, lr, time));
    }

    /// The model with this backbone's current weights (and BatchNorm statistics); the head
    /// and every parameter id are kept.
    pub fn write_to<B: Backend>(&self, m: AnyModel<B>) -> AnyModel<B> {
        match (self, m) {
            (Self::ConvNeXt(t), AnyModel::ConvNeXt(m)) => AnyModel::ConvNeXt(t.write_to(m)),
            (Self::DenseNet(t), AnyModel::DenseNet(m)) => AnyModel::DenseNet(t.write_to(m)),
            _ => panic!("a trainer writes only to the model family it was built from"),
        }
    }
}

/// Spare activation-sized buffers. A training step allocates and frees the same large
/// buffers every time; straight from the allocator they were fresh pages each step (page
/// faults and TLB shootdowns were ≈ 20 % of a step in `perf`).
static SPARE: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());

/// A buffer of `len` values with unspecified contents (the caller writes before reading).
pub(crate) fn take(len: usize) -> Vec<f32> {
    let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    let pick = spare
        .iter()
        .enumerate()
        .filter(|(_, b)| b.capacity() >= len)
        .min_by_key(|(_, b)| b.capacity())
        .map(|(i, _)| i);
    let mut v = match pick {
        Some(i) => spare.swap_remove(i),
        None => Vec::new(),
    };
    drop(spare);
    if v.len() > len {
        v.truncate(len);
    } else {
        v.resize(len, 0.0);
    }
    v
}

/// A zero-filled buffer of `len` values.
pub(crate) fn take_zeroed(len: usize) -> Vec<f32> {
    let mut v = take(len);
    v.fill(0.0);
    v
}

/// Return a buffer for reuse.
pub(crate) fn give(v: Vec<f32>) {
    if v.capacity() >= 1 << 16 {
        SPARE.lock().unwrap_or_else(|e| e.into_inner()).push(v);
    }
}

/// Replace a parameter's values, keeping its id and whether it requires gradients.
pub(crate) fn set_param<B: Backend, const D: usize>(p: &mut Param<Tensor<B, D>>, v: Vec<f32>) {
    *p = p.clone().map(|t| {
        let grad = t.is_require_grad();
        let fresh = Tensor::from_data(TensorData::new(v, t.shape()), &t.device());
        fresh.set_require_grad(grad)
    });
}

/// A counter-based random stream: value `i` of stream `seed` (splitmix64's finaliser), so
/// masks come out the same whatever the thread count or chunking.
#[inline(always)]
fn hash(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of sub-stream `k` of `seed`.
pub(crate) fn substream(seed: u64, k: u64) -> u64 {
    hash(seed ^ 0x5851_F42D_4C95_7F2D, k)
}

/// Dropout: keep each value with probability `1 − p`, scaling survivors by `1/(1 − p)`;
/// `mask` records the survivors (1) for the backward pass. `p = 0`: identity, mask all 1.
pub(crate) fn dropout_forward(x: &mut [f32], mask: &mut Vec<u8>, p: f32, seed: u64) {
    mask.resize(x.len(), 1);
    if p <= 0.0 {
        mask.fill(1);
        return;
    }
    let threshold = ((1.0 - p as f64) * 4_294_967_296.0) as u64;
    let scale = 1.0 / (1.0 - p);
    const PIECE: usize = 1 << 14;
    x.par_chunks_mut(PIECE)
        .zip(mask.par_chunks_mut(PIECE))
        .enumerate()
        .for_each(|(k, (x, m))| {
            simd(
                #[inline(always)]
                || {
                    let base = (k * PIECE) as u64;
                    for (i, (v, m)) in x.iter_mut().zip(m.iter_mut()).enumerate() {
                        let keep = (hash(seed, base + i as u64) >> 32) < threshold;
                        *m = keep as u8;
                        *v = if keep { *v * scale } else { 0.0 };
                    }
                },
            )
        });
}

/// Backward of `dropout_forward`: `d ← d·mask/(1 − p)`.
pub(crate) fn dropout_backward(d: &mut [f32], mask: &[u8], p: f32) {
    if p <= 0.0 {
        return;
    }
    let scale = 1.0 / (1.0 - p);
    d.par_chunks_mut(1 << 14)
        .zip(mask.par_chunks(1 << 14))
        .for_each(|(d, m)| {
            simd(
                #[inline(always)]
                || {
                    for (v, &m) in d.iter_mut().zip(m) {
                        *v = if m != 0 { *v * scale } else { 0.0 };
                    }
                },
            )
        });
}

/// Per-sample stochastic-depth factors: 0 with probability `p`, else `1/(1 − p)`.
pub(crate) fn drop_path_factors(n: usize, p: f32, seed: u64) -> Vec<f32> {
    if p <= 0.0 {
        return vec![1.0; n];
    }
    let threshold = ((1.0 - p as f64) * 4_294_967_296.0) as u64;
    (0..n)
        .map(|i| {
            if (hash(seed, i as u64) >> 32) < threshold {
                1.0 / (1.0 - p)
            } else {
                0.0
            }
        })
        .collect()
}

/// `e^x` for the GELU derivative: range reduction by ln 2 and a degree-6 polynomial (rel.
/// error ≈ 2e-7), plain arithmetic that vectorises (libm's `expf` does not).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round x/ln2 to the nearest integer with the 1.5·2²³ trick.
    let t = x * std::f32::consts::LOG2_E + 12_582_912.0;
    let k = t - 12_582_912.0;
    let r = x - k * 0.693_145_75 - k * 1.428_606_8e-6;
    let mut p = 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let bits = ((k as i32 + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

/// GELU of `h` into `g` and its derivative into `dg` (exact erf form, as PyTorch's default).
#[inline(always)]
pub(crate) fn gelu_with_grad(h: &[f32], g: &mut [f32], dg: &mut [f32]) {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    for ((h, g), dg) in h.iter().zip(g.iter_mut()).zip(dg.iter_mut()) {
        let cdf = 0.5 * (1.0 + super::erf(*h * std::f32::consts::FRAC_1_SQRT_2));
        *g = h * cdf;
        *dg = cdf + h * INV_SQRT_2PI * exp(-0.5 * h * h);
    }
}

/// LayerNorm of one row for training: `xhat` (normalised) and `1/σ`, returns nothing else;
/// the affine output is written to `out`.
#[inline(always)]
pub(crate) fn layer_norm_row(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    xhat: &mut [f32],
    out: &mut [f32],
) -> f32 {
    let c = x.len() as f32;
    let mean = super::sum(x) / c;
    let var = super::sum_sq_dev(x, mean) / c;
    let inv = 1.0 / (var + eps).sqrt();
    for ((((o, xh), v), g), b) in out
        .iter_mut()
        .zip(xhat.iter_mut())
        .zip(x)
        .zip(gamma)
        .zip(beta)
    {
        *xh = (v - mean) * inv;
        *o = *xh * g + b;
    }
    inv
}

/// LayerNorm backward of one row: accumulates `dγ`, `dβ` and writes `dx` from the
/// gradient of the affine output `dy` (may alias nothing).
#[inline(always)]
pub(crate) fn layer_norm_row_backward(
    dy: &[f32],
    xhat: &[f32],
    inv: f32,
    gamma: &[f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    dx: &mut [f32],
) {
    let c = dy.len() as f32;
    let (mut s1, mut s2) = ([0.0f32; 16], [0.0f32; 16]);
    for (i, (((d, xh), g), (dg, db))) in dy
        .iter()
        .zip(xhat)
        .zip(gamma)
        .zip(dgamma.iter_mut().zip(dbeta.iter_mut()))
        .enumerate()
    {
        *dg += d * xh;
        *db += d;
        let dxh = d * g;
        s1[i % 16] += dxh;
        s2[i % 16] += dxh * xh;
    }
    let m1 = s1.iter().sum::<f32>() / c;
    let m2 = s2.iter().sum::<f32>() / c;
    for (((o, d), xh), g) in dx.iter_mut().zip(dy).zip(xhat).zip(gamma) {
        *o = inv * (d * g - m1 - xh * m2);
    }
}

/// Run `f` over row chunks of `0..m` (the chunks of `for_rows`), each with a fresh
/// accumulator from `init`, and return the sum of the accumulators: per-row sums run over a
/// chunk's few hundred rows, not sequentially over all of a worker's thousands (blocked
/// summation; BatchNorm parameter gradients drifted otherwise).
pub(crate) fn for_rows_acc(
    m: usize,
    init: impl Fn() -> Vec<f32> + Sync,
    f: impl Fn(Range<usize>, &mut Vec<f32>, bool) + Sync,
) -> Vec<f32> {
    match chunk_rows(m) {
        Some(rows) => {
            let chunks: Vec<Range<usize>> = (0..m.div_ceil(rows))
                .map(|i| i * rows..((i + 1) * rows).min(m))
                .collect();
            accumulate(&chunks, false, init, |r, acc, par| f(r.clone(), acc, par))
        }
        None => accumulate(std::slice::from_ref(&(0..m)), true, init, |r, acc, par| {
            f(r.clone(), acc, par)
        }),
    }
}

/// `f` over `items`, each summing into a fresh accumulator that is then added to its worker's
/// total (the first item of a worker sums straight into the total, so one item per worker
/// costs no extra pass); items are assigned round-robin, so the result does not depend on
/// scheduling.
pub(crate) fn accumulate<T: Sync>(
    items: &[T],
    parallel_products: bool,
    init: impl Fn() -> Vec<f32> + Sync,
    f: impl Fn(&T, &mut Vec<f32>, bool) + Sync,
) -> Vec<f32> {
    let workers = rayon::current_num_threads().clamp(1, items.len().max(1));
    let totals: Vec<Vec<f32>> = (0..workers)
        .into_par_iter()
        .map(|t| {
            let mut total = init();
            for (k, item) in items.iter().skip(t).step_by(workers).enumerate() {
                if k == 0 {
                    f(item, &mut total, parallel_products);
                    continue;
                }
                let mut acc = init();
                f(item, &mut acc, parallel_products);
                simd(
                    #[inline(always)]
                    || super::add(&mut total, &acc),
                );
                give(acc);
            }
            total
        })
        .collect();
    reduce(totals)
}

/// Sum equally long vectors (partial gradients) into the first.
pub(crate) fn reduce(mut parts: Vec<Vec<f32>>) -> Vec<f32> {
    let mut first = parts.swap_remove(0);
    for p in parts {
        simd(
            #[inline(always)]
            || super::add(&mut first, &p),
        );
        give(p);
    }
    first
}

/// LayerNorm over the channels of every row (a `[rows, C]` matrix), for training.
pub(crate) struct RowNorm {
    pub gamma: Weight,
    pub beta: Weight,
    pub eps: f32,
    /// Saved by `forward`: normalised rows and `1/σ` per row.
    xhat: Vec<f32>,
    inv: Vec<f32>,
}

impl RowNorm {
    pub fn new(gamma: Vec<f32>, beta: Vec<f32>, eps: f32) -> Self {
        Self {
            gamma: Weight::new(gamma),
            beta: Weight::new(beta),
            eps,
            xhat: Vec::new(),
            inv: Vec::new(),
        }
    }

    /// Normalise `x` in place.
    pub fn forward(&mut self, x: &mut [f32]) {
        let c = self.gamma.value.len();
        let m = x.len() / c;
        self.xhat.resize(x.len(), 0.0);
        self.inv.resize(m, 0.0);
        let (g, b, eps) = (&self.gamma.value, &self.beta.value, self.eps);
        let (xp, hp, ip) = (
            super::SharedMut(x.as_mut_ptr()),
            super::SharedMut(self.xhat.as_mut_ptr()),
            super::SharedMut(self.inv.as_mut_ptr()),
        );
        super::for_rows(m, |rows, _| {
            // SAFETY: each chunk owns its rows of the three buffers.
            let (x, xh, inv) = unsafe {
                (
                    std::slice::from_raw_parts_mut(xp.at(rows.start * c), rows.len() * c),
                    std::slice::from_raw_parts_mut(hp.at(rows.start * c), rows.len() * c),
                    std::slice::from_raw_parts_mut(ip.at(rows.start), rows.len()),
                )
            };
            simd(
                #[inline(always)]
                || {
                    let mut out = vec![0.0; c];
                    for ((x, xh), inv) in x.chunks_exact_mut(c).zip(xh.chunks_exact_mut(c)).zip(inv)
                    {
                        *inv = layer_norm_row(x, g, b, eps, xh, &mut out);
                        x.copy_from_slice(&out);
                    }
                },
            )
        });
    }

    /// Gradient of the input from that of the output (in place); accumulates `dγ`, `dβ`.
    pub fn backward(&mut self, d: &mut [f32]) {
        let c = self.gamma.value.len();
        let m = d.len() / c;
        let (xhat, inv, g) = (&self.xhat, &self.inv, &self.gamma.value);
        let dp = super::SharedMut(d.as_mut_ptr());
        let acc = for_rows_acc(
            m,
            || take_zeroed(2 * c),
            |rows, acc, _| {
                // SAFETY: each chunk owns its rows of `d`.
                let d = unsafe {
                    std::slice::from_raw_parts_mut(dp.at(rows.start * c), rows.len() * c)
                };
                let (dg, db) = acc.split_at_mut(c);
                simd(
                    #[inline(always)]
                    || {
                        let mut dx = vec![0.0; c];
                        for (i, dy) in d.chunks_exact_mut(c).enumerate() {
                            let r = rows.start + i;
                            let xh = &xhat[r * c..(r + 1) * c];
                            layer_norm_row_backward(dy, xh, inv[r], g, dg, db, &mut dx);
                            dy.copy_from_slice(&dx);
                        }
                    },
                )
            },
        );
        self.gamma.accumulate(&acc[..c]);
        self.beta.accumulate(&acc[c..]);
        give(acc);
    }
}

/// A convolution as im2col × matrix (`[(ky, kx, in), out]` weights), for training. The input
/// gradient is implemented for patchify convolutions (kernel = stride, no padding: every
/// input pixel feeds exactly one output position) — the only ones whose input needs it here.
pub(crate) struct ColConv {
    pub w: Weight,
    /// Empty: no bias.
    pub b: Weight,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub cin: usize,
    pub cout: usize,
    /// Input of the last forward pass `[n·h·w, cin]` and its geometry.
    input: Vec<f32>,
    geometry: (usize, usize, usize),
}

impl ColConv {
    pub fn from_conv<B: Backend>(c: &burn::nn::conv::Conv2d<B>) -> Self {
        let [cout, cin, k, _] = c.weight.dims();
        let pad = match &c.padding {
            burn::nn::PaddingConfig2d::Explicit(a, ..) => *a,
            burn::nn::PaddingConfig2d::Valid => 0,
            other => panic!("unsupported padding {other:?}"),
        };
        Self {
            w: Weight::new(super::conv_matrix(
                &super::values(c.weight.val()),
                cout,
                cin,
                k,
            )),
            b: Weight::new(
                c.bias
                    .as_ref()
                    .map(|b| super::values(b.val()))
                    .unwrap_or_default(),
            ),
            k,
            stride: c.stride[0],
            pad,
            cin,
            cout,
            input: Vec::new(),
            geometry: (0, 0, 0),
        }
    }

    /// The burn weight tensor values `[out, in, k, k]`.
    pub fn burn_weight(&self) -> Vec<f32> {
        super::conv_weight(&self.w.value, self.cout, self.cin, self.k)
    }

    pub fn write_to<B: Backend>(&self, c: &mut burn::nn::conv::Conv2d<B>) {
        set_param(&mut c.weight, self.burn_weight());
        if let Some(b) = &mut c.bias {
            set_param(b, self.b.value.clone());
        }
    }

    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        (
            (h + 2 * self.pad - self.k) / self.stride + 1,
            (w + 2 * self.pad - self.k) / self.stride + 1,
        )
    }

    /// `x` (`[n·h·w, cin]`, kept for the backward pass) → `[n·oh·ow, cout]`.
    pub fn forward(&mut self, x: Vec<f32>, n: usize, h: usize, w: usize) -> Vec<f32> {
        let (oh, ow) = self.out_size(h, w);
        let m = n * oh * ow;
        let width = self.k * self.k * self.cin;
        let mut out = take(m * self.cout);
        let ptr = super::SharedMut(out.as_mut_ptr());
        let me = &*self;
        super::for_rows(m, |rows, par| {
            let mut cols = super::scratch(rows.len() * width);
            super::im2col(
                &x,
                (h, w, me.cin),
                (oh, ow),
                me.k,
                me.stride,
                me.pad,
                rows.clone(),
                &mut cols,
            );
            // SAFETY: each chunk owns its rows of `out`.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(ptr.at(rows.start * me.cout), rows.len() * me.cout)
            };
            super::matmul(
                (rows.len(), me.cout, width),
                &cols,
                width,
                &me.w.value,
                me.cout,
                dst.as_mut_ptr(),
                me.cout,
                false,
                par,
            );
            if !me.b.value.is_empty() {
                simd(
                    #[inline(always)]
                    || {
                        for r in dst.chunks_exact_mut(me.cout) {
                            super::add(r, &me.b.value);
                        }
                    },
                );
            }
        });
        give(std::mem::replace(&mut self.input, x));
        self.geometry = (n, h, w);
        out
    }

    /// Accumulate the weight (and bias) gradients from `d` (`[n·oh·ow, cout]`); returns the
    /// input gradient when `want_input` (patchify convolutions only).
    pub fn backward(&mut self, d: &[f32], want_input: bool) -> Option<Vec<f32>> {
        let (n, h, w) = self.geometry;
        let (oh, ow) = self.out_size(h, w);
        let m = n * oh * ow;
        let (k, cin, cout) = (self.k, self.cin, self.cout);
        let width = k * k * cin;
        assert!(
            !want_input || (self.stride == k && self.pad == 0),
            "input gradients of overlapping convolutions are not implemented"
        );
        let mut dx = if !want_input {
            Vec::new()
        } else if h % k == 0 && w % k == 0 {
            take(n * h * w * cin) // every pixel is written below
        } else {
            take_zeroed(n * h * w * cin)
        };
        let dxp = super::SharedMut(dx.as_mut_ptr());
        let me = &*self;
        let acc = for_rows_acc(
            m,
            || take_zeroed(width * cout + cout),
            |rows, acc, par| {
                let r = rows.len();
                let mut cols = super::scratch(r * width);
                super::im2col(
                    &me.input,
                    (h, w, cin),
                    (oh, ow),
                    k,
                    me.stride,
                    me.pad,
                    rows.clone(),
                    &mut cols,
                );
                let dr = &d[rows.start * cout..rows.end * cout];
                let (dw, db) = acc.split_at_mut(width * cout);
                // dW += colsᵀ · d
                gemm_strided(
                    (width, cout, r),
                    (&cols, 1, width),
                    (dr, cout, 1),
                    (dw.as_mut_ptr(), cout, 1),
                    true,
                    par,
                );
                simd(
                    #[inline(always)]
                    || {
                        for row in dr.chunks_exact(cout) {
                            super::add(db, row);
                        }
                    },
                );
                if want_input {
                    // d cols = d · Wᵀ, then scattered back: patches do not overlap, and the
                    // chunk's output rows own their input pixels.
                    gemm_strided(
                        (r, width, cout),
                        (dr, cout, 1),
                        (&me.w.value, 1, cout),
                        (cols.as_mut_ptr(), width, 1),
                        false,
                        par,
                    );
                    for (i, p) in rows.clone().enumerate() {
                        let (img, rest) = (p / (oh * ow), p % (oh * ow));
                        let (oy, ox) = (rest / ow, rest % ow);
                        for ky in 0..k {
                            let src = &cols[i * width + ky * k * cin..][..k * cin];
                            let at = ((img * h + oy * k + ky) * w + ox * k) * cin;
                            // SAFETY: see above; `at + k·cin` stays inside `dx`.
                            unsafe {
                                std::ptr::copy_nonoverlapping(src.as_ptr(), dxp.at(at), k * cin);
                            }
                        }
                    }
                }
            },
        );
        self.w.accumulate(&acc[..width * cout]);
        if !self.b.value.is_empty() {
            self.b.accumulate(&acc[width * cout..]);
        }
        give(acc);
        want_input.then_some(dx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_close_to_std() {
        for i in -8000..=2000 {
            let x = i as f32 / 100.0;
            let (got, want) = (exp(x), x.exp());
            assert!(
                (got - want).abs() <= 1e-6 * want.abs() + 1e-37,
                "exp({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn gelu_derivative_matches_finite_differences() {
        let h: Vec<f32> = (-60..=60).map(|i| i as f32 / 10.0).collect();
        let (mut g, mut dg) = (vec![0.0; h.len()], vec![0.0; h.len()]);
        gelu_with_grad(&h, &mut g, &mut dg);
        let gelu = |x: f64| 0.5 * x * (1.0 + crate::fast::tests::libm_erf(x / 2f64.sqrt()));
        for ((&x, &y), &d) in h.iter().zip(&g).zip(&dg) {
            let x = x as f64;
            assert!((y as f64 - gelu(x)).abs() < 1e-6, "gelu({x})");
            let fd = (gelu(x + 1e-4) - gelu(x - 1e-4)) / 2e-4;
            assert!((d as f64 - fd).abs() < 1e-5, "gelu'({x}) = {d}, want {fd}");
        }
    }

    #[test]
    fn dropout_keeps_the_expected_share_and_is_reproducible() {
        let mut x = vec![1.0f32; 100_000];
        let mut mask = Vec::new();
        dropout_forward(&mut x, &mut mask, 0.25, 7);
        let kept = mask.iter().filter(|&&m| m == 1).count() as f64 / 1e5;
        assert!((kept - 0.75).abs() < 0.01, "kept {kept}");
        for (v, m) in x.iter().zip(&mask) {
            assert_eq!(*v, if *m == 1 { 1.0 / 0.75 } else { 0.0 });
        }
        let mut again = vec![1.0f32; 100_000];
        let mut mask2 = Vec::new();
        dropout_forward(&mut again, &mut mask2, 0.25, 7);
        assert_eq!(mask, mask2);
        dropout_forward(&mut again, &mut mask2, 0.25, 8);
        assert_ne!(mask, mask2, "another seed, other masks");
        let mut d = vec![2.0f32; 100_000];
        dropout_backward(&mut d, &mask, 0.25);
        for (v, m) in d.iter().zip(&mask) {
            assert_eq!(*v, if *m == 1 { 2.0 / 0.75 } else { 0.0 });
        }
    }

    #[test]
    fn layer_norm_backward_matches_finite_differences() {
        let c = 24;
        let x: Vec<f32> = (0..c).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let gamma: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 / 20.0).collect();
        let beta: Vec<f32> = (0..c).map(|i| i as f32 / 50.0).collect();
        let r: Vec<f32> = (0..c).map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0).collect();
        // Loss = Σ r·LN(x).
        let loss = |x: &[f32]| {
            let (mut xh, mut y) = (vec![0.0; c], vec![0.0; c]);
            layer_norm_row(x, &gamma, &beta, 1e-6, &mut xh, &mut y);
            y.iter().zip(&r).map(|(a, b)| (a * b) as f64).sum::<f64>()
        };
        let (mut xh, mut y) = (vec![0.0; c], vec![0.0; c]);
        let inv = layer_norm_row(&x, &gamma, &beta, 1e-6, &mut xh, &mut y);
        let (mut dg, mut db, mut dx) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
        layer_norm_row_backward(&r, &xh, inv, &gamma, &mut dg, &mut db, &mut dx);
        for i in 0..c {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[i] += 1e-2;
            down[i] -= 1e-2;
            let fd = (loss(&up) - loss(&down)) / 2e-2;
            assert!(
                (dx[i] as f64 - fd).abs() < 2e-3,
                "dx[{i}] {} vs {fd}",
                dx[i]
            );
            assert!((dg[i] - r[i] * xh[i]).abs() < 1e-6 && db[i] == r[i]);
        }
    }

    #[test]
    fn adamw_update_matches_the_formula() {
        let mut w = Weight::new(vec![1.0, -2.0]);
        w.grad = vec![0.5, 0.0];
        let cfg = OptimConfig::new(UpdateRule::AdamW, 0.1);
        cfg.update(&mut w, 0.01, 1);
        // First step: m̂ = g, v̂ = g², so the step is lr·sign(g) (g ≠ 0), plus decay.
        assert!((w.value[0] - (1.0 * (1.0 - 0.001) - 0.01 * 0.5 / (0.5 + 1e-8))).abs() < 1e-6);
        assert!((w.value[1] - (-2.0 * (1.0 - 0.001))).abs() < 1e-6);
        let mut a = Weight::new(vec![1.0]);
        a.grad = vec![0.0];
        OptimConfig::new(UpdateRule::Adam, 0.1).update(&mut a, 0.01, 1);
        // Adam: the decay enters the gradient (0.1), so the step is a full lr.
        assert!((a.value[0] - 0.99).abs() < 1e-6, "{}", a.value[0]);
    }
}
