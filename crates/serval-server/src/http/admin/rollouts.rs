//! A service's rollouts: start, status, pause, resume, abort.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serval_admin::Written;
use serval_admin::rollouts::{Command, RolloutSpec, RolloutStatus};

use super::{Admin, Answer, Refusals, bad_request, blocking, body, change, id, read};
use crate::state::AppState;

/// `{service}` and `{canary}`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CanaryPath {
    /// The service's id.
    service: String,
    /// The canary the rollout drives.
    canary: String,
}

/// `{service}`, `{canary}` and `{action}`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ActionPath {
    /// The service's id.
    service: String,
    /// The canary the rollout drives.
    canary: String,
    /// `pause`, `resume` or `abort`.
    action: String,
}

#[utoipa::path(get, path = "/api/v1/services/{service}/rollouts/{canary}", tag = "endpoints",
    params(CanaryPath),
    responses((status = 200, description = "The rollout: state, step, weights, events",
        body = RolloutStatus), Refusals))]
pub async fn rollout_status(
    State(state): State<AppState>,
    Path(CanaryPath { service, canary }): Path<CanaryPath>,
) -> Answer {
    let (status, revision) = blocking(&state, move |store| {
        let id = id(&service);
        let status = serval_admin::rollouts::status(store, &id, &canary)?;
        Ok((status, store.revision(&id)?))
    })
    .await?;
    Ok(read(status, revision))
}

#[utoipa::path(put, path = "/api/v1/services/{service}/rollouts/{canary}", tag = "endpoints",
    params(CanaryPath, super::service::IfMatch), request_body = RolloutSpec,
    responses((status = 201, description = "Started", body = Written<RolloutStatus>), Refusals))]
pub async fn start_rollout(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(CanaryPath { service, canary }): Path<CanaryPath>,
    headers: HeaderMap,
    spec: Result<Json<RolloutSpec>, JsonRejection>,
) -> Answer {
    let spec = body(spec)?;
    admin.may_change(&canary)?;
    for url in [&spec.from, &spec.to] {
        let url = url.trim_matches('/');
        admin.may_change(url.split_once('/').map_or(url, |(n, _)| n))?;
    }
    let caller = admin.caller(&headers)?;
    change(&state, move |store| {
        let written = serval_admin::rollouts::start(
            store,
            &caller,
            &id(&service),
            &canary,
            &spec,
            serval_store::now_ms(),
        )?;
        Ok(written.map(|r| RolloutStatus::of(&r)))
    })
    .await
}

#[utoipa::path(post, path = "/api/v1/services/{service}/rollouts/{canary}/{action}",
    tag = "endpoints", params(ActionPath, super::service::IfMatch),
    responses((status = 200, description = "Paused, resumed or aborted", body = Written<RolloutStatus>),
        Refusals))]
pub async fn rollout_action(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(ActionPath {
        service,
        canary,
        action,
    }): Path<ActionPath>,
    headers: HeaderMap,
) -> Answer {
    let command = match action.as_str() {
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "abort" => Command::Abort,
        other => {
            return Err(bad_request(format!(
                "'{other}' is not a rollout action: pause, resume or abort"
            )));
        }
    };
    admin.may_change(&canary)?;
    let caller = admin.caller(&headers)?;
    change(&state, move |store| {
        let written = serval_admin::rollouts::command(
            store,
            &caller,
            &id(&service),
            &canary,
            command,
            serval_store::now_ms(),
        )?;
        Ok(written.map(|r| RolloutStatus::of(&r)))
    })
    .await
}
