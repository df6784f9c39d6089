//! Prometheus metrics: serval's own (`serval_*`, `process_*`) and clearml-serving's per-endpoint
//! variables from `metrics add` rules (`<endpoint url>:<variable>`), exposed on `GET /metrics` in
//! the OpenMetrics text format.
//!
//! Built-in metrics are recorded for every request through handles resolved once per endpoint
//! ([`EndpointMetrics`]), so the hot path never hashes labels. clearml variables are recorded for
//! sampled requests only, through the endpoint's [`Monitor`], which each table build recomputes
//! from the rules (an unchanged variable keeps its counts; a bucket change starts it afresh).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod clearml;
mod histogram;
pub mod live;
mod process;
pub mod shadow;

use clearml::Variable;
pub use clearml::{Monitor, VariableView, family_name, rule_for};
pub use histogram::{DURATION_BUCKETS, DurationHistogram};
pub use live::{Failure, Live};

/// Model loading: 1 ms to 5 min.
const LOAD_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Rows per engine call of a batched endpoint: 1 to 4,096.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    endpoint: String,
    version: String,
}

impl EndpointLabels {
    /// `name` and `version` of an endpoint url (`iris/2` → `iris`, `2`).
    pub fn of(url: &str) -> Self {
        let (endpoint, version) = url.split_once('/').unwrap_or((url, ""));
        EndpointLabels {
            endpoint: endpoint.to_string(),
            version: version.to_string(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    endpoint: String,
    version: String,
    protocol: &'static str,
    outcome: String,
}

/// Which adapter a request came through (the `protocol` label of request metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// clearml's `POST /serve/{endpoint}[/{version}]`.
    Clearml,
    /// Open Inference Protocol over REST (`/v2/...`).
    V2Rest,
    /// Open Inference Protocol over gRPC.
    V2Grpc,
    /// `send_request` from an endpoint's Python code.
    SendRequest,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [
        Protocol::Clearml,
        Protocol::V2Rest,
        Protocol::V2Grpc,
        Protocol::SendRequest,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Clearml => "clearml",
            Protocol::V2Rest => "v2_rest",
            Protocol::V2Grpc => "v2_grpc",
            Protocol::SendRequest => "send_request",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    canary: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    endpoint: String,
    version: String,
    stage: String,
}

fn load_histogram() -> Histogram {
    Histogram::new(LOAD_BUCKETS.iter().copied())
}

fn batch_histogram() -> Histogram {
    Histogram::new(BATCH_BUCKETS.iter().copied())
}

/// Stages of a request, for `serval_stage_duration_seconds`.
pub const STAGES: [&str; 4] = ["queue", "preprocess", "inference", "postprocess"];

/// The server's metrics (one per process).
pub struct Metrics {
    requests: Family<OutcomeLabels, Counter>,
    duration: Family<EndpointLabels, DurationHistogram>,
    stages: Family<StageLabels, DurationHistogram>,
    load_duration: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    load_failures: Family<EndpointLabels, Counter>,
    reloads: Counter,
    batch_rows: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    batch_depth: Family<EndpointLabels, Gauge>,
    batch_rejected: Family<EndpointLabels, Counter>,
    /// Requests that asked for an explanation, by outcome (also in `requests`).
    explained: Family<OutcomeLabels, Counter>,
    /// Rollout events this server recorded (it drove the rollout), by canary and kind.
    rollout_events: Family<RolloutLabels, Counter>,
    /// clearml variable families by metric name.
    variables: Mutex<HashMap<String, Arc<Variable>>>,
    /// The console's per-endpoint counters and history.
    pub live: Live,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            duration: Family::default(),
            stages: Family::default(),
            load_duration: Family::new_with_constructor(load_histogram),
            load_failures: Family::default(),
            reloads: Counter::default(),
            batch_rows: Family::new_with_constructor(batch_histogram),
            batch_depth: Family::default(),
            batch_rejected: Family::default(),
            explained: Family::default(),
            rollout_events: Family::default(),
            variables: Mutex::new(HashMap::new()),
            live: Live::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// Handles for one endpoint's request metrics.
    pub fn endpoint(self: &Arc<Self>, url: &str) -> EndpointMetrics {
        let labels = EndpointLabels::of(url);
        let duration = self.duration.get_or_create(&labels).clone();
        EndpointMetrics {
            metrics: self.clone(),
            ok: Default::default(),
            stages: Default::default(),
            live: self.live.endpoint(url, &duration),
            labels,
        }
    }

    /// Handles for the runner of a native endpoint (batch sizes, queue depth, refusals).
    pub fn batch(&self, url: &str) -> BatchMetrics {
        let labels = EndpointLabels::of(url);
        BatchMetrics {
            rows: self.batch_rows.get_or_create(&labels).clone(),
            depth: self.batch_depth.get_or_create(&labels).clone(),
            rejected: self.batch_rejected.get_or_create(&labels).clone(),
        }
    }

    fn outcome(&self, labels: &EndpointLabels, protocol: Protocol, outcome: &str) -> Counter {
        self.requests
            .get_or_create(&OutcomeLabels {
                endpoint: labels.endpoint.clone(),
                version: labels.version.clone(),
                protocol: protocol.label(),
                outcome: outcome.to_string(),
            })
            .clone()
    }

    /// A request that failed before reaching an endpoint (unknown url, unreadable body): counted
    /// under `endpoint=""`, so arbitrary urls cannot grow the label set.
    pub fn unrouted(&self, protocol: Protocol, kind: &str) {
        self.outcome(&EndpointLabels::of(""), protocol, kind).inc();
    }

    pub fn loaded(&self, url: &str, took: Duration, ok: bool) {
        let labels = EndpointLabels::of(url);
        self.load_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if !ok {
            self.load_failures.get_or_create(&labels).inc();
        }
    }

    /// An event of the rollout of `canary` this server recorded (`step`, `promoted`, …).
    pub fn rollout_event(&self, canary: &str, kind: &str) {
        self.rollout_events
            .get_or_create(&RolloutLabels {
                canary: canary.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn reloaded(&self) {
        self.reloads.inc();
    }

    /// Everything, for one scrape. `extra` adds families computed at scrape time.
    pub fn encode(&self, extra: impl FnOnce(&mut Registry)) -> String {
        let mut registry = Registry::default();
        registry.register(
            "serval_requests",
            "Requests by endpoint, version, protocol (clearml, v2_rest, v2_grpc, send_request) and outcome (ok or the error kind)",
            self.requests.clone(),
        );
        registry.register(
            "serval_request_duration_seconds",
            "End-to-end request duration by endpoint and version",
            self.duration.clone(),
        );
        registry.register(
            "serval_stage_duration_seconds",
            "Time per request stage: queue (waiting for a Python worker or a native runner thread), preprocess, inference, postprocess",
            self.stages.clone(),
        );
        registry.register(
            "serval_endpoint_load_duration_seconds",
            "Time to load an endpoint's model and code",
            self.load_duration.clone(),
        );
        registry.register(
            "serval_endpoint_load_failures",
            "Endpoint loads that failed",
            self.load_failures.clone(),
        );
        registry.register(
            "serval_reloads",
            "Routing tables swapped in after a configuration change",
            self.reloads.clone(),
        );
        registry.register(
            "serval_batch_size_rows",
            "Rows per engine call of a native endpoint (more than one request's rows when batching merges them)",
            self.batch_rows.clone(),
        );
        registry.register(
            "serval_batch_queue_depth",
            "Requests waiting for a native endpoint's model (its runner threads are busy)",
            self.batch_depth.clone(),
        );
        registry.register(
            "serval_batch_rejected",
            "Requests refused because a batched endpoint's queue was full (429)",
            self.batch_rejected.clone(),
        );
        registry.register(
            "serval_explained_requests",
            "Requests that asked for an explanation (contributions), by outcome; also counted in serval_requests_total",
            self.explained.clone(),
        );
        registry.register(
            "serval_rollout_events",
            "Rollout events (step, promoted, rolled_back, shadow_passed, leader_changed) this server recorded while it drove the rollout, by canary and kind",
            self.rollout_events.clone(),
        );
        extra(&mut registry);
        process::process_metrics(&mut registry);
        for (name, variable) in lock(&self.variables).iter() {
            variable.register(&mut registry, name);
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            text.clear();
        }
        text
    }
}

/// The runner of one native endpoint: rows per engine call, waiting requests, refusals.
pub struct BatchMetrics {
    pub rows: Histogram,
    pub depth: Gauge,
    pub rejected: Counter,
}

/// One endpoint's request metrics, resolved once.
pub struct EndpointMetrics {
    metrics: Arc<Metrics>,
    labels: EndpointLabels,
    /// `outcome="ok"` by [`Protocol::index`]; created on first use.
    ok: [std::sync::OnceLock<Counter>; 4],
    /// By [`STAGES`] index; created on first use (native endpoints only have inference).
    stages: [std::sync::OnceLock<DurationHistogram>; 4],
    /// The console's counters, and the duration histogram (`serval_request_duration_seconds`).
    live: Arc<live::LiveStats>,
}

impl EndpointMetrics {
    /// Records a finished request: its outcome (`Err`: the error's kind and the text the client
    /// got) and duration.
    pub fn finished(&self, took: Duration, protocol: Protocol, outcome: Result<(), Failure<'_>>) {
        match &outcome {
            Ok(()) => {
                self.ok[protocol.index()]
                    .get_or_init(|| self.metrics.outcome(&self.labels, protocol, "ok"))
                    .inc();
            }
            Err(failure) => {
                self.metrics
                    .outcome(&self.labels, protocol, failure.kind)
                    .inc();
            }
        }
        self.live.record(took, protocol, outcome);
    }

    /// Counts a request that asked for an explanation (`failed`: its error's kind).
    pub fn explained(&self, protocol: Protocol, failed: Option<&str>) {
        self.metrics
            .explained
            .get_or_create(&OutcomeLabels {
                endpoint: self.labels.endpoint.clone(),
                version: self.labels.version.clone(),
                protocol: protocol.label(),
                outcome: failed.unwrap_or("ok").to_string(),
            })
            .inc();
    }

    /// Records a stage's time (`stage` indexes [`STAGES`]).
    pub fn stage(&self, stage: usize, took: Duration) {
        let (Some(cell), Some(name)) = (self.stages.get(stage), STAGES.get(stage)) else {
            return;
        };
        cell.get_or_init(|| {
            self.metrics
                .stages
                .get_or_create(&StageLabels {
                    endpoint: self.labels.endpoint.clone(),
                    version: self.labels.version.clone(),
                    stage: (*name).to_string(),
                })
                .clone()
        })
        .observe(took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn scrape(metrics: &Metrics) -> String {
        metrics.encode(|_| {})
    }

    pub(super) fn sample_value(text: &str, sample: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn request_metrics_carry_endpoint_version_and_outcome() {
        let metrics = Arc::new(Metrics::default());
        let e = metrics.endpoint("iris/2");
        e.finished(Duration::from_millis(3), Protocol::Clearml, Ok(()));
        e.finished(Duration::from_millis(3), Protocol::V2Grpc, Ok(()));
        e.finished(
            Duration::from_millis(3),
            Protocol::Clearml,
            Err(Failure {
                kind: "invalid_input",
                message: &"bad row",
            }),
        );
        e.stage(2, Duration::from_millis(1));
        metrics.unrouted(Protocol::V2Rest, "not_found");
        let text = scrape(&metrics);
        assert_eq!(
            sample_value(
                &text,
                "serval_requests_total{endpoint=\"iris\",version=\"2\",protocol=\"clearml\",outcome=\"ok\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample_value(
                &text,
                "serval_requests_total{endpoint=\"iris\",version=\"2\",protocol=\"v2_grpc\",outcome=\"ok\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample_value(
                &text,
                "serval_requests_total{endpoint=\"iris\",version=\"2\",protocol=\"clearml\",outcome=\"invalid_input\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample_value(
                &text,
                "serval_requests_total{endpoint=\"\",version=\"\",protocol=\"v2_rest\",outcome=\"not_found\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample_value(
                &text,
                "serval_request_duration_seconds_count{endpoint=\"iris\",version=\"2\"}"
            ),
            Some(3.0)
        );
        assert_eq!(
            sample_value(
                &text,
                "serval_stage_duration_seconds_count{endpoint=\"iris\",version=\"2\",stage=\"inference\"}"
            ),
            Some(1.0)
        );
        assert!(text.contains("process_resident_memory_bytes"));
        assert!(text.ends_with("# EOF\n"));
    }
}
