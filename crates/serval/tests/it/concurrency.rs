//! Concurrent CLI processes must serialise on the store and lose nothing, on either backend.

use crate::Home;

#[test]
fn ten_processes_adding_endpoints_lose_nothing() {
    ten_processes(Home::new());
}

#[test]
fn ten_processes_on_postgres_lose_nothing() {
    let store = serval_testkit::shared_postgres().fresh_database();
    ten_processes(Home::with_env(vec![("SERVAL_STORE".into(), store)]));
}

fn ten_processes(home: Home) {
    let service = home.service("demo");
    let model = home.upload("iris", "lgbm_multi_iris.txt", &[]);
    let before = home.revision(&service);

    let children: Vec<_> = (0..10)
        .map(|i| {
            let endpoint = format!("ep{i}");
            home.command(&[
                "--id",
                &service,
                "model",
                "add",
                "--engine",
                "lightgbm",
                "--endpoint",
                &endpoint,
                "--model-id",
                &model,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn serval")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let list = home.json(&["model", "list"]);
    let mut urls: Vec<_> = list["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["url"].as_str().unwrap().to_string())
        .collect();
    urls.sort();
    let expected: Vec<_> = (0..10).map(|i| format!("ep{i}")).collect();
    assert_eq!(urls, expected);
    assert_eq!(
        home.revision(&service),
        before + 10,
        "one revision per write"
    );
}
