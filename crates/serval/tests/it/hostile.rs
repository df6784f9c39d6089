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
    home.add_custom("depth", &home.write("depth/preprocess.py", DEPTH));
    home
}

/// A V2 JSON request with one INT64 input of `rank` dimensions of size 1.
fn deep_request(rank: usize) -> String {
    json!({"inputs": [{"name": "x", "shape": vec![1; rank], "datatype": "INT64", "data": [7]}]})
        .to_string()
}

/// A `ModelInfer` call to the `depth` endpoint whose request `build` fills in (Python lines
/// on tritonclient's generated `request`, sent as raw bytes): the status code's name and message.
fn grpc_call(server: &Server, build: &str) -> String {
    let script = format!(
        r#"
import grpc, sys
from tritonclient.grpc import service_pb2
request = service_pb2.ModelInferRequest(model_name="depth")
{build}
channel = grpc.insecure_channel(sys.argv[1])
call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                           request_serializer=lambda m: m.SerializeToString(),
                           response_deserializer=service_pb2.ModelInferResponse.FromString)
try:
    call(request, timeout=60)
    print("OK")
except grpc.RpcError as e:
    print(e.code().name, e.details())
"#
    );
    crate::python_script(&script, &[&server.grpc])
}

/// The deep request over gRPC.
fn deep_grpc(server: &Server, rank: usize) -> String {
    grpc_call(
        server,
        &format!(
            "tensor = request.inputs.add(name=\"x\", datatype=\"INT64\", shape=[1] * {rank})\n\
             tensor.contents.int64_contents.append(7)"
        ),
    )
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

/// What silent and half-open sockets send before going quiet: nothing, part of the HTTP/2
/// preface, the whole preface and an empty SETTINGS frame (an HTTP/2 session that never asks for
/// anything), part of an HTTP/1 request head.
const SILENCES: [&[u8]; 4] = [
    b"",
    b"PRI * HTTP/2.0\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    b"GET /health/live HTTP/1.1\r\nHost: ",
];

/// Opens `n` sockets to `addr` that send one of [`SILENCES`] and then nothing.
fn silent_sockets(addr: &str, n: usize) -> Vec<std::net::TcpStream> {
    use std::io::Write;
    (0..n)
        .map(|i| {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.write_all(SILENCES[i % SILENCES.len()]).unwrap();
            stream
        })
        .collect()
}

/// Waits until the server has closed every one of `sockets` (reads end instead of timing out).
pub(crate) fn assert_closed_by_the_server(sockets: Vec<std::net::TcpStream>, what: &str) {
    use std::io::Read;
    for mut stream in sockets {
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) => {
                    assert!(
                        !matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ),
                        "{what}: a silent socket stayed open: {e}"
                    );
                    break;
                }
            }
        }
    }
}

/// `GET /health/live` on one new connection, no retries: the answer's status line.
fn live_once(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let request = b"GET /health/live HTTP/1.1\r\nHost: serval\r\nConnection: close\r\n\r\n";
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or("no answer").to_string()
}

/// A client in Python: `/health/live` over HTTP(S) or `ServerLive` over gRPC; prints "live".
fn python_client(args: &[&str]) -> String {
    let script = r#"
import ssl, sys, urllib.request
mode, address = sys.argv[1:3]
if mode == "grpc":
    import tritonclient.grpc as grpcclient
    print("live" if grpcclient.InferenceServerClient(address).is_server_live(client_timeout=30) else "not live")
else:
    context = ssl.create_default_context(cafile=sys.argv[3]) if mode == "https" else None
    with urllib.request.urlopen(address + "/health/live", timeout=30, context=context) as r:
        print("live" if r.status == 200 else r.status)
"#;
    let out = std::process::Command::new(crate::python())
        .args(["-c", script])
        .args(args)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// 60 sockets that never complete a request at `--max-connections 60` used to lock every other
/// client out for as long as they stayed open, and nothing ever closed them. Now a new client
/// is served (a connection with nothing in progress makes room), and the silent ones are closed
/// by their clock (`--header-timeout`): on the HTTP port, the gRPC port and over TLS.
#[test]
fn silent_sockets_neither_lock_clients_out_nor_stay_open() {
    let home = Home::new();
    home.service("hostile");
    let flags = ["--max-connections", "60", "--header-timeout", "3"];
    let server = Server::start_with(&home, &flags);
    let http = server.base.trim_start_matches("http://").to_string();

    let silent = silent_sockets(&http, 60);
    assert_eq!(live_once(&http), "HTTP/1.1 200 OK", "HTTP port");
    assert_closed_by_the_server(silent, "HTTP port");

    let silent = silent_sockets(&server.grpc, 60);
    assert_eq!(python_client(&["grpc", &server.grpc]), "live", "gRPC port");
    assert_closed_by_the_server(silent, "gRPC port");
    drop(server);

    // TLS: sockets that never start (or never finish) the handshake.
    let certs = serval_testkit::make_tls_files(home.path());
    let (cert, key) = (certs.cert.to_str().unwrap(), certs.key.to_str().unwrap());
    let mut tls_flags = flags.to_vec();
    tls_flags.extend(["--tls-cert", cert, "--tls-key", key]);
    let (mut child, line) = start_tls(&home, &tls_flags);
    let https = url_in(&line, "https://");
    let address = https.trim_start_matches("https://");
    let mut silent = silent_sockets(address, 30);
    for _ in 0..30 {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        // A TLS record header announcing a ClientHello that never comes.
        stream
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .unwrap();
        silent.push(stream);
    }
    let ca = certs.ca.to_str().unwrap();
    assert_eq!(python_client(&["https", &https, ca]), "live", "TLS");
    assert_closed_by_the_server(silent, "TLS");
    let _ = child.kill();
    let _ = child.wait();
}

/// `serval serve` with `flags` (TLS ones among them); returns the child and its listening line
/// once it is up.
pub(crate) fn start_tls(home: &Home, flags: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut args = vec!["serve", "--host", "127.0.0.1", "--port", "0"];
    args.extend_from_slice(flags);
    let mut child = home
        .command(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// The URL of `scheme` (`"https://"`, `"grpcs://"`) in a listening line.
pub(crate) fn url_in(line: &str, scheme: &str) -> String {
    line.split_whitespace()
        .find(|w| w.starts_with(scheme))
        .unwrap_or_else(|| panic!("no {scheme} address in: {line}"))
        .to_string()
}

/// A body that stops arriving on a route without its own deadline (`POST /v2/repository/index`)
/// and gRPC calls whose message never comes (`ModelInfer`, served by hand, and
/// `RepositoryIndex`, served by tonic) are answered when `--request-timeout` passes instead of
/// holding their connection and memory for ever.
#[test]
fn bodies_and_streams_that_never_finish_are_timed_out() {
    use std::io::{Read, Write};
    let home = Home::new();
    home.service("hostile");
    let server = Server::start_with(&home, &["--request-timeout", "2"]);
    let http = server.base.trim_start_matches("http://");

    let mut stream = std::net::TcpStream::connect(http).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    stream
        .write_all(b"POST /v2/repository/index HTTP/1.1\r\nHost: serval\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains("2 s"), "{answer}");

    let script = r#"
import grpc, os, sys, time
channel = grpc.insecure_channel(sys.argv[1])
def never():
    time.sleep(3600)
    yield b""
for method in ["ModelInfer", "RepositoryIndex"]:
    call = channel.stream_unary("/inference.GRPCInferenceService/" + method,
                                request_serializer=lambda m: m, response_deserializer=lambda m: m)
    try:
        call(never())
        print(method, "answered")
    except grpc.RpcError as e:
        print(method, e.code().name)
sys.stdout.flush()
os._exit(0)
"#;
    let out = std::process::Command::new(crate::python())
        .args(["-c", script, &server.grpc])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "ModelInfer DEADLINE_EXCEEDED\nRepositoryIndex DEADLINE_EXCEEDED",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.get("/health/live").0, 200);
}

/// A large request that is answered (1 M rows in, their probabilities out) leaves its reply and
/// buffers on threads that then sit idle; the server gives that memory back within seconds with
/// no further traffic at all (it used to keep hundreds of MB until later requests came).
#[test]
fn memory_comes_back_after_a_large_answered_request_without_further_traffic() {
    let home = crate::hardening::xgb_home();
    let server = Server::start(&home);
    crate::serve::wait_until("xgb", || {
        server.post("/serve/xgb", crate::serve::IRIS).0 == 200
    });
    let pid = server.child.id();
    let rss = || crate::hardening::proc_status_kb(pid, "VmRSS");
    let idle = rss();
    let body = crate::hardening::gzip_rows(1_000_000);
    let (status, reply) = server.post_with(
        "/serve/xgb",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &body,
    );
    assert_eq!(status, 200, "{reply}");
    let peak = rss();
    let limit = 2 * idle.max(20_000);
    crate::serve::wait_until("RSS back within 2× idle", || rss() <= limit);
    eprintln!(
        "RSS idle {idle} KB, after the answer {peak} KB, then {} KB",
        rss()
    );
}

/// A gzip V2 body of one BYTES input of `n` zero-length elements in binary form (4 bytes each
/// on the wire, a 24-byte `Vec` each once decoded), and its header's length.
fn empty_bytes_binary(n: usize) -> (Vec<u8>, String) {
    let header = json!({"inputs": [{"name": "x", "shape": [n], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 4 * n}}]})
    .to_string();
    let mut raw = header.clone().into_bytes();
    raw.resize(header.len() + 4 * n, 0);
    (crate::hardening::gzip(&raw), header.len().to_string())
}

/// What a request makes the server build is charged before it is built, against
/// `--max-request-memory`: 300,000 empty strings in V2 JSON, 2 M zero-length binary BYTES (8 MB
/// that used to decode into 48 MB of element headers before any check), the same over gRPC, and
/// 300,000 values of clearml JSON for Python are refused with 413 / RESOURCE_EXHAUSTED naming the
/// flag — and the server's peak memory shows the binary tensor was never decoded.
#[test]
fn requests_are_charged_before_what_they_make_is_built() {
    let home = python_home();
    let server = Server::start_with(&home, &["--max-request-memory", "16000000"]);
    crate::serve::wait_until("depth", || {
        server.post("/v2/models/depth/infer", &deep_request(1)).0 == 200
    });
    let budget = "--max-request-memory";
    let strings = json!({"inputs": [{"name": "x", "shape": [300_000], "datatype": "BYTES",
                                     "data": vec![""; 300_000]}]})
    .to_string();
    let (status, reply) = server.post("/v2/models/depth/infer", &strings);
    assert_eq!(status, 413, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains(budget), "{reply}");
    let values = format!("[{}0]", "0,".repeat(299_999));
    let (status, reply) = server.post("/serve/depth", &values);
    assert_eq!(status, 413, "{reply}");
    assert!(
        reply["detail"].as_str().unwrap().contains(budget),
        "{reply}"
    );

    let pid = server.child.id();
    let peak_before = crate::hardening::proc_status_kb(pid, "VmHWM");
    let (body, header_length) = empty_bytes_binary(2_000_000);
    let (status, reply) = server.post_with(
        "/v2/models/depth/infer",
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Encoding", "gzip"),
            ("Inference-Header-Content-Length", &header_length),
        ],
        &body,
    );
    assert_eq!(status, 413, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains(budget), "{reply}");
    let grown = crate::hardening::proc_status_kb(pid, "VmHWM").saturating_sub(peak_before);
    // The body (8 MB, inflated step by step) was held; its 2 M elements (48 MB) never were.
    assert!(grown < 40_000, "peak memory grew by {grown} KB");

    let answer = grpc_call(
        &server,
        "request.inputs.add(name=\"x\", datatype=\"BYTES\", shape=[2000000])\n\
         request.raw_input_contents.append(bytes(4 * 2000000))",
    );
    assert!(
        answer.starts_with("RESOURCE_EXHAUSTED") && answer.contains(budget),
        "{answer}"
    );
    // Under the budget, the same endpoint answers.
    let (status, reply) = server.post("/v2/models/depth/infer", &deep_request(3));
    assert_eq!(status, 200, "{reply}");
}

/// Requests in progress share `--max-memory-in-flight`: while one large request is held in
/// its Python worker, a second large one is answered 429 with Retry-After naming the flag (at
/// once, not queued), small requests are served, and once the first is done the second goes
/// through.
#[test]
fn large_requests_in_progress_share_the_server_budget() {
    let home = Home::new();
    home.service("shared-budget");
    let release = home.path().join("release");
    let code = format!(
        r#"
import os, time

class Preprocess:
    def process(self, data, state, collect_custom_statistics_fn=None):
        while not os.path.exists({release:?}):
            time.sleep(0.01)
        return {{"size": len(data)}}
"#,
        release = release.to_str().unwrap()
    );
    home.add_custom("hold", &home.write("hold/preprocess.py", &code));
    let server = Server::start_with(
        &home,
        &[
            "--python-workers",
            "2",
            "--max-request-memory",
            "8000000",
            "--max-memory-in-flight",
            "10000000",
        ],
    );
    std::fs::write(&release, "").unwrap();
    crate::serve::wait_until("hold", || {
        server
            .post_as("/serve/hold", "application/octet-stream", b"x")
            .0
            == 200
    });
    std::fs::remove_file(&release).unwrap();
    // 2 MB of raw bytes: the body, and twice more on its way to the worker — about 6 MB.
    let body = vec![b'x'; 2_000_000];
    let held_memory = || {
        server
            .get_text("/metrics")
            .lines()
            .find_map(|l| {
                l.strip_prefix("serval_request_memory_bytes ")?
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    std::thread::scope(|scope| {
        let first =
            scope.spawn(|| server.post_as("/serve/hold", "application/octet-stream", &body));
        crate::serve::wait_until("the first request's memory is held", || {
            held_memory() >= 6_000_000
        });
        let (status, reply) = server.post_as("/serve/hold", "application/octet-stream", &body);
        assert_eq!(status, 429, "{reply}");
        assert!(
            reply["detail"]
                .as_str()
                .unwrap()
                .contains("--max-memory-in-flight"),
            "{reply}"
        );
        // A small request does not count against the shared budget.
        let small = scope.spawn(|| server.post_as("/serve/hold", "application/octet-stream", b"y"));
        std::fs::write(&release, "").unwrap();
        assert_eq!(first.join().unwrap().0, 200);
        assert_eq!(small.join().unwrap().0, 200);
    });
    crate::serve::wait_until("the memory is given back", || held_memory() == 0);
    let (status, reply) = server.post_as("/serve/hold", "application/octet-stream", &body);
    assert_eq!(
        (status, reply["size"].as_u64()),
        (200, Some(2_000_000)),
        "{reply}"
    );
}

/// A large native reply is written as it is sent: 100,000 rows come back as the same answer as
/// one row, 100,000 times.
#[test]
fn a_large_reply_is_streamed_with_the_same_answer() {
    let home = crate::hardening::xgb_home();
    let server = Server::start(&home);
    crate::serve::wait_until("xgb", || {
        server.post("/serve/xgb", crate::serve::IRIS).0 == 200
    });
    let row = "[5.1, 3.5, 1.4, 0.2]";
    let (status, one) = server.post("/serve/xgb", &format!(r#"{{"instances": [{row}]}}"#));
    assert_eq!(status, 200, "{one}");
    let rows = vec![row; 100_000].join(",");
    let (status, many) = server.post("/serve/xgb", &format!(r#"{{"instances": [{rows}]}}"#));
    assert_eq!(status, 200);
    let (y, p) = (
        many["y"].as_array().unwrap(),
        many["probabilities"].as_array().unwrap(),
    );
    assert_eq!((y.len(), p.len()), (100_000, 100_000));
    assert!(y.iter().all(|v| *v == one["y"][0]));
    assert!(p.iter().all(|v| *v == one["probabilities"][0]));
}
