//! TreeSHAP contributions against the libraries' own (`pred_contribs` / `pred_contrib`, computed
//! by XGBoost and LightGBM in the test venv): every XGBoost and LightGBM fixture model on every
//! batch (missing values included), and a categorical LightGBM model trained here; each row sums
//! to the margin.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use serval_trees::ShapMethod;
use serval_trees::lightgbm::LgbModel;
use serval_trees::xgboost::XgbModel;

use crate::{fixtures, flat, input_rows, refs};

const BATCHES: [&str; 4] = ["single", "batch", "nan", "edges"];

/// The libraries' contributions for every fixture model and batch, plus a categorical LightGBM
/// model (saved to argv[2]) with its rows.
const LIBRARIES: &str = r#"
import json, sys
import numpy as np
import lightgbm as lgb
import xgboost as xgb

fixtures, categorical_path = sys.argv[1], sys.argv[2]
refs = json.load(open(f"{fixtures}/refs.json"))
batches = ["single", "batch", "nan", "edges"]

def rows(model, batch):
    tensor = model["extra_inputs"]["edges"] if batch == "edges" else refs["inputs"][model["inputs"]][batch]
    data = [[np.nan if v is None else v for v in row] for row in tensor["data"]]
    return np.array(data, dtype=np.float32)

out = {}
for name, model in refs["models"].items():
    files = model["files"]
    if model["library"] == "xgboost":
        booster = xgb.Booster()
        booster.load_model(f"{fixtures}/{files['xgboost_json']}")
        for batch in batches:
            x = rows(model, batch)
            c = booster.predict(xgb.DMatrix(x, missing=np.nan), pred_contribs=True)
            out[f"{name}/{batch}"] = {"shape": list(c.shape), "data": c.astype(np.float64).ravel().tolist()}
    elif model["library"] == "lightgbm":
        booster = lgb.Booster(model_file=f"{fixtures}/{files['lightgbm_text']}")
        for batch in batches:
            x = rows(model, batch).astype(np.float64)
            c = booster.predict(x, pred_contrib=True)
            out[f"{name}/{batch}"] = {"shape": list(c.shape), "data": np.asarray(c).ravel().tolist()}

# A categorical model: feature 0 holds categories 0..9, feature 1 is numeric; missing values and
# unseen categories in the rows explained.
rng = np.random.default_rng(7)
n = 600
x = np.column_stack([rng.integers(0, 10, n), rng.normal(size=n), rng.normal(size=n)]).astype(np.float64)
y = (np.isin(x[:, 0], [1, 3, 4, 8]).astype(float) * 2 + x[:, 1] + 0.1 * rng.normal(size=n) > 1).astype(int)
params = {"objective": "binary", "num_leaves": 7, "min_data_in_leaf": 5, "min_data_per_group": 5,
          "cat_smooth": 1, "verbose": -1, "seed": 7, "deterministic": True, "num_threads": 1}
booster = lgb.train(params, lgb.Dataset(x, y, categorical_feature=[0]), num_boost_round=12)
booster.save_model(categorical_path)
test = np.vstack([x[:40], [[np.nan, 0.3, -1.0], [12.0, np.nan, 0.5], [-1.0, 0.0, np.nan], [2.0, 1.5, 0.2]]])
c = booster.predict(test, pred_contrib=True)
out["categorical"] = {"shape": list(c.shape), "data": c.ravel().tolist(), "rows": test.ravel().tolist()}
print(json.dumps(out).replace("NaN", "null"))
"#;

fn python() -> String {
    std::env::var("SERVAL_PYTHON").unwrap_or_else(|_| {
        let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
        venv.display().to_string()
    })
}

fn libraries(categorical: &std::path::Path) -> Value {
    let out = Command::new(python())
        .arg("-c")
        .arg(LIBRARIES)
        .arg(fixtures())
        .arg(categorical)
        .output()
        .expect("run the test venv's Python (scripts/setup-python.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn shape(reference: &Value) -> Vec<usize> {
    reference["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

/// LightGBM: within 1e-5 relative or 1e-6 absolute.
fn assert_lightgbm(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let diff = (g - w).abs();
        assert!(
            diff <= 1e-6 || diff <= 1e-5 * w.abs(),
            "{what}[{i}]: got {g}, want {w} (diff {diff:e})"
        );
    }
}

/// XGBoost, which accumulates in f32: within 2e-6 × the row's sum of absolute contributions.
fn assert_xgboost(what: &str, got: &[f32], want: &[f64], width: usize) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (r, (g, w)) in got.chunks(width).zip(want.chunks(width)).enumerate() {
        let scale: f64 = w.iter().map(|v| v.abs()).sum::<f64>().max(1e-12);
        for (i, (g, w)) in g.iter().zip(w).enumerate() {
            let diff = (f64::from(*g) - w).abs();
            assert!(
                diff <= 2e-6 * scale,
                "{what} row {r} column {i}: got {g}, want {w} (diff {diff:e}, row scale {scale})"
            );
        }
    }
}

#[test]
fn contributions_match_the_libraries_and_sum_to_the_margin() {
    let dir = std::env::temp_dir().join(format!("serval-shap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let categorical = dir.join("categorical.txt");
    let reference = libraries(&categorical);
    let refs = refs();
    let mut checked = 0;
    for (name, model) in refs["models"].as_object().unwrap() {
        let library = model["library"].as_str().unwrap();
        if library != "xgboost" && library != "lightgbm" {
            continue;
        }
        for batch in BATCHES {
            let what = format!("{name}/{batch}");
            let want = &reference[&what];
            let (x, rows) = input_rows(&refs, model, batch);
            if library == "xgboost" {
                for file in ["xgboost_json", "xgboost_ubj"] {
                    let bytes =
                        std::fs::read(fixtures().join(model["files"][file].as_str().unwrap()))
                            .unwrap();
                    let xgb = XgbModel::load(&bytes).unwrap();
                    assert!(
                        !xgb.explanation_ready(),
                        "tables wait for the first explanation"
                    );
                    let width = xgb.num_features + 1;
                    for method in [ShapMethod::PathDependent, ShapMethod::Fastest] {
                        let (got, got_shape) = xgb.explain_with(&x, rows, method).unwrap();
                        assert_eq!(got_shape, shape(want), "{what} ({file}) shape");
                        let what = format!("{what} ({file}, {method:?})");
                        assert_xgboost(&what, &got, &flat(want), width);
                    }
                    assert!(xgb.explanation_ready());
                    let (got, _) = xgb.explain(&x, rows).unwrap();
                    // Each output's contributions sum to its margin.
                    let margins = xgb.predict_margin(&x, rows);
                    for (m, block) in margins.iter().zip(got.chunks(width)) {
                        let sum: f64 = block.iter().map(|v| f64::from(*v)).sum();
                        let scale: f64 = block.iter().map(|v| f64::from(v.abs())).sum();
                        assert!(
                            (sum - f64::from(*m)).abs() <= 1e-5 * scale.max(1.0),
                            "{what}: contributions sum to {sum}, the margin is {m}"
                        );
                    }
                }
            } else {
                let text = std::fs::read(
                    fixtures().join(model["files"]["lightgbm_text"].as_str().unwrap()),
                )
                .unwrap();
                let lgbm = LgbModel::load(&text).unwrap();
                let x: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
                for method in [ShapMethod::PathDependent, ShapMethod::Fastest] {
                    let (got, got_shape) = lgbm.explain_with(&x, rows, method).unwrap();
                    assert_eq!(got_shape, shape(want), "{what} shape");
                    assert_lightgbm(&format!("{what} ({method:?})"), &got, &flat(want));
                }
                let (got, _) = lgbm.explain(&x, rows).unwrap();
                let width = lgbm.num_features + 1;
                let raw = lgbm.predict_raw(&x, rows);
                for (m, block) in raw.iter().zip(got.chunks(width)) {
                    let sum: f64 = block.iter().sum();
                    assert!(
                        (sum - m).abs() <= 1e-9 * m.abs().max(1.0),
                        "{what}: {sum} vs {m}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 32, "only {checked} model batches checked");

    // Categorical splits, missing values and unseen categories.
    let want = &reference["categorical"];
    let lgbm = LgbModel::load(&std::fs::read(&categorical).unwrap()).unwrap();
    let x = flat(&serde_json::json!({"data": want["rows"]}));
    let rows = x.len() / 3;
    for method in [ShapMethod::PathDependent, ShapMethod::Fastest] {
        let (got, got_shape) = lgbm.explain_with(&x, rows, method).unwrap();
        assert_eq!(got_shape, shape(want));
        assert_lightgbm(&format!("categorical ({method:?})"), &got, &flat(want));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_model_that_cannot_be_explained_says_why() {
    // LightGBM text without internal_count / leaf_count.
    let text = "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\nmax_feature_idx=1\n\
                objective=regression\nfeature_names=a b\nfeature_infos=none none\ntree_sizes=1\n\nTree=0\n\
                num_leaves=2\nnum_cat=0\nsplit_feature=0\nsplit_gain=1\nthreshold=0.5\ndecision_type=2\n\
                left_child=-1\nright_child=-2\nleaf_value=1 2\nshrinkage=1\n\n\nend of trees\n";
    let model = LgbModel::load(text.as_bytes()).unwrap();
    let error = model.explain(&[0.0, 0.0], 1).unwrap_err();
    assert!(error.contains("cover statistics"), "{error}");
}
