//! Request errors and their one mapping to HTTP: clearml-serving's status codes and
//! `{"detail": ...}` bodies.

use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use serval_engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No endpoint (or canary) for the url.
    #[error(
        "Error processing request, endpoint was not found: Model inference endpoint '{0}' not found"
    )]
    NotFound(String),
    /// The request does not fit the endpoint (clearml's ValueError → 422).
    #[error("Error [<class 'ValueError'>] processing request: {0}")]
    InvalidInput(String),
    /// The body is not valid JSON: FastAPI's validation detail, with the position.
    #[error("JSON decode error")]
    InvalidJson(Value),
    /// The body cannot be decoded (bad gzip/deflate).
    #[error("There was an error parsing the body")]
    BadBody,
    #[error("request body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    #[error("request timed out after {} s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The endpoint is configured but not serving (its model failed to load).
    #[error("endpoint '{0}' is not serving: {1}")]
    Unavailable(String, String),
    #[error("Error  [<class 'RuntimeError'>] processing request: {0}")]
    Internal(String),
    /// User Python code raised: `ValueError` → 422, anything else → 500 (clearml's texts, the
    /// second with its two spaces).
    #[error("{}", user_code_detail(class, message, *invalid))]
    UserCode {
        class: String,
        message: String,
        invalid: bool,
    },
    /// A Python worker died or broke the protocol while handling the request.
    #[error("{0}")]
    Worker(String),
}

fn user_code_detail(class: &str, message: &str, invalid: bool) -> String {
    if invalid {
        format!("Error [{class}] processing request: {message}")
    } else {
        format!("Error  [{class}] processing request: {message}")
    }
}

impl ServeError {
    /// Stable kind for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ServeError::NotFound(_) => "not_found",
            ServeError::InvalidInput(_) | ServeError::InvalidJson(_) => "invalid_input",
            ServeError::BadBody => "bad_request",
            ServeError::TooLarge(_) => "payload_too_large",
            ServeError::Timeout(_) => "timeout",
            ServeError::Unavailable(..) => "unavailable",
            ServeError::Internal(_) => "internal",
            ServeError::UserCode { invalid: true, .. } => "invalid_input",
            ServeError::UserCode { .. } => "user_code",
            ServeError::Worker(_) => "worker_exited",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ServeError::NotFound(_) => StatusCode::NOT_FOUND,
            ServeError::InvalidInput(_) | ServeError::InvalidJson(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ServeError::BadBody => StatusCode::BAD_REQUEST,
            ServeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServeError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ServeError::Unavailable(..) => StatusCode::SERVICE_UNAVAILABLE,
            ServeError::UserCode { invalid: true, .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ServeError::Internal(_) | ServeError::UserCode { .. } | ServeError::Worker(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl From<EngineError> for ServeError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::InvalidInput(m) => ServeError::InvalidInput(m),
            EngineError::Load(m) | EngineError::Unavailable(m) | EngineError::Internal(m) => {
                ServeError::Internal(m)
            }
        }
    }
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(kind = self.kind(), "{self}");
        }
        let detail = match self {
            ServeError::InvalidJson(detail) => detail,
            other => Value::String(other.to_string()),
        };
        (status, Json(json!({ "detail": detail }))).into_response()
    }
}
