//! Why an endpoint did not load. [`LoadError`]'s `Display` is the whole story, for the log and
//! `serval model list` (it may name files in the server's cache); [`LoadError::client_text`] is
//! what a client is told (the 503 of a request to the endpoint, the V2 repository index, the
//! console), built from the same fields with file names instead of paths. Text that comes from
//! elsewhere — a library, user code, a tool's output — goes through [`redact`] on its way.

use std::path::{Path, PathBuf};

use serval_engine::EngineError;
use serval_store::{EngineKind, StoreError};

use crate::error::redact;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The endpoint names no model and its engine needs one.
    #[error("the {engine} engine needs a model{hint}")]
    NoModel {
        engine: EngineKind,
        hint: &'static str,
    },
    /// The registry could not be read.
    #[error("cannot read model {id} from the registry: {source}")]
    Registry { id: String, source: StoreError },
    /// A file could not be fetched from its storage (it may work on the next pass).
    #[error("cannot fetch {what}: {reason}")]
    Fetch { what: String, reason: String },
    /// A local file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file's content is not what the registry recorded.
    #[error("{what} {} changed since it was registered (sha256 {actual}, registry {expected})", path.display())]
    Checksum {
        what: &'static str,
        path: PathBuf,
        actual: String,
        expected: String,
    },
    /// A packed folder could not be unpacked.
    #[error("cannot unpack {name}: {reason}")]
    Unpack { name: String, reason: String },
    /// The model's bytes: not a model the engine reads, or one it refused.
    #[error("{0}")]
    Model(EngineError),
    /// What a `triton` model file holds is not something serval runs.
    #[error("{0}")]
    Triton(String),
    /// The model's inputs or outputs do not match the endpoint's io flags.
    #[error("{model} does not match the endpoint's io flags: {reason}")]
    Io { model: String, reason: String },
    /// The model failed its warm-up prediction.
    #[error("warm-up prediction failed: {0}")]
    WarmUp(EngineError),
    /// The endpoint's batching settings cannot be used.
    #[error("{0}")]
    Batching(String),
    /// The service's extra Python packages could not be installed.
    #[error("installing extra Python packages '{packages}': {reason}")]
    Environment { packages: String, reason: String },
    /// The Python workers did not start, or could not load the endpoint's code or model.
    #[error("{0}")]
    Python(#[from] serval_python::StartError),
    /// The worker package could not be written into the cache.
    #[error("cannot install the Python worker package: {0}")]
    WorkerPackage(std::io::Error),
    /// The V2 gRPC server a `triton` endpoint forwards to cannot be used.
    #[error("--triton-grpc-server '{address}' is not host:port: {reason}")]
    Upstream { address: String, reason: String },
    /// The model's runner threads could not be started.
    #[error("cannot start a runner thread: {0}")]
    Threads(std::io::Error),
    /// What the endpoint needs runs on the server's async runtime, and there is none (a bug).
    #[error("{0} needs the server's async runtime")]
    NoRuntime(&'static str),
    /// The configuration leaves nothing that can run the endpoint.
    #[error("nothing can run this endpoint")]
    NoRunner,
    /// The loading thread panicked (a bug).
    #[error("loading panicked")]
    Panicked,
}

/// A path as a client may see it: its file name.
fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || "a file".to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

impl LoadError {
    /// Whether loading again with nothing changed may succeed: the store or an object store was
    /// unreachable, a file could not be read or unpacked, a download was corrupt, an environment
    /// could not be built, a worker did not start. A model or code that was read and refused, or
    /// a configuration that cannot run, fails the same way until the endpoint changes.
    pub fn may_pass(&self) -> bool {
        match self {
            LoadError::Registry { .. }
            | LoadError::Fetch { .. }
            | LoadError::Read { .. }
            | LoadError::Checksum { .. }
            | LoadError::Unpack { .. }
            | LoadError::Environment { .. }
            | LoadError::WorkerPackage(_)
            | LoadError::Threads(_) => true,
            LoadError::Python(start) => start.may_pass(),
            LoadError::NoModel { .. }
            | LoadError::Model(_)
            | LoadError::Triton(_)
            | LoadError::Io { .. }
            | LoadError::WarmUp(_)
            | LoadError::Batching(_)
            | LoadError::Upstream { .. }
            | LoadError::NoRuntime(_)
            | LoadError::NoRunner
            | LoadError::Panicked => false,
        }
    }

    /// What a client may be told (see the module docs).
    pub fn client_text(&self) -> String {
        match self {
            LoadError::Read { path, source } => {
                format!(
                    "cannot read {}: {}",
                    file_name(path),
                    redact(&source.to_string())
                )
            }
            LoadError::Checksum {
                what,
                path,
                actual,
                expected,
            } => format!(
                "{what} {} changed since it was registered (sha256 {actual}, registry {expected})",
                file_name(path)
            ),
            // Library, user-code and tool text, and store errors (their URLs are redacted by
            // the store already).
            other => redact(&other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_told_file_names_not_paths() {
        let read = LoadError::Read {
            path: "/root/.serval/cache/blobs/ab/model.json".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "No such file"),
        };
        assert!(read.to_string().contains("/root/.serval/cache"));
        assert_eq!(read.client_text(), "cannot read model.json: No such file");
        let changed = LoadError::Checksum {
            what: "model file",
            path: "/srv/m/model.txt".into(),
            actual: "a".into(),
            expected: "b".into(),
        };
        assert_eq!(
            changed.client_text(),
            "model file model.txt changed since it was registered (sha256 a, registry b)"
        );
        let python = LoadError::Python(serval_python::StartError::Load(
            "ImportError: no module named x\n  File /srv/code/p.py".into(),
        ));
        assert!(
            !python.client_text().contains("/srv"),
            "{}",
            python.client_text()
        );
    }
}
