//! The Python request path: the body (or, for V2, `{input name: nested list}`) goes to the
//! endpoint's worker pool; for a native model behind `preprocess`, the worker stops after
//! `preprocess` when it returns array-like data, the server runs the model, and the worker runs
//! `postprocess` on what the model library's `predict` would have returned.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use serval_engine::{NamedOutput, NamedTensor, OutputValue, Tensor, TensorData};
use serval_python::frame::{self, BLOB};
use serval_python::{Body, Pool, Step};
use serval_store::EngineKind;

use super::{
    Context, Endpoint, Executed, Input, NativeModel, Output, Payload, STAGE_INFERENCE, STAGE_QUEUE,
    Signature, Upstream, tensors_object,
};
use crate::error::Error;
use crate::wire::InferTensor;

/// What runs between `preprocess` and `postprocess` in the server.
pub(super) enum Between<'a> {
    /// A native model.
    Native(&'a NativeModel),
    /// The V2 gRPC server a `triton` endpoint forwards to.
    Forward(&'a Upstream),
}

/// Runs one request on an endpoint's Python workers (with `between` in the server between
/// `preprocess` and `postprocess` when there is one).
pub(super) async fn run(
    endpoint: &Endpoint,
    pool: &Pool,
    between: Option<Between<'_>>,
    input: Input,
    ctx: Context,
    sampled: bool,
) -> Result<Executed, Error> {
    let python_error = |e| Error::from_python(e, ctx.timeout, &endpoint.url);
    let (body, state, tensors) = match input {
        Input::Body(Payload::Json(value)) => (Body::Json(value), None, false),
        Input::Body(Payload::Bytes(bytes)) => (Body::Bytes(bytes.to_vec()), None, false),
        // Only native endpoints are given rows; as JSON should one ever get here.
        Input::Body(Payload::Rows(input)) => (
            Body::Json(serde_json::json!({ "instances": serval_core::tensor_json(&input.tensor) })),
            None,
            false,
        ),
        Input::Body(Payload::InvalidRows(message)) => return Err(Error::InvalidInput(message)),
        Input::Tensors {
            inputs, parameters, ..
        } => {
            let state = (!parameters.is_empty()).then(|| {
                let mut state = serde_json::Map::new();
                state.insert("parameters".to_string(), Value::Object(parameters));
                state
            });
            (Body::Json(tensors_object(&inputs, true)), state, true)
        }
    };
    let between = between.filter(|_| !pool.custom_model());
    let step = pool
        .infer(body, state, between.is_some(), sampled, ctx.deadline)
        .await;
    if let Err(serval_python::PyError::User { library: true, .. }) = &step {
        // It failed inside the model's library: it went that way all the same.
        endpoint.library_requests.fetch_add(1, Ordering::Relaxed);
    }
    let step = step.map_err(python_error)?;
    let outcome = match step {
        Step::Done(outcome) => {
            if outcome.path == "library" {
                endpoint.library_requests.fetch_add(1, Ordering::Relaxed);
            }
            outcome
        }
        Step::Pre { data, blobs, next } => {
            let mut out_blobs = Vec::new();
            let mut contributions = None;
            let value = match between {
                Some(Between::Native(model)) => {
                    let meta = model.metadata();
                    let triton = endpoint.kind == EngineKind::Triton;
                    let inputs = if triton {
                        triton_inputs(data, &blobs, meta, &endpoint.input_names)?
                    } else {
                        preprocessed_inputs(data, &blobs, meta, &endpoint.input_names)?
                    };
                    let rows = ctx.explain.then(|| inputs.clone());
                    let mut outputs = model
                        .infer(
                            &endpoint.url,
                            endpoint.metrics.as_ref(),
                            inputs,
                            ctx.deadline,
                            ctx.timeout,
                        )
                        .await?;
                    if let Some(rows) = rows {
                        let explained = model.explain(&endpoint.url, rows, &ctx).await?;
                        contributions =
                            Some(frame::tensor_marker(&explained.tensor, &mut out_blobs));
                    }
                    if triton && !endpoint.output_names.is_empty() {
                        // The requested outputs (`--output-name`), in their order.
                        outputs = endpoint
                            .output_names
                            .iter()
                            .filter_map(|name| outputs.iter().find(|o| &o.name == name).cloned())
                            .collect();
                    }
                    library_outputs(endpoint.kind, &outputs, &mut out_blobs)?
                }
                Some(Between::Forward(upstream)) => {
                    let inputs = forward_inputs(data, &blobs, &endpoint.signature)?;
                    let start = tokio::time::Instant::now();
                    let outputs = upstream
                        .infer(inputs, &endpoint.output_names, ctx.deadline)
                        .await?;
                    if let Some(metrics) = &endpoint.metrics {
                        metrics.stage(STAGE_INFERENCE, start.elapsed());
                    }
                    let outputs = outputs
                        .into_iter()
                        .map(|t| {
                            let t = t.into_engine()?;
                            Ok(NamedOutput {
                                name: t.name,
                                value: OutputValue::Tensor(t.tensor),
                            })
                        })
                        .collect::<Result<Vec<_>, Error>>()?;
                    // One array, or a list of arrays (as clearml's triton engine gives them).
                    library_outputs(EngineKind::Onnx, &outputs, &mut out_blobs)?
                }
                None => return Err(Error::Internal("nothing runs between the stages".into())),
            };
            next.post(value, contributions, out_blobs)
                .await
                .map_err(python_error)?
        }
    };
    if let Some(metrics) = &endpoint.metrics {
        metrics.stage(STAGE_QUEUE, outcome.queue);
        // The worker's stages; `process` is inference when the worker ran the model.
        for (stage, name) in [(1, "preprocess"), (2, "process"), (3, "postprocess")] {
            if let Some(seconds) = outcome.timings.get(name).and_then(Value::as_f64) {
                metrics.stage(
                    stage,
                    Duration::try_from_secs_f64(seconds).unwrap_or_default(),
                );
            }
        }
    }
    let output = if tensors {
        Output::Tensors(outputs_of(&endpoint.signature, outcome.value))
    } else {
        Output::Body(outcome.value)
    };
    Ok(Executed {
        output,
        stats: outcome.stats,
    })
}

/// V2 outputs from what `postprocess` returned: a dict gives one output per key, anything else
/// one output (named after the endpoint's only `--output-name`, else `output`). Declared
/// `--output-type`s cast numbers.
fn outputs_of(signature: &Signature, value: Value) -> Vec<InferTensor> {
    let declared = |name: &str| {
        signature
            .outputs
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.datatype)
    };
    match value {
        Value::Object(map) => map
            .into_iter()
            .map(|(name, value)| {
                let datatype = declared(&name);
                InferTensor::from_json(name, &value, datatype)
            })
            .collect(),
        other => {
            let name = match signature.outputs.as_slice() {
                [only] => only.name.clone(),
                _ => "output".to_string(),
            };
            let datatype = declared(&name);
            vec![InferTensor::from_json(name, &other, datatype)]
        }
    }
}

/// Model inputs from what `preprocess` returned: an array goes straight in (a 1-d array is one
/// row); anything else goes through the default JSON mapping (rows, named features, ...).
fn preprocessed_inputs(
    data: Value,
    blobs: &[Vec<u8>],
    meta: &serval_engine::ModelMetadata,
    input_names: &[String],
) -> Result<Vec<NamedTensor>, Error> {
    if let Some(tensor) = frame::marker_tensor(&data, blobs) {
        let tensor = tensor.map_err(Error::Worker)?;
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

/// Model inputs from what `preprocess` returned, by clearml's `triton` contract: with one input
/// the whole value is that input; with several it is a list aligned with `--input-name` (extra
/// items are ignored, as clearml ignores them). Each array keeps its own shape — one dimension
/// short of the model's gets a leading batch of 1 — and is cast to the input's type.
fn triton_inputs(
    data: Value,
    blobs: &[Vec<u8>],
    meta: &serval_engine::ModelMetadata,
    input_names: &[String],
) -> Result<Vec<NamedTensor>, Error> {
    let specs: Vec<&serval_engine::TensorSpec> = if input_names.is_empty() {
        meta.inputs.iter().collect()
    } else {
        // Checked against the graph at load: every name is an input.
        input_names
            .iter()
            .filter_map(|n| meta.inputs.iter().find(|s| &s.name == n))
            .collect()
    };
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let items = per_input(data, &names)?;
    specs
        .into_iter()
        .zip(items)
        .map(|(spec, item)| {
            let tensor = match frame::marker_tensor(&item, blobs) {
                Some(tensor) => tensor.map_err(Error::Worker)?.cast(spec.dtype)?,
                None => {
                    serval_core::nested(&replace_markers(item, blobs)?, spec.dtype, &spec.name)?
                }
            };
            let tensor = if tensor.shape().len() + 1 == spec.shape.len() {
                let mut shape = vec![1];
                shape.extend_from_slice(tensor.shape());
                Tensor::new(shape, tensor.into_data())?
            } else {
                tensor
            };
            Ok(NamedTensor {
                name: spec.name.clone(),
                tensor,
            })
        })
        .collect()
}

/// clearml's triton rule for what `preprocess` returned: with one input (or none declared) the
/// whole value is that input; with several, a list aligned with the names (extra items are
/// ignored, as clearml ignores them).
fn per_input(data: Value, names: &[&str]) -> Result<Vec<Value>, Error> {
    match (names.len(), data) {
        (0 | 1, data) => Ok(vec![data]),
        (n, Value::Array(mut items)) if items.len() >= n => {
            items.truncate(n);
            Ok(items)
        }
        (n, Value::Array(items)) => Err(Error::InvalidInput(format!(
            "preprocess returned {} arrays for the model's {n} inputs ({})",
            items.len(),
            names.join(", ")
        ))),
        (n, _) => Err(Error::InvalidInput(format!(
            "preprocess must return a list of {n} arrays, one per input ({})",
            names.join(", ")
        ))),
    }
}

/// Inputs for a forwarded model from what `preprocess` returned, by clearml's triton contract:
/// one input → the whole value, several → a list aligned with `--input-name`; each typed by its
/// `--input-type` and shaped as the array is (the upstream server checks the shape).
fn forward_inputs(
    data: Value,
    blobs: &[Vec<u8>],
    signature: &Signature,
) -> Result<Vec<InferTensor>, Error> {
    let declared = &signature.inputs;
    let names: Vec<&str> = declared.iter().map(|m| m.name.as_str()).collect();
    let items = per_input(data, &names)?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let json = replace_markers(item, blobs)?;
            let (name, datatype) = declared.get(i).map_or(("input".to_string(), None), |m| {
                (m.name.clone(), Some(m.datatype))
            });
            Ok(InferTensor::from_json(name, &json, datatype))
        })
        .collect()
}

fn replace_markers(value: Value, blobs: &[Vec<u8>]) -> Result<Value, Error> {
    Ok(match value {
        Value::Object(map) if map.contains_key(BLOB) => {
            let tensor = frame::marker_tensor(&Value::Object(map), blobs)
                .unwrap_or_else(|| Err("bad array".into()))
                .map_err(Error::Worker)?;
            serval_core::tensor_json(&tensor)
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| Ok((k, replace_markers(v, blobs)?)))
                .collect::<Result<_, Error>>()?,
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
) -> Result<Value, Error> {
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
            .ok_or_else(|| Error::Internal("the model returned nothing".into()))?;
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
    use serval_engine::{DataType, ModelMetadata, Task};

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
        ModelMetadata::tabular("test", width, DataType::F32, Task::Regression)
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
