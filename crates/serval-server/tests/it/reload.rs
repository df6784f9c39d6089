//! Hot reload in-process: changes are picked up, failures keep the previous version, one broken
//! endpoint never affects another, and a prefix canary follows new versions.

use axum::http::StatusCode;
use serde_json::json;
use serval_store::{Canary, CanaryTarget, EngineKind};

use crate::{IRIS_BODY, Setup, call, fixture, post};

#[tokio::test]
async fn a_failed_reload_keeps_the_previous_version_serving() {
    let setup = Setup::new();
    let state = setup.serving().await;
    assert_eq!(
        call(&state, post("/serve/test_model_lgbm/1", IRIS_BODY))
            .await
            .0,
        StatusCode::OK
    );

    // Replace the model of test_model_lgbm/1 with a corrupt file.
    let corrupt = setup.dir.path().join("corrupt.txt");
    let mut bytes = std::fs::read(fixture("clearml_lgbm.txt")).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&corrupt, &bytes).unwrap();
    let bad = setup.model(&corrupt);
    setup.endpoint("test_model_lgbm", Some("1"), EngineKind::Lightgbm, &bad);
    // And add a broken new endpoint next to it.
    setup.endpoint("broken", None, EngineKind::Xgboost, &bad);
    state.sync().await.unwrap();

    let table = state.door.table();
    let slot = &table.slots["test_model_lgbm/1"];
    assert_eq!(slot.status.state, "failed");
    assert!(slot.status.serving, "the previous version keeps serving");
    assert!(
        slot.status
            .error
            .as_deref()
            .unwrap()
            .contains("corrupt.txt"),
        "{:?}",
        slot.status.error
    );
    let (status, body) = call(&state, post("/serve/test_model_lgbm/1", IRIS_BODY)).await;
    assert_eq!(
        (status, &body["y"]),
        (StatusCode::OK, &json!([2])),
        "previous version answers"
    );
    // The new broken endpoint answers 503 with the reason; the others are untouched.
    let (status, body) = call(&state, post("/serve/broken", IRIS_BODY)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("not a model the 'xgboost' engine loads"),
        "{body}"
    );
    assert_eq!(
        call(&state, post("/serve/test_model_xgb", IRIS_BODY))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(&state, post("/serve/test_model_lgbm/2", IRIS_BODY))
            .await
            .0,
        StatusCode::OK
    );

    // Fixing the endpoint loads the new model.
    let good = setup.model(&fixture("lgbm_multi_iris.txt"));
    setup.endpoint("test_model_lgbm", Some("1"), EngineKind::Lightgbm, &good);
    state.sync().await.unwrap();
    assert_eq!(
        state.door.table().slots["test_model_lgbm/1"].status.state,
        "loaded"
    );
}

#[tokio::test]
async fn unchanged_endpoints_keep_their_engine_across_reloads() {
    let setup = Setup::new();
    let state = setup.serving().await;
    let before = state.door.table().slots["test_model_xgb"]
        .serving
        .clone()
        .unwrap();
    let model_id = state.door.table().slots["test_model_xgb"]
        .status
        .model_id
        .clone()
        .unwrap();
    setup.endpoint("another", None, EngineKind::Xgboost, &model_id);
    state.sync().await.unwrap();
    let table = state.door.table();
    let after = table.slots["test_model_xgb"].serving.clone().unwrap();
    assert!(std::sync::Arc::ptr_eq(&before, &after), "not reloaded");
    assert!(table.slots.contains_key("another"));
    setup.edit(|c| {
        c.endpoints.remove("another");
    });
    state.sync().await.unwrap();
    assert_eq!(
        call(&state, post("/serve/another", IRIS_BODY)).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn prefix_canaries_follow_new_versions() {
    let setup = Setup::new();
    let state = setup.serving().await;
    setup.edit(|c| {
        c.canaries.insert(
            "lgbm".into(),
            Canary {
                name: "lgbm".into(),
                weights: vec![1.0, 0.0],
                target: CanaryTarget::Prefix("test_model_lgbm/".into()),
                sticky: None,
            },
        );
    });
    state.sync().await.unwrap();
    assert_eq!(
        state.door.table().canaries["lgbm"].targets,
        vec!["test_model_lgbm/2", "test_model_lgbm/1"]
    );
    let model = state.door.table().slots["test_model_lgbm/1"]
        .status
        .model_id
        .clone()
        .unwrap();
    setup.endpoint("test_model_lgbm", Some("10"), EngineKind::Lightgbm, &model);
    state.sync().await.unwrap();
    assert_eq!(
        state.door.table().canaries["lgbm"].targets,
        vec!["test_model_lgbm/10", "test_model_lgbm/2"]
    );
    assert_eq!(
        call(&state, post("/serve/lgbm", IRIS_BODY)).await.0,
        StatusCode::OK
    );
}
