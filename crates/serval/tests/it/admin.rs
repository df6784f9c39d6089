//! The admin API (`serve --require-auth --admin-api on`) driven over HTTP only: a model uploaded
//! (streamed, sha256 checked), preprocess code stored, an endpoint, a canary and metric rules
//! added and changed, requests served through them by a second server on the same store, the
//! endpoint removed — every change in `serval audit` under the key's name. And the refusals:
//! 401 without a key, 403 for an inference key and outside an admin key's scope, 412 on a stale
//! `If-Match`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::serve::{IRIS, Server, wait_until};
use crate::{Home, fixture};

/// One admin API call: status, `ETag` and JSON body.
struct Api {
    base: String,
    agent: ureq::Agent,
}

struct Reply {
    status: u16,
    etag: Option<String>,
    body: Value,
}

impl Api {
    fn new(server: &Server) -> Api {
        Api {
            base: server.base.clone(),
            // A connection per call: the server closes one whose body a refusal left unread, and
            // a pooled connection could be reused after that close.
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(60)))
                .max_idle_connections(0)
                .build()
                .into(),
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let url = format!("{}{path}", self.base);
        let mut request = ureq::http::Request::builder().method(method).uri(url);
        if let Some(key) = key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = match body {
            Some(bytes) => self.agent.run(request.body(bytes.to_vec()).unwrap()),
            None => self.agent.run(request.body(()).unwrap()),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = response.body_mut().read_to_string().unwrap_or_default();
        Reply {
            status: response.status().as_u16(),
            etag,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    fn json(&self, method: &str, path: &str, key: &str, body: &Value) -> Reply {
        self.call(
            method,
            path,
            Some(key),
            &[("Content-Type", "application/json")],
            Some(body.to_string().as_bytes()),
        )
    }
}

fn key(home: &Home, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["auth", "create-key", "--name", name];
    args.extend_from_slice(extra);
    home.ok(&args).trim().to_string()
}

#[test]
fn the_admin_api_deploys_for_admin_keys_only_and_records_who_did_what() {
    let home = Home::new();
    let service = home.service("admin");
    let ops = key(&home, "ops", &["--role", "admin"]);
    let app = key(&home, "app", &[]);
    let team = key(&home, "team", &["--role", "admin", "--endpoints", "team-*"]);
    let admin_server = Server::start_with(&home, &["--require-auth", "--admin-api", "on"]);
    // A second server on the same store, without the admin API (the default without keys is
    // off; with keys it would be on): it only follows the store.
    let follower = Server::start_with(&home, &["--require-auth", "--admin-api", "off"]);
    let api = Api::new(&admin_server);
    let services = format!("/api/v1/services/{service}");

    // Keys first: none 401, an inference key 403 on reads and writes alike, the follower has
    // no admin routes.
    assert_eq!(
        api.call("GET", "/api/v1/services", None, &[], None).status,
        401
    );
    let refused = api.call("GET", "/api/v1/audit", Some(&app), &[], None);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("--role admin")
    );
    let infer_write = api.json(
        "PUT",
        &format!("{services}/endpoints/iris"),
        &app,
        &json!({"engine": "lightgbm"}),
    );
    assert_eq!(infer_write.status, 403);
    assert_eq!(
        Api::new(&follower)
            .call("GET", "/api/v1/services", Some(&ops), &[], None)
            .status,
        404
    );
    // The key is checked before the body is read: an upload announcing 10 GB, sent without its
    // body, is answered (401 without a key, 403 with an inference key) all the same.
    for (authorization, status) in [
        (String::new(), "401"),
        (format!("Authorization: Bearer {app}\r\n"), "403"),
    ] {
        use std::io::{Read, Write};
        let address = admin_server.base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            stream,
            "POST /api/v1/models/upload?name=big&filename=big.bin HTTP/1.1\r\nHost: x\r\n{authorization}Content-Type: application/octet-stream\r\nContent-Length: 10000000000\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        assert_eq!(
            &head[9..12],
            status.as_bytes(),
            "{}",
            String::from_utf8_lossy(&head)
        );
    }

    // The model, streamed: a wrong sha256 is refused, the right one registers it.
    let model_bytes = std::fs::read(fixture("lgbm_multi_iris.txt")).unwrap();
    let sha = serval_artifacts::hash_bytes(&model_bytes);
    let upload = |sha: &str| {
        api.call(
            "POST",
            &format!(
                "/api/v1/models/upload?name=iris&project=demo&filename=iris.txt&framework=lightgbm&sha256={sha}"
            ),
            Some(&ops),
            &[("Content-Type", "application/octet-stream")],
            Some(&model_bytes),
        )
    };
    let bad = upload(&"0".repeat(64));
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body["detail"].as_str().unwrap().contains(&sha));
    let uploaded = upload(&sha);
    assert_eq!(uploaded.status, 201, "{}", uploaded.body);
    let model_id = uploaded.body["result"]["id"].as_str().unwrap().to_string();
    assert_eq!(uploaded.body["result"]["sha256"], sha);
    assert_eq!(uploaded.body["result"]["framework"], "lightgbm");

    // Preprocess code, stored, then an endpoint using it, written against the revision read.
    let code = "class Preprocess:\n    def preprocess(self, body, state, collect_custom_statistics_fn=None):\n        return [[body['x0'], body['x1'], body['x2'], body['x3']]]\n";
    let stored = api.call(
        "POST",
        "/api/v1/code?filename=preprocess.py",
        Some(&ops),
        &[],
        Some(code.as_bytes()),
    );
    assert_eq!(stored.status, 201, "{}", stored.body);
    assert_eq!(stored.body["kind"], "file");
    let read = api.call("GET", &services, Some(&ops), &[], None);
    assert_eq!(read.status, 200);
    let revision = read.etag.clone().expect("a service read has an ETag");
    let put = api.call(
        "PUT",
        &format!("{services}/endpoints/iris"),
        Some(&ops),
        &[
            ("Content-Type", "application/json"),
            ("If-Match", revision.as_str()),
        ],
        Some(
            json!({"engine": "lightgbm", "model_id": model_id, "preprocess": stored.body})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(put.status, 201, "{}", put.body);
    assert_eq!(put.body["result"]["url"], "iris");
    assert_eq!(put.body["result"]["engine"], "lightgbm");
    let after = put.body["revision"].as_u64().unwrap();
    assert_eq!(put.etag.as_deref(), Some(format!("\"{after}\"").as_str()));
    // The revision read before is gone: a second writer with it is refused, nothing written.
    let stale = api.call(
        "PUT",
        &format!("{services}/endpoints/iris2"),
        Some(&ops),
        &[
            ("Content-Type", "application/json"),
            ("If-Match", revision.as_str()),
        ],
        Some(
            json!({"engine": "lightgbm", "model_id": model_id})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(stale.status, 412, "{}", stale.body);
    // A scoped admin key changes only its endpoints.
    let scoped = api.json(
        "PUT",
        &format!("{services}/endpoints/iris"),
        &team,
        &json!({"engine": "lightgbm", "model_id": model_id}),
    );
    assert_eq!(scoped.status, 403, "{}", scoped.body);
    let scoped_ok = api.json(
        "PUT",
        &format!("{services}/endpoints/team-iris"),
        &team,
        &json!({"engine": "lightgbm", "model_id": model_id}),
    );
    assert_eq!(scoped_ok.status, 201, "{}", scoped_ok.body);
    // Bad input is a 400 naming the problem.
    let unknown = api.json(
        "PUT",
        &format!("{services}/endpoints/x"),
        &ops,
        &json!({"engine": "lightgbm", "model": "oops"}),
    );
    assert_eq!(unknown.status, 422, "{}", unknown.body);
    let no_model = api.json(
        "PUT",
        &format!("{services}/endpoints/x"),
        &ops,
        &json!({"engine": "lightgbm"}),
    );
    assert_eq!(no_model.status, 400);
    assert!(
        no_model.body["detail"]
            .as_str()
            .unwrap()
            .contains("needs a model")
    );

    // The follower serves it within its reload, through the canary too.
    let infer = |server: &Server, path: &str| {
        server.post_with(
            path,
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &format!("Bearer {app}")),
            ],
            IRIS.as_bytes(),
        )
    };
    wait_until("the follower serves iris", || {
        infer(&follower, "/serve/iris").0 == 200
    });
    let canary = api.json(
        "PUT",
        &format!("{services}/canaries/iris-live"),
        &ops,
        &json!({"weights": [1.0, 0.0], "input_endpoints": ["iris", "team-iris"]}),
    );
    assert_eq!(canary.status, 201, "{}", canary.body);
    let reweighted = api.json(
        "PUT",
        &format!("{services}/canaries/iris-live"),
        &ops,
        &json!({"weights": [0.0, 1.0], "input_endpoints": ["iris", "team-iris"]}),
    );
    assert_eq!(reweighted.status, 200, "{}", reweighted.body);
    assert_eq!(reweighted.body["result"]["weights"], json!([0.0, 1.0]));
    assert!(
        reweighted.body["warnings"][0]
            .as_str()
            .unwrap()
            .contains("overwritten")
    );
    wait_until("the follower serves the canary", || {
        infer(&follower, "/serve/iris-live").0 == 200
    });
    let metrics = api.json(
        "POST",
        &format!("{services}/metrics/iris"),
        &ops,
        &json!({"log_frequency": 1.0, "variables": {"x0": {"type": "scalar", "buckets": [0.0, 1.0, 5.0]}}}),
    );
    assert_eq!(metrics.status, 201, "{}", metrics.body);

    // Removal reaches the follower too.
    let removed = api.call(
        "DELETE",
        &format!("{services}/endpoints/iris"),
        Some(&ops),
        &[],
        None,
    );
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(removed.body["result"]["removed"], "static endpoint");
    wait_until("the follower stops serving iris", || {
        infer(&follower, "/serve/iris").0 == 404
    });

    // Every change is in the audit trail with the key's name; the CLI's own are `local`.
    let audit: Value = serde_json::from_str(&home.ok(&["--json", "audit"])).unwrap();
    let seen: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_string(),
                e["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for expected in [
        ("local", "service.create"),
        ("local", "key.create"),
        ("ops", "model.register"),
        ("ops", "endpoint.put"),
        ("team", "endpoint.put"),
        ("ops", "canary.put"),
        ("ops", "metrics.add"),
        ("ops", "endpoint.remove"),
    ] {
        assert!(
            seen.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} not in {seen:?}"
        );
    }
    let over_api = api.call("GET", "/api/v1/audit?since=1h", Some(&ops), &[], None);
    assert_eq!(over_api.status, 200);
    assert_eq!(over_api.body, audit);
    let put_entry = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "ops" && e["operation"] == "endpoint.put")
        .unwrap();
    assert_eq!(
        put_entry["target"],
        format!("services/{service}/endpoints/iris")
    );
    assert_eq!(put_entry["revision"], after);
}

#[test]
fn admin_api_on_needs_keys() {
    let home = Home::new();
    home.service("open");
    let error = home.fail(&["serve", "--port", "0", "--admin-api", "on"]);
    assert!(
        error.contains("--admin-api on needs --require-auth"),
        "{error}"
    );
}

/// The CLI over the admin API (`SERVAL_SERVER` + `SERVAL_API_KEY`, no store on this machine)
/// prints what it prints on the store itself: the same scenario on two fresh deployments gives
/// byte-identical stdout once the ids, times and home folders that differ by nature are named
/// alike; errors are the same lines with the same exit code.
#[test]
fn the_cli_over_the_admin_api_prints_what_it_prints_on_the_store() {
    // On the store.
    let local = Home::new();
    // Through a server (its own store and home), from a machine with neither.
    let served = Home::new();
    let mut ids = Vec::new();
    for home in [&local, &served] {
        ids.push(home.service("svc"));
        key(home, "ops", &["--role", "admin"]);
    }
    let server = Server::start_with(&served, &["--require-auth"]);
    let ops_key = served.ok(&[
        "auth",
        "create-key",
        "--name",
        "remote-ops",
        "--role",
        "admin",
    ]);
    let remote = Home::with_env(vec![
        ("SERVAL_SERVER".into(), server.base.clone()),
        ("SERVAL_API_KEY".into(), ops_key.trim().to_string()),
    ]);
    // The same key on the local side, so that `auth list` matches.
    key(&local, "remote-ops", &["--role", "admin"]);
    let code = local.write("code/preprocess.py", crate::PREPROCESS);
    let code = code.to_str().unwrap();
    let model = fixture("lgbm_multi_iris.txt");
    let model = model.to_str().unwrap();
    let reference = local.write(
        "reference.csv",
        "f0,f1,colour\n1,2,red\n2,4,blue\n3,6,red\n",
    );
    let reference = reference.to_str().unwrap();

    let normalise = |text: &str, home: &Home, service: &str, model_id: Option<&str>| {
        let mut text = text.replace(service, "<service>");
        if let Some(id) = model_id {
            text = text.replace(id, "<model>");
        }
        text = text.replace(&home.path().display().to_string(), "<home>");
        let times = regex::Regex::new(r#""(\w+_ms)": \d+"#).unwrap();
        let text = times.replace_all(&text, "\"$1\": 0").to_string();
        let stamps = regex::Regex::new(r#""time": "[^"]*""#).unwrap();
        stamps
            .replace_all(&text, "\"time\": \"<time>\"")
            .to_string()
    };
    let mut outputs: Vec<Vec<String>> = Vec::new();
    for (cli, home, service) in [(&local, &local, &ids[0]), (&remote, &served, &ids[1])] {
        let mut seen = Vec::new();
        let upload = cli.ok(&[
            "--json",
            "model",
            "upload",
            "--name",
            "iris",
            "--project",
            "demo",
            "--path",
            model,
        ]);
        let model_id = serde_json::from_str::<Value>(&upload).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        seen.push(upload);
        for args in [
            vec![
                "model",
                "add",
                "--engine",
                "lightgbm",
                "--endpoint",
                "iris",
                "--model-id",
                &model_id,
                "--preprocess",
                code,
            ],
            vec![
                "model",
                "add",
                "--engine",
                "lightgbm",
                "--endpoint",
                "iris",
                "--version",
                "2",
                "--model-id",
                &model_id,
            ],
            vec![
                "model",
                "canary",
                "--endpoint",
                "live",
                "--weights",
                "0.2",
                "0.8",
                "--input-endpoints",
                "iris",
                "iris/2",
            ],
            vec![
                "model",
                "auto-update",
                "--engine",
                "lightgbm",
                "--endpoint",
                "auto",
                "--name",
                "iris",
            ],
            vec![
                "metrics",
                "add",
                "--endpoint",
                "iris",
                "--variable-scalar",
                "x0=0,1,5",
                "--log-freq",
                "0.5",
            ],
            vec!["config", "--metric-log-freq", "0.25"],
            vec![
                "model",
                "shadow",
                "--endpoint",
                "iris",
                "--target",
                "iris/2",
                "--fraction",
                "0.5",
            ],
            vec![
                "model",
                "shadow",
                "report",
                "--endpoint",
                "iris",
                "--window",
                "5m",
            ],
            vec![
                "logging",
                "add",
                "--endpoint",
                "ir*",
                "--sample",
                "0.5",
                "--destination",
                "s3://bucket/logs",
            ],
            vec!["logging", "list"],
            vec![
                "monitor",
                "reference",
                "--endpoint",
                "iris",
                "--data",
                reference,
                "--bins",
                "2",
            ],
            vec!["monitor", "drift", "--endpoint", "iris"],
            vec!["model", "publish", &model_id],
            vec!["model", "tag", &model_id, "--add", "prod"],
            vec!["metrics", "list"],
            vec!["config"],
            vec!["model", "info", &model_id],
            vec!["model", "registry"],
            vec!["auth", "list"],
        ] {
            let mut all = vec!["--json"];
            all.extend_from_slice(&args);
            seen.push(cli.ok(&all));
        }
        seen.push(cli.ok(&["model", "remove", "--endpoint", "live"]));
        seen.push(cli.ok(&["metrics", "remove", "--endpoint", "iris"]));
        seen.push(cli.ok(&["model", "shadow", "remove", "--endpoint", "iris"]));
        seen.push(cli.ok(&["logging", "remove", "--endpoint", "ir*"]));
        seen.push(cli.ok(&["monitor", "remove", "--endpoint", "iris"]));
        // Errors: the same line, the same exit code.
        for args in [
            vec!["model", "add", "--engine", "lightgbm", "--endpoint", "nope"],
            vec!["model", "remove", "--endpoint", "missing"],
            vec![
                "model",
                "canary",
                "--endpoint",
                "c",
                "--weights",
                "1",
                "--input-endpoints",
                "a",
                "b",
            ],
            vec!["model", "info", "0123456789abcdef0123456789abcdef"],
            vec!["model", "shadow", "--endpoint", "iris", "--target", "iris"],
            vec!["model", "shadow", "remove", "--endpoint", "iris"],
            vec!["model", "shadow", "report", "--endpoint", "iris"],
            vec!["logging", "remove", "--endpoint", "iris"],
            vec!["monitor", "drift", "--endpoint", "iris"],
            vec![
                "logging",
                "add",
                "--endpoint",
                "iris",
                "--destination",
                "file://relative",
            ],
            vec!["model", "rollout", "status", "--endpoint", "nope"],
            vec!["model", "rollout", "resume", "--endpoint", "roll"],
        ] {
            let out = cli.run(&args);
            seen.push(format!(
                "{:?} {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .filter(|l| l.starts_with("Error"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        outputs.push(
            seen.iter()
                .map(|text| normalise(text, home, service, Some(&model_id)))
                .collect(),
        );
    }
    for (on_store, over_api) in outputs[0].iter().zip(&outputs[1]) {
        assert_eq!(on_store, over_api);
    }
    assert_eq!(outputs[0].len(), outputs[1].len());
    // The remote machine has no store of its own, and commands that need one say so.
    assert!(!remote.path().join("home/serval.db").exists());
    let refused = remote.fail(&["store", "export"]);
    assert!(refused.contains("without --server"), "{refused}");
    // The server recorded the remote changes under the key's name.
    let audit: Value = serde_json::from_str(&served.ok(&["--json", "audit"])).unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["key"] == "remote-ops" && e["operation"] == "canary.put")
    );
    // A wrong key is refused with the server's reason.
    let wrong = Home::with_env(vec![
        ("SERVAL_SERVER".into(), server.base.clone()),
        ("SERVAL_API_KEY".into(), "sk-serval-wrong".into()),
    ]);
    let error = wrong.fail(&["model", "list"]);
    assert!(error.contains("not valid"), "{error}");
}

/// A deployment made from Python only, through the repository's client (`clients/python`,
/// installed in the test venv by scripts/setup-python.sh as `pip install ./clients/python`).
const CLIENT_SCENARIO: &str = r#"
import sys, time
from serval_client import Serval, ServalError

admin_url, follower_url, key, infer_key, model_path, code_v1, code_v2 = sys.argv[1:]
s = Serval(admin_url, key)
follower = Serval(follower_url, infer_key)
body = {"x0": 5.1, "x1": 3.5, "x2": 1.4, "x3": 0.2}

def until(what, check):
    end = time.monotonic() + 60
    while True:
        try:
            if check():
                return
        except ServalError:
            pass
        if time.monotonic() > end:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.05)

model_id = s.models.upload(model_path, name="iris", project="demo", framework="lightgbm")
assert isinstance(model_id, str) and len(model_id) == 32, model_id
assert s.models.get(model_id)["sha256"], "the upload's sha256 is recorded"
v1 = s.endpoints.add(engine="lightgbm", endpoint="iris", version="1", model_id=model_id, preprocess=code_v1)
assert v1["url"] == "iris/1" and v1["preprocess"]["name"] == "preprocess.py", v1
s.endpoints.add(engine="lightgbm", endpoint="iris", version="2", model_id=model_id, preprocess=code_v2)
rule = s.auto_update(endpoint="auto", engine="lightgbm", name="iris", project="demo")
assert rule["model_name"] == "iris", rule
canary = s.canary(endpoint="live", weights=[1, 0], input_endpoints=["iris/1", "iris/2"])
assert canary["weights"] == [1.0, 0.0], canary
metric = s.metrics.add("iris/1", log_freq=1.0, variable_scalar=["x0=0,1,5"])
assert metric["variables"]["x0"]["buckets"] == [0.0, 1.0, 5.0], metric

# A second server on the same store serves all of it within its reload.
until("the endpoint", lambda: follower.infer("iris", body, version="1")["from"] == "v1")
until("the auto-update rule", lambda: "y" in follower.infer("auto", body, version="1"))
until("the canary", lambda: follower.infer("live", body)["from"] == "v1")
# Asking for an explanation reaches postprocess (state["contributions"]); the reply is its own.
assert s.infer("iris", body, version="1", explain=True)["from"] == "v1"
# New weights: every request goes to version 2 now.
s.canary(endpoint="live", weights=[0, 1], input_endpoints=["iris/1", "iris/2"])
until("the new weights", lambda: all(follower.infer("live", body)["from"] == "v2" for _ in range(5)))
# Removed: gone from the second server too.
s.endpoints.remove("auto")

def gone():
    try:
        follower.infer("auto", body, version="1")
    except ServalError as error:
        return error.status == 404
    return False

until("the removal", gone)
# A payload log: added, listed, removed (what it writes: tests/it/payload_logs.rs).
log = s.payload_log("iris", "s3://bucket/logs", sample=0.5, max_file_seconds=60)
assert (log["endpoint"], log["sample"], log["max_file_mb"]) == ("iris", 0.5, 64), log
assert [l["destination"] for l in s.payload_logs()] == ["s3://bucket/logs"]
assert s.remove_payload_log("iris")["endpoint"] == "iris"
assert s.payload_logs() == []
# A drift reference computed elsewhere: stored, reported (no live rows yet), removed.
ref = s.put_drift_reference({"endpoint": "iris", "rows": 4, "source": "notebook", "features": [
    {"name": "f0", "kind": "numeric", "edges": [1.5], "proportions": [0.5, 0.5]}]})
assert (ref["endpoint"], ref["window_seconds"]) == ("iris", 600), ref
report = s.drift("iris", window="1h")
assert (report["rows"], report["features"][0]["status"]) == (0, "no_data"), report
assert s.remove_drift_reference("iris")["source"] == "notebook"
# A shadow: the second server's copies are counted in the report the first one reads (the
# fleet's numbers, through the store). Versions 1 and 2 answer with different "from"s.
pair = s.shadow("iris/1", "iris/2")
assert pair["target"] == "iris/2" and pair["fraction"] == 1.0, pair

def copied():
    follower.infer("iris", body, version="1")
    report = s.shadow_report("iris/1")
    return report[0]["compared"] >= 3 and report[0]["agreement"] == 0.0

until("copies counted over the fleet", copied)
assert [r["target"] for r in s.remove_shadow("iris/1")] == ["iris/2"]
# A rollout from Python: started at its first step, paused, aborted (all traffic back).
started = s.rollout("roll", "iris/1", "iris/2", steps=[10, 100], interval="1h")
assert started["state"] == "running" and started["weights"] == [90.0, 10.0], started
assert s.rollout_pause("roll")["state"] == "paused"
assert s.rollout_status("roll")["events"][-1]["kind"] == "paused"
aborted = s.rollout_abort("roll")
assert aborted["state"] == "aborted" and aborted["weights"] == [100.0, 0.0], aborted
try:
    Serval(admin_url, infer_key).endpoints.add(engine="lightgbm", endpoint="x", model_id=model_id)
    sys.exit("an inference key changed an endpoint")
except ServalError as error:
    assert error.status == 403 and "--role admin" in error.detail, (error.status, error.detail)
try:
    s.endpoints.add(engine="lightgbm", endpoint="x")
    sys.exit("an endpoint without a model was accepted")
except ServalError as error:
    assert error.status == 400 and "needs a model" in error.detail, error.detail
print("deployed")
"#;

fn preprocess_marked(marker: &str) -> String {
    format!(
        "class Preprocess:\n\
         \x20   def preprocess(self, body, state, collect_custom_statistics_fn=None):\n\
         \x20       return [[body['x0'], body['x1'], body['x2'], body['x3']]]\n\
         \x20   def postprocess(self, data, state, collect_custom_statistics_fn=None):\n\
         \x20       return {{'from': '{marker}', 'y': data.tolist() if hasattr(data, 'tolist') else data}}\n"
    )
}

#[test]
fn the_python_client_deploys_and_a_second_server_follows() {
    let home = Home::new();
    home.service("from-python");
    let ops = key(&home, "trainer", &["--role", "admin"]);
    let app = key(&home, "app", &[]);
    let admin_server = Server::start_with(&home, &["--require-auth", "--admin-api", "on"]);
    let follower = Server::start_with(&home, &["--require-auth", "--admin-api", "off"]);
    let v1 = home.write("v1/preprocess.py", &preprocess_marked("v1"));
    let v2 = home.write("v2/preprocess.py", &preprocess_marked("v2"));
    let out = crate::python_script(
        CLIENT_SCENARIO,
        &[
            &admin_server.base,
            &follower.base,
            &ops,
            &app,
            fixture("lgbm_multi_iris.txt").to_str().unwrap(),
            v1.to_str().unwrap(),
            v2.to_str().unwrap(),
        ],
    );
    assert_eq!(out, "deployed");
    let audit: Value = serde_json::from_str(&home.ok(&["--json", "audit"])).unwrap();
    let by_trainer: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["key"] == "trainer")
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        by_trainer,
        [
            "model.register",
            "endpoint.put",
            "endpoint.put",
            "auto_update.put",
            "canary.put",
            "metrics.add",
            "canary.put",
            "endpoint.remove",
            "logging.put",
            "logging.remove",
            "drift.reference",
            "drift.remove",
            "shadow.put",
            "shadow.remove",
            "rollout.start",
            "rollout.pause",
            "rollout.abort",
        ]
    );
}

/// Validates the OpenAPI document with openapi-spec-validator and renders it with
/// scripts/openapi_reference.py; prints the page.
const OPENAPI_CHECK: &str = r#"
import json, sys, runpy
from openapi_spec_validator import validate
doc = json.load(open(sys.argv[1]))
validate(doc)
render = runpy.run_path(sys.argv[2])["render"]
sys.stdout.write(render(doc))
"#;

/// `GET /api/v1/openapi.json` is a valid OpenAPI 3.1 document (checked by a real validator);
/// every operation it names is served (none falls through to the router's 404/405), and
/// docs/admin-api-reference.md is its rendering (SERVAL_UPDATE_DOCS=1 rewrites the page). That
/// every served route is in it holds by construction (`http::openapi` tests).
#[test]
fn the_openapi_document_validates_and_every_route_in_it_is_served() {
    let home = Home::new();
    let service = home.service("doc");
    let ops = key(&home, "ops", &["--role", "admin"]);
    let app = key(&home, "app", &[]);
    let server = Server::start_with(&home, &["--require-auth"]);
    let api = Api::new(&server);
    // Open: it holds no data.
    let doc = api.call("GET", "/api/v1/openapi.json", None, &[], None);
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    let file = home.write("openapi.json", &doc.body.to_string());
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/openapi_reference.py");
    let page = crate::python_script(
        OPENAPI_CHECK,
        &[file.to_str().unwrap(), script.to_str().unwrap()],
    );
    let reference =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/admin-api-reference.md");
    if std::env::var_os("SERVAL_UPDATE_DOCS").is_some() {
        std::fs::write(&reference, format!("{page}\n")).unwrap();
    }
    let written = std::fs::read_to_string(&reference).unwrap();
    assert_eq!(
        written.trim_end(),
        page.trim_end(),
        "docs/admin-api-reference.md is not the document's rendering: run this test with SERVAL_UPDATE_DOCS=1"
    );

    let mut operations = 0;
    let mut admin_operations = 0;
    for (path, methods) in doc.body["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{service}", &service)
            .replace("{endpoint}", "iris")
            .replace("{version}", "1")
            .replace("{name}", "nobody")
            .replace("{id}", &"0".repeat(32));
        for (method, operation) in methods.as_object().unwrap() {
            let method = method.to_uppercase();
            let body = (method != "GET").then_some(b"{}".as_slice());
            // Every admin route: 401 without a key, 403 for an inference key, before anything.
            let tag = operation["tags"][0].as_str().unwrap_or_default();
            if !matches!(tag, "console" | "meta") {
                // Without a body: a refusal answers before reading one, and the server closes a
                // connection whose body was left unread (a pooled client would then reuse it).
                let none = api.call(&method, &concrete, None, &[], None);
                assert_eq!(
                    none.status, 401,
                    "{method} {path} without a key: {}",
                    none.body
                );
                let infer = api.call(&method, &concrete, Some(&app), &[], None);
                assert_eq!(
                    infer.status, 403,
                    "{method} {path} with an inference key: {}",
                    infer.body
                );
                admin_operations += 1;
            }
            let reply = api.call(
                &method,
                &concrete,
                Some(&ops),
                &[("Content-Type", "application/json")],
                body,
            );
            let fallback =
                reply.status == 405 || (reply.status == 404 && reply.body["detail"] == "Not Found");
            assert!(
                !fallback,
                "{method} {path} is not served: {} {}",
                reply.status, reply.body
            );
            operations += 1;
        }
    }
    assert!(operations >= 40, "only {operations} operations documented");
    assert!(
        admin_operations >= 35,
        "only {admin_operations} admin operations"
    );
}
