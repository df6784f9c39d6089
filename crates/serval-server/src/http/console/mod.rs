//! The built-in console: a page at `/ui` (HTML, CSS and scripts embedded in the binary, uPlot
//! vendored for the charts) and the JSON API it reads, `/api/v1/...` — the same state for scripts.
//! It shows the routing table, the service's configuration it was built from, the instances in
//! the store and the server's own live statistics (`metrics::live`). Its API only reads; with an
//! admin key (and the admin API on) the page also offers a few changes, made through the admin
//! API (`server.can_change` tells it).
//!
//! With `serve --require-auth` the page and its scripts stay open (they hold no data) and the API
//! needs a key like inference does; a key limited to some endpoints sees only those.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use serval_store::{CanaryTarget, InstanceStatus, Snapshot, now_ms};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod assets;
mod example;

pub use assets::{assets_size, page_routes};
use example::example;

use crate::metrics::VariableView;
use crate::metrics::live::{RecentError, Series, Summary};
use crate::pipeline::{Endpoint, Runner, TensorMeta};
use crate::state::AppState;
use crate::table::{RoutingTable, Slot};

/// The default window of the headline numbers (rate, error ratio, p50, p99), and the longest
/// (the history's length).
const WINDOW: u64 = 60;
const MAX_WINDOW: u64 = 300;
/// An instance not heard from for this long is shown as stale.
const STALE_AFTER_MS: i64 = 15_000;

/// The console's JSON API (a key when keys are required), and its OpenAPI description.
pub fn api_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::new()
        .routes(routes!(api_index))
        .routes(routes!(overview))
        .routes(routes!(endpoint))
        .routes(routes!(endpoint_version))
        .split_for_parts()
}

fn bad_query(rejection: &QueryRejection) -> Response {
    let detail = format!(
        "{} (window: seconds, 2 to {MAX_WINDOW})",
        rejection.body_text()
    );
    (StatusCode::BAD_REQUEST, Json(json!({ "detail": detail }))).into_response()
}

fn not_found(detail: String) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "detail": detail }))).into_response()
}

#[utoipa::path(get, path = "/api/v1", tag = "console",
    responses((status = 200, description = "Where the console's API is", body = Object)))]
async fn api_index() -> Json<Value> {
    Json(json!({
        "overview": "/api/v1/overview",
        "endpoint": "/api/v1/endpoints/{url}",
        "openapi": "/api/v1/openapi.json",
        "documentation": "docs/console.md",
    }))
}

/// Which endpoint names the caller may see (`None`: all).
struct Visible(Option<serval_store::ApiKey>);

impl Visible {
    fn of(state: &AppState, headers: &HeaderMap) -> Visible {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        // The route's guard has checked the key when keys are required.
        Visible(state.door.authenticate(authorization).ok().flatten())
    }

    fn allows(&self, url: &str) -> bool {
        let name = url.split_once('/').map_or(url, |(n, _)| n);
        self.0.as_ref().is_none_or(|key| key.allows(name))
    }
}

#[derive(Clone, Serialize)]
struct ModelInfo {
    id: String,
    name: Option<String>,
    project: Option<String>,
    /// `None`: unknown (the store was not read).
    published: Option<bool>,
}

/// How many of the newest audit entries the overview shows (to those who may read the trail).
const RECENT_CHANGES: usize = 10;

/// What the console reads from the store beyond the routing table.
#[derive(Default)]
struct StoreReads {
    instances: Option<Vec<InstanceStatus>>,
    models: BTreeMap<String, ModelInfo>,
    /// The service's (and the registry's) newest changes, oldest first.
    changes: Option<Vec<serval_admin::audit::AuditView>>,
}

/// Reads from the store the console needs beyond the routing table: the instances, model names
/// and, when asked, the last changes. Skipped while the store is unreachable (the page says so).
async fn store_reads(state: &AppState, model_ids: Vec<String>, changes: bool) -> StoreReads {
    if !state.store_health.is_up() {
        return StoreReads::default();
    }
    let store = state.store.clone();
    let service = state.config.service_id.clone();
    tokio::task::spawn_blocking(move || {
        let instances = store.instances(&service).ok();
        // Entries of other services are skipped: read a generous tail to find ten of this one.
        let changes = changes.then(|| {
            let entries = store.audit(None, 50 * RECENT_CHANGES).unwrap_or_default();
            let mine: Vec<_> = entries
                .iter()
                .filter(|e| e.service_id.as_deref().is_none_or(|s| s == service))
                .collect();
            mine[mine.len().saturating_sub(RECENT_CHANGES)..]
                .iter()
                .map(|e| serval_admin::audit::AuditView::of(e))
                .collect()
        });
        let models = model_ids
            .into_iter()
            .map(|id| {
                let model = store.model(&id).ok();
                let info = ModelInfo {
                    id: id.clone(),
                    name: model.as_ref().map(|m| m.name.clone()),
                    published: model.as_ref().map(|m| m.published),
                    project: model.and_then(|m| m.project),
                };
                (id, info)
            })
            .collect();
        StoreReads {
            instances,
            models,
            changes,
        }
    })
    .await
    .unwrap_or_default()
}

#[derive(Serialize)]
struct EndpointRow {
    url: String,
    name: String,
    version: Option<String>,
    engine: &'static str,
    model: Option<ModelInfo>,
    /// `native`, `python`, `python+native` or `forwarded` (`None`: nothing loaded).
    runs: Option<&'static str>,
    /// How it runs, in words (the status's path).
    path: Option<String>,
    /// `loaded` or `failed`.
    state: String,
    serving: bool,
    error: Option<String>,
    python: Option<serval_store::PythonStatus>,
    /// An auto-update rule serves this url.
    auto_update: Option<String>,
    stats: Option<Summary>,
    /// Requests per second per sample interval (the overview's chart).
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<Value>,
}

/// `?window=SECONDS` of the API (2 to 300; default 60).
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Params {
    /// Seconds the headline numbers cover (2 to 300; default 60).
    window: Option<u64>,
}

impl Params {
    fn window(&self) -> Duration {
        Duration::from_secs(self.window.unwrap_or(WINDOW).clamp(2, MAX_WINDOW))
    }
}

fn endpoint_row(
    state: &AppState,
    window: Duration,
    url: &str,
    slot: &Slot,
    models: &BTreeMap<String, ModelInfo>,
    auto: Option<&str>,
) -> EndpointRow {
    let status = &slot.status;
    let (name, version) = match url.split_once('/') {
        Some((n, v)) => (n.to_string(), Some(v.to_string())),
        None => (url.to_string(), None),
    };
    let python = slot
        .serving
        .as_ref()
        .and_then(|s| s.runner.pool())
        .map(|p| {
            let pool = p.status();
            serval_store::PythonStatus {
                workers: pool.workers,
                alive: pool.alive,
                restarts: pool.restarts,
                last_exit: pool.last_exit,
                library_requests: 0,
            }
        });
    EndpointRow {
        url: url.to_string(),
        name,
        version,
        engine: status.engine.as_str(),
        model: status.model_id.as_ref().map(|id| {
            models.get(id).cloned().unwrap_or(ModelInfo {
                id: id.clone(),
                name: None,
                project: None,
                published: None,
            })
        }),
        runs: slot.serving.as_ref().map(|s| s.runner.runs()),
        path: status.path.clone(),
        state: status.state.clone(),
        serving: slot.serving.is_some(),
        error: slot.client_error.clone(),
        python,
        auto_update: auto.map(str::to_string),
        stats: state
            .metrics
            .as_ref()
            .and_then(|m| m.live.summary(url, window, now_ms())),
        history: None,
    }
}

/// The url's auto-update rule, if one serves it.
fn auto_rule<'a>(snapshot: Option<&'a Snapshot>, url: &str) -> Option<&'a str> {
    let config = &snapshot?.config;
    if config.endpoints.contains_key(url) {
        return None;
    }
    let (base, version) = url.split_once('/')?;
    let version: u32 = version.parse().ok()?;
    config
        .auto_versions
        .get_key_value(base)
        .filter(|(_, versions)| versions.contains_key(&version))
        .map(|(base, _)| base.as_str())
}

fn canaries(table: &RoutingTable, visible: &Visible) -> Vec<Value> {
    let Some(snapshot) = table.snapshot.as_deref() else {
        return Vec::new();
    };
    snapshot
        .config
        .canaries
        .values()
        .filter(|c| visible.allows(&c.name))
        .map(|canary| {
            let (targets, prefix) = match &canary.target {
                CanaryTarget::Endpoints(list) => (list.clone(), None),
                CanaryTarget::Prefix(p) => (Vec::new(), Some(p.clone())),
            };
            // What requests are routed to now: each serving target's share of the traffic.
            let routes: Vec<Value> = table
                .canaries
                .get(&canary.name)
                .map(|route| {
                    let mut before = 0.0;
                    route
                        .targets
                        .iter()
                        .zip(&route.cumulative)
                        .map(|(url, c)| {
                            let share = c - before;
                            before = *c;
                            let serving = table.slots.get(url).is_some_and(|s| s.serving.is_some());
                            json!({"url": url, "share": share, "serving": serving})
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "url": canary.name,
                "weights": canary.weights,
                "targets": targets,
                "prefix": prefix,
                "routes": routes,
                "sticky": canary.sticky,
            })
        })
        .collect()
}

/// The configured shadows with what this server's copies found (the last ten minutes, the
/// largest recent disagreements).
fn shadows(state: &AppState, table: &RoutingTable, visible: &Visible) -> Vec<Value> {
    let Some(snapshot) = table.snapshot.as_deref() else {
        return Vec::new();
    };
    let mut found = state.door.shadows.book.view(now_ms());
    snapshot
        .config
        .shadows
        .values()
        .filter(|s| visible.allows(&s.endpoint) && visible.allows(&s.target))
        .map(|shadow| {
            let active = table
                .shadows
                .get(&shadow.endpoint)
                .is_some_and(|routes| routes.iter().any(|r| r.url == shadow.target));
            let stats = found
                .iter()
                .position(|v| v.endpoint == shadow.endpoint && v.target == shadow.target)
                .map(|at| found.swap_remove(at));
            json!({
                "endpoint": shadow.endpoint,
                "target": shadow.target,
                "fraction": shadow.fraction,
                "tolerance": shadow.tolerance,
                "created_ms": shadow.created_ms,
                "active": active,
                "stats": stats,
            })
        })
        .collect()
}

/// The rollouts the key may see (the canary and both endpoints in scope), as their status.
fn rollouts(table: &RoutingTable, visible: &Visible) -> Vec<Value> {
    let Some(snapshot) = table.snapshot.as_deref() else {
        return Vec::new();
    };
    snapshot
        .config
        .rollouts
        .values()
        .filter(|r| visible.allows(&r.canary) && visible.allows(&r.from) && visible.allows(&r.to))
        .map(|r| json!(serval_admin::rollouts::RolloutStatus::of(r)))
        .collect()
}

fn auto_update(table: &RoutingTable, visible: &Visible) -> Vec<Value> {
    let Some(snapshot) = table.snapshot.as_deref() else {
        return Vec::new();
    };
    snapshot
        .config
        .auto_update
        .iter()
        .filter(|(base, _)| visible.allows(base))
        .map(|(base, rule)| {
            let versions: Vec<Value> = snapshot
                .config
                .auto_versions
                .get(base)
                .into_iter()
                .flatten()
                .rev()
                .map(|(version, model_id)| {
                    let url = format!("{base}/{version}");
                    let slot = table.slots.get(&url);
                    json!({
                        "version": version,
                        "url": url,
                        "model_id": model_id,
                        "state": slot.map(|s| s.status.state.as_str()),
                        "serving": slot.is_some_and(|s| s.serving.is_some()),
                    })
                })
                .collect();
            json!({
                "endpoint": base,
                "engine": rule.engine.as_str(),
                "model_name": rule.model_name,
                "name_regex": rule.name_regex,
                "project": rule.project,
                "tags": rule.tags,
                "only_published": rule.only_published,
                "max_versions": rule.max_versions,
                "versions": versions,
            })
        })
        .collect()
}

fn server_info(
    state: &AppState,
    table: &RoutingTable,
    window: Duration,
    visible: &Visible,
) -> Value {
    // The page may offer changes: the admin API is served and the caller holds an admin key.
    let can_change = state.config.admin_api
        && state.config.require_auth
        && visible
            .0
            .as_ref()
            .is_some_and(|key| key.role == serval_store::Role::Admin);
    let store = match state.store_health.outage() {
        None => json!({"reachable": true}),
        Some((since_ms, error)) => {
            json!({"reachable": false, "unreachable_since_ms": since_ms, "error": error})
        }
    };
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "instance": state.instance.id,
        "started_ms": state.instance.started_ms,
        "revision": table.revision,
        "ready": state.is_ready(),
        "draining": state.is_draining(),
        "metrics": state.metrics.is_some(),
        "auth": state.config.require_auth,
        "can_change": can_change,
        "store": store,
        "window_seconds": window.as_secs(),
    })
}

fn service_info(table: &RoutingTable) -> Value {
    table.snapshot.as_deref().map_or(Value::Null, |s| {
        json!({
            "id": s.service.id,
            "name": s.service.name,
            "project": s.service.project,
            "tags": s.service.tags,
            "revision": s.service.revision,
        })
    })
}

/// `GET /api/v1/overview`: the service, its instances, every endpoint with its state and live
/// numbers, the canaries and the auto-update rules.
#[utoipa::path(get, path = "/api/v1/overview", tag = "console", params(Params),
    responses((status = 200, description = "The routing table, instances and live statistics \
        the console's overview shows", body = Object)))]
async fn overview(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    let window = match params {
        Ok(Query(params)) => params.window(),
        Err(rejection) => return bad_query(&rejection),
    };
    let visible = Visible::of(&state, &headers);
    let table = state.door.table_full();
    let snapshot = table.snapshot.clone();
    let model_ids: Vec<String> = table
        .slots
        .iter()
        .filter(|(url, _)| visible.allows(url))
        .filter_map(|(_, s)| s.status.model_id.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // The audit trail is for admin keys (or everyone, when no key is required).
    let sees_changes = !state.config.require_auth
        || visible
            .0
            .as_ref()
            .is_some_and(|key| key.role == serval_store::Role::Admin);
    let StoreReads {
        instances,
        models,
        changes,
    } = store_reads(&state, model_ids, sees_changes).await;
    let now = now_ms();
    let mut urls: Vec<&String> = table.slots.keys().filter(|u| visible.allows(u)).collect();
    // By name, newest version first.
    urls.sort_by(|a, b| {
        let name = |u: &'_ str| u.split_once('/').map_or(u, |(n, _)| n).to_string();
        name(a)
            .cmp(&name(b))
            .then_with(|| serval_store::names::newest_first(a, b))
    });
    let endpoints: Vec<EndpointRow> = urls
        .into_iter()
        .map(|url| {
            let auto = auto_rule(snapshot.as_deref(), url);
            let mut row = endpoint_row(&state, window, url, &table.slots[url], &models, auto);
            row.history = state.metrics.as_ref().map(|m| {
                let series = m.live.series(url);
                json!({"time": series.time, "requests_per_second": series.requests_per_second})
            });
            row
        })
        .collect();
    let instances: Option<Vec<Value>> = instances.map(|list| {
        list.into_iter()
            .map(|i| {
                let stale = now - i.heartbeat_ms > STALE_AFTER_MS;
                let failed = i.endpoints.values().filter(|e| e.state == "failed").count();
                json!({
                    "id": i.id,
                    "this": i.id == state.instance.id,
                    "host": i.host,
                    "port": i.port,
                    "grpc_port": i.grpc_port,
                    "pid": i.pid,
                    "started_ms": i.started_ms,
                    "heartbeat_ms": i.heartbeat_ms,
                    "revision": i.revision,
                    "status": if stale { "stale" } else if i.ready { "ready" } else { "loading" },
                    "endpoints": i.endpoints.len(),
                    "failed": failed,
                })
            })
            .collect()
    });
    Json(json!({
        "server": server_info(&state, &table, window, &visible),
        "service": service_info(&table),
        "instances": instances,
        "endpoints": endpoints,
        "canaries": canaries(&table, &visible),
        "shadows": shadows(&state, &table, &visible),
        "drift": state
            .door
            .drifts
            .views()
            .into_iter()
            .filter(|d| visible.allows(&d.endpoint))
            .collect::<Vec<_>>(),
        "rollouts": rollouts(&table, &visible),
        "auto_update": auto_update(&table, &visible),
        "recent_changes": changes,
    }))
    .into_response()
}

/// The names of a native model's feature columns (stored in the model, else the endpoint's
/// `--input-name`s), for the explanation chart; `None` when unknown.
fn feature_names(endpoint: &Endpoint) -> Option<Vec<String>> {
    let Runner::Native(model) = &endpoint.runner else {
        return None;
    };
    let width = model.metadata().num_features()?;
    model
        .metadata()
        .feature_names
        .clone()
        .or_else(|| Some(endpoint.input_names.clone()))
        .filter(|names| names.len() == width)
}

#[derive(Serialize)]
struct TensorInfo {
    name: String,
    datatype: &'static str,
    shape: Vec<i64>,
}

fn tensors(meta: &[TensorMeta]) -> Vec<TensorInfo> {
    meta.iter()
        .map(|m| TensorInfo {
            name: m.name.clone(),
            datatype: m.datatype.name(),
            shape: m.shape.clone(),
        })
        .collect()
}

/// `{endpoint}` and, on the versioned route, `{version}`.
#[derive(serde::Deserialize)]
struct EndpointPath {
    endpoint: String,
    version: Option<String>,
}

/// `{endpoint}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // describes the path
struct Unversioned {
    /// An endpoint or canary name.
    endpoint: String,
}

/// `{endpoint}` and `{version}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // describes the path
struct Versioned {
    /// An endpoint name.
    endpoint: String,
    /// Its version.
    version: String,
}

#[utoipa::path(get, path = "/api/v1/endpoints/{endpoint}", tag = "console",
    params(Unversioned, Params),
    responses(
        (status = 200, description = "One endpoint (or canary) in detail: state, model, code, \
            inputs and outputs, live statistics, an example request", body = Object),
        (status = 404, description = "No such endpoint (or not the key's)", body = Object)))]
async fn endpoint(
    state: State<AppState>,
    headers: HeaderMap,
    Path(at): Path<EndpointPath>,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    endpoint_at(state, headers, at, params).await
}

#[utoipa::path(get, path = "/api/v1/endpoints/{endpoint}/{version}", tag = "console",
    params(Versioned, Params),
    responses(
        (status = 200, description = "One endpoint version in detail", body = Object),
        (status = 404, description = "No such endpoint (or not the key's)", body = Object)))]
async fn endpoint_version(
    state: State<AppState>,
    headers: HeaderMap,
    Path(at): Path<EndpointPath>,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    endpoint_at(state, headers, at, params).await
}

/// One endpoint (or canary url) in detail.
async fn endpoint_at(
    State(state): State<AppState>,
    headers: HeaderMap,
    at: EndpointPath,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    let window = match params {
        Ok(Query(params)) => params.window(),
        Err(rejection) => return bad_query(&rejection),
    };
    let url = match &at.version {
        Some(version) => format!("{}/{version}", at.endpoint),
        None => at.endpoint.clone(),
    };
    let visible = Visible::of(&state, &headers);
    let table = state.door.table_full();
    let Some(slot) = table.slots.get(&url).filter(|_| visible.allows(&url)) else {
        return not_found(format!("no endpoint '{url}' is configured"));
    };
    let snapshot = table.snapshot.clone();
    let model_ids: Vec<String> = slot.status.model_id.iter().cloned().collect();
    let models = store_reads(&state, model_ids, false).await.models;
    let auto = auto_rule(snapshot.as_deref(), &url);
    let row = endpoint_row(&state, window, &url, slot, &models, auto);
    let serving = slot.serving.as_deref();
    let (example_body, example_note) = serving.map_or((None, "not serving"), example);
    let rule = snapshot.as_deref().and_then(|s| {
        let rule = crate::metrics::rule_for(&s.config.metrics, &url)?;
        let variables: Vec<Value> = rule
            .variables
            .iter()
            .map(|(name, kind)| json!({"name": name, "type": kind.type_name()}))
            .collect();
        Some(json!({
            "endpoint": rule.endpoint,
            "log_frequency": rule.log_frequency,
            "variables": variables,
        }))
    });
    let variables: Vec<VariableView> = serving
        .and_then(|s| s.monitor.load_full())
        .map(|m| m.view(&url))
        .unwrap_or_default();
    let (series, errors): (Series, Vec<RecentError>) = match &state.metrics {
        Some(m) => (m.live.series(&url), m.live.recent_errors(&url)),
        None => (Series::default(), Vec::new()),
    };
    let configured = snapshot
        .as_deref()
        .and_then(|s| s.config.served_endpoints().remove(&url));
    Json(json!({
        "server": server_info(&state, &table, window, &visible),
        "service": service_info(&table),
        "endpoint": row,
        "metadata": serving.map(|s| json!({
            "platform": s.signature.platform,
            "inputs": tensors(&s.signature.inputs),
            "outputs": tensors(&s.signature.outputs),
            "input_names": s.input_names,
            "output_names": s.output_names,
            "feature_names": feature_names(s),
        })),
        "configured": configured.map(|e| json!({
            "engine": e.engine.as_str(),
            "model_id": e.model_id,
            "preprocess": e.preprocess.map(|p| p.name),
            "io": e.io,
            "aux_config": e.aux_config,
        })),
        "example": {"body": example_body, "note": example_note, "path": format!("/serve/{url}")},
        "metric_rule": rule,
        "variables": variables,
        "series": series,
        "recent_errors": errors,
    }))
    .into_response()
}
