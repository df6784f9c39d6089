//! Every example in `examples/`, end to end: its train script (real scikit-learn, XGBoost,
//! LightGBM, skl2onnx in the test venv), the README's CLI commands, a real server with Python
//! workers, and the responses of clearml-serving's examples (reference section 10).

use serde_json::{Value, json};

use crate::serve::{Server, wait_until};
use crate::{Home, example, python};

/// Runs an example's train script into the temp dir; returns the model file it wrote.
fn train(home: &Home, script: &str) -> String {
    let out_dir = home.path().join("models").join(script.replace('/', "_"));
    let output = std::process::Command::new(python())
        .arg(example(script))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("run the train script");
    assert!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout.lines().last().unwrap().trim().to_string()
}

fn upload(home: &Home, name: &str, path: &str, framework: &str) -> String {
    let out = home.ok(&[
        "model",
        "upload",
        "--name",
        name,
        "--project",
        "serving examples",
        "--framework",
        framework,
        "--path",
        path,
    ]);
    out.lines()
        .next()
        .and_then(|l| l.strip_prefix("Model created and registered, new Model ID="))
        .unwrap_or_else(|| panic!("unexpected upload output: {out}"))
        .to_string()
}

fn close(actual: &Value, expected: f64, tolerance: f64) -> bool {
    actual
        .as_f64()
        .is_some_and(|a| (a - expected).abs() <= tolerance)
}

#[test]
fn clearml_examples_answer_as_upstream() {
    let home = Home::new();
    home.service("examples");

    // examples/sklearn (+ the README's versions, canary and auto-update on the same model)
    let sklearn = train(&home, "sklearn/train_model.py");
    upload(
        &home,
        "train sklearn model - sklearn-model",
        &sklearn,
        "scikitlearn",
    );
    let sklearn_pre = example("sklearn/preprocess.py");
    let add = |endpoint: &str, engine: &str, name: &str, preprocess: &str, extra: &[&str]| {
        let mut args = vec![
            "model",
            "add",
            "--engine",
            engine,
            "--endpoint",
            endpoint,
            "--preprocess",
            preprocess,
        ];
        if !name.is_empty() {
            args.extend_from_slice(&["--name", name, "--project", "serving examples"]);
        }
        args.extend_from_slice(extra);
        home.ok(&args);
    };
    let sk = "train sklearn model - sklearn-model";
    add("test_model_sklearn", "sklearn", sk, &sklearn_pre, &[]);
    for version in ["1", "2"] {
        add(
            "test_model_sklearn_canary_src",
            "sklearn",
            sk,
            &sklearn_pre,
            &["--version", version],
        );
    }
    home.ok(&[
        "model",
        "canary",
        "--endpoint",
        "test_model_sklearn_canary",
        "--weights",
        "0.1",
        "0.9",
        "--input-endpoints",
        "test_model_sklearn_canary_src/2",
        "test_model_sklearn_canary_src/1",
    ]);
    home.ok(&[
        "model",
        "auto-update",
        "--engine",
        "sklearn",
        "--endpoint",
        "test_model_sklearn_auto",
        "--preprocess",
        &sklearn_pre,
        "--name",
        sk,
        "--project",
        "serving examples",
        "--max-versions",
        "2",
    ]);

    // examples/ensemble
    let ensemble = train(&home, "ensemble/train_ensemble.py");
    upload(&home, "train model ensemble", &ensemble, "scikitlearn");
    add(
        "test_model_ensemble",
        "sklearn",
        "train model ensemble",
        &example("ensemble/preprocess.py"),
        &[],
    );

    // examples/xgboost: preprocess returns a DMatrix → the XGBoost library in the worker
    let xgb = train(&home, "xgboost/train_model.py");
    upload(&home, "train xgboost model - xgb_model", &xgb, "xgboost");
    add(
        "test_model_xgb",
        "xgboost",
        "train xgboost model - xgb_model",
        &example("xgboost/preprocess.py"),
        &[],
    );

    // examples/lightgbm: preprocess returns a numpy array → the model runs natively
    let lgbm = train(&home, "lightgbm/train_model.py");
    upload(
        &home,
        "train lightgbm model - lgbm_model",
        &lgbm,
        "lightgbm",
    );
    add(
        "test_model_lgbm",
        "lightgbm",
        "train lightgbm model - lgbm_model",
        &example("lightgbm/preprocess.py"),
        &[],
    );

    // examples/custom: Preprocess.load loads the model itself
    let custom = train(&home, "custom/train_model.py");
    upload(&home, "custom train model", &custom, "scikitlearn");
    add(
        "test_model_custom",
        "custom",
        "custom train model",
        &example("custom/preprocess.py"),
        &[],
    );

    // examples/pipeline: two sklearn endpoints and the pipelines calling them (no model)
    for endpoint in ["test_model_sklearn_a", "test_model_sklearn_b"] {
        add(endpoint, "sklearn", sk, &sklearn_pre, &[]);
    }
    add(
        "test_model_pipeline",
        "custom",
        "",
        &example("pipeline/preprocess.py"),
        &[],
    );
    add(
        "test_model_pipeline_async",
        "custom_async",
        "",
        &example("pipeline/async_preprocess.py"),
        &[],
    );

    // examples/onnx: preprocess returns a numpy array → ONNX Runtime in the server
    let onnx = train(&home, "onnx/train_model.py");
    upload(&home, "iris logreg onnx", &onnx, "onnx");
    add(
        "test_model_onnx",
        "onnx",
        "iris logreg onnx",
        &example("onnx/preprocess.py"),
        &[],
    );

    let server = Server::start_with(&home, &[]);
    let blobs = r#"{"x0": 1, "x1": 2}"#;
    let iris = r#"{"x0": 1, "x1": 2, "x2": 3, "x3": 4}"#;

    assert_eq!(
        server.post("/serve/test_model_sklearn", blobs),
        (200, json!({"y": [0]}))
    );
    // The same through gzip, and through curl -d's default Content-Type.
    assert_eq!(
        server.post_with(
            "/serve/test_model_sklearn",
            &[
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip")
            ],
            &crate::hardening::gzip(blobs.as_bytes())
        ),
        (200, json!({"y": [0]}))
    );
    assert_eq!(
        server.post_as(
            "/serve/test_model_sklearn",
            "application/x-www-form-urlencoded",
            blobs.as_bytes()
        ),
        (200, json!({"y": [0]}))
    );
    // A missing key reaches the model as None: sklearn raises TypeError → 500, as upstream.
    let (status, body) = server.post("/serve/test_model_sklearn", r#"{"x0": 1}"#);
    assert_eq!(status, 500, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Error  [<class 'TypeError'>] processing request:"),
        "{body}"
    );
    for _ in 0..20 {
        assert_eq!(
            server.post("/serve/test_model_sklearn_canary", blobs),
            (200, json!({"y": [0]}))
        );
    }
    assert_eq!(
        server.post("/serve/test_model_sklearn_auto/1", blobs),
        (200, json!({"y": [0]}))
    );

    let (status, body) = server.post("/serve/test_model_ensemble", blobs);
    assert_eq!(status, 200, "{body}");
    assert!(close(&body["y"][0], 0.0, 1e-6), "{body}");

    let (status, body) = server.post("/serve/test_model_xgb", iris);
    assert_eq!(status, 200, "{body}");
    assert!(close(&body["y"][0], 1.9921026229858398, 1e-5), "{body}");

    assert_eq!(
        server.post("/serve/test_model_lgbm", iris),
        (200, json!({"y": 2}))
    );

    assert_eq!(
        server.post("/serve/test_model_custom", r#"{"features": [1, 2, 3]}"#),
        (200, json!({"predict": [0]}))
    );

    for pipeline in ["test_model_pipeline", "test_model_pipeline_async"] {
        let (status, body) = server.post(&format!("/serve/{pipeline}"), blobs);
        assert_eq!(status, 200, "{pipeline}: {body}");
        assert!(close(&body["y"], 0.0, 1e-9), "{pipeline}: {body}");
        // A sub-model failing (x1 missing → its sklearn predict raises) makes send_request
        // return None → the pipeline's ValueError → 422, as upstream.
        assert_eq!(
            server.post(&format!("/serve/{pipeline}"), r#"{"x0": 1}"#),
            (
                422,
                json!({"detail": "Error [<class 'ValueError'>] processing request: Error, could not get predictions from sub-models"})
            ),
            "{pipeline}"
        );
    }

    let (status, body) = server.post(
        "/serve/test_model_onnx",
        r#"{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["species"], "setosa", "{body}");
    let p: Vec<f64> = body["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(p.len(), 3);
    assert!(
        (p.iter().sum::<f64>() - 1.0).abs() < 1e-3 && p[0] > 0.9,
        "{body}"
    );
    // The example's ValueError is a 422 with clearml's detail text.
    let (status, body) = server.post("/serve/test_model_onnx", r#"{"sepal_length": 5.1}"#);
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["detail"],
        "Error [<class 'ValueError'>] processing request: missing measurements: sepal_width, petal_length, petal_width"
    );

    // The status shows how each endpoint runs: a worker per endpoint, the xgboost request that
    // went through the library, the native lightgbm and onnx models.
    wait_until("status with the library request", || {
        let list = home.json(&["model", "list"]);
        list["instances"][0]["endpoints"]["test_model_xgb"]["python"]["library_requests"] == 1
    });
    let list = home.json(&["model", "list"]);
    let endpoints = &list["instances"][0]["endpoints"];
    for (url, path) in [
        (
            "test_model_sklearn",
            "python pre/postprocess + native scikit-learn LogisticRegression (predict in the \
             server; parameters read from the pickle)",
        ),
        (
            "test_model_custom",
            "python worker (the model returned by Preprocess.load)",
        ),
        ("test_model_pipeline_async", "python worker (custom_async)"),
    ] {
        assert_eq!(endpoints[url]["path"], path, "{url}: {}", endpoints[url]);
        // One worker per core by default, all up.
        let workers = endpoints[url]["python"]["workers"].as_u64().unwrap();
        assert!(workers >= 1, "{}", endpoints[url]);
        assert_eq!(
            endpoints[url]["python"]["alive"], workers,
            "{}",
            endpoints[url]
        );
    }
    for url in ["test_model_lgbm", "test_model_onnx", "test_model_xgb"] {
        let path = endpoints[url]["path"].as_str().unwrap();
        assert!(
            path.starts_with("python pre/postprocess + native"),
            "{url}: {path}"
        );
    }
    assert_eq!(
        endpoints["test_model_lgbm"]["python"]["library_requests"],
        0
    );
    let table = home.ok(&["model", "list"]);
    assert!(
        table.contains("1 requests via the model library"),
        "{table}"
    );
}
