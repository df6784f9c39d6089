//! `serval model rollout`: move a canary's traffic from one endpoint to another step by step
//! while the SLOs hold on the fleet's numbers; `rollout status | pause | resume | abort`.

use anyhow::Result;
use serval_admin::rollouts::{Command as Action, RolloutSpec, RolloutStatus};

use crate::cli::{RolloutArgs, RolloutCommand, RolloutStartArgs};
use crate::context::{Context, note, print_table, show, table, time};

pub fn rollout(ctx: &Context, args: &RolloutArgs) -> Result<()> {
    match &args.command {
        None => start(ctx, &args.start),
        Some(RolloutCommand::Status(a)) => {
            let service = ctx.service()?;
            let status = ctx.deployment().rollout_status(&service.id, &a.endpoint)?;
            print(ctx, &status)
        }
        Some(RolloutCommand::Pause(a)) => act(ctx, &a.endpoint, Action::Pause),
        Some(RolloutCommand::Resume(a)) => act(ctx, &a.endpoint, Action::Resume),
        Some(RolloutCommand::Abort(a)) => act(ctx, &a.endpoint, Action::Abort),
    }
}

fn start(ctx: &Context, args: &RolloutStartArgs) -> Result<()> {
    let service = ctx.service()?;
    let canary = args.endpoint.clone().unwrap_or_default();
    let spec = RolloutSpec {
        from: args.from.clone().unwrap_or_default(),
        to: args.to.clone().unwrap_or_default(),
        steps: args.steps.clone(),
        interval: args.interval.clone(),
        max_error_ratio: args.max_error_ratio,
        max_p99_ms: args.max_p99_ms,
        min_agreement: args.min_agreement,
        shadow_first: args.shadow_first.clone(),
        min_requests: Some(args.min_requests),
    };
    note(format!(
        "Serving service Task {}, Starting rollout of canary '/{canary}/'",
        service.id
    ));
    let written = ctx
        .deployment()
        .start_rollout(&service.id, &canary, &spec)?;
    show(&written);
    print(ctx, &written.result)
}

fn act(ctx: &Context, canary: &str, action: Action) -> Result<()> {
    let service = ctx.service()?;
    let written = ctx
        .deployment()
        .rollout_action(&service.id, canary, action)?;
    show(&written);
    print(ctx, &written.result)
}

/// The status as JSON, or as lines and a table of events.
fn print(ctx: &Context, status: &RolloutStatus) -> Result<()> {
    if ctx.json {
        return ctx.print_json(status);
    }
    let steps: Vec<String> = status.steps.iter().map(|s| format!("{s}%")).collect();
    println!(
        "Rollout of {}: {} → {}, {} (step {} of {}: {})",
        status.canary,
        status.from,
        status.to,
        status.state,
        status.step,
        status.steps.len(),
        steps.join(", ")
    );
    println!(
        "Weights now: {} {} / {} {}",
        status.from, status.weights[0], status.to, status.weights[1]
    );
    let mut events = table(&["time", "event", "detail"]);
    for e in &status.events {
        events.add_row(vec![time(e.time_ms), e.kind.clone(), e.detail.clone()]);
    }
    print_table(&events);
    Ok(())
}
