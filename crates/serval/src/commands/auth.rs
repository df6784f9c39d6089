//! `auth create-key | list | revoke`: API keys, for inference (`--role infer`) or also the
//! admin API (`--role admin`). A key is shown once, at creation; the store keeps its sha256 only.

use anyhow::Result;
use serval_admin::keys::KeySpec;

use crate::cli::{AuditArgs, AuthCreateArgs, AuthRevokeArgs};
use crate::context::{Context, cell, print_table, show, table, time};

pub fn create_key(ctx: &Context, args: &AuthCreateArgs) -> Result<()> {
    let spec = KeySpec {
        name: args.name.clone(),
        role: args.role,
        endpoints: args.endpoints.clone(),
        expires: args.expires.clone(),
    };
    let service = ctx.service()?;
    let written = ctx.deployment().create_key(&service.id, &spec)?;
    if ctx.json {
        ctx.print_json(&serde_json::json!({"name": args.name, "key": written.result.key}))?;
    } else {
        println!("{}", written.result.key);
    }
    show(&written);
    Ok(())
}

pub fn list(ctx: &Context) -> Result<()> {
    let service = ctx.service()?;
    let keys = ctx.deployment().keys(&service.id)?;
    if ctx.json {
        return ctx.print_json(&keys);
    }
    let mut t = table(&["name", "role", "endpoints", "created", "expires", "state"]);
    for k in &keys {
        t.add_row(vec![
            k.name.clone(),
            k.role.to_string(),
            cell(k.endpoints.as_deref()).replace('-', "all"),
            time(k.created_ms),
            k.expires_ms.map_or("never".to_string(), time),
            if k.expired { "expired" } else { "active" }.to_string(),
        ]);
    }
    print_table(&t);
    Ok(())
}

pub fn revoke(ctx: &Context, args: &AuthRevokeArgs) -> Result<()> {
    let service = ctx.service()?;
    let written = ctx.deployment().revoke_key(&service.id, &args.name)?;
    show(&written);
    Ok(())
}

/// `serval audit`: the recorded changes, oldest first.
pub fn audit(ctx: &Context, args: &AuditArgs) -> Result<()> {
    let since = args
        .since
        .as_deref()
        .map(serval_admin::audit::since)
        .transpose()?;
    let entries = ctx.deployment().audit(since, args.limit)?;
    if ctx.json {
        return ctx.print_json(&entries);
    }
    let mut t = table(&["time", "key", "operation", "target", "revision"]);
    for e in &entries {
        t.add_row(vec![
            e.time.clone(),
            e.key.clone(),
            e.operation.clone(),
            e.target.clone(),
            e.revision.map_or("-".to_string(), |r| r.to_string()),
        ]);
    }
    print_table(&t);
    Ok(())
}
