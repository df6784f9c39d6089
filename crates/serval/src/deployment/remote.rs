//! A server's admin API (`--server URL`, an admin key in `SERVAL_API_KEY`): the operations run
//! on the server, recorded under the key's name; this machine needs neither the store nor its
//! credentials.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serval_admin::Written;
use serval_admin::audit::AuditView;
use serval_admin::drift::{DriftReport, ReferenceSpec};
use serval_admin::endpoints::{AutoUpdateSpec, CanarySpec, EndpointSpec, EndpointView, Removed};
use serval_admin::keys::{KeySpec, KeyView, NewKey};
use serval_admin::metrics::{MetricsRemoved, MetricsSpec};
use serval_admin::payload_logs::LogSpec;
use serval_admin::registry::{ModelSpec, TagChange};
use serval_admin::rollouts::{Command as RolloutAction, RolloutSpec, RolloutStatus};
use serval_admin::services::{ServiceSpec, SettingsPatch};
use serval_admin::shadows::{ShadowReport, ShadowSpec};
use serval_store::{
    AutoUpdateRule, Canary, CodeKind, CodeRef, DriftReference, InstanceStatus, MetricRule, Model,
    ModelQuery, PayloadLog, Service, ServiceConfig, ServiceSettings, Shadow, Snapshot, StoreError,
};

use super::Deployment;

pub struct Remote {
    base: url::Url,
    key: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

/// A request body.
enum Send<'a> {
    None,
    Json(Value),
    File(&'a Path),
}

impl Remote {
    pub fn new(server: &str, key: Option<&str>) -> Result<Remote> {
        let base = url::Url::parse(server.trim_end_matches('/'))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                anyhow!(
                    "--server '{server}' must be a server's http(s) URL, e.g. http://serving:8080"
                )
            })?;
        let key = key
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| {
                anyhow!(
                    "--server needs an admin key: set SERVAL_API_KEY (serval auth create-key --role admin)"
                )
            })?
            .trim()
            .to_string();
        let client = reqwest::Client::builder()
            .build()
            .context("setting up the HTTP client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the HTTP client")?;
        Ok(Remote {
            base,
            key,
            client,
            runtime,
        })
    }

    /// `/api/v1/<segments…>?query`, each segment escaped.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Result<url::Url> {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| anyhow!("--server '{}' cannot take a path", self.base))?;
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Send<'_>,
    ) -> Result<T> {
        let url = self.url(segments, query)?;
        let shown = format!("{} {}", method, url.path());
        self.runtime.block_on(async {
            let mut request = self
                .client
                .request(method, url.clone())
                .bearer_auth(&self.key);
            request = match body {
                Send::None => request,
                Send::Json(value) => request
                    .header("Content-Type", "application/json")
                    .body(serde_json::to_vec(&value)?),
                Send::File(path) => {
                    let file = tokio::fs::File::open(path)
                        .await
                        .with_context(|| format!("reading '{}'", path.display()))?;
                    request
                        .header("Content-Type", "application/octet-stream")
                        .body(reqwest::Body::from(file))
                }
            };
            let response = request.send().await.map_err(|e| {
                anyhow!(
                    "cannot reach the serval server at {}: {}",
                    self.base,
                    root_cause(&e)
                )
            })?;
            let status = response.status();
            let text = response
                .text()
                .await
                .map_err(|e| anyhow!("{shown}: the reply was cut off: {e}"))?;
            if !status.is_success() {
                let detail = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| format!("{shown} answered {status}"));
                if status == reqwest::StatusCode::NOT_FOUND && detail == "Not Found" {
                    bail!(
                        "the server at {} has no admin API (serve --require-auth, --admin-api on)",
                        self.base
                    );
                }
                // As the store's own errors, so that commands report them the same way.
                return Err(match status.as_u16() {
                    404 => StoreError::NotFound(detail).into(),
                    400 | 422 => StoreError::InvalidInput(detail).into(),
                    412 => StoreError::Stale(detail).into(),
                    _ => anyhow!("{detail}"),
                });
            }
            serde_json::from_str(&text).map_err(|e| anyhow!("{shown}: unexpected reply: {e}"))
        })
    }

    fn get<T: DeserializeOwned>(&self, segments: &[&str], query: &[(&str, String)]) -> Result<T> {
        self.call(reqwest::Method::GET, segments, query, Send::None)
    }

    fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<T> {
        self.call(
            method,
            segments,
            &[],
            Send::Json(serde_json::to_value(body)?),
        )
    }
}

fn root_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

use reqwest::Method;

impl Deployment for Remote {
    fn list_services(&self) -> Result<Vec<Service>> {
        self.get(&["services"], &[])
    }

    fn service(&self, id: &str) -> Result<Service> {
        Ok(self.snapshot(id)?.service)
    }

    fn snapshot(&self, id: &str) -> Result<Snapshot> {
        let mut read: Value = self.get(&["services", id], &[])?;
        // Keys come without their hashes: listed by `keys`.
        if let Some(config) = read.get_mut("config").and_then(Value::as_object_mut) {
            config.remove("api_keys");
        }
        let service: Service = serde_json::from_value(read["service"].take())?;
        let config: ServiceConfig = serde_json::from_value(read["config"].take())?;
        Ok(Snapshot { service, config })
    }

    fn instances(&self, service: &str) -> Result<Vec<InstanceStatus>> {
        self.get(&["services", service, "instances"], &[])
    }

    fn model(&self, id: &str) -> Result<Model> {
        self.get(&["models", id], &[])
    }

    fn query_models(&self, query: &ModelQuery) -> Result<Vec<Model>> {
        let mut pairs = Vec::new();
        if let Some(name) = &query.name {
            pairs.push(("name", name.clone()));
        }
        if query.name_regex {
            pairs.push(("name_regex", "true".to_string()));
        }
        if let Some(project) = &query.project {
            pairs.push(("project", project.clone()));
        }
        for tag in &query.tags {
            pairs.push(("tags", tag.clone()));
        }
        if query.only_published {
            pairs.push(("published", "true".to_string()));
        }
        if let Some(limit) = query.limit {
            pairs.push(("limit", limit.to_string()));
        }
        self.get(&["models"], &pairs)
    }

    fn keys(&self, service: &str) -> Result<Vec<KeyView>> {
        self.get(&["services", service, "keys"], &[])
    }

    fn audit(&self, since_ms: Option<i64>, limit: usize) -> Result<Vec<AuditView>> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(since) = since_ms {
            query.push(("since_ms", since.to_string()));
        }
        self.get(&["audit"], &query)
    }

    fn create_service(&self, spec: &ServiceSpec) -> Result<Written<Service>> {
        self.send(Method::POST, &["services"], spec)
    }

    fn configure(&self, service: &str, patch: &SettingsPatch) -> Result<Written<ServiceSettings>> {
        self.send(Method::PATCH, &["services", service, "config"], patch)
    }

    fn put_endpoint(
        &self,
        service: &str,
        name: &str,
        spec: &EndpointSpec,
    ) -> Result<Written<EndpointView>> {
        self.send(Method::PUT, &["services", service, "endpoints", name], spec)
    }

    fn remove(&self, service: &str, url: &str) -> Result<Written<Removed>> {
        let mut segments = vec!["services", service, "endpoints"];
        segments.extend(url.split('/'));
        self.call(Method::DELETE, &segments, &[], Send::None)
    }

    fn put_canary(&self, service: &str, name: &str, spec: &CanarySpec) -> Result<Written<Canary>> {
        self.send(Method::PUT, &["services", service, "canaries", name], spec)
    }

    fn put_reference(
        &self,
        service: &str,
        spec: &ReferenceSpec,
    ) -> Result<Written<DriftReference>> {
        self.send(Method::PUT, &["services", service, "drift"], spec)
    }

    fn remove_reference(&self, service: &str, endpoint: &str) -> Result<Written<DriftReference>> {
        self.call(
            Method::DELETE,
            &["services", service, "drift"],
            &[("endpoint", endpoint.to_string())],
            Send::None,
        )
    }

    fn drift_report(
        &self,
        service: &str,
        endpoint: &str,
        window_ms: Option<i64>,
    ) -> Result<DriftReport> {
        let mut query = vec![("endpoint", endpoint.to_string())];
        query.extend(window_ms.map(|w| ("window", format!("{w}ms"))));
        self.get(&["services", service, "drift"], &query)
    }

    fn put_payload_log(&self, service: &str, spec: &LogSpec) -> Result<Written<PayloadLog>> {
        self.send(Method::PUT, &["services", service, "logging"], spec)
    }

    fn remove_payload_log(&self, service: &str, endpoint: &str) -> Result<Written<PayloadLog>> {
        self.call(
            Method::DELETE,
            &["services", service, "logging"],
            &[("endpoint", endpoint.to_string())],
            Send::None,
        )
    }

    fn put_shadow(&self, service: &str, spec: &ShadowSpec) -> Result<Written<Shadow>> {
        self.send(Method::PUT, &["services", service, "shadows"], spec)
    }

    fn remove_shadow(
        &self,
        service: &str,
        endpoint: &str,
        target: Option<&str>,
    ) -> Result<Written<Vec<Shadow>>> {
        let mut query = vec![("endpoint", endpoint.to_string())];
        query.extend(target.map(|t| ("target", t.to_string())));
        self.call(
            Method::DELETE,
            &["services", service, "shadows"],
            &query,
            Send::None,
        )
    }

    fn shadow_report(
        &self,
        service: &str,
        endpoint: &str,
        window_ms: Option<i64>,
    ) -> Result<Vec<ShadowReport>> {
        let mut query = vec![("endpoint", endpoint.to_string())];
        query.extend(window_ms.map(|w| ("window", format!("{w}ms"))));
        self.get(&["services", service, "shadows", "report"], &query)
    }

    fn start_rollout(
        &self,
        service: &str,
        canary: &str,
        spec: &RolloutSpec,
    ) -> Result<Written<RolloutStatus>> {
        self.send(
            Method::PUT,
            &["services", service, "rollouts", canary],
            spec,
        )
    }

    fn rollout_action(
        &self,
        service: &str,
        canary: &str,
        action: RolloutAction,
    ) -> Result<Written<RolloutStatus>> {
        let verb = match action {
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Abort => "abort",
        };
        self.call(
            Method::POST,
            &["services", service, "rollouts", canary, verb],
            &[],
            Send::None,
        )
    }

    fn rollout_status(&self, service: &str, canary: &str) -> Result<RolloutStatus> {
        self.get(&["services", service, "rollouts", canary], &[])
    }

    fn put_auto_update(
        &self,
        service: &str,
        name: &str,
        spec: &AutoUpdateSpec,
    ) -> Result<Written<AutoUpdateRule>> {
        self.send(
            Method::PUT,
            &["services", service, "auto-update", name],
            spec,
        )
    }

    fn add_metrics(
        &self,
        service: &str,
        endpoint: &str,
        spec: &MetricsSpec,
    ) -> Result<Written<MetricRule>> {
        let mut segments = vec!["services", service, "metrics"];
        segments.extend(endpoint.trim_matches('/').split('/'));
        self.send(Method::POST, &segments, spec)
    }

    fn remove_metrics(
        &self,
        service: &str,
        endpoint: &str,
        variables: &[String],
    ) -> Result<Written<MetricsRemoved>> {
        let mut segments = vec!["services", service, "metrics"];
        segments.extend(endpoint.trim_matches('/').split('/'));
        let query: Vec<(&str, String)> =
            variables.iter().map(|v| ("variable", v.clone())).collect();
        self.call(Method::DELETE, &segments, &query, Send::None)
    }

    fn create_key(&self, service: &str, spec: &KeySpec) -> Result<Written<NewKey>> {
        self.send(Method::POST, &["services", service, "keys"], spec)
    }

    fn revoke_key(&self, service: &str, name: &str) -> Result<Written<String>> {
        self.call(
            Method::DELETE,
            &["services", service, "keys", name],
            &[],
            Send::None,
        )
    }

    fn register_model(&self, spec: &ModelSpec) -> Result<Written<Model>> {
        self.send(Method::POST, &["models"], spec)
    }

    fn publish_model(&self, id: &str) -> Result<Written<Model>> {
        self.call(Method::POST, &["models", id, "publish"], &[], Send::None)
    }

    fn tag_model(&self, id: &str, tags: &TagChange) -> Result<Written<Model>> {
        self.send(Method::POST, &["models", id, "tags"], tags)
    }

    fn store_code(&self, file: &Path, name: &str, kind: CodeKind) -> Result<CodeRef> {
        let (sha256, _) = serval_artifacts::hash_file(file, &|_| {})?;
        let code: CodeRef = self.call(
            Method::POST,
            &["code"],
            &[("filename", name.to_string()), ("sha256", sha256)],
            Send::File(file),
        )?;
        if code.kind != kind {
            bail!(
                "the server stored '{name}' as {:?} code, not {kind:?}",
                code.kind
            );
        }
        Ok(code)
    }

    fn upload_model(
        &self,
        file: &Path,
        name: &str,
        destination: Option<&str>,
        spec: ModelSpec,
        progress: serval_artifacts::Progress<'_>,
    ) -> Result<Written<Model>> {
        if destination.is_some() {
            crate::output::warn(
                "--destination is ignored with --server: the server stores uploads where its --artifacts says",
            );
        }
        let (sha256, _) = serval_artifacts::hash_file(file, progress)?;
        let mut query = vec![
            ("name", spec.name.clone()),
            ("filename", name.to_string()),
            ("sha256", sha256),
        ];
        if let Some(project) = &spec.project {
            query.push(("project", project.clone()));
        }
        for tag in &spec.tags {
            query.push(("tags", tag.clone()));
        }
        if let Some(framework) = &spec.framework {
            query.push(("framework", framework.clone()));
        }
        if spec.publish {
            query.push(("publish", "true".to_string()));
        }
        self.call(
            Method::POST,
            &["models", "upload"],
            &query,
            Send::File(file),
        )
    }

    fn upload_passes(&self, _destination: Option<&str>) -> u64 {
        // Hashed here; the upload itself streams the file.
        1
    }

    fn upload_target(&self, _destination: Option<&str>) -> String {
        format!("the server at {}", self.base)
    }
}
