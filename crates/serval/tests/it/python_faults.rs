//! Python user code misbehaving, through the real server: raising, hanging past the timeout,
//! printing, returning what JSON cannot hold, and its worker being SIGKILLed under load. The
//! endpoint keeps working after each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Home;
use crate::serve::{Server, wait_until};

const FAULTY: &str = r#"
import os, sys, time
import numpy as np

class Preprocess:
    def __init__(self):
        self.served = 0

    def preprocess(self, body, state, collect_custom_statistics_fn=None):
        if isinstance(body, bytes):
            return {"op": "bytes", "raw": body}
        return body

    def process(self, data, state, collect_custom_statistics_fn=None):
        op = data.get("op")
        self.served += 1
        if op == "value":
            raise ValueError("x0 must be positive")
        if op == "key":
            return data["missing"]
        if op == "hang":
            time.sleep(3600)
        if op == "print":
            print("a debugging print from user code")
            os.write(1, b"and a raw write to fd 1\n")
            return {"printed": True}
        if op == "object":
            return {"handle": object()}
        if op == "numpy":
            return {"array": np.arange(3, dtype=np.int64), "scalar": np.float32(0.5), "bytes": b"caf\xc3\xa9"}
        if op == "path":
            raise RuntimeError("cannot read\n/srv/private/weights.bin: no such file")
        if op == "binary":
            return {"bytes": b"\xff\x00"}
        if op == "bytes":
            return {"length": len(data["raw"])}
        if op == "slow":
            time.sleep(0.02)
        if op == "self":
            # One worker, busy with this very request: the call is refused at once, not deadlocked.
            return {"self": self.send_request("faulty", data={"op": "pid"})}
        if op == "package":
            return {"package": self.send_request("packaged", data={"v": 2})}
        return {"pid": os.getpid(), "served": self.served}
"#;

fn setup() -> (Home, Server) {
    setup_with(&[])
}

fn setup_with(flags: &[&str]) -> (Home, Server) {
    let home = Home::new();
    home.service("faults");
    let code = home.write("faulty/preprocess.py", FAULTY);
    home.add_custom("faulty", &code);
    // A package: a folder whose __init__.py imports a sibling module.
    home.write(
        "pkg/__init__.py",
        "from .helpers import double\n\nclass Preprocess:\n    def process(self, data, state, fn=None):\n        return {'doubled': double(data['v'])}\n",
    );
    home.write("pkg/helpers.py", "def double(x):\n    return 2 * x\n");
    home.add_custom("packaged", &home.path().join("pkg"));
    // A zip of a package folder (clearml-serving accepts these), made with Python's zipfile.
    let zip = home.path().join("zpkg.zip");
    let made = std::process::Command::new(crate::python())
        .arg("-c")
        .arg(
            "import sys, zipfile\n\
             with zipfile.ZipFile(sys.argv[1], 'w') as z:\n\
             \x20   z.writestr('zpkg/__init__.py', 'from .helper import triple\\nclass Preprocess:\\n    def process(self, data, state, fn=None):\\n        return {\"tripled\": triple(data[\"v\"])}\\n')\n\
             \x20   z.writestr('zpkg/helper.py', 'def triple(x):\\n    return 3 * x\\n')\n",
        )
        .arg(&zip)
        .status()
        .unwrap();
    assert!(made.success());
    home.add_custom("zipped", &zip);
    let mut all = vec![];
    if !flags.contains(&"--request-timeout") {
        all.extend(["--request-timeout", "3"]);
    }
    all.extend_from_slice(flags);
    let server = Server::start_with(&home, &all);
    (home, server)
}

fn pid(server: &Server) -> u64 {
    let (status, body) = server.post("/serve/faulty", r#"{"op": "pid"}"#);
    assert_eq!(status, 200, "{body}");
    body["pid"].as_u64().unwrap()
}

#[test]
fn misbehaving_user_code_gets_clear_errors_and_the_endpoint_keeps_working() {
    // One worker: the call to itself below must find its only worker busy.
    let (home, server) = setup_with(&["--python-workers", "1"]);
    let first = pid(&server);

    assert_eq!(
        server.post("/serve/faulty", r#"{"op": "value"}"#),
        (
            422,
            json!({"detail": "Error [<class 'ValueError'>] processing request: x0 must be positive"})
        )
    );
    assert_eq!(
        server.post("/serve/faulty", r#"{"op": "key"}"#),
        (
            500,
            json!({"detail": "Error  [<class 'KeyError'>] processing request: 'missing'"})
        )
    );
    let (status, body) = server.post("/serve/faulty", r#"{"op": "object"}"#);
    assert_eq!(status, 500, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("Error  [<class 'TypeError'>]") && detail.contains("'object'"),
        "{detail}"
    );
    // Paths in user exceptions reach the log, not the client (multi-line messages too).
    let (status, body) = server.post("/serve/faulty", r#"{"op": "path"}"#);
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        body["detail"],
        "Error  [<class 'RuntimeError'>] processing request: cannot read\n<path>: no such file"
    );
    let v2 =
        json!({"inputs": [{"name": "op", "shape": [], "datatype": "BYTES", "data": ["path"]}]});
    let (status, body) = server.post("/v2/models/faulty/infer", &v2.to_string());
    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.ends_with("cannot read\n<path>: no such file"),
        "{error}"
    );
    assert_eq!(
        server.post("/serve/faulty", r#"{"op": "print"}"#),
        (200, json!({"printed": true}))
    );
    assert_eq!(
        server.post("/serve/faulty", r#"{"op": "numpy"}"#),
        (
            200,
            json!({"array": [0, 1, 2], "scalar": 0.5, "bytes": "café"})
        )
    );
    // Bytes are answered as their UTF-8 text (as FastAPI does); other bytes are a clear 500.
    let (status, reply) = server.post("/serve/faulty", r#"{"op": "binary"}"#);
    assert_eq!(status, 500, "{reply}");
    assert!(
        reply["detail"].as_str().unwrap().contains("not UTF-8"),
        "{reply}"
    );
    // Binary bodies reach preprocess as bytes.
    assert_eq!(
        server.post_as("/serve/faulty", "application/octet-stream", &[0u8; 1000]),
        (200, json!({"length": 1000}))
    );
    // send_request: to another endpoint (a package with a sibling module), and to itself with
    // its only worker busy (answered None at once instead of waiting for itself).
    assert_eq!(
        server.post("/serve/faulty", r#"{"op": "package"}"#),
        (200, json!({"package": {"doubled": 4}}))
    );
    assert_eq!(
        server.post("/serve/faulty", r#"{"op": "self"}"#),
        (200, json!({"self": null}))
    );
    assert_eq!(
        server.post("/serve/zipped", r#"{"v": 3}"#),
        (200, json!({"tripled": 9}))
    );
    // Nothing so far cost the worker its life.
    assert_eq!(pid(&server), first);
    let log = std::fs::read_to_string(home.path().join("serve.log")).unwrap();
    assert!(log.contains("[faulty pid "), "{log}");
    assert!(log.contains("a debugging print from user code"), "{log}");
    assert!(log.contains("/srv/private/weights.bin"), "{log}");
    assert!(log.contains("and a raw write to fd 1"), "{log}");

    // A hang past the request timeout: 504, the worker is replaced, the endpoint answers again.
    let (status, body) = server.post("/serve/faulty", r#"{"op": "hang"}"#);
    assert_eq!(status, 504, "{body}");
    let second = pid(&server);
    assert_ne!(second, first);
    wait_until("the restart in the status", || {
        home.json(&["model", "list"])["instances"][0]["endpoints"]["faulty"]["python"]["restarts"]
            == 1
    });

    // New code that cannot be imported is a load error; the previous code keeps serving.
    let broken = home.write("broken/preprocess.py", "import no_such_module_anywhere\n");
    home.add_custom("packaged", &broken);
    wait_until("the load failure in the status", || {
        let status = &home.json(&["model", "list"])["instances"][0]["endpoints"]["packaged"];
        status["state"] == "failed"
    });
    let status = &home.json(&["model", "list"])["instances"][0]["endpoints"]["packaged"];
    assert_eq!(status["serving"], true);
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains("No module named 'no_such_module_anywhere'"),
        "{error}"
    );
    assert_eq!(
        server.post("/serve/packaged", r#"{"v": 5}"#),
        (200, json!({"doubled": 10}))
    );
}

/// Three workers SIGKILLed in turn under load from 4 clients: each fails only what it held (the
/// request it ran and at most one more in its pipe) — requests that reach a worker after it died
/// go to another worker or wait for the restart — and each comes back.
#[test]
fn a_killed_worker_fails_only_its_requests_and_comes_back() {
    const KILLS: usize = 3;
    let (home, server) = setup();
    let server = Arc::new(server);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<(u16, Value)>::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (server, stop, ok, failed) =
                (server.clone(), stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = server.post("/serve/faulty", r#"{"op": "slow"}"#);
                    if status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.lock().unwrap().push((status, body));
                    }
                }
            })
        })
        .collect();
    wait_until("traffic", || ok.load(Ordering::Relaxed) >= 20);

    // The pool's gauges: (restarts, live workers).
    let pool = || {
        let text = server.get_text("/metrics");
        let gauge = |name: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("{name}{{endpoint=\"faulty\",version=\"\"}} "))?
                        .parse::<f64>()
                        .ok()
                })
                .unwrap_or(-1.0)
        };
        (
            gauge("serval_python_worker_restarts_total"),
            gauge("serval_python_workers_alive"),
        )
    };
    let workers = pool().1;
    let mut recovered = Vec::new();
    for kill in 1..=KILLS {
        let victim = pid(&server);
        let killed_at = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-KILL", &victim.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        // Back when the pool counts the restart and has all its workers again.
        wait_until("the restart", || pool() == (kill as f64, workers));
        recovered.push(killed_at.elapsed());
        let before = ok.load(Ordering::Relaxed);
        wait_until("traffic after the restart", || {
            ok.load(Ordering::Relaxed) >= before + 20
        });
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }

    // Only what each worker held failed: a sync worker runs one request and has at most one
    // more waiting in its pipe.
    let failed = failed.lock().unwrap();
    assert!(failed.len() <= 2 * KILLS, "{failed:?}");
    for (status, body) in failed.iter() {
        assert_eq!(*status, 500, "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("was killed by signal 9") && detail.contains("being restarted"),
            "{detail}"
        );
    }
    eprintln!(
        "{KILLS} worker SIGKILLs → served by a replacement after {recovered:?} ({} requests failed)",
        failed.len()
    );
    let list = home.json(&["model", "list"]);
    wait_until("the restarts in the status", || {
        home.json(&["model", "list"])["instances"][0]["endpoints"]["faulty"]["python"]["restarts"]
            == KILLS
    });
    assert!(list["instances"][0]["ready"].as_bool().unwrap());
}

/// A client that gives up on a request that never ends frees its worker: a sync worker is
/// replaced at once (the next request is not queued behind the abandoned one until
/// `--request-timeout`), a `custom_async` worker cancels the request's task.
#[test]
fn a_client_that_gives_up_frees_its_worker() {
    let (home, server) = setup_with(&["--python-workers", "1", "--request-timeout", "600"]);
    let marker = home.path().join("cancelled");
    let code = home.write(
        "waiting/preprocess.py",
        &format!(
            "import asyncio\n\nclass Preprocess:\n    async def process(self, data, state, collect_custom_statistics_fn=None):\n        if data.get('op') != 'wait':\n            return {{'ok': True}}\n        try:\n            await asyncio.sleep(3600)\n        except asyncio.CancelledError:\n            open({:?}, 'w').close()\n            raise\n",
            marker.to_str().unwrap()
        ),
    );
    home.ok(&[
        "model",
        "add",
        "--engine",
        "custom_async",
        "--endpoint",
        "waiting",
        "--preprocess",
        code.to_str().unwrap(),
    ]);
    wait_until("the async endpoint", || {
        server.post("/serve/waiting", "{}").0 == 200
    });
    let impatient: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(1)))
        .build()
        .into();
    let give_up = |path: &str, body: &str| {
        let sent = impatient
            .post(format!("{}{path}", server.base))
            .header("Content-Type", "application/json")
            .send(body);
        assert!(sent.is_err(), "{path} answered: {sent:?}");
    };

    let first = pid(&server);
    give_up("/serve/faulty", r#"{"op": "hang"}"#);
    wait_until("the abandoned worker replaced", || {
        home.json(&["model", "list"])["instances"][0]["endpoints"]["faulty"]["python"]["restarts"]
            == 1
    });
    // Served by the replacement (a queued request would wait for the 600 s timeout; the test
    // client gives up after 30 s).
    assert_ne!(pid(&server), first);

    give_up("/serve/waiting", r#"{"op": "wait"}"#);
    wait_until("the abandoned task cancelled", || marker.exists());
    assert_eq!(
        server.post("/serve/waiting", "{}"),
        (200, json!({"ok": true}))
    );
    let endpoints = &home.json(&["model", "list"])["instances"][0]["endpoints"];
    assert_eq!(endpoints["waiting"]["python"]["restarts"], 0, "{endpoints}");
}

#[test]
fn a_worker_calling_its_own_endpoint_is_served_by_another_worker() {
    let (_home, server) = setup_with(&["--python-workers", "2"]);
    for _ in 0..10 {
        let (status, body) = server.post("/serve/faulty", r#"{"op": "self"}"#);
        assert_eq!(status, 200, "{body}");
        assert!(body["self"]["pid"].is_u64(), "{body}");
    }
}

/// Writes a minimal wheel of module `serval_test_pkg` (`shout(s)`) and returns its path.
fn test_wheel(home: &Home) -> String {
    let path = home
        .path()
        .join("wheels/serval_test_pkg-1.0-py3-none-any.whl");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let script = r#"
import sys, zipfile
info = 'serval_test_pkg-1.0.dist-info/'
files = {
    'serval_test_pkg.py': 'def shout(s):\n    return s.upper()\n',
    info + 'METADATA': 'Metadata-Version: 2.1\nName: serval-test-pkg\nVersion: 1.0\n',
    info + 'WHEEL': 'Wheel-Version: 1.0\nGenerator: serval-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n',
}
with zipfile.ZipFile(sys.argv[1], 'w') as z:
    for name, text in files.items():
        z.writestr(name, text)
    z.writestr(info + 'RECORD', ''.join(n + ',,\n' for n in list(files) + [info + 'RECORD']))
"#;
    let status = std::process::Command::new(crate::python())
        .args(["-c", script])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path.display().to_string()
}

/// `config --extra-python-packages`: serval builds the service's environment before the endpoint
/// loads (offline here: a local wheel, `PIP_NO_INDEX`); the code sees the new package *and* every
/// package of the base interpreter (the test venv's numpy); the next server reuses the
/// environment; a package pip cannot install is a load error with pip's own words, and the
/// previous environment keeps serving.
#[test]
fn extra_python_packages_build_a_service_environment() {
    let home = Home::with_env(vec![("PIP_NO_INDEX".into(), "1".into())]);
    home.service("pyenv");
    let wheel = test_wheel(&home);
    home.ok(&["config", "--extra-python-packages", &wheel]);
    let code = home.write(
        "env/preprocess.py",
        "import numpy, serval_test_pkg\nclass Preprocess:\n    def process(self, data, state, collect_custom_statistics_fn=None):\n        return {'word': serval_test_pkg.shout(data['w']), 'n': int(numpy.int64(data['n']))}\n",
    );
    home.add_custom("env", &code);
    let server = Server::start(&home);
    wait_until("env loaded", || {
        home.json(&["model", "list"])["instances"][0]["endpoints"]["env"]["state"] == "loaded"
    });
    assert_eq!(
        server.post("/serve/env", r#"{"w": "hi", "n": 3}"#),
        (200, json!({"word": "HI", "n": 3}))
    );
    let built: Vec<_> = std::fs::read_dir(home.path().join("home/cache/pyenv"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(built.len(), 1, "{built:?}");
    let marker = built[0].join(".serval-complete");
    let stamp = std::fs::metadata(&marker).unwrap().modified().unwrap();
    drop(server);
    // The next server reuses it.
    let server = Server::start(&home);
    wait_until("env loaded again", || {
        server.post("/serve/env", r#"{"w": "a", "n": 4}"#).0 == 200
    });
    assert_eq!(
        std::fs::metadata(&marker).unwrap().modified().unwrap(),
        stamp
    );
    // A package pip cannot install: the endpoint fails to load with pip's last lines.
    let missing = home.path().join("wheels/missing-1.0-py3-none-any.whl");
    let missing = missing.to_str().unwrap();
    home.ok(&["config", "--extra-python-packages", missing]);
    wait_until("the install failure in the status", || {
        home.json(&["model", "list"])["instances"][0]["endpoints"]["env"]["state"] == "failed"
    });
    let status = &home.json(&["model", "list"])["instances"][0]["endpoints"]["env"];
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains("installing extra Python packages") && error.contains("does not exist"),
        "{error}"
    );
    assert_eq!(
        server.post("/serve/env", r#"{"w": "b", "n": 5}"#),
        (200, json!({"word": "B", "n": 5}))
    );
}
