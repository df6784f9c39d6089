//! `POST /serve/{endpoint}[/{version}]`: clearml-serving's REST contract, and its error texts.
//!
//! Body rules: `Content-Encoding: gzip` (or `x-gzip`, `deflate`, any case) is decoded first;
//! no Content-Type, `application/json` or `application/*+json` is parsed as JSON (objects *and*
//! arrays — clearml rejects arrays); a form-urlencoded body that is a JSON object or list (what
//! `curl -d` sends) is JSON too; other content types are raw bytes; an empty body is `null`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use serval_core::rows::{self, Parsed};
use serval_engine::ModelMetadata;
use serval_store::names::endpoint_url;

use crate::AppState;
use crate::http::body;
use crate::pipeline::{self, Context, Endpoint, Input, Output, Payload, Protocol, Runner};

/// What a `/serve` request can fail with: the pipeline's errors, and a body that is not JSON
/// (reported with FastAPI's validation detail, as clearml-serving does).
pub enum ServeError {
    Pipeline(pipeline::Error),
    InvalidJson(Value),
}

impl From<pipeline::Error> for ServeError {
    fn from(e: pipeline::Error) -> Self {
        ServeError::Pipeline(e)
    }
}

impl ServeError {
    pub fn kind(&self) -> &'static str {
        match self {
            ServeError::Pipeline(e) => e.kind(),
            ServeError::InvalidJson(_) => "invalid_input",
        }
    }
}

/// clearml-serving's status codes and `{"detail": ...}` texts, in one place.
impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        use pipeline::Error as E;
        let error = match self {
            ServeError::InvalidJson(detail) => {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(json!({ "detail": detail })),
                )
                    .into_response();
            }
            ServeError::Pipeline(error) => error,
        };
        if error.is_server_error() {
            tracing::warn!(kind = error.kind(), "{error}");
        }
        let (status, detail) = match &error {
            E::NotFound { name, version } => (
                StatusCode::NOT_FOUND,
                format!(
                    "Error processing request, endpoint was not found: Model inference endpoint '{}' not found",
                    endpoint_url(name, version.as_deref())
                ),
            ),
            E::BadRequest(message) => (StatusCode::BAD_REQUEST, message.clone()),
            // Nobody reads this answer: the client has gone.
            E::Cancelled => (
                StatusCode::BAD_REQUEST,
                super::body::UNDECODABLE.to_string(),
            ),
            E::InvalidInput(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Error [<class 'ValueError'>] processing request: {message}"),
            ),
            E::TooLarge(_) | E::TooManyValues(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, error.to_string())
            }
            E::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, error.to_string()),
            E::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, error.to_string()),
            E::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
            // clearml's texts: ValueError → 422, anything else → 500 with two spaces.
            E::UserCode {
                class,
                message,
                invalid: true,
            } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Error [{class}] processing request: {message}"),
            ),
            E::UserCode { class, message, .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Error  [{class}] processing request: {message}"),
            ),
            E::Worker(message) => (StatusCode::INTERNAL_SERVER_ERROR, message.clone()),
            E::Upstream(message) => (StatusCode::BAD_GATEWAY, message.clone()),
            E::Internal(message) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Error  [<class 'RuntimeError'>] processing request: {message}"),
            ),
        };
        let mut response = (status, Json(json!({ "detail": detail }))).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(super::RETRY_AFTER_SECONDS),
            );
        }
        response
    }
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

/// A decoded body as clearml's routes see it (see the module docs). `rows_for` is the model of a
/// native endpoint with a tabular input: a JSON body of rows for it is read straight into its
/// input tensor, never into a `serde_json::Value` tree.
fn payload(
    headers: &HeaderMap,
    decoded: Bytes,
    max_values: usize,
    rows_for: Option<&ModelMetadata>,
) -> Result<Payload, ServeError> {
    let json = if is_json(headers) {
        if decoded.iter().all(u8::is_ascii_whitespace) {
            return Ok(Payload::Json(Value::Null));
        }
        body::check_values(&decoded, max_values)?;
        true
    } else {
        // `curl -d '{...}'` without a Content-Type sends form-urlencoded: a body that is a JSON
        // object or list is read as JSON (clearml-serving would hand the preprocess code bytes).
        is_form(headers)
            && decoded
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'{' || *b == b'[')
            && body::check_values(&decoded, max_values).is_ok()
    };
    if json && let Some(meta) = rows_for {
        match rows::parse_rows(&decoded, meta) {
            Parsed::Rows(tensor) => return Ok(Payload::Rows(tensor)),
            Parsed::Invalid(message) => return Ok(Payload::InvalidRows(message)),
            Parsed::Syntax(error) if is_json(headers) => return Err(json_error(&decoded, &error)),
            Parsed::Syntax(_) => return Ok(Payload::Bytes(decoded)),
            Parsed::Other => {}
        }
    }
    if !is_json(headers) {
        if json && let Ok(value) = serde_json::from_slice(&decoded) {
            return Ok(Payload::Json(value));
        }
        return Ok(Payload::Bytes(decoded));
    }
    serde_json::from_slice(&decoded)
        .map(Payload::Json)
        .map_err(|e| json_error(&decoded, &e))
}

/// The model whose rows a request body can be parsed for: a native endpoint with a tabular input
/// whose metric rules do not read the body's `instances` key (they see a tree).
fn rows_model(endpoint: &Endpoint) -> Option<Arc<ModelMetadata>> {
    let Runner::Native(model) = &endpoint.runner else {
        return None;
    };
    rows::tabular_input(model.metadata())?;
    let monitor = endpoint.monitor.load();
    if monitor.as_ref().is_some_and(|m| m.reads("instances")) {
        return None;
    }
    Some(model.metadata_arc())
}

async fn serve(
    state: AppState,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ServeError> {
    let version = version.filter(|v| !v.is_empty());
    let ctx = Context::new(Protocol::Clearml, state.config.request_timeout);
    let _in_flight = state.metrics.as_ref().map(|m| m.in_flight());
    let routed = async {
        // Resolved first so the body can be parsed for the model; a body that is not JSON is
        // still reported before an unknown endpoint, as clearml-serving does.
        let endpoint = state
            .table
            .load()
            .resolve(&name, version.as_deref(), fastrand::f64());
        let decoded = body::read(&headers, body, state.config.body_limit).await?;
        let max_values = state.config.max_values;
        let headers = headers.clone();
        let model = endpoint.as_ref().ok().and_then(|e| rows_model(e));
        let payload = body::offload(decoded.len(), move || {
            payload(&headers, decoded, max_values, model.as_deref())
        })
        .await?;
        Ok::<_, ServeError>((endpoint?, payload))
    };
    let routed = match tokio::time::timeout_at(ctx.deadline, routed).await {
        Ok(routed) => routed,
        Err(_) => Err(pipeline::Error::Timeout(ctx.timeout).into()),
    };
    let (endpoint, payload) = match routed {
        Ok(routed) => routed,
        Err(error) => {
            if let Some(metrics) = &state.metrics {
                metrics.unrouted(Protocol::Clearml, error.kind());
            }
            return Err(error);
        }
    };
    match pipeline::run(&endpoint, Input::Body(payload), ctx).await? {
        Output::Body(value) => Ok(Json(value)),
        Output::Tensors(_) => {
            Err(pipeline::Error::Internal("unexpected tensor reply".into()).into())
        }
    }
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
