//! The default reply: how a native model's outputs become the clearml body when an endpoint has no
//! postprocess code. `{"y": [...]}`: values for regressors, class labels for classifiers, plus
//! `"probabilities": [[p_class0, ...], ...]` in class order for classifiers; models that are
//! neither reply with every output by name. NaN and infinities are `null`.
//!
//! [`reply_json`] writes the reply's JSON text straight from the tensors — the same bytes as
//! serialising [`reply_from_outputs`]'s tree, without building it.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value, json};
use serval_engine::{
    ClassLabel, EngineError, ModelMetadata, NamedOutput, OutputValue, Result, Task, Tensor,
    TensorData,
};

fn json_number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// Elements of a tensor as JSON values.
fn elements(tensor: &Tensor) -> Vec<Value> {
    match tensor.data() {
        TensorData::F32(v) => v.iter().map(|x| json_number(f64::from(*x))).collect(),
        TensorData::F64(v) => v.iter().map(|x| json_number(*x)).collect(),
        TensorData::I64(v) => v.iter().map(|x| json!(x)).collect(),
        TensorData::I32(v) => v.iter().map(|x| json!(x)).collect(),
        TensorData::Bool(v) => v.iter().map(|x| json!(x)).collect(),
        TensorData::String(v) => v.iter().map(|x| json!(x)).collect(),
    }
}

/// A tensor as nested JSON lists.
pub fn tensor_json(tensor: &Tensor) -> Value {
    serval_engine::tensor::json::nest(tensor.shape(), elements(tensor))
}

/// Per-row values: `[N]` and `[N, 1]` give scalars, `[N, k]` lists.
fn per_row(tensor: &Tensor) -> Value {
    match tensor.shape() {
        [_] | [_, 1] => Value::Array(elements(tensor)),
        _ => tensor_json(tensor),
    }
}

fn output_json(value: &OutputValue) -> Value {
    match value {
        OutputValue::Tensor(t) => tensor_json(t),
        OutputValue::Maps(rows) => Value::Array(
            rows.iter()
                .map(|row| {
                    let map: Map<String, Value> = row
                        .iter()
                        .map(|(label, p)| {
                            let key = match label {
                                ClassLabel::Int(i) => i.to_string(),
                                ClassLabel::Str(s) => s.clone(),
                            };
                            (key, json_number(f64::from(*p)))
                        })
                        .collect();
                    Value::Object(map)
                })
                .collect(),
        ),
    }
}

/// Shapes model outputs into the reply (see the module docs).
pub fn reply_from_outputs(meta: &ModelMetadata, outputs: &[NamedOutput]) -> Result<Value> {
    let internal = |m: &str| EngineError::Internal(m.to_string());
    match &meta.task {
        Task::Classification { .. } if outputs.len() == 2 => {
            let labels = match &outputs[0].value {
                OutputValue::Tensor(t) => Value::Array(elements(t)),
                OutputValue::Maps(_) => return Err(internal("labels must be a tensor")),
            };
            let probabilities = match &outputs[1].value {
                OutputValue::Tensor(t) => tensor_json(t),
                OutputValue::Maps(rows) => Value::Array(
                    rows.iter()
                        .map(|row| {
                            Value::Array(
                                row.iter()
                                    .map(|(_, p)| json_number(f64::from(*p)))
                                    .collect(),
                            )
                        })
                        .collect(),
                ),
            };
            Ok(json!({"y": labels, "probabilities": probabilities}))
        }
        Task::Regression | Task::RawScore if outputs.len() == 1 => match &outputs[0].value {
            OutputValue::Tensor(t) => Ok(json!({"y": per_row(t)})),
            OutputValue::Maps(_) => Err(internal("regression output must be a tensor")),
        },
        _ => Ok(outputs_by_name(outputs)),
    }
}

/// Every output under its name: `{"<output name>": nested list, ...}`.
pub fn outputs_by_name(outputs: &[NamedOutput]) -> Value {
    Value::Object(
        outputs
            .iter()
            .map(|o| (o.name.clone(), output_json(&o.value)))
            .collect(),
    )
}

/// Elements `range` of a tensor as JSON values in the reply (floats widened to f64, as the tree
/// has them; serde_json writes a non-finite float as `null`, as the tree's `json_number` does).
struct Elements<'a>(&'a TensorData, std::ops::Range<usize>);

impl<'a> Elements<'a> {
    fn all(tensor: &'a Tensor) -> Self {
        Elements(tensor.data(), 0..tensor.data().len())
    }
}

impl Serialize for Elements<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let r = self.1.clone();
        match self.0 {
            TensorData::F32(v) => serializer.collect_seq(v[r].iter().map(|x| f64::from(*x))),
            TensorData::F64(v) => serializer.collect_seq(&v[r]),
            TensorData::I64(v) => serializer.collect_seq(&v[r]),
            TensorData::I32(v) => serializer.collect_seq(&v[r]),
            TensorData::Bool(v) => serializer.collect_seq(&v[r]),
            TensorData::String(v) => serializer.collect_seq(&v[r]),
        }
    }
}

/// A `[rows, k]` tensor as a list of rows (the only nesting the direct writer handles).
struct Rows<'a>(&'a Tensor);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let [rows, width] = *self.0.shape() else {
            return Err(serde::ser::Error::custom("not a matrix"));
        };
        let mut seq = serializer.serialize_seq(Some(rows))?;
        for r in 0..rows {
            seq.serialize_element(&Elements(self.0.data(), r * width..(r + 1) * width))?;
        }
        seq.end()
    }
}

/// The reply's JSON text (see the module docs): written directly for the common shapes — a
/// classifier's labels and `[rows, classes]` probabilities, a regressor's `[rows]` or `[rows, 1]`
/// values — and through [`reply_from_outputs`] otherwise.
pub fn reply_json(meta: &ModelMetadata, outputs: &[NamedOutput]) -> Result<Vec<u8>> {
    fn tensor(output: &NamedOutput) -> Option<&Tensor> {
        match &output.value {
            OutputValue::Tensor(t) => Some(t),
            OutputValue::Maps(_) => None,
        }
    }
    let direct = match (&meta.task, outputs) {
        (Task::Classification { .. }, [labels, probabilities]) => {
            match (tensor(labels), tensor(probabilities)) {
                (Some(labels), Some(p)) if p.shape().len() == 2 => {
                    let mut out = Vec::with_capacity(64 + 24 * p.data().len());
                    let mut writer = serde_json::Serializer::new(&mut out);
                    let mut map = writer.serialize_map(Some(2)).map_err(internal)?;
                    map.serialize_entry("y", &Elements::all(labels))
                        .map_err(internal)?;
                    map.serialize_entry("probabilities", &Rows(p))
                        .map_err(internal)?;
                    SerializeMap::end(map).map_err(internal)?;
                    Some(out)
                }
                _ => None,
            }
        }
        (Task::Regression | Task::RawScore, [only]) => match tensor(only) {
            Some(t) if matches!(t.shape(), [_] | [_, 1]) => {
                let mut out = Vec::with_capacity(16 + 24 * t.data().len());
                let mut writer = serde_json::Serializer::new(&mut out);
                let mut map = writer.serialize_map(Some(1)).map_err(internal)?;
                map.serialize_entry("y", &Elements::all(t))
                    .map_err(internal)?;
                SerializeMap::end(map).map_err(internal)?;
                Some(out)
            }
            _ => None,
        },
        _ => None,
    };
    match direct {
        Some(bytes) => Ok(bytes),
        None => serde_json::to_vec(&reply_from_outputs(meta, outputs)?).map_err(internal),
    }
}

fn internal(e: serde_json::Error) -> EngineError {
    EngineError::Internal(format!("cannot write the reply: {e}"))
}

#[cfg(test)]
mod tests {
    use serval_engine::DataType;

    use super::*;

    fn meta(width: usize, names: Option<Vec<&str>>, task: Task) -> ModelMetadata {
        ModelMetadata {
            feature_names: names.map(|n| n.into_iter().map(str::to_string).collect()),
            ..ModelMetadata::tabular("test", width, DataType::F32, task)
        }
    }

    #[test]
    fn replies_have_y_and_probabilities() {
        let m = meta(
            2,
            None,
            Task::Classification {
                labels: vec![ClassLabel::Int(0), ClassLabel::Int(1)],
            },
        );
        let outputs = vec![
            NamedOutput {
                name: "label".into(),
                value: OutputValue::Tensor(Tensor::new(vec![1], TensorData::I64(vec![1])).unwrap()),
            },
            NamedOutput {
                name: "probabilities".into(),
                value: OutputValue::Tensor(
                    Tensor::new(vec![1, 2], TensorData::F32(vec![0.25, 0.75])).unwrap(),
                ),
            },
        ];
        assert_eq!(
            reply_from_outputs(&m, &outputs).unwrap(),
            json!({"y": [1], "probabilities": [[0.25, 0.75]]})
        );
        let m = meta(2, None, Task::Regression);
        let outputs = vec![NamedOutput {
            name: "variable".into(),
            value: OutputValue::Tensor(
                Tensor::new(vec![2, 1], TensorData::F64(vec![1.5, f64::NAN])).unwrap(),
            ),
        }];
        assert_eq!(
            reply_from_outputs(&m, &outputs).unwrap(),
            json!({"y": [1.5, null]})
        );
    }

    fn tensor(shape: Vec<usize>, data: TensorData) -> OutputValue {
        OutputValue::Tensor(Tensor::new(shape, data).unwrap())
    }

    #[test]
    fn the_direct_reply_is_the_trees_bytes() {
        let classifier = meta(
            2,
            None,
            Task::Classification {
                labels: vec![ClassLabel::Int(0), ClassLabel::Int(1), ClassLabel::Int(2)],
            },
        );
        let labelled = |labels: TensorData, probabilities: OutputValue| {
            vec![
                NamedOutput {
                    name: "label".into(),
                    value: tensor(vec![labels.len()], labels),
                },
                NamedOutput {
                    name: "probabilities".into(),
                    value: probabilities,
                },
            ]
        };
        let cases: Vec<(&ModelMetadata, Vec<NamedOutput>)> = vec![
            (
                &classifier,
                labelled(
                    TensorData::I64(vec![1, 2]),
                    tensor(
                        vec![2, 3],
                        TensorData::F32(vec![0.1, 0.7, 0.2, f32::NAN, 1e-8, 0.333_333_34]),
                    ),
                ),
            ),
            (
                &classifier,
                labelled(
                    TensorData::String(vec!["a\"b".into()]),
                    tensor(vec![1, 3], TensorData::F64(vec![0.5, f64::INFINITY, 1e300])),
                ),
            ),
            (
                &classifier,
                labelled(
                    TensorData::I64(vec![]),
                    tensor(vec![0, 3], TensorData::F32(vec![])),
                ),
            ),
        ];
        let regressor = meta(2, None, Task::Regression);
        let raw = meta(2, None, Task::RawScore);
        let single = |value: OutputValue| {
            vec![NamedOutput {
                name: "variable".into(),
                value,
            }]
        };
        let more = vec![
            (
                &regressor,
                single(tensor(vec![3], TensorData::F32(vec![1.5, -0.0, 3.1e38]))),
            ),
            (
                &regressor,
                single(tensor(vec![2, 1], TensorData::F64(vec![1.5, f64::NAN]))),
            ),
            (&raw, single(tensor(vec![1], TensorData::I32(vec![-7])))),
            // Not written directly: the tree's bytes all the same.
            (
                &regressor,
                single(tensor(vec![1, 2], TensorData::F64(vec![1.0, 2.0]))),
            ),
        ];
        for (meta, outputs) in cases.into_iter().chain(more) {
            let tree = serde_json::to_vec(&reply_from_outputs(meta, &outputs).unwrap()).unwrap();
            assert_eq!(
                String::from_utf8(reply_json(meta, &outputs).unwrap()).unwrap(),
                String::from_utf8(tree).unwrap()
            );
        }
    }
}
