//! Endpoints that bring Python: starting their worker pools, running requests through them, and
//! the native model in the middle when preprocess code feeds an XGBoost/LightGBM/ONNX model.
//!
//! Paths (shown in the endpoint status):
//! - `sklearn`, `custom`, `custom_async`: the whole request runs in the worker (the sklearn model is
//!   `joblib.load`ed there).
//! - `xgboost`, `lightgbm`, `onnx` with preprocess code: the worker runs `preprocess`; if it returns
//!   array-like data (numpy array, nested lists, dict of those, DataFrame) the server runs the model
//!   natively and the worker runs `postprocess` on what the library's `predict` would have
//!   returned; anything else (an `xgboost.DMatrix`, ...) makes the worker run the model's own
//!   library instead (counted as `library_requests`). If `Preprocess.load` returns a model object,
//!   that object serves every request in the worker.

use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use serval_engine::{NamedOutput, NamedTensor, OutputValue, Tensor, TensorData};
use serval_python::frame::{self, BLOB};
use serval_python::{Body, CallFuture, Calls, PoolId, PyError, Step};
use serval_store::{CodeKind, CodeRef, Endpoint, EngineKind};
use tokio::time::Instant;

use crate::errors::ServeError;
use crate::routes::serve::{Payload, Served, infer_native};
use crate::table::{LoadedEndpoint, RoutingTable};

/// Whether an endpoint needs Python workers.
pub fn needs_python(endpoint: &Endpoint) -> bool {
    endpoint.preprocess.is_some()
        || matches!(
            endpoint.engine,
            EngineKind::Sklearn | EngineKind::Custom | EngineKind::CustomAsync
        )
}

/// `send_request` from user code: served in-process, bounded by the calling request's deadline.
pub struct ServerCalls {
    pub table: Weak<ArcSwap<RoutingTable>>,
}

impl Calls for ServerCalls {
    fn call(
        &self,
        _caller: PoolId,
        endpoint: String,
        version: Option<String>,
        data: Value,
        deadline: Instant,
    ) -> CallFuture {
        let table = self.table.upgrade();
        Box::pin(async move {
            let table = table.ok_or("the server is shutting down")?;
            // clearml builds `<base>/<endpoint>[/<version>]`: an endpoint may carry its version.
            let (name, version) = match (endpoint.split_once('/'), version) {
                (Some((name, v)), None) => (name.to_string(), Some(v.to_string())),
                (_, version) => (endpoint.clone(), version),
            };
            let target = table
                .load()
                .resolve(&name, version.as_deref(), fastrand::f64())
                .map_err(|e| e.to_string())?;
            crate::routes::serve::run(target, Payload::Json(data), deadline)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// The `load` message's description of the endpoint's code: where it is on disk, unpacked.
pub fn code_spec(code: &CodeRef, cache_dir: &Path) -> Result<Value, String> {
    let path = serval_artifacts::block_on(serval_artifacts::fetch(&code.uri, cache_dir))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot fetch preprocess code '{}': {e}", code.name))?;
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let actual = serval_artifacts::hash_bytes(&bytes);
    if actual != code.sha256 {
        return Err(format!(
            "preprocess code {} changed since it was registered (sha256 {actual}, expected {})",
            path.display(),
            code.sha256
        ));
    }
    let unpacked = cache_dir.join("code").join(&code.sha256);
    Ok(match code.kind {
        CodeKind::File => json!({"kind": "file", "path": path, "name": code.name}),
        CodeKind::Zip => json!({
            "kind": "zip", "path": path, "extract_to": unpacked, "name": code.name,
        }),
        CodeKind::Package => {
            if !unpacked.is_dir() {
                static STAGING: AtomicU64 = AtomicU64::new(0);
                let staging = PathBuf::from(format!(
                    "{}.{}.{}.tmp",
                    unpacked.display(),
                    std::process::id(),
                    STAGING.fetch_add(1, Ordering::Relaxed)
                ));
                let _ = std::fs::remove_dir_all(&staging);
                serval_artifacts::unpack(&bytes, &staging)
                    .map_err(|e| format!("cannot unpack '{}': {e}", code.name))?;
                if std::fs::rename(&staging, &unpacked).is_err() && !unpacked.is_dir() {
                    return Err(format!("cannot unpack '{}' into the cache", code.name));
                }
                let _ = std::fs::remove_dir_all(&staging);
            }
            let name = code
                .name
                .strip_suffix(serval_artifacts::PACKAGE_SUFFIX)
                .unwrap_or(&code.name);
            json!({"kind": "package", "path": unpacked, "name": name})
        }
    })
}

/// What user code sees as `self.model_endpoint` (clearml's ModelEndpoint attribute names).
pub fn endpoint_info(url: &str, endpoint: &Endpoint) -> Value {
    json!({
        "engine_type": endpoint.engine.to_string(),
        "serving_url": url,
        "model_id": endpoint.model_id,
        "version": endpoint.version,
        "preprocess_artifact": endpoint.preprocess.as_ref().map(|c| c.name.clone()),
        "input_size": endpoint.io.input_size,
        "input_type": endpoint.io.input_type,
        "input_name": endpoint.io.input_name,
        "output_size": endpoint.io.output_size,
        "output_type": endpoint.io.output_type,
        "output_name": endpoint.io.output_name,
        "auxiliary_cfg": endpoint.aux_config,
    })
}

pub fn py_error(error: PyError, timeout: std::time::Duration, url: &str) -> ServeError {
    match error {
        PyError::User {
            class,
            message,
            invalid,
        } => ServeError::UserCode {
            class,
            message,
            invalid,
        },
        PyError::Timeout => ServeError::Timeout(timeout),
        PyError::WorkerExited(m) | PyError::Protocol(m) => ServeError::Worker(m),
        PyError::Unavailable(m) => ServeError::Unavailable(url.to_string(), m),
    }
}

/// Runs one request on an endpoint with Python workers.
pub async fn run(
    endpoint: &LoadedEndpoint,
    payload: Payload,
    deadline: Instant,
    sampled: bool,
) -> Result<Served, ServeError> {
    let Some(pool) = endpoint.python.as_ref() else {
        return Err(ServeError::Internal(
            "the endpoint has no Python workers".into(),
        ));
    };
    let timeout = deadline.saturating_duration_since(Instant::now());
    let body = match payload {
        Payload::Json(value) => Body::Json(value),
        Payload::Bytes(bytes) => Body::Bytes(bytes.to_vec()),
    };
    let native = endpoint.engine.is_some() && !pool.custom_model();
    let step = pool
        .infer(body, native, sampled, deadline)
        .await
        .map_err(|e| py_error(e, timeout, &endpoint.url))?;
    let outcome = match step {
        Step::Done(outcome) => {
            if outcome.path == "library" {
                endpoint.library_requests.fetch_add(1, Ordering::Relaxed);
            }
            outcome
        }
        Step::Pre { data, blobs, next } => {
            let Some(engine) = endpoint.engine.as_ref() else {
                return Err(ServeError::Internal("no native model".into()));
            };
            let meta = engine.metadata();
            let inputs = preprocessed_inputs(data, &blobs, meta, &endpoint.input_names)?;
            let outputs = infer_native(endpoint, engine.clone(), inputs).await?;
            let mut out_blobs = Vec::new();
            let value = library_outputs(endpoint.kind, &outputs, &mut out_blobs)?;
            next.post(value, out_blobs)
                .await
                .map_err(|e| py_error(e, timeout, &endpoint.url))?
        }
    };
    if let Some(metrics) = &endpoint.metrics {
        metrics.stage(0, outcome.queue.as_secs_f64());
        // The worker's stages; `process` is inference when the worker ran the model.
        for (stage, name) in [(1, "preprocess"), (2, "process"), (3, "postprocess")] {
            if let Some(seconds) = outcome.timings.get(name).and_then(Value::as_f64) {
                metrics.stage(stage, seconds);
            }
        }
    }
    Ok(Served {
        value: outcome.value,
        stats: outcome.stats,
    })
}

/// Model inputs from what `preprocess` returned: an array goes straight in (a 1-d array is one
/// row); anything else goes through the default JSON mapping (rows, named features, ...).
fn preprocessed_inputs(
    data: Value,
    blobs: &[Vec<u8>],
    meta: &serval_engine::ModelMetadata,
    input_names: &[String],
) -> Result<Vec<NamedTensor>, ServeError> {
    if let Some(tensor) = frame::marker_tensor(&data, blobs) {
        let tensor = tensor.map_err(ServeError::Worker)?;
        if let [only] = meta.inputs.as_slice() {
            let tensor = match tensor.shape() {
                [n] if only.shape.len() == 2 => Tensor::new(vec![1, *n], tensor.into_data())?,
                _ => tensor,
            };
            return Ok(vec![NamedTensor {
                name: only.name.clone(),
                tensor,
            }]);
        }
    }
    let json = replace_markers(data, blobs)?;
    Ok(serval_core::request_to_inputs(&json, meta, input_names)?)
}

fn replace_markers(value: Value, blobs: &[Vec<u8>]) -> Result<Value, ServeError> {
    Ok(match value {
        Value::Object(map) if map.contains_key(BLOB) => {
            let tensor = frame::marker_tensor(&Value::Object(map), blobs)
                .unwrap_or_else(|| Err("bad array".into()))
                .map_err(ServeError::Worker)?;
            serval_core::tensor_json(&tensor)
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| Ok((k, replace_markers(v, blobs)?)))
                .collect::<Result<_, ServeError>>()?,
        ),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| replace_markers(v, blobs))
                .collect::<Result<_, _>>()?,
        ),
        other => other,
    })
}

/// Output names of the tree engines.
const PROBABILITIES: &str = "probabilities";
const PREDICTIONS: &str = "predictions";

/// Column `c` of a `[n, k]` tensor, as `[n]`.
fn column(tensor: &Tensor, c: usize) -> Option<Tensor> {
    let [n, k] = *tensor.shape() else { return None };
    let pick = |i: usize| i * k + c;
    let data = match tensor.data() {
        TensorData::F32(v) => TensorData::F32((0..n).map(|i| v[pick(i)]).collect()),
        TensorData::F64(v) => TensorData::F64((0..n).map(|i| v[pick(i)]).collect()),
        _ => return None,
    };
    Tensor::new(vec![n], data).ok()
}

/// What the model library's `predict` would have returned, for `postprocess`: XGBoost and
/// LightGBM boosters give class probabilities (only class 1's for binary models) or values, as
/// `[n]` when there is one value per row; ONNX gives its only output, or the list of outputs
/// (as `InferenceSession.run`).
fn library_outputs(
    kind: EngineKind,
    outputs: &[NamedOutput],
    blobs: &mut Vec<Vec<u8>>,
) -> Result<Value, ServeError> {
    let value = |output: &NamedOutput, blobs: &mut Vec<Vec<u8>>| match &output.value {
        OutputValue::Tensor(t) => frame::tensor_marker(t, blobs),
        OutputValue::Maps(rows) => Value::Array(
            rows.iter()
                .map(|row| {
                    Value::Object(
                        row.iter()
                            .map(|(label, p)| {
                                let key = match label {
                                    serval_engine::ClassLabel::Int(i) => i.to_string(),
                                    serval_engine::ClassLabel::Str(s) => s.clone(),
                                };
                                (key, json!(p))
                            })
                            .collect(),
                    )
                })
                .collect(),
        ),
    };
    if matches!(kind, EngineKind::Xgboost | EngineKind::Lightgbm) {
        let chosen = outputs
            .iter()
            .find(|o| o.name == PROBABILITIES)
            .or_else(|| outputs.iter().find(|o| o.name == PREDICTIONS))
            .or(outputs.first())
            .ok_or_else(|| ServeError::Internal("the model returned nothing".into()))?;
        if let OutputValue::Tensor(t) = &chosen.value {
            let probabilities = chosen.name == PROBABILITIES;
            let flat = match t.shape() {
                [_, 2] if probabilities => column(t, 1),
                [_, 1] => column(t, 0),
                _ => None,
            };
            return Ok(frame::tensor_marker(flat.as_ref().unwrap_or(t), blobs));
        }
        return Ok(value(chosen, blobs));
    }
    match outputs {
        [only] => Ok(value(only, blobs)),
        several => Ok(Value::Array(
            several.iter().map(|o| value(o, blobs)).collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serval_engine::{DataType, ModelMetadata, Task, TensorSpec};

    fn tensor(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        Tensor::new(shape, TensorData::F32(data)).unwrap()
    }

    fn output(name: &str, t: Tensor) -> NamedOutput {
        NamedOutput {
            name: name.into(),
            value: OutputValue::Tensor(t),
        }
    }

    fn decoded(value: &Value, blobs: &[Vec<u8>]) -> Tensor {
        frame::marker_tensor(value, blobs).unwrap().unwrap()
    }

    #[test]
    fn boosters_give_postprocess_what_predict_returns() {
        // Binary: the probability of class 1 per row, as Booster.predict.
        let labels = output(
            "label",
            Tensor::new(vec![2], TensorData::I64(vec![1, 0])).unwrap(),
        );
        let probs = output(
            "probabilities",
            tensor(vec![2, 2], vec![0.2, 0.8, 0.9, 0.1]),
        );
        let mut blobs = Vec::new();
        let v = library_outputs(EngineKind::Xgboost, &[labels.clone(), probs], &mut blobs).unwrap();
        assert_eq!(decoded(&v, &blobs), tensor(vec![2], vec![0.8, 0.1]));
        // Multiclass: every probability.
        let probs = output("probabilities", tensor(vec![1, 3], vec![0.1, 0.2, 0.7]));
        let mut blobs = Vec::new();
        let v = library_outputs(EngineKind::Lightgbm, &[labels, probs], &mut blobs).unwrap();
        assert_eq!(decoded(&v, &blobs), tensor(vec![1, 3], vec![0.1, 0.2, 0.7]));
        // Regression: one value per row.
        let preds = output("predictions", tensor(vec![2, 1], vec![1.5, 2.5]));
        let mut blobs = Vec::new();
        let v = library_outputs(EngineKind::Xgboost, &[preds], &mut blobs).unwrap();
        assert_eq!(decoded(&v, &blobs), tensor(vec![2], vec![1.5, 2.5]));
    }

    #[test]
    fn onnx_gives_the_list_of_outputs() {
        let a = output("a", tensor(vec![1], vec![1.0]));
        let b = output("b", tensor(vec![1, 2], vec![0.5, 0.5]));
        let mut blobs = Vec::new();
        let v = library_outputs(EngineKind::Onnx, &[a.clone(), b], &mut blobs).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(decoded(&v[1], &blobs), tensor(vec![1, 2], vec![0.5, 0.5]));
        let mut blobs = Vec::new();
        let v = library_outputs(EngineKind::Onnx, &[a], &mut blobs).unwrap();
        assert_eq!(decoded(&v, &blobs), tensor(vec![1], vec![1.0]));
    }

    fn tabular(width: usize) -> ModelMetadata {
        ModelMetadata {
            format: "test".into(),
            inputs: vec![TensorSpec {
                name: "input".into(),
                dtype: DataType::F32,
                shape: vec![None, Some(width)],
            }],
            outputs: vec![],
            feature_names: None,
            task: Task::Regression,
        }
    }

    #[test]
    fn preprocess_output_becomes_model_inputs() {
        let meta = tabular(2);
        // A 1-d array is one row.
        let mut blobs = Vec::new();
        let marker = frame::tensor_marker(&tensor(vec![2], vec![1.0, 2.0]), &mut blobs);
        let inputs = preprocessed_inputs(marker, &blobs, &meta, &[]).unwrap();
        assert_eq!(inputs[0].tensor, tensor(vec![1, 2], vec![1.0, 2.0]));
        // Nested lists and named features go through the default mapping.
        let inputs = preprocessed_inputs(json!([[1, 2], [3, 4]]), &[], &meta, &[]).unwrap();
        assert_eq!(
            inputs[0].tensor,
            tensor(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0])
        );
        let inputs = preprocessed_inputs(json!({"x1": 2, "x0": 1}), &[], &meta, &[]).unwrap();
        assert_eq!(inputs[0].tensor, tensor(vec![1, 2], vec![1.0, 2.0]));
        // A dict of arrays (named columns).
        let mut blobs = Vec::new();
        let x0 = frame::tensor_marker(&tensor(vec![2], vec![1.0, 3.0]), &mut blobs);
        let x1 = frame::tensor_marker(&tensor(vec![2], vec![2.0, 4.0]), &mut blobs);
        let inputs = preprocessed_inputs(json!({"x0": x0, "x1": x1}), &blobs, &meta, &[]).unwrap();
        assert_eq!(
            inputs[0].tensor,
            tensor(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0])
        );
        // A wrong width is the user's error (422).
        let error = preprocessed_inputs(json!([[1, 2, 3]]), &[], &meta, &[]).unwrap_err();
        assert_eq!(error.kind(), "invalid_input");
    }
}
