//! The pipeline's errors: what went wrong, named by what the caller should do. No protocol here:
//! each adapter (clearml REST, V2 REST, V2 gRPC, `send_request`) maps them to its own codes and
//! texts in one place.

use std::time::Duration;

use serval_engine::EngineError;
use serval_python::PyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answers this name (and version).
    #[error("{}", describe_model(name, version.as_deref()))]
    NotFound {
        name: String,
        version: Option<String>,
    },
    /// The request is malformed for its protocol (undecodable body, shape or datatype that does
    /// not match the model, element count that does not match the shape).
    #[error("{0}")]
    BadRequest(String),
    /// The model refused the data (clearml: a ValueError → 422).
    #[error("{0}")]
    InvalidInput(String),
    /// The client went away before its request was read to the end.
    #[error("the client closed the connection before the request was complete")]
    Cancelled,
    /// The request body is larger than the limit (bytes).
    #[error("request body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    /// The request decodes into more values than the limit (`serve --max-values`).
    #[error(
        "the request holds more than {0} values, the limit of this server (serve --max-values)"
    )]
    TooManyValues(usize),
    /// Admission control: too many requests in flight (HTTP 429 with Retry-After).
    #[error("{0}")]
    Overloaded(String),
    #[error("request timed out after {} s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The endpoint is configured but not serving (its model failed to load).
    #[error("endpoint '{endpoint}' is not serving: {reason}")]
    Unavailable { endpoint: String, reason: String },
    /// User Python code raised (`invalid`: a `ValueError`).
    #[error("{class}: {message}")]
    UserCode {
        class: String,
        message: String,
        invalid: bool,
    },
    /// The V2 gRPC server a `triton` endpoint forwards to failed (502), named with its status.
    #[error("{0}")]
    Upstream(String),
    /// A Python worker died or broke the protocol while handling the request.
    #[error("{0}")]
    Worker(String),
    /// Inference failed inside the server or an engine.
    #[error("{0}")]
    Internal(String),
}

/// `'name'` or `'name' version 'v'`, as errors name a model.
fn describe_model(name: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("model '{name}' version '{v}' not found"),
        None => format!("model '{name}' not found"),
    }
}

impl Error {
    /// Stable kind for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::BadRequest(_) => "bad_request",
            Error::InvalidInput(_) => "invalid_input",
            Error::Cancelled => "cancelled",
            Error::TooLarge(_) | Error::TooManyValues(_) => "payload_too_large",
            Error::Timeout(_) => "timeout",
            Error::Overloaded(_) => "overloaded",
            Error::Unavailable { .. } => "unavailable",
            Error::UserCode { invalid: true, .. } => "invalid_input",
            Error::UserCode { .. } => "user_code",
            Error::Worker(_) => "worker_exited",
            Error::Upstream(_) => "upstream",
            Error::Internal(_) => "internal",
        }
    }

    /// This error as request metrics record it.
    pub fn failure(&self) -> crate::metrics::Failure<'_> {
        crate::metrics::Failure {
            kind: self.kind(),
            message: self,
        }
    }

    /// A failure of the server or the model rather than of the request (logged).
    pub fn is_server_error(&self) -> bool {
        matches!(
            self,
            Error::Timeout(_)
                | Error::Unavailable { .. }
                | Error::UserCode { invalid: false, .. }
                | Error::Worker(_)
                | Error::Upstream(_)
                | Error::Internal(_)
        )
    }

    /// A Python worker's error, for a request on `endpoint` with `timeout` left.
    pub fn from_python(error: PyError, timeout: Duration, endpoint: &str) -> Error {
        match error {
            PyError::User {
                class,
                message,
                invalid,
            } => Error::UserCode {
                class,
                message,
                invalid,
            },
            PyError::Timeout => Error::Timeout(timeout),
            PyError::WorkerExited(m) | PyError::Protocol(m) => Error::Worker(m),
            PyError::Unavailable(reason) => Error::Unavailable {
                endpoint: endpoint.to_string(),
                reason: crate::table::without_paths(&reason),
            },
        }
    }
}

impl From<EngineError> for Error {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::InvalidInput(m) => Error::InvalidInput(m),
            EngineError::Stopped => Error::Cancelled,
            EngineError::Load(m) | EngineError::Unavailable(m) | EngineError::Internal(m) => {
                Error::Internal(m)
            }
        }
    }
}
