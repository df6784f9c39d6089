//! `serval predict`: native engines and the default request mapping through the binary.

use serde_json::{Value, json};

use crate::{Home, fixture};

fn predict(home: &Home, model: &std::path::Path, input: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input,
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(home.ok(&args).trim()).unwrap()
}

fn venv_python() -> Option<String> {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    std::env::var("SERVAL_PYTHON")
        .ok()
        .or_else(|| venv.exists().then(|| venv.to_string_lossy().into_owned()))
}

#[test]
fn clearml_examples_answer_like_the_libraries() {
    let home = Home::new();
    let body = r#"{"x0": 1, "x1": 2, "x2": 3, "x3": 4}"#;
    // clearml's xgboost example: reg:squarederror on iris → 1.9921026 (refs.json clearml_example).
    let reply = predict(&home, &fixture("clearml_xgb.json"), body, &[]);
    assert_eq!(reply, json!({"y": [1.9921026229858398]}));
    // The same model as UBJSON saved without an extension, as clearml's example does.
    let extensionless = home.path().join("xgb_model");
    std::fs::copy(fixture("clearml_xgb.ubj"), &extensionless).unwrap();
    assert_eq!(
        predict(&home, &extensionless, body, &[]),
        json!({"y": [1.9921026229858398]})
    );
    // clearml's lightgbm example: the argmax is class 2.
    let reply = predict(
        &home,
        &fixture("clearml_lgbm.txt"),
        body,
        &["--engine", "lightgbm"],
    );
    assert_eq!(reply["y"], json!([2]));
    let p: Vec<f64> = reply["probabilities"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(p.len(), 3);
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert!(p[2] > 0.9);
}

#[test]
fn batches_classifiers_and_missing_values() {
    let home = Home::new();
    let file = home.write(
        "rows.json",
        r#"{"instances": [[6.0, 3.4, 4.5, 1.6], [5.1, 3.5, null, 0.2]]}"#,
    );
    let reply = predict(
        &home,
        &fixture("xgb_multi_iris.json"),
        &format!("@{}", file.display()),
        &[],
    );
    assert_eq!(reply["y"].as_array().unwrap().len(), 2);
    assert_eq!(reply["probabilities"].as_array().unwrap().len(), 2);
    assert_eq!(reply["y"][0], 1, "versicolor");
    let reply = predict(
        &home,
        &fixture("lgbm_reg_diabetes.txt"),
        "[[0,0,0,0,0,0,0,0,0,0]]",
        &[],
    );
    assert!(reply["y"][0].as_f64().unwrap() > 0.0);
}

#[test]
fn onnx_models_run_through_onnx_runtime() {
    let home = Home::new();
    let python =
        venv_python().expect("the test venv (scripts/setup-python.sh) provides onnxruntime");
    let body = r#"{"instances": [[6.0, 3.4000000953674316, 4.5, 1.600000023841858]]}"#;
    let reply = predict(
        &home,
        &fixture("sklearn_logreg_iris.onnx"),
        body,
        &["--python", &python],
    );
    // refs.json: onnxruntime's own answer for this row is label 1 with p = [0.01008, 0.78800, 0.20192].
    assert_eq!(reply["y"], json!([1]));
    let p = reply["probabilities"][0].as_array().unwrap();
    assert!(
        (p[1].as_f64().unwrap() - 0.787_999_689_579_01).abs() < 1e-6,
        "{reply}"
    );
    let reply = predict(
        &home,
        &fixture("sklearn_linreg_diabetes.onnx"),
        "[[0,0,0,0,0,0,0,0,0,0]]",
        &["--python", &python],
    );
    assert!(
        (reply["y"][0].as_f64().unwrap() - 152.133_483_886_718_75).abs() < 1e-3,
        "{reply}"
    );
}

#[test]
fn predict_errors_are_one_readable_line() {
    let home = Home::new();
    let body = r#"{"x0": 1}"#;
    let model = fixture("clearml_xgb.json");
    let model = model.to_str().unwrap();
    let pickle = fixture("clearml_sklearn_logreg.pkl");
    let onnx = fixture("sklearn_logreg_iris.onnx");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--model", model, "--input", body],
            "missing features: x1, x2, x3",
        ),
        (
            &["--model", model, "--input", "{bad"],
            "--input is not valid JSON",
        ),
        (
            &["--model", model, "--input", "{}", "--engine", "lightgbm"],
            "is an XGBoost JSON model, not a model the 'lightgbm' engine loads",
        ),
        (
            &["--model", "/no/such/model", "--input", "{}"],
            "cannot read model file",
        ),
        (
            &["--model", pickle.to_str().unwrap(), "--input", "{}"],
            "runs in a Python worker",
        ),
        (
            &[
                "--model",
                onnx.to_str().unwrap(),
                "--onnxruntime-lib",
                "/nope/lib.so",
                "--input",
                "[[1,2,3,4]]",
            ],
            "pip install onnxruntime",
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["predict"];
        all.extend_from_slice(args);
        let stderr = home.fail(&all);
        assert!(
            stderr.contains(message),
            "{args:?}: expected '{message}' in:\n{stderr}"
        );
    }
    // A truncated model names the file and the problem.
    let bytes = std::fs::read(fixture("xgb_multi_iris.json")).unwrap();
    let broken = home.path().join("broken.json");
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let stderr = home.fail(&[
        "predict",
        "--model",
        broken.to_str().unwrap(),
        "--input",
        "[[1,2,3,4]]",
    ]);
    assert!(
        stderr.contains("broken.json") && stderr.contains("invalid XGBoost JSON"),
        "{stderr}"
    );
}
