//! Plain scikit-learn linear models run natively between preprocess and postprocess: the answers
//! equal scikit-learn's own `predict` (computed by the test venv's scikit-learn on the same rows),
//! errors stay the model's (422), and anything else keeps running in the worker.

use serde_json::{Value, json};

use crate::serve::{Server, wait_until};
use crate::{Home, fixture, python};

const ROWS: &str = "\
class Preprocess:
    def preprocess(self, body, state, collect_custom_statistics_fn=None):
        return body['rows']

    def postprocess(self, data, state, collect_custom_statistics_fn=None):
        return {'y': data.tolist(), 'type': str(data.dtype)}
";

/// What scikit-learn's `predict` gives for `rows` with the pickle `file`, and its dtype.
fn sklearn_predict(file: &str, rows: &Value) -> (Value, String) {
    let script = "import json, sys, joblib, numpy as np\n\
                  model = joblib.load(sys.argv[1])\n\
                  y = model.predict(np.array(json.loads(sys.argv[2]), dtype=np.float64))\n\
                  print(json.dumps({'y': y.tolist(), 'type': str(y.dtype)}))";
    let out = std::process::Command::new(python())
        .args(["-c", script])
        .arg(fixture(file))
        .arg(rows.to_string())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (v["y"].clone(), v["type"].as_str().unwrap().to_string())
}

#[test]
fn linear_models_run_natively_and_answer_as_scikit_learn() {
    let home = Home::new();
    home.service("linear");
    let code = home.write("rows/preprocess.py", ROWS);
    let cases = [
        ("binary", "clearml_sklearn_logreg.pkl", 2, 12.0),
        ("iris", "sklearn_logreg_iris.pkl", 4, 8.0),
        ("diabetes", "sklearn_linreg_diabetes.pkl", 10, 0.2),
        // Not linear: stays in the worker.
        ("forest", "sklearn_rf_iris.pkl", 4, 8.0),
    ];
    for (endpoint, file, _, _) in cases {
        let id = home.upload(endpoint, file, &[]);
        home.ok(&[
            "model",
            "add",
            "--engine",
            "sklearn",
            "--endpoint",
            endpoint,
            "--model-id",
            &id,
            "--preprocess",
            code.to_str().unwrap(),
        ]);
    }
    let server = Server::start_with(&home, &["--python-workers", "1"]);
    wait_until("every endpoint loaded", || {
        let (status, body) = server.get("/health/ready");
        status == 200 && body["endpoints"] == 4 && body["failed"] == json!([])
    });
    let mut seed = 7u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    for (endpoint, file, width, scale) in cases {
        let rows: Vec<Vec<f64>> = (0..300)
            .map(|_| (0..width).map(|_| (next() * 2.0 - 1.0) * scale).collect())
            .collect();
        let rows = json!(rows);
        let (status, reply) = server.post(
            &format!("/serve/{endpoint}"),
            &json!({"rows": rows}).to_string(),
        );
        assert_eq!(status, 200, "{endpoint}: {reply}");
        let (expected, dtype) = sklearn_predict(file, &rows);
        assert_eq!(
            reply["type"], dtype,
            "{endpoint}: postprocess gets predict's dtype"
        );
        match dtype.as_str() {
            "float64" => {
                let got = reply["y"].as_array().unwrap();
                let want = expected.as_array().unwrap();
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(want) {
                    let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
                    assert!(
                        (g - w).abs() <= 1e-9 * w.abs().max(1.0),
                        "{endpoint}: {g} vs {w}"
                    );
                }
            }
            _ => assert_eq!(reply["y"], expected, "{endpoint}"),
        }
    }
    // Which ran where.
    let list = home.json(&["model", "list"]);
    let endpoints = &list["instances"][0]["endpoints"];
    for endpoint in ["binary", "iris", "diabetes"] {
        let path = endpoints[endpoint]["path"].as_str().unwrap();
        assert!(
            path.starts_with("python pre/postprocess + native scikit-learn"),
            "{endpoint}: {path}"
        );
    }
    assert_eq!(
        endpoints["forest"]["path"], "python worker (scikit-learn model)",
        "{}",
        endpoints["forest"]
    );
    // Errors stay the library's: a None reaches scikit-learn itself (TypeError → 500, as
    // upstream); a wrong width is the client's (422).
    let (status, reply) = server.post("/serve/iris", r#"{"rows": [[1, 2, 3, null]]}"#);
    assert_eq!(status, 500, "{reply}");
    assert!(
        reply["detail"].as_str().unwrap().contains("TypeError"),
        "{reply}"
    );
    let (status, reply) = server.post("/serve/iris", r#"{"rows": [[1, 2, 3]]}"#);
    assert_eq!(status, 422, "{reply}");
    assert!(
        reply["detail"].as_str().unwrap().contains("4 features"),
        "{reply}"
    );
    assert!(server.stop().success());
}
