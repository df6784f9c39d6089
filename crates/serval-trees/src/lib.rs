//! serval's native tree evaluators, written for this project: XGBoost (JSON and UBJSON) and
//! LightGBM (text format) models run in-process, matching the libraries' own predictions.
//!
//! Both compile their trees into one flat node array ([`forest`]) and apply their library's exact
//! split rules and link functions. [`XgboostEngine`] and [`LightgbmEngine`] wrap them in the
//! [`serval_engine::Engine`] contract: input `[rows, features]`, outputs `label` + `probabilities`
//! for classifiers and `predictions` otherwise.

mod compact;
mod forest;
pub mod lightgbm;
mod quick;
mod shap;
mod shap_tables;
mod task;
mod ubjson;
pub mod xgboost;

use serval_engine::{
    ClassLabel, DataType, Engine, EngineError, ModelMetadata, NamedOutput, NamedTensor,
    OutputValue, Result, Task, Tensor, TensorData, TensorSpec,
};

pub use lightgbm::LgbModel;
pub use shap::Method as ShapMethod;
pub use task::TreeTask;
pub use xgboost::XgbModel;

/// What a tree model's task is as the engine contract says it.
fn engine_task(task: TreeTask, groups: usize) -> Task {
    match task {
        TreeTask::Binary => Task::Classification {
            labels: class_labels(2),
        },
        TreeTask::Multiclass => Task::Classification {
            labels: class_labels(groups),
        },
        TreeTask::Regression => Task::Regression,
        TreeTask::Raw => Task::RawScore,
    }
}

/// The element types tree predictions come in (XGBoost f32, LightGBM f64).
trait Prediction: Copy + PartialOrd {
    fn complement(self) -> Self;
    fn wrap(values: Vec<Self>) -> TensorData;
}

impl Prediction for f32 {
    fn complement(self) -> Self {
        1.0 - self
    }
    fn wrap(values: Vec<Self>) -> TensorData {
        TensorData::F32(values)
    }
}

impl Prediction for f64 {
    fn complement(self) -> Self {
        1.0 - self
    }
    fn wrap(values: Vec<Self>) -> TensorData {
        TensorData::F64(values)
    }
}

/// Engine outputs from predictions `[rows, groups]`: `label` + `probabilities` for classifiers,
/// `predictions` otherwise.
fn tree_outputs<T: Prediction>(
    task: TreeTask,
    rows: usize,
    groups: usize,
    out: Vec<T>,
) -> Result<Vec<NamedOutput>> {
    match task {
        TreeTask::Binary => {
            let probabilities = out.iter().flat_map(|p| [p.complement(), *p]).collect();
            classifier_outputs(rows, 2, probabilities, T::wrap)
        }
        TreeTask::Multiclass => classifier_outputs(rows, groups, out, T::wrap),
        TreeTask::Regression | TreeTask::Raw => regression_output(rows, groups, T::wrap(out)),
    }
}

/// Output names of the tree engines.
pub const OUTPUT_LABEL: &str = "label";
pub const OUTPUT_PROBABILITIES: &str = "probabilities";
pub const OUTPUT_PREDICTIONS: &str = "predictions";
/// Input name of the tree engines.
pub const INPUT_NAME: &str = "input";

fn input_matrix(inputs: &[NamedTensor], num_features: usize) -> Result<(&Tensor, usize)> {
    let tensor = match inputs {
        [only] => &only.tensor,
        _ => {
            return Err(EngineError::InvalidInput(format!(
                "tree models take one input matrix, got {} inputs",
                inputs.len()
            )));
        }
    };
    let (rows, width) = tensor.rows_and_width()?;
    if width != num_features {
        return Err(EngineError::InvalidInput(format!(
            "the model expects {num_features} features per row, got {width}"
        )));
    }
    Ok((tensor, rows))
}

fn tensor(shape: Vec<usize>, data: TensorData) -> Result<Tensor> {
    Tensor::new(shape, data).map_err(|e| EngineError::Internal(e.to_string()))
}

fn class_labels(n: usize) -> Vec<ClassLabel> {
    (0..n as i64).map(ClassLabel::Int).collect()
}

fn argmax<T: PartialOrd + Copy>(row: &[T]) -> i64 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as i64
}

fn metadata(
    format: String,
    num_features: usize,
    feature_names: Option<Vec<String>>,
    task: Task,
    output_dtype: DataType,
    groups: usize,
) -> ModelMetadata {
    let rows = None;
    let outputs = match &task {
        Task::Classification { labels } => vec![
            TensorSpec {
                name: OUTPUT_LABEL.into(),
                dtype: DataType::I64,
                shape: vec![rows],
            },
            TensorSpec {
                name: OUTPUT_PROBABILITIES.into(),
                dtype: output_dtype,
                shape: vec![rows, Some(labels.len())],
            },
        ],
        _ => vec![TensorSpec {
            name: OUTPUT_PREDICTIONS.into(),
            dtype: output_dtype,
            shape: if groups == 1 {
                vec![rows]
            } else {
                vec![rows, Some(groups)]
            },
        }],
    };
    ModelMetadata {
        format,
        inputs: vec![TensorSpec {
            name: INPUT_NAME.into(),
            dtype: output_dtype,
            shape: vec![rows, Some(num_features)],
        }],
        outputs,
        feature_names,
        task,
    }
}

/// Builds classifier outputs from per-row probabilities `[rows, k]`.
fn classifier_outputs<T: PartialOrd + Copy>(
    rows: usize,
    k: usize,
    probabilities: Vec<T>,
    wrap: fn(Vec<T>) -> TensorData,
) -> Result<Vec<NamedOutput>> {
    let labels: Vec<i64> = probabilities.chunks(k.max(1)).map(argmax).collect();
    Ok(vec![
        NamedOutput {
            name: OUTPUT_LABEL.into(),
            value: OutputValue::Tensor(tensor(vec![rows], TensorData::I64(labels))?),
        },
        NamedOutput {
            name: OUTPUT_PROBABILITIES.into(),
            value: OutputValue::Tensor(tensor(vec![rows, k], wrap(probabilities))?),
        },
    ])
}

fn regression_output(rows: usize, groups: usize, data: TensorData) -> Result<Vec<NamedOutput>> {
    let shape = if groups == 1 {
        vec![rows]
    } else {
        vec![rows, groups]
    };
    Ok(vec![NamedOutput {
        name: OUTPUT_PREDICTIONS.into(),
        value: OutputValue::Tensor(tensor(shape, data)?),
    }])
}

/// An XGBoost model behind the engine contract.
pub struct XgboostEngine {
    model: XgbModel,
    metadata: ModelMetadata,
}

impl XgboostEngine {
    pub fn load(bytes: &[u8]) -> Result<Self> {
        let model = XgbModel::load(bytes).map_err(EngineError::Load)?;
        let task = engine_task(model.task, model.num_groups);
        let metadata = metadata(
            format!("xgboost ({}, {})", model.format, model.objective),
            model.num_features,
            model.feature_names.clone(),
            task,
            DataType::F32,
            model.num_groups,
        );
        Ok(XgboostEngine { model, metadata })
    }

    pub fn model(&self) -> &XgbModel {
        &self.model
    }

    /// Predictions as XGBoost's `Booster.predict` returns them: `[rows, groups]` after the link.
    pub fn predict(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut out = self.model.predict_margin(x, rows);
        self.model.transform(&mut out);
        out
    }
}

impl Engine for XgboostEngine {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn infer(&self, inputs: &[NamedTensor]) -> Result<Vec<NamedOutput>> {
        let (input, rows) = input_matrix(inputs, self.model.num_features)?;
        let x = input.to_f32()?;
        let out = self.predict(&x, rows);
        tree_outputs(self.model.task, rows, self.model.num_groups, out)
    }

    /// TreeSHAP contributions, FP32 (XGBoost's precision), shaped as `pred_contribs`.
    fn explanation_ready(&self) -> bool {
        self.model.explanation_ready()
    }

    fn explain(&self, inputs: &[NamedTensor]) -> Result<NamedTensor> {
        let (input, rows) = input_matrix(inputs, self.model.num_features)?;
        let x = input.to_f32()?;
        let (values, shape) = self
            .model
            .explain(&x, rows)
            .map_err(EngineError::InvalidInput)?;
        Ok(NamedTensor {
            name: serval_engine::CONTRIBUTIONS.to_string(),
            tensor: Tensor::new(shape, TensorData::F32(values))?,
        })
    }
}

/// A LightGBM model behind the engine contract.
pub struct LightgbmEngine {
    model: LgbModel,
    metadata: ModelMetadata,
}

impl LightgbmEngine {
    pub fn load(bytes: &[u8]) -> Result<Self> {
        let model = LgbModel::load(bytes).map_err(EngineError::Load)?;
        let task = engine_task(model.task, model.num_groups);
        let metadata = metadata(
            format!(
                "lightgbm (text, {})",
                model.objective.split_whitespace().next().unwrap_or("raw")
            ),
            model.num_features,
            model.feature_names.clone(),
            task,
            DataType::F64,
            model.num_groups,
        );
        Ok(LightgbmEngine { model, metadata })
    }

    pub fn model(&self) -> &LgbModel {
        &self.model
    }

    /// Predictions as LightGBM's `Booster.predict` returns them: `[rows, groups]`.
    pub fn predict(&self, x: &[f64], rows: usize) -> Vec<f64> {
        let mut out = self.model.predict_raw(x, rows);
        self.model.transform(&mut out);
        out
    }
}

impl Engine for LightgbmEngine {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn infer(&self, inputs: &[NamedTensor]) -> Result<Vec<NamedOutput>> {
        let (input, rows) = input_matrix(inputs, self.model.num_features)?;
        let x = input.to_f64()?;
        let out = self.predict(&x, rows);
        tree_outputs(self.model.task, rows, self.model.num_groups, out)
    }

    /// TreeSHAP contributions, FP64 (LightGBM's precision), shaped as `pred_contrib`.
    fn explanation_ready(&self) -> bool {
        self.model.explanation_ready()
    }

    fn explain(&self, inputs: &[NamedTensor]) -> Result<NamedTensor> {
        let (input, rows) = input_matrix(inputs, self.model.num_features)?;
        let x = input.to_f64()?;
        let (values, shape) = self
            .model
            .explain(&x, rows)
            .map_err(EngineError::InvalidInput)?;
        Ok(NamedTensor {
            name: serval_engine::CONTRIBUTIONS.to_string(),
            tensor: Tensor::new(shape, TensorData::F64(values))?,
        })
    }
}
