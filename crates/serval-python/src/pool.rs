//! A pool of worker processes for one endpoint: start, dispatch, restart, kill on timeout.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::frame::{self, Frame};

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
    /// User code raised: `invalid` for `ValueError` (clearml → 422).
    #[error("{class}: {message}")]
    User {
        class: String,
        message: String,
        invalid: bool,
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

/// What the status shows about a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    pub workers: usize,
    pub alive: usize,
    pub restarts: u64,
    pub last_exit: Option<String>,
}

struct Pending {
    reply: oneshot::Sender<Frame>,
    deadline: Instant,
}

/// One running worker process, as requests see it.
struct Conn {
    /// The worker's stdin: frames are written straight from the sending task when the pipe takes
    /// them (the common case: no task hop); what it cannot take at once goes to the writer task.
    stdin: Arc<tokio::sync::Mutex<tokio::process::ChildStdin>>,
    /// Bytes are waiting in the writer task: later frames queue behind them to keep the order.
    backlog: Mutex<bool>,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: Mutex<HashMap<u64, Pending>>,
    kill: Notify,
    /// A kill was requested: no new requests go here.
    dying: AtomicBool,
    /// Why the process ended (set before its pending requests are failed).
    exit: OnceLock<String>,
    inflight: AtomicUsize,
    /// Replies received: a worker that answered restarts without delay when it dies.
    answered: AtomicU64,
    /// Which slot of its pool it fills.
    slot: usize,
}

tokio::task_local! {
    /// Set while serving a `send_request` call: the worker that is waiting for it, which a
    /// sync call must not be queued behind.
    static CALLER: (PoolId, usize);
}

impl Conn {
    fn kill(&self) {
        self.dying.store(true, Ordering::Relaxed);
        self.kill.notify_one();
    }

    fn send(&self, frame: &Frame) -> bool {
        let bytes = frame.encode();
        let mut backlog = lock(&self.backlog);
        let mut rest = bytes.as_slice();
        if !*backlog && let Ok(stdin) = self.stdin.try_lock() {
            // The pipe is non-blocking: a write takes what fits and never waits.
            match nix::unistd::write(&*stdin, rest) {
                Ok(n) if n == rest.len() => return true,
                Ok(n) => rest = &rest[n..],
                Err(nix::errno::Errno::EAGAIN) => {}
                Err(_) => return false,
            }
        }
        *backlog = true;
        self.tx.send(rest.to_vec()).is_ok()
    }

    fn exited(&self, label: &str) -> PyError {
        PyError::WorkerExited(format!(
            "the Python worker of endpoint '{label}' {} while handling this request; it is being restarted",
            self.exit.get().map_or("exited", String::as_str)
        ))
    }
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
    pub async fn start(spec: PoolSpec, calls: Arc<dyn Calls>) -> Result<Pool, String> {
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
                Err(e) => error = error.or(Some(format!("starting a worker failed: {e}"))),
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
        let conn = self.connection(deadline).await?;
        let queue = start.elapsed();
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
        let reply = exchange(shared, &conn, id, &request, deadline).await?;
        if reply.op() == "pre" {
            let Frame { mut header, blobs } = reply;
            return Ok(Step::Pre {
                data: header.get_mut("data").map(Value::take).unwrap_or_default(),
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

/// The second half of a request whose model the server runs.
pub struct Continuation {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    id: u64,
    deadline: Instant,
    queue: Duration,
    done: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Continuation {
    /// Hands the model's outputs (`value` with tensor markers into `blobs`) to `postprocess`.
    pub async fn post(mut self, outputs: Value, blobs: Vec<Vec<u8>>) -> Result<Outcome, PyError> {
        self.done = true;
        let mut request = Frame::new(json!({"op": "post", "id": self.id}));
        request.header["outputs"] = outputs;
        request.blobs = blobs;
        let reply = exchange(&self.shared, &self.conn, self.id, &request, self.deadline).await?;
        outcome(reply, self.queue)
    }
}

impl Drop for Continuation {
    fn drop(&mut self) {
        if !self.done {
            // The server's half failed: let the worker forget the parked state.
            self.conn
                .send(&Frame::new(json!({"op": "drop", "id": self.id})));
        }
    }
}

/// Sends one frame and waits for the reply to `id`. If the wait is abandoned at or after the
/// deadline (here or by the caller's own timeout), the worker is killed: a sync worker stuck in
/// user code can answer nothing else.
async fn exchange(
    shared: &Shared,
    conn: &Arc<Conn>,
    id: u64,
    request: &Frame,
    deadline: Instant,
) -> Result<Frame, PyError> {
    struct Waiting<'a> {
        conn: &'a Conn,
        id: u64,
        deadline: Instant,
        done: bool,
    }
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.conn.inflight.fetch_sub(1, Ordering::Relaxed);
            if !self.done {
                lock(&self.conn.pending).remove(&self.id);
                if Instant::now() + Duration::from_millis(20) >= self.deadline {
                    self.conn.kill();
                }
            }
        }
    }
    let (tx, rx) = oneshot::channel();
    lock(&conn.pending).insert(
        id,
        Pending {
            reply: tx,
            deadline,
        },
    );
    conn.inflight.fetch_add(1, Ordering::Relaxed);
    let mut waiting = Waiting {
        conn,
        id,
        deadline,
        done: false,
    };
    if conn.exit.get().is_some() || !conn.send(request) {
        waiting.done = true;
        lock(&conn.pending).remove(&id);
        return Err(conn.exited(&shared.spec.label));
    }
    let result = tokio::time::timeout_at(deadline, rx).await;
    match result {
        Ok(Ok(frame)) => {
            waiting.done = true;
            Ok(frame)
        }
        Ok(Err(_)) => {
            waiting.done = true;
            Err(conn.exited(&shared.spec.label))
        }
        Err(_) => {
            tracing::warn!(
                endpoint = %shared.spec.label,
                "a request ran past its deadline: killing the Python worker"
            );
            Err(PyError::Timeout)
        }
    }
}

fn outcome(reply: Frame, queue: Duration) -> Result<Outcome, PyError> {
    let Frame { header, .. } = reply;
    let text = |key: &str| {
        header
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match header.get("op").and_then(Value::as_str) {
        Some("result") => Ok(Outcome {
            value: header.get("value").cloned().unwrap_or_default(),
            timings: header
                .get("timings")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            stats: header.get("stats").and_then(Value::as_object).cloned(),
            path: text("path"),
            queue,
        }),
        Some("error") => Err(PyError::User {
            class: text("class"),
            message: text("message"),
            invalid: header
                .get("invalid")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }),
        other => Err(PyError::Protocol(format!(
            "unexpected reply {other:?} from the Python worker"
        ))),
    }
}

/// A started worker: its process and connection.
struct Worker {
    child: Child,
    conn: Arc<Conn>,
    reader: tokio::task::JoinHandle<()>,
    started: Instant,
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                if let Some(signal) = status.signal() {
                    return format!("was killed by signal {signal}");
                }
            }
            match status.code() {
                Some(code) => format!("exited with status {code}"),
                None => "exited".to_string(),
            }
        }
        Err(e) => format!("could not be waited for ({e})"),
    }
}

/// Starts one worker process and waits for it to load the endpoint.
async fn start_worker(shared: &Arc<Shared>, slot: usize) -> Result<Worker, String> {
    let spec = &shared.spec;
    let mut child = Command::new(&spec.python)
        .arg("-u")
        .arg("-c")
        .arg(crate::BOOT)
        .arg(&spec.package_dir)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start Python '{}': {e}", spec.python))?;
    let pid = child.id().unwrap_or_default();
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("the Python worker's pipes are missing".into());
    };

    // stderr → the server log, prefixed by endpoint; the tail explains a failed start.
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    {
        let tail = tail.clone();
        let label = spec.label.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "serval::python", "[{label} pid {pid}] {line}");
                let mut tail = lock(&tail);
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
    }

    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let stdin = Arc::new(tokio::sync::Mutex::new(stdin));
    let conn = Arc::new(Conn {
        stdin: stdin.clone(),
        backlog: Mutex::new(false),
        tx,
        pending: Mutex::new(HashMap::new()),
        kill: Notify::new(),
        dying: AtomicBool::new(false),
        exit: OnceLock::new(),
        inflight: AtomicUsize::new(0),
        answered: AtomicU64::new(0),
        slot,
    });
    // The writer task: bytes the pipe could not take at once, in order.
    {
        let conn = Arc::downgrade(&conn);
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if stdin.lock().await.write_all(&bytes).await.is_err() {
                    break;
                }
                let Some(conn) = conn.upgrade() else { break };
                let mut backlog = lock(&conn.backlog);
                if rx.is_empty() {
                    *backlog = false;
                }
            }
        });
    }
    conn.send(&Frame::new(spec.load.clone()));

    let mut stdout = BufReader::new(stdout);
    let explain = |what: String| {
        let tail = lock(&tail);
        let last: Vec<&str> = tail
            .iter()
            .rev()
            .filter(|l| !l.trim().is_empty())
            .take(3)
            .map(String::as_str)
            .collect();
        if last.is_empty() {
            what
        } else {
            let mut last = last;
            last.reverse();
            format!("{what}: {}", last.join(" | "))
        }
    };
    let loaded = tokio::time::timeout(spec.load_timeout, Frame::read(&mut stdout)).await;
    match loaded {
        Err(_) => {
            return Err(format!(
                "the Python worker did not load within {} s",
                spec.load_timeout.as_secs_f64()
            ));
        }
        Ok(Err(e)) => return Err(explain(format!("the Python worker's channel broke ({e})"))),
        Ok(Ok(None)) => {
            // Give stderr a moment to be read for the explanation.
            let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let how = status.map_or_else(|_| "exited".to_string(), describe);
            return Err(explain(format!(
                "the Python worker ({}) {how} while loading",
                spec.python
            )));
        }
        Ok(Ok(Some(frame))) if frame.op() == "loaded" => {
            let custom = frame
                .header
                .get("custom_model")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            shared.custom_model.store(custom, Ordering::Relaxed);
            *lock(&shared.native_model) = frame.header.get("native_model").cloned();
        }
        Ok(Ok(Some(frame))) if frame.op() == "load_error" => {
            return Err(frame
                .header
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("loading failed")
                .to_string());
        }
        Ok(Ok(Some(frame))) => {
            return Err(format!(
                "unexpected message {:?} from the Python worker while loading",
                frame.op()
            ));
        }
    }
    let reader = tokio::spawn(read_loop(shared.clone(), conn.clone(), stdout));
    Ok(Worker {
        child,
        conn,
        reader,
        started: Instant::now(),
    })
}

/// Routes replies to waiting requests and serves `send_request` calls.
async fn read_loop(shared: Arc<Shared>, conn: Arc<Conn>, mut stdout: BufReader<ChildStdout>) {
    loop {
        let frame = match Frame::read(&mut stdout).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(endpoint = %shared.spec.label, "Python worker channel error: {e}");
                conn.kill();
                break;
            }
        };
        match frame.op() {
            "call" => {
                let call = frame.header.get("call").cloned().unwrap_or_default();
                let deadline = frame
                    .id()
                    .and_then(|id| lock(&conn.pending).get(&id).map(|p| p.deadline))
                    .unwrap_or_else(|| Instant::now() + shared.spec.load_timeout);
                let text = |k: &str| {
                    frame
                        .header
                        .get(k)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                let endpoint = text("endpoint").unwrap_or_default();
                let version = text("version");
                let data = frame.header.get("data").cloned().unwrap_or_default();
                let future =
                    shared
                        .calls
                        .call(shared.id, endpoint.clone(), version, data, deadline);
                let conn = conn.clone();
                let caller = (shared.id, conn.slot);
                tokio::spawn(CALLER.scope(caller, async move {
                    let result = tokio::time::timeout_at(deadline, future)
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!("'{endpoint}' did not answer before the deadline"))
                        });
                    let reply = match result {
                        Ok(value) => {
                            json!({"op": "call_result", "call": call, "ok": true, "value": value})
                        }
                        Err(error) => {
                            json!({"op": "call_result", "call": call, "ok": false, "error": error})
                        }
                    };
                    conn.send(&Frame::new(reply));
                }));
            }
            _ => {
                conn.answered.fetch_add(1, Ordering::Relaxed);
                let waiting = frame.id().and_then(|id| lock(&conn.pending).remove(&id));
                if let Some(pending) = waiting {
                    let _ = pending.reply.send(frame);
                }
            }
        }
    }
}

/// Watches one worker slot: when the process ends (or must be killed), fails its requests,
/// restarts it with backoff, and stops everything when the pool is dropped.
async fn supervise(
    shared: Arc<Shared>,
    index: usize,
    mut worker: Worker,
    mut stop: watch::Receiver<bool>,
) {
    let label = shared.spec.label.clone();
    let mut backoff = Duration::ZERO;
    loop {
        let status = tokio::select! {
            status = worker.child.wait() => status,
            _ = worker.conn.kill.notified() => {
                let _ = worker.child.start_kill();
                worker.child.wait().await
            }
            _ = stopped(&mut stop) => {
                let _ = worker.child.start_kill();
                let _ = worker.child.wait().await;
                *lock(&shared.slots[index]) = None;
                return;
            }
        };
        let reason = describe(status);
        // Replies already written are still delivered before the rest fail.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut worker.reader).await;
        worker.reader.abort();
        let _ = worker.conn.exit.set(reason.clone());
        *lock(&shared.slots[index]) = None;
        lock(&worker.conn.pending).clear();
        shared.restarts.fetch_add(1, Ordering::Relaxed);
        *lock(&shared.last_exit) = Some(format!("worker {reason}"));
        // Back off only when workers die without doing any work (a crash loop at start).
        if worker.started.elapsed() >= HEALTHY_AFTER
            || worker.conn.answered.load(Ordering::Relaxed) > 0
        {
            backoff = Duration::ZERO;
        }
        tracing::warn!(endpoint = %label, "Python worker {reason}; restarting in {} ms", backoff.as_millis());
        worker = loop {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped(&mut stop) => return,
            }
            backoff = (backoff * 2).clamp(Duration::from_millis(250), MAX_BACKOFF);
            match start_worker(&shared, index).await {
                Ok(worker) => break worker,
                Err(e) => {
                    tracing::warn!(endpoint = %label, "Python worker restart failed: {e}");
                    *lock(&shared.last_exit) = Some(e);
                }
            }
        };
        if *stop.borrow() {
            return;
        }
        *lock(&shared.slots[index]) = Some(worker.conn.clone());
        shared.changed.notify_waiters();
        tracing::info!(endpoint = %label, "Python worker restarted");
    }
}

/// Resolves when the pool is dropped.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
