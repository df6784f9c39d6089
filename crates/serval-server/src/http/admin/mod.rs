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

mod drift;
mod logging;
mod registry;
mod rollouts;
mod service;
mod shadows;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde_json::json;
use serval_admin::{Caller, Written};
use serval_store::{ApiKey, Role, Store, StoreError};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// The refusals every admin route may answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // a description of answers, never built
enum Refusals {
    /// Invalid input: the message names the problem.
    #[response(status = 400)]
    Invalid(ErrorBody),
    /// No key, or an unknown, revoked or expired one.
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// Not an admin key, or outside the key's endpoints.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such service, endpoint, rule, key or model.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `If-Match` names a revision the service has moved past; nothing was written.
    #[response(status = 412)]
    Stale(ErrorBody),
}

/// The admin routes behind the admin-key layer, and their OpenAPI description.
pub fn routes(state: &AppState) -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, api) = OpenApiRouter::new()
        .routes(routes!(service::list_services, service::create_service))
        .routes(routes!(service::show_service))
        .routes(routes!(service::show_config, service::configure))
        .routes(routes!(service::list_endpoints))
        .routes(routes!(service::put_endpoint, service::remove_endpoint))
        .routes(routes!(
            service::put_endpoint_version,
            service::remove_endpoint_version
        ))
        .routes(routes!(service::list_canaries))
        .routes(routes!(service::put_canary, service::remove_canary))
        .routes(routes!(
            shadows::list_shadows,
            shadows::put_shadow,
            shadows::remove_shadow
        ))
        .routes(routes!(shadows::shadow_report))
        .routes(routes!(
            drift::drift_report,
            drift::put_reference,
            drift::remove_reference
        ))
        .routes(routes!(
            logging::list_logs,
            logging::put_log,
            logging::remove_log
        ))
        .routes(routes!(rollouts::rollout_status, rollouts::start_rollout))
        .routes(routes!(rollouts::rollout_action))
        .routes(routes!(service::list_rules))
        .routes(routes!(service::put_auto_update, service::remove_rule))
        .routes(routes!(service::list_metrics))
        .routes(routes!(service::add_metrics, service::remove_metrics))
        .routes(routes!(
            service::add_metrics_version,
            service::remove_metrics_version
        ))
        .routes(routes!(service::instances))
        .routes(routes!(service::list_keys, service::create_key))
        .routes(routes!(service::revoke_key))
        .routes(routes!(service::list_own_keys, service::create_own_key))
        .routes(routes!(service::revoke_own_key))
        .routes(routes!(registry::list_models, registry::register_model))
        .routes(routes!(registry::upload_model))
        .routes(routes!(registry::show_model))
        .routes(routes!(registry::publish_model))
        .routes(routes!(registry::tag_model))
        .routes(routes!(registry::upload_code))
        .routes(routes!(registry::audit))
        .route_layer(from_fn_with_state(state.clone(), admin_key))
        .split_for_parts();
    (router, api)
}

/// An admin API error: a status and `{"detail": ...}`.
#[derive(Debug)]
pub struct AdminError(StatusCode, String);

/// An error's body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub detail: String,
}

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
    let refused = match state.door.authenticate(authorization) {
        Ok(Some(key)) if key.role == Role::Admin => {
            request.extensions_mut().insert(Admin(key));
            return next.run(request).await;
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
    };
    // Refused before its body was read: the connection cannot carry another request.
    let mut refused = refused;
    if crate::http::body::declares_body(request.headers()) {
        crate::http::body::close(&mut refused);
    }
    refused
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

/// The endpoint name of a url (`name/version` → `name`), as keys are scoped.
fn name_of(url: &str) -> &str {
    let url = url.trim_matches('/');
    url.split_once('/').map_or(url, |(name, _)| name)
}

/// `?endpoint=` (required).
fn endpoint_of(pairs: &[(String, String)]) -> Result<String, AdminError> {
    one(pairs, "endpoint")
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| bad_request("give the endpoint: ?endpoint=NAME[/VERSION]"))
}

/// A report's `?endpoint=` (required) and `&window=` (a duration such as `1h`; milliseconds).
fn endpoint_and_window(query: &RawQuery) -> Result<(String, Option<i64>), AdminError> {
    let pairs = pairs(query);
    let window = one(&pairs, "window")
        .map(|w| serval_admin::shadows::window(&w))
        .transpose()?;
    Ok((endpoint_of(&pairs)?, window))
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
