//! `auth create-key | list | revoke`: API keys for inference. A key is shown once, at creation;
//! the store keeps its sha256 only.

use anyhow::{Result, anyhow, bail, ensure};
use serval_store::{ApiKey, StoreError, now_ms};

use crate::cli::{AuthCreateArgs, AuthRevokeArgs};
use crate::context::{Context, cell, note, print_table, table, time};

/// A new key: "sk-serval-" and 64 random hex characters (two v4 UUIDs' worth of randomness).
fn new_key() -> String {
    format!(
        "sk-serval-{}{}",
        serval_store::new_id(),
        serval_store::new_id()
    )
}

fn check_name(name: &str) -> Result<()> {
    ensure!(
        !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
        "--name '{name}' must be 1-64 letters, digits, '-', '_' or '.'"
    );
    Ok(())
}

pub fn create_key(ctx: &Context, args: &AuthCreateArgs) -> Result<()> {
    check_name(&args.name)?;
    if let Some(pattern) = &args.endpoints {
        let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
        ensure!(
            !pattern.is_empty() && !prefix.contains('*'),
            "--endpoints '{pattern}' must be an endpoint name or a prefix ending in '*'"
        );
    }
    let expires_ms = match &args.expires {
        None => None,
        Some(text) => {
            let lifetime = humantime::parse_duration(text).map_err(|e| {
                anyhow!("--expires '{text}' is not a duration such as 30d or 12h: {e}")
            })?;
            ensure!(!lifetime.is_zero(), "--expires must be longer than zero");
            Some(now_ms().saturating_add(i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX)))
        }
    };
    let service = ctx.service()?;
    let key = new_key();
    let record = ApiKey {
        name: args.name.clone(),
        sha256: serval_artifacts::hash_bytes(key.as_bytes()),
        endpoints: args.endpoints.clone(),
        created_ms: now_ms(),
        expires_ms,
    };
    ctx.store.update_service(&service.id, &mut |config| {
        if config.api_keys.contains_key(&record.name) {
            return Err(StoreError::InvalidInput(format!(
                "an API key named '{}' already exists (revoke it first)",
                record.name
            )));
        }
        config.api_keys.insert(record.name.clone(), record.clone());
        Ok(())
    })?;
    if ctx.json {
        ctx.print_json(&serde_json::json!({"name": args.name, "key": key}))?;
    } else {
        println!("{key}");
    }
    note(format!(
        "API key '{}' created: it is shown only now. Servers require keys with serve --require-auth.",
        args.name
    ));
    Ok(())
}

pub fn list(ctx: &Context) -> Result<()> {
    let service = ctx.service()?;
    let keys = ctx.store.snapshot(&service.id)?.config.api_keys;
    let now = now_ms();
    if ctx.json {
        let list: Vec<_> = keys
            .values()
            .map(|k| {
                serde_json::json!({
                    "name": k.name,
                    "endpoints": k.endpoints,
                    "created_ms": k.created_ms,
                    "expires_ms": k.expires_ms,
                    "expired": k.expired(now),
                })
            })
            .collect();
        return ctx.print_json(&list);
    }
    let mut t = table(&["name", "endpoints", "created", "expires", "state"]);
    for k in keys.values() {
        t.add_row(vec![
            k.name.clone(),
            cell(k.endpoints.as_deref()).replace('-', "all"),
            time(k.created_ms),
            k.expires_ms.map_or("never".to_string(), time),
            if k.expired(now) { "expired" } else { "active" }.to_string(),
        ]);
    }
    print_table(&t);
    Ok(())
}

pub fn revoke(ctx: &Context, args: &AuthRevokeArgs) -> Result<()> {
    let service = ctx.service()?;
    let mut found = false;
    ctx.store.update_service(&service.id, &mut |config| {
        found = config.api_keys.remove(&args.name).is_some();
        Ok(())
    })?;
    if !found {
        bail!(
            "no API key named '{}' (`serval auth list` shows them)",
            args.name
        );
    }
    note(format!(
        "API key '{}' revoked: servers refuse it after their next reload",
        args.name
    ));
    Ok(())
}
