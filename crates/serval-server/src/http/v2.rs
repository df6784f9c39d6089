//! The Open Inference Protocol (KServe V2) over REST: health, server and model metadata,
//! readiness, inference (JSON and the binary tensor extension) and the repository index. Every
//! url `/serve` answers is a V2 model: name = endpoint name, version = endpoint version; without
//! a version, the same resolution as `/serve`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::AppState;
use crate::http::{RETRY_AFTER_SECONDS, body, v2_codec};
use crate::models::{self, EXTENSIONS, IndexItem, ModelMetadata, index, is_ready, metadata};
use crate::pipeline::{self, Context, Input, Output, Protocol};

/// A V2 error: the pipeline's error with V2's status codes and `{"error": ...}` body.
pub struct V2Error(pipeline::Error);

impl From<pipeline::Error> for V2Error {
    fn from(e: pipeline::Error) -> Self {
        V2Error(e)
    }
}

/// The V2 status of each pipeline error, in one place.
pub fn status(error: &pipeline::Error) -> StatusCode {
    use pipeline::Error as E;
    match error {
        E::NotFound { .. } => StatusCode::NOT_FOUND,
        E::BadRequest(_) | E::InvalidInput(_) | E::Cancelled => StatusCode::BAD_REQUEST,
        E::UserCode { invalid: true, .. } => StatusCode::UNPROCESSABLE_ENTITY,
        E::TooLarge(_) | E::TooManyValues(_) => StatusCode::PAYLOAD_TOO_LARGE,
        E::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        E::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
        E::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        E::UserCode { .. } | E::Worker(_) | E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        E::Upstream(_) => StatusCode::BAD_GATEWAY,
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            tracing::warn!(kind = self.0.kind(), "{}", self.0);
        }
        let mut response =
            (status(&self.0), Json(json!({"error": self.0.to_string()}))).into_response();
        if matches!(self.0, pipeline::Error::Overloaded(_)) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

/// The V2 routes, merged into the server's router.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(versioned_metadata),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(versioned_ready),
        )
        .route("/v2/models/{model}/infer", post(infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(versioned_infer),
        )
        .route("/v2/repository/index", post(repository_index))
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "serval",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

/// 200 while the process runs (the status code is the answer; the body is empty).
async fn live() -> StatusCode {
    StatusCode::OK
}

/// 200 once the first load pass has finished, else 400 (as Triton and MLServer).
async fn ready(State(state): State<AppState>) -> StatusCode {
    if state.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}

async fn model_metadata(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<ModelMetadata>, V2Error> {
    Ok(Json(metadata(&state, &model, None)?))
}

async fn versioned_metadata(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<ModelMetadata>, V2Error> {
    Ok(Json(metadata(&state, &model, Some(&version))?))
}

fn ready_status(ready: Result<bool, pipeline::Error>) -> Response {
    match ready {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => StatusCode::BAD_REQUEST.into_response(),
        Err(e) => V2Error(e).into_response(),
    }
}

async fn model_ready(State(state): State<AppState>, Path(model): Path<String>) -> Response {
    ready_status(is_ready(&state, &model, None))
}

async fn versioned_ready(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    ready_status(is_ready(&state, &model, Some(&version)))
}

async fn infer(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    run_infer(state, model, None, headers, body).await
}

async fn versioned_infer(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    run_infer(state, model, Some(version), headers, body).await
}

async fn run_infer(
    state: AppState,
    model: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    let ctx = Context::new(Protocol::V2Rest, state.config.request_timeout);
    let _in_flight = state.metrics.as_ref().map(|m| m.in_flight());
    // The model is resolved before the body is read: an unknown model is a 404 whatever it holds.
    let endpoint = match models::resolve(&state, &model, version.as_deref()) {
        Ok(endpoint) => endpoint,
        Err(error) => {
            if let Some(metrics) = &state.metrics {
                metrics.unrouted(Protocol::V2Rest, error.kind());
            }
            return Err(error.into());
        }
    };
    let decoded = async {
        let bytes = body::read(&headers, body, state.config.body_limit).await?;
        let header_length = headers
            .get(v2_codec::HEADER_LENGTH)
            .map(|v| v.to_str().unwrap_or("invalid").to_string());
        let max_values = state.config.max_values;
        body::offload(bytes.len(), move || {
            v2_codec::decode(&bytes, header_length.as_deref(), max_values)
        })
        .await
    };
    let decoded = match tokio::time::timeout_at(ctx.deadline, decoded).await {
        Ok(decoded) => decoded,
        Err(_) => Err(pipeline::Error::Timeout(ctx.timeout)),
    };
    let decoded = match decoded {
        Ok(decoded) => decoded,
        Err(error) => {
            if let Some(metrics) = &endpoint.metrics {
                metrics.finished(
                    std::time::Duration::ZERO,
                    Protocol::V2Rest,
                    Err(error.failure()),
                );
            }
            return Err(error.into());
        }
    };
    let input = Input::Tensors {
        inputs: decoded.inputs,
        outputs: decoded.outputs,
        parameters: decoded.parameters,
    };
    let outputs = match pipeline::run(&endpoint, input, ctx).await? {
        Output::Tensors(outputs) => outputs,
        Output::Body(_) => {
            return Err(pipeline::Error::Internal("unexpected JSON reply".into()).into());
        }
    };
    let encoded = v2_codec::encode(
        &model,
        endpoint.version.as_deref(),
        decoded.id.as_deref(),
        &outputs,
        &decoded.binary,
    );
    let mut response = encoded.body.into_response();
    let response_headers = response.headers_mut();
    match encoded.header_length {
        Some(n) => {
            response_headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response_headers.insert(v2_codec::HEADER_LENGTH, HeaderValue::from(n));
        }
        None => {
            response_headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
    Ok(response)
}

/// `POST /v2/repository/index` with an optional `{"ready": bool}` body.
async fn repository_index(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Vec<IndexItem>>, V2Error> {
    let bytes = body::read(&headers, body, state.config.body_limit).await?;
    let ready_only = if bytes.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        let request: Value = serde_json::from_slice(&bytes)
            .map_err(|e| pipeline::Error::BadRequest(format!("the body is not JSON: {e}")))?;
        match request.get("ready") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(pipeline::Error::BadRequest(format!(
                    "'ready' must be a boolean, got {other}"
                ))
                .into());
            }
        }
    };
    Ok(Json(index(&state, ready_only)))
}
