//! Which samples an epoch visits: the original's weighted oversampling
//! (`WeightedRandomSampler` with class weights, with replacement, one epoch = dataset size)
//! or a plain shuffle. Both are pure functions of (seed, epoch), so a resumed run replays
//! the same order.

use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::seq::SliceRandom;

use crate::rng::{stream, STREAM_SAMPLER};

/// The original BI-RADS oversampling weights for classes `2, 3, 4A, 4B, 4C, 5`.
pub const BIRADS6_OVERSAMPLING: [f64; 6] = [1.0, 1.0, 10.0, 5.0, 5.0, 2.0];

#[derive(Debug, Clone)]
pub struct WeightedSampler {
    dist: WeightedIndex<f64>,
    len: usize,
}

impl WeightedSampler {
    /// One weight per sample: the weight of its class.
    pub fn from_classes(classes: &[usize], class_weights: &[f64]) -> Result<Self, String> {
        let mut w = Vec::with_capacity(classes.len());
        for &c in classes {
            let cw = *class_weights.get(c).ok_or_else(|| {
                format!(
                    "class index {c} has no weight ({} weights given)",
                    class_weights.len()
                )
            })?;
            if !(cw.is_finite() && cw >= 0.0) {
                return Err(format!("class weight {cw} is not a non-negative number"));
            }
            w.push(cw);
        }
        let dist = WeightedIndex::new(&w).map_err(|e| format!("invalid sampling weights: {e}"))?;
        Ok(Self {
            dist,
            len: classes.len(),
        })
    }

    /// Sample indices of one epoch: `len` draws with replacement.
    pub fn epoch(&self, seed: u64, epoch: u64) -> Vec<usize> {
        let mut rng = stream(seed, &[STREAM_SAMPLER, epoch]);
        (0..self.len).map(|_| self.dist.sample(&mut rng)).collect()
    }
}

/// Expected share of each class under class weights: `count_c · w_c / Σ count · w`.
pub fn expected_class_shares(counts: &[usize], class_weights: &[f64]) -> Vec<f64> {
    let mass: Vec<f64> = counts
        .iter()
        .zip(class_weights)
        .map(|(&n, &w)| n as f64 * w)
        .collect();
    let total: f64 = mass.iter().sum();
    mass.into_iter().map(|m| m / total).collect()
}

/// A permutation of `0..n` for one epoch.
pub fn shuffled(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    v.shuffle(&mut stream(seed, &[STREAM_SAMPLER, epoch]));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversampling_hits_expected_class_frequencies() {
        // The competition's class counts.
        let counts = [463usize, 878, 448, 295, 251, 138];
        let classes: Vec<usize> = counts
            .iter()
            .enumerate()
            .flat_map(|(c, &n)| std::iter::repeat_n(c, n))
            .collect();
        let s = WeightedSampler::from_classes(&classes, &BIRADS6_OVERSAMPLING).unwrap();
        let expect = expected_class_shares(&counts, &BIRADS6_OVERSAMPLING);
        let mut seen = [0usize; 6];
        let epochs = 20;
        for e in 0..epochs {
            for i in s.epoch(11, e) {
                seen[classes[i]] += 1;
            }
        }
        let n = (classes.len() * epochs as usize) as f64;
        for c in 0..6 {
            let p = expect[c];
            let sd = (p * (1.0 - p) / n).sqrt();
            let got = seen[c] as f64 / n;
            assert!(
                (got - p).abs() < 4.0 * sd,
                "class {c}: share {got:.4}, expected {p:.4} ± {sd:.4}"
            );
        }
        // 4A is drawn about 4480/8827 of the time, far above its 18% share of the data.
        assert!(expect[2] > 0.5);
    }

    #[test]
    fn epochs_are_reproducible_and_differ() {
        let classes = vec![0, 1, 2, 3, 4, 5, 0, 1];
        let s = WeightedSampler::from_classes(&classes, &BIRADS6_OVERSAMPLING).unwrap();
        assert_eq!(s.epoch(1, 3), s.epoch(1, 3));
        assert_ne!(s.epoch(1, 3), s.epoch(1, 4));
        assert_eq!(s.epoch(1, 3).len(), 8);
        let p = shuffled(50, 2, 0);
        let mut sorted = p.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(p, shuffled(50, 2, 1));
    }

    #[test]
    fn rejects_bad_weights() {
        assert!(WeightedSampler::from_classes(&[0, 4], &[1.0, 1.0]).is_err());
        assert!(WeightedSampler::from_classes(&[0], &[-1.0]).is_err());
        assert!(WeightedSampler::from_classes(&[0, 1], &[0.0, 0.0]).is_err());
    }
}
