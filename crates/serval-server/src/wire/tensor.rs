//! Tensors as the Open Inference Protocol carries them: every V2 datatype, named, with a shape.
//! Both V2 adapters (REST and gRPC) and the forward runner decode into these and encode from
//! them; endpoints check them against their `Signature` and convert them to engine tensors or to
//! the JSON a Python endpoint's `preprocess` receives.

use serde_json::{Value, json};
use serval_engine::tensor::{json, le};
use serval_engine::{NamedOutput, OutputValue, Tensor, TensorData};

use crate::error::Error;

pub use serval_engine::Datatype;

/// The datatype a request gives for `input`; an unknown name is the client's error.
pub fn datatype_of_input(input: &str, name: &str) -> Result<Datatype, Error> {
    Datatype::parse(name).ok_or_else(|| {
        Error::BadRequest(format!(
            "input '{input}': unknown datatype '{name}' (one of BOOL, UINT8..UINT64, INT8..INT64, FP16, BF16, FP32, FP64, BYTES)"
        ))
    })
}

/// The elements of a tensor, row-major. FP16 and BF16 keep their bit patterns.
#[derive(Debug, Clone, PartialEq)]
pub enum Elements {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F16(Vec<u16>),
    Bf16(Vec<u16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

/// Applies `$body` to the vector inside any [`Elements`] variant.
macro_rules! each_variant {
    ($elements:expr, $v:ident => $body:expr) => {
        match $elements {
            Elements::Bool($v) => $body,
            Elements::U8($v) => $body,
            Elements::U16($v) => $body,
            Elements::U32($v) => $body,
            Elements::U64($v) => $body,
            Elements::I8($v) => $body,
            Elements::I16($v) => $body,
            Elements::I32($v) => $body,
            Elements::I64($v) => $body,
            Elements::F16($v) => $body,
            Elements::Bf16($v) => $body,
            Elements::F32($v) => $body,
            Elements::F64($v) => $body,
            Elements::Bytes($v) => $body,
        }
    };
}

impl Elements {
    pub fn datatype(&self) -> Datatype {
        match self {
            Elements::Bool(_) => Datatype::Bool,
            Elements::U8(_) => Datatype::Uint8,
            Elements::U16(_) => Datatype::Uint16,
            Elements::U32(_) => Datatype::Uint32,
            Elements::U64(_) => Datatype::Uint64,
            Elements::I8(_) => Datatype::Int8,
            Elements::I16(_) => Datatype::Int16,
            Elements::I32(_) => Datatype::Int32,
            Elements::I64(_) => Datatype::Int64,
            Elements::F16(_) => Datatype::Fp16,
            Elements::Bf16(_) => Datatype::Bf16,
            Elements::F32(_) => Datatype::Fp32,
            Elements::F64(_) => Datatype::Fp64,
            Elements::Bytes(_) => Datatype::Bytes,
        }
    }

    pub fn len(&self) -> usize {
        each_variant!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes the binary form: little-endian, row-major; BOOL one byte each; each BYTES element
    /// a 4-byte little-endian length and its bytes. `what` names the tensor in errors.
    pub fn from_le_bytes(datatype: Datatype, bytes: &[u8], what: &str) -> Result<Elements, Error> {
        if let Some(size) = datatype.size()
            && !bytes.len().is_multiple_of(size)
        {
            return Err(Error::BadRequest(format!(
                "{what}: {} bytes is not a whole number of {datatype} elements ({size} bytes each)",
                bytes.len()
            )));
        }
        Ok(match datatype {
            Datatype::Bool => Elements::Bool(bytes.iter().map(|b| *b != 0).collect()),
            Datatype::Uint8 => Elements::U8(bytes.to_vec()),
            Datatype::Uint16 => Elements::U16(le::decode(bytes)),
            Datatype::Uint32 => Elements::U32(le::decode(bytes)),
            Datatype::Uint64 => Elements::U64(le::decode(bytes)),
            Datatype::Int8 => Elements::I8(le::decode(bytes)),
            Datatype::Int16 => Elements::I16(le::decode(bytes)),
            Datatype::Int32 => Elements::I32(le::decode(bytes)),
            Datatype::Int64 => Elements::I64(le::decode(bytes)),
            Datatype::Fp16 => Elements::F16(le::decode(bytes)),
            Datatype::Bf16 => Elements::Bf16(le::decode(bytes)),
            Datatype::Fp32 => Elements::F32(le::decode(bytes)),
            Datatype::Fp64 => Elements::F64(le::decode(bytes)),
            Datatype::Bytes => {
                let mut items = Vec::new();
                let mut rest = bytes;
                while !rest.is_empty() {
                    let (len, tail) = rest
                        .split_first_chunk::<4>()
                        .map(|(l, t)| (u32::from_le_bytes(*l) as usize, t))
                        .ok_or_else(|| {
                            Error::BadRequest(format!(
                                "{what}: a BYTES element is cut off inside its 4-byte length"
                            ))
                        })?;
                    if tail.len() < len {
                        return Err(Error::BadRequest(format!(
                            "{what}: a BYTES element of {len} bytes runs past the end of the data"
                        )));
                    }
                    items.push(tail[..len].to_vec());
                    rest = &tail[len..];
                }
                Elements::Bytes(items)
            }
        })
    }

    /// How many elements the binary form `bytes` holds and how many bytes decoding it makes,
    /// without decoding it: for BYTES the length prefixes are walked (each element costs its
    /// `Vec` as well as its bytes); a malformed form counts what precedes the fault (decoding
    /// reports it).
    pub fn size_of_le_bytes(datatype: Datatype, bytes: &[u8]) -> (usize, usize) {
        if let Some(size) = datatype.size() {
            return (bytes.len() / size, bytes.len());
        }
        let mut count = 0usize;
        let mut rest = bytes;
        while let Some((len, tail)) = rest.split_first_chunk::<4>() {
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len {
                break;
            }
            count += 1;
            rest = &tail[len..];
        }
        let made = count
            .saturating_mul(std::mem::size_of::<Vec<u8>>())
            .saturating_add(bytes.len());
        (count, made)
    }

    /// Bytes of the binary form (see [`Elements::write_le_bytes`]).
    pub fn le_size(&self) -> usize {
        match self {
            Elements::Bytes(v) => v.iter().map(|item| 4 + item.len()).sum(),
            other => other.len() * other.datatype().size().unwrap_or(0),
        }
    }

    /// Appends the binary form (see [`Elements::from_le_bytes`]) to `out`.
    pub fn write_le_bytes(&self, out: &mut Vec<u8>) {
        match self {
            Elements::Bool(v) => out.extend(v.iter().map(|b| u8::from(*b))),
            Elements::U8(v) => out.extend_from_slice(v),
            Elements::U16(v) | Elements::F16(v) | Elements::Bf16(v) => le::encode(v, out),
            Elements::U32(v) => le::encode(v, out),
            Elements::U64(v) => le::encode(v, out),
            Elements::I8(v) => le::encode(v, out),
            Elements::I16(v) => le::encode(v, out),
            Elements::I32(v) => le::encode(v, out),
            Elements::I64(v) => le::encode(v, out),
            Elements::F32(v) => le::encode(v, out),
            Elements::F64(v) => le::encode(v, out),
            Elements::Bytes(v) => {
                for item in v {
                    out.extend_from_slice(&(item.len() as u32).to_le_bytes());
                    out.extend_from_slice(item);
                }
            }
        }
    }

    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_le_bytes(&mut out);
        out
    }

    /// Writes element `i` as JSON, as [`Elements::json_values`] and a reply's `data` have it.
    pub fn write_json(&self, i: usize, out: &mut Vec<u8>) {
        fn float(x: f64) -> Option<f64> {
            x.is_finite().then_some(x)
        }
        // Writing to a Vec cannot fail.
        let _ = match self {
            Elements::Bool(v) => serde_json::to_writer(&mut *out, &v[i]),
            Elements::U8(v) => serde_json::to_writer(&mut *out, &v[i]),
            Elements::U16(v) => serde_json::to_writer(&mut *out, &v[i]),
            Elements::U32(v) => serde_json::to_writer(&mut *out, &v[i]),
            Elements::U64(v) => serde_json::to_writer(&mut *out, &v[i]),
            Elements::I8(v) => serde_json::to_writer(&mut *out, &v[i]),
            Elements::I16(v) => serde_json::to_writer(&mut *out, &v[i]),
            Elements::I32(v) => serde_json::to_writer(&mut *out, &v[i]),
            Elements::I64(v) => serde_json::to_writer(&mut *out, &v[i]),
            Elements::F32(v) => serde_json::to_writer(&mut *out, &v[i]),
            Elements::F64(v) => serde_json::to_writer(&mut *out, &v[i]),
            Elements::F16(v) => {
                let x = f64::from(half::f16::from_bits(v[i]));
                serde_json::to_writer(&mut *out, &float(x))
            }
            Elements::Bf16(v) => {
                let x = f64::from(half::bf16::from_bits(v[i]));
                serde_json::to_writer(&mut *out, &float(x))
            }
            Elements::Bytes(v) => match std::str::from_utf8(&v[i]) {
                Ok(text) => serde_json::to_writer(&mut *out, text),
                Err(_) => serde_json::to_writer(&mut *out, &v[i]),
            },
        };
    }

    /// The elements as flat JSON values (FP16/BF16 as numbers, BYTES as text when it is UTF-8,
    /// else as a list of byte values; NaN and infinities as `null`).
    pub fn json_values(&self) -> Vec<Value> {
        fn float(x: f64) -> Value {
            serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
        }
        match self {
            Elements::Bool(v) => v.iter().map(|x| json!(x)).collect(),
            Elements::U8(v) => v.iter().map(|x| json!(x)).collect(),
            Elements::U16(v) => v.iter().map(|x| json!(x)).collect(),
            Elements::U32(v) => v.iter().map(|x| json!(x)).collect(),
            Elements::U64(v) => v.iter().map(|x| json!(x)).collect(),
            Elements::I8(v) => v.iter().map(|x| json!(x)).collect(),
            Elements::I16(v) => v.iter().map(|x| json!(x)).collect(),
            Elements::I32(v) => v.iter().map(|x| json!(x)).collect(),
            Elements::I64(v) => v.iter().map(|x| json!(x)).collect(),
            Elements::F16(v) => v
                .iter()
                .map(|x| float(f64::from(half::f16::from_bits(*x))))
                .collect(),
            Elements::Bf16(v) => v
                .iter()
                .map(|x| float(f64::from(half::bf16::from_bits(*x))))
                .collect(),
            Elements::F32(v) => v.iter().map(|x| float(f64::from(*x))).collect(),
            Elements::F64(v) => v.iter().map(|x| float(*x)).collect(),
            Elements::Bytes(v) => v
                .iter()
                .map(|b| match std::str::from_utf8(b) {
                    Ok(text) => Value::String(text.to_string()),
                    Err(_) => json!(b),
                })
                .collect(),
        }
    }
}

/// A named tensor of a V2 request or response.
#[derive(Debug, Clone, PartialEq)]
pub struct InferTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Elements,
}

/// The most dimensions a tensor may have (ONNX Runtime's and numpy's own limits are 64 and 32
/// respectively). Checked before anything walks a shape: a nested-list form of a 10,000-dimension
/// tensor is 10,000 levels deep.
pub const MAX_RANK: usize = 32;

fn check_rank(input: &str, rank: usize) -> Result<(), Error> {
    if rank > MAX_RANK {
        return Err(Error::BadRequest(format!(
            "input '{input}': shape has {rank} dimensions; at most {MAX_RANK} are accepted"
        )));
    }
    Ok(())
}

/// The shape a request gives for `input`; a negative dimension or more than [`MAX_RANK`]
/// dimensions is the client's error.
pub fn shape_of(input: &str, dims: &[i64]) -> Result<Vec<usize>, Error> {
    check_rank(input, dims.len())?;
    dims.iter()
        .map(|d| usize::try_from(*d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            Error::BadRequest(format!(
                "input '{input}': shape {dims:?} has a negative dimension"
            ))
        })
}

/// The number of elements a shape holds (`None` on overflow).
fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d))
}

impl InferTensor {
    /// Builds a tensor, checking that the data holds exactly the shape's elements.
    pub fn new(name: String, shape: Vec<usize>, data: Elements) -> Result<InferTensor, Error> {
        check_rank(&name, shape.len())?;
        let expected = element_count(&shape);
        if expected != Some(data.len()) {
            return Err(Error::BadRequest(format!(
                "input '{name}': shape {shape:?} holds {} elements but the data has {}",
                expected.map_or_else(|| "too many".to_string(), |n| n.to_string()),
                data.len()
            )));
        }
        Ok(InferTensor { name, shape, data })
    }

    pub fn datatype(&self) -> Datatype {
        self.data.datatype()
    }

    /// The tensor as nested JSON lists (what a Python endpoint's `preprocess` receives).
    pub fn to_json(&self) -> Value {
        json::nest(&self.shape, self.data.json_values())
    }

    /// The engine tensor for this input. The caller has checked that the engine takes the
    /// datatype (BYTES becomes text and must be UTF-8).
    pub fn into_engine(self) -> Result<serval_engine::NamedTensor, Error> {
        let data = match self.data {
            Elements::F32(v) => TensorData::F32(v),
            Elements::F64(v) => TensorData::F64(v),
            Elements::I64(v) => TensorData::I64(v),
            Elements::I32(v) => TensorData::I32(v),
            Elements::Bool(v) => TensorData::Bool(v),
            Elements::Bytes(v) => TensorData::String(
                v.into_iter()
                    .map(|b| {
                        String::from_utf8(b).map_err(|_| {
                            Error::BadRequest(format!(
                                "input '{}': this model takes text and an element is not UTF-8",
                                self.name
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => {
                return Err(Error::BadRequest(format!(
                    "input '{}': the model does not take {} data",
                    self.name,
                    other.datatype()
                )));
            }
        };
        let tensor = Tensor::new(self.shape, data).map_err(|e| Error::BadRequest(e.to_string()))?;
        Ok(serval_engine::NamedTensor {
            name: self.name,
            tensor,
        })
    }

    /// An engine output as a V2 tensor. ZipMap outputs (one map per row) become FP32
    /// `[rows, classes]` in class order.
    pub fn from_engine(output: NamedOutput) -> Result<InferTensor, Error> {
        let (shape, data) = match output.value {
            OutputValue::Tensor(tensor) => {
                let shape = tensor.shape().to_vec();
                let data = match tensor.into_data() {
                    TensorData::F32(v) => Elements::F32(v),
                    TensorData::F64(v) => Elements::F64(v),
                    TensorData::I64(v) => Elements::I64(v),
                    TensorData::I32(v) => Elements::I32(v),
                    TensorData::Bool(v) => Elements::Bool(v),
                    TensorData::String(v) => {
                        Elements::Bytes(v.into_iter().map(String::into_bytes).collect())
                    }
                };
                (shape, data)
            }
            OutputValue::Maps(rows) => {
                let k = rows.first().map_or(0, Vec::len);
                if rows.iter().any(|r| r.len() != k) {
                    return Err(Error::Internal(format!(
                        "output '{}': rows have different numbers of classes",
                        output.name
                    )));
                }
                let data = rows.iter().flatten().map(|(_, p)| *p).collect();
                (vec![rows.len(), k], Elements::F32(data))
            }
        };
        Ok(InferTensor {
            name: output.name,
            shape,
            data,
        })
    }

    /// An output of a Python endpoint from what `postprocess` returned: nested lists of numbers
    /// (INT64 when every number is an integer, else FP64; `null` is NaN), of booleans (BOOL) or of
    /// strings (BYTES), shaped by the nesting; `declared` (the endpoint's `--output-type`) casts
    /// numbers. Anything else (objects, ragged or mixed lists) is one BYTES element holding the
    /// value's JSON text.
    pub fn from_json(name: String, value: &Value, declared: Option<Datatype>) -> InferTensor {
        let json_text = |value: &Value| InferTensor {
            name: name.clone(),
            shape: vec![1],
            data: Elements::Bytes(vec![value.to_string().into_bytes()]),
        };
        let Some((shape, leaves)) = serval_core::shape_and_leaves(value) else {
            return json_text(value);
        };
        let data = if leaves.iter().all(|v| v.is_boolean()) && !leaves.is_empty() {
            Elements::Bool(leaves.iter().filter_map(|v| v.as_bool()).collect())
        } else if leaves.iter().all(|v| v.is_string()) && !leaves.is_empty() {
            Elements::Bytes(
                leaves
                    .iter()
                    .filter_map(|v| v.as_str())
                    .map(|s| s.as_bytes().to_vec())
                    .collect(),
            )
        } else if leaves.iter().all(|v| v.is_number() || v.is_null()) {
            let integers = leaves.iter().all(|v| v.is_i64());
            match (declared, integers) {
                (Some(d), _) if d != Datatype::Bytes && d != Datatype::Bool => {
                    match cast_numbers(&leaves, d) {
                        Some(data) => data,
                        None => return json_text(value),
                    }
                }
                (_, true) => Elements::I64(leaves.iter().filter_map(|v| v.as_i64()).collect()),
                (_, false) => Elements::F64(
                    leaves
                        .iter()
                        .map(|v| v.as_f64().unwrap_or(f64::NAN))
                        .collect(),
                ),
            }
        } else {
            return json_text(value);
        };
        InferTensor { name, shape, data }
    }
}

/// Numbers cast to a numeric datatype (`None` if one does not fit an integer type).
fn cast_numbers(leaves: &[&Value], datatype: Datatype) -> Option<Elements> {
    let floats = || -> Vec<f64> {
        leaves
            .iter()
            .map(|v| v.as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    fn ints<T: TryFrom<i64>>(leaves: &[&Value]) -> Option<Vec<T>> {
        leaves
            .iter()
            .map(|v| v.as_i64().and_then(|i| T::try_from(i).ok()))
            .collect()
    }
    Some(match datatype {
        Datatype::Fp32 => Elements::F32(floats().into_iter().map(|x| x as f32).collect()),
        Datatype::Fp64 => Elements::F64(floats()),
        Datatype::Fp16 => Elements::F16(
            floats()
                .into_iter()
                .map(|x| half::f16::from_f64(x).to_bits())
                .collect(),
        ),
        Datatype::Bf16 => Elements::Bf16(
            floats()
                .into_iter()
                .map(|x| half::bf16::from_f64(x).to_bits())
                .collect(),
        ),
        Datatype::Int8 => Elements::I8(ints(leaves)?),
        Datatype::Int16 => Elements::I16(ints(leaves)?),
        Datatype::Int32 => Elements::I32(ints(leaves)?),
        Datatype::Int64 => Elements::I64(ints(leaves)?),
        Datatype::Uint8 => Elements::U8(ints(leaves)?),
        Datatype::Uint16 => Elements::U16(ints(leaves)?),
        Datatype::Uint32 => Elements::U32(ints(leaves)?),
        Datatype::Uint64 => Elements::U64(
            leaves
                .iter()
                .map(|v| v.as_u64())
                .collect::<Option<Vec<_>>>()?,
        ),
        Datatype::Bool | Datatype::Bytes => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_form_round_trips_every_datatype() {
        let cases = vec![
            Elements::Bool(vec![true, false]),
            Elements::U8(vec![0, 255]),
            Elements::U16(vec![1, 65535]),
            Elements::U32(vec![7, u32::MAX]),
            Elements::U64(vec![u64::MAX]),
            Elements::I8(vec![-128, 5]),
            Elements::I16(vec![-2, 300]),
            Elements::I32(vec![i32::MIN]),
            Elements::I64(vec![-1, i64::MAX]),
            Elements::F16(vec![half::f16::from_f32(1.5).to_bits()]),
            Elements::Bf16(vec![half::bf16::from_f32(-2.0).to_bits()]),
            Elements::F32(vec![0.1, f32::NAN.copysign(1.0)]),
            Elements::F64(vec![1e300]),
            Elements::Bytes(vec![b"ab".to_vec(), vec![], vec![0, 255]]),
        ];
        for elements in cases {
            let bytes = elements.to_le_bytes();
            let back = Elements::from_le_bytes(elements.datatype(), &bytes, "t").unwrap();
            // NaN != NaN: compare the encodings.
            assert_eq!(back.to_le_bytes(), bytes, "{:?}", elements.datatype());
            assert_eq!(back.datatype(), elements.datatype());
        }
        assert_eq!(
            Elements::from_le_bytes(Datatype::Bytes, &[2, 0, 0, 0, b'a', b'b'], "t").unwrap(),
            Elements::Bytes(vec![b"ab".to_vec()])
        );
    }

    #[test]
    fn truncated_binary_data_is_the_clients_error() {
        let e = Elements::from_le_bytes(Datatype::Fp32, &[0; 6], "x").unwrap_err();
        assert!(e.to_string().contains("6 bytes"), "{e}");
        assert!(Elements::from_le_bytes(Datatype::Bytes, &[5, 0, 0, 0, 1], "x").is_err());
        assert!(Elements::from_le_bytes(Datatype::Bytes, &[5, 0], "x").is_err());
    }

    #[test]
    fn shapes_must_hold_the_data() {
        let ok = InferTensor::new("x".into(), vec![2, 2], Elements::F32(vec![0.0; 4]));
        assert!(ok.is_ok());
        let e = InferTensor::new("x".into(), vec![2, 3], Elements::F32(vec![0.0; 4])).unwrap_err();
        assert!(e.to_string().contains("holds 6 elements"), "{e}");
        assert!(InferTensor::new("x".into(), vec![usize::MAX, 3], Elements::F32(vec![])).is_err());
        let deep = InferTensor::new("x".into(), vec![1; MAX_RANK + 1], Elements::F32(vec![0.0]));
        assert!(deep.unwrap_err().to_string().contains("at most 32"));
        assert!(InferTensor::new("x".into(), vec![1; MAX_RANK], Elements::F32(vec![0.0])).is_ok());
    }

    #[test]
    fn postprocess_values_become_typed_tensors() {
        let t = InferTensor::from_json("y".into(), &json!([[1, 2], [3, 4]]), None);
        assert_eq!(
            (t.shape.clone(), t.data),
            (vec![2, 2], Elements::I64(vec![1, 2, 3, 4]))
        );
        let t = InferTensor::from_json("y".into(), &json!([0.5, null]), None);
        assert_eq!(t.shape, vec![2]);
        assert!(matches!(&t.data, Elements::F64(v) if v[0] == 0.5 && v[1].is_nan()));
        let t = InferTensor::from_json("y".into(), &json!(["a", "b"]), None);
        assert_eq!(t.data, Elements::Bytes(vec![b"a".to_vec(), b"b".to_vec()]));
        let t = InferTensor::from_json("y".into(), &json!(7), None);
        assert_eq!((t.shape.clone(), t.data), (vec![], Elements::I64(vec![7])));
        let t = InferTensor::from_json("y".into(), &json!([1, 2]), Some(Datatype::Fp32));
        assert_eq!(t.data, Elements::F32(vec![1.0, 2.0]));
        // Objects and ragged lists travel as JSON text.
        let t = InferTensor::from_json("y".into(), &json!({"a": 1}), None);
        assert_eq!(
            (t.shape.clone(), t.data),
            (vec![1], Elements::Bytes(vec![br#"{"a":1}"#.to_vec()]))
        );
        let t = InferTensor::from_json("y".into(), &json!([[1], [2, 3]]), None);
        assert_eq!(t.datatype(), Datatype::Bytes);
    }
}
