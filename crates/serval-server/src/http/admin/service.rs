//! A service's resources: the service and its settings, endpoints, canaries, auto-update rules,
//! metric rules, instances and keys.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serval_admin::Written;
use serval_admin::endpoints::{AutoUpdateSpec, CanarySpec, EndpointSpec, EndpointView, Removed};
use serval_admin::keys::{KeySpec, KeyView, NewKey};
use serval_admin::metrics::{MetricsRemoved, MetricsSpec};
use serval_admin::services::{ServiceSpec, SettingsPatch};
use serval_store::{AutoUpdateRule, Canary, InstanceStatus, MetricRule, Service, ServiceSettings};

use super::{Admin, Answer, Refusals, all, bad_request, blocking, body, change, id, pairs, read};
use crate::state::AppState;

/// `{service}`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ServicePath {
    /// The service's id (`serval list`).
    pub service: String,
}

/// `{service}` and a name under it.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NamePath {
    /// The service's id.
    service: String,
    /// An endpoint, canary, auto-update rule or key name.
    name: String,
}

/// `{service}`, `{endpoint}` and, on the versioned routes, `{version}` (described to OpenAPI by
/// [`Unversioned`] and [`Versioned`]).
#[derive(Deserialize)]
pub struct EndpointPath {
    service: String,
    endpoint: String,
    version: Option<String>,
}

/// `{service}` and `{endpoint}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // describes the path
pub struct Unversioned {
    /// The service's id.
    service: String,
    /// The endpoint's name (for metric rules also a prefix ending in `*`).
    endpoint: String,
}

/// `{service}`, `{endpoint}` and `{version}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // describes the path
pub struct Versioned {
    /// The service's id.
    service: String,
    /// The endpoint's name.
    endpoint: String,
    /// The endpoint's version (metric rules: `*` for every version).
    version: String,
}

impl EndpointPath {
    /// `name` or `name/version`.
    fn url(&self) -> String {
        match &self.version {
            Some(v) => format!("{}/{v}", self.endpoint),
            None => self.endpoint.clone(),
        }
    }
}

/// `If-Match`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // describes the header; read by `Admin::caller`
pub struct IfMatch {
    /// Write only if the service is still at this revision (`"7"` or `7`; `*`: any), else 412.
    #[serde(rename = "If-Match")]
    #[param(rename = "If-Match")]
    if_match: Option<String>,
}

/// A service and its whole configuration, its keys without their hashes.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ServiceRead {
    service: Service,
    /// `settings`, `endpoints`, `canaries`, `auto_update`, `metrics`, `auto_versions` and
    /// `api_keys`, with the field names of `serval --json`.
    config: serde_json::Value,
}

/// An auto-update rule and the registry models it serves now, by version.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RuleView {
    #[serde(flatten)]
    rule: AutoUpdateRule,
    versions: BTreeMap<u32, String>,
}

#[utoipa::path(get, path = "/api/v1/services", tag = "services",
    responses((status = 200, description = "Services, oldest first", body = Vec<Service>), Refusals))]
pub async fn list_services(State(state): State<AppState>) -> Answer {
    let services = blocking(&state, |store| store.list_services()).await?;
    Ok(Json(services).into_response())
}

#[utoipa::path(post, path = "/api/v1/services", tag = "services", request_body = ServiceSpec,
    responses((status = 201, description = "Created", body = Written<Service>), Refusals))]
pub async fn create_service(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    headers: HeaderMap,
    spec: Result<Json<ServiceSpec>, JsonRejection>,
) -> Answer {
    admin.unlimited("create services")?;
    let (caller, spec) = (admin.caller(&headers)?, body(spec)?);
    change(&state, move |store| {
        serval_admin::services::create(store, &caller, &spec)
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/services/{service}", tag = "services", params(ServicePath),
    responses((status = 200, description = "The service (its revision as ETag)", body = ServiceRead), Refusals))]
pub async fn show_service(
    State(state): State<AppState>,
    Path(ServicePath { service }): Path<ServicePath>,
) -> Answer {
    let snapshot = blocking(&state, move |store| store.snapshot(&id(&service))).await?;
    let now = serval_store::now_ms();
    let mut config =
        serde_json::to_value(&snapshot.config).map_err(|e| bad_request(e.to_string()))?;
    let keys: Vec<KeyView> = snapshot
        .config
        .api_keys
        .values()
        .map(|k| KeyView::of(k, now))
        .collect();
    config["api_keys"] = serde_json::to_value(keys).map_err(|e| bad_request(e.to_string()))?;
    let revision = snapshot.service.revision;
    Ok(read(
        ServiceRead {
            service: snapshot.service,
            config,
        },
        revision,
    ))
}

#[utoipa::path(get, path = "/api/v1/services/{service}/config", tag = "services", params(ServicePath),
    responses((status = 200, description = "The settings (`serval config`)", body = ServiceSettings), Refusals))]
pub async fn show_config(
    State(state): State<AppState>,
    Path(ServicePath { service }): Path<ServicePath>,
) -> Answer {
    let snapshot = blocking(&state, move |store| store.snapshot(&id(&service))).await?;
    Ok(read(snapshot.config.settings, snapshot.service.revision))
}

#[utoipa::path(patch, path = "/api/v1/services/{service}/config", tag = "services",
    params(ServicePath, IfMatch), request_body = SettingsPatch,
    responses((status = 200, description = "Changed", body = Written<ServiceSettings>), Refusals))]
pub async fn configure(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(ServicePath { service }): Path<ServicePath>,
    headers: HeaderMap,
    patch: Result<Json<SettingsPatch>, JsonRejection>,
) -> Answer {
    admin.unlimited("change the service's settings")?;
    let (caller, patch) = (admin.caller(&headers)?, body(patch)?);
    change(&state, move |store| {
        serval_admin::services::configure(store, &caller, &id(&service), &patch)
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/services/{service}/endpoints", tag = "endpoints", params(ServicePath),
    responses((status = 200, description = "Static endpoints", body = Vec<EndpointView>), Refusals))]
pub async fn list_endpoints(
    State(state): State<AppState>,
    Path(ServicePath { service }): Path<ServicePath>,
) -> Answer {
    let snapshot = blocking(&state, move |store| store.snapshot(&id(&service))).await?;
    let views: Vec<EndpointView> = snapshot
        .config
        .endpoints
        .into_iter()
        .map(|(url, endpoint)| EndpointView { url, endpoint })
        .collect();
    Ok(read(views, snapshot.service.revision))
}

/// Adds or replaces `name` or `name/version` (a `version` in the body must agree with the path's).
async fn put_endpoint_at(
    state: AppState,
    admin: Admin,
    at: EndpointPath,
    headers: HeaderMap,
    spec: Result<Json<EndpointSpec>, JsonRejection>,
) -> Answer {
    let mut spec = body(spec)?;
    if let Some(version) = at.version {
        if spec.version.as_ref().is_some_and(|v| *v != version) {
            return Err(bad_request(format!(
                "the path names version '{version}' and the body '{}'",
                spec.version.as_deref().unwrap_or_default()
            )));
        }
        spec.version = Some(version);
    }
    let name = at.endpoint;
    admin.may_change(&name)?;
    let caller = admin.caller(&headers)?;
    let service = id(&at.service);
    change(&state, move |store| {
        serval_admin::endpoints::put_endpoint(store, &caller, &service, &name, &spec)
    })
    .await
}

#[utoipa::path(put, path = "/api/v1/services/{service}/endpoints/{endpoint}", tag = "endpoints",
    params(Unversioned, IfMatch), request_body = EndpointSpec,
    responses(
        (status = 201, description = "Added", body = Written<EndpointView>),
        (status = 200, description = "Replaced", body = Written<EndpointView>),
        Refusals))]
pub async fn put_endpoint(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(at): Path<EndpointPath>,
    headers: HeaderMap,
    spec: Result<Json<EndpointSpec>, JsonRejection>,
) -> Answer {
    put_endpoint_at(state, admin, at, headers, spec).await
}

#[utoipa::path(put, path = "/api/v1/services/{service}/endpoints/{endpoint}/{version}",
    tag = "endpoints", params(Versioned, IfMatch), request_body = EndpointSpec,
    responses(
        (status = 201, description = "Added", body = Written<EndpointView>),
        (status = 200, description = "Replaced", body = Written<EndpointView>),
        Refusals))]
pub async fn put_endpoint_version(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(at): Path<EndpointPath>,
    headers: HeaderMap,
    spec: Result<Json<EndpointSpec>, JsonRejection>,
) -> Answer {
    put_endpoint_at(state, admin, at, headers, spec).await
}

/// Removes the static endpoint, auto-update rule or canary `url`.
async fn remove_at(
    state: AppState,
    admin: Admin,
    service: &str,
    url: String,
    headers: HeaderMap,
) -> Answer {
    admin.may_change(url.split_once('/').map_or(url.as_str(), |(n, _)| n))?;
    let caller = admin.caller(&headers)?;
    let service = id(service);
    change(&state, move |store| {
        serval_admin::endpoints::remove(store, &caller, &service, &url)
    })
    .await
}

#[utoipa::path(delete, path = "/api/v1/services/{service}/endpoints/{endpoint}", tag = "endpoints",
    params(Unversioned, IfMatch),
    responses((status = 200, description = "Removed (the static endpoint, auto-update rule or canary of that name)", body = Written<Removed>), Refusals))]
pub async fn remove_endpoint(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(at): Path<EndpointPath>,
    headers: HeaderMap,
) -> Answer {
    remove_at(state, admin, &at.service, at.url(), headers).await
}

#[utoipa::path(delete, path = "/api/v1/services/{service}/endpoints/{endpoint}/{version}",
    tag = "endpoints", params(Versioned, IfMatch),
    responses((status = 200, description = "Removed", body = Written<Removed>), Refusals))]
pub async fn remove_endpoint_version(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(at): Path<EndpointPath>,
    headers: HeaderMap,
) -> Answer {
    remove_at(state, admin, &at.service, at.url(), headers).await
}

#[utoipa::path(get, path = "/api/v1/services/{service}/canaries", tag = "endpoints", params(ServicePath),
    responses((status = 200, description = "Canaries", body = Vec<Canary>), Refusals))]
pub async fn list_canaries(
    State(state): State<AppState>,
    Path(ServicePath { service }): Path<ServicePath>,
) -> Answer {
    let snapshot = blocking(&state, move |store| store.snapshot(&id(&service))).await?;
    let canaries: Vec<_> = snapshot.config.canaries.into_values().collect();
    Ok(read(canaries, snapshot.service.revision))
}

#[utoipa::path(put, path = "/api/v1/services/{service}/canaries/{name}", tag = "endpoints",
    params(NamePath, IfMatch), request_body = CanarySpec,
    responses(
        (status = 201, description = "Added", body = Written<Canary>),
        (status = 200, description = "Replaced (new weights)", body = Written<Canary>),
        Refusals))]
pub async fn put_canary(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(NamePath { service, name }): Path<NamePath>,
    headers: HeaderMap,
    spec: Result<Json<CanarySpec>, JsonRejection>,
) -> Answer {
    let spec = body(spec)?;
    admin.may_change(&name)?;
    for target in &spec.input_endpoints {
        admin.may_change(target.split_once('/').map_or(target.as_str(), |(n, _)| n))?;
    }
    let caller = admin.caller(&headers)?;
    change(&state, move |store| {
        serval_admin::endpoints::put_canary(store, &caller, &id(&service), &name, &spec)
    })
    .await
}

#[utoipa::path(delete, path = "/api/v1/services/{service}/canaries/{name}", tag = "endpoints",
    params(NamePath, IfMatch),
    responses((status = 200, description = "Removed", body = Written<Removed>), Refusals))]
pub async fn remove_canary(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(NamePath { service, name }): Path<NamePath>,
    headers: HeaderMap,
) -> Answer {
    remove_at(state, admin, &service, name, headers).await
}

#[utoipa::path(get, path = "/api/v1/services/{service}/auto-update", tag = "endpoints", params(ServicePath),
    responses((status = 200, description = "Auto-update rules and the versions they serve", body = Vec<RuleView>), Refusals))]
pub async fn list_rules(
    State(state): State<AppState>,
    Path(ServicePath { service }): Path<ServicePath>,
) -> Answer {
    let snapshot = blocking(&state, move |store| store.snapshot(&id(&service))).await?;
    let mut versions = snapshot.config.auto_versions;
    let rules: Vec<RuleView> = snapshot
        .config
        .auto_update
        .into_values()
        .map(|rule| RuleView {
            versions: versions.remove(&rule.endpoint).unwrap_or_default(),
            rule,
        })
        .collect();
    Ok(read(rules, snapshot.service.revision))
}

#[utoipa::path(put, path = "/api/v1/services/{service}/auto-update/{name}", tag = "endpoints",
    params(NamePath, IfMatch), request_body = AutoUpdateSpec,
    responses(
        (status = 201, description = "Added", body = Written<AutoUpdateRule>),
        (status = 200, description = "Replaced", body = Written<AutoUpdateRule>),
        Refusals))]
pub async fn put_auto_update(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(NamePath { service, name }): Path<NamePath>,
    headers: HeaderMap,
    spec: Result<Json<AutoUpdateSpec>, JsonRejection>,
) -> Answer {
    let spec = body(spec)?;
    admin.may_change(&name)?;
    let caller = admin.caller(&headers)?;
    change(&state, move |store| {
        serval_admin::endpoints::put_auto_update(store, &caller, &id(&service), &name, &spec)
    })
    .await
}

#[utoipa::path(delete, path = "/api/v1/services/{service}/auto-update/{name}", tag = "endpoints",
    params(NamePath, IfMatch),
    responses((status = 200, description = "Removed", body = Written<Removed>), Refusals))]
pub async fn remove_rule(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(NamePath { service, name }): Path<NamePath>,
    headers: HeaderMap,
) -> Answer {
    remove_at(state, admin, &service, name, headers).await
}

#[utoipa::path(get, path = "/api/v1/services/{service}/metrics", tag = "metrics", params(ServicePath),
    responses((status = 200, description = "Metric logging rules", body = Vec<MetricRule>), Refusals))]
pub async fn list_metrics(
    State(state): State<AppState>,
    Path(ServicePath { service }): Path<ServicePath>,
) -> Answer {
    let snapshot = blocking(&state, move |store| store.snapshot(&id(&service))).await?;
    let rules: Vec<_> = snapshot.config.metrics.into_values().collect();
    Ok(read(rules, snapshot.service.revision))
}

async fn add_metrics_at(
    state: AppState,
    admin: Admin,
    at: EndpointPath,
    headers: HeaderMap,
    spec: Result<Json<MetricsSpec>, JsonRejection>,
) -> Answer {
    let spec = body(spec)?;
    admin.may_change(&at.endpoint)?;
    let caller = admin.caller(&headers)?;
    let (service, key) = (id(&at.service), at.url());
    change(&state, move |store| {
        serval_admin::metrics::add(store, &caller, &service, &key, &spec)
    })
    .await
}

#[utoipa::path(post, path = "/api/v1/services/{service}/metrics/{endpoint}", tag = "metrics",
    params(Unversioned, IfMatch), request_body = MetricsSpec,
    responses(
        (status = 201, description = "Rule created", body = Written<MetricRule>),
        (status = 200, description = "Variables merged into the rule", body = Written<MetricRule>),
        Refusals))]
pub async fn add_metrics(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(at): Path<EndpointPath>,
    headers: HeaderMap,
    spec: Result<Json<MetricsSpec>, JsonRejection>,
) -> Answer {
    add_metrics_at(state, admin, at, headers, spec).await
}

#[utoipa::path(post, path = "/api/v1/services/{service}/metrics/{endpoint}/{version}",
    tag = "metrics", params(Versioned, IfMatch), request_body = MetricsSpec,
    responses(
        (status = 201, description = "Rule created", body = Written<MetricRule>),
        (status = 200, description = "Variables merged into the rule", body = Written<MetricRule>),
        Refusals))]
pub async fn add_metrics_version(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(at): Path<EndpointPath>,
    headers: HeaderMap,
    spec: Result<Json<MetricsSpec>, JsonRejection>,
) -> Answer {
    add_metrics_at(state, admin, at, headers, spec).await
}

/// `?variable=a&variable=b`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the query; read with `pairs`
pub struct Variables {
    /// Only these variables of the rule (repeat the parameter); none: the whole rule.
    variable: Option<Vec<String>>,
}

async fn remove_metrics_at(
    state: AppState,
    admin: Admin,
    at: EndpointPath,
    headers: HeaderMap,
    query: RawQuery,
) -> Answer {
    admin.may_change(&at.endpoint)?;
    let variables = all(&pairs(&query), "variable");
    let caller = admin.caller(&headers)?;
    let (service, key) = (id(&at.service), at.url());
    change(&state, move |store| {
        serval_admin::metrics::remove(store, &caller, &service, &key, &variables)
    })
    .await
}

#[utoipa::path(delete, path = "/api/v1/services/{service}/metrics/{endpoint}", tag = "metrics",
    params(Unversioned, IfMatch, Variables),
    responses((status = 200, description = "Removed", body = Written<MetricsRemoved>), Refusals))]
pub async fn remove_metrics(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(at): Path<EndpointPath>,
    headers: HeaderMap,
    query: RawQuery,
) -> Answer {
    remove_metrics_at(state, admin, at, headers, query).await
}

#[utoipa::path(delete, path = "/api/v1/services/{service}/metrics/{endpoint}/{version}",
    tag = "metrics", params(Versioned, IfMatch, Variables),
    responses((status = 200, description = "Removed", body = Written<MetricsRemoved>), Refusals))]
pub async fn remove_metrics_version(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(at): Path<EndpointPath>,
    headers: HeaderMap,
    query: RawQuery,
) -> Answer {
    remove_metrics_at(state, admin, at, headers, query).await
}

#[utoipa::path(get, path = "/api/v1/services/{service}/instances", tag = "services", params(ServicePath),
    responses((status = 200, description = "Running servers, newest heartbeat first", body = Vec<InstanceStatus>), Refusals))]
pub async fn instances(
    State(state): State<AppState>,
    Path(ServicePath { service }): Path<ServicePath>,
) -> Answer {
    let list = blocking(&state, move |store| store.instances(&id(&service))).await?;
    Ok(Json(list).into_response())
}

async fn keys_of(state: &AppState, service: String) -> Answer {
    let keys = blocking(state, move |store| {
        serval_admin::keys::list(store, &id(&service))
    })
    .await?;
    Ok(Json(keys).into_response())
}

async fn create_key_of(
    state: &AppState,
    admin: &Admin,
    service: String,
    headers: &HeaderMap,
    spec: Result<Json<KeySpec>, JsonRejection>,
) -> Answer {
    admin.unlimited("create keys")?;
    let (caller, spec) = (admin.caller(headers)?, body(spec)?);
    change(state, move |store| {
        serval_admin::keys::create(store, &caller, &id(&service), &spec)
    })
    .await
}

async fn revoke_key_of(
    state: &AppState,
    admin: &Admin,
    service: String,
    name: String,
    headers: &HeaderMap,
) -> Answer {
    admin.unlimited("revoke keys")?;
    let caller = admin.caller(headers)?;
    change(state, move |store| {
        serval_admin::keys::revoke(store, &caller, &id(&service), &name)
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/services/{service}/keys", tag = "keys", params(ServicePath),
    responses((status = 200, description = "The service's keys (never their secrets)", body = Vec<KeyView>), Refusals))]
pub async fn list_keys(
    State(state): State<AppState>,
    Path(ServicePath { service }): Path<ServicePath>,
) -> Answer {
    keys_of(&state, service).await
}

#[utoipa::path(post, path = "/api/v1/services/{service}/keys", tag = "keys",
    params(ServicePath, IfMatch), request_body = KeySpec,
    responses((status = 201, description = "Created: the key is in this answer only", body = Written<NewKey>), Refusals))]
pub async fn create_key(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(ServicePath { service }): Path<ServicePath>,
    headers: HeaderMap,
    spec: Result<Json<KeySpec>, JsonRejection>,
) -> Answer {
    create_key_of(&state, &admin, service, &headers, spec).await
}

#[utoipa::path(delete, path = "/api/v1/services/{service}/keys/{name}", tag = "keys",
    params(NamePath, IfMatch),
    responses((status = 200, description = "Revoked (servers refuse it after their next reload)", body = Written<String>), Refusals))]
pub async fn revoke_key(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(NamePath { service, name }): Path<NamePath>,
    headers: HeaderMap,
) -> Answer {
    revoke_key_of(&state, &admin, service, name, &headers).await
}

#[utoipa::path(get, path = "/api/v1/keys", tag = "keys",
    responses((status = 200, description = "The keys of the server's own service", body = Vec<KeyView>), Refusals))]
pub async fn list_own_keys(State(state): State<AppState>) -> Answer {
    let service = state.config.service_id.clone();
    keys_of(&state, service).await
}

#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", params(IfMatch), request_body = KeySpec,
    responses((status = 201, description = "Created in the server's own service", body = Written<NewKey>), Refusals))]
pub async fn create_own_key(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    headers: HeaderMap,
    spec: Result<Json<KeySpec>, JsonRejection>,
) -> Answer {
    let service = state.config.service_id.clone();
    create_key_of(&state, &admin, service, &headers, spec).await
}

/// `{name}` of a key of the server's own service.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyName {
    /// The key's name.
    name: String,
}

#[utoipa::path(delete, path = "/api/v1/keys/{name}", tag = "keys", params(KeyName, IfMatch),
    responses((status = 200, description = "Revoked", body = Written<String>), Refusals))]
pub async fn revoke_own_key(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(KeyName { name }): Path<KeyName>,
    headers: HeaderMap,
) -> Answer {
    let service = state.config.service_id.clone();
    revoke_key_of(&state, &admin, service, name, &headers).await
}
