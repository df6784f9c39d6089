//! The store itself: `serval_admin`'s operations run here, recorded as the key `local`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
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
use serval_admin::{Caller, Written};
use serval_artifacts::ArtifactStore;
use serval_store::{
    AutoUpdateRule, Canary, CodeKind, CodeRef, DriftReference, InstanceStatus, MetricRule, Model,
    ModelQuery, PayloadLog, Service, ServiceSettings, Shadow, Snapshot, Store,
};

use super::Deployment;
use crate::output::warn;

pub struct Local {
    pub store: Arc<dyn Store>,
    pub artifacts: ArtifactStore,
    /// Default upload destination (`--artifacts` / `$SERVAL_ARTIFACTS`); `None`: the local home.
    pub destination: Option<String>,
    /// The store is an embedded file (local artifacts are readable by every server using it).
    pub embedded: bool,
    pub caller: Caller,
}

impl Local {
    /// Stores a file: uploaded to `destination`, else to `--artifacts`, else copied into the local
    /// home (with a warning when the store is shared: other machines cannot read it).
    pub fn store_file(
        &self,
        src: &Path,
        name: &str,
        destination: Option<&str>,
        progress: serval_artifacts::Progress<'_>,
    ) -> Result<serval_artifacts::StoredArtifact> {
        match destination.or(self.destination.as_deref()) {
            Some(dest) => {
                serval_artifacts::parse_uri(dest)?;
                Ok(serval_artifacts::block_on(serval_artifacts::upload(
                    dest, src, name, progress,
                ))??)
            }
            None => {
                if !self.embedded {
                    warn(format!(
                        "'{name}' is stored in the local folder {}: servers on other machines cannot read it (use --destination or SERVAL_ARTIFACTS=s3://...)",
                        self.artifacts.root().display()
                    ));
                }
                Ok(self.artifacts.put_file(src, name, progress)?)
            }
        }
    }

    fn store(&self) -> &dyn Store {
        &*self.store
    }
}

impl Deployment for Local {
    fn list_services(&self) -> Result<Vec<Service>> {
        Ok(self.store.list_services()?)
    }

    fn service(&self, id: &str) -> Result<Service> {
        Ok(self.store.service(id)?)
    }

    fn snapshot(&self, id: &str) -> Result<Snapshot> {
        Ok(self.store.snapshot(id)?)
    }

    fn instances(&self, service: &str) -> Result<Vec<InstanceStatus>> {
        Ok(self.store.instances(service)?)
    }

    fn model(&self, id: &str) -> Result<Model> {
        Ok(self.store.model(id)?)
    }

    fn query_models(&self, query: &ModelQuery) -> Result<Vec<Model>> {
        Ok(self.store.query_models(query)?)
    }

    fn keys(&self, service: &str) -> Result<Vec<KeyView>> {
        Ok(serval_admin::keys::list(self.store(), service)?)
    }

    fn audit(&self, since_ms: Option<i64>, limit: usize) -> Result<Vec<AuditView>> {
        Ok(serval_admin::audit::list(self.store(), since_ms, limit)?)
    }

    fn create_service(&self, spec: &ServiceSpec) -> Result<Written<Service>> {
        Ok(serval_admin::services::create(
            self.store(),
            &self.caller,
            spec,
        )?)
    }

    fn configure(&self, service: &str, patch: &SettingsPatch) -> Result<Written<ServiceSettings>> {
        Ok(serval_admin::services::configure(
            self.store(),
            &self.caller,
            service,
            patch,
        )?)
    }

    fn put_endpoint(
        &self,
        service: &str,
        name: &str,
        spec: &EndpointSpec,
    ) -> Result<Written<EndpointView>> {
        Ok(serval_admin::endpoints::put_endpoint(
            self.store(),
            &self.caller,
            service,
            name,
            spec,
        )?)
    }

    fn remove(&self, service: &str, url: &str) -> Result<Written<Removed>> {
        Ok(serval_admin::endpoints::remove(
            self.store(),
            &self.caller,
            service,
            url,
        )?)
    }

    fn put_canary(&self, service: &str, name: &str, spec: &CanarySpec) -> Result<Written<Canary>> {
        Ok(serval_admin::endpoints::put_canary(
            self.store(),
            &self.caller,
            service,
            name,
            spec,
        )?)
    }

    fn put_reference(
        &self,
        service: &str,
        spec: &ReferenceSpec,
    ) -> Result<Written<DriftReference>> {
        Ok(serval_admin::drift::put_reference(
            self.store(),
            &self.caller,
            service,
            spec,
            serval_store::now_ms(),
        )?)
    }

    fn remove_reference(&self, service: &str, endpoint: &str) -> Result<Written<DriftReference>> {
        Ok(serval_admin::drift::remove_reference(
            self.store(),
            &self.caller,
            service,
            endpoint,
        )?)
    }

    fn drift_report(
        &self,
        service: &str,
        endpoint: &str,
        window_ms: Option<i64>,
    ) -> Result<DriftReport> {
        Ok(serval_admin::drift::report(
            self.store(),
            service,
            endpoint,
            window_ms,
            serval_store::now_ms(),
        )?)
    }

    fn put_payload_log(&self, service: &str, spec: &LogSpec) -> Result<Written<PayloadLog>> {
        Ok(serval_admin::payload_logs::put(
            self.store(),
            &self.caller,
            service,
            spec,
            serval_store::now_ms(),
        )?)
    }

    fn remove_payload_log(&self, service: &str, endpoint: &str) -> Result<Written<PayloadLog>> {
        Ok(serval_admin::payload_logs::remove(
            self.store(),
            &self.caller,
            service,
            endpoint,
        )?)
    }

    fn put_shadow(&self, service: &str, spec: &ShadowSpec) -> Result<Written<Shadow>> {
        Ok(serval_admin::shadows::put(
            self.store(),
            &self.caller,
            service,
            spec,
            serval_store::now_ms(),
        )?)
    }

    fn remove_shadow(
        &self,
        service: &str,
        endpoint: &str,
        target: Option<&str>,
    ) -> Result<Written<Vec<Shadow>>> {
        Ok(serval_admin::shadows::remove(
            self.store(),
            &self.caller,
            service,
            endpoint,
            target,
        )?)
    }

    fn shadow_report(
        &self,
        service: &str,
        endpoint: &str,
        window_ms: Option<i64>,
    ) -> Result<Vec<ShadowReport>> {
        Ok(serval_admin::shadows::report(
            self.store(),
            service,
            endpoint,
            window_ms,
            serval_store::now_ms(),
        )?)
    }

    fn start_rollout(
        &self,
        service: &str,
        canary: &str,
        spec: &RolloutSpec,
    ) -> Result<Written<RolloutStatus>> {
        let written = serval_admin::rollouts::start(
            self.store(),
            &self.caller,
            service,
            canary,
            spec,
            serval_store::now_ms(),
        )?;
        Ok(written.map(|r| RolloutStatus::of(&r)))
    }

    fn rollout_action(
        &self,
        service: &str,
        canary: &str,
        action: RolloutAction,
    ) -> Result<Written<RolloutStatus>> {
        let written = serval_admin::rollouts::command(
            self.store(),
            &self.caller,
            service,
            canary,
            action,
            serval_store::now_ms(),
        )?;
        Ok(written.map(|r| RolloutStatus::of(&r)))
    }

    fn rollout_status(&self, service: &str, canary: &str) -> Result<RolloutStatus> {
        Ok(serval_admin::rollouts::status(
            self.store(),
            service,
            canary,
        )?)
    }

    fn put_auto_update(
        &self,
        service: &str,
        name: &str,
        spec: &AutoUpdateSpec,
    ) -> Result<Written<AutoUpdateRule>> {
        Ok(serval_admin::endpoints::put_auto_update(
            self.store(),
            &self.caller,
            service,
            name,
            spec,
        )?)
    }

    fn add_metrics(
        &self,
        service: &str,
        endpoint: &str,
        spec: &MetricsSpec,
    ) -> Result<Written<MetricRule>> {
        Ok(serval_admin::metrics::add(
            self.store(),
            &self.caller,
            service,
            endpoint,
            spec,
        )?)
    }

    fn remove_metrics(
        &self,
        service: &str,
        endpoint: &str,
        variables: &[String],
    ) -> Result<Written<MetricsRemoved>> {
        Ok(serval_admin::metrics::remove(
            self.store(),
            &self.caller,
            service,
            endpoint,
            variables,
        )?)
    }

    fn create_key(&self, service: &str, spec: &KeySpec) -> Result<Written<NewKey>> {
        Ok(serval_admin::keys::create(
            self.store(),
            &self.caller,
            service,
            spec,
        )?)
    }

    fn revoke_key(&self, service: &str, name: &str) -> Result<Written<String>> {
        Ok(serval_admin::keys::revoke(
            self.store(),
            &self.caller,
            service,
            name,
        )?)
    }

    fn register_model(&self, spec: &ModelSpec) -> Result<Written<Model>> {
        Ok(serval_admin::registry::register(
            self.store(),
            &self.caller,
            spec,
        )?)
    }

    fn publish_model(&self, id: &str) -> Result<Written<Model>> {
        Ok(serval_admin::registry::publish(
            self.store(),
            &self.caller,
            id,
        )?)
    }

    fn tag_model(&self, id: &str, tags: &TagChange) -> Result<Written<Model>> {
        Ok(serval_admin::registry::tag(
            self.store(),
            &self.caller,
            id,
            tags,
        )?)
    }

    fn store_code(&self, file: &Path, name: &str, kind: CodeKind) -> Result<CodeRef> {
        let stored = self.store_file(file, name, None, &|_| {})?;
        Ok(CodeRef {
            sha256: stored.sha256,
            name: name.to_string(),
            kind,
            uri: stored.uri,
        })
    }

    fn upload_model(
        &self,
        file: &Path,
        name: &str,
        destination: Option<&str>,
        mut spec: ModelSpec,
        progress: serval_artifacts::Progress<'_>,
    ) -> Result<Written<Model>> {
        let stored = self.store_file(file, name, destination, progress)?;
        spec.uri = stored.uri;
        spec.size = Some(stored.size);
        spec.sha256 = Some(stored.sha256);
        self.register_model(&spec)
    }

    fn upload_passes(&self, destination: Option<&str>) -> u64 {
        // A remote destination is hashed, then uploaded; the home copies while hashing.
        if destination.or(self.destination.as_deref()).is_some() {
            2
        } else {
            1
        }
    }

    fn upload_target(&self, destination: Option<&str>) -> String {
        match destination.or(self.destination.as_deref()) {
            Some(dest) => dest.to_string(),
            None => self.artifacts.root().display().to_string(),
        }
    }
}
