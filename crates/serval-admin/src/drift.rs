//! Drift (`serval monitor`): a reference distribution per input feature, computed from reference
//! data (quantile bins for numbers, frequencies for categories) and stored with the service;
//! servers count live inputs in the same bins, per time bucket, and add the counts to the fleet's
//! statistics; [`report`] compares the last window with the reference: the population stability
//! index (PSI) for every feature, the Kolmogorov–Smirnov statistic over the reference's bins for
//! numbers, chi-square for categories.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serval_store::{DriftReference, FeatureReference, ReferenceBins, StatsRow, Store, StoreError};

use crate::{Caller, Result, Written, ensure, invalid, service_target};

/// The statistics kind of live drift counts.
pub const KIND: &str = "drift";
/// Categories a reference keeps per feature (the rest share one bin).
pub const MAX_CATEGORIES: usize = 20;
/// Proportions are floored at this before logarithms and divisions (an empty bin).
const FLOOR: f64 = 1e-4;
/// PSI below this: no drift; from `ALARM` on: drift (the usual rule of thumb).
pub const PSI_WATCH: f64 = 0.1;
pub const PSI_ALARM: f64 = 0.25;

/// One column of reference data.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Numbers(Vec<f64>),
    Texts(Vec<String>),
}

/// The bin of a number: bin `i` holds values from `edges[i-1]` (inclusive) to `edges[i]`.
pub fn bin_of(edges: &[f64], value: f64) -> usize {
    edges.partition_point(|e| *e <= value)
}

/// A category's text for a number (integral numbers without a fraction: `3`, not `3.0`).
pub fn category_of(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        value.to_string()
    }
}

/// The reference of one feature: `bins` quantile bins for numbers (fewer when values repeat),
/// the most frequent categories for texts (or numbers named `categorical`).
pub fn feature_reference(
    name: &str,
    values: &Values,
    bins: usize,
    categorical: bool,
) -> Result<FeatureReference> {
    let texts: Vec<String>;
    let categories = match (values, categorical) {
        (Values::Texts(texts), _) => Some(texts),
        (Values::Numbers(numbers), true) => {
            texts = numbers
                .iter()
                .filter(|v| !v.is_nan())
                .map(|v| category_of(*v))
                .collect();
            Some(&texts)
        }
        (Values::Numbers(_), false) => None,
    };
    if let Some(texts) = categories {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for text in texts.iter().filter(|t| !t.is_empty()) {
            *counts.entry(text).or_default() += 1;
        }
        let total: u64 = counts.values().sum();
        ensure(total > 0, || format!("feature '{name}' has no values"))?;
        let mut ranked: Vec<(&str, u64)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let kept = ranked.len().min(MAX_CATEGORIES);
        let other: u64 = ranked[kept..].iter().map(|(_, n)| n).sum();
        let proportions = ranked[..kept]
            .iter()
            .map(|(_, n)| *n as f64 / total as f64)
            .chain([other as f64 / total as f64])
            .collect();
        return Ok(FeatureReference {
            name: name.to_string(),
            bins: ReferenceBins::Categorical {
                categories: ranked[..kept].iter().map(|(t, _)| t.to_string()).collect(),
                proportions,
            },
        });
    }
    let Values::Numbers(numbers) = values else {
        return Err(invalid("unreachable"));
    };
    let mut sorted: Vec<f64> = numbers.iter().copied().filter(|v| !v.is_nan()).collect();
    ensure(!sorted.is_empty(), || {
        format!("feature '{name}' has no numbers")
    })?;
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let mut edges: Vec<f64> = Vec::new();
    for i in 1..bins.max(2) {
        let edge = sorted[(i * n / bins.max(2)).min(n - 1)];
        if edges.last().is_none_or(|last| edge > *last) && edge > sorted[0] {
            edges.push(edge);
        }
    }
    let mut counts = vec![0u64; edges.len() + 1];
    for v in &sorted {
        counts[bin_of(&edges, *v)] += 1;
    }
    Ok(FeatureReference {
        name: name.to_string(),
        bins: ReferenceBins::Numeric {
            edges,
            proportions: counts.iter().map(|c| *c as f64 / n as f64).collect(),
        },
    })
}

/// The population stability index of live counts against reference proportions.
pub fn psi(reference: &[f64], live: &[u64]) -> Option<f64> {
    let n: u64 = live.iter().sum();
    if n == 0 {
        return None;
    }
    Some(
        reference
            .iter()
            .zip(live)
            .map(|(p, c)| {
                let p = p.max(FLOOR);
                let q = (*c as f64 / n as f64).max(FLOOR);
                (q - p) * (q / p).ln()
            })
            .sum(),
    )
}

/// The Kolmogorov–Smirnov statistic over the bins: the largest gap between the two cumulative
/// distributions at the reference's edges.
pub fn ks(reference: &[f64], live: &[u64]) -> Option<f64> {
    let n: u64 = live.iter().sum();
    if n == 0 {
        return None;
    }
    let (mut a, mut b, mut gap) = (0.0f64, 0.0f64, 0.0f64);
    for (p, c) in reference.iter().zip(live) {
        a += p;
        b += *c as f64 / n as f64;
        gap = gap.max((a - b).abs());
    }
    Some(gap)
}

/// Pearson's chi-square statistic of live counts against the reference's proportions.
pub fn chi_square(reference: &[f64], live: &[u64]) -> Option<f64> {
    let n: u64 = live.iter().sum();
    if n == 0 {
        return None;
    }
    Some(
        reference
            .iter()
            .zip(live)
            .map(|(p, c)| {
                let expected = p.max(FLOOR) * n as f64;
                (*c as f64 - expected).powi(2) / expected
            })
            .sum(),
    )
}

/// What a feature's live window looks like against its reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeatureDrift {
    pub feature: String,
    /// `numeric` or `categorical`.
    pub kind: String,
    /// Live values counted in the window.
    pub count: u64,
    pub psi: Option<f64>,
    /// Numbers only.
    pub ks: Option<f64>,
    /// Categories only.
    pub chi_square: Option<f64>,
    /// `ok` (PSI < 0.1), `watch` (< 0.25), `drift`, or `no_data`.
    pub status: String,
    /// The bins' labels (`< 1.5`, `[1.5, 2)`, `≥ 7` or the categories and `other`).
    pub bins: Vec<String>,
    pub reference: Vec<f64>,
    /// The live window's proportions.
    pub live: Vec<f64>,
}

/// `status` of a PSI.
pub fn status(psi: Option<f64>) -> &'static str {
    match psi {
        None => "no_data",
        Some(p) if p < PSI_WATCH => "ok",
        Some(p) if p < PSI_ALARM => "watch",
        Some(_) => "drift",
    }
}

fn labels(bins: &ReferenceBins) -> Vec<String> {
    match bins {
        ReferenceBins::Categorical { categories, .. } => categories
            .iter()
            .cloned()
            .chain(["other".to_string()])
            .collect(),
        ReferenceBins::Numeric { edges, .. } => {
            let mut out = Vec::with_capacity(edges.len() + 1);
            for i in 0..=edges.len() {
                out.push(match (i.checked_sub(1).map(|j| edges[j]), edges.get(i)) {
                    (None, Some(hi)) => format!("< {hi}"),
                    (Some(lo), Some(hi)) => format!("[{lo}, {hi})"),
                    (Some(lo), None) => format!("≥ {lo}"),
                    (None, None) => "all".to_string(),
                });
            }
            out
        }
    }
}

/// One feature's drift from its live counts (one per bin).
pub fn feature_drift(reference: &FeatureReference, live: &[u64]) -> FeatureDrift {
    let proportions = reference.bins.proportions();
    let count: u64 = live.iter().sum();
    let psi = psi(proportions, live);
    let numeric = matches!(reference.bins, ReferenceBins::Numeric { .. });
    FeatureDrift {
        feature: reference.name.clone(),
        kind: if numeric { "numeric" } else { "categorical" }.to_string(),
        count,
        psi,
        ks: if numeric { ks(proportions, live) } else { None },
        chi_square: if numeric {
            None
        } else {
            chi_square(proportions, live)
        },
        status: status(psi).to_string(),
        bins: labels(&reference.bins),
        reference: proportions.to_vec(),
        live: live
            .iter()
            .map(|c| {
                if count == 0 {
                    0.0
                } else {
                    *c as f64 / count as f64
                }
            })
            .collect(),
    }
}

/// The key of a feature's bin in the fleet's statistics rows.
pub fn stats_key(feature: usize, bin: usize) -> String {
    format!("{feature}/{bin}")
}

/// The statistics rows' `target` of a reference: its creation time (a new reference starts
/// from zero).
pub fn stats_target(reference: &DriftReference) -> String {
    reference.created_ms.to_string()
}

/// A reference to store (`PUT .../drift`, `serval monitor reference`): computed from the data
/// by the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferenceSpec {
    pub endpoint: String,
    /// The live window compared, in seconds; 600 when not given.
    #[serde(default)]
    pub window_seconds: Option<u64>,
    pub features: Vec<FeatureReference>,
    pub rows: u64,
    #[serde(default)]
    pub source: String,
}

fn check_feature(feature: &FeatureReference) -> Result<()> {
    let name = &feature.name;
    ensure(!name.is_empty(), || "a feature needs a name".to_string())?;
    let (bins, proportions) = match &feature.bins {
        ReferenceBins::Numeric { edges, proportions } => {
            ensure(
                edges.iter().all(|e| e.is_finite()) && edges.windows(2).all(|w| w[0] < w[1]),
                || format!("feature '{name}': edges must be finite and increasing"),
            )?;
            (edges.len() + 1, proportions)
        }
        ReferenceBins::Categorical {
            categories,
            proportions,
        } => (categories.len() + 1, proportions),
    };
    ensure(proportions.len() == bins, || {
        format!(
            "feature '{name}': {} proportions for {bins} bins",
            proportions.len()
        )
    })?;
    ensure(
        proportions.iter().all(|p| (0.0..=1.0).contains(p))
            && (proportions.iter().sum::<f64>() - 1.0).abs() < 1e-6,
        || format!("feature '{name}': proportions must be in [0, 1] and sum to 1"),
    )?;
    Ok(())
}

/// Stores (or replaces) the drift reference of `spec.endpoint`.
pub fn put_reference(
    store: &dyn Store,
    caller: &Caller,
    service_id: &str,
    spec: &ReferenceSpec,
    now_ms: i64,
) -> Result<Written<DriftReference>> {
    let endpoint = spec.endpoint.trim_matches('/').to_string();
    ensure(!endpoint.is_empty() && !endpoint.contains('*'), || {
        "a drift reference needs --endpoint: an endpoint url or name (no prefix)".to_string()
    })?;
    ensure(!spec.features.is_empty(), || {
        "the reference data has no feature columns".to_string()
    })?;
    for (i, feature) in spec.features.iter().enumerate() {
        check_feature(feature)?;
        ensure(
            !spec.features[..i].iter().any(|f| f.name == feature.name),
            || format!("feature '{}' is given twice", feature.name),
        )?;
    }
    let window_seconds = spec
        .window_seconds
        .unwrap_or(DriftReference::DEFAULT_WINDOW_SECONDS);
    ensure((1..=86_400).contains(&window_seconds), || {
        format!("--window must be from 1 s to 24 h, got {window_seconds} s")
    })?;
    let reference = DriftReference {
        endpoint: endpoint.clone(),
        window_seconds,
        features: spec.features.clone(),
        rows: spec.rows,
        source: spec.source.clone(),
        created_ms: now_ms,
    };
    let mut replaced = false;
    let mut known = true;
    let change = caller.change(
        "drift.reference",
        service_target(service_id, &format!("drift/{endpoint}")),
    );
    let after = store.update_service(service_id, &change, &mut |config| {
        known = config
            .served_endpoints()
            .keys()
            .any(|url| reference.matches(url));
        replaced = config
            .drift_references
            .insert(endpoint.clone(), reference.clone())
            .is_some();
        Ok(())
    })?;
    let mut written = Written::new(reference, Some(after.revision));
    written.created = !replaced;
    if !known {
        written.warnings.push(format!(
            "'{endpoint}' is not an endpoint yet: its drift is watched when it is served"
        ));
    }
    Ok(written)
}

/// Removes the drift reference of `endpoint`.
pub fn remove_reference(
    store: &dyn Store,
    caller: &Caller,
    service_id: &str,
    endpoint: &str,
) -> Result<Written<DriftReference>> {
    let endpoint = endpoint.trim_matches('/').to_string();
    let mut removed = None;
    let change = caller.change(
        "drift.remove",
        service_target(service_id, &format!("drift/{endpoint}")),
    );
    let after = store.update_service(service_id, &change, &mut |config| {
        removed = config.drift_references.remove(&endpoint);
        match removed {
            Some(_) => Ok(()),
            None => Err(no_reference(&endpoint)),
        }
    })?;
    let removed = removed.ok_or_else(|| no_reference(&endpoint))?;
    Ok(Written::new(removed, Some(after.revision)))
}

fn no_reference(endpoint: &str) -> StoreError {
    StoreError::NotFound(format!(
        "'{endpoint}' has no drift reference (add one with serval monitor reference --endpoint {endpoint} --data FILE)"
    ))
}

/// The fleet's drift of `endpoint`: its reference's live window summed over every server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriftReport {
    pub endpoint: String,
    pub window_seconds: u64,
    /// Rows of live inputs counted in the window.
    pub rows: u64,
    pub features: Vec<FeatureDrift>,
}

/// Sums statistics rows of a reference into its live counts per feature (one per bin), and
/// the rows.
pub fn live_counts(reference: &DriftReference, rows: &[StatsRow]) -> (u64, Vec<Vec<u64>>) {
    let mut counts: Vec<Vec<u64>> = reference
        .features
        .iter()
        .map(|f| vec![0; f.bins.proportions().len()])
        .collect();
    let mut total = 0;
    let mut sum: BTreeMap<String, u64> = BTreeMap::new();
    for row in rows {
        for (key, n) in &row.counts {
            *sum.entry(key.clone()).or_default() += n;
        }
    }
    for (key, n) in sum {
        if key == "rows" {
            total = n;
            continue;
        }
        let Some((feature, bin)) = key.split_once('/') else {
            continue;
        };
        let (Ok(feature), Ok(bin)) = (feature.parse::<usize>(), bin.parse::<usize>()) else {
            continue;
        };
        if let Some(slot) = counts.get_mut(feature).and_then(|c| c.get_mut(bin)) {
            *slot += n;
        }
    }
    (total, counts)
}

/// The fleet's drift of `endpoint` over its reference's window (or `window_ms`).
pub fn report(
    store: &dyn Store,
    service_id: &str,
    endpoint: &str,
    window_ms: Option<i64>,
    now_ms: i64,
) -> Result<DriftReport> {
    let endpoint = endpoint.trim_matches('/');
    let config = store.snapshot(service_id)?.config;
    let reference = config
        .drift_references
        .get(endpoint)
        .ok_or_else(|| no_reference(endpoint))?;
    let window = window_ms.unwrap_or(reference.window_seconds as i64 * 1_000);
    let since = now_ms.saturating_sub(window).max(reference.created_ms);
    let first = StatsRow::first_bucket(since, now_ms);
    let target = stats_target(reference);
    let rows: Vec<StatsRow> = store
        .stats(service_id, KIND, endpoint, first)?
        .into_iter()
        .filter(|r| r.target == target && r.bucket_ms >= first)
        .collect();
    let (total, counts) = live_counts(reference, &rows);
    Ok(DriftReport {
        endpoint: endpoint.to_string(),
        window_seconds: (window / 1_000) as u64,
        rows: total,
        features: reference
            .features
            .iter()
            .zip(&counts)
            .map(|(f, live)| feature_drift(f, live))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed pseudo-random normal sample (Box–Muller over a linear congruential generator).
    fn normal(n: usize, seed: u64, mean: f64) -> Vec<f64> {
        let mut state = seed;
        let mut uniform = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u, v) = (uniform(), uniform());
                mean + (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
            })
            .collect()
    }

    fn counts(reference: &FeatureReference, values: &[f64]) -> Vec<u64> {
        let ReferenceBins::Numeric { edges, .. } = &reference.bins else {
            panic!("numeric")
        };
        let mut out = vec![0; edges.len() + 1];
        for v in values {
            out[bin_of(edges, *v)] += 1;
        }
        out
    }

    #[test]
    fn deciles_split_the_reference_evenly_and_a_shift_of_one_deviation_is_drift() {
        let reference =
            feature_reference("x", &Values::Numbers(normal(20_000, 1, 0.0)), 10, false).unwrap();
        let proportions = reference.bins.proportions();
        assert_eq!(proportions.len(), 10);
        assert!(
            proportions.iter().all(|p| (p - 0.1).abs() < 0.01),
            "{proportions:?}"
        );
        let same = counts(&reference, &normal(5_000, 2, 0.0));
        assert!(psi(proportions, &same).unwrap() < 0.1);
        assert!(ks(proportions, &same).unwrap() < 0.05);
        let shifted = counts(&reference, &normal(5_000, 3, 1.0));
        assert!(psi(proportions, &shifted).unwrap() > 0.25);
        assert!(ks(proportions, &shifted).unwrap() > 0.3);
    }

    #[test]
    fn repeated_values_make_fewer_bins_and_categories_keep_the_most_frequent() {
        let few =
            feature_reference("x", &Values::Numbers(vec![1.0, 1.0, 1.0, 2.0]), 10, false).unwrap();
        assert_eq!(
            few.bins,
            ReferenceBins::Numeric {
                edges: vec![2.0],
                proportions: vec![0.75, 0.25]
            }
        );
        let texts: Vec<String> = (0..30)
            .flat_map(|i| std::iter::repeat_n(format!("c{i}"), 30 - i))
            .collect();
        let cats = feature_reference("c", &Values::Texts(texts), 10, false).unwrap();
        let ReferenceBins::Categorical {
            categories,
            proportions,
        } = &cats.bins
        else {
            panic!("categorical")
        };
        assert_eq!(categories.len(), MAX_CATEGORIES);
        assert_eq!(categories[0], "c0");
        assert!((proportions.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let numbers =
            feature_reference("n", &Values::Numbers(vec![1.0, 2.0, 2.0]), 10, true).unwrap();
        assert!(matches!(
            &numbers.bins,
            ReferenceBins::Categorical { categories, .. } if categories == &["2", "1"]
        ));
        let drift = feature_drift(&numbers, &[0, 10, 0]);
        assert_eq!(drift.status, "drift");
        assert!(drift.chi_square.unwrap() > 10.0 && drift.ks.is_none());
        assert_eq!(drift.bins, ["2", "1", "other"]);
    }

    #[test]
    fn no_live_values_is_no_data() {
        let f = feature_reference("x", &Values::Numbers(vec![1.0, 2.0]), 10, false).unwrap();
        let drift = feature_drift(&f, &[0, 0]);
        assert_eq!((drift.status.as_str(), drift.psi), ("no_data", None));
        assert_eq!(drift.bins, ["< 2", "≥ 2"]);
    }
}
