//! The default request mapping: how a JSON body becomes model inputs when an endpoint has no
//! preprocess code, and how outputs become the reply.
//!
//! For a model with one `[rows, features]` input (tree models, most scikit-learn ONNX exports):
//! - `{"x0": 1, "x1": 2}` is one row; `{"x0": [1, 5], "x1": [2, 6]}` is a batch of columns;
//! - `{"instances": [...]}`, a bare `[[...], ...]` or a bare `[...]` of numbers give rows; a row is
//!   a list of values in column order or an object of named features;
//! - named features are put in column order by, first, the feature names stored in the model
//!   (XGBoost/LightGBM keep them when trained on a DataFrame); else the endpoint's `--input-name`
//!   list when it has one name per feature; else positionally: keys made of one common prefix and
//!   the column index (`x0..x3`, `f0..f3`, `Column_0..Column_3`);
//! - `null` is a missing value (NaN); booleans are 0/1; values are cast to the model's input type;
//! - missing or unknown features are an error naming them.
//!
//! Other models take `{"<input name>": nested list, ...}` (or, with one input, `{"instances": ...}`
//! or a bare nested list). The reply is built by [`crate::reply`].

use serde_json::{Map, Value};
use serval_engine::{
    DataType, EngineError, ModelMetadata, NamedTensor, Result, Tensor, TensorData,
};

fn invalid(message: impl Into<String>) -> EngineError {
    EngineError::InvalidInput(message.into())
}

/// One cell of a tabular body as f64 (null → NaN).
fn number(value: &Value, what: &dyn Fn() -> String) -> Result<f64> {
    match value {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| invalid(format!("{} is not a finite number", what()))),
        Value::Null => Ok(f64::NAN),
        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
        other => Err(invalid(format!(
            "{} must be a number or null, got {other}",
            what()
        ))),
    }
}

/// The rows of a tabular request, before features are put in order.
enum Rows<'a> {
    Lists(Vec<&'a [Value]>),
    Objects(Vec<&'a Map<String, Value>>),
    Columns(&'a Map<String, Value>, usize),
}

fn tabular_rows(body: &Value) -> Result<Rows<'_>> {
    let list = match body {
        Value::Object(map) => match map.get("instances") {
            Some(Value::Array(items)) if map.len() == 1 => items.as_slice(),
            Some(_) if map.len() == 1 => {
                return Err(invalid("\"instances\" must be a list of rows"));
            }
            _ => {
                let arrays: Vec<usize> = map
                    .values()
                    .filter_map(|v| v.as_array().map(Vec::len))
                    .collect();
                if !map.is_empty() && arrays.len() == map.len() {
                    let n = arrays[0];
                    if arrays.iter().any(|l| *l != n) {
                        return Err(invalid("columns of a batch must all have the same length"));
                    }
                    return Ok(Rows::Columns(map, n));
                }
                return Ok(Rows::Objects(vec![map]));
            }
        },
        Value::Array(items) => items.as_slice(),
        _ => {
            return Err(invalid(
                "the body must be a JSON object of features or a list of rows",
            ));
        }
    };
    if list.iter().all(|v| !v.is_array() && !v.is_object()) && !list.is_empty() {
        return Ok(Rows::Lists(vec![list]));
    }
    if list.iter().all(Value::is_array) {
        return Ok(Rows::Lists(
            list.iter()
                .filter_map(|v| v.as_array().map(Vec::as_slice))
                .collect(),
        ));
    }
    if list.iter().all(Value::is_object) {
        return Ok(Rows::Objects(
            list.iter().filter_map(Value::as_object).collect(),
        ));
    }
    Err(invalid(
        "rows must all be lists of values or all be objects of features",
    ))
}

/// Column order for named features (see the module docs).
fn column_names(
    meta: &ModelMetadata,
    input_names: &[String],
    width: usize,
    keys: &[&String],
) -> Result<Vec<String>> {
    if let Some(names) = meta.feature_names.as_ref().filter(|n| n.len() == width) {
        return Ok(names.clone());
    }
    if input_names.len() == width {
        return Ok(input_names.to_vec());
    }
    // Positional keys: one common prefix followed by 0..width.
    let split = |k: &str| -> Option<(String, usize)> {
        let digits = k.chars().rev().take_while(char::is_ascii_digit).count();
        if digits == 0 || digits == k.len() {
            return None;
        }
        let (prefix, index) = k.split_at(k.len() - digits);
        Some((prefix.to_string(), index.parse().ok()?))
    };
    let prefix = keys
        .first()
        .and_then(|k| split(k))
        .map(|(p, _)| p)
        .unwrap_or_else(|| "x".to_string());
    Ok((0..width).map(|i| format!("{prefix}{i}")).collect())
}

fn check_keys(names: &[String], keys: &[&String]) -> Result<()> {
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !keys.contains(n))
        .map(String::as_str)
        .collect();
    let extra: Vec<&str> = keys
        .iter()
        .filter(|k| !names.contains(k))
        .map(|k| k.as_str())
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return Ok(());
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing features: {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        parts.push(format!("unknown features: {}", extra.join(", ")));
    }
    Err(invalid(format!(
        "{} (the model takes {})",
        parts.join("; "),
        names.join(", ")
    )))
}

/// Values as the model's input type; a string input cannot take numbers.
fn cast(values: Vec<f64>, dtype: DataType) -> Result<TensorData> {
    if dtype == DataType::String {
        return Err(invalid("this model takes strings; send them by input name"));
    }
    TensorData::from_f64(values, dtype)
}

fn tabular(
    body: &Value,
    meta: &ModelMetadata,
    input_names: &[String],
    width: usize,
) -> Result<Vec<NamedTensor>> {
    let spec = &meta.inputs[0];
    let mut values: Vec<f64> = Vec::new();
    let rows = match tabular_rows(body)? {
        Rows::Lists(rows) => {
            for (r, row) in rows.iter().enumerate() {
                if row.len() != width {
                    return Err(invalid(format!(
                        "row {r} has {} values, the model takes {width} features",
                        row.len()
                    )));
                }
                for (c, v) in row.iter().enumerate() {
                    values.push(number(v, &|| format!("row {r} value {c}"))?);
                }
            }
            rows.len()
        }
        Rows::Objects(rows) => {
            for row in &rows {
                let keys: Vec<&String> = row.keys().collect();
                let names = column_names(meta, input_names, width, &keys)?;
                check_keys(&names, &keys)?;
                for name in &names {
                    values.push(number(&row[name], &|| format!("feature '{name}'"))?);
                }
            }
            rows.len()
        }
        Rows::Columns(map, n) => {
            let keys: Vec<&String> = map.keys().collect();
            let names = column_names(meta, input_names, width, &keys)?;
            check_keys(&names, &keys)?;
            values.resize(n * width, 0.0);
            for (c, name) in names.iter().enumerate() {
                let column = map[name].as_array().map(Vec::as_slice).unwrap_or_default();
                for (r, v) in column.iter().enumerate() {
                    values[r * width + c] = number(v, &|| format!("feature '{name}' row {r}"))?;
                }
            }
            n
        }
    };
    let tensor = Tensor::new(vec![rows, width], cast(values, spec.dtype)?)?;
    Ok(vec![NamedTensor {
        name: spec.name.clone(),
        tensor,
    }])
}

/// The shape of a nested JSON list and its leaves in row-major order (a scalar has shape `[]`);
/// `None` if the list is ragged. Leaves are whatever is not a list.
pub fn shape_and_leaves(value: &Value) -> Option<(Vec<usize>, Vec<&Value>)> {
    let mut shape = Vec::new();
    let mut probe = value;
    while let Value::Array(items) = probe {
        shape.push(items.len());
        match items.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    if shape.is_empty() {
        return Some((shape, vec![value]));
    }
    // Depth first without recursion (the value may come from a client): a stack of the items
    // still to visit at each depth, innermost last.
    let mut leaves = Vec::new();
    let mut pending: Vec<std::slice::Iter<'_, Value>> = Vec::with_capacity(shape.len());
    let mut next = Some(value);
    loop {
        if let Some(v) = next.take() {
            match (v, shape.get(pending.len())) {
                (Value::Array(items), Some(n)) if items.len() == *n => {
                    pending.push(items.iter());
                }
                (Value::Array(_), _) | (_, Some(_)) => return None,
                (leaf, None) => leaves.push(leaf),
            }
        }
        let top = pending.last_mut()?;
        match top.next() {
            Some(item) => next = Some(item),
            None => {
                pending.pop();
                if pending.is_empty() {
                    return Some((shape, leaves));
                }
            }
        }
    }
}

/// A nested JSON list (or a scalar) as a tensor of the given type; `what` names it in errors.
pub fn nested(value: &Value, dtype: DataType, what: &str) -> Result<Tensor> {
    let (shape, flat) = shape_and_leaves(value)
        .ok_or_else(|| invalid(format!("'{what}' is a ragged nested list")))?;
    let data = if dtype == DataType::String {
        TensorData::String(
            flat.iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| invalid(format!("'{what}' takes strings")))
                })
                .collect::<Result<_>>()?,
        )
    } else {
        let numbers = flat
            .iter()
            .map(|v| number(v, &|| format!("a value of '{what}'")))
            .collect::<Result<Vec<_>>>()?;
        cast(numbers, dtype)?
    };
    Tensor::new(shape, data)
}

/// Builds model inputs from a JSON body (see the module docs). `input_names` is the endpoint's
/// `--input-name` list, used as the feature order when the model stores no feature names.
pub fn request_to_inputs(
    body: &Value,
    meta: &ModelMetadata,
    input_names: &[String],
) -> Result<Vec<NamedTensor>> {
    if let [only] = meta.inputs.as_slice() {
        if let (2, Some(width), false) = (
            only.shape.len(),
            only.shape.get(1).copied().flatten(),
            only.dtype == DataType::String,
        ) {
            return tabular(body, meta, input_names, width);
        }
        let value = match body {
            Value::Object(map)
                if map.len() == 1
                    && (map.contains_key(&only.name) || map.contains_key("instances")) =>
            {
                map.values().next().unwrap_or(&Value::Null)
            }
            Value::Array(_) => body,
            _ => {
                return Err(invalid(format!(
                    "send {{\"{}\": [...]}} or a nested list",
                    only.name
                )));
            }
        };
        return Ok(vec![NamedTensor {
            name: only.name.clone(),
            tensor: nested(value, only.dtype, &only.name)?,
        }]);
    }
    let Value::Object(map) = body else {
        return Err(invalid(
            "this model has several inputs: send an object with one entry per input",
        ));
    };
    let names: Vec<String> = meta.inputs.iter().map(|s| s.name.clone()).collect();
    let keys: Vec<&String> = map.keys().collect();
    check_keys(&names, &keys).map_err(|e| invalid(e.to_string().replace("features", "inputs")))?;
    meta.inputs
        .iter()
        .map(|spec| {
            Ok(NamedTensor {
                name: spec.name.clone(),
                tensor: nested(&map[&spec.name], spec.dtype, &spec.name)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn shapes_and_leaves_of_nested_lists() {
        let value = json!([[1, 2, 3], [4, 5, 6]]);
        let (shape, leaves) = super::shape_and_leaves(&value).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(
            leaves,
            [1, 2, 3, 4, 5, 6]
                .map(|n| json!(n))
                .iter()
                .collect::<Vec<_>>()
        );
        let scalar = json!(7);
        assert_eq!(
            super::shape_and_leaves(&scalar),
            Some((vec![], vec![&scalar]))
        );
        let empty = json!([[], []]);
        assert_eq!(super::shape_and_leaves(&empty), Some((vec![2, 0], vec![])));
        assert_eq!(super::shape_and_leaves(&json!([[1, 2], [3]])), None);
        assert_eq!(super::shape_and_leaves(&json!([[1, 2], 3])), None);
        assert_eq!(super::shape_and_leaves(&json!([1, [2]])), None);
    }

    #[test]
    fn deep_nesting_is_walked_without_recursion() {
        let depth = 100_000;
        let deep = serval_engine::tensor::json::nest(&vec![1; depth], [json!(5)]);
        let (shape, leaves) = super::shape_and_leaves(&deep).unwrap();
        assert_eq!((shape.len(), leaves), (depth, vec![&json!(5)]));
        // serde_json's Value drops recursively: take it apart level by level.
        let mut at = deep;
        while let Value::Array(mut items) = at {
            at = items.pop().unwrap_or(Value::Null);
        }
    }
    use serval_engine::Task;

    use super::*;

    fn meta(width: usize, names: Option<Vec<&str>>, task: Task) -> ModelMetadata {
        ModelMetadata {
            feature_names: names.map(|n| n.into_iter().map(str::to_string).collect()),
            ..ModelMetadata::tabular("test", width, DataType::F32, task)
        }
    }

    fn values(inputs: &[NamedTensor]) -> (Vec<usize>, Vec<f32>) {
        (
            inputs[0].tensor.shape().to_vec(),
            inputs[0].tensor.to_f32().unwrap(),
        )
    }

    #[test]
    fn clearml_bodies_map_positionally() {
        let m = meta(4, None, Task::Regression);
        let body = json!({"x2": 3, "x0": 1, "x3": 4, "x1": 2});
        assert_eq!(
            values(&request_to_inputs(&body, &m, &[]).unwrap()),
            (vec![1, 4], vec![1.0, 2.0, 3.0, 4.0])
        );
        let body = json!({"f1": 2, "f0": null, "f2": true, "f3": 4.5});
        let (_, v) = values(&request_to_inputs(&body, &m, &[]).unwrap());
        assert!(v[0].is_nan());
        assert_eq!(&v[1..], &[2.0, 1.0, 4.5]);
    }

    #[test]
    fn batches_in_every_shape() {
        let m = meta(2, None, Task::Regression);
        let want = (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        for body in [
            json!({"instances": [[1, 2], [3, 4]]}),
            json!([[1, 2], [3, 4]]),
            json!([{"x0": 1, "x1": 2}, {"x1": 4, "x0": 3}]),
            json!({"instances": [{"x0": 1, "x1": 2}, {"x0": 3, "x1": 4}]}),
            json!({"x0": [1, 3], "x1": [2, 4]}),
        ] {
            assert_eq!(
                values(&request_to_inputs(&body, &m, &[]).unwrap()),
                want,
                "{body}"
            );
        }
        assert_eq!(
            values(&request_to_inputs(&json!([5, 6]), &m, &[]).unwrap()),
            (vec![1, 2], vec![5.0, 6.0])
        );
    }

    #[test]
    fn names_come_from_the_model_then_the_endpoint() {
        let m = meta(2, Some(vec!["petal", "sepal"]), Task::Regression);
        let body = json!({"sepal": 2, "petal": 1});
        assert_eq!(
            values(&request_to_inputs(&body, &m, &[]).unwrap()).1,
            vec![1.0, 2.0]
        );
        let m = meta(2, None, Task::Regression);
        let order = vec!["b".to_string(), "a".to_string()];
        let body = json!({"a": 1, "b": 2});
        assert_eq!(
            values(&request_to_inputs(&body, &m, &order).unwrap()).1,
            vec![2.0, 1.0]
        );
    }

    #[test]
    fn missing_and_extra_features_are_named() {
        let m = meta(3, None, Task::Regression);
        let err = request_to_inputs(&json!({"x0": 1, "x1": 2, "y": 3}), &m, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing features: x2") && err.contains("unknown features: y"),
            "{err}"
        );
        assert_eq!(
            request_to_inputs(&json!({"x0": 1}), &m, &[])
                .unwrap_err()
                .kind(),
            "invalid_input"
        );
        let err = request_to_inputs(&json!([[1, 2]]), &m, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 0 has 2 values"), "{err}");
        let err = request_to_inputs(&json!({"x0": "a", "x1": 1, "x2": 2}), &m, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("feature 'x0' must be a number"), "{err}");
        assert!(request_to_inputs(&json!("text"), &m, &[]).is_err());
        assert!(request_to_inputs(&json!({"x0": [1], "x1": [1, 2], "x2": [3]}), &m, &[]).is_err());
    }
}
