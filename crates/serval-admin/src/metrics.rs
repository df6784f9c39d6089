//! Metric logging rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serval_store::{MetricRule, MetricVariable, Store, StoreError};

use crate::{Caller, Result, Written, ensure, invalid, service_target};

/// Variables to log for an endpoint (or `prefix*`), merged into its rule (`POST
/// .../metrics/{endpoint}`, `serval metrics add`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsSpec {
    /// Sampling rate, 0 to 1; omitted: the rule keeps its own (or the service's default).
    #[serde(default)]
    pub log_frequency: Option<f64>,
    #[serde(default)]
    pub variables: BTreeMap<String, MetricVariable>,
}

/// Checks a sampling rate.
pub fn check_frequency(flag: &str, value: f64) -> Result<f64> {
    ensure((0.0..=1.0).contains(&value), || {
        format!("{flag} must be between 0 and 1, got {value}")
    })?;
    Ok(value)
}

/// Checks a variable's name.
pub fn check_variable_name(raw: &str) -> Result<String> {
    let name = raw.trim();
    ensure(!name.is_empty(), || {
        "metric variable name must not be empty".to_string()
    })?;
    ensure(!name.chars().any(char::is_whitespace), || {
        format!("metric variable name '{name}' must not contain spaces")
    })?;
    Ok(name.to_string())
}

/// Checks a variable's buckets: scalar bounds finite and ascending, enum values distinct.
pub fn check_variable(name: &str, variable: &MetricVariable) -> Result<()> {
    match variable {
        MetricVariable::Scalar { buckets } => {
            ensure(!buckets.is_empty(), || {
                format!("scalar variable '{name}' needs at least one bucket")
            })?;
            ensure(buckets.iter().all(|b| b.is_finite()), || {
                format!("scalar variable '{name}' has a bucket that is not a finite number")
            })?;
            ensure(buckets.windows(2).all(|w| w[0] < w[1]), || {
                format!("scalar variable '{name}' buckets must be in ascending order")
            })
        }
        MetricVariable::Enum { buckets } => {
            ensure(!buckets.is_empty(), || {
                format!("enum variable '{name}' needs at least one value")
            })?;
            let distinct: std::collections::BTreeSet<_> = buckets.iter().collect();
            ensure(distinct.len() == buckets.len(), || {
                format!("enum variable '{name}' lists a value twice")
            })
        }
        MetricVariable::Value | MetricVariable::Counter => Ok(()),
    }
}

/// Adds variables to the rule of `endpoint` (an endpoint url or `prefix*`), creating it.
pub fn add(
    store: &dyn Store,
    caller: &Caller,
    service_id: &str,
    endpoint: &str,
    spec: &MetricsSpec,
) -> Result<Written<MetricRule>> {
    let key = endpoint.trim_matches('/').to_string();
    ensure(!key.is_empty(), || {
        "--endpoint must name an endpoint or a prefix ending with '*'".to_string()
    })?;
    if let Some(f) = spec.log_frequency {
        check_frequency("--log-freq", f)?;
    }
    for (name, variable) in &spec.variables {
        ensure(check_variable_name(name)? == *name, || {
            format!("metric variable name '{name}' must not start or end with spaces")
        })?;
        check_variable(name, variable)?;
    }
    let mut updated = false;
    let mut rule_after = None;
    let change = caller.change(
        "metrics.add",
        service_target(service_id, &format!("metrics/{key}")),
    );
    let after = store.update_service(service_id, &change, &mut |config| {
        let is_prefix = key.ends_with('*');
        if !is_prefix && !config.endpoints.contains_key(&key) && !config.metrics.contains_key(&key)
        {
            let hint = if config.auto_update.contains_key(&key) {
                format!(" ('{key}' is an auto-update rule: use '{key}/*' for all its versions)")
            } else {
                String::new()
            };
            return Err(invalid(format!(
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
        // clearml merges variables; unlike clearml, an omitted log frequency keeps the stored one.
        if spec.log_frequency.is_some() {
            rule.log_frequency = spec.log_frequency;
        }
        rule.variables.extend(spec.variables.clone());
        rule_after = Some(rule.clone());
        Ok(())
    })?;
    let rule =
        rule_after.ok_or_else(|| StoreError::Internal("metric rule was not written".into()))?;
    let mut written = Written::new(rule, Some(after.revision));
    written.created = !updated;
    if updated {
        written
            .warnings
            .push(format!("Metric logging '{key}' updated"));
    }
    Ok(written)
}

/// What `remove` took away: the whole rule (`variables` empty) or these variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricsRemoved {
    pub endpoint: String,
    pub variables: Vec<String>,
}

/// Removes the rule of `endpoint`, or only the named variables of it.
pub fn remove(
    store: &dyn Store,
    caller: &Caller,
    service_id: &str,
    endpoint: &str,
    variables: &[String],
) -> Result<Written<MetricsRemoved>> {
    let key = endpoint.trim_matches('/').to_string();
    let change = caller.change(
        "metrics.remove",
        service_target(service_id, &format!("metrics/{key}")),
    );
    let after = store.update_service(service_id, &change, &mut |config| {
        if variables.is_empty() {
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
        for v in variables {
            if rule.variables.remove(v).is_none() {
                return Err(StoreError::NotFound(format!(
                    "Could not remove metric {v} from endpoint {key}"
                )));
            }
        }
        Ok(())
    })?;
    Ok(Written::new(
        MetricsRemoved {
            endpoint: key,
            variables: variables.to_vec(),
        },
        Some(after.revision),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_checked() {
        let scalar = |b: Vec<f64>| MetricVariable::Scalar { buckets: b };
        assert!(check_variable("x", &scalar(vec![0.0, 1.0])).is_ok());
        assert!(check_variable("x", &scalar(vec![1.0, 0.0])).is_err());
        assert!(check_variable("x", &scalar(vec![])).is_err());
        assert!(check_variable("x", &scalar(vec![f64::NAN])).is_err());
        let e = MetricVariable::Enum {
            buckets: vec!["a".into(), "a".into()],
        };
        assert!(check_variable("e", &e).is_err());
        assert!(check_variable_name(" ").is_err());
        assert!(check_variable_name("a b").is_err());
        assert!(invalid("x").to_string() == "x");
    }
}
