//! `model add | remove | list | canary | auto-update` and their validation.

use serde_json::json;

use crate::{Home, PREPROCESS};

fn setup() -> (Home, String, String) {
    let home = Home::new();
    let service = home.service("demo");
    let model = home.upload("iris-xgb", "xgb_multi_iris.json", &["--project", "demo"]);
    (home, service, model)
}

#[test]
fn add_endpoints_by_id_and_by_registry_query() {
    let (home, service, model) = setup();
    let out = home.add_endpoint("xgboost", "iris", Some("1"), &model);
    assert!(
        out.starts_with("Endpoint 'iris/1' added (engine xgboost"),
        "{out}"
    );

    // --name/--project resolve to the newest matching model at add time.
    let newer = home.upload("iris-xgb", "xgb_multi_iris.ubj", &["--project", "demo"]);
    let added = home.json(&[
        "model",
        "add",
        "--engine",
        "xgboost",
        "--endpoint",
        "iris",
        "--version",
        "2",
        "--name",
        "iris-xgb",
        "--project",
        "demo",
    ]);
    assert_eq!(added["model_id"], newer.as_str());
    assert_eq!(added["url"], "iris/2");

    // --published restricts the query: nothing published yet.
    let stderr = home.fail(&[
        "model",
        "add",
        "--engine",
        "xgboost",
        "--endpoint",
        "p",
        "--name",
        "iris-xgb",
        "--published",
    ]);
    assert!(
        stderr.contains("Could not find any Model to serve"),
        "{stderr}"
    );
    home.ok(&["model", "publish", &model]);
    let added = home.json(&[
        "model",
        "add",
        "--engine",
        "xgboost",
        "--endpoint",
        "p",
        "--name",
        "iris-xgb",
        "--published",
    ]);
    assert_eq!(added["model_id"], model.as_str());

    let list = home.json(&["--id", &service, "model", "list"]);
    let urls: Vec<_> = list["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls, vec!["iris/1", "iris/2", "p"]);
    assert_eq!(list["endpoints"][0]["engine"], "xgboost");
    assert_eq!(list["endpoints"][0]["version"], "1");
    assert_eq!(list["endpoints"][2]["version"], serde_json::Value::Null);
    assert_eq!(list["revision"], 4);

    let text = home.ok(&["model", "list"]);
    assert!(
        text.contains("iris/1") && text.contains(&format!("{model} (iris-xgb)")),
        "{text}"
    );
}

#[test]
fn add_stores_io_aux_and_preprocess() {
    let (home, _service, model) = setup();
    let code = home.write("code/preprocess.py", PREPROCESS);
    let aux = home.write("config.pbtxt", "platform: \"onnxruntime_onnx\"\n");
    let added = home.json(&[
        "model",
        "add",
        "--engine",
        "triton",
        "--endpoint",
        "digits",
        "--model-id",
        &model,
        "--preprocess",
        code.to_str().unwrap(),
        "--input-size",
        "1",
        "28",
        "28",
        "--input-name",
        "INPUT__0",
        "--input-type",
        "float32",
        "--output-size",
        "[-1, 10]",
        "--output-name",
        "OUTPUT__0",
        "--output-type",
        "float",
        "--aux-config",
        aux.to_str().unwrap(),
    ]);
    assert_eq!(
        added["io"],
        json!({"input_name": ["INPUT__0"], "input_type": ["float32"], "input_size": [[1, 28, 28]],
               "output_name": ["OUTPUT__0"], "output_type": ["float64"], "output_size": [[-1, 10]]})
    );
    assert_eq!(added["aux_config"], "platform: \"onnxruntime_onnx\"\n");
    let pre = &added["preprocess"];
    assert_eq!(pre["name"], "preprocess.py");
    assert_eq!(pre["kind"], "file");
    let stored = url::Url::parse(pre["uri"].as_str().unwrap())
        .unwrap()
        .to_file_path()
        .unwrap();
    assert_eq!(std::fs::read_to_string(stored).unwrap(), PREPROCESS);

    let added = home.json(&[
        "model",
        "add",
        "--engine",
        "xgboost",
        "--endpoint",
        "kv",
        "--model-id",
        &model,
        "--aux-config",
        "platform=\"onnxruntime_onnx\"",
        "max_batch_size=8",
        "dynamic_batching.max_queue_delay_microseconds=100",
    ]);
    assert_eq!(
        added["aux_config"],
        json!({"platform": "onnxruntime_onnx", "max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": 100}})
    );

    // A package folder is packed; without __init__.py it is refused.
    home.write("pkg/__init__.py", "from .helper import Preprocess\n");
    home.write("pkg/helper.py", PREPROCESS);
    let pkg = home.path().join("pkg");
    let added = home.json(&[
        "model",
        "add",
        "--engine",
        "custom",
        "--endpoint",
        "pipe",
        "--preprocess",
        pkg.to_str().unwrap(),
    ]);
    assert_eq!(added["preprocess"]["kind"], "package");
    assert_eq!(added["preprocess"]["name"], "pkg.tar.gz");
    assert_eq!(added["model_id"], serde_json::Value::Null);
    home.write("nopkg/helper.py", PREPROCESS);
    let stderr = home.fail(&[
        "model",
        "add",
        "--engine",
        "custom",
        "--endpoint",
        "x",
        "--preprocess",
        home.path().join("nopkg").to_str().unwrap(),
    ]);
    assert!(stderr.contains("has no __init__.py"), "{stderr}");
}

#[test]
fn add_refuses_what_cannot_be_served() {
    let (home, service, model) = setup();
    let before = home.revision(&service);
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--engine",
                "xgboost",
                "--endpoint",
                "/lead",
                "--model-id",
                &model,
            ],
            "must not start with '/'",
        ),
        (
            &[
                "--engine",
                "xgboost",
                "--endpoint",
                "a/b",
                "--model-id",
                &model,
            ],
            "must not contain '/'",
        ),
        (
            &[
                "--engine",
                "xgboost",
                "--endpoint",
                "a b",
                "--model-id",
                &model,
            ],
            "contains ' '",
        ),
        (
            &[
                "--engine",
                "xgboost",
                "--endpoint",
                "ok",
                "--version",
                "1/2",
                "--model-id",
                &model,
            ],
            "version '1/2'",
        ),
        (
            &["--engine", "xgboost", "--endpoint", "ok"],
            "engine 'xgboost' needs a model",
        ),
        (
            &[
                "--engine",
                "xgboost",
                "--endpoint",
                "ok",
                "--model-id",
                "ffffffffffffffffffffffffffffffff",
            ],
            "not found in the registry",
        ),
        (
            &["--engine", "custom", "--endpoint", "ok"],
            "pass --preprocess",
        ),
        (
            &["--engine", "custom_async", "--endpoint", "ok"],
            "pass --preprocess",
        ),
        (
            &[
                "--engine",
                "xgboost",
                "--endpoint",
                "ok",
                "--model-id",
                &model,
                "--preprocess",
                "/no/such.py",
            ],
            "Preprocessing code '/no/such.py' could not be found",
        ),
        (
            &[
                "--engine",
                "xgboost",
                "--endpoint",
                "ok",
                "--model-id",
                &model,
                "--input-type",
                "floaty",
            ],
            "'floaty' is not a supported type",
        ),
        (
            &[
                "--engine",
                "xgboost",
                "--endpoint",
                "ok",
                "--model-id",
                &model,
                "--input-size",
                "1",
                "[2]",
            ],
            "mixes numbers and lists",
        ),
        (
            &[
                "--engine",
                "xgboost",
                "--endpoint",
                "ok",
                "--model-id",
                &model,
                "--aux-config",
                "novalue",
                "x=1",
            ],
            "must be key=value",
        ),
        (
            &[
                "--engine",
                "xgboost",
                "--endpoint",
                "ok",
                "--name",
                "nothing-like-this",
            ],
            "Could not find any Model to serve",
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["model", "add"];
        all.extend_from_slice(args);
        let stderr = home.fail(&all);
        assert!(
            stderr.contains(message),
            "{args:?}: expected '{message}' in:\n{stderr}"
        );
    }
    assert_eq!(
        home.revision(&service),
        before,
        "refused commands must write nothing"
    );
    assert!(
        home.json(&["model", "list"])["endpoints"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn overwrite_warns_and_keeps_one_endpoint() {
    let (home, _service, model) = setup();
    home.add_endpoint("xgboost", "m", None, &model);
    let out = home.run(&[
        "model",
        "add",
        "--engine",
        "lightgbm",
        "--endpoint",
        "m/",
        "--model-id",
        &model,
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Warning: Model endpoint 'm' overwritten"),
        "{stderr}"
    );
    assert!(
        stderr.contains("registered as 'xgboost', but engine 'lightgbm'"),
        "{stderr}"
    );
    let list = home.json(&["model", "list"]);
    assert_eq!(list["endpoints"].as_array().unwrap().len(), 1);
    assert_eq!(list["endpoints"][0]["engine"], "lightgbm");
}

#[test]
fn canaries_are_validated() {
    let (home, service, model) = setup();
    for v in ["1", "2"] {
        home.ok(&[
            "model",
            "add",
            "--engine",
            "xgboost",
            "--endpoint",
            "m",
            "--version",
            v,
            "--model-id",
            &model,
        ]);
    }
    let before = home.revision(&service);
    let cases: &[(&[&str], &str)] = &[
        (
            &["--endpoint", "c", "--input-endpoints", "m/1", "m/2"],
            "needs --weights",
        ),
        (
            &[
                "--endpoint",
                "c",
                "--weights",
                "1",
                "--input-endpoints",
                "m/1",
                "m/2",
            ],
            "1 weights for 2 endpoints",
        ),
        (
            &[
                "--endpoint",
                "c",
                "--weights",
                "0",
                "0",
                "--input-endpoints",
                "m/1",
                "m/2",
            ],
            "must not all be zero",
        ),
        (
            &[
                "--endpoint",
                "c",
                "--weights",
                "-1",
                "2",
                "--input-endpoints",
                "m/1",
                "m/2",
            ],
            "non-negative",
        ),
        (
            &["--endpoint", "c", "--weights", "1"],
            "needs --input-endpoints or --input-endpoint-prefix",
        ),
        (
            &[
                "--endpoint",
                "c",
                "--weights",
                "1",
                "--input-endpoints",
                "m/1",
                "--input-endpoint-prefix",
                "m/",
            ],
            "both prefix",
        ),
        (
            &[
                "--endpoint",
                "c/1",
                "--weights",
                "1",
                "--input-endpoints",
                "m/1",
            ],
            "must not contain '/'",
        ),
        (
            &[
                "--endpoint",
                "c",
                "--weights",
                "1",
                "--input-endpoints",
                "/m",
            ],
            "must not start with '/'",
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["model", "canary"];
        all.extend_from_slice(args);
        let stderr = home.fail(&all);
        assert!(
            stderr.contains(message),
            "{args:?}: expected '{message}' in:\n{stderr}"
        );
    }
    assert_eq!(home.revision(&service), before);

    let fixed = home.json(&[
        "model",
        "canary",
        "--endpoint",
        "c",
        "--weights",
        "0.1",
        "0.9",
        "--input-endpoints",
        "m/2",
        "m/1",
    ]);
    assert_eq!(
        fixed,
        json!({"name": "c", "weights": [0.1, 0.9], "target": {"endpoints": ["m/2", "m/1"]}})
    );
    let out = home.run(&[
        "model",
        "canary",
        "--endpoint",
        "p",
        "--weights",
        "0.1",
        "0.9",
        "--input-endpoint-prefix",
        "m/",
    ]);
    assert!(out.status.success());
    let out = home.run(&[
        "model",
        "canary",
        "--endpoint",
        "c",
        "--weights",
        "1",
        "1",
        "--input-endpoints",
        "m/1",
        "m/9",
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Model canary 'c' overwritten")
            && stderr.contains("'m/9' is not an endpoint yet"),
        "{stderr}"
    );
    let list = home.json(&["model", "list"]);
    assert_eq!(
        list["canaries"][1],
        json!({"name": "p", "weights": [0.1, 0.9], "target": {"prefix": "m/"}})
    );
}

#[test]
fn auto_update_rules_are_validated_and_stored() {
    let (home, service, model) = setup();
    let stderr = home.fail(&[
        "model",
        "auto-update",
        "--engine",
        "xgboost",
        "--endpoint",
        "b",
    ]);
    assert!(
        stderr.contains("requires at least a project / name / tag"),
        "{stderr}"
    );
    let stderr = home.fail(&[
        "model",
        "auto-update",
        "--engine",
        "xgboost",
        "--endpoint",
        "b",
        "--name",
        "(",
        "--name-regex",
    ]);
    assert!(
        stderr.contains("not a valid regular expression"),
        "{stderr}"
    );
    let stderr = home.fail(&[
        "model",
        "auto-update",
        "--engine",
        "xgboost",
        "--endpoint",
        "b/1",
        "--name",
        "x",
    ]);
    assert!(stderr.contains("must not contain '/'"));
    home.fail(&[
        "model",
        "auto-update",
        "--engine",
        "xgboost",
        "--endpoint",
        "b",
        "--name",
        "x",
        "--max-versions",
        "0",
    ]);

    let rule = home.json(&[
        "model",
        "auto-update",
        "--engine",
        "xgboost",
        "--endpoint",
        "b",
        "--name",
        "iris-.*",
        "--name-regex",
        "--max-versions",
        "2",
        "--published",
        "--input-name",
        "a",
        "b",
    ]);
    assert_eq!(rule["endpoint"], "b");
    assert_eq!(rule["model_name"], "iris-.*");
    assert_eq!(rule["name_regex"], true);
    assert_eq!(rule["max_versions"], 2);
    assert_eq!(rule["only_published"], true);
    assert_eq!(rule["io"], json!({"input_name": ["a", "b"]}));

    // Static endpoints and rules do not share names.
    let stderr = home.fail(&[
        "model",
        "add",
        "--engine",
        "xgboost",
        "--endpoint",
        "b",
        "--version",
        "3",
        "--model-id",
        &model,
    ]);
    assert!(stderr.contains("served by an auto-update rule"), "{stderr}");
    home.add_endpoint("xgboost", "s", None, &model);
    let stderr = home.fail(&[
        "model",
        "auto-update",
        "--engine",
        "xgboost",
        "--endpoint",
        "s",
        "--name",
        "x",
    ]);
    assert!(stderr.contains("endpoint 's' already exists"), "{stderr}");

    let revision = home.revision(&service);
    // Publishing a model the rule matches bumps the service revision (servers pick it up).
    home.ok(&["model", "publish", &model]);
    assert_eq!(home.revision(&service), revision + 1);
    let text = home.ok(&["model", "list"]);
    assert!(text.contains("name~\"iris-.*\""), "{text}");
}

#[test]
fn remove_follows_clearml_order() {
    let (home, service, model) = setup();
    home.add_endpoint("xgboost", "x", None, &model);
    home.add_endpoint("xgboost", "x", Some("1"), &model);
    home.ok(&[
        "model",
        "auto-update",
        "--engine",
        "xgboost",
        "--endpoint",
        "auto",
        "--name",
        "iris-xgb",
    ]);
    home.ok(&[
        "model",
        "canary",
        "--endpoint",
        "c",
        "--weights",
        "1",
        "1",
        "--input-endpoints",
        "x/1",
        "x",
    ]);

    assert_eq!(
        home.ok(&["model", "remove", "--endpoint", "x/1"]).trim(),
        "Removing static endpoint: x/1"
    );
    let out = home.run(&["model", "remove", "--endpoint", "x/"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Removing static endpoint: x"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("canary 'c' still names 'x'"), "{stderr}");
    assert_eq!(
        home.ok(&["model", "remove", "--endpoint", "auto"]).trim(),
        "Removing model monitoring endpoint: auto"
    );
    assert_eq!(
        home.ok(&["model", "remove", "--endpoint", "c"]).trim(),
        "Removing model canary endpoint: c"
    );
    let before = home.revision(&service);
    let stderr = home.fail(&["model", "remove", "--endpoint", "c"]);
    assert!(stderr.contains("Could not find base endpoint URL: c"));
    assert_eq!(home.revision(&service), before);
    let list = home.json(&["model", "list"]);
    assert_eq!(list["endpoints"], json!([]));
    assert_eq!(list["auto_update"], json!([]));
    assert_eq!(list["canaries"], json!([]));
}
