//! The background sync: watch the service revision, rebuild the routing table when it changes
//! (and periodically, to notice model files changed in place), swap it atomically, and heartbeat
//! this instance's status into the store.
//!
//! Changes arrive two ways: a poll of the revision every `poll_interval`, and — where the store
//! pushes them (PostgreSQL `LISTEN/NOTIFY`) — a feed thread that wakes the loop at once. If the
//! store cannot be reached the server keeps serving its last routing table, reports the outage
//! ([`StoreHealth`]: logs, `/health/ready`, `serval_store_up`), backs off, and catches up with
//! every change made meanwhile when the store is back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serval_store::{InstanceStatus, PythonStatus, Store, StoreError, now_ms};
use tokio::sync::{Notify, watch};

use crate::loader::Loader;
use crate::state::AppState;
use crate::store_health::StoreHealth;

/// How often model files are re-checked even if the revision did not change.
const FILE_CHECK_EVERY: Duration = Duration::from_secs(5);
/// How often the instance status is written.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// Longest wait between store retries during an outage.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The poll interval while the change feed is connected (a lost feed is noticed within
/// `FEED_WAIT`, and polling returns to `poll_interval`).
const POLL_WITH_FEED: Duration = Duration::from_secs(2);
/// How long the feed thread waits for a notification before checking for shutdown.
const FEED_WAIT: Duration = Duration::from_secs(1);

/// Runs on its own thread while the store pushes changes: wakes the sync loop for every change
/// to `service_id`, reconnecting with backoff when the feed breaks.
fn follow_changes(
    store: Arc<dyn Store>,
    service_id: String,
    wake: Arc<Notify>,
    health: Arc<StoreHealth>,
    stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(250);
    while !*stop.borrow() {
        let mut feed = match store.changes() {
            Ok(Some(feed)) => feed,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("change feed: {e}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        health.feed_connected.store(true, Ordering::Relaxed);
        // A change may have happened while the feed was down: look once.
        wake.notify_one();
        backoff = Duration::from_millis(250);
        while !*stop.borrow() {
            match feed.wait(FEED_WAIT) {
                Ok(ids) if ids.contains(&service_id) => wake.notify_one(),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("change feed broke: {e}");
                    break;
                }
            }
        }
        health.feed_connected.store(false, Ordering::Relaxed);
        // Back to polling at the normal pace at once.
        wake.notify_one();
    }
}

/// Why a load pass did not swap in a new table (the current one keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The store did not answer (an outage feeds [`StoreHealth`]) or refused the read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The load pass itself did not finish (a bug).
    #[error("the load pass did not finish: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl AppState {
    /// Loads the current configuration and swaps it in (the first pass marks the server ready).
    pub async fn sync(&self) -> Result<u64, SyncError> {
        let revision = sync_once(self, &self.loader()).await?;
        self.ready.send_replace(true);
        Ok(revision)
    }
}

/// One load pass: snapshot, build, swap. Returns the revision now served.
pub async fn sync_once(state: &AppState, loader: &Arc<Loader>) -> Result<u64, SyncError> {
    let store = state.store.clone();
    let id = state.config.service_id.clone();
    let previous = state.door.table_full();
    let loader = loader.clone();
    let table = tokio::task::spawn_blocking(move || {
        let snapshot = store.snapshot(&id)?;
        Ok::<_, SyncError>(loader.build(&snapshot, &previous))
    })
    .await??;
    let mut table = table;
    table.logs = state.door.payloads.routes(&table);
    table.drifts = state
        .door
        .drifts
        .routes(&table)
        .into_iter()
        .map(|(url, drift)| (url, drift as Arc<dyn crate::endpoint::Observer>))
        .collect();
    let revision = table.revision;
    state.door.swap(Arc::new(table));
    Ok(revision)
}

fn instance_status(state: &AppState) -> InstanceStatus {
    let table = state.door.table();
    InstanceStatus {
        id: state.instance.id.clone(),
        service_id: state.config.service_id.clone(),
        host: state.instance.host.clone(),
        port: state.instance.port,
        grpc_port: state.instance.grpc_port,
        pid: std::process::id(),
        started_ms: state.instance.started_ms,
        heartbeat_ms: now_ms(),
        revision: table.revision,
        ready: state.is_ready(),
        endpoints: table
            .slots
            .iter()
            .map(|(url, slot)| {
                let mut status = slot.status.clone();
                if let Some(serving) = &slot.serving
                    && let Some(pool) = serving.runner.pool()
                {
                    let pool = pool.status();
                    status.python = Some(PythonStatus {
                        workers: pool.workers,
                        alive: pool.alive,
                        restarts: pool.restarts,
                        last_exit: pool.last_exit,
                        library_requests: serving.library_requests.load(Ordering::Relaxed),
                    });
                }
                (url.clone(), status)
            })
            .collect(),
    }
}

/// Writes this instance's status and adds its new shadow and drift counts to the fleet's statistics
/// (blocking store calls off the runtime; counts a failed write took are kept for the next).
pub async fn heartbeat(state: &AppState) {
    let status = instance_status(state);
    let store = state.store.clone();
    let now = now_ms();
    let bucket = serval_store::StatsRow::bucket_of(now);
    let rows = state.door.shadows.book.take_pending(bucket);
    // What every endpoint's drift statistics counted since the last heartbeat.
    let (drifts, drift_rows): (Vec<_>, Vec<_>) = state
        .door
        .drifts
        .unsent(bucket)
        .into_iter()
        .map(|(drift, row, next)| ((drift, next), row))
        .unzip();
    // The requests of rollouts' new endpoints (counted on every server, judged by one).
    let watched = crate::rollout::endpoints(state);
    let (endpoint_rows, reported) = match &state.metrics {
        Some(metrics) if !watched.is_empty() => {
            let urls: Vec<&str> = watched.iter().map(String::as_str).collect();
            let (rows, reported) = metrics.live.fleet_rows(&urls, bucket);
            (rows, Some((metrics.clone(), reported)))
        }
        _ => (Vec::new(), None),
    };
    let door = state.door.clone();
    // Each part is written on its own; what fails to be written is counted again next time.
    let result = tokio::task::spawn_blocking(move || {
        let mut result = store.put_instance(&status);
        let mut write = |rows: &[serval_store::StatsRow]| {
            let written = if rows.is_empty() {
                Ok(())
            } else {
                store.add_stats(&status.service_id, &status.id, rows)
            };
            let ok = written.is_ok();
            if let Err(error) = written
                && result.is_ok()
            {
                result = Err(error);
            }
            ok
        };
        if write(&endpoint_rows)
            && let Some((metrics, reported)) = reported
        {
            metrics.live.reported(reported);
        }
        if !write(&rows) {
            door.shadows.book.restore(rows);
        }
        if write(&drift_rows) {
            crate::pipeline::drift::Drifts::sent(drifts);
        }
        result
    })
    .await;
    if let Ok(Err(e)) = result {
        let serving = state.door.table().revision;
        state
            .store_health
            .failed("cannot write instance status", &e, serving);
    }
}

/// Runs until `shutdown` flips to true.
pub async fn run(state: AppState, loader: Arc<Loader>, mut shutdown: watch::Receiver<bool>) {
    let mut last_file_check = Instant::now();
    let mut last_heartbeat = Instant::now();
    let wake = Arc::new(Notify::new());
    if state.config.notify {
        let (store, id, wake, health, stop) = (
            state.store.clone(),
            state.config.service_id.clone(),
            wake.clone(),
            state.store_health.clone(),
            shutdown.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("serval-store-feed".into())
            .spawn(move || follow_changes(store, id, wake, health, stop));
        if let Err(e) = spawned {
            tracing::warn!("cannot start the change feed thread ({e}); polling only");
        }
    }
    let mut delay = state.config.poll_interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wake.notified() => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
        let store = state.store.clone();
        let id = state.config.service_id.clone();
        let revision = match tokio::task::spawn_blocking(move || store.revision(&id)).await {
            Ok(Ok(r)) => {
                state.store_health.answered();
                // While notifications arrive, polling is only the safety net.
                delay = if state.store_health.feed_connected.load(Ordering::Relaxed) {
                    state.config.poll_interval.max(POLL_WITH_FEED)
                } else {
                    state.config.poll_interval
                };
                r
            }
            Ok(Err(e)) => {
                let serving = state.door.table().revision;
                state
                    .store_health
                    .failed("cannot read the service revision", &e, serving);
                if matches!(e, StoreError::Unavailable(_)) {
                    delay = (delay * 2).clamp(state.config.poll_interval, MAX_BACKOFF);
                }
                continue;
            }
            Err(_) => continue,
        };
        let served = state.door.table().revision;
        let file_check = last_file_check.elapsed() >= FILE_CHECK_EVERY;
        if revision != served || file_check {
            last_file_check = Instant::now();
            match sync_once(&state, &loader).await {
                Ok(now) if now != served => {
                    tracing::info!(revision = now, "serving revision {now}");
                    state.reloads.fetch_add(1, Ordering::Relaxed);
                    if let Some(metrics) = &state.metrics {
                        metrics.reloaded();
                    }
                    heartbeat(&state).await;
                    last_heartbeat = Instant::now();
                }
                Ok(_) => {}
                Err(SyncError::Store(e)) => {
                    state
                        .store_health
                        .failed("cannot read the service configuration", &e, served);
                }
                Err(e) => tracing::warn!("sync failed (still serving revision {served}): {e}"),
            }
        }
        if last_heartbeat.elapsed() >= HEARTBEAT_EVERY {
            heartbeat(&state).await;
            last_heartbeat = Instant::now();
        }
    }
}
