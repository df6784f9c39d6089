//! Every change to a deployment — services and their settings, endpoints, canaries, auto-update
//! rules, metric rules, API keys and the model registry — written once, for both front ends: the
//! CLI (on the store itself, as the key `local`) and the admin API of `serval serve` (as the
//! caller's key).
//!
//! An operation checks its input, makes one store write (one transaction, recorded in the audit
//! trail by the store, refused as stale when the caller's `If-Match` revision has passed) and
//! returns a [`Written`]: what was written, the service's revision after it, and the warnings
//! and notes a person should see. Requests are the JSON the admin API takes; results are the
//! JSON `serval --json` prints. Files (preprocess code, model weights) are stored by the caller
//! first and arrive here as references.

pub mod audit;
pub mod drift;
pub mod endpoints;
pub mod keys;
pub mod metrics;
pub mod payload_logs;
pub mod registry;
pub mod rollouts;
pub mod services;
pub mod shadows;

use serde::{Deserialize, Serialize};
use serval_store::{Change, StoreError};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Who asks for a change.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The API key's name, or `local` (the CLI on the store).
    pub key: String,
    /// Write only if the service is still at this revision (`If-Match`).
    pub if_revision: Option<u64>,
}

impl Caller {
    /// The CLI writing the store directly.
    pub fn local() -> Caller {
        Caller {
            key: Change::LOCAL.to_string(),
            if_revision: None,
        }
    }

    pub fn key(name: &str) -> Caller {
        Caller {
            key: name.to_string(),
            if_revision: None,
        }
    }

    pub fn if_revision(mut self, revision: Option<u64>) -> Caller {
        self.if_revision = revision;
        self
    }

    /// The audit record of `operation` on `target`.
    pub(crate) fn change(&self, operation: &str, target: impl Into<String>) -> Change {
        Change::new(self.key.clone(), operation, target).if_revision(self.if_revision)
    }
}

/// The outcome of a write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Written<T> {
    /// What was written, as `serval --json` shows it.
    pub result: T,
    /// The service's revision afterwards (`None`: a registry write, which has none).
    pub revision: Option<u64>,
    /// The write created something rather than replacing or changing it.
    pub created: bool,
    /// Lines to show as warnings.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Lines to show as information.
    #[serde(default)]
    pub notes: Vec<String>,
}

impl<T> Written<T> {
    /// The same write with its result turned into another view.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Written<U> {
        Written {
            result: f(self.result),
            revision: self.revision,
            created: self.created,
            warnings: self.warnings,
            notes: self.notes,
        }
    }

    fn new(result: T, revision: Option<u64>) -> Written<T> {
        Written {
            result,
            revision,
            created: false,
            warnings: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// A resource's path under `/api/v1`, as the audit trail names it.
pub fn service_target(service_id: &str, rest: &str) -> String {
    if rest.is_empty() {
        format!("services/{service_id}")
    } else {
        format!("services/{service_id}/{rest}")
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> StoreError {
    StoreError::InvalidInput(message.into())
}

/// Fails with `message` unless `ok`.
pub(crate) fn ensure(ok: bool, message: impl FnOnce() -> String) -> Result<()> {
    if ok { Ok(()) } else { Err(invalid(message())) }
}
