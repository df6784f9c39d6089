//! Every refusal and decode failure is counted the same way whatever the protocol: one
//! `serval_requests_total` sample with the protocol and the error kind — under the endpoint when
//! the request had named one that resolved, else under `endpoint=""`.

use axum::body::Body;
use axum::http::Request;
use serval_server::pipeline::{Credential, Protocol};
use serval_store::{ApiKey, EngineKind};
use tonic::Code;

use crate::grpc::{fp32_input, request, start};
use crate::{IRIS_BODY, Setup, call, call_raw, fixture};

const FULL: &str = "sk-serval-full";
const SCOPED: &str = "sk-serval-other-only";
const V2_BODY: &str =
    r#"{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}"#;

fn key(name: &str, secret: &str, endpoints: Option<&str>) -> ApiKey {
    ApiKey {
        name: name.into(),
        sha256: serval_artifacts::hash_bytes(secret.as_bytes()),
        endpoints: endpoints.map(str::to_string),
        created_ms: 0,
        expires_ms: None,
        role: serval_store::Role::Infer,
    }
}

fn post(uri: &str, body: &str, key: Option<&str>) -> Request<Body> {
    let mut request = Request::post(uri).header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    request.body(Body::from(body.to_string())).unwrap()
}

fn with_key<T>(message: T, key: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    request
}

/// `serval_requests_total` for a protocol and outcome, summed over endpoints.
fn counted(metrics: &str, protocol: &str, outcome: &str) -> f64 {
    let labels = format!("protocol=\"{protocol}\",outcome=\"{outcome}\"}}");
    metrics
        .lines()
        .filter(|l| l.starts_with("serval_requests_total{") && l.contains(&labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_decode_failures_are_counted_alike_on_every_protocol() {
    let setup = Setup::new();
    setup.edit(|c| {
        c.api_keys.insert("full".into(), key("full", FULL, None));
        c.api_keys
            .insert("scoped".into(), key("scoped", SCOPED, Some("other")));
    });
    let xgb = setup.model(&fixture("clearml_xgb.json"));
    setup.endpoint("test_model_xgb", None, EngineKind::Xgboost, &xgb);
    let mut config = setup.config();
    config.require_auth = true;
    config.body_limit = 1024;
    config.max_in_flight = 1;
    let state = setup.state(config);
    state.sync().await.unwrap();
    let (mut grpc, _stop) = start(&state).await;
    let serve = "/serve/test_model_xgb";
    let v2 = "/v2/models/test_model_xgb/infer";
    let iris = || {
        request(
            "test_model_xgb",
            "",
            vec![fp32_input("input", vec![1, 4], vec![1.0, 2.0, 3.0, 4.0])],
        )
    };

    // 401: no key.
    assert_eq!(call(&state, post(serve, IRIS_BODY, None)).await.0, 401);
    assert_eq!(call(&state, post(v2, V2_BODY, None)).await.0, 401);
    let e = grpc.model_infer(with_key(iris(), None)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // 403: a key for another endpoint.
    assert_eq!(
        call(&state, post(serve, IRIS_BODY, Some(SCOPED))).await.0,
        403
    );
    assert_eq!(call(&state, post(v2, V2_BODY, Some(SCOPED))).await.0, 403);
    let e = grpc
        .model_infer(with_key(iris(), Some(SCOPED)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // 429: the server-wide bound (one request) is held by this test.
    let held = state
        .door
        .admit(
            Protocol::Clearml,
            Credential::Header(Some("Bearer sk-serval-full")),
        )
        .unwrap();
    let (status, _) = call_raw(&state, post(serve, IRIS_BODY, Some(FULL))).await;
    assert_eq!(status, 429);
    assert_eq!(call(&state, post(v2, V2_BODY, Some(FULL))).await.0, 429);
    let e = grpc
        .model_infer(with_key(iris(), Some(FULL)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    drop(held);
    // 413: over the body limit (1 KB).
    let big = format!("[{}]", vec!["[1, 2, 3, 4]"; 200].join(","));
    assert_eq!(call(&state, post(serve, &big, Some(FULL))).await.0, 413);
    let big_v2 = V2_BODY.replace(
        "\"data\"",
        &format!("\"pad\": \"{}\", \"data\"", "x".repeat(1100)),
    );
    assert_eq!(call(&state, post(v2, &big_v2, Some(FULL))).await.0, 413);
    let big_grpc = request(
        "test_model_xgb",
        "",
        vec![fp32_input("input", vec![100, 4], vec![0.5; 400])],
    );
    let e = grpc
        .model_infer(with_key(big_grpc, Some(FULL)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // Decode failures.
    assert_eq!(
        call(&state, post(serve, "{not json", Some(FULL))).await.0,
        422
    );
    assert_eq!(call(&state, post(v2, "{not json", Some(FULL))).await.0, 400);
    let mut bad = iris();
    bad.inputs[0].datatype = "NOPE".into();
    let e = grpc
        .model_infer(with_key(bad, Some(FULL)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    let metrics = String::from_utf8(
        call_raw(
            &state,
            Request::get("/metrics").body(Body::empty()).unwrap(),
        )
        .await
        .1,
    )
    .unwrap();
    for protocol in ["clearml", "v2_rest", "v2_grpc"] {
        for outcome in [
            "unauthenticated",
            "forbidden",
            "overloaded",
            "payload_too_large",
        ] {
            assert_eq!(
                counted(&metrics, protocol, outcome),
                1.0,
                "{protocol} {outcome}:\n{metrics}"
            );
        }
    }
    assert_eq!(counted(&metrics, "clearml", "invalid_input"), 1.0);
    assert_eq!(counted(&metrics, "v2_rest", "bad_request"), 1.0);
    assert_eq!(counted(&metrics, "v2_grpc", "bad_request"), 1.0);
}
