//! Exact class counts for the classification splits: per-class quotas close to
//! [`CLASS_FREQ`], filled by rejection sampling so the labels keep their natural
//! feature correlations.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::config::CLASS_FREQ;
use super::spec::{sample_spec, LesionSpec};

/// Per-class quotas for `n >= 6` images: close to [`CLASS_FREQ`], every class at
/// least 5 % (and at least one image) so that rare classes stay trainable.
pub(super) fn class_quotas(n: usize) -> [usize; 6] {
    let min_each = ((n as f64 * 0.05).ceil() as usize).max(1);
    let mut q = CLASS_FREQ.map(|f| ((f * n as f64).round() as usize).max(min_each));
    loop {
        let sum: usize = q.iter().sum();
        if sum == n {
            return q;
        }
        // Adjust the class that is furthest from its target in the needed direction.
        let err = |c: usize| q[c] as f64 - CLASS_FREQ[c] * n as f64;
        if sum > n {
            let c = (0..6)
                .filter(|&c| q[c] > min_each)
                .max_by(|&a, &b| err(a).total_cmp(&err(b)));
            match c {
                Some(c) => q[c] -= 1,
                None => return q, // cannot happen for n >= 6: 6 * ceil(0.05 n) <= n
            }
        } else {
            let c = (0..6).min_by(|&a, &b| err(a).total_cmp(&err(b))).unwrap();
            q[c] += 1;
        }
    }
}

/// Rejection-samples natural specs into the class quotas, so the labels keep their
/// natural feature correlations while the class counts are exact.
pub(super) fn quota_specs(n: usize, rng: &mut ChaCha8Rng) -> Vec<LesionSpec> {
    let quota = class_quotas(n);
    let mut have = [0usize; 6];
    let mut specs = Vec::with_capacity(n);
    let mut tries = 0usize;
    while specs.len() < n {
        tries += 1;
        let mut s = sample_spec(rng);
        if have[s.birads] >= quota[s.birads] {
            if tries < 1000 * n {
                continue;
            }
            // Practically unreachable safety net: force the first unfilled class.
            s.birads = (0..6).find(|&c| have[c] < quota[c]).unwrap();
        }
        have[s.birads] += 1;
        specs.push(s);
    }
    // Fisher-Yates shuffle: in acceptance order the classes that filled last would
    // cluster at the end.
    for i in (1..specs.len()).rev() {
        let j = rng.random_range(0..=i);
        specs.swap(i, j);
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn quotas_cover_every_class() {
        for n in [6, 7, 13, 30, 60, 240, 1000] {
            let q = class_quotas(n);
            assert_eq!(q.iter().sum::<usize>(), n, "{n}");
            let min_each = ((n as f64 * 0.05).ceil() as usize).max(1);
            assert!(q.iter().all(|&c| c >= min_each), "{n}: {q:?}");
        }
        assert_eq!(class_quotas(300), [57, 90, 54, 39, 36, 24]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let specs = quota_specs(240, &mut rng);
        let mut have = [0; 6];
        specs.iter().for_each(|s| have[s.birads] += 1);
        assert_eq!(have, class_quotas(240));
    }
}
