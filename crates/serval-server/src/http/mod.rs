//! The HTTP surface: clearml's `/serve` contract, the Open Inference Protocol over REST (`/v2`),
//! health and metrics — each area its own module returning routes, merged in [`router`].

pub mod body;
pub mod clearml;
pub mod console;
pub mod health;
pub mod v2;
pub mod v2_codec;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::json;

use crate::AppState;

/// `Retry-After` of a 429 (admission control), in seconds.
pub const RETRY_AFTER_SECONDS: &str = "1";

/// Admission control before any work is done: an inference request takes a permit of the
/// server-wide in-flight bound (`serve --max-in-flight`) or is answered 429 at once.
async fn admit(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = request.uri().path();
    let inference = path.starts_with("/serve/")
        || (path.starts_with("/v2/models/") && path.ends_with("/infer"));
    if !inference {
        return next.run(request).await;
    }
    let Ok(_permit) = state.admission.clone().try_acquire_owned() else {
        if let Some(metrics) = &state.metrics {
            let protocol = if path.starts_with("/v2") {
                crate::pipeline::Protocol::V2Rest
            } else {
                crate::pipeline::Protocol::Clearml
            };
            metrics.unrouted(protocol, "overloaded");
        }
        let error = crate::pipeline::Error::Overloaded(overloaded(state.config.max_in_flight));
        return if path.starts_with("/v2") {
            v2::V2Error::from(error).into_response()
        } else {
            clearml::ServeError::from(error).into_response()
        };
    };
    next.run(request).await
}

/// While draining (SIGTERM), every HTTP/1 response says `Connection: close`: each keep-alive
/// client leaves after its answer instead of finding its connection closed later.
async fn drain_layer(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let http1 = request.version() <= axum::http::Version::HTTP_11;
    let mut response = next.run(request).await;
    if http1 && state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The 429 text of the server-wide bound.
pub fn overloaded(bound: usize) -> String {
    format!(
        "the server has {bound} requests in flight, its limit (serve --max-in-flight); retry later"
    )
}

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
    let console = if state.config.ui {
        console::routes()
    } else {
        Router::new()
    };
    Router::new()
        .route("/serve/{endpoint}", post(clearml::unversioned))
        .route("/serve/{endpoint}/", post(clearml::unversioned))
        .route("/serve/{endpoint}/{version}", post(clearml::versioned))
        .merge(v2::routes())
        .merge(console)
        .route("/metrics", get(health::metrics))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(axum::middleware::from_fn_with_state(state.clone(), admit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            drain_layer,
        ))
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
