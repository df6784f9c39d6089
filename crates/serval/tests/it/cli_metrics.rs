//! `metrics add | remove | list`.

use serde_json::json;

use crate::Home;

fn setup() -> (Home, String) {
    let home = Home::new();
    let service = home.service("demo");
    let model = home.upload("iris", "xgb_multi_iris.json", &[]);
    home.add_endpoint("xgboost", "test_model_sklearn", None, &model);
    (home, service)
}

#[test]
fn metrics_add_merges_variables_like_clearml() {
    let (home, _service) = setup();
    let rule = home.json(&[
        "metrics",
        "add",
        "--endpoint",
        "test_model_sklearn",
        "--log-freq",
        "0.5",
        "--variable-scalar",
        "x0=0,0.1,0.5,1,10",
        "x1=0.0/1.0/5",
        "--variable-enum",
        "animal=cat,dog",
        "--variable-value",
        "x2",
        "--variable-counter",
        "hits",
    ]);
    assert_eq!(rule["endpoint"], "test_model_sklearn");
    assert_eq!(rule["log_frequency"], 0.5);
    assert_eq!(
        rule["variables"]["x0"],
        json!({"type": "scalar", "buckets": [0.0, 0.1, 0.5, 1.0, 10.0]})
    );
    assert_eq!(
        rule["variables"]["x1"],
        json!({"type": "scalar", "buckets": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]})
    );
    assert_eq!(
        rule["variables"]["animal"],
        json!({"type": "enum", "buckets": ["cat", "dog"]})
    );
    assert_eq!(rule["variables"]["x2"], json!({"type": "value"}));
    assert_eq!(rule["variables"]["hits"], json!({"type": "counter"}));

    // Adding again merges, replaces same-named variables, and keeps --log-freq when omitted.
    let out = home.run(&[
        "metrics",
        "add",
        "--endpoint",
        "/test_model_sklearn/",
        "--variable-scalar",
        "x0=1,2",
        "y=0,1",
    ]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Metric logging 'test_model_sklearn' updated")
    );
    let list = home.json(&["metrics", "list"]);
    let rule = &list["metrics"][0];
    assert_eq!(rule["log_frequency"], 0.5);
    assert_eq!(rule["variables"]["x0"]["buckets"], json!([1.0, 2.0]));
    assert_eq!(rule["variables"]["y"]["buckets"], json!([0.0, 1.0]));
    assert_eq!(rule["variables"].as_object().unwrap().len(), 6);
    assert_eq!(list["default_log_frequency"], 1.0);

    let text = home.ok(&["metrics", "list"]);
    assert!(
        text.lines().any(|l| l.starts_with("test_model_sklearn")
            && l.contains("animal")
            && l.contains("cat,dog")),
        "{text}"
    );
}

#[test]
fn metrics_accept_prefixes_and_refuse_unknown_endpoints() {
    let (home, service) = setup();
    home.ok(&[
        "model",
        "auto-update",
        "--engine",
        "xgboost",
        "--endpoint",
        "auto",
        "--name",
        "iris",
    ]);
    let before = home.revision(&service);
    let stderr = home.fail(&[
        "metrics",
        "add",
        "--endpoint",
        "nope",
        "--variable-value",
        "x",
    ]);
    assert!(
        stderr.contains("Metric logging 'nope' references a nonexistent endpoint"),
        "{stderr}"
    );
    let stderr = home.fail(&[
        "metrics",
        "add",
        "--endpoint",
        "auto",
        "--variable-value",
        "x",
    ]);
    assert!(stderr.contains("use 'auto/*'"), "{stderr}");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--variable-scalar", "x0"],
            "should be in the form of <name>=<buckets>",
        ),
        (
            &["--variable-scalar", "x0=a,b"],
            "bucket 'a' is not a number",
        ),
        (&["--variable-scalar", "x0=1/0/5"], "min must be below max"),
        (&["--variable-enum", "x0"], "x1=cat,dog,sheep"),
        (
            &["--log-freq", "2", "--variable-value", "x"],
            "--log-freq must be between 0 and 1",
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["metrics", "add", "--endpoint", "test_model_sklearn"];
        all.extend_from_slice(args);
        let stderr = home.fail(&all);
        assert!(
            stderr.contains(message),
            "{args:?}: expected '{message}' in:\n{stderr}"
        );
    }
    assert_eq!(home.revision(&service), before);

    let rule = home.json(&[
        "metrics",
        "add",
        "--endpoint",
        "auto/*",
        "--variable-scalar",
        "y=0,1",
    ]);
    assert_eq!(rule["endpoint"], "auto/*");
    assert_eq!(rule["log_frequency"], serde_json::Value::Null);
    home.ok(&["metrics", "add", "--endpoint", "test_*", "--log-freq", "0"]);
}

#[test]
fn metrics_remove_variables_or_rules() {
    let (home, service) = setup();
    home.ok(&[
        "metrics",
        "add",
        "--endpoint",
        "test_model_sklearn",
        "--variable-value",
        "a",
        "b",
    ]);
    assert_eq!(
        home.ok(&[
            "metrics",
            "remove",
            "--endpoint",
            "test_model_sklearn",
            "--variable",
            "a"
        ])
        .trim(),
        "Removing metric endpoint: test_model_sklearn / a"
    );
    let before = home.revision(&service);
    let stderr = home.fail(&[
        "metrics",
        "remove",
        "--endpoint",
        "test_model_sklearn",
        "--variable",
        "b",
        "zz",
    ]);
    assert!(stderr.contains("Could not remove metric zz from endpoint test_model_sklearn"));
    assert_eq!(home.revision(&service), before, "all or nothing");
    assert_eq!(
        home.json(&["metrics", "list"])["metrics"][0]["variables"],
        json!({"b": {"type": "value"}})
    );
    assert_eq!(
        home.ok(&["metrics", "remove", "--endpoint", "test_model_sklearn"])
            .trim(),
        "Removing metric endpoint: test_model_sklearn"
    );
    home.fail(&["metrics", "remove", "--endpoint", "test_model_sklearn"]);
    assert_eq!(home.json(&["metrics", "list"])["metrics"], json!([]));
}
