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

    /// Rows `start..end` of the first dimension (for running a big batch in chunks).
    pub fn rows(&self, start: usize, end: usize) -> Result<Tensor> {
        let total = self.shape.first().copied().unwrap_or(1);
        if self.shape.is_empty() || start > end || end > total {
            return Err(EngineError::InvalidInput(format!(
                "rows {start}..{end} out of a tensor of shape {:?}",
                self.shape
            )));
        }
        let width: usize = self.shape[1..].iter().product();
        let (a, b) = (start * width, end * width);
        let data = match &self.data {
            TensorData::F32(v) => TensorData::F32(v[a..b].to_vec()),
            TensorData::F64(v) => TensorData::F64(v[a..b].to_vec()),
            TensorData::I64(v) => TensorData::I64(v[a..b].to_vec()),
            TensorData::I32(v) => TensorData::I32(v[a..b].to_vec()),
            TensorData::Bool(v) => TensorData::Bool(v[a..b].to_vec()),
            TensorData::String(v) => TensorData::String(v[a..b].to_vec()),
        };
        let mut shape = self.shape.clone();
        shape[0] = end - start;
        Tensor::new(shape, data)
    }

    /// Stacks tensors along the first dimension (the inverse of [`Tensor::rows`]).
    pub fn concat_rows(parts: Vec<Tensor>) -> Result<Tensor> {
        let mut parts = parts.into_iter();
        let first = parts
            .next()
            .ok_or_else(|| EngineError::Internal("nothing to concatenate".to_string()))?;
        let (mut shape, mut data) = (first.shape, first.data);
        for part in parts {
            if part.shape.get(1..) != shape.get(1..) || part.shape.is_empty() {
                return Err(EngineError::Internal(format!(
                    "cannot stack shapes {shape:?} and {:?}",
                    part.shape
                )));
            }
            shape[0] += part.shape[0];
            match (&mut data, part.data) {
                (TensorData::F32(a), TensorData::F32(b)) => a.extend(b),
                (TensorData::F64(a), TensorData::F64(b)) => a.extend(b),
                (TensorData::I64(a), TensorData::I64(b)) => a.extend(b),
                (TensorData::I32(a), TensorData::I32(b)) => a.extend(b),
                (TensorData::Bool(a), TensorData::Bool(b)) => a.extend(b),
                (TensorData::String(a), TensorData::String(b)) => a.extend(b),
                _ => {
                    return Err(EngineError::Internal(
                        "cannot stack tensors of different types".to_string(),
                    ));
                }
            }
        }
        Tensor::new(shape, data)
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
    fn rows_split_and_stack_back() {
        let t = Tensor::new(vec![3, 2], TensorData::I64(vec![1, 2, 3, 4, 5, 6])).unwrap();
        let a = t.rows(0, 2).unwrap();
        let b = t.rows(2, 3).unwrap();
        assert_eq!(a.shape(), &[2, 2]);
        assert_eq!(b.data(), &TensorData::I64(vec![5, 6]));
        assert_eq!(Tensor::concat_rows(vec![a, b]).unwrap(), t);
        assert!(t.rows(2, 4).is_err());
        let f = Tensor::new(vec![1], TensorData::F32(vec![1.0])).unwrap();
        assert!(Tensor::concat_rows(vec![t, f]).is_err());
    }

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
