//! `metrics add | remove | list`: metric logging rules.

use anyhow::{Result, bail};
use serde::Serialize;
use serval_admin::metrics::MetricsSpec;
use serval_store::{MetricRule, MetricVariable};

use crate::cli::{MetricsAddArgs, MetricsRemoveArgs};
use crate::context::{Context, note, print_table, show, table, warn};
use crate::parse;

pub fn add(ctx: &Context, args: &MetricsAddArgs) -> Result<()> {
    let service = ctx.service()?;
    let key = args.endpoint.trim_matches('/').to_string();
    if key.is_empty() {
        bail!("--endpoint must name an endpoint or a prefix ending with '*'");
    }
    note(format!(
        "Serving service Task {}, Adding metric logging endpoint '/{key}/'",
        service.id
    ));
    let mut warnings = Vec::new();
    let variables = parse::metric_variables(
        &args.variable_scalar,
        &args.variable_enum,
        &args.variable_value,
        &args.variable_counter,
        &mut |w| warnings.push(w),
    )?;
    for w in &warnings {
        warn(w);
    }
    let spec = MetricsSpec {
        log_frequency: args.log_freq,
        variables,
    };
    let written = ctx.deployment().add_metrics(&service.id, &key, &spec)?;
    show(&written);
    let rule = &written.result;
    if ctx.json {
        return ctx.print_json(rule);
    }
    println!(
        "Metric logging '{key}': {} variable(s)",
        rule.variables.len()
    );
    Ok(())
}

pub fn remove(ctx: &Context, args: &MetricsRemoveArgs) -> Result<()> {
    let service = ctx.service()?;
    let key = args.endpoint.trim_matches('/').to_string();
    note(format!(
        "Serving service Task {}, Removing metrics from endpoint={key}",
        service.id
    ));
    let written = ctx
        .deployment()
        .remove_metrics(&service.id, &key, &args.variable)?;
    show(&written);
    if args.variable.is_empty() {
        println!("Removing metric endpoint: {key}");
    } else {
        for v in &args.variable {
            println!("Removing metric endpoint: {key} / {v}");
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct MetricsView<'a> {
    service: &'a str,
    default_log_frequency: f64,
    metrics: Vec<&'a MetricRule>,
}

fn describe(var: &MetricVariable) -> String {
    match var {
        MetricVariable::Scalar { buckets } => {
            let b: Vec<String> = buckets.iter().map(|b| b.to_string()).collect();
            b.join(",")
        }
        MetricVariable::Enum { buckets } => buckets.join(","),
        MetricVariable::Value | MetricVariable::Counter => "-".to_string(),
    }
}

pub fn list(ctx: &Context) -> Result<()> {
    let service = ctx.service()?;
    let snapshot = ctx.deployment().snapshot(&service.id)?;
    let default_freq = snapshot.config.settings.metric_log_freq.unwrap_or(1.0);
    if ctx.json {
        return ctx.print_json(&MetricsView {
            service: &service.id,
            default_log_frequency: default_freq,
            metrics: snapshot.config.metrics.values().collect(),
        });
    }
    note(format!(
        "List endpoint metrics, control task id={}",
        service.id
    ));
    if snapshot.config.metrics.is_empty() {
        println!("Logged Metrics: (none)");
        return Ok(());
    }
    let mut t = table(&["endpoint", "log freq", "variable", "type", "buckets"]);
    for rule in snapshot.config.metrics.values() {
        let freq = rule
            .log_frequency
            .map_or(format!("{default_freq} (default)"), |f| f.to_string());
        if rule.variables.is_empty() {
            t.add_row(vec![
                rule.endpoint.clone(),
                freq.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for (name, var) in &rule.variables {
            t.add_row(vec![
                rule.endpoint.clone(),
                freq.clone(),
                name.clone(),
                var.type_name().to_string(),
                describe(var),
            ]);
        }
    }
    print_table(&t);
    Ok(())
}
