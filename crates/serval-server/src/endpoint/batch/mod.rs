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
//!   (Triton's `max_queue_delay_microseconds`), unless its oldest found the runner idle — or
//!   unless its requests add up to one of the `preferred` row counts (Triton's
//!   `preferred_batch_size`): then the largest such leading run of requests starts at once;
//! - a request whose deadline passed or whose caller left is taken out of the queue unrun;
//! - past `max_queue` waiting requests, a new one is refused (429 / `RESOURCE_EXHAUSTED`).
//!
//! Without batching the same runner gives each thread one request at a time: ONNX Runtime
//! sessions must not run two calls at once, so each thread owns its own session.

mod queue;
mod threads;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serval_engine::{Instance, ModelMetadata, NamedTensor};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use self::queue::{Job, Next, Queue, Reply};
use self::threads::Threads;
use crate::error::Error;
use crate::metrics::{BatchMetrics, EndpointMetrics};

/// Dynamic batching of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batching {
    /// Rows per engine call at most (a bigger request runs alone).
    pub max_rows: usize,
    /// How long a batch that could still grow may wait for more rows, from its oldest request's
    /// arrival (only once the runner was busy when that request arrived).
    pub max_delay: Duration,
    /// Requests that may wait; past it a request is refused.
    pub max_queue: usize,
    /// Row counts sent at once, without waiting, when the queue can form one (Triton's
    /// `preferred_batch_size`; ascending).
    pub preferred: Vec<usize>,
}

/// Waiting requests per batched endpoint unless configured (Triton's `max_queue_size`).
pub const DEFAULT_MAX_QUEUE: usize = 1024;

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
        let max_queue = batching.as_ref().map_or(usize::MAX, |b| b.max_queue);
        runtime.spawn(dispatch(
            receiver,
            execute,
            merge,
            batching.clone(),
            waiting.clone(),
            metrics.clone(),
        ));
        Runner {
            jobs,
            waiting,
            max_queue,
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
            queue.stop_waiting();
        }
    }
}

/// What the runner tells about itself (status, metadata).
pub(crate) fn describe(
    batching: Option<&Batching>,
    threads: usize,
    meta: &ModelMetadata,
) -> String {
    let threads = format!(
        "{threads} runner thread{}",
        if threads == 1 { "" } else { "s" }
    );
    match batching {
        Some(b) if !b.preferred.is_empty() => format!(
            "native {} ({threads}, batching up to {} rows, {} µs delay, preferred {:?})",
            meta.format,
            b.max_rows,
            b.max_delay.as_micros(),
            b.preferred
        ),
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

    use super::threads::run_call;
    use super::*;
    use serval_engine::{EngineError, NamedOutput, OutputValue, Tensor, TensorData};

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
            preferred: vec![],
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
                preferred: vec![],
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
                preferred: vec![],
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
