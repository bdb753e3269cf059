//! `birads serve`: an HTTP API and a web page in front of both models.
//!
//! - `POST /v1/predict` — an image (raw body, or the first file of a multipart form): BI-RADS
//!   label, probabilities and the category's meaning in the atlas; the four features with
//!   probabilities and in the lexicon's words; the fused category (`--fusion`); discordance
//!   flags; CutBlack's crop box; model sources; timings.
//! - `POST /v1/preview` — the decoded image as PNG (DICOM and other formats browsers cannot draw).
//! - `POST /v1/report?target=T` — the printable one-page report (HTML, self-contained).
//! - `POST /v1/explain?target=T&model=cls|fea` — Grad-CAM figure as PNG.
//! - `GET /health`, `GET /metrics` (Prometheus), `GET /` (the web page, no external resources).
//!
//! Limits: body size, decoded pixels (checked from the header before decoding), request
//! timeout, a bounded inference queue (503 + `Retry-After` when full), optional bearer token on
//! `/v1/*`. Requests carry image bytes only: nothing in a request names a server path.

mod engine;
mod metrics;
mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use birads_data::pipeline::Preprocess;
use birads_data::FEATURE_NAMES;
use birads_infer::fusion::FusionModel;
use birads_infer::loaded::{load_model, LoadedModel};
use birads_infer::Predictor;
use birads_model::checkpoint::Purpose;
use birads_model::{Cpu, CpuTrain};
use clap::Args;
use serde_json::json;

use engine::{Engine, PrepareError};

const PAGE: &str = include_str!("page.html");

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// BI-RADS weights (original MyConv.pth or a birads checkpoint).
    #[arg(long)]
    pub cla_weights: Option<PathBuf>,
    /// Feature weights (original MyDense.pth or a birads checkpoint).
    #[arg(long)]
    pub fea_weights: Option<PathBuf>,
    /// A fusion model from `birads fuse` (needs both models): the fused category beside the
    /// image model's.
    #[arg(long)]
    pub fusion: Option<PathBuf>,
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Require `Authorization: Bearer TOKEN` on /v1/* (also read from BIRADS_TOKEN).
    #[arg(long, env = "BIRADS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Largest request body in MiB.
    #[arg(long, default_value_t = 32)]
    pub max_body_mib: usize,
    /// Largest decoded image in megapixels (decompression-bomb guard).
    #[arg(long, default_value_t = 40.0)]
    pub max_megapixels: f64,
    /// Seconds before a request is answered 408.
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
    /// Images that may wait for inference; beyond that requests get 503 + Retry-After.
    #[arg(long, default_value_t = 32)]
    pub queue: usize,
    /// Where the models run: the CPU (the dedicated fast path), `cuda`, the first NVIDIA GPU
    /// (a build with `--features cuda`), or `wgpu`, the first GPU burn's wgpu backend finds
    /// (`--features wgpu`). Grad-CAM heatmaps are computed on the CPU.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: crate::device::DeviceArg,
    /// Most requests sharing one forward pass.
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
}

struct AppState {
    engine: Engine,
    classes: Vec<String>,
    /// Where the BI-RADS and feature models came from (file, or the built-in model).
    sources: [Option<String>; 2],
    /// The fusion model and its file.
    fusion: Option<(FusionModel, String)>,
    cls_pre: Option<Preprocess>,
    fea_pre: Option<Preprocess>,
    explain_cls: Option<Mutex<LoadedModel<CpuTrain>>>,
    explain_fea: Option<Mutex<LoadedModel<CpuTrain>>>,
    /// One Grad-CAM at a time, one waiting; more get 503.
    explain_slots: Arc<tokio::sync::Semaphore>,
    /// Admission: one permit per image being decoded, queued or inferred. Taken before the
    /// body is read, so an overloaded server answers 503 without spending CPU on the upload.
    admission: Arc<tokio::sync::Semaphore>,
    capacity: usize,
    /// Largest body in bytes (also what an early rejection reads before answering).
    max_body: usize,
    token: Option<String>,
    max_pixels: u64,
    metrics: metrics::Metrics,
}

/// An error answer: status and a JSON `{"error": …}` body.
struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    fn busy(what: &str) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("{what} is full, retry shortly"),
            retry_after: Some(1),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<PrepareError> for ApiError {
    fn from(e: PrepareError) -> Self {
        match e {
            PrepareError::TooManyPixels { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            PrepareError::Decode(d) if d.is_too_large() => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the image: {d}"),
            ),
            PrepareError::Decode(d) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("cannot read the image: {d}"),
            ),
        }
    }
}

/// The inference model (as `predict` loads it) and an autodiff copy for Grad-CAM.
fn predictor(
    path: &std::path::Path,
    kind: Purpose,
    device: crate::device::DeviceArg,
) -> anyhow::Result<(Predictor<Cpu>, LoadedModel<CpuTrain>, Vec<String>)> {
    let engine = crate::predict::engine(crate::predict::EngineArg::Fast, device);
    let (predictor, classes) = birads_infer::folder::load_predictor(path, kind, false, engine)
        .map(|l| (l.predictor, l.classes))?;
    let for_explain = load_model::<CpuTrain>(path, kind, &Default::default())?;
    Ok((predictor, for_explain, classes))
}

/// Compile and autotune the GPU's kernels for every batch size the server forms before it
/// listens, so that no request waits for them (or times out: a first pass on a GPU backend
/// compiles and autotunes for seconds, on a software driver for minutes).
fn warm_up<'a>(predictors: impl Iterator<Item = &'a Predictor<Cpu>>, max_batch: usize) {
    let t = std::time::Instant::now();
    let mut sizes = Vec::new();
    for p in predictors {
        sizes = p.warm_up(max_batch);
    }
    println!(
        "warmed up on the GPU (kernels compiled, autotuned for batches of {sizes:?}) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// The fusion model of `--fusion`, checked against the models it fuses.
fn load_fusion(
    a: &ServeArgs,
    classes: Option<&[String]>,
    features: bool,
) -> anyhow::Result<Option<(FusionModel, String)>> {
    let Some(path) = &a.fusion else {
        return Ok(None);
    };
    let (Some(classes), true) = (classes, features) else {
        anyhow::bail!("--fusion needs both a BI-RADS model and a feature model (--fea-weights)");
    };
    let m = FusionModel::load(path)?;
    m.check_image_classes(classes)?;
    Ok(Some((m, path.display().to_string())))
}

pub fn run(mut a: ServeArgs) -> anyhow::Result<u8> {
    a.device.ready()?;
    if a.cla_weights.is_none() && a.fea_weights.is_none() {
        println!("{}", birads_infer::folder::builtin_note());
        a.cla_weights = Some(std::path::PathBuf::from(birads_model::builtin::KEYWORD));
    }
    let cls = a
        .cla_weights
        .as_deref()
        .map(|p| predictor(p, Purpose::Grading, a.device))
        .transpose()?;
    let fea = a
        .fea_weights
        .as_deref()
        .map(|p| predictor(p, Purpose::Features, a.device))
        .transpose()?;
    let fusion = load_fusion(&a, cls.as_ref().map(|c| c.2.as_slice()), fea.is_some())?;
    if a.device.is_gpu() {
        warm_up(
            [&cls, &fea].into_iter().flatten().map(|c| &c.0),
            a.max_batch,
        );
    }
    let classes = cls
        .as_ref()
        .map(|c| c.2.clone())
        .unwrap_or_else(|| birads_data::BIRADS6.iter().map(|s| s.to_string()).collect());
    let metrics = metrics::Metrics::new();
    let batch_hist = metrics.batch_size.clone();
    let (cls_p, cls_x) = match cls {
        Some((p, x, _)) => (Some(p), Some(x)),
        None => (None, None),
    };
    let (fea_p, fea_x) = match fea {
        Some((p, x, _)) => (Some(p), Some(x)),
        None => (None, None),
    };
    let sources = [
        cls_x.as_ref().map(|m| m.source.clone()),
        fea_x.as_ref().map(|m| m.source.clone()),
    ];
    let state = Arc::new(AppState {
        sources,
        fusion,
        cls_pre: cls_p.as_ref().map(|p| p.preprocess.clone()),
        fea_pre: fea_p.as_ref().map(|p| p.preprocess.clone()),
        engine: Engine::start(cls_p, fea_p, a.queue.max(1), a.max_batch, move |n| {
            batch_hist.observe(n as f64)
        }),
        classes,
        explain_cls: cls_x.map(Mutex::new),
        explain_fea: fea_x.map(Mutex::new),
        explain_slots: Arc::new(tokio::sync::Semaphore::new(2)),
        admission: Arc::new(tokio::sync::Semaphore::new(a.queue.max(1))),
        capacity: a.queue.max(1),
        max_body: a.max_body_mib * 1024 * 1024,
        token: a.token.clone().filter(|t| !t.is_empty()),
        max_pixels: (a.max_megapixels * 1e6) as u64,
        metrics,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(state, a))?;
    Ok(0)
}

async fn serve(state: Arc<AppState>, a: ServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(a.addr)
        .await
        .with_context(|| format!("binding {}", a.addr))?;
    let addr = listener.local_addr()?;
    let app = router(state, &a);
    // Tests and scripts read this line to find a port chosen by the OS.
    println!("listening on http://{addr}");
    use std::io::Write;
    std::io::stdout().flush().ok();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .context("serving")?;
    eprintln!("stopped");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn router(state: Arc<AppState>, a: &ServeArgs) -> Router {
    let api = Router::new()
        .route("/v1/predict", post(routes::predict))
        .route("/v1/preview", post(routes::preview))
        .route("/v1/report", post(routes::report))
        .route("/v1/explain", post(routes::explain_handler))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/metrics", get(metrics_handler))
        .merge(api)
        .layer(DefaultBodyLimit::max(a.max_body_mib * 1024 * 1024))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(a.timeout_s.max(1)),
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts and times every request (outermost layer, so timeouts and 413s are seen too).
async fn observe(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let endpoint = match req.uri().path() {
        p @ ("/" | "/health" | "/metrics" | "/v1/predict" | "/v1/preview" | "/v1/report"
        | "/v1/explain") => p.to_string(),
        _ => "other".to_string(),
    };
    let t = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let m = &st.metrics;
    m.requests
        .get_or_create(&metrics::RequestLabels {
            endpoint: endpoint.clone(),
            status,
        })
        .inc();
    if status >= 400 {
        m.errors
            .get_or_create(&metrics::EndpointLabels {
                endpoint: endpoint.clone(),
            })
            .inc();
    }
    m.latency
        .get_or_create(&metrics::EndpointLabels { endpoint })
        .observe(t.elapsed().as_secs_f64());
    resp
}

async fn require_token(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if let Some(token) = &st.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compare in constant time: the token is a secret.
        let ok = given.is_some_and(|g| {
            g.len() == token.len()
                && g.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                    == 0
        });
        if !ok {
            // Read the upload first: a client still sending would otherwise get a broken pipe.
            let _ = axum::body::to_bytes(req.into_body(), st.max_body).await;
            let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
                .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn health(State(st): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "models": {
            "birads": st.cls_pre.is_some(),
            "features": st.fea_pre.is_some(),
            "fusion": st.fusion.is_some(),
        },
        "sources": { "birads": st.sources[0], "features": st.sources[1], "fusion": st.fusion.as_ref().map(|f| &f.1) },
        "classes": st.classes,
        "features": FEATURE_NAMES,
        "queue": { "in_flight": st.capacity - st.admission.available_permits(), "waiting": st.engine.depth.load(Ordering::SeqCst), "capacity": st.capacity },
        "token_required": st.token.is_some(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn metrics_handler(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    st.metrics
        .queue_depth
        .set((st.capacity - st.admission.available_permits()) as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.encode(),
    )
}
