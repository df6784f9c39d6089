//! What this server's shadow pairs found: counts waiting to be added to the fleet's statistics
//! in the store (`serval model shadow report` sums every server's), the last ten minutes by
//! minute and the worst recent disagreements for the console, and the Prometheus families
//! (`serval_shadow_requests_total`, `serval_shadow_difference`, `serval_shadow_duration_seconds`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serval_store::StatsRow;

use super::histogram::DurationHistogram;
use super::lock;

/// Minutes of history the console sees.
const MINUTES: usize = 10;
/// Disagreements kept per pair (the largest differences of the last ten minutes).
const WORST: usize = 5;
/// Differences: 1e-9 to 1 (relative, or probabilities), then +Inf.
const DIFFERENCE_BUCKETS: &[f64] = &[1e-9, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.5, 1.0];

/// How one copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Agree,
    Disagree,
    /// The target failed to answer.
    Error,
    /// Not sent: the shadow queue was full.
    Dropped,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Agree,
        Outcome::Disagree,
        Outcome::Error,
        Outcome::Dropped,
    ];

    fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Agree => "agree",
            Outcome::Disagree => "disagree",
            Outcome::Error => "error",
            Outcome::Dropped => "dropped",
        }
    }

    /// The name of its counter in the fleet's statistics.
    fn counter(self) -> &'static str {
        match self {
            Outcome::Agree => "agreed",
            Outcome::Disagree => "disagreed",
            Outcome::Error => "errors",
            Outcome::Dropped => "dropped",
        }
    }
}

/// A disagreement, for the console.
#[derive(Debug, Clone, Serialize)]
pub struct Disagreement {
    pub time_ms: i64,
    pub difference: f64,
    /// Where the answers first differ.
    pub detail: String,
    /// The request, the endpoint's answer and the target's, as text (cut).
    pub input: String,
    pub primary: String,
    pub shadow: String,
}

/// One copy's result.
pub struct Observation {
    pub outcome: Outcome,
    /// The endpoint's time for the request.
    pub primary: Duration,
    /// The target's time (`None`: dropped).
    pub shadow: Option<Duration>,
    /// The comparison's largest difference (`None`: nothing compared).
    pub difference: Option<f64>,
    pub disagreement: Option<Disagreement>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    pub agreed: u64,
    pub disagreed: u64,
    pub errors: u64,
    pub dropped: u64,
}

impl Counts {
    fn add(&mut self, outcome: Outcome, n: u64) {
        match outcome {
            Outcome::Agree => self.agreed += n,
            Outcome::Disagree => self.disagreed += n,
            Outcome::Error => self.errors += n,
            Outcome::Dropped => self.dropped += n,
        }
    }
}

struct Pair {
    /// `serval_shadow_requests_total` by outcome ([`Outcome::index`]). Dropped copies are
    /// counted only there, by the request path without a lock; [`Pair::fold_dropped`] brings
    /// them into the rest.
    requests: [Counter; 4],
    /// The dropped count already folded into `pending` and `minutes`.
    dropped_folded: u64,
    /// Counters not yet added to the store's statistics.
    pending: BTreeMap<String, u64>,
    /// Counts by minute (epoch ms of the minute's start), oldest first.
    minutes: VecDeque<(i64, Counts)>,
    worst: Vec<Disagreement>,
    primary: DurationHistogram,
    shadow: DurationHistogram,
}

/// One pair as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PairView {
    pub endpoint: String,
    pub target: String,
    /// The last ten minutes on this server.
    pub window: Counts,
    /// `agreed / (agreed + disagreed)` over the window (`None` before anything was compared).
    pub agreement: Option<f64>,
    /// The last ten minutes by minute, oldest first: `[minute start (epoch ms), counts]`.
    pub minutes: Vec<(i64, Counts)>,
    /// Latency percentiles since the server started (seconds; `None` without requests).
    pub primary_p50: Option<f64>,
    pub primary_p99: Option<f64>,
    pub shadow_p50: Option<f64>,
    pub shadow_p99: Option<f64>,
    /// The largest recent disagreements, largest first.
    pub worst: Vec<Disagreement>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PairLabels {
    endpoint: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    endpoint: String,
    target: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SideLabels {
    endpoint: String,
    target: String,
    /// `endpoint` (the answer the client got) or `target` (the copy's).
    side: &'static str,
}

fn difference_histogram() -> Histogram {
    Histogram::new(DIFFERENCE_BUCKETS.iter().copied())
}

/// Every shadow pair of this server (labels are configured endpoint urls only), by endpoint
/// and target.
pub struct ShadowBook {
    pairs: Mutex<HashMap<String, HashMap<String, Pair>>>,
    requests: Family<OutcomeLabels, Counter>,
    difference: Family<PairLabels, Histogram, fn() -> Histogram>,
    duration: Family<SideLabels, DurationHistogram>,
}

impl Default for ShadowBook {
    fn default() -> Self {
        ShadowBook {
            pairs: Mutex::default(),
            requests: Family::default(),
            difference: Family::new_with_constructor(difference_histogram),
            duration: Family::default(),
        }
    }
}

fn minute_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(60_000)
}

impl Pair {
    /// Counts one outcome: Prometheus, the store's pending counts, the minute.
    fn count(&mut self, outcome: Outcome, now_ms: i64) {
        self.requests[outcome.index()].inc();
        if outcome == Outcome::Dropped {
            self.dropped_folded += 1;
        }
        self.add(outcome, 1, now_ms);
    }

    /// Adds `n` of `outcome` to the store's pending counts and the minute of `now_ms`.
    fn add(&mut self, outcome: Outcome, n: u64, now_ms: i64) {
        match self.pending.get_mut(outcome.counter()) {
            Some(sum) => *sum += n,
            None => {
                self.pending.insert(outcome.counter().to_string(), n);
            }
        }
        let minute = minute_of(now_ms);
        match self.minutes.back_mut() {
            Some((at, counts)) if *at == minute => counts.add(outcome, n),
            _ => {
                let mut counts = Counts::default();
                counts.add(outcome, n);
                self.minutes.push_back((minute, counts));
            }
        }
        let oldest = minute - (MINUTES as i64 - 1) * 60_000;
        while self.minutes.front().is_some_and(|(at, _)| *at < oldest) {
            self.minutes.pop_front();
        }
        self.worst.retain(|d| d.time_ms >= oldest);
    }

    /// Brings the copies dropped since the last fold (counted by the request path) into the
    /// pending counts and the current minute.
    fn fold_dropped(&mut self, now_ms: i64) {
        let total = self.requests[Outcome::Dropped.index()].get();
        let new = total.saturating_sub(self.dropped_folded);
        if new > 0 {
            self.dropped_folded = total;
            self.add(Outcome::Dropped, new, now_ms);
        }
    }
}

impl ShadowBook {
    /// The pair `endpoint` → `target` (created on first use).
    fn pair<'a>(
        &self,
        pairs: &'a mut HashMap<String, HashMap<String, Pair>>,
        endpoint: &str,
        target: &str,
    ) -> &'a mut Pair {
        if !pairs.get(endpoint).is_some_and(|t| t.contains_key(target)) {
            let requests = Outcome::ALL.map(|outcome| {
                self.requests
                    .get_or_create(&OutcomeLabels {
                        endpoint: endpoint.to_string(),
                        target: target.to_string(),
                        outcome: outcome.label(),
                    })
                    .clone()
            });
            let pair = Pair {
                requests,
                dropped_folded: 0,
                pending: BTreeMap::new(),
                minutes: VecDeque::new(),
                worst: Vec::new(),
                primary: self.side(endpoint, target, "endpoint"),
                shadow: self.side(endpoint, target, "target"),
            };
            pairs
                .entry(endpoint.to_string())
                .or_default()
                .insert(target.to_string(), pair);
        }
        pairs
            .get_mut(endpoint)
            .and_then(|t| t.get_mut(target))
            .expect("inserted above")
    }

    fn side(&self, endpoint: &str, target: &str, side: &'static str) -> DurationHistogram {
        self.duration
            .get_or_create(&SideLabels {
                endpoint: endpoint.to_string(),
                target: target.to_string(),
                side,
            })
            .clone()
    }

    /// The counter of copies of `endpoint` → `target` not sent (the queue was full): the request
    /// path adds to it without a lock.
    pub fn dropped_counter(&self, endpoint: &str, target: &str) -> Counter {
        let mut pairs = lock(&self.pairs);
        self.pair(&mut pairs, endpoint, target).requests[Outcome::Dropped.index()].clone()
    }

    /// Records one copy of `endpoint`'s request to `target`, at `now_ms`.
    pub fn record(&self, endpoint: &str, target: &str, observation: Observation, now_ms: i64) {
        let Observation {
            outcome,
            primary,
            shadow,
            difference,
            disagreement,
        } = observation;
        if let Some(difference) = difference {
            self.difference
                .get_or_create(&PairLabels {
                    endpoint: endpoint.to_string(),
                    target: target.to_string(),
                })
                .observe(difference);
        }
        let mut pairs = lock(&self.pairs);
        let pair = self.pair(&mut pairs, endpoint, target);
        pair.count(outcome, now_ms);
        if outcome != Outcome::Dropped {
            pair.primary.observe(primary);
            let name =
                serval_admin::shadows::latency_bucket("primary", primary.as_secs_f64() * 1e3);
            *pair.pending.entry(name).or_default() += 1;
        }
        if let Some(took) = shadow {
            pair.shadow.observe(took);
            let name = serval_admin::shadows::latency_bucket("shadow", took.as_secs_f64() * 1e3);
            *pair.pending.entry(name).or_default() += 1;
        }
        if let Some(disagreement) = disagreement {
            pair.worst.push(disagreement);
            pair.worst.sort_by(|a, b| {
                b.difference
                    .total_cmp(&a.difference)
                    .then(b.time_ms.cmp(&a.time_ms))
            });
            pair.worst.truncate(WORST);
        }
    }

    /// The counters not yet in the store, as statistics rows of the bucket `bucket_ms`; they
    /// are taken (give them back with [`ShadowBook::restore`] if the write fails).
    pub fn take_pending(&self, bucket_ms: i64) -> Vec<StatsRow> {
        let mut pairs = lock(&self.pairs);
        let now = serval_store::now_ms();
        pairs
            .values_mut()
            .flat_map(|targets| targets.values_mut())
            .for_each(|pair| pair.fold_dropped(now));
        pairs
            .iter_mut()
            .flat_map(|(endpoint, targets)| targets.iter_mut().map(move |(t, p)| (endpoint, t, p)))
            .filter(|(_, _, pair)| !pair.pending.is_empty())
            .map(|(endpoint, target, pair)| StatsRow {
                kind: serval_admin::shadows::KIND.to_string(),
                endpoint: endpoint.clone(),
                target: target.clone(),
                bucket_ms,
                counts: std::mem::take(&mut pair.pending),
            })
            .collect()
    }

    /// Puts back counters a failed store write took.
    pub fn restore(&self, rows: Vec<StatsRow>) {
        let mut pairs = lock(&self.pairs);
        for row in rows {
            let pair = self.pair(&mut pairs, &row.endpoint, &row.target);
            for (name, count) in row.counts {
                *pair.pending.entry(name).or_default() += count;
            }
        }
    }

    /// Every pair this server has seen, for the console.
    pub fn view(&self, now_ms: i64) -> Vec<PairView> {
        let oldest = minute_of(now_ms) - (MINUTES as i64 - 1) * 60_000;
        let mut pairs = lock(&self.pairs);
        pairs
            .values_mut()
            .flat_map(|targets| targets.values_mut())
            .for_each(|pair| pair.fold_dropped(now_ms));
        let mut views: Vec<PairView> = pairs
            .iter()
            .flat_map(|(endpoint, targets)| targets.iter().map(move |(t, p)| (endpoint, t, p)))
            .map(|(endpoint, target, pair)| {
                let minutes: Vec<(i64, Counts)> = pair
                    .minutes
                    .iter()
                    .filter(|(at, _)| *at >= oldest)
                    .copied()
                    .collect();
                let mut window = Counts::default();
                for (_, c) in &minutes {
                    window.agreed += c.agreed;
                    window.disagreed += c.disagreed;
                    window.errors += c.errors;
                    window.dropped += c.dropped;
                }
                let compared = window.agreed + window.disagreed;
                PairView {
                    endpoint: endpoint.clone(),
                    target: target.clone(),
                    window,
                    agreement: (compared > 0).then(|| window.agreed as f64 / compared as f64),
                    minutes,
                    primary_p50: pair.primary.quantile(0.5),
                    primary_p99: pair.primary.quantile(0.99),
                    shadow_p50: pair.shadow.quantile(0.5),
                    shadow_p99: pair.shadow.quantile(0.99),
                    worst: pair
                        .worst
                        .iter()
                        .filter(|d| d.time_ms >= oldest)
                        .cloned()
                        .collect(),
                }
            })
            .collect();
        views.sort_by(|a, b| (&a.endpoint, &a.target).cmp(&(&b.endpoint, &b.target)));
        views
    }

    /// Adds the Prometheus families to a scrape.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "serval_shadow_requests",
            "Copies of requests sent to a shadow target, by endpoint, target and outcome (agree, disagree, error: the target failed, dropped: the shadow queue was full)",
            self.requests.clone(),
        );
        registry.register(
            "serval_shadow_difference",
            "Largest difference between the endpoint's and the target's answer per compared request (classifiers: of a probability; otherwise relative)",
            self.difference.clone(),
        );
        registry.register(
            "serval_shadow_duration_seconds",
            "Duration of a shadowed request on the endpoint (side=endpoint) and of its copy on the target (side=target)",
            self.duration.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(outcome: Outcome, difference: Option<f64>, at: i64) -> Observation {
        Observation {
            outcome,
            primary: Duration::from_millis(3),
            shadow: Some(Duration::from_millis(40)),
            difference,
            disagreement: (outcome == Outcome::Disagree).then(|| Disagreement {
                time_ms: at,
                difference: difference.unwrap_or(f64::INFINITY),
                detail: "output 'y' element 0: 1 vs 2".into(),
                input: "{}".into(),
                primary: "{}".into(),
                shadow: "{}".into(),
            }),
        }
    }

    #[test]
    fn counts_wait_for_the_store_and_come_back_when_its_write_fails() {
        let book = ShadowBook::default();
        let now = serval_store::now_ms();
        book.record("e", "t", seen(Outcome::Agree, Some(0.0), now), now);
        book.record("e", "t", seen(Outcome::Disagree, Some(0.5), now), now);
        book.dropped_counter("e", "t").inc();
        let rows = book.take_pending(now);
        assert_eq!(rows.len(), 1);
        let counts = &rows[0].counts;
        assert_eq!(counts["agreed"], 1);
        assert_eq!(counts["disagreed"], 1);
        assert_eq!(counts["dropped"], 1);
        assert_eq!(counts["primary_ms_le_5"], 2);
        assert_eq!(counts["shadow_ms_le_50"], 2);
        // Taken: nothing is pending until the write fails and they are put back.
        assert!(book.take_pending(now).is_empty());
        book.restore(rows.clone());
        assert_eq!(book.take_pending(now), rows);

        let view = &book.view(now)[0];
        assert_eq!((view.window.agreed, view.window.disagreed), (1, 1));
        assert_eq!(view.agreement, Some(0.5));
        assert_eq!(view.worst.len(), 1);
        // Ten minutes later the window has moved on.
        let later = &book.view(now + 11 * 60_000)[0];
        assert_eq!(later.agreement, None);
        assert!(later.worst.is_empty());
        let mut registry = Registry::default();
        book.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains(
            r#"serval_shadow_requests_total{endpoint="e",target="t",outcome="dropped"} 1"#
        ));
    }
}
