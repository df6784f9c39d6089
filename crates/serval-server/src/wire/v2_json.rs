//! The V2 REST inference body, both ways: JSON tensors (nested or flat `data`) and Triton's
//! binary tensor extension (a JSON header of `Inference-Header-Content-Length` bytes followed by
//! raw tensor bytes, for inputs with `parameters.binary_data_size` and outputs asked for with
//! `binary_data` / `binary_data_output`).

use std::fmt;

use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::memory::Reservation;
use crate::wire::tensor::datatype_of_input;
use crate::wire::{Datatype, Elements, InferTensor, shape_of};

/// The header that splits a binary body: the length of its JSON part.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Deserialize)]
struct RequestJson {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<InputJson>,
    #[serde(default)]
    outputs: Option<Vec<OutputJson>>,
}

#[derive(Deserialize)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<FlatData>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// One JSON element of a tensor.
enum Scalar {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Text(String),
}

/// A tensor's `data`, flattened whatever its nesting.
struct FlatData(Vec<Scalar>);

struct Flatten<'a>(&'a mut Vec<Scalar>);

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("tensor data: numbers, booleans or strings, nested in lists")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.push(Scalar::Bool(v));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push(Scalar::Int(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.push(match i64::try_from(v) {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::Uint(v),
        });
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.push(Scalar::Float(v));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push(Scalar::Text(v.to_string()));
        Ok(())
    }
    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.0.push(Scalar::Text(v));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

impl<'de> Deserialize<'de> for FlatData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        Flatten(&mut out).deserialize(d)?;
        Ok(FlatData(out))
    }
}

fn bad(message: String) -> Error {
    Error::BadRequest(message)
}

/// Converts JSON elements to `datatype`: integers must be whole and in range, booleans are
/// `true`/`false`, BYTES are strings; FP16/BF16 are rounded from the numbers.
fn elements(name: &str, datatype: Datatype, data: Vec<Scalar>) -> Result<Elements, Error> {
    let kind = |s: &Scalar| match s {
        Scalar::Bool(_) => "a boolean",
        Scalar::Int(_) | Scalar::Uint(_) => "an integer",
        Scalar::Float(_) => "a number",
        Scalar::Text(_) => "a string",
    };
    let wrong = |s: &Scalar| {
        bad(format!(
            "input '{name}': {datatype} data cannot hold {}",
            kind(s)
        ))
    };
    fn float(s: &Scalar) -> Option<f64> {
        match s {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::Uint(u) => Some(*u as f64),
            Scalar::Float(f) => Some(*f),
            _ => None,
        }
    }
    fn ints<T: TryFrom<i64> + TryFrom<u64>>(
        data: &[Scalar],
        wrong: impl Fn(&Scalar) -> Error,
    ) -> Result<Vec<T>, Error> {
        data.iter()
            .map(|s| {
                let v = match s {
                    Scalar::Int(i) => T::try_from(*i).ok(),
                    Scalar::Uint(u) => T::try_from(*u).ok(),
                    _ => None,
                };
                v.ok_or_else(|| wrong(s))
            })
            .collect()
    }
    let floats = |data: &[Scalar]| -> Result<Vec<f64>, Error> {
        data.iter()
            .map(|s| float(s).ok_or_else(|| wrong(s)))
            .collect()
    };
    Ok(match datatype {
        Datatype::Bool => Elements::Bool(
            data.iter()
                .map(|s| match s {
                    Scalar::Bool(b) => Ok(*b),
                    other => Err(wrong(other)),
                })
                .collect::<Result<_, _>>()?,
        ),
        Datatype::Uint8 => Elements::U8(ints(&data, wrong)?),
        Datatype::Uint16 => Elements::U16(ints(&data, wrong)?),
        Datatype::Uint32 => Elements::U32(ints(&data, wrong)?),
        Datatype::Uint64 => Elements::U64(ints(&data, wrong)?),
        Datatype::Int8 => Elements::I8(ints(&data, wrong)?),
        Datatype::Int16 => Elements::I16(ints(&data, wrong)?),
        Datatype::Int32 => Elements::I32(ints(&data, wrong)?),
        Datatype::Int64 => Elements::I64(ints(&data, wrong)?),
        Datatype::Fp16 => Elements::F16(
            floats(&data)?
                .into_iter()
                .map(|x| half::f16::from_f64(x).to_bits())
                .collect(),
        ),
        Datatype::Bf16 => Elements::Bf16(
            floats(&data)?
                .into_iter()
                .map(|x| half::bf16::from_f64(x).to_bits())
                .collect(),
        ),
        Datatype::Fp32 => Elements::F32(
            data.iter()
                .map(|s| float(s).map(|x| x as f32).ok_or_else(|| wrong(s)))
                .collect::<Result<_, _>>()?,
        ),
        Datatype::Fp64 => Elements::F64(floats(&data)?),
        Datatype::Bytes => Elements::Bytes(
            data.into_iter()
                .map(|s| match s {
                    Scalar::Text(t) => Ok(t.into_bytes()),
                    other => Err(wrong(&other)),
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Whether each output comes back in binary form.
#[derive(Debug, Default, Clone)]
pub struct BinaryOutputs {
    /// `parameters.binary_data_output` of the request.
    pub default: bool,
    /// Per requested output: `parameters.binary_data`.
    pub per_output: Vec<(String, bool)>,
}

impl BinaryOutputs {
    pub fn binary(&self, name: &str) -> bool {
        self.per_output
            .iter()
            .find(|(n, _)| n == name)
            .map_or(self.default, |(_, b)| *b)
    }
}

/// A decoded V2 inference request.
#[derive(Debug)]
pub struct Decoded {
    pub id: Option<String>,
    /// The request's parameters (kept; serval defines none of its own).
    pub parameters: Map<String, Value>,
    pub inputs: Vec<InferTensor>,
    /// `None`: every output.
    pub outputs: Option<Vec<String>>,
    pub binary: BinaryOutputs,
}

fn flag(parameters: Option<&Map<String, Value>>, key: &str) -> Result<Option<bool>, Error> {
    match parameters.and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(bad(format!(
            "parameter '{key}' must be a boolean, got {other}"
        ))),
    }
}

/// What one value of a request's JSON costs while it is decoded: its parsed form (32 bytes) and
/// its tensor element (up to a BYTES element's 24).
pub const JSON_VALUE_BYTES: usize = 64;

/// What one tensor element costs on its way to a Python worker (a BYTES element's JSON string;
/// numbers travel as raw bytes), besides the frame's text.
pub const TO_PYTHON_VALUE_BYTES: usize = 40;

/// Decodes a V2 inference request (JSON, or a JSON header followed by binary tensors);
/// `header_length` is `Inference-Header-Content-Length` if present. The JSON text is refused past
/// `max_values` values before it is parsed, and so is each binary tensor before it is decoded;
/// `memory` is charged for what decoding makes before it is made, and for `to_python`, for what
/// carrying the tensors to a worker makes.
pub fn decode(
    body: &[u8],
    header_length: Option<&str>,
    max_values: usize,
    memory: &mut Reservation,
    to_python: bool,
) -> Result<Decoded, Error> {
    let (json, mut binary) = match header_length {
        None => (body, &[][..]),
        Some(text) => {
            let n: usize = text.trim().parse().map_err(|_| {
                bad(format!(
                    "Inference-Header-Content-Length must be a byte count, got '{text}'"
                ))
            })?;
            if n == 0 {
                return Err(bad(
                    "raw binary requests (Inference-Header-Content-Length: 0) are not supported; \
                     send a JSON header with binary_data_size per input"
                        .to_string(),
                ));
            }
            if n > body.len() {
                return Err(bad(format!(
                    "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                    body.len()
                )));
            }
            body.split_at(n)
        }
    };
    super::json::charge_values(json, JSON_VALUE_BYTES, max_values, memory)?;
    let request: RequestJson = serde_json::from_slice(json).map_err(|e| {
        bad(format!(
            "the request is not a valid V2 inference request: {e}"
        ))
    })?;
    let mut inputs = Vec::with_capacity(request.inputs.len());
    let mut total = 0usize;
    for input in request.inputs {
        let name = input.name;
        let datatype = datatype_of_input(&name, &input.datatype)?;
        let shape = shape_of(&name, &input.shape)?;
        let binary_size = match input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
        {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        bad(format!(
                            "input '{name}': binary_data_size must be a byte count, got {v}"
                        ))
                    })?,
            ),
        };
        let data = match (binary_size, input.data) {
            (Some(_), Some(_)) => {
                return Err(bad(format!(
                    "input '{name}' has both data and binary_data_size"
                )));
            }
            (Some(size), None) => {
                if header_length.is_none() {
                    return Err(bad(format!(
                        "input '{name}' has binary_data_size but the request has no Inference-Header-Content-Length header"
                    )));
                }
                if size > binary.len() {
                    return Err(bad(format!(
                        "input '{name}': binary_data_size is {size} but only {} bytes of binary data are left",
                        binary.len()
                    )));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                let (count, made) = Elements::size_of_le_bytes(datatype, mine);
                total = total.saturating_add(count);
                if total > max_values {
                    return Err(Error::TooManyValues(max_values));
                }
                memory.charge(made)?;
                Elements::from_le_bytes(datatype, mine, &format!("input '{name}'"))?
            }
            (None, Some(FlatData(data))) => elements(&name, datatype, data)?,
            (None, None) => {
                return Err(bad(format!(
                    "input '{name}' has neither data nor binary_data_size"
                )));
            }
        };
        inputs.push(InferTensor::new(name, shape, data)?);
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "the body has {} bytes of binary data that no input's binary_data_size accounts for",
            binary.len()
        )));
    }
    let mut parameters = request.parameters.unwrap_or_default();
    let binary_outputs = BinaryOutputs {
        default: flag(Some(&parameters), "binary_data_output")?.unwrap_or(false),
        per_output: request
            .outputs
            .iter()
            .flatten()
            .map(|o| {
                if let Some(n) = o.parameters.as_ref().and_then(|p| p.get("classification"))
                    && n.as_u64() != Some(0)
                {
                    return Err(bad(format!(
                        "output '{}': the classification extension is not supported",
                        o.name
                    )));
                }
                Ok(flag(o.parameters.as_ref(), "binary_data")?.map(|b| (o.name.clone(), b)))
            })
            .filter_map(Result::transpose)
            .collect::<Result<_, _>>()?,
    };
    parameters.remove("binary_data_output");
    let total: usize = inputs.iter().map(|t: &InferTensor| t.data.len()).sum();
    if total > max_values {
        return Err(Error::TooManyValues(max_values));
    }
    if to_python {
        // The tensors' worker form, then the frame's text and the frame.
        memory.charge(
            total
                .saturating_mul(TO_PYTHON_VALUE_BYTES)
                .saturating_add(body.len().saturating_mul(2)),
        )?;
    }
    Ok(Decoded {
        id: request.id,
        parameters,
        inputs,
        outputs: request
            .outputs
            .map(|outputs| outputs.into_iter().map(|o| o.name).collect()),
        binary: binary_outputs,
    })
}

/// An output's data as a flat JSON list.
struct JsonData<'a>(&'a Elements);

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fn all<S: Serializer, T: Serialize>(s: S, v: &[T]) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for x in v {
                seq.serialize_element(x)?;
            }
            seq.end()
        }
        match self.0 {
            Elements::Bool(v) => all(s, v),
            Elements::U8(v) => all(s, v),
            Elements::U16(v) => all(s, v),
            Elements::U32(v) => all(s, v),
            Elements::U64(v) => all(s, v),
            Elements::I8(v) => all(s, v),
            Elements::I16(v) => all(s, v),
            Elements::I32(v) => all(s, v),
            Elements::I64(v) => all(s, v),
            Elements::F32(v) => all(s, v),
            Elements::F64(v) => all(s, v),
            other => all(s, &other.json_values()),
        }
    }
}

#[derive(Serialize)]
struct OutputHeader<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

#[derive(Serialize)]
struct ResponseHeader<'a> {
    model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutputHeader<'a>>,
}

/// An encoded response: the body, and the length of its JSON part if binary data follows it.
pub struct Encoded {
    pub body: Vec<u8>,
    pub header_length: Option<usize>,
}

/// About how many bytes [`encode`] makes of `outputs` (a JSON number is up to 24 characters),
/// to charge before it does.
pub fn encoded_size(outputs: &[InferTensor], binary: &BinaryOutputs) -> usize {
    outputs
        .iter()
        .map(|output| {
            let as_binary = binary.binary(&output.name)
                || matches!(output.datatype(), Datatype::Fp16 | Datatype::Bf16);
            if as_binary {
                output.data.le_size()
            } else {
                match &output.data {
                    Elements::Bytes(v) => v.iter().map(|item| 8 + 2 * item.len()).sum(),
                    other => other.len().saturating_mul(24),
                }
            }
        })
        .fold(0usize, usize::saturating_add)
}

/// Encodes a response; outputs chosen by `binary` go after the JSON as raw bytes.
pub fn encode(
    model_name: &str,
    model_version: Option<&str>,
    id: Option<&str>,
    outputs: &[InferTensor],
    binary: &BinaryOutputs,
) -> Encoded {
    let mut blobs = Vec::new();
    let headers = outputs
        .iter()
        .map(|output| {
            let datatype = output.datatype();
            // FP16 and BF16 cannot travel as JSON numbers: they always come back binary.
            let as_binary =
                binary.binary(&output.name) || matches!(datatype, Datatype::Fp16 | Datatype::Bf16);
            let (parameters, data) = if as_binary {
                let start = blobs.len();
                output.data.write_le_bytes(&mut blobs);
                (
                    Some(BinarySize {
                        binary_data_size: blobs.len() - start,
                    }),
                    None,
                )
            } else {
                (None, Some(JsonData(&output.data)))
            };
            OutputHeader {
                name: &output.name,
                datatype: datatype.name(),
                shape: &output.shape,
                parameters,
                data,
            }
        })
        .collect();
    let header = ResponseHeader {
        model_name,
        model_version,
        id,
        outputs: headers,
    };
    let mut body = serde_json::to_vec(&header).unwrap_or_default();
    if blobs.is_empty() {
        return Encoded {
            body,
            header_length: None,
        };
    }
    let header_length = body.len();
    body.extend_from_slice(&blobs);
    Encoded {
        body,
        header_length: Some(header_length),
    }
}

/// A V2 JSON reply written a chunk at a time while it is sent: the same bytes as [`encode`] for a
/// reply with no binary outputs, without holding its text whole (a large batch's outputs as JSON
/// numbers take several times their binary size).
pub struct ReplyText {
    /// The text before each output's data (ending in its `[`), and after the last
    /// (`outputs.len() + 1` pieces).
    pieces: Vec<Vec<u8>>,
    outputs: Vec<InferTensor>,
    /// What is being written: `2k` piece `k`, `2k + 1` output `k`'s data (from `element` on).
    at: usize,
    element: usize,
}

impl ReplyText {
    /// The reply of `outputs`, or the outputs back when one of them goes in binary form (asked
    /// for by `binary`, or FP16/BF16: [`encode`] writes those after the JSON).
    pub fn new(
        model_name: &str,
        model_version: Option<&str>,
        id: Option<&str>,
        outputs: Vec<InferTensor>,
        binary: &BinaryOutputs,
    ) -> Result<ReplyText, Vec<InferTensor>> {
        if outputs.iter().any(|o| {
            binary.binary(&o.name) || matches!(o.datatype(), Datatype::Fp16 | Datatype::Bf16)
        }) {
            return Err(outputs);
        }
        // `encode`'s keys in its order: the header without outputs, then each output's header
        // with its data last.
        let head = ResponseHeader {
            model_name,
            model_version,
            id,
            outputs: Vec::new(),
        };
        let mut piece = serde_json::to_vec(&head).unwrap_or_default();
        piece.truncate(piece.len().saturating_sub(br#"]}"#.len()));
        let mut pieces = Vec::with_capacity(outputs.len() + 1);
        for (i, output) in outputs.iter().enumerate() {
            if i > 0 {
                piece.extend_from_slice(b"},");
            }
            let header = OutputHeader {
                name: &output.name,
                datatype: output.datatype().name(),
                shape: &output.shape,
                parameters: None,
                data: None,
            };
            let mut text = serde_json::to_vec(&header).unwrap_or_default();
            text.pop();
            piece.extend_from_slice(&text);
            piece.extend_from_slice(br#","data":["#);
            pieces.push(std::mem::take(&mut piece));
        }
        if !outputs.is_empty() {
            piece.push(b'}');
        }
        piece.extend_from_slice(br#"]}"#);
        pieces.push(piece);
        Ok(ReplyText {
            pieces,
            outputs,
            at: 0,
            element: 0,
        })
    }

    /// The next chunk of at least `min` bytes (the last may be shorter); `None` when all is
    /// written.
    pub fn next_chunk(&mut self, min: usize) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(min + 256);
        while out.len() < min && self.at < 2 * self.pieces.len() - 1 {
            let index = self.at / 2;
            if self.at.is_multiple_of(2) {
                out.extend_from_slice(&self.pieces[index]);
                self.at += 1;
                continue;
            }
            let elements = &self.outputs[index].data;
            while self.element < elements.len() && out.len() < min {
                if self.element > 0 {
                    out.push(b',');
                }
                elements.write_json(self.element, &mut out);
                self.element += 1;
            }
            if self.element == elements.len() {
                out.push(b']');
                self.at += 1;
                self.element = 0;
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unlimited() -> Reservation {
        Reservation::new(crate::memory::MemoryPool::new(usize::MAX), usize::MAX)
    }
    use serde_json::json;

    fn decode_json(value: Value) -> Result<Decoded, Error> {
        decode(
            &serde_json::to_vec(&value).unwrap(),
            None,
            usize::MAX,
            &mut unlimited(),
            false,
        )
    }

    #[test]
    fn json_tensors_nested_or_flat() {
        for data in [json!([[1, 2], [3, 4.5]]), json!([1, 2, 3, 4.5])] {
            let d = decode_json(json!({
                "id": "r1",
                "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": data}],
            }))
            .unwrap();
            assert_eq!(d.id.as_deref(), Some("r1"));
            assert_eq!(d.inputs[0].shape, vec![2, 2]);
            assert_eq!(d.inputs[0].data, Elements::F32(vec![1.0, 2.0, 3.0, 4.5]));
            assert!(d.outputs.is_none());
        }
        let d = decode_json(json!({"inputs": [
            {"name": "b", "shape": [2], "datatype": "BOOL", "data": [true, false]},
            {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["hé"]},
            {"name": "u", "shape": [1], "datatype": "UINT64", "data": [18446744073709551615u64]},
            {"name": "i", "shape": [1], "datatype": "INT8", "data": [-128]},
        ]}))
        .unwrap();
        assert_eq!(d.inputs[0].data, Elements::Bool(vec![true, false]));
        assert_eq!(
            d.inputs[1].data,
            Elements::Bytes(vec!["hé".as_bytes().to_vec()])
        );
        assert_eq!(d.inputs[2].data, Elements::U64(vec![u64::MAX]));
        assert_eq!(d.inputs[3].data, Elements::I8(vec![-128]));
    }

    #[test]
    fn json_errors_name_the_input() {
        let cases = [
            (
                json!({"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [300]}]}),
                "INT8 data cannot hold an integer",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [1.5]}]}),
                "INT64 data cannot hold a number",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}),
                "FP32 data cannot hold a string",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}),
                "holds 3 elements but the data has 2",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1]}]}),
                "unknown datatype 'FLOAT'",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}),
                "negative dimension",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}),
                "neither data nor binary_data_size",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [{"a": 1}]}]}),
                "not a valid V2 inference request",
            ),
            (json!({"input": []}), "not a valid V2 inference request"),
        ];
        for (body, want) in cases {
            let e = decode_json(body.clone())
                .err()
                .unwrap_or_else(|| panic!("{body} decoded"));
            assert!(e.to_string().contains(want), "{body}: {e}");
            assert_eq!(e.kind(), "bad_request");
        }
    }

    fn binary_body(header: Value, blobs: &[&[u8]]) -> (Vec<u8>, String) {
        let mut body = serde_json::to_vec(&header).unwrap();
        let n = body.len();
        for b in blobs {
            body.extend_from_slice(b);
        }
        (body, n.to_string())
    }

    #[test]
    fn binary_inputs_follow_the_header_in_order() {
        let x: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let s = [3u8, 0, 0, 0, b'a', b'b', b'c'];
        let (body, n) = binary_body(
            json!({"inputs": [
                {"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
                {"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 7}},
            ], "outputs": [{"name": "y", "parameters": {"binary_data": true}}, {"name": "z"}],
               "parameters": {"binary_data_output": false, "priority": 1}}),
            &[&x, &s],
        );
        let d = decode(&body, Some(&n), usize::MAX, &mut unlimited(), false).unwrap();
        assert_eq!(d.inputs[0].data, Elements::F32(vec![1.0, 2.0]));
        assert_eq!(d.inputs[1].data, Elements::Bytes(vec![b"abc".to_vec()]));
        assert_eq!(d.outputs, Some(vec!["y".to_string(), "z".to_string()]));
        assert!(d.binary.binary("y"));
        assert!(!d.binary.binary("z"));
        assert_eq!(d.parameters.get("priority"), Some(&json!(1)));
        // Sizes that do not add up.
        let (body, n) = binary_body(
            json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}),
            &[&x[..6]],
        );
        assert!(
            decode(&body, Some(&n), usize::MAX, &mut unlimited(), false)
                .unwrap_err()
                .to_string()
                .contains("only 6 bytes")
        );
        let (body, n) = binary_body(
            json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}),
            &[&x, &[0]],
        );
        assert!(
            decode(&body, Some(&n), usize::MAX, &mut unlimited(), false)
                .unwrap_err()
                .to_string()
                .contains("1 bytes of binary data")
        );
        let (body, n) = binary_body(
            json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}),
            &[&x],
        );
        assert!(
            decode(&body, Some(&n), usize::MAX, &mut unlimited(), false)
                .unwrap_err()
                .to_string()
                .contains("holds 3 elements")
        );
        assert!(decode(&body, Some("99999"), usize::MAX, &mut unlimited(), false).is_err());
        assert!(decode(&body, Some("x"), usize::MAX, &mut unlimited(), false).is_err());
        assert!(
            decode(&body, Some("0"), usize::MAX, &mut unlimited(), false)
                .unwrap_err()
                .to_string()
                .contains("raw binary")
        );
    }

    #[test]
    fn responses_are_json_or_json_plus_bytes() {
        let outputs = vec![
            InferTensor {
                name: "label".into(),
                shape: vec![2],
                data: Elements::I64(vec![1, 0]),
            },
            InferTensor {
                name: "p".into(),
                shape: vec![2, 1],
                data: Elements::F32(vec![0.25, 0.5]),
            },
        ];
        let e = encode(
            "m",
            Some("2"),
            Some("r"),
            &outputs,
            &BinaryOutputs::default(),
        );
        assert!(e.header_length.is_none());
        let v: Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(
            v,
            json!({"model_name": "m", "model_version": "2", "id": "r", "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 0]},
                {"name": "p", "datatype": "FP32", "shape": [2, 1], "data": [0.25, 0.5]},
            ]})
        );
        let binary = BinaryOutputs {
            default: false,
            per_output: vec![("p".into(), true)],
        };
        let e = encode("m", None, None, &outputs, &binary);
        let n = e.header_length.unwrap();
        let v: Value = serde_json::from_slice(&e.body[..n]).unwrap();
        assert_eq!(v["outputs"][1]["parameters"]["binary_data_size"], 8);
        assert!(v["outputs"][1].get("data").is_none());
        assert!(v.get("model_version").is_none());
        assert_eq!(&e.body[n..], &[0, 0, 0x80, 0x3e, 0, 0, 0, 0x3f]);
    }

    /// A streamed reply is `encode`'s text, in chunks of any size, for every kind of output; a
    /// reply with a binary output is left to `encode`.
    #[test]
    fn a_streamed_reply_is_the_encoded_text() {
        let tensor = |name: &str, shape: Vec<usize>, data: Elements| InferTensor {
            name: name.into(),
            shape,
            data,
        };
        let outputs = vec![
            tensor(
                "p",
                vec![2, 3],
                Elements::F32(vec![0.5, 0.25, f32::NAN, 1e-7, 3.0, -0.0]),
            ),
            tensor("label", vec![2], Elements::I64(vec![1, -7])),
            tensor(
                "text",
                vec![2],
                Elements::Bytes(vec![b"caf\xc3\xa9".to_vec(), vec![0xff]]),
            ),
            tensor("flag", vec![1], Elements::Bool(vec![true])),
            tensor("none", vec![0], Elements::F64(vec![])),
        ];
        let json = BinaryOutputs::default();
        for (id, version, outputs) in [
            (Some("r\"1"), Some("2"), outputs.clone()),
            (None, None, outputs[..1].to_vec()),
            (None, None, vec![]),
        ] {
            let whole = encode("m", version, id, &outputs, &json);
            assert_eq!(whole.header_length, None);
            for min in [1, 7, 1 << 20] {
                let mut text = ReplyText::new("m", version, id, outputs.clone(), &json).unwrap();
                let mut streamed = Vec::new();
                while let Some(chunk) = text.next_chunk(min) {
                    streamed.extend(chunk);
                }
                assert_eq!(
                    String::from_utf8_lossy(&streamed),
                    String::from_utf8_lossy(&whole.body),
                    "chunks of {min}"
                );
            }
        }
        let binary = BinaryOutputs {
            default: true,
            per_output: vec![],
        };
        assert!(ReplyText::new("m", None, None, outputs, &binary).is_err());
    }
}
