//! A loaded endpoint and what runs it: the [`Endpoint`] the routing table holds, its [`Runner`]
//! (chosen when it loaded: a native model, Python workers, Python around a native model, or a
//! V2 gRPC server it forwards to), and [`run`], which serves one decoded request on it within its
//! deadline — V2 inputs checked against the [`Signature`], the runner, output selection, metrics
//! and clearml sampling. The front door (`pipeline`) resolves the endpoint and calls [`run`];
//! nothing here knows the routing table or a protocol.

mod batch;
mod forward;
mod native;
mod python;
mod signature;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use serde_json::{Map, Value};
use serval_core::ReplyText;
use serval_engine::NamedTensor;
use serval_python::Pool;
use serval_store::EngineKind;
use tokio::time::Instant;

pub use batch::{Batching, DEFAULT_MAX_QUEUE, Runner as ModelRunner};
pub use forward::{Upstream, model_name};
pub use native::NativeModel;
pub use signature::{Checks, Signature, TensorMeta, select_outputs};

use crate::error::Error;
use crate::metrics::{EndpointMetrics, Failure, Monitor, Protocol};
use crate::wire::InferTensor;

/// A clearml request body after decoding.
#[derive(Debug, Clone)]
pub enum Payload {
    Json(Value),
    Bytes(Bytes),
    /// A body of rows already read into a native model's input (its only top-level key, if
    /// any, is `instances`, which no metric rule of the endpoint reads).
    Rows(NamedTensor),
    /// Rows the endpoint's model cannot take, found while reading them: reported by the pipeline
    /// as the endpoint's invalid input (422), so its metrics count it.
    InvalidRows(String),
}

/// What a request carries.
#[derive(Debug)]
pub enum Input {
    /// A clearml body; the reply is a JSON body.
    Body(Payload),
    /// V2 tensors; the reply is tensors. `outputs` selects outputs by name (`None`: all);
    /// `parameters` are the request's (Python code sees them as `state["parameters"]`).
    Tensors {
        inputs: Vec<InferTensor>,
        outputs: Option<Vec<String>>,
        parameters: Map<String, Value>,
    },
}

/// What a request produced.
#[derive(Debug)]
pub enum Output {
    /// A clearml reply.
    Body(Value),
    /// A clearml reply already written as JSON text (a native model's default reply: no tree).
    Json(Vec<u8>),
    /// A large native model's default reply, written a chunk at a time as it is sent.
    Text(ReplyText),
    Tensors(Vec<InferTensor>),
}

impl Output {
    /// A clearml reply as a JSON tree (`None` for tensors).
    pub fn into_body(self) -> Option<Value> {
        match self {
            Output::Body(value) => Some(value),
            Output::Json(text) => serde_json::from_slice(&text).ok(),
            Output::Text(text) => serde_json::from_slice(&text.to_vec()).ok(),
            Output::Tensors(_) => None,
        }
    }
}

/// A sampled request's model inputs and outputs as the native model took and made them, for
/// its payload log (left empty by endpoints that run in Python).
#[derive(Debug, Default)]
pub struct Captured {
    pub inputs: Vec<NamedTensor>,
    pub outputs: Vec<serval_engine::NamedOutput>,
}

/// What sees a request's inputs besides the model (drift statistics): a native model's input
/// tensors, or the JSON body an endpoint's Python code gets.
pub trait Observer: Send + Sync {
    fn observe(&self, inputs: &[NamedTensor]);
    fn observe_body(&self, body: &Value);
}

/// What watches a request on its way through a native model: a payload log's copy of its inputs
/// and outputs, drift statistics of its inputs.
#[derive(Default)]
pub struct Watch<'a> {
    pub capture: Option<&'a mut Captured>,
    pub observer: Option<&'a dyn Observer>,
}

/// Per request: when it must be done by and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub deadline: Instant,
    /// The whole budget, for the timeout message.
    pub timeout: Duration,
    pub protocol: Protocol,
    /// The client asked for the prediction's explanation (per-feature contributions).
    pub explain: bool,
    /// The most values a request may carry (`--max-values`): an explanation is refused before it
    /// is computed when it would hold more.
    pub max_values: usize,
}

impl Context {
    /// A request that may take `timeout` from now.
    pub fn new(protocol: Protocol, timeout: Duration) -> Context {
        Context {
            deadline: Instant::now() + timeout,
            timeout,
            protocol,
            explain: false,
            max_values: usize::MAX,
        }
    }
}

/// What runs an endpoint, chosen when it loads.
pub enum Runner {
    /// A native model in-process (XGBoost, LightGBM, ONNX).
    Native(NativeModel),
    /// Everything in the endpoint's Python workers (sklearn, custom engines, or the model object
    /// `Preprocess.load` returned).
    Python(Arc<Pool>),
    /// `preprocess` and `postprocess` in Python around a native model in the server (the model's
    /// library in Python when `preprocess` returns data only it understands).
    PythonNative { pool: Arc<Pool>, model: NativeModel },
    /// A `triton` endpoint forwarded to a V2 gRPC server, with the endpoint's `preprocess` and
    /// `postprocess` around it when it has code.
    Forward {
        pool: Option<Arc<Pool>>,
        upstream: Upstream,
    },
}

impl Runner {
    pub fn pool(&self) -> Option<&Arc<Pool>> {
        match self {
            Runner::Native(_) => None,
            Runner::Python(pool) | Runner::PythonNative { pool, .. } => Some(pool),
            Runner::Forward { pool, .. } => pool.as_ref(),
        }
    }

    /// Where the endpoint's work runs: `native`, `python`, `python+native` or `forwarded`.
    pub fn runs(&self) -> &'static str {
        match self {
            Runner::Native(_) => "native",
            Runner::Python(_) => "python",
            Runner::PythonNative { .. } => "python+native",
            Runner::Forward { .. } => "forwarded",
        }
    }

    /// How the endpoint runs, as the status shows it.
    pub fn describe(&self, kind: EngineKind) -> String {
        let native = |m: &NativeModel| m.describe();
        match self {
            Runner::Native(model) => native(model),
            Runner::Python(pool) if pool.custom_model() => {
                "python worker (the model returned by Preprocess.load)".to_string()
            }
            Runner::Python(_) => match kind {
                EngineKind::Sklearn => "python worker (scikit-learn model)".to_string(),
                EngineKind::Triton => {
                    "python worker (the triton model through its library)".to_string()
                }
                kind => format!("python worker ({kind})"),
            },
            Runner::Forward { pool, upstream } => format!(
                "forwarded to the V2 gRPC server at {} as model '{}'{}",
                upstream.address,
                upstream.model,
                if pool.is_some() {
                    " (python pre/postprocess)"
                } else {
                    ""
                }
            ),
            Runner::PythonNative { model, .. } if kind == EngineKind::Sklearn => format!(
                "python pre/postprocess + {} (predict in the server; parameters read from the pickle)",
                native(model)
            ),
            Runner::PythonNative { model, .. } if kind == EngineKind::Triton => {
                format!("python pre/postprocess + {} (triton engine)", native(model))
            }
            Runner::PythonNative { model, .. } => format!(
                "python pre/postprocess + {} (the {kind} library in Python when preprocess \
                 returns data that is not array-like)",
                native(model)
            ),
        }
    }
}

/// A loaded endpoint, ready to answer requests.
pub struct Endpoint {
    /// `name` or `name/version`.
    pub url: String,
    pub version: Option<String>,
    pub kind: EngineKind,
    pub runner: Runner,
    /// V2 model metadata and input checks.
    pub signature: Signature,
    /// The endpoint's `--input-name` list (feature order for named features in clearml bodies).
    pub input_names: Vec<String>,
    /// The endpoint's `--output-name` list (the outputs a `triton` endpoint hands `postprocess`).
    pub output_names: Vec<String>,
    /// Request metrics (`None` when metrics are off).
    pub metrics: Option<EndpointMetrics>,
    /// clearml statistics of this url (sampling, variables); set at every table build.
    pub monitor: ArcSwapOption<Monitor>,
    /// Requests whose model ran in Python because preprocess returned non-array data.
    pub library_requests: AtomicU64,
    /// The endpoint's in-flight bound (admission control).
    pub admission: Admission,
}

/// A bound on requests in flight: past it a request is refused at once (429), not queued.
/// Nobody waits for a place, so one counter does what a semaphore would, without the lock a
/// semaphore takes to give a permit back (and a cache line fewer bouncing between the worker
/// threads on every request).
pub struct Admission {
    in_use: AtomicUsize,
    bound: usize,
}

/// A place taken in an [`Admission`], given back when dropped.
pub struct Place<'a>(&'a Admission);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.in_use.fetch_sub(1, Ordering::Release);
    }
}

impl Admission {
    pub fn new(bound: usize) -> Self {
        Admission {
            in_use: AtomicUsize::new(0),
            bound: bound.max(1),
        }
    }

    /// A place, or `None` when all are taken.
    pub fn take(&self) -> Option<Place<'_>> {
        let mut in_use = self.in_use.load(Ordering::Relaxed);
        loop {
            if in_use >= self.bound {
                return None;
            }
            match self.in_use.compare_exchange_weak(
                in_use,
                in_use + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Place(self)),
                Err(now) => in_use = now,
            }
        }
    }

    /// Places taken now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// A place for one request on `url`, held until it is dropped.
    pub fn admit(&self, url: &str) -> Result<Place<'_>, Error> {
        self.take().ok_or_else(|| {
            Error::Overloaded(format!(
                "endpoint '{url}' has {} requests in flight, its limit (serve --max-in-flight-per-endpoint); retry later",
                self.bound
            ))
        })
    }
}

/// What executing a request produced, besides the output.
struct Executed {
    output: Output,
    /// What `collect_custom_statistics_fn` collected (Python endpoints, sampled requests).
    stats: Option<Map<String, Value>>,
}

/// Index of each stage in [`crate::metrics::STAGES`].
const STAGE_QUEUE: usize = 0;
const STAGE_INFERENCE: usize = 2;

/// Serves one decoded request on a resolved endpoint (its admission already taken) within
/// `ctx.deadline`, recording its metrics: outcome and duration always, clearml variables when the
/// request is sampled.
/// `watch` sees a native model's inputs (and outputs).
pub async fn run(
    endpoint: &Endpoint,
    input: Input,
    ctx: Context,
    watch: Watch<'_>,
) -> Result<Output, Error> {
    let start = Instant::now();
    // Only a sampled request keeps the monitor (and pays for its reference count).
    let monitor = match &*endpoint.monitor.load() {
        Some(monitor) if monitor.sample(fastrand::f64()) => Some(monitor.clone()),
        _ => None,
    };
    let sampled = monitor.is_some();
    let request_values = match (&monitor, &input) {
        (Some(m), Input::Body(Payload::Json(body))) => m.body_values(body),
        (Some(m), Input::Tensors { inputs, .. }) => m.body_values(&tensors_object(inputs, false)),
        _ => Vec::new(),
    };
    // Dropped unfinished = the client went away: counted as cancelled.
    struct Unfinished<'a>(Option<&'a Endpoint>, Instant, Protocol);
    impl Drop for Unfinished<'_> {
        fn drop(&mut self) {
            if let Some(metrics) = self.0.and_then(|e| e.metrics.as_ref()) {
                let error = Error::Cancelled;
                metrics.finished(self.1.elapsed(), self.2, Err(Failure::from(&error)));
            }
        }
    }
    let mut unfinished = Unfinished(Some(endpoint), start, ctx.protocol);
    let explain = ctx.explain;
    let result =
        match crate::deadline::within(ctx.deadline, execute(endpoint, input, ctx, sampled, watch))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(ctx.timeout)),
        };
    unfinished.0 = None;
    let took = start.elapsed();
    if let Some(metrics) = &endpoint.metrics {
        let outcome = result.as_ref().map(|_| ()).map_err(Failure::from);
        if explain {
            metrics.explained(ctx.protocol, outcome.as_ref().map_err(|f| f.kind).err());
        }
        metrics.finished(took, ctx.protocol, outcome);
    }
    let executed = result?;
    if let Some(monitor) = monitor {
        let reply = match &executed.output {
            Output::Body(value) => std::borrow::Cow::Borrowed(value),
            Output::Json(text) => {
                std::borrow::Cow::Owned(serde_json::from_slice(text).unwrap_or(Value::Null))
            }
            Output::Text(text) => std::borrow::Cow::Owned(
                serde_json::from_slice(&text.to_vec()).unwrap_or(Value::Null),
            ),
            Output::Tensors(outputs) => std::borrow::Cow::Owned(tensors_object(outputs, false)),
        };
        monitor.record(
            took.as_secs_f64(),
            &request_values,
            &reply,
            executed.stats.as_ref(),
        );
    }
    Ok(executed.output)
}

async fn execute(
    endpoint: &Endpoint,
    input: Input,
    ctx: Context,
    sampled: bool,
    watch: Watch<'_>,
) -> Result<Executed, Error> {
    let explain = ctx.explain;
    let requested = match &input {
        Input::Tensors {
            inputs, outputs, ..
        } => {
            endpoint.signature.check_inputs(&endpoint.url, inputs)?;
            // The explanation is an output of its own, whatever else is asked for.
            let outputs = outputs.as_ref().map(|names| {
                names
                    .iter()
                    .filter(|n| !(explain && n.as_str() == serval_engine::CONTRIBUTIONS))
                    .cloned()
                    .collect::<Vec<_>>()
            });
            if let Some(names) = &outputs {
                check_requested_outputs(endpoint, names)?;
            }
            Some(outputs)
        }
        Input::Body(_) => None,
    };
    if explain
        && !matches!(
            endpoint.runner,
            Runner::Native(_) | Runner::PythonNative { .. }
        )
    {
        return Err(Error::BadRequest(format!(
            "endpoint '{}' does not explain its predictions: contributions come from XGBoost and \
             LightGBM models that serval runs itself",
            endpoint.url
        )));
    }
    // The Python and forwarding runners' futures are boxed: they are several kilobytes (a
    // native model's is under one), and every request's future is as large as its largest
    // branch and copied as it is built and boxed. One allocation is nothing beside a round trip
    // to a worker or an upstream.
    let executed = match &endpoint.runner {
        Runner::Native(model) => Executed {
            output: native::run(endpoint, model, input, ctx, watch).await?,
            stats: None,
        },
        Runner::Python(pool) => {
            Box::pin(python::run(endpoint, pool, None, input, ctx, sampled)).await?
        }
        Runner::PythonNative { pool, model } => {
            let between = Some(python::Between::Native(model));
            Box::pin(python::run(endpoint, pool, between, input, ctx, sampled)).await?
        }
        Runner::Forward {
            pool: Some(pool),
            upstream,
        } => {
            let between = Some(python::Between::Forward(upstream));
            Box::pin(python::run(endpoint, pool, between, input, ctx, sampled)).await?
        }
        Runner::Forward {
            pool: None,
            upstream,
        } => Executed {
            output: Box::pin(forward::run(endpoint, upstream, input, ctx.deadline)).await?,
            stats: None,
        },
    };
    Ok(match (executed.output, requested) {
        (Output::Tensors(mut outputs), Some(requested)) => {
            let contributions = explain
                .then(|| {
                    let at = outputs
                        .iter()
                        .position(|o| o.name == serval_engine::CONTRIBUTIONS)?;
                    Some(outputs.remove(at))
                })
                .flatten();
            let mut selected = select_outputs(&endpoint.url, outputs, requested.as_deref())?;
            selected.extend(contributions);
            Executed {
                output: Output::Tensors(selected),
                stats: executed.stats,
            }
        }
        (output, _) => Executed {
            output,
            stats: executed.stats,
        },
    })
}

/// Requested outputs are checked before the model runs when the endpoint declares its outputs.
fn check_requested_outputs(endpoint: &Endpoint, names: &[String]) -> Result<(), Error> {
    let declared = &endpoint.signature.outputs;
    if endpoint.signature.checks == Checks::None || declared.is_empty() {
        return Ok(());
    }
    match names
        .iter()
        .find(|n| !declared.iter().any(|d| &d.name == *n))
    {
        Some(unknown) => Err(Error::BadRequest(format!(
            "model '{}' has no output '{unknown}' (its outputs: {})",
            endpoint.url,
            declared
                .iter()
                .map(|d| format!("'{}'", d.name))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        None => Ok(()),
    }
}

/// Tensors as one JSON object, `{name: value}` (a one-element tensor as its element), for clearml
/// metric variables and Python code.
fn tensors_object(tensors: &[InferTensor], nested: bool) -> Value {
    Value::Object(
        tensors
            .iter()
            .map(|t| {
                let value = if nested {
                    // One element of shape `[]` or `[1]` is the element itself, as a JSON body
                    // holds it (`{"x0": 5.1}`); other shapes are nested lists.
                    match t.shape.as_slice() {
                        [] | [1] => t.data.json_values().pop().unwrap_or(Value::Null),
                        _ => t.to_json(),
                    }
                } else {
                    let mut values = t.data.json_values();
                    if values.len() == 1 {
                        values.pop().unwrap_or(Value::Null)
                    } else {
                        Value::Array(values)
                    }
                };
                (t.name.clone(), value)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_refuses_past_its_bound_and_takes_back_what_is_given() {
        let admission = Admission::new(2);
        let first = admission.admit("e").unwrap();
        let second = admission.take().unwrap();
        assert_eq!(admission.in_use(), 2);
        let refused = admission.admit("e").err().unwrap();
        assert!(matches!(refused, Error::Overloaded(ref m) if m.contains("2 requests in flight")));
        drop(first);
        assert_eq!(admission.in_use(), 1);
        let third = admission.take().unwrap();
        drop((second, third));
        assert_eq!(admission.in_use(), 0);
        // Many threads at once never hold more places than the bound.
        let admission = Admission::new(3);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if let Some(_place) = admission.take() {
                            most.fetch_max(admission.in_use(), Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert!(most.load(Ordering::Relaxed) <= 3);
        assert_eq!(admission.in_use(), 0);
    }
}
