//! `serval triton-repo`: the Triton model repository for a service's `triton` endpoints, as
//! clearml-serving's Triton sidecar writes it — one folder per endpoint (its url with `/` → `_`,
//! the model name serval and clearml send in `ModelInfer`), a `config.pbtxt` from the io flags and
//! `--aux-config`, and the model file in version folder `1/`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;
use serval_store::{Endpoint, EngineKind, IoSpec, ServiceConfig, Store};

use crate::endpoint::model_name;
use crate::loader::triton::{self, Runtime, TritonModel};
use crate::wire::Datatype;

/// Marks a model folder this command wrote (only those are replaced or removed).
const MARKER: &str = ".serval-triton-repo";

/// Triton's `TYPE_*` for a clearml `--input-type` (numpy names).
fn data_type(numpy: &str) -> Result<String, String> {
    match Datatype::from_numpy(numpy) {
        Some(Datatype::Bytes) => Ok("TYPE_STRING".to_string()),
        Some(datatype) => Ok(format!("TYPE_{}", datatype.name())),
        None => Err(format!("'{}' has no Triton data type", numpy.trim())),
    }
}

/// A protobuf text-format value. Strings that look like enum values (`KIND_CPU`, `TYPE_FP32`) are
/// written bare, other strings quoted (serval keeps `--aux-config` strings without their quotes).
fn pbtxt_value(value: &Value, indent: usize, out: &mut String) {
    let pad = "  ".repeat(indent);
    match value {
        Value::String(s)
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && s.starts_with(|c: char| c.is_ascii_uppercase()) =>
        {
            out.push_str(s)
        }
        Value::String(s) => {
            let _ = write!(out, "{}", Value::String(s.clone()));
        }
        Value::Object(map) => {
            out.push_str("{\n");
            for (key, item) in map {
                let _ = write!(out, "{pad}  {key}: ");
                pbtxt_value(item, indent + 1, out);
                out.push('\n');
            }
            let _ = write!(out, "{pad}}}");
        }
        Value::Array(items) => {
            out.push_str("[ ");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                pbtxt_value(item, indent, out);
            }
            out.push_str(" ]");
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// The `input [...]` / `output [...]` block of the io flags.
fn io_block(
    side: &str,
    names: &[String],
    types: &[String],
    sizes: &[Vec<i64>],
) -> Result<String, String> {
    if names.is_empty() {
        return Ok(String::new());
    }
    let mut out = format!("{side} [\n");
    for (i, name) in names.iter().enumerate() {
        let _ = write!(out, "  {{\n    name: {}\n", Value::String(name.clone()));
        if let Some(t) = types.get(i) {
            let _ = writeln!(
                out,
                "    data_type: {}",
                data_type(t).map_err(|e| format!("--{side}-type {e}"))?
            );
        }
        if let Some(dims) = sizes.get(i) {
            let dims: Vec<String> = dims.iter().map(i64::to_string).collect();
            let _ = writeln!(out, "    dims: [ {} ]", dims.join(", "));
        }
        out.push_str(if i + 1 < names.len() {
            "  },\n"
        } else {
            "  }\n"
        });
    }
    out.push_str("]\n");
    Ok(out)
}

/// An endpoint's `config.pbtxt`: an `--aux-config` file's text first, as is; then the aux keys,
/// the platform or backend for the model's runtime unless the aux config names one, and the
/// io flags' inputs and outputs.
pub fn config_pbtxt(
    io: &IoSpec,
    aux: Option<&Value>,
    runtime: Option<Runtime>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut named_platform = false;
    match aux {
        Some(Value::String(text)) => {
            out.push_str(text.trim_end());
            out.push('\n');
            named_platform = text.contains("platform") || text.contains("backend");
        }
        Some(Value::Object(map)) => {
            for (key, value) in map {
                let _ = write!(out, "{key}: ");
                pbtxt_value(value, 0, &mut out);
                out.push('\n');
            }
            named_platform = map.contains_key("platform") || map.contains_key("backend");
        }
        Some(other) => return Err(format!("--aux-config is neither text nor keys: {other}")),
        None => {}
    }
    if !named_platform {
        out.push_str(match runtime {
            None => "platform: \"onnxruntime_onnx\"\n",
            Some(Runtime::TorchScript) => "backend: \"pytorch\"\n",
            Some(Runtime::TensorFlow) => "platform: \"tensorflow_savedmodel\"\n",
        });
    }
    out.push_str(&io_block(
        "input",
        &io.input_name,
        &io.input_type,
        &io.input_size,
    )?);
    out.push_str(&io_block(
        "output",
        &io.output_name,
        &io.output_type,
        &io.output_size,
    )?);
    Ok(out)
}

/// What one pass wrote.
#[derive(Debug, Default)]
pub struct Report {
    /// Model folders written, by Triton model name.
    pub written: Vec<String>,
    /// Folders removed (endpoints that are gone).
    pub removed: Vec<String>,
    /// Endpoints skipped, with the reason.
    pub skipped: Vec<(String, String)>,
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Writes one endpoint's model folder into `staging`.
fn write_model(
    store: &dyn Store,
    endpoint: &Endpoint,
    cache_dir: &Path,
    staging: &Path,
) -> Result<(), String> {
    let id = endpoint
        .model_id
        .as_deref()
        .ok_or("the endpoint has no model")?;
    let model = store.model(id).map_err(|e| e.to_string())?;
    let path = serval_artifacts::block_on(serval_artifacts::fetch(
        &model.uri,
        model.sha256.as_deref(),
        cache_dir,
    ))
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let key = model
        .sha256
        .clone()
        .unwrap_or_else(|| serval_artifacts::hash_bytes(model.uri.as_bytes()));
    let located =
        triton::locate(&path, &cache_dir.join("models").join(key)).map_err(|e| e.to_string())?;
    let version = staging.join("1");
    std::fs::create_dir_all(&version).map_err(|e| e.to_string())?;
    let runtime = match &located {
        TritonModel::Onnx { bytes, .. } => {
            std::fs::write(version.join("model.onnx"), bytes).map_err(|e| e.to_string())?;
            None
        }
        TritonModel::Python {
            path,
            runtime: Runtime::TorchScript,
        } => {
            std::fs::copy(path, version.join("model.pt")).map_err(|e| e.to_string())?;
            Some(Runtime::TorchScript)
        }
        TritonModel::Python {
            path,
            runtime: Runtime::TensorFlow,
        } if path.is_dir() => {
            copy_dir(path, &version.join("model.savedmodel")).map_err(|e| e.to_string())?;
            Some(Runtime::TensorFlow)
        }
        TritonModel::Python { .. } => {
            return Err("Triton cannot load .keras/.h5 files: register a SavedModel folder".into());
        }
    };
    let config = config_pbtxt(&endpoint.io, endpoint.aux_config.as_ref(), runtime)?;
    std::fs::write(staging.join("config.pbtxt"), config).map_err(|e| e.to_string())?;
    std::fs::write(staging.join(MARKER), id).map_err(|e| e.to_string())?;
    Ok(())
}

/// Writes the repository for `config`'s `triton` endpoints (static and auto-update versions)
/// under `out`: every folder is rebuilt aside and swapped in; folders this command wrote for
/// endpoints that are gone are removed; other folders are left alone.
pub fn write_repository(
    store: &dyn Store,
    config: &ServiceConfig,
    out: &Path,
    cache_dir: &Path,
) -> Result<Report, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut report = Report::default();
    let mut wanted = BTreeSet::new();
    for (url, endpoint) in config.served_endpoints() {
        if endpoint.engine != EngineKind::Triton {
            continue;
        }
        let name = model_name(&url);
        wanted.insert(name.clone());
        let target = out.join(&name);
        let staging: PathBuf = out.join(format!(".{name}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        match write_model(store, &endpoint, cache_dir, &staging) {
            Ok(()) => {
                if target.exists() && !target.join(MARKER).is_file() {
                    let _ = std::fs::remove_dir_all(&staging);
                    report.skipped.push((
                        name,
                        format!("{} exists and was not written by serval", target.display()),
                    ));
                    continue;
                }
                let _ = std::fs::remove_dir_all(&target);
                std::fs::rename(&staging, &target)
                    .map_err(|e| format!("cannot move {name} into place: {e}"))?;
                report.written.push(name);
            }
            Err(error) => {
                let _ = std::fs::remove_dir_all(&staging);
                report.skipped.push((name, error));
            }
        }
    }
    let entries =
        std::fs::read_dir(out).map_err(|e| format!("cannot list {}: {e}", out.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !wanted.contains(&name) && entry.path().join(MARKER).is_file() {
            std::fs::remove_dir_all(entry.path())
                .map_err(|e| format!("cannot remove {name}: {e}"))?;
            report.removed.push(name);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn io() -> IoSpec {
        IoSpec {
            input_name: vec!["INPUT__0".into()],
            input_type: vec!["float32".into()],
            input_size: vec![vec![1, 28, 28]],
            output_name: vec!["OUTPUT__0".into()],
            output_type: vec!["float32".into()],
            output_size: vec![vec![-1, 10]],
        }
    }

    #[test]
    fn config_from_the_io_flags() {
        assert_eq!(
            config_pbtxt(&io(), None, Some(Runtime::TorchScript)).unwrap(),
            "backend: \"pytorch\"\n\
             input [\n  {\n    name: \"INPUT__0\"\n    data_type: TYPE_FP32\n    dims: [ 1, 28, 28 ]\n  }\n]\n\
             output [\n  {\n    name: \"OUTPUT__0\"\n    data_type: TYPE_FP32\n    dims: [ -1, 10 ]\n  }\n]\n"
        );
    }

    #[test]
    fn aux_config_keys_and_text() {
        let aux = json!({
            "platform": "onnxruntime_onnx",
            "max_batch_size": 64,
            "dynamic_batching": {"max_queue_delay_microseconds": 100},
            "instance_group": [{"kind": "KIND_CPU", "count": 2}],
        });
        let text = config_pbtxt(&IoSpec::default(), Some(&aux), None).unwrap();
        assert_eq!(
            text,
            "platform: \"onnxruntime_onnx\"\nmax_batch_size: 64\n\
             dynamic_batching: {\n  max_queue_delay_microseconds: 100\n}\n\
             instance_group: [ {\n  kind: KIND_CPU\n  count: 2\n} ]\n"
        );
        // A file's text comes first, as is; the platform it names is not repeated.
        let file = Value::String("platform: \"tensorrt_plan\"\nmax_batch_size: 8\n".into());
        let text = config_pbtxt(&io(), Some(&file), None).unwrap();
        assert!(
            text.starts_with("platform: \"tensorrt_plan\"\nmax_batch_size: 8\ninput [\n"),
            "{text}"
        );
        assert_eq!(text.matches("platform").count(), 1);
        let mut bad = io();
        bad.input_type = vec!["complex64".into()];
        assert!(
            config_pbtxt(&bad, None, None)
                .unwrap_err()
                .contains("complex64")
        );
    }
}
