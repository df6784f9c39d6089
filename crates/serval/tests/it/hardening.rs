//! Hostile input against a real server: small bodies that decode into huge ones are refused by
//! what they become, off the async threads, and the server stays responsive and small.

use std::io::Write;
use std::time::Duration;

use crate::Home;
use crate::serve::{Server, wait_until};

/// `bytes`, gzip-compressed.
pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// `[[0,0,0,0],[0,0,0,0],...]` with `rows` rows, gzip-compressed (≈ 100 KB per 10 M values).
pub(crate) fn gzip_rows(rows: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"{\"instances\":[").unwrap();
    let row = b"[0,0,0,0],";
    let mut chunk = Vec::with_capacity(row.len() * 4096);
    let mut left = rows - 1;
    while left > 0 {
        let n = left.min(4096);
        chunk.clear();
        for _ in 0..n {
            chunk.extend_from_slice(row);
        }
        gz.write_all(&chunk).unwrap();
        left -= n;
    }
    gz.write_all(b"[0,0,0,0]]}").unwrap();
    gz.finish().unwrap()
}

/// Peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    proc_status_kb(pid, "VmHWM") * 1024
}

/// A field of `/proc/<pid>/status` in KB (`VmRSS`: resident memory now, `VmHWM`: its peak).
pub(crate) fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap()
}

#[test]
fn amplified_bodies_are_refused_by_what_they_decode_into() {
    let home = Home::new();
    home.service("hardening");
    let model = home.upload("iris", "xgb_multi_iris.json", &[]);
    home.add_endpoint("xgboost", "xgb", None, &model);
    let server = Server::start(&home);
    wait_until("xgb", || {
        server.post("/serve/xgb", crate::serve::IRIS).0 == 200
    });
    // The issue's reproduction: 10.5 M rows = 42 M values in ~200 KB of gzip.
    let body = gzip_rows(10_485_756);
    assert!(body.len() < 400_000, "{} bytes", body.len());
    let headers = [
        ("Content-Type", "application/json"),
        ("Content-Encoding", "gzip"),
    ];
    // Two at once, and the server keeps answering health checks meanwhile.
    let (first, second, live) = std::thread::scope(|scope| {
        let a = scope.spawn(|| server.post_with("/serve/xgb", &headers, &body));
        let b = scope.spawn(|| server.post_with("/v2/models/xgb/infer", &headers, &body));
        // Every health check made meanwhile must answer (within the client's generous 30 s).
        let mut live = Vec::new();
        while !(a.is_finished() && b.is_finished()) {
            let start = std::time::Instant::now();
            let status = server.get("/health/live").0;
            live.push((status, start.elapsed()));
            std::thread::sleep(Duration::from_millis(5));
        }
        (a.join().unwrap(), b.join().unwrap(), live)
    });
    assert_eq!(first.0, 413, "{:?}", first.1);
    let detail = first.1["detail"].as_str().unwrap_or_default().to_string();
    assert!(detail.contains("16000000 values"), "{detail}");
    assert_eq!(second.0, 413, "{:?}", second.1);
    assert!(
        second.1["error"]
            .as_str()
            .unwrap_or_default()
            .contains("16000000 values"),
        "{:?}",
        second.1
    );
    assert!(live.iter().all(|(status, _)| *status == 200), "{live:?}");
    let slowest = live.iter().map(|(_, took)| *took).max().unwrap_or_default();
    eprintln!(
        "health checks during two amplified bodies: {}, slowest {slowest:?}",
        live.len()
    );
    // The decoded text (≤ the 100 MB body limit) is the most the server ever held: no tree.
    let peak = peak_rss(server.child.id());
    eprintln!("peak RSS {} MB", peak >> 20);
    assert!(peak < 600 << 20, "peak RSS {} MB", peak >> 20);
    // A limit of its own: a smaller request over a lower cap is refused the same way.
    drop(server);
    let server = Server::start_with(&home, &["--max-values", "100"]);
    let rows = format!("{{\"instances\": [{}[1,2,3,4]]}}", "[1,2,3,4],".repeat(30));
    let (status, reply) = server.post("/serve/xgb", &rows);
    assert_eq!(status, 413, "{reply}");
    assert!(
        reply["detail"].as_str().unwrap().contains("100 values"),
        "{reply}"
    );
    assert_eq!(server.post("/serve/xgb", crate::serve::IRIS).0, 200);
}

/// A big body of rows for a native model is read straight into the model's input (no JSON tree):
/// 9 M values are answered row by row, with a peak far below what a tree of them costs (≈ 1 GB,
/// measured before the typed path).
#[test]
fn a_big_body_of_rows_is_read_without_a_tree() {
    let home = Home::new();
    home.service("rows");
    let model = home.upload("cancer", "xgb_bin_breast_cancer.json", &[]);
    home.add_endpoint("xgboost", "cancer", None, &model);
    let server = Server::start(&home);
    let row = |v: &str| format!("[{}]", vec![v; 30].join(","));
    let (a, b) = (row("0.5"), row("100"));
    wait_until("cancer", || {
        server.post("/serve/cancer", &format!("[{a}]")).0 == 200
    });
    let single = |r: &str| server.post("/serve/cancer", &format!("[{r}]")).1;
    let (one_a, one_b) = (single(&a), single(&b));
    assert_ne!(one_a["probabilities"], one_b["probabilities"]);
    let rows = 300_000;
    let mut body = String::with_capacity(rows * (b.len() + 1) + 16);
    body.push_str("{\"instances\": [");
    for i in 0..rows {
        if i > 0 {
            body.push(',');
        }
        body.push_str(if i % 2 == 0 { &a } else { &b });
    }
    body.push_str("]}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(body.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    drop(body);
    let reply: serde_json::Value = {
        let mut response = ureq::post(format!("{}/serve/cancer", server.base))
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "gzip")
            .send(&gz[..])
            .expect("answered 200");
        let text = response
            .body_mut()
            .with_config()
            .limit(200 << 20)
            .read_to_string()
            .unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let (y, p) = (
        reply["y"].as_array().unwrap(),
        reply["probabilities"].as_array().unwrap(),
    );
    assert_eq!((y.len(), p.len()), (rows, rows));
    for i in [0, 1, 2, 3, rows - 2, rows - 1] {
        let one = if i % 2 == 0 { &one_a } else { &one_b };
        assert_eq!(y[i], one["y"][0], "row {i}");
        assert_eq!(p[i], one["probabilities"][0], "row {i}");
    }
    let peak = peak_rss(server.child.id());
    eprintln!("peak RSS {} MB for {} values", peak >> 20, rows * 30);
    assert!(peak < 500 << 20, "peak RSS {} MB", peak >> 20);
}

/// Admission control: past the in-flight bounds a request is answered 429 with `Retry-After` at
/// once (not queued), per endpoint and server-wide; the server keeps serving the rest.
#[test]
fn requests_past_the_in_flight_bounds_get_429_with_retry_after() {
    let home = Home::new();
    home.service("admission");
    let code = home.write(
        "slow/preprocess.py",
        "import time\nclass Preprocess:\n    def process(self, data, state, collect_custom_statistics_fn=None):\n        time.sleep(data.get('sleep', 0))\n        return {'ok': 1}\n",
    );
    for endpoint in ["slow", "other"] {
        home.add_custom(endpoint, &code);
    }
    let check = |server: &Server, busy: &str, refused: &str, what: &str| {
        std::thread::scope(|scope| {
            let slow = scope.spawn(|| server.post(busy, r#"{"sleep": 3}"#));
            wait_until("the slow request in flight", || {
                server
                    .get_text("/metrics")
                    .contains("serval_requests_in_flight 1")
            });
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut response = agent
                .post(format!("{}{refused}", server.base))
                .header("Content-Type", "application/json")
                .send("{}")
                .unwrap();
            assert_eq!(response.status().as_u16(), 429, "{what}");
            assert_eq!(response.headers().get("retry-after").unwrap(), "1");
            let body = response.body_mut().read_to_string().unwrap();
            assert!(body.contains(what), "{body}");
            assert_eq!(slow.join().unwrap().0, 200, "the admitted request finishes");
        });
    };
    let server = Server::start_with(&home, &["--max-in-flight-per-endpoint", "1"]);
    wait_until("slow", || server.post("/serve/slow", "{}").0 == 200);
    check(
        &server,
        "/serve/slow",
        "/serve/slow",
        "--max-in-flight-per-endpoint",
    );
    assert_eq!(server.post("/serve/other", "{}").0, 200);
    drop(server);

    let server = Server::start_with(&home, &["--max-in-flight", "1"]);
    wait_until("slow", || server.post("/serve/slow", "{}").0 == 200);
    check(
        &server,
        "/serve/slow",
        "/v2/models/other/infer",
        "--max-in-flight",
    );
    let (status, _) = server.post("/serve/other", "{}");
    assert_eq!(status, 200, "a free slot again");
}

pub(crate) fn xgb_home() -> Home {
    let home = Home::new();
    home.service("hardening");
    let model = home.upload("iris", "xgb_multi_iris.json", &[]);
    home.add_endpoint("xgboost", "xgb", None, &model);
    home
}

/// A minimal HTTP/1.1 keep-alive client that honours `Connection: close` (as browsers, curl and
/// Python's http.client do), so the test sees exactly what the server does.
#[derive(Default)]
struct KeepAlive {
    stream: Option<std::io::BufReader<std::net::TcpStream>>,
}

impl KeepAlive {
    fn post(&mut self, addr: &str, path: &str, body: &str) -> std::io::Result<u16> {
        use std::io::BufRead;
        if self.stream.is_none() {
            let stream = std::net::TcpStream::connect(addr)?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            self.stream = Some(std::io::BufReader::new(stream));
        }
        let reader = self.stream.as_mut().unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: serval\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        reader.get_mut().write_all(request.as_bytes())?;
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (mut length, mut close) = (0usize, false);
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let header = line.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(v) = header.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if header == "connection: close" {
                close = true;
            }
        }
        let mut body = vec![0u8; length];
        std::io::Read::read_exact(reader, &mut body)?;
        if close {
            self.stream = None;
        }
        Ok(status)
    }
}

/// SIGTERM while 50 keep-alive clients send requests back to back: every request the server
/// read gets its answer; clients then find the port closed (refused: nothing was sent).
#[test]
fn sigterm_under_keep_alive_load_leaves_no_request_unanswered() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let home = xgb_home();
    let server = Server::start_with(&home, &["--drain-delay", "1"]);
    wait_until("xgb", || {
        server.post("/serve/xgb", crate::serve::IRIS).0 == 200
    });
    let answered = Arc::new(AtomicU64::new(0));
    let unanswered = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let (base, answered, unanswered, stop) = (
                server.base.clone(),
                answered.clone(),
                unanswered.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let addr = base.trim_start_matches("http://").to_string();
                let mut client = KeepAlive::default();
                while !stop.load(Ordering::Relaxed) {
                    match client.post(&addr, "/serve/xgb", crate::serve::IRIS) {
                        Ok(200) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(status) => panic!("status {status}"),
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
                        Err(e) => {
                            unanswered.lock().unwrap().push(e.to_string());
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    wait_until("load on every client", || {
        answered.load(Ordering::Relaxed) > 2_000
    });
    let status = server.stop();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    assert!(status.success(), "{status:?}");
    let unanswered = unanswered.lock().unwrap();
    assert!(
        unanswered.is_empty(),
        "{} requests got no answer: {:?}",
        unanswered.len(),
        &unanswered[..unanswered.len().min(5)]
    );
}

/// 500 connections that never finish their headers do not stop a good request, and each is
/// closed by the server after the header timeout.
#[test]
fn slow_header_connections_do_not_stop_good_requests() {
    let home = xgb_home();
    let server = Server::start_with(&home, &["--header-timeout", "2"]);
    wait_until("xgb", || {
        server.post("/serve/xgb", crate::serve::IRIS).0 == 200
    });
    let addr = server.base.trim_start_matches("http://").to_string();
    let slow: Vec<std::net::TcpStream> = (0..500)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(&addr).unwrap();
            stream
                .write_all(b"POST /serve/xgb HTTP/1.1\r\nHost: serval\r\nX-Slow: ")
                .unwrap();
            stream
        })
        .collect();
    assert_eq!(server.post("/serve/xgb", crate::serve::IRIS).0, 200);
    assert_eq!(server.get("/health/live").0, 200);
    // The server answers 408 or just closes: either way the read ends, not times out.
    crate::hostile::assert_closed_by_the_server(slow, "a slow-header connection");
    // (The client's pooled keep-alive connection was idle for the header timeout too, and the
    // server may have closed it: a POST on it fails once, then a new connection is answered.)
    wait_until("a good request after the slow ones", || {
        server.post("/serve/xgb", crate::serve::IRIS).0 == 200
    });
}

/// `--tls-cert/--tls-key`: HTTP and gRPC over TLS (checked by Python's ssl and tritonclient's
/// gRPC client against the test CA); plain HTTP to the TLS port gets no answer.
#[test]
fn http_and_grpc_over_tls() {
    use crate::hostile::{start_tls, url_in};
    let home = xgb_home();
    let certs = serval_testkit::make_tls_files(home.path());
    let (cert, key) = (certs.cert.to_str().unwrap(), certs.key.to_str().unwrap());
    let (mut child, line) = start_tls(
        &home,
        &["--grpc-port", "0", "--tls-cert", cert, "--tls-key", key],
    );
    let https = url_in(&line, "https://");
    let grpcs = url_in(&line, "grpcs://")["grpcs://".len()..].to_string();
    let script = r#"
import json, ssl, sys, time, urllib.request
import tritonclient.grpc as grpcclient
https, grpcs, ca = sys.argv[1:4]
context = ssl.create_default_context(cafile=ca)
body = json.dumps({"x0": 1, "x1": 2, "x2": 3, "x3": 4}).encode()
for attempt in range(600):
    try:
        request = urllib.request.Request(https + "/serve/xgb", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=context) as r:
            print("https", r.status, json.load(r))
            break
    except urllib.error.HTTPError as e:
        time.sleep(0.1)
client = grpcclient.InferenceServerClient(grpcs, ssl=True, root_certificates=ca)
print("grpcs", client.is_model_ready("xgb"))
"#;
    let out = std::process::Command::new(crate::python())
        .args(["-c", script, &https, &grpcs, certs.ca.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("https 200"), "{stdout}");
    assert!(stdout.contains("grpcs True"), "{stdout}");
    // Plain HTTP to the TLS port: no HTTP answer.
    let plain = https.replace("https://", "http://");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    assert!(agent.get(format!("{plain}/health/live")).call().is_err());
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends a binary V2 batch (`data`: the FP32 elements of `shape`) that cannot finish within the
/// server's request timeout: 504 each time; returns whether the server's log then says `logged`
/// (the work stopped). On a very busy machine the deadline may pass before inference starts (then
/// nothing runs at all), so it tries a few times.
fn past_the_deadline(
    home: &Home,
    server: &Server,
    model: &str,
    input: &str,
    shape: [usize; 2],
    data: &[u8],
    logged: &str,
) -> bool {
    let header = format!(
        r#"{{"inputs":[{{"name":"{input}","shape":[{},{}],"datatype":"FP32","parameters":{{"binary_data_size":{}}}}}]}}"#,
        shape[0],
        shape[1],
        data.len()
    );
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(data);
    let length = header.len().to_string();
    let log = home.path().join("serve.log");
    let stopped = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(logged)
    };
    for _ in 0..5 {
        let (status, reply) = server.post_with(
            &format!("/v2/models/{model}/infer"),
            &[
                ("Content-Type", "application/octet-stream"),
                ("Inference-Header-Content-Length", &length),
            ],
            &body,
        );
        assert_eq!(status, 504, "{reply}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !stopped() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if stopped() {
            return true;
        }
    }
    false
}

/// A big batch past its deadline: 504 at the deadline, and the inference itself stops between
/// chunks rather than running to the end (the server says so in its log).
#[test]
fn inference_past_the_deadline_stops() {
    let home = xgb_home();
    // 3 s: room for reading the body on a busy machine before the inference starts.
    let server = Server::start_with(&home, &["--request-timeout", "3"]);
    wait_until("xgb", || {
        server.post("/serve/xgb", crate::serve::IRIS).0 == 200
    });
    // 2 M rows: decoded in a fraction of a second, far more than 3 s of tree walks (debug build).
    let rows = 2_000_000usize;
    let data: Vec<u8> = (0..rows * 4)
        .flat_map(|i| ((i % 7) as f32).to_le_bytes())
        .collect();
    let stopped = past_the_deadline(
        &home,
        &server,
        "xgb",
        "input",
        [rows, 4],
        &data,
        &format!("of {rows} rows: the request's deadline passed"),
    );
    assert!(stopped, "the inference did not stop between chunks");
    assert_eq!(server.post("/serve/xgb", crate::serve::IRIS).0, 200);
}

/// Builds the bodies of the corpus that are too big or too binary to write in JSON.
fn generated(kind: &str) -> Vec<u8> {
    let gzip = |data: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    };
    match kind {
        "deep_nesting" => format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        "not_utf8" => vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'],
        "gzip_bomb" => gzip(&vec![b' '; 200 << 20]),
        "amplified_rows" => gzip_rows(4_500_000),
        "truncated_binary" => {
            let header = r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}"#;
            let mut body = header.as_bytes().to_vec();
            body.extend_from_slice(&[0u8; 7]);
            body
        }
        other => panic!("unknown generator {other}"),
    }
}

/// Sends one raw HTTP/1.1 request and reads the whole answer: status and body.
fn raw_request(addr: &str, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (and close) before reading the whole body: that is fine.
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.as_bytes().to_vec())
        .unwrap_or_default();
    (status, body)
}

/// Every case of `tests/corpus/bad_inputs.json` against one real server: the expected status and a
/// readable JSON error each; afterwards the server is healthy and its memory back near idle.
#[test]
fn the_bad_input_corpus_gets_clear_errors_and_leaves_the_server_healthy() {
    let home = xgb_home();
    let server = Server::start(&home);
    wait_until("xgb", || {
        server.post("/serve/xgb", crate::serve::IRIS).0 == 200
    });
    let pid = server.child.id();
    let rss = || proc_status_kb(pid, "VmRSS");
    std::thread::sleep(Duration::from_secs(1));
    let idle = rss();
    let addr = server.base.trim_start_matches("http://").to_string();
    let corpus: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/bad_inputs.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut failures = Vec::new();
    for case in corpus.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let body = match case["generate"].as_str() {
            Some(kind) => generated(kind),
            None => case["body"]
                .as_str()
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
        };
        let path = match case["generate_path"].as_str() {
            Some(_) => format!("/serve/{}", "a".repeat(16_000)),
            None => case["path"].as_str().unwrap().to_string(),
        };
        let method = case["method"].as_str().unwrap_or("POST");
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: serval\r\nConnection: close\r\n");
        let mut length_given = false;
        if let Some(headers) = case["headers"].as_object() {
            for (k, v) in headers {
                let mut v = v.as_str().unwrap().to_string();
                if v == "HEADER_LENGTH" {
                    // The JSON header of a generated binary request ends at its first "]}".
                    let text = String::from_utf8_lossy(&body);
                    v = text.find("]}").map_or(0, |i| i + 2).to_string();
                }
                length_given |= k.eq_ignore_ascii_case("content-length");
                head += &format!("{k}: {v}\r\n");
            }
        }
        if !case["headers"]
            .as_object()
            .is_some_and(|h| h.contains_key("Content-Type"))
        {
            head += "Content-Type: application/json\r\n";
        }
        if !length_given {
            head += &format!("Content-Length: {}\r\n", body.len());
        }
        head += "\r\n";
        let sent: &[u8] = if case["no_body_sent"] == true {
            &[]
        } else {
            &body
        };
        let (status, reply) = raw_request(&addr, &head, sent);
        let expected = case["status"].as_u64().unwrap() as u16;
        let readable = serde_json::from_slice::<serde_json::Value>(&reply)
            .ok()
            .is_some_and(|v| {
                v["detail"].is_string() || v["detail"].is_array() || v["error"].is_string()
            });
        if status != expected || !readable {
            failures.push(format!(
                "{name}: {status} (expected {expected}) {}",
                String::from_utf8_lossy(&reply[..reply.len().min(200)])
            ));
        }
        assert_eq!(server.get("/health/live").0, 200, "after {name}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(server.post("/serve/xgb", crate::serve::IRIS).0, 200);
    assert_eq!(server.get("/health/ready").0, 200);
    // Memory returns near idle: the blocking threads that inflated and parsed the big bodies give
    // their free pages back (`offload.rs`).
    let limit = 2 * idle.max(20_000);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while rss() > limit && std::time::Instant::now() < deadline {
        // An idle allocator has no occasion to return pages: keep a trickle of small requests.
        server.post("/serve/xgb", crate::serve::IRIS);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(rss() <= limit, "RSS {} KB, idle {idle} KB", rss());
}

/// The same for ONNX, whose batch is one call: ONNX Runtime is asked to terminate the run.
/// The model (made here with the `onnx` package) is 800 chained 64×64 matrix products with tanh
/// between them (nothing to fold away), so a 50,000-row batch takes seconds of ONNX Runtime
/// while its 13 MB body decodes in a moment.
#[test]
fn onnx_inference_past_the_deadline_is_terminated() {
    let home = Home::new();
    let model_path = home.path().join("slow.onnx");
    let script = r#"
import sys, numpy as np, onnx
from onnx import TensorProto, helper, numpy_helper
w = numpy_helper.from_array(np.full((64, 64), 0.001, dtype=np.float32), "w")
nodes, last = [], "x"
for i in range(800):
    nodes.append(helper.make_node("MatMul", [last, "w"], [f"m{i}"]))
    nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i}"]))
    last = f"h{i}"
nodes.append(helper.make_node("Identity", [last], ["y"]))
graph = helper.make_graph(nodes, "slow",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64])], [w])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.save(model, sys.argv[1])
"#;
    crate::python_script(script, &[model_path.to_str().unwrap()]);
    home.service("onnx-deadline");
    let uploaded = home.ok(&[
        "model",
        "upload",
        "--name",
        "slow",
        "--path",
        model_path.to_str().unwrap(),
    ]);
    let model = uploaded
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("Model created and registered, new Model ID="))
        .unwrap()
        .to_string();
    home.add_endpoint("onnx", "slow", None, &model);
    let server = Server::start_with(&home, &["--request-timeout", "1"]);
    wait_until("slow", || server.get("/v2/models/slow/ready").0 == 200);
    let rows = 50_000usize;
    let stopped = past_the_deadline(
        &home,
        &server,
        "slow",
        "x",
        [rows, 64],
        &vec![0u8; rows * 64 * 4],
        &format!("inference stopped during a run of {rows} rows"),
    );
    assert!(stopped, "ONNX Runtime was not asked to stop");
    assert_eq!(server.get("/v2/models/slow/ready").0, 200);
}

/// A 16 MiB `ModelInferRequest` of empty `inputs` entries, gzip-compressed (≈ 16 KB on the wire)
/// — it decodes into gigabytes of structs. Refused with RESOURCE_EXHAUSTED before it is decoded
/// (peak RSS grows by less than 100 MB); under `--require-auth` without a key, refused with
/// UNAUTHENTICATED before the message is even read. The server answers health checks after both.
#[test]
fn grpc_messages_are_checked_before_they_are_decoded() {
    let home = xgb_home();
    let script = r#"
import grpc, sys
address, key = sys.argv[1:3]
message = b"\x0a\x03xgb" + b"\x2a\x00" * (8 << 20)
channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)])
call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                           request_serializer=lambda m: m, response_deserializer=lambda m: m)
metadata = [("authorization", "Bearer " + key)] if key else []
try:
    call(message, metadata=metadata, compression=grpc.Compression.Gzip, timeout=60)
    print("answered")
except grpc.RpcError as e:
    print(e.code().name, e.details())
"#;
    let attack = |server: &Server, key: &str| crate::python_script(script, &[&server.grpc, key]);
    let key = home
        .ok(&["auth", "create-key", "--name", "attacker"])
        .trim()
        .to_string();

    for (flags, credential, expected) in [
        (&[][..], "", "RESOURCE_EXHAUSTED"),
        (&["--require-auth"][..], key.as_str(), "RESOURCE_EXHAUSTED"),
        (&["--require-auth"][..], "", "UNAUTHENTICATED"),
    ] {
        let server = Server::start_with(&home, flags);
        let pid = server.child.id();
        let before = peak_rss(pid);
        let answer = attack(&server, credential);
        assert!(answer.starts_with(expected), "{flags:?}: {answer}");
        if expected == "RESOURCE_EXHAUSTED" {
            assert!(answer.contains("--max-request-memory"), "{answer}");
        }
        let grew = peak_rss(pid).saturating_sub(before);
        assert!(
            grew < 100 << 20,
            "{flags:?}: peak RSS grew by {} MB",
            grew >> 20
        );
        assert_eq!(server.get("/health/live").0, 200);
    }
}
