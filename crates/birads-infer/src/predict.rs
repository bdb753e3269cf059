//! Batched prediction with either model.

use std::sync::Arc;

use birads_data::loader::Loader;
use birads_data::pipeline::Preprocess;
use birads_data::{Problem, Sample};
use birads_model::checkpoint::AnyModel;
use birads_model::fast::FastModel;
use burn::prelude::*;
use burn::tensor::activation::softmax;

/// BI-RADS prediction for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ClsPrediction {
    pub img_name: String,
    /// Position of the image in the samples predicted.
    pub index: usize,
    /// Index into the model's class list (0..5 for `2, 3, 4A, 4B, 4C, 5`).
    pub label: usize,
    pub probabilities: Vec<f32>,
}

/// Feature prediction for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct FeaPrediction {
    pub img_name: String,
    /// Position of the image in the samples predicted.
    pub index: usize,
    /// boundary, calcification, direction, shape: 1 = the suspicious finding.
    pub labels: [u8; 4],
    /// Probability of the suspicious finding per feature.
    pub probabilities: [f32; 4],
}

/// Index of the first maximum, as `torch.argmax` picks on ties.
pub fn argmax<T: PartialOrd>(v: &[T]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// P(suspicious finding) per feature from MyDenseNet's `[4, 2]` softmax, flattened.
pub fn suspicious(p: &[f32]) -> [f32; 4] {
    std::array::from_fn(|t| p[2 * t + 1])
}

/// A model with the preprocessing it expects.
pub struct Predictor<B: Backend> {
    pub model: AnyModel<B>,
    pub preprocess: Preprocess,
    pub device: B::Device,
    /// Average with the horizontally flipped image (test-time augmentation).
    pub tta: bool,
    /// Another way to run the same weights: the dedicated CPU path (`FastModel`: same outputs,
    /// several times faster than burn's generic ops) or burn on a GPU (`BurnRunner`). `None`
    /// runs `model` through burn on `device`.
    pub runner: Option<Box<dyn Runner>>,
}

/// Runs a model on a batch of preprocessed images: softmax probabilities of every image,
/// concatenated (`[n, classes]`, or `[n, 4, 2]` for the feature model), flipped copies
/// averaged in when `tta`.
pub trait Runner: Send + Sync {
    fn probabilities(&self, images: &[f32], n: usize, size: usize, tta: bool) -> Vec<f32>;
}

impl Runner for FastModel {
    fn probabilities(&self, images: &[f32], n: usize, size: usize, tta: bool) -> Vec<f32> {
        let run = |x: &[f32]| {
            let mut p = self.forward(x, n, size, size);
            let group = self.softmax_group(p.len() / n);
            softmax_groups(&mut p, group);
            p
        };
        let mut p = run(images);
        if tta {
            let q = run(&flip_horizontally(images, size));
            p.iter_mut().zip(q).for_each(|(a, b)| *a = (*a + b) / 2.0);
        }
        p
    }
}

/// A model on any burn backend and device (a GPU's, for `--device cuda`).
pub struct BurnRunner<B: Backend> {
    // burn's GPU tensors are not `Sync`; the lock makes the runner shareable between the
    // threads of a server (one batch at a time runs on a device anyway).
    model: std::sync::Mutex<AnyModel<B>>,
    device: B::Device,
}

impl<B: Backend> BurnRunner<B> {
    pub fn new(model: AnyModel<B>, device: B::Device) -> Self {
        Self {
            model: std::sync::Mutex::new(model),
            device,
        }
    }
}

impl<B: Backend> Runner for BurnRunner<B>
where
    AnyModel<B>: Send,
{
    fn probabilities(&self, images: &[f32], n: usize, size: usize, tta: bool) -> Vec<f32> {
        let model = self.model.lock().unwrap_or_else(|e| e.into_inner());
        burn_probabilities(&model, &self.device, images.to_vec(), n, size, tta)
    }
}

/// Softmax probabilities through burn's modules on `device`, flattened per image.
fn burn_probabilities<B: Backend>(
    model: &AnyModel<B>,
    device: &B::Device,
    images: Vec<f32>,
    n: usize,
    size: usize,
    tta: bool,
) -> Vec<f32> {
    let x = Tensor::<B, 4>::from_data(TensorData::new(images, [n, 3, size, size]), device);
    let run = |x: Tensor<B, 4>| -> Tensor<B, 2> {
        match model {
            AnyModel::ConvNeXt(m) => softmax(m.forward(x), 1),
            AnyModel::DenseNet(m) => softmax(m.forward(x), 2).flatten(1, 2),
        }
    };
    let mut p = run(x.clone());
    if tta {
        p = (p + run(x.flip([3]))) / 2.0;
    }
    p.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 output")
}

/// Softmax over consecutive groups of `width` values, in place.
fn softmax_groups(x: &mut [f32], width: usize) {
    for g in x.chunks_exact_mut(width) {
        let max = g.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
        let mut sum = 0.0;
        for v in g.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        g.iter_mut().for_each(|v| *v /= sum);
    }
}

/// NCHW images mirrored left to right.
fn flip_horizontally(x: &[f32], width: usize) -> Vec<f32> {
    let mut out = x.to_vec();
    for row in out.chunks_exact_mut(width) {
        row.reverse();
    }
    out
}

/// Per-image outputs of a run plus the images that could not be read.
pub struct Run<T> {
    pub predictions: Vec<T>,
    pub failures: Vec<Problem>,
}

impl<B: Backend> Predictor<B> {
    /// Softmax probabilities for a batch of preprocessed images (`n` CHW tensors of side
    /// `size`, concatenated): `[n, classes]` (ConvNeXt) or `[n, 4, 2]` (DenseNet) flattened per
    /// image.
    pub fn probabilities(&self, images: Vec<f32>, n: usize, size: usize) -> Vec<Vec<f32>> {
        let p = match &self.runner {
            Some(r) => r.probabilities(&images, n, size, self.tta),
            None => burn_probabilities(&self.model, &self.device, images, n, size, self.tta),
        };
        let width = p.len() / n.max(1);
        p.chunks(width.max(1)).map(|c| c.to_vec()).collect()
    }

    /// One pass of blank images at every batch size a server of `max_batch` forms, in powers
    /// of two (the sizes burn's autotune keys round batches to). On a GPU the first pass at a
    /// size compiles its kernels and times autotune's candidates for its convolutions and
    /// products: seconds on a GPU, minutes on a software driver, which a client's first
    /// request would otherwise wait for. Returns the sizes run.
    pub fn warm_up(&self, max_batch: usize) -> Vec<usize> {
        let size = self.preprocess.size as usize;
        let sizes: Vec<usize> = std::iter::successors(Some(1usize), |n| Some(n * 2))
            .take_while(|&n| n <= max_batch.max(1).next_power_of_two())
            .collect();
        for &n in &sizes {
            self.probabilities(vec![0.0; n * 3 * size * size], n, size);
        }
        sizes
    }

    /// Probabilities of every sample that could be read, with its index in `samples`, in
    /// order; batches decode in parallel; `progress` is called with the number of images done
    /// after each batch.
    pub fn run(
        &self,
        samples: Vec<Sample>,
        batch_size: usize,
        mut progress: impl FnMut(usize),
    ) -> Run<(usize, Vec<f32>)> {
        let n = samples.len();
        let loader = Loader::new(Arc::new(samples), self.preprocess.clone(), None, 0);
        let mut out = Run {
            predictions: Vec::with_capacity(n),
            failures: Vec::new(),
        };
        let mut done = 0;
        for batch in loader.prefetch(0, (0..n).collect(), batch_size.max(1), 2) {
            done += batch.len() + batch.failures.len();
            out.failures.extend(batch.failures.iter().cloned());
            if !batch.is_empty() {
                let (count, size) = (batch.len(), batch.size);
                let probs = self.probabilities(batch.images, count, size);
                out.predictions
                    .extend(batch.indices.iter().copied().zip(probs));
            }
            progress(done);
        }
        out
    }

    /// BI-RADS predictions (the model must be MyConvNeXt).
    pub fn classify(
        &self,
        samples: Vec<Sample>,
        batch_size: usize,
        progress: impl FnMut(usize),
    ) -> Run<ClsPrediction> {
        let names: Vec<String> = samples.iter().map(|s| s.image.file_name()).collect();
        let r = self.run(samples, batch_size, progress);
        Run {
            predictions: r
                .predictions
                .into_iter()
                .map(|(i, p)| ClsPrediction {
                    img_name: names[i].clone(),
                    index: i,
                    label: argmax(&p),
                    probabilities: p,
                })
                .collect(),
            failures: r.failures,
        }
    }

    /// Feature predictions (the model must be MyDenseNet).
    pub fn features(
        &self,
        samples: Vec<Sample>,
        batch_size: usize,
        progress: impl FnMut(usize),
    ) -> Run<FeaPrediction> {
        let names: Vec<String> = samples.iter().map(|s| s.image.file_name()).collect();
        let r = self.run(samples, batch_size, progress);
        Run {
            predictions: r
                .predictions
                .into_iter()
                .map(|(i, p)| {
                    let img_name = names[i].clone();
                    let labels = std::array::from_fn(|t| argmax(&p[2 * t..2 * t + 2]) as u8);
                    let probabilities = suspicious(&p);
                    FeaPrediction {
                        img_name,
                        index: i,
                        labels,
                        probabilities,
                    }
                })
                .collect(),
            failures: r.failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{argmax, flip_horizontally, softmax_groups};

    #[test]
    fn softmax_is_per_group_and_flip_mirrors_rows() {
        let mut x = vec![0.0, 0.0, 1.0, 3.0, 1000.0, 1000.0];
        softmax_groups(&mut x, 2);
        assert_eq!(&x[..2], &[0.5, 0.5]);
        let e = 1.0 / (1.0 + (2.0f32).exp());
        assert!((x[2] - e).abs() < 1e-6 && (x[3] - (1.0 - e)).abs() < 1e-6);
        assert_eq!(&x[4..], &[0.5, 0.5], "large logits do not overflow");
        // Two 2×3 planes: each row of width 3 reversed.
        let img: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(
            flip_horizontally(&img, 3),
            [2., 1., 0., 5., 4., 3., 8., 7., 6., 11., 10., 9.]
        );
    }

    /// Records each batch it is given (shared with the test through the `Arc`).
    struct Counting(std::sync::Mutex<Vec<(usize, usize)>>);

    impl super::Runner for std::sync::Arc<Counting> {
        fn probabilities(&self, images: &[f32], n: usize, size: usize, _: bool) -> Vec<f32> {
            assert_eq!(images.len(), n * 3 * size * size);
            self.0.lock().unwrap().push((n, size));
            vec![0.5; n * 2]
        }
    }

    #[test]
    fn warm_up_runs_every_batch_size_autotune_tells_apart_through_the_runner() {
        use birads_model::checkpoint::AnyModel;
        use birads_model::{Cpu, MyConvNeXtConfig};
        let device = Default::default();
        let model = MyConvNeXtConfig::new()
            .with_dims(vec![8, 8, 8, 8])
            .with_depths(vec![1, 1, 1, 1])
            .init::<Cpu>(&device);
        let mut preprocess = birads_data::pipeline::Preprocess::original_inference();
        preprocess.size = 32;
        let counting = std::sync::Arc::new(Counting(Default::default()));
        let p = super::Predictor {
            model: AnyModel::ConvNeXt(model),
            preprocess,
            device,
            tta: false,
            runner: Some(Box::new(counting.clone())),
        };
        for (max_batch, want) in [(8, vec![1, 2, 4, 8]), (5, vec![1, 2, 4, 8]), (1, vec![1])] {
            counting.0.lock().unwrap().clear();
            assert_eq!(p.warm_up(max_batch), want);
            let seen: Vec<(usize, usize)> = want.iter().map(|&n| (n, 32)).collect();
            assert_eq!(*counting.0.lock().unwrap(), seen, "max_batch {max_batch}");
        }
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.1, 0.7, 0.2]), 1);
        assert_eq!(argmax(&[0.5, 0.5]), 0);
        assert_eq!(argmax(&[0.2, 0.4, 0.4]), 1);
    }
}
