//! `model list`: what a service serves — endpoints, canaries, auto-update rules and metric
//! rules, with each endpoint's state on the running servers — as a table or `--json`.

use anyhow::{Context as _, Result};
use serde::Serialize;
use serval_store::{AutoUpdateRule, Canary, CanaryTarget, CodeRef};

use crate::context::{Context, note, print_table, table};
use serval_admin::endpoints::{EndpointView, describe_query, is_known_endpoint};

#[derive(Serialize)]
struct AutoUpdateView<'a> {
    #[serde(flatten)]
    rule: &'a AutoUpdateRule,
    /// What the rule serves now: version → model id (served at `endpoint/<version>`).
    versions: std::collections::BTreeMap<u32, String>,
}

#[derive(Serialize)]
struct ModelListView<'a> {
    service: &'a str,
    revision: u64,
    endpoints: Vec<EndpointView>,
    auto_update: Vec<AutoUpdateView<'a>>,
    canaries: Vec<&'a Canary>,
    /// Shadows: a fraction of `endpoint`'s requests copied to `target` and compared.
    shadows: Vec<&'a serval_store::Shadow>,
    payload_logs: Vec<&'a serval_store::PayloadLog>,
    /// Rollouts, as `model rollout status` shows them.
    rollouts: Vec<serval_admin::rollouts::RolloutStatus>,
    /// Running `serval serve` instances and the state of every endpoint in each.
    instances: Vec<serval_store::InstanceStatus>,
}

/// The versions an auto-update rule serves, with their state when one has failed.
fn serving_cell(
    versions: Option<&std::collections::BTreeMap<u32, String>>,
    instances: &[serval_store::InstanceStatus],
    base: &str,
) -> String {
    let Some(versions) = versions.filter(|v| !v.is_empty()) else {
        return "(no matching model yet)".to_string();
    };
    versions
        .iter()
        .map(|(v, id)| {
            let url = format!("{base}/{v}");
            let state = state_cell(instances, &url);
            if state.starts_with("failed") {
                format!("{url}={id} [{state}]")
            } else {
                format!("{url}={id}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line of what running servers report for an endpoint.
fn state_cell(instances: &[serval_store::InstanceStatus], url: &str) -> String {
    let states: Vec<&serval_store::EndpointStatus> = instances
        .iter()
        .filter_map(|i| i.endpoints.get(url))
        .collect();
    if states.is_empty() {
        return if instances.is_empty() {
            "-".to_string()
        } else {
            "not loaded yet".to_string()
        };
    }
    if let Some(failed) = states.iter().find(|s| s.state == "failed") {
        let serving = if failed.serving {
            " (previous version serving)"
        } else {
            ""
        };
        return format!(
            "failed{serving}: {}",
            failed.error.as_deref().unwrap_or("unknown error")
        );
    }
    let loaded = states.iter().filter(|s| s.state == "loaded").count();
    let mut cell = format!("loaded ({loaded}/{})", instances.len());
    let pools: Vec<&serval_store::PythonStatus> =
        states.iter().filter_map(|s| s.python.as_ref()).collect();
    if !pools.is_empty() {
        let workers: usize = pools.iter().map(|p| p.workers).sum();
        let alive: usize = pools.iter().map(|p| p.alive).sum();
        let restarts: u64 = pools.iter().map(|p| p.restarts).sum();
        cell.push_str(&format!(", python workers {alive}/{workers}"));
        if restarts > 0 {
            cell.push_str(&format!(", {restarts} restarts"));
            if let Some(exit) = pools.iter().find_map(|p| p.last_exit.as_deref()) {
                cell.push_str(&format!(" (last: {exit})"));
            }
        }
        let library: u64 = pools.iter().map(|p| p.library_requests).sum();
        if library > 0 {
            cell.push_str(&format!(", {library} requests via the model library"));
        }
    }
    cell
}

fn io_summary(e: &serval_store::IoSpec) -> String {
    if e.is_empty() {
        return "-".to_string();
    }
    let mut parts = Vec::new();
    if !e.input_name.is_empty() {
        parts.push(format!("in={}", e.input_name.join(",")));
    }
    if !e.input_type.is_empty() {
        parts.push(format!("in_type={}", e.input_type.join(",")));
    }
    if !e.input_size.is_empty() {
        parts.push(format!("in_size={:?}", e.input_size));
    }
    if !e.output_name.is_empty() {
        parts.push(format!("out={}", e.output_name.join(",")));
    }
    if !e.output_type.is_empty() {
        parts.push(format!("out_type={}", e.output_type.join(",")));
    }
    if !e.output_size.is_empty() {
        parts.push(format!("out_size={:?}", e.output_size));
    }
    parts.join(" ")
}

fn code_summary(code: &Option<CodeRef>) -> String {
    code.as_ref().map_or("-".to_string(), |c| {
        format!("{} ({})", c.name, &c.sha256[..12.min(c.sha256.len())])
    })
}

pub fn list(ctx: &Context) -> Result<()> {
    let service = ctx.service()?;
    let snapshot = ctx
        .deployment()
        .snapshot(&service.id)
        .context("reading the service")?;
    let config = &snapshot.config;
    let instances = crate::context::live_instances(ctx, &service.id)?;
    if ctx.json {
        return ctx.print_json(&ModelListView {
            service: &snapshot.service.id,
            revision: snapshot.service.revision,
            endpoints: config
                .endpoints
                .iter()
                .map(|(url, endpoint)| EndpointView {
                    url: url.clone(),
                    endpoint: endpoint.clone(),
                })
                .collect(),
            auto_update: config
                .auto_update
                .values()
                .map(|rule| AutoUpdateView {
                    rule,
                    versions: config
                        .auto_versions
                        .get(&rule.endpoint)
                        .cloned()
                        .unwrap_or_default(),
                })
                .collect(),
            canaries: config.canaries.values().collect(),
            shadows: config.shadows.values().collect(),
            payload_logs: config.payload_logs.values().collect(),
            rollouts: config
                .rollouts
                .values()
                .map(serval_admin::rollouts::RolloutStatus::of)
                .collect(),
            instances,
        });
    }
    note(format!(
        "List model serving and endpoints, control task id={}",
        service.id
    ));
    println!("Endpoints:");
    if config.endpoints.is_empty() {
        println!("  (none)");
    } else {
        let mut t = table(&["url", "engine", "model", "preprocess", "io", "status"]);
        for (url, e) in &config.endpoints {
            t.add_row(vec![
                url.clone(),
                e.engine.to_string(),
                model_cell(ctx, e.model_id.as_deref()),
                code_summary(&e.preprocess),
                io_summary(&e.io),
                state_cell(&instances, url),
            ]);
        }
        print_table(&t);
    }
    println!();
    println!("Auto-update rules:");
    if config.auto_update.is_empty() {
        println!("  (none)");
    } else {
        let mut t = table(&[
            "endpoint",
            "engine",
            "match",
            "max versions",
            "serving",
            "preprocess",
            "io",
        ]);
        for rule in config.auto_update.values() {
            t.add_row(vec![
                rule.endpoint.clone(),
                rule.engine.to_string(),
                describe_query(&rule.query())
                    .replace("name=", if rule.name_regex { "name~" } else { "name=" }),
                rule.max_versions.to_string(),
                serving_cell(
                    config.auto_versions.get(&rule.endpoint),
                    &instances,
                    &rule.endpoint,
                ),
                code_summary(&rule.preprocess),
                io_summary(&rule.io),
            ]);
        }
        print_table(&t);
    }
    println!();
    println!("Canaries:");
    if config.canaries.is_empty() {
        println!("  (none)");
    } else {
        let mut t = table(&["endpoint", "weights", "targets"]);
        for c in config.canaries.values() {
            let targets = match &c.target {
                CanaryTarget::Endpoints(list) => list
                    .iter()
                    .map(|u| {
                        if is_known_endpoint(config, u) {
                            u.clone()
                        } else {
                            format!("{u} (missing)")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                CanaryTarget::Prefix(p) => format!("prefix {p}"),
            };
            let weights: Vec<String> = c.weights.iter().map(|w| w.to_string()).collect();
            t.add_row(vec![c.name.clone(), weights.join(", "), targets]);
        }
        print_table(&t);
    }
    if !config.payload_logs.is_empty() {
        println!();
        println!("Payload logs:");
        print_table(&crate::commands::logging::logs_table(
            config.payload_logs.values(),
        ));
    }
    println!();
    println!("Shadows:");
    if config.shadows.is_empty() {
        println!("  (none)");
    } else {
        let mut t = table(&["endpoint", "target", "fraction", "tolerance"]);
        for s in config.shadows.values() {
            let known = |u: &str| {
                if is_known_endpoint(config, u) {
                    u.to_string()
                } else {
                    format!("{u} (missing)")
                }
            };
            t.add_row(vec![
                known(&s.endpoint),
                known(&s.target),
                s.fraction.to_string(),
                s.tolerance.to_string(),
            ]);
        }
        print_table(&t);
    }
    println!();
    println!("Rollouts:");
    if config.rollouts.is_empty() {
        println!("  (none)");
    } else {
        let mut t = table(&[
            "canary",
            "from",
            "to",
            "state",
            "step",
            "weights",
            "last event",
        ]);
        for r in config.rollouts.values() {
            let status = serval_admin::rollouts::RolloutStatus::of(r);
            let last = r
                .events
                .last()
                .map_or(String::new(), |e| format!("{}: {}", e.kind, e.detail));
            t.add_row(vec![
                r.canary.clone(),
                r.from.clone(),
                r.to.clone(),
                status.state.clone(),
                format!("{}/{}", status.step, r.steps.len()),
                format!("{} / {}", status.weights[0], status.weights[1]),
                last,
            ]);
        }
        print_table(&t);
    }
    println!();
    println!("Serving instances:");
    if instances.is_empty() {
        println!("  (none running: start one with `serval serve`)");
    } else {
        let mut t = table(&[
            "instance",
            "address",
            "gRPC",
            "revision",
            "ready",
            "heartbeat",
        ]);
        for i in &instances {
            t.add_row(vec![
                i.id.clone(),
                format!("{}:{}", i.host, i.port),
                i.grpc_port
                    .map_or_else(|| "-".to_string(), |g| format!("{}:{g}", i.host)),
                i.revision.to_string(),
                if i.ready { "yes" } else { "loading" }.to_string(),
                crate::context::time(i.heartbeat_ms),
            ]);
        }
        print_table(&t);
    }
    Ok(())
}

fn model_cell(ctx: &Context, id: Option<&str>) -> String {
    match id {
        None => "-".to_string(),
        Some(id) => match ctx.deployment().model(id) {
            Ok(m) => format!("{id} ({})", m.name),
            Err(_) => format!("{id} (not in registry)"),
        },
    }
}
