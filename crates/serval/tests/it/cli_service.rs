//! `create`, `list`, `config`, service selection and global options.

use crate::Home;

#[test]
fn create_and_list_services() {
    let home = Home::new();
    assert_eq!(home.json(&["list"]), serde_json::json!([]));
    let id = home.service("demo");
    let out = home.ok(&["list"]);
    let lines: Vec<_> = out.lines().collect();
    assert!(lines[0].starts_with("ID"), "{out}");
    assert!(lines[1].starts_with(&id) && lines[1].contains("demo") && lines[1].contains("DevOps"));

    let created = home.json(&[
        "create",
        "--name",
        "second",
        "--project",
        "P",
        "--tags",
        "a",
        "b",
    ]);
    assert_eq!(created["name"], "second");
    assert_eq!(created["project"], "P");
    assert_eq!(created["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(created["revision"], 1);
    let list = home.json(&["list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["endpoints"], 0);
}

#[test]
fn service_is_picked_by_flag_env_or_being_the_only_one() {
    let home = Home::new();
    let stderr = home.fail(&["model", "list"]);
    assert!(stderr.contains("no serving service exists"), "{stderr}");

    let first = home.service("one");
    let out = home.run(&["model", "list"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("using the only service id={first}")),
        "{stderr}"
    );

    let second = home.service("two");
    let stderr = home.fail(&["model", "list"]);
    assert!(
        stderr.contains("2 serving services exist")
            && stderr.contains(&first)
            && stderr.contains(&second)
    );

    // --id before the subcommand, after it, and from the environment.
    let a = home.json(&["--id", &second, "model", "list"]);
    assert_eq!(a["service"], second.as_str());
    let b = home.json(&["model", "list", "--id", &first]);
    assert_eq!(b["service"], first.as_str());
    let out = home
        .command(&["--json", "model", "list"])
        .env("SERVAL_SERVICE_ID", &second)
        .output()
        .unwrap();
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["service"], second.as_str());

    let stderr = home.fail(&["--id", "0123abcd", "model", "list"]);
    assert!(
        stderr.contains("serving service '0123abcd' not found"),
        "{stderr}"
    );
}

#[test]
fn config_stores_settings_and_rejects_bad_values() {
    let home = Home::new();
    let id = home.service("demo");
    let shown = home.json(&["config"]);
    assert_eq!(shown["metric_log_freq"], serde_json::Value::Null);

    let set = home.json(&[
        "config",
        "--metric-log-freq",
        "0.25",
        "--base-serving-url",
        "http://127.0.0.1:9000/serve",
        "--triton-grpc-server",
        "127.0.0.1:8001",
        "--python",
        "python3",
    ]);
    assert_eq!(set["metric_log_freq"], 0.25);
    assert_eq!(set["serving_base_url"], "http://127.0.0.1:9000/serve");
    assert_eq!(set["triton_grpc_server"], "127.0.0.1:8001");
    assert_eq!(set["python"], "python3");
    assert_eq!(home.json(&["config"])["metric_log_freq"], 0.25);
    let revision = home.revision(&id);

    for bad in [
        &["config", "--metric-log-freq", "1.5"][..],
        &["config", "--base-serving-url", "not a url"],
        &["config", "--triton-grpc-server", "nohostport"],
    ] {
        home.fail(bad);
    }
    assert_eq!(
        home.revision(&id),
        revision,
        "failed commands must write nothing"
    );
    // The metric default is what `metrics list` reports.
    assert_eq!(
        home.json(&["metrics", "list"])["default_log_frequency"],
        0.25
    );
}

#[test]
fn no_subcommand_prints_help_and_usage_errors_exit_2() {
    let home = Home::new();
    let out = home.run(&[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    let out = home.run(&["model", "add", "--endpoint", "x"]);
    assert_eq!(out.status.code(), Some(2));
    let out = home.run(&["model", "add", "--engine", "pytorch", "--endpoint", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a supported engine"));
    // --yes is accepted anywhere for compatibility.
    home.service("demo");
    home.ok(&["--yes", "model", "list"]);
}

#[test]
fn abbreviated_long_flags_work_like_argparse() {
    let home = Home::new();
    home.ok(&["create", "--na", "short"]);
    assert_eq!(home.json(&["list"])[0]["name"], "short");
}

#[test]
fn debug_shows_the_error_chain() {
    let home = Home::new();
    let out = home.run(&["--debug", "--store", "postgres://x/y", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Caused by") || stderr.contains("PostgreSQL"),
        "{stderr}"
    );
}
