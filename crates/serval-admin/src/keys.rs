//! API keys: created with a random secret shown once (the store keeps its sha256), listed,
//! revoked.

use serde::{Deserialize, Serialize};
use serval_store::{ApiKey, Role, Store, StoreError, now_ms};
use sha2::{Digest, Sha256};

use crate::{Caller, Result, Written, ensure, invalid, service_target};

/// A key to create (`POST .../keys`, `serval auth create-key`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    pub name: String,
    #[serde(default)]
    pub role: Role,
    /// An endpoint name, or a prefix ending in `*`; `None`: all endpoints.
    #[serde(default)]
    pub endpoints: Option<String>,
    /// A lifetime such as `30d` or `12h`; `None`: never expires.
    #[serde(default)]
    pub expires: Option<String>,
}

/// A key as listings show it (never its secret or hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyView {
    pub name: String,
    pub role: Role,
    pub endpoints: Option<String>,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub expired: bool,
}

impl KeyView {
    pub fn of(key: &ApiKey, now_ms: i64) -> KeyView {
        KeyView {
            name: key.name.clone(),
            role: key.role,
            endpoints: key.endpoints.clone(),
            created_ms: key.created_ms,
            expires_ms: key.expires_ms,
            expired: key.expired(now_ms),
        }
    }
}

/// A created key: its secret, shown only now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewKey {
    pub name: String,
    pub key: String,
    pub role: Role,
}

/// A new secret: "sk-serval-" and 64 random hex characters (two v4 UUIDs' worth of randomness).
fn new_secret() -> String {
    format!(
        "sk-serval-{}{}",
        serval_store::new_id(),
        serval_store::new_id()
    )
}

/// The hex sha256 of a secret, as the store keeps it.
pub fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn check_name(name: &str) -> Result<()> {
    ensure(
        !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
        || format!("--name '{name}' must be 1-64 letters, digits, '-', '_' or '.'"),
    )?;
    ensure(name != serval_store::Change::LOCAL, || {
        format!("--name '{name}' is reserved: the audit trail names the CLI's own writes so")
    })
}

/// Checks a key's endpoint scope: a name or a prefix ending in `*`.
pub fn check_scope(pattern: &str) -> Result<()> {
    let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
    ensure(!pattern.is_empty() && !prefix.contains('*'), || {
        format!("--endpoints '{pattern}' must be an endpoint name or a prefix ending in '*'")
    })
}

/// Creates a key of `service_id`.
pub fn create(
    store: &dyn Store,
    caller: &Caller,
    service_id: &str,
    spec: &KeySpec,
) -> Result<Written<NewKey>> {
    check_name(&spec.name)?;
    if let Some(pattern) = &spec.endpoints {
        check_scope(pattern)?;
    }
    let expires_ms = match &spec.expires {
        None => None,
        Some(text) => {
            let lifetime = humantime::parse_duration(text).map_err(|e| {
                invalid(format!(
                    "--expires '{text}' is not a duration such as 30d or 12h: {e}"
                ))
            })?;
            ensure(!lifetime.is_zero(), || {
                "--expires must be longer than zero".to_string()
            })?;
            Some(now_ms().saturating_add(i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX)))
        }
    };
    let secret = new_secret();
    let record = ApiKey {
        name: spec.name.clone(),
        sha256: digest(&secret),
        endpoints: spec.endpoints.clone(),
        created_ms: now_ms(),
        expires_ms,
        role: spec.role,
    };
    let change = caller.change(
        "key.create",
        service_target(service_id, &format!("keys/{}", spec.name)),
    );
    let after = store.update_service(service_id, &change, &mut |config| {
        if config.api_keys.contains_key(&record.name) {
            return Err(invalid(format!(
                "an API key named '{}' already exists (revoke it first)",
                record.name
            )));
        }
        config.api_keys.insert(record.name.clone(), record.clone());
        Ok(())
    })?;
    let mut written = Written::new(
        NewKey {
            name: spec.name.clone(),
            key: secret,
            role: spec.role,
        },
        Some(after.revision),
    );
    written.created = true;
    written.notes.push(format!(
        "API key '{}' created: it is shown only now. Servers require keys with serve --require-auth.",
        spec.name
    ));
    Ok(written)
}

/// The keys of `service_id`, by name.
pub fn list(store: &dyn Store, service_id: &str) -> Result<Vec<KeyView>> {
    let now = now_ms();
    Ok(store
        .snapshot(service_id)?
        .config
        .api_keys
        .values()
        .map(|k| KeyView::of(k, now))
        .collect())
}

/// Revokes the key `name` of `service_id`.
pub fn revoke(
    store: &dyn Store,
    caller: &Caller,
    service_id: &str,
    name: &str,
) -> Result<Written<String>> {
    let change = caller.change(
        "key.revoke",
        service_target(service_id, &format!("keys/{name}")),
    );
    let after = store.update_service(service_id, &change, &mut |config| match config
        .api_keys
        .remove(name)
    {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound(format!(
            "no API key named '{name}' (`serval auth list` shows them)"
        ))),
    })?;
    let mut written = Written::new(name.to_string(), Some(after.revision));
    written.notes.push(format!(
        "API key '{name}' revoked: servers refuse it after their next reload"
    ));
    Ok(written)
}
