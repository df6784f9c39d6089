//! serval's ONNX engine: ONNX Runtime through the `ort` crate, loaded at run time
//! (`load-dynamic`), so nothing is downloaded at build time. The library is found from
//! `--onnxruntime-lib` / `ORT_DYLIB_PATH`, else inside the configured Python's `onnxruntime`
//! package (`site-packages/onnxruntime/capi/libonnxruntime.so.*`).
//!
//! Supports the ML operators (TreeEnsemble*, LinearClassifier, ZipMap, ...), dynamic batch
//! dimensions, several inputs and outputs, and a configurable intra-op thread count. ZipMap
//! outputs (sequences of maps) come back as [`OutputValue::Maps`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};
use serval_engine::{
    ClassLabel, DataType, Engine, EngineError, Instance, ModelMetadata, NamedOutput, NamedTensor,
    OutputValue, Result, Task, Tensor, TensorData, TensorSpec,
};

/// How to find and run ONNX Runtime.
#[derive(Debug, Clone, Default)]
pub struct OnnxOptions {
    /// The `libonnxruntime` shared library (else `ORT_DYLIB_PATH`, else the Python package).
    pub library: Option<PathBuf>,
    /// Python interpreter whose `onnxruntime` package provides the library (default `python3`).
    pub python: Option<String>,
    /// Intra-op threads per session (0 = ONNX Runtime's default).
    pub intra_threads: usize,
}

const INSTALL_HINT: &str = "pip install onnxruntime (into the Python serval uses: --python / SERVAL_PYTHON), \
     or point --onnxruntime-lib / ORT_DYLIB_PATH at libonnxruntime.so";

/// Finds the ONNX Runtime shared library.
pub fn find_library(options: &OnnxOptions) -> Result<PathBuf> {
    if let Some(path) = options
        .library
        .clone()
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
    {
        if path.is_file() {
            return Ok(path);
        }
        return Err(EngineError::Unavailable(format!(
            "ONNX Runtime library '{}' does not exist; {INSTALL_HINT}",
            path.display()
        )));
    }
    let python = options
        .python
        .clone()
        .or_else(|| std::env::var("SERVAL_PYTHON").ok())
        .unwrap_or_else(|| "python3".to_string());
    let output = Command::new(&python)
        .args([
            "-c",
            "import os, onnxruntime; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .output();
    let package = match output {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        _ => {
            return Err(EngineError::Unavailable(format!(
                "ONNX Runtime not found: '{python}' cannot import onnxruntime; {INSTALL_HINT}"
            )));
        }
    };
    library_in(&package.join("capi")).ok_or_else(|| {
        EngineError::Unavailable(format!(
            "no libonnxruntime.so in {}; {INSTALL_HINT}",
            package.join("capi").display()
        ))
    })
}

fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libonnxruntime.so")
                    || n == "libonnxruntime.dylib"
                    || n == "onnxruntime.dll"
            })
        })
        .collect();
    found.sort();
    found.pop()
}

/// The process-wide ONNX Runtime: loaded once, from the first library found.
static RUNTIME: OnceLock<std::result::Result<(PathBuf, ort::environment::Environment), String>> =
    OnceLock::new();

fn runtime(options: &OnnxOptions) -> Result<&'static ort::environment::Environment> {
    let loaded = RUNTIME.get_or_init(|| {
        let path = find_library(options).map_err(|e| e.to_string())?;
        let builder = ort::init_from(&path).map_err(|e| {
            format!(
                "cannot load ONNX Runtime from {}: {e}; {INSTALL_HINT}",
                path.display()
            )
        })?;
        let env = builder
            .with_name("serval")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))?;
        tracing::info!(library = %path.display(), "loaded ONNX Runtime");
        Ok((path, env))
    });
    match loaded {
        Ok((_, env)) => Ok(env),
        Err(e) => Err(EngineError::Unavailable(e.clone())),
    }
}

fn data_type(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Float32 => DataType::F32,
        TensorElementType::Float64 => DataType::F64,
        TensorElementType::Int64 => DataType::I64,
        TensorElementType::Int32 => DataType::I32,
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::String => DataType::String,
        _ => return None,
    })
}

fn spec(name: &str, dtype: &ValueType) -> Result<TensorSpec> {
    match dtype {
        ValueType::Tensor { ty, shape, .. } => Ok(TensorSpec {
            name: name.to_string(),
            dtype: data_type(*ty).ok_or_else(|| {
                EngineError::Load(format!(
                    "'{name}' has element type {ty:?}, which serval does not support"
                ))
            })?,
            shape: shape.iter().map(|d| usize::try_from(*d).ok()).collect(),
        }),
        // ZipMap: a sequence of maps, one per row.
        ValueType::Sequence(inner) if matches!(**inner, ValueType::Map { .. }) => Ok(TensorSpec {
            name: name.to_string(),
            dtype: DataType::F32,
            shape: vec![None],
        }),
        other => Err(EngineError::Load(format!(
            "'{name}' has type {other:?}, which serval does not support"
        ))),
    }
}

/// Recognises a classifier: a label output (int64 or string, one per row) followed by
/// probabilities (a matrix or a ZipMap).
fn task_of(outputs: &[TensorSpec], raw: &[ValueType]) -> Task {
    if outputs.len() == 2
        && matches!(outputs[0].dtype, DataType::I64 | DataType::String)
        && outputs[0].shape.len() <= 1
    {
        let zipmap = matches!(&raw[1], ValueType::Sequence(_));
        let matrix = outputs[1].shape.len() == 2
            && matches!(outputs[1].dtype, DataType::F32 | DataType::F64);
        if zipmap || matrix {
            let k = outputs[1].shape.get(1).copied().flatten().unwrap_or(0);
            return Task::Classification {
                labels: (0..k as i64).map(ClassLabel::Int).collect(),
            };
        }
    }
    if outputs.len() == 1 && matches!(outputs[0].dtype, DataType::F32 | DataType::F64) {
        return Task::Regression;
    }
    Task::Other
}

/// An ONNX model in one ONNX Runtime session, run by the thread that owns it (ONNX Runtime's
/// sessions must not run two calls at once: the server gives each runner thread its own
/// session, see [`serval_engine::Instance`]).
pub struct OnnxSession {
    session: Session,
    metadata: ModelMetadata,
}

/// An ONNX model as a shared [`Engine`] (`serval predict`, tests): one session behind a lock.
/// The server does not use it: its runner threads own [`OnnxSession`]s.
pub struct OnnxEngine {
    session: Mutex<OnnxSession>,
    metadata: ModelMetadata,
}

impl OnnxEngine {
    /// Loads a model from bytes.
    pub fn load(bytes: &[u8], options: &OnnxOptions) -> Result<Self> {
        let session = OnnxSession::load(bytes, options)?;
        Ok(OnnxEngine {
            metadata: session.metadata.clone(),
            session: Mutex::new(session),
        })
    }
}

impl OnnxSession {
    /// Loads a model from bytes into a new session.
    pub fn load(bytes: &[u8], options: &OnnxOptions) -> Result<Self> {
        let env = runtime(options)?;
        let load =
            |e: ort::Error| EngineError::Load(format!("ONNX Runtime cannot load the model: {e}"));
        let mut builder = Session::builder(env).map_err(load)?;
        if options.intra_threads > 0 {
            builder = builder
                .with_intra_threads(options.intra_threads)
                .map_err(|e| load(e.into()))?;
        }
        let session = builder.commit_from_memory(bytes).map_err(load)?;
        let inputs = session
            .inputs()
            .iter()
            .map(|o| spec(o.name(), o.dtype()))
            .collect::<Result<Vec<_>>>()?;
        let outputs = session
            .outputs()
            .iter()
            .map(|o| spec(o.name(), o.dtype()))
            .collect::<Result<Vec<_>>>()?;
        let raw: Vec<ValueType> = session
            .outputs()
            .iter()
            .map(|o| o.dtype().clone())
            .collect();
        let task = task_of(&outputs, &raw);
        let metadata = ModelMetadata {
            format: "onnx".to_string(),
            inputs,
            outputs,
            feature_names: None,
            task,
        };
        Ok(OnnxSession { session, metadata })
    }
}

fn ort_err(e: ort::Error) -> EngineError {
    EngineError::Internal(format!("ONNX Runtime: {e}"))
}

/// Converts a tensor to the element type the model declares for that input.
fn to_ort(spec: &TensorSpec, tensor: &Tensor) -> Result<DynValue> {
    let shape: Vec<i64> = tensor.shape().iter().map(|d| *d as i64).collect();
    if spec.shape.len() != shape.len() {
        return Err(EngineError::InvalidInput(format!(
            "input '{}' needs {} dimensions, got shape {:?}",
            spec.name,
            spec.shape.len(),
            tensor.shape()
        )));
    }
    for (i, (want, got)) in spec.shape.iter().zip(tensor.shape()).enumerate() {
        if want.is_some_and(|w| w != *got) {
            return Err(EngineError::InvalidInput(format!(
                "input '{}' dimension {i} must be {}, got {got}",
                spec.name,
                want.unwrap_or_default()
            )));
        }
    }
    let value = match spec.dtype {
        DataType::F32 => OrtTensor::from_array((shape, tensor.to_f32()?)).map(OrtTensor::into_dyn),
        DataType::F64 => OrtTensor::from_array((shape, tensor.to_f64()?)).map(OrtTensor::into_dyn),
        DataType::I64 => OrtTensor::from_array((
            shape,
            tensor
                .to_f64()?
                .into_iter()
                .map(|v| v as i64)
                .collect::<Vec<_>>(),
        ))
        .map(OrtTensor::into_dyn),
        DataType::I32 => OrtTensor::from_array((
            shape,
            tensor
                .to_f64()?
                .into_iter()
                .map(|v| v as i32)
                .collect::<Vec<_>>(),
        ))
        .map(OrtTensor::into_dyn),
        DataType::Bool => OrtTensor::from_array((
            shape,
            tensor
                .to_f64()?
                .into_iter()
                .map(|v| v != 0.0)
                .collect::<Vec<_>>(),
        ))
        .map(OrtTensor::into_dyn),
        DataType::String => match tensor.data() {
            TensorData::String(s) => {
                OrtTensor::from_string_array((shape, s.as_slice())).map(OrtTensor::into_dyn)
            }
            _ => {
                return Err(EngineError::InvalidInput(format!(
                    "input '{}' takes strings",
                    spec.name
                )));
            }
        },
    };
    value.map_err(|e| EngineError::InvalidInput(format!("input '{}': {e}", spec.name)))
}

fn output_tensor(value: &DynValue) -> Result<Tensor> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(EngineError::Internal("expected a tensor output".into()));
    };
    macro_rules! extract {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = value.try_extract_tensor::<$t>().map_err(ort_err)?;
            (
                shape.iter().map(|d| *d as usize).collect::<Vec<_>>(),
                TensorData::$variant(data.to_vec()),
            )
        }};
    }
    let (shape, data) = match ty {
        TensorElementType::Float32 => extract!(f32, F32),
        TensorElementType::Float64 => extract!(f64, F64),
        TensorElementType::Int64 => extract!(i64, I64),
        TensorElementType::Int32 => extract!(i32, I32),
        TensorElementType::Bool => extract!(bool, Bool),
        TensorElementType::String => {
            let (shape, data) = value.try_extract_strings().map_err(ort_err)?;
            (
                shape.iter().map(|d| *d as usize).collect(),
                TensorData::String(data),
            )
        }
        other => {
            return Err(EngineError::Internal(format!(
                "unsupported output element type {other:?}"
            )));
        }
    };
    // Trust the data, not the declared shape (LightGBM ONNX labels declare [1] but return [N]).
    Tensor::new(shape, data).map_err(|e| EngineError::Internal(e.to_string()))
}

fn output_maps(value: &DynValue) -> Result<Vec<Vec<(ClassLabel, f32)>>> {
    let maps = value
        .try_extract_sequence::<ort::value::DynMapValueType>()
        .map_err(ort_err)?;
    maps.iter()
        .map(|map| {
            let mut row: Vec<(ClassLabel, f32)> = match map.dtype() {
                ValueType::Map {
                    key: TensorElementType::String,
                    ..
                } => map
                    .try_extract_map::<String, f32>()
                    .map_err(ort_err)?
                    .into_iter()
                    .map(|(k, v)| (ClassLabel::Str(k), v))
                    .collect(),
                _ => map
                    .try_extract_map::<i64, f32>()
                    .map_err(ort_err)?
                    .into_iter()
                    .map(|(k, v)| (ClassLabel::Int(k), v))
                    .collect(),
            };
            row.sort_by(|a, b| match (&a.0, &b.0) {
                (ClassLabel::Int(x), ClassLabel::Int(y)) => x.cmp(y),
                (ClassLabel::Str(x), ClassLabel::Str(y)) => x.cmp(y),
                _ => std::cmp::Ordering::Equal,
            });
            Ok(row)
        })
        .collect()
}

impl Engine for OnnxEngine {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn infer(&self, inputs: &[NamedTensor]) -> Result<Vec<NamedOutput>> {
        self.infer_until(inputs, &|| false)
    }

    fn infer_until(
        &self,
        inputs: &[NamedTensor],
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<NamedOutput>> {
        let mut session = self.session.lock().map_err(|_| {
            EngineError::Internal("ONNX session poisoned by an earlier panic".into())
        })?;
        session.run(inputs, stop)
    }
}

impl Instance for OnnxSession {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    // `run` watches `stop` from a second thread only for big inputs (at least `WATCH_FROM`
    // elements): small runs end in moments and should not pay for a thread.

    fn run(
        &mut self,
        inputs: &[NamedTensor],
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<NamedOutput>> {
        let mut values = Vec::with_capacity(self.metadata.inputs.len());
        for spec in &self.metadata.inputs {
            let given = inputs.iter().find(|i| i.name == spec.name).ok_or_else(|| {
                EngineError::InvalidInput(format!("the model needs input '{}'", spec.name))
            })?;
            values.push((spec.name.clone(), to_ort(spec, &given.tensor)?));
        }
        if let Some(extra) = inputs
            .iter()
            .find(|i| !self.metadata.inputs.iter().any(|s| s.name == i.name))
        {
            return Err(EngineError::InvalidInput(format!(
                "the model has no input '{}'",
                extra.name
            )));
        }
        if stop() {
            return Err(EngineError::Stopped);
        }
        let metadata = &self.metadata;
        let session = &mut self.session;
        let elements: usize = inputs.iter().map(|i| i.tensor.data().len()).sum();
        if elements < WATCH_FROM {
            let outputs = session.run(values).map_err(run_error)?;
            return outputs_of(metadata, &outputs);
        }
        let options = ort::session::RunOptions::new().map_err(ort_err)?;
        let finished = std::sync::atomic::AtomicBool::new(false);
        let stopped = std::sync::atomic::AtomicBool::new(false);
        // A watcher asks ONNX Runtime to terminate the run once the caller no longer wants it.
        let outputs = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !finished.load(std::sync::atomic::Ordering::Acquire) {
                    if stop() {
                        stopped.store(true, std::sync::atomic::Ordering::Release);
                        let _ = options.terminate();
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            });
            let result = session.run_with_options(values, &options);
            finished.store(true, std::sync::atomic::Ordering::Release);
            result
        });
        if stopped.load(std::sync::atomic::Ordering::Acquire) && outputs.is_err() {
            return Err(EngineError::Stopped);
        }
        let outputs = outputs.map_err(run_error)?;
        outputs_of(metadata, &outputs)
    }
}

/// Inputs of at least this many elements get a watcher that can terminate the run.
const WATCH_FROM: usize = 1 << 16;

/// Shape and type problems are the caller's; ONNX Runtime reports them as invalid arguments.
fn run_error(e: ort::Error) -> EngineError {
    let text = e.to_string();
    if text.contains("Invalid") || text.contains("invalid") {
        EngineError::InvalidInput(format!("ONNX Runtime: {text}"))
    } else {
        ort_err(e)
    }
}

/// The model's outputs, converted.
fn outputs_of(
    metadata: &ModelMetadata,
    outputs: &ort::session::SessionOutputs<'_>,
) -> Result<Vec<NamedOutput>> {
    metadata
        .outputs
        .iter()
        .map(|spec| {
            let value = outputs
                .get(&spec.name)
                .ok_or_else(|| EngineError::Internal(format!("output '{}' missing", spec.name)))?;
            let value = match value.dtype() {
                ValueType::Sequence(_) => OutputValue::Maps(output_maps(value)?),
                _ => OutputValue::Tensor(output_tensor(value)?),
            };
            Ok(NamedOutput {
                name: spec.name.clone(),
                value,
            })
        })
        .collect()
}
