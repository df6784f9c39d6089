//! What one logged request is: the fixed columns every payload file has, and one value per
//! input and output column of the endpoint's [`Schema`].

use std::sync::Arc;

/// The type of an input or output column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A list of numbers (float tensors), row-major: `list<double>`.
    Floats,
    /// A list of integers (integer tensors): `list<int64>`.
    Ints,
    /// A list of booleans: `list<boolean>`.
    Bools,
    /// A list of strings (BYTES tensors, as UTF-8 with invalid bytes replaced): `list<string>`.
    Texts,
    /// One string: a Python endpoint's JSON body or reply (`in_body`, `out_body`).
    Text,
}

/// One input or output column: `in_<name>` or `out_<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
}

/// The input and output columns of an endpoint's payload files, in order.
pub type Schema = Arc<[Column]>;

/// One column's value in one record; [`Value::Null`] when the request did not have it (an
/// output not asked for, no output when the request failed).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Floats(Vec<f64>),
    Ints(Vec<i64>),
    Bools(Vec<bool>),
    Texts(Vec<String>),
    Text(String),
    Null,
}

impl Value {
    /// About how many bytes the value holds (what the bounded buffer counts).
    pub fn size(&self) -> usize {
        match self {
            Value::Floats(v) => v.len() * 8,
            Value::Ints(v) => v.len() * 8,
            Value::Bools(v) => v.len(),
            Value::Texts(v) => v.iter().map(|s| s.len() + 4).sum(),
            Value::Text(s) => s.len(),
            Value::Null => 0,
        }
    }

    /// Whether the value can be stored in a column of `kind`.
    pub fn fits(&self, kind: Kind) -> bool {
        matches!(
            (self, kind),
            (Value::Null, _)
                | (Value::Floats(_), Kind::Floats)
                | (Value::Ints(_), Kind::Ints)
                | (Value::Bools(_), Kind::Bools)
                | (Value::Texts(_), Kind::Texts)
                | (Value::Text(_), Kind::Text)
        )
    }
}

/// One logged request.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When the request arrived, microseconds since the Unix epoch (UTC).
    pub time_us: i64,
    /// The url of the endpoint that answered (`name` or `name/version`).
    pub endpoint: String,
    pub version: Option<String>,
    pub request_id: String,
    /// `clearml`, `v2_rest`, `v2_grpc` or `send_request`, as in the request metrics.
    pub protocol: &'static str,
    /// The HTTP status of the answer (V2's for gRPC).
    pub status: u16,
    pub latency_ms: f64,
    /// One value per column of the schema, in its order.
    pub values: Vec<Value>,
}

impl Record {
    /// About how many bytes the record holds.
    pub fn size(&self) -> usize {
        64 + self.endpoint.len()
            + self.request_id.len()
            + self.values.iter().map(Value::size).sum::<usize>()
    }
}
