//! A service's Python environment: the packages of `config --extra-python-packages` (or
//! `SERVAL_EXTRA_PYTHON_PACKAGES`, or clearml's `CLEARML_EXTRA_PYTHON_PACKAGES`) installed into a
//! virtual environment layered on the service's interpreter. The workers then run the
//! environment's `python`, which still sees every package of the base interpreter — also when that
//! interpreter is itself a venv (a `.pth` file adds its site-packages), so pip installs only
//! what is missing. Built once per (interpreter, packages), cached under
//! `<cache>/pyenv/<sha256>/`, reused across restarts and by every endpoint of the service.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use super::LoadError;

/// The packages to install: the service's setting, else the environment variables.
pub fn packages(setting: Option<&str>) -> Option<String> {
    setting
        .map(str::to_string)
        .or_else(|| std::env::var("SERVAL_EXTRA_PYTHON_PACKAGES").ok())
        .or_else(|| std::env::var("CLEARML_EXTRA_PYTHON_PACKAGES").ok())
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
}

/// One build at a time in this process (endpoints load in parallel and share environments).
static BUILDING: Mutex<()> = Mutex::new(());

/// A failed step of a build, for [`LoadError::Environment`].
fn failed(packages: &str, reason: String) -> LoadError {
    LoadError::Environment {
        packages: packages.to_string(),
        reason,
    }
}

fn run(command: &mut Command, packages: &str) -> Result<String, LoadError> {
    let output = command.output().map_err(|e| {
        failed(
            packages,
            format!("cannot run {:?}: {e}", command.get_program()),
        )
    })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        return Ok(text);
    }
    let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = tail[tail.len().saturating_sub(6)..].join("\n");
    Err(failed(packages, format!("{}:\n{tail}", output.status)))
}

/// The interpreter of the environment for `packages` on top of `interpreter`, built if needed.
pub fn ensure(interpreter: &str, packages: &str, cache_dir: &Path) -> Result<PathBuf, LoadError> {
    let key = serval_artifacts::hash_bytes(format!("{interpreter}\n{packages}").as_bytes());
    let root = cache_dir.join("pyenv").join(&key[..32]);
    let python = root.join("bin").join("python");
    let done = root.join(".serval-complete");
    if done.is_file() {
        return Ok(python);
    }
    let _guard = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if done.is_file() {
        return Ok(python);
    }
    let start = Instant::now();
    tracing::info!(%interpreter, %packages, "building the Python environment (pip install); endpoints that need it load when it is ready");
    let staging = root.with_extension(format!("{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(staging.parent().unwrap_or(cache_dir)).map_err(|e| {
        failed(
            packages,
            format!("cannot create the Python environment folder: {e}"),
        )
    })?;
    let what = packages;
    // A venv on the base interpreter, without pip of its own (the base's pip installs into it).
    run(
        Command::new(interpreter)
            .args(["-m", "venv", "--system-site-packages", "--without-pip"])
            .arg(&staging),
        what,
    )?;
    // Every site-packages folder of the base interpreter (a venv's own included) stays visible.
    let base = run(
        Command::new(interpreter).args([
            "-c",
            "import site, sys; print('\\n'.join(site.getsitepackages() + [site.getusersitepackages()]))",
        ]),
        what,
    )?;
    let inner = run(
        Command::new(staging.join("bin").join("python")).args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ]),
        what,
    )?;
    let site = PathBuf::from(inner.trim());
    std::fs::write(site.join("_serval_base.pth"), base)
        .map_err(|e| failed(packages, format!("cannot write the .pth file: {e}")))?;
    let install = run(
        Command::new(interpreter)
            .args(["-m", "pip", "--python"])
            .arg(staging.join("bin").join("python"))
            .args([
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
            ])
            .args(packages.split_whitespace()),
        what,
    );
    if let Err(error) = install {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(error);
    }
    std::fs::write(staging.join(".serval-complete"), packages)
        .map_err(|e| failed(packages, e.to_string()))?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&staging, &root).map_err(|e| {
        failed(
            packages,
            format!("cannot move the environment into place: {e}"),
        )
    })?;
    tracing::info!(%packages, seconds = start.elapsed().as_secs_f64(), "built the Python environment");
    Ok(python)
}
