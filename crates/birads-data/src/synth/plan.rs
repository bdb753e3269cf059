//! What to draw and from which random stream: the four splits, one job per image with
//! its lesion spec, and the seeding that gives every image its own independent stream.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::config::SynthConfig;
use super::quota::quota_specs;
use super::spec::{sample_spec, LesionSpec};

/// The four parts of the data set. The discriminant is part of each stream's seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Split {
    TrainCls = 1,
    TrainFea = 2,
    TestCls = 3,
    TestFea = 4,
}

impl Split {
    /// All splits in the order they are planned, written and listed.
    pub(super) const ALL: [Split; 4] = [
        Split::TrainCls,
        Split::TrainFea,
        Split::TestCls,
        Split::TestFea,
    ];

    /// Number of images `cfg` asks for in this split.
    pub(super) fn count(self, cfg: &SynthConfig) -> usize {
        match self {
            Split::TrainCls => cfg.train_cls,
            Split::TrainFea => cfg.train_fea,
            Split::TestCls => cfg.test_cls,
            Split::TestFea => cfg.test_fea,
        }
    }

    /// Whether the split is for the classification task (else the feature task).
    pub(super) fn is_cls(self) -> bool {
        matches!(self, Split::TrainCls | Split::TestCls)
    }
}

/// One image to render: its split, 1-based index within the split, and ground truth.
pub(super) struct Job {
    pub(super) split: Split,
    pub(super) index: usize,
    pub(super) spec: LesionSpec,
}

/// The specs of every image, split by split. Specs are drawn sequentially per split
/// (cheap, from the split's own stream); the pixels are rendered later in parallel.
/// Classification splits of at least 6 images get exact class quotas.
pub(super) fn plan_jobs(cfg: &SynthConfig) -> Vec<Job> {
    let mut jobs: Vec<Job> = Vec::new();
    for split in Split::ALL {
        let n = split.count(cfg);
        let mut rng = split_rng(cfg.seed, split as u64, u64::MAX);
        let specs = if split.is_cls() && n >= 6 {
            quota_specs(n, &mut rng)
        } else {
            (0..n).map(|_| sample_spec(&mut rng)).collect()
        };
        jobs.extend(specs.into_iter().enumerate().map(|(i, spec)| Job {
            split,
            index: i + 1,
            spec,
        }));
    }
    jobs
}

/// One SplitMix64 step (golden-ratio increment, then the mixing function): a strong
/// 64-bit hash for deriving seeds from seeds.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Independent stream per (seed, split, index): order of execution cannot matter.
/// `index` `u64::MAX` is the split's spec stream, `1..` the images' pixel streams.
pub(super) fn split_rng(seed: u64, split: u64, index: u64) -> ChaCha8Rng {
    let k = splitmix64(splitmix64(splitmix64(seed) ^ split) ^ index);
    let mut key = [0u8; 32];
    for (i, chunk) in key.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(
            &splitmix64(k ^ (i as u64).wrapping_mul(0xa24b_aed4_963e_e407)).to_le_bytes(),
        );
    }
    ChaCha8Rng::from_seed(key)
}
