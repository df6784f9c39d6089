//! Rollouts (`serval model rollout`) on two servers sharing a PostgreSQL store: a good new
//! version is promoted through every step, the server driving it is killed midway and the other
//! takes over and finishes; a version failing 5 % of its requests passes its shadow phase (its
//! answers agree when it answers) and is rolled back at its first step, with the reason.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::Home;
use crate::serve::{Server, wait_until};

/// Custom endpoint code answering `{"y": x}`, failing (ValueError → 422) when `fails` holds.
fn answering(home: &Home, name: &str, fails: &str) {
    let code = home.write(
        &format!("{name}/preprocess.py"),
        &format!(
            "class Preprocess:\n    def process(self, data, state, collect_custom_statistics_fn=None):\n        x = data['x']\n        if {fails}:\n            raise ValueError('no answer for this one')\n        return {{'y': x}}\n"
        ),
    );
    home.add_custom(name, &code);
}

fn status(cli: &Home, canary: &str) -> Value {
    cli.json(&["model", "rollout", "status", "--endpoint", canary])
}

fn kinds(status: &Value) -> Vec<String> {
    status["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

/// Requests to `/serve/{path}` on whichever server `base` names, until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(base: Arc<Mutex<String>>, paths: &[&str]) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        let thread = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .into();
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for path in &paths {
                        let url = format!("{}/serve/{path}", base.lock().unwrap());
                        let body = format!(r#"{{"x": {x}}}"#);
                        let _ = agent
                            .post(&url)
                            .header("Content-Type", "application/json")
                            .send(body.as_bytes());
                        x += 1;
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        Traffic {
            stop,
            sent,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn rollouts_promote_a_good_version_roll_back_a_bad_one_and_survive_their_driver() {
    let pg = serval_testkit::Postgres::start();
    let store = pg.fresh_database();
    let env = vec![("SERVAL_STORE".to_string(), store)];
    let cli = Home::with_env(env.clone());
    cli.service("rollouts");
    answering(&cli, "v1", "False");
    answering(&cli, "v2", "False");
    // 5 % of inputs fail.
    answering(&cli, "bad", "x % 20 == 0");

    // Refusals: one line each, nothing written.
    for (args, expected) in [
        (
            vec!["--to", "v2", "--steps", "50,20,100"],
            "--steps must increase",
        ),
        (
            vec!["--to", "v2", "--steps", "5,50"],
            "the last of --steps must be 100",
        ),
        (vec!["--to", "v2", "--interval", "soon"], "not a duration"),
        (vec!["--to", "nope"], "'nope' is not an endpoint"),
    ] {
        let mut all = vec!["model", "rollout", "--endpoint", "live", "--from", "v1"];
        all.extend(args);
        let error = cli.fail(&all);
        assert!(error.contains(expected), "{error}");
    }
    assert!(
        cli.json(&["model", "list"])["canaries"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // One server first: it takes the lease and drives.
    let a = Server::start(&Home::with_env(env.clone()));
    let base = Arc::new(Mutex::new(a.base.clone()));
    let started = cli.json(&[
        "model",
        "rollout",
        "--endpoint",
        "live",
        "--from",
        "v1",
        "--to",
        "v2",
        "--steps",
        "20,50,100",
        "--interval",
        "2s",
        "--max-error-ratio",
        "0.01",
    ]);
    assert_eq!(started["state"], "running", "{started}");
    assert_eq!(started["step"], 1);
    assert_eq!(started["weights"], serde_json::json!([80.0, 20.0]));
    let listed = cli.json(&["model", "list"]);
    assert_eq!(listed["canaries"][0]["name"], "live", "{listed}");
    let error = cli.fail(&[
        "model",
        "canary",
        "--endpoint",
        "live",
        "--weights",
        "1",
        "1",
        "--input-endpoints",
        "v1",
        "v2",
    ]);
    assert!(error.contains("driven by a rollout (running)"), "{error}");
    assert_eq!(listed["rollouts"][0]["state"], "running", "{listed}");
    let traffic = Traffic::start(base.clone(), &["live"]);
    wait_until("the second step", || status(&cli, "live")["step"] == 2);

    // A second server; the first is killed: the second takes the lease over and finishes.
    let b = Server::start(&Home::with_env(env.clone()));
    *base.lock().unwrap() = b.base.clone();
    drop(a);
    wait_until("the promotion", || {
        status(&cli, "live")["state"] == "promoted"
    });
    let done = status(&cli, "live");
    assert_eq!(done["weights"], serde_json::json!([0.0, 100.0]), "{done}");
    let seen = kinds(&done);
    assert_eq!(
        seen.first().map(String::as_str),
        Some("started"),
        "{seen:?}"
    );
    assert_eq!(seen.iter().filter(|k| *k == "step").count(), 3, "{seen:?}");
    assert!(seen.contains(&"leader_changed".to_string()), "{seen:?}");
    assert_eq!(
        seen.last().map(String::as_str),
        Some("promoted"),
        "{seen:?}"
    );
    assert!(traffic.sent.load(Ordering::Relaxed) > 0);
    drop(traffic);

    // A version that fails 5 % of its requests: it agrees when it answers (its shadow phase
    // passes), then its first step breaks the error budget.
    let risky = cli.json(&[
        "model",
        "rollout",
        "--endpoint",
        "risky",
        "--from",
        "v1",
        "--to",
        "bad",
        "--steps",
        "20,100",
        "--interval",
        "30s",
        "--max-error-ratio",
        "0.01",
        "--min-requests",
        "40",
        "--min-agreement",
        "0.99",
        "--shadow-first",
        "1s",
    ]);
    assert_eq!(risky["state"], "shadow", "{risky}");
    assert_eq!(risky["weights"], serde_json::json!([100.0, 0.0]));
    let traffic = Traffic::start(base.clone(), &["risky"]);
    wait_until("the rollback", || {
        status(&cli, "risky")["state"] == "rolled_back"
    });
    drop(traffic);
    let back = status(&cli, "risky");
    assert_eq!(back["weights"], serde_json::json!([100.0, 0.0]), "{back}");
    let seen = kinds(&back);
    assert_eq!(
        seen,
        ["started", "shadow_passed", "step", "rolled_back"],
        "{back}"
    );
    let reason = back["events"][3]["detail"].as_str().unwrap();
    assert!(
        reason.contains("error ratio of bad was") && reason.contains("all traffic back to v1"),
        "{reason}"
    );
    // The table form shows the events too; a rolled-back rollout cannot be paused.
    let text = cli.ok(&["model", "rollout", "status", "--endpoint", "risky"]);
    assert!(
        text.contains("rolled_back") && text.contains("error ratio"),
        "{text}"
    );
    let error = cli.fail(&["model", "rollout", "pause", "--endpoint", "risky"]);
    assert!(error.contains("only a running one pauses"), "{error}");
    // Prometheus on the server that drove it.
    let metrics = b.get_text("/metrics");
    assert!(
        metrics.contains(r#"serval_rollout_events_total{canary="risky",kind="rolled_back"} 1"#),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("rollout"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(b);
}
