//! The audit trail as people and scripts read it.

use serde::{Deserialize, Serialize};
use serval_store::{AuditEntry, Store, now_ms};

use crate::{Result, invalid};

/// One recorded write, as `serval audit --json` and `GET /api/v1/audit` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditView {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// The API key's name, or `local` for the CLI on the store.
    pub key: String,
    pub operation: String,
    /// The resource's path under `/api/v1`.
    pub target: String,
    /// The service's revision after the write (`null`: a registry write).
    pub revision: Option<u64>,
}

impl AuditView {
    pub fn of(entry: &AuditEntry) -> AuditView {
        let at =
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(entry.time_ms.max(0) as u64);
        AuditView {
            time: humantime::format_rfc3339_millis(at).to_string(),
            key: entry.key.clone(),
            operation: entry.operation.clone(),
            target: entry.target.clone(),
            revision: entry.revision,
        }
    }
}

/// `--since`: a time ago (`1h`, `30m`, `7d`) or an RFC 3339 time; epoch milliseconds.
pub fn since(text: &str) -> Result<i64> {
    let text = text.trim();
    if let Ok(ago) = humantime::parse_duration(text) {
        let ago = i64::try_from(ago.as_millis()).unwrap_or(i64::MAX);
        return Ok(now_ms().saturating_sub(ago));
    }
    let at = humantime::parse_rfc3339_weak(text).map_err(|_| {
        invalid(format!(
            "--since '{text}' is neither a duration such as 1h or 7d nor a time such as 2026-12-01T08:00:00Z"
        ))
    })?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Ok(ms)
}

/// The newest `limit` recorded writes since `since_ms`, oldest first.
pub fn list(store: &dyn Store, since_ms: Option<i64>, limit: usize) -> Result<Vec<AuditView>> {
    Ok(store
        .audit(since_ms, limit)?
        .iter()
        .map(AuditView::of)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let hour_ago = since("1h").unwrap();
        assert!((now_ms() - hour_ago - 3_600_000).abs() < 60_000);
        assert_eq!(since("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert!(since("yesterday").is_err());
    }
}
