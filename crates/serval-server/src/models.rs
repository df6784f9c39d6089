//! What the Open Inference Protocol says about models, shared by its REST and gRPC adapters:
//! server extensions, model metadata, readiness and the repository index, all read from the
//! current routing table.

use std::sync::Arc;

use serde::Serialize;

use crate::AppState;
use crate::pipeline::{self, Endpoint, TensorMeta};

/// What the server advertises in `GET /v2`.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "model_repository_index"];

/// Resolves a V2 model name and version as `/serve` resolves a url.
pub fn resolve(
    state: &AppState,
    model: &str,
    version: Option<&str>,
) -> Result<Arc<Endpoint>, pipeline::Error> {
    state.table.load().resolve(model, version, fastrand::f64())
}

#[derive(Serialize)]
pub struct ModelMetadata {
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

#[derive(Serialize)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

fn tensor_metadata(meta: &[TensorMeta]) -> Vec<TensorMetadata> {
    meta.iter()
        .map(|m| TensorMetadata {
            name: m.name.clone(),
            datatype: m.datatype.name(),
            shape: m.shape.clone(),
        })
        .collect()
}

/// A model's metadata (shared with gRPC): its signature and the versions under its name.
pub fn metadata(
    state: &AppState,
    model: &str,
    version: Option<&str>,
) -> Result<ModelMetadata, pipeline::Error> {
    let endpoint = resolve(state, model, version)?;
    Ok(ModelMetadata {
        name: model.to_string(),
        versions: state.table.load().versions(model),
        platform: endpoint.signature.platform.clone(),
        inputs: tensor_metadata(&endpoint.signature.inputs),
        outputs: tensor_metadata(&endpoint.signature.outputs),
    })
}

/// Whether a model answers requests: `Ok(false)` when it is configured but not serving.
pub fn is_ready(
    state: &AppState,
    model: &str,
    version: Option<&str>,
) -> Result<bool, pipeline::Error> {
    match resolve(state, model, version) {
        Ok(_) => Ok(true),
        Err(pipeline::Error::Unavailable { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

#[derive(Serialize)]
pub struct IndexItem {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The repository index (shared with gRPC): every model, or only ready ones.
pub fn index(state: &AppState, ready_only: bool) -> Vec<IndexItem> {
    state
        .table
        .load()
        .index()
        .into_iter()
        .filter(|e| e.ready || !ready_only)
        .map(|e| IndexItem {
            name: e.name,
            version: e.version,
            state: if e.ready { "READY" } else { "UNAVAILABLE" },
            reason: e.reason,
        })
        .collect()
}
