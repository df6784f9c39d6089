//! `POST /serve/{endpoint}[/{version}]`: clearml-serving's REST contract.
//!
//! Body rules: `Content-Encoding: gzip` (or `x-gzip`, `deflate`, any case) is decoded first;
//! no Content-Type, `application/json` or `application/*+json` is parsed as JSON (objects *and*
//! arrays — clearml rejects arrays); a form-urlencoded body that is a JSON object or list (what
//! `curl -d` sends) is JSON too; other content types are raw bytes; an empty body is `null`.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use serde_json::{Value, json};
use serval_core::{reply_from_outputs, request_to_inputs};
use serval_engine::{Engine, NamedOutput, NamedTensor};
use tokio::time::Instant;

use crate::AppState;
use crate::errors::ServeError;
use crate::table::LoadedEndpoint;

/// A request body after decoding.
pub enum Payload {
    Json(Value),
    Bytes(Bytes),
}

fn decompress(encoding: &str, raw: &[u8], limit: usize) -> Result<Vec<u8>, ServeError> {
    let mut out = Vec::new();
    let reader: Box<dyn Read + '_> = match encoding {
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        // HTTP "deflate" is zlib-wrapped; some clients send raw deflate.
        "deflate" if raw.first().is_some_and(|b| b & 0x0f == 8) => {
            Box::new(flate2::read::ZlibDecoder::new(raw))
        }
        "deflate" => Box::new(flate2::read::DeflateDecoder::new(raw)),
        _ => return Ok(raw.to_vec()),
    };
    // Read one byte past the limit to notice a decompression bomb without inflating it.
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| ServeError::BadBody)?;
    if out.len() > limit {
        return Err(ServeError::TooLarge(limit));
    }
    Ok(out)
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let mime = content_type
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime.is_empty()
        || mime == "application/json"
        || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// FastAPI's detail for invalid JSON: where it broke (byte offset) and why.
fn json_error(text: &[u8], error: &serde_json::Error) -> ServeError {
    let offset = text
        .split(|b| *b == b'\n')
        .take(error.line().saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum::<usize>()
        + error.column().saturating_sub(1);
    ServeError::InvalidJson(json!([{
        "type": "json_invalid",
        "loc": ["body", offset],
        "msg": "JSON decode error",
        "input": {},
        "ctx": {"error": error.to_string()},
    }]))
}

/// Reads and decodes a request body.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Payload, ServeError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ServeError::TooLarge(limit));
    }
    let raw = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ServeError::TooLarge(limit)
        } else {
            ServeError::BadBody
        }
    })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let decoded: Bytes = match encoding.as_str() {
        "" | "identity" => raw,
        "gzip" | "x-gzip" | "deflate" => Bytes::from(decompress(&encoding, &raw, limit)?),
        _ => return Err(ServeError::BadBody),
    };
    if !is_json(headers) {
        // `curl -d '{...}'` without a Content-Type sends form-urlencoded: a body that is a JSON
        // object or list is read as JSON (clearml-serving would hand the preprocess code bytes).
        if is_form(headers)
            && decoded
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'{' || *b == b'[')
            && let Ok(value) = serde_json::from_slice(&decoded)
        {
            return Ok(Payload::Json(value));
        }
        return Ok(Payload::Bytes(decoded));
    }
    if decoded.iter().all(u8::is_ascii_whitespace) {
        return Ok(Payload::Json(Value::Null));
    }
    serde_json::from_slice(&decoded)
        .map(Payload::Json)
        .map_err(|e| json_error(&decoded, &e))
}

/// Tree models answer small batches in microseconds: run them inline. Anything else runs on a
/// blocking thread so a slow model never stalls the async workers.
fn runs_inline(endpoint: &LoadedEndpoint, rows: usize) -> bool {
    matches!(
        endpoint.kind,
        serval_store::EngineKind::Xgboost | serval_store::EngineKind::Lightgbm
    ) && rows <= 64
}

/// Runs a native model (inline or on a blocking thread, see [`runs_inline`]), recording the
/// inference stage.
pub(crate) async fn infer_native(
    endpoint: &LoadedEndpoint,
    engine: Arc<dyn Engine>,
    inputs: Vec<NamedTensor>,
) -> Result<Vec<NamedOutput>, ServeError> {
    let rows = inputs
        .first()
        .and_then(|i| i.tensor.shape().first().copied())
        .unwrap_or(1);
    let start = Instant::now();
    let outputs = if runs_inline(endpoint, rows) {
        engine.infer(&inputs)?
    } else {
        tokio::task::spawn_blocking(move || engine.infer(&inputs))
            .await
            .map_err(|e| ServeError::Internal(format!("inference task failed: {e}")))??
    };
    if let Some(metrics) = &endpoint.metrics {
        metrics.stage(STAGE_INFERENCE, start.elapsed().as_secs_f64());
    }
    Ok(outputs)
}

/// Index of the inference stage in [`crate::metrics::STAGES`].
pub(crate) const STAGE_INFERENCE: usize = 2;

/// What serving a request produced, besides the reply.
#[derive(Default)]
pub(crate) struct Served {
    pub value: Value,
    /// What `collect_custom_statistics_fn` collected (Python endpoints, sampled requests).
    pub stats: Option<serde_json::Map<String, Value>>,
}

/// Serves one request on a resolved endpoint (HTTP requests and `send_request` calls alike),
/// recording its metrics: outcome and duration always, clearml variables when sampled.
pub(crate) async fn run(
    endpoint: Arc<LoadedEndpoint>,
    payload: Payload,
    deadline: Instant,
) -> Result<Value, ServeError> {
    let start = Instant::now();
    let monitor = endpoint.monitor.load_full();
    let sampled = monitor.as_ref().is_some_and(|m| m.sample(fastrand::f64()));
    let body = match (&payload, &monitor) {
        (Payload::Json(value), Some(m)) if sampled => m.body_values(value),
        _ => Vec::new(),
    };
    // Dropped unfinished = cancelled by the request timeout: counted as a timeout.
    struct Unfinished<'a>(Option<&'a LoadedEndpoint>, Instant);
    impl Drop for Unfinished<'_> {
        fn drop(&mut self) {
            if let Some(metrics) = self.0.and_then(|e| e.metrics.as_ref()) {
                metrics.finished(self.1.elapsed(), Err("timeout"));
            }
        }
    }
    let mut unfinished = Unfinished(Some(&endpoint), start);
    let result = execute(&endpoint, payload, deadline, sampled).await;
    unfinished.0 = None;
    let took = start.elapsed();
    if let Some(metrics) = &endpoint.metrics {
        metrics.finished(took, result.as_ref().map(|_| ()).map_err(ServeError::kind));
    }
    let served = result?;
    if let (true, Some(monitor)) = (sampled, monitor) {
        monitor.record(
            took.as_secs_f64(),
            &body,
            &served.value,
            served.stats.as_ref(),
        );
    }
    Ok(served.value)
}

async fn execute(
    endpoint: &Arc<LoadedEndpoint>,
    payload: Payload,
    deadline: Instant,
    sampled: bool,
) -> Result<Served, ServeError> {
    if endpoint.python.is_some() {
        return crate::python::run(endpoint, payload, deadline, sampled).await;
    }
    let Some(engine) = endpoint.engine.clone() else {
        return Err(ServeError::Internal(format!(
            "endpoint '{}' has nothing to run",
            endpoint.url
        )));
    };
    let body = match payload {
        Payload::Json(value) => value,
        // Native models only take JSON: read it whatever the Content-Type says (curl -d sends
        // form-urlencoded by default).
        Payload::Bytes(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            ServeError::InvalidInput(format!(
                "endpoint '{}' runs a native model and takes a JSON body; this body is not JSON ({e})",
                endpoint.url
            ))
        })?,
    };
    let meta = engine.metadata();
    let inputs = request_to_inputs(&body, meta, &endpoint.input_names)?;
    let outputs = infer_native(endpoint, engine.clone(), inputs).await?;
    Ok(Served {
        value: reply_from_outputs(meta, &outputs)?,
        stats: None,
    })
}

async fn serve(
    state: AppState,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ServeError> {
    let version = version.filter(|v| !v.is_empty());
    let deadline = Instant::now() + state.config.request_timeout;
    let _in_flight = state.metrics.as_ref().map(|m| m.in_flight());
    let routed = std::sync::atomic::AtomicBool::new(false);
    let work = async {
        let payload = read_body(&headers, body, state.config.body_limit).await?;
        let endpoint = state
            .table
            .load()
            .resolve(&name, version.as_deref(), fastrand::f64())?;
        routed.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok::<_, ServeError>(run(endpoint, payload, deadline).await)
    };
    let result = match tokio::time::timeout(state.config.request_timeout, work).await {
        // Routed: `run` recorded it.
        Ok(Ok(served)) => return served.map(Json),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(ServeError::Timeout(state.config.request_timeout)),
    };
    if let (Err(error), Some(metrics)) = (&result, &state.metrics)
        && !routed.load(std::sync::atomic::Ordering::Relaxed)
    {
        metrics.unrouted(error.kind());
    }
    result
}

pub async fn unversioned(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ServeError> {
    serve(state, name, query.get("version").cloned(), headers, body).await
}

pub async fn versioned(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ServeError> {
    serve(state, name, Some(version), headers, body).await
}
