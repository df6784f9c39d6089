//! Drives the service's rollouts (`serval model rollout`): every second, for each rollout in the
//! routing table's snapshot that is in its shadow phase or running, one turn of
//! [`serval_admin::rollouts::tick`] on a blocking thread — which does nothing unless this server
//! holds (or takes over) the rollout's lease in the store. The fleet's numbers it decides on are
//! what every server adds to the store with its heartbeat ([`endpoints`]).

use std::time::Duration;

use serval_store::{Rollout, RolloutState};
use tokio::sync::watch;

use crate::state::AppState;

/// How often the driver looks.
const EVERY: Duration = Duration::from_secs(1);

/// The endpoints whose requests the fleet's statistics must count: each running rollout's new
/// endpoint.
pub fn endpoints(state: &AppState) -> Vec<String> {
    let table = state.door.table();
    let Some(snapshot) = table.snapshot.as_deref() else {
        return Vec::new();
    };
    snapshot
        .config
        .rollouts
        .values()
        .filter(|r| r.state == RolloutState::Running)
        .map(|r| r.to.clone())
        .collect()
}

fn active(state: &AppState) -> Vec<Rollout> {
    let table = state.door.table();
    let Some(snapshot) = table.snapshot.as_deref() else {
        return Vec::new();
    };
    snapshot
        .config
        .rollouts
        .values()
        .filter(|r| r.state.is_active())
        .cloned()
        .collect()
}

/// Runs until `shutdown` flips to true.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        for rollout in active(&state) {
            let store = state.store.clone();
            let service = state.config.service_id.clone();
            let holder = state.instance.id.clone();
            let canary = rollout.canary.clone();
            let turn = tokio::task::spawn_blocking(move || {
                serval_admin::rollouts::tick(
                    &*store,
                    &service,
                    &canary,
                    &holder,
                    serval_store::now_ms(),
                )
            })
            .await;
            match turn {
                Ok(Ok(Some(ticked))) => {
                    failing = false;
                    for kind in &ticked.events {
                        tracing::info!("rollout of '{}': {kind}", rollout.canary);
                        if let Some(metrics) = &state.metrics {
                            metrics.rollout_event(&rollout.canary, kind);
                        }
                    }
                }
                Ok(Ok(None)) => failing = false,
                // Someone changed it in between (a pause, another driver): next turn.
                Ok(Err(serval_store::StoreError::Stale(_))) => {}
                Ok(Err(error)) => {
                    if !failing {
                        tracing::warn!("rollout of '{}': {error}", rollout.canary);
                    }
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}
