//! The model registry, preprocess code and the audit trail.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serval_admin::Written;
use serval_admin::audit::AuditView;
use serval_admin::registry::{ModelSpec, TagChange};
use serval_store::{CodeKind, CodeRef, Model, ModelQuery};

use super::{
    Admin, Answer, Refusals, all, bad_request, blocking, body, change, flag, id, one, pairs,
    receive,
};
use crate::state::AppState;

/// The registry's filters.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the query; read with `pairs`
pub struct ModelFilter {
    /// Only models with this name (a regular expression with `name_regex=true`).
    name: Option<String>,
    name_regex: Option<bool>,
    /// Only models in this project.
    project: Option<String>,
    /// Only models with any of these tags (repeat the parameter, or separate with commas).
    tags: Option<Vec<String>>,
    /// Only published models.
    published: Option<bool>,
    /// At most this many (newest first).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/models", tag = "registry", params(ModelFilter),
    responses((status = 200, description = "Models, newest first", body = Vec<Model>), Refusals))]
pub async fn list_models(State(state): State<AppState>, query: RawQuery) -> Answer {
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

/// `{id}` of a model.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ModelPath {
    /// The model's id.
    id: String,
}

#[utoipa::path(get, path = "/api/v1/models/{id}", tag = "registry", params(ModelPath),
    responses((status = 200, description = "The model", body = Model), Refusals))]
pub async fn show_model(
    State(state): State<AppState>,
    Path(ModelPath { id: model }): Path<ModelPath>,
) -> Answer {
    let model = blocking(&state, move |store| store.model(&id(&model))).await?;
    Ok(Json(model).into_response())
}

#[utoipa::path(post, path = "/api/v1/models", tag = "registry", request_body = ModelSpec,
    responses((status = 201, description = "Registered: a file already in storage, by its URI", body = Written<Model>), Refusals))]
pub async fn register_model(
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

#[utoipa::path(post, path = "/api/v1/models/{id}/publish", tag = "registry", params(ModelPath),
    responses((status = 200, description = "Published", body = Written<Model>), Refusals))]
pub async fn publish_model(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(ModelPath { id: model }): Path<ModelPath>,
    headers: HeaderMap,
) -> Answer {
    let caller = admin.caller(&headers)?;
    change(&state, move |store| {
        serval_admin::registry::publish(store, &caller, &model)
    })
    .await
}

#[utoipa::path(post, path = "/api/v1/models/{id}/tags", tag = "registry", params(ModelPath),
    request_body = TagChange,
    responses((status = 200, description = "Tagged", body = Written<Model>), Refusals))]
pub async fn tag_model(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(ModelPath { id: model }): Path<ModelPath>,
    headers: HeaderMap,
    tags: Result<Json<TagChange>, JsonRejection>,
) -> Answer {
    let (caller, tags) = (admin.caller(&headers)?, body(tags)?);
    change(&state, move |store| {
        serval_admin::registry::tag(store, &caller, &model, &tags)
    })
    .await
}

/// An upload's description.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the query; read with `pairs`
pub struct UploadParams {
    /// The model's name in the registry.
    name: String,
    /// The file's name (kept in storage: `<sha256>/<filename>`).
    filename: String,
    project: Option<String>,
    /// Tags (repeat the parameter, or separate with commas).
    tags: Option<Vec<String>>,
    /// clearml's framework name (`xgboost`, `lightgbm`, `onnx`, `scikitlearn`, ...).
    framework: Option<String>,
    /// Publish it at once.
    publish: Option<bool>,
    /// The file's sha256 (hex): the upload is refused (400) if what arrived differs.
    sha256: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/models/upload", tag = "registry", params(UploadParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The model file, streamed"),
    responses((status = 201, description = "Stored and registered", body = Written<Model>), Refusals))]
pub async fn upload_model(
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

/// A code upload's description.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CodeParams {
    /// `preprocess.py` (a module), `NAME.zip` (a package folder, zipped) or `NAME.tar.gz` (a
    /// folder packed as serval packs it).
    filename: String,
    /// The file's sha256 (hex): refused (400) if what arrived differs.
    sha256: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/code", tag = "registry", params(CodeParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The code, streamed"),
    responses((status = 201, description = "Stored: the value of `preprocess` for an endpoint", body = CodeRef), Refusals))]
pub async fn upload_code(
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

/// Which changes.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Since then: a time ago (`1h`, `7d`) or an RFC 3339 time.
    since: Option<String>,
    /// Since then, in epoch milliseconds (instead of `since`).
    since_ms: Option<i64>,
    /// At most this many of the newest (default 100, at most 10,000).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, description = "Recorded changes, oldest first", body = Vec<AuditView>), Refusals))]
pub async fn audit(
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
