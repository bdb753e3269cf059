//! Features → category fusion: a multinomial logistic regression on the image model's BI-RADS
//! probabilities and the feature model's descriptor probabilities, fitted on images with
//! BI-RADS labels (what `birads fuse` does).
//!
//! Inputs per image: `ln p_c` for every class of the image model and `logit q_f` for the four
//! descriptors (probabilities clamped to [1e-6, 1 − 1e-6]), standardised with the fitting
//! data's mean and standard deviation. The model is scikit-learn's `LogisticRegression`
//! (multinomial, L2 penalty on the weights only, intercepts free): it minimises
//! `Σ_i −ln softmax(W x_i + b)[y_i] + ‖W‖² / (2C)`; `C` is chosen by five-fold
//! cross-validated log-loss on the fitting images. Logistic regression is calibrated by
//! construction on the data it is fitted to; the held-out figures show how far that carries.
//!
//! The optimiser is Newton's method with a backtracking line search and a Cholesky solve of
//! the (at most ~70 × 70) Hessian, written here: no linear-algebra or logistic-regression crate
//! is in the dependency set, and the problem is small enough that a dense Newton step is both
//! the simplest and the most exact choice (it converges to the unique optimum, so the result
//! equals scikit-learn's to the optimisers' tolerance; see `tests/fusion.rs`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::metrics::{
    accuracy, confusion, expected_calibration_error, macro_f1, quadratic_kappa, reliability,
};
use crate::predict::argmax;

/// File format marker of a saved fusion model.
pub const FORMAT: &str = "birads-fusion";
const CLAMP: f64 = 1e-6;

/// The model inputs of one image: log class probabilities, then descriptor log-odds.
pub fn raw_inputs(class_probabilities: &[f32], descriptors: &[f32; 4]) -> Vec<f64> {
    let p = |v: f32| (v as f64).clamp(CLAMP, 1.0 - CLAMP);
    class_probabilities
        .iter()
        .map(|&v| p(v).ln())
        .chain(descriptors.iter().map(|&v| {
            let q = p(v);
            (q / (1.0 - q)).ln()
        }))
        .collect()
}

/// A fitted multinomial logistic regression: `softmax(coef · x + intercept)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    /// One row per class.
    pub coef: Vec<Vec<f64>>,
    pub intercept: Vec<f64>,
}

impl Logistic {
    pub fn probabilities(&self, x: &[f64]) -> Vec<f64> {
        let z: Vec<f64> = self
            .coef
            .iter()
            .zip(&self.intercept)
            .map(|(w, b)| w.iter().zip(x).map(|(w, x)| w * x).sum::<f64>() + b)
            .collect();
        softmax(&z)
    }
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Objective, gradient and Hessian of the penalised multinomial log-loss at `theta`
/// (row-major `k × (d + 1)`, the last column the intercepts).
fn objective(
    x: &[Vec<f64>],
    y: &[usize],
    k: usize,
    c: f64,
    theta: &[f64],
    with_hessian: bool,
) -> (f64, Vec<f64>, Vec<f64>) {
    let d = x[0].len();
    let w = d + 1;
    let np = k * w;
    let (mut f, mut g) = (0.0, vec![0.0; np]);
    let mut h = vec![0.0; if with_hessian { np * np } else { 0 }];
    let mut xt = vec![1.0; w];
    for (xi, &yi) in x.iter().zip(y) {
        xt[..d].copy_from_slice(xi);
        let z: Vec<f64> = (0..k)
            .map(|a| (0..w).map(|j| theta[a * w + j] * xt[j]).sum())
            .collect();
        let p = softmax(&z);
        f -= p[yi].max(1e-300).ln();
        for a in 0..k {
            let r = p[a] - (a == yi) as u8 as f64;
            for j in 0..w {
                g[a * w + j] += r * xt[j];
            }
        }
        if with_hessian {
            for a in 0..k {
                for b in 0..k {
                    let s = p[a] * ((a == b) as u8 as f64) - p[a] * p[b];
                    for j in 0..w {
                        let row = (a * w + j) * np + b * w;
                        for m in 0..w {
                            h[row + m] += s * xt[j] * xt[m];
                        }
                    }
                }
            }
        }
    }
    for a in 0..k {
        for j in 0..d {
            let t = theta[a * w + j];
            f += t * t / (2.0 * c);
            g[a * w + j] += t / c;
            if with_hessian {
                h[(a * w + j) * np + a * w + j] += 1.0 / c;
            }
        }
        if with_hessian {
            // The intercepts are free up to a common shift: a tiny ridge makes the step
            // unique without moving the optimum of the probabilities.
            let i = a * w + d;
            h[i * np + i] += 1e-9;
        }
    }
    (f, g, h)
}

/// Solve `H v = g` for a symmetric positive definite `H` (Cholesky).
fn solve_spd(h: &[f64], g: &[f64]) -> Option<Vec<f64>> {
    let n = g.len();
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = h[i * n + j] - (0..j).map(|m| l[i * n + m] * l[j * n + m]).sum::<f64>();
            if i == j {
                if s <= 0.0 {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    let mut v = g.to_vec();
    for i in 0..n {
        v[i] = (v[i] - (0..i).map(|m| l[i * n + m] * v[m]).sum::<f64>()) / l[i * n + i];
    }
    for i in (0..n).rev() {
        v[i] = (v[i] - (i + 1..n).map(|m| l[m * n + i] * v[m]).sum::<f64>()) / l[i * n + i];
    }
    Some(v)
}

/// Fit `k` classes on rows `x` with labels `y` and inverse penalty `c` (scikit-learn's `C`).
/// Intercepts are centred to sum to zero, as scikit-learn's solver leaves them.
pub fn fit_logistic(x: &[Vec<f64>], y: &[usize], k: usize, c: f64) -> Logistic {
    let d = x.first().map_or(0, |r| r.len());
    let w = d + 1;
    let mut theta = vec![0.0; k * w];
    if !x.is_empty() {
        for _ in 0..200 {
            let (f, g, h) = objective(x, y, k, c, &theta, true);
            if g.iter().fold(0.0f64, |m, v| m.max(v.abs())) < 1e-10 * (x.len() as f64).max(1.0) {
                break;
            }
            let Some(step) = solve_spd(&h, &g) else { break };
            let slope: f64 = g.iter().zip(&step).map(|(a, b)| a * b).sum();
            let mut t = 1.0;
            loop {
                let cand: Vec<f64> = theta.iter().zip(&step).map(|(a, s)| a - t * s).collect();
                let (fc, _, _) = objective(x, y, k, c, &cand, false);
                if fc <= f - 1e-4 * t * slope || t < 1e-10 {
                    theta = cand;
                    break;
                }
                t *= 0.5;
            }
        }
    }
    let mut coef: Vec<Vec<f64>> = (0..k).map(|a| theta[a * w..a * w + d].to_vec()).collect();
    let mut intercept: Vec<f64> = (0..k).map(|a| theta[a * w + d]).collect();
    let mean = intercept.iter().sum::<f64>() / k.max(1) as f64;
    intercept.iter_mut().for_each(|b| *b -= mean);
    coef.iter_mut().flatten().for_each(|v| {
        if v.abs() < 1e-300 {
            *v = 0.0
        }
    });
    Logistic { coef, intercept }
}

/// Mean and standard deviation of each column (1 where a column is constant).
pub fn standardiser(x: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let d = x.first().map_or(0, |r| r.len());
    let n = x.len().max(1) as f64;
    let mean: Vec<f64> = (0..d)
        .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let scale = (0..d)
        .map(|j| {
            let v = x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n;
            if v.sqrt() > 1e-12 {
                v.sqrt()
            } else {
                1.0
            }
        })
        .collect();
    (mean, scale)
}

fn standardise(x: &[f64], mean: &[f64], scale: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(mean)
        .zip(scale)
        .map(|((v, m), s)| (v - m) / s)
        .collect()
}

/// One image of the fitting data.
#[derive(Debug, Clone)]
pub struct Row {
    pub class_probabilities: Vec<f32>,
    pub descriptors: [f32; 4],
    /// Index into the fusion's class list.
    pub label: usize,
    /// Patient or group: cross-validation folds keep a group together.
    pub group: String,
}

/// Figures of one predictor on held-out images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub images: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// None when undefined (labels and predictions all one class): `fusion.json` must read back.
    pub quadratic_kappa: Option<f64>,
    /// Mean negative log-probability of the true class.
    pub log_loss: f64,
    /// Expected calibration error of the top class (10 bins).
    pub ece: f64,
}

/// Scores of probability rows against labels.
pub fn scores(probabilities: &[Vec<f64>], labels: &[usize], k: usize) -> Scores {
    let pred: Vec<usize> = probabilities.iter().map(|p| argmax(p)).collect();
    let cm = confusion(labels, &pred, k);
    let conf: Vec<f64> = probabilities
        .iter()
        .zip(&pred)
        .map(|(p, &c)| p[c])
        .collect();
    let hit: Vec<f64> = pred
        .iter()
        .zip(labels)
        .map(|(a, b)| (a == b) as u8 as f64)
        .collect();
    let log_loss = probabilities
        .iter()
        .zip(labels)
        .map(|(p, &y)| -p.get(y).copied().unwrap_or(0.0).max(1e-15).ln())
        .sum::<f64>()
        / labels.len().max(1) as f64;
    Scores {
        images: labels.len(),
        accuracy: accuracy(labels, &pred),
        macro_f1: macro_f1(&cm),
        quadratic_kappa: Some(quadratic_kappa(&cm)).filter(|k| k.is_finite()),
        log_loss,
        ece: expected_calibration_error(&reliability(&conf, &hit, 10)),
    }
}

/// How a fusion model was chosen and how it did on images it was not fitted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    pub fitted_images: usize,
    /// Cross-validated log-loss per candidate `C` on the fitting images.
    pub cv_log_loss: Vec<(f64, f64)>,
    /// On the held-out images: the fused model and the image model alone (when its classes
    /// cover the labels).
    pub held_out_fused: Option<Scores>,
    pub held_out_image: Option<Scores>,
}

/// A saved fusion model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusionModel {
    pub format: String,
    pub version: u32,
    /// Output categories (the labels' class list).
    pub classes: Vec<String>,
    /// The image model's classes, in the order its probabilities come.
    pub image_classes: Vec<String>,
    /// Names of the inputs (`ln p(2)`, …, `logit q(boundary)`, …).
    pub inputs: Vec<String>,
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    pub c: f64,
    pub model: Logistic,
    /// Where the image and feature models came from.
    pub sources: Vec<String>,
    pub report: FitReport,
}

#[derive(Debug, thiserror::Error)]
pub enum FusionError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: not a birads fusion model: {1}")]
    Format(String, String),
    #[error("the fusion model was fitted on an image model with classes {expected:?}; this one has {found:?}")]
    Classes {
        expected: Vec<String>,
        found: Vec<String>,
    },
    #[error("{0}")]
    Data(String),
}

/// Candidate inverse penalties.
pub const C_GRID: [f64; 6] = [0.01, 0.03, 0.1, 0.3, 1.0, 10.0];

impl FusionModel {
    /// Fused probabilities over `classes` from one image's model outputs.
    pub fn probabilities(&self, class_probabilities: &[f32], descriptors: &[f32; 4]) -> Vec<f64> {
        let x = standardise(
            &raw_inputs(class_probabilities, descriptors),
            &self.mean,
            &self.scale,
        );
        self.model.probabilities(&x)
    }

    /// Checks that the image model in use is the one the fusion was fitted on.
    pub fn check_image_classes(&self, classes: &[String]) -> Result<(), FusionError> {
        if classes != self.image_classes.as_slice() {
            return Err(FusionError::Classes {
                expected: self.image_classes.clone(),
                found: classes.to_vec(),
            });
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self, FusionError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| FusionError::Io(shown.clone(), e))?;
        let m: FusionModel = serde_json::from_str(&text)
            .map_err(|e| FusionError::Format(shown.clone(), e.to_string()))?;
        if m.format != FORMAT {
            return Err(FusionError::Format(shown, format!("format {:?}", m.format)));
        }
        let d = m.image_classes.len() + 4;
        let ok = m.mean.len() == d
            && m.scale.len() == d
            && m.model.coef.len() == m.classes.len()
            && m.model.intercept.len() == m.classes.len()
            && m.model.coef.iter().all(|r| r.len() == d);
        if !ok {
            return Err(FusionError::Format(shown, "inconsistent sizes".into()));
        }
        Ok(m)
    }

    pub fn save(&self, path: &Path) -> Result<(), FusionError> {
        let text = serde_json::to_string_pretty(self).expect("plain data serialises");
        birads_data::atomic::write_atomic(path, text.as_bytes())
            .map_err(|e| FusionError::Io(path.display().to_string(), e))
    }
}

/// Mean held-out log-loss of `c` over five folds of whole groups.
fn cv_log_loss(x: &[Vec<f64>], rows: &[Row], k: usize, c: f64) -> f64 {
    let fold = |r: &Row| birads_data::split::fnv1a(&r.group) % 5;
    let (mut total, mut n) = (0.0, 0usize);
    for f in 0..5 {
        let (train, test): (Vec<usize>, Vec<usize>) =
            (0..rows.len()).partition(|&i| fold(&rows[i]) != f);
        if train.is_empty() || test.is_empty() {
            continue;
        }
        let xt: Vec<Vec<f64>> = train.iter().map(|&i| x[i].clone()).collect();
        let yt: Vec<usize> = train.iter().map(|&i| rows[i].label).collect();
        let m = fit_logistic(&xt, &yt, k, c);
        for &i in &test {
            total -= m.probabilities(&x[i])[rows[i].label].max(1e-15).ln();
            n += 1;
        }
    }
    total / n.max(1) as f64
}

/// Fit on `fit` (choosing `C` by cross-validation) and score on `held_out`, fused and (when
/// the image model's classes are among the labels' classes) the image model alone.
pub fn fit_fusion(
    classes: Vec<String>,
    image_classes: Vec<String>,
    fit: &[Row],
    held_out: &[Row],
    sources: Vec<String>,
) -> Result<FusionModel, FusionError> {
    let k = classes.len();
    if fit.len() < 2 * k {
        return Err(FusionError::Data(format!(
            "{} images to fit {k} categories: too few",
            fit.len()
        )));
    }
    let raw: Vec<Vec<f64>> = fit
        .iter()
        .map(|r| raw_inputs(&r.class_probabilities, &r.descriptors))
        .collect();
    let (mean, scale) = standardiser(&raw);
    let x: Vec<Vec<f64>> = raw.iter().map(|r| standardise(r, &mean, &scale)).collect();
    let cv: Vec<(f64, f64)> = C_GRID
        .iter()
        .map(|&c| (c, cv_log_loss(&x, fit, k, c)))
        .collect();
    let c = cv
        .iter()
        .filter(|v| v.1.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(1.0, |v| v.0);
    let y: Vec<usize> = fit.iter().map(|r| r.label).collect();
    let model = fit_logistic(&x, &y, k, c);
    let inputs = image_classes
        .iter()
        .map(|c| format!("ln p({c})"))
        .chain(
            birads_data::FEATURE_NAMES
                .iter()
                .map(|f| format!("logit q({f})")),
        )
        .collect();
    let mut m = FusionModel {
        format: FORMAT.into(),
        version: 1,
        classes,
        image_classes,
        inputs,
        mean,
        scale,
        c,
        model,
        sources,
        report: FitReport {
            fitted_images: fit.len(),
            cv_log_loss: cv,
            held_out_fused: None,
            held_out_image: None,
        },
    };
    if !held_out.is_empty() {
        let labels: Vec<usize> = held_out.iter().map(|r| r.label).collect();
        let fused: Vec<Vec<f64>> = held_out
            .iter()
            .map(|r| m.probabilities(&r.class_probabilities, &r.descriptors))
            .collect();
        m.report.held_out_fused = Some(scores(&fused, &labels, k));
        m.report.held_out_image = image_only(&m, held_out).map(|p| scores(&p, &labels, k));
    }
    Ok(m)
}

/// The image model's own probabilities mapped onto the fusion's classes, when every image
/// class is one of them (by name).
pub fn image_only(m: &FusionModel, rows: &[Row]) -> Option<Vec<Vec<f64>>> {
    let norm = birads_data::sample::normalise_class_name;
    let map: Vec<usize> = m
        .image_classes
        .iter()
        .map(|c| m.classes.iter().position(|l| norm(l) == norm(c)))
        .collect::<Option<_>>()?;
    Some(
        rows.iter()
            .map(|r| {
                let mut p = vec![0.0; m.classes.len()];
                for (i, &v) in r.class_probabilities.iter().enumerate() {
                    p[map[i]] += v as f64;
                }
                p
            })
            .collect(),
    )
}
