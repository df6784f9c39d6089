//! Reading a request body, for both REST dialects: the size limit (declared and actual) and
//! `Content-Encoding: gzip|x-gzip|deflate` decoding, with the limit applied to the decoded size.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};

use crate::pipeline::Error;

/// What an undecodable body is called in errors (clearml's text).
pub const UNDECODABLE: &str = "There was an error parsing the body";

fn decompress(encoding: &str, raw: &[u8], limit: usize) -> Result<Vec<u8>, Error> {
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
        "gzip" | "x-gzip" | "deflate" => Ok(Bytes::from(decompress(&encoding, &raw, limit)?)),
        other => Err(Error::BadRequest(format!(
            "{UNDECODABLE}: unsupported Content-Encoding '{other}'"
        ))),
    }
}
