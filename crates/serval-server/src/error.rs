//! The request path's errors: what went wrong, named by what the caller should do. No protocol
//! here: each adapter (clearml REST, V2 REST, V2 gRPC, `send_request`) maps them to its own codes
//! and texts in one place. [`redact`] is how text that may name files becomes client text.

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
    /// No API key, or not a current one (unknown, revoked or expired): 401 / UNAUTHENTICATED.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid API key that may not call this endpoint: 403 / PERMISSION_DENIED.
    #[error("{0}")]
    Forbidden(String),
    /// A body that should be JSON and is not: where it broke (byte offset) and why.
    #[error("the body is not JSON: {reason} (at byte {offset})")]
    InvalidJson { offset: usize, reason: String },
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
    /// The request would make the server build more than one request may.
    #[error(
        "the request would take about {} MiB of memory, more than the {} MiB one request may use (serve --max-request-memory)",
        needs.div_ceil(1 << 20),
        budget >> 20
    )]
    OverBudget { needs: usize, budget: usize },
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
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::InvalidJson { .. } => "invalid_input",
            Error::BadRequest(_) => "bad_request",
            Error::InvalidInput(_) => "invalid_input",
            Error::Cancelled => "cancelled",
            Error::TooLarge(_) | Error::TooManyValues(_) | Error::OverBudget { .. } => {
                "payload_too_large"
            }
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

    /// The HTTP status the Open Inference Protocol answers with (V2 REST; payload logs record
    /// it for gRPC requests too). clearml's `/serve` differs for invalid input (422).
    pub fn http_status(&self) -> u16 {
        use Error as E;
        match self {
            E::NotFound { .. } => 404,
            E::Unauthenticated(_) => 401,
            E::Forbidden(_) => 403,
            E::BadRequest(_) | E::InvalidJson { .. } | E::InvalidInput(_) | E::Cancelled => 400,
            E::UserCode { invalid: true, .. } => 422,
            E::TooLarge(_) | E::TooManyValues(_) | E::OverBudget { .. } => 413,
            E::Timeout(_) => 504,
            E::Overloaded(_) => 429,
            E::Unavailable { .. } => 503,
            E::UserCode { .. } | E::Worker(_) | E::Internal(_) => 500,
            E::Upstream(_) => 502,
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

    /// The error as a client may see it: text that comes from outside serval (user code's
    /// exception messages, engines', workers', upstream servers') with every absolute path
    /// replaced by `<path>`. Every protocol's error mapping answers with this (after logging the
    /// full text).
    pub fn for_client(self) -> Error {
        match self {
            Error::UserCode {
                class,
                message,
                invalid,
            } => Error::UserCode {
                class,
                message: redact(&message),
                invalid,
            },
            Error::InvalidInput(m) => Error::InvalidInput(redact(&m)),
            Error::Internal(m) => Error::Internal(redact(&m)),
            Error::Worker(m) => Error::Worker(redact(&m)),
            Error::Upstream(m) => Error::Upstream(redact(&m)),
            Error::Unavailable { endpoint, reason } => Error::Unavailable {
                endpoint,
                reason: redact(&reason),
            },
            other => other,
        }
    }

    /// A Python worker's error, for a request on `endpoint` with `timeout` left.
    pub fn from_python(error: PyError, timeout: Duration, endpoint: &str) -> Error {
        match error {
            PyError::User {
                class,
                message,
                invalid,
                ..
            } => Error::UserCode {
                class,
                message,
                invalid,
            },
            PyError::Timeout => Error::Timeout(timeout),
            PyError::WorkerExited(m) | PyError::Protocol(m) => Error::Worker(m),
            PyError::Unavailable(reason) => Error::Unavailable {
                endpoint: endpoint.to_string(),
                reason: redact(&reason),
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

/// Text that may name files, as a client may see it: every absolute filesystem path becomes
/// `<path>` (the full text stays in the logs and in `serval model list`). Words are split at any
/// whitespace, newlines included, and the whitespace is kept.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for piece in text.split_inclusive(char::is_whitespace) {
        let word = piece.trim_end_matches(char::is_whitespace);
        let space = &piece[word.len()..];
        let core = word.trim_start_matches(['\'', '"', '(', '[', '<', '`']);
        if core.starts_with('/') && core[1..].contains('/') {
            let lead = &word[..word.len() - core.len()];
            let tail_len = core
                .chars()
                .rev()
                .take_while(|c| matches!(c, ':' | ',' | ')' | ']' | '\'' | '"' | '.' | '>' | '`'))
                .map(char::len_utf8)
                .sum::<usize>();
            out.push_str(lead);
            out.push_str("<path>");
            out.push_str(&core[core.len() - tail_len..]);
        } else {
            out.push_str(word);
        }
        out.push_str(space);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn client_errors_carry_no_paths() {
        assert_eq!(
            redact("cannot read /root/.serval/cache/blobs/ab/m.json: No such file"),
            "cannot read <path>: No such file"
        );
        assert_eq!(
            redact("model file '/tmp/x/model.txt' changed (sha256 a, registry b)"),
            "model file '<path>' changed (sha256 a, registry b)"
        );
        assert_eq!(
            redact("engine 'triton' is 1/2 done"),
            "engine 'triton' is 1/2 done"
        );
        assert_eq!(
            redact("failed:\n/home/u/x.py line 3\n\t(/a/b)"),
            "failed:\n<path> line 3\n\t(<path>)"
        );
    }
}
