//! Live per-endpoint statistics for the console (`/ui`) and its JSON API (`/api/v1`): request and
//! error counts and a latency histogram with the buckets of `serval_request_duration_seconds`,
//! recorded with the request metrics, sampled every [`SAMPLE_EVERY`] into a five-minute history
//! from which rates and percentiles over any recent window are computed — the server's own
//! numbers, no Prometheus needed. The last errors of each endpoint are kept with their text.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::histogram::{BUCKETS, DURATION_BUCKETS, DurationHistogram, quantile};
use super::{Protocol, lock};

/// How often the history takes a sample.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept: five minutes.
const HISTORY: usize = 150;
/// Errors kept per endpoint.
const RECENT_ERRORS: usize = 20;
/// Longest error text kept (characters).
const MESSAGE_CHARS: usize = 500;

/// A failed request as [`super::EndpointMetrics::finished`] reports it.
pub struct Failure<'a> {
    /// The error kind (the `outcome` label).
    pub kind: &'a str,
    /// The text the client was answered with.
    pub message: &'a dyn std::fmt::Display,
}

impl<'a> From<&'a crate::error::Error> for Failure<'a> {
    fn from(error: &'a crate::error::Error) -> Self {
        Failure {
            kind: error.kind(),
            message: error,
        }
    }
}

/// One failed request, for the console.
#[derive(Debug, Clone, Serialize)]
pub struct RecentError {
    pub time_ms: i64,
    pub protocol: &'static str,
    pub kind: String,
    pub message: String,
}

/// Counters of one endpoint url since the server started (atomics: recorded per request). The
/// latency histogram is the one `serval_request_duration_seconds` exposes for the url: a
/// successful request costs its bucket and its sum — the total is the buckets' sum.
pub struct LiveStats {
    errors: AtomicU64,
    latency: DurationHistogram,
    recent: Mutex<VecDeque<RecentError>>,
}

impl LiveStats {
    fn new(latency: DurationHistogram) -> Self {
        LiveStats {
            errors: AtomicU64::new(0),
            latency,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    pub fn record(&self, took: Duration, protocol: Protocol, outcome: Result<(), Failure<'_>>) {
        self.latency.observe(took);
        if let Err(failure) = outcome {
            self.errors.fetch_add(1, Ordering::Relaxed);
            let mut message = crate::error::redact(&failure.message.to_string());
            if let Some((cut, _)) = message.char_indices().nth(MESSAGE_CHARS) {
                message.truncate(cut);
                message.push('…');
            }
            let mut recent = lock(&self.recent);
            if recent.len() == RECENT_ERRORS {
                recent.pop_front();
            }
            recent.push_back(RecentError {
                time_ms: serval_store::now_ms(),
                protocol: protocol.label(),
                kind: failure.kind.to_string(),
                message,
            });
        }
    }

    fn sample(&self, time_ms: i64) -> Sample {
        // Errors first: a request recorded in between is never counted as failed without being
        // counted at all.
        let errors = self.errors.load(Ordering::Relaxed);
        let buckets = self.latency.buckets();
        let total: u64 = buckets.iter().sum();
        Sample {
            time_ms,
            ok: total.saturating_sub(errors),
            errors,
            buckets,
        }
    }

    /// The last errors, newest first.
    pub fn recent_errors(&self) -> Vec<RecentError> {
        lock(&self.recent).iter().rev().cloned().collect()
    }
}

/// Cumulative counts at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    time_ms: i64,
    ok: u64,
    errors: u64,
    buckets: [u64; BUCKETS],
}

impl Sample {
    /// What happened between `earlier` and `self`.
    fn since(&self, earlier: &Sample) -> Window {
        Window {
            seconds: (self.time_ms - earlier.time_ms).max(0) as f64 / 1000.0,
            ok: self.ok.saturating_sub(earlier.ok),
            errors: self.errors.saturating_sub(earlier.errors),
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
        }
    }
}

/// Requests in a time window.
struct Window {
    seconds: f64,
    ok: u64,
    errors: u64,
    buckets: [u64; BUCKETS],
}

impl Window {
    fn rate(&self, n: u64) -> Option<f64> {
        (self.seconds > 0.0).then(|| n as f64 / self.seconds)
    }

    /// The `q` quantile of the latency in milliseconds (`None` without requests).
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        quantile(&self.buckets, q).map(|s| s * 1000.0)
    }
}

/// An endpoint's numbers over a recent window.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Requests and errors since the server started.
    pub requests: u64,
    pub errors: u64,
    /// Seconds the window covers (less than asked for while the server is young).
    pub window_seconds: f64,
    pub requests_per_second: Option<f64>,
    /// Failed requests / all requests in the window.
    pub error_ratio: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One point per sample interval, for charts (columns: the same index is the same moment).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    /// Unix time in seconds at the end of each interval.
    pub time: Vec<f64>,
    pub requests_per_second: Vec<f64>,
    pub errors_per_second: Vec<f64>,
    pub p50_ms: Vec<Option<f64>>,
    pub p99_ms: Vec<Option<f64>>,
}

/// The counts [`Live::fleet_rows`] turned into rows, to mark reported once they are written.
#[derive(Debug)]
#[must_use = "give it back to Live::reported once the rows are written"]
pub struct Reported(Vec<(String, Sample)>);

/// Every endpoint's live counters and their sampled history.
#[derive(Default)]
pub struct Live {
    stats: Mutex<HashMap<String, Arc<LiveStats>>>,
    history: Mutex<HashMap<String, VecDeque<Sample>>>,
    /// What [`Live::fleet_rows`] reported last, by url.
    reported: Mutex<HashMap<String, Sample>>,
}

impl Live {
    /// The counters of `url` (the same ones across reloads of the url), recording latencies into
    /// `latency` (the url's `serval_request_duration_seconds`).
    pub fn endpoint(&self, url: &str, latency: &DurationHistogram) -> Arc<LiveStats> {
        lock(&self.stats)
            .entry(url.to_string())
            .or_insert_with(|| Arc::new(LiveStats::new(latency.clone())))
            .clone()
    }

    fn get(&self, url: &str) -> Option<Arc<LiveStats>> {
        lock(&self.stats).get(url).cloned()
    }

    /// The requests `urls` answered since what was last [`Live::reported`], as rows of the fleet's
    /// statistics (kind `endpoint`, bucket `bucket_ms`): `requests`, `errors` and the latency
    /// buckets `ms_le_<bound>` (milliseconds; `ms_le_inf` last). A url's first call only notes
    /// where it starts. Nothing is marked reported until the rows are written and the
    /// [`Reported`] given back: rows that fail to be written are counted again next time.
    pub fn fleet_rows(
        &self,
        urls: &[&str],
        bucket_ms: i64,
    ) -> (Vec<serval_store::StatsRow>, Reported) {
        let mut reported = lock(&self.reported);
        reported.retain(|url, _| urls.contains(&url.as_str()));
        let mut rows = Vec::new();
        let mut marks = Vec::new();
        for url in urls {
            let Some(stats) = self.get(url) else {
                continue;
            };
            let now = stats.sample(bucket_ms);
            let Some(before) = reported.get(*url) else {
                reported.insert(url.to_string(), now);
                continue;
            };
            let window = now.since(before);
            let requests = window.ok + window.errors;
            if requests == 0 {
                continue;
            }
            marks.push((url.to_string(), now));
            let mut counts = std::collections::BTreeMap::new();
            counts.insert("requests".to_string(), requests);
            counts.insert("errors".to_string(), window.errors);
            for (i, count) in window.buckets.iter().enumerate().filter(|(_, c)| **c > 0) {
                let name = match DURATION_BUCKETS.get(i) {
                    Some(bound) => format!("ms_le_{}", (bound * 1e7).round() / 1e4),
                    None => "ms_le_inf".to_string(),
                };
                counts.insert(name, *count);
            }
            rows.push(serval_store::StatsRow {
                kind: "endpoint".to_string(),
                endpoint: url.to_string(),
                target: String::new(),
                bucket_ms,
                counts,
            });
        }
        (rows, Reported(marks))
    }

    /// Marks what [`Live::fleet_rows`] gave as written.
    pub fn reported(&self, written: Reported) {
        let mut reported = lock(&self.reported);
        for (url, sample) in written.0 {
            // A url dropped from the watched set meanwhile stays dropped.
            if let Some(entry) = reported.get_mut(&url) {
                *entry = sample;
            }
        }
    }

    /// Takes a sample of every endpoint (called every [`SAMPLE_EVERY`]). Urls no loaded endpoint
    /// records into any more (removed from the service) are forgotten.
    pub fn tick(&self, now_ms: i64) {
        let stats: Vec<(String, Arc<LiveStats>)> = {
            let mut stats = lock(&self.stats);
            // Held only here: no endpoint's metrics point at it any more.
            stats.retain(|_, s| Arc::strong_count(s) > 1);
            stats.iter().map(|(u, s)| (u.clone(), s.clone())).collect()
        };
        let mut history = lock(&self.history);
        let live: std::collections::HashSet<&str> = stats.iter().map(|(u, _)| u.as_str()).collect();
        history.retain(|url, _| live.contains(url.as_str()));
        for (url, stats) in stats {
            let samples = history.entry(url).or_default();
            if samples.len() == HISTORY {
                samples.pop_front();
            }
            samples.push_back(stats.sample(now_ms));
        }
    }

    /// `url`'s numbers over the last `window` (from now back to the sample nearest that far),
    /// `None` if the url never had counters.
    pub fn summary(&self, url: &str, window: Duration, now_ms: i64) -> Option<Summary> {
        let now = self.get(url)?.sample(now_ms);
        let from = now_ms - window.as_millis() as i64;
        let start = lock(&self.history).get(url).and_then(|samples| {
            samples
                .iter()
                .find(|s| s.time_ms >= from)
                .or(samples.back())
                .copied()
        });
        let window = start.map(|s| now.since(&s));
        let total = window.as_ref().map(|w| w.ok + w.errors);
        Some(Summary {
            requests: now.ok + now.errors,
            errors: now.errors,
            window_seconds: window.as_ref().map_or(0.0, |w| w.seconds),
            requests_per_second: window.as_ref().and_then(|w| w.rate(w.ok + w.errors)),
            error_ratio: window
                .as_ref()
                .zip(total)
                .and_then(|(w, n)| (n > 0).then(|| w.errors as f64 / n as f64)),
            p50_ms: window.as_ref().and_then(|w| w.quantile_ms(0.5)),
            p99_ms: window.as_ref().and_then(|w| w.quantile_ms(0.99)),
        })
    }

    /// `url`'s history, one point per sample interval (empty if it has none).
    pub fn series(&self, url: &str) -> Series {
        let mut series = Series::default();
        let history = lock(&self.history);
        let Some(samples) = history.get(url) else {
            return series;
        };
        for (earlier, later) in samples.iter().zip(samples.iter().skip(1)) {
            let w = later.since(earlier);
            series.time.push(later.time_ms as f64 / 1000.0);
            series
                .requests_per_second
                .push(w.rate(w.ok + w.errors).unwrap_or(0.0));
            series
                .errors_per_second
                .push(w.rate(w.errors).unwrap_or(0.0));
            series.p50_ms.push(w.quantile_ms(0.5));
            series.p99_ms.push(w.quantile_ms(0.99));
        }
        series
    }

    /// `url`'s last errors, newest first.
    pub fn recent_errors(&self, url: &str) -> Vec<RecentError> {
        self.get(url).map(|s| s.recent_errors()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: &str) -> Failure<'_> {
        Failure {
            kind,
            message: &"boom at /srv/models/m.json",
        }
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        let mut buckets = [0u64; BUCKETS];
        assert_eq!(quantile(&buckets, 0.5), None);
        // 100 requests between 1 ms and 2.5 ms (bucket index 7: (0.001, 0.0025]).
        buckets[7] = 100;
        let p50 = quantile(&buckets, 0.5).unwrap();
        assert!((p50 - 0.00175).abs() < 1e-12, "{p50}");
        let p99 = quantile(&buckets, 0.99).unwrap();
        assert!((p99 - (0.001 + 0.0015 * 0.99)).abs() < 1e-12, "{p99}");
        // One slow request beyond every bound: p99 of 100 stays low, the max is the top bound.
        buckets[BUCKETS - 1] = 1;
        assert!(quantile(&buckets, 0.99).unwrap() < 0.0025);
        assert_eq!(quantile(&buckets, 1.0), Some(60.0));
        // Everything in the first bucket: between 0 and its bound.
        let mut first = [0u64; BUCKETS];
        first[0] = 4;
        assert_eq!(quantile(&first, 0.5), Some(0.000005));
    }

    #[test]
    fn windows_count_only_what_happened_inside_them() {
        let live = Live::default();
        let stats = live.endpoint("iris/1", &DurationHistogram::default());
        assert!(Arc::ptr_eq(
            &stats,
            &live.endpoint("iris/1", &DurationHistogram::default())
        ));
        live.tick(1_000);
        for _ in 0..10 {
            stats.record(Duration::from_millis(30), Protocol::Clearml, Ok(()));
        }
        live.tick(3_000);
        for _ in 0..18 {
            stats.record(Duration::from_micros(700), Protocol::V2Rest, Ok(()));
        }
        for _ in 0..2 {
            stats.record(
                Duration::from_micros(700),
                Protocol::V2Rest,
                Err(failure("internal")),
            );
        }
        live.tick(5_000);
        // The last 2 s: 20 requests, 2 failed, all between 0.5 and 1 ms.
        let summary = live
            .summary("iris/1", Duration::from_secs(2), 5_000)
            .unwrap();
        assert_eq!((summary.requests, summary.errors), (30, 2));
        assert_eq!(summary.window_seconds, 2.0);
        assert_eq!(summary.requests_per_second, Some(10.0));
        assert_eq!(summary.error_ratio, Some(0.1));
        let p50 = summary.p50_ms.unwrap();
        assert!((0.5..=1.0).contains(&p50), "{p50}");
        // The whole history (4 s): the 30 ms requests too.
        let all = live
            .summary("iris/1", Duration::from_secs(60), 5_000)
            .unwrap();
        assert_eq!(all.window_seconds, 4.0);
        assert_eq!(all.requests_per_second, Some(7.5));
        let p99 = all.p99_ms.unwrap();
        assert!((25.0..=50.0).contains(&p99), "{p99}");
        let series = live.series("iris/1");
        assert_eq!(series.time, vec![3.0, 5.0]);
        assert_eq!(series.requests_per_second, vec![5.0, 10.0]);
        assert_eq!(series.errors_per_second, vec![0.0, 1.0]);
        assert!(series.p99_ms[0].unwrap() > 25.0 && series.p99_ms[1].unwrap() < 1.0);
        assert!(
            live.summary("other", Duration::from_secs(60), 5_000)
                .is_none()
        );
    }

    /// Fleet rows are counted from what was last written: rows whose write failed (not given back
    /// to `reported`) are counted again in the next rows.
    #[test]
    fn fleet_rows_not_written_are_counted_again() {
        let live = Live::default();
        let stats = live.endpoint("iris/1", &DurationHistogram::default());
        let requests = |rows: &[serval_store::StatsRow]| {
            rows.iter()
                .map(|r| r.counts["requests"])
                .collect::<Vec<_>>()
        };
        // The first call notes where the url starts.
        let (rows, reported) = live.fleet_rows(&["iris/1"], 0);
        assert!(rows.is_empty());
        live.reported(reported);
        let ok = |n| {
            for _ in 0..n {
                stats.record(Duration::from_millis(2), Protocol::Clearml, Ok(()));
            }
        };
        ok(3);
        let (rows, _failed) = live.fleet_rows(&["iris/1"], 10_000);
        assert_eq!(requests(&rows), [3]);
        ok(4);
        let (rows, written) = live.fleet_rows(&["iris/1"], 20_000);
        assert_eq!(requests(&rows), [7]);
        assert_eq!(rows[0].counts["ms_le_2.5"], 7);
        live.reported(written);
        ok(1);
        let (rows, _) = live.fleet_rows(&["iris/1"], 30_000);
        assert_eq!(requests(&rows), [1]);
    }

    #[test]
    fn recent_errors_are_kept_newest_first_without_paths_and_bounded() {
        let stats = LiveStats::new(DurationHistogram::default());
        for i in 0..25 {
            let kind = format!("k{i}");
            stats.record(Duration::ZERO, Protocol::V2Grpc, Err(failure(&kind)));
        }
        let recent = stats.recent_errors();
        assert_eq!(recent.len(), RECENT_ERRORS);
        assert_eq!(recent[0].kind, "k24");
        assert_eq!(recent[0].protocol, "v2_grpc");
        assert_eq!(recent[0].message, "boom at <path>");
        let long = "x".repeat(2_000);
        stats.record(
            Duration::ZERO,
            Protocol::Clearml,
            Err(Failure {
                kind: "internal",
                message: &long,
            }),
        );
        assert_eq!(
            stats.recent_errors()[0].message.chars().count(),
            MESSAGE_CHARS + 1
        );
    }

    #[test]
    fn history_keeps_five_minutes_of_the_urls_still_recorded() {
        let live = Live::default();
        let a = live.endpoint("a", &DurationHistogram::default());
        let b = live.endpoint("b", &DurationHistogram::default());
        for i in 0..400 {
            live.tick(i * 2_000);
        }
        assert_eq!(live.series("a").time.len(), HISTORY - 1);
        // "b" is removed from the service: its endpoint (and its handle) is dropped.
        drop(b);
        live.tick(800_000);
        assert!(
            live.summary("b", Duration::from_secs(60), 800_000)
                .is_none()
        );
        assert!(live.series("b").time.is_empty());
        assert!(
            live.summary("a", Duration::from_secs(60), 800_000)
                .is_some()
        );
        drop(a);
    }
}
