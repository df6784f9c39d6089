//! What travels on the wire, below every adapter and runner that speaks it: the V2 tensors
//! ([`tensor`]), the generated V2 gRPC messages, server and client ([`proto`]), their conversion to
//! tensors ([`grpc`]) and the V2 REST JSON and binary-extension codec ([`v2_json`]). The gRPC
//! adapter, the V2 REST adapter and the forward runner (a V2 gRPC client) all use this module; it
//! uses nothing of theirs.

pub mod encoding;
pub mod grpc;
pub mod json;
pub mod scan;
pub mod tensor;
pub mod v2_json;

/// The generated messages, server and client (`proto/inference.proto`).
pub mod proto {
    tonic::include_proto!("inference");
}

pub use tensor::{Datatype, Elements, InferTensor, shape_of};
