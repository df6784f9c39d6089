//! `POST /serve/{endpoint}[/{version}]`: clearml-serving's REST contract, and its error texts.
//!
//! Body rules: `Content-Encoding: gzip` (or `x-gzip`, `deflate`, any case) is decoded first;
//! no Content-Type, `application/json` or `application/*+json` is parsed as JSON (objects *and*
//! arrays — clearml rejects arrays); a form-urlencoded body that is a JSON object or list (what
//! `curl -d` sends) is JSON too; other content types are raw bytes; an empty body is `null`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use serval_core::rows::{self, Parsed};
use serval_engine::ModelMetadata;
use serval_store::names::endpoint_url;

use crate::http::body::{BodyWatch, KeptRequest, RestRequest};
use crate::http::reply::{challenge_or_retry, streamed_json};
use crate::offload;
use crate::pipeline::shadow::{Replay, Replayed};
use crate::pipeline::{
    Budget, Decode, Decoded, Endpoint, Error, Input, Output, Payload, Protocol, Reservation, Runner,
};
use crate::state::AppState;
use crate::wire::encoding::UNDECODABLE;
use crate::wire::json::{TREE_VALUE_BYTES, charge_values, check_values};

/// What one value of a body read straight into a native model's input costs: the input's f32 and
/// the model's outputs (a classifier's label and probabilities per row) — about 8 bytes (4 M rows
/// of 4 features to an XGBoost classifier peak at about 160 MB with their 40 MB body;
/// docs/reliability.md).
const ROW_VALUE_BYTES: usize = 8;

/// clearml-serving's answer to an error: its status codes and `{"detail": ...}` texts, in one
/// place. Also the dialect of the console's API and `/metrics`.
pub struct ClearmlError(pub Error);

impl From<Error> for ClearmlError {
    fn from(e: Error) -> Self {
        ClearmlError(e)
    }
}

impl IntoResponse for ClearmlError {
    fn into_response(self) -> Response {
        use Error as E;
        let error = self.0;
        if error.is_server_error() {
            tracing::warn!(kind = error.kind(), "{error}");
        }
        let error = error.for_client();
        let (status, detail) = match &error {
            E::NotFound { name, version } => (
                StatusCode::NOT_FOUND,
                json!(format!(
                    "Error processing request, endpoint was not found: Model inference endpoint '{}' not found",
                    endpoint_url(name, version.as_deref())
                )),
            ),
            E::Unauthenticated(message) => (StatusCode::UNAUTHORIZED, json!(message)),
            E::Forbidden(message) => (StatusCode::FORBIDDEN, json!(message)),
            // FastAPI's validation detail, as clearml-serving reports a body that is not JSON.
            E::InvalidJson { offset, reason } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!([{
                    "type": "json_invalid",
                    "loc": ["body", offset],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": reason},
                }]),
            ),
            E::BadRequest(message) => (StatusCode::BAD_REQUEST, json!(message)),
            // Nobody reads this answer: the client has gone.
            E::Cancelled => (StatusCode::BAD_REQUEST, json!(UNDECODABLE)),
            E::InvalidInput(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!(format!(
                    "Error [<class 'ValueError'>] processing request: {message}"
                )),
            ),
            E::TooLarge(_) | E::TooManyValues(_) | E::OverBudget { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, json!(error.to_string()))
            }
            E::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, json!(error.to_string())),
            E::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, json!(error.to_string())),
            E::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, json!(error.to_string())),
            // clearml's texts: ValueError → 422, anything else → 500 with two spaces.
            E::UserCode {
                class,
                message,
                invalid: true,
            } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!(format!("Error [{class}] processing request: {message}")),
            ),
            E::UserCode { class, message, .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!(format!("Error  [{class}] processing request: {message}")),
            ),
            E::Worker(message) => (StatusCode::INTERNAL_SERVER_ERROR, json!(message)),
            E::Upstream(message) => (StatusCode::BAD_GATEWAY, json!(message)),
            E::Internal(message) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!(format!(
                    "Error  [<class 'RuntimeError'>] processing request: {message}"
                )),
            ),
        };
        let mut response = (status, Json(json!({ "detail": detail }))).into_response();
        challenge_or_retry(&mut response);
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

/// Where a body that is not JSON broke (byte offset) and why.
fn json_error(text: &[u8], error: &serde_json::Error) -> Error {
    let offset = text
        .split(|b| *b == b'\n')
        .take(error.line().saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum::<usize>()
        + error.column().saturating_sub(1);
    Error::InvalidJson {
        offset,
        reason: error.to_string(),
    }
}

/// A decoded body as clearml's routes see it (see the module docs). `rows` is the model of a
/// native endpoint with a tabular input: a JSON body of rows (or of named features) for it is
/// read straight into its input tensor, never into a `serde_json::Value` tree. `memory` is
/// charged for what the body becomes before it is parsed (and, for `python`, for the frame that
/// carries it to the worker).
fn payload(
    kind: BodyKind,
    decoded: Bytes,
    max_values: usize,
    rows: Option<&RowsFor<'_>>,
    python: bool,
    memory: &mut Reservation,
) -> Result<Payload, Error> {
    if python {
        // The body as the frame's JSON text, then the frame.
        memory.charge(decoded.len().saturating_mul(2))?;
    }
    let json = if kind == BodyKind::Json {
        if decoded.iter().all(u8::is_ascii_whitespace) {
            return Ok(Payload::Json(Value::Null));
        }
        let per_value = if rows.is_some() {
            ROW_VALUE_BYTES
        } else {
            TREE_VALUE_BYTES
        };
        charge_values(&decoded, per_value, max_values, memory)?;
        true
    } else {
        // `curl -d '{...}'` without a Content-Type sends form-urlencoded: a body that is a JSON
        // object or list is read as JSON (clearml-serving would hand the preprocess code bytes).
        kind == BodyKind::Form
            && decoded
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'{' || *b == b'[')
            && check_values(&decoded, max_values).is_ok()
            && charge_values(&decoded, TREE_VALUE_BYTES, max_values, memory).is_ok()
    };
    if json && let Some(rows) = rows {
        match rows::parse_rows(&decoded, rows.meta, rows.named) {
            Parsed::Rows(tensor) => return Ok(Payload::Rows(tensor)),
            Parsed::Invalid(message) => return Ok(Payload::InvalidRows(message)),
            Parsed::Syntax(error) if kind == BodyKind::Json => {
                return Err(json_error(&decoded, &error));
            }
            Parsed::Syntax(_) => return Ok(Payload::Bytes(decoded)),
            Parsed::Other => {}
        }
    }
    if kind != BodyKind::Json {
        if json && let Ok(value) = serde_json::from_slice(&decoded) {
            return Ok(Payload::Json(value));
        }
        return Ok(Payload::Bytes(decoded));
    }
    serde_json::from_slice(&decoded)
        .map(Payload::Json)
        .map_err(|e| json_error(&decoded, &e))
}

/// How a body can be read straight into a native endpoint's tabular input.
struct RowsFor<'a> {
    meta: &'a ModelMetadata,
    /// One object of named features too, ordered with these `--input-name`s (`None` when a
    /// metric rule reads the body's keys: it needs the tree).
    named: Option<&'a [String]>,
}

impl<'a> RowsFor<'a> {
    /// A native endpoint with a tabular input whose metric rules do not read the body's
    /// `instances` key (they see a tree).
    fn of(endpoint: &'a Endpoint) -> Option<RowsFor<'a>> {
        let Runner::Native(model) = &endpoint.runner else {
            return None;
        };
        rows::tabular_input(model.metadata())?;
        let monitor = endpoint.monitor.load();
        if monitor.as_ref().is_some_and(|m| m.reads("instances")) {
            return None;
        }
        let named = monitor
            .as_ref()
            .is_none_or(|m| !m.has_variables())
            .then_some(endpoint.input_names.as_slice());
        Some(RowsFor {
            meta: model.metadata(),
            named,
        })
    }
}

/// What a `/serve` request body is read as, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
    Other,
}

impl BodyKind {
    fn of(headers: &HeaderMap) -> BodyKind {
        if is_json(headers) {
            BodyKind::Json
        } else if is_form(headers) {
            BodyKind::Form
        } else {
            BodyKind::Other
        }
    }
}

/// A `/serve` request's body, read and parsed once the endpoint is known (for a native tabular
/// model, straight into its input tensor), and whether the query asked for an explanation.
struct ClearmlBody(RestRequest, Result<bool, String>);

impl ClearmlBody {
    /// The body as a payload for `endpoint` (`None`: the name resolved to nothing), charged to
    /// `memory`. Small bodies are parsed here, big ones on a blocking thread.
    async fn payload(
        self,
        endpoint: Option<&Arc<Endpoint>>,
        budget: &Budget,
        memory: Reservation,
    ) -> Result<(Payload, Reservation), Error> {
        let kind = BodyKind::of(&self.0.headers);
        let (decoded, mut memory) = self.0.read(budget.body_limit, memory).await?;
        let max_values = budget.max_values;
        let python = endpoint.is_some_and(|e| e.runner.pool().is_some());
        if decoded.len() < offload::OFFLOAD_FROM {
            let rows = endpoint.and_then(|e| RowsFor::of(e));
            let payload = payload(
                kind,
                decoded,
                max_values,
                rows.as_ref(),
                python,
                &mut memory,
            )?;
            return Ok((payload, memory));
        }
        let endpoint = endpoint.cloned();
        offload::run("decoding", move || {
            let rows = endpoint.as_deref().and_then(RowsFor::of);
            let size = decoded.len();
            let parsed = payload(
                kind,
                decoded,
                max_values,
                rows.as_ref(),
                python,
                &mut memory,
            );
            (parsed.map(|payload| (payload, memory)), size)
        })
        .await
    }
}

impl Decode for ClearmlBody {
    type Extra = ();

    /// clearml answers input the model refuses with 422 (FastAPI's validation status).
    fn status(error: &Error) -> u16 {
        match error {
            Error::InvalidJson { .. } | Error::InvalidInput(_) => 422,
            other => other.http_status(),
        }
    }

    async fn decode(
        self,
        endpoint: &Arc<Endpoint>,
        budget: &Budget,
        memory: Reservation,
    ) -> Result<Decoded<()>, Error> {
        let (payload, memory) = self.payload(Some(endpoint), budget, memory).await?;
        Ok(Decoded {
            input: Input::Body(payload),
            extra: (),
            memory,
        })
    }

    /// clearml-serving reads the body first: one that is not JSON (or too large) is reported
    /// before an unknown endpoint.
    async fn precedes(self, budget: &Budget, memory: Reservation) -> Option<Error> {
        self.payload(None, budget, memory).await.err()
    }

    fn explain(&self) -> Result<bool, Error> {
        self.1.clone().map_err(Error::BadRequest)
    }

    async fn sticky_key(
        &mut self,
        source: &serval_store::Sticky,
        budget: &Budget,
        memory: Reservation,
    ) -> Result<(Option<Vec<u8>>, Reservation), Error> {
        let serval_store::Sticky::Field(field) = source else {
            return Ok((self.0.sticky_key(source), memory));
        };
        // The body is read now (and charged), and put back for `decode` (a field-keyed canary's
        // requests count twice).
        let (bytes, memory) = self.0.keep(budget.body_limit, memory).await?;
        // The one field, without a tree of the whole body (which nothing has charged for).
        Ok((crate::wire::json::field_key(&bytes, field), memory))
    }

    async fn replay(
        &mut self,
        budget: &Budget,
        memory: Reservation,
    ) -> Result<(Option<Arc<dyn Replay>>, Reservation), Error> {
        let (kept, memory) = self.0.kept(budget.body_limit, memory).await?;
        Ok((Some(Arc::new(KeptBody(kept))), memory))
    }
}

/// A `/serve` request kept for a shadow's copy.
struct KeptBody(KeptRequest);

impl Replay for KeptBody {
    fn decode<'a>(
        &'a self,
        endpoint: &'a Arc<Endpoint>,
        budget: &'a Budget,
        memory: Reservation,
    ) -> Replayed<'a> {
        Box::pin(async move {
            let body = ClearmlBody(self.0.request(), Ok(false));
            let (payload, memory) = body.payload(Some(endpoint), budget, memory).await?;
            Ok((Input::Body(payload), memory))
        })
    }

    fn size(&self) -> usize {
        self.0.bytes.len()
    }

    fn text(&self, limit: usize) -> String {
        self.0.text(limit)
    }
}

/// `?explain=true` (or `1`): add the prediction's contributions to the reply.
fn explain_query(query: Option<&str>) -> Result<bool, String> {
    let Some(query) = query else {
        return Ok(false);
    };
    match url::form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == "explain") {
        None => Ok(false),
        Some((_, value)) => match value.as_ref() {
            "true" | "1" | "" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(format!(
                "explain={other}: use explain=true or explain=false"
            )),
        },
    }
}

async fn serve(
    state: AppState,
    name: String,
    version: Option<String>,
    mut request: Request,
) -> Response {
    let watch = BodyWatch::of(&mut request);
    match answer(state, name, version, request).await {
        Ok(response) => response,
        Err(error) => watch.answer(error.into_response()),
    }
}

async fn answer(
    state: AppState,
    name: String,
    version: Option<String>,
    request: Request,
) -> Result<Response, ClearmlError> {
    let version = version.filter(|v| !v.is_empty());
    let explain = explain_query(request.uri().query());
    let request = RestRequest::from(request);
    let admitted = state.door.admit(Protocol::Clearml, request.credential())?;
    let memory = admitted.reservation();
    let served = admitted
        .serve(
            &name,
            version.as_deref(),
            state.config.request_timeout,
            memory,
            ClearmlBody(request, explain),
        )
        .await?;
    match served.output {
        Output::Body(value) => Ok(Json(value).into_response()),
        Output::Json(text) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            text,
        )
            .into_response()),
        Output::Text(text) => Ok(streamed_json(text, served.memory)),
        Output::Tensors(_) => Err(Error::Internal("unexpected tensor reply".into()).into()),
    }
}

/// The `version` of a query string (`?version=2`), if any.
fn version_query(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "version")
        .map(|(_, value)| {
            url::form_urlencoded::parse(format!("v={value}").as_bytes())
                .next()
                .map_or_else(String::new, |(_, v)| v.into_owned())
        })
}

pub async fn unversioned(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    serve(state, name, version_query(query.as_deref()), request).await
}

pub async fn versioned(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    request: Request,
) -> Response {
    serve(state, name, Some(version), request).await
}

#[cfg(test)]
mod tests {
    use super::version_query;

    #[test]
    fn the_version_comes_from_the_query() {
        assert_eq!(version_query(None), None);
        assert_eq!(version_query(Some("a=1")), None);
        assert_eq!(version_query(Some("version=2")), Some("2".into()));
        assert_eq!(version_query(Some("a=1&version=1%2E5")), Some("1.5".into()));
        assert_eq!(version_query(Some("version=")), Some(String::new()));
    }
}
