//! `store export | import | migrate`: move a whole store, e.g. from the embedded SQLite file to a
//! PostgreSQL server shared by many machines.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context as _, Result, anyhow, ensure};
use serval_store::{CodeRef, Dump};

use crate::cli::{StoreExportArgs, StoreImportArgs};
use crate::context::{Context, note, warn};

pub fn export(ctx: &Context, args: &StoreExportArgs) -> Result<()> {
    let local = ctx.local("store export")?;
    let dump = local.store.export()?;
    let text = serde_json::to_string_pretty(&dump)?;
    match &args.output {
        Some(path) => std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => println!("{text}"),
    }
    note(format!(
        "Exported {} service(s) and {} model(s) from {}",
        dump.services.len(),
        dump.models.len(),
        local.store.describe()
    ));
    Ok(())
}

fn read_dump(file: &Path) -> Result<Dump> {
    let mut text = String::new();
    if file == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the export from stdin")?;
    } else {
        text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    serde_json::from_str(&text)
        .map_err(|e| anyhow!("{} is not a serval store export: {e}", file.display()))
}

/// Copies local (`file://`) artifacts to `destination`, once per URI.
struct Copier<'a> {
    local: &'a crate::deployment::Local,
    destination: &'a str,
    done: HashMap<String, String>,
}

impl Copier<'_> {
    /// The new URI of `uri` (unchanged unless it is a local file). Checks the copy's sha256.
    fn copy(&mut self, uri: &str, sha256: Option<&str>) -> Result<String> {
        if let Some(copied) = self.done.get(uri) {
            return Ok(copied.clone());
        }
        let url = serval_artifacts::parse_uri(uri)?;
        if url.scheme() != "file" {
            return Ok(uri.to_string());
        }
        let path = url
            .to_file_path()
            .map_err(|_| anyhow!("'{uri}' is not a local path"))?;
        ensure!(
            path.is_file(),
            "cannot copy '{uri}': the file does not exist on this machine"
        );
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("'{uri}' has no file name"))?;
        let stored = self
            .local
            .store_file(&path, name, Some(self.destination), &|_| {})?;
        if let Some(expected) = sha256 {
            ensure!(
                stored.sha256 == expected,
                "'{uri}' changed since it was registered (sha256 {}, registry {expected}); nothing was imported",
                stored.sha256
            );
        }
        note(format!("Copied {uri} to {}", stored.uri));
        self.done.insert(uri.to_string(), stored.uri.clone());
        Ok(stored.uri)
    }

    fn copy_code(&mut self, code: &mut Option<CodeRef>) -> Result<()> {
        if let Some(code) = code {
            code.uri = self.copy(&code.uri, Some(&code.sha256))?;
        }
        Ok(())
    }
}

pub fn import(ctx: &Context, args: &StoreImportArgs) -> Result<()> {
    let local = ctx.local("store import")?;
    let mut dump = read_dump(&args.file)?;
    dump.check()?;
    if let Some(destination) = &args.destination {
        serval_artifacts::parse_uri(destination)?;
        let mut copier = Copier {
            local,
            destination,
            done: HashMap::new(),
        };
        for model in &mut dump.models {
            model.uri = copier.copy(&model.uri, model.sha256.as_deref())?;
        }
        for service in &mut dump.services {
            for endpoint in service.config.endpoints.values_mut() {
                copier.copy_code(&mut endpoint.preprocess)?;
            }
            for rule in service.config.auto_update.values_mut() {
                copier.copy_code(&mut rule.preprocess)?;
            }
        }
    } else if !local.embedded {
        let local = dump
            .models
            .iter()
            .filter(|m| m.uri.starts_with("file:"))
            .count();
        if local > 0 {
            warn(format!(
                "{local} model(s) point at local files, which servers on other machines cannot read: import with --destination s3://... to copy them"
            ));
        }
    }
    local
        .store
        .import(&dump, &serval_store::Change::local("store.import", "store"))?;
    note(format!(
        "Imported {} service(s) and {} model(s) into {}",
        dump.services.len(),
        dump.models.len(),
        local.store.describe()
    ));
    Ok(())
}

pub fn migrate(ctx: &Context) -> Result<()> {
    // Opening the store ran any pending migration (under the store's write lock).
    note(format!(
        "Control store {} is at the current schema",
        ctx.local("store migrate")?.store.describe()
    ));
    Ok(())
}
