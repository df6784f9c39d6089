//! What both REST dialects add to an error answer, and replies written as they are sent.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use http_body::Frame;
use serval_core::ReplyText;

use crate::pipeline::Reservation;

/// Bytes of a streamed reply written per frame.
const CHUNK: usize = 64 * 1024;

/// `Retry-After` of a 429 (admission control), in seconds.
pub const RETRY_AFTER_SECONDS: &str = "1";

/// What every error answer of both REST dialects adds to its status: `WWW-Authenticate` to a
/// 401, `Retry-After` to a 429.
pub fn challenge_or_retry(response: &mut Response) {
    match response.status() {
        StatusCode::UNAUTHORIZED => {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"serval\""),
            );
        }
        StatusCode::TOO_MANY_REQUESTS => {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        _ => {}
    }
}

/// A JSON reply written a chunk at a time while it is sent (a large native reply): what the
/// server holds is the model's outputs and one chunk, not the whole text. The request's memory
/// reservation is held until the last chunk is sent (or the client goes away).
pub fn streamed_json(text: ReplyText, memory: Reservation) -> Response {
    let mut response = Response::new(Body::new(Streamed {
        text,
        _memory: memory,
    }));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

struct Streamed {
    text: ReplyText,
    _memory: Reservation,
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(
            self.text
                .next_chunk(CHUNK)
                .map(|chunk| Ok(Frame::data(Bytes::from(chunk)))),
        )
    }
}
