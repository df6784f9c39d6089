//! The HTTP surface: clearml's `/serve` contract, the Open Inference Protocol over REST (`/v2`),
//! health, metrics and the console — each area its own module returning routes, merged in
//! [`router`] by what they need:
//!
//! - inference routes have no layer of their own: the front door admits, authenticates and
//!   counts;
//! - the other routes that need an API key (V2 model metadata and readiness — scoped by the
//!   model in their path —, the server metadata and repository index, the console's API,
//!   `/metrics` with `--auth-metrics`) get [`guard`]'s layer, only when keys are required;
//! - the admin API (`serve --admin-api on`, only with keys required) checks for an admin key in
//!   its own layer ([`admin`]);
//! - health and the console's page stay open;
//! - every reply above 32 bytes is compressed when the request asks (`Accept-Encoding`: gzip,
//!   deflate; tower-http's layer — measured: no cost to requests that do not ask).

mod admin;
pub mod body;
pub mod clearml;
mod compress;
pub mod console;
mod guard;
pub mod health;
mod openapi;
mod reply;
pub mod v2;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::json;

use crate::state::AppState;

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

/// The whole HTTP surface, replies compressed for the clients that ask.
pub type App = compress::WhenAsked<Router>;

/// The whole HTTP surface.
pub fn router(state: AppState) -> App {
    let inference = Router::new()
        .route("/serve/{endpoint}", post(clearml::unversioned))
        .route("/serve/{endpoint}/", post(clearml::unversioned))
        .route("/serve/{endpoint}/{version}", post(clearml::versioned))
        .merge(v2::inference_routes());
    let open = Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .merge(v2::health_routes());
    let mut models = v2::model_routes();
    let mut server = v2::server_routes();
    let mut documented = Vec::new();
    let (mut api, page) = if state.config.ui {
        let (api, doc) = console::api_routes();
        documented.push(doc);
        (api, console::page_routes())
    } else {
        (Router::new(), Router::new())
    };
    // Only with keys required (the CLI refuses --admin-api on without --require-auth).
    let admin = if state.config.admin_api && state.config.require_auth {
        let (admin, doc) = admin::routes(&state);
        documented.push(doc);
        admin
    } else {
        Router::new()
    };
    // The document of what is served under /api/v1 (nothing: no document).
    let openapi = if documented.is_empty() {
        Router::new()
    } else {
        let (route, doc) = openapi::document(documented);
        let text = doc.to_json().unwrap_or_default();
        route.with_state(std::sync::Arc::new(text))
    };
    let mut metrics = Router::new().route("/metrics", get(health::metrics));
    if state.config.require_auth {
        models = guard::model_scoped(models, &state);
        server = guard::keyed(server, &state, guard::Dialect::V2);
        api = guard::keyed(api, &state, guard::Dialect::Detail);
        if state.config.auth_metrics {
            metrics = guard::keyed(metrics, &state, guard::Dialect::Detail);
        }
    }
    let router = Router::new()
        .merge(inference)
        .merge(open)
        .merge(models)
        .merge(server)
        .merge(api)
        .merge(admin)
        .merge(openapi)
        .merge(page)
        .merge(metrics)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    compress::WhenAsked::new(router)
}

/// The router of the separate metrics port.
pub fn metrics_router(state: AppState) -> Router {
    let mut metrics = Router::new().route("/metrics", get(health::metrics));
    if state.config.require_auth && state.config.auth_metrics {
        metrics = guard::keyed(metrics, &state, guard::Dialect::Detail);
    }
    metrics.fallback(not_found).with_state(state)
}
