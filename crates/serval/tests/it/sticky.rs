//! Sticky canaries (`model canary --sticky header:NAME | query:NAME | field:NAME`): the same key
//! always reaches the same target, over clearml and V2 alike; requests without the key get the
//! random split; moving the weights moves only the keys that must move. (The split's proportions
//! over 10,000 keys are a unit test of the routing table.)

use std::collections::HashMap;

use serde_json::Value;

use crate::Home;
use crate::serve::{IRIS, Server, wait_until};

/// A custom endpoint that answers with its name.
fn named(home: &Home, name: &str) {
    let code = home.write(
        &format!("{name}/preprocess.py"),
        &format!(
            "class Preprocess:\n    def process(self, data, state, collect_custom_statistics_fn=None):\n        return {{'who': '{name}'}}\n"
        ),
    );
    home.add_custom(name, &code);
}

#[test]
fn sticky_canaries_keep_each_key_on_its_target() {
    let home = Home::new();
    home.service("sticky");
    let xgb = home.upload("iris-xgb", "xgb_multi_iris.json", &[]);
    let lgbm = home.upload("iris-lgbm", "lgbm_multi_iris.txt", &[]);
    for (version, engine, model) in [("1", "xgboost", &xgb), ("2", "lightgbm", &lgbm)] {
        home.ok(&[
            "model",
            "add",
            "--engine",
            engine,
            "--endpoint",
            "iris",
            "--version",
            version,
            "--model-id",
            model,
        ]);
    }
    let canary = |name: &str, weights: [&str; 2], targets: [&str; 2], sticky: &str| {
        home.ok(&[
            "model",
            "canary",
            "--endpoint",
            name,
            "--weights",
            weights[0],
            weights[1],
            "--input-endpoints",
            targets[0],
            targets[1],
            "--sticky",
            sticky,
        ]);
    };
    canary(
        "by_user",
        ["0.25", "0.75"],
        ["iris/1", "iris/2"],
        "header:X-User-Id",
    );
    canary(
        "by_query",
        ["0.5", "0.5"],
        ["iris/1", "iris/2"],
        "query:uid",
    );
    named(&home, "a");
    named(&home, "b");
    canary("by_field", ["0.5", "0.5"], ["a", "b"], "field:user_id");
    // A bad source is refused by the CLI with one line.
    let error = home.fail(&[
        "model",
        "canary",
        "--endpoint",
        "x",
        "--weights",
        "1",
        "--input-endpoints",
        "iris/1",
        "--sticky",
        "cookie:id",
    ]);
    assert!(
        error.contains("header:NAME, field:NAME or query:NAME"),
        "{error}"
    );
    let listed = home.json(&["model", "list"]);
    let shown: Vec<&Value> = listed["canaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["sticky"])
        .collect();
    assert!(
        shown.contains(&&Value::from("header:X-User-Id")),
        "{listed}"
    );

    let server = Server::start(&home);
    // Which version answered: the two models' probabilities differ.
    let answer = |path: &str, headers: &[(&str, &str)]| -> String {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        let (status, body) = server.post_with(path, &all, IRIS.as_bytes());
        assert_eq!(status, 200, "{path}: {body}");
        body["probabilities"].to_string()
    };
    let v1 = answer("/serve/iris/1", &[]);
    let v2 = answer("/serve/iris/2", &[]);
    assert_ne!(v1, v2);
    let target = |reply: String| {
        if reply == v1 {
            "iris/1"
        } else {
            assert_eq!(reply, v2);
            "iris/2"
        }
    };

    // Every key lands on one target, every time, over clearml and V2 alike.
    let keys: Vec<String> = (0..60).map(|i| format!("user-{i}")).collect();
    let mut placed: HashMap<&str, &str> = HashMap::new();
    for key in &keys {
        let first = target(answer("/serve/by_user", &[("X-User-Id", key)]));
        for _ in 0..3 {
            assert_eq!(
                target(answer("/serve/by_user", &[("X-User-Id", key)])),
                first,
                "{key}"
            );
        }
        let v2_body = r#"{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}"#;
        let (status, reply) = server.post_with(
            "/v2/models/by_user/infer",
            &[("Content-Type", "application/json"), ("X-User-Id", key)],
            v2_body.as_bytes(),
        );
        assert_eq!(status, 200, "{reply}");
        let again = server.post_with(
            "/v2/models/by_user/infer",
            &[("Content-Type", "application/json"), ("X-User-Id", key)],
            v2_body.as_bytes(),
        );
        assert_eq!(again.1, reply, "V2 is sticky too ({key})");
        placed.insert(key, first);
    }
    assert!(placed.values().any(|t| *t == "iris/1") && placed.values().any(|t| *t == "iris/2"));
    // The query and a body field are keys too.
    for key in &keys[..10] {
        let path = format!("/serve/by_query?uid={key}");
        let first = answer(&path, &[]);
        assert_eq!(answer(&path, &[]), first);
        let body = format!(r#"{{"user_id": "{key}"}}"#);
        let who = |server: &Server| {
            server
                .post_as("/serve/by_field", "application/json", body.as_bytes())
                .1
        };
        let first = who(&server);
        assert!(first["who"].is_string(), "{first}");
        assert_eq!(who(&server), first);
    }
    // Without a key: the random split, both targets.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..60 {
        seen.insert(target(answer("/serve/by_user", &[])));
    }
    assert_eq!(
        seen.len(),
        2,
        "requests without the key are split at random"
    );

    // 25/75 → 50/50: keys on iris/1 stay, some from iris/2 move over, none the other way.
    canary(
        "by_user",
        ["0.5", "0.5"],
        ["iris/1", "iris/2"],
        "header:X-User-Id",
    );
    wait_until("the new weights", || {
        let overview = server.get("/api/v1/overview").1;
        overview["canaries"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["url"] == "by_user" && c["weights"][0] == 0.5)
        })
    });
    for (key, before) in &placed {
        let now = target(answer("/serve/by_user", &[("X-User-Id", key)]));
        if *before == "iris/1" {
            assert_eq!(now, "iris/1", "{key} left the target that gained weight");
        }
    }
}
