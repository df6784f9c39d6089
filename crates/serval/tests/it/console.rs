//! The built-in console (`/ui`) and its JSON API (`/api/v1`): in real headless Chromium (Debian's
//! `chromium` driven by `playwright-core`, both installed by scripts/setup-browser.sh) against a
//! real server, and the API and its switches over plain HTTP.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::Home;
use crate::serve::{Server, wait_until};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// playwright-core's `node_modules` (`SERVAL_BROWSER_MODULES`, else the setup script's folder).
fn browser_modules() -> PathBuf {
    let dir = std::env::var("SERVAL_BROWSER_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".cache/browser/node_modules"));
    assert!(
        dir.join("playwright-core").is_dir(),
        "playwright-core is not installed in {}: run scripts/setup-browser.sh",
        dir.display()
    );
    dir
}

fn chromium() -> String {
    let path = std::env::var("SERVAL_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&path).is_file(),
        "no chromium at {path}: run scripts/setup-browser.sh"
    );
    path
}

/// A row of the iris fixtures and XGBoost's own prediction for it (refs.json).
fn expected_iris() -> Value {
    let refs: Value =
        serde_json::from_slice(&std::fs::read(crate::fixture("refs.json")).unwrap()).unwrap();
    let row = refs["inputs"]["iris"]["batch"]["data"][0].clone();
    let probabilities = refs["models"]["xgb_multi_iris"]["native"]["batch"]["predict"]["data"][0]
        .as_array()
        .unwrap()
        .clone();
    let label = probabilities
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()))
        .map(|(i, _)| i)
        .unwrap();
    json!({"body": {"instances": [row]}, "label": label, "probabilities": probabilities})
}

/// The service of these tests: two native versions, a canary 25/75, a metric rule, an
/// auto-update rule and an endpoint whose model file is not a model. Returns the LightGBM id.
fn demo(home: &Home) -> String {
    home.service("console-demo");
    let xgb = home.upload(
        "iris-xgboost",
        "xgb_multi_iris.json",
        &["--project", "demo"],
    );
    let lgbm = home.upload("iris-lightgbm", "lgbm_multi_iris.txt", &[]);
    let broken = home.write("broken.json", "this is not a model");
    let bad = home.json(&[
        "model",
        "upload",
        "--name",
        "broken",
        "--path",
        broken.to_str().unwrap(),
    ])["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (endpoint, version, engine, id) in [
        ("iris", "1", "xgboost", &xgb),
        ("iris", "2", "lightgbm", &lgbm),
        ("broken", "", "xgboost", &bad),
    ] {
        let mut args = vec![
            "model",
            "add",
            "--engine",
            engine,
            "--endpoint",
            endpoint,
            "--model-id",
            id,
        ];
        if !version.is_empty() {
            args.extend(["--version", version]);
        }
        home.ok(&args);
    }
    home.ok(&[
        "model",
        "canary",
        "--endpoint",
        "iris_canary",
        "--weights",
        "0.25",
        "0.75",
        "--input-endpoints",
        "iris/1",
        "iris/2",
    ]);
    // Copies of iris/1's requests go to iris/2 (another library's model of the same data).
    home.ok(&[
        "model",
        "shadow",
        "--endpoint",
        "iris/1",
        "--target",
        "iris/2",
    ]);
    // A rollout at its first step (an hour per step: it stays there while the page looks).
    home.ok(&[
        "model",
        "rollout",
        "--endpoint",
        "iris_roll",
        "--from",
        "iris/1",
        "--to",
        "iris/2",
        "--steps",
        "10,50,100",
        "--interval",
        "1h",
    ]);
    // A drift reference for iris/1: the requests the page sends (all one row) drift from it.
    let mut csv = String::from("f0,f1,f2,f3\n");
    for i in 0..200 {
        let x = f64::from(i) / 200.0;
        csv.push_str(&format!(
            "{},{},{},{}\n",
            4.5 + 3.0 * x,
            2.0 + 2.0 * x,
            1.0 + 5.0 * x,
            0.1 + 2.0 * x
        ));
    }
    let reference = home.write("reference.csv", &csv);
    home.ok(&[
        "monitor",
        "reference",
        "--endpoint",
        "iris/1",
        "--data",
        reference.to_str().unwrap(),
    ]);
    home.ok(&[
        "metrics",
        "add",
        "--endpoint",
        "iris/*",
        "--log-freq",
        "1.0",
        "--variable-scalar",
        "x0=4.0/8.0/8",
    ]);
    home.ok(&[
        "model",
        "auto-update",
        "--engine",
        "lightgbm",
        "--endpoint",
        "auto_iris",
        "--name",
        "iris-lightgbm",
        "--max-versions",
        "2",
    ]);
    lgbm
}

#[test]
fn the_console_shows_every_endpoint_live_in_a_real_browser() {
    let modules = browser_modules();
    let chromium = chromium();
    let home = Home::new();
    let lgbm = demo(&home);
    let server = Server::start(&home);
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    let xdg = home.path().join("xdg");
    let out = Command::new("node")
        .arg(repo().join("crates/serval/tests/browser/console.mjs"))
        .env("CONSOLE_URL", &server.base)
        .env("CONSOLE_SERVAL", env!("CARGO_BIN_EXE_serval"))
        .env("CONSOLE_HOME", home.path().join("home"))
        .env("CONSOLE_MODEL", &lgbm)
        .env("CONSOLE_EXPECTED", expected_iris().to_string())
        .env("CONSOLE_ARTIFACTS", &artifacts)
        .env("SERVAL_BROWSER_MODULES", &modules)
        .env("SERVAL_CHROMIUM", &chromium)
        .env("XDG_CONFIG_HOME", &xdg)
        .env("XDG_CACHE_HOME", &xdg)
        .env_remove("SERVAL_STORE")
        .env_remove("SERVAL_SERVICE_ID")
        .output()
        .expect("run node (scripts/setup-browser.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser checks failed (screenshots in {}):\n{stdout}\n{stderr}",
        artifacts.display()
    );
    assert!(stdout.contains("all console checks passed"), "{stdout}");
    for shot in ["overview.png", "overview-after-change.png", "endpoint.png"] {
        let bytes = std::fs::read(artifacts.join(shot)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{shot} is a PNG");
    }
    println!("screenshots: {}", artifacts.display());
}

/// With an admin key the page changes canary weights, pauses and aborts a rollout, publishes a
/// model and removes an endpoint (each after a confirmation, each in the audit trail under the key's name); with an
/// inference key it offers no change and the server refuses one.
#[test]
fn the_console_changes_things_with_an_admin_key_only() {
    let modules = browser_modules();
    let chromium = chromium();
    let home = Home::new();
    demo(&home);
    let admin = home.json(&["auth", "create-key", "--name", "ops", "--role", "admin"])["key"]
        .as_str()
        .unwrap()
        .to_string();
    let viewer = home.json(&["auth", "create-key", "--name", "viewer"])["key"]
        .as_str()
        .unwrap()
        .to_string();
    let server = Server::start_with(&home, &["--require-auth"]);
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-admin-artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    let xdg = home.path().join("xdg");
    let out = Command::new("node")
        .arg(repo().join("crates/serval/tests/browser/console_admin.mjs"))
        .env("CONSOLE_URL", &server.base)
        .env("CONSOLE_ADMIN_KEY", &admin)
        .env("CONSOLE_VIEWER_KEY", &viewer)
        .env("CONSOLE_ARTIFACTS", &artifacts)
        .env("SERVAL_BROWSER_MODULES", &modules)
        .env("SERVAL_CHROMIUM", &chromium)
        .env("XDG_CONFIG_HOME", &xdg)
        .env("XDG_CACHE_HOME", &xdg)
        .output()
        .expect("run node (scripts/setup-browser.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser checks failed (screenshots in {}):\n{stdout}\n{stderr}",
        artifacts.display()
    );
    assert!(
        stdout.contains("all admin console checks passed"),
        "{stdout}"
    );
    // What the page did is in the store, under the admin key's name.
    let listing = home.json(&["model", "list"]);
    assert_eq!(listing["canaries"][0]["weights"], json!([0.0, 1.0]));
    assert!(
        !listing["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["url"] == "broken")
    );
    let audit = home.json(&["audit"]);
    let by_ops: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["key"] == "ops")
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        by_ops,
        [
            "canary.put",
            "rollout.pause",
            "rollout.abort",
            "model.publish",
            "endpoint.remove"
        ]
    );
    assert!(!audit.to_string().contains("\"viewer\""));
}

#[test]
fn the_api_reports_state_canaries_and_live_numbers() {
    let home = Home::new();
    demo(&home);
    let server = Server::start(&home);
    // The auto-update rule serves the LightGBM model as auto_iris/1.
    wait_until("auto_iris/1", || {
        server.get("/api/v1/overview").1["auto_update"][0]["versions"][0]["serving"] == true
    });
    let (status, overview) = server.get("/api/v1/overview");
    assert_eq!(status, 200, "{overview}");
    assert_eq!(overview["service"]["name"], "console-demo");
    let rule = &overview["auto_update"][0];
    assert_eq!(rule["endpoint"], "auto_iris");
    assert_eq!(rule["max_versions"], 2);
    assert_eq!(rule["versions"][0]["url"], "auto_iris/1");
    let endpoints = overview["endpoints"].as_array().unwrap();
    let urls: Vec<&str> = endpoints
        .iter()
        .map(|e| e["url"].as_str().unwrap())
        .collect();
    // By name, newest version first.
    assert_eq!(urls, ["auto_iris/1", "broken", "iris/2", "iris/1"]);
    assert_eq!(endpoints[0]["auto_update"], "auto_iris");
    assert_eq!(endpoints[2]["model"]["name"], "iris-lightgbm");
    assert_eq!(endpoints[3]["runs"], "native");
    let broken = &endpoints[1];
    assert_eq!(broken["state"], "failed");
    assert_eq!(broken["serving"], false);
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("not a model the 'xgboost' engine loads"),
        "{broken}"
    );
    assert!(
        !broken["error"]
            .as_str()
            .unwrap()
            .contains(home.path().to_str().unwrap()),
        "no server paths in errors"
    );
    let canary = &overview["canaries"][0];
    assert_eq!(canary["url"], "iris_canary");
    assert_eq!(canary["weights"], json!([0.25, 0.75]));
    assert_eq!(canary["routes"][0]["url"], "iris/1");
    assert_eq!(canary["routes"][0]["share"], 0.25);
    assert_eq!(canary["routes"][1]["share"], 0.75);

    // Numbers: a bad and a good request show as counts, the error with its text.
    assert_eq!(server.post("/serve/iris/1", crate::serve::IRIS).0, 200);
    assert_eq!(server.post("/serve/iris/1", r#"{"x0": 1}"#).0, 422);
    let (_, detail) = server.get("/api/v1/endpoints/iris/1");
    assert_eq!(detail["endpoint"]["stats"]["requests"], 2, "{detail}");
    assert_eq!(detail["endpoint"]["stats"]["errors"], 1);
    let error = &detail["recent_errors"][0];
    assert_eq!(error["kind"], "invalid_input");
    assert_eq!(error["protocol"], "clearml");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("missing features")
    );
    assert_eq!(detail["metadata"]["inputs"][0]["shape"], json!([-1, 4]));
    // The example body is valid as it is.
    let example = detail["example"]["body"].to_string();
    assert_eq!(server.post("/serve/iris/1", &example).0, 200, "{example}");
    let x0 = detail["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "x0")
        .unwrap();
    assert_eq!(x0["type"], "scalar");
    assert_eq!(x0["count"], 1, "the good request's x0 was recorded: {x0}");
    // Rates follow from the sampled history (every 2 s).
    wait_until("a request rate", || {
        server.get("/api/v1/endpoints/iris/1").1["endpoint"]["stats"]["requests_per_second"]
            .as_f64()
            .is_some_and(|r| r > 0.0)
    });
    let (_, five) = server.get("/api/v1/endpoints/iris/1?window=300");
    assert_eq!(five["server"]["window_seconds"], 300);
    assert_eq!(five["endpoint"]["stats"]["requests"], 3);
    let (status, bad) = server.get("/api/v1/overview?window=soon");
    assert_eq!(status, 400);
    assert!(bad["detail"].as_str().unwrap().contains("window"), "{bad}");
    let (status, missing) = server.get("/api/v1/endpoints/nope");
    assert_eq!(status, 404);
    assert_eq!(missing["detail"], "no endpoint 'nope' is configured");

    // The page and its files, with a policy that keeps the page on this server.
    let page = server.get_text("/ui/");
    assert!(page.contains("serval console"));
    let response = ureq::get(format!("{}/ui/app.js", server.base))
        .call()
        .unwrap();
    let csp = response
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    assert_eq!(server.get("/ui/nothing.js").0, 404);
}

#[test]
fn ui_off_turns_the_console_and_its_api_off() {
    let home = Home::new();
    home.service("quiet");
    let server = Server::start_with(&home, &["--ui", "off"]);
    assert_eq!(server.get("/ui/").0, 404);
    assert_eq!(server.get("/api/v1/overview").0, 404);
    assert_eq!(server.get("/health/ready").0, 200);
    drop(server);
    // Metrics off: the console shows state without numbers.
    let server = Server::start_with(&home, &["--disable-metrics"]);
    let (status, overview) = server.get("/api/v1/overview");
    assert_eq!(status, 200);
    assert_eq!(overview["server"]["metrics"], false);
    assert_eq!(overview["service"]["name"], "quiet");
    let out = home.run(&["serve", "--ui", "maybe"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values: on, off"));
}

#[test]
fn with_required_keys_the_api_needs_one_and_a_scoped_key_sees_its_endpoints_only() {
    let home = Home::new();
    demo(&home);
    let all = home.json(&["auth", "create-key", "--name", "ops"])["key"]
        .as_str()
        .unwrap()
        .to_string();
    let scoped = home.json(&[
        "auth",
        "create-key",
        "--name",
        "broken-only",
        "--endpoints",
        "broken",
    ])["key"]
        .as_str()
        .unwrap()
        .to_string();
    let server = Server::start_with(&home, &["--require-auth"]);
    // The page is open (it holds no data); the API is not.
    assert!(server.get_text("/ui/").contains("serval console"));
    let (status, body) = server.get("/api/v1/overview");
    assert_eq!(status, 401, "{body}");
    let get = |key: &str, path: &str| -> (u16, Value) {
        let mut r = ureq::get(format!("{}{path}", server.base))
            .header("Authorization", &format!("Bearer {key}"))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        let text = r.body_mut().read_to_string().unwrap();
        (
            r.status().as_u16(),
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    };
    let (status, overview) = get(&all, "/api/v1/overview");
    assert_eq!(status, 200);
    assert_eq!(overview["endpoints"].as_array().unwrap().len(), 4);
    let (status, overview) = get(&scoped, "/api/v1/overview");
    assert_eq!(status, 200);
    let urls: Vec<&Value> = overview["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["url"])
        .collect();
    assert_eq!(urls, [&json!("broken")]);
    assert_eq!(overview["canaries"], json!([]));
    assert_eq!(get(&scoped, "/api/v1/endpoints/iris/1").0, 404);
    assert_eq!(get(&scoped, "/api/v1/endpoints/broken").0, 200);
    assert_eq!(get("wrong", "/api/v1/overview").0, 401);
}
