//! V2 gRPC `ModelInferRequest` messages: the scan that runs before decoding (model name and
//! version, what decoding would allocate, typed values) must agree with prost's decoding, and
//! converting the decoded message into tensors must stay within the memory it was charged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use serval_server::memory::{MemoryPool, Reservation};
use serval_server::wire::proto::ModelInferRequest;
use serval_server::wire::scan::infer_request;

fuzz_target!(|data: &[u8]| {
    let head = infer_request(data);
    let Ok(request) = ModelInferRequest::decode(data) else {
        return;
    };
    // What the scan reads of a message prost decodes is what prost decodes (the scan may refuse
    // more: wire types the schema never uses).
    let Ok(head) = head else {
        return;
    };
    assert_eq!(head.model_name, request.model_name);
    assert_eq!(head.model_version, request.model_version);
    let pool = MemoryPool::new(64 << 20);
    let mut memory = Reservation::new(pool.clone(), 64 << 20);
    let _ = serval_server::wire::grpc::request(request, 1 << 20, &mut memory);
    assert!(memory.charged() <= 64 << 20);
    drop(memory);
    assert_eq!(pool.used(), 0);
});
