//! Every XGBoost and LightGBM fixture model, every batch, against the library's outputs, within
//! the corpus tolerances: probabilities ≤ 1e-5 absolute, values and margins ≤ 1e-4 relative,
//! labels exact, NaN where the reference is NaN.

use serde_json::Value;
use serval_engine::{Engine, NamedTensor, OutputValue, Tensor, TensorData};
use serval_trees::{LightgbmEngine, XgboostEngine};

use crate::{fixtures, flat, input_rows, refs};

const BATCHES: [&str; 4] = ["single", "batch", "nan", "edges"];

fn assert_close(what: &str, got: &[f64], want: &[f64], tolerance: impl Fn(f64) -> f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() {
            assert!(g.is_nan(), "{what}[{i}]: want NaN, got {g}");
            continue;
        }
        let diff = (g - w).abs();
        assert!(
            diff <= tolerance(*w),
            "{what}[{i}]: got {g}, want {w} (diff {diff:e})"
        );
    }
}

fn probability(_: f64) -> f64 {
    1e-5
}

fn relative(w: f64) -> f64 {
    1e-4 * w.abs().max(1.0)
}

fn tensor_f64(t: &OutputValue) -> Vec<f64> {
    match t {
        OutputValue::Tensor(t) => t.to_f64().unwrap(),
        OutputValue::Maps(_) => panic!("tree engines return tensors"),
    }
}

fn labels(t: &OutputValue) -> Vec<i64> {
    match t {
        OutputValue::Tensor(t) => match t.data() {
            TensorData::I64(v) => v.clone(),
            other => panic!("labels are int64, got {other:?}"),
        },
        OutputValue::Maps(_) => panic!("labels are a tensor"),
    }
}

/// Checks one engine against one model's references for every batch.
fn check(
    name: &str,
    model: &Value,
    engine: &dyn Engine,
    predict: &dyn Fn(&[f32], usize) -> Vec<f64>,
    margin: &dyn Fn(&[f32], usize) -> Vec<f64>,
) {
    let refs = refs();
    let classifier = model["task"] != "regression";
    for batch in BATCHES {
        let native = &model["native"][batch];
        assert!(
            native.get("error").is_none(),
            "{name}/{batch}: the library refused this batch"
        );
        let (x, rows) = input_rows(&refs, model, batch);
        let what = format!("{name}/{batch}");
        let tol: fn(f64) -> f64 = if classifier { probability } else { relative };
        assert_close(
            &format!("{what} predict"),
            &predict(&x, rows),
            &flat(&native["predict"]),
            tol,
        );
        assert_close(
            &format!("{what} raw_margin"),
            &margin(&x, rows),
            &flat(&native["raw_margin"]),
            relative,
        );

        let width = x.len() / rows.max(1);
        // One row at a time (trees walked side by side) gives the batch's own numbers, bit for
        // bit: the same sums in the same order.
        let whole = margin(&x, rows);
        let one_by_one: Vec<f64> = x
            .chunks(width.max(1))
            .take(rows)
            .flat_map(|row| margin(row, 1))
            .collect();
        assert_eq!(
            whole.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            one_by_one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{what}: single rows and the batch differ"
        );
        let input = NamedTensor {
            name: "input".into(),
            tensor: Tensor::new(vec![rows, width], TensorData::F32(x)).unwrap(),
        };
        let outputs = engine.infer(&[input]).unwrap();
        if let Some(proba) = native.get("predict_proba") {
            let got = outputs
                .iter()
                .find(|o| o.name == "probabilities")
                .expect("probabilities output");
            assert_close(
                &format!("{what} predict_proba"),
                &tensor_f64(&got.value),
                &flat(proba),
                probability,
            );
            let got = outputs
                .iter()
                .find(|o| o.name == "label")
                .expect("label output");
            let want: Vec<i64> = flat(&native["label"]).iter().map(|v| *v as i64).collect();
            assert_eq!(labels(&got.value), want, "{what} labels");
        } else if !classifier {
            let got = outputs
                .iter()
                .find(|o| o.name == "predictions")
                .expect("predictions output");
            assert_close(
                &format!("{what} engine predictions"),
                &tensor_f64(&got.value),
                &flat(&native["predict"]),
                relative,
            );
        }
    }
}

#[test]
fn xgboost_models_match_xgboost() {
    let refs = refs();
    let mut checked = 0;
    for (name, model) in refs["models"].as_object().unwrap() {
        if model["library"] != "xgboost" {
            continue;
        }
        let mut predictions = Vec::new();
        for key in ["xgboost_json", "xgboost_ubj"] {
            let file = model["files"][key].as_str().unwrap();
            let bytes = std::fs::read(fixtures().join(file)).unwrap();
            let engine = XgboostEngine::load(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
            let predict =
                |x: &[f32], rows| engine.predict(x, rows).into_iter().map(f64::from).collect();
            let margin = |x: &[f32], rows| {
                engine
                    .model()
                    .predict_margin(x, rows)
                    .into_iter()
                    .map(f64::from)
                    .collect()
            };
            check(file, model, &engine, &predict, &margin);
            let (x, rows) = input_rows(&refs, model, "batch");
            predictions.push(engine.predict(&x, rows));
            checked += 1;
        }
        assert_eq!(
            predictions[0], predictions[1],
            "{name}: JSON and UBJSON must predict identically"
        );
    }
    assert_eq!(checked, 8, "4 XGBoost models × 2 formats");
}

#[test]
fn lightgbm_models_match_lightgbm() {
    let refs = refs();
    let mut checked = 0;
    for (_, model) in refs["models"].as_object().unwrap() {
        if model["library"] != "lightgbm" {
            continue;
        }
        let file = model["files"]["lightgbm_text"].as_str().unwrap();
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        let engine = LightgbmEngine::load(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        let widen = |x: &[f32]| x.iter().map(|v| f64::from(*v)).collect::<Vec<f64>>();
        let predict = |x: &[f32], rows| engine.predict(&widen(x), rows);
        let margin = |x: &[f32], rows| engine.model().predict_raw(&widen(x), rows);
        check(file, model, &engine, &predict, &margin);
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[test]
fn xgboost_rounds_inputs_to_f32() {
    // An f64 input just below a threshold's f32 value must round to it and go right, as XGBoost does.
    let bytes = std::fs::read(fixtures().join("xgb_reg_diabetes.json")).unwrap();
    let engine = XgboostEngine::load(&bytes).unwrap();
    let refs = refs();
    let model = &refs["models"]["xgb_reg_diabetes"];
    let (x, rows) = input_rows(&refs, model, "edges");
    let nudged: Vec<f64> = x
        .iter()
        .map(|v| f64::from(*v) - f64::from(*v).abs() * 1e-12)
        .collect();
    let input = NamedTensor {
        name: "input".into(),
        tensor: Tensor::new(vec![rows, 10], TensorData::F64(nudged)).unwrap(),
    };
    let out = engine.infer(&[input]).unwrap();
    assert_close(
        "rounded",
        &tensor_f64(&out[0].value),
        &flat(&model["native"]["edges"]["predict"]),
        relative,
    );
}
