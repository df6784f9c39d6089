//! The default reply: how a native model's outputs become the clearml body when an endpoint has no
//! postprocess code. `{"y": [...]}`: values for regressors, class labels for classifiers, plus
//! `"probabilities": [[p_class0, ...], ...]` in class order for classifiers; models that are
//! neither reply with every output by name. NaN and infinities are `null`.
//!
//! [`reply_json`] writes the reply's JSON text straight from the tensors — the same bytes as
//! serialising [`reply_from_outputs`]'s tree, without building it — and [`ReplyText`] writes the
//! same text a chunk at a time, for replies too large to hold whole.

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

/// One part of a reply written directly: text, or an output's elements as a list (`Rows`: a
/// `[rows, k]` tensor as a list of rows).
#[derive(Debug, Clone, Copy)]
enum Piece {
    Text(&'static str),
    Values(usize),
    Rows(usize),
}

/// How far writing a reply has come: the piece, and the element (or row) within it.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    piece: usize,
    at: usize,
}

fn tensor_of(output: &NamedOutput) -> Option<&Tensor> {
    match &output.value {
        OutputValue::Tensor(t) => Some(t),
        OutputValue::Maps(_) => None,
    }
}

/// The pieces of a reply written directly — a classifier's labels and `[rows, classes]`
/// probabilities, a regressor's `[rows]` or `[rows, 1]` values — or `None` for the other shapes.
fn plan(meta: &ModelMetadata, outputs: &[NamedOutput]) -> Option<Vec<Piece>> {
    match (&meta.task, outputs) {
        (Task::Classification { .. }, [labels, probabilities]) => {
            tensor_of(labels)?;
            (tensor_of(probabilities)?.shape().len() == 2).then(|| {
                vec![
                    Piece::Text(r#"{"y":"#),
                    Piece::Values(0),
                    Piece::Text(r#","probabilities":"#),
                    Piece::Rows(1),
                    Piece::Text("}"),
                ]
            })
        }
        (Task::Regression | Task::RawScore, [only]) => {
            matches!(tensor_of(only)?.shape(), [_] | [_, 1])
                .then(|| vec![Piece::Text(r#"{"y":"#), Piece::Values(0), Piece::Text("}")])
        }
        _ => None,
    }
}

/// Element `i` as the tree has it (floats widened to f64; serde_json writes a non-finite float as
/// `null`, as the tree's `json_number` does).
fn write_element(out: &mut Vec<u8>, data: &TensorData, i: usize) {
    // Writing to a Vec cannot fail.
    let _ = match data {
        TensorData::F32(v) => serde_json::to_writer(&mut *out, &f64::from(v[i])),
        TensorData::F64(v) => serde_json::to_writer(&mut *out, &v[i]),
        TensorData::I64(v) => serde_json::to_writer(&mut *out, &v[i]),
        TensorData::I32(v) => serde_json::to_writer(&mut *out, &v[i]),
        TensorData::Bool(v) => serde_json::to_writer(&mut *out, &v[i]),
        TensorData::String(v) => serde_json::to_writer(&mut *out, &v[i]),
    };
}

/// Writes `pieces` of the reply from `cursor` on until `out` holds at least `min` bytes or the
/// reply is complete; returns whether anything is left.
fn write_pieces(
    outputs: &[NamedOutput],
    pieces: &[Piece],
    cursor: &mut Cursor,
    out: &mut Vec<u8>,
    min: usize,
) -> bool {
    while let Some(piece) = pieces.get(cursor.piece) {
        let (output, width) = match *piece {
            Piece::Text(text) => {
                out.extend_from_slice(text.as_bytes());
                cursor.piece += 1;
                continue;
            }
            Piece::Values(output) => (output, None),
            Piece::Rows(output) => (output, Some(())),
        };
        // The plan only names outputs that are tensors (of two dimensions for rows).
        let Some(tensor) = tensor_of(&outputs[output]) else {
            return false;
        };
        let data = tensor.data();
        let (count, width) = match (width, tensor.shape()) {
            (Some(()), [rows, width]) => (*rows, Some(*width)),
            _ => (data.len(), None),
        };
        if cursor.at == 0 {
            out.push(b'[');
        }
        while cursor.at < count {
            if cursor.at > 0 {
                out.push(b',');
            }
            match width {
                None => write_element(out, data, cursor.at),
                Some(width) => {
                    out.push(b'[');
                    for j in 0..width {
                        if j > 0 {
                            out.push(b',');
                        }
                        write_element(out, data, cursor.at * width + j);
                    }
                    out.push(b']');
                }
            }
            cursor.at += 1;
            if out.len() >= min {
                return true;
            }
        }
        out.push(b']');
        *cursor = Cursor {
            piece: cursor.piece + 1,
            at: 0,
        };
        if out.len() >= min && cursor.piece < pieces.len() {
            return true;
        }
    }
    false
}

/// The reply's JSON text (see the module docs): written directly for the common shapes (see
/// [`ReplyText`]) and through [`reply_from_outputs`] otherwise.
pub fn reply_json(meta: &ModelMetadata, outputs: &[NamedOutput]) -> Result<Vec<u8>> {
    match plan(meta, outputs) {
        Some(pieces) => {
            let elements: usize = outputs
                .iter()
                .filter_map(tensor_of)
                .map(|t| t.data().len())
                .sum();
            let mut out = Vec::with_capacity(64 + 24 * elements);
            write_pieces(
                outputs,
                &pieces,
                &mut Cursor::default(),
                &mut out,
                usize::MAX,
            );
            Ok(out)
        }
        None => serde_json::to_vec(&reply_from_outputs(meta, outputs)?).map_err(internal),
    }
}

/// The reply of [`reply_json`] with `contributions` beside the prediction: the reply object gains
/// a `"contributions"` key (nested lists as the tensor's shape; f32 values written as f32, `0.1`
/// rather than `0.10000000149011612`, as V2 writes them; NaN and infinities `null`).
pub fn explained_reply_json(
    meta: &ModelMetadata,
    outputs: &[NamedOutput],
    contributions: &Tensor,
) -> Result<Vec<u8>> {
    let mut out = reply_json(meta, outputs)?;
    // Every default reply is an object.
    if out.first() != Some(&b'{') || out.pop() != Some(b'}') {
        return Err(EngineError::Internal(
            "the reply is not a JSON object".into(),
        ));
    }
    if out.len() > 1 {
        out.push(b',');
    }
    out.reserve(24 + 16 * contributions.data().len());
    out.extend_from_slice(br#""contributions":"#);
    write_nested(&mut out, contributions);
    out.push(b'}');
    Ok(out)
}

/// A tensor as nested JSON lists of its shape, written without building a tree or recursing.
fn write_nested(out: &mut Vec<u8>, tensor: &Tensor) {
    let shape = tensor.shape();
    let data = tensor.data();
    let count = data.len();
    if shape.is_empty() || count == 0 || shape.iter().product::<usize>() != count {
        // Scalars, empty dimensions, inconsistent shapes: through the tree.
        let _ = serde_json::to_writer(&mut *out, &tensor_json(tensor));
        return;
    }
    // strides[k]: the elements in one list at depth k (the product of shape[k..]).
    let mut strides = shape.to_vec();
    for k in (0..shape.len() - 1).rev() {
        strides[k] *= strides[k + 1];
    }
    for i in 0..count {
        for stride in &strides {
            if i % stride == 0 {
                out.push(b'[');
            }
        }
        let _ = match data {
            TensorData::F32(v) if v[i].is_finite() => serde_json::to_writer(&mut *out, &v[i]),
            TensorData::F64(v) if v[i].is_finite() => serde_json::to_writer(&mut *out, &v[i]),
            TensorData::F32(_) | TensorData::F64(_) => {
                out.extend_from_slice(b"null");
                Ok(())
            }
            TensorData::I64(v) => serde_json::to_writer(&mut *out, &v[i]),
            TensorData::I32(v) => serde_json::to_writer(&mut *out, &v[i]),
            TensorData::Bool(v) => serde_json::to_writer(&mut *out, &v[i]),
            TensorData::String(v) => serde_json::to_writer(&mut *out, &v[i]),
        };
        for stride in strides.iter().rev() {
            if (i + 1) % stride != 0 {
                break;
            }
            out.push(b']');
        }
        if i + 1 < count {
            out.push(b',');
        }
    }
}

/// A reply too large to hold as text twice, written a chunk at a time from the outputs while it
/// is sent: the same bytes as [`reply_json`], for the shapes it writes directly.
#[derive(Debug)]
pub struct ReplyText {
    outputs: Vec<NamedOutput>,
    pieces: Vec<Piece>,
    cursor: Cursor,
}

impl ReplyText {
    /// The reply of `outputs`, or the outputs back when their shapes are not written directly.
    pub fn new(
        meta: &ModelMetadata,
        outputs: Vec<NamedOutput>,
    ) -> std::result::Result<ReplyText, Vec<NamedOutput>> {
        match plan(meta, &outputs) {
            Some(pieces) => Ok(ReplyText {
                outputs,
                pieces,
                cursor: Cursor::default(),
            }),
            None => Err(outputs),
        }
    }

    /// The next chunk of at least `min` bytes (the last may be shorter); `None` when all is
    /// written.
    pub fn next_chunk(&mut self, min: usize) -> Option<Vec<u8>> {
        if self.cursor.piece >= self.pieces.len() {
            return None;
        }
        let mut out = Vec::with_capacity(min + 256);
        write_pieces(&self.outputs, &self.pieces, &mut self.cursor, &mut out, min);
        Some(out)
    }

    /// The whole text from the start, whatever has been written already.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_pieces(
            &self.outputs,
            &self.pieces,
            &mut Cursor::default(),
            &mut out,
            usize::MAX,
        );
        out
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
    fn explained_replies_nest_contributions_as_their_shape() {
        let m = meta(2, None, Task::Regression);
        let outputs = vec![NamedOutput {
            name: "predictions".into(),
            value: OutputValue::Tensor(
                Tensor::new(vec![2], TensorData::F32(vec![1.5, 2.0])).unwrap(),
            ),
        }];
        let cases = [
            (
                vec![2, 3],
                TensorData::F32(vec![0.1, -0.2, 3.0, 4.0, 5.0, 6.0]),
            ),
            (
                vec![1, 2, 2],
                TensorData::F32(vec![1.0, f32::NAN, 3.0, 4.0]),
            ),
            (vec![2, 1], TensorData::F64(vec![0.1, f64::INFINITY])),
        ];
        let texts: Vec<String> = cases
            .into_iter()
            .map(|(shape, data)| {
                let tensor = Tensor::new(shape, data).unwrap();
                String::from_utf8(explained_reply_json(&m, &outputs, &tensor).unwrap()).unwrap()
            })
            .collect();
        assert_eq!(
            texts,
            [
                r#"{"y":[1.5,2.0],"contributions":[[0.1,-0.2,3.0],[4.0,5.0,6.0]]}"#,
                r#"{"y":[1.5,2.0],"contributions":[[[1.0,null],[3.0,4.0]]]}"#,
                r#"{"y":[1.5,2.0],"contributions":[[0.1],[null]]}"#,
            ]
        );
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
                String::from_utf8(tree.clone()).unwrap()
            );
            // In chunks of any size: the same bytes.
            if let Ok(mut text) = ReplyText::new(meta, outputs) {
                assert_eq!(text.to_vec(), tree);
                for min in [1, 7, 1 << 20] {
                    let mut chunked = Vec::new();
                    let mut fresh = ReplyText::new(meta, text.outputs.clone()).unwrap();
                    while let Some(chunk) = fresh.next_chunk(min) {
                        assert!(!chunk.is_empty());
                        chunked.extend(chunk);
                    }
                    assert_eq!(chunked, tree, "chunks of {min}");
                }
                assert!(text.next_chunk(1 << 20).is_some());
                assert!(text.next_chunk(1 << 20).is_none());
            }
        }
    }
}
