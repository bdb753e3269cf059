//! The routes that take an image: `/v1/predict` (the assessment as JSON), `/v1/preview` (the
//! server's decoded pixels as PNG, for formats a browser cannot draw, e.g. DICOM),
//! `/v1/report` (the printable one-page report) and `/v1/explain` (a Grad-CAM figure).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use birads_data::{ClassList, FEATURE_NAMES};
use birads_infer::assessment::{assess, Assessment};
use birads_infer::explain::{captioned_overlays, explain, figure, Explanation, Target};
use birads_infer::lesion_report::{lesion_page, LesionReport};
use birads_infer::lexicon::DESCRIPTORS;
use birads_infer::predict::{argmax, suspicious};
use birads_infer::report::png;
use serde::Deserialize;
use serde_json::{json, Value};

use super::engine::{self, Inferred, Job, Prepared, Submit};
use super::{ApiError, AppState};

fn internal(e: impl ToString) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The image of a request: the raw body, or the first file field of a multipart form.
pub(super) async fn image_bytes(req: Request) -> Result<(Bytes, Option<String>), ApiError> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let too_large = |e: String| {
        if e.contains("length limit") {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, e)
        }
    };
    if !is_multipart {
        let bytes = Bytes::from_request(req, &())
            .await
            .map_err(|e| too_large(e.body_text()))?;
        return Ok((bytes, None));
    }
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| too_large(e.body_text()))?
    {
        // The file name is kept for the answer only; it never touches the file system.
        let name = field.file_name().map(str::to_string);
        if name.is_some() || field.name() == Some("image") {
            let bytes = field.bytes().await.map_err(|e| too_large(e.body_text()))?;
            return Ok((bytes, name));
        }
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "multipart form without a file (send the image as a file field, e.g. 'image')",
    ))
}

/// Admission, then the upload: an overloaded server answers 503 without decoding anything.
async fn admitted_upload(
    st: &Arc<AppState>,
    req: Request,
) -> Result<(tokio::sync::OwnedSemaphorePermit, Bytes, Option<String>), ApiError> {
    let Ok(permit) = st.admission.clone().try_acquire_owned() else {
        // Read (not decode) the upload before answering: a client still sending its body
        // would otherwise see a broken pipe instead of the 503.
        let _ = image_bytes(req).await;
        return Err(ApiError::busy("the inference queue"));
    };
    let (bytes, name) = image_bytes(req).await?;
    if bytes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty body: send the image bytes",
        ));
    }
    Ok((permit, bytes, name))
}

/// Decode and preprocess on the blocking pool, then both models through the shared queue.
async fn infer(st: &Arc<AppState>, bytes: Bytes) -> Result<(Prepared, Inferred), ApiError> {
    let st2 = st.clone();
    let mut prepared = tokio::task::spawn_blocking(move || {
        engine::prepare(
            &bytes,
            st2.cls_pre.as_ref(),
            st2.fea_pre.as_ref(),
            st2.max_pixels,
        )
    })
    .await
    .map_err(internal)??;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = Job {
        cls: prepared.cls.take(),
        fea: prepared.fea.take(),
        enqueued: Instant::now(),
        reply: tx,
    };
    match st.engine.submit(job) {
        Submit::Queued => {}
        Submit::Full => return Err(ApiError::busy("the inference queue")),
        Submit::Stopped => return Err(internal("the inference thread stopped")),
    }
    let out = rx
        .await
        .map_err(|_| internal("no answer from inference"))?
        .map_err(internal)?;
    Ok((prepared, out))
}

fn assessment(st: &AppState, out: &Inferred) -> Assessment {
    let q = out.fea.as_deref().map(suspicious);
    assess(
        &st.classes,
        out.cls.as_deref(),
        q.as_ref(),
        st.fusion.as_ref().map(|f| &f.0),
    )
}

/// The competition's feature answers (label, probability) with the lexicon's words.
fn features_json(p: &[f32]) -> serde_json::Map<String, Value> {
    FEATURE_NAMES
        .iter()
        .enumerate()
        .map(|(t, f)| {
            let q = p[2 * t + 1];
            let d = &DESCRIPTORS[t];
            let label = argmax(&p[2 * t..2 * t + 2]);
            (
                f.to_string(),
                json!({
                    "label": label,
                    "probability": q,
                    "descriptor": d.lexicon,
                    "finding": if label == 1 { d.present } else { d.absent },
                }),
            )
        })
        .collect()
}

pub(super) fn models_json(st: &AppState) -> Value {
    json!({
        "birads": st.sources[0],
        "features": st.sources[1],
        "fusion": st.fusion.as_ref().map(|f| &f.1),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

pub(super) async fn predict(
    State(st): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    let (_admitted, bytes, name) = admitted_upload(&st, req).await?;
    let (prepared, out) = infer(&st, bytes).await?;
    let a = assessment(&st, &out);
    let c = prepared.crop;
    Ok(Json(json!({
        "name": name,
        "image": { "width": prepared.width, "height": prepared.height },
        "crop_box": { "x0": c.x0, "y0": c.y0, "x1": c.x1, "y1": c.y1 },
        "birads": a.birads.as_ref().map(|g| g.to_json()),
        "fused": a.fused.as_ref().map(|g| g.to_json()),
        "features": out.fea.as_deref().map(features_json),
        "descriptors": a.descriptors,
        "flags": a.flags,
        "models": models_json(&st),
        "batch_size": out.batch,
        "timings_ms": {
            "decode": prepared.decode_ms,
            "preprocess": prepared.preprocess_ms,
            "queue": out.queue_ms,
            "inference": out.inference_ms,
            "total": engine::ms(t0),
        },
    }))
    .into_response())
}

/// The decoded image as PNG: what the server sees, for uploads the browser cannot draw.
pub(super) async fn preview(
    State(st): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let (_admitted, bytes, _) = admitted_upload(&st, req).await?;
    let max = st.max_pixels;
    let png = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        Ok(png(&engine::decode_within(&bytes, max)?))
    })
    .await
    .map_err(internal)??;
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}

#[derive(Deserialize)]
pub(super) struct ExplainQuery {
    /// A class name (`4A`) or a feature (`shape`); default: the predicted class, or all four
    /// features for the feature model.
    target: Option<String>,
    /// `cls` or `fea` (default: `fea` when the target is a feature, else `cls` if loaded).
    model: Option<String>,
}

/// The target and model a query asks for (`None`: the model's default targets).
fn resolve(st: &AppState, q: &ExplainQuery) -> Result<(Option<Target>, bool), ApiError> {
    let classes = ClassList(st.classes.clone());
    let target = match &q.target {
        Some(t) => Some(Target::parse(t, &classes).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "target '{t}' is neither a class ({}) nor a feature ({})",
                    st.classes.join(", "),
                    FEATURE_NAMES.join(", ")
                ),
            )
        })?),
        None => None,
    };
    let use_fea = match q.model.as_deref() {
        Some("fea") => true,
        Some("cls") => false,
        Some(m) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("model '{m}': use cls or fea"),
            ))
        }
        None => matches!(target, Some(Target::Feature(_))) || st.explain_cls.is_none(),
    };
    let loaded = if use_fea {
        st.explain_fea.is_some()
    } else {
        st.explain_cls.is_some()
    };
    if !loaded {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "that model is not loaded on this server",
        ));
    }
    Ok((target, use_fea))
}

/// Grad-CAM on the decoded image (blocking: call from the blocking pool).
fn grad_cam(
    st: &AppState,
    img: &image::RgbImage,
    target: Option<Target>,
    use_fea: bool,
) -> Result<(Explanation, ClassList), ApiError> {
    let slot = if use_fea {
        st.explain_fea.as_ref()
    } else {
        st.explain_cls.as_ref()
    };
    let loaded = slot
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "that model is not loaded"))?
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let targets: Vec<Target> = match target {
        Some(t) => vec![t],
        None if use_fea => (0..4).map(Target::Feature).collect(),
        None => Vec::new(),
    };
    let classes = ClassList(loaded.classes.clone());
    let ex = explain(
        &loaded.model,
        &loaded.preprocess,
        img,
        None,
        &targets,
        &Default::default(),
    )
    .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok((ex, classes))
}

fn caption(ex: &Explanation, classes: &ClassList, use_fea: bool) -> String {
    if use_fea {
        return FEATURE_NAMES
            .iter()
            .zip(&ex.probabilities)
            .map(|(f, p)| format!("{f} {p:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
    }
    let best = argmax(&ex.probabilities);
    format!(
        "BI-RADS {} (p {:.2})",
        classes.name(best).unwrap_or("?"),
        ex.probabilities[best]
    )
}

pub(super) async fn explain_handler(
    State(st): State<Arc<AppState>>,
    Query(q): Query<ExplainQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let (bytes, _) = image_bytes(req).await?;
    let (target, use_fea) = resolve(&st, &q)?;
    let permit = st
        .explain_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::busy("Grad-CAM"))?;
    let st2 = st.clone();
    let png = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        let _permit = permit;
        let img = engine::decode_within(&bytes, st2.max_pixels)?;
        let (ex, classes) = grad_cam(&st2, &img, target, use_fea)?;
        let fig = figure(&ex, &classes, &caption(&ex, &classes, use_fea)).map_err(internal)?;
        Ok(png(&fig))
    })
    .await
    .map_err(internal)??;
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}

/// The one-page report of an upload (`?target=` as for `/v1/explain` picks the heatmap).
pub(super) async fn report(
    State(st): State<Arc<AppState>>,
    Query(q): Query<ExplainQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let (_admitted, bytes, name) = admitted_upload(&st, req).await?;
    // Without a model to explain, the report has no heatmap; a bad target is still an error.
    let cam = match resolve(&st, &q) {
        Ok(t) => Some(t),
        Err(e) if e.status == StatusCode::NOT_FOUND && q.target.is_none() => None,
        Err(e) => return Err(e),
    };
    let (prepared, out) = infer(&st, bytes).await?;
    let a = assessment(&st, &out);
    let permit = match cam {
        Some(_) => Some(
            st.explain_slots
                .clone()
                .try_acquire_owned()
                .map_err(|_| ApiError::busy("Grad-CAM"))?,
        ),
        None => None,
    };
    let st2 = st.clone();
    let html = tokio::task::spawn_blocking(move || -> Result<String, ApiError> {
        let _permit = permit;
        let heatmaps = match cam {
            Some((target, use_fea)) => {
                let (ex, classes) = grad_cam(&st2, &prepared.image, target, use_fea)?;
                captioned_overlays(&ex, &classes)
            }
            None => Vec::new(),
        };
        let fusion = st2.fusion.as_ref().map(|f| f.1.clone());
        let models = ["BI-RADS model", "feature model", "fusion"]
            .iter()
            .zip(st2.sources.iter().cloned().chain([fusion]))
            .filter_map(|(role, src)| Some((role.to_string(), src?)))
            .collect();
        Ok(lesion_page(&LesionReport {
            name: name.as_deref().unwrap_or("upload"),
            image: &prepared.image,
            crop: Some(prepared.crop),
            heatmaps,
            assessment: &a,
            models,
        }))
    })
    .await
    .map_err(internal)??;
    Ok(Html(html).into_response())
}
