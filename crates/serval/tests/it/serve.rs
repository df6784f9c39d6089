//! `serval serve` as a process: the real binary on port 0, driven by the real CLI.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Home;

/// Generous: these waits only end early, so they never make a test slow when things work.
const DEADLINE: Duration = Duration::from_secs(60);
pub const IRIS: &str = r#"{"x0": 1, "x1": 2, "x2": 3, "x3": 4}"#;

pub struct Server {
    pub child: Child,
    pub base: String,
    /// `host:port` of the V2 gRPC server.
    pub grpc: String,
    agent: ureq::Agent,
}

pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Server {
    pub fn start(home: &Home) -> Server {
        Server::start_with(home, &[])
    }

    /// Starts `serval serve` with extra flags (the test venv's Python for workers) and waits
    /// until it is ready.
    pub fn start_with(home: &Home, extra: &[&str]) -> Server {
        let server = Server::spawn_with(home, extra);
        wait_until("readiness", || server.get("/health/ready").0 == 200);
        server
    }

    /// Starts `serval serve` and returns once it listens (its first load pass may still run).
    pub fn spawn_with(home: &Home, extra: &[&str]) -> Server {
        let log = std::fs::File::create(home.path().join("serve.log")).unwrap();
        let mut args = vec![
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--grpc-port",
            "0",
            "--poll-interval-ms",
            "100",
        ];
        args.extend_from_slice(extra);
        let mut child = home
            .command(&args)
            .env("SERVAL_PYTHON", crate::python())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start serval serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in: {line}"))
            .to_string();
        let grpc = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("grpc://"))
            .unwrap_or_else(|| panic!("no gRPC address in: {line}"))
            .to_string();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Server {
            child,
            base,
            grpc,
            agent,
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        match self.agent.get(format!("{}{path}", self.base)).call() {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut()
                    .read_to_string()
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or(Value::Null),
            ),
            Err(_) => (0, Value::Null),
        }
    }

    /// GETs a text body (e.g. `/metrics`).
    pub fn get_text(&self, path: &str) -> String {
        self.agent
            .get(format!("{}{path}", self.base))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.post_as(path, "application/json", body.as_bytes())
    }

    /// POSTs a body with the given Content-Type.
    pub fn post_as(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        self.post_with(path, &[("Content-Type", content_type)], body)
    }

    /// POSTs a body with the given headers.
    pub fn post_with(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
        let (status, text) = self.post_text(path, headers, body);
        match status {
            0 => (0, Value::String(text)),
            _ => (status, serde_json::from_str(&text).unwrap_or(Value::Null)),
        }
    }

    /// POSTs a body with the given headers; the reply's text as it came (status 0: the error).
    pub fn post_text(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        match request.send(body) {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(e) => (0, e.to_string()),
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "serve did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange on its own connection: the reply's head (lowercase) and body.
fn raw_exchange(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let address = server.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete reply head");
    let head = String::from_utf8_lossy(&reply[..split]).to_lowercase();
    let mut rest = reply[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        rest = dechunk(&rest);
    }
    (head, rest)
}

/// The data of a chunked body.
fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = bytes
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size");
        let size =
            usize::from_str_radix(std::str::from_utf8(&bytes[..line]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&bytes[line + 2..line + 2 + size]);
        bytes = &bytes[line + 2 + size + 2..];
    }
}

#[test]
fn serve_answers_and_follows_cli_changes() {
    let home = Home::new();
    let service = home.service("demo");
    let xgb = home.upload("xgb", "clearml_xgb.json", &[]);
    let lgbm = home.upload("lgbm", "clearml_lgbm.txt", &[]);
    home.add_endpoint("xgboost", "test_model_xgb", None, &xgb);
    home.add_endpoint("lightgbm", "test_model_lgbm", Some("1"), &lgbm);
    let server = Server::start(&home);

    assert_eq!(
        server.post("/serve/test_model_xgb", IRIS),
        (200, json!({"y": [1.9921026229858398]}))
    );
    let (status, reply) = server.post("/serve/test_model_lgbm/1", IRIS);
    assert_eq!((status, &reply["y"]), (200, &json!([2])));
    assert_eq!(server.post("/serve/missing", IRIS).0, 404);
    // Replies (above 32 bytes) are compressed for a client that asks (Accept-Encoding), and only
    // then; a wrong method is still clearml's JSON 405.
    let lgbm_url = "/serve/test_model_lgbm/1";
    let gzip = ["Accept-Encoding: gzip"];
    let (head, body) = raw_exchange(&server, "POST", lgbm_url, &gzip, IRIS);
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let mut text = String::new();
    let mut inflate = flate2::read::GzDecoder::new(&body[..]);
    std::io::Read::read_to_string(&mut inflate, &mut text).unwrap();
    let compressed: Value = serde_json::from_str(&text).unwrap();
    let (head, body) = raw_exchange(&server, "POST", lgbm_url, &[], IRIS);
    assert!(!head.contains("content-encoding"), "{head}");
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), compressed);
    assert_eq!(compressed["y"], json!([2]));
    let (head, body) = raw_exchange(&server, "GET", "/serve/test_model_xgb", &[], "");
    assert!(head.starts_with("http/1.1 405"), "{head}");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"detail": "Method Not Allowed"})
    );

    // Add a version and a canary while serving; both are picked up.
    home.add_endpoint("xgboost", "test_model_lgbm", Some("2"), &xgb);
    home.ok(&[
        "model",
        "canary",
        "--endpoint",
        "test_model_lgbm",
        "--weights",
        "1",
        "0",
        "--input-endpoint-prefix",
        "test_model_lgbm/",
    ]);
    wait_until("version 2", || {
        server.post("/serve/test_model_lgbm/2", IRIS).0 == 200
    });
    wait_until("the canary", || {
        server.post("/serve/test_model_lgbm", IRIS).1 == json!({"y": [1.9921026229858398]})
    });

    // The instance and the endpoint states are visible to the CLI.
    wait_until("status", || {
        let list = home.json(&["model", "list"]);
        list["instances"][0]["endpoints"]["test_model_lgbm/2"]["state"] == "loaded"
    });
    let services = home.json(&["list"]);
    assert_eq!(
        services[0]["instances"][0]["port"]
            .as_u64()
            .unwrap()
            .to_string(),
        server.base.rsplit(':').next().unwrap()
    );
    assert_eq!(services[0]["id"], service.as_str());

    // A broken model shows as failed with the reason, and the previous version keeps serving.
    let broken = home.write("broken.txt", "tree\nversion=v4\n");
    let bad = home.json(&[
        "model",
        "upload",
        "--name",
        "bad",
        "--path",
        broken.to_str().unwrap(),
    ]);
    home.ok(&[
        "model",
        "add",
        "--engine",
        "lightgbm",
        "--endpoint",
        "test_model_lgbm",
        "--version",
        "1",
        "--model-id",
        bad["id"].as_str().unwrap(),
    ]);
    wait_until("the failure in status", || {
        let text = home.ok(&["model", "list"]);
        text.lines().any(|l| {
            l.starts_with("test_model_lgbm/1") && l.contains("failed (previous version serving)")
        })
    });
    assert_eq!(
        server.post("/serve/test_model_lgbm/1", IRIS).1["y"],
        json!([2])
    );

    // SIGTERM: a clean exit, and the instance leaves the status.
    let status = server.stop();
    assert!(status.success(), "{status}");
    assert_eq!(home.json(&["model", "list"])["instances"], json!([]));
}

#[test]
fn reload_under_load_fails_no_request() {
    let home = Home::new();
    home.service("demo");
    let xgb = home.upload("xgb", "clearml_xgb.json", &[]);
    let lgbm = home.upload("lgbm", "clearml_lgbm.txt", &[]);
    let other = home.upload("other", "lgbm_multi_iris.txt", &[]);
    home.add_endpoint("xgboost", "stable", None, &xgb);
    home.add_endpoint("lightgbm", "stable", Some("2"), &lgbm);
    home.ok(&[
        "model",
        "canary",
        "--endpoint",
        "split",
        "--weights",
        "0.5",
        "0.5",
        "--input-endpoints",
        "stable",
        "stable/2",
    ]);
    let server = Arc::new(Server::start(&home));

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = ["/serve/stable", "/serve/stable/2", "/serve/split"]
        .into_iter()
        .map(|path| {
            let (server, stop, ok, failures) =
                (server.clone(), stop.clone(), ok.clone(), failures.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = server.post(path, IRIS);
                    if status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{path}: {status} {body}"));
                    }
                }
            })
        })
        .collect();

    // 50 changes to the endpoint set: add, replace the model, remove, canary edits.
    for i in 0..50 {
        match i % 5 {
            0 => home.ok(&[
                "model",
                "add",
                "--engine",
                "lightgbm",
                "--endpoint",
                "churn",
                "--version",
                &i.to_string(),
                "--model-id",
                &other,
            ]),
            1 => home.ok(&[
                "model",
                "add",
                "--engine",
                "lightgbm",
                "--endpoint",
                "churn",
                "--version",
                &(i - 1).to_string(),
                "--model-id",
                &lgbm,
            ]),
            2 => home.ok(&[
                "model",
                "canary",
                "--endpoint",
                "split",
                "--weights",
                &format!("0.{}", i % 9 + 1),
                "0.5",
                "--input-endpoints",
                "stable",
                "stable/2",
            ]),
            3 => home.ok(&[
                "model",
                "canary",
                "--endpoint",
                "churn_canary",
                "--weights",
                "1",
                "--input-endpoint-prefix",
                "churn/",
            ]),
            _ => home.ok(&["model", "remove", "--endpoint", &format!("churn/{}", i - 4)]),
        };
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the last change be served, with traffic still flowing.
    let start = ok.load(Ordering::Relaxed);
    wait_until("more traffic after the changes", || {
        ok.load(Ordering::Relaxed) > start + 100
    });
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok.load(Ordering::Relaxed) > 100);
}

#[test]
fn a_client_gone_mid_upload_counts_as_cancelled_and_the_server_carries_on() {
    use std::io::Write;
    let home = Home::new();
    home.service("uploads");
    let server = Server::start(&home);
    let addr = server.base.trim_start_matches("http://").to_string();
    for path in ["/serve/anything", "/v2/repository/index"] {
        let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            tcp,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789"
        )
        .unwrap();
        drop(tcp);
    }
    wait_until("both truncated uploads counted", || {
        let metrics = server.get_text("/metrics");
        metrics.contains(
            r#"serval_requests_total{endpoint="",version="",protocol="clearml",outcome="cancelled"} 1"#,
        )
    });
    assert_eq!(server.get("/health/live").0, 200);
    assert!(server.stop().success());
}
