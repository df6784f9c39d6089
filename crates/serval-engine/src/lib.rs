//! The engine contract: what every model engine (native trees, ONNX Runtime, Python workers)
//! implements, and the typed tensors they exchange. Engines see tensors and metadata only —
//! never HTTP, JSON bodies, the store or configuration files.

pub mod tensor;

pub use tensor::{
    DataType, Datatype, OutputStack, Tensor, TensorData, split_outputs, stack_outputs,
};

/// What went wrong in an engine, named by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model file cannot be loaded: corrupt, unsupported feature, mismatched format.
    #[error("{0}")]
    Load(String),
    /// The inputs do not fit the model (names, types, shapes); the client must fix the request.
    #[error("{0}")]
    InvalidInput(String),
    /// The engine's runtime is missing (e.g. the ONNX Runtime library); the operator must fix it.
    #[error("{0}")]
    Unavailable(String),
    /// Inference failed inside the engine.
    #[error("{0}")]
    Internal(String),
    /// The caller asked the run to stop (its request's deadline passed or its client left).
    #[error("inference stopped: the request is no longer wanted")]
    Stopped,
}

impl EngineError {
    /// A stable name for the error kind (logs, JSON errors, metric labels).
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::Load(_) => "load_failed",
            EngineError::InvalidInput(_) => "invalid_input",
            EngineError::Unavailable(_) => "unavailable",
            EngineError::Internal(_) => "internal",
            EngineError::Stopped => "stopped",
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// What a model predicts, which decides how a reply is shaped.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// One or more real values per row.
    Regression,
    /// One class per row, with probabilities over `labels` (in output column order).
    Classification { labels: Vec<ClassLabel> },
    /// Raw scores (ranking objectives, margins): no link function applied.
    RawScore,
    /// Anything else: outputs are returned by name as they are.
    Other,
}

/// A class label as the model reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassLabel {
    Int(i64),
    Str(String),
}

/// One named input or output of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DataType,
    /// Dimensions; `None` is dynamic (e.g. the batch dimension).
    pub shape: Vec<Option<usize>>,
}

/// What an engine knows about its model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMetadata {
    /// Which engine runs it and the model format, e.g. `xgboost (json)`.
    pub format: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Feature names stored in the model, in column order (trees), if any.
    pub feature_names: Option<Vec<String>>,
    pub task: Task,
}

impl ModelMetadata {
    /// A model with one `[rows, width]` input named `input`, no declared outputs and no feature
    /// names (what tests and simple engines describe).
    pub fn tabular(format: &str, width: usize, dtype: DataType, task: Task) -> ModelMetadata {
        ModelMetadata {
            format: format.to_string(),
            inputs: vec![TensorSpec {
                name: "input".into(),
                dtype,
                shape: vec![None, Some(width)],
            }],
            outputs: Vec::new(),
            feature_names: None,
            task,
        }
    }

    /// Number of feature columns of a single-input tabular model.
    pub fn num_features(&self) -> Option<usize> {
        match self.inputs.as_slice() {
            [only] if only.shape.len() == 2 => only.shape[1],
            _ => None,
        }
    }
}

/// A named tensor, as models take and give them.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub tensor: Tensor,
}

/// One output of a model: a tensor, or a sequence of maps (ONNX ZipMap: one map per row from
/// class label to probability, in the model's label order).
#[derive(Debug, Clone, PartialEq)]
pub enum OutputValue {
    Tensor(Tensor),
    Maps(Vec<Vec<(ClassLabel, f32)>>),
}

/// A named output.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedOutput {
    pub name: String,
    pub value: OutputValue,
}

/// A loaded model, ready to predict. Synchronous: callers run it off the async runtime.
/// Implementations are shared between threads and must allow concurrent `infer` calls.
pub trait Engine: Send + Sync {
    fn metadata(&self) -> &ModelMetadata;

    /// Runs the model on a batch. Inputs are matched to the model's inputs by name.
    fn infer(&self, inputs: &[NamedTensor]) -> Result<Vec<NamedOutput>>;

    /// Like [`Engine::infer`], but gives up with [`EngineError::Stopped`] once `stop()` returns
    /// true. Engines that can interrupt a run (ONNX Runtime) watch it while running; the default
    /// asks only before starting.
    fn infer_until(
        &self,
        inputs: &[NamedTensor],
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<NamedOutput>> {
        if stop() {
            return Err(EngineError::Stopped);
        }
        self.infer(inputs)
    }

    /// Whether [`Engine::explain`] is ready to answer at once: `false` while what explaining needs
    /// is not computed yet (the first explanation of a tree model tabulates its leaves), so the
    /// caller runs that one off the async threads.
    fn explanation_ready(&self) -> bool {
        true
    }

    /// Each row's prediction explained: per-feature contributions (exact TreeSHAP for tree
    /// models), named `contributions`, laid out as the model's library lays them out. Engines
    /// that cannot explain their model refuse with the reason ([`EngineError::InvalidInput`]).
    fn explain(&self, _inputs: &[NamedTensor]) -> Result<NamedTensor> {
        Err(EngineError::InvalidInput(format!(
            "{} models are not explained: contributions come from XGBoost and LightGBM models",
            self.metadata().format
        )))
    }
}

/// The name of the explanation output.
pub const CONTRIBUTIONS: &str = "contributions";

/// One instance of a model, run by the one thread that owns it: a runner thread holds one
/// instance per thread (an ONNX Runtime session must not run two calls at once, so each thread
/// gets its own session; an [`Engine`] that allows concurrent calls is shared between threads).
pub trait Instance: Send {
    fn metadata(&self) -> &ModelMetadata;

    /// Runs the model on a batch, giving up with [`EngineError::Stopped`] once `stop()` returns
    /// true (see [`Engine::infer_until`]).
    fn run(
        &mut self,
        inputs: &[NamedTensor],
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<NamedOutput>>;
}

/// A shared engine is an instance on every thread that holds it.
impl Instance for std::sync::Arc<dyn Engine> {
    fn metadata(&self) -> &ModelMetadata {
        Engine::metadata(self.as_ref())
    }

    fn run(
        &mut self,
        inputs: &[NamedTensor],
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<NamedOutput>> {
        self.infer_until(inputs, stop)
    }
}
