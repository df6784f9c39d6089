//! Model monitoring: payload logs, and reading drift reference data ([`data`]). A sampled request's inputs and outputs become one row of a
//! Parquet file ([`file`]), written off the request path by one thread per server through a
//! bounded buffer ([`writer`]), locally or to object storage.

pub mod data;
pub mod file;
pub mod record;
pub mod writer;

pub use record::{Column, Kind, Record, Schema, Value};
pub use writer::{Destination, MAX_RECORD_BYTES, PayloadWriter, Rolling, Tally, Target};

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A destination or option that cannot be used.
    #[error("{0}")]
    InvalidInput(String),
    /// A file could not be written.
    #[error("cannot write a payload file: {0}")]
    Write(String),
}
