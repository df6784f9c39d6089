//! Serving services and their settings.

use serde::{Deserialize, Serialize};
use serval_store::{NewService, Service, ServiceSettings, Store};

use crate::metrics::check_frequency;
use crate::{Caller, Result, Written, ensure, service_target};

/// A service to create (`POST /api/v1/services`, `serval create`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

pub fn create(store: &dyn Store, caller: &Caller, spec: &ServiceSpec) -> Result<Written<Service>> {
    ensure(!spec.name.trim().is_empty(), || {
        "--name must not be empty".to_string()
    })?;
    let change = caller.change("service.create", "services");
    let service = store.create_service(
        &NewService {
            name: spec.name.clone(),
            project: spec.project.clone(),
            tags: spec.tags.clone(),
        },
        &change,
    )?;
    let revision = service.revision;
    let mut written = Written::new(service, Some(revision));
    written.created = true;
    Ok(written)
}

/// Settings to change (`PATCH .../config`, `serval config`): each one given is set, the others
/// are kept. An empty `extra_python_packages` removes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    #[serde(default)]
    pub serving_base_url: Option<String>,
    #[serde(default)]
    pub triton_grpc_server: Option<String>,
    #[serde(default)]
    pub triton_grpc_compression: Option<bool>,
    #[serde(default)]
    pub kafka_metric_server: Option<String>,
    #[serde(default)]
    pub metric_log_freq: Option<f64>,
    #[serde(default)]
    pub python: Option<String>,
    #[serde(default)]
    pub extra_python_packages: Option<String>,
}

impl SettingsPatch {
    pub fn is_empty(&self) -> bool {
        *self == SettingsPatch::default()
    }
}

fn check_url(flag: &str, value: &str) -> Result<()> {
    let ok = url::Url::parse(value)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    ensure(ok, || {
        format!("{flag} '{value}' must be an http(s) URL such as http://127.0.0.1:8080/serve")
    })
}

fn check_host_port(flag: &str, value: &str) -> Result<()> {
    let ok = value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    ensure(ok, || {
        format!("{flag} '{value}' must be host:port, e.g. 127.0.0.1:8001")
    })
}

/// Changes the settings of `service_id`.
pub fn configure(
    store: &dyn Store,
    caller: &Caller,
    service_id: &str,
    patch: &SettingsPatch,
) -> Result<Written<ServiceSettings>> {
    if let Some(url) = &patch.serving_base_url {
        check_url("--base-serving-url", url)?;
    }
    if let Some(addr) = &patch.triton_grpc_server {
        check_host_port("--triton-grpc-server", addr)?;
    }
    if let Some(addr) = &patch.kafka_metric_server {
        check_host_port("--kafka-metric-server", addr)?;
    }
    if let Some(freq) = patch.metric_log_freq {
        check_frequency("--metric-log-freq", freq)?;
    }
    if let Some(python) = &patch.python {
        ensure(!python.trim().is_empty(), || {
            "--python must name an interpreter".to_string()
        })?;
    }
    let mut settings = ServiceSettings::default();
    let change = caller.change("config.set", service_target(service_id, "config"));
    let after = store.update_service(service_id, &change, &mut |config| {
        let s = &mut config.settings;
        if let Some(v) = &patch.serving_base_url {
            s.serving_base_url = Some(v.clone());
        }
        if let Some(v) = &patch.triton_grpc_server {
            s.triton_grpc_server = Some(v.clone());
        }
        if let Some(v) = patch.triton_grpc_compression {
            s.triton_grpc_compression = Some(v);
        }
        if let Some(v) = &patch.kafka_metric_server {
            s.kafka_metric_server = Some(v.clone());
        }
        if let Some(v) = patch.metric_log_freq {
            s.metric_log_freq = Some(v);
        }
        if let Some(v) = &patch.python {
            s.python = Some(v.clone());
        }
        if let Some(v) = &patch.extra_python_packages {
            s.extra_python_packages = Some(v.trim().to_string()).filter(|v| !v.is_empty());
        }
        settings = s.clone();
        Ok(())
    })?;
    let mut written = Written::new(settings, Some(after.revision));
    if patch.kafka_metric_server.is_some() {
        written.warnings.push(
            "serval does not send statistics to Kafka: Prometheus scrapes /metrics on every server"
                .to_string(),
        );
    }
    Ok(written)
}
