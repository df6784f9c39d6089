//! Tree engines against the libraries' own predictions, and their invariants.
#![allow(clippy::unwrap_used)]

mod golden;
mod properties;
mod shap;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/public")
}

pub fn refs() -> Value {
    let text = std::fs::read_to_string(fixtures().join("refs.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Flattens a reference tensor's nested `data` into f64 (null → NaN).
pub fn flat(tensor: &Value) -> Vec<f64> {
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Null => out.push(f64::NAN),
            other => out.push(other.as_f64().unwrap()),
        }
    }
    let mut out = Vec::new();
    walk(&tensor["data"], &mut out);
    out
}

/// The rows of an input batch as f32 (exact: the stored doubles are float32 values).
pub fn input_rows(refs: &Value, model: &Value, batch: &str) -> (Vec<f32>, usize) {
    let tensor = if batch == "edges" {
        &model["extra_inputs"]["edges"]
    } else {
        &refs["inputs"][model["inputs"].as_str().unwrap()][batch]
    };
    let rows = tensor["shape"][0].as_u64().unwrap() as usize;
    (flat(tensor).into_iter().map(|v| v as f32).collect(), rows)
}
