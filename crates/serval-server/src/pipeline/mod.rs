//! The front door: the one way in for a request of any protocol (clearml `/serve`, V2 REST, V2
//! gRPC, `send_request` from Python code). A protocol adapter only translates; everything a
//! request must pass happens here, in this order, once:
//!
//! 1. [`Door::admit`]: the server-wide in-flight bound (else `Overloaded`) and the API key
//!    (else `Unauthenticated`) — before the adapter reads anything of the request but its headers;
//! 2. [`Admitted::serve`]: the key's scope for the endpoint name (`Forbidden`), resolution in the
//!    routing table (canary, version, highest version), the endpoint's in-flight bound, the
//!    request's budget (bytes, values, deadline) and its memory [`Reservation`] (made by
//!    [`Admitted::reservation`], charged by the adapter for what it reads) handed to the
//!    adapter's [`Decode`], decoding, and the run on the endpoint's runner
//!    ([`crate::endpoint::run`]). The reservation comes back in [`Served`]: the adapter holds it
//!    until the reply is sent.
//!
//! Every outcome is counted: refusals before an endpoint is known under `endpoint=""`, the rest
//! under the endpoint, always labelled by protocol. Errors are [`Error`]s; each adapter maps them
//! to its own codes in one place.

mod compare;
pub mod drift;
pub mod payload;
pub mod shadow;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serval_store::ApiKey;
use tokio::time::Instant;

use crate::endpoint::{Admission, Place};
pub use crate::endpoint::{
    Context, Endpoint, Input, Observer, Output, Payload, Runner, TensorMeta,
};
pub use crate::error::{Error, redact};
pub use crate::memory::{MemoryPool, Reservation};
pub use crate::metrics::Protocol;
use crate::metrics::{Failure, Metrics};
use crate::table::RoutingTable;

/// What the front door bounds, from the server's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests in flight in the whole server (`serve --max-in-flight`).
    pub max_in_flight: usize,
    /// Largest request body, before and after decompression (`serve --body-limit`).
    pub body_limit: usize,
    /// Most values one request may decode into (`serve --max-values`).
    pub max_values: usize,
    /// Most memory one request may make the server build (`serve --max-request-memory`).
    pub max_request_memory: usize,
    /// Most memory all requests in progress may hold together (`serve --max-memory-in-flight`).
    pub max_memory_in_flight: usize,
    /// Longest a request may take (`serve --request-timeout`).
    pub request_timeout: Duration,
    /// API keys are required (`serve --require-auth`).
    pub require_auth: bool,
}

/// What a request may cost while it is decoded: checked by the adapter's [`Decode`] before it
/// allocates (memory is charged to the request's [`Reservation`]).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub body_limit: usize,
    pub max_values: usize,
    pub deadline: Instant,
    /// The request's whole time budget (for the timeout message).
    pub timeout: Duration,
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// The value of an `Authorization` header (HTTP) or `authorization` metadata (gRPC), if any.
    Header(Option<&'a str>),
    /// A call from an endpoint's own Python code (`send_request`), inside a request that was
    /// admitted already: no key, no server-wide bound.
    Internal,
    /// A shadow's copy of a request that was answered already: no key, no server-wide bound
    /// (the shadow worker bounds its copies), and never copied again.
    Shadow,
}

/// How an adapter turns its request into the pipeline's [`Input`], once the endpoint is known.
pub trait Decode: Send + Sized {
    /// What the adapter keeps for encoding the reply (a V2 request id, binary output flags, …).
    type Extra: Send;

    /// Reads and decodes the request for `endpoint`, within `budget`, charging `memory` before
    /// it allocates; gives the reservation back with the input.
    fn decode(
        self,
        endpoint: &Arc<Endpoint>,
        budget: &Budget,
        memory: Reservation,
    ) -> impl Future<Output = Result<Decoded<Self::Extra>, Error>> + Send;

    /// The name resolved to nothing: an error of the request itself to report instead of that,
    /// if any. clearml reads the body first and reports one that is not JSON before an unknown
    /// endpoint; the other protocols do not look.
    fn precedes(
        self,
        _budget: &Budget,
        _memory: Reservation,
    ) -> impl Future<Output = Option<Error>> + Send {
        std::future::ready(None)
    }

    /// Whether the request asks for its prediction's explanation, as far as the adapter knows
    /// before decoding (clearml's `?explain=true`). V2 asks with `parameters.explain`, read from
    /// the decoded input.
    fn explain(&self) -> Result<bool, Error> {
        Ok(false)
    }

    /// The request's key for a sticky canary, read where `source` says; `None`: the request has
    /// none (it gets the random split). A body field is read here: the body, charged to
    /// `memory`, is kept for `decode`. Asked only of requests to sticky canaries.
    fn sticky_key(
        &mut self,
        _source: &serval_store::Sticky,
        _budget: &Budget,
        memory: Reservation,
    ) -> impl Future<Output = Result<(Option<Vec<u8>>, Reservation), Error>> + Send {
        std::future::ready(Ok((None, memory)))
    }

    /// The id the client gave its request (V2's `id`), for the payload log; `None`: one is made.
    fn request_id(_extra: &Self::Extra) -> Option<String> {
        None
    }

    /// The HTTP status the adapter answers `error` with (for the payload log).
    fn status(error: &Error) -> u16 {
        error.http_status()
    }

    /// The request kept for a shadow's copy (decoded again for the shadow's target after this
    /// request was answered); `None`: the adapter cannot copy it. A body not read yet is read
    /// here (charged to `memory`) and put back for `decode`. Asked only of requests a shadow
    /// sampled.
    fn replay(
        &mut self,
        _budget: &Budget,
        memory: Reservation,
    ) -> impl Future<Output = Result<(Option<Arc<dyn shadow::Replay>>, Reservation), Error>> + Send
    {
        std::future::ready(Ok((None, memory)))
    }
}

/// `parameters.explain` of a V2 request: absent is false; anything but a boolean is refused.
fn explain_parameter(input: &Input) -> Result<bool, Error> {
    let Input::Tensors { parameters, .. } = input else {
        return Ok(false);
    };
    match parameters.get("explain") {
        None => Ok(false),
        Some(serde_json::Value::Bool(asked)) => Ok(*asked),
        Some(other) => Err(Error::BadRequest(format!(
            "parameters.explain must be true or false, not {other}"
        ))),
    }
}

/// What resolving a request found.
struct Resolved {
    endpoint: Result<Arc<Endpoint>, Error>,
    /// The shadows that copy it.
    copies: Vec<Arc<crate::table::ShadowRoute>>,
    /// The payload log that logs it.
    log: Option<Arc<crate::table::LogRoute>>,
    /// The drift statistics its inputs feed.
    drift: Option<Arc<dyn crate::endpoint::Observer>>,
}

/// What a [`Decode`] made of its request.
pub struct Decoded<E> {
    pub input: Input,
    pub extra: E,
    /// What the request has been charged so far.
    pub memory: Reservation,
}

/// A request that went through: the endpoint that answered (its version names the reply), the
/// output, what the adapter's decoder kept, and the request's memory reservation (hold it until
/// the reply is sent).
pub struct Served<E> {
    pub endpoint: Arc<Endpoint>,
    pub output: Output,
    pub extra: E,
    pub memory: Reservation,
}

/// The front door of one server: the routing table it serves from and the bounds it keeps.
pub struct Door {
    table: ArcSwap<RoutingTable>,
    admission: Admission,
    memory: Arc<MemoryPool>,
    limits: Limits,
    metrics: Option<Arc<Metrics>>,
    /// Copies of requests to shadow targets, and what they found.
    pub shadows: shadow::Shadows,
    /// Sampled requests written to payload logs.
    pub payloads: payload::PayloadLogs,
    /// Live drift statistics of endpoints with a reference.
    pub drifts: drift::Drifts,
}

impl Door {
    pub fn new(limits: Limits, metrics: Option<Arc<Metrics>>) -> Door {
        Door {
            table: ArcSwap::from_pointee(RoutingTable::default()),
            admission: Admission::new(limits.max_in_flight),
            memory: MemoryPool::new(limits.max_memory_in_flight),
            limits,
            metrics,
            shadows: shadow::Shadows::new(limits.request_timeout),
            payloads: payload::PayloadLogs::default(),
            drifts: drift::Drifts::default(),
        }
    }

    /// The routing table served now (a cheap guard: do not hold it across an await).
    pub fn table(&self) -> arc_swap::Guard<Arc<RoutingTable>> {
        self.table.load()
    }

    /// The routing table served now, to keep.
    pub fn table_full(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Serves `table` from now on; requests in flight keep the endpoints they resolved.
    pub fn swap(&self, table: Arc<RoutingTable>) {
        self.table.store(table);
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The memory all requests in progress hold together.
    pub fn memory(&self) -> &MemoryPool {
        &self.memory
    }

    /// An empty memory reservation within one request's budget (for what is read outside the
    /// front door, such as the repository index's body).
    pub fn reservation(&self) -> Reservation {
        Reservation::new(self.memory.clone(), self.limits.max_request_memory)
    }

    /// Requests admitted and not finished (the server-wide bound's permits in use).
    pub fn in_flight(&self) -> usize {
        self.admission.in_use()
    }

    /// The key a credential stands for: `Ok(None)` when keys are not required, else the current
    /// key or `Unauthenticated`.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Option<ApiKey>, Error> {
        if !self.limits.require_auth {
            return Ok(None);
        }
        let table = self.table.load();
        crate::auth::authenticate(&table.api_keys, authorization).map(Some)
    }

    /// Step 1: the server-wide bound, then the key. A refusal is counted (`endpoint=""`).
    pub fn admit(
        &self,
        protocol: Protocol,
        credential: Credential<'_>,
    ) -> Result<Admitted<'_>, Error> {
        let (permit, key) = match credential {
            Credential::Internal | Credential::Shadow => (None, None),
            Credential::Header(authorization) => {
                let Some(permit) = self.admission.take() else {
                    let error = Error::Overloaded(format!(
                        "the server has {} requests in flight, its limit (serve --max-in-flight); retry later",
                        self.limits.max_in_flight
                    ));
                    return Err(self.refused(protocol, error));
                };
                let key = self
                    .authenticate(authorization)
                    .map_err(|e| self.refused(protocol, e))?;
                (Some(permit), key)
            }
        };
        Ok(Admitted {
            door: self,
            protocol,
            key,
            copyable: !matches!(credential, Credential::Shadow),
            _permit: permit,
        })
    }

    /// Counts a request refused before it reached an endpoint, and gives its error back.
    fn refused(&self, protocol: Protocol, error: Error) -> Error {
        if let Some(metrics) = &self.metrics {
            metrics.unrouted(protocol, error.kind());
        }
        error
    }
}

/// A request past step 1: it holds its place in the server-wide bound until it is dropped.
pub struct Admitted<'a> {
    door: &'a Door,
    protocol: Protocol,
    /// The caller's key when keys are required.
    key: Option<ApiKey>,
    /// Shadows may copy the request (it is not a copy itself).
    copyable: bool,
    _permit: Option<Place<'a>>,
}

impl Admitted<'_> {
    /// A resolution and, when it found an endpoint, the shadows and the payload log that
    /// sample this request (a shadow's copy is neither copied nor logged).
    fn resolved(&self, table: &RoutingTable, resolved: Result<Arc<Endpoint>, Error>) -> Resolved {
        let (copies, log, drift) = match (&resolved, self.copyable) {
            (Ok(endpoint), true) => (
                table.sample_shadows(&endpoint.url),
                table.sample_log(&endpoint.url),
                table.drift(&endpoint.url),
            ),
            _ => (Vec::new(), None, None),
        };
        Resolved {
            endpoint: resolved,
            copies,
            log,
            drift,
        }
    }

    /// Counts an error the adapter found before it could name an endpoint (a gRPC message that
    /// cannot be read, say), and gives it back.
    pub fn refuse(&self, error: Error) -> Error {
        self.door.refused(self.protocol, error)
    }

    /// An empty memory reservation for this request: what the adapter reads before [`serve`]
    /// (a gRPC message, whose model name is inside) is charged to it, then it goes to `serve`.
    ///
    /// [`serve`]: Admitted::serve
    pub fn reservation(&self) -> Reservation {
        self.door.reservation()
    }

    /// Step 2: scope, resolution, the endpoint's bound, decoding within the budget and
    /// `memory`, the run.
    pub async fn serve<D: Decode>(
        self,
        name: &str,
        version: Option<&str>,
        timeout: Duration,
        memory: Reservation,
        mut decoder: D,
    ) -> Result<Served<D::Extra>, Error> {
        let mut ctx = Context::new(self.protocol, timeout);
        ctx.max_values = self.door.limits.max_values;
        let budget = Budget {
            body_limit: self.door.limits.body_limit,
            max_values: self.door.limits.max_values,
            deadline: ctx.deadline,
            timeout,
        };
        if let Some(key) = &self.key
            && !key.allows(name)
        {
            return Err(self.refuse(crate::auth::out_of_scope(name)));
        }
        let asked = match decoder.explain() {
            Ok(asked) => asked,
            Err(error) => return Err(self.refuse(error)),
        };
        // One look at the table: resolved at once, unless a sticky canary needs the request's
        // key first (read before anything else of it; the table is looked at again after).
        let first = {
            let table = self.door.table.load();
            match table.sticky(name, version) {
                None => Ok(self.resolved(&table, table.resolve(name, version, fastrand::f64()))),
                Some(source) => Err(source.clone()),
            }
        };
        let (
            Resolved {
                endpoint: resolved,
                copies,
                log,
                drift,
            },
            memory,
        ) = match first {
            Ok(resolved) => (resolved, memory),
            Err(source) => {
                let read = decoder.sticky_key(&source, &budget, memory);
                let (key, memory) = match crate::deadline::within(ctx.deadline, read).await {
                    Ok(Ok(read)) => read,
                    Ok(Err(error)) => return Err(self.refuse(error)),
                    Err(_) => return Err(self.refuse(Error::Timeout(timeout))),
                };
                let table = self.door.table.load();
                let resolved = table.resolve_keyed(name, version, fastrand::f64(), key.as_deref());
                (self.resolved(&table, resolved), memory)
            }
        };
        let endpoint = match resolved {
            Ok(endpoint) => endpoint,
            Err(error) => {
                let first =
                    crate::deadline::within(ctx.deadline, decoder.precedes(&budget, memory)).await;
                let error = match first {
                    Ok(Some(first)) => first,
                    Ok(None) => error,
                    Err(_) => Error::Timeout(timeout),
                };
                return Err(self.refuse(error));
            }
        };
        let failed = |error: Error| {
            if let Some(metrics) = &endpoint.metrics {
                metrics.finished(Duration::ZERO, self.protocol, Err(Failure::from(&error)));
            }
            error
        };
        let permit = endpoint.admission.admit(&endpoint.url).map_err(failed)?;
        let copies = if copies.is_empty() {
            copies
        } else {
            self.door.shadows.room(&endpoint.url, copies)
        };
        let (replay, memory) = if copies.is_empty() {
            (None, memory)
        } else {
            crate::deadline::within(ctx.deadline, decoder.replay(&budget, memory))
                .await
                .unwrap_or(Err(Error::Timeout(timeout)))
                .map_err(failed)?
        };
        let decoded =
            crate::deadline::within(ctx.deadline, decoder.decode(&endpoint, &budget, memory))
                .await
                .unwrap_or(Err(Error::Timeout(timeout)));
        let Decoded {
            input,
            extra,
            mut memory,
        } = decoded.map_err(failed)?;
        let log = log.filter(|route| payload::room(route, &mut memory));
        ctx.explain = asked || explain_parameter(&input).map_err(failed)?;
        let observer = drift.as_deref();
        // Python code gets the body: its fields are the features (a native model's input
        // tensor is counted where the model runs).
        if let (Some(observer), Input::Body(Payload::Json(body))) = (observer, &input)
            && !matches!(endpoint.runner, Runner::Native(_))
        {
            observer.observe_body(body);
        }
        let output = match &log {
            None => {
                let watch = crate::endpoint::Watch {
                    capture: None,
                    observer,
                };
                crate::endpoint::run(&endpoint, input, ctx, watch).await
            }
            Some(route) => {
                let arrived = ctx.deadline.checked_sub(timeout).unwrap_or(ctx.deadline);
                let mut captured = crate::endpoint::Captured::default();
                let body = if route.tensors {
                    serval_monitor::Value::Null
                } else {
                    payload::body_text(&input)
                };
                let watch = crate::endpoint::Watch {
                    capture: route.tensors.then_some(&mut captured),
                    observer,
                };
                let output = crate::endpoint::run(&endpoint, input, ctx, watch).await;
                let answered = payload::Answered {
                    endpoint: &endpoint,
                    protocol: self.protocol.label(),
                    request_id: D::request_id(&extra),
                    arrived: arrived.into_std(),
                    body,
                    captured,
                    output: output.as_ref().map_err(D::status),
                };
                self.door
                    .payloads
                    .offer(route, payload::record(route, answered));
                output
            }
        };
        drop(permit);
        let output = output?;
        if let Some(replay) = replay {
            let left = ctx.deadline.saturating_duration_since(Instant::now());
            self.door.shadows.offer(
                &endpoint.url,
                copies,
                self.protocol,
                replay,
                compare::Copy::of(&output),
                timeout.saturating_sub(left),
            );
        }
        Ok(Served {
            output,
            endpoint,
            extra,
            memory,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn door(require_auth: bool) -> (Door, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let limits = Limits {
            max_in_flight: 1,
            body_limit: 1024,
            max_values: 100,
            max_request_memory: 1 << 20,
            max_memory_in_flight: 1 << 20,
            request_timeout: Duration::from_secs(5),
            require_auth,
        };
        (Door::new(limits, Some(metrics.clone())), metrics)
    }

    struct Nothing;

    impl Decode for Nothing {
        type Extra = ();

        async fn decode(
            self,
            _: &Arc<Endpoint>,
            _: &Budget,
            _: Reservation,
        ) -> Result<Decoded<()>, Error> {
            Err(Error::Internal("not reached".into()))
        }
    }

    fn count(metrics: &Metrics, labels: &str) -> Option<f64> {
        metrics.encode(|_| {}).lines().find_map(|l| {
            l.strip_prefix(&format!("serval_requests_total{{{labels}}} "))?
                .parse()
                .ok()
        })
    }

    #[tokio::test]
    async fn internal_calls_skip_the_bound_and_the_key_and_are_counted() {
        let (door, metrics) = door(true);
        // A caller without a key is refused; an internal call needs none (nor a place in the
        // server-wide bound).
        let held = door
            .admit(Protocol::Clearml, Credential::Header(None))
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(held, Error::Unauthenticated(_)));
        let admitted = door
            .admit(Protocol::SendRequest, Credential::Internal)
            .unwrap();
        let memory = admitted.reservation();
        let error = admitted
            .serve("missing", None, Duration::from_secs(1), memory, Nothing)
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(error, Error::NotFound { .. }), "{error}");
        assert_eq!(
            count(
                &metrics,
                r#"endpoint="",version="",protocol="send_request",outcome="not_found""#
            ),
            Some(1.0)
        );
        assert_eq!(
            count(
                &metrics,
                r#"endpoint="",version="",protocol="clearml",outcome="unauthenticated""#
            ),
            Some(1.0)
        );
    }

    #[tokio::test]
    async fn the_server_wide_bound_is_held_until_the_request_is_dropped() {
        let (door, metrics) = door(false);
        let first = door
            .admit(Protocol::V2Rest, Credential::Header(None))
            .unwrap();
        assert_eq!(door.in_flight(), 1);
        let refused = door
            .admit(Protocol::V2Grpc, Credential::Header(None))
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(refused, Error::Overloaded(_)), "{refused}");
        drop(first);
        assert_eq!(door.in_flight(), 0);
        assert!(
            door.admit(Protocol::V2Grpc, Credential::Header(None))
                .is_ok()
        );
        assert_eq!(
            count(
                &metrics,
                r#"endpoint="",version="",protocol="v2_grpc",outcome="overloaded""#
            ),
            Some(1.0)
        );
    }
}
