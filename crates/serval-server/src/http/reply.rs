//! What both REST dialects add to an error answer.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

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
