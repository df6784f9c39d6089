//! Every connection has a clock. From accept until its first request (TLS handshake, protocol
//! detection, the HTTP/2 preface and SETTINGS, the first request's headers) a connection has
//! `first` to arrive; afterwards it is closed once no request has been in progress for `idle` —
//! for HTTP/1, `first` if shorter: between two HTTP/1 requests the client is either idle on its
//! keep-alive connection or sending the next request's headers, and both are bounded by the
//! header timeout. (hyper's own header timer would do this with a timer per request: armed,
//! registered and cancelled on every request, a measurable part of a small request's cost.)
//! At the connection cap, connections with no request in progress are closed first (never-used
//! ones before used ones), so sockets that send nothing cannot lock other clients out.
//!
//! A request costs its connection two relaxed atomic additions and one subtraction; the clock
//! itself wakes a few times per timeout and compares counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// One connection's requests, as its clock and the connection cap see them.
#[derive(Debug)]
pub struct Activity {
    accepted: Instant,
    /// Requests started on this connection.
    started: AtomicU64,
    /// Requests whose response is not ready yet.
    in_flight: AtomicUsize,
    /// Chosen for closing at the connection cap.
    evicted: AtomicBool,
    /// An HTTP/1 request was seen: the time between requests is bounded by `first` too.
    http1: AtomicBool,
    /// Streamed replies being sent: meanwhile only `idle` bounds an HTTP/1 connection.
    sending: AtomicUsize,
    evict: Notify,
}

/// A request in progress on a connection: counted until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl InFlight {
    /// The connection it is on.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.0
    }
}

/// A streamed reply being sent on a connection: counted until dropped. Unlike a request in
/// progress, it leaves the connection idle to its clock and to eviction (a client that never
/// reads must not hold a connection), but lifts HTTP/1's shorter bound so that a long download
/// is not cut after the header timeout.
#[derive(Debug)]
pub struct Sending(Arc<Activity>);

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.sending.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    fn new() -> Activity {
        Activity {
            accepted: Instant::now(),
            started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            evicted: AtomicBool::new(false),
            http1: AtomicBool::new(false),
            sending: AtomicUsize::new(0),
            evict: Notify::new(),
        }
    }

    /// A streamed reply starts to be sent on this connection.
    pub fn sending(self: &Arc<Self>) -> Sending {
        self.sending.fetch_add(1, Ordering::Relaxed);
        Sending(self.clone())
    }

    /// Whether a streamed reply is being sent on this connection.
    pub fn streaming(&self) -> bool {
        self.sending.load(Ordering::Relaxed) > 0
    }

    /// An HTTP/1 request starts on this connection.
    pub fn begin_http1(self: &Arc<Self>) -> InFlight {
        if !self.http1.load(Ordering::Relaxed) {
            self.http1.store(true, Ordering::Relaxed);
        }
        self.begin()
    }

    /// A request starts on this connection.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Whether no request is in progress.
    pub fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Whether a request has started on this connection.
    pub fn used(&self) -> bool {
        self.started.load(Ordering::Relaxed) > 0
    }
}

/// Why a connection's clock ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No complete request arrived within the first-request time.
    FirstRequest,
    /// No request was in progress for the idle time.
    Idle,
    /// Closed at the connection cap to let a new client in.
    Evicted,
}

/// The clock never wakes more often than this (tiny timeouts in tests).
const MIN_TICK: Duration = Duration::from_millis(10);

/// Longer timeouts are this long (an `Instant` cannot be pushed past its range).
const LONGEST: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Resolves when `activity`'s connection should be closed: no request `first` after accept, no
/// request in progress for `idle` (HTTP/1: the shorter of `idle` and `first` unless a streamed
/// reply is being sent; closed between that and that and a quarter after the last one ended), or
/// evicted.
pub async fn expiry(activity: &Activity, first: Duration, idle: Duration) -> Expiry {
    let (first, longest_idle) = (first.min(LONGEST), idle.min(LONGEST));
    let evicted = activity.evict.notified();
    tokio::pin!(evicted);
    let mut wake = activity.accepted + first;
    let mut seen = 0;
    // When the connection was first seen with nothing in progress and no new request since.
    let mut idle_since: Option<Instant> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = &mut evicted => return Expiry::Evicted,
        }
        let now = Instant::now();
        let idle = if activity.http1.load(Ordering::Relaxed) && !activity.streaming() {
            longest_idle.min(first)
        } else {
            longest_idle
        };
        let tick = (idle / 4).max(MIN_TICK);
        let started = activity.started.load(Ordering::Relaxed);
        let busy = !activity.idle();
        if started == 0 && !busy {
            return Expiry::FirstRequest;
        }
        if busy || started != seen {
            seen = started;
            idle_since = (!busy).then_some(now);
            wake = now + tick;
            continue;
        }
        let since = *idle_since.get_or_insert(now);
        if now >= since + idle {
            return Expiry::Idle;
        }
        wake = (now + tick).min(since + idle);
    }
}

/// The open connections of one listener, for choosing whom to close at the cap.
#[derive(Debug, Default)]
pub struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

/// A connection's place in its registry: removed when dropped.
#[derive(Debug)]
pub struct Registered {
    registry: Arc<Registry>,
    id: u64,
    pub activity: Arc<Activity>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Registry {
    /// A connection just accepted.
    pub fn add(self: &Arc<Self>) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, activity.clone());
        Registered {
            registry: self.clone(),
            id,
            activity,
        }
    }

    /// Asks one connection with no request in progress to close: one that never sent a request
    /// if there is one, else the oldest idle one. `false` if every connection is busy.
    pub fn evict_idle(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let candidates = open
            .iter()
            .filter(|(_, a)| a.idle() && !a.evicted.load(Ordering::Relaxed));
        let Some((_, victim)) = candidates.min_by_key(|(id, a)| (a.used(), **id)) else {
            return false;
        };
        victim.evicted.store(true, Ordering::Relaxed);
        victim.evict.notify_one();
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_secs(30);
    const IDLE: Duration = Duration::from_secs(300);

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_expires_at_the_first_request_time() {
        let registry = Arc::new(Registry::default());
        let connection = registry.add();
        let start = Instant::now();
        assert_eq!(
            expiry(&connection.activity, FIRST, IDLE).await,
            Expiry::FirstRequest
        );
        assert_eq!(start.elapsed(), FIRST);
    }

    /// How long a connection stays open after its one request (in progress for twice the idle
    /// time, which keeps it open) ends; `http1`: the request is an HTTP/1 one.
    async fn open_after_a_request(http1: bool, streamed: bool) -> Duration {
        let registry = Arc::new(Registry::default());
        let connection = registry.add();
        let activity = connection.activity.clone();
        let request = if http1 {
            activity.begin_http1()
        } else {
            activity.begin()
        };
        let sending = streamed.then(|| activity.sending());
        let clock = tokio::spawn(async move { expiry(&activity, FIRST, IDLE).await });
        tokio::time::sleep(IDLE * 2).await;
        assert!(!clock.is_finished(), "a request in progress keeps it");
        let done = Instant::now();
        drop(request);
        let _sending = sending;
        assert_eq!(clock.await.unwrap(), Expiry::Idle);
        done.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_within_a_quarter_past_the_idle_time() {
        let quiet = open_after_a_request(false, false).await;
        assert!(
            quiet >= IDLE && quiet <= IDLE + IDLE / 4 + MIN_TICK,
            "{quiet:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn between_http1_requests_the_header_timeout_applies() {
        let quiet = open_after_a_request(true, false).await;
        assert!(
            quiet >= FIRST && quiet <= FIRST + FIRST / 4 + MIN_TICK,
            "{quiet:?}"
        );
        // While a streamed reply is sent, only the idle time bounds it (the reply's sender is
        // never dropped in this test: it is idle to the clock all the same).
        let quiet = open_after_a_request(true, true).await;
        assert!(
            quiet >= IDLE && quiet <= IDLE + IDLE / 4 + MIN_TICK,
            "{quiet:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_keep_a_connection_open() {
        let registry = Arc::new(Registry::default());
        let connection = registry.add();
        let activity = connection.activity.clone();
        let clock = tokio::spawn(async move { expiry(&activity, FIRST, IDLE).await });
        for _ in 0..10 {
            drop(connection.activity.begin());
            tokio::time::sleep(IDLE / 2).await;
            assert!(!clock.is_finished());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_prefers_unused_then_oldest_idle_connections_and_spares_busy_ones() {
        let registry = Arc::new(Registry::default());
        let busy = registry.add();
        let _request = busy.activity.begin();
        let used = registry.add();
        drop(used.activity.begin());
        let newer_used = registry.add();
        drop(newer_used.activity.begin());
        let silent = registry.add();
        let evicted = |r: &Registered| r.activity.evicted.load(Ordering::Relaxed);

        assert!(registry.evict_idle());
        assert!(evicted(&silent) && !evicted(&used) && !evicted(&busy));
        assert_eq!(expiry(&silent.activity, FIRST, IDLE).await, Expiry::Evicted);
        assert!(registry.evict_idle());
        assert!(evicted(&used) && !evicted(&newer_used));
        assert!(registry.evict_idle());
        assert!(evicted(&newer_used));
        assert!(!registry.evict_idle(), "only the busy one is left");

        assert_eq!(registry.len(), 4);
        drop(silent);
        assert_eq!(registry.len(), 3);
    }
}
