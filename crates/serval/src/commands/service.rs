//! `create`, `list`, `config`.

use anyhow::Result;
use serde::Serialize;
use serval_admin::services::{ServiceSpec, SettingsPatch};
use serval_store::Service;

use crate::cli::{ConfigArgs, CreateArgs};
use crate::context::{Context, cell, live_instances, note, print_table, show, table, time, warn};

pub fn create(ctx: &Context, args: &CreateArgs) -> Result<()> {
    let spec = ServiceSpec {
        name: args.name.clone(),
        project: args.project.clone(),
        tags: args.tags.clone(),
    };
    let written = ctx.deployment().create_service(&spec)?;
    if ctx.json {
        return ctx.print_json(&written.result);
    }
    println!("New Serving Service created: id={}", written.result.id);
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
    for service in ctx.deployment().list_services()? {
        let config = ctx.deployment().snapshot(&service.id)?.config;
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

pub fn config(ctx: &Context, args: &ConfigArgs) -> Result<()> {
    let service = ctx.service()?;
    let patch = SettingsPatch {
        serving_base_url: args.base_serving_url.clone(),
        triton_grpc_server: args.triton_grpc_server.clone(),
        triton_grpc_compression: args.triton_grpc_compression,
        kafka_metric_server: args.kafka_metric_server.clone(),
        metric_log_freq: args.metric_log_freq,
        python: args.python.clone(),
        extra_python_packages: args.extra_python_packages.clone(),
    };
    if let Some(python) = patch.python.as_deref().filter(|p| p.contains('/'))
        && !std::path::Path::new(python).exists()
    {
        warn(format!(
            "Python interpreter '{python}' does not exist on this machine"
        ));
    }
    let settings = if patch.is_empty() {
        ctx.deployment().snapshot(&service.id)?.config.settings
    } else {
        note(format!("Configure serving service id={}", service.id));
        let written = ctx.deployment().configure(&service.id, &patch)?;
        show(&written);
        written.result
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
