//! The framed protocol between the server and its Python workers (`python/serval_worker/
//! protocol.py` is the other side).
//!
//! A frame is: header length `H` (u32, big endian), blob count `N` (u32), `N` blob lengths (u64
//! each), `H` bytes of UTF-8 JSON, then the `N` blobs. In the JSON, `{"__serval_blob__": i,
//! "dtype": "float32", "shape": [2, 4]}` is an n-d array whose row-major little-endian data is
//! blob `i`, and `{"__serval_bytes__": i}` is a bytes value: tensors and binary bodies travel as
//! raw bytes, never base64.

use serde_json::{Value, json};
use serval_engine::tensor::{json, le};
use serval_engine::{Tensor, TensorData};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const BLOB: &str = "__serval_blob__";
pub use crate::message::FromWorker;
pub const BYTES: &str = "__serval_bytes__";

/// Largest header or blob accepted from a worker.
const MAX_PART: u64 = 1 << 31;

/// One message: JSON structure plus raw blobs.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub header: Value,
    pub blobs: Vec<Vec<u8>>,
}

impl Frame {
    pub fn new(header: Value) -> Frame {
        Frame {
            header,
            blobs: Vec::new(),
        }
    }

    pub fn op(&self) -> &str {
        self.header.get("op").and_then(Value::as_str).unwrap_or("")
    }

    pub fn id(&self) -> Option<u64> {
        self.header.get("id").and_then(Value::as_u64)
    }

    pub fn encode(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.header).unwrap_or_else(|_| b"{}".to_vec());
        let blobs: usize = self.blobs.iter().map(Vec::len).sum();
        let mut out = Vec::with_capacity(8 + 8 * self.blobs.len() + header.len() + blobs);
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(&(self.blobs.len() as u32).to_be_bytes());
        for blob in &self.blobs {
            out.extend_from_slice(&(blob.len() as u64).to_be_bytes());
        }
        out.extend_from_slice(&header);
        for blob in &self.blobs {
            out.extend_from_slice(blob);
        }
        out
    }

    /// Reads the next frame; `None` at a clean end of stream.
    pub async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Option<Frame>> {
        let mut head = [0u8; 8];
        match reader.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let header_len = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        let count = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        if count > 1 << 20 || header_len > MAX_PART {
            return Err(invalid(format!(
                "malformed frame header ({header_len} bytes, {count} blobs)"
            )));
        }
        let mut lengths = Vec::with_capacity(count);
        for _ in 0..count {
            let mut len = [0u8; 8];
            reader.read_exact(&mut len).await?;
            let len = u64::from_be_bytes(len);
            if len > MAX_PART {
                return Err(invalid(format!("blob of {len} bytes is too large")));
            }
            lengths.push(len as usize);
        }
        let mut header = vec![0u8; header_len as usize];
        reader.read_exact(&mut header).await?;
        let header: Value = serde_json::from_slice(&header)
            .map_err(|e| invalid(format!("frame header is not JSON: {e}")))?;
        let mut blobs = Vec::with_capacity(count);
        for len in lengths {
            let mut blob = vec![0u8; len];
            reader.read_exact(&mut blob).await?;
            blobs.push(blob);
        }
        Ok(Some(Frame { header, blobs }))
    }
}

/// Adds a tensor's data as a blob and returns its marker (string tensors travel as JSON lists).
pub fn tensor_marker(tensor: &Tensor, blobs: &mut Vec<Vec<u8>>) -> Value {
    let mut bytes = Vec::new();
    match tensor.data() {
        TensorData::F32(v) => le::encode(v, &mut bytes),
        TensorData::F64(v) => le::encode(v, &mut bytes),
        TensorData::I64(v) => le::encode(v, &mut bytes),
        TensorData::I32(v) => le::encode(v, &mut bytes),
        TensorData::Bool(v) => bytes.extend(v.iter().map(|b| u8::from(*b))),
        TensorData::String(v) => {
            let flat = v.iter().map(|s| Value::String(s.clone()));
            return json::nest(tensor.shape(), flat);
        }
    }
    blobs.push(bytes);
    json!({BLOB: blobs.len() - 1, "dtype": tensor.dtype().name(), "shape": tensor.shape()})
}

/// Adds a bytes value as a blob and returns its marker.
pub fn bytes_marker(bytes: &[u8], blobs: &mut Vec<Vec<u8>>) -> Value {
    blobs.push(bytes.to_vec());
    json!({ BYTES: blobs.len() - 1 })
}

/// The tensor a marker stands for, if `value` is a tensor marker.
pub fn marker_tensor(value: &Value, blobs: &[Vec<u8>]) -> Option<Result<Tensor, String>> {
    let index = value.as_object()?.get(BLOB)?.as_u64()? as usize;
    Some(decode_tensor(value, index, blobs))
}

fn decode_tensor(value: &Value, index: usize, blobs: &[Vec<u8>]) -> Result<Tensor, String> {
    let blob = blobs
        .get(index)
        .ok_or_else(|| format!("array refers to missing blob {index}"))?;
    let shape: Vec<usize> = value
        .get("shape")
        .and_then(Value::as_array)
        .ok_or("array without a shape")?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize).ok_or("bad dimension"))
        .collect::<Result<_, _>>()?;
    let data = match value.get("dtype").and_then(Value::as_str) {
        Some("float32") => TensorData::F32(le::decode(blob)),
        Some("float64") => TensorData::F64(le::decode(blob)),
        Some("int64") => TensorData::I64(le::decode(blob)),
        Some("int32") => TensorData::I32(le::decode(blob)),
        Some("bool") => TensorData::Bool(blob.iter().map(|b| *b != 0).collect()),
        other => return Err(format!("unsupported array type {other:?}")),
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let tensor = Tensor::new(vec![2, 2], TensorData::F32(vec![1.0, 2.5, -3.0, 4.0])).unwrap();
        let mut frame = Frame::new(json!({"op": "x", "id": 7}));
        let marker = tensor_marker(&tensor, &mut frame.blobs);
        let bytes = bytes_marker(b"\x00\xffraw", &mut frame.blobs);
        frame.header["data"] = json!({"t": marker, "b": bytes});
        let encoded = frame.encode();
        let mut reader = encoded.as_slice();
        let back = Frame::read(&mut reader).await.unwrap().unwrap();
        assert_eq!(back.op(), "x");
        assert_eq!(back.id(), Some(7));
        let t = marker_tensor(&back.header["data"]["t"], &back.blobs)
            .unwrap()
            .unwrap();
        assert_eq!(t, tensor);
        assert_eq!(back.blobs[1], b"\x00\xffraw");
        assert!(Frame::read(&mut reader).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn truncated_frames_are_errors() {
        let encoded = Frame::new(json!({"op": "x"})).encode();
        let mut reader = &encoded[..encoded.len() - 1];
        assert!(Frame::read(&mut reader).await.is_err());
    }

    #[test]
    fn string_tensors_travel_as_lists() {
        let t = Tensor::new(vec![1, 2], TensorData::String(vec!["a".into(), "b".into()])).unwrap();
        let mut blobs = Vec::new();
        assert_eq!(tensor_marker(&t, &mut blobs), json!([["a", "b"]]));
        assert!(blobs.is_empty());
    }
}
