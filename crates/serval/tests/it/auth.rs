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

/// One HTTP/1.1 exchange on `stream`: the answer's head, lower-cased (the body is read by its
/// length and dropped).
fn exchange(stream: &mut std::net::TcpStream, request: &[u8]) -> String {
    use std::io::{Read, Write};
    stream.write_all(request).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "the server closed early"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head
}

/// A request refused before its body was read leaves that body in the connection, which the
/// server then closes: the answer says `Connection: close`, so a client's pool does not send its
/// next request into a closed connection. Refusals of requests without a body, or after the body
/// was read, keep the connection.
#[test]
fn a_refusal_that_leaves_the_body_unread_closes_the_connection_and_says_so() {
    let home = Home::new();
    home.service("close");
    let model = home.upload("iris", "lgbm_multi_iris.txt", &[]);
    home.add_endpoint("lightgbm", "iris", None, &model);
    let key = home.ok(&["auth", "create-key", "--name", "ci"]);
    let key = key.trim();
    let server = Server::start_with(&home, &["--require-auth"]);
    let address = server.base.trim_start_matches("http://").to_string();
    let connect = || std::net::TcpStream::connect(&address).unwrap();
    let post = |path: &str, key: Option<&str>, body: &str| {
        let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let closes = |head: &str| head.contains("\r\nconnection: close\r\n");
    for (path, what) in [
        ("/serve/iris", "clearml"),
        ("/v2/models/iris/infer", "V2 REST"),
        ("/v2/repository/index", "a guarded route"),
        ("/api/v1/services", "the admin API"),
    ] {
        let head = exchange(&mut connect(), &post(path, None, IRIS));
        assert!(head.starts_with("http/1.1 401"), "{what}: {head}");
        assert!(closes(&head), "{what}: {head}");
    }
    // Without a body, a refusal keeps the connection: the next request on it is answered.
    let mut stream = connect();
    let head = exchange(&mut stream, &post("/serve/iris", None, ""));
    assert!(head.starts_with("http/1.1 401") && !closes(&head), "{head}");
    // A body read before the refusal (clearml reads it before reporting an unknown endpoint,
    // and before a model refuses it) keeps it too.
    let head = exchange(&mut stream, &post("/serve/nope", Some(key), IRIS));
    assert!(head.starts_with("http/1.1 404") && !closes(&head), "{head}");
    let head = exchange(
        &mut stream,
        &post("/serve/iris", Some(key), r#"{"x0": "a"}"#),
    );
    assert!(head.starts_with("http/1.1 422") && !closes(&head), "{head}");
    let head = exchange(&mut stream, &post("/serve/iris", Some(key), IRIS));
    assert!(head.starts_with("http/1.1 200") && !closes(&head), "{head}");
}
