//! What the Open Inference Protocol says about models, shared by its REST and gRPC adapters:
//! server extensions, model metadata, readiness and the repository index, all read from a
//! routing table.

use serde::Serialize;
use serval_store::ApiKey;

use crate::endpoint::TensorMeta;
use crate::error::Error;
use crate::table::RoutingTable;

/// What the server advertises in `GET /v2`.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "model_repository_index"];

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
    table: &RoutingTable,
    model: &str,
    version: Option<&str>,
) -> Result<ModelMetadata, Error> {
    let endpoint = table.resolve(model, version, fastrand::f64())?;
    Ok(ModelMetadata {
        name: model.to_string(),
        versions: table.versions(model),
        platform: endpoint.signature.platform.clone(),
        inputs: tensor_metadata(&endpoint.signature.inputs),
        outputs: tensor_metadata(&endpoint.signature.outputs),
    })
}

/// Whether a model answers requests: `Ok(false)` when it is configured but not serving.
pub fn is_ready(table: &RoutingTable, model: &str, version: Option<&str>) -> Result<bool, Error> {
    match table.resolve(model, version, fastrand::f64()) {
        Ok(_) => Ok(true),
        Err(Error::Unavailable { .. }) => Ok(false),
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

/// The repository index (shared with gRPC): every model, or only ready ones; with a scoped key,
/// only the endpoints it may call.
pub fn index(table: &RoutingTable, ready_only: bool, key: Option<&ApiKey>) -> Vec<IndexItem> {
    table
        .index()
        .into_iter()
        .filter(|e| e.ready || !ready_only)
        .filter(|e| key.is_none_or(|key| key.allows(&e.name)))
        .map(|e| IndexItem {
            name: e.name,
            version: e.version,
            state: if e.ready { "READY" } else { "UNAVAILABLE" },
            reason: e.reason,
        })
        .collect()
}
