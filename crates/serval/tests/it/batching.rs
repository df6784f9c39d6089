//! Dynamic batching against a real `serval serve`: concurrent clients on a batched ONNX endpoint
//! get their own answers over every protocol, the batch metrics show merged calls under load and
//! single-request calls when idle, a full queue answers 429. The concurrent clients live in
//! tests/python/batching.py (tritonclient for gRPC).

use std::path::Path;

use crate::serve::{Server, wait_until};
use crate::{Home, python};

fn add(home: &Home, args: &[&str]) {
    let mut all = vec!["model", "add"];
    all.extend_from_slice(args);
    home.ok(&all);
}

fn script(server: &Server, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/batching.py");
    let http = server.base.trim_start_matches("http://");
    let output = std::process::Command::new(python())
        .arg(&script)
        .arg(args[0])
        .arg(http)
        .args(&args[1..])
        .output()
        .expect("run tests/python/batching.py");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "batching checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A sample of the endpoint's `serval_batch_size_rows` (`_count`, or `_bucket{le="1.0"}`).
fn batch_sample(metrics: &str, endpoint: &str, sample: &str) -> f64 {
    let (name, le) = match sample {
        "count" => ("serval_batch_size_rows_count{".to_string(), String::new()),
        le => (
            "serval_batch_size_rows_bucket{".to_string(),
            format!("le=\"{le}\","),
        ),
    };
    let labels = format!("{le}endpoint=\"{endpoint}\",version=\"\"}}");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}{labels} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}{labels} in:\n{metrics}"))
}

#[test]
fn concurrent_clients_get_their_own_rows_from_a_batched_onnx_endpoint() {
    let home = Home::new();
    home.service("batching");
    let digits = home.upload("digits", "sklearn_mlp_digits.onnx", &[]);
    add(
        &home,
        &[
            "--engine",
            "onnx",
            "--endpoint",
            "digits",
            "--model-id",
            &digits,
            "--max-batch-size",
            "32",
            "--max-queue-delay-ms",
            "20",
        ],
    );
    add(
        &home,
        &[
            "--engine",
            "onnx",
            "--endpoint",
            "digits_plain",
            "--model-id",
            &digits,
        ],
    );
    let server = Server::start_with(&home, &["--runner-threads", "1"]);
    wait_until("both endpoints loaded", || {
        let (status, body) = server.get("/health/ready");
        status == 200 && body["endpoints"] == 2 && body["failed"] == serde_json::json!([])
    });
    let requests = 150;
    let printed = script(
        &server,
        &[
            "own-rows",
            &server.grpc,
            "digits",
            "digits_plain",
            &requests.to_string(),
            "64",
        ],
    );
    assert!(
        printed.contains("answered with their own rows"),
        "{printed}"
    );
    print!("{printed}");

    // Under load, calls merged requests: fewer engine calls than requests.
    let metrics = server.get_text("/metrics");
    let calls = batch_sample(&metrics, "digits", "count");
    assert!(
        calls < f64::from(3 * requests),
        "{calls} calls for {} requests: nothing was merged",
        3 * requests
    );
    assert_eq!(
        batch_sample(&metrics, "digits_plain", "count"),
        f64::from(3 * requests),
        "the endpoint without batching makes one call per request"
    );
    // Idle: a one-row request is a call of one row, at once.
    let single_before = batch_sample(&metrics, "digits", "1.0");
    let row: Vec<String> = (0..64).map(|i| (i % 16).to_string()).collect();
    let (status, body) = server.post(
        "/serve/digits",
        &format!("{{\"instances\": [[{}]]}}", row.join(", ")),
    );
    assert_eq!(status, 200, "{body}");
    let metrics = server.get_text("/metrics");
    assert_eq!(batch_sample(&metrics, "digits", "count"), calls + 1.0);
    assert_eq!(batch_sample(&metrics, "digits", "1.0"), single_before + 1.0);

    // The instance's status says how the endpoint runs.
    let list = home.ok(&["--json", "model", "list"]);
    assert!(
        list.contains("native onnx (1 runner thread, batching up to 32 rows, 20000 µs delay)"),
        "{list}"
    );
    assert!(server.stop().success());
}

/// Builds `bench/make_mlp.py`'s network (256 → 2 × 2048 → 10) and registers it; its id.
fn mlp(home: &Home) -> String {
    let model = home.path().join("mlp.onnx");
    let make = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/make_mlp.py");
    let built = std::process::Command::new(python())
        .arg(&make)
        .arg("--out")
        .arg(&model)
        .status()
        .expect("run bench/make_mlp.py");
    assert!(built.success());
    let out = home.ok(&[
        "model",
        "upload",
        "--name",
        "mlp",
        "--path",
        model.to_str().unwrap(),
    ]);
    out.lines()
        .find_map(|l| l.strip_prefix("Model created and registered, new Model ID="))
        .unwrap_or_else(|| panic!("unexpected upload output: {out}"))
        .to_string()
}

#[test]
fn a_full_batch_queue_answers_429_with_retry_after() {
    let home = Home::new();
    home.service("queue");
    let id = mlp(&home);
    add(
        &home,
        &[
            "--engine",
            "onnx",
            "--endpoint",
            "mlp",
            "--model-id",
            &id,
            "--max-batch-size",
            "8",
            "--max-queue-size",
            "1",
        ],
    );
    let server = Server::start_with(&home, &["--runner-threads", "1"]);
    wait_until("the endpoint loaded", || {
        let (status, body) = server.get("/health/ready");
        status == 200 && body["endpoints"] == 1 && body["failed"] == serde_json::json!([])
    });
    // 16 requests of 512 rows at once: each runs alone (more rows than the batch) for tens of
    // milliseconds, one may wait, the rest are refused.
    let printed = script(&server, &["queue-full", "mlp", "256", "512", "16"]);
    assert!(printed.contains("refused with 429"), "{printed}");
    print!("{printed}");
    let refused: usize = printed
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .expect("refused count");
    let metrics = server.get_text("/metrics");
    assert!(
        metrics.contains(&format!(
            "serval_batch_rejected_total{{endpoint=\"mlp\",version=\"\"}} {refused}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "serval_requests_total{{endpoint=\"mlp\",version=\"\",protocol=\"clearml\",outcome=\"overloaded\"}} {refused}"
        )),
        "{metrics}"
    );
    assert!(server.stop().success());
}

#[test]
fn batching_flags_are_checked_and_stored_as_triton_keys() {
    let home = Home::new();
    home.service("flags");
    let digits = home.upload("digits", "sklearn_mlp_digits.onnx", &[]);
    let sklearn = home.upload("sklearn", "clearml_sklearn_logreg.pkl", &[]);
    let err = home.fail(&[
        "model",
        "add",
        "--engine",
        "sklearn",
        "--endpoint",
        "s",
        "--model-id",
        &sklearn,
        "--max-batch-size",
        "8",
    ]);
    assert!(err.contains("runs its model in Python workers"), "{err}");
    let err = home.fail(&[
        "model",
        "add",
        "--engine",
        "onnx",
        "--endpoint",
        "d",
        "--model-id",
        &digits,
        "--max-queue-delay-ms",
        "3",
    ]);
    assert!(err.contains("max_batch_size"), "{err}");
    // clearml's Triton-style keys are the same setting.
    add(
        &home,
        &[
            "--engine",
            "onnx",
            "--endpoint",
            "d",
            "--model-id",
            &digits,
            "--aux-config",
            "max_batch_size=16",
            "dynamic_batching.max_queue_delay_microseconds=1500",
        ],
    );
    add(
        &home,
        &[
            "--engine",
            "onnx",
            "--endpoint",
            "e",
            "--model-id",
            &digits,
            "--max-batch-size",
            "16",
            "--max-queue-delay-ms",
            "1.5",
        ],
    );
    let list = home.json(&["model", "list"]);
    let endpoints = list["endpoints"].as_array().unwrap();
    assert_eq!(endpoints[0]["aux_config"], endpoints[1]["aux_config"]);
    assert_eq!(
        endpoints[1]["aux_config"],
        serde_json::json!({"max_batch_size": 16, "dynamic_batching": {"max_queue_delay_microseconds": 1500}})
    );
}

const ROWS_PREPROCESS: &str = "\
import numpy as np

class Preprocess:
    def preprocess(self, body, state, collect_custom_statistics_fn=None):
        state['tag'] = body['tag']
        return np.array(body['rows'], dtype=np.float32)

    def postprocess(self, data, state, collect_custom_statistics_fn=None):
        return {'tag': state['tag'], 'y': data.tolist()}
";

/// The native model between a Python endpoint's preprocess and postprocess batches too: requests
/// from both workers merge into one call, each postprocess gets its own rows.
#[test]
fn the_native_model_between_preprocess_and_postprocess_is_batched() {
    let home = Home::new();
    home.service("py-batching");
    // A model slow enough (over a millisecond a call) that requests meet while it runs.
    let model = mlp(&home);
    let code = home.write("rows/preprocess.py", ROWS_PREPROCESS);
    add(
        &home,
        &[
            "--engine",
            "onnx",
            "--endpoint",
            "mlp_py",
            "--model-id",
            &model,
            "--preprocess",
            code.to_str().unwrap(),
            "--max-batch-size",
            "64",
            "--max-queue-delay-ms",
            "20",
        ],
    );
    let server = Server::start_with(&home, &["--runner-threads", "1", "--python-workers", "2"]);
    wait_until("the endpoint loaded", || {
        let (status, body) = server.get("/health/ready");
        status == 200 && body["endpoints"] == 1 && body["failed"] == serde_json::json!([])
    });
    let body = |tag: usize| {
        let rows: Vec<Vec<f64>> = (0..1 + tag % 3)
            .map(|r| {
                (0..256)
                    .map(|f| ((tag * 7 + r * 3 + f) % 17) as f64 / 17.0)
                    .collect()
            })
            .collect();
        serde_json::json!({"tag": tag, "rows": rows}).to_string()
    };
    // One at a time first: what each request must get back.
    let expected: Vec<serde_json::Value> = (0..48)
        .map(|tag| {
            let (status, reply) = server.post("/serve/mlp_py", &body(tag));
            assert_eq!(status, 200, "{reply}");
            reply
        })
        .collect();
    let before = batch_sample(&server.get_text("/metrics"), "mlp_py", "count");
    let server = std::sync::Arc::new(server);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let server = server.clone();
            let expected = expected.clone();
            std::thread::spawn(move || {
                for tag in (t..48).step_by(8) {
                    let (status, reply) = server.post("/serve/mlp_py", &body(tag));
                    assert_eq!(status, 200, "{reply}");
                    assert_eq!(reply["tag"], tag, "{reply}");
                    let (got, want) = (&reply["y"], &expected[tag]["y"]);
                    let got: Vec<f64> = got
                        .as_array()
                        .unwrap()
                        .iter()
                        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
                        .collect();
                    let want: Vec<f64> = want
                        .as_array()
                        .unwrap()
                        .iter()
                        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
                        .collect();
                    assert_eq!(got.len(), want.len(), "request {tag}");
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() < 1e-5, "request {tag}: {got:?} vs {want:?}");
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let calls = batch_sample(&server.get_text("/metrics"), "mlp_py", "count") - before;
    assert!(
        calls < 48.0,
        "{calls} engine calls for 48 concurrent requests"
    );
    let server = std::sync::Arc::into_inner(server).unwrap();
    assert!(server.stop().success());
}

/// clearml's huggingface example batches with Triton's keys: preferred sizes 1…64 and a long
/// queue delay (5 s there; the longest allowed, 60 s, here). Triton sends a batch that adds up to
/// a preferred size at once and waits only for one that cannot; so must serval: 200 requests from
/// 16 clients are all answered within a request timeout far shorter than the delay, and the
/// batch metrics show merged calls.
#[test]
fn preferred_batch_sizes_start_at_once_whatever_the_delay() {
    let home = Home::new();
    home.service("preferred");
    let digits = home.upload("digits", "sklearn_mlp_digits.onnx", &[]);
    add(
        &home,
        &[
            "--engine",
            "onnx",
            "--endpoint",
            "digits",
            "--model-id",
            &digits,
            "--aux-config",
            "max_batch_size=64",
            "dynamic_batching.preferred_batch_size=[1,2,4,8,16,32,64]",
            "dynamic_batching.max_queue_delay_microseconds=60000000",
        ],
    );
    let server = Server::start_with(&home, &["--runner-threads", "1", "--request-timeout", "20"]);
    wait_until("digits", || server.get("/v2/models/digits/ready").0 == 200);
    let row: Vec<String> = (0..64).map(|i| (i % 16).to_string()).collect();
    let body = format!("{{\"instances\": [[{}]]}}", row.join(", "));
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..16)
            .map(|_| {
                scope.spawn(|| {
                    (0..13)
                        .map(|_| server.post("/serve/digits", &body).0)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    assert_eq!(statuses.len(), 208);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let metrics = server.get_text("/metrics");
    let calls = batch_sample(&metrics, "digits", "count");
    assert!(
        calls < 208.0,
        "{calls} calls for 208 requests: nothing was merged"
    );
    let list = home.ok(&["--json", "model", "list"]);
    assert!(
        list.contains("preferred [1, 2, 4, 8, 16, 32, 64]"),
        "{list}"
    );
}
