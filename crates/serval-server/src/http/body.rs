//! Reading a request body, for both REST dialects: the size limit (declared and actual) and
//! `Content-Encoding: gzip|x-gzip|deflate` decoding, with the limit applied to the decoded size.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, header};

pub use crate::pipeline::OFFLOAD_FROM;
use crate::pipeline::{Credential, Error};
use crate::wire::encoding::{UNDECODABLE, decompress};

/// A REST inference request as the front door takes it: its headers (the credential among them)
/// and its body, unread.
pub struct RestRequest {
    pub headers: HeaderMap,
    pub body: Body,
}

impl From<Request> for RestRequest {
    fn from(request: Request) -> Self {
        let (parts, body) = request.into_parts();
        RestRequest {
            headers: parts.headers,
            body,
        }
    }
}

impl RestRequest {
    /// The `Authorization` header, for the front door.
    pub fn credential(&self) -> Credential<'_> {
        Credential::Header(
            self.headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        )
    }

    /// The body, read and decoded within `limit` bytes.
    pub async fn read(self, limit: usize) -> Result<Bytes, Error> {
        read(&self.headers, self.body, limit).await
    }
}

/// Runs CPU work on a blocking thread if `size` is large, else right here.
pub async fn offload<T, E>(
    size: usize,
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<Error> + Send + 'static,
{
    if size < OFFLOAD_FROM {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| E::from(Error::Internal(format!("decoding task failed: {e}"))))?
}

/// Reads and decodes a request body of at most `limit` bytes (before and after decoding).
pub async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Error> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(Error::TooLarge(limit));
    }
    let raw = axum::body::to_bytes(body, limit).await.map_err(|e| {
        // The cause is wrapped (axum's errors around the body's): look down the whole chain.
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(error) = cause {
            if error.is::<http_body_util::LengthLimitError>() {
                return Error::TooLarge(limit);
            }
            // The connection ended inside the body (hyper reports an unexpected EOF).
            if let Some(io) = error.downcast_ref::<std::io::Error>()
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                )
            {
                return Error::Cancelled;
            }
            cause = error.source();
        }
        Error::BadRequest(UNDECODABLE.to_string())
    })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "identity" => Ok(raw),
        // A small compressed body can inflate to `limit`: always off the async threads.
        "gzip" | "x-gzip" | "deflate" => {
            tokio::task::spawn_blocking(move || decompress(&encoding, &raw, limit).map(Bytes::from))
                .await
                .map_err(|e| Error::Internal(format!("decoding task failed: {e}")))?
        }
        other => Err(Error::BadRequest(format!(
            "{UNDECODABLE}: unsupported Content-Encoding '{other}'"
        ))),
    }
}
