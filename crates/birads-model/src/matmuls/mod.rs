//! Every matrix-product kernel that burn's matmul autotune may choose, run one by one on a
//! product and checked against a plain f64 reference (`birads bench matmuls`).
//!
//! Why: burn-cubecl times a list of cubek kernels for each product's key and keeps the fastest,
//! without comparing their results. The key holds m, n and k rounded to a power of two, so the
//! kernel tuned on one size then runs every size of its bucket. On Mesa's software Vulkan
//! driver one of them, the double-buffered unit matmul, was seen to give wrong values for a
//! 1×1 convolution's product (docs/gpu/README.md, "A known problem"). Which kernels are wrong
//! for which sizes and layouts on a given GPU is what this module measures: autotune may pick
//! any right or wrong one, depending on which is fastest there.
//!
//! The candidates are those of burn-cubecl 0.21's `matmul_autotune`, with the same arguments,
//! named as autotune names them in its logs and cache. Each runs on the same inputs into an
//! output filled with NaN (an element a kernel never writes shows). The error of an element is
//! |got − want| over Σ|aᵢ||bᵢ| of its dot product: the scale of the rounding of the inputs and
//! the sums, the same for any size, so one limit serves all products.

use crate::{MyConvNeXtConfig, MyDenseNetConfig};

#[cfg(feature = "cubecl-kernels")]
pub mod cube;
#[cfg(feature = "cuda")]
pub use cube::check_cuda;
#[cfg(feature = "wgpu")]
pub use cube::check_wgpu;
#[cfg(feature = "cubecl-kernels")]
pub use cube::{candidates, check, output};

/// `batch` products of an m×k matrix by a k×n one. A side that is `transposed` is stored as
/// its transpose, a view with swapped strides (the weight of `x · Wᵀ`, or `gᵀ` in a weight
/// gradient), as burn hands such views to the matmul without copying them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Product {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lhs_transposed: bool,
    pub rhs_transposed: bool,
}

impl std::fmt::Display for Product {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |t: bool| if t { "ᵀ" } else { "" };
        write!(
            f,
            "{}×[{}×{}{}]·[{}×{}{}]",
            self.batch,
            self.m,
            self.k,
            side(self.lhs_transposed),
            self.k,
            self.n,
            side(self.rhs_transposed)
        )
    }
}

/// What one kernel made of one product.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The largest error (see the module's doc), within the limit.
    Right(f64),
    /// Over the limit: the largest error, where, and the value against the reference
    /// (NaN where the kernel never wrote the element).
    Wrong {
        error: f64,
        index: usize,
        got: f32,
        want: f64,
    },
    /// The kernel does not take this product (its setup refused it), or it panicked:
    /// autotune skips such a kernel.
    Refused(String),
}

/// One candidate's result.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Its name in autotune's logs and cache.
    pub kernel: String,
    pub verdict: Verdict,
}

/// A linear layer's three products at `rows` rows, `inputs` → `outputs` features (burn keeps
/// the weight as `inputs × outputs`): the forward `x·W`, the input's gradient `g·Wᵀ` and the
/// weight's gradient `xᵀ·g`.
pub fn linear(rows: usize, inputs: usize, outputs: usize) -> [Product; 3] {
    [
        product(rows, inputs, outputs, false, false),
        product(rows, outputs, inputs, false, true),
        product(inputs, rows, outputs, true, false),
    ]
}

/// A 1×1 convolution's three products at `rows = batch · height · width`, as burn-cubecl's
/// `conv_im2col_1x1` makes them: the weight is `outputs × inputs`, so the forward takes its
/// transpose `x·Wᵀ`, the input's gradient `g·W` and the weight's gradient `gᵀ·x`.
pub fn conv1x1(rows: usize, inputs: usize, outputs: usize) -> [Product; 3] {
    [
        product(rows, inputs, outputs, false, true),
        product(rows, outputs, inputs, false, false),
        product(outputs, rows, inputs, true, false),
    ]
}

fn product(m: usize, k: usize, n: usize, lhs_transposed: bool, rhs_transposed: bool) -> Product {
    Product {
        batch: 1,
        m,
        n,
        k,
        lhs_transposed,
        rhs_transposed,
    }
}

/// The products of the linear layers of one training step of a MyConvNeXt at `batch` images
/// of `size`², each named: both pointwise layers of each stage's blocks, and the head. The
/// other convolutions (stem, depthwise, downsampling) go through cubek's convolution kernels,
/// not the matmul autotune.
pub fn convnext_products(
    c: &MyConvNeXtConfig,
    batch: usize,
    size: usize,
) -> Vec<(String, Product)> {
    let mut layers = Vec::new();
    for (stage, &dim) in c.dims.iter().enumerate() {
        let side = (size / 4) >> stage;
        let rows = batch * side * side;
        layers.push((format!("stage {stage} pwconv1"), rows, dim, 4 * dim));
        layers.push((format!("stage {stage} pwconv2"), rows, 4 * dim, dim));
    }
    let last = c.dims.last().copied().unwrap_or(0);
    layers.push(("head fc1".into(), batch, last, last / 2));
    layers.push(("head fc2".into(), batch, last / 2, c.num_classes));
    named(layers, linear)
}

/// The same for a MyDenseNet: the 1×1 convolution of the first, a middle and the last layer
/// of each dense block (each layer's input is wider by the growth rate), the transitions'
/// (before their pooling, at the block's size), and the heads (`densenet.rs`).
pub fn densenet_products(
    c: &MyDenseNetConfig,
    batch: usize,
    size: usize,
) -> Vec<(String, Product)> {
    let mut layers = Vec::new();
    let mut channels = c.init_features;
    let bottleneck = c.bn_size * c.growth;
    for (block, &count) in c.blocks.iter().enumerate() {
        let side = (size / 4) >> block;
        let rows = batch * side * side;
        let mut picked = vec![0, count / 2, count.saturating_sub(1)];
        picked.dedup();
        for layer in picked {
            let inputs = channels + c.growth * layer;
            layers.push((
                format!("block {block} layer {layer} conv1"),
                rows,
                inputs,
                bottleneck,
            ));
        }
        channels += c.growth * count;
        if block + 1 < c.blocks.len() {
            layers.push((format!("transition {block}"), rows, channels, channels / 2));
            channels /= 2;
        }
    }
    let mut all = named(layers, conv1x1);
    let nf = channels;
    let mut heads = Vec::new();
    for (name, i, o) in [
        ("head fc1", nf, nf / 2),
        ("head fc2", nf / 2, nf / 4),
        ("shared projection", nf / 4, nf / 8),
        ("task projection", nf / 4, nf / 2 - nf / 8),
        ("task head fc1", nf / 2, nf / 8),
        ("task head fc2", nf / 8, 2),
    ] {
        heads.push((name.into(), batch, i, o));
    }
    all.extend(named(heads, linear));
    all
}

/// Each layer's three products ([`linear`] or [`conv1x1`]), named after it.
fn named(
    layers: Vec<(String, usize, usize, usize)>,
    products: fn(usize, usize, usize) -> [Product; 3],
) -> Vec<(String, Product)> {
    let mut all = Vec::new();
    for (name, rows, i, o) in layers {
        let [forward, input, weight] = products(rows, i, o);
        all.push((format!("{name} forward"), forward));
        all.push((format!("{name} ∂x"), input));
        all.push((format!("{name} ∂W"), weight));
    }
    all
}

/// The stage lengths along k (8, 16, 32, 64) of which `k` is an odd multiple. cubek 0.2's
/// multi-stage (double-buffered, ordered, specialised) kernels run an even number of stages
/// and check bounds along k only when k is not a multiple of a stage: for these lengths they
/// read one stage past the end of the operands (docs/gpu/README.md, "A known problem").
/// Their stage is 8 for the unit kernels on the software driver, and, read from cubek's tile
/// selection, 32 for the tensor-core kernels on CUDA.
pub fn odd_stages(k: usize) -> Vec<usize> {
    [8, 16, 32, 64]
        .into_iter()
        .filter(|&s| k.is_multiple_of(s) && !(k / s).is_multiple_of(2))
        .collect()
}

/// The two sides of product `p` as [`check`] puts them on the device for `seed`, flat and
/// as stored (a transposed side as its transpose), before their rounding to the precision.
pub fn operands(p: Product, seed: u64) -> (Vec<f32>, Vec<f32>) {
    (
        values(p.batch * p.m * p.k, seed),
        values(p.batch * p.k * p.n, seed ^ 0x5a5a),
    )
}

/// Deterministic values in [−1, 1] (a multiplicative hash of the index and the seed): no
/// dependency for what needs only to be unstructured.
fn values(count: usize, seed: u64) -> Vec<f32> {
    (0..count as u64)
        .map(|i| {
            let h = (i ^ seed.rotate_left(17))
                .wrapping_add(seed)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let h = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            ((h >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

/// The verdict on `got`: the largest error, over `limit` or not.
pub fn judge(got: &[f32], want: &[f64], terms: &[f64], limit: f64) -> Verdict {
    let mut worst = (0.0f64, 0usize);
    for (i, ((&g, &w), &t)) in got.iter().zip(want).zip(terms).enumerate() {
        let error = (f64::from(g) - w).abs() / t.max(f64::MIN_POSITIVE);
        let error = if error.is_nan() { f64::INFINITY } else { error };
        if error > worst.0 {
            worst = (error, i);
        }
    }
    let (error, index) = worst;
    if error <= limit && got.len() == want.len() {
        Verdict::Right(error)
    } else {
        Verdict::Wrong {
            error,
            index,
            got: got.get(index).copied().unwrap_or(f32::NAN),
            want: want.get(index).copied().unwrap_or(f64::NAN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_judge_finds_a_wrong_or_missing_element() {
        let want = [1.0, -2.0, 0.5];
        let terms = [2.0, 3.0, 1.0];
        let right = judge(&[1.0, -2.0, 0.5], &want, &terms, 1e-6);
        assert_eq!(right, Verdict::Right(0.0));
        match judge(&[1.0, -1.0, 0.5], &want, &terms, 1e-6) {
            Verdict::Wrong { index, error, .. } => {
                assert_eq!(index, 1);
                assert!((error - 1.0 / 3.0).abs() < 1e-12);
            }
            v => panic!("{v:?}"),
        }
        match judge(&[1.0, -2.0, f32::NAN], &want, &terms, 1e-6) {
            Verdict::Wrong { index, error, .. } => assert_eq!((index, error), (2, f64::INFINITY)),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn odd_stage_counts_are_found_for_each_stage_length() {
        assert_eq!(odd_stages(24), vec![8]);
        assert_eq!(odd_stages(96), vec![32]);
        assert_eq!(odd_stages(32), vec![32]);
        assert_eq!(odd_stages(1568), vec![32]);
        assert_eq!(odd_stages(48), vec![16]);
        assert_eq!(odd_stages(64), vec![64]);
        assert!(odd_stages(128).is_empty());
        assert!(odd_stages(20).is_empty());
        assert!(odd_stages(6).is_empty());
    }

    #[test]
    fn the_values_are_spread_over_minus_one_to_one() {
        let v = values(10_000, 3);
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.05, "{mean}");
        assert_ne!(values(8, 3), values(8, 4));
    }

    #[test]
    fn the_training_products_follow_the_architectures() {
        let convnext = convnext_products(&MyConvNeXtConfig::new(), 32, 224);
        assert_eq!(convnext.len(), 3 * 10);
        let (name, first) = &convnext[0];
        assert_eq!(name, "stage 0 pwconv1 forward");
        assert_eq!((first.m, first.k, first.n), (32 * 56 * 56, 96, 384));
        let (_, weight) = &convnext[5];
        assert_eq!((weight.m, weight.k, weight.n), (384, 32 * 56 * 56, 96));
        assert!(weight.lhs_transposed && !weight.rhs_transposed);
        let (_, head) = &convnext[3 * 9];
        assert_eq!((head.m, head.k, head.n), (32, 384, 6));
        let densenet = densenet_products(&MyDenseNetConfig::new(), 64, 224);
        assert_eq!(densenet.len(), 3 * (12 + 3 + 6));
        let last = densenet
            .iter()
            .find(|(n, _)| n == "block 3 layer 15 conv1 forward")
            .unwrap();
        // 512 channels enter the last block (1024 / 2), 15 layers of 32 before the last.
        assert_eq!(
            (last.1.m, last.1.k, last.1.n),
            (64 * 7 * 7, 512 + 15 * 32, 128)
        );
        assert!(!last.1.lhs_transposed && last.1.rhs_transposed, "x·Wᵀ");
        let transition = densenet.iter().find(|(n, _)| n == "transition 2 forward");
        assert_eq!(transition.map(|t| (t.1.k, t.1.n)), Some((1024, 512)));
        let head = densenet.iter().find(|(n, _)| n == "head fc1 forward");
        assert_eq!(head.map(|t| (t.1.m, t.1.k, t.1.n)), Some((64, 1024, 512)));
        // A block of two layers names each once.
        let small = MyDenseNetConfig::new().with_blocks(vec![2, 2, 3, 2]);
        assert_eq!(
            densenet_products(&small, 8, 64).len(),
            3 * (2 + 2 + 3 + 2 + 3 + 6)
        );
    }
}
