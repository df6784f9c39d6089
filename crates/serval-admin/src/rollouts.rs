//! Rollouts (`serval model rollout`): a canary's weights moved from one endpoint to another step
//! by step, each step held for an interval and taken only while the SLOs hold over it — on the
//! fleet's numbers, which every server adds to the store — and rolled back to the old endpoint
//! when one is breached. An optional shadow phase first: the new endpoint gets copies of the old
//! one's requests and must agree often enough before it gets any real request.
//!
//! The state lives in the store (in the service's configuration, so it survives restarts); one
//! server drives a rollout at a time, holding its lease ([`tick`]), taken over when it expires.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serval_store::{
    Canary, CanaryTarget, Rollout, RolloutState, Shadow, StatsRow, Store, StoreError,
};

use crate::{Caller, Result, Written, ensure, invalid, service_target};

/// The statistics kind of one endpoint's requests, written for rollouts' endpoints.
pub const ENDPOINT_KIND: &str = "endpoint";
/// How long a driver's lease lasts without renewal.
pub const LEASE_MS: i64 = 6_000;
/// The key name rollout steps are audited under.
pub const DRIVER_KEY: &str = "rollout";

/// A rollout to start (`PUT .../rollouts/{canary}`, `serval model rollout`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// The endpoint url that has the traffic now.
    pub from: String,
    /// The endpoint url that gets it.
    pub to: String,
    /// Percent of the traffic to `to` at each step, increasing, ending at 100.
    pub steps: Vec<f64>,
    /// How long each step is held, e.g. `60s`.
    pub interval: String,
    #[serde(default)]
    pub max_error_ratio: Option<f64>,
    #[serde(default)]
    pub max_p99_ms: Option<f64>,
    #[serde(default)]
    pub min_agreement: Option<f64>,
    /// The shadow phase's length, e.g. `5m` (with `min_agreement`).
    #[serde(default)]
    pub shadow_first: Option<String>,
    /// Requests `to` must answer in a step before it is judged (default 10).
    #[serde(default)]
    pub min_requests: Option<u64>,
}

fn duration_ms(flag: &str, text: &str) -> Result<i64> {
    let d = humantime::parse_duration(text.trim()).map_err(|_| {
        invalid(format!(
            "{flag} '{text}' is not a duration such as 30s or 5m"
        ))
    })?;
    ensure(!d.is_zero(), || format!("{flag} must be longer than 0"))?;
    Ok(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Starts a rollout of canary `canary` (created with weights 100/0 when it does not exist, or
/// taken over when it splits between exactly `from` and `to`).
pub fn start(
    store: &dyn Store,
    caller: &Caller,
    service_id: &str,
    canary: &str,
    spec: &RolloutSpec,
    now_ms: i64,
) -> Result<Written<Rollout>> {
    let canary =
        serval_store::names::validate_endpoint_name(canary).map_err(|e| invalid(e.to_string()))?;
    let from = spec.from.trim_matches('/').to_string();
    let to = spec.to.trim_matches('/').to_string();
    ensure(!from.is_empty() && !to.is_empty() && from != to, || {
        "a rollout needs --from and --to, two different endpoints".to_string()
    })?;
    ensure(!spec.steps.is_empty(), || {
        "--steps needs at least one step, e.g. 5,25,50,100".to_string()
    })?;
    let mut last = 0.0;
    for step in &spec.steps {
        ensure(step.is_finite() && *step > last && *step <= 100.0, || {
            format!(
                "--steps must increase from above 0 to 100 (percent of the traffic to --to), got {}",
                join(&spec.steps)
            )
        })?;
        last = *step;
    }
    ensure(last == 100.0, || {
        format!("the last of --steps must be 100, got {}", join(&spec.steps))
    })?;
    let interval_ms = duration_ms("--interval", &spec.interval)?;
    if let Some(ratio) = spec.max_error_ratio {
        ensure((0.0..=1.0).contains(&ratio), || {
            format!("--max-error-ratio must be in [0, 1], got {ratio}")
        })?;
    }
    if let Some(p99) = spec.max_p99_ms {
        ensure(p99.is_finite() && p99 > 0.0, || {
            format!("--max-p99-ms must be a positive number, got {p99}")
        })?;
    }
    let shadow_first_ms = spec
        .shadow_first
        .as_deref()
        .map(|t| duration_ms("--shadow-first", t))
        .transpose()?;
    if let Some(agreement) = spec.min_agreement {
        ensure((0.0..=1.0).contains(&agreement), || {
            format!("--min-agreement must be in [0, 1], got {agreement}")
        })?;
    }
    ensure(
        spec.min_agreement.is_some() == shadow_first_ms.is_some(),
        || "--min-agreement and --shadow-first go together (the shadow phase)".to_string(),
    )?;
    let shadow = shadow_first_ms.is_some();
    let mut rollout = Rollout {
        canary: canary.clone(),
        from: from.clone(),
        to: to.clone(),
        steps: spec.steps.clone(),
        interval_ms,
        max_error_ratio: spec.max_error_ratio,
        max_p99_ms: spec.max_p99_ms,
        min_agreement: spec.min_agreement,
        shadow_first_ms,
        min_requests: spec.min_requests.unwrap_or(10),
        state: if shadow {
            RolloutState::Shadow
        } else {
            RolloutState::Running
        },
        step: None,
        step_started_ms: now_ms,
        paused_in: None,
        created_ms: now_ms,
        events: Vec::new(),
    };
    let detail = format!(
        "{from} → {to} in steps of {}% every {}",
        join(&spec.steps),
        spec.interval.trim()
    );
    rollout.event(now_ms, "started", detail);
    if !shadow {
        rollout.step = Some(0);
        let first = rollout.steps[0];
        rollout.event(now_ms, "step", format!("step 1: {first}% to {to}"));
    }
    let change = caller.change(
        "rollout.start",
        service_target(service_id, &format!("rollouts/{canary}")),
    );
    let after = store.update_service(service_id, &change, &mut |config| {
        for url in [&from, &to] {
            ensure(crate::endpoints::is_known_endpoint(config, url), || {
                format!("'{url}' is not an endpoint of this service")
            })?;
        }
        if let Some(existing) = config.rollouts.get(&canary)
            && !existing.state.is_final()
        {
            return Err(invalid(format!(
                "canary '{canary}' has a rollout {} already: abort it first (serval model rollout abort --endpoint {canary})",
                existing.state.as_str()
            )));
        }
        if let Some(existing) = config.canaries.get(&canary) {
            let splits = matches!(&existing.target, CanaryTarget::Endpoints(list)
                if list.len() == 2 && list.contains(&from) && list.contains(&to));
            ensure(splits, || {
                format!(
                    "canary '{canary}' exists and does not split between exactly '{from}' and '{to}'"
                )
            })?;
        }
        ensure(!config.endpoints.contains_key(&canary), || {
            format!("'{canary}' is an endpoint: a rollout drives a canary of another name")
        })?;
        apply(config, &rollout);
        Ok(())
    })?;
    let mut written = Written::new(rollout, Some(after.revision));
    written.created = true;
    Ok(written)
}

fn join(steps: &[f64]) -> String {
    steps
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Writes `rollout` and what it implies into `config`: the canary's weights and, in the shadow
/// phase, the shadow of `from` to `to` (removed after it).
fn apply(config: &mut serval_store::ServiceConfig, rollout: &Rollout) {
    let [w_from, w_to] = rollout.weights();
    config.canaries.insert(
        rollout.canary.clone(),
        Canary {
            name: rollout.canary.clone(),
            weights: vec![w_from, w_to],
            target: CanaryTarget::Endpoints(vec![rollout.from.clone(), rollout.to.clone()]),
            sticky: config
                .canaries
                .get(&rollout.canary)
                .and_then(|c| c.sticky.clone()),
        },
    );
    let key = Shadow::key(&rollout.from, &rollout.to);
    if rollout.state == RolloutState::Shadow {
        config.shadows.entry(key).or_insert_with(|| Shadow {
            endpoint: rollout.from.clone(),
            target: rollout.to.clone(),
            fraction: 1.0,
            tolerance: Shadow::DEFAULT_TOLERANCE,
            created_ms: rollout.step_started_ms,
        });
    } else if rollout.shadow_first_ms.is_some() {
        config.shadows.remove(&key);
    }
    config
        .rollouts
        .insert(rollout.canary.clone(), rollout.clone());
}

/// What a person asks of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Pause,
    Resume,
    Abort,
}

/// Pauses, resumes or aborts the rollout of `canary`.
pub fn command(
    store: &dyn Store,
    caller: &Caller,
    service_id: &str,
    canary: &str,
    command: Command,
    now_ms: i64,
) -> Result<Written<Rollout>> {
    let operation = match command {
        Command::Pause => "rollout.pause",
        Command::Resume => "rollout.resume",
        Command::Abort => "rollout.abort",
    };
    let change = caller.change(
        operation,
        service_target(service_id, &format!("rollouts/{canary}")),
    );
    let mut result = None;
    let after = store.update_service(service_id, &change, &mut |config| {
        let mut rollout = config
            .rollouts
            .get(canary)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(format!("canary '{canary}' has no rollout")))?;
        let state = rollout.state;
        match command {
            Command::Pause => {
                ensure(state.is_active(), || {
                    format!(
                        "the rollout of '{canary}' is {}: only a running one pauses",
                        state.as_str()
                    )
                })?;
                rollout.paused_in = Some(state);
                rollout.state = RolloutState::Paused;
                rollout.event(now_ms, "paused", format!("by {}", caller.key));
            }
            Command::Resume => {
                ensure(state == RolloutState::Paused, || {
                    format!(
                        "the rollout of '{canary}' is {}, not paused",
                        state.as_str()
                    )
                })?;
                rollout.state = rollout.paused_in.take().unwrap_or(RolloutState::Running);
                // The interrupted step (or shadow phase) is measured afresh.
                rollout.step_started_ms = now_ms;
                rollout.event(now_ms, "resumed", format!("by {}", caller.key));
            }
            Command::Abort => {
                ensure(!state.is_final(), || {
                    format!("the rollout of '{canary}' has ended ({})", state.as_str())
                })?;
                rollout.state = RolloutState::Aborted;
                rollout.paused_in = None;
                rollout.event(
                    now_ms,
                    "aborted",
                    format!("by {}: all traffic back to {}", caller.key, rollout.from),
                );
            }
        }
        apply(config, &rollout);
        result = Some(rollout);
        Ok(())
    })?;
    let rollout = result.ok_or_else(|| StoreError::Internal("no rollout written".into()))?;
    Ok(Written::new(rollout, Some(after.revision)))
}

/// A rollout as `serval model rollout status --json` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutStatus {
    pub canary: String,
    pub from: String,
    pub to: String,
    /// `shadow`, `running`, `paused`, `promoted`, `rolled_back` or `aborted`.
    pub state: String,
    /// The current step, counted from 1 (`0`: the shadow phase, before the first).
    pub step: usize,
    pub steps: Vec<f64>,
    /// The canary's weights now, `[from, to]`.
    pub weights: Vec<f64>,
    pub interval_ms: i64,
    pub step_started_ms: i64,
    pub events: Vec<EventView>,
}

/// An event as the status shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventView {
    /// RFC 3339.
    pub time: String,
    pub time_ms: i64,
    pub kind: String,
    pub detail: String,
}

impl RolloutStatus {
    pub fn of(rollout: &Rollout) -> RolloutStatus {
        RolloutStatus {
            canary: rollout.canary.clone(),
            from: rollout.from.clone(),
            to: rollout.to.clone(),
            state: rollout.state.as_str().to_string(),
            step: rollout.step.map_or(0, |s| s + 1),
            steps: rollout.steps.clone(),
            weights: rollout.weights().to_vec(),
            interval_ms: rollout.interval_ms,
            step_started_ms: rollout.step_started_ms,
            events: rollout
                .events
                .iter()
                .map(|e| EventView {
                    time: humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_millis(e.time_ms.max(0) as u64),
                    )
                    .to_string(),
                    time_ms: e.time_ms,
                    kind: e.kind.clone(),
                    detail: e.detail.clone(),
                })
                .collect(),
        }
    }
}

/// The rollout of `canary`.
pub fn status(store: &dyn Store, service_id: &str, canary: &str) -> Result<RolloutStatus> {
    let config = store.snapshot(service_id)?.config;
    config
        .rollouts
        .get(canary)
        .map(RolloutStatus::of)
        .ok_or_else(|| StoreError::NotFound(format!("canary '{canary}' has no rollout")))
}

/// The fleet's numbers a decision is made on, summed since the step (or phase) started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Numbers {
    pub requests: u64,
    pub errors: u64,
    /// Latency bucket counts by upper bound (milliseconds; `f64::INFINITY` last).
    pub latency: Vec<(f64, u64)>,
    pub compared: u64,
    pub agreed: u64,
}

impl Numbers {
    /// Sums statistics rows (endpoint rows and shadow rows alike).
    pub fn of(rows: &[StatsRow]) -> Numbers {
        let mut sum: BTreeMap<String, u64> = BTreeMap::new();
        for row in rows {
            for (name, count) in &row.counts {
                *sum.entry(name.clone()).or_default() += count;
            }
        }
        let get = |name: &str| sum.get(name).copied().unwrap_or(0);
        let mut latency: Vec<(f64, u64)> = sum
            .iter()
            .filter_map(|(name, count)| {
                let bound = name.strip_prefix("ms_le_")?;
                let bound = if bound == "inf" {
                    f64::INFINITY
                } else {
                    bound.parse().ok()?
                };
                Some((bound, *count))
            })
            .collect();
        latency.sort_by(|a, b| a.0.total_cmp(&b.0));
        Numbers {
            requests: get("requests"),
            errors: get("errors"),
            latency,
            compared: get("agreed") + get("disagreed"),
            agreed: get("agreed"),
        }
    }

    /// The upper bound of the latency bucket holding the 99th percentile (ms).
    pub fn p99_ms(&self) -> Option<f64> {
        let total: u64 = self.latency.iter().map(|(_, c)| c).sum();
        if total == 0 {
            return None;
        }
        let rank = (0.99 * total as f64).ceil() as u64;
        let mut seen = 0;
        self.latency.iter().find_map(|(bound, count)| {
            seen += count;
            (seen >= rank).then_some(*bound)
        })
    }
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing yet (the step's interval runs, or too few requests).
    Wait,
    /// The shadow phase passed: the first step (detail: why).
    ShadowPassed(String),
    /// The next step.
    Step(usize, String),
    Promoted(String),
    RolledBack(String),
}

/// Decides on `rollout` at `now_ms` given the fleet's numbers since its step started: `to`'s
/// requests (running) or the shadow pair's comparisons (shadow phase). Pure.
pub fn decide(rollout: &Rollout, numbers: &Numbers, now_ms: i64) -> Decision {
    let elapsed = now_ms - rollout.step_started_ms;
    match rollout.state {
        RolloutState::Shadow => {
            let (Some(phase), Some(min)) = (rollout.shadow_first_ms, rollout.min_agreement) else {
                return Decision::ShadowPassed("no shadow phase".into());
            };
            if elapsed < phase {
                return Decision::Wait;
            }
            if numbers.compared < rollout.min_requests {
                return Decision::Wait;
            }
            let agreement = numbers.agreed as f64 / numbers.compared as f64;
            let what = format!(
                "{} agreed with {} on {:.2}% of {} requests (at least {:.2}% needed)",
                rollout.to,
                rollout.from,
                agreement * 100.0,
                numbers.compared,
                min * 100.0
            );
            if agreement >= min {
                Decision::ShadowPassed(what)
            } else {
                Decision::RolledBack(what)
            }
        }
        RolloutState::Running => {
            let step = rollout.step.unwrap_or(0);
            // A breach rolls back at once; holding SLOs are judged at the interval's end.
            if numbers.requests >= rollout.min_requests
                && let Some(reason) = breach(rollout, numbers)
            {
                return Decision::RolledBack(reason);
            }
            if elapsed < rollout.interval_ms || numbers.requests < rollout.min_requests {
                return Decision::Wait;
            }
            let held = held(rollout, numbers);
            match rollout.steps.get(step + 1) {
                Some(next) => Decision::Step(
                    step + 1,
                    format!("step {}: {next}% to {} ({held})", step + 2, rollout.to),
                ),
                None => Decision::Promoted(format!("{} has all the traffic ({held})", rollout.to)),
            }
        }
        _ => Decision::Wait,
    }
}

fn breach(rollout: &Rollout, numbers: &Numbers) -> Option<String> {
    let ratio = numbers.errors as f64 / numbers.requests.max(1) as f64;
    if let Some(max) = rollout.max_error_ratio
        && ratio > max
    {
        return Some(format!(
            "error ratio of {} was {:.2}% ({} of {} requests), above the {:.2}% allowed",
            rollout.to,
            ratio * 100.0,
            numbers.errors,
            numbers.requests,
            max * 100.0
        ));
    }
    if let (Some(max), Some(p99)) = (rollout.max_p99_ms, numbers.p99_ms())
        && p99 > max
    {
        return Some(format!(
            "p99 latency of {} was up to {p99} ms over {} requests, above the {max} ms allowed",
            rollout.to, numbers.requests
        ));
    }
    None
}

fn held(rollout: &Rollout, numbers: &Numbers) -> String {
    let ratio = numbers.errors as f64 / numbers.requests.max(1) as f64;
    let mut text = format!(
        "{} requests, {:.2}% errors",
        numbers.requests,
        ratio * 100.0
    );
    if rollout.max_p99_ms.is_some()
        && let Some(p99) = numbers.p99_ms()
    {
        text.push_str(&format!(", p99 ≤ {p99} ms"));
    }
    text
}

/// What a driving server did in one [`tick`].
#[derive(Debug, Clone, PartialEq)]
pub struct Ticked {
    /// The kinds of the events it recorded.
    pub events: Vec<String>,
}

/// One turn of the driver on server `holder` for the rollout of `canary`: takes or renews the
/// lease (else does nothing), reads the fleet's numbers, decides, and writes the decision (the
/// canary's weights, the rollout's state and events) in one audited store write.
pub fn tick(
    store: &dyn Store,
    service_id: &str,
    canary: &str,
    holder: &str,
    now_ms: i64,
) -> Result<Option<Ticked>> {
    let lease = store.lease(
        service_id,
        &format!("rollout/{canary}"),
        holder,
        LEASE_MS,
        now_ms,
    )?;
    if !lease.held {
        return Ok(None);
    }
    let config = store.snapshot(service_id)?.config;
    let Some(rollout) = config.rollouts.get(canary).cloned() else {
        return Ok(None);
    };
    if !rollout.state.is_active() {
        return Ok(None);
    }
    let since = StatsRow::first_bucket(rollout.step_started_ms, now_ms);
    let rows = match rollout.state {
        RolloutState::Shadow => store
            .stats(service_id, crate::shadows::KIND, &rollout.from, since)?
            .into_iter()
            .filter(|r| r.target == rollout.to)
            .collect::<Vec<_>>(),
        _ => store.stats(service_id, ENDPOINT_KIND, &rollout.to, since)?,
    };
    let decision = decide(&rollout, &Numbers::of(&rows), now_ms);
    let mut events = Vec::new();
    if let Some(previous) = &lease.taken_from {
        events.push((
            "leader_changed".to_string(),
            format!("{holder} drives the rollout (its lease from {previous} had expired)"),
        ));
    }
    let mut next = rollout.clone();
    match decision {
        Decision::Wait => {}
        Decision::ShadowPassed(why) => {
            next.state = RolloutState::Running;
            next.step = Some(0);
            next.step_started_ms = now_ms;
            events.push(("shadow_passed".into(), why));
            events.push((
                "step".into(),
                format!("step 1: {}% to {}", next.steps[0], next.to),
            ));
        }
        Decision::Step(step, why) => {
            next.step = Some(step);
            next.step_started_ms = now_ms;
            events.push(("step".into(), why));
        }
        Decision::Promoted(why) => {
            next.state = RolloutState::Promoted;
            next.step_started_ms = now_ms;
            events.push(("promoted".into(), why));
        }
        Decision::RolledBack(why) => {
            next.state = RolloutState::RolledBack;
            next.step_started_ms = now_ms;
            events.push((
                "rolled_back".into(),
                format!("{why}: all traffic back to {}", next.from),
            ));
        }
    }
    if events.is_empty() {
        return Ok(Some(Ticked { events: Vec::new() }));
    }
    for (kind, detail) in &events {
        next.event(now_ms, kind, detail.clone());
    }
    let operation = format!(
        "rollout.{}",
        events.last().map_or("step", |(kind, _)| kind.as_str())
    );
    let change = Caller::key(DRIVER_KEY).change(
        &operation,
        service_target(service_id, &format!("rollouts/{canary}")),
    );
    store.update_service(service_id, &change, &mut |config| {
        // Only from the state it was decided on: a person's pause or abort in between wins.
        if config.rollouts.get(canary) != Some(&rollout) {
            return Err(StoreError::Stale(format!(
                "the rollout of '{canary}' changed while it was being decided"
            )));
        }
        apply(config, &next);
        Ok(())
    })?;
    Ok(Some(Ticked {
        events: events.into_iter().map(|(kind, _)| kind).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(state: RolloutState, step: Option<usize>) -> Rollout {
        Rollout {
            canary: "c".into(),
            from: "m/1".into(),
            to: "m/2".into(),
            steps: vec![5.0, 50.0, 100.0],
            interval_ms: 10_000,
            max_error_ratio: Some(0.01),
            max_p99_ms: Some(50.0),
            min_agreement: Some(0.99),
            shadow_first_ms: Some(5_000),
            min_requests: 10,
            state,
            step,
            step_started_ms: 0,
            paused_in: None,
            created_ms: 0,
            events: Vec::new(),
        }
    }

    fn served(requests: u64, errors: u64, slow: u64) -> Numbers {
        Numbers {
            requests,
            errors,
            latency: vec![(5.0, requests - slow), (100.0, slow)],
            ..Numbers::default()
        }
    }

    #[test]
    fn steps_advance_only_after_their_interval_with_the_slos_held() {
        let r = rollout(RolloutState::Running, Some(0));
        assert_eq!(decide(&r, &served(100, 0, 0), 9_999), Decision::Wait);
        assert!(matches!(
            decide(&r, &served(100, 0, 0), 10_000),
            Decision::Step(1, _)
        ));
        // Too few requests to judge: the step waits.
        assert_eq!(decide(&r, &served(9, 0, 0), 60_000), Decision::Wait);
        let last = rollout(RolloutState::Running, Some(2));
        assert!(matches!(
            decide(&last, &served(100, 1, 0), 10_000),
            Decision::Promoted(_)
        ));
    }

    #[test]
    fn a_breach_rolls_back_at_once_with_the_reason() {
        let r = rollout(RolloutState::Running, Some(0));
        let Decision::RolledBack(why) = decide(&r, &served(100, 5, 0), 1_000) else {
            panic!("5 % errors is a breach");
        };
        assert!(why.contains("5.00% (5 of 100 requests)"), "{why}");
        let Decision::RolledBack(why) = decide(&r, &served(100, 0, 2), 1_000) else {
            panic!("2 % of requests over 50 ms is a p99 breach");
        };
        assert!(why.contains("p99 latency of m/2 was up to 100 ms"), "{why}");
        assert!(matches!(
            decide(&r, &served(100, 0, 1), 10_000),
            Decision::Step(..)
        ));
    }

    #[test]
    fn the_shadow_phase_needs_its_time_and_the_agreement() {
        let r = rollout(RolloutState::Shadow, None);
        let compared = |agreed| Numbers {
            compared: 100,
            agreed,
            ..Numbers::default()
        };
        assert_eq!(decide(&r, &compared(100), 4_999), Decision::Wait);
        assert!(matches!(
            decide(&r, &compared(99), 5_000),
            Decision::ShadowPassed(_)
        ));
        assert!(matches!(
            decide(&r, &compared(98), 5_000),
            Decision::RolledBack(_)
        ));
        assert_eq!(r.weights(), [100.0, 0.0]);
        assert_eq!(
            rollout(RolloutState::Running, Some(1)).weights(),
            [50.0, 50.0]
        );
        assert_eq!(
            rollout(RolloutState::RolledBack, Some(1)).weights(),
            [100.0, 0.0]
        );
    }
}
