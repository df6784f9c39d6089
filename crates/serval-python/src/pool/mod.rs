//! A pool of worker processes for one endpoint: the requests' side — start the pool, pick the
//! least busy live worker, send a request and take its answer ([`exchange`]) — and the workers'
//! side — start, handshake, read, supervise, restart ([`worker`]).

mod exchange;
mod worker;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

pub use self::exchange::Continuation;
use self::exchange::{CALLER, Conn, Failed, exchange, outcome};
use self::worker::{start_worker, supervise};
use crate::frame::{self, Frame, FromWorker};

/// How many requests one `custom_async` worker takes at once.
const ASYNC_CONCURRENCY: usize = 32;
/// Requests sent ahead to a sync worker: it runs them one at a time, but the next one is already
/// in its pipe when it finishes, so the round trip to the server is not on the critical path.
const SYNC_PIPELINE: usize = 2;
/// A worker that stayed up this long (or answered a request) restarts without delay when it dies.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Lines of a worker's stderr kept to explain a failed start.
const STDERR_TAIL: usize = 20;

/// Identifies a pool (to recognise a worker calling its own endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolId(u64);

/// What a pool runs.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    /// The endpoint url, for logs and errors.
    pub label: String,
    /// The interpreter to start.
    pub python: String,
    /// Number of worker processes.
    pub size: usize,
    /// The folder holding the `serval_worker` package (see [`crate::install_package`]).
    pub package_dir: PathBuf,
    /// The `load` message: engine, code, model path, endpoint description.
    pub load: Value,
    /// `custom_async`: a worker takes many requests at once.
    pub concurrent: bool,
    /// How long starting a worker and loading the code and model may take.
    pub load_timeout: Duration,
}

/// Calls from user code back into the server (`send_request`).
pub type CallFuture = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;

pub trait Calls: Send + Sync + 'static {
    /// Serves `data` on `endpoint` (`version` optional) for a worker of pool `caller`, within
    /// the calling request's deadline.
    fn call(
        &self,
        caller: PoolId,
        endpoint: String,
        version: Option<String>,
        data: Value,
        deadline: Instant,
    ) -> CallFuture;
}

/// A request body as the worker sees it: parsed JSON (`dict`, `list`, ... or `None`) or `bytes`.
#[derive(Debug, Clone)]
pub enum Body {
    Json(Value),
    Bytes(Vec<u8>),
}

/// A finished request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The reply (JSON of what `postprocess` returned).
    pub value: Value,
    /// Seconds spent in each stage the worker ran (`preprocess`, `process`, `postprocess`).
    pub timings: Map<String, Value>,
    /// What `collect_custom_statistics_fn` collected (sampled requests only).
    pub stats: Option<Map<String, Value>>,
    /// `python` (the worker ran the model), `native` (the server did) or `library` (the model's
    /// library in Python, because preprocess returned something only it understands).
    pub path: String,
    /// Time spent waiting for a worker.
    pub queue: Duration,
}

/// The result of sending a request to a worker.
pub enum Step {
    Done(Outcome),
    /// `preprocess` returned array-like data for a model the server runs natively: run it, then
    /// hand the outputs back with [`Continuation::post`].
    Pre {
        data: Value,
        blobs: Vec<Vec<u8>>,
        next: Continuation,
    },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PyError {
    /// User code raised: `invalid` for `ValueError` (clearml → 422); `library` when it was the
    /// model's library, run in the worker, that raised (see `Outcome::path`).
    #[error("{class}: {message}")]
    User {
        class: String,
        message: String,
        invalid: bool,
        library: bool,
    },
    #[error("{0}")]
    WorkerExited(String),
    #[error("the Python worker did not answer in time")]
    Timeout,
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Protocol(String),
}

/// Why a worker pool (or one of its workers) did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The interpreter could not be run.
    #[error("cannot start Python '{python}': {source}")]
    Spawn {
        python: String,
        source: std::io::Error,
    },
    /// The worker did not answer its load message in time.
    #[error("the Python worker did not load within {0} s")]
    Timeout(f64),
    /// The worker ended, or its channel broke, while loading (with the last lines it wrote).
    #[error("{0}")]
    Died(String),
    /// The worker reported that the endpoint's code or model failed to load (its text).
    #[error("{0}")]
    Load(String),
    /// The worker said something the protocol does not allow while loading.
    #[error("{0}")]
    Protocol(String),
}

impl StartError {
    /// Whether starting again may succeed with nothing changed (a process that could not be
    /// run, a worker that died or took too long); code or a model that failed to load, or a
    /// broken protocol, fail the same way until something changes.
    pub fn may_pass(&self) -> bool {
        matches!(
            self,
            StartError::Spawn { .. } | StartError::Timeout(_) | StartError::Died(_)
        )
    }
}

/// What the status shows about a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    pub workers: usize,
    pub alive: usize,
    pub restarts: u64,
    pub last_exit: Option<String>,
}

struct Shared {
    id: PoolId,
    spec: PoolSpec,
    calls: Arc<dyn Calls>,
    permits: Arc<Semaphore>,
    capacity: usize,
    slots: Vec<Mutex<Option<Arc<Conn>>>>,
    changed: Notify,
    restarts: AtomicU64,
    last_exit: Mutex<Option<String>>,
    next_id: AtomicU64,
    custom_model: AtomicBool,
    /// What the worker said the server may run natively (a plain scikit-learn linear model).
    native_model: Mutex<Option<Value>>,
}

/// A pool of workers for one endpoint. Dropping it stops (kills) its workers.
pub struct Pool {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

static NEXT_POOL: AtomicU64 = AtomicU64::new(1);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pool {
    /// Starts `spec.size` workers and waits until each has loaded the endpoint's code and model;
    /// the first failure is the endpoint's load error.
    pub async fn start(spec: PoolSpec, calls: Arc<dyn Calls>) -> Result<Pool, StartError> {
        let size = spec.size.max(1);
        let capacity = size
            * if spec.concurrent {
                ASYNC_CONCURRENCY
            } else {
                SYNC_PIPELINE
            };
        let shared = Arc::new(Shared {
            id: PoolId(NEXT_POOL.fetch_add(1, Ordering::Relaxed)),
            spec,
            calls,
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            slots: (0..size).map(|_| Mutex::new(None)).collect(),
            changed: Notify::new(),
            restarts: AtomicU64::new(0),
            last_exit: Mutex::new(None),
            next_id: AtomicU64::new(1),
            custom_model: AtomicBool::new(false),
            native_model: Mutex::new(None),
        });
        let (stop, stop_rx) = watch::channel(false);
        let starts: Vec<_> = (0..size)
            .map(|slot| {
                let shared = shared.clone();
                tokio::spawn(async move { start_worker(&shared, slot).await })
            })
            .collect();
        let mut workers = Vec::with_capacity(size);
        let mut error = None;
        for start in starts {
            match start.await {
                Ok(Ok(worker)) => workers.push(worker),
                Ok(Err(e)) => error = error.or(Some(e)),
                Err(e) => {
                    let died = StartError::Died(format!("starting a worker failed: {e}"));
                    error = error.or(Some(died));
                }
            }
        }
        if let Some(error) = error {
            // Dropping the children kills them (kill_on_drop).
            return Err(error);
        }
        for (index, worker) in workers.into_iter().enumerate() {
            *lock(&shared.slots[index]) = Some(worker.conn.clone());
            tokio::spawn(supervise(shared.clone(), index, worker, stop_rx.clone()));
        }
        Ok(Pool { shared, stop })
    }

    pub fn id(&self) -> PoolId {
        self.shared.id
    }

    /// Whether `Preprocess.load` returned the model (then the worker runs it, not the server).
    /// The parameters of a model the server can run itself, as the worker described it when it
    /// loaded (`native_linear` in `main.py`).
    pub fn native_model(&self) -> Option<Value> {
        lock(&self.shared.native_model).clone()
    }

    pub fn custom_model(&self) -> bool {
        self.shared.custom_model.load(Ordering::Relaxed)
    }

    /// Total requests the pool takes at once.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    pub fn status(&self) -> PoolStatus {
        PoolStatus {
            workers: self.shared.slots.len(),
            alive: self
                .shared
                .slots
                .iter()
                .filter(|s| lock(s).is_some())
                .count(),
            restarts: self.shared.restarts.load(Ordering::Relaxed),
            last_exit: lock(&self.shared.last_exit).clone(),
        }
    }

    /// Sends a request: `state` starts the request's `state` dict (`None`: empty); `native` asks
    /// the worker to stop after `preprocess` when it returns array-like data (see [`Step::Pre`]).
    /// A worker that has not answered by `deadline` is killed.
    pub async fn infer(
        &self,
        body: Body,
        state: Option<Map<String, Value>>,
        native: bool,
        sampled: bool,
        deadline: Instant,
    ) -> Result<Step, PyError> {
        let shared = &self.shared;
        let start = Instant::now();
        let permit = tokio::time::timeout_at(deadline, shared.permits.clone().acquire_owned())
            .await
            .map_err(|_| PyError::Timeout)?
            .map_err(|_| PyError::Unavailable("the worker pool is closed".into()))?;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = Frame::new(json!({
            "op": "infer", "id": id, "native": native, "sampled": sampled,
        }));
        request.header["body"] = match body {
            Body::Json(value) => value,
            Body::Bytes(bytes) => frame::bytes_marker(&bytes, &mut request.blobs),
        };
        if let Some(state) = state {
            request.header["state"] = Value::Object(state);
        }
        // A worker that died before the request reached it has run none of it: the request goes
        // to another worker (or waits for the restart) instead of failing with the dead one.
        let (conn, queue, reply) = loop {
            let conn = self.connection(deadline).await?;
            let queue = start.elapsed();
            match exchange(shared, &conn, id, &request, deadline).await {
                Ok(reply) => break (conn, queue, reply),
                Err(Failed::Unsent) => continue,
                Err(Failed::Py(error)) => return Err(error),
            }
        };
        if let FromWorker::Pre { data, blobs, .. } = reply {
            return Ok(Step::Pre {
                data,
                blobs,
                next: Continuation {
                    shared: shared.clone(),
                    conn,
                    id,
                    deadline,
                    queue,
                    done: false,
                    _permit: permit,
                },
            });
        }
        drop(permit);
        outcome(reply, queue).map(Step::Done)
    }

    /// A live worker with the fewest requests in flight, waiting (until `deadline`) while all
    /// are restarting.
    async fn connection(&self, deadline: Instant) -> Result<Arc<Conn>, PyError> {
        let shared = &self.shared;
        // A sync worker calling its own endpoint waits for the answer: never queue the call
        // behind it.
        let avoid = CALLER
            .try_with(|caller| *caller)
            .ok()
            .filter(|(pool, _)| *pool == shared.id && !shared.spec.concurrent)
            .map(|(_, slot)| slot);
        if avoid.is_some() && shared.slots.len() == 1 {
            return Err(PyError::Unavailable(format!(
                "'{}' called itself from its only Python worker, which is busy waiting for the \
                 answer; start the server with more --python-workers",
                shared.spec.label
            )));
        }
        loop {
            let changed = shared.changed.notified();
            let best = shared
                .slots
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != avoid)
                .filter_map(|(_, s)| lock(s).clone())
                .filter(|c| !c.dying.load(Ordering::Relaxed))
                .min_by_key(|c| c.inflight.load(Ordering::Relaxed));
            if let Some(conn) = best {
                return Ok(conn);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(PyError::Unavailable(format!(
                    "the Python workers of endpoint '{}' are restarting (last exit: {})",
                    shared.spec.label,
                    lock(&shared.last_exit).as_deref().unwrap_or("unknown")
                )));
            }
        }
    }
}
