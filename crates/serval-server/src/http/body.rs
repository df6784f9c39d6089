//! Reading a request body, for both REST dialects: the size limit (declared and actual) and
//! `Content-Encoding: gzip|x-gzip|deflate` decoding, with the limit applied to the decoded size.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};

use crate::pipeline::Error;

/// Bodies at least this large are decoded and parsed on a blocking thread, so health checks and
/// small requests keep answering while big ones are read.
pub const OFFLOAD_FROM: usize = 64 * 1024;

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

/// Counts the values a JSON text holds — numbers, strings (object keys included), booleans and
/// nulls — without parsing it, and refuses it with [`Error::TooManyValues`] past `max`. A linear
/// scan with no allocation: it runs before the text becomes a tree, so a small body cannot turn
/// into gigabytes. Malformed JSON is left to the parser.
pub fn check_values(json: &[u8], max: usize) -> Result<(), Error> {
    // Every value needs at least one byte, so short texts cannot exceed the cap.
    if json.len() <= max {
        return Ok(());
    }
    let mut count = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut in_number = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        let starts = match b {
            b'"' => {
                in_string = true;
                in_number = false;
                true
            }
            b'-' | b'0'..=b'9' if !in_number => {
                in_number = true;
                true
            }
            b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-' if in_number => false,
            b't' | b'f' | b'n' => {
                in_number = false;
                true
            }
            _ => {
                in_number = false;
                false
            }
        };
        if starts {
            count += 1;
            if count > max {
                return Err(Error::TooManyValues(max));
            }
        }
    }
    Ok(())
}

/// What an undecodable body is called in errors (clearml's text).
pub const UNDECODABLE: &str = "There was an error parsing the body";

/// Decodes a `Content-Encoding` (gzip, x-gzip, deflate; anything else is returned as is),
/// refusing more than `limit` decoded bytes.
pub fn decompress(encoding: &str, raw: &[u8], limit: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let reader: Box<dyn Read + '_> = match encoding {
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        // HTTP "deflate" is zlib-wrapped; some clients send raw deflate.
        "deflate" if raw.first().is_some_and(|b| b & 0x0f == 8) => {
            Box::new(flate2::read::ZlibDecoder::new(raw))
        }
        "deflate" => Box::new(flate2::read::DeflateDecoder::new(raw)),
        _ => return Ok(raw.to_vec()),
    };
    // Read one byte past the limit to notice a decompression bomb without inflating it.
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| Error::BadRequest(UNDECODABLE.to_string()))?;
    if out.len() > limit {
        return Err(Error::TooLarge(limit));
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn count(text: &str) -> usize {
        (0..=text.len())
            .find(|max| check_values(text.as_bytes(), *max).is_ok())
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn values_are_counted_without_parsing() {
        assert_eq!(
            count(r#"{"x0": 1, "x1": -2.5e+3, "s": "a,\"b\" 1 true"}"#),
            6
        );
        assert_eq!(count("[[0,0,0,0],[1,1,1,1]]"), 8);
        assert_eq!(count("[true, false, null, 10, 1e5]"), 5);
        let big = format!("[{}0]", "0,".repeat(100));
        assert!(matches!(
            check_values(big.as_bytes(), 100),
            Err(Error::TooManyValues(100))
        ));
        assert!(check_values(big.as_bytes(), 101).is_ok());
    }
}
