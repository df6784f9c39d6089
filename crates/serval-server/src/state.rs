//! The server's shared state: one `Arc`, so that what the router clones for every request is a
//! single reference count. Everything a handler needs is reached through it — the front door
//! (routing table, admission, keys), the configuration, the store, readiness and health.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serval_store::Store;
use tokio::sync::watch;

use crate::calls::ServerCalls;
use crate::config::{Instance, ServeConfig};
use crate::loader::Loader;
use crate::metrics::Metrics;
use crate::pipeline::{Door, Limits};
use crate::store_health::StoreHealth;

/// The handlers' state: a cheap handle (one reference count) to [`Shared`].
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What every part of the server shares.
pub struct Shared {
    pub config: ServeConfig,
    pub store: Arc<dyn Store>,
    /// The front door: the routing table, the server-wide bound, the keys.
    pub door: Arc<Door>,
    /// The first load pass has finished (a watch, so the gRPC health service can follow it).
    pub ready: watch::Sender<bool>,
    /// Routing tables swapped in after a change.
    pub reloads: AtomicU64,
    /// Set on SIGTERM: responses say `Connection: close`, readiness answers 503.
    pub draining: Arc<AtomicBool>,
    /// Whether the control store answers (the server keeps serving when it does not).
    pub store_health: Arc<StoreHealth>,
    pub instance: Instance,
    /// `None` when metrics are off.
    pub metrics: Option<Arc<Metrics>>,
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(config: ServeConfig, store: Arc<dyn Store>, instance: Instance) -> Self {
        let metrics = config.metrics.then(|| Arc::new(Metrics::default()));
        let limits = Limits {
            max_in_flight: config.max_in_flight,
            body_limit: config.body_limit,
            max_values: config.max_values,
            max_request_memory: config.max_request_memory,
            max_memory_in_flight: config.max_memory_in_flight,
            request_timeout: config.request_timeout,
            require_auth: config.require_auth,
        };
        AppState(Arc::new(Shared {
            door: Arc::new(Door::new(limits, metrics.clone())),
            config,
            store,
            ready: watch::Sender::new(false),
            reloads: AtomicU64::new(0),
            draining: Arc::default(),
            store_health: Arc::default(),
            instance,
            metrics,
        }))
    }

    /// A loader for this state's store and settings.
    pub fn loader(&self) -> Arc<Loader> {
        let config = &self.config;
        Arc::new(Loader {
            store: self.store.clone(),
            cache_dir: config.cache_dir.clone(),
            cache_size: config.cache_size,
            max_in_flight_per_endpoint: config.max_in_flight_per_endpoint,
            onnx: config.onnx.clone(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            calls: Arc::new(ServerCalls {
                door: Arc::downgrade(&self.door),
            }),
            python: config.python.clone(),
            python_workers: config.python_workers,
            runner_threads: config.runner_threads,
            request_timeout: config.request_timeout,
            metrics: self.metrics.clone(),
        })
    }

    /// Whether the first load pass has finished.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Whether the server is draining (SIGTERM).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
