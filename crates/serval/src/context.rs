//! What every command needs: the store, the artifact folder, the selected service, and output.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow, bail};
use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;
use serval_artifacts::ArtifactStore;
use serval_store::Service;

use crate::cli::GlobalArgs;
use crate::deployment::{Deployment, Local, Remote};
pub use crate::output::{note, warn};

pub struct Context {
    backend: Backend,
    pub json: bool,
    service_id: Option<String>,
}

/// Where commands act: the store itself, or a server's admin API (`--server`).
enum Backend {
    Local(Local),
    Remote(Remote),
}

/// The data folder: `--home`, `$SERVAL_HOME`, else `~/.serval`.
pub fn home_dir(global: &GlobalArgs) -> Result<PathBuf> {
    if let Some(home) = &global.home {
        return Ok(home.clone());
    }
    let user_home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("cannot find the home folder: set --home or SERVAL_HOME"))?;
    Ok(Path::new(&user_home).join(".serval"))
}

impl Context {
    pub fn open(global: &GlobalArgs) -> Result<Self> {
        let service_id = global.id.clone().filter(|id| !id.is_empty());
        if let Some(server) = global.server.as_deref().filter(|s| !s.is_empty()) {
            return Ok(Context {
                backend: Backend::Remote(Remote::new(server, global.api_key.as_deref())?),
                json: global.json,
                service_id,
            });
        }
        let home = home_dir(global)?;
        let url = match &global.store {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", home.join("serval.db").display()),
        };
        let store = serval_store::open(&url).with_context(|| {
            format!(
                "opening the control store {}",
                serval_store::redact_url(&url)
            )
        })?;
        if let Some(dest) = &global.artifacts {
            serval_artifacts::parse_uri(dest).context("--artifacts / SERVAL_ARTIFACTS")?;
        }
        Ok(Context {
            backend: Backend::Local(Local {
                store: Arc::from(store),
                artifacts: ArtifactStore::new(home.join("artifacts")),
                destination: global.artifacts.clone().filter(|d| !d.is_empty()),
                embedded: !url.starts_with("postgres"),
                caller: serval_admin::Caller::local(),
            }),
            json: global.json,
            service_id,
        })
    }

    /// Where commands read and change the deployment.
    pub fn deployment(&self) -> &dyn Deployment {
        match &self.backend {
            Backend::Local(local) => local,
            Backend::Remote(remote) => remote,
        }
    }

    /// The store itself, for the commands that need it (`what` names the command).
    pub fn local(&self, what: &str) -> Result<&Local> {
        match &self.backend {
            Backend::Local(local) => Ok(local),
            Backend::Remote(_) => bail!(
                "`serval {what}` works on the store itself: run it without --server / SERVAL_SERVER"
            ),
        }
    }

    /// The service a command works on: `--id`/`$SERVAL_SERVICE_ID`, else the only one.
    pub fn service(&self) -> Result<Service> {
        if let Some(id) = &self.service_id {
            let id = id.to_ascii_lowercase();
            return self.deployment().service(&id).map_err(|e| {
                match e.downcast_ref::<serval_store::StoreError>() {
                    Some(serval_store::StoreError::NotFound(_)) => anyhow!(
                        "serving service '{id}' not found (`serval list` shows the services)"
                    ),
                    _ => e,
                }
            });
        }
        let services = self.deployment().list_services()?;
        match services.as_slice() {
            [] => {
                bail!("no serving service exists yet: create one with `serval create --name NAME`")
            }
            [only] => {
                note(format!(
                    "Notice! serving service ID not provided, using the only service id={} ({})",
                    only.id, only.name
                ));
                Ok(only.clone())
            }
            several => {
                let ids: Vec<_> = several
                    .iter()
                    .map(|s| format!("{} ({})", s.id, s.name))
                    .collect();
                bail!(
                    "{} serving services exist: pass --id or set SERVAL_SERVICE_ID to one of {}",
                    several.len(),
                    ids.join(", ")
                )
            }
        }
    }

    /// Prints a JSON document on stdout.
    pub fn print_json<T: Serialize>(&self, value: &T) -> Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }
}

/// The warnings and notes of a write, on stderr.
pub fn show<T>(written: &serval_admin::Written<T>) {
    for line in &written.warnings {
        warn(line);
    }
    for line in &written.notes {
        note(line);
    }
}

/// A table in serval's style, for stdout.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(|h| h.to_uppercase()));
    table
}

/// Prints a table, trimming the trailing spaces comfy-table pads lines with.
pub fn print_table(table: &Table) {
    for line in table.to_string().lines() {
        let line = line.strip_prefix(' ').unwrap_or(line);
        println!("{}", line.trim_end());
    }
}

/// Formats epoch milliseconds as an RFC 3339 time (UTC, seconds).
pub fn time(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// An optional value for a table cell.
pub fn cell(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

/// Instances whose last heartbeat is older than this are shown as stale.
const STALE_AFTER_MS: i64 = 15_000;

/// Live (recently heard from) instances of a service.
pub fn live_instances(
    ctx: &Context,
    service_id: &str,
) -> anyhow::Result<Vec<serval_store::InstanceStatus>> {
    let now = serval_store::now_ms();
    Ok(ctx
        .deployment()
        .instances(service_id)?
        .into_iter()
        .filter(|i| now - i.heartbeat_ms <= STALE_AFTER_MS)
        .collect())
}
