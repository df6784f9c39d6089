//! clearml-serving's metric rules (`serval metrics add`): which rule covers a served url, request
//! sampling, and the variable families `<endpoint url>:<variable>` fed from the reply, the request
//! body and `collect_custom_statistics_fn`.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value};
use serval_store::{MetricRule, MetricVariable, ServiceConfig};

use super::{FloatCounter, FloatGauge, Metrics, lock};

/// clearml-serving's buckets for `<url>:_latency`.
const CLEARML_LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
];

impl Metrics {
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
/// Calls `each` per number, so the common single-number case allocates nothing.
fn numbers(value: &Value, each: &mut impl FnMut(f64)) {
    match value {
        Value::Number(n) => n.as_f64().into_iter().for_each(each),
        Value::String(s) => s.trim().parse::<f64>().into_iter().for_each(each),
        Value::Bool(b) => each(f64::from(u8::from(*b))),
        Value::Array(items) => items.iter().for_each(|v| numbers(v, each)),
        _ => {}
    }
}

/// Calls `each` per enum value in a value: strings (numbers and booleans as text), each of a list.
fn labels(value: &Value, each: &mut impl FnMut(&str)) {
    match value {
        Value::String(s) => each(s),
        Value::Number(n) => each(&n.to_string()),
        Value::Bool(b) => each(if *b { "True" } else { "False" }),
        Value::Array(items) => items.iter().for_each(|v| labels(v, each)),
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
                // Only configured values become labels (bounded label sets).
                labels(value, &mut |label| {
                    if buckets.iter().any(|b| b == label) {
                        family
                            .get_or_create(&vec![("enum".to_string(), label.to_string())])
                            .inc();
                    }
                });
            }
            (metric, _) => {
                numbers(value, &mut |x| {
                    if !x.is_finite() {
                        return;
                    }
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
                });
            }
        }
    }

    pub(super) fn register(&self, registry: &mut Registry, name: &str) {
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

    /// Whether the rule has variables (read from the request body, among other places).
    pub fn has_variables(&self) -> bool {
        !self.variables.is_empty()
    }

    /// Whether a variable is named `key`.
    pub fn reads(&self, key: &str) -> bool {
        self.variables.iter().any(|(name, _)| name == key)
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

/// A clearml variable's current state, for the console (read back from its own family's
/// exposition, so it is exactly what `/metrics` shows).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VariableView {
    /// The variable (`_latency` and `_count` are clearml's built-in ones).
    pub name: String,
    /// Its Prometheus family (`<url>:<variable>`).
    pub family: String,
    /// `scalar`, `enum`, `value` or `counter`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// scalar: each bucket's upper bound (`+Inf` last) and the observations in it alone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<(String, u64)>,
    /// scalar: observations and their sum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum: Option<f64>,
    /// enum: the count of each configured value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<(String, f64)>,
    /// value and counter: the number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// The samples of an OpenMetrics text: (name, labels text, value).
fn samples(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (left, value) = line.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let (name, labels) = left.split_once('{').unwrap_or((left, ""));
            Some((name, labels.trim_end_matches('}'), value))
        })
}

/// The value of label `key` in a labels text (`le="0.5",enum="a"`).
fn label<'t>(labels: &'t str, key: &str) -> Option<&'t str> {
    let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
    let len = labels[start..].find('"')?;
    Some(&labels[start..start + len])
}

impl Variable {
    fn view(&self, name: &str, family: &str) -> VariableView {
        let mut registry = Registry::default();
        self.register(&mut registry, family);
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            text.clear();
        }
        let mut view = VariableView {
            name: name.to_string(),
            family: family.to_string(),
            kind: self.kind.type_name(),
            buckets: Vec::new(),
            count: None,
            sum: None,
            values: Vec::new(),
            value: None,
        };
        match &self.kind {
            MetricVariable::Scalar { .. } => {
                let mut below = 0u64;
                for (sample, labels, value) in samples(&text) {
                    match sample.strip_prefix(family) {
                        Some("_bucket") => {
                            let cumulative = value as u64;
                            let bound = label(labels, "le").unwrap_or_default().to_string();
                            view.buckets.push((bound, cumulative.saturating_sub(below)));
                            below = cumulative;
                        }
                        Some("_count") => view.count = Some(value as u64),
                        Some("_sum") => view.sum = Some(value),
                        _ => {}
                    }
                }
            }
            MetricVariable::Enum { buckets } => {
                view.values = buckets.iter().map(|b| (b.clone(), 0.0)).collect();
                for (_, labels, value) in samples(&text) {
                    if let Some(v) = label(labels, "enum")
                        && let Some(slot) = view.values.iter_mut().find(|(b, _)| b == v)
                    {
                        slot.1 = value;
                    }
                }
            }
            MetricVariable::Value | MetricVariable::Counter => {
                view.value = samples(&text).map(|(_, _, v)| v).next();
            }
        }
        view
    }
}

impl Monitor {
    /// Every variable of `url` (clearml's `_latency` and `_count` first) as it stands now.
    pub fn view(&self, url: &str) -> Vec<VariableView> {
        [("_latency", &self.latency), ("_count", &self.count)]
            .into_iter()
            .chain(self.variables.iter().map(|(n, v)| (n.as_str(), v)))
            .map(|(name, variable)| variable.view(name, &family_name(url, name)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::{sample_value, scrape};
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
        // The console's view reads the same numbers back, per bucket (not cumulative).
        let view = m.view("reg/1");
        let names: Vec<&str> = view.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            ["_latency", "_count", "animal", "items", "temp", "x0", "y"]
        );
        let x0 = &view[5];
        assert_eq!((x0.kind, x0.family.as_str()), ("scalar", "reg_1:x0"));
        let buckets: Vec<(&str, u64)> = x0.buckets.iter().map(|(b, n)| (b.as_str(), *n)).collect();
        assert_eq!(buckets, [("0.0", 0), ("1.0", 1), ("5.0", 1), ("+Inf", 0)]);
        assert_eq!((x0.count, x0.sum), (Some(2), Some(4.5)));
        assert_eq!(
            view[2].values,
            [("cat".to_string(), 1.0), ("dog".to_string(), 1.0)]
        );
        assert_eq!(view[3].value, Some(5.0));
        assert_eq!(view[4].value, Some(21.5));
        assert_eq!(view[1].value, Some(3.0));

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
}
