//! `GET /health/live` and `GET /health/ready`.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
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
