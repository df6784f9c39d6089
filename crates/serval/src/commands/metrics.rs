//! `metrics add | remove | list`: metric logging rules.

use anyhow::{Result, bail};
use serde::Serialize;
use serval_store::{MetricRule, MetricVariable, StoreError};

use crate::cli::{MetricsAddArgs, MetricsRemoveArgs};
use crate::context::{Context, note, print_table, table, warn};
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
    let log_frequency = args
        .log_freq
        .map(|f| parse::frequency("--log-freq", f))
        .transpose()?;
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
    let mut updated = false;
    let mut rule_after = None;
    ctx.store.update_service(&service.id, &mut |config| {
        let is_prefix = key.ends_with('*');
        if !is_prefix && !config.endpoints.contains_key(&key) && !config.metrics.contains_key(&key)
        {
            let hint = if config.auto_update.contains_key(&key) {
                format!(" ('{key}' is an auto-update rule: use '{key}/*' for all its versions)")
            } else {
                String::new()
            };
            return Err(StoreError::InvalidInput(format!(
                "Metric logging '{key}' references a nonexistent endpoint{hint}"
            )));
        }
        let rule = config
            .metrics
            .entry(key.clone())
            .or_insert_with(|| MetricRule {
                endpoint: key.clone(),
                log_frequency: None,
                variables: Default::default(),
            });
        updated = !rule.variables.is_empty() || rule.log_frequency.is_some();
        // clearml merges variables; unlike clearml, an omitted --log-freq keeps the stored one.
        if log_frequency.is_some() {
            rule.log_frequency = log_frequency;
        }
        rule.variables.extend(variables.clone());
        rule_after = Some(rule.clone());
        Ok(())
    })?;
    if updated {
        warn(format!("Metric logging '{key}' updated"));
    }
    let rule = rule_after.ok_or_else(|| anyhow::anyhow!("metric rule was not written"))?;
    if ctx.json {
        return ctx.print_json(&rule);
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
    ctx.store.update_service(&service.id, &mut |config| {
        if args.variable.is_empty() {
            return match config.metrics.remove(&key) {
                Some(_) => Ok(()),
                None => Err(StoreError::NotFound(format!(
                    "Could not remove metric endpoint {key}: no such rule"
                ))),
            };
        }
        let rule = config.metrics.get_mut(&key).ok_or_else(|| {
            StoreError::NotFound(format!(
                "Could not remove metrics from endpoint {key}: no such rule"
            ))
        })?;
        for v in &args.variable {
            if rule.variables.remove(v).is_none() {
                return Err(StoreError::NotFound(format!(
                    "Could not remove metric {v} from endpoint {key}"
                )));
            }
        }
        Ok(())
    })?;
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
    let snapshot = ctx.store.snapshot(&service.id)?;
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
