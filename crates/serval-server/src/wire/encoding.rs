//! Compressed messages (`Content-Encoding` on REST, `grpc-encoding` on gRPC), inflated to at most
//! a limit: reading stops one byte past it, so a small bomb never becomes a large buffer.

use std::io::Read;

use crate::error::Error;

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
