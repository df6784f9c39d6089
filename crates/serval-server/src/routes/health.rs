//! `GET /health/live`, `GET /health/ready` and `GET /metrics`.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::AppState;

/// 200 while the process runs.
pub async fn live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

/// 503 until the first load pass has finished (every configured endpoint loaded or failed), then
/// 200 — also with zero endpoints. Failed endpoints show in the status, not here.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if !state.ready.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        );
    }
    let table = state.table.load();
    let failed: Vec<&String> = table
        .slots
        .iter()
        .filter(|(_, s)| s.status.state == "failed")
        .map(|(u, _)| u)
        .collect();
    (
        StatusCode::OK,
        Json(json!({
            "status": "ready",
            "revision": table.revision,
            "endpoints": table.slots.len(),
            "failed": failed,
        })),
    )
}

/// `GET /metrics`: Prometheus metrics in the OpenMetrics text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let Some(metrics) = state.metrics.clone() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"detail": "metrics are disabled (serve --disable-metrics)"})),
        )
            .into_response();
    };
    let table = state.table.load_full();
    let text = tokio::task::spawn_blocking(move || {
        metrics.encode(|registry| crate::metrics::table_metrics(registry, &table))
    })
    .await
    .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
