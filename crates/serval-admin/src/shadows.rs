//! Shadow traffic: a copy of a fraction of an endpoint's requests goes to a target endpoint after
//! the endpoint answered, and the two answers are compared (`serval model shadow`). Servers add
//! what they compared to the fleet's statistics in the store ([`Tally`]); [`report`] sums them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serval_store::{Shadow, StatsRow, Store, StoreError};

use crate::endpoints::is_known_endpoint;
use crate::{Caller, Result, Written, ensure, invalid, service_target};

/// The statistics kind of shadow pairs.
pub const KIND: &str = "shadow";

/// Upper bounds (milliseconds) of the latency buckets the fleet's statistics keep; a last
/// bucket holds the rest.
pub const LATENCY_BOUNDS_MS: [u64; 14] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000,
];

/// A shadow to add or replace (`PUT .../shadows`, `serval model shadow`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowSpec {
    /// The endpoint url whose requests are copied.
    pub endpoint: String,
    /// The endpoint url the copies go to.
    pub target: String,
    /// The fraction of requests copied, in (0, 1]; 1 when not given.
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Relative tolerance of the comparison; 1e-6 when not given.
    #[serde(default)]
    pub tolerance: Option<f64>,
}

/// Adds (or replaces) the shadow from `spec.endpoint` to `spec.target`.
pub fn put(
    store: &dyn Store,
    caller: &Caller,
    service_id: &str,
    spec: &ShadowSpec,
    now_ms: i64,
) -> Result<Written<Shadow>> {
    let endpoint = spec.endpoint.trim_matches('/').to_string();
    let target = spec.target.trim_matches('/').to_string();
    ensure(!endpoint.is_empty() && !target.is_empty(), || {
        "a shadow needs --endpoint and --target".to_string()
    })?;
    ensure(endpoint != target, || {
        format!("endpoint '{endpoint}' cannot shadow itself: give another --target")
    })?;
    let fraction = spec.fraction.unwrap_or(1.0);
    ensure(fraction > 0.0 && fraction <= 1.0, || {
        format!("--fraction must be in (0, 1], got {fraction}")
    })?;
    let tolerance = spec.tolerance.unwrap_or(Shadow::DEFAULT_TOLERANCE);
    ensure(tolerance.is_finite() && tolerance >= 0.0, || {
        format!("--tolerance must be a non-negative number, got {tolerance}")
    })?;
    let mut shadow = Shadow {
        endpoint: endpoint.clone(),
        target: target.clone(),
        fraction,
        tolerance,
        created_ms: now_ms,
    };
    let mut replaced = false;
    let mut missing = Vec::new();
    let change = caller.change(
        "shadow.put",
        service_target(service_id, &format!("shadows/{endpoint}/{target}")),
    );
    let after = store.update_service(service_id, &change, &mut |config| {
        for url in [&endpoint, &target] {
            ensure(!config.canaries.contains_key(url.as_str()), || {
                format!(
                    "'{url}' is a canary: a shadow joins two endpoints (shadow one of the canary's targets)"
                )
            })?;
        }
        missing = [&endpoint, &target]
            .into_iter()
            .filter(|url| !is_known_endpoint(config, url))
            .cloned()
            .collect();
        let key = Shadow::key(&endpoint, &target);
        // Replacing keeps the pair's start: its report still counts from when it was added.
        if let Some(before) = config.shadows.get(&key) {
            shadow.created_ms = before.created_ms;
            replaced = true;
        }
        config.shadows.insert(key, shadow.clone());
        Ok(())
    })?;
    let mut written = Written::new(shadow, Some(after.revision));
    written.created = !replaced;
    written.warnings = missing
        .iter()
        .map(|url| format!("'{url}' is not an endpoint yet: the shadow starts when it is served"))
        .collect();
    Ok(written)
}

/// Removes `endpoint`'s shadow to `target`, or all its shadows when `target` is `None`.
pub fn remove(
    store: &dyn Store,
    caller: &Caller,
    service_id: &str,
    endpoint: &str,
    target: Option<&str>,
) -> Result<Written<Vec<Shadow>>> {
    let endpoint = endpoint.trim_matches('/').to_string();
    let target = target.map(|t| t.trim_matches('/').to_string());
    let mut removed = Vec::new();
    let path = match &target {
        Some(target) => format!("shadows/{endpoint}/{target}"),
        None => format!("shadows/{endpoint}"),
    };
    let change = caller.change("shadow.remove", service_target(service_id, &path));
    let after = store.update_service(service_id, &change, &mut |config| {
        let (kept, gone) = std::mem::take(&mut config.shadows)
            .into_iter()
            .partition::<BTreeMap<_, _>, _>(|(_, s)| {
                s.endpoint != endpoint || target.as_ref().is_some_and(|t| *t != s.target)
            });
        config.shadows = kept;
        removed = gone.into_values().collect();
        if removed.is_empty() {
            return Err(StoreError::NotFound(match &target {
                Some(target) => format!("endpoint '{endpoint}' has no shadow to '{target}'"),
                None => format!("endpoint '{endpoint}' has no shadow"),
            }));
        }
        Ok(())
    })?;
    Ok(Written::new(removed, Some(after.revision)))
}

/// One shadow pair's comparison over a window, summed over every server of the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShadowReport {
    pub endpoint: String,
    pub target: String,
    pub fraction: f64,
    pub tolerance: f64,
    /// The window's start, epoch milliseconds (the shadow's creation unless `--window` is later).
    pub since_ms: i64,
    /// Pairs whose two answers were compared (`agreed + disagreed`).
    pub compared: u64,
    pub agreed: u64,
    pub disagreed: u64,
    /// `agreed / compared` (`None` before anything was compared).
    pub agreement: Option<f64>,
    /// Copies the target failed to answer (the primary's answer stands).
    pub errors: u64,
    /// Copies not sent because the shadow queue was full.
    pub dropped: u64,
    /// The primary's and the target's latency percentiles over the window, milliseconds (the
    /// upper bound of the bucket holding the percentile; `None` without data or past the last
    /// bucket).
    pub primary_p50_ms: Option<u64>,
    pub primary_p99_ms: Option<u64>,
    pub shadow_p50_ms: Option<u64>,
    pub shadow_p99_ms: Option<u64>,
}

/// The report of `endpoint`'s shadows over the last `window_ms` (`None`: since each shadow was
/// added), one per target, sorted by target.
pub fn report(
    store: &dyn Store,
    service_id: &str,
    endpoint: &str,
    window_ms: Option<i64>,
    now_ms: i64,
) -> Result<Vec<ShadowReport>> {
    let endpoint = endpoint.trim_matches('/');
    let config = store.snapshot(service_id)?.config;
    let shadows: Vec<&Shadow> = config
        .shadows
        .values()
        .filter(|s| s.endpoint == endpoint)
        .collect();
    if shadows.is_empty() {
        return Err(StoreError::NotFound(format!(
            "endpoint '{endpoint}' has no shadow (add one with serval model shadow --endpoint {endpoint} --target T)"
        )));
    }
    let window_start = window_ms.map(|w| now_ms.saturating_sub(w));
    let first = |s: &Shadow| StatsRow::first_bucket(since(s, window_start), now_ms);
    let earliest = shadows.iter().map(|s| first(s)).min().unwrap_or(0);
    let rows = store.stats(service_id, KIND, endpoint, earliest)?;
    Ok(shadows
        .into_iter()
        .map(|shadow| {
            let since_ms = since(shadow, window_start);
            let mut sum = StatsRow {
                kind: KIND.into(),
                endpoint: endpoint.into(),
                target: shadow.target.clone(),
                bucket_ms: since_ms,
                counts: BTreeMap::new(),
            };
            let first = first(shadow);
            for row in rows
                .iter()
                .filter(|r| r.target == shadow.target && r.bucket_ms >= first)
            {
                sum.merge(&row.counts);
            }
            let count = |name: &str| sum.counts.get(name).copied().unwrap_or(0);
            let (agreed, disagreed) = (count("agreed"), count("disagreed"));
            let compared = agreed + disagreed;
            ShadowReport {
                endpoint: endpoint.to_string(),
                target: shadow.target.clone(),
                fraction: shadow.fraction,
                tolerance: shadow.tolerance,
                since_ms,
                compared,
                agreed,
                disagreed,
                agreement: (compared > 0).then(|| agreed as f64 / compared as f64),
                errors: count("errors"),
                dropped: count("dropped"),
                primary_p50_ms: percentile(&sum.counts, "primary", 0.5),
                primary_p99_ms: percentile(&sum.counts, "primary", 0.99),
                shadow_p50_ms: percentile(&sum.counts, "shadow", 0.5),
                shadow_p99_ms: percentile(&sum.counts, "shadow", 0.99),
            }
        })
        .collect())
}

/// Where a shadow's window starts: its creation, or the window's start if later.
fn since(shadow: &Shadow, window_start: Option<i64>) -> i64 {
    window_start.map_or(shadow.created_ms, |w| w.max(shadow.created_ms))
}

/// `--window`: a duration such as `10m` or `1h`, in milliseconds.
pub fn window(text: &str) -> Result<i64> {
    let window = humantime::parse_duration(text.trim()).map_err(|_| {
        invalid(format!(
            "--window '{text}' is not a duration such as 10m or 1h"
        ))
    })?;
    ensure(!window.is_zero(), || {
        "--window must be longer than 0".to_string()
    })?;
    Ok(i64::try_from(window.as_millis()).unwrap_or(i64::MAX))
}

/// The name of the latency bucket counter of `side` (`primary`, `shadow`) holding `ms`.
pub fn latency_bucket(side: &str, ms: f64) -> String {
    match LATENCY_BOUNDS_MS.iter().find(|b| ms <= **b as f64) {
        Some(bound) => format!("{side}_ms_le_{bound}"),
        None => format!("{side}_ms_le_inf"),
    }
}

/// The upper bound of the latency bucket holding quantile `q` of `side`'s counts.
fn percentile(counts: &BTreeMap<String, u64>, side: &str, q: f64) -> Option<u64> {
    let buckets: Vec<u64> = LATENCY_BOUNDS_MS
        .iter()
        .map(|b| {
            counts
                .get(&format!("{side}_ms_le_{b}"))
                .copied()
                .unwrap_or(0)
        })
        .collect();
    let rest = counts
        .get(&format!("{side}_ms_le_inf"))
        .copied()
        .unwrap_or(0);
    let total = buckets.iter().sum::<u64>() + rest;
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (count, bound) in buckets.iter().zip(LATENCY_BOUNDS_MS) {
        seen += count;
        if seen >= rank {
            return Some(bound);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_the_bounds_of_the_buckets_holding_them() {
        let mut counts = BTreeMap::new();
        for (ms, n) in [(0.4, 90u64), (7.0, 9), (900.0, 1)] {
            *counts.entry(latency_bucket("primary", ms)).or_default() += n;
        }
        assert_eq!(percentile(&counts, "primary", 0.5), Some(1));
        assert_eq!(percentile(&counts, "primary", 0.95), Some(10));
        assert_eq!(percentile(&counts, "primary", 0.99), Some(10));
        assert_eq!(percentile(&counts, "primary", 1.0), Some(1_000));
        assert_eq!(percentile(&counts, "shadow", 0.5), None);
        counts.insert(latency_bucket("shadow", 60_000.0), 1);
        assert_eq!(percentile(&counts, "shadow", 0.5), None);
    }
}
