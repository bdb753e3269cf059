//! A dedicated CPU inference path for both models: channels-last (NHWC) activations, every
//! matrix product through the `gemm` crate (runtime-dispatched AVX-512/AVX2/NEON kernels) on
//! row chunks that stay in cache, BatchNorm folded into the following convolution, depthwise
//! 7×7 fused with its LayerNorm, and a vectorisable GELU.
//!
//! Why not burn here: burn's generic ops run each layer as separate whole-tensor passes in
//! NCHW (permute copies around every LayerNorm, a scalar `erf` per GELU, no BN folding), which
//! left inference at a third of PyTorch's speed. The weights are taken from the burn modules
//! (so every loader and checkpoint format works unchanged) and `tests/fast.rs` checks the
//! outputs against the burn path and PyTorch's.

pub mod convnext;
pub mod densenet;
pub mod train;

use std::ops::Range;

use rayon::prelude::*;

pub use convnext::FastConvNeXt;
pub use densenet::FastDenseNet;

use crate::checkpoint::AnyModel;

/// Either model on the dedicated inference path.
pub enum FastModel {
    ConvNeXt(FastConvNeXt),
    DenseNet(FastDenseNet),
}

impl FastModel {
    /// Copy the weights of an evaluation-mode model (any backend).
    pub fn from_model<B: burn::prelude::Backend>(m: &AnyModel<B>) -> Self {
        match m {
            AnyModel::ConvNeXt(m) => Self::ConvNeXt(FastConvNeXt::from_model(m)),
            AnyModel::DenseNet(m) => Self::DenseNet(FastDenseNet::from_model(m)),
        }
    }

    /// Logits for `n` NCHW images of `h×w`, flattened per image: `[n, classes]` or
    /// `[n, tasks, 2]`.
    pub fn forward(&self, x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
        match self {
            Self::ConvNeXt(m) => m.forward(x, n, h, w),
            Self::DenseNet(m) => m.forward(x, n, h, w),
        }
    }

    /// Width of a softmax group in the output: all classes, or one task's two logits.
    pub fn softmax_group(&self, per_image: usize) -> usize {
        match self {
            Self::ConvNeXt(_) => per_image,
            Self::DenseNet(m) => m.head_width(),
        }
    }
}

/// A raw pointer that parallel row chunks use to write disjoint rows (or disjoint columns of
/// the same rows) of one buffer. Every use states why the regions are disjoint.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub *mut f32);
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The element `offset` places further (the caller keeps it inside the buffer).
    pub fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Rows per parallel chunk: enough chunks to balance the threads, each still large enough
/// for an efficient matrix product. `None` when the matrix is too small to split (then the
/// products themselves run multi-threaded).
pub(crate) fn chunk_rows(m: usize) -> Option<usize> {
    let threads = rayon::current_num_threads().max(1);
    if threads == 1 || m < 96 * threads {
        return None;
    }
    // A multiple of the thread count, about 384 rows each, rounded up to the vector width
    // so the matrix kernels run full register tiles.
    let chunks = threads * m.div_ceil(threads * 384);
    let rows = m.div_ceil(chunks);
    // Small matrices: an even split matters more than full register tiles.
    Some(if rows >= 256 {
        rows.next_multiple_of(16)
    } else {
        rows
    })
}

/// Run `f` over row ranges of `0..m`: in parallel chunks when the matrix is large enough
/// (`f` gets `false`: single-threaded products), else once over everything (`true`).
pub(crate) fn for_rows(m: usize, f: impl Fn(Range<usize>, bool) + Sync) {
    match chunk_rows(m) {
        Some(rows) => (0..m.div_ceil(rows))
            .into_par_iter()
            .for_each(|i| f(i * rows..((i + 1) * rows).min(m), false)),
        None => f(0..m, true),
    }
}

/// `c[m×n] (+)= a[m×k] · b[k×n]`, all row-major with the given row strides.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    parallel: bool,
) {
    gemm_strided(
        (m, n, k),
        (a, lda, 1),
        (b, ldb, 1),
        (c, ldc, 1),
        accumulate,
        parallel,
    )
}

/// `c[m×n] (+)= a[m×k] · b[k×n]` with arbitrary element strides `(row, column)` for each
/// operand (transposes for free), single-threaded unless `parallel`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_strided(
    (m, n, k): (usize, usize, usize),
    a: (&[f32], usize, usize),
    b: (&[f32], usize, usize),
    c: (*mut f32, usize, usize),
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k > 0 {
        assert!(a.0.len() > (m - 1) * a.1 + (k - 1) * a.2);
        assert!(b.0.len() > (k - 1) * b.1 + (n - 1) * b.2);
    }
    let par = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts bound the reads; callers own `c` for the `m×n` block at its strides.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.0,
            c.2 as isize,
            c.1 as isize,
            accumulate,
            a.0.as_ptr(),
            a.2 as isize,
            a.1 as isize,
            b.0.as_ptr(),
            b.2 as isize,
            b.1 as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// A dense layer `y = x·W + b` with `W` stored `[in, out]` (burn's `Linear` layout).
pub(crate) struct Dense {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub din: usize,
    pub dout: usize,
}

impl Dense {
    pub fn from_linear<B: burn::prelude::Backend>(l: &burn::nn::Linear<B>) -> Self {
        let [din, dout] = l.weight.dims();
        Self {
            w: values(l.weight.val()),
            b: l.bias.as_ref().map(|b| values(b.val())).unwrap_or_default(),
            din,
            dout,
        }
    }

    /// `y[rows×out] = x[rows×in]·W + b` (single-threaded product unless `parallel`).
    pub fn apply(&self, x: &[f32], rows: usize, parallel: bool) -> Vec<f32> {
        let mut y = vec![0.0; rows * self.dout];
        matmul(
            (rows, self.dout, self.din),
            x,
            self.din,
            &self.w,
            self.dout,
            y.as_mut_ptr(),
            self.dout,
            false,
            parallel,
        );
        if !self.b.is_empty() {
            for r in y.chunks_exact_mut(self.dout) {
                add(r, &self.b);
            }
        }
        y
    }
}

/// LayerNorm parameters over the last dimension.
pub(crate) struct Norm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub eps: f32,
}

impl Norm {
    /// A burn `LayerNorm` (its epsilon is private in burn, so the caller passes the one the
    /// model was built with).
    pub fn from_layer_norm<B: burn::prelude::Backend>(
        l: &burn::nn::LayerNorm<B>,
        eps: f32,
    ) -> Self {
        let gamma = values(l.gamma.val());
        let beta = match &l.beta {
            Some(b) => values(b.val()),
            None => vec![0.0; gamma.len()],
        };
        Self { gamma, beta, eps }
    }

    /// Normalise `x` (one row) into `out`, two-pass mean and biased variance as PyTorch.
    #[inline(always)]
    pub fn row(&self, x: &[f32], out: &mut [f32]) {
        let c = x.len() as f32;
        let mean = sum(x) / c;
        let var = sum_sq_dev(x, mean) / c;
        let inv = 1.0 / (var + self.eps).sqrt();
        for (((o, v), g), b) in out.iter_mut().zip(x).zip(&self.gamma).zip(&self.beta) {
            *o = (v - mean) * inv * g + b;
        }
    }

    /// Normalise every row of `x` (width = channels) in place.
    pub fn rows_in_place(&self, x: &mut [f32]) {
        let c = self.gamma.len();
        let mut tmp = vec![0.0; c];
        for r in x.chunks_exact_mut(c) {
            self.row(r, &mut tmp);
            r.copy_from_slice(&tmp);
        }
    }
}

/// A per-channel affine map (an evaluation-mode BatchNorm).
pub(crate) struct Affine {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

/// Lanes of the partial sums below: independent accumulators the compiler keeps in one
/// vector register (a single running sum is a serial dependency chain it cannot vectorise).
const LANES: usize = 16;

/// Sum with `LANES` partial sums.
#[inline(always)]
pub(crate) fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ (x − mean)²` with `LANES` partial sums.
#[inline(always)]
pub(crate) fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += (v - mean) * (v - mean);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Maximum with `LANES` partial maxima.
#[inline(always)]
pub(crate) fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = a.max(*v);
        }
    }
    acc.iter().fold(tail, |m, v| m.max(*v))
}

/// Per-thread scratch buffers, reused across layers and calls: fresh allocations of the
/// same sizes showed up as page faults and memset in profiles. The contents are whatever
/// the last user left; every user writes before it reads.
pub(crate) struct Scratch {
    buf: Vec<f32>,
    len: usize,
}

thread_local! {
    static POOL: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A scratch buffer of `len` values (uninitialised in meaning, not in memory).
pub(crate) fn scratch(len: usize) -> Scratch {
    // The smallest pooled buffer that fits, else the largest (grown): memory stays at the
    // high-water mark of buffers alive at the same time.
    let mut buf = POOL
        .with(|p| {
            let mut p = p.borrow_mut();
            let pick = p
                .iter()
                .enumerate()
                .filter(|(_, b)| b.len() >= len)
                .min_by_key(|(_, b)| b.len())
                .or_else(|| p.iter().enumerate().max_by_key(|(_, b)| b.len()))
                .map(|(i, _)| i);
            pick.map(|i| p.swap_remove(i))
        })
        .unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    Scratch { buf, len }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        POOL.with(|p| p.borrow_mut().push(buf));
    }
}

impl std::ops::Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[..self.len]
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[..self.len]
    }
}

#[inline(always)]
pub(crate) fn add(x: &mut [f32], b: &[f32]) {
    for (v, b) in x.iter_mut().zip(b) {
        *v += b;
    }
}

/// `erf` as a rational function of `x²` on [−4, 4] (the Eigen/XLA float approximation,
/// within a few ulp of `erff`): plain arithmetic the compiler vectorises, unlike libm's.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

#[inline(always)]
fn gelu_body(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

#[inline(always)]
fn bias_gelu_body(x: &mut [f32], b: &[f32]) {
    if b.is_empty() {
        return gelu_body(x);
    }
    for r in x.chunks_exact_mut(b.len()) {
        add(r, b);
        gelu_body(r);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// The widest vector unit `simd` may use: 2 = AVX-512, 1 = AVX2 + FMA, 0 = baseline.
static SIMD_CAP: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(2);

/// Limit the vector unit of the elementwise kernels (tests use it to run the AVX2 and
/// baseline code on an AVX-512 machine; the matrix products dispatch on their own).
pub fn limit_simd(level: u8) {
    SIMD_CAP.store(level, std::sync::atomic::Ordering::Relaxed);
}

/// Run `f` compiled for the widest vector unit the CPU has (AVX-512, else AVX2+FMA, else the
/// baseline): elementwise loops written as plain Rust inside an `#[inline(always)]` closure
/// are vectorised at that width. The choice is made at run time, so the binary still runs
/// on CPUs without AVX-512.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static LEVEL: OnceLock<u8> = OnceLock::new();
        let detected = *LEVEL.get_or_init(|| {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                2
            } else if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                1
            } else {
                0
            }
        });
        let level = detected.min(SIMD_CAP.load(std::sync::atomic::Ordering::Relaxed));
        // SAFETY: the features were detected at run time.
        match level {
            2 => return unsafe { run_avx512(f) },
            1 => return unsafe { run_avx2(f) },
            _ => {}
        }
    }
    f()
}

/// `x = gelu(x + b)` row by row (`b` empty: no bias), the exact-erf GELU that PyTorch uses
/// by default.
pub(crate) fn bias_gelu(x: &mut [f32], b: &[f32]) {
    simd(
        #[inline(always)]
        || bias_gelu_body(x, b),
    )
}

/// GELU in place.
pub(crate) fn gelu(x: &mut [f32]) {
    bias_gelu(x, &[]);
}

/// Rows `rows` of the im2col matrix of an NHWC image batch for a `k×k` convolution with
/// `stride` and zero `pad`: each row is one output position, its columns `(ky, kx, c)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn im2col(
    x: &[f32],
    (h, w, c): (usize, usize, usize),
    (oh, ow): (usize, usize),
    k: usize,
    stride: usize,
    pad: usize,
    rows: Range<usize>,
    out: &mut [f32],
) {
    let width = k * k * c;
    for (r, p) in rows.enumerate() {
        let (img, rest) = (p / (oh * ow), p % (oh * ow));
        let (oy, ox) = (rest / ow, rest % ow);
        let dst = &mut out[r * width..(r + 1) * width];
        for ky in 0..k {
            let iy = (oy * stride + ky) as isize - pad as isize;
            let d_row = &mut dst[ky * k * c..(ky + 1) * k * c];
            if iy < 0 || iy >= h as isize {
                d_row.fill(0.0);
                continue;
            }
            let row_base = (img * h + iy as usize) * w;
            let x0 = (ox * stride) as isize - pad as isize;
            if x0 >= 0 && x0 as usize + k <= w {
                // The whole kernel row is inside the image: one contiguous copy.
                let src = (row_base + x0 as usize) * c;
                d_row.copy_from_slice(&x[src..src + k * c]);
                continue;
            }
            for (kx, d) in d_row.chunks_exact_mut(c).enumerate() {
                let ix = x0 + kx as isize;
                if ix < 0 || ix >= w as isize {
                    d.fill(0.0);
                } else {
                    let src = (row_base + ix as usize) * c;
                    d.copy_from_slice(&x[src..src + c]);
                }
            }
        }
    }
}

/// An NCHW batch as NHWC.
pub(crate) fn to_nhwc(x: &[f32], n: usize, c: usize, hw: usize) -> Scratch {
    let mut out = scratch(x.len());
    for img in 0..n {
        let src = &x[img * c * hw..(img + 1) * c * hw];
        let dst = &mut out[img * c * hw..(img + 1) * c * hw];
        for ch in 0..c {
            for (p, v) in src[ch * hw..(ch + 1) * hw].iter().enumerate() {
                dst[p * c + ch] = *v;
            }
        }
    }
    out
}

/// Convolution weights `[out, in, kh, kw]` as the `[(kh, kw, in), out]` matrix that multiplies
/// im2col rows.
pub(crate) fn conv_matrix(w: &[f32], cout: usize, cin: usize, k: usize) -> Vec<f32> {
    let mut m = vec![0.0; k * k * cin * cout];
    for co in 0..cout {
        for ci in 0..cin {
            for ky in 0..k {
                for kx in 0..k {
                    m[((ky * k + kx) * cin + ci) * cout + co] =
                        w[((co * cin + ci) * k + ky) * k + kx];
                }
            }
        }
    }
    m
}

/// The inverse of `conv_matrix`: `[(kh, kw, in), out]` back to burn's `[out, in, kh, kw]`.
pub(crate) fn conv_weight(m: &[f32], cout: usize, cin: usize, k: usize) -> Vec<f32> {
    let mut w = vec![0.0; m.len()];
    for co in 0..cout {
        for ci in 0..cin {
            for t in 0..k * k {
                w[(co * cin + ci) * k * k + t] = m[(t * cin + ci) * cout + co];
            }
        }
    }
    w
}

/// Mean over the spatial positions of each image: `[n, hw, c]` → `[n, c]`.
pub(crate) fn global_mean(x: &[f32], n: usize, hw: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0; n * c];
    for img in 0..n {
        let o = &mut out[img * c..(img + 1) * c];
        for r in x[img * hw * c..(img + 1) * hw * c].chunks_exact(c) {
            add(o, r);
        }
        for v in o.iter_mut() {
            *v /= hw as f32;
        }
    }
    out
}

/// Values of a burn tensor as `f32`.
pub(crate) fn values<B: burn::prelude::Backend, const D: usize>(
    t: burn::prelude::Tensor<B, D>,
) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 tensor data")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn erf_matches_libm_closely() {
        let mut worst = 0.0f32;
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            let want = libm_erf(x as f64) as f32;
            worst = worst.max((erf(x) - want).abs());
        }
        assert!(worst < 5e-7, "max |erf error| {worst}");
    }

    /// Reference erf through its series / continued fraction in f64 (no libm crate here).
    pub(crate) fn libm_erf(x: f64) -> f64 {
        // Abramowitz–Stegun 7.1.5 series converges fast enough for |x| ≤ 6 in f64 with
        // enough terms; compensate large |x| with erfc's continued fraction.
        if x.abs() > 3.0 {
            let t = x.abs();
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (t + f);
            }
            let erfc = (-t * t).exp() / std::f64::consts::PI.sqrt() / (t + f);
            return x.signum() * (1.0 - erfc);
        }
        let mut sum = 0.0;
        let mut term = x;
        let mut k = 0.0;
        while term.abs() > 1e-17 || k < 5.0 {
            sum += term / (2.0 * k + 1.0);
            k += 1.0;
            term *= -x * x / k;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    }

    #[test]
    fn im2col_product_equals_direct_convolution() {
        let (n, h, w, c, co, k, s, p) = (2, 5, 6, 3, 4, 3, 2, 1);
        let x: Vec<f32> = (0..n * h * w * c)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let wt: Vec<f32> = (0..co * c * k * k)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 10.0)
            .collect();
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let mut cols = vec![f32::NAN; n * oh * ow * k * k * c];
        im2col(&x, (h, w, c), (oh, ow), k, s, p, 0..n * oh * ow, &mut cols);
        let wm = conv_matrix(&wt, co, c, k);
        let mut y = vec![0.0; n * oh * ow * co];
        matmul(
            (n * oh * ow, co, k * k * c),
            &cols,
            k * k * c,
            &wm,
            co,
            y.as_mut_ptr(),
            co,
            false,
            false,
        );
        for img in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for o in 0..co {
                        let mut acc = 0.0;
                        for ci in 0..c {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let (iy, ix) =
                                        ((oy * s + ky) as isize - 1, (ox * s + kx) as isize - 1);
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w
                                    {
                                        acc += x
                                            [((img * h + iy as usize) * w + ix as usize) * c + ci]
                                            * wt[((o * c + ci) * k + ky) * k + kx];
                                    }
                                }
                            }
                        }
                        let got = y[((img * oh + oy) * ow + ox) * co + o];
                        assert!((got - acc).abs() < 1e-4, "{got} vs {acc}");
                    }
                }
            }
        }
    }
}
