//! Live drift statistics (`serval monitor reference`): every request's native model inputs are
//! counted in the reference's bins, per feature, in time buckets covering the reference's
//! window. The window gives this server's drift (Prometheus `serval_feature_drift`, the console);
//! the heartbeat adds what was counted since the last one to the fleet's statistics, which
//! `serval monitor drift` sums over every server.
//!
//! Cost: one relaxed atomic addition per feature and row, after a binary search over its bin
//! edges (measured in `benches/metrics.rs`); nothing when the endpoint has no reference.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serval_admin::drift::{FeatureDrift, bin_of, feature_drift, stats_key, stats_target};
use serval_engine::{NamedTensor, TensorData};
use serval_store::{DriftReference, ReferenceBins, StatsRow};

use crate::endpoint::{Endpoint, Observer, Runner};
use crate::table::RoutingTable;

/// Buckets per window (plus the one being filled).
const BUCKETS: u64 = 20;

/// How one feature is counted.
enum Binning {
    Edges(Vec<f64>),
    /// Categories as texts (a JSON body's strings) and as numbers (a model's inputs, a body's
    /// numbers); the last bin: other.
    Categories {
        texts: Vec<String>,
        numbers: Vec<f64>,
    },
}

struct Tracked {
    /// The feature's column in the model's input rows (`None`: the model has no such feature).
    column: Option<usize>,
    binning: Binning,
    /// Where its bins start in a bucket's counts.
    offset: usize,
}

struct Bucket {
    /// The bucket's epoch + 1 (0: never used).
    epoch: AtomicU64,
    /// Every feature's bins, then the rows.
    counts: Box<[AtomicU64]>,
}

/// What the heartbeat sent of each bucket: (its epoch + 1, its counts).
pub type Sent = Vec<(u64, Vec<u64>)>;

/// One served endpoint's live drift against its reference.
pub struct LiveDrift {
    url: String,
    reference: DriftReference,
    tracked: Vec<Tracked>,
    /// Features of the reference the model does not have.
    pub missing: Vec<String>,
    bins: usize,
    bucket_seconds: u64,
    start: Instant,
    buckets: Box<[Bucket]>,
    reset: Mutex<()>,
    /// What the heartbeat sent already, per bucket.
    sent: Mutex<Sent>,
}

impl LiveDrift {
    /// The live drift of endpoint `url` against `reference`; `names`: the model's features in
    /// the order of its input columns.
    pub fn new(url: &str, reference: &DriftReference, names: &[String]) -> LiveDrift {
        let mut offset = 0;
        let mut missing = Vec::new();
        let tracked: Vec<Tracked> = reference
            .features
            .iter()
            .map(|feature| {
                let column = names.iter().position(|n| *n == feature.name);
                if column.is_none() {
                    missing.push(feature.name.clone());
                }
                let binning = match &feature.bins {
                    ReferenceBins::Numeric { edges, .. } => Binning::Edges(edges.clone()),
                    ReferenceBins::Categorical { categories, .. } => Binning::Categories {
                        texts: categories.clone(),
                        numbers: categories
                            .iter()
                            .map(|c| c.parse::<f64>().unwrap_or(f64::NAN))
                            .collect(),
                    },
                };
                let tracked = Tracked {
                    column,
                    binning,
                    offset,
                };
                offset += feature.bins.proportions().len();
                tracked
            })
            .collect();
        let bins = offset;
        let bucket_seconds = (reference.window_seconds / BUCKETS).max(1);
        let buckets = (0..=BUCKETS)
            .map(|_| Bucket {
                epoch: AtomicU64::new(0),
                counts: (0..=bins).map(|_| AtomicU64::new(0)).collect(),
            })
            .collect();
        LiveDrift {
            url: url.to_string(),
            reference: reference.clone(),
            tracked,
            missing,
            bins,
            bucket_seconds,
            start: Instant::now(),
            buckets,
            reset: Mutex::new(()),
            sent: Mutex::new(vec![(0, Vec::new()); BUCKETS as usize + 1]),
        }
    }

    fn epoch(&self) -> u64 {
        self.start.elapsed().as_secs() / self.bucket_seconds
    }

    /// The bucket of `epoch`, emptied first if it held an older one.
    fn bucket(&self, epoch: u64) -> &Bucket {
        let bucket = &self.buckets[(epoch % self.buckets.len() as u64) as usize];
        if bucket.epoch.load(Ordering::Acquire) != epoch + 1 {
            let _held = self.reset.lock().unwrap_or_else(|e| e.into_inner());
            if bucket.epoch.load(Ordering::Acquire) != epoch + 1 {
                for count in bucket.counts.iter() {
                    count.store(0, Ordering::Relaxed);
                }
                bucket.epoch.store(epoch + 1, Ordering::Release);
            }
        }
        bucket
    }

    /// Counts `rows` rows of `width` values, `value(i)` the i-th in row-major order.
    fn count(&self, rows: usize, width: usize, value: impl Fn(usize) -> f64) {
        let bucket = self.bucket(self.epoch());
        for row in 0..rows {
            for tracked in &self.tracked {
                let Some(column) = tracked.column.filter(|c| *c < width) else {
                    continue;
                };
                let v = value(row * width + column);
                if v.is_nan() {
                    continue;
                }
                let bin = match &tracked.binning {
                    Binning::Edges(edges) => bin_of(edges, v),
                    Binning::Categories { numbers, .. } => numbers
                        .iter()
                        .position(|c| *c == v)
                        .unwrap_or(numbers.len()),
                };
                bucket.counts[tracked.offset + bin].fetch_add(1, Ordering::Relaxed);
            }
        }
        bucket.counts[self.bins].fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// Counts a JSON body's fields named as the reference's features: numbers, and strings
    /// for categories (anything else is missing). One row.
    fn count_fields(&self, body: &serde_json::Map<String, serde_json::Value>) {
        use serde_json::Value;
        let bucket = self.bucket(self.epoch());
        for (tracked, feature) in self.tracked.iter().zip(&self.reference.features) {
            let bin = match (&tracked.binning, body.get(&feature.name)) {
                (Binning::Edges(edges), Some(Value::Number(n))) => {
                    n.as_f64().filter(|v| !v.is_nan()).map(|v| bin_of(edges, v))
                }
                (Binning::Categories { numbers, .. }, Some(Value::Number(n))) => {
                    n.as_f64().map(|v| {
                        numbers
                            .iter()
                            .position(|c| *c == v)
                            .unwrap_or(numbers.len())
                    })
                }
                (Binning::Categories { texts, .. }, Some(Value::String(s))) => {
                    Some(texts.iter().position(|c| c == s).unwrap_or(texts.len()))
                }
                (Binning::Categories { texts, .. }, Some(Value::Bool(b))) => {
                    let s = b.to_string();
                    Some(texts.iter().position(|c| *c == s).unwrap_or(texts.len()))
                }
                _ => None,
            };
            if let Some(bin) = bin {
                bucket.counts[tracked.offset + bin].fetch_add(1, Ordering::Relaxed);
            }
        }
        bucket.counts[self.bins].fetch_add(1, Ordering::Relaxed);
    }

    /// The window's counts (every bin, then the rows).
    fn window(&self) -> Vec<u64> {
        let now = self.epoch();
        let oldest = now.saturating_sub(BUCKETS - 1);
        let mut sum = vec![0u64; self.bins + 1];
        for bucket in self.buckets.iter() {
            let epoch = bucket.epoch.load(Ordering::Acquire);
            if epoch == 0 || epoch - 1 < oldest || epoch - 1 > now {
                continue;
            }
            for (total, count) in sum.iter_mut().zip(bucket.counts.iter()) {
                *total += count.load(Ordering::Relaxed);
            }
        }
        sum
    }

    /// Each feature's drift over this server's window.
    pub fn features(&self) -> (u64, Vec<FeatureDrift>) {
        let counts = self.window();
        let features = self
            .reference
            .features
            .iter()
            .zip(&self.tracked)
            .map(|(feature, tracked)| {
                let n = feature.bins.proportions().len();
                feature_drift(feature, &counts[tracked.offset..tracked.offset + n])
            })
            .collect();
        (counts[self.bins], features)
    }

    /// What was counted since the last heartbeat, as one statistics row (`None`: nothing), and
    /// what to remember once it is written.
    fn unsent(&self, bucket_ms: i64) -> Option<(StatsRow, Sent)> {
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut next = sent.clone();
        let mut delta = vec![0u64; self.bins + 1];
        for (i, bucket) in self.buckets.iter().enumerate() {
            let epoch = bucket.epoch.load(Ordering::Acquire);
            let counts: Vec<u64> = bucket
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
            let before = &sent[i];
            for (j, count) in counts.iter().enumerate() {
                let already = if before.0 == epoch {
                    before.1.get(j).copied().unwrap_or(0)
                } else {
                    0
                };
                delta[j] += count.saturating_sub(already);
            }
            next[i] = (epoch, counts);
        }
        if delta[self.bins] == 0 {
            return None;
        }
        let mut counts = BTreeMap::new();
        counts.insert("rows".to_string(), delta[self.bins]);
        for (f, tracked) in self.tracked.iter().enumerate() {
            let n = self.reference.features[f].bins.proportions().len();
            for bin in 0..n {
                let count = delta[tracked.offset + bin];
                if count > 0 {
                    counts.insert(stats_key(f, bin), count);
                }
            }
        }
        let row = StatsRow {
            kind: serval_admin::drift::KIND.to_string(),
            endpoint: self.reference.endpoint.clone(),
            target: stats_target(&self.reference),
            bucket_ms,
            counts,
        };
        Some((row, next))
    }
}

impl Observer for LiveDrift {
    fn observe_body(&self, body: &serde_json::Value) {
        if let serde_json::Value::Object(fields) = body {
            self.count_fields(fields);
        }
    }

    fn observe(&self, inputs: &[NamedTensor]) {
        let Some(input) = inputs.first() else {
            return;
        };
        let tensor = &input.tensor;
        let (rows, width) = match tensor.shape() {
            [rows, width] => (*rows, *width),
            [width] => (1, *width),
            _ => return,
        };
        match tensor.data() {
            TensorData::F32(v) => self.count(rows, width, |i| f64::from(v[i])),
            TensorData::F64(v) => self.count(rows, width, |i| v[i]),
            TensorData::I64(v) => self.count(rows, width, |i| v[i] as f64),
            TensorData::I32(v) => self.count(rows, width, |i| f64::from(v[i])),
            _ => {}
        }
    }
}

/// The feature names of a native model's input columns: its metadata's, else `f0`, `f1`, …
fn feature_names(endpoint: &Endpoint) -> Option<Vec<String>> {
    let model = match &endpoint.runner {
        Runner::Native(model) => model,
        _ => return None,
    };
    let metadata = model.metadata();
    if let Some(names) = metadata.feature_names.as_ref().filter(|n| !n.is_empty()) {
        return Some(names.clone());
    }
    let width = metadata.num_features()?;
    Some((0..width).map(|i| format!("f{i}")).collect())
}

/// This server's live drift, per served endpoint (kept across table swaps while the reference
/// and the endpoint's model stay the same).
#[derive(Default)]
pub struct Drifts {
    live: Mutex<HashMap<String, Arc<LiveDrift>>>,
}

impl Drifts {
    /// The drift routes of a table about to be served.
    pub fn routes(&self, table: &RoutingTable) -> HashMap<String, Arc<LiveDrift>> {
        let Some(snapshot) = &table.snapshot else {
            return HashMap::new();
        };
        let references = &snapshot.config.drift_references;
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if references.is_empty() {
            live.clear();
            return HashMap::new();
        }
        let mut routes = HashMap::new();
        for (url, slot) in &table.slots {
            let Some(endpoint) = &slot.serving else {
                continue;
            };
            // The reference for the url itself, else for its name.
            let Some(reference) = references
                .get(url)
                .or_else(|| references.values().find(|r| r.matches(url)))
            else {
                continue;
            };
            // A native model's input columns, else (Python code) the body's fields by name.
            let names = feature_names(endpoint)
                .unwrap_or_else(|| reference.features.iter().map(|f| f.name.clone()).collect());
            let same = live.get(url).filter(|d| {
                d.reference == *reference
                    && d.tracked
                        .iter()
                        .zip(&reference.features)
                        .all(|(t, f)| t.column == names.iter().position(|n| *n == f.name))
            });
            let drift = match same {
                Some(drift) => drift.clone(),
                None => {
                    let drift = Arc::new(LiveDrift::new(url, reference, &names));
                    if !drift.missing.is_empty() {
                        tracing::warn!(
                            "drift of '{url}': the model has no feature {} (its features: {})",
                            drift.missing.join(", "),
                            names.join(", ")
                        );
                    }
                    drift
                }
            };
            routes.insert(url.clone(), drift);
        }
        *live = routes.clone();
        routes
    }

    fn all(&self) -> Vec<Arc<LiveDrift>> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = live.values().cloned().collect();
        all.sort_by(|a, b| a.url.cmp(&b.url));
        all
    }

    /// Rows for the fleet's statistics since the last heartbeat; [`Drifts::sent`] once written.
    pub fn unsent(&self, bucket_ms: i64) -> Vec<(Arc<LiveDrift>, StatsRow, Sent)> {
        self.all()
            .into_iter()
            .filter_map(|d| {
                let (row, next) = d.unsent(bucket_ms)?;
                Some((d, row, next))
            })
            .collect()
    }

    /// Remembers what a heartbeat wrote.
    pub fn sent(written: Vec<(Arc<LiveDrift>, Sent)>) {
        for (drift, next) in written {
            *drift.sent.lock().unwrap_or_else(|e| e.into_inner()) = next;
        }
    }

    /// This server's view, for the console.
    pub fn views(&self) -> Vec<DriftView> {
        self.all()
            .into_iter()
            .map(|d| {
                let (rows, features) = d.features();
                DriftView {
                    endpoint: d.url.clone(),
                    reference: d.reference.endpoint.clone(),
                    source: d.reference.source.clone(),
                    window_seconds: d.reference.window_seconds,
                    rows,
                    missing: d.missing.clone(),
                    features,
                }
            })
            .collect()
    }

    /// `serval_feature_drift{endpoint, feature, statistic}` over this server's windows.
    pub fn register(&self, registry: &mut Registry) {
        let all = self.all();
        if all.is_empty() {
            return;
        }
        let family = Family::<DriftLabels, Gauge<f64, AtomicU64>>::default();
        for drift in all {
            for feature in drift.features().1 {
                for (statistic, value) in [
                    ("psi", feature.psi),
                    ("ks", feature.ks),
                    ("chi_square", feature.chi_square),
                ] {
                    if let Some(value) = value {
                        family
                            .get_or_create(&DriftLabels {
                                endpoint: drift.url.clone(),
                                feature: feature.feature.clone(),
                                statistic: statistic.to_string(),
                            })
                            .set(value);
                    }
                }
            }
        }
        registry.register(
            "serval_feature_drift",
            "Each input feature's drift from its reference over the live window of this server: psi (population stability index; < 0.1 stable, > 0.25 drifted), ks (Kolmogorov-Smirnov over the reference's bins, numbers) or chi_square (categories)",
            family,
        );
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DriftLabels {
    endpoint: String,
    feature: String,
    statistic: String,
}

/// An endpoint's drift on this server, for the console.
#[derive(Debug, Serialize)]
pub struct DriftView {
    pub endpoint: String,
    /// The reference's endpoint (a url or a name).
    pub reference: String,
    pub source: String,
    pub window_seconds: u64,
    pub rows: u64,
    /// Reference features the model does not have.
    pub missing: Vec<String>,
    pub features: Vec<FeatureDrift>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serval_store::FeatureReference;

    fn reference() -> DriftReference {
        DriftReference {
            endpoint: "m".into(),
            window_seconds: 600,
            features: vec![
                FeatureReference {
                    name: "b".into(),
                    bins: ReferenceBins::Numeric {
                        edges: vec![1.0, 2.0],
                        proportions: vec![0.25, 0.5, 0.25],
                    },
                },
                FeatureReference {
                    name: "gone".into(),
                    bins: ReferenceBins::Numeric {
                        edges: vec![0.0],
                        proportions: vec![0.5, 0.5],
                    },
                },
                FeatureReference {
                    name: "a".into(),
                    bins: ReferenceBins::Categorical {
                        categories: vec!["3".into()],
                        proportions: vec![0.5, 0.5],
                    },
                },
            ],
            rows: 4,
            source: "ref.csv".into(),
            created_ms: 7,
        }
    }

    #[test]
    fn rows_are_counted_by_feature_name_and_sent_once() {
        let names = vec!["a".to_string(), "b".to_string()];
        let drift = LiveDrift::new("m/1", &reference(), &names);
        assert_eq!(drift.missing, ["gone"]);
        // Rows of (a, b): b in bins 0, 1, 2, 2; a is 3 twice.
        let rows = [3.0, 0.5, 3.0, 1.0, 4.0, 2.5, f64::NAN, 9.0];
        drift.count(4, 2, |i| rows[i]);
        let (count, features) = drift.features();
        assert_eq!(count, 4);
        assert_eq!(features[0].live, [0.25, 0.25, 0.5]);
        assert_eq!(features[1].status, "no_data");
        assert_eq!(features[2].live, [2.0 / 3.0, 1.0 / 3.0]);
        let (row, next) = drift.unsent(1_000).unwrap();
        assert_eq!(row.endpoint, "m");
        assert_eq!(row.target, "7");
        assert_eq!(row.counts["rows"], 4);
        assert_eq!(row.counts["0/2"], 2);
        assert_eq!(row.counts["2/0"], 2);
        assert!(!row.counts.contains_key("1/0"));
        Drifts::sent(vec![(
            Arc::new(LiveDrift::new("x", &reference(), &names)),
            next.clone(),
        )]);
        *drift.sent.lock().unwrap() = next;
        assert!(drift.unsent(2_000).is_none(), "nothing new");
        drift.count(1, 2, |i| [3.0, 5.0][i]);
        let (row, _) = drift.unsent(3_000).unwrap();
        assert_eq!(row.counts["rows"], 1);
        assert_eq!(row.counts["0/2"], 1);
    }
}
