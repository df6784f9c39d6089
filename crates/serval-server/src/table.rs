//! The routing table: an immutable map from endpoint url to a loaded endpoint, with canary routes
//! and the "highest version" fallback, built next to the running one and swapped atomically.

use std::collections::HashMap;
use std::sync::Arc;

use serval_engine::Engine;
use serval_store::names::{endpoint_url, newest_first};
use serval_store::{Canary, CanaryTarget, EndpointStatus, EngineKind};

use crate::errors::ServeError;

/// What makes an endpoint's loaded engine still valid: if any of this changes, it is reloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub engine: EngineKind,
    pub model_id: Option<String>,
    pub model_uri: Option<String>,
    /// sha256 of the model file as loaded.
    pub model_sha256: Option<String>,
    pub preprocess_sha256: Option<String>,
    /// io spec and aux config, serialised.
    pub settings: String,
    /// Python endpoints: the interpreter and pool size.
    pub python: Option<(String, usize)>,
}

/// A model ready to answer requests.
pub struct LoadedEndpoint {
    pub url: String,
    /// The native model, if the server runs it.
    pub engine: Option<Arc<dyn Engine>>,
    /// The endpoint's Python workers, if it brings Python.
    pub python: Option<Arc<serval_python::Pool>>,
    /// Requests whose model ran in Python because preprocess returned non-array data.
    pub library_requests: std::sync::atomic::AtomicU64,
    pub kind: EngineKind,
    /// Request metrics (`None` when metrics are off).
    pub metrics: Option<crate::metrics::EndpointMetrics>,
    /// clearml statistics of this url (sampling, variables); set at every table build.
    pub monitor: arc_swap::ArcSwapOption<crate::metrics::Monitor>,
    /// The endpoint's `--input-name` list (feature order for named features).
    pub input_names: Vec<String>,
    pub fingerprint: Fingerprint,
}

/// One configured endpoint in the table.
#[derive(Clone)]
pub struct Slot {
    /// What answers requests, if anything (after a failed reload: the previous version).
    pub serving: Option<Arc<LoadedEndpoint>>,
    pub status: EndpointStatus,
    /// What the last load attempt used; an unchanged attempt is not repeated.
    pub attempt: Option<crate::loader::Attempt>,
}

/// A canary after resolution: serving targets with normalised cumulative weights.
#[derive(Debug, Clone)]
pub struct CanaryRoute {
    pub targets: Vec<String>,
    /// Cumulative, ending at 1.0.
    pub cumulative: Vec<f64>,
}

impl CanaryRoute {
    /// Resolves a canary against the endpoints that exist (clearml's rules: a fixed list keeps
    /// weight i for endpoint i and skips missing ones; a prefix takes every url starting with it,
    /// newest version first, first weight to the newest). `None` if nothing is left.
    pub fn resolve(canary: &Canary, urls: &[&str]) -> Option<CanaryRoute> {
        let pairs: Vec<(String, f64)> = match &canary.target {
            CanaryTarget::Endpoints(list) => list
                .iter()
                .zip(&canary.weights)
                .filter(|(url, _)| urls.contains(&url.as_str()))
                .map(|(url, w)| (url.clone(), *w))
                .collect(),
            CanaryTarget::Prefix(prefix) => {
                let mut candidates: Vec<&str> = urls
                    .iter()
                    .copied()
                    .filter(|u| u.starts_with(prefix.as_str()) && *u != canary.name)
                    .collect();
                candidates.sort_by(|a, b| newest_first(a, b));
                candidates
                    .into_iter()
                    .zip(&canary.weights)
                    .map(|(url, w)| (url.to_string(), *w))
                    .collect()
            }
        };
        let total: f64 = pairs.iter().map(|(_, w)| w).sum();
        if pairs.is_empty() || total.is_nan() || total <= 0.0 {
            return None;
        }
        let mut acc = 0.0;
        let mut cumulative = Vec::with_capacity(pairs.len());
        for (_, w) in &pairs {
            acc += w / total;
            cumulative.push(acc);
        }
        if let Some(last) = cumulative.last_mut() {
            *last = 1.0;
        }
        Some(CanaryRoute {
            targets: pairs.into_iter().map(|(u, _)| u).collect(),
            cumulative,
        })
    }

    /// Picks a target for a uniform random number in [0, 1).
    pub fn pick(&self, r: f64) -> &str {
        let i = self
            .cumulative
            .iter()
            .position(|c| r < *c)
            .unwrap_or(self.targets.len() - 1);
        &self.targets[i]
    }
}

/// The immutable routing table.
#[derive(Default)]
pub struct RoutingTable {
    pub revision: u64,
    pub slots: HashMap<String, Slot>,
    pub canaries: HashMap<String, CanaryRoute>,
    /// Endpoint name → url of its highest version (for unversioned requests).
    pub latest: HashMap<String, String>,
}

impl RoutingTable {
    /// Builds the table from loaded slots and the configured canaries.
    pub fn new(revision: u64, slots: HashMap<String, Slot>, canaries: &[&Canary]) -> Self {
        let urls: Vec<&str> = slots.keys().map(String::as_str).collect();
        let canaries = canaries
            .iter()
            .filter_map(|c| CanaryRoute::resolve(c, &urls).map(|route| (c.name.clone(), route)))
            .collect();
        let mut latest: HashMap<String, String> = HashMap::new();
        for url in slots.keys() {
            if let Some((name, _)) = url.split_once('/') {
                let entry = latest
                    .entry(name.to_string())
                    .or_insert_with(|| url.clone());
                if newest_first(url, entry).is_lt() {
                    *entry = url.clone();
                }
            }
        }
        RoutingTable {
            revision,
            slots,
            canaries,
            latest,
        }
    }

    /// Finds what answers `/serve/{name}[/{version}]`: a canary of that url first (as
    /// clearml-serving), then the endpoint, then — unversioned only — the highest version.
    pub fn resolve(
        &self,
        name: &str,
        version: Option<&str>,
        random: f64,
    ) -> Result<Arc<LoadedEndpoint>, ServeError> {
        let url = endpoint_url(name, version);
        let target = match self.canaries.get(&url) {
            Some(route) => route.pick(random).to_string(),
            None if self.slots.contains_key(&url) => url.clone(),
            None if version.is_none() => match self.latest.get(name) {
                Some(latest) => latest.clone(),
                None => return Err(ServeError::NotFound(url)),
            },
            None => return Err(ServeError::NotFound(url)),
        };
        let slot = self
            .slots
            .get(&target)
            .ok_or_else(|| ServeError::NotFound(target.clone()))?;
        slot.serving.clone().ok_or_else(|| {
            ServeError::Unavailable(
                target.clone(),
                slot.status
                    .error
                    .clone()
                    .unwrap_or_else(|| "not loaded".into()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(weights: &[f64], target: CanaryTarget) -> Canary {
        Canary {
            name: "c".into(),
            weights: weights.to_vec(),
            target,
        }
    }

    #[test]
    fn fixed_canaries_skip_missing_targets_and_normalise() {
        let c = canary(
            &[1.0, 2.0, 1.0],
            CanaryTarget::Endpoints(vec!["a".into(), "gone".into(), "b".into()]),
        );
        let route = CanaryRoute::resolve(&c, &["a", "b"]).unwrap();
        assert_eq!(route.targets, vec!["a", "b"]);
        assert_eq!(route.cumulative, vec![0.5, 1.0]);
        assert_eq!(route.pick(0.49), "a");
        assert_eq!(route.pick(0.5), "b");
        assert!(CanaryRoute::resolve(&c, &["x"]).is_none());
        let zero = canary(
            &[0.0, 1.0],
            CanaryTarget::Endpoints(vec!["a".into(), "gone".into()]),
        );
        assert!(CanaryRoute::resolve(&zero, &["a"]).is_none());
    }

    #[test]
    fn prefix_canaries_give_the_first_weight_to_the_newest() {
        let c = canary(&[0.1, 0.9], CanaryTarget::Prefix("m/".into()));
        let route = CanaryRoute::resolve(&c, &["m/1", "m/2", "other"]).unwrap();
        assert_eq!(route.targets, vec!["m/2", "m/1"]);
        let route = CanaryRoute::resolve(&c, &["m/1", "m/2", "m/10"]).unwrap();
        assert_eq!(route.targets, vec!["m/10", "m/2"]);
        assert!((route.cumulative[0] - 0.1).abs() < 1e-12);
    }
}
