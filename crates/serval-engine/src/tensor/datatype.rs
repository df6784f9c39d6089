//! The element types of the Open Inference Protocol (V2), with their protocol names (`FP32`) and
//! numpy names (`float32`): the one vocabulary of tensor types for the CLI's `--input-type`, the
//! server's V2 adapters and metadata, and `config.pbtxt` files.

use std::fmt;

use super::DataType;

/// The V2 datatypes (BF16 as Triton adds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Datatype {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Bf16,
    Fp32,
    Fp64,
    Bytes,
}

impl Datatype {
    pub const ALL: [Datatype; 14] = [
        Datatype::Bool,
        Datatype::Uint8,
        Datatype::Uint16,
        Datatype::Uint32,
        Datatype::Uint64,
        Datatype::Int8,
        Datatype::Int16,
        Datatype::Int32,
        Datatype::Int64,
        Datatype::Fp16,
        Datatype::Bf16,
        Datatype::Fp32,
        Datatype::Fp64,
        Datatype::Bytes,
    ];

    /// The protocol's name, e.g. `FP32`.
    pub fn name(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::Uint8 => "UINT8",
            Datatype::Uint16 => "UINT16",
            Datatype::Uint32 => "UINT32",
            Datatype::Uint64 => "UINT64",
            Datatype::Int8 => "INT8",
            Datatype::Int16 => "INT16",
            Datatype::Int32 => "INT32",
            Datatype::Int64 => "INT64",
            Datatype::Fp16 => "FP16",
            Datatype::Bf16 => "BF16",
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
            Datatype::Bytes => "BYTES",
        }
    }

    pub fn parse(name: &str) -> Option<Datatype> {
        Datatype::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Bytes per element in binary form (`None` for BYTES, whose elements carry their length).
    pub fn size(self) -> Option<usize> {
        Some(match self {
            Datatype::Bool | Datatype::Uint8 | Datatype::Int8 => 1,
            Datatype::Uint16 | Datatype::Int16 | Datatype::Fp16 | Datatype::Bf16 => 2,
            Datatype::Uint32 | Datatype::Int32 | Datatype::Fp32 => 4,
            Datatype::Uint64 | Datatype::Int64 | Datatype::Fp64 => 8,
            Datatype::Bytes => return None,
        })
    }

    /// The datatype of an engine element type.
    pub fn of_engine(dtype: DataType) -> Datatype {
        match dtype {
            DataType::F32 => Datatype::Fp32,
            DataType::F64 => Datatype::Fp64,
            DataType::I64 => Datatype::Int64,
            DataType::I32 => Datatype::Int32,
            DataType::Bool => Datatype::Bool,
            DataType::String => Datatype::Bytes,
        }
    }

    /// The datatype of a clearml `--input-type` / `--output-type` (numpy names, as clearml
    /// passes them to Triton; `TYPE_FP32`-style names too).
    pub fn from_numpy(name: &str) -> Option<Datatype> {
        let name = name.trim().to_ascii_lowercase();
        let name = name
            .strip_prefix("np.")
            .or_else(|| name.strip_prefix("numpy."))
            .or_else(|| name.strip_prefix("type_"))
            .unwrap_or(&name);
        Some(match name {
            "bool" | "bool_" => Datatype::Bool,
            "uint8" => Datatype::Uint8,
            "uint16" => Datatype::Uint16,
            "uint32" => Datatype::Uint32,
            "uint64" => Datatype::Uint64,
            "int8" => Datatype::Int8,
            "int16" => Datatype::Int16,
            "int32" => Datatype::Int32,
            "int64" | "int" => Datatype::Int64,
            "float16" | "half" | "fp16" => Datatype::Fp16,
            "bfloat16" | "bf16" => Datatype::Bf16,
            "float32" | "single" | "fp32" => Datatype::Fp32,
            "float64" | "double" | "float" | "fp64" => Datatype::Fp64,
            "str" | "string" | "bytes" | "object" | "object_" | "bytes_" | "str_" => {
                Datatype::Bytes
            }
            _ => return None,
        })
    }

    /// The numpy name of the datatype, as `--input-type` / `--output-type` store it (`float32`;
    /// BYTES is `bytes`, BF16 `bfloat16` as ml_dtypes names it).
    pub fn numpy_name(self) -> &'static str {
        match self {
            Datatype::Bool => "bool",
            Datatype::Uint8 => "uint8",
            Datatype::Uint16 => "uint16",
            Datatype::Uint32 => "uint32",
            Datatype::Uint64 => "uint64",
            Datatype::Int8 => "int8",
            Datatype::Int16 => "int16",
            Datatype::Int32 => "int32",
            Datatype::Int64 => "int64",
            Datatype::Fp16 => "float16",
            Datatype::Bf16 => "bfloat16",
            Datatype::Fp32 => "float32",
            Datatype::Fp64 => "float64",
            Datatype::Bytes => "bytes",
        }
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_type_names_map_to_datatypes() {
        assert_eq!(Datatype::from_numpy("float32"), Some(Datatype::Fp32));
        assert_eq!(Datatype::from_numpy("np.uint8"), Some(Datatype::Uint8));
        assert_eq!(Datatype::from_numpy("TYPE_INT64"), Some(Datatype::Int64));
        assert_eq!(Datatype::from_numpy("str"), Some(Datatype::Bytes));
        assert_eq!(Datatype::from_numpy("complex64"), None);
        assert_eq!(Datatype::from_numpy("bfloat16"), Some(Datatype::Bf16));
        for d in Datatype::ALL {
            assert_eq!(Datatype::parse(d.name()), Some(d));
            assert_eq!(Datatype::from_numpy(d.numpy_name()), Some(d), "{d}");
        }
    }
}
