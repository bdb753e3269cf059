//! The inference side of the server: request threads decode and preprocess in parallel (the
//! blocking pool, both cores), then hand tensors to one worker thread through a bounded queue.
//! The worker takes whatever is waiting (up to `max_batch`) and runs each model once over the
//! whole batch — concurrent requests share a forward pass instead of contending for the cores.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use birads_data::image_ops::Chw;
use birads_data::image_ops::{CropBox, DecodeError};
use birads_data::pipeline::{preprocess, Preprocess};
use birads_infer::Predictor;
use birads_model::Cpu;
use image::RgbImage;

/// One image's tensors, ready for the models.
pub struct Prepared {
    pub width: u32,
    pub height: u32,
    /// CutBlack's crop box in the source image.
    pub crop: CropBox,
    pub cls: Option<Chw>,
    pub fea: Option<Chw>,
    /// The decoded image (for reports and previews).
    pub image: RgbImage,
    pub decode_ms: f64,
    pub preprocess_ms: f64,
}

/// Why an upload was refused before inference.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("image is {width}×{height} pixels, above this server's limit of {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("{0}")]
    Decode(#[from] DecodeError),
}

/// Header check against the server's pixel limit (before any pixel is allocated), then decode
/// and both models' preprocessing.
pub fn prepare(
    bytes: &[u8],
    cls: Option<&Preprocess>,
    fea: Option<&Preprocess>,
    max_pixels: u64,
) -> Result<Prepared, PrepareError> {
    let t = Instant::now();
    let img = decode_within(bytes, max_pixels)?;
    let decode_ms = ms(t);
    let t = Instant::now();
    let c = cls.map(|p| preprocess(&img, None, p));
    let f = fea.map(|p| preprocess(&img, None, p));
    let crop = c
        .as_ref()
        .or(f.as_ref())
        .map(|p| p.cut_box)
        .unwrap_or(CropBox::full(img.width(), img.height()));
    Ok(Prepared {
        width: img.width(),
        height: img.height(),
        crop,
        cls: c.map(|p| p.tensor),
        fea: f.map(|p| p.tensor),
        image: img,
        decode_ms,
        preprocess_ms: ms(t),
    })
}

/// Decode an upload under the server's pixel limit: checked from the header before any pixel
/// is allocated, and again after decoding (formats whose header was not readable, e.g. DICOM).
pub fn decode_within(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, PrepareError> {
    let too_many = |width: u32, height: u32| {
        (width as u64 * height as u64 > max_pixels).then_some(PrepareError::TooManyPixels {
            width,
            height,
            limit: max_pixels,
        })
    };
    if let Ok((w, h)) = birads_data::image_ops::dimensions_of_bytes(bytes) {
        if let Some(e) = too_many(w, h) {
            return Err(e);
        }
    }
    let img = birads_data::image_ops::decode_bytes(bytes)?;
    match too_many(img.width(), img.height()) {
        Some(e) => Err(e),
        None => Ok(img),
    }
}

pub fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// What the worker returns for one image.
pub struct Inferred {
    /// Softmax over the BI-RADS classes.
    pub cls: Option<Vec<f32>>,
    /// `[4, 2]` softmax per feature, flattened.
    pub fea: Option<Vec<f32>>,
    pub queue_ms: f64,
    pub inference_ms: f64,
    /// How many requests shared the forward pass.
    pub batch: usize,
}

pub struct Job {
    pub cls: Option<Chw>,
    pub fea: Option<Chw>,
    pub enqueued: Instant,
    pub reply: tokio::sync::oneshot::Sender<Result<Inferred, String>>,
}

/// The producer side: a bounded queue and its depth (for `/metrics`).
#[derive(Clone)]
pub struct Engine {
    tx: SyncSender<Job>,
    /// Jobs in the channel, not yet taken by the worker.
    pub depth: Arc<AtomicI64>,
}

pub enum Submit {
    Queued,
    Full,
    Stopped,
}

impl Engine {
    /// Starts the worker thread with the models it owns.
    pub fn start(
        cls: Option<Predictor<Cpu>>,
        fea: Option<Predictor<Cpu>>,
        capacity: usize,
        max_batch: usize,
        on_batch: impl Fn(usize) + Send + 'static,
    ) -> Self {
        let (tx, rx) = sync_channel(capacity);
        let depth = Arc::new(AtomicI64::new(0));
        let d = depth.clone();
        std::thread::Builder::new()
            .name("birads-inference".into())
            .spawn(move || worker(rx, cls, fea, max_batch.max(1), d, on_batch))
            .expect("spawn the inference thread");
        Self { tx, depth }
    }

    /// Queue a job without waiting: a full queue is the caller's 503.
    pub fn submit(&self, job: Job) -> Submit {
        self.depth.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(job) {
            Ok(()) => Submit::Queued,
            Err(e) => {
                self.depth.fetch_sub(1, Ordering::SeqCst);
                match e {
                    TrySendError::Full(_) => Submit::Full,
                    TrySendError::Disconnected(_) => Submit::Stopped,
                }
            }
        }
    }
}

fn worker(
    rx: Receiver<Job>,
    cls: Option<Predictor<Cpu>>,
    fea: Option<Predictor<Cpu>>,
    max_batch: usize,
    depth: Arc<AtomicI64>,
    on_batch: impl Fn(usize),
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        depth.fetch_sub(jobs.len() as i64, Ordering::SeqCst);
        on_batch(jobs.len());
        let started = Instant::now();
        let queue_ms: Vec<f64> = jobs
            .iter()
            .map(|j| (started - j.enqueued).as_secs_f64() * 1e3)
            .collect();
        // A panic in a forward pass answers this batch with an error and keeps serving.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let c = run_model(cls.as_ref(), jobs.iter().map(|j| j.cls.as_ref()).collect());
            let f = run_model(fea.as_ref(), jobs.iter().map(|j| j.fea.as_ref()).collect());
            (c, f)
        }));
        let inference_ms = ms(started);
        let n = jobs.len();
        match result {
            Ok((mut c, mut f)) => {
                for (i, job) in jobs.into_iter().enumerate() {
                    let _ = job.reply.send(Ok(Inferred {
                        cls: c[i].take(),
                        fea: f[i].take(),
                        queue_ms: queue_ms[i],
                        inference_ms,
                        batch: n,
                    }));
                }
            }
            Err(_) => {
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err("inference failed (see the server log)".into()));
                }
            }
        }
    }
}

/// One forward pass over the images that have a tensor for this model.
fn run_model(model: Option<&Predictor<Cpu>>, inputs: Vec<Option<&Chw>>) -> Vec<Option<Vec<f32>>> {
    let mut out: Vec<Option<Vec<f32>>> = vec![None; inputs.len()];
    let Some(model) = model else { return out };
    let present: Vec<(usize, &Chw)> = inputs
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.map(|t| (i, t)))
        .collect();
    if present.is_empty() {
        return out;
    }
    let size = present[0].1.height;
    let mut data = Vec::with_capacity(present.len() * present[0].1.data.len());
    for (_, t) in &present {
        data.extend_from_slice(&t.data);
    }
    let probs = model.probabilities(data, present.len(), size);
    for ((i, _), p) in present.into_iter().zip(probs) {
        out[i] = Some(p);
    }
    out
}
