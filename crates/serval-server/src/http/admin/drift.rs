//! A service's drift references: store, remove, and the fleet's drift report.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serval_admin::Written;
use serval_admin::drift::{DriftReport, ReferenceSpec};
use serval_store::DriftReference;

use super::service::ServicePath;
use super::{
    Admin, Answer, Refusals, blocking, body, change, endpoint_and_window, endpoint_of, id, name_of,
    pairs,
};
use crate::state::AppState;

#[utoipa::path(put, path = "/api/v1/services/{service}/drift", tag = "endpoints",
    params(ServicePath, super::service::IfMatch), request_body = ReferenceSpec,
    responses(
        (status = 201, description = "Added", body = Written<DriftReference>),
        (status = 200, description = "Replaced", body = Written<DriftReference>),
        Refusals))]
pub async fn put_reference(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(ServicePath { service }): Path<ServicePath>,
    headers: HeaderMap,
    spec: Result<Json<ReferenceSpec>, JsonRejection>,
) -> Answer {
    let spec = body(spec)?;
    admin.may_change(name_of(&spec.endpoint))?;
    let caller = admin.caller(&headers)?;
    change(&state, move |store| {
        serval_admin::drift::put_reference(
            store,
            &caller,
            &id(&service),
            &spec,
            serval_store::now_ms(),
        )
    })
    .await
}

/// `?endpoint=` and, for the report, optionally `&window=` (a duration such as `1h`; default
/// the reference's window).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the query; read from the raw pairs
pub struct DriftQuery {
    /// The endpoint url or name, as its reference was stored.
    endpoint: String,
    /// Another window than the reference's (report only).
    window: Option<String>,
}

#[utoipa::path(delete, path = "/api/v1/services/{service}/drift", tag = "endpoints",
    params(ServicePath, DriftQuery, super::service::IfMatch),
    responses((status = 200, description = "Removed", body = Written<DriftReference>), Refusals))]
pub async fn remove_reference(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(ServicePath { service }): Path<ServicePath>,
    query: RawQuery,
    headers: HeaderMap,
) -> Answer {
    let endpoint = endpoint_of(&pairs(&query))?;
    admin.may_change(name_of(&endpoint))?;
    let caller = admin.caller(&headers)?;
    change(&state, move |store| {
        serval_admin::drift::remove_reference(store, &caller, &id(&service), &endpoint)
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/services/{service}/drift", tag = "endpoints",
    params(ServicePath, DriftQuery),
    responses((status = 200, description = "Each feature's live window (every server) against the reference",
        body = DriftReport), Refusals))]
pub async fn drift_report(
    State(state): State<AppState>,
    Path(ServicePath { service }): Path<ServicePath>,
    query: RawQuery,
) -> Answer {
    let (endpoint, window) = endpoint_and_window(&query)?;
    let report = blocking(&state, move |store| {
        serval_admin::drift::report(
            store,
            &id(&service),
            &endpoint,
            window,
            serval_store::now_ms(),
        )
    })
    .await?;
    Ok(axum::response::IntoResponse::into_response(Json(report)))
}
