//! `create`, `list`, `config`.

use anyhow::{Result, bail};
use serde::Serialize;
use serval_store::{NewService, Service, ServiceSettings};

use crate::cli::{ConfigArgs, CreateArgs};
use crate::context::{Context, cell, live_instances, note, print_table, table, time, warn};
use crate::parse;

pub fn create(ctx: &Context, args: &CreateArgs) -> Result<()> {
    if args.name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    let service = ctx.store.create_service(&NewService {
        name: args.name.clone(),
        project: args.project.clone(),
        tags: args.tags.clone(),
    })?;
    if ctx.json {
        return ctx.print_json(&service);
    }
    println!("New Serving Service created: id={}", service.id);
    Ok(())
}

#[derive(Serialize)]
struct ServiceView {
    #[serde(flatten)]
    service: Service,
    endpoints: usize,
    canaries: usize,
    auto_update_rules: usize,
    /// Running `serval serve` instances (heartbeat within 15 s).
    instances: Vec<serval_store::InstanceStatus>,
}

pub fn list(ctx: &Context) -> Result<()> {
    let mut views = Vec::new();
    for service in ctx.store.list_services()? {
        let config = ctx.store.snapshot(&service.id)?.config;
        let instances = live_instances(ctx, &service.id)?;
        views.push(ServiceView {
            instances,
            service,
            endpoints: config.endpoints.len(),
            canaries: config.canaries.len(),
            auto_update_rules: config.auto_update.len(),
        });
    }
    if ctx.json {
        return ctx.print_json(&views);
    }
    if views.is_empty() {
        note("No serving services found: create one with `serval create --name NAME`");
        return Ok(());
    }
    let mut t = table(&[
        "id",
        "name",
        "project",
        "tags",
        "endpoints",
        "revision",
        "instances",
        "created",
    ]);
    for v in &views {
        t.add_row(vec![
            v.service.id.clone(),
            v.service.name.clone(),
            v.service.project.clone(),
            v.service.tags.join(","),
            (v.endpoints + v.canaries + v.auto_update_rules).to_string(),
            v.service.revision.to_string(),
            instances_cell(&v.instances),
            time(v.service.created_ms),
        ]);
    }
    print_table(&t);
    Ok(())
}

fn instances_cell(instances: &[serval_store::InstanceStatus]) -> String {
    if instances.is_empty() {
        return "-".to_string();
    }
    let failed: usize = instances
        .iter()
        .map(|i| i.endpoints.values().filter(|e| e.state == "failed").count())
        .sum();
    let addresses: Vec<String> = instances
        .iter()
        .map(|i| match i.grpc_port {
            Some(grpc) => format!("{}:{} (gRPC {}:{grpc})", i.host, i.port, i.host),
            None => format!("{}:{}", i.host, i.port),
        })
        .collect();
    if failed > 0 {
        format!("{} ({failed} failed endpoint(s))", addresses.join(","))
    } else {
        addresses.join(",")
    }
}

fn check_url(flag: &str, value: &str) -> Result<()> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => bail!("{flag} '{value}' must be an http(s) URL such as http://127.0.0.1:8080/serve"),
    }
}

fn check_host_port(flag: &str, value: &str) -> Result<()> {
    let ok = value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !ok {
        bail!("{flag} '{value}' must be host:port, e.g. 127.0.0.1:8001");
    }
    Ok(())
}

pub fn config(ctx: &Context, args: &ConfigArgs) -> Result<()> {
    let service = ctx.service()?;
    let changing = args.base_serving_url.is_some()
        || args.triton_grpc_server.is_some()
        || args.triton_grpc_compression.is_some()
        || args.kafka_metric_server.is_some()
        || args.metric_log_freq.is_some()
        || args.python.is_some()
        || args.extra_python_packages.is_some();
    if let Some(url) = &args.base_serving_url {
        check_url("--base-serving-url", url)?;
    }
    if let Some(addr) = &args.triton_grpc_server {
        check_host_port("--triton-grpc-server", addr)?;
    }
    if let Some(addr) = &args.kafka_metric_server {
        check_host_port("--kafka-metric-server", addr)?;
    }
    if let Some(freq) = args.metric_log_freq {
        parse::frequency("--metric-log-freq", freq)?;
    }
    if let Some(python) = &args.python {
        if python.trim().is_empty() {
            bail!("--python must name an interpreter");
        }
        if python.contains('/') && !std::path::Path::new(python).exists() {
            warn(format!(
                "Python interpreter '{python}' does not exist on this machine"
            ));
        }
    }
    let settings = if changing {
        note(format!("Configure serving service id={}", service.id));
        let mut settings = ServiceSettings::default();
        ctx.store.update_service(&service.id, &mut |config| {
            let s = &mut config.settings;
            if let Some(v) = &args.base_serving_url {
                s.serving_base_url = Some(v.clone());
            }
            if let Some(v) = &args.triton_grpc_server {
                s.triton_grpc_server = Some(v.clone());
            }
            if let Some(v) = args.triton_grpc_compression {
                s.triton_grpc_compression = Some(v);
            }
            if let Some(v) = &args.kafka_metric_server {
                s.kafka_metric_server = Some(v.clone());
            }
            if let Some(v) = args.metric_log_freq {
                s.metric_log_freq = Some(v);
            }
            if let Some(v) = &args.python {
                s.python = Some(v.clone());
            }
            if let Some(v) = &args.extra_python_packages {
                // An empty value removes them.
                s.extra_python_packages = Some(v.trim().to_string()).filter(|v| !v.is_empty());
            }
            settings = s.clone();
            Ok(())
        })?;
        if args.kafka_metric_server.is_some() {
            warn(
                "serval does not send statistics to Kafka: Prometheus scrapes /metrics on every server",
            );
        }
        settings
    } else {
        ctx.store.snapshot(&service.id)?.config.settings
    };
    if ctx.json {
        return ctx.print_json(&settings);
    }
    let mut t = table(&["setting", "value"]);
    t.add_row(vec![
        "serving_base_url".to_string(),
        cell(settings.serving_base_url.as_deref()),
    ]);
    t.add_row(vec![
        "triton_grpc_server".to_string(),
        cell(settings.triton_grpc_server.as_deref()),
    ]);
    t.add_row(vec![
        "triton_grpc_compression".to_string(),
        settings
            .triton_grpc_compression
            .map_or("- (false)".to_string(), |on| on.to_string()),
    ]);
    t.add_row(vec![
        "kafka_metric_server".to_string(),
        cell(settings.kafka_metric_server.as_deref()),
    ]);
    t.add_row(vec![
        "metric_log_freq".to_string(),
        settings
            .metric_log_freq
            .map_or("- (1.0)".to_string(), |f| f.to_string()),
    ]);
    t.add_row(vec!["python".to_string(), cell(settings.python.as_deref())]);
    t.add_row(vec![
        "extra_python_packages".to_string(),
        cell(settings.extra_python_packages.as_deref()),
    ]);
    print_table(&t);
    Ok(())
}
