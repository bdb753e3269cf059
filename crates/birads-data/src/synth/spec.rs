//! The ground truth of a lesion: its four feature labels and BI-RADS category, and how
//! they are drawn so that they relate to each other the way clinical data do.

use rand::Rng;

use super::math::gauss;

/// Marginal probability of each feature being 1 (boundary, calcification, direction, shape).
pub(super) const FEATURE_RATE: [f64; 4] = [0.45, 0.30, 0.30, 0.45];
/// Weights of the suspicion score (boundary, calcification, direction, shape).
const SCORE_WEIGHT: [f64; 4] = [1.2, 0.9, 1.0, 1.3];
/// Standard deviation of the noise added to the suspicion score.
const SCORE_NOISE: f64 = 0.35;
/// Bin edges of the suspicion score, calibrated by simulation so that the natural
/// class frequencies of [`sample_spec`] come out close to [`CLASS_FREQ`](super::CLASS_FREQ).
const SCORE_EDGES: [f64; 5] = [0.27, 1.54, 2.34, 2.98, 3.70];

/// The ground truth of one synthetic lesion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LesionSpec {
    /// BI-RADS id 0..5 = category 2, 3, 4A, 4B, 4C, 5.
    pub birads: usize,
    /// boundary (1 = not smooth), calcification (1 = present),
    /// direction (1 = taller than wide), shape (1 = irregular).
    pub features: [bool; 4],
}

impl LesionSpec {
    pub fn boundary(&self) -> bool {
        self.features[0]
    }
    pub fn calcification(&self) -> bool {
        self.features[1]
    }
    pub fn direction(&self) -> bool {
        self.features[2]
    }
    pub fn shape(&self) -> bool {
        self.features[3]
    }
}

/// Draws a lesion the way the data behave clinically: features first, correlated
/// through a latent malignancy, then the BI-RADS category from a noisy suspicion
/// score, so more suspicious features mean a higher category without being a
/// deterministic function of them.
pub fn sample_spec(rng: &mut impl Rng) -> LesionSpec {
    let m: f64 = rng.random();
    let mut features = [false; 4];
    for (i, f) in features.iter_mut().enumerate() {
        let mu = FEATURE_RATE[i];
        // Linear in m with mean mu: keeps the marginal exact while correlating features.
        let p = mu + 1.8 * mu.min(1.0 - mu) * (m - 0.5);
        *f = rng.random::<f64>() < p;
    }
    let mut s = SCORE_NOISE * gauss(rng);
    for i in 0..4 {
        if features[i] {
            s += SCORE_WEIGHT[i];
        }
    }
    let birads = SCORE_EDGES.iter().filter(|&&e| s > e).count();
    LesionSpec { birads, features }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::CLASS_FREQ;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn birads_rises_with_suspicious_features() {
        let mut rng = ChaCha8Rng::seed_from_u64(2024);
        let n = 20_000;
        let mut counts = [0usize; 6];
        let mut feat_sum = [0usize; 6];
        let mut rate = [0usize; 4];
        for _ in 0..n {
            let s = sample_spec(&mut rng);
            counts[s.birads] += 1;
            feat_sum[s.birads] += s.features.iter().filter(|&&f| f).count();
            for (r, &f) in rate.iter_mut().zip(&s.features) {
                *r += f as usize;
            }
        }
        for c in 0..6 {
            let f = counts[c] as f64 / n as f64;
            assert!((f - CLASS_FREQ[c]).abs() < 0.02, "class {c}: {f}");
        }
        for k in 0..4 {
            let f = rate[k] as f64 / n as f64;
            assert!((f - FEATURE_RATE[k]).abs() < 0.02, "feature {k}: {f}");
        }
        let mean: Vec<f64> = (0..6)
            .map(|c| feat_sum[c] as f64 / counts[c] as f64)
            .collect();
        assert!(mean.windows(2).all(|w| w[0] < w[1]), "{mean:?}");
    }
}
