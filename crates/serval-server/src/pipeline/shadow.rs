//! Shadow traffic: after an endpoint answered a request its shadow sampled, a copy of the request
//! goes to the shadow's target, off the request path, and the two answers are compared
//! ([`super::compare`]); [`ShadowBook`] keeps what was found.
//!
//! The request path only samples (one random number per shadow of the endpoint, before anything
//! is copied), keeps the request's bytes (a reference-counted buffer; a REST body is read before
//! decoding to keep it), copies the answer and offers the job to a bounded queue: a full queue
//! (by jobs or by bytes) drops the copy and counts it. A worker runs at most [`CONCURRENT`]
//! copies at a time through the front door as internal requests of the original protocol,
//! decoded for the target from the kept bytes (a copy is never shadowed again).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

pub use super::compare::cut;
use super::compare::{Copy, compare};
use super::{Budget, Credential, Decode, Decoded, Door, Endpoint, Error, Input, Reservation};
use crate::metrics::Protocol;
use crate::metrics::shadow::{Disagreement, Observation, Outcome, ShadowBook};
use crate::table::ShadowRoute;

/// Where a copy goes.
type Target = Arc<ShadowRoute>;

/// Jobs waiting for the worker.
const QUEUE: usize = 256;
/// Bytes of kept requests and copied answers waiting, at most.
const QUEUED_BYTES: usize = 64 << 20;
/// Copies in progress at once.
pub const CONCURRENT: usize = 8;
/// Longest text of a request or answer kept with a disagreement.
const TEXT_LIMIT: usize = 2_000;

/// What [`Replay::decode`] gives: the input for the other endpoint, and the reservation.
pub type Replayed<'a> =
    Pin<Box<dyn Future<Output = Result<(Input, Reservation), Error>> + Send + 'a>>;

/// A request kept so that it can be decoded again, for another endpoint.
pub trait Replay: Send + Sync {
    /// The request decoded for `endpoint`, within `budget`, charging `memory`.
    fn decode<'a>(
        &'a self,
        endpoint: &'a Arc<Endpoint>,
        budget: &'a Budget,
        memory: Reservation,
    ) -> Replayed<'a>;

    /// Bytes the kept request holds.
    fn size(&self) -> usize;

    /// The request as text, for a person (at most `limit` bytes).
    fn text(&self, limit: usize) -> String;
}

/// One copy to make.
struct Job {
    endpoint: String,
    target: Target,
    protocol: Protocol,
    replay: Arc<dyn Replay>,
    primary: Arc<Copy>,
    primary_took: Duration,
    size: usize,
}

/// The queue of copies, and what they found.
pub struct Shadows {
    sender: mpsc::Sender<Job>,
    receiver: Mutex<Option<mpsc::Receiver<Job>>>,
    queued_bytes: Arc<AtomicUsize>,
    pub book: ShadowBook,
    timeout: Duration,
}

impl Shadows {
    pub fn new(timeout: Duration) -> Shadows {
        let (sender, receiver) = mpsc::channel(QUEUE);
        Shadows {
            sender,
            receiver: Mutex::new(Some(receiver)),
            queued_bytes: Arc::default(),
            book: ShadowBook::default(),
            timeout,
        }
    }

    /// The targets whose copy fits in the queue now; the others are dropped and counted (before
    /// anything of the request is kept or copied).
    pub(super) fn room(&self, endpoint: &str, mut targets: Vec<Target>) -> Vec<Target> {
        let full = self.sender.capacity() < targets.len()
            || self.queued_bytes.load(Ordering::Acquire) >= QUEUED_BYTES;
        if full {
            for target in targets.drain(..) {
                self.dropped(endpoint, &target);
            }
        }
        targets
    }

    /// Counts a copy not made (lock-free once the route knows its counter).
    fn dropped(&self, endpoint: &str, target: &ShadowRoute) {
        target
            .dropped
            .get_or_init(|| self.book.dropped_counter(endpoint, &target.url))
            .inc();
    }

    /// Offers the copies of a request `endpoint` answered (in `primary_took`) to the queue;
    /// those that do not fit are dropped and counted.
    pub(super) fn offer(
        &self,
        endpoint: &str,
        targets: Vec<Target>,
        protocol: Protocol,
        replay: Arc<dyn Replay>,
        primary: Copy,
        primary_took: Duration,
    ) {
        let primary = Arc::new(primary);
        let size = replay.size() + answer_size(&primary);
        for target in targets {
            let fits = self
                .queued_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                    (queued + size <= QUEUED_BYTES).then_some(queued + size)
                })
                .is_ok();
            if !fits {
                self.dropped(endpoint, &target);
                continue;
            }
            let job = Job {
                endpoint: endpoint.to_string(),
                target,
                protocol,
                replay: replay.clone(),
                primary: primary.clone(),
                primary_took,
                size,
            };
            if let Err(
                mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job),
            ) = self.sender.try_send(job)
            {
                self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
                self.dropped(endpoint, &job.target);
            }
        }
    }
}

/// Roughly what a copied answer holds.
fn answer_size(copy: &Copy) -> usize {
    match copy {
        Copy::Json(text) => text.len(),
        Copy::Tree(value) => crate::wire::json::tree_size(value),
        Copy::Tensors(tensors) => tensors
            .iter()
            .map(|t| t.data.le_size() + t.name.len() + 64)
            .sum(),
    }
}

/// Starts the worker of `door`'s shadows (once; later calls do nothing). It ends when the door
/// is dropped.
pub fn start(door: &Arc<Door>) {
    let Some(mut receiver) = door
        .shadows
        .receiver
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    else {
        return;
    };
    let weak = Arc::downgrade(door);
    tokio::spawn(async move {
        let running = Arc::new(Semaphore::new(CONCURRENT));
        while let Some(job) = receiver.recv().await {
            let Ok(permit) = running.clone().acquire_owned().await else {
                break;
            };
            let door = weak.clone();
            tokio::spawn(async move {
                run(door, job).await;
                drop(permit);
            });
        }
    });
}

/// Makes one copy, compares, records.
async fn run(door: Weak<Door>, job: Job) {
    let Some(door) = door.upgrade() else {
        return;
    };
    let shadows = &door.shadows;
    let (name, version) = match job.target.url.split_once('/') {
        Some((name, version)) => (name, Some(version)),
        None => (job.target.url.as_str(), None),
    };
    let start = Instant::now();
    let served = match door.admit(job.protocol, Credential::Shadow) {
        Ok(admitted) => {
            let memory = admitted.reservation();
            let replayed = Copied(job.replay.clone());
            admitted
                .serve(name, version, shadows.timeout, memory, replayed)
                .await
        }
        Err(error) => Err(error),
    };
    let took = start.elapsed();
    shadows.queued_bytes.fetch_sub(job.size, Ordering::AcqRel);
    let observation = match served {
        Err(_) => Observation {
            outcome: Outcome::Error,
            primary: job.primary_took,
            shadow: Some(took),
            difference: None,
            disagreement: None,
        },
        Ok(served) => {
            let answer = Copy::from_output(served.output);
            let verdict = compare(&job.primary, &answer, job.target.tolerance);
            let disagreement = verdict.detail.map(|detail| Disagreement {
                time_ms: serval_store::now_ms(),
                difference: verdict.difference,
                detail: cut(detail, TEXT_LIMIT),
                input: job.replay.text(TEXT_LIMIT),
                primary: job.primary.text(TEXT_LIMIT),
                shadow: answer.text(TEXT_LIMIT),
            });
            Observation {
                outcome: if verdict.agree {
                    Outcome::Agree
                } else {
                    Outcome::Disagree
                },
                primary: job.primary_took,
                shadow: Some(took),
                difference: Some(verdict.difference),
                disagreement,
            }
        }
    };
    shadows.book.record(
        &job.endpoint,
        &job.target.url,
        observation,
        serval_store::now_ms(),
    );
}

/// A kept request as the decoder of its copy. The copy never asks for an explanation: the
/// answers are compared without one.
struct Copied(Arc<dyn Replay>);

impl Decode for Copied {
    type Extra = ();

    async fn decode(
        self,
        endpoint: &Arc<Endpoint>,
        budget: &Budget,
        memory: Reservation,
    ) -> Result<Decoded<()>, Error> {
        let (mut input, memory) = self.0.decode(endpoint, budget, memory).await?;
        if let Input::Tensors { parameters, .. } = &mut input {
            parameters.remove("explain");
        }
        Ok(Decoded {
            input,
            extra: (),
            memory,
        })
    }
}
