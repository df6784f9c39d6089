//! The admin API (`serve --admin-api on`, only with `--require-auth`): everything the CLI can
//! change, over HTTP under `/api/v1`, for scripts, pipelines and the Python client — without the
//! store's credentials. Every operation is `serval_admin`'s, the same code the CLI runs; a
//! write is one store transaction, recorded in the audit trail with the caller's key name.
//!
//! - Every route needs an admin key (`serval auth create-key --role admin`), checked by the
//!   route layer before the body is read: no key 401, an inference key 403. A key limited to
//!   some endpoints (`--endpoints`) may change only those endpoints (and their canaries,
//!   auto-update rules and metric rules) and the registry; service-wide changes (services,
//!   settings, keys) need an unlimited key.
//! - A service's resources answer with its revision as `ETag: "N"`; a write with
//!   `If-Match: "N"` (or `N`) is refused with 412 if the service has moved on.
//! - Writes answer `{"result": ..., "revision": N, "created": bool, "warnings": [...],
//!   "notes": [...]}` (201 when something new was created), `result` being what
//!   `serval --json` prints; errors are `{"detail": "..."}`.
//! - Model files and preprocess code are streamed to the server's artifact storage
//!   (`--artifacts` / `SERVAL_ARTIFACTS`, else the server's home), hashed on the way; a given
//!   `sha256` must match.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use serval_admin::endpoints::{AutoUpdateSpec, CanarySpec, EndpointSpec, EndpointView};
use serval_admin::keys::{KeySpec, KeyView};
use serval_admin::metrics::MetricsSpec;
use serval_admin::registry::{ModelSpec, TagChange};
use serval_admin::services::{ServiceSpec, SettingsPatch};
use serval_admin::{Caller, Written};
use serval_store::{ApiKey, CodeKind, CodeRef, ModelQuery, Role, Store, StoreError};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::state::AppState;

/// The admin routes, behind the admin-key layer.
pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/services", get(list_services).post(create_service))
        .route("/api/v1/services/{service}", get(show_service))
        .route(
            "/api/v1/services/{service}/config",
            get(show_config).patch(configure),
        )
        .route("/api/v1/services/{service}/endpoints", get(list_endpoints))
        .route(
            "/api/v1/services/{service}/endpoints/{*url}",
            put(put_endpoint).delete(remove_endpoint),
        )
        .route("/api/v1/services/{service}/canaries", get(list_canaries))
        .route(
            "/api/v1/services/{service}/canaries/{name}",
            put(put_canary).delete(remove_endpoint_named),
        )
        .route("/api/v1/services/{service}/auto-update", get(list_rules))
        .route(
            "/api/v1/services/{service}/auto-update/{name}",
            put(put_auto_update).delete(remove_endpoint_named),
        )
        .route("/api/v1/services/{service}/metrics", get(list_metrics))
        .route(
            "/api/v1/services/{service}/metrics/{*endpoint}",
            post(add_metrics).delete(remove_metrics),
        )
        .route("/api/v1/services/{service}/instances", get(instances))
        .route(
            "/api/v1/services/{service}/keys",
            get(list_keys).post(create_key),
        )
        .route(
            "/api/v1/services/{service}/keys/{name}",
            axum::routing::delete(revoke_key),
        )
        .route("/api/v1/keys", get(list_own_keys).post(create_own_key))
        .route("/api/v1/keys/{name}", axum::routing::delete(revoke_own_key))
        .route("/api/v1/models", get(list_models).post(register_model))
        .route("/api/v1/models/upload", post(upload_model))
        .route("/api/v1/models/{id}", get(show_model))
        .route("/api/v1/models/{id}/publish", post(publish_model))
        .route("/api/v1/models/{id}/tags", post(tag_model))
        .route("/api/v1/code", post(upload_code))
        .route("/api/v1/audit", get(audit))
        .route_layer(from_fn_with_state(state.clone(), admin_key))
}

/// An admin API error: a status and `{"detail": ...}`.
#[derive(Debug)]
pub struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            tracing::warn!("admin API: {}", self.1);
        }
        (self.0, Json(json!({ "detail": self.1 }))).into_response()
    }
}

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> Self {
        let status = match &error {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::InvalidInput(_) => StatusCode::BAD_REQUEST,
            StoreError::Stale(_) => StatusCode::PRECONDITION_FAILED,
            StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        AdminError(status, error.to_string())
    }
}

impl From<JsonRejection> for AdminError {
    fn from(rejection: JsonRejection) -> Self {
        AdminError(rejection.status(), rejection.body_text())
    }
}

fn bad_request(detail: impl Into<String>) -> AdminError {
    AdminError(StatusCode::BAD_REQUEST, detail.into())
}

fn forbidden(detail: impl Into<String>) -> AdminError {
    AdminError(StatusCode::FORBIDDEN, detail.into())
}

fn internal(detail: impl std::fmt::Display) -> AdminError {
    AdminError(StatusCode::INTERNAL_SERVER_ERROR, detail.to_string())
}

type Answer = Result<Response, AdminError>;

/// The caller's admin key (put in the request by [`admin_key`]).
#[derive(Debug, Clone)]
struct Admin(ApiKey);

impl Admin {
    /// May this key change endpoint `name` (and what hangs off it)?
    fn may_change(&self, name: &str) -> Result<(), AdminError> {
        if self.0.allows(name) {
            Ok(())
        } else {
            Err(forbidden(format!(
                "the API key '{}' may not change endpoint '{name}' (it is limited to '{}')",
                self.0.name,
                self.0.endpoints.as_deref().unwrap_or("")
            )))
        }
    }

    /// May this key make service-wide changes (services, settings, keys)?
    fn unlimited(&self, what: &str) -> Result<(), AdminError> {
        match &self.0.endpoints {
            None => Ok(()),
            Some(scope) => Err(forbidden(format!(
                "the API key '{}' is limited to endpoints '{scope}' and may not {what}",
                self.0.name
            ))),
        }
    }

    /// The caller as the audit trail names it, with the request's `If-Match`.
    fn caller(&self, headers: &HeaderMap) -> Result<Caller, AdminError> {
        Ok(Caller::key(&self.0.name).if_revision(if_match(headers)?))
    }
}

/// Every admin route: a valid key (401) with the admin role (403), before anything is read.
async fn admin_key(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.door.authenticate(authorization) {
        Ok(Some(key)) if key.role == Role::Admin => {
            request.extensions_mut().insert(Admin(key));
            next.run(request).await
        }
        Ok(Some(key)) => forbidden(format!(
            "the API key '{}' has the role '{}': the admin API needs a key created with \
             `serval auth create-key --role admin`",
            key.name, key.role
        ))
        .into_response(),
        // The admin API runs only with --require-auth; refuse rather than serve it open.
        Ok(None) => AdminError(
            StatusCode::UNAUTHORIZED,
            "the admin API needs an admin key".into(),
        )
        .into_response(),
        Err(error) => AdminError(StatusCode::UNAUTHORIZED, error.to_string()).into_response(),
    }
}

/// `If-Match: "N"` (or `N`; `*` matches any revision).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, AdminError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| bad_request("If-Match must be a revision such as \"7\""))?
        .trim();
    if text == "*" {
        return Ok(None);
    }
    let bare = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    bare.parse::<u64>()
        .map(Some)
        .map_err(|_| bad_request(format!("If-Match '{text}' is not a revision such as \"7\"")))
}

fn etag(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// Runs a store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    call: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, AdminError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || call(&*store))
        .await
        .map_err(internal)?
        .map_err(AdminError::from)
}

/// Runs a write on a blocking thread and answers with it.
async fn change<T: serde::Serialize + Send + 'static>(
    state: &AppState,
    call: impl FnOnce(&dyn Store) -> Result<Written<T>, StoreError> + Send + 'static,
) -> Answer {
    Ok(written(blocking(state, call).await?))
}

/// A write's answer: 201 when it created something, the revision as `ETag`.
fn written<T: serde::Serialize>(written: Written<T>) -> Response {
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let revision = written.revision;
    let mut response = (status, Json(written)).into_response();
    if let Some(revision) = revision {
        response.headers_mut().insert(header::ETAG, etag(revision));
    }
    response
}

/// A read of a service's state, with its revision as `ETag`.
fn read<T: serde::Serialize>(value: T, revision: u64) -> Response {
    let mut response = Json(value).into_response();
    response.headers_mut().insert(header::ETAG, etag(revision));
    response
}

fn body<T: DeserializeOwned>(json: Result<Json<T>, JsonRejection>) -> Result<T, AdminError> {
    Ok(json?.0)
}

fn id(raw: &str) -> String {
    raw.to_ascii_lowercase()
}

async fn list_services(State(state): State<AppState>) -> Answer {
    let services = blocking(&state, |store| store.list_services()).await?;
    Ok(Json(services).into_response())
}

async fn create_service(
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

/// A service and its whole configuration (keys shown without their hashes).
async fn show_service(State(state): State<AppState>, Path(service): Path<String>) -> Answer {
    let snapshot = blocking(&state, move |store| store.snapshot(&id(&service))).await?;
    let now = serval_store::now_ms();
    let mut config = serde_json::to_value(&snapshot.config).map_err(internal)?;
    let keys: Vec<KeyView> = snapshot
        .config
        .api_keys
        .values()
        .map(|k| KeyView::of(k, now))
        .collect();
    config["api_keys"] = serde_json::to_value(keys).map_err(internal)?;
    let revision = snapshot.service.revision;
    Ok(read(
        json!({ "service": snapshot.service, "config": config }),
        revision,
    ))
}

async fn show_config(State(state): State<AppState>, Path(service): Path<String>) -> Answer {
    let snapshot = blocking(&state, move |store| store.snapshot(&id(&service))).await?;
    Ok(read(snapshot.config.settings, snapshot.service.revision))
}

async fn configure(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(service): Path<String>,
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

async fn list_endpoints(State(state): State<AppState>, Path(service): Path<String>) -> Answer {
    let snapshot = blocking(&state, move |store| store.snapshot(&id(&service))).await?;
    let views: Vec<EndpointView> = snapshot
        .config
        .endpoints
        .into_iter()
        .map(|(url, endpoint)| EndpointView { url, endpoint })
        .collect();
    Ok(read(views, snapshot.service.revision))
}

/// `PUT .../endpoints/NAME` or `.../endpoints/NAME/VERSION` (a `version` in the body must agree).
async fn put_endpoint(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path((service, url)): Path<(String, String)>,
    headers: HeaderMap,
    spec: Result<Json<EndpointSpec>, JsonRejection>,
) -> Answer {
    let mut spec = body(spec)?;
    let (name, version) = match url.trim_matches('/').split_once('/') {
        Some((name, version)) => (name.to_string(), Some(version.to_string())),
        None => (url.trim_matches('/').to_string(), None),
    };
    if let Some(version) = version {
        if spec.version.as_ref().is_some_and(|v| *v != version) {
            return Err(bad_request(format!(
                "the path names version '{version}' and the body '{}'",
                spec.version.as_deref().unwrap_or_default()
            )));
        }
        spec.version = Some(version);
    }
    admin.may_change(&name)?;
    let caller = admin.caller(&headers)?;
    change(&state, move |store| {
        serval_admin::endpoints::put_endpoint(store, &caller, &id(&service), &name, &spec)
    })
    .await
}

/// `DELETE .../endpoints/URL`: the static endpoint, auto-update rule or canary `URL`.
async fn remove_endpoint(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path((service, url)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let url = url.trim_matches('/').to_string();
    admin.may_change(url.split_once('/').map_or(url.as_str(), |(n, _)| n))?;
    let caller = admin.caller(&headers)?;
    change(&state, move |store| {
        serval_admin::endpoints::remove(store, &caller, &id(&service), &url)
    })
    .await
}

async fn remove_endpoint_named(
    state: State<AppState>,
    admin: axum::Extension<Admin>,
    Path((service, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    remove_endpoint(state, admin, Path((service, name)), headers).await
}

async fn list_canaries(State(state): State<AppState>, Path(service): Path<String>) -> Answer {
    let snapshot = blocking(&state, move |store| store.snapshot(&id(&service))).await?;
    let canaries: Vec<_> = snapshot.config.canaries.into_values().collect();
    Ok(read(canaries, snapshot.service.revision))
}

async fn put_canary(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path((service, name)): Path<(String, String)>,
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

async fn list_rules(State(state): State<AppState>, Path(service): Path<String>) -> Answer {
    let snapshot = blocking(&state, move |store| store.snapshot(&id(&service))).await?;
    let rules: Vec<Value> = snapshot
        .config
        .auto_update
        .values()
        .map(|rule| {
            let mut view = serde_json::to_value(rule).unwrap_or(Value::Null);
            let versions = snapshot.config.auto_versions.get(&rule.endpoint);
            view["versions"] = serde_json::to_value(versions).unwrap_or(Value::Null);
            view
        })
        .collect();
    Ok(read(rules, snapshot.service.revision))
}

async fn put_auto_update(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path((service, name)): Path<(String, String)>,
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

async fn list_metrics(State(state): State<AppState>, Path(service): Path<String>) -> Answer {
    let snapshot = blocking(&state, move |store| store.snapshot(&id(&service))).await?;
    let rules: Vec<_> = snapshot.config.metrics.into_values().collect();
    Ok(read(rules, snapshot.service.revision))
}

/// The endpoint name a metric rule's key (`url` or `prefix*`) belongs to.
fn metric_owner(key: &str) -> &str {
    let key = key.trim_matches('/');
    key.split_once('/').map_or(key, |(n, _)| n)
}

async fn add_metrics(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path((service, endpoint)): Path<(String, String)>,
    headers: HeaderMap,
    spec: Result<Json<MetricsSpec>, JsonRejection>,
) -> Answer {
    let spec = body(spec)?;
    admin.may_change(metric_owner(&endpoint))?;
    let caller = admin.caller(&headers)?;
    change(&state, move |store| {
        serval_admin::metrics::add(store, &caller, &id(&service), &endpoint, &spec)
    })
    .await
}

async fn remove_metrics(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path((service, endpoint)): Path<(String, String)>,
    headers: HeaderMap,
    query: axum::extract::RawQuery,
) -> Answer {
    admin.may_change(metric_owner(&endpoint))?;
    // `?variable=a&variable=b`: only these variables of the rule.
    let variables: Vec<String> =
        url::form_urlencoded::parse(query.0.unwrap_or_default().as_bytes())
            .filter(|(k, _)| k == "variable")
            .map(|(_, v)| v.into_owned())
            .collect();
    let caller = admin.caller(&headers)?;
    change(&state, move |store| {
        serval_admin::metrics::remove(store, &caller, &id(&service), &endpoint, &variables)
    })
    .await
}

async fn instances(State(state): State<AppState>, Path(service): Path<String>) -> Answer {
    let list = blocking(&state, move |store| store.instances(&id(&service))).await?;
    Ok(Json(list).into_response())
}

async fn list_keys(State(state): State<AppState>, Path(service): Path<String>) -> Answer {
    let keys = blocking(&state, move |store| {
        serval_admin::keys::list(store, &id(&service))
    })
    .await?;
    Ok(Json(keys).into_response())
}

async fn create_key(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(service): Path<String>,
    headers: HeaderMap,
    spec: Result<Json<KeySpec>, JsonRejection>,
) -> Answer {
    admin.unlimited("create keys")?;
    let (caller, spec) = (admin.caller(&headers)?, body(spec)?);
    change(&state, move |store| {
        serval_admin::keys::create(store, &caller, &id(&service), &spec)
    })
    .await
}

async fn revoke_key(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path((service, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    admin.unlimited("revoke keys")?;
    let caller = admin.caller(&headers)?;
    change(&state, move |store| {
        serval_admin::keys::revoke(store, &caller, &id(&service), &name)
    })
    .await
}

/// `/api/v1/keys`: the keys of the server's own service.
async fn list_own_keys(state: State<AppState>) -> Answer {
    let service = state.config.service_id.clone();
    list_keys(state, Path(service)).await
}

async fn create_own_key(
    state: State<AppState>,
    admin: axum::Extension<Admin>,
    headers: HeaderMap,
    spec: Result<Json<KeySpec>, JsonRejection>,
) -> Answer {
    let service = state.config.service_id.clone();
    create_key(state, admin, Path(service), headers, spec).await
}

async fn revoke_own_key(
    state: State<AppState>,
    admin: axum::Extension<Admin>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let service = state.config.service_id.clone();
    revoke_key(state, admin, Path((service, name)), headers).await
}

/// A query's pairs (a key may repeat: `tags=a&tags=b`).
fn pairs(query: &RawQuery) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.0.as_deref().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// The values of `key` (repeated, or comma-separated).
fn all(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn one(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

fn flag(pairs: &[(String, String)], key: &str) -> Result<bool, AdminError> {
    match one(pairs, key).as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(bad_request(format!("{key}={other}: use true or false"))),
    }
}

/// `GET /api/v1/models?name=&name_regex=&project=&tags=a&tags=b&published=&limit=`.
async fn list_models(State(state): State<AppState>, query: RawQuery) -> Answer {
    let pairs = pairs(&query);
    let limit = one(&pairs, "limit")
        .map(|l| l.parse::<usize>())
        .transpose()
        .map_err(|_| bad_request("limit must be a number"))?;
    let query = ModelQuery {
        name: one(&pairs, "name"),
        name_regex: flag(&pairs, "name_regex")?,
        project: one(&pairs, "project"),
        tags: all(&pairs, "tags"),
        only_published: flag(&pairs, "published")?,
        limit,
    };
    let models = blocking(&state, move |store| store.query_models(&query)).await?;
    Ok(Json(models).into_response())
}

async fn show_model(State(state): State<AppState>, Path(model): Path<String>) -> Answer {
    let model = blocking(&state, move |store| store.model(&id(&model))).await?;
    Ok(Json(model).into_response())
}

/// `POST /api/v1/models`: a model already in storage, registered by its URI.
async fn register_model(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    headers: HeaderMap,
    spec: Result<Json<ModelSpec>, JsonRejection>,
) -> Answer {
    let (caller, spec) = (admin.caller(&headers)?, body(spec)?);
    serval_artifacts::parse_uri(&spec.uri).map_err(|e| bad_request(e.to_string()))?;
    change(&state, move |store| {
        serval_admin::registry::register(store, &caller, &spec)
    })
    .await
}

async fn publish_model(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let caller = admin.caller(&headers)?;
    change(&state, move |store| {
        serval_admin::registry::publish(store, &caller, &model)
    })
    .await
}

async fn tag_model(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(model): Path<String>,
    headers: HeaderMap,
    tags: Result<Json<TagChange>, JsonRejection>,
) -> Answer {
    let (caller, tags) = (admin.caller(&headers)?, body(tags)?);
    change(&state, move |store| {
        serval_admin::registry::tag(store, &caller, &model, &tags)
    })
    .await
}

/// A file received: where it was stored, its sha256 and size.
async fn receive(
    state: &AppState,
    body: Body,
    file_name: &str,
    expected_sha256: Option<&str>,
) -> Result<serval_artifacts::StoredArtifact, AdminError> {
    let staging = state.config.cache_dir.join("uploads");
    tokio::fs::create_dir_all(&staging)
        .await
        .map_err(internal)?;
    let temp = tempfile::NamedTempFile::new_in(&staging).map_err(internal)?;
    let mut file = tokio::fs::File::create(temp.path())
        .await
        .map_err(internal)?;
    let mut hasher = Sha256::new();
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| bad_request(format!("the upload was cut off: {e}")))?;
        if let Ok(data) = frame.into_data() {
            hasher.update(&data);
            file.write_all(&data).await.map_err(internal)?;
        }
    }
    file.flush().await.map_err(internal)?;
    drop(file);
    let sha256: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if let Some(expected) = expected_sha256
        && !expected.eq_ignore_ascii_case(&sha256)
    {
        return Err(bad_request(format!(
            "the upload's sha256 is {sha256}, not {expected}: it was changed or cut short on the way"
        )));
    }
    let name = file_name.to_string();
    let path = temp.path().to_path_buf();
    let stored = match state.config.artifacts.clone() {
        Some(destination) => serval_artifacts::upload(&destination, &path, &name, &|_| {})
            .await
            .map_err(|e| AdminError(StatusCode::BAD_GATEWAY, e.to_string()))?,
        None => {
            let local = serval_artifacts::ArtifactStore::new(state.config.artifacts_dir.clone());
            tokio::task::spawn_blocking(move || local.put_file(&path, &name, &|_| {}))
                .await
                .map_err(internal)?
                .map_err(|e| bad_request(e.to_string()))?
        }
    };
    drop(temp);
    Ok(stored)
}

/// `POST /api/v1/models/upload?name=&filename=&project=&tags=a&tags=b&framework=&publish=&sha256=`:
/// the body is the model file, streamed to storage and registered.
async fn upload_model(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    query: RawQuery,
    headers: HeaderMap,
    request: Request,
) -> Answer {
    let pairs = pairs(&query);
    let caller = admin.caller(&headers)?;
    let name = one(&pairs, "name").unwrap_or_default();
    let filename = one(&pairs, "filename")
        .filter(|f| !f.is_empty())
        .ok_or_else(|| bad_request("filename is required: the model file's name"))?;
    if name.trim().is_empty() {
        return Err(bad_request("--name must not be empty"));
    }
    let framework = one(&pairs, "framework");
    if let Some(framework) = &framework {
        serval_admin::registry::framework(framework)?;
    }
    let publish = flag(&pairs, "publish")?;
    let stored = receive(
        &state,
        request.into_body(),
        &filename,
        one(&pairs, "sha256").as_deref(),
    )
    .await?;
    let spec = ModelSpec {
        name,
        project: one(&pairs, "project"),
        tags: all(&pairs, "tags"),
        framework,
        publish,
        uri: stored.uri,
        size: Some(stored.size),
        sha256: Some(stored.sha256),
    };
    change(&state, move |store| {
        serval_admin::registry::register(store, &caller, &spec)
    })
    .await
}

/// `POST /api/v1/code?filename=&sha256=`: preprocess code (a `.py` file, a `.zip` of a package
/// folder, or a folder packed as serval packs it), stored for `preprocess` in an endpoint.
#[derive(Deserialize)]
struct CodeParams {
    filename: String,
    sha256: Option<String>,
}

async fn upload_code(
    State(state): State<AppState>,
    params: Result<Query<CodeParams>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Answer {
    let Query(params) = params.map_err(|e| bad_request(e.body_text()))?;
    let kind = if params.filename.ends_with(serval_artifacts::PACKAGE_SUFFIX) {
        CodeKind::Package
    } else if params.filename.ends_with(".zip") {
        CodeKind::Zip
    } else {
        CodeKind::File
    };
    let stored = receive(
        &state,
        request.into_body(),
        &params.filename,
        params.sha256.as_deref(),
    )
    .await?;
    let code = CodeRef {
        sha256: stored.sha256,
        name: params.filename,
        kind,
        uri: stored.uri,
    };
    Ok((StatusCode::CREATED, Json(code)).into_response())
}

/// `GET /api/v1/audit?since=1h&limit=100` (`since_ms`: epoch milliseconds instead).
#[derive(Deserialize)]
struct AuditParams {
    since: Option<String>,
    since_ms: Option<i64>,
    limit: Option<usize>,
}

async fn audit(
    State(state): State<AppState>,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let Query(params) = params.map_err(|e| bad_request(e.body_text()))?;
    let since = match (params.since.as_deref(), params.since_ms) {
        (Some(text), _) => Some(serval_admin::audit::since(text)?),
        (None, since_ms) => since_ms,
    };
    let limit = params.limit.unwrap_or(100).min(10_000);
    let entries = blocking(&state, move |store| {
        serval_admin::audit::list(store, since, limit)
    })
    .await?;
    Ok(Json(entries).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_takes_quoted_bare_and_any() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_MATCH, HeaderValue::from_str(v).unwrap());
            if_match(&h)
        };
        assert_eq!(with("\"7\"").unwrap(), Some(7));
        assert_eq!(with("7").unwrap(), Some(7));
        assert_eq!(with("W/\"7\"").unwrap(), Some(7));
        assert_eq!(with("*").unwrap(), None);
        assert!(with("seven").is_err());
        assert_eq!(if_match(&HeaderMap::new()).unwrap(), None);
    }
}
