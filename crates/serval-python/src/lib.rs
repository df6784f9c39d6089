//! Python worker processes for endpoints that bring Python: clearml-style `Preprocess` code,
//! pickled scikit-learn models, `custom` and `custom_async` engines.
//!
//! Python never runs on the HTTP path: each such endpoint gets a [`Pool`] of `python3` processes
//! running the stdlib-only `serval_worker` package shipped inside this crate (written to disk by
//! [`install_package`]). The server and a worker exchange [`frame::Frame`]s over the worker's stdin
//! and a private copy of its stdout; the worker's fd 1 points at stderr, so `print()` lands in the
//! server log and cannot corrupt the channel. A worker that dies is restarted with backoff; the
//! requests it held fail with [`PyError::WorkerExited`].

pub mod frame;
mod message;
mod pool;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use frame::Frame;
pub use pool::{
    Body, CallFuture, Calls, Continuation, Outcome, Pool, PoolId, PoolSpec, PoolStatus, PyError,
    StartError, Step,
};

/// The worker package's files, embedded so the binary is self-contained.
const PACKAGE: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../python/serval_worker/__init__.py"),
    ),
    (
        "protocol.py",
        include_str!("../python/serval_worker/protocol.py"),
    ),
    ("main.py", include_str!("../python/serval_worker/main.py")),
    (
        "triton.py",
        include_str!("../python/serval_worker/triton.py"),
    ),
    (
        "compat/clearml/__init__.py",
        include_str!("../python/serval_worker/compat/clearml/__init__.py"),
    ),
];

/// The Python snippet that starts a worker: `python -u -c BOOT <package parent dir>`.
pub const BOOT: &str =
    "import sys; sys.path.insert(0, sys.argv[1]); from serval_worker.main import run; run()";

/// Writes the worker package under `dir` (once per package version) and returns the folder to
/// put on `sys.path`.
pub fn install_package(dir: &Path) -> std::io::Result<PathBuf> {
    let mut hasher = Sha256::new();
    for (name, text) in PACKAGE {
        hasher.update(name.as_bytes());
        hasher.update(text.as_bytes());
    }
    let digest = hasher.finalize();
    let short: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let target = dir.join(format!("worker-{short}"));
    if target.join("serval_worker").join("main.py").is_file() {
        return Ok(target);
    }
    std::fs::create_dir_all(dir)?;
    static STAGING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = STAGING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let staging = dir.join(format!(".worker-{short}.{}.{n}.tmp", std::process::id()));
    let package = staging.join("serval_worker");
    std::fs::create_dir_all(&package)?;
    for (name, text) in PACKAGE {
        let path = package.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    match std::fs::rename(&staging, &target) {
        Ok(()) => Ok(target),
        // Another server installed the same version first.
        Err(_) if target.join("serval_worker").join("main.py").is_file() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(target)
        }
        Err(e) => Err(e),
    }
}
