//! What both REST dialects add to an error answer, and replies written as they are sent.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::pipeline::Reservation;
use crate::wire::v2_json;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use http_body::Frame;

/// A reply's text, produced a chunk at a time.
pub trait Chunks: Send + Unpin + 'static {
    /// The next chunk of at least `min` bytes (the last may be shorter); `None` at the end.
    fn next_chunk(&mut self, min: usize) -> Option<Vec<u8>>;
}

impl Chunks for serval_core::ReplyText {
    fn next_chunk(&mut self, min: usize) -> Option<Vec<u8>> {
        serval_core::ReplyText::next_chunk(self, min)
    }
}

impl Chunks for v2_json::ReplyText {
    fn next_chunk(&mut self, min: usize) -> Option<Vec<u8>> {
        v2_json::ReplyText::next_chunk(self, min)
    }
}

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

/// A JSON reply written a chunk at a time while it is sent (a large native clearml reply, a large
/// V2 JSON reply): what the server holds is the model's outputs and one chunk, not the whole
/// text. The request's memory reservation is held until the last chunk is sent (or the client
/// goes away).
pub fn streamed_json(text: impl Chunks, memory: Reservation) -> Response {
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

struct Streamed<T> {
    text: T,
    _memory: Reservation,
}

impl<T: Chunks> http_body::Body for Streamed<T> {
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
