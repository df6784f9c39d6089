//! Automatic deployment end to end: an auto-update rule follows the registry while serving, and a
//! prefix canary follows the newest versions.

use serde_json::{Value, json};

use crate::serve::{IRIS, Server, wait_until};
use crate::{Home, fixture};

/// The regression model answers one float; the classifier answers classes with probabilities.
fn is_classifier(reply: &Value) -> bool {
    reply.get("probabilities").is_some()
}

fn upload(home: &Home, file: &str, publish: bool) -> String {
    let path = fixture(file);
    let mut args = vec![
        "model",
        "upload",
        "--name",
        "iris-model",
        "--project",
        "auto",
        "--path",
        path.to_str().unwrap(),
    ];
    if publish {
        args.push("--publish");
    }
    home.json(&args)["id"].as_str().unwrap().to_string()
}

/// Waits until the running server serves the service's current revision.
fn wait_served(home: &Home) {
    wait_until("the current revision to be served", || {
        let list = home.json(&["model", "list"]);
        list["instances"][0]["revision"] == list["revision"]
    });
}

/// Share of `n` requests to `/serve/B` answered by the classifier.
fn classifier_share(server: &Server, n: u32) -> f64 {
    let mut classifier = 0;
    for _ in 0..n {
        let (status, reply) = server.post("/serve/B", IRIS);
        assert_eq!(status, 200, "{reply}");
        if is_classifier(&reply) {
            classifier += 1;
        }
    }
    f64::from(classifier) / f64::from(n)
}

#[test]
fn auto_update_serves_the_newest_models_and_canaries_follow() {
    let home = Home::new();
    home.service("demo");
    home.ok(&[
        "model",
        "auto-update",
        "--engine",
        "xgboost",
        "--endpoint",
        "B",
        "--name",
        "iris-model",
        "--published",
        "--max-versions",
        "2",
    ]);
    let server = Server::start(&home);
    assert_eq!(
        server.post("/serve/B/1", IRIS).0,
        404,
        "nothing published yet"
    );

    let a = upload(&home, "clearml_xgb.json", true);
    wait_until("B/1", || {
        server.post("/serve/B/1", IRIS) == (200, json!({"y": [1.9921026229858398]}))
    });

    let b = upload(&home, "xgb_multi_iris.json", false);
    assert_eq!(
        server.post("/serve/B/2", IRIS).0,
        404,
        "unpublished models are not served"
    );
    home.ok(&["model", "publish", &b]);
    wait_until("B/2", || is_classifier(&server.post("/serve/B/2", IRIS).1));

    let c = upload(&home, "clearml_xgb.json", true);
    wait_until("B/3 and B/1 gone", || {
        server.post("/serve/B/3", IRIS).0 == 200 && server.post("/serve/B/1", IRIS).0 == 404
    });
    let list = home.json(&["model", "list"]);
    assert_eq!(list["auto_update"][0]["versions"], json!({"2": b, "3": c}));
    wait_until("status of B/3", || {
        home.json(&["model", "list"])["instances"][0]["endpoints"]["B/3"]["model_id"] == c.as_str()
    });
    assert_ne!(a, c);

    // A prefix canary: 10% to the newest version (3, regression), 90% to the one before (2).
    home.ok(&[
        "model",
        "canary",
        "--endpoint",
        "B",
        "--weights",
        "0.1",
        "0.9",
        "--input-endpoint-prefix",
        "B/",
    ]);
    // (Before the canary is served, /serve/B answers from the highest version: wait for it.)
    wait_served(&home);
    let share = classifier_share(&server, 2000);
    assert!(
        (share - 0.9).abs() <= 0.03,
        "90% to B/2 (classifier) expected, got {:.1}%",
        share * 100.0
    );

    // A new version appears: the canary follows (10% to B/4, a classifier; 90% to B/3).
    let d = upload(&home, "xgb_multi_iris.json", true);
    wait_until("B/4", || {
        server.post("/serve/B/4", IRIS).0 == 200 && server.post("/serve/B/2", IRIS).0 == 404
    });
    wait_served(&home);
    let share = classifier_share(&server, 2000);
    assert!(
        (share - 0.1).abs() <= 0.03,
        "10% to B/4 (classifier) expected, got {:.1}%",
        share * 100.0
    );
    assert_eq!(
        home.json(&["model", "list"])["auto_update"][0]["versions"],
        json!({"3": c, "4": d})
    );

    // Removing the rule removes its endpoints (clearml keeps them until a restart).
    assert_eq!(
        home.ok(&["model", "remove", "--endpoint", "B"]).trim(),
        "Removing model monitoring endpoint: B"
    );
    wait_until("versions gone", || {
        server.post("/serve/B/3", IRIS).0 == 404 && server.post("/serve/B/4", IRIS).0 == 404
    });
    assert_eq!(
        server.post("/serve/B", IRIS).0,
        404,
        "the canary has no targets left"
    );
    assert!(server.stop().success());
}
