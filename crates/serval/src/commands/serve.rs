//! `serve`: run the inference server for one service.

use std::io::Write;
use std::time::Duration;

use anyhow::{Result, anyhow, ensure};
use serval_onnx::OnnxOptions;
use serval_server::ServeConfig;

use crate::cli::{GlobalArgs, ServeArgs, Switch};
use crate::context::{Context, home_dir};

fn seconds(flag: &str, value: f64) -> Result<Duration> {
    ensure!(
        value.is_finite() && value > 0.0,
        "{flag} must be a positive number of seconds"
    );
    Duration::try_from_secs_f64(value).map_err(|_| anyhow!("{flag} {value} is too long"))
}

fn tls(args: &ServeArgs) -> Result<Option<(std::path::PathBuf, std::path::PathBuf)>> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Ok(Some((cert.clone(), key.clone()))),
        (None, None) => Ok(None),
        _ => Err(anyhow!("--tls-cert and --tls-key go together")),
    }
}

/// Runs `attempt` until it stops failing for an unreachable control store, waiting 0.25 s and
/// doubling up to 5 s between tries and logging each: a server started before its database (a
/// fleet coming up, a PostgreSQL restart) waits instead of exiting. Other errors end it at once.
pub fn until_store_answers<T>(mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
    let mut delay = Duration::from_millis(250);
    let mut waited = false;
    loop {
        match attempt() {
            Ok(value) => {
                if waited {
                    tracing::info!("control store reachable: starting");
                }
                return Ok(value);
            }
            Err(error) if store_unavailable(&error) => {
                tracing::warn!(
                    "control store unreachable ({}); retrying in {} ms",
                    error.root_cause(),
                    delay.as_millis()
                );
                waited = true;
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error),
        }
    }
}

fn store_unavailable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<serval_store::StoreError>(),
            Some(serval_store::StoreError::Unavailable(_))
        )
    })
}

pub fn serve(ctx: Context, global: &GlobalArgs, args: &ServeArgs) -> Result<()> {
    let service = until_store_answers(|| ctx.service())?;
    ensure!(args.body_limit > 0, "--body-limit must be positive");
    ensure!(args.max_values > 0, "--max-values must be positive");
    ensure!(
        args.max_request_memory > 0,
        "--max-request-memory must be positive"
    );
    ensure!(
        args.max_memory_in_flight >= args.max_request_memory,
        "--max-memory-in-flight ({}) must be at least --max-request-memory ({}): the largest \
         request allowed could never run",
        args.max_memory_in_flight,
        args.max_request_memory
    );
    ensure!(
        args.max_connections > 0,
        "--max-connections must be positive"
    );
    ensure!(
        args.drain_delay.is_finite() && args.drain_delay >= 0.0,
        "--drain-delay must be a number of seconds (0 or more)"
    );
    ensure!(
        args.max_in_flight > 0 && args.max_in_flight_per_endpoint > 0,
        "--max-in-flight and --max-in-flight-per-endpoint must be positive"
    );
    let admin_api = match args.admin_api {
        None => args.require_auth,
        Some(Switch::On) => {
            ensure!(
                args.require_auth,
                "--admin-api on needs --require-auth: the admin API is never open without keys"
            );
            true
        }
        Some(Switch::Off) => false,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let python_workers = args.python_workers.unwrap_or(cores.min(64));
    ensure!(
        (1..=64).contains(&python_workers),
        "--python-workers must be between 1 and 64"
    );
    let runner_threads = args.runner_threads.unwrap_or(cores.min(64));
    ensure!(
        (1..=64).contains(&runner_threads),
        "--runner-threads must be between 1 and 64"
    );
    ensure!(
        args.poll_interval_ms > 0,
        "--poll-interval-ms must be positive"
    );
    let config = ServeConfig {
        service_id: service.id.clone(),
        host: args.host.clone(),
        port: args.port,
        grpc_port: args.grpc_port.0,
        body_limit: args.body_limit,
        max_values: args.max_values,
        max_request_memory: args.max_request_memory,
        max_memory_in_flight: args.max_memory_in_flight,
        max_in_flight: args.max_in_flight,
        max_in_flight_per_endpoint: args.max_in_flight_per_endpoint,
        request_timeout: seconds("--request-timeout", args.request_timeout)?,
        poll_interval: Duration::from_millis(args.poll_interval_ms),
        notify: !args.poll_only,
        shutdown_timeout: seconds("--shutdown-timeout", args.shutdown_timeout)?,
        cache_dir: home_dir(global)?.join("cache"),
        cache_size: args.cache_size.map(|s| s.0),
        onnx: OnnxOptions {
            library: args.onnxruntime_lib.clone(),
            python: args.python.clone(),
            intra_threads: args.onnx_threads,
        },
        python: args.python.clone(),
        python_workers,
        runner_threads,
        metrics: !args.disable_metrics,
        metrics_port: args.metrics_port,
        tls: tls(args)?,
        max_connections: args.max_connections,
        header_read_timeout: seconds("--header-timeout", args.header_timeout)?,
        idle_timeout: seconds("--idle-timeout", args.idle_timeout)?,
        drain_delay: Duration::from_secs_f64(args.drain_delay.max(0.0)),
        require_auth: args.require_auth,
        auth_metrics: args.auth_metrics,
        ui: args.ui == Switch::On,
        admin_api,
        artifacts: global.artifacts.clone().filter(|d| !d.is_empty()),
        artifacts_dir: home_dir(global)?.join("artifacts"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the async runtime: {e}"))?;
    let service_id = service.id.clone();
    let ui = config.ui;
    let served = runtime.block_on(serval_server::run(
        config,
        ctx.local("serve")?.store.clone(),
        move |listening| {
            // The one stdout line: scripts and tests read the bound addresses from it.
            let (http, grpc) = if listening.tls {
                ("https", "grpcs")
            } else {
                ("http", "grpc")
            };
            let grpc = listening
                .grpc
                .map(|addr| format!(" and {grpc}://{addr}"))
                .unwrap_or_default();
            println!(
                "serval serve: listening on {http}://{}{grpc} (service {service_id})",
                listening.http
            );
            let _ = std::io::stdout().flush();
            if ui {
                tracing::info!("web console: {http}://{}/ui", listening.http);
            }
        },
    ));
    // A load pass still running on a blocking thread (a signal before the first one finished)
    // does not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    served.map_err(|e| anyhow!(e))
}
