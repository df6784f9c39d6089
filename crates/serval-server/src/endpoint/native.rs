//! Native models in the server: where inference runs (inline or on a blocking thread), and the
//! two request forms — a clearml JSON body through the default mapping, or V2 tensors as they are.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serval_core::{ReplyText, explained_reply_json, reply_json, request_to_inputs};

/// Replies of at least this many elements (about 1 MB of text) are written as they are sent
/// instead of whole.
const STREAM_FROM: usize = 1 << 16;
use serval_engine::{Engine, ModelMetadata, NamedOutput, NamedTensor, OutputValue, Tensor};
use serval_store::EngineKind;
use tokio::time::Instant;

use super::batch::Runner;
use super::{Endpoint, Input, Output, Payload, STAGE_INFERENCE};
use crate::error::Error;
use crate::metrics::EndpointMetrics;
use crate::offload;
use crate::wire::InferTensor;

/// Batches of at most this many rows run inline on tree models.
const TREE_INLINE_ROWS: usize = 64;
/// Tree models run bigger batches in chunks of this many rows and check between chunks that the
/// request is still wanted: work for a request past its deadline (or whose client left) stops
/// within one chunk instead of running to the end.
const TREE_CHUNK_ROWS: usize = 8_192;

/// A native model and where its inference runs.
pub struct NativeModel {
    metadata: Arc<ModelMetadata>,
    exec: Exec,
    /// The engine that computes explanations (a shared engine, batched or not); `None` for
    /// models whose runner owns their instances (ONNX).
    explainer: Option<Arc<dyn Engine>>,
}

enum Exec {
    /// An engine every thread may call at once (trees), called where the request runs:
    /// requests of at most `inline_rows` rows on the async worker thread (tree models answer
    /// them in microseconds), larger ones on a blocking thread so a big batch never stalls the
    /// async workers, in chunks of `chunk_rows` rows (0: one call).
    Shared {
        engine: Arc<dyn Engine>,
        inline_rows: usize,
        chunk_rows: usize,
    },
    /// Runner threads that own the model's instances (ONNX sessions; every batched model), fed
    /// by a queue (`batch.rs`).
    Runner(Runner),
}

impl NativeModel {
    /// A shared engine run where the request runs (trees inline when small).
    pub fn shared(kind: EngineKind, engine: Arc<dyn Engine>) -> NativeModel {
        let (inline_rows, chunk_rows) = match kind {
            // Trees, and scikit-learn linear models: microseconds for a few rows.
            EngineKind::Xgboost | EngineKind::Lightgbm | EngineKind::Sklearn => {
                (TREE_INLINE_ROWS, TREE_CHUNK_ROWS)
            }
            _ => (0, 0),
        };
        NativeModel {
            metadata: Arc::new(engine.metadata().clone()),
            explainer: Some(engine.clone()),
            exec: Exec::Shared {
                engine,
                inline_rows,
                chunk_rows,
            },
        }
    }

    /// A model served by its runner's threads; `explainer` computes explanations, if any does.
    pub fn runner(
        metadata: ModelMetadata,
        runner: Runner,
        explainer: Option<Arc<dyn Engine>>,
    ) -> NativeModel {
        NativeModel {
            metadata: Arc::new(metadata),
            exec: Exec::Runner(runner),
            explainer,
        }
    }

    /// Each row's contributions (TreeSHAP): inline for a few rows, else (and for a model's first
    /// explanation) on a blocking thread;
    /// refused before it is computed when it would hold more than `max_values` values.
    pub(super) async fn explain(
        &self,
        url: &str,
        inputs: Vec<NamedTensor>,
        ctx: &super::Context,
    ) -> Result<NamedTensor, Error> {
        let (deadline, timeout) = (ctx.deadline, ctx.timeout);
        let Some(engine) = &self.explainer else {
            return Err(Error::BadRequest(format!(
                "endpoint '{url}' does not explain its predictions: {} models are not explained \
                 (contributions come from XGBoost and LightGBM models)",
                self.metadata.format
            )));
        };
        let rows = inputs
            .first()
            .and_then(|i| i.tensor.shape().first().copied())
            .unwrap_or(1);
        // Features + 1 per output (a class of a multiclass model, else one) per row.
        let outputs = match &self.metadata.task {
            serval_engine::Task::Classification { labels } if labels.len() > 2 => labels.len(),
            _ => 1,
        };
        let width = self.metadata.num_features().unwrap_or(0) + 1;
        let values = rows.saturating_mul(outputs).saturating_mul(width);
        if values > ctx.max_values {
            return Err(Error::BadRequest(format!(
                "the explanation of {rows} rows would hold {values} values, more than the server \
                 allows ({}, --max-values): explain fewer rows at a time",
                ctx.max_values
            )));
        }
        // The first explanation of a model computes its tables: off the async threads.
        let explained = if rows <= TREE_INLINE_ROWS && engine.explanation_ready() {
            engine.explain(&inputs)
        } else {
            let engine = engine.clone();
            let values = inputs.iter().map(|i| i.tensor.data().len()).sum::<usize>();
            let run = offload::run("explanation", move || {
                (engine.explain(&inputs).map_err(Error::from), values * 8)
            });
            match tokio::time::timeout_at(deadline, run).await {
                Ok(explained) => return explained.map_err(explain_error(url)),
                Err(_) => return Err(Error::Timeout(timeout)),
            }
        };
        explained.map_err(|e| explain_error(url)(e.into()))
    }

    pub fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    /// The metadata, to read request bodies for the model off the async workers.
    pub fn metadata_arc(&self) -> Arc<ModelMetadata> {
        self.metadata.clone()
    }

    /// How the model runs, for the status.
    pub fn describe(&self) -> String {
        match &self.exec {
            Exec::Shared { .. } => format!("native {}", self.metadata.format),
            Exec::Runner(runner) => {
                super::batch::describe(runner.batching.as_ref(), runner.threads, &self.metadata)
            }
        }
    }

    /// Runs the model for a request on `url` due by `deadline` (`timeout`: its whole budget),
    /// recording the inference stage.
    pub async fn infer(
        &self,
        url: &str,
        metrics: Option<&EndpointMetrics>,
        inputs: Vec<NamedTensor>,
        deadline: Instant,
        timeout: std::time::Duration,
    ) -> Result<Vec<NamedOutput>, Error> {
        let (engine, inline_rows, chunk_rows) = match &self.exec {
            // The runner records the queue and inference stages itself.
            Exec::Runner(runner) => {
                let inputs = if runner.batching.is_some() {
                    declared_types(inputs, &self.metadata)
                } else {
                    inputs
                };
                return runner.infer(url, inputs, deadline, timeout).await;
            }
            Exec::Shared {
                engine,
                inline_rows,
                chunk_rows,
            } => (engine, *inline_rows, *chunk_rows),
        };
        let rows = inputs
            .first()
            .and_then(|i| i.tensor.shape().first().copied())
            .unwrap_or(1);
        let start = Instant::now();
        let outputs = if rows <= inline_rows {
            engine.infer(&inputs)?
        } else {
            let engine = engine.clone();
            // Set when this future is dropped (deadline or client gone) or done.
            struct Abandon(Arc<AtomicBool>);
            impl Drop for Abandon {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let abandoned = Arc::new(AtomicBool::new(false));
            let _abandon = Abandon(abandoned.clone());
            let deadline = deadline.into_std();
            offload::run("inference", move || {
                let outputs = in_chunks(&*engine, &inputs, rows, chunk_rows, || {
                    abandoned.load(Ordering::Relaxed) || std::time::Instant::now() >= deadline
                });
                let values: usize = inputs.iter().map(|i| i.tensor.data().len()).sum();
                (outputs, values * size_of::<f64>())
            })
            .await
            .map_err(|e| match e {
                // Stopped for its deadline (the runtime's timer may not have fired yet): 504.
                Error::Cancelled if std::time::Instant::now() >= deadline => {
                    Error::Timeout(timeout)
                }
                e => e,
            })?
        };
        if let Some(metrics) = metrics {
            metrics.stage(STAGE_INFERENCE, start.elapsed());
        }
        Ok(outputs)
    }
}

/// The default reply with the explanation beside it: `"contributions"`, nested as its shape.
fn explained_body(
    meta: &ModelMetadata,
    outputs: &[NamedOutput],
    contributions: NamedTensor,
) -> Result<Output, Error> {
    Ok(Output::Json(explained_reply_json(
        meta,
        outputs,
        &contributions.tensor,
    )?))
}

/// A model that cannot be explained is the request's problem: 400 naming why.
fn explain_error(url: &str) -> impl Fn(Error) -> Error + '_ {
    move |error| match error {
        Error::InvalidInput(why) => Error::BadRequest(format!(
            "endpoint '{url}' cannot explain this prediction: {why}"
        )),
        other => other,
    }
}

/// An ONNX model's numeric inputs cast to the float type it declares, as ONNX Runtime gets them
/// anyway: requests that sent float64 (clearml JSON) and float32 (V2 FP32) then share calls.
fn declared_types(inputs: Vec<NamedTensor>, meta: &ModelMetadata) -> Vec<NamedTensor> {
    use serval_engine::{DataType, TensorData};
    if meta.format != "onnx" {
        return inputs;
    }
    inputs
        .into_iter()
        .map(|mut input| {
            let want = meta
                .inputs
                .iter()
                .find(|s| s.name == input.name)
                .map(|s| s.dtype);
            let have = input.tensor.dtype();
            let numeric = matches!(
                have,
                DataType::F32 | DataType::F64 | DataType::I64 | DataType::I32
            );
            let data = match want {
                Some(DataType::F32) if numeric && have != DataType::F32 => {
                    input.tensor.to_f32().map(TensorData::F32)
                }
                Some(DataType::F64) if numeric && have != DataType::F64 => {
                    input.tensor.to_f64().map(TensorData::F64)
                }
                _ => return input,
            };
            if let Ok(tensor) = data.and_then(|d| Tensor::new(input.tensor.shape().to_vec(), d)) {
                input.tensor = tensor;
            }
            input
        })
        .collect()
}

/// Runs a batch in chunks of `chunk_rows` rows, asking `stop` before each; one call if the
/// batch is small, chunking is off, or the inputs do not share their first dimension.
fn in_chunks(
    engine: &dyn Engine,
    inputs: &[NamedTensor],
    rows: usize,
    chunk_rows: usize,
    stop: impl Fn() -> bool + Sync,
) -> Result<Vec<NamedOutput>, Error> {
    let same_rows = inputs
        .iter()
        .all(|i| i.tensor.shape().first() == Some(&rows) && i.tensor.shape().len() >= 2);
    if chunk_rows == 0 || rows <= chunk_rows || !same_rows {
        // One call; an engine that can interrupt itself (ONNX Runtime) watches `stop`.
        return engine.infer_until(inputs, &stop).map_err(|e| {
            if matches!(e, serval_engine::EngineError::Stopped) {
                tracing::info!(
                    "inference stopped during a run of {rows} rows: the request's deadline passed or its client left"
                );
            }
            e.into()
        });
    }
    // Each chunk's outputs join the whole batch's as soon as they are made.
    let mut stacked = serval_engine::OutputStack::new(rows);
    let mut start = 0;
    while start < rows {
        if stop() {
            tracing::info!(
                "inference stopped after {start} of {rows} rows: the request's deadline passed or its client left"
            );
            return Err(Error::Cancelled);
        }
        let end = (start + chunk_rows).min(rows);
        let chunk = inputs
            .iter()
            .map(|i| {
                Ok(NamedTensor {
                    name: i.name.clone(),
                    tensor: i.tensor.rows(start, end)?,
                })
            })
            .collect::<Result<Vec<_>, serval_engine::EngineError>>()?;
        stacked.push(engine.infer(&chunk)?)?;
        start = end;
    }
    Ok(stacked.finish())
}

/// Serves a request on a native model.
pub async fn run(
    endpoint: &Endpoint,
    model: &NativeModel,
    input: Input,
    ctx: super::Context,
    watch: super::Watch<'_>,
) -> Result<Output, Error> {
    let super::Watch {
        mut capture,
        observer,
    } = watch;
    let infer = |inputs| {
        model.infer(
            &endpoint.url,
            endpoint.metrics.as_ref(),
            inputs,
            ctx.deadline,
            ctx.timeout,
        )
    };
    match input {
        Input::Body(payload) => {
            let meta = model.metadata();
            let inputs = match payload {
                Payload::Rows(input) => vec![input],
                Payload::InvalidRows(message) => return Err(Error::InvalidInput(message)),
                Payload::Json(body) => request_to_inputs(&body, meta, &endpoint.input_names)?,
                // Native models only take JSON: read it whatever the Content-Type says (curl -d
                // sends form-urlencoded by default).
                Payload::Bytes(bytes) => {
                    let body = serde_json::from_slice(&bytes).map_err(|e| {
                        Error::InvalidInput(format!(
                            "endpoint '{}' runs a native model and takes a JSON body; this body is not JSON ({e})",
                            endpoint.url
                        ))
                    })?;
                    request_to_inputs(&body, meta, &endpoint.input_names)?
                }
            };
            if let Some(observer) = observer {
                observer.observe(&inputs);
            }
            if let Some(capture) = capture.as_deref_mut() {
                capture.inputs = inputs.clone();
            }
            let explained = if ctx.explain {
                let rows = inputs.clone();
                let outputs = infer(inputs).await?;
                if let Some(capture) = capture {
                    capture.outputs = outputs.clone();
                }
                let contributions = model.explain(&endpoint.url, rows, &ctx).await?;
                return explained_body(meta, &outputs, contributions);
            } else {
                inputs
            };
            let outputs = infer(explained).await?;
            if let Some(capture) = capture {
                capture.outputs = outputs.clone();
            }
            if endpoint.kind == EngineKind::Triton {
                // The requested outputs by name (`--output-name`; all when none is named).
                let wanted: Vec<_> = outputs
                    .into_iter()
                    .filter(|o| {
                        endpoint.output_names.is_empty() || endpoint.output_names.contains(&o.name)
                    })
                    .collect();
                return Ok(Output::Body(serval_core::outputs_by_name(&wanted)));
            }
            let elements: usize = outputs
                .iter()
                .map(|o| match &o.value {
                    OutputValue::Tensor(t) => t.data().len(),
                    OutputValue::Maps(rows) => rows.len(),
                })
                .sum();
            if elements >= STREAM_FROM {
                match ReplyText::new(meta, outputs) {
                    Ok(text) => return Ok(Output::Text(text)),
                    Err(outputs) => return Ok(Output::Json(reply_json(meta, &outputs)?)),
                }
            }
            Ok(Output::Json(reply_json(meta, &outputs)?))
        }
        Input::Tensors { inputs, .. } => {
            let inputs = inputs
                .into_iter()
                .map(InferTensor::into_engine)
                .collect::<Result<Vec<_>, _>>()?;
            let rows = ctx.explain.then(|| inputs.clone());
            if let Some(observer) = observer {
                observer.observe(&inputs);
            }
            if let Some(capture) = capture.as_deref_mut() {
                capture.inputs = inputs.clone();
            }
            let mut outputs = infer(inputs).await?;
            if let Some(capture) = capture {
                capture.outputs = outputs.clone();
            }
            if let Some(rows) = rows {
                let contributions = model.explain(&endpoint.url, rows, &ctx).await?;
                outputs.push(NamedOutput {
                    name: contributions.name,
                    value: OutputValue::Tensor(contributions.tensor),
                });
            }
            Ok(Output::Tensors(
                outputs
                    .into_iter()
                    .map(InferTensor::from_engine)
                    .collect::<Result<_, _>>()?,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serval_engine::OutputValue;
    use serval_engine::{ModelMetadata, TensorData};

    /// Row sums as `sum` [rows] and the rows themselves as `echo` [rows, width].
    struct RowSums(ModelMetadata);

    impl Engine for RowSums {
        fn metadata(&self) -> &ModelMetadata {
            &self.0
        }

        fn infer(&self, inputs: &[NamedTensor]) -> serval_engine::Result<Vec<NamedOutput>> {
            let t = &inputs[0].tensor;
            let (rows, width) = t.rows_and_width()?;
            let values = t.to_f64()?;
            let sums = values.chunks(width).map(|r| r.iter().sum()).collect();
            Ok(vec![
                NamedOutput {
                    name: "sum".into(),
                    value: OutputValue::Tensor(Tensor::new(vec![rows], TensorData::F64(sums))?),
                },
                NamedOutput {
                    name: "echo".into(),
                    value: OutputValue::Tensor(t.clone()),
                },
            ])
        }
    }

    fn meta() -> ModelMetadata {
        ModelMetadata {
            format: "test".into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            feature_names: None,
            task: serval_engine::Task::Other,
        }
    }

    fn batch(rows: usize) -> Vec<NamedTensor> {
        let data = (0..rows * 3).map(|x| x as f64).collect();
        vec![NamedTensor {
            name: "input".into(),
            tensor: Tensor::new(vec![rows, 3], TensorData::F64(data)).unwrap(),
        }]
    }

    #[test]
    fn batched_onnx_inputs_take_the_declared_float_type() {
        let mut meta = meta();
        meta.inputs = vec![serval_engine::TensorSpec {
            name: "input".into(),
            dtype: serval_engine::DataType::F32,
            shape: vec![None, Some(3)],
        }];
        meta.format = "onnx".into();
        let cast = declared_types(batch(2), &meta);
        assert_eq!(
            cast[0].tensor,
            Tensor::new(
                vec![2, 3],
                TensorData::F32(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
            )
            .unwrap()
        );
        // Other engines compare in their own precision: untouched.
        meta.format = "lightgbm (text)".into();
        assert_eq!(declared_types(batch(2), &meta), batch(2));
    }

    #[test]
    fn chunks_give_the_same_answer_as_one_call() {
        let engine = RowSums(meta());
        let inputs = batch(1000);
        let whole = engine.infer(&inputs).unwrap();
        for chunk in [1, 7, 333, 999, 1000, 5000] {
            let chunked = in_chunks(&engine, &inputs, 1000, chunk, || false).unwrap();
            assert_eq!(chunked, whole, "chunks of {chunk}");
        }
    }

    #[test]
    fn a_stopped_batch_ends_between_chunks() {
        let engine = RowSums(meta());
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let result = in_chunks(&engine, &batch(100), 100, 10, || {
            calls.fetch_add(1, Ordering::Relaxed) + 1 > 3
        });
        assert!(matches!(result, Err(Error::Cancelled)));
        assert_eq!(
            calls.load(Ordering::Relaxed),
            4,
            "asked before each chunk, stopped at the fourth"
        );
    }
}
