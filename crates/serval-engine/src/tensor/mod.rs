//! Typed, contiguous, row-major tensors, and the one copy of each helper over them that the
//! server, the CLI, the Python bridge and batching share: casts, stacking and splitting rows,
//! nesting as JSON ([`json`]), the binary form ([`le`]) and the V2/numpy type names
//! ([`Datatype`]).

mod datatype;
pub mod json;
pub mod le;

use std::fmt;

pub use datatype::Datatype;

use crate::{EngineError, NamedOutput, OutputValue, Result};

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
    /// Numbers as `dtype` (`as` casts: floats truncate toward zero into integers, non-zero is
    /// `true`); strings are refused.
    pub fn from_f64(values: Vec<f64>, dtype: DataType) -> Result<TensorData> {
        Ok(match dtype {
            DataType::F32 => TensorData::F32(values.into_iter().map(|v| v as f32).collect()),
            DataType::F64 => TensorData::F64(values),
            DataType::I64 => TensorData::I64(values.into_iter().map(|v| v as i64).collect()),
            DataType::I32 => TensorData::I32(values.into_iter().map(|v| v as i32).collect()),
            DataType::Bool => TensorData::Bool(values.into_iter().map(|v| v != 0.0).collect()),
            DataType::String => {
                return Err(EngineError::InvalidInput(
                    "numbers were given for a string input".to_string(),
                ));
            }
        })
    }

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

    /// Makes room for exactly `more` elements.
    pub fn reserve_exact(&mut self, more: usize) {
        match self {
            TensorData::F32(v) => v.reserve_exact(more),
            TensorData::F64(v) => v.reserve_exact(more),
            TensorData::I64(v) => v.reserve_exact(more),
            TensorData::I32(v) => v.reserve_exact(more),
            TensorData::Bool(v) => v.reserve_exact(more),
            TensorData::String(v) => v.reserve_exact(more),
        }
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

    /// The tensor with its elements as `dtype` (see [`TensorData::from_f64`]); itself if it is
    /// already.
    pub fn cast(self, dtype: DataType) -> Result<Tensor> {
        if self.dtype() == dtype {
            return Ok(self);
        }
        let values = self.to_f64()?;
        Tensor::new(self.shape, TensorData::from_f64(values, dtype)?)
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

    /// Stacks tensors along the first dimension, copying them (requests merged into one call).
    pub fn stack_rows(parts: &[&Tensor]) -> Result<Tensor> {
        let Some(first) = parts.first() else {
            return Err(EngineError::Internal("nothing to stack".to_string()));
        };
        let mut shape = first.shape.clone();
        if shape.is_empty() || parts.iter().any(|p| p.shape.get(1..) != shape.get(1..)) {
            return Err(EngineError::Internal(format!(
                "cannot stack tensors of shapes {:?}",
                parts.iter().map(|p| &p.shape).collect::<Vec<_>>()
            )));
        }
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        macro_rules! join {
            ($variant:ident) => {{
                let mut all = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
                for part in parts {
                    match &part.data {
                        TensorData::$variant(v) => all.extend_from_slice(v),
                        _ => {
                            return Err(EngineError::Internal(
                                "cannot stack tensors of different types".to_string(),
                            ));
                        }
                    }
                }
                TensorData::$variant(all)
            }};
        }
        let data = match &first.data {
            TensorData::F32(_) => join!(F32),
            TensorData::F64(_) => join!(F64),
            TensorData::I64(_) => join!(I64),
            TensorData::I32(_) => join!(I32),
            TensorData::Bool(_) => join!(Bool),
            TensorData::String(_) => join!(String),
        };
        Tensor::new(shape, data)
    }

    /// Stacks tensors along the first dimension, reusing the first one's buffer (the inverse of
    /// [`Tensor::rows`]).
    pub fn concat_rows(parts: Vec<Tensor>) -> Result<Tensor> {
        let mut parts = parts.into_iter();
        let mut first = parts
            .next()
            .ok_or_else(|| EngineError::Internal("nothing to concatenate".to_string()))?;
        for part in parts {
            first.append(part)?;
        }
        Ok(first)
    }

    /// Appends `more`'s rows (the same type and the same shape beyond the first dimension).
    pub fn append(&mut self, more: Tensor) -> Result<()> {
        if more.shape.get(1..) != self.shape.get(1..) || more.shape.is_empty() {
            return Err(EngineError::Internal(format!(
                "cannot stack shapes {:?} and {:?}",
                self.shape, more.shape
            )));
        }
        match (&mut self.data, more.data) {
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
        self.shape[0] += more.shape[0];
        Ok(())
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

/// Outputs of calls made on consecutive rows, joined output by output as each call returns
/// (the same names in the same order in every part): tensors stacked by rows, per-row maps
/// appended. Given the total row count, each output's buffer is sized once from the first part,
/// so a large batch's outputs are never held twice (parts and result) nor grown by doubling.
#[derive(Debug)]
pub struct OutputStack {
    total_rows: usize,
    joined: Vec<NamedOutput>,
}

impl OutputStack {
    /// A stack for outputs of `total_rows` rows in all (0 when unknown: buffers grow as needed).
    pub fn new(total_rows: usize) -> OutputStack {
        OutputStack {
            total_rows,
            joined: Vec::new(),
        }
    }

    /// Appends the outputs of the next rows.
    pub fn push(&mut self, part: Vec<NamedOutput>) -> Result<()> {
        let mismatch = || EngineError::Internal("the parts have different outputs".to_string());
        if self.joined.is_empty() {
            self.joined = part;
            for output in &mut self.joined {
                if let OutputValue::Tensor(tensor) = &mut output.value {
                    let rows = tensor.shape.first().copied().unwrap_or(0);
                    if rows > 0 && self.total_rows > rows {
                        let more = (self.total_rows - rows) * (tensor.data.len() / rows);
                        tensor.data.reserve_exact(more);
                    }
                }
            }
            return Ok(());
        }
        if part.len() != self.joined.len() {
            return Err(mismatch());
        }
        for (joined, output) in self.joined.iter_mut().zip(part) {
            if joined.name != output.name {
                return Err(mismatch());
            }
            match (&mut joined.value, output.value) {
                (OutputValue::Maps(rows), OutputValue::Maps(more)) => rows.extend(more),
                (OutputValue::Tensor(tensor), OutputValue::Tensor(more)) => tensor.append(more)?,
                _ => return Err(mismatch()),
            }
        }
        Ok(())
    }

    /// The joined outputs.
    pub fn finish(self) -> Vec<NamedOutput> {
        self.joined
    }
}

/// Outputs of calls made on consecutive rows, joined output by output (see [`OutputStack`]).
pub fn stack_outputs(parts: Vec<Vec<NamedOutput>>) -> Result<Vec<NamedOutput>> {
    let mut stack = OutputStack::new(0);
    for part in parts {
        stack.push(part)?;
    }
    Ok(stack.finish())
}

/// The outputs of one call on stacked rows cut back into parts of `rows[i]` rows each; `None` if
/// an output does not have one entry per row (a model whose outputs are not per row).
pub fn split_outputs(outputs: Vec<NamedOutput>, rows: &[usize]) -> Option<Vec<Vec<NamedOutput>>> {
    let total: usize = rows.iter().sum();
    let mut parts: Vec<Vec<NamedOutput>> = rows
        .iter()
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for output in outputs {
        let mut start = 0;
        match output.value {
            OutputValue::Tensor(tensor) => {
                if tensor.shape().first() != Some(&total) {
                    return None;
                }
                for (n, part) in rows.iter().zip(parts.iter_mut()) {
                    part.push(NamedOutput {
                        name: output.name.clone(),
                        value: OutputValue::Tensor(tensor.rows(start, start + n).ok()?),
                    });
                    start += n;
                }
            }
            OutputValue::Maps(maps) => {
                if maps.len() != total {
                    return None;
                }
                let mut maps = maps.into_iter();
                for (n, part) in rows.iter().zip(parts.iter_mut()) {
                    part.push(NamedOutput {
                        name: output.name.clone(),
                        value: OutputValue::Maps(maps.by_ref().take(*n).collect()),
                    });
                }
            }
        }
    }
    Some(parts)
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
    fn stacking_copies_and_outputs_split_back() {
        let a = Tensor::new(vec![1, 2], TensorData::F32(vec![1.0, 2.0])).unwrap();
        let b = Tensor::new(vec![2, 2], TensorData::F32(vec![3.0, 4.0, 5.0, 6.0])).unwrap();
        let stacked = Tensor::stack_rows(&[&a, &b]).unwrap();
        assert_eq!(stacked.shape(), &[3, 2]);
        let other = Tensor::new(vec![1, 3], TensorData::F32(vec![0.0; 3])).unwrap();
        assert!(Tensor::stack_rows(&[&a, &other]).is_err());
        let out = |t: Tensor| NamedOutput {
            name: "y".into(),
            value: OutputValue::Tensor(t),
        };
        let parts = split_outputs(vec![out(stacked)], &[1, 2]).unwrap();
        assert_eq!(parts[0][0].value, OutputValue::Tensor(a.clone()));
        assert_eq!(parts[1][0].value, OutputValue::Tensor(b.clone()));
        assert!(split_outputs(vec![out(a.clone())], &[2]).is_none());
        let joined = stack_outputs(parts.clone()).unwrap();
        assert_eq!(
            joined[0].value,
            OutputValue::Tensor(Tensor::stack_rows(&[&a, &b]).unwrap())
        );
        // Knowing the total, the first part's buffer is sized once for all rows.
        let mut stack = OutputStack::new(3);
        let mut parts = parts.into_iter();
        stack.push(parts.next().unwrap()).unwrap();
        let OutputValue::Tensor(first) = &stack.joined[0].value else {
            unreachable!()
        };
        let TensorData::F32(data) = first.data() else {
            unreachable!()
        };
        assert_eq!(data.capacity(), 6);
        stack.push(parts.next().unwrap()).unwrap();
        assert_eq!(stack.finish(), joined);
        let mut stack = OutputStack::new(0);
        stack.push(vec![out(a.clone())]).unwrap();
        assert!(stack.push(vec![out(a.clone()), out(a)]).is_err());
    }

    #[test]
    fn casts_follow_as() {
        let t = Tensor::new(vec![3], TensorData::F64(vec![1.7, -1.2, 0.0])).unwrap();
        assert_eq!(
            t.clone().cast(DataType::I64).unwrap().data(),
            &TensorData::I64(vec![1, -1, 0])
        );
        assert_eq!(
            t.cast(DataType::Bool).unwrap().data(),
            &TensorData::Bool(vec![true, true, false])
        );
        let s = Tensor::new(vec![1], TensorData::String(vec!["a".into()])).unwrap();
        assert!(s.cast(DataType::F32).is_err());
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
