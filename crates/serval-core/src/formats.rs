//! Model formats, told apart by content (clearml's xgboost example saves `xgb_model` with no
//! extension), and loading a file into the engine that runs it.

use std::fmt;
use std::sync::Arc;

use serval_engine::{Engine, EngineError, Instance, Result};
use serval_onnx::{OnnxEngine, OnnxOptions, OnnxSession};
use serval_store::EngineKind;
use serval_trees::{LightgbmEngine, XgboostEngine};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    XgboostJson,
    XgboostUbjson,
    LightgbmText,
    Onnx,
    /// A Python pickle or joblib file (run by the sklearn engine in a Python worker).
    Pickle,
    Unknown,
}

impl fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelFormat::XgboostJson => "an XGBoost JSON model",
            ModelFormat::XgboostUbjson => "an XGBoost UBJSON model",
            ModelFormat::LightgbmText => "a LightGBM text model",
            ModelFormat::Onnx => "an ONNX model",
            ModelFormat::Pickle => "a Python pickle/joblib file",
            ModelFormat::Unknown => "of an unknown format",
        })
    }
}

impl ModelFormat {
    /// Detects the format from the first bytes of a file.
    pub fn detect(bytes: &[u8]) -> ModelFormat {
        let after_brace = bytes.iter().skip(1).find(|b| !b.is_ascii_whitespace());
        if bytes.first() == Some(&b'{') {
            return match after_brace {
                Some(b'"') | Some(b'}') => ModelFormat::XgboostJson,
                Some(b'i' | b'U' | b'I' | b'l' | b'L' | b'#' | b'$') => ModelFormat::XgboostUbjson,
                _ => ModelFormat::Unknown,
            };
        }
        if bytes.starts_with(b"tree\n") || bytes.starts_with(b"tree\r\n") {
            return ModelFormat::LightgbmText;
        }
        match bytes.first() {
            Some(0x80) => return ModelFormat::Pickle,
            Some(0x78) if matches!(bytes.get(1), Some(0x01 | 0x5e | 0x9c | 0xda)) => {
                return ModelFormat::Pickle;
            }
            _ => {}
        }
        // ONNX ModelProto starts with field 1 (ir_version, varint) and names its opsets.
        let head = &bytes[..bytes.len().min(4096)];
        let mentions = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
        if bytes.first() == Some(&0x08)
            && (mentions(b"onnx") || mentions(b"ai.onnx") || mentions(b"skl2onnx"))
        {
            return ModelFormat::Onnx;
        }
        ModelFormat::Unknown
    }

    /// The native engine that runs this format, if any.
    pub fn native_engine(self) -> Option<EngineKind> {
        match self {
            ModelFormat::XgboostJson | ModelFormat::XgboostUbjson => Some(EngineKind::Xgboost),
            ModelFormat::LightgbmText => Some(EngineKind::Lightgbm),
            ModelFormat::Onnx => Some(EngineKind::Onnx),
            ModelFormat::Pickle | ModelFormat::Unknown => None,
        }
    }
}

/// Loads model bytes into a native engine. `name` names the file in errors. The content must be
/// the engine's format: an XGBoost endpoint given a LightGBM file fails with both named.
pub fn load_engine(
    engine: EngineKind,
    bytes: &[u8],
    name: &str,
    onnx: &OnnxOptions,
) -> Result<Arc<dyn Engine>> {
    let format = ModelFormat::detect(bytes);
    let named = |e: EngineError| match e {
        EngineError::Load(m) => EngineError::Load(format!("{name}: {m}")),
        other => other,
    };
    let mismatch = || {
        EngineError::Load(format!(
            "{name} is {format}, not a model the '{engine}' engine loads"
        ))
    };
    match engine {
        EngineKind::Xgboost => {
            if !matches!(
                format,
                ModelFormat::XgboostJson | ModelFormat::XgboostUbjson
            ) {
                return Err(mismatch());
            }
            Ok(Arc::new(XgboostEngine::load(bytes).map_err(named)?))
        }
        EngineKind::Lightgbm => {
            if format != ModelFormat::LightgbmText {
                return Err(mismatch());
            }
            Ok(Arc::new(LightgbmEngine::load(bytes).map_err(named)?))
        }
        EngineKind::Onnx => {
            if !matches!(format, ModelFormat::Onnx | ModelFormat::Unknown) {
                return Err(mismatch());
            }
            Ok(Arc::new(OnnxEngine::load(bytes, onnx).map_err(named)?))
        }
        other => Err(EngineError::Load(format!(
            "the '{other}' engine does not run in-process (native engines: xgboost, lightgbm, onnx)"
        ))),
    }
}

/// A model loaded for the server's runner threads.
pub enum Loaded {
    /// One engine every thread may call at once (the tree engines).
    Shared(Arc<dyn Engine>),
    /// One instance per runner thread (ONNX Runtime sessions), at least one.
    Instances(Vec<Box<dyn Instance>>),
}

/// Loads a model for the server: tree models once, shared; ONNX models as `sessions` separate
/// ONNX Runtime sessions (at least one), one per runner thread.
pub fn load_model(
    engine: EngineKind,
    bytes: &[u8],
    name: &str,
    onnx: &OnnxOptions,
    sessions: usize,
) -> Result<Loaded> {
    if engine != EngineKind::Onnx {
        return load_engine(engine, bytes, name, onnx).map(Loaded::Shared);
    }
    let format = ModelFormat::detect(bytes);
    if !matches!(format, ModelFormat::Onnx | ModelFormat::Unknown) {
        return Err(EngineError::Load(format!(
            "{name} is {format}, not a model the 'onnx' engine loads"
        )));
    }
    let mut instances: Vec<Box<dyn Instance>> = Vec::new();
    for _ in 0..sessions.max(1) {
        let session = OnnxSession::load(bytes, onnx).map_err(|e| match e {
            EngineError::Load(m) => EngineError::Load(format!("{name}: {m}")),
            other => other,
        })?;
        instances.push(Box::new(session));
    }
    Ok(Loaded::Instances(instances))
}
