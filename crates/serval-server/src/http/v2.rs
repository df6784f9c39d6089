//! The Open Inference Protocol (KServe V2) over REST: health, server and model metadata,
//! readiness, inference (JSON and the binary tensor extension) and the repository index. Every
//! url `/serve` answers is a V2 model: name = endpoint name, version = endpoint version; without
//! a version, the same resolution as `/serve`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::http::body::{self, KeptRequest, RestRequest};
use crate::http::reply::{challenge_or_retry, streamed_json};
use crate::models::{EXTENSIONS, IndexItem, ModelMetadata, index, is_ready, metadata};
use crate::offload;
use crate::pipeline::shadow::{Replay, Replayed};
use crate::pipeline::{
    Budget, Decode, Decoded, Endpoint, Error, Input, Output, Protocol, Reservation,
};
use crate::state::AppState;
use crate::wire::v2_json;

/// A V2 error: the pipeline's error with V2's status codes and `{"error": ...}` body.
pub struct V2Error(pub Error);

impl From<Error> for V2Error {
    fn from(e: Error) -> Self {
        V2Error(e)
    }
}

/// The V2 status of each error ([`Error::http_status`]).
pub fn status(error: &Error) -> StatusCode {
    StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            tracing::warn!(kind = self.0.kind(), "{}", self.0);
        }
        let error = self.0.for_client();
        let mut response =
            (status(&error), Json(json!({"error": error.to_string()}))).into_response();
        challenge_or_retry(&mut response);
        response
    }
}

/// Inference (the front door keys and counts them).
pub fn inference_routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v2/models/{model}/infer", post(infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(versioned_infer),
        )
}

/// Liveness and readiness: always open.
pub fn health_routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
}

/// Model metadata and readiness (a key for the `{model}` when keys are required).
pub fn model_routes() -> axum::Router<AppState> {
    axum::Router::new()
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
}

/// Server metadata and the repository index (a key when keys are required).
pub fn server_routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/repository/index", post(repository_index))
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "serval",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

/// 200 `{"live": true}` while the process runs: Triton's clients read the status code, KServe's
/// the body.
async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

/// 200 `{"ready": true}` once the first load pass has finished, else 400 `{"ready": false}` (the
/// codes of Triton and MLServer, the body of KServe).
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let ready = state.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, Json(json!({"ready": ready})))
}

async fn model_metadata(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<ModelMetadata>, V2Error> {
    Ok(Json(metadata(&state.door.table(), &model, None)?))
}

async fn versioned_metadata(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<ModelMetadata>, V2Error> {
    Ok(Json(metadata(&state.door.table(), &model, Some(&version))?))
}

/// 200 `{"name": …, "ready": true}`, or 400 with `"ready": false` (KServe's body, Triton's codes).
fn ready_status(model: &str, ready: Result<bool, Error>) -> Response {
    match ready {
        Ok(ready) => {
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            };
            (status, Json(json!({"name": model, "ready": ready}))).into_response()
        }
        Err(e) => V2Error(e).into_response(),
    }
}

async fn model_ready(State(state): State<AppState>, Path(model): Path<String>) -> Response {
    ready_status(&model, is_ready(&state.door.table(), &model, None))
}

async fn versioned_ready(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    ready_status(
        &model,
        is_ready(&state.door.table(), &model, Some(&version)),
    )
}

async fn infer(
    State(state): State<AppState>,
    Path(model): Path<String>,
    request: Request,
) -> Response {
    run_infer(state, model, None, request).await
}

async fn versioned_infer(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    request: Request,
) -> Response {
    run_infer(state, model, Some(version), request).await
}

/// A V2 REST inference body: JSON, or a JSON header followed by binary tensors.
struct V2Body(RestRequest);

/// What a V2 request keeps for its reply: its id and which outputs go back in binary form.
struct ReplyAs {
    id: Option<String>,
    binary: v2_json::BinaryOutputs,
}

impl Decode for V2Body {
    type Extra = ReplyAs;

    fn request_id(extra: &ReplyAs) -> Option<String> {
        extra.id.clone()
    }

    /// A header or the query (a body field is clearml's: V2 requests fall back to the split).
    async fn sticky_key(
        &mut self,
        source: &serval_store::Sticky,
        _budget: &Budget,
        memory: Reservation,
    ) -> Result<(Option<Vec<u8>>, Reservation), Error> {
        Ok((self.0.sticky_key(source), memory))
    }

    async fn replay(
        &mut self,
        budget: &Budget,
        memory: Reservation,
    ) -> Result<(Option<Arc<dyn Replay>>, Reservation), Error> {
        let (kept, memory) = self.0.kept(budget.body_limit, memory).await?;
        Ok((Some(Arc::new(KeptV2(kept))), memory))
    }

    async fn decode(
        self,
        endpoint: &Arc<Endpoint>,
        budget: &Budget,
        memory: Reservation,
    ) -> Result<Decoded<ReplyAs>, Error> {
        let header_length = self
            .0
            .headers
            .get(v2_json::HEADER_LENGTH)
            .map(|v| v.to_str().unwrap_or("invalid").to_string());
        let (bytes, mut memory) = self.0.read(budget.body_limit, memory).await?;
        let max_values = budget.max_values;
        let to_python = endpoint.runner.pool().is_some();
        let (decoded, memory) = offload::if_large(bytes.len(), "decoding", move || {
            let decoded = v2_json::decode(
                &bytes,
                header_length.as_deref(),
                max_values,
                &mut memory,
                to_python,
            )?;
            Ok((decoded, memory))
        })
        .await?;
        let input = Input::Tensors {
            inputs: decoded.inputs,
            outputs: decoded.outputs,
            parameters: decoded.parameters,
        };
        let extra = ReplyAs {
            id: decoded.id,
            binary: decoded.binary,
        };
        Ok(Decoded {
            input,
            extra,
            memory,
        })
    }
}

/// A V2 REST request kept for a shadow's copy.
struct KeptV2(KeptRequest);

impl Replay for KeptV2 {
    fn decode<'a>(
        &'a self,
        endpoint: &'a Arc<Endpoint>,
        budget: &'a Budget,
        memory: Reservation,
    ) -> Replayed<'a> {
        Box::pin(async move {
            let decoded = V2Body(self.0.request())
                .decode(endpoint, budget, memory)
                .await?;
            Ok((decoded.input, decoded.memory))
        })
    }

    fn size(&self) -> usize {
        self.0.bytes.len()
    }

    fn text(&self, limit: usize) -> String {
        self.0.text(limit)
    }
}

async fn run_infer(
    state: AppState,
    model: String,
    version: Option<String>,
    mut request: Request,
) -> Response {
    let watch = body::BodyWatch::of(&mut request);
    match infer_request(state, model, version, request).await {
        Ok(response) => response,
        Err(error) => watch.answer(error.into_response()),
    }
}

async fn infer_request(
    state: AppState,
    model: String,
    version: Option<String>,
    request: Request,
) -> Result<Response, V2Error> {
    let request = RestRequest::from(request);
    let admitted = state.door.admit(Protocol::V2Rest, request.credential())?;
    let memory = admitted.reservation();
    // The model is resolved before the body is read: an unknown model is a 404 whatever it holds.
    let served = admitted
        .serve(
            &model,
            version.as_deref(),
            state.config.request_timeout,
            memory,
            V2Body(request),
        )
        .await?;
    let outputs = match served.output {
        Output::Tensors(outputs) => outputs,
        Output::Body(_) | Output::Json(_) | Output::Text(_) => {
            return Err(Error::Internal("unexpected JSON reply".into()).into());
        }
    };
    let size = v2_json::encoded_size(&outputs, &served.extra.binary);
    let mut memory = served.memory;
    // A large JSON reply is written while it is sent; a smaller or binary one is charged before
    // it is written whole.
    let outputs = if size >= STREAM_FROM {
        match v2_json::ReplyText::new(
            &model,
            served.endpoint.version.as_deref(),
            served.extra.id.as_deref(),
            outputs,
            &served.extra.binary,
        ) {
            Ok(text) => return Ok(streamed_json(text, memory)),
            Err(outputs) => outputs,
        }
    } else {
        outputs
    };
    memory.charge(size)?;
    let encoded = v2_json::encode(
        &model,
        served.endpoint.version.as_deref(),
        served.extra.id.as_deref(),
        &outputs,
        &served.extra.binary,
    );
    let mut response = encoded.body.into_response();
    let response_headers = response.headers_mut();
    match encoded.header_length {
        Some(n) => {
            response_headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response_headers.insert(v2_json::HEADER_LENGTH, HeaderValue::from(n));
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

/// Replies whose JSON text would be at least this large (bytes, estimated) are written while
/// they are sent.
const STREAM_FROM: usize = 1 << 20;

/// The largest body `POST /v2/repository/index` reads (it holds one flag).
const INDEX_BODY_LIMIT: usize = 64 * 1024;

/// `POST /v2/repository/index` with an optional `{"ready": bool}` body, read within
/// `--request-timeout`.
async fn repository_index(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Vec<IndexItem>>, V2Error> {
    let timeout = state.config.request_timeout;
    let read = body::read(&headers, body, INDEX_BODY_LIMIT, state.door.reservation());
    let (bytes, _) = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| Error::Timeout(timeout))??;
    let ready_only = if bytes.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        let request: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::BadRequest(format!("the body is not JSON: {e}")))?;
        match request.get("ready") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(
                    Error::BadRequest(format!("'ready' must be a boolean, got {other}")).into(),
                );
            }
        }
    };
    let key = caller.and_then(|axum::Extension(Caller(key))| key);
    Ok(Json(index(&state.door.table(), ready_only, key.as_ref())))
}
