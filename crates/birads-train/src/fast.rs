//! Training steps on the dedicated CPU path: the backbone's forward and backward pass and
//! its optimiser update run in `birads_model::fast::train`; the head and the loss stay burn
//! modules on the autodiff backend, fed the pooled features as a leaf tensor, so dropout,
//! the losses and the head's optimiser state are exactly the burn path's. At the end of an
//! epoch `sync` writes the backbone's weights back into the burn model (for validation and
//! checkpoints).

use std::path::Path;

use birads_model::fast::train::{FastTrainer, OptimConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::trainer::Net;

/// The backbone of a model being trained on the CPU path.
pub struct FastBackbone {
    pub trainer: FastTrainer,
    pub optim: OptimConfig,
    /// Pooled features `[n, C]` of the last forward pass, as a leaf of the autodiff graph.
    leaf: Option<(usize, usize)>,
}

impl FastBackbone {
    pub fn new<B: Backend, M: Net<B> + Clone>(model: &M, optim: OptimConfig) -> Self {
        Self {
            trainer: FastTrainer::from_model(&model.clone().into_any()),
            optim,
            leaf: None,
        }
    }

    /// Training-mode logits of `n` NCHW images (`s×s`): the backbone here, the head in
    /// burn's graph. Returns the logits and the pooled-feature leaf to pass to `step`.
    pub fn forward<B: AutodiffBackend, M: Net<B>>(
        &mut self,
        model: &M,
        images: &[f32],
        n: usize,
        s: usize,
        seed: u64,
        device: &B::Device,
    ) -> (Tensor<B, 2>, Tensor<B, 4>) {
        let pooled = self.trainer.forward(images, n, s, s, seed);
        let c = pooled.len() / n;
        self.leaf = Some((n, c));
        let leaf =
            Tensor::<B, 4>::from_data(TensorData::new(pooled, [n, c, 1, 1]), device).require_grad();
        (model.head_logits(leaf.clone()), leaf)
    }

    /// The backbone's backward pass from the leaf's gradient in `grads`, then its optimiser
    /// update at rate `lr`. (The head's parameters are updated by burn's optimiser from the
    /// same `grads`.)
    pub fn step<B: AutodiffBackend>(&mut self, leaf: &Tensor<B, 4>, grads: &B::Gradients, lr: f64) {
        let (n, c) = self.leaf.take().expect("forward before step");
        let d: Vec<f32> = match leaf.grad(grads) {
            Some(g) => g
                .into_data()
                .convert::<f32>()
                .to_vec()
                .expect("f32 gradient"),
            None => vec![0.0; n * c],
        };
        self.trainer.backward(&d);
        self.trainer.step(&self.optim, lr as f32);
    }

    /// Save the backbone optimiser's state (moments, step count) atomically. The weights
    /// themselves go into the model checkpoint.
    pub fn save(&mut self, path: &Path) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&self.trainer.steps().to_le_bytes());
        let weights = self.trainer.weights_mut();
        bytes.extend_from_slice(&(weights.len() as u64).to_le_bytes());
        for w in weights {
            let (m, v) = w.moments();
            bytes.extend_from_slice(&(m.len() as u64).to_le_bytes());
            for x in m.iter().chain(v) {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
        }
        birads_data::atomic::write_atomic(path, &bytes)
    }

    /// Restore what `save` wrote (for the same model).
    pub fn load(&mut self, path: &Path) -> Result<(), String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let mut r = Reader(&bytes);
        if r.take(MAGIC.len())? != MAGIC {
            return Err("not a birads fast-engine optimiser state".into());
        }
        let steps = i32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
        let count = r.u64()? as usize;
        let mut weights = self.trainer.weights_mut();
        if count != weights.len() {
            return Err(format!(
                "state for {count} weights, the model has {}",
                weights.len()
            ));
        }
        for w in weights.iter_mut() {
            let len = r.u64()? as usize;
            let floats = |b: &[u8]| -> Vec<f32> {
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect()
            };
            let m = floats(r.take(4 * len)?);
            let v = floats(r.take(4 * len)?);
            w.set_moments(&m, &v)?;
        }
        if !r.0.is_empty() {
            return Err("trailing bytes".into());
        }
        self.trainer.set_steps(steps);
        Ok(())
    }

    /// `model` with the backbone's current weights (parameter ids kept).
    pub fn sync<B: Backend, M: Net<B>>(&self, model: M) -> M {
        M::from_any(self.trainer.write_to(model.into_any()))
    }
}

const MAGIC: &[u8] = b"birads-fast-optim-1\n";

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}
