//! Reading a request body, for both REST dialects: the size limit (declared and actual),
//! `Content-Encoding: gzip|x-gzip|deflate` decoding with the limit applied to the decoded size,
//! and the memory reservation charged for both (a declared length before it is read).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use http_body::{Frame, SizeHint};

use crate::offload;
use crate::pipeline::{Credential, Error, Reservation};
use crate::wire::encoding::{UNDECODABLE, decompress};

/// A REST inference request as the front door takes it: its headers (the credential among them)
/// and its body, unread.
pub struct RestRequest {
    pub headers: HeaderMap,
    pub body: Body,
    /// The URI's query string, if any.
    pub query: Option<String>,
}

/// Whether a request's body was read to its end, for a refusal's answer: a connection whose
/// request body was left unread cannot carry another request, and the server closes it — the
/// answer says so (`Connection: close`), so a client's pool does not send the next request into
/// a closed connection.
#[derive(Clone)]
pub struct BodyWatch {
    declared: bool,
    finished: Arc<AtomicBool>,
}

impl BodyWatch {
    /// Watches `request`'s body (replacing it with one that reports its end).
    pub fn of(request: &mut Request) -> BodyWatch {
        let watch = BodyWatch {
            declared: declares_body(request.headers()),
            finished: Arc::default(),
        };
        let inner = std::mem::take(request.body_mut());
        *request.body_mut() = Body::new(Watched {
            inner,
            finished: watch.finished.clone(),
        });
        watch
    }

    /// `response`, with `Connection: close` when the request had a body that was not read.
    pub fn answer(&self, mut response: Response) -> Response {
        if self.declared && !self.finished.load(Ordering::Acquire) {
            close(&mut response);
        }
        response
    }
}

/// Whether the headers announce a body (a length above zero, or chunks).
pub fn declares_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// Marks `response` as the connection's last.
pub fn close(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// A body that records when it has been read to its end.
struct Watched {
    inner: Body,
    finished: Arc<AtomicBool>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.finished.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl From<Request> for RestRequest {
    fn from(request: Request) -> Self {
        let (parts, body) = request.into_parts();
        RestRequest {
            query: parts.uri.query().map(str::to_string),
            headers: parts.headers,
            body,
        }
    }
}

/// A REST request whose body was read, kept to be decoded again (a shadow's copy).
pub struct KeptRequest {
    pub headers: HeaderMap,
    pub query: Option<String>,
    pub bytes: Bytes,
}

impl KeptRequest {
    /// The request again, its body from memory.
    pub fn request(&self) -> RestRequest {
        RestRequest {
            headers: self.headers.clone(),
            body: Body::from(self.bytes.clone()),
            query: self.query.clone(),
        }
    }

    /// The body as text, for a person (at most `limit` bytes).
    pub fn text(&self, limit: usize) -> String {
        crate::pipeline::shadow::cut(String::from_utf8_lossy(&self.bytes).into_owned(), limit)
    }
}

impl RestRequest {
    /// A sticky canary's key from a header or the query (`None` for a body field, or when the
    /// request has none).
    pub fn sticky_key(&self, source: &serval_store::Sticky) -> Option<Vec<u8>> {
        use serval_store::Sticky;
        match source {
            Sticky::Header(name) => self
                .headers
                .get(name.as_str())
                .map(|v| v.as_bytes().to_vec())
                .filter(|v| !v.is_empty()),
            Sticky::Query(name) => url::form_urlencoded::parse(self.query.as_deref()?.as_bytes())
                .find(|(k, _)| k == name.as_str())
                .map(|(_, v)| v.into_owned().into_bytes())
                .filter(|v| !v.is_empty()),
            Sticky::Field(_) => None,
        }
    }

    /// The `Authorization` header, for the front door.
    pub fn credential(&self) -> Credential<'_> {
        Credential::Header(
            self.headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        )
    }

    /// Reads (and decodes) the body now, within `limit` bytes charged to `memory`, and puts it
    /// back for the decoder, which reads it from memory (and charges it again); gives the bytes.
    pub async fn keep(
        &mut self,
        limit: usize,
        memory: Reservation,
    ) -> Result<(Bytes, Reservation), Error> {
        let body = std::mem::take(&mut self.body);
        let (bytes, memory) = read(&self.headers, body, limit, memory).await?;
        self.headers.remove(header::CONTENT_ENCODING);
        self.headers.remove(header::CONTENT_LENGTH);
        self.body = Body::from(bytes.clone());
        Ok((bytes, memory))
    }

    /// The request kept, its body read (for a shadow's copy).
    pub async fn kept(
        &mut self,
        limit: usize,
        memory: Reservation,
    ) -> Result<(KeptRequest, Reservation), Error> {
        let (bytes, memory) = self.keep(limit, memory).await?;
        let kept = KeptRequest {
            headers: self.headers.clone(),
            query: self.query.clone(),
            bytes,
        };
        Ok((kept, memory))
    }

    /// The body, read and decoded within `limit` bytes and charged to `memory`.
    pub async fn read(
        self,
        limit: usize,
        memory: Reservation,
    ) -> Result<(Bytes, Reservation), Error> {
        read(&self.headers, self.body, limit, memory).await
    }
}

/// The body's bytes, at most `limit` of them: a body that came in one piece is kept as it came
/// (no copy, no list of pieces), several pieces are joined. `charge`: a reservation to charge
/// each piece to as it arrives (a body without a declared length), before it is kept.
async fn collect(
    mut body: Body,
    limit: usize,
    mut charge: Option<&mut Reservation>,
) -> Result<Bytes, Error> {
    use http_body_util::BodyExt;
    let mut first = Bytes::new();
    let mut joined: Option<bytes::BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|e| body_error(&e))?.into_data() else {
            continue; // trailers
        };
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(Error::TooLarge(limit));
        }
        if let Some(memory) = charge.as_deref_mut() {
            memory.charge(data.len())?;
        }
        if let Some(joined) = &mut joined {
            joined.extend_from_slice(&data);
        } else if first.is_empty() {
            first = data;
        } else {
            let mut both = bytes::BytesMut::with_capacity(total);
            both.extend_from_slice(&first);
            both.extend_from_slice(&data);
            joined = Some(both);
        }
    }
    Ok(joined.map_or(first, bytes::BytesMut::freeze))
}

/// What a body that failed while being read means for its request.
fn body_error(error: &axum::Error) -> Error {
    // The cause is wrapped (axum's errors around the body's): look down the whole chain.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
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
}

/// Reads and decodes a request body of at most `limit` bytes (before and after decoding),
/// charging `memory` for what it holds.
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    mut memory: Reservation,
) -> Result<(Bytes, Reservation), Error> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(Error::TooLarge(limit));
    }
    if let Some(length) = declared {
        memory.charge(length)?;
    }
    let raw = collect(body, limit, declared.is_none().then_some(&mut memory)).await?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "identity" => Ok((raw, memory)),
        // A small compressed body can inflate to `limit`: always off the async threads.
        "gzip" | "x-gzip" | "deflate" => {
            offload::run("decoding", move || {
                let out = decompress(&encoding, &raw, limit, &mut memory);
                let inflated = out.as_ref().map_or(limit, Vec::len);
                (out.map(|out| (Bytes::from(out), memory)), inflated)
            })
            .await
        }
        other => Err(Error::BadRequest(format!(
            "{UNDECODABLE}: unsupported Content-Encoding '{other}'"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(pieces: &[&'static str]) -> Body {
        let frames = pieces
            .iter()
            .map(|p| Ok::<_, std::io::Error>(Bytes::from_static(p.as_bytes())));
        Body::from_stream(futures::stream::iter(frames.collect::<Vec<_>>()))
    }

    #[tokio::test]
    async fn a_body_is_read_whole_within_its_limit() {
        let one = Bytes::from_static(b"{\"x0\": 1}");
        let read = collect(Body::from(one.clone()), 100, None).await.unwrap();
        assert_eq!(read.as_ptr(), one.as_ptr(), "one piece is not copied");
        let read = collect(pieces(&["[1, ", "2, ", "3]"]), 100, None)
            .await
            .unwrap();
        assert_eq!(&read[..], b"[1, 2, 3]");
        assert_eq!(collect(pieces(&[]), 100, None).await.unwrap().len(), 0);
        // Exactly the limit is read; one byte more is refused, whether in one piece or later.
        assert_eq!(
            collect(pieces(&["12345", "678"]), 8, None)
                .await
                .unwrap()
                .len(),
            8
        );
        for body in [pieces(&["123456789"]), pieces(&["12345", "6789"])] {
            assert!(matches!(
                collect(body, 8, None).await,
                Err(Error::TooLarge(8))
            ));
        }
        // A connection that ends inside the body: the client left.
        let broken = Body::from_stream(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"[1,")),
            Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
        ]));
        assert!(matches!(
            collect(broken, 100, None).await,
            Err(Error::Cancelled)
        ));
        // Pieces are charged as they come: past the request's budget the read stops there.
        let pool = crate::memory::MemoryPool::new(1 << 30);
        let mut memory = Reservation::new(pool, 6);
        let over = collect(pieces(&["1234", "5678", "9"]), 100, Some(&mut memory)).await;
        assert!(
            matches!(
                over,
                Err(Error::OverBudget {
                    needs: 8,
                    budget: 6
                })
            ),
            "{over:?}"
        );
        let mut memory = Reservation::new(crate::memory::MemoryPool::new(1 << 30), 6);
        collect(pieces(&["12", "34"]), 100, Some(&mut memory))
            .await
            .unwrap();
        assert_eq!(memory.charged(), 4);
    }
}
