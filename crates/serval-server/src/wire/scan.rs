//! A `ModelInferRequest` read before it is decoded: its model name and version (for the key's
//! scope and the routing table) and what decoding it would build, from its fields' counts and
//! lengths alone — so that a small message that decodes into gigabytes (millions of empty
//! `inputs` entries, say) is refused before anything is allocated.
//!
//! A linear walk over protobuf's wire format with a fixed depth: the request's fields, and those
//! of each input, output and parameter entry (the schema is known; nothing a client sends decides
//! how deep the walk goes). Field numbers are `proto/inference.proto`'s.

use std::mem::size_of;

use bytes::Bytes;

use crate::error::Error;
use crate::wire::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use crate::wire::proto::{InferParameter, ModelInferRequest};
use crate::wire::tensor::{Elements, InferTensor};

/// What a request message says about itself before it is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferHead {
    pub model_name: String,
    pub model_version: String,
    /// Bytes decoding the message and converting it into tensors would allocate (an estimate
    /// from above: every entry's struct, every element, every copy).
    pub decoded_bytes: usize,
    /// Elements in the inputs' typed `contents` (raw contents are counted once decoded).
    pub values: usize,
}

fn malformed(what: &str) -> Error {
    Error::BadRequest(format!(
        "the ModelInferRequest message cannot be decoded: {what}"
    ))
}

/// One field of a message: its number and its value.
enum Field<'a> {
    Varint,
    Fixed64,
    Fixed32,
    Bytes(&'a [u8]),
}

/// Reads the fields of one message, in order.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(message: &'a [u8]) -> Self {
        Fields { rest: message }
    }

    fn varint(&mut self) -> Result<u64, Error> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self
                .rest
                .split_first()
                .ok_or_else(|| malformed("a number runs past the end"))?;
            self.rest = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("a number is longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.rest.len() < n {
            return Err(malformed("a field runs past the end"));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, Error> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        let field = match key & 7 {
            0 => {
                self.varint()?;
                Field::Varint
            }
            1 => {
                self.take(8)?;
                Field::Fixed64
            }
            2 => {
                let length = usize::try_from(self.varint()?)
                    .map_err(|_| malformed("a length is too large"))?;
                Field::Bytes(self.take(length)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed32
            }
            other => return Err(malformed(&format!("wire type {other} is not supported"))),
        };
        Ok(Some((number, field)))
    }
}

fn text(bytes: &[u8], what: &str) -> Result<String, Error> {
    std::str::from_utf8(bytes)
        .map(str::to_string)
        .map_err(|_| malformed(&format!("{what} is not UTF-8")))
}

/// Elements of a repeated scalar field: packed (one length-delimited field) or one per field.
fn count_elements(field: &Field<'_>, wire_size: Option<usize>) -> usize {
    match (field, wire_size) {
        (Field::Bytes(packed), Some(size)) => packed.len() / size,
        // Packed varints: one element per byte that ends a number.
        (Field::Bytes(packed), None) => packed.iter().filter(|b| *b & 0x80 == 0).count(),
        _ => 1,
    }
}

/// A map entry (`map<string, InferParameter>`): its key and value as decoding allocates them.
fn parameter_bytes(entry: &[u8]) -> Result<usize, Error> {
    let mut bytes = size_of::<(String, InferParameter)>() + 16;
    let mut fields = Fields::new(entry);
    while let Some((_, field)) = fields.next()? {
        if let Field::Bytes(b) = field {
            // The key, or the value message (whose string parameter is its only large part).
            bytes += b.len();
        }
    }
    Ok(bytes)
}

/// One `InferInputTensor` entry: what decoding and converting it allocates, and its elements.
fn input_bytes(entry: &[u8]) -> Result<(usize, usize), Error> {
    let mut bytes = size_of::<InferInputTensor>() + size_of::<InferTensor>();
    let mut values = 0usize;
    let mut fields = Fields::new(entry);
    while let Some((number, field)) = fields.next()? {
        match (number, &field) {
            // name (twice: the message's and the tensor's), datatype
            (1, Field::Bytes(b)) => bytes += 2 * b.len(),
            (2, Field::Bytes(b)) => bytes += b.len(),
            // shape (int64, and usize once converted)
            (3, f) => bytes += 16 * count_elements(f, None),
            (4, Field::Bytes(b)) => bytes += parameter_bytes(b)?,
            (5, Field::Bytes(contents)) => {
                let mut inner = Fields::new(contents);
                while let Some((kind, field)) = inner.next()? {
                    // Decoded into a vector of the field's type, then converted (at most a copy
                    // of the same size: narrowing INT8/INT16/UINT8/UINT16 makes a smaller one).
                    let (n, size) = match kind {
                        1 => (count_elements(&field, Some(1)), 1),
                        2 => (count_elements(&field, None), 4),
                        3 => (count_elements(&field, None), 8),
                        4 => (count_elements(&field, None), 4),
                        5 => (count_elements(&field, None), 8),
                        6 => (count_elements(&field, Some(4)), 4),
                        7 => (count_elements(&field, Some(8)), 8),
                        8 => {
                            // A `Bytes` slice, then its own vector in the tensor.
                            let length = match field {
                                Field::Bytes(b) => b.len(),
                                _ => 0,
                            };
                            values += 1;
                            bytes += size_of::<Bytes>() + size_of::<Vec<u8>>() + 16 + length;
                            continue;
                        }
                        _ => continue,
                    };
                    values += n;
                    bytes += 2 * n * size;
                }
            }
            _ => {}
        }
    }
    Ok((bytes, values))
}

/// Reads a request's head and the cost of decoding it (see the module docs).
pub fn infer_request(message: &[u8]) -> Result<InferHead, Error> {
    let mut head = InferHead {
        model_name: String::new(),
        model_version: String::new(),
        decoded_bytes: size_of::<ModelInferRequest>(),
        values: 0,
    };
    let mut fields = Fields::new(message);
    while let Some((number, field)) = fields.next()? {
        let Field::Bytes(b) = field else {
            continue;
        };
        match number {
            1 => head.model_name = text(b, "the model name")?,
            2 => head.model_version = text(b, "the model version")?,
            3 => head.decoded_bytes += b.len(),
            4 => head.decoded_bytes += parameter_bytes(b)?,
            5 => {
                let (bytes, values) = input_bytes(b)?;
                head.decoded_bytes += bytes;
                head.values += values;
            }
            6 => {
                head.decoded_bytes += size_of::<InferRequestedOutputTensor>() + 2 * b.len();
            }
            // Raw contents: a slice of the message, then the tensor's own elements.
            7 => head.decoded_bytes += size_of::<Bytes>() + size_of::<Elements>() + b.len(),
            _ => {}
        }
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::wire::proto::InferTensorContents;

    fn request(inputs: Vec<InferInputTensor>, raw: Vec<Bytes>) -> Vec<u8> {
        ModelInferRequest {
            model_name: "iris".into(),
            model_version: "2".into(),
            inputs,
            raw_input_contents: raw,
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn input(contents: Option<InferTensorContents>) -> InferInputTensor {
        InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            contents,
            ..Default::default()
        }
    }

    #[test]
    fn the_head_names_the_model() {
        let head = infer_request(&request(vec![input(None)], vec![])).unwrap();
        assert_eq!(
            (head.model_name.as_str(), head.model_version.as_str()),
            ("iris", "2")
        );
        assert_eq!(head.values, 0);
    }

    #[test]
    fn elements_are_counted_packed_or_not() {
        let contents = InferTensorContents {
            fp32_contents: vec![1.0; 1000],
            int64_contents: vec![300; 10],
            bytes_contents: vec![Bytes::from_static(b"ab"); 3],
            ..Default::default()
        };
        let head = infer_request(&request(vec![input(Some(contents))], vec![])).unwrap();
        assert_eq!(head.values, 1013);
        assert!(head.decoded_bytes > 2 * 4000, "{}", head.decoded_bytes);
    }

    #[test]
    fn a_small_message_of_empty_entries_costs_its_entries() {
        // 100,000 empty `inputs` entries: 200 KB on the wire.
        let mut message = Vec::new();
        for _ in 0..100_000 {
            message.extend_from_slice(&[0x2a, 0x00]);
        }
        let head = infer_request(&message).unwrap();
        assert!(
            head.decoded_bytes >= 100_000 * size_of::<InferInputTensor>(),
            "{}",
            head.decoded_bytes
        );
        // Raw contents are counted by their length.
        let raw = request(vec![input(None)], vec![Bytes::from(vec![0u8; 1 << 20])]);
        assert!(infer_request(&raw).unwrap().decoded_bytes >= 1 << 20);
    }

    #[test]
    fn malformed_messages_are_the_clients_error() {
        for bad in [
            &[0x0a, 0x05, b'a'][..],
            &[0x2a][..],
            &[0xff; 11][..],
            &[0x0b][..],
        ] {
            let e = infer_request(bad).unwrap_err();
            assert!(matches!(e, Error::BadRequest(_)), "{e}");
        }
        assert!(
            infer_request(&[0x0a, 0x02, 0xff, 0xfe]).is_err(),
            "not UTF-8"
        );
        assert_eq!(infer_request(&[]).unwrap().model_name, "");
    }
}
