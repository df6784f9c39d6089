//! `ModelInfer`, served by hand instead of by tonic's generated service, so that nothing is
//! decompressed or decoded before the front door has checked what it can: tonic decodes a
//! message before its handler runs, and a 16 KB gzip message of empty `inputs` entries decodes
//! into gigabytes. Here, in order:
//!
//! 1. the key (`authorization` metadata) and the server-wide bound — before reading the body;
//! 2. the message's declared length against the body limit and charged to the request's memory
//!    reservation — before reading the rest of it;
//! 3. decompression (`grpc-encoding: gzip`) stopped at the body limit and charged as it inflates,
//!    on a blocking thread;
//! 4. a scan of the message ([`crate::wire::scan`]): the model name and version for the key's
//!    scope and the routing table, and what decoding would allocate — charged (refused past the
//!    request's or the server's memory budget) before decoding;
//! 5. decoding (on a blocking thread when large) and the run, through the front door.
//!
//! Errors are gRPC statuses in the trailers-only form (HTTP 200, `grpc-status` in the headers).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::{Buf, Bytes, BytesMut};
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use tokio::time::Instant;

use super::{call_timeout, status, trailers_only};
use crate::offload;
use crate::pipeline::shadow::{Replay, Replayed, cut};
use crate::pipeline::{
    Budget, Credential, Decode, Decoded, Endpoint, Error, Input, Output, Protocol, Reservation,
};
use crate::state::AppState;
use crate::wire::encoding::decompress;
use crate::wire::proto::{ModelInferRequest, ModelInferResponse};
use crate::wire::scan::{InferHead, infer_request};
use crate::wire::v2_json::TO_PYTHON_VALUE_BYTES;

/// The path tonic would serve it on.
pub const PATH: &str = "/inference.GRPCInferenceService/ModelInfer";

/// `POST /inference.GRPCInferenceService/ModelInfer`.
pub async fn model_infer(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    match infer(&state, &parts.headers, body).await {
        Ok(reply) => ok(reply),
        Err(error) => trailers_only(status(error)),
    }
}

async fn infer(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<ModelInferResponse, Error> {
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
    let admitted = state
        .door
        .admit(Protocol::V2Grpc, Credential::Header(authorization))?;
    let timeout = call_timeout(headers, state.config.request_timeout);
    let deadline = Instant::now() + timeout;
    let limit = state.config.body_limit;
    let gzip = match headers.get("grpc-encoding").map(HeaderValue::as_bytes) {
        None | Some(b"identity") => false,
        Some(b"gzip") => true,
        Some(other) => {
            return Err(admitted.refuse(Error::BadRequest(format!(
                "grpc-encoding '{}' is not supported (identity or gzip)",
                String::from_utf8_lossy(other)
            ))));
        }
    };
    let memory = admitted.reservation();
    let read = read_message(body, limit, gzip, memory);
    let (message, memory) = match tokio::time::timeout_at(deadline, read).await {
        Ok(read) => read.map_err(|e| admitted.refuse(e))?,
        Err(_) => return Err(admitted.refuse(Error::Timeout(timeout))),
    };
    let head = infer_request(&message).map_err(|e| admitted.refuse(e))?;
    let name = head.model_name.clone();
    let version = (!head.model_version.is_empty()).then(|| head.model_version.clone());
    let decoder = InferMessage {
        message,
        head,
        headers,
    };
    let served = admitted
        .serve(&name, version.as_deref(), timeout, memory, decoder)
        .await?;
    let outputs = match served.output {
        Output::Tensors(outputs) => outputs,
        Output::Body(_) | Output::Json(_) | Output::Text(_) => {
            return Err(Error::Internal("unexpected JSON reply".into()));
        }
    };
    // The reply's contents and the message they are encoded into, charged before either is made.
    let mut memory = served.memory;
    let size: usize = outputs.iter().map(|o| o.data.le_size()).sum();
    memory.charge(size.saturating_mul(2))?;
    let (outputs, raw_output_contents) = crate::wire::grpc::outputs(outputs);
    Ok(ModelInferResponse {
        model_name: name,
        model_version: served.endpoint.version.clone().unwrap_or_default(),
        id: served.extra,
        parameters: Default::default(),
        outputs,
        raw_output_contents,
    })
}

/// Reads the one message of a unary call: the 5-byte prefix (compressed flag, length), the
/// length checked against `limit` before the rest is read, the rest as it arrives (memory grows
/// with what was sent, not with what was declared, and is charged to `memory` as declared before
/// it is read), then decompression stopped at `limit`.
async fn read_message(
    mut body: Body,
    limit: usize,
    gzip: bool,
    mut memory: Reservation,
) -> Result<(Bytes, Reservation), Error> {
    let mut buffer = BytesMut::new();
    let mut wanted: Option<(bool, usize)> = None;
    loop {
        if wanted.is_none() && buffer.len() >= 5 {
            let compressed = buffer[0] == 1;
            let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
            if buffer[0] > 1 {
                return Err(Error::BadRequest(
                    "the gRPC message prefix is not valid".to_string(),
                ));
            }
            if length > limit {
                return Err(Error::TooLarge(limit));
            }
            memory.charge(length)?;
            if compressed && !gzip {
                return Err(Error::BadRequest(
                    "a compressed message without grpc-encoding".to_string(),
                ));
            }
            buffer.advance(5);
            wanted = Some((compressed, length));
        }
        if let Some((_, length)) = wanted
            && buffer.len() > length
        {
            return Err(Error::BadRequest(
                "a unary call carries one message".to_string(),
            ));
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buffer.extend_from_slice(&data);
                }
            }
            Some(Err(_)) => return Err(Error::Cancelled),
            None => break,
        }
    }
    let Some((compressed, length)) = wanted else {
        return Err(Error::BadRequest("the call carries no message".to_string()));
    };
    if buffer.len() != length {
        return Err(Error::BadRequest(format!(
            "the message declares {length} bytes and carries {}",
            buffer.len()
        )));
    }
    let message = buffer.freeze();
    if !compressed {
        return Ok((message, memory));
    }
    offload::run("decompression", move || {
        let out = decompress("gzip", &message, limit, &mut memory);
        let inflated = out.as_ref().map_or(limit, Vec::len);
        (out.map(|out| (Bytes::from(out), memory)), inflated)
    })
    .await
}

/// A message whose head was read: checked against the budget, then decoded.
struct InferMessage<'a> {
    message: Bytes,
    head: InferHead,
    /// The call's metadata (a sticky canary's key may be in it).
    headers: &'a HeaderMap,
}

impl Decode for InferMessage<'_> {
    /// The request's id, for the reply.
    type Extra = String;

    fn request_id(id: &String) -> Option<String> {
        (!id.is_empty()).then(|| id.clone())
    }

    /// A metadata entry (a body field or query is REST's: gRPC calls fall back to the split).
    async fn sticky_key(
        &mut self,
        source: &serval_store::Sticky,
        _budget: &Budget,
        memory: Reservation,
    ) -> Result<(Option<Vec<u8>>, Reservation), Error> {
        let key = match source {
            serval_store::Sticky::Header(name) => self
                .headers
                .get(name.as_str())
                .map(|v| v.as_bytes().to_vec())
                .filter(|v| !v.is_empty()),
            _ => None,
        };
        Ok((key, memory))
    }

    async fn replay(
        &mut self,
        _budget: &Budget,
        memory: Reservation,
    ) -> Result<(Option<Arc<dyn Replay>>, Reservation), Error> {
        let kept = KeptMessage {
            message: self.message.clone(),
            head: self.head.clone(),
            headers: HeaderMap::new(),
        };
        Ok((Some(Arc::new(kept)), memory))
    }

    async fn decode(
        self,
        endpoint: &Arc<Endpoint>,
        budget: &Budget,
        mut memory: Reservation,
    ) -> Result<Decoded<String>, Error> {
        if self.head.values > budget.max_values {
            return Err(Error::TooManyValues(budget.max_values));
        }
        let needs = self.head.decoded_bytes;
        memory.charge(needs)?;
        let to_python = endpoint.runner.pool().is_some();
        let max_values = budget.max_values;
        let message = self.message;
        let size = message.len();
        let decode = move || {
            let mut request = ModelInferRequest::decode(message).map_err(|e| {
                Error::BadRequest(format!(
                    "the ModelInferRequest message cannot be decoded: {e}"
                ))
            })?;
            let id = std::mem::take(&mut request.id);
            let decoded = crate::wire::grpc::request(request, max_values, &mut memory)?;
            let total: usize = decoded.inputs.iter().map(|t| t.data.len()).sum();
            if total > max_values {
                return Err(Error::TooManyValues(max_values));
            }
            if to_python {
                // The tensors' worker form, then the frame's text and the frame.
                memory.charge(
                    total
                        .saturating_mul(TO_PYTHON_VALUE_BYTES)
                        .saturating_add(size.saturating_mul(2)),
                )?;
            }
            let input = Input::Tensors {
                inputs: decoded.inputs,
                outputs: decoded.outputs,
                parameters: decoded.parameters,
            };
            Ok(Decoded {
                input,
                extra: id,
                memory,
            })
        };
        offload::if_large(needs, "decoding", decode).await
    }
}

/// A `ModelInfer` message kept for a shadow's copy.
struct KeptMessage {
    message: Bytes,
    head: InferHead,
    /// None: a copy is routed already.
    headers: HeaderMap,
}

/// Messages up to this size are shown decoded with a disagreement.
const SHOWN_DECODED: usize = 64 << 10;

impl Replay for KeptMessage {
    fn decode<'a>(
        &'a self,
        endpoint: &'a Arc<Endpoint>,
        budget: &'a Budget,
        memory: Reservation,
    ) -> Replayed<'a> {
        Box::pin(async move {
            let message = InferMessage {
                message: self.message.clone(),
                head: self.head.clone(),
                headers: &self.headers,
            };
            let decoded = message.decode(endpoint, budget, memory).await?;
            Ok((decoded.input, decoded.memory))
        })
    }

    fn size(&self) -> usize {
        self.message.len()
    }

    fn text(&self, limit: usize) -> String {
        if self.message.len() > SHOWN_DECODED {
            return format!("(a ModelInferRequest of {} bytes)", self.message.len());
        }
        let Ok(request) = ModelInferRequest::decode(self.message.clone()) else {
            return "(a ModelInferRequest that cannot be decoded)".to_string();
        };
        let inputs: serde_json::Map<String, serde_json::Value> = request
            .inputs
            .iter()
            .map(|i| {
                (
                    i.name.clone(),
                    serde_json::json!({"datatype": i.datatype, "shape": i.shape}),
                )
            })
            .collect();
        // A small message: what decoding it holds is small too.
        let mut memory = Reservation::new(crate::pipeline::MemoryPool::new(usize::MAX), usize::MAX);
        let text = match crate::wire::grpc::request(request, usize::MAX, &mut memory) {
            Ok(decoded) => serde_json::Value::Object(
                decoded
                    .inputs
                    .iter()
                    .map(|t| {
                        (
                            t.name.clone(),
                            serde_json::Value::Array(t.data.json_values()),
                        )
                    })
                    .collect(),
            )
            .to_string(),
            Err(_) => serde_json::Value::Object(inputs).to_string(),
        };
        cut(text, limit)
    }
}

/// A gRPC reply: one length-prefixed message, then `grpc-status: 0` in the trailers.
fn ok(reply: ModelInferResponse) -> Response {
    let length = reply.encoded_len();
    let mut data = Vec::with_capacity(5 + length);
    data.push(0);
    data.extend_from_slice(&u32::try_from(length).unwrap_or(u32::MAX).to_be_bytes());
    if reply.encode(&mut data).is_err() {
        return trailers_only(tonic::Status::internal("cannot encode the reply"));
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut response = Response::new(Body::new(Unary {
        data: Some(Bytes::from(data)),
        trailers: Some(trailers),
    }));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The body of a unary reply: its message, then its trailers.
struct Unary {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for Unary {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}
