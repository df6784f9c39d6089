//! The routing table: an immutable map from endpoint url to a loaded endpoint, with canary routes
//! and the "highest version" fallback, built next to the running one and swapped atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serval_store::names::{endpoint_url, newest_first};
use serval_store::{Canary, CanaryTarget, EndpointStatus, EngineKind};

use crate::endpoint::Endpoint;
use crate::error::Error;

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
    /// Interpreter, workers, extra packages (`None`: no Python).
    pub python: Option<(String, usize, Option<String>)>,
    /// A forwarded `triton` endpoint: the V2 gRPC server and whether calls are gzipped.
    pub forward: Option<(String, bool)>,
}

/// A model file as seen on disk: a change to size or mtime triggers a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    pub path: PathBuf,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

impl FileStamp {
    pub fn read(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            path: path.to_path_buf(),
            size: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// What the last load attempt of a slot was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub fingerprint: Fingerprint,
    pub stamp: Option<FileStamp>,
    /// A failure that may pass (a fetch, I/O, a worker start) is tried again at `at`, the wait
    /// doubling each time (`after`); other attempts are repeated only when something changes.
    pub retry: Option<Retry>,
}

/// When a failed load is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub at: std::time::Instant,
    pub after: std::time::Duration,
}

/// One configured endpoint in the table.
#[derive(Clone)]
pub struct Slot {
    /// What answers requests, if anything (after a failed reload: the previous version).
    pub serving: Option<Arc<Endpoint>>,
    /// The instance status (its `error` is the whole text, for the log and `serval model list`).
    pub status: EndpointStatus,
    /// Why the last load failed, as a client may be told (no paths).
    pub client_error: Option<String>,
    /// What the last load attempt used; an unchanged attempt is not repeated.
    pub attempt: Option<Attempt>,
}

/// A canary after resolution: serving targets with normalised cumulative weights.
#[derive(Debug, Clone)]
pub struct CanaryRoute {
    pub targets: Vec<String>,
    /// Cumulative, ending at 1.0.
    pub cumulative: Vec<f64>,
    /// Where a request's key comes from (a sticky canary), and each target's weight and hash
    /// for the keyed pick.
    pub sticky: Option<serval_store::Sticky>,
    shares: Vec<f64>,
    hashes: Vec<u64>,
}

/// A 64-bit hash that is the same on every server (FNV-1a, then a mix).
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
        let sticky = canary
            .sticky
            .as_deref()
            .and_then(|s| serval_store::Sticky::parse(s).ok());
        Some(CanaryRoute {
            hashes: pairs
                .iter()
                .map(|(u, _)| stable_hash(u.as_bytes()))
                .collect(),
            shares: pairs.iter().map(|(_, w)| w / total).collect(),
            targets: pairs.into_iter().map(|(u, _)| u).collect(),
            cumulative,
            sticky,
        })
    }

    /// The target of a request whose key is `key`: weighted rendezvous hashing (the highest
    /// `share / -ln(u)` with `u` uniform from the key and the target's url wins), so a key keeps
    /// its target while the weights stay, each target gets its share of keys, and a weight change
    /// moves only keys to the targets that gained or from those that lost.
    pub fn pick_key(&self, key: &[u8]) -> &str {
        let key = stable_hash(key);
        let mut best = (f64::NEG_INFINITY, 0);
        for (i, (share, hash)) in self.shares.iter().zip(&self.hashes).enumerate() {
            if *share <= 0.0 {
                continue;
            }
            let h = mix(key ^ hash);
            // In (0, 1): never 0, so the logarithm is finite and negative.
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = share / -u.ln();
            if score > best.0 {
                best = (score, i);
            }
        }
        &self.targets[best.1]
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

/// One model of the V2 repository index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    /// Empty for an endpoint without a version.
    pub version: String,
    pub ready: bool,
    /// Why it is not ready.
    pub reason: String,
}

/// The immutable routing table.
#[derive(Default)]
pub struct RoutingTable {
    pub revision: u64,
    pub slots: HashMap<String, Slot>,
    pub canaries: HashMap<String, CanaryRoute>,
    /// Endpoint name → url of its highest version (for unversioned requests).
    pub latest: HashMap<String, String>,
    /// The service's API keys (checked by `auth` when the server requires keys).
    pub api_keys: Vec<serval_store::ApiKey>,
    /// The service and configuration the table was built from (the console shows it).
    pub snapshot: Option<Arc<serval_store::Snapshot>>,
    /// Endpoint url → where copies of its requests go (shadows whose two endpoints exist).
    pub shadows: HashMap<String, Vec<Arc<ShadowRoute>>>,
    /// Endpoint url → its payload log.
    pub logs: HashMap<String, Arc<LogRoute>>,
    /// Endpoint url → the drift statistics its inputs feed.
    pub drifts: HashMap<String, Arc<dyn crate::endpoint::Observer>>,
}

/// A payload log in the table: a sampled fraction of an endpoint's requests is written to
/// `target`'s files.
#[derive(Debug)]
pub struct LogRoute {
    pub sample: f64,
    pub target: Arc<serval_monitor::Target>,
    /// The files' input and output columns: `inputs` input columns, then outputs.
    pub schema: serval_monitor::Schema,
    pub inputs: usize,
    /// The columns hold a native model's tensors (else the body and reply as text).
    pub tensors: bool,
    /// What became of the endpoint's records.
    pub tally: Arc<serval_monitor::Tally>,
}

/// A shadow in the table: a copy of a fraction of an endpoint's requests goes to `url`.
#[derive(Debug)]
pub struct ShadowRoute {
    pub url: String,
    pub fraction: f64,
    pub tolerance: f64,
    /// The pair's count of dropped copies, fetched on the first drop: later drops only add
    /// to it (no lock on the request path when the queue is full).
    pub dropped: std::sync::OnceLock<prometheus_client::metrics::counter::Counter>,
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
            api_keys: Vec::new(),
            snapshot: None,
            shadows: HashMap::new(),
            logs: HashMap::new(),
            drifts: HashMap::new(),
        }
    }

    /// The drift statistics of endpoint `url`, if it has a reference.
    pub fn drift(&self, url: &str) -> Option<Arc<dyn crate::endpoint::Observer>> {
        if self.drifts.is_empty() {
            return None;
        }
        self.drifts.get(url).cloned()
    }

    /// The payload log of endpoint `url` if it samples this request (one random number when
    /// the endpoint has a log, nothing when the service has none).
    pub fn sample_log(&self, url: &str) -> Option<Arc<LogRoute>> {
        if self.logs.is_empty() {
            return None;
        }
        let route = self.logs.get(url)?;
        (fastrand::f64() < route.sample).then(|| route.clone())
    }

    /// Adds the shadows whose endpoint and target are both in the table.
    pub fn with_shadows<'a>(
        mut self,
        shadows: impl IntoIterator<Item = &'a serval_store::Shadow>,
    ) -> Self {
        for shadow in shadows {
            if self.slots.contains_key(&shadow.endpoint) && self.slots.contains_key(&shadow.target)
            {
                self.shadows
                    .entry(shadow.endpoint.clone())
                    .or_default()
                    .push(Arc::new(ShadowRoute {
                        url: shadow.target.clone(),
                        fraction: shadow.fraction,
                        tolerance: shadow.tolerance,
                        dropped: std::sync::OnceLock::new(),
                    }));
            }
        }
        self
    }

    /// The shadows of endpoint `url` that sample this request (each draws its own number).
    pub fn sample_shadows(&self, url: &str) -> Vec<Arc<ShadowRoute>> {
        if self.shadows.is_empty() {
            return Vec::new();
        }
        self.shadows.get(url).map_or_else(Vec::new, |routes| {
            routes
                .iter()
                .filter(|r| fastrand::f64() < r.fraction)
                .cloned()
                .collect()
        })
    }

    /// Where the request's key comes from, if `name` (and `version`) is a sticky canary.
    pub fn sticky(&self, name: &str, version: Option<&str>) -> Option<&serval_store::Sticky> {
        if self.canaries.is_empty() {
            return None;
        }
        let route = match version {
            None => self.canaries.get(name),
            Some(_) => self.canaries.get(&endpoint_url(name, version)),
        }?;
        route.sticky.as_ref()
    }

    /// Finds what answers `/serve/{name}[/{version}]` (and the V2 model `name`, version
    /// `version`): a canary of that url first (as clearml-serving), then the endpoint, then —
    /// unversioned only — the highest version.
    pub fn resolve(
        &self,
        name: &str,
        version: Option<&str>,
        random: f64,
    ) -> Result<Arc<Endpoint>, Error> {
        self.resolve_keyed(name, version, random, None)
    }

    /// [`RoutingTable::resolve`], a sticky canary picking by `key` when the request has one.
    pub fn resolve_keyed(
        &self,
        name: &str,
        version: Option<&str>,
        random: f64,
        key: Option<&[u8]>,
    ) -> Result<Arc<Endpoint>, Error> {
        let not_found = || Error::NotFound {
            name: name.to_string(),
            version: version.map(str::to_string),
        };
        // An unversioned url is the name itself: no string is built for it.
        let versioned;
        let url = match version {
            None => name,
            Some(_) => {
                versioned = endpoint_url(name, version);
                versioned.as_str()
            }
        };
        let canary = if self.canaries.is_empty() {
            None
        } else {
            self.canaries.get(url)
        };
        // One look-up of the slot in the common case (no canary, the url itself).
        let (target, slot) = match canary {
            Some(route) => {
                let target = match key {
                    Some(key) if route.sticky.is_some() => route.pick_key(key),
                    _ => route.pick(random),
                };
                (target, self.slots.get(target))
            }
            None => match self.slots.get(url) {
                Some(slot) => (url, Some(slot)),
                None if version.is_none() => {
                    let target = self.latest.get(name).ok_or_else(not_found)?;
                    (target.as_str(), self.slots.get(target))
                }
                None => return Err(not_found()),
            },
        };
        let slot = slot.ok_or_else(not_found)?;
        slot.serving.clone().ok_or_else(|| Error::Unavailable {
            endpoint: target.to_string(),
            reason: slot
                .client_error
                .clone()
                .unwrap_or_else(|| "not loaded".into()),
        })
    }

    /// The versions configured under an endpoint name, oldest first.
    pub fn versions(&self, name: &str) -> Vec<String> {
        let mut versions: Vec<&str> = self
            .slots
            .keys()
            .filter_map(|url| url.split_once('/'))
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .collect();
        versions.sort_by(|a, b| newest_first(b, a));
        versions.into_iter().map(str::to_string).collect()
    }

    /// Every name and version a request can reach, with its state: each configured url and each
    /// canary. Sorted by name, then version.
    pub fn index(&self) -> Vec<IndexEntry> {
        let mut entries: Vec<IndexEntry> = self
            .slots
            .iter()
            .map(|(url, slot)| {
                let (name, version) = match url.split_once('/') {
                    Some((n, v)) => (n.to_string(), v.to_string()),
                    None => (url.clone(), String::new()),
                };
                IndexEntry {
                    name,
                    version,
                    ready: slot.serving.is_some(),
                    reason: match (&slot.serving, &slot.client_error) {
                        (None, Some(error)) => error.clone(),
                        (None, None) => "not loaded".to_string(),
                        (Some(_), _) => String::new(),
                    },
                }
            })
            .collect();
        for (url, route) in &self.canaries {
            if self.slots.contains_key(url) {
                continue;
            }
            let ready = route
                .targets
                .iter()
                .any(|t| self.slots.get(t).is_some_and(|s| s.serving.is_some()));
            let (name, version) = match url.split_once('/') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => (url.clone(), String::new()),
            };
            entries.push(IndexEntry {
                name,
                version,
                ready,
                reason: if ready {
                    String::new()
                } else {
                    "no target of this canary is serving".to_string()
                },
            });
        }
        entries.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        entries
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
            sticky: None,
        }
    }

    /// Sticky splits: 10,000 keys land within 2 points of the weights, a key always lands on the
    /// same target, and moving the weights from 25/75 to 50/50 moves only keys from the side that
    /// lost weight.
    #[test]
    fn sticky_keys_split_by_weight_stay_put_and_move_only_when_they_must() {
        let sticky = |weights: &[f64]| {
            let mut c = canary(
                weights,
                CanaryTarget::Endpoints(vec!["a".into(), "b".into()]),
            );
            c.sticky = Some("header:x-user-id".into());
            CanaryRoute::resolve(&c, &["a", "b"]).unwrap()
        };
        let before = sticky(&[0.25, 0.75]);
        assert_eq!(
            before.sticky,
            Some(serval_store::Sticky::Header("x-user-id".into()))
        );
        let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let on_a = keys
            .iter()
            .filter(|k| before.pick_key(k.as_bytes()) == "a")
            .count();
        assert!(
            (2_300..=2_700).contains(&on_a),
            "{on_a} of 10,000 keys on the 25 % target"
        );
        for key in keys.iter().take(10) {
            let first = before.pick_key(key.as_bytes());
            assert!((0..1_000).all(|_| before.pick_key(key.as_bytes()) == first));
        }
        let after = sticky(&[0.5, 0.5]);
        let mut moved = 0;
        for key in &keys {
            let (was, now) = (
                before.pick_key(key.as_bytes()),
                after.pick_key(key.as_bytes()),
            );
            if was == "a" {
                assert_eq!(now, "a", "key {key} left the target that gained weight");
            }
            moved += usize::from(was != now);
        }
        let on_a_after = keys
            .iter()
            .filter(|k| after.pick_key(k.as_bytes()) == "a")
            .count();
        assert!(
            (4_800..=5_200).contains(&on_a_after),
            "{on_a_after} on a at 50/50"
        );
        assert_eq!(
            moved,
            on_a_after - on_a,
            "only the keys that had to move moved"
        );
        // A weight of zero gets no key.
        let none = sticky(&[0.0, 1.0]);
        assert!(keys.iter().all(|k| none.pick_key(k.as_bytes()) == "b"));
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
