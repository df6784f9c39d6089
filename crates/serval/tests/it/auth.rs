//! API keys end to end: `serval auth` and two real servers with `--require-auth` on one store.

use std::time::Instant;

use crate::Home;
use crate::serve::{IRIS, Server, wait_until};

/// POSTs with an optional key; returns the status, the JSON body and `WWW-Authenticate`.
fn post(
    server: &Server,
    path: &str,
    key: Option<&str>,
) -> (u16, serde_json::Value, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent
        .post(format!("{}{path}", server.base))
        .header("Content-Type", "application/json");
    if let Some(key) = key {
        request = request.header("Authorization", &format!("Bearer {key}"));
    }
    let mut response = request.send(IRIS).unwrap();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (
        response.status().as_u16(),
        serde_json::from_str(&body).unwrap_or_default(),
        challenge,
    )
}

#[test]
fn api_keys_guard_inference_and_revocation_reaches_every_server() {
    let home = Home::new();
    home.service("auth");
    let model = home.upload("iris", "lgbm_multi_iris.txt", &[]);
    for endpoint in ["iris", "other"] {
        home.ok(&[
            "model",
            "add",
            "--engine",
            "lightgbm",
            "--endpoint",
            endpoint,
            "--model-id",
            &model,
        ]);
    }
    let key = home.ok(&["auth", "create-key", "--name", "ci"]);
    let key = key.trim().to_string();
    assert!(
        key.starts_with("sk-serval-") && !key.contains('\n'),
        "{key}"
    );
    let scoped = home.json(&[
        "auth",
        "create-key",
        "--name",
        "iris-only",
        "--endpoints",
        "iris*",
    ]);
    assert_eq!(scoped["name"], "iris-only");
    let scoped = scoped["key"].as_str().unwrap().to_string();
    let listed = home.ok(&["auth", "list"]);
    assert!(
        listed.contains("ci") && listed.contains("iris*"),
        "{listed}"
    );
    assert!(
        !listed.contains(&key) && !listed.contains(&scoped),
        "{listed}"
    );
    let error = home.fail(&["auth", "create-key", "--name", "ci"]);
    assert!(error.contains("already exists"), "{error}");

    // Off unless asked for, whatever the store holds.
    let open = Server::start(&home);
    assert_eq!(post(&open, "/serve/iris", None).0, 200);
    drop(open);

    let a = Server::start_with(&home, &["--require-auth"]);
    let b = Server::start_with(&home, &["--require-auth", "--auth-metrics"]);
    for server in [&a, &b] {
        let (status, body, challenge) = post(server, "/serve/iris", None);
        assert_eq!(status, 401, "{body}");
        assert!(challenge.unwrap().starts_with("Bearer"));
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("API key is required"),
            "{body}"
        );
        let (status, body, _) = post(server, "/serve/iris", Some("sk-serval-not-a-key"));
        assert_eq!(status, 401, "{body}");
        assert_eq!(post(server, "/serve/iris", Some(&key)).0, 200);
        assert_eq!(post(server, "/serve/other", Some(&key)).0, 200);
        assert_eq!(post(server, "/serve/iris", Some(&scoped)).0, 200);
        let (status, body, _) = post(server, "/serve/other", Some(&scoped));
        assert_eq!(status, 403, "{body}");
        let (status, body, _) = post(server, "/v2/models/iris/infer", None);
        assert_eq!(status, 401);
        assert!(body["error"].is_string(), "{body}");
        assert_eq!(server.get("/health/ready").0, 200, "health stays open");
    }
    assert!(a.get_text("/metrics").contains("serval_requests_total"));
    assert!(
        !b.get_text("/metrics").contains("serval_requests_total"),
        "--auth-metrics"
    );

    // Listings show a scoped key only its endpoints: the repository index (REST and gRPC) and,
    // with --auth-metrics, /metrics.
    let names = |key: &str| {
        let (status, body, _) = post(&b, "/v2/repository/index", Some(key));
        assert_eq!(status, 200, "{body}");
        let mut names: Vec<String> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&key), ["iris", "other"]);
    assert_eq!(names(&scoped), ["iris"]);
    let script = r#"
import sys
import tritonclient.grpc as grpcclient
address, key = sys.argv[1:3]
index = grpcclient.InferenceServerClient(address).get_model_repository_index(headers={"authorization": "Bearer " + key})
print(" ".join(sorted(m.name for m in index.models)))
"#;
    let grpc_names = |key: &str| crate::python_script(script, &[&b.grpc, key]);
    assert_eq!(grpc_names(&key), "iris other");
    assert_eq!(grpc_names(&scoped), "iris");
    let metrics = |key: &str| {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        agent
            .get(format!("{}/metrics", b.base))
            .header("Authorization", &format!("Bearer {key}"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    };
    let all = metrics(&key);
    assert!(
        all.contains("endpoint=\"iris\"") && all.contains("endpoint=\"other\""),
        "{all}"
    );
    let seen = metrics(&scoped);
    assert!(seen.contains("endpoint=\"iris\""), "{seen}");
    assert!(!seen.contains("endpoint=\"other\""), "{seen}");

    // Revocation reaches both servers with their next reload.
    home.ok(&["auth", "revoke", "ci"]);
    let start = Instant::now();
    wait_until("the revoked key refused by both servers", || {
        post(&a, "/serve/iris", Some(&key)).0 == 401 && post(&b, "/serve/iris", Some(&key)).0 == 401
    });
    eprintln!(
        "revocation refused by both servers after {:?}",
        start.elapsed()
    );
    assert_eq!(post(&a, "/serve/iris", Some(&scoped)).0, 200);
    let error = home.fail(&["auth", "revoke", "ci"]);
    assert!(error.contains("no API key named 'ci'"), "{error}");
}
