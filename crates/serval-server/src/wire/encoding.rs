//! Compressed messages (`Content-Encoding` on REST, `grpc-encoding` on gRPC), inflated to at most
//! a limit: reading stops one byte past it, so a small bomb never becomes a large buffer, and
//! every step of the output is charged to the request's memory reservation before it is read.

use std::io::Read;

use crate::error::Error;
use crate::memory::Reservation;

/// The first step of inflating (bytes); each next one doubles, up to [`MAX_STEP`].
const FIRST_STEP: usize = 64 * 1024;
const MAX_STEP: usize = 1 << 20;

/// What an undecodable body is called in errors (clearml's text).
pub const UNDECODABLE: &str = "There was an error parsing the body";

/// Decodes a `Content-Encoding` (gzip, x-gzip, deflate; anything else is returned as is),
/// refusing more than `limit` decoded bytes; `memory` is charged for the output, a step at a time
/// before it is inflated (at most one step more than the output).
pub fn decompress(
    encoding: &str,
    raw: &[u8],
    limit: usize,
    memory: &mut Reservation,
) -> Result<Vec<u8>, Error> {
    let reader: Box<dyn Read + '_> = match encoding {
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        // HTTP "deflate" is zlib-wrapped; some clients send raw deflate.
        "deflate" if raw.first().is_some_and(|b| b & 0x0f == 8) => {
            Box::new(flate2::read::ZlibDecoder::new(raw))
        }
        "deflate" => Box::new(flate2::read::DeflateDecoder::new(raw)),
        _ => {
            memory.charge(raw.len())?;
            return Ok(raw.to_vec());
        }
    };
    // Read one byte past the limit to notice a decompression bomb without inflating it, in
    // chunks that are charged before they are filled and never reallocated (a growing buffer
    // would hold its old and new copies at once).
    let mut reader = reader.take(limit as u64 + 1);
    let undecodable = |_| Error::BadRequest(UNDECODABLE.to_string());
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    let mut step = FIRST_STEP;
    loop {
        memory.charge(step)?;
        let mut chunk = Vec::with_capacity(step);
        let read = (&mut reader)
            .take(step as u64)
            .read_to_end(&mut chunk)
            .map_err(undecodable)?;
        total += read;
        if total > limit {
            return Err(Error::TooLarge(limit));
        }
        chunks.push(chunk);
        if read < step {
            break;
        }
        step = (step * 2).min(MAX_STEP);
    }
    if chunks.len() == 1 {
        return Ok(chunks.pop().unwrap_or_default());
    }
    // One buffer of the exact size, each chunk freed as soon as it is copied.
    let mut out = Vec::with_capacity(total);
    for chunk in chunks {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
