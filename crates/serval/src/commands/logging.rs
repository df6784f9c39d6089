//! `serval logging add | remove | list`: payload logs — a sampled fraction of an endpoint's
//! requests and predictions written by the servers as Parquet files.

use anyhow::Result;
use comfy_table::Table;
use serde::Serialize;
use serval_admin::payload_logs::LogSpec;
use serval_store::PayloadLog;

use crate::cli::{LoggingAddArgs, LoggingRemoveArgs};
use crate::context::{Context, note, print_table, show, table};

pub fn add(ctx: &Context, args: &LoggingAddArgs) -> Result<()> {
    let service = ctx.service()?;
    let spec = LogSpec {
        endpoint: args.endpoint.clone(),
        sample: Some(args.sample),
        destination: args.destination.clone(),
        max_file_mb: Some(args.max_file_mb),
        max_file_seconds: Some(args.max_file_seconds),
    };
    note(format!(
        "Serving service Task {}, Adding payload logging of '/{}/'",
        service.id,
        spec.endpoint.trim_matches('/')
    ));
    let written = ctx.deployment().put_payload_log(&service.id, &spec)?;
    show(&written);
    if ctx.json {
        return ctx.print_json(&written.result);
    }
    let log = &written.result;
    println!(
        "Payload log of {} {}: {}% of requests to {} (files up to {} MiB / {} s)",
        log.endpoint,
        if written.created { "added" } else { "replaced" },
        log.sample * 100.0,
        log.destination,
        log.max_file_mb,
        log.max_file_seconds
    );
    Ok(())
}

pub fn remove(ctx: &Context, args: &LoggingRemoveArgs) -> Result<()> {
    let service = ctx.service()?;
    let written = ctx
        .deployment()
        .remove_payload_log(&service.id, &args.endpoint)?;
    show(&written);
    if ctx.json {
        return ctx.print_json(&written.result);
    }
    println!("Payload log of {} removed", written.result.endpoint);
    Ok(())
}

#[derive(Serialize)]
struct LogsView<'a> {
    service: &'a str,
    payload_logs: Vec<&'a PayloadLog>,
}

pub fn list(ctx: &Context) -> Result<()> {
    let service = ctx.service()?;
    let snapshot = ctx.deployment().snapshot(&service.id)?;
    let logs: Vec<&PayloadLog> = snapshot.config.payload_logs.values().collect();
    if ctx.json {
        return ctx.print_json(&LogsView {
            service: &snapshot.service.id,
            payload_logs: logs,
        });
    }
    if logs.is_empty() {
        println!("No payload logs (add one with `serval logging add`)");
        return Ok(());
    }
    print_table(&logs_table(logs));
    Ok(())
}

/// The payload logs as a table (also in `model list`).
pub fn logs_table<'a>(logs: impl IntoIterator<Item = &'a PayloadLog>) -> Table {
    let mut out = table(&[
        "endpoint",
        "sample",
        "destination",
        "max file MiB",
        "max file s",
    ]);
    for log in logs {
        out.add_row(vec![
            log.endpoint.clone(),
            log.sample.to_string(),
            log.destination.clone(),
            log.max_file_mb.to_string(),
            log.max_file_seconds.to_string(),
        ]);
    }
    out
}
