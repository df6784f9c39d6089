//! Drift (`serval monitor`): a reference from data, live inputs counted by every server in its
//! bins, per-feature PSI / KS in Prometheus, the console and `serval monitor drift` (the fleet's,
//! through the store).

use serde_json::{Value, json};

use crate::Home;
use crate::serve::{Server, wait_until};

const MEANS: [f64; 4] = [5.8, 3.0, 4.3, 1.2];
const DEVIATIONS: [f64; 4] = [0.8, 0.45, 1.7, 0.75];

/// Rows of four normal features (a fixed generator: Box–Muller over an LCG), `shift` standard
/// deviations added to feature `shifted`.
fn rows(n: usize, seed: u64, shifted: usize, shift: f64) -> Vec<[f64; 4]> {
    let mut state = seed;
    let mut uniform = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let mut row = [0.0; 4];
            for (f, value) in row.iter_mut().enumerate() {
                let (u, v) = (uniform(), uniform());
                let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
                let z = if f == shifted { z + shift } else { z };
                *value = MEANS[f] + DEVIATIONS[f] * z;
            }
            row
        })
        .collect()
}

/// Sends `rows` to iris/1 over V2 REST, 20 rows a request.
fn send(server: &Server, rows: &[[f64; 4]]) {
    for chunk in rows.chunks(20) {
        let data: Vec<f64> = chunk.iter().flatten().copied().collect();
        let body = json!({"inputs": [{"name": "input", "shape": [chunk.len(), 4], "datatype": "FP32", "data": data}]});
        let (status, reply) = server.post("/v2/models/iris/versions/1/infer", &body.to_string());
        assert_eq!(status, 200, "{reply}");
    }
}

/// `serval_feature_drift{endpoint="iris/1", feature, statistic}` from /metrics.
fn gauge(server: &Server, feature: &str, statistic: &str) -> Option<f64> {
    let prefix = format!(
        r#"serval_feature_drift{{endpoint="iris/1",feature="{feature}",statistic="{statistic}"}} "#
    );
    server
        .get_text("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
}

fn fleet(home: &Home) -> Value {
    home.json(&["monitor", "drift", "--endpoint", "iris"])
}

fn psi_of(report: &Value, feature: &str) -> f64 {
    report["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == feature)
        .and_then(|f| f["psi"].as_f64())
        .unwrap_or_else(|| panic!("no psi of {feature}: {report}"))
}

#[test]
fn live_inputs_from_the_reference_are_stable_and_one_shifted_feature_drifts_alone() {
    let home = Home::new();
    home.service("drift");
    let xgb = home.upload("iris-xgb", "xgb_multi_iris.json", &[]);
    home.add_endpoint("xgboost", "iris", Some("1"), &xgb);
    // The reference: 5,000 rows; the model has no feature names, so f0…f3.
    let mut csv = String::from("f0,f1,f2,f3\n");
    for row in rows(5_000, 1, 9, 0.0) {
        csv.push_str(&format!("{},{},{},{}\n", row[0], row[1], row[2], row[3]));
    }
    let data = home.write("reference.csv", &csv);
    let data = data.to_str().unwrap();
    let refused = home.fail(&[
        "monitor",
        "reference",
        "--endpoint",
        "iris",
        "--data",
        "ref.json",
    ]);
    assert!(refused.contains(".csv or a .parquet"), "{refused}");
    let refused = home.fail(&[
        "monitor",
        "reference",
        "--endpoint",
        "iris",
        "--data",
        data,
        "--categorical",
        "f9",
    ]);
    assert!(refused.contains("has no column 'f9'"), "{refused}");
    let refused = home.fail(&["monitor", "drift", "--endpoint", "iris"]);
    assert!(refused.contains("has no drift reference"), "{refused}");
    let added = home.ok(&["monitor", "reference", "--endpoint", "iris", "--data", data]);
    assert!(
        added.contains("Drift reference of iris added: 4 features from 5000 rows"),
        "{added}"
    );

    let server = Server::start(&home);
    wait_until("the drift statistics in the console", || {
        server.get("/api/v1/overview").1["drift"][0]["endpoint"] == "iris/1"
    });
    // Live traffic from the reference's distribution: stable everywhere.
    send(&server, &rows(2_000, 2, 9, 0.0));
    for feature in ["f0", "f1", "f2", "f3"] {
        let psi = gauge(&server, feature, "psi").unwrap();
        assert!(psi < 0.1, "{feature}: psi {psi}");
        assert!(gauge(&server, feature, "ks").unwrap() < 0.1, "{feature}");
    }
    // The fleet's numbers (through the store, after a heartbeat) say the same.
    wait_until("2,000 rows in the fleet's drift", || {
        fleet(&home)["rows"] == 2_000
    });
    let report = fleet(&home);
    for feature in ["f0", "f1", "f2", "f3"] {
        assert!(psi_of(&report, feature) < 0.1, "{report}");
    }
    assert!(
        report["features"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["status"] == "ok" && f["count"] == 2_000),
        "{report}"
    );

    // A new reference starts from zero; then f2 moves by one standard deviation.
    home.ok(&["monitor", "reference", "--endpoint", "iris", "--data", data]);
    wait_until("the new reference served", || {
        let overview = server.get("/api/v1/overview").1;
        fleet(&home)["rows"] == 0 && overview["drift"][0]["rows"] == 0
    });
    send(&server, &rows(2_000, 3, 2, 1.0));
    for feature in ["f0", "f1", "f3"] {
        let psi = gauge(&server, feature, "psi").unwrap();
        assert!(psi < 0.1, "{feature}: psi {psi}");
    }
    let shifted = gauge(&server, "f2", "psi").unwrap();
    assert!(shifted > 0.25, "f2: psi {shifted}");
    wait_until("the shifted rows in the fleet's drift", || {
        fleet(&home)["rows"] == 2_000
    });
    let report = fleet(&home);
    assert!(psi_of(&report, "f2") > 0.25, "{report}");
    let statuses: Vec<(String, String)> = report["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["feature"].as_str().unwrap().to_string(),
                f["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("f0".to_string(), "ok".to_string()),
            ("f1".into(), "ok".into()),
            ("f2".into(), "drift".into()),
            ("f3".into(), "ok".into())
        ]
    );
    let table = home.ok(&["monitor", "drift", "--endpoint", "iris"]);
    assert!(table.contains("2000 live rows"), "{table}");
    home.ok(&["monitor", "remove", "--endpoint", "iris"]);
    wait_until("the drift gone from the console", || {
        server.get("/api/v1/overview").1["drift"] == json!([])
    });
}

#[test]
fn an_endpoint_with_python_code_is_watched_on_its_body_fields() {
    let home = Home::new();
    home.service("drift-python");
    let code = home.write(
        "price/preprocess.py",
        "class Preprocess:\n    def process(self, data, state, collect_custom_statistics_fn=None):\n        return {'y': data['x'] * 2.0}\n",
    );
    home.add_custom("price", &code);
    // x spread over 0..100, colour half red, half blue.
    let mut csv = String::from("x,colour\n");
    for i in 0..1_000 {
        let colour = if i % 2 == 0 { "red" } else { "blue" };
        csv.push_str(&format!("{},{colour}\n", (i * 37 % 1_000) as f64 / 10.0));
    }
    let data = home.write("reference.csv", &csv);
    home.ok(&[
        "monitor",
        "reference",
        "--endpoint",
        "price",
        "--data",
        data.to_str().unwrap(),
    ]);
    let server = Server::start(&home);
    wait_until("the drift statistics in the console", || {
        server.get("/api/v1/overview").1["drift"][0]["endpoint"] == "price"
    });
    for i in 0..500 {
        let colour = if i % 2 == 0 { "blue" } else { "red" };
        let body = json!({"x": (i * 53 % 500) as f64 / 5.0, "colour": colour});
        let (status, reply) = server.post("/serve/price", &body.to_string());
        assert_eq!(status, 200, "{reply}");
    }
    let view = server.get("/api/v1/overview").1["drift"][0].clone();
    assert_eq!(view["rows"], 500, "{view}");
    assert_eq!(view["missing"], json!([]), "{view}");
    let psi = |feature: &str| -> f64 {
        let prefix = format!(
            r#"serval_feature_drift{{endpoint="price",feature="{feature}",statistic="psi"}} "#
        );
        server
            .get_text("/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or_else(|| panic!("no psi of {feature}"))
    };
    assert!(psi("x") < 0.1, "x: {}", psi("x"));
    assert!(psi("colour") < 0.01, "colour: {}", psi("colour"));
    assert!(server.get_text("/metrics").contains(
        r#"serval_feature_drift{endpoint="price",feature="colour",statistic="chi_square"}"#
    ));
    // Every body red now: the colour drifts, x does not.
    for i in 0..500 {
        let body = json!({"x": (i * 53 % 500) as f64 / 5.0, "colour": "red"});
        assert_eq!(server.post("/serve/price", &body.to_string()).0, 200);
    }
    assert!(psi("colour") > 0.25, "colour: {}", psi("colour"));
    assert!(psi("x") < 0.1, "x: {}", psi("x"));
}
