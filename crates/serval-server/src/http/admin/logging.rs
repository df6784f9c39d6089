//! A service's payload logs: add, list, remove.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serval_admin::Written;
use serval_admin::payload_logs::LogSpec;
use serval_store::PayloadLog;

use super::service::ServicePath;
use super::{
    Admin, AdminError, Answer, Refusals, bad_request, blocking, body, change, id, name_of, one,
    pairs, read,
};
use crate::state::AppState;

/// A key limited to some endpoints may log one of them (by url); a prefix needs an unlimited key.
fn may_log(admin: &Admin, endpoint: &str) -> Result<(), AdminError> {
    let endpoint = endpoint.trim_matches('/');
    if endpoint.contains('*') {
        return admin.unlimited("log every endpoint with a prefix");
    }
    admin.may_change(name_of(endpoint))
}

#[utoipa::path(get, path = "/api/v1/services/{service}/logging", tag = "endpoints",
    params(ServicePath),
    responses((status = 200, description = "Payload logs", body = Vec<PayloadLog>), Refusals))]
pub async fn list_logs(
    State(state): State<AppState>,
    Path(ServicePath { service }): Path<ServicePath>,
) -> Answer {
    let snapshot = blocking(&state, move |store| store.snapshot(&id(&service))).await?;
    let logs: Vec<_> = snapshot.config.payload_logs.into_values().collect();
    Ok(read(logs, snapshot.service.revision))
}

#[utoipa::path(put, path = "/api/v1/services/{service}/logging", tag = "endpoints",
    params(ServicePath, super::service::IfMatch), request_body = LogSpec,
    responses(
        (status = 201, description = "Added", body = Written<PayloadLog>),
        (status = 200, description = "Replaced", body = Written<PayloadLog>),
        Refusals))]
pub async fn put_log(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(ServicePath { service }): Path<ServicePath>,
    headers: HeaderMap,
    spec: Result<Json<LogSpec>, JsonRejection>,
) -> Answer {
    let spec = body(spec)?;
    may_log(&admin, &spec.endpoint)?;
    let caller = admin.caller(&headers)?;
    change(&state, move |store| {
        serval_admin::payload_logs::put(
            store,
            &caller,
            &id(&service),
            &spec,
            serval_store::now_ms(),
        )
    })
    .await
}

/// `?endpoint=`: the log's endpoint url or prefix, as it was added.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the query; read from the raw pairs
pub struct RemoveQuery {
    /// The endpoint url or prefix of the log.
    endpoint: String,
}

#[utoipa::path(delete, path = "/api/v1/services/{service}/logging", tag = "endpoints",
    params(ServicePath, RemoveQuery, super::service::IfMatch),
    responses((status = 200, description = "Removed", body = Written<PayloadLog>), Refusals))]
pub async fn remove_log(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(ServicePath { service }): Path<ServicePath>,
    query: RawQuery,
    headers: HeaderMap,
) -> Answer {
    let pairs = pairs(&query);
    let endpoint = one(&pairs, "endpoint")
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| {
            bad_request("give the endpoint: ?endpoint=NAME[/VERSION] or ?endpoint=PREFIX*")
        })?;
    may_log(&admin, &endpoint)?;
    let caller = admin.caller(&headers)?;
    change(&state, move |store| {
        serval_admin::payload_logs::remove(store, &caller, &id(&service), &endpoint)
    })
    .await
}
