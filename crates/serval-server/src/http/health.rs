//! `GET /health/live`, `GET /health/ready` and `GET /metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

use serval_store::ApiKey;

use crate::auth::Caller;
use crate::metrics::{EndpointLabels, family_name};
use crate::state::AppState;
use crate::store_health::StoreHealth;
use crate::table::RoutingTable;

/// 200 while the process runs.
pub async fn live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

/// 503 until the first load pass has finished (every configured endpoint loaded or failed), then
/// 200 — also with zero endpoints, and also while the control store is unreachable (the server
/// keeps serving its last routing table; `store` in the body says so). Failed endpoints show in
/// the status, not here.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if !state.is_ready() {
        let status = if state.is_draining() {
            "draining"
        } else {
            "loading"
        };
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": status })),
        );
    }
    let table = state.door.table();
    let failed: Vec<&String> = table
        .slots
        .iter()
        .filter(|(_, s)| s.status.state == "failed")
        .map(|(u, _)| u)
        .collect();
    let health = &state.store_health;
    let store = match health.outage() {
        None => json!({
            "reachable": true,
            "notifications": health.feed_connected.load(Ordering::Relaxed),
        }),
        Some((since_ms, error)) => json!({
            "reachable": false,
            "unreachable_since_ms": since_ms,
            "error": error,
            "note": "serving the last routing table loaded; changes are picked up when the store is back",
        }),
    };
    (
        StatusCode::OK,
        Json(json!({
            "status": "ready",
            "revision": table.revision,
            "endpoints": table.slots.len(),
            "failed": failed,
            "store": store,
        })),
    )
}

/// `GET /metrics`: Prometheus metrics in the OpenMetrics text format; a scoped key (with
/// `--auth-metrics`) sees only the samples of its endpoints.
pub async fn metrics(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
) -> Response {
    let key = caller.and_then(|axum::Extension(Caller(key))| key);
    let Some(metrics) = state.metrics.clone() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"detail": "metrics are disabled (serve --disable-metrics)"})),
        )
            .into_response();
    };
    let table = state.door.table_full();
    let health = state.store_health.clone();
    let in_flight = state.door.in_flight();
    let memory = state.door.memory().used();
    let door = state.door.clone();
    let text = tokio::task::spawn_blocking(move || {
        let text = metrics.encode(|registry| {
            let gauge: Gauge = Gauge::default();
            gauge.set(i64::try_from(in_flight).unwrap_or(i64::MAX));
            registry.register(
                "serval_requests_in_flight",
                "Requests being served (admitted by the server-wide bound and not finished)",
                gauge,
            );
            let gauge: Gauge = Gauge::default();
            gauge.set(i64::try_from(memory).unwrap_or(i64::MAX));
            registry.register(
                "serval_request_memory_bytes",
                "Memory held by large requests in progress (charged 1 MiB or more), bounded by serve --max-memory-in-flight",
                gauge,
            );
            table_metrics(registry, &table);
            store_metrics(registry, &health);
            door.shadows.book.register(registry);
            door.payloads.register(registry);
            door.drifts.register(registry);
        });
        match key {
            Some(key) if key.endpoints.is_some() => only_endpoints_of(&text, &key, &table),
            _ => text,
        }
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

/// The lines of `text` (the exposition format) that `key` may see: no sample labelled with, and
/// no clearml variable family (`<url>:<variable>`) of, an endpoint outside its scope.
fn only_endpoints_of(text: &str, key: &ApiKey, table: &RoutingTable) -> String {
    let hidden: Vec<String> = table
        .slots
        .keys()
        .chain(table.canaries.keys())
        .filter(|url| !key.allows(url.split_once('/').map_or(url.as_str(), |(name, _)| name)))
        .map(|url| family_name(url, ""))
        .collect();
    let visible = |line: &&str| {
        let name = match line.strip_prefix("# ") {
            Some(comment) => comment.split_whitespace().nth(1).unwrap_or(""),
            None => line.split(['{', ' ']).next().unwrap_or(""),
        };
        if hidden
            .iter()
            .any(|prefix| name.starts_with(prefix.as_str()))
        {
            return false;
        }
        match line.split_once("endpoint=\"") {
            Some((_, rest)) => {
                let endpoint = rest.split('"').next().unwrap_or("");
                endpoint.is_empty() || key.allows(endpoint)
            }
            None => true,
        }
    };
    let mut out: String = text.lines().filter(visible).collect::<Vec<_>>().join("\n");
    out.push('\n');
    out
}

/// Scrape-time families from the routing table: load state and Python workers per endpoint.
fn store_metrics(registry: &mut Registry, health: &StoreHealth) {
    let up: Gauge = Gauge::default();
    up.set(i64::from(health.is_up()));
    registry.register(
        "serval_store_up",
        "1 if the control store answered the last call, 0 during an outage (the server keeps serving)",
        up,
    );
    let feed: Gauge = Gauge::default();
    feed.set(i64::from(health.feed_connected.load(Ordering::Relaxed)));
    registry.register(
        "serval_store_notifications_connected",
        "1 while the store's change notifications (PostgreSQL LISTEN) are connected",
        feed,
    );
    let errors: Counter = Counter::default();
    errors.inc_by(health.errors.load(Ordering::Relaxed));
    registry.register(
        "serval_store_errors",
        "Control store calls that failed because the store was unreachable",
        errors,
    );
}

fn table_metrics(registry: &mut Registry, table: &RoutingTable) {
    let loaded: Family<EndpointLabels, Gauge> = Family::default();
    let alive: Family<EndpointLabels, Gauge> = Family::default();
    let restarts: Family<EndpointLabels, Counter> = Family::default();
    for (url, slot) in &table.slots {
        let labels = EndpointLabels::of(url);
        loaded
            .get_or_create(&labels)
            .set(i64::from(slot.serving.is_some()));
        if let Some(pool) = slot.serving.as_ref().and_then(|s| s.runner.pool()) {
            let status = pool.status();
            alive.get_or_create(&labels).set(status.alive as i64);
            restarts.get_or_create(&labels).inc_by(status.restarts);
        }
    }
    registry.register(
        "serval_endpoint_serving",
        "1 if the endpoint answers requests (a loaded model or the previous version), else 0",
        loaded,
    );
    registry.register(
        "serval_python_workers_alive",
        "Live Python worker processes per endpoint",
        alive,
    );
    registry.register(
        "serval_python_worker_restarts",
        "Python worker processes restarted since the endpoint's workers were started",
        restarts,
    );
}
