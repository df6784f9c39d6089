//! The deployment files in `deploy/`: every Kubernetes manifest validates offline against
//! Kubernetes 1.30 (strict), and the invariants that matter hold against this binary and a running
//! server (tests/python/deploy_check.py).

use std::path::Path;

use crate::serve::Server;
use crate::{Home, python};

#[test]
fn kubernetes_manifests_validate_and_match_the_binary() {
    let home = Home::new();
    home.service("deploy");
    let dir = home.path();
    let serve_help = home.ok(&["serve", "--help"]);
    let store_help = home.ok(&["store", "--help"]);
    std::fs::write(dir.join("serve-help.txt"), &serve_help).unwrap();
    std::fs::write(dir.join("store-help.txt"), &store_help).unwrap();
    let server = Server::start(&home);
    std::fs::write(dir.join("metrics.txt"), server.get_text("/metrics")).unwrap();
    assert!(server.stop().success());

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = std::process::Command::new(python())
        .arg(root.join("crates/serval/tests/python/deploy_check.py"))
        .arg(root.join("deploy/k8s"))
        .arg(dir.join("serve-help.txt"))
        .arg(dir.join("store-help.txt"))
        .arg(dir.join("metrics.txt"))
        .output()
        .expect("run tests/python/deploy_check.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "deploy checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("all deploy checks passed"), "{stdout}");
    print!("{stdout}");
}

/// What the Dockerfile's runtime stage builds, outside a container (no image can be built on the
/// test machines: no container daemon): the release binary (`SERVAL_RELEASE_BIN`, from the
/// Dockerfile's build command in scripts/test.sh) at `<root>/usr/local/bin/serval`, run as a
/// non-root user (uid 10001 when the test runs as root, else the test's own user) whose only
/// writable path in the root is its home `<root>/var/lib/serval`; the store is elsewhere (as
/// PostgreSQL would be). It loads a model, answers, and writes nothing outside its home.
#[test]
fn the_image_layout_serves_as_a_non_root_user_writing_only_its_home() {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let bin = root.join("usr/local/bin/serval");
    let home = root.join("var/lib/serval");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    // The Dockerfile's build step (`cargo build --release --locked -p serval`), which
    // scripts/test.sh runs and passes as SERVAL_RELEASE_BIN; else this test build's binary.
    let built = std::env::var("SERVAL_RELEASE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_serval").to_string());
    println!("image binary: {built}");
    std::fs::copy(&built, &bin).unwrap();
    // The store and the model files, written by "the CLI" elsewhere.
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let store = format!("sqlite://{}", outside.join("serval.db").display());
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_serval"))
            .args(args)
            .env("SERVAL_HOME", outside.join("cli-home"))
            .env("SERVAL_STORE", &store)
            .env_remove("SERVAL_SERVICE_ID")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    cli(&["create", "--name", "image"]);
    let model = crate::fixture("clearml_xgb.json");
    let out = cli(&[
        "model",
        "upload",
        "--name",
        "xgb",
        "--path",
        model.to_str().unwrap(),
    ]);
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("Model created and registered, new Model ID="))
        .unwrap()
        .to_string();
    cli(&[
        "model",
        "add",
        "--engine",
        "xgboost",
        "--endpoint",
        "xgb",
        "--model-id",
        &id,
    ]);

    let uid = String::from_utf8(
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse::<u32>()
    .unwrap();
    let as_root = uid == 0;
    let user = if as_root { 10001 } else { uid };
    let chmod = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let chown = |path: &std::path::Path| {
        if as_root {
            let ok = std::process::Command::new("chown")
                .args(["-R", &format!("{user}:{user}"), path.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(ok.success());
        }
    };
    // Everything readable; the root read-only; the home and the store writable by the user.
    for path in [
        dir.path(),
        &outside,
        &root,
        &root.join("usr"),
        &root.join("usr/local"),
        &root.join("usr/local/bin"),
        &root.join("var"),
        &root.join("var/lib"),
    ] {
        chmod(path, 0o755);
    }
    let ok = std::process::Command::new("chmod")
        .args(["-R", "a+rX", outside.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(ok.success());
    chown(&outside);
    chown(&home);
    chmod(&home, 0o750);
    for path in [
        &root,
        &root.join("usr"),
        &root.join("usr/local"),
        &root.join("usr/local/bin"),
        &root.join("var"),
        &root.join("var/lib"),
    ] {
        chmod(path, 0o555);
    }
    let before: Vec<std::path::PathBuf> = walk(&root);

    let mut command = if as_root {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid",
            &user.to_string(),
            "--regid",
            &user.to_string(),
            "--clear-groups",
            "--",
        ])
        .arg(&bin);
        c
    } else {
        std::process::Command::new(&bin)
    };
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut child = command
        .args([
            "serve",
            "--home",
            home.to_str().unwrap(),
            "--host",
            "127.0.0.1",
        ])
        .args([
            "--port",
            "0",
            "--grpc-port",
            "0",
            "--poll-interval-ms",
            "100",
        ])
        .env_clear()
        .env("SERVAL_STORE", &store)
        .env("PATH", "/usr/bin:/bin")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!(
                "serve did not start: {line}\n{}",
                std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
            )
        })
        .to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    crate::serve::wait_until("the model answers", || {
        agent
            .post(format!("{base}/serve/xgb"))
            .header("Content-Type", "application/json")
            .send(crate::serve::IRIS)
            .is_ok_and(|r| r.status() == 200)
    });
    // It runs as the unprivileged user.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let real_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|id| id.parse::<u32>().ok());
    assert_eq!(real_uid, Some(user), "{status}");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success(), "serve exited cleanly");
    // Written: only below the home (the model cache, the worker package).
    let after = walk(&root);
    let new: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
    for path in new {
        assert!(
            path.starts_with(&home),
            "written outside the home: {}",
            path.display()
        );
    }
    // Let the temp dir go.
    chmod(&root, 0o755);
    for path in [
        root.join("usr"),
        root.join("usr/local"),
        root.join("usr/local/bin"),
        root.join("var"),
        root.join("var/lib"),
    ] {
        chmod(&path, 0o755);
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            all.push(path.clone());
            if path.is_dir() {
                all.extend(walk(&path));
            }
        }
    }
    all
}

/// `deploy/compose/compose.yaml` validates with a real compose implementation (`config`, offline:
/// `SERVAL_COMPOSE`, set by scripts/test.sh from scripts/setup-compose.sh), every variable it reads
/// is in `.env.example`, it has the services the docs name, and serval's flags exist.
#[test]
fn the_compose_file_validates_and_every_variable_is_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("deploy/compose");
    let compose = std::env::var("SERVAL_COMPOSE").unwrap_or_else(|_| "docker-compose".into());
    let output = std::process::Command::new(&compose)
        .arg("-f")
        .arg(dir.join("compose.yaml"))
        .arg("--env-file")
        .arg(dir.join(".env.example"))
        .arg("config")
        .output()
        .unwrap_or_else(|e| panic!("run {compose} (scripts/setup-compose.sh installs it): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "compose config failed:\n{stderr}");
    assert!(!stderr.contains("is not set"), "{stderr}");
    for service in [
        "serval:",
        "postgres:",
        "minio:",
        "minio-init:",
        "setup:",
        "prometheus:",
        "grafana:",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start() == service && l.starts_with("  ")),
            "no service {service} in:\n{stdout}"
        );
    }
    // Every ${VAR} of the file is in .env.example, and .env.example has nothing unused.
    let text = std::fs::read_to_string(dir.join("compose.yaml")).unwrap();
    let env = std::fs::read_to_string(dir.join(".env.example")).unwrap();
    let documented: Vec<&str> = env
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .filter_map(|l| l.split('=').next())
        .collect();
    let used: Vec<&str> = text
        .match_indices("${")
        .filter(|(i, _)| !text[..*i].ends_with('$'))
        .filter_map(|(i, _)| text[i + 2..].split('}').next())
        .collect();
    for var in &used {
        assert!(
            documented.contains(var),
            "${{{var}}} is not in .env.example"
        );
    }
    for var in &documented {
        assert!(used.contains(var), "{var} in .env.example is not used");
    }
    // serval's command: every flag exists.
    let home = Home::new();
    let help = home.ok(&["serve", "--help"]);
    let command = text
        .lines()
        .find(|l| l.trim_start().starts_with("command: [\"serve\""))
        .expect("the serval service's command");
    for flag in command.split('"').filter(|w| w.starts_with("--")) {
        assert!(
            help.split_whitespace()
                .any(|w| w.trim_end_matches(',') == flag),
            "serve has no {flag}"
        );
    }
    // The demo setup script only uses commands that exist.
    let setup = std::fs::read_to_string(dir.join("setup.sh")).unwrap();
    for line in setup.lines().filter(|l| l.starts_with("serval ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let sub = if words[1] == "model" {
            vec![words[1], words[2], "--help"]
        } else {
            vec![words[1], "--help"]
        };
        home.ok(&sub);
    }
}
