//! Classification metrics with scikit-learn's definitions, so figures from `birads eval`
//! can be compared with anyone's Python notebook. Each function names the scikit-learn call
//! it reproduces; `scripts/make_eval_fixtures.py` checks them on committed fixtures.

/// `confusion_matrix(y_true, y_pred, labels=range(k))`: rows are truth, columns prediction.
pub fn confusion(y_true: &[usize], y_pred: &[usize], k: usize) -> Vec<Vec<u64>> {
    let mut m = vec![vec![0u64; k]; k];
    for (&t, &p) in y_true.iter().zip(y_pred) {
        if t < k && p < k {
            m[t][p] += 1;
        }
    }
    m
}

/// `accuracy_score`.
pub fn accuracy(y_true: &[usize], y_pred: &[usize]) -> f64 {
    if y_true.is_empty() {
        return f64::NAN;
    }
    let hits = y_true.iter().zip(y_pred).filter(|(t, p)| t == p).count();
    hits as f64 / y_true.len() as f64
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Number of true instances.
    pub support: u64,
}

/// `precision_recall_fscore_support(labels=range(k), zero_division=0)`: a ratio with a zero
/// denominator counts as 0, as scikit-learn's default does (after its warning).
pub fn per_class(confusion: &[Vec<u64>]) -> Vec<ClassScores> {
    let k = confusion.len();
    (0..k)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let predicted: u64 = (0..k).map(|r| confusion[r][c]).sum();
            let support: u64 = confusion[c].iter().sum();
            let precision = ratio(tp, predicted as f64);
            let recall = ratio(tp, support as f64);
            // F1 = 2TP / (2TP + FP + FN), the form scikit-learn uses (no 0/0 from P+R).
            let f1 = ratio(2.0 * tp, predicted as f64 + support as f64);
            ClassScores {
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect()
}

fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// `f1_score(average="macro")`: mean F1 over the classes that occur in the truth or the
/// predictions (scikit-learn's default label set; a class absent from both has no F1).
pub fn macro_f1(confusion: &[Vec<u64>]) -> f64 {
    let k = confusion.len();
    let scores = per_class(confusion);
    let present: Vec<f64> = (0..k)
        .filter(|&c| scores[c].support > 0 || (0..k).any(|r| confusion[r][c] > 0))
        .map(|c| scores[c].f1)
        .collect();
    if present.is_empty() {
        return f64::NAN;
    }
    present.iter().sum::<f64>() / present.len() as f64
}

/// `cohen_kappa_score(weights="quadratic", labels=range(k))`: agreement on the ordinal
/// scale, where confusing 2 with 5 costs more than 4A with 4B. NaN when undefined (one class).
pub fn quadratic_kappa(confusion: &[Vec<u64>]) -> f64 {
    let k = confusion.len();
    let rows: Vec<f64> = confusion
        .iter()
        .map(|r| r.iter().sum::<u64>() as f64)
        .collect();
    let cols: Vec<f64> = (0..k)
        .map(|c| (0..k).map(|r| confusion[r][c]).sum::<u64>() as f64)
        .collect();
    let n: f64 = rows.iter().sum();
    if n == 0.0 {
        return f64::NAN;
    }
    let (mut observed, mut expected) = (0.0, 0.0);
    for i in 0..k {
        for j in 0..k {
            let w = ((i as f64) - (j as f64)).powi(2);
            observed += w * confusion[i][j] as f64;
            expected += w * cols[i] * rows[j] / n;
        }
    }
    if expected == 0.0 {
        return f64::NAN;
    }
    1.0 - observed / expected
}

/// `roc_auc_score(y, score)` for one binary task, as the Mann–Whitney statistic with ties
/// counted half (identical to the trapezoidal area under the ROC curve). `None` when only one
/// class is present.
pub fn roc_auc(positive: &[bool], score: &[f64]) -> Option<f64> {
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    // Average ranks (1-based) over runs of equal scores.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && score[order[j + 1]] == score[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &idx in &order[i..=j] {
            if positive[idx] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    Some((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * n))
}

/// `roc_curve(y, score, drop_intermediate=False)`: (false-positive rate, true-positive rate)
/// at every distinct threshold, starting from (0, 0).
pub fn roc_curve(positive: &[bool], score: &[f64]) -> Vec<(f64, f64)> {
    let n_pos = positive.iter().filter(|&&p| p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    for (pos, &idx) in order.iter().enumerate() {
        if positive[idx] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_run = order
            .get(pos + 1)
            .is_none_or(|&next| score[next] != score[idx]);
        if last_of_run {
            points.push((
                if n_neg > 0.0 { fp / n_neg } else { 0.0 },
                if n_pos > 0.0 { tp / n_pos } else { 0.0 },
            ));
        }
    }
    points
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub count: u64,
    /// Mean predicted confidence in the bin.
    pub confidence: f64,
    /// Fraction of the bin's predictions that were right (or positive, for a binary task).
    pub observed: f64,
}

/// Bin index as `calibration_curve(strategy="uniform")` assigns it: the number of interior
/// edges (`i / bins`, computed like `np.linspace`) strictly below the value.
fn bin_of(value: f64, bins: usize) -> usize {
    let step = 1.0 / bins as f64;
    (1..bins).filter(|&i| (i as f64) * step < value).count()
}

/// Reliability bins over `bins` equal-width intervals of [0, 1], empty bins included (count 0).
/// `observed[i]` is 1.0 for a hit / positive.
pub fn reliability(confidence: &[f64], observed: &[f64], bins: usize) -> Vec<ReliabilityBin> {
    let mut sums = vec![(0u64, 0.0f64, 0.0f64); bins];
    for (&c, &o) in confidence.iter().zip(observed) {
        let b = bin_of(c, bins);
        sums[b].0 += 1;
        sums[b].1 += c;
        sums[b].2 += o;
    }
    let step = 1.0 / bins as f64;
    sums.iter()
        .enumerate()
        .map(|(i, &(n, c, o))| ReliabilityBin {
            lower: i as f64 * step,
            upper: if i + 1 == bins {
                1.0
            } else {
                (i + 1) as f64 * step
            },
            count: n,
            confidence: if n > 0 { c / n as f64 } else { f64::NAN },
            observed: if n > 0 { o / n as f64 } else { f64::NAN },
        })
        .collect()
}

/// Expected calibration error: Σ (n_b / N) · |observed_b − confidence_b| over the bins.
/// (Not in scikit-learn; its bins are `calibration_curve`'s, so the fixture script computes
/// it from that function's output.)
pub fn expected_calibration_error(bins: &[ReliabilityBin]) -> f64 {
    let n: u64 = bins.iter().map(|b| b.count).sum();
    if n == 0 {
        return f64::NAN;
    }
    bins.iter()
        .filter(|b| b.count > 0)
        .map(|b| b.count as f64 / n as f64 * (b.observed - b.confidence).abs())
        .sum()
}

/// Whether a BI-RADS category name is one that recommends biopsy or is highly suggestive of
/// malignancy: 4, 4A, 4B, 4C and 5 (also 6, a known malignancy).
pub fn is_suspicious_category(name: &str) -> bool {
    let n = birads_data::sample::normalise_class_name(name);
    n.starts_with('4') || n.starts_with('5') || n.starts_with('6')
}

/// The malignancy score of one image from its BI-RADS probabilities: the probability of a
/// suspicious category, P(4) + P(5) (P(4A) + P(4B) + P(4C) + P(5) for the six competition
/// classes). This is what "malignancy AUC" ranks images by, against biopsy pathology.
pub fn malignancy_score(classes: &[String], probabilities: &[f32]) -> f64 {
    classes
        .iter()
        .zip(probabilities)
        .filter(|(c, _)| is_suspicious_category(c))
        .map(|(_, &p)| p as f64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_inverted_predictions() {
        let t = [0, 1, 2, 3, 4, 5];
        let c = confusion(&t, &t, 6);
        assert_eq!(accuracy(&t, &t), 1.0);
        assert_eq!(macro_f1(&c), 1.0);
        assert!((quadratic_kappa(&c) - 1.0).abs() < 1e-12);
        let rev: Vec<usize> = t.iter().rev().copied().collect();
        assert!(quadratic_kappa(&confusion(&t, &rev, 6)) < -0.9);
    }

    #[test]
    fn auc_counts_ties_as_half() {
        assert_eq!(roc_auc(&[false, true], &[0.5, 0.5]), Some(0.5));
        assert_eq!(roc_auc(&[false, true], &[0.2, 0.9]), Some(1.0));
        assert_eq!(roc_auc(&[true, true], &[0.2, 0.9]), None);
        let curve = roc_curve(&[false, true, true], &[0.1, 0.5, 0.5]);
        assert_eq!(curve, vec![(0.0, 0.0), (0.0, 1.0), (1.0, 1.0)]);
    }

    #[test]
    fn ece_is_zero_when_calibrated() {
        let conf = [0.25, 0.25, 0.25, 0.25];
        let hit = [1.0, 0.0, 0.0, 0.0];
        let bins = reliability(&conf, &hit, 10);
        assert_eq!(bins.iter().map(|b| b.count).sum::<u64>(), 4);
        assert!(expected_calibration_error(&bins).abs() < 1e-12);
        assert_eq!(bin_of(0.0, 10), 0);
        assert_eq!(bin_of(1.0, 10), 9);
    }
}
