//! `serval store export` / `import`: a whole store (services with their configuration, and the
//! model registry; not running instances) as one JSON document.

use serde::{Deserialize, Serialize};

use crate::{Model, Result, Service, ServiceConfig, StoreError, now_ms};

/// What `export` writes first, so `import` can refuse other JSON.
const FORMAT: &str = "serval-store-export";
/// The document version `import` reads.
const VERSION: u32 = 1;

/// A whole store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dump {
    pub format: String,
    pub version: u32,
    pub exported_ms: i64,
    /// Services, oldest first, with endpoints, canaries, auto-update rules and the versions they
    /// serve, metric rules and settings.
    pub services: Vec<DumpService>,
    /// The model registry, oldest first.
    pub models: Vec<Model>,
}

/// One service and its configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DumpService {
    pub service: Service,
    pub config: ServiceConfig,
}

impl Dump {
    pub fn new(services: Vec<DumpService>, models: Vec<Model>) -> Self {
        Dump {
            format: FORMAT.to_string(),
            version: VERSION,
            exported_ms: now_ms(),
            services,
            models,
        }
    }

    /// Refuses documents this version cannot import.
    pub fn check(&self) -> Result<()> {
        if self.format != FORMAT {
            return Err(StoreError::InvalidInput(format!(
                "not a serval store export (format '{}', expected '{FORMAT}')",
                self.format
            )));
        }
        if self.version != VERSION {
            return Err(StoreError::InvalidInput(format!(
                "store export version {} cannot be imported by this serval (it reads version {VERSION})",
                self.version
            )));
        }
        Ok(())
    }
}
