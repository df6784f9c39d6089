//! Shadow traffic (`serval model shadow`): copies of an endpoint's requests go to a target after
//! the endpoint answered; the answers are compared, counted in Prometheus, shown by the console
//! and summed over the fleet by `model shadow report`. The endpoint's answers never change.

use serde_json::Value;

use crate::Home;
use crate::serve::{IRIS, Server, wait_until};

/// Custom endpoint code answering `{"y": x * 2}`, plus `extra` (Python) added to the value.
fn doubling(home: &Home, name: &str, extra: &str) {
    let code = home.write(
        &format!("{name}/preprocess.py"),
        &format!(
            "class Preprocess:\n    def process(self, data, state, collect_custom_statistics_fn=None):\n        x = data['x']\n        return {{'y': x * 2.0{extra}}}\n"
        ),
    );
    home.add_custom(name, &code);
}

/// The report of `endpoint`'s shadows, one object per target.
fn report(home: &Home, endpoint: &str) -> Vec<Value> {
    home.json(&["model", "shadow", "report", "--endpoint", endpoint])
        .as_array()
        .cloned()
        .expect("a list")
}

fn count(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {report}"))
}

#[test]
fn a_shadow_reports_how_often_its_target_disagrees_and_never_changes_the_answers() {
    let home = Home::new();
    home.service("shadows");
    doubling(&home, "price", "");
    // Off by one for x % 10 in {0, 1, 2}: 30 % of the inputs.
    doubling(&home, "price_next", " + (1.0 if x % 10 < 3 else 0.0)");
    // Refusals are one line each, and write nothing.
    for (args, expected) in [
        (
            vec!["--endpoint", "price", "--target", "price"],
            "cannot shadow itself",
        ),
        (
            vec![
                "--endpoint",
                "price",
                "--target",
                "price_next",
                "--fraction",
                "0",
            ],
            "--fraction must be in (0, 1]",
        ),
        (
            vec![
                "--endpoint",
                "price",
                "--target",
                "price_next",
                "--tolerance",
                "-1",
            ],
            "--tolerance must be a non-negative number",
        ),
    ] {
        let mut all = vec!["model", "shadow"];
        all.extend(args);
        let error = home.fail(&all);
        assert!(error.contains(expected), "{error}");
        assert_eq!(
            error.lines().filter(|l| l.starts_with("Error")).count(),
            1,
            "{error}"
        );
    }
    let error = home.fail(&["model", "shadow", "report", "--endpoint", "price"]);
    assert!(error.contains("has no shadow"), "{error}");

    let server = Server::start(&home);
    let send = |x: usize| {
        let body = format!(r#"{{"x": {x}}}"#);
        let (status, text) = server.post_text(
            "/serve/price",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{text}");
        text
    };
    let before: Vec<String> = (0..200).map(send).collect();

    let added = home.ok(&[
        "model",
        "shadow",
        "--endpoint",
        "price",
        "--target",
        "price_next",
    ]);
    assert!(
        added.contains("Shadow price -> price_next added"),
        "{added}"
    );
    let listed = home.json(&["model", "list"]);
    assert_eq!(listed["shadows"][0]["target"], "price_next", "{listed}");
    assert_eq!(listed["shadows"][0]["fraction"], 1.0, "{listed}");
    wait_until("the shadow in the routing table", || {
        server.get("/api/v1/overview").1["shadows"][0]["active"] == true
    });

    // The endpoint's answers are byte for byte what they were without the shadow.
    let after: Vec<String> = (0..200).map(send).collect();
    assert_eq!(after, before);
    for x in 200..2_000 {
        send(x);
    }
    // Every copy is compared (or counted as dropped), then summed into the store.
    let settled = || {
        let r = report(&home, "price");
        let r = &r[0];
        count(r, "compared") + count(r, "errors") + count(r, "dropped") == 2_000
    };
    wait_until("every copy in the report", settled);
    let r = report(&home, "price").remove(0);
    assert_eq!(r["target"], "price_next");
    assert_eq!(count(&r, "errors"), 0, "{r}");
    let compared = count(&r, "compared");
    assert!(compared >= 1_900, "{r}");
    let agreement = r["agreement"].as_f64().unwrap();
    assert!((agreement - 0.7).abs() <= 0.02, "{r}");
    assert_eq!(count(&r, "agreed") + count(&r, "disagreed"), compared);
    // The window counts too; a table without --json.
    let windowed = home.json(&[
        "model",
        "shadow",
        "report",
        "--endpoint",
        "price",
        "--window",
        "1h",
    ]);
    assert_eq!(windowed[0]["compared"], compared);
    let table = home.ok(&["model", "shadow", "report", "--endpoint", "price"]);
    assert!(
        table.contains("price_next") && table.contains("AGREEMENT"),
        "{table}"
    );

    // Prometheus, and the console's view of this server's pairs.
    let metrics = server.get_text("/metrics");
    let disagreed: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"serval_shadow_requests_total{endpoint="price",target="price_next",outcome="disagree"} "#,
            )
        })
        .unwrap_or_else(|| panic!("no disagree count in:\n{metrics}"))
        .parse()
        .unwrap();
    assert_eq!(disagreed as u64, count(&r, "disagreed"));
    // Both latencies, side by side.
    for side in ["endpoint", "target"] {
        let line = format!(
            r#"serval_shadow_duration_seconds_count{{endpoint="price",target="price_next",side="{side}"}} "#
        );
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
    let overview = server.get("/api/v1/overview").1;
    let pair = &overview["shadows"][0];
    assert_eq!(
        pair["stats"]["window"]["disagreed"], r["disagreed"],
        "{pair}"
    );
    let worst = &pair["stats"]["worst"][0];
    assert!(
        worst["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("output 'y' element 0:")),
        "{worst}"
    );
    assert!(
        worst["input"].as_str().unwrap().contains("\"x\""),
        "{worst}"
    );

    // Removing the shadow stops the copies.
    let removed = home.ok(&["model", "shadow", "remove", "--endpoint", "price"]);
    assert!(
        removed.contains("Shadow price -> price_next removed"),
        "{removed}"
    );
    assert!(
        home.json(&["model", "list"])["shadows"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    drop(server);
}

#[test]
fn every_protocol_is_copied_and_a_sampled_fraction_only() {
    let home = Home::new();
    home.service("shadows");
    let xgb = home.upload("iris-xgb", "xgb_multi_iris.json", &[]);
    for version in ["1", "2"] {
        home.ok(&[
            "model",
            "add",
            "--engine",
            "xgboost",
            "--endpoint",
            "iris",
            "--version",
            version,
            "--model-id",
            &xgb,
        ]);
    }
    home.ok(&[
        "model",
        "shadow",
        "--endpoint",
        "iris/1",
        "--target",
        "iris/2",
    ]);
    let server = Server::start(&home);
    wait_until("the shadow in the routing table", || {
        server.get("/api/v1/overview").1["shadows"][0]["active"] == true
    });
    let v2 = r#"{"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6, 7, 8]}]}"#;
    for _ in 0..20 {
        assert_eq!(server.post("/serve/iris/1", IRIS).0, 200);
        assert_eq!(server.post("/v2/models/iris/versions/1/infer", v2).0, 200);
    }
    crate::python_script(
        r#"
import sys
import numpy as np
import tritonclient.grpc as grpcclient
client = grpcclient.InferenceServerClient(sys.argv[1])
for _ in range(20):
    tensor = grpcclient.InferInput("input", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))
    client.infer("iris", [tensor], model_version="1")
"#,
        &[&server.grpc],
    );
    // The same model on both sides: every copy agrees, whatever its protocol.
    wait_until("60 copies compared", || {
        let r = report(&home, "iris/1");
        count(&r[0], "compared") == 60
    });
    let r = report(&home, "iris/1").remove(0);
    assert_eq!(count(&r, "agreed"), 60, "{r}");
    assert_eq!(r["agreement"], 1.0);

    // A fraction: about that share of requests is copied.
    home.ok(&[
        "model",
        "shadow",
        "--endpoint",
        "iris/1",
        "--target",
        "iris/2",
        "--fraction",
        "0.25",
    ]);
    wait_until("the new fraction", || {
        server.get("/api/v1/overview").1["shadows"][0]["fraction"] == 0.25
    });
    for _ in 0..400 {
        assert_eq!(server.post("/serve/iris/1", IRIS).0, 200);
    }
    let copied = |r: &Value| count(r, "compared") + count(r, "errors") + count(r, "dropped");
    let counted = || -> u64 {
        let metrics = server.get_text("/metrics");
        metrics
            .lines()
            .filter(|l| l.starts_with(r#"serval_shadow_requests_total{endpoint="iris/1""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    // Settled: the store holds every copy this server counted (copies take milliseconds, the
    // counts reach the store with the next heartbeat).
    wait_until("the fraction's copies in the store", || {
        let total = counted();
        total > 60 && copied(&report(&home, "iris/1")[0]) == total
    });
    // 100 of 400 expected (the binomial's standard deviation is 8.7).
    let total = copied(&report(&home, "iris/1")[0]);
    assert!((60 + 60..=60 + 140).contains(&total), "{total} copies");
}
