//! Many servers on many machines: `serve` processes with separate homes (nothing shared on disk)
//! on one PostgreSQL store, models in S3 (moto), driven by the CLI from a third home.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::Home;
use crate::serve::{IRIS, Server, wait_until};

/// The environment of every process of the fleet: the shared store and S3.
fn fleet_env(store: &str, moto: &serval_testkit::Moto) -> Vec<(String, String)> {
    let mut env = moto.env();
    env.push(("SERVAL_STORE".into(), store.to_string()));
    env.push(("SERVAL_ARTIFACTS".into(), "s3://models/serval".into()));
    env
}

fn add(cli: &Home, endpoint: &str, version: Option<&str>, model: &str) {
    let mut args = vec![
        "model",
        "add",
        "--engine",
        "lightgbm",
        "--endpoint",
        endpoint,
        "--model-id",
        model,
    ];
    if let Some(v) = version {
        args.extend(["--version", v]);
    }
    cli.ok(&args);
}

fn served_by_both(a: &Server, b: &Server, path: &str, what: &str) -> Value {
    wait_until(what, || {
        a.post(path, IRIS).0 == 200 && b.post(path, IRIS).0 == 200
    });
    let (_, reply) = a.post(path, IRIS);
    assert_eq!(b.post(path, IRIS).1, reply, "both servers answer alike");
    reply
}

#[test]
fn two_servers_on_postgres_and_s3_follow_the_cli_and_ride_out_a_store_outage() {
    let mut pg = serval_testkit::Postgres::start();
    let store = pg.fresh_database();
    let moto = serval_testkit::Moto::start();
    moto.create_bucket("models");
    let env = fleet_env(&store, &moto);
    let cli = Home::with_env(env.clone());

    cli.service("fleet");
    let model = cli.upload("iris", "lgbm_multi_iris.txt", &[]);
    let info = cli.json(&["model", "info", &model]);
    let uri = info["uri"].as_str().unwrap_or_default();
    assert!(uri.starts_with("s3://models/serval/"), "{info}");
    add(&cli, "iris", Some("1"), &model);

    let (home_a, home_b) = (Home::with_env(env.clone()), Home::with_env(env.clone()));
    let a = Server::start(&home_a);
    let b = Server::start(&home_b);
    let reply = served_by_both(&a, &b, "/serve/iris/1", "iris/1 on both servers");
    assert!(reply.is_object() || reply.is_array(), "{reply}");
    for home in [&home_a, &home_b] {
        let cached = home.path().join("home/cache/blobs");
        assert!(
            cached.is_dir(),
            "each server downloaded the model into its own cache"
        );
    }

    // Endpoints, a canary and an auto-update publish reach both servers.
    add(&cli, "iris", Some("2"), &model);
    cli.ok(&[
        "model",
        "canary",
        "--endpoint",
        "split",
        "--weights",
        "0.5",
        "0.5",
        "--input-endpoints",
        "iris/1",
        "iris/2",
    ]);
    served_by_both(&a, &b, "/serve/split", "the canary on both servers");
    cli.ok(&[
        "model",
        "auto-update",
        "--engine",
        "lightgbm",
        "--endpoint",
        "auto",
        "--name",
        "iris-auto",
        "--published",
    ]);
    cli.upload("iris-auto", "lgbm_multi_iris.txt", &["--publish"]);
    served_by_both(
        &a,
        &b,
        "/serve/auto/1",
        "the auto-update version on both servers",
    );

    // PostgreSQL goes away for 10 s: both keep serving, say so, and lose no request.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load: Vec<_> = [a.base.clone(), b.base.clone()]
        .into_iter()
        .map(|base| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .into();
                while !stop.load(Ordering::Relaxed) {
                    let status = agent
                        .post(format!("{base}/serve/iris/1"))
                        .header("Content-Type", "application/json")
                        .send(IRIS)
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    let counter = if status == 200 { &ok } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    pg.stop();
    for server in [&a, &b] {
        wait_until("the outage in /health/ready", || {
            let (status, body) = server.get("/health/ready");
            status == 200 && body["store"]["reachable"] == false
        });
        wait_until("serval_store_up 0", || {
            server.get_text("/metrics").contains("serval_store_up 0")
        });
    }
    let error = cli.fail(&["list"]);
    assert!(error.contains("control store unavailable"), "{error}");
    assert!(!error.contains("panicked"), "{error}");
    std::thread::sleep(Duration::from_secs(10));
    pg.resume();
    // A change made after the store is back reaches both servers.
    add(&cli, "after", None, &model);
    served_by_both(&a, &b, "/serve/after", "a change made after the outage");
    for server in [&a, &b] {
        wait_until("the store reachable again", || {
            server.get("/health/ready").1["store"]["reachable"] == true
        });
    }
    stop.store(true, Ordering::Relaxed);
    for thread in load {
        thread.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests during the outage"
    );
    assert!(ok.load(Ordering::Relaxed) > 100, "the load ran");
    let log = std::fs::read_to_string(home_a.path().join("serve.log")).unwrap();
    assert!(log.contains("control store unreachable"), "{log}");
    assert!(log.contains("reachable again"), "{log}");
}

/// Writes (`PUT`) or deletes an object in moto behind the registry's back: with a declared
/// binary type (moto reads an untyped body with `=` in it as a form) and an authorization header
/// (it refuses a second anonymous write to a key; it does not check signatures).
fn s3_object(moto: &serval_testkit::Moto, method: &str, key: &str, body: &[u8]) {
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{}/{key}", moto.endpoint))
        .header("Content-Type", "application/octet-stream")
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20261206/us-east-1/s3/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .body(body.to_vec())
        .unwrap();
    ureq::run(request).unwrap();
}

/// A model object changed behind the registry's back: a load error naming both hashes, and the
/// version before keeps serving; the load is tried again with a growing wait, so once the right
/// object is back the endpoint serves it, without a restart or a change. The same for an object
/// that cannot be fetched at all (gone, as when the store is down).
#[test]
fn a_corrupted_object_is_a_load_error_and_the_previous_model_keeps_serving() {
    let pg = serval_testkit::shared_postgres();
    let moto = serval_testkit::Moto::start();
    moto.create_bucket("models");
    let env = fleet_env(&pg.fresh_database(), &moto);
    let cli = Home::with_env(env.clone());
    cli.service("corrupt");
    let good = cli.upload("iris", "lgbm_multi_iris.txt", &[]);
    add(&cli, "iris", None, &good);
    let home = Home::with_env(env);
    let server = Server::start(&home);
    wait_until("iris", || server.post("/serve/iris", IRIS).0 == 200);
    let before = server.post("/serve/iris", IRIS);

    let other = cli.upload("iris2", "clearml_lgbm.txt", &[]);
    let info = cli.json(&["model", "info", &other]);
    let uri = info["uri"].as_str().unwrap().to_string();
    let registered = info["sha256"].as_str().unwrap().to_string();
    // Overwrite the object (moto does not check signatures).
    let key = uri.strip_prefix("s3://").unwrap();
    ureq::put(&format!("{}/{key}", moto.endpoint))
        .send("not the model that was registered")
        .unwrap();
    add(&cli, "iris", None, &other);
    wait_until("the load failure in the status", || {
        cli.json(&["model", "list"])["instances"][0]["endpoints"]["iris"]["state"] == "failed"
    });
    let status = &cli.json(&["model", "list"])["instances"][0]["endpoints"]["iris"];
    let error = status["error"].as_str().unwrap();
    assert!(error.contains(&registered), "{error}");
    assert!(error.contains("does not match the registry"), "{error}");
    assert!(error.contains("tried again in"), "{error}");
    assert_eq!(status["serving"], true);
    assert_eq!(server.post("/serve/iris", IRIS), before);

    // The object is right again: the next try loads it.
    let model = std::fs::read(crate::fixture("clearml_lgbm.txt")).unwrap();
    s3_object(&moto, "PUT", key, &model);
    let state =
        || cli.json(&["model", "list"])["instances"][0]["endpoints"]["iris"]["state"].clone();
    wait_until("the model loaded on a later try", || state() == "loaded");
    let after = server.post("/serve/iris", IRIS);
    assert_ne!(after, before);

    // A fetch that fails (the object is gone, as when the store is down) is tried again too: the
    // endpoint's next model loads once its object is back.
    // (The first model's text with a line more: the same model, a file not in any cache.)
    let mut text = std::fs::read(crate::fixture("lgbm_multi_iris.txt")).unwrap();
    text.extend_from_slice(b"\n");
    let copy = cli.path().join("iris3.txt");
    std::fs::write(&copy, &text).unwrap();
    let third = cli.upload_path("iris3", &copy, &[]);
    let info = cli.json(&["model", "info", &third]);
    let third_key = info["uri"]
        .as_str()
        .unwrap()
        .strip_prefix("s3://")
        .unwrap()
        .to_string();
    s3_object(&moto, "DELETE", &third_key, b"");
    add(&cli, "iris", None, &third);
    wait_until("the failed fetch in the status", || state() == "failed");
    let error = cli.json(&["model", "list"])["instances"][0]["endpoints"]["iris"]["error"].clone();
    assert!(
        error.as_str().unwrap().contains("tried again in"),
        "{error}"
    );
    assert_eq!(server.post("/serve/iris", IRIS), after);
    s3_object(&moto, "PUT", &third_key, &text);
    wait_until("the new version loaded once the object is back", || {
        state() == "loaded"
    });
    assert_eq!(server.post("/serve/iris", IRIS), before);
}

/// An embedded setup moves up: export from SQLite, import into PostgreSQL with the local model
/// copied to S3, and a server with its own home serves it.
#[test]
fn an_embedded_store_moves_to_postgres_and_s3() {
    let embedded = Home::new();
    embedded.service("moving");
    let model = embedded.upload("iris", "lgbm_multi_iris.txt", &[]);
    add(&embedded, "iris", None, &model);
    let dump = embedded.path().join("export.json");
    embedded.ok(&["store", "export", "--output", dump.to_str().unwrap()]);

    let pg = serval_testkit::shared_postgres();
    let moto = serval_testkit::Moto::start();
    moto.create_bucket("models");
    let env = fleet_env(&pg.fresh_database(), &moto);
    let cli = Home::with_env(env.clone());
    cli.ok(&[
        "store",
        "import",
        dump.to_str().unwrap(),
        "--destination",
        "s3://models/moved",
    ]);
    let info = cli.json(&["model", "info", &model]);
    assert!(
        info["uri"]
            .as_str()
            .unwrap()
            .starts_with("s3://models/moved/"),
        "{info}"
    );
    let error = cli.fail(&["store", "import", dump.to_str().unwrap()]);
    assert!(error.contains("already holds"), "{error}");

    let server = Server::start(&Home::with_env(env));
    wait_until("the moved endpoint", || {
        server.post("/serve/iris", IRIS).0 == 200
    });
}

/// Models in Azure Blob storage (Azurite): uploaded by the CLI, downloaded by a server with its
/// own home.
#[test]
fn azure_blob_models_are_uploaded_and_served() {
    let azurite = serval_testkit::Azurite::start();
    azurite.create_container("models");
    let mut env = azurite.env();
    env.push((
        "SERVAL_STORE".into(),
        serval_testkit::shared_postgres().fresh_database(),
    ));
    let cli = Home::with_env(env.clone());
    cli.service("azure");
    let model = cli.upload(
        "iris",
        "lgbm_multi_iris.txt",
        &["--destination", "azure://models/serval"],
    );
    let info = cli.json(&["model", "info", &model]);
    assert!(
        info["uri"]
            .as_str()
            .unwrap()
            .starts_with("azure://models/serval/"),
        "{info}"
    );
    add(&cli, "iris", None, &model);
    let home = Home::with_env(env);
    let server = Server::start(&home);
    wait_until("the Azure model", || {
        server.post("/serve/iris", IRIS).0 == 200
    });
}

fn cached_blobs(home: &Home) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(home.path().join("home/cache/blobs"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `serve --cache-size`: a model no endpoint uses any more is evicted; one in use never is.
#[test]
fn the_model_cache_evicts_models_no_endpoint_uses() {
    let moto = serval_testkit::Moto::start();
    moto.create_bucket("models");
    let env = fleet_env(&serval_testkit::shared_postgres().fresh_database(), &moto);
    let cli = Home::with_env(env.clone());
    cli.service("cache");
    let first = cli.upload("iris", "lgbm_multi_iris.txt", &[]);
    let second = cli.upload("iris", "xgb_multi_iris.json", &[]);
    let sha = |id: &str| {
        cli.json(&["model", "info", id])["sha256"]
            .as_str()
            .unwrap()
            .to_string()
    };
    add(&cli, "iris", None, &first);
    let home = Home::with_env(env);
    // One byte: only what is in use may stay.
    let server = Server::start_with(&home, &["--cache-size", "1"]);
    wait_until("iris", || server.post("/serve/iris", IRIS).0 == 200);
    assert_eq!(cached_blobs(&home), vec![sha(&first)]);
    cli.add_endpoint("xgboost", "iris", None, &second);
    wait_until("the first model evicted, the second kept", || {
        cached_blobs(&home) == vec![sha(&second)]
    });
    assert_eq!(server.post("/serve/iris", IRIS).0, 200);
}

/// The store URL's password never shows: not in listings, errors, the server's log or metrics.
#[test]
fn the_store_password_never_shows() {
    let url = serval_testkit::shared_postgres().fresh_database().replacen(
        "postgres://serval@",
        "postgres://serval:topsecret-pw@",
        1,
    );
    let home = Home::with_env(vec![("SERVAL_STORE".into(), url.clone())]);
    home.service("secret");
    let model = home.upload("iris", "lgbm_multi_iris.txt", &[]);
    add(&home, "iris", None, &model);
    let mut seen = String::new();
    for args in [
        &["list"][..],
        &["model", "list"],
        &["--json", "model", "list"],
        &["store", "migrate"],
        &["--help"],
        &["serve", "--help"],
    ] {
        let out = home.run(args);
        seen += &String::from_utf8_lossy(&out.stdout);
        seen += &String::from_utf8_lossy(&out.stderr);
    }
    let server = Server::start(&home);
    wait_until("iris", || server.post("/serve/iris", IRIS).0 == 200);
    seen += &server.get_text("/metrics");
    seen += &server.get("/health/ready").1.to_string();
    drop(server);
    seen += &std::fs::read_to_string(home.path().join("serve.log")).unwrap();
    // An unreachable store: the error names the store without the password.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let down = Home::with_env(vec![(
        "SERVAL_STORE".into(),
        format!("postgres://serval:topsecret-pw@127.0.0.1:{port}/serval"),
    )]);
    let error = down.fail(&["list"]);
    assert!(error.contains("serval:***@127.0.0.1"), "{error}");
    seen += &error;
    // The password in the query string, and a libpq key-value string (refused: it used to become
    // an SQLite file named after the whole string).
    let query = Home::with_env(vec![(
        "SERVAL_STORE".into(),
        format!("postgres://serval@127.0.0.1:{port}/serval?password=topsecret-pw"),
    )]);
    let error = query.fail(&["list"]);
    assert!(error.contains("password=***"), "{error}");
    seen += &error;
    let text = format!("host=127.0.0.1 port={port} user=serval password=topsecret-pw");
    let key_values = Home::with_env(vec![("SERVAL_STORE".into(), text.clone())]);
    let error = key_values.fail(&["list"]);
    assert!(error.contains("libpq key-value string"), "{error}");
    assert!(!key_values.path().join(&text).exists() && !std::path::Path::new(&text).exists());
    seen += &error;
    assert!(
        !seen.contains("topsecret-pw"),
        "the password leaked:\n{seen}"
    );
}

/// `model upload --url`: a file already in object storage is registered where it is, and served
/// (downloaded into the cache, cached by URI: no sha256 is recorded); a missing object is refused.
#[test]
fn models_registered_by_url_are_served() {
    let moto = serval_testkit::Moto::start();
    moto.create_bucket("models");
    let env = fleet_env(&serval_testkit::shared_postgres().fresh_database(), &moto);
    let cli = Home::with_env(env.clone());
    cli.service("by-url");
    let key = "models/elsewhere/iris.txt";
    let bytes = std::fs::read(crate::fixture("lgbm_multi_iris.txt")).unwrap();
    ureq::put(&format!("{}/{key}", moto.endpoint))
        .send(&bytes[..])
        .unwrap();
    let out = cli.ok(&[
        "model",
        "upload",
        "--name",
        "iris",
        "--url",
        &format!("s3://{key}"),
    ]);
    let model = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("Model created and registered, new Model ID="))
        .unwrap()
        .to_string();
    let info = cli.json(&["model", "info", &model]);
    assert_eq!(info["uri"], format!("s3://{key}"));
    assert_eq!(info["size"], bytes.len());
    add(&cli, "iris", None, &model);
    let server = Server::start(&Home::with_env(env));
    wait_until("the model registered by URL", || {
        server.post("/serve/iris", IRIS).0 == 200
    });

    let error = cli.fail(&[
        "model",
        "upload",
        "--name",
        "nope",
        "--url",
        "s3://models/elsewhere/missing.txt",
    ]);
    assert!(error.contains("not found"), "{error}");
}

/// A PostgreSQL server that only accepts TLS: `sslmode=require` works with its CA trusted
/// (`SSL_CERT_FILE`), and an untrusted certificate is one clear error, never a plaintext fallback.
#[test]
fn postgres_over_tls_verifies_the_server() {
    let pg = serval_testkit::Postgres::start_tls_only();
    let url = format!("{}?sslmode=require", pg.url("postgres"));
    let trusted = Home::with_env(vec![
        ("SERVAL_STORE".into(), url.clone()),
        ("SSL_CERT_FILE".into(), pg.ca_file().display().to_string()),
    ]);
    trusted.service("tls");
    assert_eq!(trusted.json(&["list"]).as_array().unwrap().len(), 1);

    let untrusted = Home::with_env(vec![
        ("SERVAL_STORE".into(), url),
        ("SSL_CERT_FILE".into(), "/nonexistent/ca.pem".into()),
    ]);
    let error = untrusted.fail(&["list"]);
    assert!(error.contains("control store unavailable"), "{error}");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

/// A server started while its store is down (a fleet coming up before its database) waits for
/// the store, logging each try, and serves once it answers — it does not exit.
#[test]
fn a_server_started_while_the_store_is_down_waits_for_it() {
    let mut pg = serval_testkit::Postgres::start();
    let store = pg.fresh_database();
    let env = vec![("SERVAL_STORE".to_string(), store)];
    let cli = Home::with_env(env.clone());
    cli.service("late");
    let model = cli.upload("iris", "lgbm_multi_iris.txt", &[]);
    add(&cli, "iris", None, &model);
    pg.stop();
    let home = Home::with_env(env);
    let resumed = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        pg.resume();
        pg
    });
    // Returns once the server listens and is ready: after the store came back.
    let server = Server::start(&home);
    let _pg = resumed.join().unwrap();
    wait_until("iris served", || server.post("/serve/iris", IRIS).0 == 200);
    let log = std::fs::read_to_string(home.path().join("serve.log")).unwrap();
    assert!(log.contains("control store unreachable"), "{log}");
    assert!(log.contains("retrying in"), "{log}");
    assert!(log.contains("control store reachable: starting"), "{log}");
    let status = server.stop();
    let log = std::fs::read_to_string(home.path().join("serve.log")).unwrap();
    assert!(status.success(), "{status}\n{log}");
}
