//! Typed, contiguous, row-major tensors.

use std::fmt;

use crate::{EngineError, Result};

/// Element types engines exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    F32,
    F64,
    I64,
    I32,
    Bool,
    String,
}

impl DataType {
    /// The numpy / V2 protocol name.
    pub fn name(self) -> &'static str {
        match self {
            DataType::F32 => "float32",
            DataType::F64 => "float64",
            DataType::I64 => "int64",
            DataType::I32 => "int32",
            DataType::Bool => "bool",
            DataType::String => "str",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The elements of a tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
    String(Vec<String>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::String(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DataType {
        match self {
            TensorData::F32(_) => DataType::F32,
            TensorData::F64(_) => DataType::F64,
            TensorData::I64(_) => DataType::I64,
            TensorData::I32(_) => DataType::I32,
            TensorData::Bool(_) => DataType::Bool,
            TensorData::String(_) => DataType::String,
        }
    }
}

/// A row-major tensor: `data.len()` is the product of `shape`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// Builds a tensor, checking that the shape matches the number of elements.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Self> {
        let expected = shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d));
        if expected != Some(data.len()) {
            return Err(EngineError::InvalidInput(format!(
                "tensor shape {shape:?} does not match its {} elements",
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn into_data(self) -> TensorData {
        self.data
    }

    pub fn dtype(&self) -> DataType {
        self.data.dtype()
    }

    /// Elements as f32, converting numeric types (NaN stays NaN).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        Ok(match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::F64(v) => v.iter().map(|x| *x as f32).collect(),
            TensorData::I64(v) => v.iter().map(|x| *x as f32).collect(),
            TensorData::I32(v) => v.iter().map(|x| *x as f32).collect(),
            TensorData::Bool(v) => v.iter().map(|x| f32::from(u8::from(*x))).collect(),
            TensorData::String(_) => {
                return Err(EngineError::InvalidInput(
                    "expected numbers, got strings".to_string(),
                ));
            }
        })
    }

    /// Elements as f64, converting numeric types.
    pub fn to_f64(&self) -> Result<Vec<f64>> {
        Ok(match &self.data {
            TensorData::F32(v) => v.iter().map(|x| f64::from(*x)).collect(),
            TensorData::F64(v) => v.clone(),
            TensorData::I64(v) => v.iter().map(|x| *x as f64).collect(),
            TensorData::I32(v) => v.iter().map(|x| f64::from(*x)).collect(),
            TensorData::Bool(v) => v.iter().map(|x| f64::from(u8::from(*x))).collect(),
            TensorData::String(_) => {
                return Err(EngineError::InvalidInput(
                    "expected numbers, got strings".to_string(),
                ));
            }
        })
    }

    /// A 2-d view's row count and width, for tabular models; a 1-d tensor is one row.
    pub fn rows_and_width(&self) -> Result<(usize, usize)> {
        match self.shape.as_slice() {
            [n, f] => Ok((*n, *f)),
            [f] => Ok((1, *f)),
            other => Err(EngineError::InvalidInput(format!(
                "expected a [rows, features] matrix, got shape {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_must_match_data() {
        assert!(Tensor::new(vec![2, 2], TensorData::F32(vec![0.0; 4])).is_ok());
        assert!(Tensor::new(vec![2, 3], TensorData::F32(vec![0.0; 4])).is_err());
        assert!(Tensor::new(vec![usize::MAX, 3], TensorData::F32(vec![])).is_err());
        let t = Tensor::new(vec![0, 4], TensorData::F64(vec![])).unwrap();
        assert_eq!(t.rows_and_width().unwrap(), (0, 4));
    }

    #[test]
    fn conversions_keep_nan() {
        let t = Tensor::new(vec![2], TensorData::F64(vec![f64::NAN, 1.5])).unwrap();
        let f = t.to_f32().unwrap();
        assert!(f[0].is_nan());
        assert_eq!(f[1], 1.5);
    }
}
