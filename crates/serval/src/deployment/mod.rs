//! Where the CLI's commands read and change a deployment: the store itself ([`Local`], the
//! default) or a server's admin API ([`Remote`], `--server URL` with an admin key). Both run
//! `serval_admin`'s operations — locally, or on the server — and give back the same records, so
//! a command prints the same thing either way.

mod local;
mod remote;

use std::path::Path;

use anyhow::Result;
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
    ModelQuery, PayloadLog, Service, ServiceSettings, Shadow, Snapshot,
};

pub use local::Local;
pub use remote::Remote;

/// Reads and changes of a deployment, as the CLI's commands need them.
pub trait Deployment {
    fn list_services(&self) -> Result<Vec<Service>>;
    fn service(&self, id: &str) -> Result<Service>;
    /// A service and its configuration (over the admin API without the keys' hashes: its
    /// `api_keys` is empty; [`Deployment::keys`] lists them).
    fn snapshot(&self, id: &str) -> Result<Snapshot>;
    fn instances(&self, service: &str) -> Result<Vec<InstanceStatus>>;
    fn model(&self, id: &str) -> Result<Model>;
    fn query_models(&self, query: &ModelQuery) -> Result<Vec<Model>>;
    fn keys(&self, service: &str) -> Result<Vec<KeyView>>;
    fn audit(&self, since_ms: Option<i64>, limit: usize) -> Result<Vec<AuditView>>;

    fn create_service(&self, spec: &ServiceSpec) -> Result<Written<Service>>;
    fn configure(&self, service: &str, patch: &SettingsPatch) -> Result<Written<ServiceSettings>>;
    fn put_endpoint(
        &self,
        service: &str,
        name: &str,
        spec: &EndpointSpec,
    ) -> Result<Written<EndpointView>>;
    fn remove(&self, service: &str, url: &str) -> Result<Written<Removed>>;
    fn put_canary(&self, service: &str, name: &str, spec: &CanarySpec) -> Result<Written<Canary>>;
    fn put_auto_update(
        &self,
        service: &str,
        name: &str,
        spec: &AutoUpdateSpec,
    ) -> Result<Written<AutoUpdateRule>>;
    fn add_metrics(
        &self,
        service: &str,
        endpoint: &str,
        spec: &MetricsSpec,
    ) -> Result<Written<MetricRule>>;
    fn remove_metrics(
        &self,
        service: &str,
        endpoint: &str,
        variables: &[String],
    ) -> Result<Written<MetricsRemoved>>;
    fn put_reference(&self, service: &str, spec: &ReferenceSpec)
    -> Result<Written<DriftReference>>;
    fn remove_reference(&self, service: &str, endpoint: &str) -> Result<Written<DriftReference>>;
    /// The fleet's drift of `endpoint` over its reference's window (or `window_ms`).
    fn drift_report(
        &self,
        service: &str,
        endpoint: &str,
        window_ms: Option<i64>,
    ) -> Result<DriftReport>;
    fn put_payload_log(&self, service: &str, spec: &LogSpec) -> Result<Written<PayloadLog>>;
    fn remove_payload_log(&self, service: &str, endpoint: &str) -> Result<Written<PayloadLog>>;
    fn put_shadow(&self, service: &str, spec: &ShadowSpec) -> Result<Written<Shadow>>;
    fn remove_shadow(
        &self,
        service: &str,
        endpoint: &str,
        target: Option<&str>,
    ) -> Result<Written<Vec<Shadow>>>;
    /// `endpoint`'s shadows compared over the last `window_ms` (`None`: since each was added).
    fn shadow_report(
        &self,
        service: &str,
        endpoint: &str,
        window_ms: Option<i64>,
    ) -> Result<Vec<ShadowReport>>;
    fn start_rollout(
        &self,
        service: &str,
        canary: &str,
        spec: &RolloutSpec,
    ) -> Result<Written<RolloutStatus>>;
    fn rollout_action(
        &self,
        service: &str,
        canary: &str,
        action: RolloutAction,
    ) -> Result<Written<RolloutStatus>>;
    fn rollout_status(&self, service: &str, canary: &str) -> Result<RolloutStatus>;
    fn create_key(&self, service: &str, spec: &KeySpec) -> Result<Written<NewKey>>;
    fn revoke_key(&self, service: &str, name: &str) -> Result<Written<String>>;
    fn register_model(&self, spec: &ModelSpec) -> Result<Written<Model>>;
    fn publish_model(&self, id: &str) -> Result<Written<Model>>;
    fn tag_model(&self, id: &str, tags: &TagChange) -> Result<Written<Model>>;

    /// Stores preprocess code (`file` on this machine, stored as `name`) where servers read it.
    fn store_code(&self, file: &Path, name: &str, kind: CodeKind) -> Result<CodeRef>;
    /// Stores a model file (`file`, stored as `name`; `destination` overrides where, locally)
    /// and registers it as `spec` (whose `uri`, `size` and `sha256` are filled in).
    fn upload_model(
        &self,
        file: &Path,
        name: &str,
        destination: Option<&str>,
        spec: ModelSpec,
        progress: serval_artifacts::Progress<'_>,
    ) -> Result<Written<Model>>;
    /// Where uploads go, for messages.
    fn upload_target(&self, destination: Option<&str>) -> String;
    /// How many times `upload_model` reads a file through its progress (hashing, copying).
    fn upload_passes(&self, destination: Option<&str>) -> u64;
}
