//! A rolling restart without Kubernetes: two `serve` processes on one store behind a round-robin
//! balancer in the test that, like a Kubernetes Service and a proxy, sends only to servers whose
//! `/health/ready` said 200 at its last poll (every 100 ms) and tries the next server when a
//! connection is refused (the request never reached a server). Under load, one server gets
//! SIGTERM while it is in rotation: it turns not-ready and stops accepting at once, answers its
//! open connections with `Connection: close` for `--drain-delay`, then finishes what is in
//! flight; a new server starts and joins. Not one request fails.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Home;
use crate::serve::{IRIS, Server, wait_until};

#[test]
fn a_rolling_restart_under_load_fails_no_request() {
    let home = Home::new();
    home.service("rolling");
    let model = home.upload("iris", "lgbm_multi_iris.txt", &[]);
    home.add_endpoint("lightgbm", "iris", None, &model);
    let flags = ["--drain-delay", "1"];
    let servers: Arc<Mutex<Vec<Arc<Server>>>> = Arc::new(Mutex::new(vec![
        Arc::new(Server::start_with(&home, &flags)),
        Arc::new(Server::start_with(&home, &flags)),
    ]));
    // Which servers take traffic: those whose readiness answered 200 at the last poll.
    let ready: Arc<Mutex<Vec<Arc<Server>>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (servers, ready, stop) = (servers.clone(), ready.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let all: Vec<Arc<Server>> = servers.lock().unwrap().clone();
                let up: Vec<Arc<Server>> = all
                    .into_iter()
                    .filter(|s| s.get("/health/ready").0 == 200)
                    .collect();
                *ready.lock().unwrap() = up;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    wait_until("both servers take traffic", || {
        ready.lock().unwrap().len() == 2
    });

    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let served_by: Arc<Mutex<std::collections::HashMap<String, u64>>> = Arc::default();
    // When the SIGTERM was sent, and to which server: a failure says how long after it came, and
    // from where (a rare reset is still unexplained).
    let terminated: Arc<std::sync::OnceLock<(std::time::Instant, String)>> = Arc::default();
    let load: Vec<_> = (0..4)
        .map(|t| {
            let (ready, stop, ok, failed, served_by, terminated) = (
                ready.clone(),
                stop.clone(),
                ok.clone(),
                failed.clone(),
                served_by.clone(),
                terminated.clone(),
            );
            std::thread::spawn(move || {
                let mut n = t;
                while !stop.load(Ordering::Relaxed) {
                    let target = {
                        let ready = ready.lock().unwrap();
                        if ready.is_empty() {
                            None
                        } else {
                            Some(ready[n % ready.len()].clone())
                        }
                    };
                    n += 1;
                    let Some(server) = target else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let (status, body) = server.post("/serve/iris", IRIS);
                    if status == 0 && body.to_string().contains("Connection refused") {
                        // Not sent: the balancer tries the next server.
                        continue;
                    }
                    if status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                        *served_by
                            .lock()
                            .unwrap()
                            .entry(server.base.clone())
                            .or_default() += 1;
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let since = terminated.get().map(|(at, old)| {
                            let which = if *old == server.base {
                                "the old"
                            } else {
                                "another"
                            };
                            format!("{:?} after the SIGTERM, from {which} server", at.elapsed())
                        });
                        eprintln!(
                            "failed: {status} {body} from {} ({})",
                            server.base,
                            since.unwrap_or_else(|| "before the SIGTERM".into())
                        );
                    }
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(1));
    // Replace the first server: SIGTERM while it is in rotation and loaded, then a new one joins.
    let old = servers.lock().unwrap()[0].clone();
    let (old_base, old_pid) = (old.base.clone(), old.child.id());
    let _ = terminated.set((std::time::Instant::now(), old_base.clone()));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &old_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let new = Arc::new(Server::start_with(&home, &flags));
    let new_base = new.base.clone();
    servers.lock().unwrap().push(new);
    wait_until("the new server takes traffic", || {
        served_by
            .lock()
            .unwrap()
            .get(&new_base)
            .copied()
            .unwrap_or(0)
            > 20
    });
    // The old process has ended (a zombie until it is waited for below).
    wait_until("the old server exited", || {
        std::fs::read_to_string(format!("/proc/{old_pid}/stat"))
            .map(|stat| {
                stat.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
    });
    servers.lock().unwrap().remove(0);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for thread in load {
        thread.join().unwrap();
    }
    poller.join().unwrap();
    let served = served_by.lock().unwrap().clone();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests; served: {served:?}"
    );
    assert!(ok.load(Ordering::Relaxed) > 100, "the load ran: {served:?}");
    assert!(
        served.get(&old_base).copied().unwrap_or(0) > 0,
        "{served:?}"
    );
    drop(ready);
    let remaining: Vec<Arc<Server>> = std::mem::take(&mut *servers.lock().unwrap());
    for server in remaining.into_iter().chain([old]) {
        let server = Arc::try_unwrap(server).ok().expect("no other holder");
        assert!(server.stop().success(), "a server did not exit cleanly");
    }
}

/// A SIGTERM that comes while the server is still coming up (here: user code that takes long to
/// import, as TensorFlow does) stops it at once and cleanly — it is neither lost until the load
/// pass ends nor left to the default action that kills the process.
#[test]
fn a_sigterm_during_the_first_load_pass_stops_the_server_cleanly() {
    let home = Home::new();
    home.service("slow-start");
    let started = home.path().join("importing");
    // Imports until the test is over (its home removed) — the worker is never left behind.
    let code = format!(
        "import os, pathlib, time\n\
         pathlib.Path({started:?}).write_text('yes')\n\
         while os.path.exists({home:?}):\n    time.sleep(0.05)\n\
         class Preprocess:\n    def preprocess(self, body, state, collect_custom_statistics_fn=None):\n        return body\n",
        home = home.path()
    );
    home.add_custom("slow", &home.write("slow/preprocess.py", &code));
    let server = Server::spawn_with(&home, &[]);
    wait_until("the user code is importing", || started.exists());
    assert_eq!(server.get("/health/ready").0, 503);
    let status = server.stop();
    let log = std::fs::read_to_string(home.path().join("serve.log")).unwrap();
    assert!(status.success(), "{status}\n{log}");
    assert!(
        log.contains("stopping before the first load pass finished"),
        "{log}"
    );
}
