//! `serval monitor reference | drift | remove`: an endpoint's drift from reference data.

use anyhow::{Result, bail};
use serval_admin::drift::{ReferenceSpec, Values, feature_reference};

use crate::cli::{MonitorDriftArgs, MonitorReferenceArgs, MonitorRemoveArgs};
use crate::context::{Context, note, print_table, show, table};

pub fn reference(ctx: &Context, args: &MonitorReferenceArgs) -> Result<()> {
    let service = ctx.service()?;
    if !(2..=100).contains(&args.bins) {
        bail!("--bins must be from 2 to 100, got {}", args.bins);
    }
    let window_ms = serval_admin::shadows::window(&args.window)?;
    let data = if args.data.is_dir() {
        let time = |flag: &str, text: &Option<String>| -> Result<Option<i64>> {
            let Some(text) = text else { return Ok(None) };
            let at = humantime::parse_rfc3339_weak(text.trim()).map_err(|_| {
                anyhow::anyhow!("{flag} '{text}' is not a time such as 2026-12-01T00:00:00Z")
            })?;
            let micros = at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            Ok(Some(i64::try_from(micros).unwrap_or(i64::MAX)))
        };
        let rows = serval_monitor::data::LogRows {
            endpoint: args.endpoint.trim_matches('/').to_string(),
            since_us: time("--since", &args.since)?,
            until_us: time("--until", &args.until)?,
            input: args.input.clone(),
            names: (!args.names.is_empty()).then(|| args.names.clone()),
        };
        serval_monitor::data::read_payload_logs(&args.data, &rows)?
    } else {
        if args.since.is_some()
            || args.until.is_some()
            || args.input.is_some()
            || !args.names.is_empty()
        {
            bail!(
                "--since, --until, --input and --names select rows of payload logs: give --data the logs' folder"
            );
        }
        serval_monitor::data::read(&args.data)?
    };
    for name in &args.categorical {
        if !data.columns.iter().any(|(n, _)| n == name) {
            bail!(
                "--categorical {name}: '{}' has no column '{name}'",
                args.data.display()
            );
        }
    }
    let features = data
        .columns
        .iter()
        .map(|(name, column)| {
            let values = match column {
                serval_monitor::data::Column::Numbers(v) => Values::Numbers(v.clone()),
                serval_monitor::data::Column::Texts(v) => Values::Texts(v.clone()),
            };
            let categorical = args.categorical.contains(name);
            Ok(feature_reference(name, &values, args.bins, categorical)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let spec = ReferenceSpec {
        endpoint: args.endpoint.clone(),
        window_seconds: Some((window_ms / 1_000).max(1) as u64),
        features,
        rows: data.rows as u64,
        source: args
            .data
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    note(format!(
        "Serving service Task {}, Adding drift reference of '/{}/' from {} rows",
        service.id,
        spec.endpoint.trim_matches('/'),
        data.rows
    ));
    let written = ctx.deployment().put_reference(&service.id, &spec)?;
    show(&written);
    if ctx.json {
        return ctx.print_json(&written.result);
    }
    let reference = &written.result;
    println!(
        "Drift reference of {} {}: {} features from {} rows of {} (live window {} s)",
        reference.endpoint,
        if written.created { "added" } else { "replaced" },
        reference.features.len(),
        reference.rows,
        reference.source,
        reference.window_seconds
    );
    Ok(())
}

pub fn drift(ctx: &Context, args: &MonitorDriftArgs) -> Result<()> {
    let service = ctx.service()?;
    let window = args
        .window
        .as_deref()
        .map(serval_admin::shadows::window)
        .transpose()?;
    let report = ctx
        .deployment()
        .drift_report(&service.id, &args.endpoint, window)?;
    if ctx.json {
        return ctx.print_json(&report);
    }
    println!(
        "Drift of {} over the last {} s: {} live rows (every server)",
        report.endpoint, report.window_seconds, report.rows
    );
    let mut out = table(&["feature", "kind", "count", "psi", "ks / chi²", "status"]);
    let number = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for f in &report.features {
        out.add_row(vec![
            f.feature.clone(),
            f.kind.clone(),
            f.count.to_string(),
            number(f.psi),
            number(f.ks.or(f.chi_square)),
            f.status.clone(),
        ]);
    }
    print_table(&out);
    Ok(())
}

pub fn remove(ctx: &Context, args: &MonitorRemoveArgs) -> Result<()> {
    let service = ctx.service()?;
    let written = ctx
        .deployment()
        .remove_reference(&service.id, &args.endpoint)?;
    show(&written);
    if ctx.json {
        return ctx.print_json(&written.result);
    }
    println!("Drift reference of {} removed", written.result.endpoint);
    Ok(())
}
