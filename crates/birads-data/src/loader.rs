//! Batches of float tensors from samples, decoded and augmented in parallel on rayon's pool
//! (both cores busy), with a bounded prefetch thread so the next batch is prepared while the
//! model works on the current one. Randomness per sample comes from (seed, epoch, position)
//! so batches are identical whatever the thread count.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use rand::Rng;
use rayon::prelude::*;

use crate::image_ops::decode;
use crate::pipeline::{augment, preprocess, Augment, CutMix, Partner, Prepared, Preprocess};
use crate::rng::{stream, STREAM_AUGMENT};
use crate::sample::{Problem, Sample};

/// A batch in NCHW layout.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `n × 3 × size × size` floats.
    pub images: Vec<f32>,
    pub size: usize,
    /// Dataset indices of the samples that made it into the batch.
    pub indices: Vec<usize>,
    pub classes: Vec<Option<usize>>,
    pub features: Vec<[Option<bool>; 4]>,
    /// Samples that could not be loaded (left out of the batch, never silently).
    pub failures: Vec<Problem>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// Loads samples through the inference chain, or the training chain when `augment` is set.
#[derive(Clone)]
pub struct Loader {
    samples: Arc<Vec<Sample>>,
    pub preprocess: Preprocess,
    pub augment: Option<Augment>,
    pub seed: u64,
}

impl Loader {
    pub fn new(
        samples: Arc<Vec<Sample>>,
        preprocess: Preprocess,
        augment: Option<Augment>,
        seed: u64,
    ) -> Self {
        Self {
            samples,
            preprocess,
            augment,
            seed,
        }
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// One sample at `position` of `epoch` (the position keys its random stream).
    pub fn load(&self, epoch: u64, position: usize, index: usize) -> Result<Prepared, Problem> {
        let s = &self.samples[index];
        let img = decode(&s.image).map_err(|e| Problem::error(&s.image, e.to_string()))?;
        let Some(aug) = &self.augment else {
            return Ok(preprocess(&img, s.lesion.as_ref(), &self.preprocess));
        };
        let mut rng = stream(self.seed, &[STREAM_AUGMENT, epoch, position as u64]);
        let partner_img;
        let partner = if aug.cutmix != CutMix::Off && self.samples.len() > 1 {
            // The original drew any image, itself included.
            let j = rng.random_range(0..self.samples.len());
            let other = &self.samples[j];
            match decode(&other.image) {
                Ok(im) => {
                    partner_img = im;
                    Some(Partner {
                        image: &partner_img,
                        lesion: other.lesion,
                    })
                }
                Err(_) => None, // reported when that sample itself is loaded
            }
        } else {
            None
        };
        Ok(augment(
            &img,
            s.lesion.as_ref(),
            partner,
            &self.preprocess,
            aug,
            &mut rng,
        ))
    }

    /// Load the samples at `indices` (their positions in the epoch start at `first_position`)
    /// in parallel.
    pub fn batch(&self, epoch: u64, first_position: usize, indices: &[usize]) -> Batch {
        let results: Vec<(usize, Result<Prepared, Problem>)> = indices
            .par_iter()
            .enumerate()
            .map(|(k, &i)| (i, self.load(epoch, first_position + k, i)))
            .collect();
        let size = self.preprocess.size as usize;
        let mut b = Batch {
            images: Vec::with_capacity(results.len() * 3 * size * size),
            size,
            indices: Vec::new(),
            classes: Vec::new(),
            features: Vec::new(),
            failures: Vec::new(),
        };
        for (i, r) in results {
            match r {
                Ok(p) => {
                    b.images.extend_from_slice(&p.tensor.data);
                    b.indices.push(i);
                    b.classes.push(self.samples[i].class);
                    b.features.push(self.samples[i].features);
                }
                Err(problem) => b.failures.push(problem),
            }
        }
        b
    }

    /// Batches of an epoch's order, prepared `ahead` batches in advance on a background
    /// thread (which fans out to rayon).
    pub fn prefetch(
        &self,
        epoch: u64,
        order: Vec<usize>,
        batch_size: usize,
        ahead: usize,
    ) -> Receiver<Batch> {
        let (tx, rx) = sync_channel(ahead.max(1));
        let loader = self.clone();
        std::thread::spawn(move || {
            for (k, chunk) in order.chunks(batch_size.max(1)).enumerate() {
                let batch = loader.batch(epoch, k * batch_size, chunk);
                if tx.send(batch).is_err() {
                    break; // consumer hung up
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{ImageSource, LesionBox};

    fn dataset(dir: &std::path::Path) -> Arc<Vec<Sample>> {
        let mut v = Vec::new();
        for i in 0..6u32 {
            let p = dir.join(format!("{i}.png"));
            image::RgbImage::from_fn(120 + i * 7, 100, |x, y| {
                image::Rgb([(x * i % 256) as u8, y as u8, 60])
            })
            .save(&p)
            .unwrap();
            let mut s = Sample::unlabelled(ImageSource::Path(p), "t");
            s.class = Some(i as usize % 6);
            s.lesion = Some(LesionBox {
                cx: 0.5,
                cy: 0.5,
                w: 0.3,
                h: 0.3,
            });
            v.push(s);
        }
        let bad = dir.join("bad.png");
        std::fs::write(&bad, b"garbage").unwrap();
        v.push(Sample::unlabelled(ImageSource::Path(bad), "t"));
        Arc::new(v)
    }

    #[test]
    fn batches_are_identical_across_thread_counts_and_report_failures() {
        let dir = tempfile::tempdir().unwrap();
        let ds = dataset(dir.path());
        let pre = Preprocess {
            size: 32,
            ..Preprocess::original_inference()
        };
        let loader = Loader::new(
            ds,
            pre,
            Some(Augment::original(CutMix::Lesion { p: 0.8 })),
            5,
        );
        let idx = [0, 1, 2, 3, 4, 5, 6, 2];
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| loader.batch(0, 0, &idx));
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
            .install(|| loader.batch(0, 0, &idx));
        assert_eq!(one.images, two.images);
        assert_eq!(one.len(), 7);
        assert_eq!(one.failures.len(), 1);
        assert!(one.failures[0].item.ends_with("bad.png"));
        assert_eq!(one.images.len(), 7 * 3 * 32 * 32);
        // The same sample at two positions gets different augmentations.
        let plane = 3 * 32 * 32;
        assert_ne!(
            one.images[2 * plane..3 * plane],
            one.images[6 * plane..7 * plane]
        );
        // Another epoch, other augmentations.
        assert_ne!(loader.batch(1, 0, &idx).images, one.images);
    }

    #[test]
    fn prefetch_yields_every_batch_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let ds = dataset(dir.path());
        let loader = Loader::new(
            ds,
            Preprocess {
                size: 16,
                ..Preprocess::original_inference()
            },
            None,
            0,
        );
        let batches: Vec<Batch> = loader
            .prefetch(0, vec![0, 1, 2, 3, 4], 2, 2)
            .into_iter()
            .collect();
        assert_eq!(
            batches
                .iter()
                .map(|b| b.indices.clone())
                .collect::<Vec<_>>(),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        assert_eq!(batches[0].classes, vec![Some(0), Some(1)]);
    }
}
