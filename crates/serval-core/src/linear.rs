//! scikit-learn's plain linear models run natively: `LogisticRegression` (labels, as its
//! `predict` gives them) and `LinearRegression` / `Ridge` / `Lasso` / `ElasticNet` (values). The
//! parameters come from the pickle, read by the endpoint's Python worker at load
//! (`native_linear` in the worker); `preprocess` and `postprocess` stay in Python.
//!
//! `predict` is `X @ coef.T + intercept` in float64, then for a classifier the class of the
//! highest score (binary: class 1 when the score is above 0), as scikit-learn computes it.

use serde_json::Value;
use serval_engine::{
    DataType, Engine, EngineError, ModelMetadata, NamedOutput, NamedTensor, OutputValue, Result,
    Task, Tensor, TensorData, TensorSpec,
};

/// A linear model's parameters and what `predict` returns.
pub struct LinearEngine {
    /// `[outputs][features]`.
    coef: Vec<Vec<f64>>,
    intercept: Vec<f64>,
    /// Integer class labels of a classifier (`None`: a regressor).
    classes: Option<Vec<i64>>,
    /// A regressor with a 1-d `coef_` predicts `[n]`, else `[n, outputs]`.
    one_output: bool,
    metadata: ModelMetadata,
}

/// The name of the only output: what `predict` returned.
pub const PREDICT: &str = "predict";

impl LinearEngine {
    /// From the worker's description: `{"kind": "logistic"|"linear", "estimator", "coef",
    /// "intercept", "one_output", "classes"}`.
    pub fn from_json(value: &Value) -> Result<LinearEngine> {
        let bad = |what: &str| EngineError::Load(format!("linear model: {what}"));
        let numbers = |v: &Value| -> Result<Vec<f64>> {
            v.as_array()
                .ok_or_else(|| bad("coefficients must be lists of numbers"))?
                .iter()
                .map(|x| {
                    x.as_f64()
                        .ok_or_else(|| bad("a coefficient is not a number"))
                })
                .collect()
        };
        let coef = value["coef"]
            .as_array()
            .ok_or_else(|| bad("no coef"))?
            .iter()
            .map(numbers)
            .collect::<Result<Vec<_>>>()?;
        let intercept = numbers(&value["intercept"])?;
        let width = coef.first().map_or(0, Vec::len);
        if coef.is_empty() || width == 0 || coef.iter().any(|row| row.len() != width) {
            return Err(bad("coef must be a non-empty matrix"));
        }
        if intercept.len() != coef.len() && intercept.len() != 1 {
            return Err(bad("intercept does not match coef"));
        }
        let classes = match value["kind"].as_str() {
            Some("logistic") => Some(
                value["classes"]
                    .as_array()
                    .ok_or_else(|| bad("no classes"))?
                    .iter()
                    .map(|c| {
                        c.as_i64()
                            .ok_or_else(|| bad("a class label is not an integer"))
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            Some("linear") => None,
            _ => return Err(bad("unknown kind")),
        };
        if let Some(classes) = &classes {
            let expected = if coef.len() == 1 { 2 } else { coef.len() };
            if classes.len() != expected {
                return Err(bad("classes do not match coef"));
            }
        }
        let estimator = value["estimator"].as_str().unwrap_or("linear model");
        let one_output = classes.is_some() || value["one_output"].as_bool().unwrap_or(false);
        let (dtype, shape) = match (&classes, one_output) {
            (Some(_), _) => (DataType::I64, vec![None]),
            (None, true) => (DataType::F64, vec![None]),
            (None, false) => (DataType::F64, vec![None, Some(coef.len())]),
        };
        let metadata = ModelMetadata {
            format: format!("scikit-learn {estimator}"),
            inputs: vec![TensorSpec {
                name: "X".to_string(),
                dtype: DataType::F64,
                shape: vec![None, Some(width)],
            }],
            outputs: vec![TensorSpec {
                name: PREDICT.to_string(),
                dtype,
                shape,
            }],
            feature_names: None,
            task: if classes.is_some() {
                Task::Other
            } else {
                Task::Regression
            },
        };
        Ok(LinearEngine {
            coef,
            intercept,
            classes,
            one_output,
            metadata,
        })
    }
}

impl Engine for LinearEngine {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn infer(&self, inputs: &[NamedTensor]) -> Result<Vec<NamedOutput>> {
        let [input] = inputs else {
            return Err(EngineError::InvalidInput(
                "a linear model takes one input, X".to_string(),
            ));
        };
        let (rows, width) = input.tensor.rows_and_width()?;
        let features = self.coef[0].len();
        if width != features {
            // scikit-learn's own words.
            return Err(EngineError::InvalidInput(format!(
                "X has {width} features, but {} is expecting {features} features as input.",
                self.metadata
                    .format
                    .split(' ')
                    .nth(1)
                    .unwrap_or("the model")
            )));
        }
        let x = input.tensor.to_f64()?;
        if x.iter().any(|v| !v.is_finite()) {
            return Err(EngineError::InvalidInput(
                "Input X contains NaN or infinity.".to_string(),
            ));
        }
        let outputs = self.coef.len();
        let mut scores = Vec::with_capacity(rows * outputs);
        for row in x.chunks(width) {
            for (k, coef) in self.coef.iter().enumerate() {
                let dot: f64 = row.iter().zip(coef).map(|(a, b)| a * b).sum();
                scores.push(dot + self.intercept.get(k).copied().unwrap_or(self.intercept[0]));
            }
        }
        let tensor = match &self.classes {
            Some(classes) => {
                let labels = scores
                    .chunks(outputs)
                    .map(|s| {
                        let index = if outputs == 1 {
                            usize::from(s[0] > 0.0)
                        } else {
                            // The first highest score, as numpy's argmax.
                            s.iter()
                                .enumerate()
                                .fold(0, |best, (i, v)| if *v > s[best] { i } else { best })
                        };
                        classes[index]
                    })
                    .collect();
                Tensor::new(vec![rows], TensorData::I64(labels))?
            }
            None if self.one_output => Tensor::new(vec![rows], TensorData::F64(scores))?,
            None => Tensor::new(vec![rows, outputs], TensorData::F64(scores))?,
        };
        Ok(vec![NamedOutput {
            name: PREDICT.to_string(),
            value: OutputValue::Tensor(tensor),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn x(rows: usize, data: Vec<f64>) -> Vec<NamedTensor> {
        let width = data.len() / rows;
        vec![NamedTensor {
            name: "X".into(),
            tensor: Tensor::new(vec![rows, width], TensorData::F64(data)).unwrap(),
        }]
    }

    fn predicted(engine: &LinearEngine, inputs: &[NamedTensor]) -> Tensor {
        match engine.infer(inputs).unwrap().remove(0).value {
            OutputValue::Tensor(t) => t,
            OutputValue::Maps(_) => panic!("maps"),
        }
    }

    #[test]
    fn binary_and_multiclass_labels_and_values() {
        let binary = LinearEngine::from_json(
            &json!({"kind": "logistic", "estimator": "LogisticRegression",
            "coef": [[1.0, -1.0]], "intercept": [0.5], "classes": [3, 7]}),
        )
        .unwrap();
        let t = predicted(&binary, &x(3, vec![0.0, 0.0, 0.0, 1.0, 2.0, 0.0]));
        assert_eq!(t.data(), &TensorData::I64(vec![7, 3, 7]));
        let multi = LinearEngine::from_json(&json!({"kind": "logistic", "estimator": "LogisticRegression",
            "coef": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], "intercept": [0.0, 0.0, -5.0], "classes": [0, 1, 2]}))
        .unwrap();
        let t = predicted(&multi, &x(3, vec![2.0, 1.0, 1.0, 2.0, 10.0, 10.0]));
        assert_eq!(t.data(), &TensorData::I64(vec![0, 1, 2]));
        let reg =
            LinearEngine::from_json(&json!({"kind": "linear", "estimator": "LinearRegression",
            "coef": [[2.0, 3.0]], "intercept": [1.0], "one_output": true}))
            .unwrap();
        let t = predicted(&reg, &x(2, vec![1.0, 1.0, 0.0, 2.0]));
        assert_eq!(t.shape(), [2]);
        assert_eq!(t.data(), &TensorData::F64(vec![6.0, 7.0]));
    }

    #[test]
    fn inputs_the_model_refuses_are_invalid() {
        let reg = LinearEngine::from_json(&json!({"kind": "linear", "estimator": "Ridge",
            "coef": [[1.0, 1.0], [1.0, 1.0]], "intercept": [0.0, 0.0]}))
        .unwrap();
        let err = reg.infer(&x(1, vec![1.0, 2.0, 3.0])).unwrap_err();
        assert!(
            err.to_string()
                .contains("X has 3 features, but Ridge is expecting 2"),
            "{err}"
        );
        let err = reg.infer(&x(1, vec![1.0, f64::NAN])).unwrap_err();
        assert!(matches!(err, EngineError::InvalidInput(_)), "{err}");
        assert!(LinearEngine::from_json(&json!({"kind": "logistic", "coef": [[1.0]], "intercept": [0.0], "classes": [1, 2, 3]})).is_err());
    }
}
