//! The Open Inference Protocol with a real Triton client: `tritonclient` (PyPI, in the test
//! venv) drives a real `serval serve` over HTTP with JSON tensors, over HTTP with binary tensors
//! and over gRPC, on XGBoost, LightGBM, ONNX (ZipMap classifier, regressor) and Python
//! endpoints; every answer must equal `/serve`'s (the checks are in tests/python/v2_clients.py).

use std::path::Path;

use crate::serve::{Server, wait_until};
use crate::{Home, python};

const FEATURES_PREPROCESS: &str = "\
class Preprocess:
    def preprocess(self, body, state, collect_custom_statistics_fn=None):
        return body['features']

    def postprocess(self, data, state, collect_custom_statistics_fn=None):
        return {'y': data.tolist()}
";

const BODY_LIMIT: &str = "262144";

fn add(home: &Home, args: &[&str]) {
    let mut all = vec!["model", "add"];
    all.extend_from_slice(args);
    home.ok(&all);
}

#[test]
fn tritonclient_over_http_json_binary_and_grpc() {
    let home = Home::new();
    home.service("v2");
    let xgb = home.upload("xgb", "clearml_xgb.json", &[]);
    let lgbm = home.upload("lgbm", "clearml_lgbm.txt", &[]);
    let iris = home.upload("iris onnx", "sklearn_logreg_iris.onnx", &[]);
    let diabetes = home.upload("diabetes onnx", "sklearn_linreg_diabetes.onnx", &[]);
    let sklearn = home.upload("sklearn", "clearml_sklearn_logreg.pkl", &[]);
    // The quickstart's iris/2, for examples/v2/client.py.
    let iris_lgbm = home.upload("iris-lightgbm", "lgbm_multi_iris.txt", &[]);
    add(
        &home,
        &[
            "--engine",
            "lightgbm",
            "--endpoint",
            "iris",
            "--version",
            "2",
            "--model-id",
            &iris_lgbm,
        ],
    );
    add(
        &home,
        &[
            "--engine",
            "xgboost",
            "--endpoint",
            "test_model_xgb",
            "--model-id",
            &xgb,
        ],
    );
    add(
        &home,
        &[
            "--engine",
            "lightgbm",
            "--endpoint",
            "test_model_lgbm",
            "--version",
            "1",
            "--model-id",
            &lgbm,
        ],
    );
    add(
        &home,
        &[
            "--engine",
            "onnx",
            "--endpoint",
            "iris_onnx",
            "--model-id",
            &iris,
        ],
    );
    add(
        &home,
        &[
            "--engine",
            "onnx",
            "--endpoint",
            "diabetes_onnx",
            "--model-id",
            &diabetes,
        ],
    );
    let code = home.write("features/preprocess.py", FEATURES_PREPROCESS);
    add(
        &home,
        &[
            "--engine",
            "sklearn",
            "--endpoint",
            "py_features",
            "--model-id",
            &sklearn,
            "--preprocess",
            code.to_str().unwrap(),
            "--input-name",
            "features",
            "--input-type",
            "float64",
            "--input-size",
            "[-1, 2]",
            "--output-name",
            "y",
            "--output-type",
            "int64",
        ],
    );
    let server = Server::start_with(&home, &["--body-limit", BODY_LIMIT]);
    wait_until("every endpoint loaded", || {
        let (status, body) = server.get("/health/ready");
        status == 200 && body["endpoints"] == 6 && body["failed"] == serde_json::json!([])
    });
    let http = server.base.trim_start_matches("http://");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/v2_clients.py");
    let output = std::process::Command::new(python())
        .arg(&script)
        .args([http, server.grpc.as_str(), BODY_LIMIT])
        .output()
        .expect("run tests/python/v2_clients.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tritonclient checks failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        std::fs::read_to_string(home.path().join("serve.log")).unwrap_or_default()
    );
    assert!(stdout.contains("all V2 client checks passed"), "{stdout}");
    println!("{stdout}");
    // The README's example client, as written, against the same server.
    let example = crate::example("v2/client.py");
    let output = std::process::Command::new(python())
        .args([example.as_str(), http, server.grpc.as_str()])
        .output()
        .expect("run examples/v2/client.py");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (_, serve) = server.post(
        "/serve/iris/2",
        r#"{"instances": [[6.0, 3.4, 4.5, 1.6], [5.1, 3.5, 1.4, 0.2]]}"#,
    );
    assert_eq!(serve["y"], serde_json::json!([1, 0]), "{serve}");
    for line in ["http labels: [1 0]", "grpc labels: [1 0]"] {
        assert!(printed.contains(line), "no `{line}` in:\n{printed}");
    }

    // Every protocol was counted.
    let metrics = server.get_text("/metrics");
    for protocol in ["clearml", "v2_rest", "v2_grpc"] {
        assert!(
            metrics.contains(&format!(
                "serval_requests_total{{endpoint=\"iris_onnx\",version=\"\",protocol=\"{protocol}\",outcome=\"ok\"}}"
            )),
            "{protocol} not counted:\n{metrics}"
        );
    }
    // `serval model list` shows the instance's gRPC address.
    let list = home.ok(&["model", "list"]);
    let grpc_port = server.grpc.rsplit(':').next().unwrap();
    assert!(list.contains(&format!("127.0.0.1:{grpc_port}")), "{list}");
    let services = home.json(&["list"]);
    assert_eq!(
        services[0]["instances"][0]["grpc_port"].as_u64(),
        grpc_port.parse().ok(),
        "{services}"
    );
    assert!(server.stop().success());
}

const SLEEPY: &str = "\
import time

class Preprocess:
    def preprocess(self, body, state, collect_custom_statistics_fn=None):
        if 'sleep' in body:
            # A shape [1] input is its element, as a JSON body would hold it.
            time.sleep(body['sleep'])
        return body

    def process(self, data, state, collect_custom_statistics_fn=None):
        return {'echo': data.get('x', [0]), 'parameters': state.get('parameters', {})}
";

const GRPC_DEADLINE: &str = "\
import sys
import numpy as np
import tritonclient.grpc as grpcclient
client = grpcclient.InferenceServerClient(sys.argv[1])
x = grpcclient.InferInput('sleep', [1], 'FP64')
x.set_data_from_numpy(np.array([30.0]))
try:
    client.infer('sleepy', [x], client_timeout=1.0)
    print('no error')
except Exception as error:
    print(error.status())
";

#[test]
fn python_endpoints_get_v2_parameters_and_grpc_deadlines_are_honoured() {
    let home = Home::new();
    home.service("v2py");
    let code = home.write("sleepy/preprocess.py", SLEEPY);
    add(
        &home,
        &[
            "--engine",
            "custom",
            "--endpoint",
            "sleepy",
            "--preprocess",
            code.to_str().unwrap(),
        ],
    );
    // The same code with clearml's io flags: V2 clients see what to send in its metadata.
    add(
        &home,
        &[
            "--engine",
            "custom",
            "--endpoint",
            "declared",
            "--preprocess",
            code.to_str().unwrap(),
            "--input-name",
            "x",
            "--input-type",
            "float32",
            "--input-size",
            "[-1, 2]",
            "--output-name",
            "echo",
            "--output-type",
            "float64",
            "--output-size",
            "[-1, 2]",
        ],
    );
    // A request timeout far beyond the test's patience: only the client's deadline can end the
    // sleeping call in time.
    let server = Server::start_with(&home, &["--request-timeout", "600"]);
    wait_until("sleepy loaded", || {
        server.get("/v2/models/sleepy/ready").0 == 200
    });
    let (status, meta) = server.get("/v2/models/declared");
    assert_eq!(status, 200, "{meta}");
    assert_eq!(
        (&meta["platform"], &meta["inputs"], &meta["outputs"]),
        (
            &serde_json::json!("python_custom"),
            &serde_json::json!([{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]),
            &serde_json::json!([{"name": "echo", "datatype": "FP64", "shape": [-1, 2]}])
        )
    );
    let body = serde_json::json!({
        "inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.5, 2]}],
        "parameters": {"scale": 2},
    });
    let (status, reply) = server.post("/v2/models/sleepy/infer", &body.to_string());
    assert_eq!(status, 200, "{reply}");
    let outputs = reply["outputs"].as_array().unwrap();
    let echo = outputs.iter().find(|o| o["name"] == "echo").unwrap();
    assert_eq!(
        (&echo["datatype"], &echo["shape"], &echo["data"]),
        (
            &serde_json::json!("FP64"),
            &serde_json::json!([2]),
            &serde_json::json!([1.5, 2.0])
        )
    );
    let parameters = outputs.iter().find(|o| o["name"] == "parameters").unwrap();
    assert_eq!(parameters["datatype"], "BYTES");
    assert_eq!(parameters["data"], serde_json::json!([r#"{"scale":2}"#]));

    let output = std::process::Command::new(python())
        .args(["-c", GRPC_DEADLINE, server.grpc.as_str()])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("DEADLINE_EXCEEDED"),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The server gave up at the client's deadline, not at its own 600 s timeout: the call ended
    // (a timeout, or cancelled if the client's own deadline fired first) and the worker still
    // sleeping in it was killed at that deadline and replaced.
    wait_until(
        "the sleeping worker killed at the client's deadline",
        || {
            let metrics = server.get_text("/metrics");
            let ended = ["timeout", "cancelled"].iter().any(|outcome| {
            metrics.contains(&format!(
                "serval_requests_total{{endpoint=\"sleepy\",version=\"\",protocol=\"v2_grpc\",outcome=\"{outcome}\"}} 1"
            ))
        });
            ended
                && metrics.contains(
                    r#"serval_python_worker_restarts_total{endpoint="sleepy",version=""} 1"#,
                )
        },
    );
    let (status, _) = server.post("/v2/models/sleepy/infer", &body.to_string());
    assert_eq!(
        status, 200,
        "the endpoint works after its worker was replaced"
    );
}

/// KServe's Python SDK (its own venv, `scripts/setup-kserve.sh`): it reads the health replies'
/// JSON bodies (`{"live": true}`), where tritonclient reads only status codes. Live, ready, model
/// ready, inference in JSON and binary over REST v2, and inference over gRPC.
#[test]
fn kserve_sdk_over_rest_and_grpc() {
    let python = std::env::var("SERVAL_KSERVE_PYTHON").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../.venv-kserve/bin/python")
            .display()
            .to_string()
    });
    assert!(
        Path::new(&python).is_file(),
        "{python} is missing: run scripts/setup-kserve.sh (KServe's SDK, a venv of its own)"
    );
    let home = Home::new();
    home.service("kserve");
    let model = home.upload("iris", "xgb_multi_iris.json", &[]);
    add(
        &home,
        &[
            "--engine",
            "xgboost",
            "--endpoint",
            "iris",
            "--model-id",
            &model,
        ],
    );
    let server = Server::start(&home);
    wait_until("iris", || server.get("/v2/models/iris/ready").0 == 200);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/kserve_client.py");
    let output = std::process::Command::new(&python)
        .arg(&script)
        .arg(server.base.trim_start_matches("http://"))
        .arg(&server.grpc)
        .arg("iris")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && printed.contains("all KServe SDK checks passed"),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
