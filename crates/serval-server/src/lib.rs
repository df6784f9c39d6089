//! serval's inference server: `serval serve`. It serves one serving service on clearml-serving's
//! REST contract (`/serve/{endpoint}[/{version}]`) and the Open Inference Protocol (V2) over REST
//! and gRPC, through one protocol-neutral [`pipeline`]. It routes through an immutable routing
//! table that is rebuilt next to the running one and swapped atomically when the store's
//! revision changes, and reports its state (instance status in the store, `/health/*`).
//!
//! Only this crate knows HTTP and gRPC. Requests never lock: they load the current table
//! (`ArcSwap`), clone the endpoint's `Arc`, and run the model; an old engine is dropped when its
//! last request finishes.
//!
//! Module dependencies point one way: protocol adapters (`http`, `grpc`, `calls`) → `models` →
//! `table` → `pipeline` → `metrics`; `sync` → `loader` → {`table`, `pipeline`}.

mod auth;
mod calls;
mod conn;
pub mod grpc;
pub mod http;
mod loader;
pub mod metrics;
mod models;
pub mod pipeline;
mod sync;
mod table;
pub mod triton_repo;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use arc_swap::ArcSwap;
use serval_onnx::OnnxOptions;
use serval_store::Store;
use tokio::sync::watch;

pub use http::router;
pub use loader::Loader;
pub use table::RoutingTable;

/// Everything `serval serve` is configured with (built once from flags and env vars).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub service_id: String,
    pub host: String,
    pub port: u16,
    /// The V2 gRPC port (`Some(0)`: any free port; `None`: no gRPC).
    pub grpc_port: Option<u16>,
    /// Largest accepted request body (after decompression too).
    pub body_limit: usize,
    /// Most values (numbers, strings, …) one request may decode into (413 past it).
    pub max_values: usize,
    /// Inference requests in flight in the whole server; more are answered 429 at once.
    pub max_in_flight: usize,
    /// Inference requests in flight per endpoint; more are answered 429.
    pub max_in_flight_per_endpoint: usize,
    pub request_timeout: Duration,
    /// How often the store revision is checked.
    pub poll_interval: Duration,
    /// Also follow the store's change notifications (PostgreSQL `LISTEN/NOTIFY`) for instant
    /// reloads; polling continues either way.
    pub notify: bool,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// Where remote model files are cached.
    pub cache_dir: PathBuf,
    /// Bound of the download cache in bytes (least recently used files no endpoint uses are
    /// evicted); `None`: unbounded.
    pub cache_size: Option<u64>,
    pub onnx: OnnxOptions,
    /// Interpreter for Python workers when the service names none (`None`: `python3`).
    pub python: Option<String>,
    /// Worker processes per endpoint that needs Python.
    pub python_workers: usize,
    /// Threads of a native model's runner: ONNX Runtime sessions per ONNX model, threads per
    /// batched model.
    pub runner_threads: usize,
    /// Record and expose Prometheus metrics (`/metrics`).
    pub metrics: bool,
    /// Also serve `/metrics` on this port.
    pub metrics_port: Option<u16>,
    /// Open connections per listener; more are closed at accept (`serve --max-connections`).
    pub max_connections: usize,
    /// How long a client may take to send request headers; also the keep-alive idle time.
    pub header_read_timeout: Duration,
    /// On SIGTERM: how long to keep answering (each HTTP/1 response with `Connection: close`,
    /// readiness 503) before closing the connections that are left.
    pub drain_delay: Duration,
    /// Serve HTTP and gRPC over TLS with this PEM certificate chain and private key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Require an API key on inference and model routes (`serve --require-auth`).
    pub require_auth: bool,
    /// With `require_auth`: also on `/metrics`.
    pub auth_metrics: bool,
    /// Serve the console at `/ui` and its JSON API at `/api/v1` (`serve --ui on|off`).
    pub ui: bool,
}

/// Who this server instance is (reported in the store).
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub host: String,
    pub port: u16,
    pub grpc_port: Option<u16>,
    pub started_ms: i64,
}

/// Shared state of the handlers: cheap handles only.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ServeConfig>,
    pub store: Arc<dyn Store>,
    pub table: Arc<ArcSwap<RoutingTable>>,
    /// The first load pass has finished (a watch, so the gRPC health service can follow it).
    pub ready: Arc<watch::Sender<bool>>,
    pub reloads: Arc<AtomicU64>,
    /// Set on SIGTERM: responses say `Connection: close`, readiness answers 503.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// The server-wide in-flight bound (admission control).
    pub admission: Arc<tokio::sync::Semaphore>,
    /// Whether the control store answers (the server keeps serving when it does not).
    pub store_health: Arc<sync::StoreHealth>,
    pub instance: Arc<Instance>,
    /// `None` when metrics are off.
    pub metrics: Option<Arc<metrics::Metrics>>,
}

impl AppState {
    pub fn new(config: ServeConfig, store: Arc<dyn Store>, instance: Instance) -> Self {
        let max_in_flight = config.max_in_flight;
        let metrics = config
            .metrics
            .then(|| Arc::new(metrics::Metrics::default()));
        AppState {
            config: Arc::new(config),
            store,
            table: Arc::new(ArcSwap::from_pointee(RoutingTable::default())),
            ready: Arc::new(watch::Sender::new(false)),
            reloads: Arc::new(AtomicU64::new(0)),
            store_health: Arc::default(),
            draining: Arc::default(),
            admission: Arc::new(tokio::sync::Semaphore::new(max_in_flight)),
            instance: Arc::new(instance),
            metrics,
        }
    }

    /// A loader for this state's store and settings.
    pub fn loader(&self) -> Arc<Loader> {
        Arc::new(Loader {
            store: self.store.clone(),
            cache_dir: self.config.cache_dir.clone(),
            cache_size: self.config.cache_size,
            max_in_flight_per_endpoint: self.config.max_in_flight_per_endpoint,
            onnx: self.config.onnx.clone(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            calls: Arc::new(calls::ServerCalls {
                table: Arc::downgrade(&self.table),
            }),
            python: self.config.python.clone(),
            python_workers: self.config.python_workers,
            runner_threads: self.config.runner_threads,
            request_timeout: self.config.request_timeout,
            metrics: self.metrics.clone(),
        })
    }

    /// Loads the current configuration and swaps it in (the first pass marks the server ready).
    pub async fn sync(&self) -> Result<u64, String> {
        let revision = sync::sync_once(self, &self.loader()).await?;
        self.ready.send_replace(true);
        Ok(revision)
    }

    /// Whether the first load pass has finished.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
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

/// The addresses a server listens on.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub http: SocketAddr,
    pub grpc: Option<SocketAddr>,
    /// Both serve TLS.
    pub tls: bool,
}

/// Accepts connections with `TCP_NODELAY`: a small write (a response, an HTTP/2 WINDOW_UPDATE or
/// trailer) goes out at once instead of waiting, behind Nagle's algorithm, for the peer's delayed
/// ACK — 40 ms per 1 MB gRPC request without it.
fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    })
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
        limits,
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
                limits,
                phase_rx.clone(),
                closed_tx,
                tls.clone(),
            )))
        }
        None => None,
    };
    let metrics_server = metrics_listener.map(|listener| {
        let app = http::metrics_router(state.clone());
        let mut metrics_stop = stop_rx.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = metrics_stop.wait_for(|stop| *stop).await;
                })
                .await
                .map_err(|e| e.to_string())
        })
    });

    sync::heartbeat(&state).await;
    match state.sync().await {
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
    let sync_task = tokio::spawn(sync::run(state.clone(), state.loader(), stop_rx));

    shutdown_signal().await;
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
    let store = state.store.clone();
    let id = state.instance.id.clone();
    let _ = tokio::task::spawn_blocking(move || store.remove_instance(&id)).await;
    Ok(())
}
