//! The model registry: registering a stored file or a URL, publishing, tagging.

use serde::{Deserialize, Serialize};
use serval_store::{Model, NewModel, Store};

use crate::{Caller, Result, Written, ensure, invalid};

/// A model to register (`POST /api/v1/models`, `serval model upload`); its file is stored (or
/// checked) before, and arrives here as a URI.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub framework: Option<String>,
    #[serde(default)]
    pub publish: bool,
    pub uri: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub sha256: Option<String>,
}

/// clearml's framework names (its `Framework` attributes plus `custom`), and serval's aliases.
const FRAMEWORKS: &[&str] = &[
    "tensorflow",
    "tensorflowjs",
    "tensorflowlite",
    "pytorch",
    "torchscript",
    "caffe",
    "caffe2",
    "onnx",
    "keras",
    "mknet",
    "cntk",
    "torch",
    "darknet",
    "paddlepaddle",
    "scikitlearn",
    "xgboost",
    "lightgbm",
    "parquet",
    "megengine",
    "catboost",
    "tensorrt",
    "openvino",
    "custom",
];

/// A framework name as stored (`sklearn` and the like → `scikitlearn`).
pub fn framework(raw: &str) -> Result<String> {
    let lower = raw.to_ascii_lowercase();
    let name = match lower.as_str() {
        "sklearn" | "scikit-learn" | "scikit_learn" => "scikitlearn",
        other => other,
    };
    ensure(FRAMEWORKS.contains(&name), || {
        format!(
            "unknown framework '{raw}' (one of: {})",
            FRAMEWORKS.join(", ")
        )
    })?;
    Ok(name.to_string())
}

pub fn register(store: &dyn Store, caller: &Caller, spec: &ModelSpec) -> Result<Written<Model>> {
    ensure(!spec.name.trim().is_empty(), || {
        "--name must not be empty".to_string()
    })?;
    ensure(!spec.uri.is_empty(), || "the model needs a uri".to_string())?;
    if let Some(sha) = &spec.sha256 {
        ensure(
            sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
            || format!("sha256 '{sha}' is not 64 hex digits"),
        )?;
    }
    let framework = spec.framework.as_deref().map(framework).transpose()?;
    let model = store.add_model(
        &NewModel {
            name: spec.name.clone(),
            project: spec.project.clone(),
            tags: spec.tags.clone(),
            framework,
            published: spec.publish,
            uri: spec.uri.clone(),
            size: spec.size,
            sha256: spec.sha256.clone(),
        },
        &caller.change("model.register", "models"),
    )?;
    let mut written = Written::new(model, None);
    written.created = true;
    Ok(written)
}

pub fn publish(store: &dyn Store, caller: &Caller, id: &str) -> Result<Written<Model>> {
    let id = id.to_ascii_lowercase();
    let change = caller.change("model.publish", format!("models/{id}"));
    let model = store.update_model(&id, &change, &mut |m| {
        m.published = true;
        Ok(())
    })?;
    Ok(Written::new(model, None))
}

/// Tags to add and remove.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagChange {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

pub fn tag(
    store: &dyn Store,
    caller: &Caller,
    id: &str,
    tags: &TagChange,
) -> Result<Written<Model>> {
    if tags.add.is_empty() && tags.remove.is_empty() {
        return Err(invalid("give --add TAG... and/or --remove TAG..."));
    }
    if let Some(empty) = tags.add.iter().find(|t| t.trim().is_empty()) {
        return Err(invalid(format!("tag '{empty}' must not be empty")));
    }
    let id = id.to_ascii_lowercase();
    let change = caller.change("model.tag", format!("models/{id}"));
    let model = store.update_model(&id, &change, &mut |m| {
        m.tags.retain(|t| !tags.remove.contains(t));
        for tag in &tags.add {
            if !m.tags.contains(tag) {
                m.tags.push(tag.clone());
            }
        }
        Ok(())
    })?;
    Ok(Written::new(model, None))
}
