//! The background sync: watch the service revision, rebuild the routing table when it changes
//! (and periodically, to notice model files changed in place), swap it atomically, and heartbeat
//! this instance's status into the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serval_store::{InstanceStatus, PythonStatus, now_ms};
use tokio::sync::watch;

use crate::AppState;
use crate::loader::Loader;

/// How often model files are re-checked even if the revision did not change.
const FILE_CHECK_EVERY: Duration = Duration::from_secs(5);
/// How often the instance status is written.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// One load pass: snapshot, build, swap. Returns the revision now served.
pub async fn sync_once(state: &AppState, loader: &Arc<Loader>) -> Result<u64, String> {
    let store = state.store.clone();
    let id = state.config.service_id.clone();
    let previous = state.table.load_full();
    let loader = loader.clone();
    let table = tokio::task::spawn_blocking(move || {
        let snapshot = store.snapshot(&id).map_err(|e| e.to_string())?;
        Ok::<_, String>(loader.build(&snapshot, &previous))
    })
    .await
    .map_err(|e| format!("sync task failed: {e}"))??;
    let revision = table.revision;
    state.table.store(Arc::new(table));
    Ok(revision)
}

fn instance_status(state: &AppState) -> InstanceStatus {
    let table = state.table.load();
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

/// Writes this instance's status (blocking store call off the runtime).
pub async fn heartbeat(state: &AppState) {
    let status = instance_status(state);
    let store = state.store.clone();
    let result = tokio::task::spawn_blocking(move || store.put_instance(&status)).await;
    if let Ok(Err(e)) = result {
        tracing::warn!("cannot write instance status: {e}");
    }
}

/// Runs until `shutdown` flips to true.
pub async fn run(state: AppState, loader: Arc<Loader>, mut shutdown: watch::Receiver<bool>) {
    let mut last_file_check = Instant::now();
    let mut last_heartbeat = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(state.config.poll_interval) => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
        let store = state.store.clone();
        let id = state.config.service_id.clone();
        let revision = match tokio::task::spawn_blocking(move || store.revision(&id)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!("cannot read the service revision: {e}");
                continue;
            }
            Err(_) => continue,
        };
        let served = state.table.load().revision;
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
                Err(e) => tracing::warn!("sync failed: {e}"),
            }
        }
        if last_heartbeat.elapsed() >= HEARTBEAT_EVERY {
            heartbeat(&state).await;
            last_heartbeat = Instant::now();
        }
    }
}
