//! clearml's REST contract: route forms, body rules, compression, status codes and details.

use std::io::Write;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use serval_store::{Canary, CanaryTarget};
use tower::ServiceExt;

use crate::{IRIS_BODY, Setup, call, post};

const XGB_REPLY: f64 = 1.9921026229858398;

#[tokio::test]
async fn every_route_form_reaches_its_endpoint() {
    let setup = Setup::new();
    let state = setup.serving().await;
    for uri in [
        "/serve/test_model_xgb",
        "/serve/test_model_xgb/",
        "/serve/test_model_xgb?version=",
    ] {
        let (status, body) = call(&state, post(uri, IRIS_BODY)).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        assert_eq!(body, json!({"y": [XGB_REPLY]}), "{uri}");
    }
    for uri in [
        "/serve/test_model_lgbm/1",
        "/serve/test_model_lgbm?version=1",
        "/serve/test_model_lgbm/?version=2",
    ] {
        let (status, body) = call(&state, post(uri, IRIS_BODY)).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        assert_eq!(body["y"], json!([2]), "{uri}");
    }
    // Unversioned with only versions configured: the highest version answers.
    let (status, _) = call(&state, post("/serve/test_model_lgbm", IRIS_BODY)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_methods_and_endpoints() {
    let setup = Setup::new();
    let state = setup.serving().await;
    let (status, body) = call(&state, post("/serve/nope", "{}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"detail": "Error processing request, endpoint was not found: Model inference endpoint 'nope' not found"})
    );
    let (status, body) = call(&state, post("/serve/test_model_xgb/9", IRIS_BODY)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("'test_model_xgb/9'")
    );
    let (status, body) = call(&state, post("/serve/a/b/c", "{}")).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"detail": "Not Found"}))
    );
    let get = Request::get("/serve/test_model_xgb")
        .body(Body::empty())
        .unwrap();
    let (status, body) = call(&state, get).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"detail": "Method Not Allowed"})
        )
    );
    let put = Request::put("/serve/test_model_xgb/1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&state, put).await.0, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn body_rules() {
    let setup = Setup::new();
    let state = setup.serving().await;
    // Broken JSON: 422 with FastAPI's detail saying where it broke.
    let (status, body) = call(
        &state,
        post("/serve/test_model_xgb", "{\"x0\": 1,\n \"x1\" 2}"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["detail"][0]["type"], "json_invalid");
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["body", 16]),
        "the offset of the 2"
    );
    assert!(
        body["detail"][0]["ctx"]["error"]
            .as_str()
            .unwrap()
            .contains("line 2")
    );
    // JSON arrays are accepted (clearml answers 422).
    let (status, body) = call(&state, post("/serve/test_model_xgb", "[[1, 2, 3, 4]]")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"y": [XGB_REPLY]})));
    // application/*+json is JSON; a native endpoint also reads JSON sent as another type.
    for content_type in [
        "application/vnd.api+json",
        "text/plain",
        "application/x-www-form-urlencoded",
    ] {
        let request = Request::post("/serve/test_model_xgb")
            .header("content-type", content_type)
            .body(Body::from(IRIS_BODY))
            .unwrap();
        assert_eq!(
            call(&state, request).await.0,
            StatusCode::OK,
            "{content_type}"
        );
    }
    let request = Request::post("/serve/test_model_xgb")
        .body(Body::from(IRIS_BODY))
        .unwrap();
    assert_eq!(
        call(&state, request).await.0,
        StatusCode::OK,
        "no content type means JSON"
    );
    let request = Request::post("/serve/test_model_xgb")
        .header("content-type", "image/jpeg")
        .body(Body::from(vec![0xff, 0xd8, 0xff]))
        .unwrap();
    let (status, body) = call(&state, request).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("takes a JSON body"),
        "{body}"
    );
    // Missing and unknown features name themselves; an empty body is an error, not a panic.
    let (status, body) = call(
        &state,
        post("/serve/test_model_xgb", r#"{"x0": 1, "x1": 2, "x9": 3}"#),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("Error [<class 'ValueError'>] processing request: "),
        "{detail}"
    );
    assert!(
        detail.contains("missing features: x2, x3") && detail.contains("unknown features: x9"),
        "{detail}"
    );
    let (status, _) = call(&state, post("/serve/test_model_xgb", "")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn compressed_requests_and_responses() {
    let setup = Setup::new();
    let state = setup.serving().await;
    for (encoding, body) in [
        ("gzip", gzip(IRIS_BODY.as_bytes())),
        ("GZIP", gzip(IRIS_BODY.as_bytes())),
        ("deflate", {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(IRIS_BODY.as_bytes()).unwrap();
            e.finish().unwrap()
        }),
    ] {
        let request = Request::post("/serve/test_model_xgb")
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(Body::from(body))
            .unwrap();
        let (status, reply) = call(&state, request).await;
        assert_eq!(
            (status, reply),
            (StatusCode::OK, json!({"y": [XGB_REPLY]})),
            "{encoding}"
        );
    }
    let request = Request::post("/serve/test_model_xgb")
        .header("content-encoding", "gzip")
        .body(Body::from("not gzip"))
        .unwrap();
    let (status, body) = call(&state, request).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"detail": "There was an error parsing the body"})
        )
    );

    // Responses are gzipped when the client accepts it.
    let batch: Vec<Vec<f64>> = (0..50).map(|i| vec![f64::from(i), 2.0, 3.0, 4.0]).collect();
    let request = Request::post("/serve/test_model_xgb")
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip")
        .body(Body::from(
            serde_json::to_string(&json!({"instances": batch})).unwrap(),
        ))
        .unwrap();
    let response = tower::ServiceExt::oneshot(serval_server::router(state.clone()), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text)
        .unwrap();
    let reply: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reply["y"].as_array().unwrap().len(), 50);
}

#[tokio::test]
async fn limits_and_timeouts() {
    let setup = Setup::new();
    let _ = setup.serving().await;
    let mut config = setup.config();
    config.body_limit = 64;
    let state = setup.state(config);
    state.sync().await.unwrap();
    let big = format!(
        "{{\"x0\": 1, \"x1\": 2, \"x2\": 3, \"x3\": 4, \"pad\": \"{}\"}}",
        "a".repeat(100)
    );
    let (status, body) = call(&state, post("/serve/test_model_xgb", &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("64 bytes"));
    // The limit also holds after decompression (a gzip bomb is refused, not inflated).
    let request = Request::post("/serve/test_model_xgb")
        .header("content-encoding", "gzip")
        .body(Body::from(gzip(&vec![b' '; 10_000])))
        .unwrap();
    assert_eq!(call(&state, request).await.0, StatusCode::PAYLOAD_TOO_LARGE);

    // A request that does not finish within the timeout gets 504 (the body never arrives).
    let mut config = setup.config();
    config.request_timeout = Duration::from_millis(200);
    let state = setup.state(config);
    state.sync().await.unwrap();
    let stalled = Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
    let request = Request::post("/serve/test_model_xgb")
        .body(stalled)
        .unwrap();
    let (status, body) = call(&state, request).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        body["detail"].as_str().unwrap().contains("timed out"),
        "{body}"
    );
}

#[tokio::test]
async fn health_reports_liveness_and_readiness() {
    let setup = Setup::new();
    let state = setup.state(setup.config());
    let live = Request::get("/health/live").body(Body::empty()).unwrap();
    assert_eq!(call(&state, live).await.0, StatusCode::OK);
    let ready = || Request::get("/health/ready").body(Body::empty()).unwrap();
    let (status, body) = call(&state, ready()).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "loading"})
        )
    );
    // Zero endpoints: ready once the first pass is done.
    state.sync().await.unwrap();
    let (status, body) = call(&state, ready()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["endpoints"], 0);
}

#[tokio::test]
async fn canary_splits_follow_the_weights() {
    let setup = Setup::new();
    let _ = setup.serving().await;
    setup.edit(|c| {
        c.canaries.insert(
            "split".into(),
            Canary {
                name: "split".into(),
                weights: vec![0.1, 0.9],
                target: CanaryTarget::Endpoints(vec![
                    "test_model_xgb".into(),
                    "test_model_lgbm/1".into(),
                ]),
                sticky: None,
            },
        );
    });
    let state = setup.state(setup.config());
    state.sync().await.unwrap();
    let router = serval_server::router(state.clone());
    let n = 10_000;
    let mut xgb = 0;
    for _ in 0..n {
        let response = tower::ServiceExt::oneshot(router.clone(), post("/serve/split", IRIS_BODY))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let reply: Value = serde_json::from_slice(&bytes).unwrap();
        // The regressor answers a float, the classifier a class with probabilities.
        if reply.get("probabilities").is_none() {
            xgb += 1;
        }
    }
    let share = f64::from(xgb) / f64::from(n);
    assert!(
        (share - 0.1).abs() <= 0.02,
        "10% expected, got {:.2}%",
        share * 100.0
    );
}

#[tokio::test]
async fn metrics_count_requests_and_can_be_disabled() {
    let fx = Setup::new();
    let state = fx.serving().await;
    for _ in 0..3 {
        call(&state, post("/serve/test_model_lgbm/2", IRIS_BODY)).await;
    }
    call(&state, post("/serve/test_model_lgbm/2", "{}")).await;
    call(&state, post("/serve/missing", IRIS_BODY)).await;
    let request = Request::get("/metrics").body(Body::empty()).unwrap();
    let response = serval_server::router(state.clone())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    for line in [
        r#"serval_requests_total{endpoint="test_model_lgbm",version="2",protocol="clearml",outcome="ok"} 3"#,
        r#"serval_requests_total{endpoint="test_model_lgbm",version="2",protocol="clearml",outcome="invalid_input"} 1"#,
        r#"serval_requests_total{endpoint="",version="",protocol="clearml",outcome="not_found"} 1"#,
        r#"serval_request_duration_seconds_count{endpoint="test_model_lgbm",version="2"} 4"#,
        r#"serval_stage_duration_seconds_count{endpoint="test_model_lgbm",version="2",stage="inference"} 3"#,
        r#"serval_endpoint_serving{endpoint="test_model_xgb",version=""} 1"#,
        "serval_requests_in_flight 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    // Load durations were recorded for the three endpoints.
    assert!(text.contains(
        r#"serval_endpoint_load_duration_seconds_count{endpoint="test_model_lgbm",version="1"} 1"#
    ));

    let mut config = fx.config();
    config.metrics = false;
    let state = fx.state(config);
    state.sync().await.unwrap();
    let (status, body) = call(
        &state,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["detail"].as_str().unwrap().contains("disabled"));
    let (status, _) = call(&state, post("/serve/test_model_lgbm/2", IRIS_BODY)).await;
    assert_eq!(status, StatusCode::OK);
}
