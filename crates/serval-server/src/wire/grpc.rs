//! V2 gRPC messages ↔ the pipeline's tensors: typed `contents` or `raw_input_contents` in,
//! `raw_output_contents` out (as Triton answers, and as tritonclient reads).

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::proto::infer_parameter::ParameterChoice;
use super::proto::model_infer_request::InferInputTensor;
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::{InferParameter, InferTensorContents, ModelInferRequest};
use crate::error::Error;
use crate::memory::Reservation;
use crate::wire::tensor::datatype_of_input;
use crate::wire::{Datatype, Elements, InferTensor, shape_of};

fn bad(message: String) -> Error {
    Error::BadRequest(message)
}

/// Which `contents` field carries a datatype (FP16 and BF16 have none: raw only).
fn field_of(datatype: Datatype) -> Option<&'static str> {
    Some(match datatype {
        Datatype::Bool => "bool_contents",
        Datatype::Int8 | Datatype::Int16 | Datatype::Int32 => "int_contents",
        Datatype::Int64 => "int64_contents",
        Datatype::Uint8 | Datatype::Uint16 | Datatype::Uint32 => "uint_contents",
        Datatype::Uint64 => "uint64_contents",
        Datatype::Fp32 => "fp32_contents",
        Datatype::Fp64 => "fp64_contents",
        Datatype::Bytes => "bytes_contents",
        Datatype::Fp16 | Datatype::Bf16 => return None,
    })
}

/// The fields of `contents` that hold data.
fn filled(c: &InferTensorContents) -> Vec<&'static str> {
    [
        ("bool_contents", c.bool_contents.is_empty()),
        ("int_contents", c.int_contents.is_empty()),
        ("int64_contents", c.int64_contents.is_empty()),
        ("uint_contents", c.uint_contents.is_empty()),
        ("uint64_contents", c.uint64_contents.is_empty()),
        ("fp32_contents", c.fp32_contents.is_empty()),
        ("fp64_contents", c.fp64_contents.is_empty()),
        ("bytes_contents", c.bytes_contents.is_empty()),
    ]
    .into_iter()
    .filter(|(_, empty)| !empty)
    .map(|(name, _)| name)
    .collect()
}

fn narrow<S: Copy, T: TryFrom<S>>(
    name: &str,
    datatype: Datatype,
    v: Vec<S>,
) -> Result<Vec<T>, Error> {
    v.into_iter()
        .map(|x| {
            T::try_from(x)
                .map_err(|_| bad(format!("input '{name}': a value does not fit {datatype}")))
        })
        .collect()
}

/// Typed `contents` as elements of `datatype` (also for the outputs of an upstream server).
pub(crate) fn contents_elements(
    name: &str,
    datatype: Datatype,
    contents: InferTensorContents,
) -> Result<Elements, Error> {
    let raw_only = || {
        bad(format!(
            "input '{name}': {datatype} data must be sent in raw_input_contents"
        ))
    };
    let field = field_of(datatype).ok_or_else(raw_only)?;
    if let Some(other) = filled(&contents).into_iter().find(|f| *f != field) {
        return Err(bad(format!(
            "input '{name}' is {datatype}, whose data goes in {field}, not {other}"
        )));
    }
    let c = contents;
    Ok(match datatype {
        Datatype::Bool => Elements::Bool(c.bool_contents),
        Datatype::Int8 => Elements::I8(narrow(name, datatype, c.int_contents)?),
        Datatype::Int16 => Elements::I16(narrow(name, datatype, c.int_contents)?),
        Datatype::Int32 => Elements::I32(c.int_contents),
        Datatype::Int64 => Elements::I64(c.int64_contents),
        Datatype::Uint8 => Elements::U8(narrow(name, datatype, c.uint_contents)?),
        Datatype::Uint16 => Elements::U16(narrow(name, datatype, c.uint_contents)?),
        Datatype::Uint32 => Elements::U32(c.uint_contents),
        Datatype::Uint64 => Elements::U64(c.uint64_contents),
        Datatype::Fp32 => Elements::F32(c.fp32_contents),
        Datatype::Fp64 => Elements::F64(c.fp64_contents),
        Datatype::Bytes => {
            Elements::Bytes(c.bytes_contents.into_iter().map(|b| b.to_vec()).collect())
        }
        Datatype::Fp16 | Datatype::Bf16 => return Err(raw_only()),
    })
}

fn input(tensor: InferInputTensor, raw: Option<&Bytes>) -> Result<InferTensor, Error> {
    let name = tensor.name;
    let datatype = datatype_of_input(&name, &tensor.datatype)?;
    let shape = shape_of(&name, &tensor.shape)?;
    let data = match (raw, tensor.contents) {
        (Some(bytes), contents) => {
            if contents.as_ref().is_some_and(|c| !filled(c).is_empty()) {
                return Err(bad(format!(
                    "input '{name}' has both contents and raw_input_contents"
                )));
            }
            Elements::from_le_bytes(datatype, bytes, &format!("input '{name}'"))?
        }
        (None, Some(contents)) => contents_elements(&name, datatype, contents)?,
        (None, None) => contents_elements(&name, datatype, InferTensorContents::default())?,
    };
    InferTensor::new(name, shape, data)
}

/// A request's parameters as JSON values.
fn parameters(parameters: HashMap<String, InferParameter>) -> Map<String, Value> {
    parameters
        .into_iter()
        .filter_map(|(key, p)| {
            let value = match p.parameter_choice? {
                ParameterChoice::BoolParam(b) => Value::from(b),
                ParameterChoice::Int64Param(i) => Value::from(i),
                ParameterChoice::StringParam(s) => Value::from(s),
                ParameterChoice::DoubleParam(d) => Value::from(d),
                ParameterChoice::Uint64Param(u) => Value::from(u),
            };
            Some((key, value))
        })
        .collect()
}

/// What a request asks: its inputs, the names of the outputs it wants (`None`: all) and its
/// parameters.
#[derive(Debug)]
pub struct Decoded {
    pub inputs: Vec<InferTensor>,
    pub outputs: Option<Vec<String>>,
    pub parameters: Map<String, Value>,
}

/// Decodes a request's inputs, requested outputs and parameters. Raw contents are counted
/// against `max_values` and charged to `memory` before they are decoded (a BYTES element of
/// zero length is 4 bytes on the wire and a 24-byte `Vec` decoded).
pub fn request(
    request: ModelInferRequest,
    max_values: usize,
    memory: &mut Reservation,
) -> Result<Decoded, Error> {
    let raw = request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(bad(format!(
            "raw_input_contents has {} entries for {} inputs (one per input, in order)",
            raw.len(),
            request.inputs.len()
        )));
    }
    let mut values = 0usize;
    for (tensor, bytes) in request.inputs.iter().zip(&raw) {
        let Some(datatype) = Datatype::parse(&tensor.datatype) else {
            continue;
        };
        let (count, made) = Elements::size_of_le_bytes(datatype, bytes);
        values = values.saturating_add(count);
        if values > max_values {
            return Err(Error::TooManyValues(max_values));
        }
        memory.charge(made)?;
    }
    let inputs = request
        .inputs
        .into_iter()
        .enumerate()
        .map(|(i, tensor)| input(tensor, raw.get(i)))
        .collect::<Result<Vec<_>, _>>()?;
    for output in &request.outputs {
        let classification =
            output
                .parameters
                .get("classification")
                .and_then(|p| match &p.parameter_choice {
                    Some(ParameterChoice::Int64Param(n)) => Some(*n),
                    _ => None,
                });
        if classification.is_some_and(|n| n != 0) {
            return Err(bad(format!(
                "output '{}': the classification extension is not supported",
                output.name
            )));
        }
    }
    let outputs = (!request.outputs.is_empty())
        .then(|| request.outputs.into_iter().map(|o| o.name).collect());
    Ok(Decoded {
        inputs,
        outputs,
        parameters: parameters(request.parameters),
    })
}

/// Output tensors and their raw contents, in the same order.
pub fn outputs(tensors: Vec<InferTensor>) -> (Vec<InferOutputTensor>, Vec<Bytes>) {
    tensors
        .into_iter()
        .map(|t| {
            let raw = Bytes::from(t.data.to_le_bytes());
            let meta = InferOutputTensor {
                name: t.name,
                datatype: t.data.datatype().name().to_string(),
                shape: t.shape.iter().map(|d| *d as i64).collect(),
                parameters: Default::default(),
                contents: None,
            };
            (meta, raw)
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unlimited() -> Reservation {
        Reservation::new(crate::memory::MemoryPool::new(usize::MAX), usize::MAX)
    }

    fn tensor(
        name: &str,
        datatype: &str,
        shape: Vec<i64>,
        contents: Option<InferTensorContents>,
    ) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            parameters: Default::default(),
            contents,
        }
    }

    #[test]
    fn typed_contents_and_raw_contents() {
        let typed = ModelInferRequest {
            inputs: vec![tensor(
                "x",
                "INT16",
                vec![2],
                Some(InferTensorContents {
                    int_contents: vec![-3, 300],
                    ..Default::default()
                }),
            )],
            ..Default::default()
        };
        let decoded = request(typed, usize::MAX, &mut unlimited()).unwrap();
        assert_eq!(decoded.inputs[0].data, Elements::I16(vec![-3, 300]));
        assert!(decoded.outputs.is_none());

        let raw: Vec<u8> = [1.5f32, 2.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        let raw_request = ModelInferRequest {
            inputs: vec![tensor("x", "FP32", vec![1, 2], None)],
            raw_input_contents: vec![Bytes::from(raw)],
            ..Default::default()
        };
        let decoded = request(raw_request, usize::MAX, &mut unlimited()).unwrap();
        assert_eq!(decoded.inputs[0].data, Elements::F32(vec![1.5, 2.5]));
    }

    #[test]
    fn contents_errors_are_the_clients() {
        let cases = [
            (
                tensor(
                    "x",
                    "INT8",
                    vec![1],
                    Some(InferTensorContents {
                        int_contents: vec![999],
                        ..Default::default()
                    }),
                ),
                "does not fit INT8",
            ),
            (
                tensor(
                    "x",
                    "FP32",
                    vec![1],
                    Some(InferTensorContents {
                        fp64_contents: vec![1.0],
                        ..Default::default()
                    }),
                ),
                "not fp64_contents",
            ),
            (tensor("x", "FP16", vec![1], None), "raw_input_contents"),
            (
                tensor(
                    "x",
                    "FP32",
                    vec![2],
                    Some(InferTensorContents {
                        fp32_contents: vec![1.0],
                        ..Default::default()
                    }),
                ),
                "holds 2 elements",
            ),
            (tensor("x", "NOPE", vec![1], None), "unknown datatype"),
            (tensor("x", "FP32", vec![-1], None), "negative dimension"),
        ];
        for (input, want) in cases {
            let e = request(
                ModelInferRequest {
                    inputs: vec![input],
                    ..Default::default()
                },
                usize::MAX,
                &mut unlimited(),
            )
            .unwrap_err();
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
        let mismatch = ModelInferRequest {
            inputs: vec![
                tensor("x", "FP32", vec![1], None),
                tensor("y", "FP32", vec![1], None),
            ],
            raw_input_contents: vec![Bytes::from_static(&[0, 0, 0, 0])],
            ..Default::default()
        };
        assert!(
            request(mismatch, usize::MAX, &mut unlimited())
                .unwrap_err()
                .to_string()
                .contains("1 entries for 2 inputs")
        );
    }
}
