//! Integration tests: the real `serval` binary against a temporary home.
#![allow(clippy::unwrap_used)]

mod admin;
mod auth;
mod auto_update;
mod batching;
mod cli_endpoints;
mod cli_metrics;
mod cli_registry;
mod cli_service;
mod concurrency;
mod console;
mod deploy;
mod drift;
mod examples;
mod explain;
mod hardening;
mod hostile;
mod monitoring;
mod payload_logs;
mod predict;
mod python_faults;
mod rolling;
mod rollout;
mod scale_out;
mod serve;
mod shadow;
mod sklearn_linear;
mod sticky;
mod triton;
mod v2_clients;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary serval home and helpers to run the binary in it.
pub struct Home {
    pub dir: tempfile::TempDir,
    /// Extra environment of every command (a shared store, object storage credentials).
    pub env: Vec<(String, String)>,
}

impl Default for Home {
    fn default() -> Self {
        Self::new()
    }
}

impl Home {
    pub fn new() -> Self {
        Home::with_env(Vec::new())
    }

    /// A home whose commands also get `env` (e.g. `SERVAL_STORE=postgres://...`).
    pub fn with_env(env: Vec<(String, String)>) -> Self {
        Home {
            dir: tempfile::tempdir().expect("temp dir"),
            env,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_serval"));
        cmd.args(args)
            .env("SERVAL_HOME", self.dir.path().join("home"))
            .env_remove("SERVAL_SERVICE_ID")
            .env_remove("SERVAL_STORE")
            .env_remove("SERVAL_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run serval")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "serval {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs a command that must succeed and print one JSON document on stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let stdout = self.ok(&all);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout of {args:?} is not JSON ({e}):\n{stdout}"))
    }

    /// Runs a command that must fail with exit code 1 and one `Error:` line; returns stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(
            out.status.code(),
            Some(1),
            "serval {args:?} should fail with exit 1:\nstdout: {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("Error:")).collect();
        assert_eq!(errors.len(), 1, "expected one Error line in:\n{stderr}");
        assert!(!errors[0].contains("panicked"), "{stderr}");
        stderr
    }

    /// Creates a service and returns its id.
    pub fn service(&self, name: &str) -> String {
        let out = self.ok(&["create", "--name", name]);
        let id = out
            .trim()
            .strip_prefix("New Serving Service created: id=")
            .unwrap_or_else(|| panic!("unexpected create output: {out}"))
            .to_string();
        assert_eq!(id.len(), 32);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        id
    }

    /// Uploads a fixture model and returns its id.
    pub fn upload(&self, name: &str, file: &str, extra: &[&str]) -> String {
        self.upload_path(name, &fixture(file), extra)
    }

    /// `model add --engine ENGINE --endpoint ENDPOINT [--version V] --model-id ID`: its output.
    pub fn add_endpoint(
        &self,
        engine: &str,
        endpoint: &str,
        version: Option<&str>,
        model_id: &str,
    ) -> String {
        let mut args = vec!["model", "add", "--engine", engine, "--endpoint", endpoint];
        if let Some(version) = version {
            args.extend(["--version", version]);
        }
        args.extend(["--model-id", model_id]);
        self.ok(&args)
    }

    /// `model upload --name NAME --path PATH [extra]`: the new model's id.
    pub fn upload_path(&self, name: &str, path: &Path, extra: &[&str]) -> String {
        let mut args = vec![
            "model",
            "upload",
            "--name",
            name,
            "--path",
            path.to_str().expect("path"),
        ];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        let first = out.lines().next().unwrap_or_default();
        first
            .strip_prefix("Model created and registered, new Model ID=")
            .unwrap_or_else(|| panic!("unexpected upload output: {out}"))
            .to_string()
    }

    pub fn revision(&self, id: &str) -> u64 {
        let services = self.json(&["list"]);
        services
            .as_array()
            .and_then(|a| a.iter().find(|s| s["id"] == id))
            .and_then(|s| s["revision"].as_u64())
            .expect("service in list")
    }

    /// Writes a file under the temp dir and returns its path.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        path
    }

    /// `model add --engine custom --endpoint NAME --preprocess PATH`.
    pub fn add_custom(&self, endpoint: &str, code: &Path) {
        self.ok(&[
            "model",
            "add",
            "--engine",
            "custom",
            "--endpoint",
            endpoint,
            "--preprocess",
            code.to_str().unwrap(),
        ]);
    }
}

pub fn fixture(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/public")
        .join(file)
}

pub const PREPROCESS: &str = "class Preprocess:\n    def preprocess(self, body, state, collect_custom_statistics_fn=None):\n        return [[body['x0'], body['x1']]]\n";

/// The Python for workers and example scripts: `SERVAL_PYTHON` (set by scripts/test.sh), else the
/// project's test venv, else `python3`.
/// Runs `python -c script args…` with the test venv's Python; asserts that it succeeded and
/// returns its trimmed stdout.
pub fn python_script(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn python() -> String {
    if let Ok(python) = std::env::var("SERVAL_PYTHON") {
        return python;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if venv.is_file() {
        return venv.display().to_string();
    }
    "python3".to_string()
}

/// A file of the repository's `examples/` folder.
pub fn example(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(rel)
        .display()
        .to_string()
}
