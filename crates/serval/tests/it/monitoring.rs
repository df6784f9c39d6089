//! Monitoring end to end: a real Prometheus server (Debian's, installed by
//! scripts/setup-prometheus.sh) scrapes a running serval; known traffic must show up in PromQL
//! answers, and every query of the shipped Grafana dashboard must run and return data.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::serve::{Server, wait_until};
use crate::{Home, fixture};

fn prometheus_binary() -> String {
    std::env::var("SERVAL_PROMETHEUS").unwrap_or_else(|_| "prometheus".to_string())
}

/// A free loopback port (bound to 0, then released for Prometheus to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Prometheus {
    child: Child,
    base: String,
    agent: ureq::Agent,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The alerting rules that ship with the deploy files.
fn alert_rules() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/serval-alerts.yml")
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - '{}'\n\
                 scrape_configs:\n  - job_name: serval\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: ['{target}']\n",
                alert_rules().display()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start Prometheus ({}): {e}; run scripts/setup-prometheus.sh",
                    prometheus_binary()
                )
            });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let prometheus = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            agent,
        };
        wait_until("Prometheus ready", || {
            prometheus
                .agent
                .get(format!("{}/-/ready", prometheus.base))
                .call()
                .is_ok_and(|r| r.status() == 200)
        });
        prometheus
    }

    /// An instant query: the `data` of a successful answer (panics on a PromQL error).
    fn query(&self, promql: &str) -> Value {
        let mut response = self
            .agent
            .get(format!("{}/api/v1/query", self.base))
            .query("query", promql)
            .call()
            .unwrap();
        let body: Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap())
            .unwrap_or(Value::Null);
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body["data"].clone()
    }

    /// The value of a query that yields one series (None while it yields none).
    fn scalar(&self, promql: &str) -> Option<f64> {
        let data = self.query(promql);
        let result = data["result"].as_array()?;
        assert!(result.len() <= 1, "{promql}: several series: {data}");
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    fn wait_for(&self, promql: &str, expected: f64) {
        wait_until(&format!("{promql} == {expected}"), || {
            self.scalar(promql) == Some(expected)
        });
    }
}

const ANIMALS: &str = r#"
class Preprocess:
    def preprocess(self, body, state, collect_custom_statistics_fn=None):
        if collect_custom_statistics_fn:
            collect_custom_statistics_fn({"animal": body["animal"], "legs": 4})
        return body

    def process(self, data, state, collect_custom_statistics_fn=None):
        return {"heard": data["animal"]}
"#;

#[test]
fn prometheus_sees_requests_variables_and_sampling_and_runs_the_dashboard() {
    let home = Home::new();
    home.service("monitoring");
    let model = fixture("clearml_xgb.json");
    home.ok(&[
        "model",
        "upload",
        "--name",
        "iris-reg",
        "--path",
        model.to_str().unwrap(),
    ]);
    for (endpoint, version) in [("reg", "1"), ("half", "")] {
        let mut args = vec![
            "model",
            "add",
            "--engine",
            "xgboost",
            "--endpoint",
            endpoint,
            "--name",
            "iris-reg",
        ];
        if !version.is_empty() {
            args.extend_from_slice(&["--version", version]);
        } else {
            // A batched endpoint: the dashboard's batching panel has data.
            args.extend_from_slice(&["--max-batch-size", "8"]);
        }
        home.ok(&args);
    }
    let code = home.write("animals/preprocess.py", ANIMALS);
    home.ok(&[
        "model",
        "add",
        "--engine",
        "custom",
        "--endpoint",
        "animals",
        "--preprocess",
        code.to_str().unwrap(),
    ]);
    // The prefix form (clearml-serving's never matched), sampling, every variable source.
    home.ok(&[
        "metrics",
        "add",
        "--endpoint",
        "reg*",
        "--log-freq",
        "1",
        "--variable-scalar",
        "x0=0,1,2,5",
        "y=0,1,2,3",
    ]);
    home.ok(&[
        "metrics",
        "add",
        "--endpoint",
        "half",
        "--log-freq",
        "0.5",
        "--variable-scalar",
        "x0=0,5",
    ]);
    home.ok(&[
        "metrics",
        "add",
        "--endpoint",
        "animals",
        "--variable-enum",
        "animal=cat,dog",
        "--variable-counter",
        "legs",
    ]);

    // Drift of reg's inputs against a spread reference (the requests below repeat two rows:
    // drifted), and a payload log: the dashboard's drift and payload panels and the drift alert.
    let mut csv = String::from("f0,f1,f2,f3\n");
    for i in 0..100 {
        let x = f64::from(i) / 10.0;
        csv.push_str(&format!("{x},{x},{x},{x}\n"));
    }
    let reference = home.write("reference.csv", &csv);
    home.ok(&[
        "monitor",
        "reference",
        "--endpoint",
        "reg",
        "--data",
        reference.to_str().unwrap(),
    ]);
    let logs = format!("file://{}", home.path().join("logs").display());
    home.ok(&[
        "logging",
        "add",
        "--endpoint",
        "reg*",
        "--destination",
        &logs,
    ]);
    let checked =
        std::process::Command::new(Path::new(&prometheus_binary()).with_file_name("promtool"))
            .arg("check")
            .arg("rules")
            .arg(alert_rules())
            .output()
            .expect("promtool (Debian's prometheus package, scripts/setup-prometheus.sh)");
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );

    let metrics_port = free_port().to_string();
    let server = Server::start_with(&home, &["--metrics-port", &metrics_port]);
    let target = server.base.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start(home.path(), &target);

    let row = |x0: f64| json!({"x0": x0, "x1": 2, "x2": 3, "x3": 4}).to_string();
    for _ in 0..10 {
        assert_eq!(server.post("/serve/reg/1", &row(1.0)).0, 200);
    }
    for _ in 0..5 {
        assert_eq!(server.post("/serve/reg/1", &row(3.0)).0, 200);
    }
    assert_eq!(server.post("/serve/reg/1", r#"{"x0": 1}"#).0, 422);
    assert_eq!(server.post("/serve/nowhere", &row(1.0)).0, 404);
    for _ in 0..400 {
        assert_eq!(server.post("/serve/half", &row(1.0)).0, 200);
    }
    for (animal, times) in [("cat", 3), ("dog", 5), ("cow", 2)] {
        for _ in 0..times {
            let (status, body) =
                server.post("/serve/animals", &json!({"animal": animal}).to_string());
            assert_eq!(status, 200, "{body}");
        }
    }

    // Request counts per endpoint and outcome.
    prometheus.wait_for(r#"sum(serval_requests_total{endpoint="half"})"#, 400.0);
    prometheus.wait_for(
        r#"serval_requests_total{endpoint="reg",version="1",outcome="ok"}"#,
        15.0,
    );
    prometheus.wait_for(
        r#"serval_requests_total{endpoint="reg",version="1",outcome="invalid_input"}"#,
        1.0,
    );
    prometheus.wait_for(
        r#"serval_requests_total{endpoint="",outcome="not_found"}"#,
        1.0,
    );
    prometheus.wait_for(
        r#"serval_requests_total{endpoint="animals",outcome="ok"}"#,
        10.0,
    );

    // A scalar variable from the request body, as a standard cumulative histogram (prefix rule
    // `reg*` on url reg/1 → family reg_1:x0).
    assert_eq!(prometheus.scalar(r#"reg_1:x0_bucket{le="0.0"}"#), Some(0.0));
    assert_eq!(
        prometheus.scalar(r#"reg_1:x0_bucket{le="1.0"}"#),
        Some(10.0)
    );
    assert_eq!(
        prometheus.scalar(r#"reg_1:x0_bucket{le="2.0"}"#),
        Some(10.0)
    );
    assert_eq!(
        prometheus.scalar(r#"reg_1:x0_bucket{le="5.0"}"#),
        Some(15.0)
    );
    assert_eq!(prometheus.scalar("reg_1:x0_sum"), Some(25.0));
    // ... and one from the response (y ≈ 1.99 for x0=1, 15 observations in all).
    assert_eq!(prometheus.scalar("reg_1:y_count"), Some(15.0));
    assert_eq!(prometheus.scalar("reg_1:_count_total"), Some(15.0));

    // Enum counts from collect_custom_statistics_fn (cow is not configured); a counter too.
    assert_eq!(
        prometheus.scalar(r#"animals:animal_total{enum="cat"}"#),
        Some(3.0)
    );
    assert_eq!(
        prometheus.scalar(r#"animals:animal_total{enum="dog"}"#),
        Some(5.0)
    );
    assert_eq!(
        prometheus.scalar(r#"animals:animal_total{enum="cow"}"#),
        None
    );
    assert_eq!(prometheus.scalar("animals:legs_total"), Some(40.0));

    // Sampling at 0.5 over 400 requests: binomial, sd 10; ±50 is five standard deviations.
    let sampled = prometheus.scalar("half:_latency_count").unwrap();
    assert!(
        (150.0..=250.0).contains(&sampled),
        "sampled {sampled} of 400"
    );
    assert_eq!(prometheus.scalar("half:x0_count"), Some(sampled));
    // _count scales by 1/rate, so it estimates every request.
    assert_eq!(prometheus.scalar("half:_count_total"), Some(2.0 * sampled));

    // The Python endpoint's stages: queue, preprocess, inference (process), postprocess.
    for stage in ["queue", "preprocess", "inference"] {
        let n = prometheus.scalar(&format!(
            r#"serval_stage_duration_seconds_count{{endpoint="animals",stage="{stage}"}}"#
        ));
        assert_eq!(n, Some(10.0), "stage {stage}");
    }

    // --metrics-port serves the same metrics on a port of its own.
    let text = prometheus
        .agent
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        text.contains(r#"serval_requests_total{endpoint="half",version="",protocol="clearml",outcome="ok"} 400"#),
        "{text}"
    );

    // The drift alert of deploy/prometheus/serval-alerts.yml sees reg's drifted features (pending
    // for its five minutes, then firing).
    wait_until("the ServalFeatureDrift alert", || {
        let mut response = prometheus
            .agent
            .get(format!("{}/api/v1/alerts", prometheus.base))
            .call()
            .unwrap();
        let body: Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        body["data"]["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|a| {
                a["labels"]["alertname"] == "ServalFeatureDrift"
                    && a["labels"]["endpoint"] == "reg/1"
                    && a["labels"]["feature"] == "f0"
            })
        })
    });

    // Every query of the dashboard runs and returns data, with Grafana's variables filled in.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/grafana/dashboards/serval.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(queries.len() >= 10, "{queries:?}");
    for query in queries {
        let promql = query
            .replace("$__rate_interval", "1m")
            .replace("$__range", "5m")
            .replace("$endpoint", ".*")
            .replace("$histogram", "reg_1:x0_bucket");
        // rate() and increase() need two scrapes of a series: wait for them.
        wait_until(&format!("data for dashboard query {promql}"), || {
            let data = prometheus.query(&promql);
            data["result"].as_array().is_some_and(|r| !r.is_empty())
        });
    }
}
