//! Hostile traffic, second pass: requests, connections and streams shaped to crash the server,
//! kill a worker, exhaust memory or lock other clients out. Each attack runs against a real
//! server, and a normal client of the same endpoint is answered afterwards.

use serde_json::json;

use crate::Home;
use crate::serve::Server;

/// A Python endpoint that answers its worker's pid and how deep the input it was given nests.
const DEPTH: &str = r#"
import os

class Preprocess:
    def process(self, data, state, collect_custom_statistics_fn=None):
        depth, at = 0, data
        if isinstance(at, dict) and at:
            at = next(iter(at.values()))
        while isinstance(at, list) and at:
            depth, at = depth + 1, at[0]
        return {"pid": os.getpid(), "depth": depth}
"#;

fn python_home() -> Home {
    let home = Home::new();
    home.service("hostile");
    let code = home.write("depth/preprocess.py", DEPTH);
    home.ok(&[
        "model",
        "add",
        "--engine",
        "custom",
        "--endpoint",
        "depth",
        "--preprocess",
        code.to_str().unwrap(),
    ]);
    home
}

/// A V2 JSON request with one INT64 input of `rank` dimensions of size 1.
fn deep_request(rank: usize) -> String {
    json!({"inputs": [{"name": "x", "shape": vec![1; rank], "datatype": "INT64", "data": [7]}]})
        .to_string()
}

/// The same over gRPC (built with tritonclient's generated messages, sent as raw bytes): the
/// status code's name and its message.
fn deep_grpc(server: &Server, rank: usize) -> String {
    let script = r#"
import grpc, sys
from tritonclient.grpc import service_pb2
address, rank = sys.argv[1], int(sys.argv[2])
request = service_pb2.ModelInferRequest(model_name="depth")
tensor = request.inputs.add(name="x", datatype="INT64", shape=[1] * rank)
tensor.contents.int64_contents.append(7)
channel = grpc.insecure_channel(address)
call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                           request_serializer=lambda m: m.SerializeToString(),
                           response_deserializer=service_pb2.ModelInferResponse.FromString)
try:
    call(request, timeout=60)
    print("OK")
except grpc.RpcError as e:
    print(e.code().name, e.details())
"#;
    let out = std::process::Command::new(crate::python())
        .args(["-c", script, &server.grpc, &rank.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// 10,000 dimensions of size 1 used to overflow a server thread's stack (the whole process
/// aborted), 1,000 killed the Python worker. Both protocols now refuse more than 32 dimensions
/// before walking the shape; 32 reach preprocess as 32 nested lists.
#[test]
fn deep_tensors_are_refused_and_neither_server_nor_worker_dies() {
    let home = python_home();
    let server = Server::start(&home);
    let infer = "/v2/models/depth/infer";
    let (status, first) = server.post(infer, &deep_request(1));
    assert_eq!(status, 200, "{first}");
    let pid = first["outputs"][0]["data"].clone();

    for rank in [10_000, 1_000, 33] {
        let (status, body) = server.post(infer, &deep_request(rank));
        assert_eq!(status, 400, "rank {rank}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("shape has {rank} dimensions; at most 32")),
            "{error}"
        );
        let answer = deep_grpc(&server, rank);
        assert!(
            answer.starts_with("INVALID_ARGUMENT") && answer.contains("at most 32"),
            "rank {rank}: {answer}"
        );
    }
    let (status, body) = server.post(infer, &deep_request(32));
    assert_eq!(status, 200, "{body}");
    assert_eq!(deep_grpc(&server, 32), "OK");

    // The same worker answers: nothing above cost it its life.
    let (status, last) = server.post(infer, &deep_request(1));
    assert_eq!(status, 200, "{last}");
    assert_eq!(last["outputs"][0]["data"], pid, "{first} {last}");
    assert_eq!(server.get("/health/live").0, 200);
}
