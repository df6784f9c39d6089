//! The Open Inference Protocol over REST, in-process: metadata, readiness, inference in JSON and
//! binary form (each answer equal to `/serve`'s for the same rows), the repository index, errors
//! with V2's codes, and metrics.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use serval_store::EngineKind;
use tower::ServiceExt;

use crate::{IRIS_BODY, Setup, call, call_raw, fixture, post};

const IRIS_ROW: [f64; 4] = [1.0, 2.0, 3.0, 4.0];

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn infer_body(name: &str, datatype: &str, shape: &[usize], data: Value) -> String {
    json!({"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]})
        .to_string()
}

fn output<'a>(reply: &'a Value, name: &str) -> &'a Value {
    reply["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name} in {reply}"))
}

fn floats(v: &Value) -> Vec<f64> {
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            other => out.push(other.as_f64().unwrap()),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-6 * (1.0 + y.abs()))
}

#[tokio::test]
async fn health_and_server_metadata() {
    let setup = Setup::new();
    let state = setup.state(setup.config());
    // Before the first load pass: live, not ready (400, as Triton; KServe's clients read the
    // JSON bodies).
    let (status, body) = call(&state, get("/v2/health/live")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"live": true})));
    assert_eq!(
        call(&state, get("/v2/health/ready")).await,
        (StatusCode::BAD_REQUEST, json!({"ready": false}))
    );
    state.sync().await.unwrap();
    assert_eq!(
        call(&state, get("/v2/health/ready")).await,
        (StatusCode::OK, json!({"ready": true}))
    );
    let (status, body) = call(&state, get("/v2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "serval");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        body["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("binary_tensor_data"))
    );
}

#[tokio::test]
async fn model_metadata_and_readiness() {
    let setup = Setup::new();
    let state = setup.serving().await;
    let (status, meta) = call(&state, get("/v2/models/test_model_xgb")).await;
    assert_eq!(status, StatusCode::OK, "{meta}");
    assert_eq!(
        meta,
        json!({
            "name": "test_model_xgb",
            "platform": "xgboost_json",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "predictions", "datatype": "FP32", "shape": [-1]}],
        })
    );
    let (status, meta) = call(&state, get("/v2/models/test_model_lgbm/versions/1")).await;
    assert_eq!(status, StatusCode::OK, "{meta}");
    assert_eq!(meta["versions"], json!(["1", "2"]));
    assert_eq!(meta["platform"], "lightgbm_text");
    assert_eq!(
        meta["outputs"],
        json!([
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
        ])
    );
    // Without a version: the highest one.
    assert_eq!(
        call(&state, get("/v2/models/test_model_lgbm")).await.0,
        StatusCode::OK
    );
    for (uri, name) in [
        ("/v2/models/test_model_xgb/ready", "test_model_xgb"),
        ("/v2/models/test_model_lgbm/ready", "test_model_lgbm"),
        (
            "/v2/models/test_model_lgbm/versions/2/ready",
            "test_model_lgbm",
        ),
    ] {
        let (status, body) = call(&state, get(uri)).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(body, json!({"name": name, "ready": true}), "{uri}");
    }
    for (uri, names) in [
        ("/v2/models/nope", "model 'nope' not found"),
        ("/v2/models/nope/ready", "model 'nope' not found"),
        (
            "/v2/models/test_model_lgbm/versions/7",
            "model 'test_model_lgbm' version '7' not found",
        ),
    ] {
        let (status, body) = call(&state, get(uri)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(body, json!({"error": names}), "{uri}");
    }
}

#[tokio::test]
async fn json_inference_equals_serve() {
    let setup = Setup::new();
    let state = setup.serving().await;
    // XGBoost regressor, nested FP32 data, id echoed.
    let (_, serve) = call(&state, post("/serve/test_model_xgb", IRIS_BODY)).await;
    let body = json!({"id": "req-1", "inputs": [
        {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [IRIS_ROW]}
    ]});
    let (status, reply) = call(
        &state,
        post("/v2/models/test_model_xgb/infer", &body.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["id"], "req-1");
    assert_eq!(reply["model_name"], "test_model_xgb");
    assert!(reply.get("model_version").is_none());
    let predictions = output(&reply, "predictions");
    assert_eq!(predictions["datatype"], "FP32");
    assert_eq!(predictions["shape"], json!([1]));
    assert!(
        close(&floats(&predictions["data"]), &floats(&serve["y"])),
        "{reply} vs {serve}"
    );

    // LightGBM classifier, two rows, flat data, FP32 and FP64 both accepted by trees.
    let rows = json!({"instances": [IRIS_ROW, [6.0, 3.4, 4.5, 1.6]]}).to_string();
    let (_, serve) = call(&state, post("/serve/test_model_lgbm/1", &rows)).await;
    for datatype in ["FP64", "FP32"] {
        let body = infer_body(
            "input",
            datatype,
            &[2, 4],
            json!([1.0, 2.0, 3.0, 4.0, 6.0, 3.4, 4.5, 1.6]),
        );
        let (status, reply) = call(
            &state,
            post("/v2/models/test_model_lgbm/versions/1/infer", &body),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply["model_version"], "1");
        assert_eq!(output(&reply, "label")["data"], serve["y"], "{datatype}");
        let probabilities = output(&reply, "probabilities");
        assert_eq!(probabilities["shape"], json!([2, 3]));
        assert!(
            close(
                &floats(&probabilities["data"]),
                &floats(&serve["probabilities"])
            ),
            "{datatype}: {reply} vs {serve}"
        );
    }
    // `outputs` selects outputs.
    let body = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": IRIS_ROW}],
                      "outputs": [{"name": "label"}]});
    let (status, reply) = call(
        &state,
        post("/v2/models/test_model_lgbm/infer", &body.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(
        reply["model_version"], "2",
        "unversioned: the highest version"
    );
}

#[tokio::test]
async fn binary_tensors_both_ways() {
    let setup = Setup::new();
    let state = setup.serving().await;
    let (_, serve) = call(&state, post("/serve/test_model_lgbm/2", IRIS_BODY)).await;
    let header = json!({
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64",
                    "parameters": {"binary_data_size": 32}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}},
                    {"name": "label", "parameters": {"binary_data": false}}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    for x in IRIS_ROW {
        body.extend_from_slice(&x.to_le_bytes());
    }
    let request = Request::post("/v2/models/test_model_lgbm/versions/2/infer")
        .header("Inference-Header-Content-Length", header.len())
        .header("content-type", "application/octet-stream")
        .body(Body::from(body))
        .unwrap();
    let response = serval_server::router(state.clone())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let n: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&bytes[..n]).unwrap();
    let probabilities = output(&reply, "probabilities");
    assert_eq!(probabilities["parameters"]["binary_data_size"], 24);
    let values: Vec<f64> = bytes[n..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(
        close(&values, &floats(&serve["probabilities"])),
        "{values:?} vs {serve}"
    );
    assert_eq!(output(&reply, "label")["data"], serve["y"]);
}

#[tokio::test]
async fn onnx_classifier_and_regressor() {
    let setup = Setup::new();
    let classifier = setup.model(&fixture("sklearn_logreg_iris.onnx"));
    let regressor = setup.model(&fixture("sklearn_linreg_diabetes.onnx"));
    setup.endpoint("iris_onnx", None, EngineKind::Onnx, &classifier);
    setup.endpoint("diabetes_onnx", Some("3"), EngineKind::Onnx, &regressor);
    let state = setup.state(setup.config());
    state.sync().await.unwrap();
    // ZipMap probabilities are FP32 [-1, classes] in class order.
    let (status, meta) = call(&state, get("/v2/models/iris_onnx")).await;
    assert_eq!(status, StatusCode::OK, "{meta}");
    assert_eq!(meta["platform"], "onnx_onnxv1");
    assert_eq!(
        meta["outputs"],
        json!([
            {"name": "output_label", "datatype": "INT64", "shape": [-1]},
            {"name": "output_probability", "datatype": "FP32", "shape": [-1, 3]},
        ])
    );
    let rows = json!([IRIS_ROW, [6.0, 3.4, 4.5, 1.6]]);
    let (_, serve) = call(&state, post("/serve/iris_onnx", &rows.to_string())).await;
    let body = infer_body("input", "FP32", &[2, 4], rows);
    let (status, reply) = call(&state, post("/v2/models/iris_onnx/infer", &body)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(output(&reply, "output_label")["data"], serve["y"]);
    let p = output(&reply, "output_probability");
    assert_eq!(p["shape"], json!([2, 3]));
    assert!(
        close(&floats(&p["data"]), &floats(&serve["probabilities"])),
        "{reply} vs {serve}"
    );

    let row: Vec<f64> = (0..10).map(|i| f64::from(i) / 100.0).collect();
    let (_, serve) = call(
        &state,
        post("/serve/diabetes_onnx/3", &json!([row]).to_string()),
    )
    .await;
    let body = infer_body("input", "FP32", &[1, 10], json!(row));
    let (status, reply) = call(
        &state,
        post("/v2/models/diabetes_onnx/versions/3/infer", &body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let variable = output(&reply, "variable");
    assert_eq!(variable["shape"], json!([1, 1]));
    assert!(
        close(&floats(&variable["data"]), &floats(&serve["y"])),
        "{reply} vs {serve}"
    );
    // ONNX inputs are typed: FP64 is refused for an FP32 input.
    let body = infer_body("input", "FP64", &[1, 10], json!(row));
    let (status, reply) = call(&state, post("/v2/models/diabetes_onnx/infer", &body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        reply["error"].as_str().unwrap().contains("datatype FP64"),
        "{reply}"
    );
}

#[tokio::test]
async fn bad_requests_get_v2_errors_and_the_server_stays_healthy() {
    let setup = Setup::new();
    let mut config = setup.config();
    config.body_limit = 4096;
    let xgb = setup.model(&fixture("clearml_xgb.json"));
    setup.endpoint("test_model_xgb", None, EngineKind::Xgboost, &xgb);
    let state = setup.state(config);
    state.sync().await.unwrap();
    let uri = "/v2/models/test_model_xgb/infer";
    let row = json!(IRIS_ROW);
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        // The model is resolved before the body is looked at.
        (
            "/v2/models/nope/infer",
            "{not json".into(),
            StatusCode::NOT_FOUND,
            "model 'nope' not found",
        ),
        (
            "/v2/models/test_model_xgb/versions/3/infer",
            "{}".into(),
            StatusCode::NOT_FOUND,
            "version '3'",
        ),
        (
            uri,
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "not a valid V2 inference request",
        ),
        (
            uri,
            infer_body("input", "FP32", &[1, 3], json!([1, 2, 3])),
            StatusCode::BAD_REQUEST,
            "shape [1, 3]",
        ),
        (
            uri,
            infer_body("input", "INT64", &[1, 4], json!([1, 2, 3, 4])),
            StatusCode::BAD_REQUEST,
            "datatype INT64",
        ),
        (
            uri,
            infer_body("input", "FP32", &[2, 4], row.clone()),
            StatusCode::BAD_REQUEST,
            "holds 8 elements but the data has 4",
        ),
        (
            uri,
            infer_body("other", "FP32", &[1, 4], row.clone()),
            StatusCode::BAD_REQUEST,
            "has no input 'other'",
        ),
        (
            uri,
            json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}],
                     "outputs": [{"name": "nope"}]})
            .to_string(),
            StatusCode::BAD_REQUEST,
            "no output 'nope'",
        ),
        (
            uri,
            format!(
                "{{\"inputs\": [{{\"name\": \"input\", \"shape\": [1, 4], \"datatype\": \"FP32\", \"data\": [{}]}}]}}",
                vec!["1.0"; 2000].join(",")
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "limit of 4096 bytes",
        ),
    ];
    for (uri, body, want, text) in cases {
        let (status, reply) = call(&state, post(uri, &body)).await;
        assert_eq!(status, want, "{uri} {body:.80}: {reply}");
        let error = reply["error"].as_str().unwrap_or_else(|| panic!("{reply}"));
        assert!(error.contains(text), "{error} should contain {text}");
    }
    // Binary data that does not match the sizes.
    let header = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                    "parameters": {"binary_data_size": 16}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&[0u8; 12]);
    let request = Request::post(uri)
        .header("Inference-Header-Content-Length", header.len())
        .body(Body::from(body))
        .unwrap();
    let (status, reply) = call(&state, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("binary_data_size is 16"),
        "{reply}"
    );
    // Still healthy and answering.
    assert_eq!(
        call_raw(&state, get("/v2/health/live")).await.0,
        StatusCode::OK
    );
    let good = infer_body("input", "FP32", &[1, 4], row);
    assert_eq!(call(&state, post(uri, &good)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn repository_index_and_canaries() {
    let setup = Setup::new();
    let state = setup.serving().await;
    let corrupt = setup.dir.path().join("corrupt.json");
    std::fs::write(&corrupt, b"{\"not\": \"a model\"}").unwrap();
    let bad = setup.model(&corrupt);
    setup.endpoint("broken", None, EngineKind::Xgboost, &bad);
    setup.edit(|c| {
        c.canaries.insert(
            "lgbm_canary".into(),
            serval_store::Canary {
                name: "lgbm_canary".into(),
                weights: vec![0.5, 0.5],
                target: serval_store::CanaryTarget::Prefix("test_model_lgbm/".into()),
                sticky: None,
            },
        );
    });
    state.sync().await.unwrap();
    let (status, index) = call(&state, post("/v2/repository/index", "")).await;
    assert_eq!(status, StatusCode::OK, "{index}");
    let index = index.as_array().unwrap().clone();
    let names: Vec<(String, String, String)> = index
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["version"].as_str().unwrap_or("").to_string(),
                m["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("broken".into(), "".into(), "UNAVAILABLE".into()),
            ("lgbm_canary".into(), "".into(), "READY".into()),
            ("test_model_lgbm".into(), "1".into(), "READY".into()),
            ("test_model_lgbm".into(), "2".into(), "READY".into()),
            ("test_model_xgb".into(), "".into(), "READY".into()),
        ]
    );
    assert!(
        index[0]["reason"]
            .as_str()
            .unwrap()
            .contains("corrupt.json"),
        "{index:?}"
    );
    let (_, ready) = call(&state, post("/v2/repository/index", r#"{"ready": true}"#)).await;
    assert_eq!(ready.as_array().unwrap().len(), 4);
    // A canary is a V2 model; a broken endpoint is not ready (400) and answers 503.
    let body = infer_body("input", "FP64", &[1, 4], json!(IRIS_ROW));
    let (status, reply) = call(&state, post("/v2/models/lgbm_canary/infer", &body)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert!(["1", "2"].contains(&reply["model_version"].as_str().unwrap()));
    assert_eq!(
        call_raw(&state, get("/v2/models/broken/ready")).await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, reply) = call(&state, post("/v2/models/broken/infer", &body)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
}

#[tokio::test]
async fn v2_requests_are_counted_with_their_protocol() {
    let setup = Setup::new();
    let state = setup.serving().await;
    let body = infer_body("input", "FP32", &[1, 4], json!(IRIS_ROW));
    for _ in 0..2 {
        call(&state, post("/v2/models/test_model_xgb/infer", &body)).await;
    }
    call(&state, post("/v2/models/test_model_xgb/infer", "{}")).await;
    call(&state, post("/v2/models/missing/infer", &body)).await;
    call(&state, post("/serve/test_model_xgb", IRIS_BODY)).await;
    let (_, text) = call_raw(&state, get("/metrics")).await;
    let text = String::from_utf8(text).unwrap();
    for line in [
        r#"serval_requests_total{endpoint="test_model_xgb",version="",protocol="v2_rest",outcome="ok"} 2"#,
        r#"serval_requests_total{endpoint="test_model_xgb",version="",protocol="v2_rest",outcome="bad_request"} 1"#,
        r#"serval_requests_total{endpoint="test_model_xgb",version="",protocol="clearml",outcome="ok"} 1"#,
        r#"serval_requests_total{endpoint="",version="",protocol="v2_rest",outcome="not_found"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
}

/// A large JSON reply (25,000 rows of LightGBM probabilities) is written while it is sent: it
/// is the same JSON as one row's answer, 25,000 times.
#[tokio::test]
async fn a_large_json_reply_is_streamed_with_the_same_answer() {
    let setup = Setup::new();
    let state = setup.serving().await;
    let uri = "/v2/models/test_model_lgbm/infer";
    let row = [5.1, 3.5, 1.4, 0.2];
    let (status, one) = call(
        &state,
        post(uri, &infer_body("input", "FP64", &[1, 4], json!([row]))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    let rows = vec![row; 25_000];
    let body = infer_body("input", "FP64", &[25_000, 4], json!(rows));
    let (status, many) = call(&state, post(uri, &body)).await;
    assert_eq!(status, StatusCode::OK, "{}", many["error"]);
    for name in ["label", "probabilities"] {
        let (single, all) = (output(&one, name), output(&many, name));
        assert_eq!(all["datatype"], single["datatype"]);
        assert_eq!(all["shape"][0], 25_000);
        let width = single["data"].as_array().unwrap().len();
        let data = all["data"].as_array().unwrap();
        assert_eq!(data.len(), 25_000 * width);
        assert!(
            data.chunks(width)
                .all(|r| r == single["data"].as_array().unwrap().as_slice())
        );
    }
}
