//! Native models in the server: where inference runs (inline or on a blocking thread), and the
//! two request forms — a clearml JSON body through the default mapping, or V2 tensors as they are.

use std::sync::Arc;

use serval_core::{reply_from_outputs, request_to_inputs};
use serval_engine::{Engine, NamedOutput, NamedTensor};
use serval_store::EngineKind;
use tokio::time::Instant;

use super::{Endpoint, Error, InferTensor, Input, Output, Payload, STAGE_INFERENCE};
use crate::metrics::EndpointMetrics;

/// Batches of at most this many rows run inline on tree models.
const TREE_INLINE_ROWS: usize = 64;

/// A native model and where its inference runs.
pub struct NativeModel {
    pub engine: Arc<dyn Engine>,
    /// Requests of at most this many rows run on the async worker thread (tree models answer
    /// them in microseconds); larger ones, and every other engine, run on a blocking thread so
    /// a slow model never stalls the async workers.
    pub inline_rows: usize,
}

impl NativeModel {
    pub fn new(kind: EngineKind, engine: Arc<dyn Engine>) -> NativeModel {
        let inline_rows = match kind {
            EngineKind::Xgboost | EngineKind::Lightgbm => TREE_INLINE_ROWS,
            _ => 0,
        };
        NativeModel {
            engine,
            inline_rows,
        }
    }

    /// Runs the model, recording the inference stage.
    pub async fn infer(
        &self,
        metrics: Option<&EndpointMetrics>,
        inputs: Vec<NamedTensor>,
    ) -> Result<Vec<NamedOutput>, Error> {
        let rows = inputs
            .first()
            .and_then(|i| i.tensor.shape().first().copied())
            .unwrap_or(1);
        let start = Instant::now();
        let outputs = if rows <= self.inline_rows {
            self.engine.infer(&inputs)?
        } else {
            let engine = self.engine.clone();
            tokio::task::spawn_blocking(move || engine.infer(&inputs))
                .await
                .map_err(|e| Error::Internal(format!("inference task failed: {e}")))??
        };
        if let Some(metrics) = metrics {
            metrics.stage(STAGE_INFERENCE, start.elapsed().as_secs_f64());
        }
        Ok(outputs)
    }
}

/// Serves a request on a native model.
pub async fn run(endpoint: &Endpoint, model: &NativeModel, input: Input) -> Result<Output, Error> {
    match input {
        Input::Body(payload) => {
            let body = match payload {
                Payload::Json(value) => value,
                // Native models only take JSON: read it whatever the Content-Type says (curl -d
                // sends form-urlencoded by default).
                Payload::Bytes(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                    Error::InvalidInput(format!(
                        "endpoint '{}' runs a native model and takes a JSON body; this body is not JSON ({e})",
                        endpoint.url
                    ))
                })?,
            };
            let meta = model.engine.metadata();
            let inputs = request_to_inputs(&body, meta, &endpoint.input_names)?;
            let outputs = model.infer(endpoint.metrics.as_ref(), inputs).await?;
            Ok(Output::Body(reply_from_outputs(meta, &outputs)?))
        }
        Input::Tensors { inputs, .. } => {
            let inputs = inputs
                .into_iter()
                .map(InferTensor::into_engine)
                .collect::<Result<Vec<_>, _>>()?;
            let outputs = model.infer(endpoint.metrics.as_ref(), inputs).await?;
            Ok(Output::Tensors(
                outputs
                    .into_iter()
                    .map(InferTensor::from_engine)
                    .collect::<Result<_, _>>()?,
            ))
        }
    }
}
