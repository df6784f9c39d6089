//! A worker process's life: starting it (the interpreter, the boot script, the `load` handshake,
//! its stderr into the server log), reading what it sends (answers, `send_request` calls), and
//! supervising it (a dead worker's requests fail with the reason; it restarts with backoff).

use std::collections::{HashMap, VecDeque};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::exchange::{CALLER, Conn};
use super::{HEALTHY_AFTER, MAX_BACKOFF, STDERR_TAIL, Shared, StartError, lock};
use crate::frame::{Frame, FromWorker};

/// A started worker: its process and connection.
pub(super) struct Worker {
    child: Child,
    pub(super) conn: Arc<Conn>,
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
pub(super) async fn start_worker(shared: &Arc<Shared>, slot: usize) -> Result<Worker, StartError> {
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
        .map_err(|source| StartError::Spawn {
            python: spec.python.clone(),
            source,
        })?;
    let pid = child.id().unwrap_or_default();
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(StartError::Died(
            "the Python worker's pipes are missing".into(),
        ));
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
        Err(_) => return Err(StartError::Timeout(spec.load_timeout.as_secs_f64())),
        Ok(Err(e)) => {
            let broke = format!("the Python worker's channel broke ({e})");
            return Err(StartError::Died(explain(broke)));
        }
        Ok(Ok(None)) => {
            // Give stderr a moment to be read for the explanation.
            let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let how = status.map_or_else(|_| "exited".to_string(), describe);
            return Err(StartError::Died(explain(format!(
                "the Python worker ({}) {how} while loading",
                spec.python
            ))));
        }
        Ok(Ok(Some(frame))) => match FromWorker::read(frame) {
            FromWorker::Loaded {
                custom_model,
                native_model,
            } => {
                shared.custom_model.store(custom_model, Ordering::Relaxed);
                *lock(&shared.native_model) = native_model;
            }
            FromWorker::LoadError(error) => return Err(StartError::Load(error)),
            other => {
                return Err(StartError::Protocol(format!(
                    "unexpected message {other:?} from the Python worker while loading"
                )));
            }
        },
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
        match FromWorker::read(frame) {
            FromWorker::Call {
                id,
                call,
                endpoint,
                version,
                data,
            } => {
                let deadline = id
                    .and_then(|id| lock(&conn.pending).get(&id).map(|p| p.deadline))
                    .unwrap_or_else(|| Instant::now() + shared.spec.load_timeout);
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
            message => {
                conn.answered.fetch_add(1, Ordering::Relaxed);
                let waiting = message.id().and_then(|id| lock(&conn.pending).remove(&id));
                if let Some(pending) = waiting {
                    let _ = pending.reply.send(message);
                }
            }
        }
    }
}

/// Watches one worker slot: when the process ends (or must be killed), fails its requests,
/// restarts it with backoff, and stops everything when the pool is dropped.
pub(super) async fn supervise(
    shared: Arc<Shared>,
    index: usize,
    mut worker: Worker,
    mut stop: watch::Receiver<bool>,
) {
    let label = shared.spec.label.clone();
    let mut backoff = Duration::ZERO;
    loop {
        let mut killed = false;
        let status = tokio::select! {
            status = worker.child.wait() => status,
            _ = worker.conn.kill.notified() => {
                killed = true;
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
        // No new request goes to it from now on (those already sent fail below).
        worker.conn.dying.store(true, Ordering::Relaxed);
        let reason = describe(status);
        // Replies already written are still delivered before the rest fail.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut worker.reader).await;
        worker.reader.abort();
        let _ = worker.conn.exit.set(reason.clone());
        *lock(&shared.slots[index]) = None;
        lock(&worker.conn.pending).clear();
        shared.restarts.fetch_add(1, Ordering::Relaxed);
        *lock(&shared.last_exit) = Some(format!("worker {reason}"));
        // Back off only when workers die on their own without doing any work (a crash loop at
        // start); a worker killed because of a request (past its deadline, abandoned) restarts
        // at once, whatever requests did it.
        if killed
            || worker.started.elapsed() >= HEALTHY_AFTER
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
                    *lock(&shared.last_exit) = Some(e.to_string());
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
