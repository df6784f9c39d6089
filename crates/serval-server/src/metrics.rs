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
use serde_json::{Map, Value};
use serval_store::{MetricRule, MetricVariable, ServiceConfig};

/// Seconds, for request and stage durations: 0.1 ms to 60 s.
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
/// Model loading: 1 ms to 5 min.
const LOAD_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// clearml-serving's buckets for `<url>:_latency`.
const CLEARML_LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
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
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    endpoint: String,
    version: String,
    stage: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS.iter().copied())
}

fn load_histogram() -> Histogram {
    Histogram::new(LOAD_BUCKETS.iter().copied())
}

/// Stages of a request, for `serval_stage_duration_seconds`.
pub const STAGES: [&str; 4] = ["queue", "preprocess", "inference", "postprocess"];

/// The server's metrics (one per process).
pub struct Metrics {
    requests: Family<OutcomeLabels, Counter>,
    duration: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    stages: Family<StageLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    load_duration: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    load_failures: Family<EndpointLabels, Counter>,
    reloads: Counter,
    /// clearml variable families by metric name.
    variables: Mutex<HashMap<String, Arc<Variable>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            stages: Family::new_with_constructor(duration_histogram),
            in_flight: Gauge::default(),
            load_duration: Family::new_with_constructor(load_histogram),
            load_failures: Family::default(),
            reloads: Counter::default(),
            variables: Mutex::new(HashMap::new()),
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
        EndpointMetrics {
            metrics: self.clone(),
            ok: self.outcome(&labels, "ok"),
            duration: self.duration.get_or_create(&labels).clone(),
            stages: Default::default(),
            labels,
        }
    }

    fn outcome(&self, labels: &EndpointLabels, outcome: &str) -> Counter {
        self.requests
            .get_or_create(&OutcomeLabels {
                endpoint: labels.endpoint.clone(),
                version: labels.version.clone(),
                outcome: outcome.to_string(),
            })
            .clone()
    }

    /// A request that failed before reaching an endpoint (unknown url, unreadable body): counted
    /// under `endpoint=""`, so arbitrary urls cannot grow the label set.
    pub fn unrouted(&self, kind: &str) {
        self.outcome(&EndpointLabels::of(""), kind).inc();
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
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

    pub fn reloaded(&self) {
        self.reloads.inc();
    }

    /// The clearml monitor of every served url that a metric rule covers (see [`rule_for`]),
    /// reusing unchanged variable families; families no rule needs any more are dropped.
    pub fn monitors(&self, config: &ServiceConfig, urls: &[&str]) -> HashMap<String, Arc<Monitor>> {
        let default_freq = config.settings.metric_log_freq.unwrap_or(1.0);
        let mut variables = lock(&self.variables);
        let mut keep: HashMap<String, Arc<Variable>> = HashMap::new();
        let mut monitors = HashMap::new();
        for url in urls {
            let Some(rule) = rule_for(&config.metrics, url) else {
                continue;
            };
            let mut family = |variable: &str, kind: &MetricVariable| {
                let name = family_name(url, variable);
                let existing = variables
                    .get(&name)
                    .filter(|v| v.kind == *kind)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Variable::new(kind.clone())));
                keep.insert(name, existing.clone());
                existing
            };
            let latency = family(
                "_latency",
                &MetricVariable::Scalar {
                    buckets: CLEARML_LATENCY_BUCKETS.to_vec(),
                },
            );
            let count = family("_count", &MetricVariable::Counter);
            let vars = rule
                .variables
                .iter()
                .map(|(name, kind)| (name.clone(), family(name, kind)))
                .collect();
            monitors.insert(
                url.to_string(),
                Arc::new(Monitor {
                    freq: rule.log_frequency.unwrap_or(default_freq).clamp(0.0, 1.0),
                    latency,
                    count,
                    variables: vars,
                }),
            );
        }
        *variables = keep;
        monitors
    }

    /// Everything, for one scrape. `extra` adds families computed at scrape time.
    pub fn encode(&self, extra: impl FnOnce(&mut Registry)) -> String {
        let mut registry = Registry::default();
        registry.register(
            "serval_requests",
            "Requests by endpoint, version and outcome (ok or the error kind)",
            self.requests.clone(),
        );
        registry.register(
            "serval_request_duration_seconds",
            "End-to-end request duration by endpoint and version",
            self.duration.clone(),
        );
        registry.register(
            "serval_stage_duration_seconds",
            "Time per request stage: queue (waiting for a Python worker), preprocess, inference, postprocess",
            self.stages.clone(),
        );
        registry.register(
            "serval_requests_in_flight",
            "Requests being served",
            self.in_flight.clone(),
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
        extra(&mut registry);
        process_metrics(&mut registry);
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

/// Decrements the in-flight gauge when dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One endpoint's request metrics, resolved once.
pub struct EndpointMetrics {
    metrics: Arc<Metrics>,
    labels: EndpointLabels,
    ok: Counter,
    duration: Histogram,
    /// By [`STAGES`] index; created on first use (native endpoints only have inference).
    stages: [std::sync::OnceLock<Histogram>; 4],
}

impl EndpointMetrics {
    pub fn finished(&self, took: Duration, outcome: Result<(), &str>) {
        match outcome {
            Ok(()) => {
                self.ok.inc();
            }
            Err(kind) => {
                self.metrics.outcome(&self.labels, kind).inc();
            }
        }
        self.duration.observe(took.as_secs_f64());
    }

    /// Records a stage's time (`stage` indexes [`STAGES`]).
    pub fn stage(&self, stage: usize, seconds: f64) {
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
        .observe(seconds);
    }
}

/// The metric rule that applies to a served url: the rule for exactly that url, else the `P*`
/// rule with the longest prefix `P` of it.
pub fn rule_for<'a>(
    rules: &'a std::collections::BTreeMap<String, MetricRule>,
    url: &str,
) -> Option<&'a MetricRule> {
    if let Some(rule) = rules.get(url) {
        return Some(rule);
    }
    rules
        .iter()
        .filter_map(|(key, rule)| {
            let prefix = key.strip_suffix('*')?;
            url.starts_with(prefix).then_some((prefix.len(), rule))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, rule)| rule)
}

/// clearml-serving's family name: `<url>:<variable>` with characters outside `[a-zA-Z0-9_:]`
/// replaced by `_` (and `_` before a leading digit).
pub fn family_name(url: &str, variable: &str) -> String {
    let mut name: String = format!("{url}:{variable}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// One clearml variable's Prometheus family.
pub struct Variable {
    kind: MetricVariable,
    metric: VariableMetric,
}

enum VariableMetric {
    Scalar(Histogram),
    Enum(Family<Vec<(String, String)>, Counter>),
    Value(FloatGauge),
    Counter(FloatCounter),
}

/// The numbers in a value: a number, or each number of a (nested) list; numeric strings count.
fn numbers(value: &Value, out: &mut Vec<f64>) {
    match value {
        Value::Number(n) => out.extend(n.as_f64()),
        Value::String(s) => out.extend(s.trim().parse::<f64>().ok()),
        Value::Bool(b) => out.push(f64::from(u8::from(*b))),
        Value::Array(items) => items.iter().for_each(|v| numbers(v, out)),
        _ => {}
    }
}

/// The enum values in a value: strings (numbers and booleans as text), each of a list.
fn labels(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Bool(b) => out.push(if *b { "True" } else { "False" }.to_string()),
        Value::Array(items) => items.iter().for_each(|v| labels(v, out)),
        _ => {}
    }
}

impl Variable {
    fn new(kind: MetricVariable) -> Variable {
        let metric = match &kind {
            MetricVariable::Scalar { buckets } => {
                VariableMetric::Scalar(Histogram::new(buckets.iter().copied()))
            }
            MetricVariable::Enum { .. } => VariableMetric::Enum(Family::default()),
            MetricVariable::Value => VariableMetric::Value(FloatGauge::default()),
            MetricVariable::Counter => VariableMetric::Counter(FloatCounter::default()),
        };
        Variable { kind, metric }
    }

    /// Records one value: scalar → each number observed; enum → each configured value counted
    /// (others ignored); value → the gauge set to the (last) number; counter → increased by each
    /// non-negative number.
    pub fn record(&self, value: &Value) {
        match (&self.metric, &self.kind) {
            (VariableMetric::Enum(family), MetricVariable::Enum { buckets }) => {
                let mut found = Vec::new();
                labels(value, &mut found);
                for label in found.into_iter().filter(|l| buckets.contains(l)) {
                    family
                        .get_or_create(&vec![("enum".to_string(), label)])
                        .inc();
                }
            }
            (metric, _) => {
                let mut found = Vec::new();
                numbers(value, &mut found);
                for x in found.into_iter().filter(|x| x.is_finite()) {
                    match metric {
                        VariableMetric::Scalar(h) => h.observe(x),
                        VariableMetric::Value(g) => {
                            g.set(x);
                        }
                        VariableMetric::Counter(c) if x >= 0.0 => {
                            c.inc_by(x);
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn register(&self, registry: &mut Registry, name: &str) {
        let help = match &self.kind {
            MetricVariable::Scalar { .. } => "serval: clearml scalar variable",
            MetricVariable::Enum { .. } => "serval: clearml enum variable",
            MetricVariable::Value => "serval: clearml value variable",
            MetricVariable::Counter => "serval: clearml counter variable",
        };
        match &self.metric {
            VariableMetric::Scalar(h) => registry.register(name, help, h.clone()),
            VariableMetric::Enum(f) => registry.register(name, help, f.clone()),
            VariableMetric::Value(g) => registry.register(name, help, g.clone()),
            VariableMetric::Counter(c) => registry.register(name, help, c.clone()),
        }
    }
}

/// clearml-style statistics of one served url.
pub struct Monitor {
    /// Sampling rate in [0, 1].
    pub freq: f64,
    latency: Arc<Variable>,
    count: Arc<Variable>,
    variables: Vec<(String, Arc<Variable>)>,
}

impl Monitor {
    /// Whether a request is sampled, given a uniform random number in [0, 1).
    pub fn sample(&self, r: f64) -> bool {
        self.freq >= 1.0 || (self.freq > 0.0 && r < self.freq)
    }

    /// The request body's values of the configured variables (taken before the body is
    /// consumed; only these are copied).
    pub fn body_values(&self, body: &Value) -> Vec<Option<Value>> {
        self.variables
            .iter()
            .map(|(name, _)| body.get(name).cloned())
            .collect()
    }

    /// Records a sampled, successful request: `<url>:_latency` (seconds), `<url>:_count` (by
    /// 1/freq, so it estimates all requests), and each variable found in the response, else the
    /// request body, else the custom statistics (clearml's precedence).
    /// `body` is [`Monitor::body_values`] of the request (empty if it had no JSON body).
    pub fn record(
        &self,
        latency: f64,
        body: &[Option<Value>],
        reply: &Value,
        stats: Option<&Map<String, Value>>,
    ) {
        self.latency.record(&Value::from(latency));
        if self.freq > 0.0 {
            self.count.record(&Value::from(1.0 / self.freq));
        }
        for (i, (name, variable)) in self.variables.iter().enumerate() {
            let value = reply
                .get(name)
                .or_else(|| body.get(i).and_then(Option::as_ref))
                .or_else(|| stats.and_then(|s| s.get(name)));
            if let Some(value) = value {
                variable.record(value);
            }
        }
    }
}

/// `process_*` metrics of this process (Linux `/proc`; nothing elsewhere).
fn process_metrics(registry: &mut Registry) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // Clock ticks per second: 100 on every Linux this runs on.
    let ticks = 100.0;
    if let (Some(utime), Some(stime)) = (field(11), field(12)) {
        let cpu = FloatCounter::default();
        cpu.inc_by((utime + stime) / ticks);
        registry.register("process_cpu_seconds", "User and system CPU time", cpu);
    }
    if let Some(threads) = field(17) {
        let g = FloatGauge::default();
        g.set(threads);
        registry.register("process_threads", "OS threads", g);
    }
    if let Some(rss_pages) = field(21) {
        let g = FloatGauge::default();
        g.set(rss_pages * 4096.0);
        registry.register("process_resident_memory_bytes", "Resident memory", g);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let g = FloatGauge::default();
        g.set(fds.count() as f64);
        registry.register("process_open_fds", "Open file descriptors", g);
    }
    if let (Some(start), Ok(uptime)) = (field(19), std::fs::read_to_string("/proc/uptime")) {
        let boot = uptime
            .split_whitespace()
            .next()
            .and_then(|u| u.parse::<f64>().ok())
            .map(|up| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64())
                    - up
            });
        if let Some(boot) = boot {
            let g = FloatGauge::default();
            g.set(boot + start / ticks);
            registry.register(
                "process_start_time_seconds",
                "Start time since the Unix epoch",
                g,
            );
        }
    }
}

/// Scrape-time families from the routing table: load state and Python workers per endpoint.
pub fn table_metrics(registry: &mut Registry, table: &crate::table::RoutingTable) {
    let loaded: Family<EndpointLabels, Gauge> = Family::default();
    let alive: Family<EndpointLabels, Gauge> = Family::default();
    let restarts: Family<EndpointLabels, Counter> = Family::default();
    for (url, slot) in &table.slots {
        let labels = EndpointLabels::of(url);
        loaded
            .get_or_create(&labels)
            .set(i64::from(slot.serving.is_some()));
        if let Some(pool) = slot.serving.as_ref().and_then(|s| s.python.as_ref()) {
            let status = pool.status();
            alive.get_or_create(&labels).set(status.alive as i64);
            restarts.get_or_create(&labels).inc_by(status.restarts);
        }
    }
    registry.register(
        "serval_endpoint_serving",
        "1 if the endpoint answers requests (a loaded model or the previous version), else 0",
        loaded,
    );
    registry.register(
        "serval_python_workers_alive",
        "Live Python worker processes per endpoint",
        alive,
    );
    registry.register(
        "serval_python_worker_restarts",
        "Python worker processes restarted since the endpoint's workers were started",
        restarts,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn rule(endpoint: &str, freq: Option<f64>, vars: &[(&str, MetricVariable)]) -> MetricRule {
        MetricRule {
            endpoint: endpoint.into(),
            log_frequency: freq,
            variables: vars
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn exact_rules_win_then_the_longest_prefix() {
        let mut rules = BTreeMap::new();
        for key in ["m*", "model/*", "model/2", "other"] {
            rules.insert(key.to_string(), rule(key, None, &[]));
        }
        let pick = |url: &str| rule_for(&rules, url).map(|r| r.endpoint.clone());
        assert_eq!(pick("model/2").as_deref(), Some("model/2"));
        assert_eq!(pick("model/3").as_deref(), Some("model/*"));
        assert_eq!(pick("mx").as_deref(), Some("m*"));
        assert_eq!(pick("other").as_deref(), Some("other"));
        assert_eq!(pick("others"), None);
        assert_eq!(pick("x"), None);
    }

    #[test]
    fn family_names_follow_clearml() {
        assert_eq!(family_name("reg/1", "y"), "reg_1:y");
        assert_eq!(
            family_name("test_model_sklearn", "x0"),
            "test_model_sklearn:x0"
        );
        assert_eq!(family_name("a-b.c", "some var"), "a_b_c:some_var");
        assert_eq!(family_name("1st", "y"), "_1st:y");
    }

    #[test]
    fn sampling_follows_the_rule_then_the_service_default() {
        let metrics = Metrics::default();
        let mut config = ServiceConfig::default();
        config
            .metrics
            .insert("a".into(), rule("a", Some(0.25), &[]));
        config.metrics.insert("b*".into(), rule("b*", None, &[]));
        config.settings.metric_log_freq = Some(0.5);
        let monitors = metrics.monitors(&config, &["a", "b/1", "c"]);
        assert!(!monitors.contains_key("c"), "no rule, no monitor");
        let a = &monitors["a"];
        assert_eq!(a.freq, 0.25);
        assert!(a.sample(0.0) && a.sample(0.2499) && !a.sample(0.25) && !a.sample(0.9));
        assert_eq!(monitors["b/1"].freq, 0.5);
        // Over a uniform grid the sampled share is the rate.
        let n = 10_000;
        let sampled = (0..n).filter(|i| a.sample(*i as f64 / n as f64)).count();
        assert_eq!(sampled, n / 4);
        config.settings.metric_log_freq = Some(0.0);
        let never = &metrics.monitors(&config, &["b/1"])["b/1"];
        assert!(!never.sample(0.0));
    }

    fn scrape(metrics: &Metrics) -> String {
        metrics.encode(|_| {})
    }

    fn sample_value(text: &str, sample: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_variable_type_records_as_documented() {
        let metrics = Metrics::default();
        let mut config = ServiceConfig::default();
        config.metrics.insert(
            "reg/*".into(),
            rule(
                "reg/*",
                Some(1.0),
                &[
                    (
                        "x0",
                        MetricVariable::Scalar {
                            buckets: vec![0.0, 1.0, 5.0],
                        },
                    ),
                    (
                        "y",
                        MetricVariable::Scalar {
                            buckets: vec![0.5, 2.0],
                        },
                    ),
                    (
                        "animal",
                        MetricVariable::Enum {
                            buckets: vec!["cat".into(), "dog".into()],
                        },
                    ),
                    ("temp", MetricVariable::Value),
                    ("items", MetricVariable::Counter),
                ],
            ),
        );
        let monitors = metrics.monitors(&config, &["reg/1"]);
        let m = &monitors["reg/1"];
        let body = json!({"x0": 0.5, "animal": "dog", "temp": 20, "items": 3});
        m.record(
            0.002,
            &m.body_values(&body),
            &json!({"y": [1.0, 3.0]}),
            None,
        );
        let body = json!({"x0": 4, "animal": "cow", "temp": 21.5, "items": 2});
        let stats = json!({"animal": "cat", "x0": 100}).as_object().cloned();
        // The body's x0 wins over the custom statistics'; animal comes from the body (cow, not
        // configured, ignored).
        m.record(
            0.02,
            &m.body_values(&body),
            &json!({"y": [0.1]}),
            stats.as_ref(),
        );
        let stats = json!({"animal": "cat"}).as_object().cloned();
        m.record(0.02, &[], &json!({}), stats.as_ref());
        let text = scrape(&metrics);
        // Standard cumulative histograms with a true sum.
        assert_eq!(
            sample_value(&text, "reg_1:x0_bucket{le=\"0.0\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample_value(&text, "reg_1:x0_bucket{le=\"1.0\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample_value(&text, "reg_1:x0_bucket{le=\"5.0\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample_value(&text, "reg_1:x0_bucket{le=\"+Inf\"}"),
            Some(2.0)
        );
        assert_eq!(sample_value(&text, "reg_1:x0_sum"), Some(4.5));
        assert_eq!(sample_value(&text, "reg_1:x0_count"), Some(2.0));
        // Each element of a list is an observation.
        assert_eq!(sample_value(&text, "reg_1:y_count"), Some(3.0));
        assert_eq!(sample_value(&text, "reg_1:y_bucket{le=\"0.5\"}"), Some(1.0));
        assert_eq!(
            sample_value(&text, "reg_1:animal_total{enum=\"dog\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample_value(&text, "reg_1:animal_total{enum=\"cat\"}"),
            Some(1.0)
        );
        assert!(!text.contains("cow"));
        assert_eq!(sample_value(&text, "reg_1:temp"), Some(21.5));
        assert_eq!(sample_value(&text, "reg_1:items_total"), Some(5.0));
        assert_eq!(sample_value(&text, "reg_1:_latency_count"), Some(3.0));
        assert_eq!(
            sample_value(&text, "reg_1:_latency_bucket{le=\"0.005\"}"),
            Some(1.0)
        );
        assert_eq!(sample_value(&text, "reg_1:_count_total"), Some(3.0));

        // Unchanged rules keep their counts; changed buckets start afresh; removed rules vanish.
        let monitors = metrics.monitors(&config, &["reg/1"]);
        drop(monitors);
        assert_eq!(sample_value(&scrape(&metrics), "reg_1:x0_count"), Some(2.0));
        if let Some(rule) = config.metrics.get_mut("reg/*") {
            rule.variables.insert(
                "x0".into(),
                MetricVariable::Scalar {
                    buckets: vec![10.0],
                },
            );
        }
        metrics.monitors(&config, &["reg/1"]);
        let text = scrape(&metrics);
        assert_eq!(sample_value(&text, "reg_1:x0_count"), Some(0.0));
        assert!(text.contains("reg_1:x0_bucket{le=\"10.0\"}"));
        assert_eq!(sample_value(&text, "reg_1:y_count"), Some(3.0));
        config.metrics.clear();
        metrics.monitors(&config, &["reg/1"]);
        assert!(!scrape(&metrics).contains("reg_1:"));
    }

    #[test]
    fn count_estimates_all_requests_when_sampling() {
        let metrics = Metrics::default();
        let mut config = ServiceConfig::default();
        config.metrics.insert("a".into(), rule("a", Some(0.2), &[]));
        let m = &metrics.monitors(&config, &["a"])["a"];
        m.record(0.001, &[], &json!({}), None);
        assert_eq!(sample_value(&scrape(&metrics), "a:_count_total"), Some(5.0));
    }

    #[test]
    fn request_metrics_carry_endpoint_version_and_outcome() {
        let metrics = Arc::new(Metrics::default());
        let e = metrics.endpoint("iris/2");
        e.finished(Duration::from_millis(3), Ok(()));
        e.finished(Duration::from_millis(3), Err("invalid_input"));
        e.stage(2, 0.001);
        metrics.unrouted("not_found");
        let text = scrape(&metrics);
        assert_eq!(
            sample_value(
                &text,
                "serval_requests_total{endpoint=\"iris\",version=\"2\",outcome=\"ok\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample_value(
                &text,
                "serval_requests_total{endpoint=\"iris\",version=\"2\",outcome=\"invalid_input\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample_value(
                &text,
                "serval_requests_total{endpoint=\"\",version=\"\",outcome=\"not_found\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample_value(
                &text,
                "serval_request_duration_seconds_count{endpoint=\"iris\",version=\"2\"}"
            ),
            Some(2.0)
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
