//! ONNX engine against onnxruntime's own outputs recorded in the fixtures.
//! Needs the onnxruntime Python package: `scripts/setup-python.sh` installs it into `.venv`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use serval_engine::{ClassLabel, Engine, NamedTensor, OutputValue, Task, Tensor, TensorData};
use serval_onnx::{OnnxEngine, OnnxOptions};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn options() -> OnnxOptions {
    let venv = root().join(".venv/bin/python");
    let python = std::env::var("SERVAL_PYTHON")
        .ok()
        .or_else(|| venv.exists().then(|| venv.to_string_lossy().into_owned()));
    OnnxOptions {
        python,
        intra_threads: 1,
        ..OnnxOptions::default()
    }
}

fn flat(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flat(i, out)),
        Value::Null => out.push(f64::NAN),
        other => out.push(other.as_f64().unwrap()),
    }
}

fn close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() {
            assert!(g.is_nan(), "{what}[{i}]");
            continue;
        }
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

#[test]
fn every_fixture_onnx_file_matches_onnxruntime() {
    let refs: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/public/refs.json")).unwrap(),
    )
    .unwrap();
    let mut files = 0;
    for (_, model) in refs["models"].as_object().unwrap() {
        let Some(onnx) = model.get("onnx").and_then(Value::as_object) else {
            continue;
        };
        for (file, spec) in onnx {
            let bytes = std::fs::read(root().join("fixtures/public").join(file)).unwrap();
            let engine =
                OnnxEngine::load(&bytes, &options()).unwrap_or_else(|e| panic!("{file}: {e}"));
            for (batch, expected) in spec["ort"].as_object().unwrap() {
                let tensor = if batch == "edges" {
                    &model["extra_inputs"]["edges"]
                } else {
                    &refs["inputs"][model["inputs"].as_str().unwrap()][batch.as_str()]
                };
                let mut x = Vec::new();
                flat(&tensor["data"], &mut x);
                let rows = tensor["shape"][0].as_u64().unwrap() as usize;
                let input = NamedTensor {
                    name: "input".into(),
                    tensor: Tensor::new(
                        vec![rows, x.len() / rows],
                        TensorData::F32(x.iter().map(|v| *v as f32).collect()),
                    )
                    .unwrap(),
                };
                let outputs = engine
                    .infer(&[input])
                    .unwrap_or_else(|e| panic!("{file}/{batch}: {e}"));
                for (name, want) in expected.as_object().unwrap() {
                    let got = outputs
                        .iter()
                        .find(|o| &o.name == name)
                        .unwrap_or_else(|| panic!("{file}: no output {name}"));
                    let what = format!("{file}/{batch}/{name}");
                    match &got.value {
                        OutputValue::Tensor(t) => {
                            let mut w = Vec::new();
                            flat(&want["data"], &mut w);
                            let g = match t.data() {
                                TensorData::I64(v) => v.iter().map(|x| *x as f64).collect(),
                                _ => t.to_f64().unwrap(),
                            };
                            close(&what, &g, &w);
                        }
                        OutputValue::Maps(rows) => {
                            let want_rows = want["data"].as_array().unwrap();
                            assert_eq!(rows.len(), want_rows.len(), "{what}");
                            for (row, want_row) in rows.iter().zip(want_rows) {
                                let want_map = want_row.as_object().unwrap();
                                assert_eq!(row.len(), want_map.len());
                                for (label, p) in row {
                                    let key = match label {
                                        ClassLabel::Int(i) => i.to_string(),
                                        ClassLabel::Str(s) => s.clone(),
                                    };
                                    close(
                                        &what,
                                        &[f64::from(*p)],
                                        &[want_map[&key].as_f64().unwrap_or(f64::NAN)],
                                    );
                                }
                            }
                        }
                    }
                }
            }
            files += 1;
        }
    }
    assert_eq!(files, 15, "every ONNX fixture file");
}

#[test]
fn metadata_describes_inputs_outputs_and_task() {
    let bytes = std::fs::read(root().join("fixtures/public/sklearn_logreg_iris.onnx")).unwrap();
    let engine = OnnxEngine::load(&bytes, &options()).unwrap();
    let meta = engine.metadata();
    assert_eq!(meta.inputs[0].name, "input");
    assert_eq!(meta.inputs[0].shape, vec![None, Some(4)]);
    assert!(
        matches!(meta.task, Task::Classification { .. }),
        "{:?}",
        meta.task
    );
    let bytes = std::fs::read(root().join("fixtures/public/sklearn_linreg_diabetes.onnx")).unwrap();
    let engine = OnnxEngine::load(&bytes, &options()).unwrap();
    assert_eq!(engine.metadata().task, Task::Regression);
}

#[test]
fn bad_inputs_and_files_are_errors() {
    let bytes = std::fs::read(root().join("fixtures/public/sklearn_logreg_iris.onnx")).unwrap();
    let engine = OnnxEngine::load(&bytes, &options()).unwrap();
    let wrong_width = NamedTensor {
        name: "input".into(),
        tensor: Tensor::new(vec![1, 3], TensorData::F32(vec![1.0; 3])).unwrap(),
    };
    assert_eq!(
        engine.infer(&[wrong_width]).unwrap_err().kind(),
        "invalid_input"
    );
    let wrong_name = NamedTensor {
        name: "x".into(),
        tensor: Tensor::new(vec![1, 4], TensorData::F32(vec![1.0; 4])).unwrap(),
    };
    assert_eq!(
        engine.infer(&[wrong_name]).unwrap_err().kind(),
        "invalid_input"
    );
    let err = OnnxEngine::load(&bytes[..bytes.len() / 2], &options())
        .err()
        .unwrap();
    assert_eq!(err.kind(), "load_failed");
    let err = OnnxEngine::load(b"not a model", &options()).err().unwrap();
    assert!(err.to_string().contains("cannot load"), "{err}");
}
