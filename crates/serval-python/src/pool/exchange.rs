//! A request's way to a worker and back: the worker's connection (frames written straight into
//! its pipe), the map of requests waiting for an answer, and the exchange that kills a worker
//! which does not answer by the request's deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::{Outcome, PoolId, PyError, Shared, lock};
use crate::frame::{Frame, FromWorker};

/// Why an exchange failed.
pub(super) enum Failed {
    /// The worker had died before the request could be written to it: nothing of it ran, so it
    /// may go to another worker (the connection is marked dying).
    Unsent,
    Py(PyError),
}

impl From<PyError> for Failed {
    fn from(error: PyError) -> Failed {
        Failed::Py(error)
    }
}

pub(super) struct Pending {
    pub(super) reply: oneshot::Sender<FromWorker>,
    pub(super) deadline: Instant,
}

/// One running worker process, as requests see it.
pub(super) struct Conn {
    /// The worker's stdin: frames are written straight from the sending task when the pipe takes
    /// them (the common case: no task hop); what it cannot take at once goes to the writer task.
    pub(super) stdin: Arc<tokio::sync::Mutex<tokio::process::ChildStdin>>,
    /// Bytes are waiting in the writer task: later frames queue behind them to keep the order.
    pub(super) backlog: Mutex<bool>,
    pub(super) tx: mpsc::UnboundedSender<Vec<u8>>,
    pub(super) pending: Mutex<HashMap<u64, Pending>>,
    pub(super) kill: Notify,
    /// A kill was requested: no new requests go here.
    pub(super) dying: AtomicBool,
    /// Why the process ended (set before its pending requests are failed).
    pub(super) exit: OnceLock<String>,
    pub(super) inflight: AtomicUsize,
    /// Replies received: a worker that answered restarts without delay when it dies.
    pub(super) answered: AtomicU64,
    /// Which slot of its pool it fills.
    pub(super) slot: usize,
}

tokio::task_local! {
    /// Set while serving a `send_request` call: the worker that is waiting for it, which a
    /// sync call must not be queued behind.
    pub(super) static CALLER: (PoolId, usize);
}

impl Conn {
    pub(super) fn kill(&self) {
        self.dying.store(true, Ordering::Relaxed);
        self.kill.notify_one();
    }

    pub(super) fn send(&self, frame: &Frame) -> bool {
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

    pub(super) fn exited(&self, label: &str) -> PyError {
        PyError::WorkerExited(format!(
            "the Python worker of endpoint '{label}' {} while handling this request; it is being restarted",
            self.exit.get().map_or("exited", String::as_str)
        ))
    }
}

/// The second half of a request whose model the server runs.
pub struct Continuation {
    pub(super) shared: Arc<Shared>,
    pub(super) conn: Arc<Conn>,
    pub(super) id: u64,
    pub(super) deadline: Instant,
    pub(super) queue: Duration,
    pub(super) done: bool,
    pub(super) _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Continuation {
    /// Hands the model's outputs (`value` with tensor markers into `blobs`) to `postprocess`,
    /// with the model's explanation when one was asked for.
    pub async fn post(
        mut self,
        outputs: Value,
        contributions: Option<Value>,
        blobs: Vec<Vec<u8>>,
    ) -> Result<Outcome, PyError> {
        self.done = true;
        let mut request = Frame::new(json!({"op": "post", "id": self.id}));
        request.header["outputs"] = outputs;
        // The model's explanation, for `postprocess` as `state["contributions"]`.
        if let Some(contributions) = contributions {
            request.header["contributions"] = contributions;
        }
        request.blobs = blobs;
        let reply = exchange(&self.shared, &self.conn, self.id, &request, self.deadline)
            .await
            .map_err(|failed| match failed {
                // The worker holding the request's first half is gone.
                Failed::Unsent => self.conn.exited(&self.shared.spec.label),
                Failed::Py(error) => error,
            })?;
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
/// user code can answer nothing else. Abandoned before it (the client went away), the work stops
/// too: a `custom_async` worker is told to cancel the request's task; a sync worker, busy with
/// it, is killed and replaced, so that nothing waits behind work nobody wants.
pub(super) async fn exchange(
    shared: &Shared,
    conn: &Arc<Conn>,
    id: u64,
    request: &Frame,
    deadline: Instant,
) -> Result<FromWorker, Failed> {
    struct Waiting<'a> {
        conn: &'a Conn,
        id: u64,
        deadline: Instant,
        concurrent: bool,
        done: bool,
    }
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.conn.inflight.fetch_sub(1, Ordering::Relaxed);
            if self.done {
                return;
            }
            let unanswered = lock(&self.conn.pending).remove(&self.id).is_some();
            let past_deadline = Instant::now() + Duration::from_millis(20) >= self.deadline;
            if past_deadline || (unanswered && !self.concurrent) {
                self.conn.kill();
            } else if unanswered {
                self.conn
                    .send(&Frame::new(json!({"op": "cancel", "id": self.id})));
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
        concurrent: shared.spec.concurrent,
        done: false,
    };
    if conn.exit.get().is_some() || !conn.send(request) {
        waiting.done = true;
        lock(&conn.pending).remove(&id);
        conn.dying.store(true, Ordering::Relaxed);
        return Err(Failed::Unsent);
    }
    let result = tokio::time::timeout_at(deadline, rx).await;
    match result {
        Ok(Ok(message)) => {
            waiting.done = true;
            Ok(message)
        }
        Ok(Err(_)) => {
            waiting.done = true;
            Err(conn.exited(&shared.spec.label).into())
        }
        Err(_) => {
            tracing::warn!(
                endpoint = %shared.spec.label,
                "a request ran past its deadline: killing the Python worker"
            );
            Err(PyError::Timeout.into())
        }
    }
}

/// A request's answer as its caller sees it.
pub(super) fn outcome(reply: FromWorker, queue: Duration) -> Result<Outcome, PyError> {
    match reply {
        FromWorker::Result {
            value,
            timings,
            stats,
            path,
            ..
        } => Ok(Outcome {
            value,
            timings,
            stats,
            path,
            queue,
        }),
        FromWorker::Error {
            class,
            message,
            invalid,
            path,
            ..
        } => Err(PyError::User {
            class,
            message,
            invalid,
            library: path == "library",
        }),
        other => Err(PyError::Protocol(format!(
            "unexpected reply {other:?} from the Python worker"
        ))),
    }
}
