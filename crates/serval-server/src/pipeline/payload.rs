//! Payload logs (`serval logging add`): for a sampled fraction of an endpoint's requests, of
//! every protocol, the model's inputs and outputs (native models: one list column per V2 input
//! and output, `in_<name>` / `out_<name>`; endpoints with Python code: the body and the reply
//! as text, `in_body` / `out_body`) become one Parquet row, written by `serval_monitor`'s
//! writer off the request path.
//!
//! Sampling is decided when the endpoint is resolved ([`RoutingTable::sample_log`]), before
//! anything is copied; an unsampled request pays one random number, a server without logs
//! nothing. The record is offered to a bounded buffer: when it is full the record is dropped
//! and counted (`serval_payload_dropped_total`), never waited for.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::Value as Json;
use serval_engine::{Datatype, NamedOutput, OutputValue};
use serval_monitor::{
    Column, Destination, Kind, PayloadWriter, Record, Rolling, Tally, Target, Value,
};
use serval_store::PayloadLog;

use crate::endpoint::{Captured, Endpoint, Input, Output, Payload, Runner};
use crate::table::{LogRoute, RoutingTable};
use crate::wire::{Elements, InferTensor};

/// The server's payload logs: the writer (started with the first log) and what became of each
/// endpoint's records.
#[derive(Default)]
pub struct PayloadLogs {
    /// The spool folder and this server's instance id, set when the server starts.
    home: OnceLock<(PathBuf, String)>,
    writer: OnceLock<PayloadWriter>,
    tallies: Mutex<BTreeMap<String, Arc<Tally>>>,
    /// Destinations already reported as unusable (warned once).
    refused: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PayloadLogs {
    /// Where object-storage destinations' files wait for their upload, and the instance id that
    /// makes file names unique.
    pub fn configure(&self, spool: PathBuf, instance: &str) {
        let _ = self.home.set((spool, instance.to_string()));
    }

    /// The log routes of a table about to be served: each endpoint the service's logs match
    /// gets the most specific one (its url, then its name, then the longest prefix).
    pub fn routes(&self, table: &RoutingTable) -> HashMap<String, Arc<LogRoute>> {
        let Some(snapshot) = &table.snapshot else {
            return HashMap::new();
        };
        let logs = &snapshot.config.payload_logs;
        if logs.is_empty() {
            return HashMap::new();
        }
        let Some((spool, instance)) = self.home.get() else {
            return HashMap::new();
        };
        self.writer
            .get_or_init(|| PayloadWriter::start(spool.clone(), instance));
        let mut routes = HashMap::new();
        for (url, slot) in &table.slots {
            let Some(endpoint) = &slot.serving else {
                continue;
            };
            let Some(log) = most_specific(logs.values(), url) else {
                continue;
            };
            let destination = match Destination::parse(&log.destination) {
                Ok(destination) => destination,
                Err(e) => {
                    let mut refused = lock(&self.refused);
                    if !refused.contains(&log.destination) {
                        tracing::warn!("payload log of '{}' is off: {e}", log.endpoint);
                        refused.push(log.destination.clone());
                    }
                    continue;
                }
            };
            let tally = lock(&self.tallies).entry(url.clone()).or_default().clone();
            let (schema, inputs, tensors) = schema_of(endpoint);
            routes.insert(
                url.clone(),
                Arc::new(LogRoute {
                    sample: log.sample,
                    target: Arc::new(Target {
                        destination,
                        rolling: Rolling {
                            max_bytes: log.max_file_mb.saturating_mul(1 << 20),
                            max_age: Duration::from_secs(log.max_file_seconds),
                        },
                    }),
                    schema,
                    inputs,
                    tensors,
                    tally,
                }),
            );
        }
        routes
    }

    /// Queues a record (dropped and counted when the buffer is full).
    pub fn offer(&self, route: &LogRoute, record: Record) {
        match self.writer.get() {
            Some(writer) => {
                writer.offer(&route.target, &route.schema, &route.tally, record);
            }
            None => {
                route.tally.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes every accepted record, closes the files and gives uploads until `deadline`; the
    /// counts are logged.
    pub fn close(&self, deadline: Instant) {
        let Some(writer) = self.writer.get() else {
            return;
        };
        writer.close(deadline);
        let (mut accepted, mut written, mut dropped) = (0, 0, 0);
        for tally in lock(&self.tallies).values() {
            accepted += tally.accepted.load(Ordering::Relaxed);
            written += tally.written.load(Ordering::Relaxed);
            dropped += tally.dropped.load(Ordering::Relaxed);
        }
        let pending = writer.pending_uploads();
        tracing::info!(
            "payload logs closed: {accepted} records accepted, {written} written, {dropped} dropped; {pending} file(s) left to upload at the next start"
        );
    }

    /// The Prometheus families, at scrape time.
    pub fn register(&self, registry: &mut Registry) {
        let tallies = lock(&self.tallies);
        if tallies.is_empty() {
            return;
        }
        let families: [(&str, &str, Read); 3] = [
            (
                "serval_payload_records",
                "Requests sampled for a payload log and queued for writing, by endpoint",
                |t| t.accepted.load(Ordering::Relaxed),
            ),
            (
                "serval_payload_written",
                "Payload log records in complete Parquet files, by endpoint",
                |t| t.written.load(Ordering::Relaxed),
            ),
            (
                "serval_payload_dropped",
                "Payload log records dropped: the writer's buffer was full (requests never wait for it) or a file could not be written, by endpoint",
                |t| t.dropped.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, read) in families {
            let family = Family::<EndpointLabel, Counter>::default();
            for (endpoint, tally) in tallies.iter() {
                family
                    .get_or_create(&EndpointLabel {
                        endpoint: endpoint.clone(),
                    })
                    .inc_by(read(tally));
            }
            registry.register(name, help, family);
        }
    }
}

/// Reads one counter of a tally.
type Read = fn(&Tally) -> u64;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

/// The log that applies to `url`: the one for the url itself, else for its name (all its
/// versions), else the longest matching prefix.
fn most_specific<'a>(
    logs: impl Iterator<Item = &'a PayloadLog>,
    url: &str,
) -> Option<&'a PayloadLog> {
    logs.filter(|log| log.matches(url)).max_by_key(|log| {
        let exact = !log.endpoint.ends_with('*');
        (exact && log.endpoint == url, exact, log.endpoint.len())
    })
}

/// The columns of an endpoint's payload files: a native model's V2 inputs and outputs, or the
/// body and reply as text; how many columns are inputs; `true` for tensors.
fn schema_of(endpoint: &Endpoint) -> (serval_monitor::Schema, usize, bool) {
    let native = matches!(endpoint.runner, Runner::Native(_));
    let signature = &endpoint.signature;
    if !native || signature.inputs.is_empty() {
        let text = |name: &str| Column {
            name: name.to_string(),
            kind: Kind::Text,
        };
        return (vec![text("in_body"), text("out_body")].into(), 1, false);
    }
    let column = |prefix: &str, name: &str, datatype: Datatype| Column {
        name: format!("{prefix}{name}"),
        kind: kind_of(datatype),
    };
    let columns: Vec<Column> = signature
        .inputs
        .iter()
        .map(|m| column("in_", &m.name, m.datatype))
        .chain(
            signature
                .outputs
                .iter()
                .map(|m| column("out_", &m.name, m.datatype)),
        )
        .collect();
    (columns.into(), signature.inputs.len(), true)
}

fn kind_of(datatype: Datatype) -> Kind {
    match datatype {
        Datatype::Bool => Kind::Bools,
        Datatype::Fp16 | Datatype::Bf16 | Datatype::Fp32 | Datatype::Fp64 => Kind::Floats,
        Datatype::Bytes => Kind::Texts,
        _ => Kind::Ints,
    }
}

/// A tensor's elements as a column value of `kind` (integers become numbers in a float
/// column; anything else that does not fit is null).
fn value_of(elements: &Elements, kind: Kind) -> Value {
    let value = match elements {
        Elements::Bool(v) => Value::Bools(v.clone()),
        Elements::U8(v) => Value::Ints(v.iter().map(|&x| i64::from(x)).collect()),
        Elements::U16(v) => Value::Ints(v.iter().map(|&x| i64::from(x)).collect()),
        Elements::U32(v) => Value::Ints(v.iter().map(|&x| i64::from(x)).collect()),
        Elements::U64(v) => Value::Ints(v.iter().map(|&x| x.min(i64::MAX as u64) as i64).collect()),
        Elements::I8(v) => Value::Ints(v.iter().map(|&x| i64::from(x)).collect()),
        Elements::I16(v) => Value::Ints(v.iter().map(|&x| i64::from(x)).collect()),
        Elements::I32(v) => Value::Ints(v.iter().map(|&x| i64::from(x)).collect()),
        Elements::I64(v) => Value::Ints(v.clone()),
        Elements::F16(v) => Value::Floats(
            v.iter()
                .map(|&x| f64::from(half::f16::from_bits(x)))
                .collect(),
        ),
        Elements::Bf16(v) => Value::Floats(
            v.iter()
                .map(|&x| f64::from(half::bf16::from_bits(x)))
                .collect(),
        ),
        Elements::F32(v) => Value::Floats(v.iter().map(|&x| f64::from(x)).collect()),
        Elements::F64(v) => Value::Floats(v.clone()),
        Elements::Bytes(v) => Value::Texts(
            v.iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect(),
        ),
    };
    match (value, kind) {
        (Value::Ints(v), Kind::Floats) => Value::Floats(v.into_iter().map(|x| x as f64).collect()),
        (value, kind) if value.fits(kind) => value,
        _ => Value::Null,
    }
}

/// Whether a sampled request may be copied for its log: the copy (about what the request was
/// charged for decoding) is charged to its memory reservation first, and a record larger than
/// the writer's buffer could ever take is not made. Otherwise the record is dropped and counted.
pub fn room(route: &LogRoute, memory: &mut crate::memory::Reservation) -> bool {
    let copy = memory.charged();
    if copy <= serval_monitor::MAX_RECORD_BYTES && memory.charge(copy).is_ok() {
        return true;
    }
    route.tally.dropped.fetch_add(1, Ordering::Relaxed);
    false
}

/// The text columns of a request to an endpoint with Python code.
pub fn body_text(input: &Input) -> Value {
    match input {
        Input::Body(Payload::Json(value)) => Value::Text(value.to_string()),
        Input::Body(Payload::Bytes(bytes)) => {
            Value::Text(String::from_utf8_lossy(bytes).into_owned())
        }
        Input::Body(Payload::Rows(_) | Payload::InvalidRows(_)) => Value::Null,
        Input::Tensors { inputs, .. } => Value::Text(tensors_text(inputs)),
    }
}

/// The reply as text.
fn reply_text(output: &Output) -> Value {
    Value::Text(match output {
        Output::Body(value) => value.to_string(),
        Output::Json(text) => String::from_utf8_lossy(text).into_owned(),
        Output::Text(text) => String::from_utf8_lossy(&text.to_vec()).into_owned(),
        Output::Tensors(outputs) => tensors_text(outputs),
    })
}

/// V2 tensors as one JSON object, `{name: [values…]}`.
fn tensors_text(tensors: &[InferTensor]) -> String {
    Json::Object(
        tensors
            .iter()
            .map(|t| (t.name.clone(), Json::Array(t.data.json_values())))
            .collect(),
    )
    .to_string()
}

/// What the pipeline knows of a logged request when it is answered.
pub struct Answered<'a> {
    pub endpoint: &'a Endpoint,
    pub protocol: &'static str,
    pub request_id: Option<String>,
    pub arrived: Instant,
    /// `in_body` of an endpoint with Python code.
    pub body: Value,
    pub captured: Captured,
    pub output: Result<&'a Output, u16>,
}

/// The record of a logged request.
pub fn record(route: &LogRoute, answered: Answered<'_>) -> Record {
    let took = answered.arrived.elapsed();
    let time = SystemTime::now()
        .checked_sub(took)
        .unwrap_or(SystemTime::UNIX_EPOCH)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let values = if route.tensors {
        let inputs = tensors_by_name(answered.captured.inputs.into_iter().map(|t| NamedOutput {
            name: t.name,
            value: OutputValue::Tensor(t.tensor),
        }));
        let outputs = tensors_by_name(answered.captured.outputs.into_iter());
        route
            .schema
            .iter()
            .enumerate()
            .map(|(i, column)| {
                // `in_<name>` for the first `inputs` columns, then `out_<name>`.
                let (found, name) = if i < route.inputs {
                    (&inputs, column.name.get(3..).unwrap_or(""))
                } else {
                    (&outputs, column.name.get(4..).unwrap_or(""))
                };
                found
                    .get(name)
                    .map_or(Value::Null, |e| value_of(e, column.kind))
            })
            .collect()
    } else {
        let reply = answered.output.ok().map_or(Value::Null, reply_text);
        vec![answered.body, reply]
    };
    Record {
        time_us: i64::try_from(time.as_micros()).unwrap_or(i64::MAX),
        endpoint: answered.endpoint.url.clone(),
        version: answered.endpoint.version.clone(),
        request_id: answered.request_id.unwrap_or_else(random_id),
        protocol: answered.protocol,
        status: answered.output.err().unwrap_or(200),
        latency_ms: took.as_secs_f64() * 1e3,
        values,
    }
}

/// A random (version 4) UUID for a request without an id of its own, from the thread's fast
/// generator (the system's would be a system call per record).
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    fastrand::fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// Engine tensors by name as V2 elements (a model's maps of class probabilities as V2 gives
/// them).
fn tensors_by_name(tensors: impl Iterator<Item = NamedOutput>) -> HashMap<String, Elements> {
    tensors
        .filter_map(|t| InferTensor::from_engine(t).ok())
        .map(|t| (t.name, t.data))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(endpoint: &str) -> PayloadLog {
        PayloadLog {
            endpoint: endpoint.into(),
            sample: 1.0,
            destination: "file:///tmp".into(),
            max_file_mb: 1,
            max_file_seconds: 1,
            created_ms: 0,
        }
    }

    #[test]
    fn the_most_specific_log_applies() {
        let logs = [log("ir*"), log("iris"), log("iris/2"), log("i*")];
        let pick = |url| most_specific(logs.iter(), url).map(|l| l.endpoint.as_str());
        assert_eq!(pick("iris/2"), Some("iris/2"));
        assert_eq!(pick("iris/1"), Some("iris"));
        assert_eq!(pick("iris"), Some("iris"));
        assert_eq!(pick("irises"), Some("ir*"));
        assert_eq!(pick("imdb"), Some("i*"));
        assert_eq!(pick("price"), None);
    }

    #[test]
    fn values_take_their_column_type() {
        assert_eq!(
            value_of(&Elements::I32(vec![1, 2]), Kind::Floats),
            Value::Floats(vec![1.0, 2.0])
        );
        assert_eq!(
            value_of(&Elements::F32(vec![0.5]), Kind::Floats),
            Value::Floats(vec![0.5])
        );
        assert_eq!(
            value_of(&Elements::Bytes(vec![b"a".to_vec()]), Kind::Floats),
            Value::Null
        );
        assert_eq!(
            value_of(&Elements::U64(vec![u64::MAX]), Kind::Ints),
            Value::Ints(vec![i64::MAX])
        );
    }
}
