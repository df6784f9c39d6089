//! serval's inference server: `serval serve`. It serves one serving service on clearml-serving's
//! REST contract (`/serve/{endpoint}[/{version}]`) and the Open Inference Protocol (V2) over REST
//! and gRPC. Every request of every protocol goes through one front door ([`pipeline`]): the
//! adapters only translate. It routes through an immutable routing table that is rebuilt next to
//! the running one and swapped atomically when the store's revision changes, and reports its
//! state (instance status in the store, `/health/*`).
//!
//! Only this crate knows HTTP and gRPC. Requests never lock: they load the current table, clone
//! the endpoint's `Arc`, and run the model; an old engine is dropped when its last request
//! finishes.
//!
//! Modules are layered and import only from layers below their own (`tests/layers.rs` reads the
//! `use crate::` lines and fails otherwise), top to bottom: `http`, `grpc`, `sync`,
//! `triton_repo` → `conn` → `state` → `calls` → `loader` → `pipeline` → `models` → `auth` →
//! `table` → `endpoint` → `wire` → `metrics` → `offload`, `memory` → `error` → `store_health`,
//! `config`, `deadline`.

mod auth;
mod calls;
pub mod config;
mod conn;
mod deadline;
mod endpoint;
pub mod error;
pub mod grpc;
pub mod http;
mod loader;
pub mod memory;
pub mod metrics;
mod models;
mod offload;
pub mod pipeline;
mod rollout;
pub mod state;
mod store_health;
mod sync;
mod table;
pub mod triton_repo;
pub mod wire;

use std::sync::Arc;

use serval_store::Store;
use tokio::sync::watch;

pub use config::{Instance, Listening, ServeConfig};
pub use http::router;
pub use loader::Loader;
pub use state::AppState;
pub use table::RoutingTable;

/// SIGTERM and SIGINT, listened for from the first line of [`run`]: a signal that arrives while
/// the server comes up (the first load pass, the heartbeat after it) is kept and acted on, never
/// left to the default action that would kill the process without draining.
struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn listen() -> Result<Self, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen =
                |kind, name| signal(kind).map_err(|e| format!("cannot listen for {name}: {e}"));
            Ok(Self {
                terminate: listen(SignalKind::terminate(), "SIGTERM")?,
                interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {},
            _ = self.interrupt.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Samples the console's live statistics until the server stops.
async fn sample_live(metrics: Arc<metrics::Metrics>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(metrics::live::SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => metrics.live.tick(serval_store::now_ms()),
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

async fn bind(host: &str, port: u16, what: &str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind((host, port))
        .await
        .map_err(|e| format!("cannot listen on {host}:{port}{what}: {e}"))
}

/// Runs the server until SIGTERM/SIGINT. `on_listening` is called with the bound addresses before
/// the first load pass (ports may be 0 = any).
pub async fn run(
    config: ServeConfig,
    store: Arc<dyn Store>,
    on_listening: impl FnOnce(Listening),
) -> Result<(), String> {
    let mut signals = StopSignals::listen()?;
    let listener = bind(&config.host, config.port, "").await?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let grpc_listener = match config.grpc_port {
        Some(port) => Some(bind(&config.host, port, " for gRPC").await?),
        None => None,
    };
    let grpc_addr = match &grpc_listener {
        Some(l) => Some(l.local_addr().map_err(|e| e.to_string())?),
        None => None,
    };
    let metrics_listener = match config.metrics_port {
        Some(port) => Some(bind(&config.host, port, " for metrics").await?),
        None => None,
    };
    let instance = Instance {
        id: serval_store::new_id(),
        host: config.host.clone(),
        port: addr.port(),
        grpc_port: grpc_addr.map(|a| a.port()),
        started_ms: serval_store::now_ms(),
    };
    let shutdown_timeout = config.shutdown_timeout;
    let config_tls = config.tls.is_some();
    let state = AppState::new(config, store, instance);
    crate::pipeline::shadow::start(&state.door);
    state.door.payloads.configure(
        state.config.cache_dir.join("payload-spool"),
        &state.instance.id,
    );
    on_listening(Listening {
        http: addr,
        grpc: grpc_addr,
        tls: config_tls,
    });

    // Serve right away (liveness, readiness 503) while the first load pass runs.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (phase_tx, phase_rx) = watch::channel(conn::Phase::Serving);
    let limits = conn::Limits {
        max_connections: state.config.max_connections,
        header_read_timeout: state.config.header_read_timeout,
        idle_timeout: state.config.idle_timeout,
        draining: state.draining.clone(),
    };
    if let Some(limit) = conn::raise_fd_limit() {
        tracing::debug!("open files limit: {limit}");
    }
    let tls = match &state.config.tls {
        Some((cert, key)) => Some(conn::tls_acceptor(cert, key)?),
        None => None,
    };
    let mut listeners_closed = Vec::new();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    listeners_closed.push(closed_rx);
    let server = tokio::spawn(conn::serve(
        listener,
        router(state.clone()),
        limits.clone(),
        phase_rx.clone(),
        closed_tx,
        tls.clone(),
    ));
    let grpc_server = match grpc_listener {
        Some(listener) => {
            let (app, report) = grpc::app(state.clone()).await;
            tokio::spawn(report);
            let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
            listeners_closed.push(closed_rx);
            Some(tokio::spawn(conn::serve(
                listener,
                app,
                limits.clone(),
                phase_rx.clone(),
                closed_tx,
                tls.clone(),
            )))
        }
        None => None,
    };
    // The metrics port has the same connection clocks and cap (plain HTTP, as before); it stops
    // accepting with the others.
    let metrics_server = metrics_listener.map(|listener| {
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        listeners_closed.push(closed_rx);
        tokio::spawn(conn::serve(
            listener,
            http::metrics_router(state.clone()),
            limits,
            phase_rx.clone(),
            closed_tx,
            None,
        ))
    });

    sync::heartbeat(&state).await;
    let first_pass = tokio::select! {
        first_pass = state.sync() => first_pass,
        () = signals.recv() => {
            // Nothing is served yet: stop at once (the load pass, on a blocking thread, is left
            // to the process's exit).
            tracing::info!("stopping before the first load pass finished");
            let _ = stop_tx.send(true);
            let _ = phase_tx.send(conn::Phase::Closing);
            return Ok(());
        }
    };
    match first_pass {
        Ok(revision) => tracing::info!(revision, "ready: first load pass finished"),
        Err(e) => {
            let _ = stop_tx.send(true);
            let _ = phase_tx.send(conn::Phase::Closing);
            return Err(format!("cannot read the serving service: {e}"));
        }
    }
    sync::heartbeat(&state).await;
    if let (true, Some(metrics)) = (state.config.ui, state.metrics.clone()) {
        tokio::spawn(sample_live(metrics, stop_rx.clone()));
    }
    tokio::spawn(offload::give_back_after_large_work(stop_rx.clone()));
    tokio::spawn(rollout::run(state.clone(), stop_rx.clone()));
    let sync_task = tokio::spawn(sync::run(state.clone(), state.loader(), stop_rx));

    signals.recv().await;
    let started = std::time::Instant::now();
    let drain_delay = state.config.drain_delay.min(shutdown_timeout);
    tracing::info!(
        "shutting down: readiness 503, no new connections, answering with 'Connection: close' for {} s, then draining (up to {} s in all)",
        drain_delay.as_secs_f64(),
        shutdown_timeout.as_secs()
    );
    // First no new connections (so a client told to leave cannot come back to a listener about
    // to close), then every response says `Connection: close`.
    state.ready.send_replace(false);
    let _ = phase_tx.send(conn::Phase::Draining);
    for closed in listeners_closed {
        let _ = closed.await;
    }
    state
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(drain_delay).await;
    let _ = phase_tx.send(conn::Phase::Closing);
    let _ = stop_tx.send(true);
    let drain = async {
        let _ = server.await;
        if let Some(grpc) = grpc_server {
            let _ = grpc.await;
        }
        if let Some(metrics) = metrics_server {
            let _ = metrics.await;
        }
    };
    let left = shutdown_timeout.saturating_sub(started.elapsed());
    if tokio::time::timeout(left, drain).await.is_err() {
        tracing::warn!(
            "in-flight requests did not finish within {} s",
            shutdown_timeout.as_secs()
        );
    }
    let _ = sync_task.await;
    // Every record accepted is written before the process ends; uploads get what is left of
    // the shutdown budget (at least a few seconds), then wait in the spool for the next start.
    let door = state.door.clone();
    let deadline = std::time::Instant::now()
        + shutdown_timeout
            .saturating_sub(started.elapsed())
            .max(std::time::Duration::from_secs(5));
    let _ = tokio::task::spawn_blocking(move || door.payloads.close(deadline)).await;
    let store = state.store.clone();
    let id = state.instance.id.clone();
    let _ = tokio::task::spawn_blocking(move || store.remove_instance(&id)).await;
    Ok(())
}
