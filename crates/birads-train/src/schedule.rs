//! `CosineAnnealingWarmRestarts(T_0, T_mult, eta_min)` exactly as PyTorch computes it,
//! including fractional epochs.

use crate::config::Schedule;

/// Learning rate at (possibly fractional) `epoch` for base rate `base`.
pub fn learning_rate(s: &Schedule, base: f64, epoch: f64) -> f64 {
    let t0 = s.t0 as f64;
    let (t_cur, t_i) = if epoch >= t0 {
        if s.t_mult == 1 {
            (epoch % t0, t0)
        } else {
            let m = s.t_mult as f64;
            let n = ((epoch / t0 * (m - 1.0) + 1.0).ln() / m.ln()).floor();
            let start = t0 * (m.powf(n) - 1.0) / (m - 1.0);
            (epoch - start, t0 * m.powf(n))
        }
    } else {
        (epoch, t0)
    };
    s.eta_min + (base - s.eta_min) * (1.0 + (std::f64::consts::PI * t_cur / t_i).cos()) / 2.0
}

/// Rate used for batch `batch` of `batches` in `epoch` (0-based).
pub fn rate_for_batch(s: &Schedule, base: f64, epoch: u64, batch: usize, batches: usize) -> f64 {
    let e = if s.per_batch {
        epoch as f64 + batch as f64 / batches.max(1) as f64
    } else {
        epoch as f64
    };
    learning_rate(s, base, e)
}
