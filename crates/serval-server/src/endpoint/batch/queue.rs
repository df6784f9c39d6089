//! The waiting requests of one runner and the batching rules (see the module docs of
//! [`super`]): pure logic with time passed in — the dispatcher feeds it the clock and free
//! threads, tests drive it directly.

use std::collections::VecDeque;
use std::time::Duration;

use serval_engine::{DataType, NamedOutput, NamedTensor};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Batching;
use crate::error::Error;

pub(crate) type Reply = Result<Vec<NamedOutput>, Error>;

/// The inputs a request's rows must share with another's to go in one call: names, element
/// types and every dimension but the first. `None`: the request cannot be merged (inputs without
/// a common first dimension).
type Layout = Option<Vec<(String, DataType, Vec<usize>)>>;

/// One request in the queue.
pub(crate) struct Job {
    pub(super) inputs: Vec<NamedTensor>,
    pub(super) rows: usize,
    layout: Layout,
    pub(super) deadline: Instant,
    /// The request's whole budget (for its timeout error).
    timeout: Duration,
    pub(super) enqueued: Instant,
    /// Found the runner idle when it arrived: starts without waiting to grow.
    arrived_idle: bool,
    pub(super) reply: oneshot::Sender<Reply>,
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
    pub(super) fn unwanted(&self, now: Instant) -> bool {
        now >= self.deadline || self.reply.is_closed()
    }

    /// Why a run for this request stopped: its deadline (504), else its caller left.
    pub(super) fn stopped_error(&self) -> Error {
        if std::time::Instant::now() >= self.deadline.into_std() {
            Error::Timeout(self.timeout)
        } else {
            Error::Cancelled
        }
    }

    pub(super) fn answer(self, reply: Reply) {
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

    /// No more requests will come: nothing is worth waiting for any more.
    pub(crate) fn stop_waiting(&mut self) {
        if let Some(batching) = &mut self.batching {
            batching.max_delay = Duration::ZERO;
        }
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
        let Some(batching) = &self.batching else {
            return Next::Run(self.jobs.pop_front().into_iter().collect());
        };
        if !merge || head.layout.is_none() || head.rows >= batching.max_rows {
            return Next::Run(self.jobs.pop_front().into_iter().collect());
        }
        let preferred = |rows: usize| batching.preferred.binary_search(&rows).is_ok();
        let mut count = 1;
        let mut rows = head.rows;
        let mut full = false;
        // The longest leading run of requests whose rows add up to a preferred count.
        let mut preferred_run = preferred(rows).then_some(count);
        for job in self.jobs.iter().skip(1) {
            if job.layout != head.layout || rows + job.rows > batching.max_rows {
                full = true;
                break;
            }
            rows += job.rows;
            count += 1;
            if preferred(rows) {
                preferred_run = Some(count);
            }
        }
        // Reaching the largest preferred count, the batch cannot usefully grow.
        let full = full
            || rows >= batching.max_rows
            || batching
                .preferred
                .last()
                .is_some_and(|&largest| rows >= largest);
        let until = head.enqueued + batching.max_delay;
        if full || head.arrived_idle || now >= until {
            Next::Run(self.jobs.drain(..count).collect())
        } else if let Some(run) = preferred_run {
            Next::Run(self.jobs.drain(..run).collect())
        } else {
            Next::Wait(until)
        }
    }
}

#[cfg(test)]
mod tests {
    use serval_engine::{Tensor, TensorData};

    use super::*;

    fn rows(n: usize, width: usize) -> Vec<NamedTensor> {
        vec![NamedTensor {
            name: "x".into(),
            tensor: Tensor::new(vec![n, width], TensorData::F32(vec![0.0; n * width])).unwrap(),
        }]
    }

    fn job(n: usize, width: usize, deadline: Instant) -> (Job, oneshot::Receiver<Reply>) {
        Job::new(rows(n, width), deadline, Duration::from_secs(1), true)
    }

    fn batching(max_rows: usize, delay_ms: u64) -> Option<Batching> {
        Some(Batching {
            max_rows,
            max_delay: Duration::from_millis(delay_ms),
            max_queue: 100,
            preferred: vec![],
        })
    }

    fn taken(next: Next) -> Vec<usize> {
        match next {
            Next::Run(jobs) => jobs.iter().map(|j| j.rows).collect(),
            other => panic!("expected a call, got {other:?}"),
        }
    }

    #[test]
    fn a_request_that_finds_the_runner_idle_starts_at_once() {
        let now = Instant::now();
        let far = now + Duration::from_secs(60);
        let mut queue = Queue::new(batching(8, 50));
        let (a, _a) = job(1, 4, far);
        queue.push(a, 0);
        assert_eq!(taken(queue.next(now, true)), [1]);
        assert!(matches!(queue.next(now, true), Next::Empty));
    }

    #[test]
    fn a_partial_batch_waits_for_its_oldest_delay_and_a_full_one_does_not() {
        let now = Instant::now();
        let far = now + Duration::from_secs(60);
        let mut queue = Queue::new(batching(4, 10));
        let (a, _a) = job(1, 4, far);
        let (b, _b) = job(2, 4, far);
        // A call is running: the requests wait to grow.
        queue.push(a, 1);
        queue.push(b, 1);
        let oldest = queue.jobs[0].enqueued;
        match queue.next(now, true) {
            Next::Wait(until) => assert_eq!(until, oldest + Duration::from_millis(10)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            taken(queue.next(oldest + Duration::from_millis(10), true)),
            [1, 2]
        );
        // Four rows fill the batch: no wait.
        let (c, _c) = job(3, 4, far);
        let (d, _d) = job(1, 4, far);
        queue.push(c, 1);
        queue.push(d, 1);
        assert_eq!(taken(queue.next(now, true)), [3, 1]);
    }

    /// clearml's huggingface settings: a 5 s delay with preferred sizes 1, 2, 4, … 64. What is
    /// queued starts at once as the largest leading run that adds up to a preferred size; the
    /// delay only holds a batch that cannot form one.
    #[test]
    fn a_preferred_size_starts_at_once_and_only_other_batches_wait() {
        let now = Instant::now();
        let far = now + Duration::from_secs(60);
        let mut queue = Queue::new(Some(Batching {
            max_rows: 64,
            max_delay: Duration::from_secs(5),
            max_queue: 100,
            preferred: vec![1, 2, 4, 8, 16, 32, 64],
        }));
        let mut receivers = Vec::new();
        for _ in 0..7 {
            let (j, r) = job(1, 4, far);
            receivers.push(r);
            queue.push(j, 1);
        }
        // 7 queued single rows: 4 now (the largest preferred run), then 2, then 1.
        assert_eq!(taken(queue.next(now, true)), [1, 1, 1, 1]);
        assert_eq!(taken(queue.next(now, true)), [1, 1]);
        assert_eq!(taken(queue.next(now, true)), [1]);
        // Rows that add up to no preferred size wait for the delay.
        let mut queue = Queue::new(Some(Batching {
            max_rows: 64,
            max_delay: Duration::from_secs(5),
            max_queue: 100,
            preferred: vec![4, 8],
        }));
        for n in [3, 2] {
            let (j, r) = job(n, 4, far);
            receivers.push(r);
            queue.push(j, 1);
        }
        let oldest = queue.jobs[0].enqueued;
        let next = queue.next(now, true);
        assert!(
            matches!(next, Next::Wait(until) if until == oldest + Duration::from_secs(5)),
            "{next:?}"
        );
        // 3 + 2 + 3 = 8, the largest preferred size: it starts.
        let (j, r) = job(3, 4, far);
        receivers.push(r);
        queue.push(j, 1);
        assert_eq!(taken(queue.next(now, true)), [3, 2, 3]);
    }

    #[test]
    fn batches_are_fifo_and_end_at_a_request_that_does_not_fit() {
        let now = Instant::now();
        let far = now + Duration::from_secs(60);
        let mut queue = Queue::new(batching(8, 0));
        let mut receivers = Vec::new();
        for (n, width) in [(2, 4), (3, 4), (1, 5), (1, 4), (9, 4)] {
            let (j, r) = job(n, width, far);
            receivers.push(r);
            queue.push(j, 1);
        }
        assert_eq!(
            taken(queue.next(now, true)),
            [2, 3],
            "a different width ends it"
        );
        assert_eq!(taken(queue.next(now, true)), [1]);
        assert_eq!(taken(queue.next(now, true)), [1], "9 rows would not fit");
        assert_eq!(
            taken(queue.next(now, true)),
            [9],
            "more than a batch runs alone"
        );
        // Merging off (outputs that do not split): one request per call.
        let (a, _a) = job(1, 4, far);
        let (b, _b) = job(1, 4, far);
        queue.push(a, 1);
        queue.push(b, 1);
        assert_eq!(taken(queue.next(now, false)), [1]);
    }

    #[tokio::test]
    async fn requests_nobody_waits_for_leave_unrun() {
        let now = Instant::now();
        let mut queue = Queue::new(None);
        let (late, late_reply) = job(1, 4, now + Duration::from_millis(5));
        let (gone, gone_reply) = job(1, 4, now + Duration::from_secs(60));
        queue.push(late, 1);
        queue.push(gone, 1);
        drop(gone_reply);
        assert_eq!(queue.prune(now + Duration::from_millis(5)), 2);
        assert_eq!(queue.len(), 0);
        assert!(matches!(late_reply.await, Ok(Err(Error::Timeout(_)))));
    }
}
