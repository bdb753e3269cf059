//! BatchNorm's four kernels against a plain f64 computation, in the backend's precision and
//! in amp's.

use super::*;

/// A value and the sum of its terms' magnitudes (what f32 rounding scales with).
type Reference = (f64, f64);

/// BatchNorm's kernels (`batch_norm::cube`) on one backend against a plain f64 computation
/// from the values as `B` holds them: `x`, `g` `[N, C, H, W]` (channels-last underneath when
/// `strided`, so the kernels read a non-contiguous view), random γ and β; each kernel is fed
/// the reference's inputs (the exact statistics rounded to `B`, the kernel's own sums for
/// ∂x), so that each is checked on its own. Each result must be within 1e-5 of its terms'
/// magnitude (f32 sums of a few thousand terms are within about 1e-6 of it; a wrong index,
/// channel or lost partial sum is off by far more), plus `rounding` of its value (the result
/// stored in `B`'s precision). With `amp`'s precisions, a result stored in f16 (`y`, ∂x) is
/// held to its rounding instead (2⁻¹¹ of the value, 1e-3, or half the subnormal step).
pub(super) fn check_batch_norm_kernels<B: Backend>(
    kernels: OwnKernels<B>,
    dims: [usize; 4],
    strided: bool,
    relu: bool,
    rounding: f64,
    amp: Amp,
) {
    let case = BnCase::<B>::new(dims, strided, relu, rounding, amp);
    let (mean, var) = case.check_moments(&kernels);
    let (y, yv) = case.check_normalize(&kernels, mean.clone(), var.clone());
    let saved = Saved {
        x: case.x.clone(),
        mean,
        var,
        weight: case.weight.clone(),
        epsilon: EPSILON,
        relu_output: relu.then_some(y),
    };
    case.check_backward(&kernels, &saved, &yv);
}

/// One case of [`check_batch_norm_kernels`]: its inputs on `B` and as `B` holds them.
struct BnCase<B: Backend> {
    name: String,
    dims: [usize; 4],
    relu: bool,
    rounding: f64,
    amp: Amp,
    x: Tensor<B, 4>,
    g: Tensor<B, 4>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    xv: Vec<f32>,
    gv: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// The statistics the kernels after `moments` are fed, as `B` holds them.
struct Stats {
    mu: Vec<f32>,
    sigma2: Vec<f32>,
}

impl Stats {
    fn inv(&self, ch: usize) -> f64 {
        1.0 / (f64::from(self.sigma2[ch]) + EPSILON).sqrt()
    }
}

impl<B: Backend> BnCase<B> {
    fn new(dims: [usize; 4], strided: bool, relu: bool, rounding: f64, amp: Amp) -> Self {
        let name = format!("{dims:?} strided {strided} relu {relu} {amp:?}");
        let [_, c, _, _] = dims;
        let device = Default::default();
        let random = |shape: [usize; 4]| {
            Tensor::<Cpu, 4>::random(shape, Distribution::Normal(0.5, 2.0), &device)
        };
        let to_b = |t: Tensor<Cpu, 4>, dtype: Option<FloatDType>| -> Tensor<B, 4> {
            if strided {
                // Channels-last underneath, as a convolution's output is: [N, H, W, C]
                // contiguous, then a permuted view of it.
                let data = t.permute([0, 2, 3, 1]).into_data();
                in_dtype_if(own_float(data), dtype).permute([0, 3, 1, 2])
            } else {
                in_dtype_if(own_float(t.into_data()), dtype)
            }
        };
        let x = to_b(random(dims) + 3.0, amp.input);
        let g = to_b(random(dims), amp.output);
        let own = own_dtype::<B>();
        let x_type = amp.input.map_or(own, DType::from);
        assert_eq!(x.dtype(), x_type, "{name}: x's precision");
        let g_type = amp.output.map_or(own, DType::from);
        assert_eq!(g.dtype(), g_type, "{name}: g's precision");
        let weight = per_channel::<B>(&values(random([1, c, 1, 1])));
        let bias = per_channel::<B>(&values(random([1, c, 1, 1])));
        BnCase {
            name,
            dims,
            relu,
            rounding,
            amp,
            xv: values(x.clone()),
            gv: values(g.clone()),
            gamma: values(weight.clone()),
            beta: values(bias.clone()),
            x,
            g,
            weight,
            bias,
        }
    }

    /// Where value `i` of channel `ch` (in N, H, W order) is in `[N, C, H, W]`.
    fn at(&self, ch: usize, i: usize) -> usize {
        let [_, c, h, w] = self.dims;
        let plane = h * w;
        (i / plane) * c * plane + ch * plane + i % plane
    }

    /// Values per channel.
    fn count(&self) -> usize {
        let [n, _, h, w] = self.dims;
        n * h * w
    }

    fn hat(&self, stats: &Stats, ch: usize, i: usize) -> f64 {
        (f64::from(self.xv[self.at(ch, i)]) - f64::from(stats.mu[ch])) * stats.inv(ch)
    }

    /// `got` against the reference: within 1e-5 of its terms' magnitude plus the rounding of
    /// the precision it is stored in.
    fn check(&self, what: &str, index: usize, got: f32, (want, magnitude): Reference) {
        let error = (f64::from(got) - want).abs();
        let stored = match what {
            "y" => self.amp.output,
            "∂x" => self.amp.input,
            _ => None,
        };
        // f16: 2⁻¹¹ of the value, and half its subnormal step (2⁻²⁵) below 2⁻¹⁴, whether amp
        // or `B` itself stores the result in f16.
        let rounding = if stored.is_some() {
            1e-3
        } else {
            self.rounding
        };
        let floor = match stored.map_or(own_dtype::<B>(), DType::from) {
            DType::F16 => 2f64.powi(-25),
            _ => 0.0,
        };
        assert!(
            error <= 1e-5 * magnitude.max(1e-30) + rounding * want.abs() + floor,
            "{}, {what} {index}: {got} against {want} (error {error:.2e}, terms {magnitude:.2e})",
            self.name
        );
    }

    /// `moments` and the running estimates after it; returns the exact statistics, rounded to
    /// `B`, for the kernels after it.
    fn check_moments(&self, kernels: &OwnKernels<B>) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let c = self.dims[1];
        let device = Default::default();
        let random = |shift: f64| {
            values(Tensor::<Cpu, 1>::random([c], Distribution::Normal(0.5, 2.0), &device) + shift)
        };
        let running = Running {
            mean: per_channel(&random(0.0)),
            var: per_channel(&random(4.0)),
            momentum: MOMENTUM,
        };
        let (old_mean, old_var) = (values(running.mean.clone()), values(running.var.clone()));
        let ((got_mean, got_var), running) = (kernels.moments)(self.x.clone(), running);
        let [got_mean, got_var, new_mean, new_var] =
            [got_mean, got_var, running.mean, running.var].map(values);
        let m = self.count() as f64;
        let mut exact = vec![(0.0, 0.0); c];
        for ch in 0..c {
            let xs: Vec<f64> = (0..self.count())
                .map(|i| f64::from(self.xv[self.at(ch, i)]))
                .collect();
            let mean = xs.iter().sum::<f64>() / m;
            let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m;
            let magnitude = xs.iter().map(|v| v.abs()).sum::<f64>() / m;
            self.check("mean", ch, got_mean[ch], (mean, magnitude));
            self.check("variance", ch, got_var[ch], (var, var));
            let (keep, unbiased) = (1.0 - MOMENTUM, var * m / (m - 1.0).max(1.0));
            let mean_after = (f64::from(old_mean[ch]) * keep, mean * MOMENTUM);
            let var_after = (f64::from(old_var[ch]) * keep, unbiased * MOMENTUM);
            for (what, got, (old, new)) in [
                ("running mean", new_mean[ch], mean_after),
                ("running variance", new_var[ch], var_after),
            ] {
                self.check(what, ch, got, (old + new, old.abs() + new.abs()));
            }
            exact[ch] = (mean, var);
        }
        let rounded = |f: fn(&(f64, f64)) -> f64| {
            per_channel(&exact.iter().map(|e| f(e) as f32).collect::<Vec<_>>())
        };
        (rounded(|e| e.0), rounded(|e| e.1))
    }

    /// `normalize` (and the ReLU) from the given statistics: `y` and its values.
    fn check_normalize(
        &self,
        kernels: &OwnKernels<B>,
        mean: Tensor<B, 1>,
        var: Tensor<B, 1>,
    ) -> (Tensor<B, 4>, Vec<f32>) {
        let out = self.amp.output.map_or(self.weight.dtype(), DType::from);
        let stats = Stats {
            mu: values(mean.clone()),
            sigma2: values(var.clone()),
        };
        let (x, weight, bias) = (self.x.clone(), self.weight.clone(), self.bias.clone());
        let y = (kernels.normalize)(x, mean, var, weight, bias, EPSILON, self.relu, out);
        assert_eq!(y.dtype(), out, "{}: y's precision", self.name);
        let yv = values(y.clone());
        for ch in 0..self.dims[1] {
            let (gm, bt) = (f64::from(self.gamma[ch]), f64::from(self.beta[ch]));
            for i in 0..self.count() {
                let scaled = gm * self.hat(&stats, ch, i);
                let v = if self.relu {
                    (scaled + bt).max(0.0)
                } else {
                    scaled + bt
                };
                let at = self.at(ch, i);
                self.check("y", at, yv[at], (v, scaled.abs() + bt.abs()));
            }
        }
        (y, yv)
    }

    /// ∂β and ∂γ (`gradient_sums`), then ∂x from the kernel's own sums.
    fn check_backward(&self, kernels: &OwnKernels<B>, saved: &Saved<B>, yv: &[f32]) {
        let stats = Stats {
            mu: values(saved.mean.clone()),
            sigma2: values(saved.var.clone()),
        };
        let through = |ch: usize, i: usize| {
            let at = self.at(ch, i);
            if self.relu && yv[at] <= 0.0 {
                0.0
            } else {
                f64::from(self.gv[at])
            }
        };
        let (sum_g, sum_gx) = (kernels.gradient_sums)(self.g.clone(), saved);
        let sums = (sum_g.clone(), sum_gx.clone());
        let (sum_g, sum_gx) = (values(sum_g), values(sum_gx));
        let c = self.dims[1];
        for ch in 0..c {
            let terms: Vec<(f64, f64)> = (0..self.count())
                .map(|i| (through(ch, i), self.hat(&stats, ch, i)))
                .collect();
            let plain = (
                terms.iter().map(|t| t.0).sum(),
                terms.iter().map(|t| t.0.abs()).sum(),
            );
            let centred = terms.iter().map(|t| t.0 * t.1);
            let centred = (centred.clone().sum(), centred.map(f64::abs).sum());
            self.check("Σg", ch, sum_g[ch], plain);
            self.check("Σg·x̂", ch, sum_gx[ch], centred);
        }
        let dx = (kernels.input_gradient)(self.g.clone(), saved, sums);
        assert_eq!(dx.dtype(), saved.x.dtype(), "{}: ∂x's precision", self.name);
        let dx = values(dx);
        let m = self.count() as f64;
        for ch in 0..c {
            let scale = f64::from(self.gamma[ch]) * stats.inv(ch);
            let (db, dw) = (f64::from(sum_g[ch]) / m, f64::from(sum_gx[ch]) / m);
            for i in 0..self.count() {
                let (gi, xh) = (through(ch, i), self.hat(&stats, ch, i));
                let want = scale * (gi - db - xh * dw);
                let magnitude = scale.abs() * (gi.abs() + db.abs() + (xh * dw).abs());
                let at = self.at(ch, i);
                self.check("∂x", at, dx[at], (want, magnitude));
            }
        }
    }
}

fn per_channel<B: Backend>(v: &[f32]) -> Tensor<B, 1> {
    own_float::<B, 1>(TensorData::new(v.to_vec(), [v.len()]))
}

#[test]
fn batch_norm_kernels_equal_a_plain_reference() {
    let _serial = serial();
    // Fewer values per channel than threads, more and not a multiple, one value, and
    // MyDenseNet's last block at batch 2 (1,024 channels of 7×7).
    for shape in [[3, 5, 37, 1], [4, 3, 7, 43], [1, 2, 1, 1], [2, 1024, 7, 7]] {
        for (strided, relu) in [(false, false), (true, false), (false, true), (true, true)] {
            let same = Amp::default();
            check_batch_norm_kernels(own_kernels::<Unfused>(), shape, strided, relu, 0.0, same);
            check_batch_norm_kernels(own_kernels::<G>(), shape, strided, relu, 0.0, same);
        }
    }
}

/// Under amp a BatchNorm reads a convolution's product in its precision and hands ∂x back in
/// it, and one before a convolution writes its output in the convolution's precision and
/// reads the gradient in it.
#[test]
fn batch_norm_kernels_read_and_write_the_products_precision() {
    let _serial = serial();
    for shape in [[3, 5, 37, 1], [2, 64, 7, 7]] {
        for (strided, relu) in [(false, true), (true, true), (true, false)] {
            for amp in Amp::MIXED {
                check_batch_norm_kernels(own_kernels::<Unfused>(), shape, strided, relu, 0.0, amp);
                check_batch_norm_kernels(own_kernels::<G>(), shape, strided, relu, 0.0, amp);
            }
        }
    }
}
