//! The server's executor of a runner: one OS thread per engine instance (an ONNX Runtime
//! session is run by one thread at a time), each running the calls the dispatcher gives it —
//! requests merged by rows into one engine call and split back, or one by one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serval_engine::{EngineError, Instance, NamedOutput, NamedTensor, Tensor};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Execute;
use super::queue::{Job, Reply};
use crate::endpoint::{STAGE_INFERENCE, STAGE_QUEUE};
use crate::error::Error;
use crate::metrics::{BatchMetrics, EndpointMetrics};

/// The server's executor: one OS thread per engine instance.
pub(super) struct Threads {
    senders: Vec<std::sync::mpsc::Sender<(Vec<Job>, mpsc::UnboundedSender<usize>)>>,
}

impl Threads {
    pub(super) fn spawn(
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
pub(super) fn run_call(
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
