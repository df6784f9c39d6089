//! `serval model shadow`: copy a fraction of an endpoint's requests to another endpoint and
//! compare the answers; `shadow remove`; `shadow report` (the fleet's comparison).

use anyhow::Result;
use serval_admin::shadows::{ShadowReport, ShadowSpec};

use crate::cli::{ShadowAddArgs, ShadowArgs, ShadowCommand, ShadowRemoveArgs, ShadowReportArgs};
use crate::context::{Context, note, print_table, show, table, time};

pub fn shadow(ctx: &Context, args: &ShadowArgs) -> Result<()> {
    match &args.command {
        None => add(ctx, &args.add),
        Some(ShadowCommand::Remove(args)) => remove(ctx, args),
        Some(ShadowCommand::Report(args)) => report(ctx, args),
    }
}

fn add(ctx: &Context, args: &ShadowAddArgs) -> Result<()> {
    let service = ctx.service()?;
    let spec = ShadowSpec {
        endpoint: args.endpoint.clone().unwrap_or_default(),
        target: args.target.clone().unwrap_or_default(),
        fraction: Some(args.fraction),
        tolerance: Some(args.tolerance),
    };
    note(format!(
        "Serving service Task {}, Adding shadow of '/{}/' to '/{}/'",
        service.id,
        spec.endpoint.trim_matches('/'),
        spec.target.trim_matches('/')
    ));
    let written = ctx.deployment().put_shadow(&service.id, &spec)?;
    show(&written);
    if ctx.json {
        return ctx.print_json(&written.result);
    }
    let shadow = &written.result;
    println!(
        "Shadow {} -> {} {} ({}% of requests, tolerance {})",
        shadow.endpoint,
        shadow.target,
        if written.created { "added" } else { "replaced" },
        shadow.fraction * 100.0,
        shadow.tolerance
    );
    Ok(())
}

fn remove(ctx: &Context, args: &ShadowRemoveArgs) -> Result<()> {
    let service = ctx.service()?;
    let written =
        ctx.deployment()
            .remove_shadow(&service.id, &args.endpoint, args.target.as_deref())?;
    show(&written);
    if ctx.json {
        return ctx.print_json(&written.result);
    }
    for shadow in &written.result {
        println!("Shadow {} -> {} removed", shadow.endpoint, shadow.target);
    }
    Ok(())
}

fn report(ctx: &Context, args: &ShadowReportArgs) -> Result<()> {
    let service = ctx.service()?;
    let window = args
        .window
        .as_deref()
        .map(serval_admin::shadows::window)
        .transpose()?;
    let reports = ctx
        .deployment()
        .shadow_report(&service.id, &args.endpoint, window)?;
    if ctx.json {
        return ctx.print_json(&reports);
    }
    let mut out = table(&[
        "target",
        "compared",
        "agreed",
        "agreement",
        "errors",
        "dropped",
        "p99 ms (endpoint)",
        "p99 ms (target)",
        "since",
    ]);
    for r in &reports {
        out.add_row(row(r));
    }
    print_table(&out);
    Ok(())
}

fn row(r: &ShadowReport) -> Vec<String> {
    let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("≤{v}"));
    vec![
        r.target.clone(),
        r.compared.to_string(),
        r.agreed.to_string(),
        r.agreement
            .map_or("-".to_string(), |a| format!("{:.2}%", a * 100.0)),
        r.errors.to_string(),
        r.dropped.to_string(),
        ms(r.primary_p99_ms),
        ms(r.shadow_p99_ms),
        time(r.since_ms),
    ]
}
