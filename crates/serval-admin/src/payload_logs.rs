//! Payload logs (`serval logging`): a sampled fraction of the requests of an endpoint (a url,
//! its versions, or every url with a prefix) written by every server as Parquet files to a
//! destination.

use serde::{Deserialize, Serialize};
use serval_store::{PayloadLog, Store, StoreError};

use crate::endpoints::is_known_endpoint;
use crate::{Caller, Result, Written, ensure, service_target};

/// Schemes a destination may have.
const SCHEMES: &[&str] = &["file", "s3", "s3a", "gs", "az", "azure", "abfs", "abfss"];

/// A payload log to add or replace (`PUT .../logging`, `serval logging add`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogSpec {
    /// An endpoint url (with its versions), or a prefix of urls ending in `*`.
    pub endpoint: String,
    /// The fraction of requests logged, in (0, 1]; 1 when not given.
    #[serde(default)]
    pub sample: Option<f64>,
    /// `file:///folder`, `s3://bucket/prefix`, `gs://bucket/prefix` or `azure://container/prefix`.
    pub destination: String,
    /// Files are closed at about this many MiB; 64 when not given.
    #[serde(default)]
    pub max_file_mb: Option<u64>,
    /// Files are closed at this age; 300 when not given.
    #[serde(default)]
    pub max_file_seconds: Option<u64>,
}

/// Checks a destination URI: a known scheme, and an absolute folder for `file://`.
pub fn check_destination(uri: &str) -> Result<()> {
    let scheme = uri.split_once("://").map(|(s, _)| s);
    ensure(scheme.is_some_and(|s| SCHEMES.contains(&s)), || {
        format!(
            "--destination '{uri}' is not a supported destination: use file:///folder, s3://bucket/prefix, gs://bucket/prefix or azure://container/prefix"
        )
    })?;
    if let Some(path) = uri.strip_prefix("file://") {
        ensure(path.starts_with('/'), || {
            format!("--destination '{uri}' must name an absolute folder (file:///path/to/logs)")
        })?;
    }
    Ok(())
}

/// Adds (or replaces) the payload log of `spec.endpoint`.
pub fn put(
    store: &dyn Store,
    caller: &Caller,
    service_id: &str,
    spec: &LogSpec,
    now_ms: i64,
) -> Result<Written<PayloadLog>> {
    let endpoint = spec.endpoint.trim_matches('/').to_string();
    ensure(!endpoint.is_empty() && endpoint != "*", || {
        "a payload log needs --endpoint (an endpoint url, or a prefix ending in '*')".to_string()
    })?;
    ensure(!endpoint[..endpoint.len() - 1].contains('*'), || {
        format!("--endpoint '{endpoint}': '*' may only end a prefix")
    })?;
    let sample = spec.sample.unwrap_or(1.0);
    ensure(sample > 0.0 && sample <= 1.0, || {
        format!("--sample must be in (0, 1], got {sample}")
    })?;
    let destination = spec.destination.trim().trim_end_matches('/').to_string();
    check_destination(&destination)?;
    let max_file_mb = spec.max_file_mb.unwrap_or(PayloadLog::DEFAULT_MAX_FILE_MB);
    ensure((1..=4_096).contains(&max_file_mb), || {
        format!("--max-file-mb must be from 1 to 4096, got {max_file_mb}")
    })?;
    let max_file_seconds = spec
        .max_file_seconds
        .unwrap_or(PayloadLog::DEFAULT_MAX_FILE_SECONDS);
    ensure((1..=86_400).contains(&max_file_seconds), || {
        format!("--max-file-seconds must be from 1 to 86400, got {max_file_seconds}")
    })?;
    let mut log = PayloadLog {
        endpoint: endpoint.clone(),
        sample,
        destination,
        max_file_mb,
        max_file_seconds,
        created_ms: now_ms,
    };
    let mut replaced = false;
    let mut matched = true;
    let change = caller.change(
        "logging.put",
        service_target(service_id, &format!("logging/{endpoint}")),
    );
    let after = store.update_service(service_id, &change, &mut |config| {
        ensure(!config.canaries.contains_key(&endpoint), || {
            format!(
                "'{endpoint}' is a canary: requests are logged under the endpoint that answers them (log the canary's endpoints, or a prefix)"
            )
        })?;
        matched = config
            .served_endpoints()
            .keys()
            .any(|url| log.matches(url))
            || is_known_endpoint(config, &endpoint);
        if let Some(before) = config.payload_logs.get(&endpoint) {
            log.created_ms = before.created_ms;
            replaced = true;
        }
        config.payload_logs.insert(endpoint.clone(), log.clone());
        Ok(())
    })?;
    let mut written = Written::new(log, Some(after.revision));
    written.created = !replaced;
    if !matched {
        written.warnings.push(format!(
            "no endpoint matches '{endpoint}' yet: logging starts when one is served"
        ));
    }
    Ok(written)
}

/// Removes the payload log of `endpoint` (as it was added).
pub fn remove(
    store: &dyn Store,
    caller: &Caller,
    service_id: &str,
    endpoint: &str,
) -> Result<Written<PayloadLog>> {
    let endpoint = endpoint.trim_matches('/').to_string();
    let mut removed = None;
    let change = caller.change(
        "logging.remove",
        service_target(service_id, &format!("logging/{endpoint}")),
    );
    let after = store.update_service(service_id, &change, &mut |config| {
        removed = config.payload_logs.remove(&endpoint);
        if removed.is_none() {
            let known = config
                .payload_logs
                .keys()
                .map(|k| format!("'{k}'"))
                .collect::<Vec<_>>();
            return Err(StoreError::NotFound(if known.is_empty() {
                format!("'{endpoint}' has no payload log (the service has none)")
            } else {
                format!(
                    "'{endpoint}' has no payload log (logged: {})",
                    known.join(", ")
                )
            }));
        }
        Ok(())
    })?;
    let removed = removed.ok_or_else(|| StoreError::Internal("removed nothing".into()))?;
    Ok(Written::new(removed, Some(after.revision)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_need_a_known_scheme_and_an_absolute_folder() {
        for good in [
            "file:///var/log/serval",
            "s3://b/p",
            "gs://b",
            "azure://c/p",
        ] {
            assert!(check_destination(good).is_ok(), "{good}");
        }
        for bad in ["file://relative", "/var/log", "https://x/y", "ftp://x", ""] {
            assert!(check_destination(bad).is_err(), "{bad}");
        }
    }
}
