//! Worker pools against a real Python interpreter (`SERVAL_PYTHON`, else `python3`): the
//! Preprocess contract, errors, print(), timeouts, crashes and restarts, send_request.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use serval_python::{
    Body, CallFuture, Calls, Outcome, Pool, PoolId, PoolSpec, PyError, StartError, Step,
};
use tokio::time::Instant;

fn python() -> String {
    std::env::var("SERVAL_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Answers send_request with `{"echo": data, "endpoint": ...}`.
struct Echo;

impl Calls for Echo {
    fn call(
        &self,
        _: PoolId,
        endpoint: String,
        version: Option<String>,
        data: Value,
        _: Instant,
    ) -> CallFuture {
        Box::pin(async move {
            if endpoint == "missing" {
                return Err("not found".to_string());
            }
            Ok(json!({"endpoint": endpoint, "version": version, "echo": data}))
        })
    }
}

async fn pool(dir: &Path, engine: &str, code: &str, size: usize) -> Result<Pool, StartError> {
    let file = dir.join("preprocess.py");
    std::fs::write(&file, code).unwrap();
    let package_dir = serval_python::install_package(&dir.join("python")).unwrap();
    Pool::start(
        PoolSpec {
            label: "test".into(),
            python: python(),
            size,
            package_dir,
            load: json!({
                "op": "load", "engine": engine,
                "code": {"kind": "file", "path": file, "name": "preprocess.py"},
                "model_path": null, "endpoint": {"serving_url": "test"},
            }),
            concurrent: engine == "custom_async",
            load_timeout: Duration::from_secs(60),
        },
        Arc::new(Echo),
    )
    .await
}

fn deadline(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

async fn infer(pool: &Pool, body: Value) -> Result<Outcome, PyError> {
    match pool
        .infer(Body::Json(body), None, false, false, deadline(60))
        .await?
    {
        Step::Done(outcome) => Ok(outcome),
        Step::Pre { .. } => panic!("not a native endpoint"),
    }
}

const ECHO: &str = r#"
import os, sys
class Preprocess:
    def __init__(self):
        self.calls = 0
    def preprocess(self, body, state, collect_custom_statistics_fn=None):
        state["seen"] = True
        if isinstance(body, dict) and body.get("print"):
            print("hello from user code", body)
            sys.stdout.flush()
            os.write(1, b"raw bytes on fd 1\n")
        return body
    def process(self, data, state, collect_custom_statistics_fn=None):
        assert state == {"seen": True}
        if isinstance(data, bytes):
            return {"bytes": len(data), "first": data[0]}
        op = data.get("op")
        if op == "value_error":
            raise ValueError("bad input here")
        if op == "key_error":
            return {}["missing"]
        if op == "hang":
            import time; time.sleep(3600)
        if op == "die":
            os.kill(os.getpid(), 9)
        if op == "object":
            return {"x": object()}
        if op == "call":
            return {"sub": self.send_request(endpoint="/other/", version=2, data={"a": 1}),
                    "missing": self.send_request("missing", data={})}
        if op == "endpoint":
            return {"url": self.model_endpoint.serving_url}
        self.calls += 1
        return {"echo": data, "calls": self.calls, "pid": os.getpid()}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn preprocess_contract_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(dir.path(), "custom", ECHO, 1).await.unwrap();
    let out = infer(&pool, json!({"x": 1})).await.unwrap();
    assert_eq!(out.value["echo"], json!({"x": 1}));
    assert_eq!(out.value["calls"], 1);
    assert!(out.timings.contains_key("process"));

    // The instance is constructed once: state in self survives between requests.
    let out = infer(&pool, json!({"x": 2})).await.unwrap();
    assert_eq!(out.value["calls"], 2);

    // print() and raw writes to fd 1 go to the log, the reply is intact.
    let out = infer(&pool, json!({"print": true})).await.unwrap();
    assert_eq!(out.value["echo"], json!({"print": true}));

    match infer(&pool, json!({"op": "value_error"})).await {
        Err(PyError::User {
            class,
            message,
            invalid,
            ..
        }) => {
            assert_eq!(class, "<class 'ValueError'>");
            assert_eq!(message, "bad input here");
            assert!(invalid);
        }
        other => panic!("{:?}", other.map(|o| o.value)),
    }
    match infer(&pool, json!({"op": "key_error"})).await {
        Err(PyError::User { class, invalid, .. }) => {
            assert_eq!(class, "<class 'KeyError'>");
            assert!(!invalid);
        }
        other => panic!("{:?}", other.map(|o| o.value)),
    }
    match infer(&pool, json!({"op": "object"})).await {
        Err(PyError::User {
            class,
            message,
            invalid,
            ..
        }) => {
            assert_eq!(class, "<class 'TypeError'>");
            assert!(message.contains("'object'"), "{message}");
            assert!(!invalid);
        }
        other => panic!("{:?}", other.map(|o| o.value)),
    }
    let out = infer(&pool, json!({"op": "endpoint"})).await.unwrap();
    assert_eq!(out.value["url"], "test");

    // Raw bytes arrive as bytes.
    let bytes: Vec<u8> = (0..=255).collect();
    match pool
        .infer(Body::Bytes(bytes), None, false, false, deadline(60))
        .await
        .unwrap()
    {
        Step::Done(out) => assert_eq!(out.value, json!({"bytes": 256, "first": 0})),
        Step::Pre { .. } => panic!(),
    }

    // send_request goes through the channel; failures are None.
    let out = infer(&pool, json!({"op": "call"})).await.unwrap();
    assert_eq!(
        out.value["sub"],
        json!({"endpoint": "other", "version": "2", "echo": {"a": 1}})
    );
    assert_eq!(out.value["missing"], Value::Null);
    assert_eq!(pool.status().restarts, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_worker_is_killed_at_the_deadline_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(dir.path(), "custom", ECHO, 1).await.unwrap();
    let first = infer(&pool, json!({})).await.unwrap().value["pid"].clone();
    let hung = pool
        .infer(
            Body::Json(json!({"op": "hang"})),
            None,
            false,
            false,
            Instant::now() + Duration::from_secs(2),
        )
        .await;
    assert!(matches!(hung, Err(PyError::Timeout)));
    // The next request waits for the replacement and succeeds.
    let out = infer(&pool, json!({})).await.unwrap();
    assert_ne!(out.value["pid"], first);
    assert_eq!(out.value["calls"], 1, "a fresh Preprocess instance");
    assert_eq!(pool.status().restarts, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_fails_only_the_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(dir.path(), "custom", ECHO, 1).await.unwrap();
    match infer(&pool, json!({"op": "die"})).await {
        Err(PyError::WorkerExited(message)) => {
            assert!(message.contains("signal 9"), "{message}");
        }
        other => panic!("{:?}", other.map(|o| o.value)),
    }
    for _ in 0..3 {
        infer(&pool, json!({})).await.unwrap();
    }
    let status = pool.status();
    assert_eq!(status.restarts, 1);
    assert_eq!(status.alive, 1);
    assert!(status.last_exit.unwrap().contains("signal 9"));
}

/// A worker that died while idle has run nothing: the next request goes to its replacement (it
/// waits for the restart) instead of failing against the dead one, however soon after the death
/// it is sent (it used to fail when sent before the pool had noticed the death).
#[tokio::test(flavor = "multi_thread")]
async fn a_request_after_an_idle_worker_died_waits_for_its_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(dir.path(), "custom", ECHO, 1).await.unwrap();
    for round in 1..=5 {
        let pid = infer(&pool, json!({})).await.unwrap().value["pid"].clone();
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        // Dead (a zombie until the pool reaps it, or gone): a write to it now fails.
        let stat = format!("/proc/{pid}/stat");
        while std::fs::read_to_string(&stat).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.starts_with(" Z"))
        }) {
            tokio::task::yield_now().await;
        }
        let answer = infer(&pool, json!({})).await;
        let out = answer.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_ne!(out.value["pid"], pid);
    }
    assert_eq!(pool.status().restarts, 5);
}

/// A request that the server asked to stop after `preprocess` (a native model) but whose
/// `preprocess` returned what only the model's library understands runs the library in the
/// worker; when the library raises, the error still says the request went that way (the
/// endpoint counts it among its library requests).
#[tokio::test(flavor = "multi_thread")]
async fn a_failure_inside_the_library_is_reported_as_a_library_request() {
    let dir = tempfile::tempdir().unwrap();
    let code = r#"
class Preprocess:
    def preprocess(self, body, state, collect_custom_statistics_fn=None):
        return {"not": "an array"}
    def process(self, data, state, collect_custom_statistics_fn=None):
        raise ValueError("the library refused it")
"#;
    let pool = pool(dir.path(), "custom", code, 1).await.unwrap();
    let native = pool
        .infer(Body::Json(json!({})), None, true, false, deadline(60))
        .await;
    match native {
        Err(PyError::User {
            invalid, library, ..
        }) => assert!(invalid && library),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Without a native model, the same failure is user code's.
    match infer(&pool, json!({})).await {
        Err(PyError::User { library, .. }) => assert!(!library),
        other => panic!("{:?}", other.map(|o| o.value)),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn load_failures_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    // Code that does not load fails the same way until it changes: not worth retrying.
    let error = pool(dir.path(), "custom", "import no_such_module_here\n", 1)
        .await
        .err()
        .unwrap();
    assert!(matches!(error, StartError::Load(_)) && !error.may_pass());
    let text = error.to_string();
    assert!(
        text.contains("No module named 'no_such_module_here'"),
        "{text}"
    );
    let error = pool(dir.path(), "custom", "class Other: pass\n", 1)
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("Preprocess"), "{error}");
    assert!(!error.may_pass());
    // A worker that dies while loading may do better next time (it may have run out of memory).
    let error = pool(dir.path(), "custom", "raise SystemExit(3)\n", 1)
        .await
        .err()
        .unwrap();
    assert!(matches!(error, StartError::Died(_)) && error.may_pass());
    assert!(error.to_string().contains("status 3"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn async_workers_overlap_requests() {
    // A rendezvous: no request may finish until all 8 are inside `process` at the same time. If
    // the worker ran them one after another, the first would wait until its deadline and fail.
    let code = r#"
import asyncio
inside = 0
everyone = None
class Preprocess:
    async def process(self, data, state, collect_custom_statistics_fn=None):
        global inside, everyone
        if everyone is None:
            everyone = asyncio.Event()
        inside += 1
        if inside == data["expect"]:
            everyone.set()
        await everyone.wait()
        sub = await self.send_request("other", data={"n": data["n"]})
        if collect_custom_statistics_fn:
            collect_custom_statistics_fn({"n": data["n"]})
        return {"n": data["n"], "sub": sub["echo"]["n"], "together": inside}
"#;
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(pool(dir.path(), "custom_async", code, 1).await.unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let pool = pool.clone();
            tokio::spawn(async move {
                match pool
                    .infer(
                        Body::Json(json!({"expect": 8, "n": n})),
                        None,
                        false,
                        true,
                        deadline(60),
                    )
                    .await
                    .expect("all 8 requests were inside the worker at once")
                {
                    Step::Done(out) => out,
                    Step::Pre { .. } => panic!(),
                }
            })
        })
        .collect();
    for (n, task) in tasks.into_iter().enumerate() {
        let out = task.await.unwrap();
        assert_eq!(out.value, json!({"n": n, "sub": n, "together": 8}));
        assert_eq!(out.stats.unwrap()["n"], n);
    }
}

/// Frames bigger than a pipe's buffer (64 KiB) are written partly at once and the rest by the
/// writer task; frames sent meanwhile queue behind them: every request gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_frames_arrive_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(pool(dir.path(), "custom", ECHO, 1).await.unwrap());
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                // Every other request is big.
                let size = if i % 2 == 0 { 300_000 } else { 10 };
                let text: String =
                    std::iter::repeat_n(char::from(b'a' + (i % 26) as u8), size).collect();
                let outcome = infer(&pool, json!({"i": i, "text": text})).await.unwrap();
                assert_eq!(outcome.value["echo"]["i"], i, "request {i}");
                assert_eq!(
                    outcome.value["echo"]["text"].as_str().map(str::len),
                    Some(size),
                    "request {i}"
                );
                assert_eq!(outcome.value["echo"]["text"], text, "request {i}");
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}
