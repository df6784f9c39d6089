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
