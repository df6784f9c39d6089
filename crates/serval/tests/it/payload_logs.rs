//! Payload logs (`serval logging`): a sampled fraction of an endpoint's requests, of every
//! protocol, written as Hive-partitioned Parquet files that pyarrow and DuckDB read; to object
//! storage (moto) with nothing accepted lost across a SIGTERM under load.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::Home;
use crate::serve::{Server, wait_until};

/// The `payload logs closed: …` line of a stopped server: (accepted, written, dropped).
fn closed_counts(home: &Home) -> (u64, u64, u64) {
    let log = std::fs::read_to_string(home.path().join("serve.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("payload logs closed:"))
        .unwrap_or_else(|| panic!("no closing line in:\n{log}"));
    let number = |word: &str| -> u64 {
        let before = line.split(word).next().unwrap();
        before
            .rsplit(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no count before '{word}' in {line}"))
    };
    (
        number(" records accepted"),
        number(" written"),
        number(" dropped"),
    )
}

/// Reads every file under `dir` with pyarrow (Hive partitions) and with DuckDB
/// (`hive_partitioning = true`); returns pyarrow's rows, its column types and DuckDB's count.
const READ: &str = r#"
import json, sys
import pyarrow.dataset as ds
import duckdb
root = sys.argv[1]
table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
rows = table.to_pylist()
for r in rows:
    r["time"] = r["time"].isoformat()
types = {f.name: str(f.type) for f in table.schema}
con = duckdb.connect()
glob = root + "/**/*.parquet"
count, endpoints = con.execute(
    "SELECT count(*), list(DISTINCT endpoint) FROM read_parquet(?, hive_partitioning = true)", [glob]
).fetchone()
duck_types = dict(
    (name, kind) for name, kind, *_ in con.execute(
        "DESCRIBE SELECT * FROM read_parquet(?, hive_partitioning = true)", [glob]
    ).fetchall()
)
print(json.dumps({"rows": rows, "types": types, "duckdb_count": count,
                  "duckdb_endpoints": endpoints, "duckdb_types": duck_types}))
"#;

fn read_logs(dir: &Path) -> Value {
    serde_json::from_str(&crate::python_script(READ, &[&dir.display().to_string()])).unwrap()
}

fn floats(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("a list: {value}"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1e-6))
}

#[test]
fn a_sample_of_every_protocol_is_logged_as_parquet_with_what_was_sent_and_answered() {
    let home = Home::new();
    home.service("logged");
    let xgb = home.upload("iris-xgb", "xgb_multi_iris.json", &[]);
    home.add_endpoint("xgboost", "iris", Some("1"), &xgb);
    let logs = home.path().join("logs");
    let destination = format!("file://{}", logs.display());
    // Refusals are one line each and write nothing.
    for (args, expected) in [
        (
            vec![
                "--endpoint",
                "iris",
                "--sample",
                "0",
                "--destination",
                &destination,
            ],
            "--sample must be in (0, 1]",
        ),
        (
            vec!["--endpoint", "iris", "--destination", "file://logs"],
            "must name an absolute folder",
        ),
        (
            vec![
                "--endpoint",
                "iris",
                "--destination",
                "https://example.com/x",
            ],
            "is not a supported destination",
        ),
        (
            vec!["--endpoint", "ir*s", "--destination", &destination],
            "'*' may only end a prefix",
        ),
    ] {
        let mut all = vec!["logging", "add"];
        all.extend(args);
        let error = home.fail(&all);
        assert!(error.contains(expected), "{error}");
        assert_eq!(
            error.lines().filter(|l| l.starts_with("Error")).count(),
            1,
            "{error}"
        );
    }
    assert_eq!(
        home.json(&["logging", "list"])["payload_logs"],
        json!([]),
        "refusals wrote nothing"
    );
    let added = home.ok(&[
        "logging",
        "add",
        "--endpoint",
        "iris",
        "--sample",
        "0.25",
        "--destination",
        &destination,
        "--max-file-seconds",
        "1",
    ]);
    assert!(
        added.contains("Payload log of iris added: 25% of requests"),
        "{added}"
    );
    let listed = home.json(&["model", "list"]);
    assert_eq!(listed["payload_logs"][0]["sample"], 0.25, "{listed}");
    assert_eq!(listed["payload_logs"][0]["max_file_seconds"], 1, "{listed}");

    let server = Server::start(&home);
    wait_until("the payload log in the routing table", || {
        server
            .get_text("/metrics")
            .contains(r#"serval_payload_records_total{endpoint="iris/1"}"#)
    });
    // Every request carries its number i in its first feature (and V2 requests in their id),
    // so each logged row can be matched with what was sent and answered.
    let row = |i: usize| [i as f64, 2.0 + (i % 3) as f64, 3.5, 0.25 * (i % 9) as f64];
    let mut answers: HashMap<usize, (String, Value)> = HashMap::new();
    for i in 0..4_500 {
        let x = row(i);
        let body = json!({"x0": x[0], "x1": x[1], "x2": x[2], "x3": x[3]}).to_string();
        let (status, reply) = server.post("/serve/iris/1", &body);
        assert_eq!(status, 200, "{reply}");
        answers.insert(i, ("clearml".into(), reply));
    }
    for i in 4_500..9_000 {
        let body = json!({"id": format!("rest-{i}"), "inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row(i)}]})
        .to_string();
        let (status, reply) = server.post("/v2/models/iris/versions/1/infer", &body);
        assert_eq!(status, 200, "{reply}");
        answers.insert(i, ("v2_rest".into(), reply));
    }
    let grpc = crate::python_script(
        r#"
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
client = grpcclient.InferenceServerClient(sys.argv[1])
out = {}
for i in range(9000, 10000):
    x = [i, 2.0 + i % 3, 3.5, 0.25 * (i % 9)]
    tensor = grpcclient.InferInput("input", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.array([x], dtype=np.float32))
    r = client.infer("iris", [tensor], model_version="1", request_id=f"grpc-{i}")
    out[i] = {"label": r.as_numpy("label").tolist(),
              "probabilities": r.as_numpy("probabilities").ravel().tolist()}
print(json.dumps(out))
"#,
        &[&server.grpc],
    );
    let grpc: HashMap<String, Value> = serde_json::from_str(&grpc).unwrap();
    for (i, reply) in grpc {
        answers.insert(i.parse().unwrap(), ("v2_grpc".into(), reply));
    }
    assert_eq!(answers.len(), 10_000);
    // A clean stop writes every record accepted; files are complete (`.parquet`) at once.
    assert!(server.stop().success());
    let (accepted, written, dropped) = closed_counts(&home);
    assert_eq!((written, dropped), (accepted, 0));

    let read = read_logs(&logs);
    let rows = read["rows"].as_array().unwrap();
    // 2,500 expected; the binomial's standard deviation is 43.
    assert!((2_350..=2_650).contains(&rows.len()), "{} rows", rows.len());
    assert_eq!(rows.len() as u64, accepted);
    assert_eq!(read["duckdb_count"], rows.len());
    assert_eq!(read["duckdb_endpoints"], json!(["iris/1"]), "the true url");
    for (column, kind) in [
        ("time", "timestamp[us, tz=UTC]"),
        ("endpoint", "string"),
        ("version", "string"),
        ("request_id", "string"),
        ("protocol", "string"),
        ("status", "int32"),
        ("latency_ms", "double"),
        ("in_input", "list<element: double not null>"),
        ("out_label", "list<element: int64 not null>"),
        ("out_probabilities", "list<element: double not null>"),
    ] {
        assert_eq!(read["types"][column], kind, "{column}: {}", read["types"]);
    }
    assert_eq!(read["duckdb_types"]["in_input"], "DOUBLE[]");
    assert_eq!(read["duckdb_types"]["time"], "TIMESTAMP WITH TIME ZONE");
    let mut protocols: HashMap<&str, usize> = HashMap::new();
    for r in rows {
        let input = floats(&r["in_input"]);
        let i = input[0] as usize;
        assert_eq!(input, row(i), "{r}");
        let (protocol, reply) = &answers[&i];
        assert_eq!(r["protocol"], protocol.as_str(), "{r}");
        *protocols.entry(protocol.as_str()).or_default() += 1;
        assert_eq!(r["endpoint"], "iris/1");
        assert_eq!(r["version"], "1");
        assert_eq!(r["status"], 200);
        assert_eq!(r["ep"], "iris_1", "the Hive partition");
        assert!(r["latency_ms"].as_f64().unwrap() > 0.0);
        let (label, probabilities) = match protocol.as_str() {
            "clearml" => (reply["y"].clone(), reply["probabilities"][0].clone()),
            "v2_rest" => {
                assert_eq!(r["request_id"], format!("rest-{i}"));
                (
                    reply["outputs"][0]["data"].clone(),
                    reply["outputs"][1]["data"].clone(),
                )
            }
            _ => {
                assert_eq!(r["request_id"], format!("grpc-{i}"));
                (reply["label"].clone(), reply["probabilities"].clone())
            }
        };
        assert_eq!(r["out_label"], label, "{r} {reply}");
        assert!(
            close(&floats(&r["out_probabilities"]), &floats(&probabilities)),
            "{r} {reply}"
        );
    }
    assert_eq!(
        protocols.len(),
        3,
        "every protocol is logged: {protocols:?}"
    );
    // Rolled over by age (1 s): several files, none left incomplete.
    let files = walk(&logs);
    assert!(files.len() >= 2, "{files:?}");
    // The logs make a drift reference: every logged row of iris (one row per request), split
    // into the model's four features.
    let logs_dir = logs.display().to_string();
    let added = home.ok(&[
        "monitor",
        "reference",
        "--endpoint",
        "iris",
        "--data",
        &logs_dir,
    ]);
    assert!(
        added.contains(&format!("4 features from {} rows", rows.len())),
        "{added}"
    );
    let none = home.fail(&[
        "monitor",
        "reference",
        "--endpoint",
        "iris",
        "--data",
        &logs_dir,
        "--since",
        "2100-01-01T00:00:00Z",
    ]);
    assert!(none.contains("no logged requests of 'iris'"), "{none}");
    assert!(
        files
            .iter()
            .all(|f| f.extension().is_some_and(|e| e == "parquet")),
        "{files:?}"
    );
}

#[test]
fn object_storage_logs_lose_nothing_accepted_across_a_sigterm_under_load() {
    let moto = serval_testkit::Moto::start();
    moto.create_bucket("payloads");
    let home = Home::with_env(moto.env());
    home.service("logged");
    let code = home.write(
        "price/preprocess.py",
        "class Preprocess:\n    def process(self, data, state, collect_custom_statistics_fn=None):\n        return {'y': data['x'] * 2.0}\n",
    );
    home.add_custom("price", &code);
    home.ok(&[
        "logging",
        "add",
        "--endpoint",
        "pri*",
        "--destination",
        "s3://payloads/serving",
    ]);
    let server = Server::start(&home);
    wait_until("the payload log in the routing table", || {
        server
            .get_text("/metrics")
            .contains(r#"serval_payload_records_total{endpoint="price"}"#)
    });
    // Load from four clients; SIGTERM arrives in the middle of it.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let base = server.base.clone();
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let answered = answered.clone();
            let base = base.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                for i in 0..100_000 {
                    let body = json!({"x": c * 100_000 + i}).to_string();
                    match agent
                        .post(format!("{base}/serve/price"))
                        .header("Content-Type", "application/json")
                        .send(body.as_bytes())
                    {
                        Ok(r) if r.status() == 200 => {
                            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        _ => break,
                    }
                }
            })
        })
        .collect();
    wait_until("some load", || {
        answered.load(std::sync::atomic::Ordering::Relaxed) >= 300
    });
    assert!(server.stop().success());
    for client in clients {
        client.join().unwrap();
    }
    let answered = answered.load(std::sync::atomic::Ordering::Relaxed);
    let (accepted, written, dropped) = closed_counts(&home);
    assert_eq!((written, dropped), (accepted, 0));
    // Every answered request was logged (sample 1); a request the server finished but whose
    // answer the closing connection lost may be logged too.
    assert!(accepted as usize >= answered, "{accepted} < {answered}");

    let read = crate::python_script(
        r#"
import json, sys
import pyarrow.dataset as ds
import pyarrow.fs as fs
s3 = fs.S3FileSystem(endpoint_override=sys.argv[1], scheme="http", region="us-east-1",
                     access_key="testing", secret_key="testing-secret")
files = [f.path for f in s3.get_file_info(fs.FileSelector("payloads/serving", recursive=True))
         if f.type == fs.FileType.File]
table = ds.dataset("payloads/serving", filesystem=s3, format="parquet", partitioning="hive").to_table()
rows = table.select(["endpoint", "in_body", "out_body", "ep", "status"]).to_pylist()
print(json.dumps({"files": files, "rows": rows}))
"#,
        &[&moto.endpoint],
    );
    let read: Value = serde_json::from_str(&read).unwrap();
    let files = read["files"].as_array().unwrap();
    assert!(
        files
            .iter()
            .all(|f| f.as_str().unwrap().ends_with(".parquet")
                && f.as_str().unwrap().contains("/ep=price/date=")),
        "{files:?}"
    );
    let rows = read["rows"].as_array().unwrap();
    assert_eq!(
        rows.len() as u64,
        accepted,
        "every accepted record uploaded"
    );
    for r in rows.iter().take(50) {
        let sent: Value = serde_json::from_str(r["in_body"].as_str().unwrap()).unwrap();
        let reply: Value = serde_json::from_str(r["out_body"].as_str().unwrap()).unwrap();
        assert_eq!(
            reply["y"].as_f64().unwrap(),
            sent["x"].as_f64().unwrap() * 2.0,
            "{r}"
        );
        assert_eq!(r["endpoint"], "price");
        assert_eq!(r["status"], 200);
    }
    // Uploaded files leave the spool.
    let spool = home.path().join("home");
    let left: Vec<_> = walk(&spool)
        .into_iter()
        .filter(|p| {
            p.to_string_lossy().contains("payload-spool")
                && p.extension().is_some_and(|e| e == "parquet")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn a_copy_that_would_exceed_the_request_memory_budget_is_dropped_and_the_request_answered() {
    let home = Home::new();
    home.service("logged");
    let xgb = home.upload("iris-xgb", "xgb_multi_iris.json", &[]);
    home.add_endpoint("xgboost", "iris", None, &xgb);
    let logs = format!("file://{}", home.path().join("logs").display());
    home.ok(&[
        "logging",
        "add",
        "--endpoint",
        "iris",
        "--destination",
        &logs,
    ]);
    // 40,000 rows take about 11 MiB to decode: within a 16 MiB budget, but not twice over.
    let server = Server::start_with(&home, &["--max-request-memory", "16777216"]);
    let counter = |name: &str| -> Option<f64> {
        let prefix = format!(r#"serval_payload_{name}_total{{endpoint="iris"}} "#);
        server
            .get_text("/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
    };
    wait_until("the payload log in the routing table", || {
        counter("records").is_some()
    });
    let rows = 40_000;
    let big = json!({"inputs": [{"name": "input", "shape": [rows, 4], "datatype": "FP32",
        "data": vec![1.0; rows * 4]}]});
    let (status, reply) = server.post("/v2/models/iris/infer", &big.to_string());
    assert_eq!(status, 200, "{reply}");
    assert_eq!(counter("dropped"), Some(1.0));
    assert_eq!(counter("records"), Some(0.0));
    // A small request is logged as usual.
    let small = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
        "data": [1, 2, 3, 4]}]});
    assert_eq!(
        server.post("/v2/models/iris/infer", &small.to_string()).0,
        200
    );
    assert_eq!(counter("records"), Some(1.0));
}
