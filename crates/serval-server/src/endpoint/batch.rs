//! The runner of a native model: its engine instances on their own threads, fed through a queue
//! by a dispatcher task, and the dynamic batcher that merges queued requests into one call.
//!
//! ```text
//! request ──submit──▶ dispatcher task (Queue: FIFO, delay and deadline rules) ──batch──▶ thread k
//!    ▲                        ▲ done(k)                                                   │ owns instance k
//!    └──────── oneshot: exactly its own rows ◀── split ◀── Instance::run(merged rows) ◀───┘
//! ```
//!
//! Rules (the [`Queue`] holds them; the dispatcher only feeds it time and free threads):
//! - a request that finds the runner idle (nothing queued, no call running) starts at once: no
//!   added latency on an idle server;
//! - otherwise it waits while every thread is busy; a free thread takes the oldest request and the
//!   requests behind it that fit (same inputs, same trailing shapes and types, rows within
//!   `max_rows`), FIFO — a request that does not fit ends the batch, a request larger than
//!   `max_rows` runs alone;
//! - a batch that could still grow is held until its oldest request has waited `max_delay` in all
//!   (Triton's `max_queue_delay_microseconds`), unless its oldest found the runner idle;
//! - a request whose deadline passed or whose caller left is taken out of the queue unrun;
//! - past `max_queue` waiting requests, a new one is refused (429 / `RESOURCE_EXHAUSTED`).
//!
//! Without batching the same runner gives each thread one request at a time: ONNX Runtime
//! sessions must not run two calls at once, so each thread owns its own session.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serval_engine::{
    DataType, EngineError, Instance, ModelMetadata, NamedOutput, NamedTensor, Tensor,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{STAGE_INFERENCE, STAGE_QUEUE};
use crate::error::Error;
use crate::metrics::{BatchMetrics, EndpointMetrics};

/// Dynamic batching of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Rows per engine call at most (a bigger request runs alone).
    pub max_rows: usize,
    /// How long a batch that could still grow may wait for more rows, from its oldest request's
    /// arrival (only once the runner was busy when that request arrived).
    pub max_delay: Duration,
    /// Requests that may wait; past it a request is refused.
    pub max_queue: usize,
}

/// Waiting requests per batched endpoint unless configured (Triton's `max_queue_size`).
pub const DEFAULT_MAX_QUEUE: usize = 1024;

pub(crate) type Reply = Result<Vec<NamedOutput>, Error>;

/// The inputs a request's rows must share with another's to go in one call: names, element
/// types and every dimension but the first. `None`: the request cannot be merged (inputs without
/// a common first dimension).
type Layout = Option<Vec<(String, DataType, Vec<usize>)>>;

/// One request in the queue.
pub(crate) struct Job {
    inputs: Vec<NamedTensor>,
    rows: usize,
    layout: Layout,
    deadline: Instant,
    /// The request's whole budget (for its timeout error).
    timeout: Duration,
    enqueued: Instant,
    /// Found the runner idle when it arrived: starts without waiting to grow.
    arrived_idle: bool,
    reply: oneshot::Sender<Reply>,
}

impl Job {
    /// A request; `merge`: its layout is worked out (only a batching runner merges requests).
    pub(crate) fn new(
        inputs: Vec<NamedTensor>,
        deadline: Instant,
        timeout: Duration,
        merge: bool,
    ) -> (Job, oneshot::Receiver<Reply>) {
        let (rows, layout) = layout(&inputs, merge);
        let (reply, receiver) = oneshot::channel();
        let job = Job {
            inputs,
            rows,
            layout,
            deadline,
            timeout,
            enqueued: Instant::now(),
            arrived_idle: false,
            reply,
        };
        (job, receiver)
    }

    /// Nobody waits for the answer any more (deadline passed, or the caller left).
    fn unwanted(&self, now: Instant) -> bool {
        now >= self.deadline || self.reply.is_closed()
    }

    /// Why a run for this request stopped: its deadline (504), else its caller left.
    fn stopped_error(&self) -> Error {
        if std::time::Instant::now() >= self.deadline.into_std() {
            Error::Timeout(self.timeout)
        } else {
            Error::Cancelled
        }
    }

    fn answer(self, reply: Reply) {
        // The caller may have left meanwhile: then nobody reads it.
        let _ = self.reply.send(reply);
    }
}

/// Rows (the common first dimension) and layout of a request's inputs.
fn layout(inputs: &[NamedTensor], merge: bool) -> (usize, Layout) {
    let rows = inputs
        .first()
        .and_then(|i| i.tensor.shape().first().copied());
    let Some(rows) = rows else {
        return (1, None);
    };
    if !merge
        || rows == 0
        || inputs
            .iter()
            .any(|i| i.tensor.shape().first() != Some(&rows))
    {
        return (rows.max(1), None);
    }
    let layout = inputs
        .iter()
        .map(|i| {
            (
                i.name.clone(),
                i.tensor.dtype(),
                i.tensor.shape()[1..].to_vec(),
            )
        })
        .collect();
    (rows, Some(layout))
}

/// What the queue says to do next.
#[derive(Debug)]
pub(crate) enum Next {
    /// Start these requests as one call.
    Run(Vec<Job>),
    /// Nothing may start before this instant (a batch waiting to grow).
    Wait(Instant),
    /// Nothing is waiting.
    Empty,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job({} rows)", self.rows)
    }
}

/// The waiting requests of one runner and the batching rules, with time passed in: the
/// dispatcher calls it, tests drive it directly.
pub(crate) struct Queue {
    jobs: VecDeque<Job>,
    batching: Option<Batching>,
}

impl Queue {
    pub(crate) fn new(batching: Option<Batching>) -> Queue {
        Queue {
            jobs: VecDeque::new(),
            batching,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Adds a request; `running` is how many calls are under way.
    pub(crate) fn push(&mut self, mut job: Job, running: usize) {
        job.arrived_idle = self.jobs.is_empty() && running == 0;
        self.jobs.push_back(job);
    }

    /// Takes out requests nobody waits for: a passed deadline is answered with its timeout, a
    /// caller that left gets nothing. Returns how many went.
    pub(crate) fn prune(&mut self, now: Instant) -> usize {
        let before = self.jobs.len();
        let mut kept = VecDeque::with_capacity(before);
        for job in self.jobs.drain(..) {
            if job.unwanted(now) {
                let timeout = job.timeout;
                job.answer(Err(Error::Timeout(timeout)));
            } else {
                kept.push_back(job);
            }
        }
        self.jobs = kept;
        before - self.jobs.len()
    }

    /// The next call to start on a free thread, at `now`. `merge`: requests may share a call
    /// (false once a model's outputs turned out not to split by rows).
    pub(crate) fn next(&mut self, now: Instant, merge: bool) -> Next {
        self.prune(now);
        let Some(head) = self.jobs.front() else {
            return Next::Empty;
        };
        let Some(batching) = self.batching else {
            return Next::Run(self.jobs.pop_front().into_iter().collect());
        };
        if !merge || head.layout.is_none() || head.rows >= batching.max_rows {
            return Next::Run(self.jobs.pop_front().into_iter().collect());
        }
        let mut count = 1;
        let mut rows = head.rows;
        let mut full = false;
        for job in self.jobs.iter().skip(1) {
            if job.layout != head.layout || rows + job.rows > batching.max_rows {
                full = true;
                break;
            }
            rows += job.rows;
            count += 1;
        }
        let full = full || rows >= batching.max_rows;
        let until = head.enqueued + batching.max_delay;
        if full || head.arrived_idle || now >= until {
            Next::Run(self.jobs.drain(..count).collect())
        } else {
            Next::Wait(until)
        }
    }
}

/// Runs calls: a thread per engine instance in the server, tasks in tests.
pub(crate) trait Execute: Send + 'static {
    /// Threads (calls that may run at once).
    fn threads(&self) -> usize;
    /// Starts `jobs` as one call on thread `thread`, which then sends its index to `done`.
    fn start(&mut self, thread: usize, jobs: Vec<Job>, done: mpsc::UnboundedSender<usize>);
}

/// A runner's handle, held by the endpoint: dropping it lets queued requests finish, then stops
/// the dispatcher and the threads.
pub struct Runner {
    jobs: mpsc::UnboundedSender<Job>,
    /// Requests waiting (queued, not yet started).
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    max_queue: usize,
    pub(crate) batching: Option<Batching>,
    pub(crate) threads: usize,
    metrics: Option<Arc<BatchMetrics>>,
}

impl Runner {
    /// A runner whose threads own `instances`, one each; its dispatcher runs on `runtime`.
    pub(crate) fn start(
        url: &str,
        instances: Vec<Box<dyn Instance>>,
        batching: Option<Batching>,
        runtime: &tokio::runtime::Handle,
        metrics: Option<(Arc<BatchMetrics>, EndpointMetrics)>,
    ) -> std::io::Result<Runner> {
        let (batch_metrics, stages) = match metrics {
            Some((b, e)) => (Some(b), Some(Arc::new(e))),
            None => (None, None),
        };
        let merge = Arc::new(AtomicBool::new(true));
        let threads = Threads::spawn(url, instances, merge.clone(), batch_metrics.clone(), stages)?;
        Ok(Runner::with(
            threads,
            merge,
            batching,
            runtime,
            batch_metrics,
        ))
    }

    /// A runner on any executor; `merge` is shared with it (cleared when outputs do not split).
    pub(crate) fn with(
        execute: impl Execute,
        merge: Arc<AtomicBool>,
        batching: Option<Batching>,
        runtime: &tokio::runtime::Handle,
        metrics: Option<Arc<BatchMetrics>>,
    ) -> Runner {
        let (jobs, receiver) = mpsc::unbounded_channel();
        let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads = execute.threads();
        runtime.spawn(dispatch(
            receiver,
            execute,
            merge,
            batching,
            waiting.clone(),
            metrics.clone(),
        ));
        Runner {
            jobs,
            waiting,
            max_queue: batching.map_or(usize::MAX, |b| b.max_queue),
            batching,
            threads,
            metrics,
        }
    }

    /// Queues a request and waits for its rows. `Overloaded` when the queue is full.
    pub(crate) async fn infer(
        &self,
        url: &str,
        inputs: Vec<NamedTensor>,
        deadline: Instant,
        timeout: Duration,
    ) -> Reply {
        let answer = self.submit(url, inputs, deadline, timeout)?;
        answer.await.unwrap_or_else(|_| {
            Err(Error::Internal(format!(
                "the runner of endpoint '{url}' dropped a request"
            )))
        })
    }

    /// Queues a request; its answer comes on the receiver.
    pub(crate) fn submit(
        &self,
        url: &str,
        inputs: Vec<NamedTensor>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<oneshot::Receiver<Reply>, Error> {
        let waiting = self.waiting.fetch_add(1, Ordering::AcqRel);
        if waiting >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            if let Some(metrics) = &self.metrics {
                metrics.rejected.inc();
            }
            return Err(Error::Overloaded(format!(
                "endpoint '{url}' has {waiting} requests waiting for its model, its batch queue's \
                 limit (model add --max-queue-size); retry later"
            )));
        }
        let (job, answer) = Job::new(inputs, deadline, timeout, self.batching.is_some());
        if self.jobs.send(job).is_err() {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Internal(format!(
                "the runner of endpoint '{url}' has stopped"
            )));
        }
        Ok(answer)
    }
}

/// The dispatcher: feeds the queue, starts calls on free threads, sleeps until a waiting batch
/// may start. Ends once the runner is dropped and every queued request was answered.
async fn dispatch(
    mut jobs: mpsc::UnboundedReceiver<Job>,
    mut execute: impl Execute,
    merge: Arc<AtomicBool>,
    batching: Option<Batching>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    metrics: Option<Arc<BatchMetrics>>,
) {
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let mut free: Vec<usize> = (0..execute.threads()).rev().collect();
    let total = free.len();
    let mut queue = Queue::new(batching);
    let mut open = true;
    loop {
        let mut wake = None;
        while let Some(&thread) = free.last() {
            let before = queue.len();
            let next = queue.next(Instant::now(), merge.load(Ordering::Relaxed));
            // Started or taken out (expired, abandoned): no longer waiting either way, also
            // when nothing starts now.
            waiting.fetch_sub(before - queue.len(), Ordering::AcqRel);
            match next {
                Next::Run(batch) => {
                    free.pop();
                    execute.start(thread, batch, done_tx.clone());
                }
                Next::Wait(until) => {
                    wake = Some(until);
                    break;
                }
                Next::Empty => break,
            }
        }
        if let Some(metrics) = &metrics {
            metrics.depth.set(queue.len() as i64);
        }
        if !open && queue.len() == 0 && free.len() == total {
            return;
        }
        let sleep = async {
            match wake {
                // Closed: what is queued starts as soon as threads free, without waiting to grow.
                Some(until) if open => tokio::time::sleep_until(until).await,
                Some(_) => {}
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            job = jobs.recv(), if open => match job {
                Some(job) => {
                    let running = total - free.len();
                    queue.push(job, running);
                }
                None => open = false,
            },
            Some(thread) = done.recv() => free.push(thread),
            () = sleep => {}
        }
        if !open {
            // No more requests will come: nothing is worth waiting for.
            queue.batching = queue.batching.map(|b| Batching {
                max_delay: Duration::ZERO,
                ..b
            });
        }
    }
}

/// The server's executor: one OS thread per engine instance.
struct Threads {
    senders: Vec<std::sync::mpsc::Sender<(Vec<Job>, mpsc::UnboundedSender<usize>)>>,
}

impl Threads {
    fn spawn(
        url: &str,
        instances: Vec<Box<dyn Instance>>,
        merge: Arc<AtomicBool>,
        metrics: Option<Arc<BatchMetrics>>,
        stages: Option<Arc<EndpointMetrics>>,
    ) -> std::io::Result<Threads> {
        let mut senders = Vec::with_capacity(instances.len());
        for (k, mut instance) in instances.into_iter().enumerate() {
            let (sender, receiver) =
                std::sync::mpsc::channel::<(Vec<Job>, mpsc::UnboundedSender<usize>)>();
            let metrics = metrics.clone();
            let stages = stages.clone();
            let merge = merge.clone();
            let url = url.to_string();
            std::thread::Builder::new()
                .name(format!("serval-runner-{k}"))
                .spawn(move || {
                    // Ends when the dispatcher (the only sender) is gone.
                    while let Ok((jobs, done)) = receiver.recv() {
                        run_call(
                            &url,
                            instance.as_mut(),
                            jobs,
                            &merge,
                            metrics.as_deref(),
                            stages.as_deref(),
                        );
                        let _ = done.send(k);
                    }
                })?;
            senders.push(sender);
        }
        Ok(Threads { senders })
    }
}

impl Execute for Threads {
    fn threads(&self) -> usize {
        self.senders.len()
    }

    fn start(&mut self, thread: usize, jobs: Vec<Job>, done: mpsc::UnboundedSender<usize>) {
        if let Err(std::sync::mpsc::SendError((jobs, _))) = self.senders[thread].send((jobs, done))
        {
            for job in jobs {
                job.answer(Err(Error::Internal("the runner thread has stopped".into())));
            }
        }
    }
}

/// Runs one call for `jobs` on `instance` and answers each with exactly its own rows. A merged
/// call the model refuses (invalid input) is retried request by request, so only the requests
/// at fault fail; outputs that do not split by rows turn merging off for the model.
pub(crate) fn run_call(
    url: &str,
    instance: &mut dyn Instance,
    jobs: Vec<Job>,
    merge_ok: &AtomicBool,
    metrics: Option<&BatchMetrics>,
    stages: Option<&EndpointMetrics>,
) {
    let started = Instant::now();
    if let Some(stages) = stages {
        for job in &jobs {
            stages.stage(STAGE_QUEUE, started.saturating_duration_since(job.enqueued));
        }
    }
    let observe = |rows: usize, from: Instant, jobs: &[Job]| {
        if let Some(metrics) = metrics {
            metrics.rows.observe(rows as f64);
        }
        if let Some(stages) = stages {
            let took = from.elapsed();
            for _ in jobs {
                stages.stage(STAGE_INFERENCE, took);
            }
        }
    };
    if jobs.len() == 1 {
        let job = jobs.into_iter().next().expect("one job");
        let result = run_one(instance, &job);
        observe(job.rows, started, std::slice::from_ref(&job));
        job.answer(result);
        return;
    }
    let rows: usize = jobs.iter().map(|j| j.rows).sum();
    let merged = match merge(&jobs) {
        Ok(merged) => merged,
        Err(e) => {
            tracing::warn!(
                "endpoint '{url}': cannot merge requests into one call ({e}); running them one by one"
            );
            return one_by_one(instance, jobs, metrics, stages);
        }
    };
    let deadlines: Vec<(std::time::Instant, &oneshot::Sender<Reply>)> = jobs
        .iter()
        .map(|j| (j.deadline.into_std(), &j.reply))
        .collect();
    let stop = || {
        let now = std::time::Instant::now();
        deadlines.iter().all(|(d, r)| now >= *d || r.is_closed())
    };
    let result = instance.run(&merged, &stop);
    drop(deadlines);
    observe(rows, started, &jobs);
    match result {
        Ok(outputs) => match split(outputs, &jobs) {
            Some(parts) => {
                for (job, part) in jobs.into_iter().zip(parts) {
                    job.answer(Ok(part));
                }
            }
            None => {
                tracing::warn!(
                    "endpoint '{url}': the model's outputs do not split by rows; its requests no longer share calls"
                );
                merge_ok.store(false, Ordering::Relaxed);
                one_by_one(instance, jobs, metrics, stages);
            }
        },
        // Which request is at fault: each runs alone and only the bad ones fail.
        Err(EngineError::InvalidInput(_)) => one_by_one(instance, jobs, metrics, stages),
        Err(EngineError::Stopped) => {
            stopped(rows);
            for job in jobs {
                let error = job.stopped_error();
                job.answer(Err(error));
            }
        }
        Err(e) => {
            for job in jobs {
                job.answer(Err(same_error(&e)));
            }
        }
    }
}

fn run_one(instance: &mut dyn Instance, job: &Job) -> Reply {
    let deadline = job.deadline.into_std();
    let stop = || std::time::Instant::now() >= deadline || job.reply.is_closed();
    instance.run(&job.inputs, &stop).map_err(|e| match e {
        EngineError::Stopped => {
            stopped(job.rows);
            job.stopped_error()
        }
        e => Error::from(e),
    })
}

fn stopped(rows: usize) {
    tracing::info!(
        "inference stopped during a run of {rows} rows: the request's deadline passed or its client left"
    );
}

fn one_by_one(
    instance: &mut dyn Instance,
    jobs: Vec<Job>,
    metrics: Option<&BatchMetrics>,
    stages: Option<&EndpointMetrics>,
) {
    for job in jobs {
        let started = Instant::now();
        let result = run_one(instance, &job);
        if let Some(metrics) = metrics {
            metrics.rows.observe(job.rows as f64);
        }
        if let Some(stages) = stages {
            stages.stage(STAGE_INFERENCE, started.elapsed());
        }
        job.answer(result);
    }
}

/// An engine error, once per request of a failed call.
fn same_error(e: &EngineError) -> Error {
    match e {
        EngineError::InvalidInput(m) => Error::InvalidInput(m.clone()),
        EngineError::Stopped => Error::Cancelled,
        EngineError::Load(m) | EngineError::Unavailable(m) | EngineError::Internal(m) => {
            Error::Internal(m.clone())
        }
    }
}

/// The requests' inputs stacked along the first dimension, in order.
fn merge(jobs: &[Job]) -> Result<Vec<NamedTensor>, EngineError> {
    let first = &jobs[0].inputs;
    first
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let parts: Vec<&Tensor> = jobs.iter().map(|j| &j.inputs[i].tensor).collect();
            Ok(NamedTensor {
                name: input.name.clone(),
                tensor: Tensor::stack_rows(&parts)?,
            })
        })
        .collect()
}

/// A merged call's outputs cut back into each request's rows; `None` if an output does not have
/// one entry per row (a model whose outputs are not per row cannot share calls).
fn split(outputs: Vec<NamedOutput>, jobs: &[Job]) -> Option<Vec<Vec<NamedOutput>>> {
    let rows: Vec<usize> = jobs.iter().map(|j| j.rows).collect();
    serval_engine::split_outputs(outputs, &rows)
}

/// What the runner tells about itself (status, metadata).
pub(crate) fn describe(batching: Option<Batching>, threads: usize, meta: &ModelMetadata) -> String {
    let threads = format!(
        "{threads} runner thread{}",
        if threads == 1 { "" } else { "s" }
    );
    match batching {
        Some(b) => format!(
            "native {} ({threads}, batching up to {} rows, {} µs delay)",
            meta.format,
            b.max_rows,
            b.max_delay.as_micros()
        ),
        None => format!("native {} ({threads})", meta.format),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use proptest::prelude::*;
    use serval_engine::Task;

    use super::*;
    use serval_engine::{OutputValue, TensorData};

    fn meta() -> ModelMetadata {
        ModelMetadata {
            format: "test".into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            feature_names: None,
            task: Task::Other,
        }
    }

    /// `y = 10 x` row by row; a negative value makes the whole call invalid.
    struct Times10(ModelMetadata);

    impl Instance for Times10 {
        fn metadata(&self) -> &ModelMetadata {
            &self.0
        }

        fn run(
            &mut self,
            inputs: &[NamedTensor],
            _stop: &(dyn Fn() -> bool + Sync),
        ) -> serval_engine::Result<Vec<NamedOutput>> {
            let x = &inputs[0].tensor;
            let values = x.to_f64()?;
            if values.iter().any(|v| *v < 0.0) {
                return Err(EngineError::InvalidInput("negative value".into()));
            }
            let y = values.iter().map(|v| v * 10.0).collect();
            Ok(vec![NamedOutput {
                name: "y".into(),
                value: OutputValue::Tensor(Tensor::new(x.shape().to_vec(), TensorData::F64(y))?),
            }])
        }
    }

    /// Request `id` with `rows` rows `[id * 1000 + r, r]` (negative when `bad`).
    fn request(id: u64, rows: usize, bad: bool) -> Vec<NamedTensor> {
        let sign = if bad { -1.0 } else { 1.0 };
        let data = (0..rows)
            .flat_map(|r| [sign * (id * 1000 + r as u64) as f64, r as f64])
            .collect();
        vec![NamedTensor {
            name: "x".into(),
            tensor: Tensor::new(vec![rows, 2], TensorData::F64(data)).unwrap(),
        }]
    }

    fn id_of(job: &Job) -> u64 {
        let first = job.inputs[0].tensor.to_f64().unwrap()[0].abs();
        (first / 1000.0) as u64
    }

    /// Exactly request `id`'s rows, times ten.
    fn is_answer_of(outputs: &[NamedOutput], id: u64, rows: usize) -> bool {
        let expected: Vec<f64> = request(id, rows, false)[0]
            .tensor
            .to_f64()
            .unwrap()
            .iter()
            .map(|v| v * 10.0)
            .collect();
        match outputs {
            [
                NamedOutput {
                    name,
                    value: OutputValue::Tensor(t),
                },
            ] => name == "y" && t.shape() == [rows, 2] && t.to_f64().unwrap() == expected,
            _ => false,
        }
    }

    type Calls = Arc<Mutex<Vec<(Instant, Vec<u64>)>>>;

    /// Calls as tasks that take `cost` of (paused) time each, recorded with their start.
    struct Tasks {
        threads: usize,
        cost: Duration,
        calls: Calls,
    }

    impl Execute for Tasks {
        fn threads(&self) -> usize {
            self.threads
        }

        fn start(&mut self, thread: usize, jobs: Vec<Job>, done: mpsc::UnboundedSender<usize>) {
            let ids = jobs.iter().map(id_of).collect();
            self.calls.lock().unwrap().push((Instant::now(), ids));
            let cost = self.cost;
            tokio::spawn(async move {
                tokio::time::sleep(cost).await;
                let merge = AtomicBool::new(true);
                run_call("t", &mut Times10(meta()), jobs, &merge, None, None);
                let _ = done.send(thread);
            });
        }
    }

    fn runner(threads: usize, cost_ms: u64, batching: Option<Batching>) -> (Runner, Calls) {
        let calls = Calls::default();
        let tasks = Tasks {
            threads,
            cost: Duration::from_millis(cost_ms),
            calls: calls.clone(),
        };
        let merge = Arc::new(AtomicBool::new(true));
        let runner = Runner::with(
            tasks,
            merge,
            batching,
            &tokio::runtime::Handle::current(),
            None,
        );
        (runner, calls)
    }

    fn batching(max_rows: usize, delay_ms: u64) -> Option<Batching> {
        Some(Batching {
            max_rows,
            max_delay: Duration::from_millis(delay_ms),
            max_queue: 1024,
        })
    }

    const MS: Duration = Duration::from_millis(1);
    const LONG: Duration = Duration::from_secs(60);

    fn submit(runner: &Runner, id: u64, rows: usize) -> oneshot::Receiver<Reply> {
        runner
            .submit("t", request(id, rows, false), Instant::now() + LONG, LONG)
            .unwrap()
    }

    /// Start times (ms after `t0`) and request ids of the calls made.
    fn timeline(calls: &Calls, t0: Instant) -> Vec<(u128, Vec<u64>)> {
        calls
            .lock()
            .unwrap()
            .iter()
            .map(|(at, ids)| ((*at - t0).as_millis(), ids.clone()))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_to_an_idle_runner_starts_at_once() {
        let (runner, calls) = runner(1, 10, batching(8, 50));
        let t0 = Instant::now();
        let reply = submit(&runner, 1, 1).await.unwrap().unwrap();
        assert!(is_answer_of(&reply, 1, 1));
        assert_eq!(t0.elapsed(), 10 * MS, "no wait for the 50 ms delay");
        assert_eq!(timeline(&calls, t0), vec![(0, vec![1])]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_that_can_grow_waits_until_its_oldest_has_waited_the_delay() {
        for (delay, second_start) in [(15, 16), (5, 10)] {
            let (runner, calls) = runner(1, 10, batching(8, delay));
            let t0 = Instant::now();
            let a = submit(&runner, 1, 1);
            tokio::time::sleep(MS).await;
            let b = submit(&runner, 2, 2);
            let c = submit(&runner, 3, 1);
            assert!(is_answer_of(&a.await.unwrap().unwrap(), 1, 1));
            assert!(is_answer_of(&b.await.unwrap().unwrap(), 2, 2));
            assert!(is_answer_of(&c.await.unwrap().unwrap(), 3, 1));
            assert_eq!(
                timeline(&calls, t0),
                vec![(0, vec![1]), (second_start, vec![2, 3])],
                "delay {delay} ms"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_starts_as_soon_as_a_thread_is_free() {
        let (runner, calls) = runner(1, 10, batching(3, 1000));
        let t0 = Instant::now();
        let a = submit(&runner, 1, 1);
        tokio::time::sleep(MS).await;
        let b = submit(&runner, 2, 2);
        let c = submit(&runner, 3, 1);
        let d = submit(&runner, 4, 3);
        for (rx, id, rows) in [(a, 1, 1), (b, 2, 2), (c, 3, 1), (d, 4, 3)] {
            assert!(is_answer_of(&rx.await.unwrap().unwrap(), id, rows));
        }
        // [2, 3] cannot take 4 (3 more rows): full at 10 ms; 4 alone is full too.
        assert_eq!(
            timeline(&calls, t0),
            vec![(0, vec![1]), (10, vec![2, 3]), (20, vec![4])]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_bigger_than_the_batch_runs_alone() {
        let (runner, calls) = runner(1, 10, batching(4, 0));
        let t0 = Instant::now();
        let a = submit(&runner, 1, 1);
        tokio::time::sleep(MS).await;
        let b = submit(&runner, 2, 6);
        let c = submit(&runner, 3, 1);
        for (rx, id, rows) in [(a, 1, 1), (b, 2, 6), (c, 3, 1)] {
            assert!(is_answer_of(&rx.await.unwrap().unwrap(), id, rows));
        }
        assert_eq!(
            timeline(&calls, t0),
            vec![(0, vec![1]), (10, vec![2]), (20, vec![3])]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_deadline_in_the_queue_never_runs() {
        let (runner, calls) = runner(1, 10, batching(8, 0));
        let t0 = Instant::now();
        let a = submit(&runner, 1, 1);
        tokio::time::sleep(MS).await;
        let b = runner
            .submit("t", request(2, 1, false), Instant::now() + 4 * MS, 4 * MS)
            .unwrap();
        let c = submit(&runner, 3, 1);
        assert!(a.await.unwrap().is_ok());
        assert!(matches!(b.await.unwrap(), Err(Error::Timeout(t)) if t == 4 * MS));
        assert!(c.await.unwrap().is_ok());
        assert_eq!(timeline(&calls, t0), vec![(0, vec![1]), (10, vec![3])]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_caller_left_never_runs() {
        let (runner, calls) = runner(1, 10, batching(8, 0));
        let t0 = Instant::now();
        let a = submit(&runner, 1, 1);
        tokio::time::sleep(MS).await;
        drop(submit(&runner, 2, 1));
        let c = submit(&runner, 3, 1);
        assert!(a.await.unwrap().is_ok());
        assert!(c.await.unwrap().is_ok());
        assert_eq!(timeline(&calls, t0), vec![(0, vec![1]), (10, vec![3])]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_new_requests() {
        let (runner, _calls) = runner(
            1,
            10,
            Some(Batching {
                max_rows: 1,
                max_delay: Duration::ZERO,
                max_queue: 2,
            }),
        );
        let a = submit(&runner, 1, 1);
        tokio::time::sleep(MS).await; // a has started: it no longer waits
        let b = submit(&runner, 2, 1);
        let c = submit(&runner, 3, 1);
        let refused = runner.submit("t", request(4, 1, false), Instant::now() + LONG, LONG);
        assert!(matches!(refused, Err(Error::Overloaded(m)) if m.contains("--max-queue-size")));
        for rx in [a, b, c] {
            assert!(rx.await.unwrap().is_ok());
        }
        // Room again once the queue drained.
        assert!(submit(&runner, 5, 1).await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_left_the_queue_free_their_places() {
        let (runner, _calls) = runner(
            1,
            10,
            Some(Batching {
                max_rows: 1,
                max_delay: Duration::ZERO,
                max_queue: 2,
            }),
        );
        for round in 0..3u64 {
            let a = submit(&runner, 10 * round + 1, 1);
            tokio::time::sleep(MS).await; // a runs
            // Two requests expire in the queue, taken out when the thread frees with nothing
            // left to start.
            let expiring: Vec<_> = (2..4)
                .map(|id| {
                    runner
                        .submit(
                            "t",
                            request(10 * round + id, 1, false),
                            Instant::now() + MS,
                            MS,
                        )
                        .unwrap()
                })
                .collect();
            assert!(a.await.unwrap().is_ok());
            for rx in expiring {
                assert!(matches!(rx.await.unwrap(), Err(Error::Timeout(_))));
            }
        }
        // Their places are free again: two may wait, as configured.
        let a = submit(&runner, 91, 1);
        tokio::time::sleep(MS).await;
        let b = submit(&runner, 92, 1);
        let c = submit(&runner, 93, 1);
        for rx in [a, b, c] {
            assert!(rx.await.unwrap().is_ok());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_merged_call_fails_only_the_requests_at_fault() {
        let (runner, calls) = runner(1, 10, batching(8, 0));
        let t0 = Instant::now();
        let a = submit(&runner, 1, 1);
        tokio::time::sleep(MS).await;
        let bad = runner
            .submit("t", request(2, 2, true), Instant::now() + LONG, LONG)
            .unwrap();
        let c = submit(&runner, 3, 2);
        assert!(a.await.unwrap().is_ok());
        assert!(matches!(bad.await.unwrap(), Err(Error::InvalidInput(_))));
        assert!(is_answer_of(&c.await.unwrap().unwrap(), 3, 2));
        assert_eq!(timeline(&calls, t0), vec![(0, vec![1]), (10, vec![2, 3])]);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_runner_still_answers_what_is_queued() {
        let (runner, calls) = runner(1, 10, batching(2, 1000));
        let receivers: Vec<_> = (1..=5).map(|id| submit(&runner, id, 1)).collect();
        drop(runner);
        for (id, rx) in (1..=5).zip(receivers) {
            assert!(is_answer_of(&rx.await.unwrap().unwrap(), id, 1));
        }
        let ids: Vec<u64> = calls
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, ids)| ids.clone())
            .collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    }

    /// Runs until asked to stop.
    struct Endless(ModelMetadata);

    impl Instance for Endless {
        fn metadata(&self) -> &ModelMetadata {
            &self.0
        }

        fn run(
            &mut self,
            _inputs: &[NamedTensor],
            stop: &(dyn Fn() -> bool + Sync),
        ) -> serval_engine::Result<Vec<NamedOutput>> {
            while !stop() {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(EngineError::Stopped)
        }
    }

    #[test]
    fn a_run_stopped_at_the_deadline_is_a_timeout() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for batching in [None, batching(4, 0)] {
                let runner = Runner::start(
                    "t",
                    vec![Box::new(Endless(meta()))],
                    batching,
                    &tokio::runtime::Handle::current(),
                    None,
                )
                .unwrap();
                let budget = Duration::from_millis(50);
                let reply = runner
                    .infer("t", request(1, 1, false), Instant::now() + budget, budget)
                    .await;
                assert!(
                    matches!(reply, Err(Error::Timeout(t)) if t == budget),
                    "{reply:?}"
                );
            }
        });
    }

    #[test]
    fn threads_answer_concurrent_requests_with_their_own_rows() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let instances: Vec<Box<dyn Instance>> =
                vec![Box::new(Times10(meta())), Box::new(Times10(meta()))];
            let runner = Arc::new(
                Runner::start(
                    "t",
                    instances,
                    batching(16, 1),
                    &tokio::runtime::Handle::current(),
                    None,
                )
                .unwrap(),
            );
            let tasks: Vec<_> = (0..200u64)
                .map(|id| {
                    let runner = runner.clone();
                    tokio::spawn(async move {
                        let rows = 1 + (id as usize % 5);
                        let reply = runner
                            .infer("t", request(id, rows, false), Instant::now() + LONG, LONG)
                            .await
                            .unwrap();
                        assert!(is_answer_of(&reply, id, rows), "request {id}");
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Any interleaving of requests (rows, deadlines, callers that leave, the runner dropped
        /// as on a reload): every request still wanted is answered exactly once with exactly
        /// its rows, calls start in arrival order and hold at most `max_rows` rows (a bigger
        /// request alone).
        #[test]
        fn every_request_gets_exactly_its_rows_once(
            threads in 1usize..4,
            max_rows in 1usize..10,
            delay_ms in 0u64..6,
            cost_ms in 0u64..5,
            requests in prop::collection::vec(
                (0u64..25, 1usize..12, prop::option::of(0u64..40), prop::bool::weighted(0.15)),
                1..40,
            ),
            drop_at in prop::option::of(0usize..40),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async move {
                let (runner, calls) = runner(threads, cost_ms, batching(max_rows, delay_ms));
                let mut runner = Some(runner);
                let mut requests = requests;
                requests.sort_by_key(|r| r.0);
                let t0 = Instant::now();
                let mut waiting = Vec::new();
                for (id, (arrival, rows, deadline_ms, leaves)) in requests.iter().enumerate() {
                    tokio::time::sleep_until(t0 + Duration::from_millis(*arrival)).await;
                    let Some(live) = runner.as_ref() else { break };
                    let budget = deadline_ms.map_or(LONG, Duration::from_millis);
                    let rx = live
                        .submit("t", request(id as u64, *rows, false), Instant::now() + budget, budget)
                        .unwrap();
                    if !*leaves {
                        waiting.push((id as u64, *rows, deadline_ms.is_some(), rx));
                    }
                    if drop_at == Some(id) {
                        runner = None;
                    }
                }
                drop(runner);
                for (id, rows, has_deadline, rx) in waiting {
                    let reply = tokio::time::timeout(Duration::from_secs(3600), rx)
                        .await
                        .expect("answered, not left hanging")
                        .expect("answered, not dropped");
                    match reply {
                        Ok(outputs) => assert!(is_answer_of(&outputs, id, rows), "request {id}"),
                        Err(Error::Timeout(_)) => assert!(has_deadline, "request {id} timed out"),
                        Err(other) => panic!("request {id}: {other}"),
                    }
                }
                let calls = calls.lock().unwrap();
                let started: Vec<u64> = calls.iter().flat_map(|(_, ids)| ids.clone()).collect();
                assert!(started.windows(2).all(|w| w[0] < w[1]), "FIFO, once each: {started:?}");
                for (_, ids) in calls.iter() {
                    let rows: usize = ids.iter().map(|id| requests[*id as usize].1).sum();
                    assert!(ids.len() == 1 || rows <= max_rows, "call {ids:?} holds {rows} rows");
                }
            });
        }
    }
}
