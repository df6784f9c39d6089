//! The HTTP/2 ceiling of a single-row gRPC call on this machine: the cheapest `ModelInfer` server
//! built on the same stack as serval's (axum on hyper's HTTP/2, prost), which decodes the request
//! and answers a fixed three-probability reply — what HTTP/2 framing, HPACK and the protobuf codec
//! cost, with no routing table, no model and no metrics. `bench/v2_protocols.py --grpc-echo`
//! loads it the same way as serval.
//!
//! Run: `cargo run --release -p serval-server --example grpc_echo` (prints `grpc://ADDR`).

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::post;
use http_body_util::BodyExt;
use prost::Message;
use serval_server::wire::proto::model_infer_response::InferOutputTensor;
use serval_server::wire::proto::{ModelInferRequest, ModelInferResponse};

async fn model_infer(body: Body) -> Response {
    let collected = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let request =
        ModelInferRequest::decode(collected.get(5..).unwrap_or_default()).unwrap_or_default();
    let reply = ModelInferResponse {
        model_name: request.model_name,
        outputs: vec![InferOutputTensor {
            name: "probabilities".into(),
            datatype: "FP32".into(),
            shape: vec![1, 3],
            ..Default::default()
        }],
        raw_output_contents: vec![Bytes::from_static(&[0; 12])],
        ..Default::default()
    };
    let mut data = vec![0u8];
    data.extend_from_slice(&(reply.encoded_len() as u32).to_be_bytes());
    reply.encode(&mut data).unwrap_or_default();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = futures::stream::iter([
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(data))),
        Ok(http_body::Frame::trailers(trailers)),
    ]);
    let mut response = Response::new(Body::new(http_body_util::StreamBody::new(frames)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("grpc://{}", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/inference.GRPCInferenceService/ModelInfer",
        post(model_infer),
    );
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}
