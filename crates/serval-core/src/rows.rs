//! Tabular clearml bodies parsed straight into a typed tensor, with no JSON tree in between.
//!
//! A body of rows for a one-input `[rows, features]` model — `{"instances": [[...], ...]}`,
//! `[[...], ...]` or one row `[...]` — is read value by value into the model's input type: a
//! 16-million-value body costs 64 MB as `f32`, where a `serde_json::Value` tree of it costs about a
//! gigabyte. So is one row of named features, `{"x0": 1, "x1": 2, ...}` (clearml's own examples),
//! when the caller allows it: each key is put in its column as [`crate::request_to_inputs`] orders
//! them. Every other shape (columns, lists of objects, empty or mixed lists, named features with a
//! key missing, unknown, repeated or not a number) is [`Parsed::Other`]: the caller parses a tree
//! and uses [`crate::request_to_inputs`], which gives the same answers and the same error texts for
//! what both read.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serval_engine::{DataType, ModelMetadata, NamedTensor, Tensor, TensorData, TensorSpec};

/// What [`parse_rows`] made of a body.
#[derive(Debug)]
pub enum Parsed {
    /// The model's input, ready to run.
    Rows(NamedTensor),
    /// Rows that cannot be a batch for this model (wrong width, a value that is not a number):
    /// [`crate::request_to_inputs`]'s invalid-input message.
    Invalid(String),
    /// The body is not JSON: the parser's error, with its position.
    Syntax(serde_json::Error),
    /// Another shape: parse a tree.
    Other,
}

/// The `[rows, width]` input of a tabular model, if it is one (the shape [`parse_rows`] reads).
pub fn tabular_input(meta: &ModelMetadata) -> Option<(&TensorSpec, usize)> {
    match meta.inputs.as_slice() {
        [only] if only.shape.len() == 2 && only.dtype != DataType::String => {
            Some((only, only.shape[1]?))
        }
        _ => None,
    }
}

/// Parses a body of rows for `meta`'s tabular input (see the module docs); [`Parsed::Other`] for a
/// model that is not tabular. `named`: read one object of named features too, with the endpoint's
/// `--input-name` list as the column order when the model stores no feature names (`None`: leave
/// such bodies to the tree path — a metric rule reads their keys, say).
pub fn parse_rows(json: &[u8], meta: &ModelMetadata, named: Option<&[String]>) -> Parsed {
    let Some((spec, width)) = tabular_input(meta) else {
        return Parsed::Other;
    };
    let columns = named.map(|input_names| Columns::of(meta, input_names, width));
    let mut state = State {
        width,
        values: Values::new(spec.dtype, width),
        rows: 0,
        mode: Mode::Empty,
        text: None,
        pending: None,
        stop: None,
        columns,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let parsed = Body(&mut state)
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
    match (parsed, state.stop) {
        (_, Some(Stop::Other)) => Parsed::Other,
        (Err(error), None) if error.is_syntax() || error.is_eof() => Parsed::Syntax(error),
        (Err(_), None) => Parsed::Other,
        // A row that cannot be the model's, in a list that is all rows and all JSON.
        (Ok(()), None) if state.pending.is_some() => invalid(state.pending.unwrap_or_default()),
        (Ok(()), None) => {
            let rows = match state.mode {
                Mode::Empty => return Parsed::Other,
                Mode::Named => 1,
                Mode::OneRow => {
                    if state.rows != width {
                        return invalid(row_length(0, state.rows, width));
                    }
                    if let Some(message) = state.text {
                        return invalid(message);
                    }
                    1
                }
                Mode::Rows => state.rows,
            };
            match Tensor::new(vec![rows, width], state.values.into_data()) {
                Ok(tensor) => Parsed::Rows(NamedTensor {
                    name: spec.name.clone(),
                    tensor,
                }),
                Err(error) => Parsed::Invalid(error.to_string()),
            }
        }
    }
}

fn invalid(message: String) -> Parsed {
    Parsed::Invalid(message)
}

fn row_length(row: usize, length: usize, width: usize) -> String {
    format!("row {row} has {length} values, the model takes {width} features")
}

/// Values in the model's input type, cast as [`crate::request_to_inputs`] casts them.
enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
}

impl Values {
    /// Room for one row of `width` (one allocation for the common single-row body).
    fn new(dtype: DataType, width: usize) -> Values {
        match dtype {
            DataType::F64 => Values::F64(Vec::with_capacity(width)),
            DataType::I64 => Values::I64(Vec::with_capacity(width)),
            DataType::I32 => Values::I32(Vec::with_capacity(width)),
            DataType::Bool => Values::Bool(Vec::with_capacity(width)),
            DataType::F32 | DataType::String => Values::F32(Vec::with_capacity(width)),
        }
    }

    fn push(&mut self, v: f64) {
        match self {
            Values::F32(values) => values.push(v as f32),
            Values::F64(values) => values.push(v),
            Values::I64(values) => values.push(v as i64),
            Values::I32(values) => values.push(v as i32),
            Values::Bool(values) => values.push(v != 0.0),
        }
    }

    fn into_data(self) -> TensorData {
        match self {
            Values::F32(values) => TensorData::F32(values),
            Values::F64(values) => TensorData::F64(values),
            Values::I64(values) => TensorData::I64(values),
            Values::I32(values) => TensorData::I32(values),
            Values::Bool(values) => TensorData::Bool(values),
        }
    }
}

/// Whether the list holds rows (lists) or is itself one row (scalars); or the body was one
/// object of named features.
#[derive(PartialEq)]
enum Mode {
    Empty,
    OneRow,
    Rows,
    Named,
}

/// The column of each named feature, as [`crate::request_to_inputs`] orders them: the model's
/// stored feature names, else the endpoint's `--input-name` list when it names every column,
/// else positional keys — one common prefix (the first key's) and the column index.
enum Columns<'a> {
    Names(&'a [String]),
    /// Decided by the first key.
    Positional,
}

impl<'a> Columns<'a> {
    fn of(meta: &'a ModelMetadata, input_names: &'a [String], width: usize) -> Columns<'a> {
        if let Some(names) = meta.feature_names.as_ref().filter(|n| n.len() == width) {
            return Columns::Names(names);
        }
        if input_names.len() == width {
            return Columns::Names(input_names);
        }
        Columns::Positional
    }
}

/// `x12` → (`x`, 12): a prefix and a decimal index written as `format!("{prefix}{i}")` would
/// write it (no leading zeros).
fn positional(key: &str) -> Option<(&str, usize)> {
    let digits = key.bytes().rev().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits == key.len() {
        return None;
    }
    let (prefix, index) = key.split_at(key.len() - digits);
    if index.len() > 1 && index.starts_with('0') {
        return None;
    }
    Some((prefix, index.parse().ok()?))
}

/// Why parsing stopped early (it stops by returning an error to serde).
enum Stop {
    /// Not a body of rows: the tree path reads it.
    Other,
}

struct State<'a> {
    width: usize,
    values: Values,
    /// Rows read (`Mode::Rows`) or values read (`Mode::OneRow`).
    rows: usize,
    mode: Mode,
    /// The first value of a one-row body that is not a number (reported after its length).
    text: Option<String>,
    /// The first row that cannot be the model's (wrong length, a value that is not a number):
    /// reported once the whole list is known to be rows (else the tree path's message applies);
    /// no values are kept after it.
    pending: Option<String>,
    stop: Option<Stop>,
    /// How named features find their columns; `None`: objects of features are not read.
    columns: Option<Columns<'a>>,
}

impl State<'_> {
    fn stop<E: de::Error>(&mut self, stop: Stop) -> E {
        self.stop = Some(stop);
        E::custom("stopped")
    }
}

/// The whole body: `{"instances": list}`, a list, or one object of named features.
struct Body<'s, 'a>(&'s mut State<'a>);

impl<'de> DeserializeSeed<'de> for Body<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Body<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object or list")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let state = self.0;
        match map.next_key::<Key<'de>>()? {
            Some(Key(key)) if key == "instances" => {}
            Some(Key(first)) if state.columns.is_some() => return named(state, &first, map),
            _ => return Err(state.stop(Stop::Other)),
        }
        map.next_value_seed(List(state))?;
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(state.stop(Stop::Other));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        List(self.0).visit_seq(seq)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.0.stop(Stop::Other))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.0.stop(Stop::Other))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.0.stop(Stop::Other))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.0.stop(Stop::Other))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.0.stop(Stop::Other))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.0.stop(Stop::Other))
    }
}

/// One object of named features, from its first key on: each value into its column. Anything the
/// tree path would refuse or read differently (a missing, unknown or repeated key, a value that
/// is not a number, null or boolean) stops the parse: the tree path answers.
fn named<'de, A: MapAccess<'de>>(
    state: &mut State,
    first: &str,
    mut map: A,
) -> Result<(), A::Error> {
    let width = state.width;
    let prefix = match &state.columns {
        Some(Columns::Positional) => positional(first).map_or("x", |(p, _)| p),
        _ => "",
    };
    let column = |columns: &Option<Columns>, key: &str| match columns {
        Some(Columns::Names(names)) => names.iter().position(|n| n == key),
        Some(Columns::Positional) => positional(key)
            .filter(|(p, i)| *p == prefix && *i < width)
            .map(|(_, i)| i),
        None => None,
    };
    // Each column's value, and whether its key came.
    let mut row = vec![(f64::NAN, false); width];
    let mut count = 0;
    let mut next = column(&state.columns, first);
    loop {
        let Some(c) = next else {
            return Err(state.stop(Stop::Other));
        };
        if std::mem::replace(&mut row[c].1, true) {
            return Err(state.stop(Stop::Other));
        }
        match map.next_value_seed(CellSeed)? {
            Cell::Number(v) => row[c].0 = v,
            Cell::Text(_) => return Err(state.stop(Stop::Other)),
        }
        count += 1;
        match map.next_key::<Key<'de>>()? {
            Some(Key(key)) => next = column(&state.columns, &key),
            None => break,
        }
    }
    if count != width {
        return Err(state.stop(Stop::Other));
    }
    for (v, _) in row {
        state.values.push(v);
    }
    state.mode = Mode::Named;
    Ok(())
}

/// An object's key, borrowed from the body unless it has escapes (serde's `Cow<str>` is always
/// a new `String`).
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A list of rows, or one row of scalars.
struct List<'s, 'a>(&'s mut State<'a>);

impl<'de> DeserializeSeed<'de> for List<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for List<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let state = self.0;
        while seq.next_element_seed(Item(&mut *state))?.is_some() {}
        Ok(())
    }
}

/// One item of the list: a row, or a value of the single row.
struct Item<'s, 'a>(&'s mut State<'a>);

impl<'de> DeserializeSeed<'de> for Item<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Item<'_, '_> {
    /// A scalar item: the list is one row.
    fn scalar<E: de::Error>(self, value: Cell) -> Result<(), E> {
        let state = self.0;
        match state.mode {
            Mode::Empty => state.mode = Mode::OneRow,
            Mode::OneRow => {}
            Mode::Rows | Mode::Named => return Err(state.stop(Stop::Other)),
        }
        let column = state.rows;
        state.rows += 1;
        if column >= state.width {
            // Too long: counted to the end for the message.
            return Ok(());
        }
        match value {
            Cell::Number(v) => state.values.push(v),
            // Reported after the length check, as `request_to_inputs` does.
            Cell::Text(text) => {
                if state.text.is_none() {
                    state.text = Some(not_a_number(0, column, &text));
                }
            }
        }
        Ok(())
    }
}

enum Cell {
    Number(f64),
    Text(String),
}

fn not_a_number(row: usize, column: usize, text: &str) -> String {
    format!(
        "row {row} value {column} must be a number or null, got {}",
        serde_json::Value::String(text.to_string())
    )
}

impl<'de> Visitor<'de> for Item<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let state = self.0;
        match state.mode {
            Mode::Empty => state.mode = Mode::Rows,
            Mode::Rows => {}
            Mode::OneRow | Mode::Named => return Err(state.stop(Stop::Other)),
        }
        let row = state.rows;
        let mut length = 0;
        let mut text = None;
        while let Some(cell) = seq.next_element_seed(CellSeed)? {
            match cell {
                Cell::Number(v) if length < state.width && state.pending.is_none() => {
                    state.values.push(v)
                }
                Cell::Text(t) if length < state.width && text.is_none() => {
                    text = Some(not_a_number(row, length, &t));
                }
                _ => {}
            }
            length += 1;
        }
        if state.pending.is_none() {
            state.pending = if length != state.width {
                Some(row_length(row, length, state.width))
            } else {
                text
            };
        }
        state.rows += 1;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.0.stop(Stop::Other))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(Cell::Number(f64::from(u8::from(v))))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Cell::Number(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(Cell::Number(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(Cell::Number(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Cell::Text(v.to_string()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar(Cell::Number(f64::NAN))
    }
}

/// One value of a row: a number (null → NaN, booleans → 0/1) or a string (an error, reported with
/// the row). A list or object stops the parse with a data error: the tree path says what is wrong.
struct CellSeed;

impl<'de> DeserializeSeed<'de> for CellSeed {
    type Value = Cell;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CellSeed {
    type Value = Cell;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or null")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Cell::Number(f64::from(u8::from(v))))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Cell::Number(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Cell::Number(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Cell::Number(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cell::Text(v.to_string()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Cell::Number(f64::NAN))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom("a list inside a row"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom("an object inside a row"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_to_inputs;
    use serval_engine::{EngineError, Task};

    fn meta(width: usize, dtype: DataType) -> ModelMetadata {
        ModelMetadata::tabular("test", width, dtype, Task::Regression)
    }

    /// The typed path agrees with the tree path on every body it reads, answers and errors alike.
    #[test]
    fn typed_rows_agree_with_the_tree_path() {
        let bodies = [
            r#"{"instances": [[1, 2.5, null, true], [0, -1e3, 3, false]]}"#,
            "[[1, 2, 3, 4]]",
            "[1, 2, 3, 4]",
            " [ [1,2,3,4] , [5,6,7,8] ] ",
            "[[1, 2, 3]]",
            "[[1, 2, 3, 4, 5]]",
            r#"[[1, "a", 3, 4]]"#,
            r#"[[1, "a", 3, 4, 5]]"#,
            r#"[1, "b", 3, 4]"#,
            "[1, 2, 3]",
            "[1, 2, 3, 4, 5]",
            r#"{"instances": [[1, 2, 3, 4]], "other": 1}"#,
        ];
        for dtype in [DataType::F32, DataType::F64, DataType::I64] {
            let meta = meta(4, dtype);
            for body in bodies {
                let tree = request_to_inputs(&serde_json::from_str(body).unwrap(), &meta, &[]);
                match (parse_rows(body.as_bytes(), &meta, None), tree) {
                    // Debug text: NaN (a null) is not equal to itself.
                    (Parsed::Rows(typed), Ok(tree)) => {
                        assert_eq!(format!("{:?}", [typed]), format!("{tree:?}"), "{body}")
                    }
                    (Parsed::Invalid(typed), Err(tree)) => {
                        let typed = EngineError::InvalidInput(typed).to_string();
                        assert_eq!(typed, tree.to_string(), "{body}")
                    }
                    (Parsed::Other, _) if body.contains("other") => {}
                    (typed, tree) => panic!("{body}: typed {typed:?}, tree {tree:?}"),
                }
            }
        }
    }

    /// Objects of named features, when allowed: the same answers as the tree path, and the tree
    /// path for everything it would refuse or read differently.
    #[test]
    fn named_features_agree_with_the_tree_path() {
        let stored = ModelMetadata {
            feature_names: Some(vec!["sepal".into(), "petal".into()]),
            ..meta(2, DataType::F32)
        };
        let plain = meta(2, DataType::F64);
        let order = ["b".to_string(), "a".to_string()];
        let cases: Vec<(&ModelMetadata, &[String], &str, bool)> = vec![
            (&plain, &[], r#"{"x0": 1, "x1": 2.5}"#, true),
            (&plain, &[], r#"{"x1": 2, "x0": null}"#, true),
            (&plain, &[], r#"{"f0": true, "f1": false}"#, true),
            (&plain, &[], r#"{"Column_1": 3, "Column_0": 4}"#, true),
            (&plain, &order, r#"{"a": 1, "b": 2}"#, true),
            (&stored, &[], r#"{"petal": 1, "sepal": 2}"#, true),
            (&stored, &order, r#"{"petal": 1, "sepal": 2}"#, true),
            // Keys with escapes (not borrowed from the body).
            (&plain, &[], r#"{"x\u0030": 1, "\u00781": 2}"#, true),
            (&stored, &[], r#"{"pet\u0061l": 1, "sepal": 2}"#, true),
            // Left to the tree path (its answer or its error).
            (&plain, &[], r#"{"x0": 1}"#, false),
            (&plain, &[], r#"{"x0": 1, "x1": 2, "x2": 3}"#, false),
            (&plain, &[], r#"{"x0": 1, "y1": 2}"#, false),
            (&plain, &[], r#"{"x0": 1, "x01": 2}"#, false),
            (&plain, &[], r#"{"x0": 1, "x0": 2}"#, false),
            (&plain, &[], r#"{"x0": "a", "x1": 2}"#, false),
            (&plain, &[], r#"{"x0": [1], "x1": [2]}"#, false),
            (&plain, &[], r#"{"x0": {}, "x1": 2}"#, false),
            (&plain, &[], r#"{"a": 1, "b": 2}"#, false),
            (&plain, &[], "{}", false),
            (&stored, &[], r#"{"x0": 1, "x1": 2}"#, false),
        ];
        for (meta, input_names, body, read) in cases {
            let tree = request_to_inputs(&serde_json::from_str(body).unwrap(), meta, input_names);
            match (parse_rows(body.as_bytes(), meta, Some(input_names)), tree) {
                (Parsed::Rows(typed), Ok(tree)) if read => {
                    assert_eq!(format!("{:?}", [typed]), format!("{tree:?}"), "{body}")
                }
                (Parsed::Other, _) if !read => {}
                (typed, tree) => panic!("{body}: typed {typed:?}, tree {tree:?}"),
            }
            assert!(
                matches!(parse_rows(body.as_bytes(), meta, None), Parsed::Other),
                "{body}: not read unless allowed"
            );
        }
    }

    #[test]
    fn only_row_bodies_are_read() {
        let meta = meta(2, DataType::F32);
        for body in [
            r#"{"x0": 1, "x1": 2}"#,
            r#"{"x0": [1, 2], "x1": [3, 4]}"#,
            r#"[{"x0": 1, "x1": 2}]"#,
            "[]",
            r#"{"instances": []}"#,
            r#"[[1, 2], 3]"#,
            r#"[[1, [2]]]"#,
            "3",
            r#"{"instances": 3}"#,
        ] {
            assert!(
                matches!(parse_rows(body.as_bytes(), &meta, None), Parsed::Other),
                "{body}"
            );
        }
        let image = ModelMetadata {
            inputs: vec![TensorSpec {
                name: "image".into(),
                dtype: DataType::F32,
                shape: vec![None, Some(3), Some(8), Some(8)],
            }],
            ..meta
        };
        assert!(matches!(
            parse_rows(b"[[1, 2]]", &image, None),
            Parsed::Other
        ));
    }

    #[test]
    fn syntax_errors_keep_their_position() {
        let meta = meta(2, DataType::F32);
        let text = b"[[1, 2], [3, 4}";
        let Parsed::Syntax(typed) = parse_rows(text, &meta, None) else {
            panic!("not a syntax error");
        };
        let tree = serde_json::from_slice::<serde_json::Value>(text).unwrap_err();
        assert_eq!((typed.line(), typed.column()), (tree.line(), tree.column()));
        assert!(matches!(
            parse_rows(b"[[1, 2]] x", &meta, None),
            Parsed::Syntax(_)
        ));
        // A row error early in a text that is not JSON further on: the syntax error (fuzzing).
        // And a mixed list is the tree path's to describe, whatever its first row.
        assert!(matches!(
            parse_rows(b"[[14],4]", &meta, None),
            Parsed::Other
        ));
        let text = b"{\"instances\": [[2]2,3,4],[5,6,7,8]]}";
        let Parsed::Syntax(typed) = parse_rows(text, &meta, None) else {
            panic!("not a syntax error");
        };
        let tree = serde_json::from_slice::<serde_json::Value>(text).unwrap_err();
        assert_eq!((typed.line(), typed.column()), (tree.line(), tree.column()));
    }
}
