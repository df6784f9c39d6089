//! Loading endpoints that bring Python: their code (fetched, checked, unpacked), the `load`
//! message, and starting their worker pools.

use std::path::Path;

use serde_json::{Value, json};
use serval_store::{CodeKind, CodeRef, Endpoint, EngineKind};

use super::{LoadError, Loader, PYTHON_LOAD_TIMEOUT};

/// Whether an endpoint needs Python workers.
pub fn needs_python(endpoint: &Endpoint) -> bool {
    endpoint.preprocess.is_some()
        || matches!(
            endpoint.engine,
            EngineKind::Sklearn | EngineKind::Custom | EngineKind::CustomAsync
        )
}

/// The `load` message's description of the endpoint's code: where it is on disk, unpacked.
fn code_spec(code: &CodeRef, cache_dir: &Path) -> Result<Value, LoadError> {
    let fetch = |reason: String| LoadError::Fetch {
        what: format!("preprocess code '{}'", code.name),
        reason,
    };
    let path = serval_artifacts::block_on(serval_artifacts::fetch(
        &code.uri,
        Some(&code.sha256),
        cache_dir,
    ))
    .map_err(|e| fetch(e.to_string()))?
    .map_err(|e| fetch(e.to_string()))?;
    let bytes = std::fs::read(&path).map_err(|source| LoadError::Read {
        path: path.clone(),
        source,
    })?;
    let actual = serval_artifacts::hash_bytes(&bytes);
    if actual != code.sha256 {
        return Err(LoadError::Checksum {
            what: "preprocess code",
            path,
            actual,
            expected: code.sha256.clone(),
        });
    }
    let unpacked = cache_dir.join("code").join(&code.sha256);
    Ok(match code.kind {
        CodeKind::File => json!({"kind": "file", "path": path, "name": code.name}),
        CodeKind::Zip => json!({
            "kind": "zip", "path": path, "extract_to": unpacked, "name": code.name,
        }),
        CodeKind::Package => {
            serval_artifacts::unpack_once(&bytes, &unpacked).map_err(|e| LoadError::Unpack {
                name: format!("'{}'", code.name),
                reason: e.to_string(),
            })?;
            let name = code
                .name
                .strip_suffix(serval_artifacts::PACKAGE_SUFFIX)
                .unwrap_or(&code.name);
            json!({"kind": "package", "path": unpacked, "name": name})
        }
    })
}

/// What user code sees as `self.model_endpoint` (clearml's ModelEndpoint attribute names).
fn endpoint_info(url: &str, endpoint: &Endpoint) -> Value {
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

impl Loader {
    /// Starts the endpoint's worker pool and waits until every worker has loaded the code.
    pub(super) fn start_python(
        &self,
        url: &str,
        endpoint: &Endpoint,
        model_path: Option<&Path>,
        library: Option<&str>,
        interpreter: &str,
        workers: usize,
    ) -> Result<serval_python::Pool, LoadError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or(LoadError::NoRuntime("Python workers"))?;
        let package_dir = serval_python::install_package(&self.cache_dir.join("python"))
            .map_err(LoadError::WorkerPackage)?;
        let code = match &endpoint.preprocess {
            Some(code) => code_spec(code, &self.cache_dir)?,
            None => Value::Null,
        };
        let spec = serval_python::PoolSpec {
            label: url.to_string(),
            python: interpreter.to_string(),
            size: workers,
            package_dir,
            load: json!({
                "op": "load",
                "engine": endpoint.engine.to_string(),
                "code": code,
                "model_path": model_path,
                "runtime": library,
                "endpoint": endpoint_info(url, endpoint),
                "call_timeout": self.request_timeout.as_secs_f64(),
            }),
            concurrent: endpoint.engine == EngineKind::CustomAsync,
            load_timeout: PYTHON_LOAD_TIMEOUT,
        };
        runtime
            .block_on(serval_python::Pool::start(spec, self.calls.clone()))
            .map_err(LoadError::Python)
    }
}
