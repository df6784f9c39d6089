//! The HTTP surface: clearml's `/serve` contract, the Open Inference Protocol over REST (`/v2`),
//! health and metrics — each area its own module returning routes, merged in [`router`].

pub mod body;
pub mod clearml;
pub mod health;
pub mod v2;
mod v2_codec;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::json;

use crate::AppState;

async fn not_found() -> (StatusCode, axum::Json<serde_json::Value>) {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"detail": "Not Found"})),
    )
}

async fn method_not_allowed() -> (StatusCode, axum::Json<serde_json::Value>) {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(json!({"detail": "Method Not Allowed"})),
    )
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/serve/{endpoint}", post(clearml::unversioned))
        .route("/serve/{endpoint}/", post(clearml::unversioned))
        .route("/serve/{endpoint}/{version}", post(clearml::versioned))
        .merge(v2::routes())
        .route("/metrics", get(health::metrics))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::layer,
        ))
        .with_state(state)
}

/// The router of the separate metrics port.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::layer,
        ))
        .with_state(state)
}
