//! A service's shadows: add, list, remove, and the fleet's comparison report.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serval_admin::Written;
use serval_admin::shadows::{ShadowReport, ShadowSpec};
use serval_store::Shadow;

use super::service::ServicePath;
use super::{
    Admin, Answer, Refusals, blocking, body, change, endpoint_and_window, endpoint_of, id, name_of,
    one, pairs, read,
};
use crate::state::AppState;

#[utoipa::path(get, path = "/api/v1/services/{service}/shadows", tag = "endpoints",
    params(ServicePath),
    responses((status = 200, description = "Shadows", body = Vec<Shadow>), Refusals))]
pub async fn list_shadows(
    State(state): State<AppState>,
    Path(ServicePath { service }): Path<ServicePath>,
) -> Answer {
    let snapshot = blocking(&state, move |store| store.snapshot(&id(&service))).await?;
    let shadows: Vec<_> = snapshot.config.shadows.into_values().collect();
    Ok(read(shadows, snapshot.service.revision))
}

#[utoipa::path(put, path = "/api/v1/services/{service}/shadows", tag = "endpoints",
    params(ServicePath, super::service::IfMatch), request_body = ShadowSpec,
    responses(
        (status = 201, description = "Added", body = Written<Shadow>),
        (status = 200, description = "Replaced (new fraction or tolerance)", body = Written<Shadow>),
        Refusals))]
pub async fn put_shadow(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(ServicePath { service }): Path<ServicePath>,
    headers: HeaderMap,
    spec: Result<Json<ShadowSpec>, JsonRejection>,
) -> Answer {
    let spec = body(spec)?;
    admin.may_change(name_of(&spec.endpoint))?;
    admin.may_change(name_of(&spec.target))?;
    let caller = admin.caller(&headers)?;
    change(&state, move |store| {
        serval_admin::shadows::put(store, &caller, &id(&service), &spec, serval_store::now_ms())
    })
    .await
}

/// `?endpoint=` and, optionally, `&target=` (default: every shadow of the endpoint).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the query; read from the raw pairs
pub struct RemoveQuery {
    /// The endpoint url whose shadow is removed.
    endpoint: String,
    /// Only the shadow to this endpoint url.
    target: Option<String>,
}

#[utoipa::path(delete, path = "/api/v1/services/{service}/shadows", tag = "endpoints",
    params(ServicePath, RemoveQuery, super::service::IfMatch),
    responses((status = 200, description = "Removed", body = Written<Vec<Shadow>>), Refusals))]
pub async fn remove_shadow(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(ServicePath { service }): Path<ServicePath>,
    query: RawQuery,
    headers: HeaderMap,
) -> Answer {
    let pairs = pairs(&query);
    let endpoint = endpoint_of(&pairs)?;
    let target = one(&pairs, "target");
    admin.may_change(name_of(&endpoint))?;
    let caller = admin.caller(&headers)?;
    change(&state, move |store| {
        serval_admin::shadows::remove(store, &caller, &id(&service), &endpoint, target.as_deref())
    })
    .await
}

/// `?endpoint=` and, optionally, `&window=` (a duration such as `10m`; default: since each
/// shadow was added).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the query; read from the raw pairs
pub struct ReportQuery {
    /// The endpoint url whose shadows are reported.
    endpoint: String,
    /// Only the last part of the history, e.g. `10m`.
    window: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/services/{service}/shadows/report", tag = "endpoints",
    params(ServicePath, ReportQuery),
    responses((status = 200, description = "One comparison per target, summed over every server",
        body = Vec<ShadowReport>), Refusals))]
pub async fn shadow_report(
    State(state): State<AppState>,
    Path(ServicePath { service }): Path<ServicePath>,
    query: RawQuery,
) -> Answer {
    let (endpoint, window) = endpoint_and_window(&query)?;
    let reports = blocking(&state, move |store| {
        serval_admin::shadows::report(
            store,
            &id(&service),
            &endpoint,
            window,
            serval_store::now_ms(),
        )
    })
    .await?;
    Ok(axum::response::IntoResponse::into_response(Json(reports)))
}
