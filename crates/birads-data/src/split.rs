//! Deterministic, group-aware (patient-level) train/validation splits, stratified by class:
//! images of one patient never straddle the split, so validation figures are honest.

use std::collections::BTreeMap;

use crate::rng::{derive, STREAM_SPLIT};
use crate::sample::Sample;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
}

/// FNV-1a: a stable string hash (std's hasher is randomised per process).
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The stratum of a sample: its class, else its feature pattern, else nothing.
fn stratum(s: &Sample) -> String {
    match s.class {
        Some(c) => format!("c{c}"),
        None => s
            .features
            .iter()
            .map(|f| match f {
                Some(true) => '1',
                Some(false) => '0',
                None => '-',
            })
            .collect(),
    }
}

/// Split sample indices so that about `val_fraction` of each stratum goes to validation,
/// whole groups at a time (a group's stratum is that of its first sample). Depends only
/// on the seed, the group keys and the labels, not on the order of the samples.
pub fn group_split(samples: &[Sample], val_fraction: f64, seed: u64) -> Split {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        groups.entry(s.group_key()).or_default().push(i);
    }
    // Per stratum: (shuffle key, group name, member indices).
    type Groups<'a> = Vec<(u64, &'a str, &'a Vec<usize>)>;
    let mut strata: BTreeMap<String, Groups> = BTreeMap::new();
    for (key, members) in &groups {
        let st = stratum(&samples[members[0]]);
        strata.entry(st).or_default().push((
            derive(seed, &[STREAM_SPLIT, fnv1a(key)]),
            key,
            members,
        ));
    }
    let mut val_mask = vec![false; samples.len()];
    for list in strata.values_mut() {
        list.sort();
        let total: usize = list.iter().map(|g| g.2.len()).sum();
        let target = (total as f64 * val_fraction).round() as usize;
        let mut taken = 0;
        for (_, _, members) in list.iter() {
            if taken >= target {
                break;
            }
            // Skip a group that would overshoot by more than it helps.
            if taken + members.len() > target && taken + members.len() - target > target - taken {
                continue;
            }
            taken += members.len();
            for &i in members.iter() {
                val_mask[i] = true;
            }
        }
    }
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (i, v) in val_mask.into_iter().enumerate() {
        if v {
            val.push(i)
        } else {
            train.push(i)
        }
    }
    Split { train, val }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::ImageSource;
    use std::collections::HashSet;

    fn samples() -> Vec<Sample> {
        (0..600)
            .map(|i| {
                let mut s =
                    Sample::unlabelled(ImageSource::Path(format!("/x/{i}.jpg").into()), "t");
                s.class = Some(i % 4);
                s.group = Some(format!("patient{}", i / 2)); // two views per patient, same class
                s.class = Some((i / 2) % 4);
                s
            })
            .collect()
    }

    #[test]
    fn groups_never_straddle_and_fraction_holds_per_class() {
        let s = samples();
        let split = group_split(&s, 0.2, 9);
        assert_eq!(split.train.len() + split.val.len(), s.len());
        let val_groups: HashSet<String> = split.val.iter().map(|&i| s[i].group_key()).collect();
        assert!(split
            .train
            .iter()
            .all(|&i| !val_groups.contains(&s[i].group_key())));
        for c in 0..4 {
            let n = s.iter().filter(|x| x.class == Some(c)).count() as f64;
            let v = split.val.iter().filter(|&&i| s[i].class == Some(c)).count() as f64;
            assert!((v / n - 0.2).abs() < 0.02, "class {c}: {}", v / n);
        }
    }

    #[test]
    fn deterministic_and_order_independent() {
        let s = samples();
        let a = group_split(&s, 0.25, 1);
        assert_eq!(a, group_split(&s, 0.25, 1));
        assert_ne!(a, group_split(&s, 0.25, 2));
        let mut rev = s.clone();
        rev.reverse();
        let b = group_split(&rev, 0.25, 1);
        let names = |sp: &[usize], v: &[Sample]| {
            let mut n: Vec<String> = sp.iter().map(|&i| v[i].image.to_string()).collect();
            n.sort();
            n
        };
        assert_eq!(names(&a.val, &s), names(&b.val, &rev));
    }
}
