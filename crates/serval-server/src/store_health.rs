//! Whether the control store answers, as the sync loop last saw it: the server keeps serving its
//! last routing table during an outage and reports it (logs once, `/health/ready`,
//! `serval_store_up`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use serval_store::{StoreError, now_ms};

/// Whether the control store answers, as the sync loop last saw it.
#[derive(Debug, Default)]
pub struct StoreHealth {
    /// Epoch ms since which the store has been unreachable; 0 while it answers.
    down_since_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
    /// Store calls that failed because the store was unreachable.
    pub errors: AtomicU64,
    /// The change feed (LISTEN) is connected.
    pub feed_connected: AtomicBool,
}

impl StoreHealth {
    pub fn is_up(&self) -> bool {
        self.down_since_ms.load(Ordering::Relaxed) == 0
    }

    /// Since when (epoch ms) and why the store is unreachable, if it is.
    pub fn outage(&self) -> Option<(i64, String)> {
        let since = self.down_since_ms.load(Ordering::Relaxed);
        (since != 0).then(|| {
            let error = self
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
                .unwrap_or_default();
            (since, error)
        })
    }

    /// Records a failed store call; logs the start of an outage once.
    pub fn failed(&self, what: &str, error: &StoreError, serving: u64) {
        if !matches!(error, StoreError::Unavailable(_)) {
            tracing::warn!("{what}: {error}");
            return;
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error.to_string());
        if self
            .down_since_ms
            .compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                "control store unreachable ({error}); still serving revision {serving}, retrying with backoff"
            );
        } else {
            tracing::debug!("{what}: {error}");
        }
    }

    /// Records a successful store call; logs the end of an outage once.
    pub fn answered(&self) {
        let since = self.down_since_ms.swap(0, Ordering::Relaxed);
        if since != 0 {
            let secs = (now_ms() - since).max(0) as f64 / 1000.0;
            tracing::info!("control store reachable again after {secs:.1} s; catching up");
        }
    }
}
