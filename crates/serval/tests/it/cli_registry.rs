//! `model upload | publish | tag | info | registry`.

use crate::{Home, fixture};

#[test]
fn upload_registers_content_addressed_files() {
    let home = Home::new();
    let out = home.ok(&[
        "model",
        "upload",
        "--name",
        "iris",
        "--project",
        "demo",
        "--tags",
        "a",
        "--path",
        fixture("xgb_multi_iris.json").to_str().unwrap(),
        "--publish",
    ]);
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let id = lines[0]
        .strip_prefix("Model created and registered, new Model ID=")
        .expect(&out);
    assert_eq!(lines[1], format!("Published Model ID={id}"));

    let info = home.json(&["model", "info", id]);
    assert_eq!(info["name"], "iris");
    assert_eq!(info["project"], "demo");
    assert_eq!(info["framework"], "xgboost", "detected from the content");
    assert_eq!(info["published"], true);
    let bytes = std::fs::read(fixture("xgb_multi_iris.json")).unwrap();
    assert_eq!(info["size"], bytes.len());
    let sha = info["sha256"].as_str().unwrap();
    assert_eq!(sha.len(), 64);
    let uri = info["uri"].as_str().unwrap();
    assert!(
        uri.starts_with("file://")
            && uri.ends_with(&format!("/artifacts/{sha}/xgb_multi_iris.json")),
        "{uri}"
    );
    let stored = url::Url::parse(uri).unwrap().to_file_path().unwrap();
    assert_eq!(std::fs::read(stored).unwrap(), bytes);

    // Human output of info and the registry listing.
    let text = home.ok(&["model", "info", id]);
    assert!(text.contains("sha256") && text.contains(sha));
    let listing = home.ok(&["model", "registry"]);
    assert!(listing.lines().nth(1).unwrap().starts_with(id));
}

#[test]
fn upload_detects_frameworks_and_checks_flags() {
    let home = Home::new();
    for (file, framework) in [
        ("lgbm_multi_iris.txt", "lightgbm"),
        ("xgb_multi_iris.ubj", "xgboost"),
        ("sklearn_logreg_iris.pkl", "scikitlearn"),
        ("clearml_sklearn_logreg.pkl", "scikitlearn"),
        ("sklearn_logreg_iris.onnx", "onnx"),
    ] {
        let id = home.upload(file, file, &[]);
        assert_eq!(
            home.json(&["model", "info", &id])["framework"],
            framework,
            "{file}"
        );
    }
    let id = home.upload(
        "given",
        "lgbm_multi_iris.txt",
        &["--framework", "scikit-learn"],
    );
    assert_eq!(
        home.json(&["model", "info", &id])["framework"],
        "scikitlearn"
    );

    let stderr = home.fail(&["model", "upload", "--name", "x"]);
    assert!(stderr.contains("Either --path or --url must be specified"));
    let stderr = home.fail(&[
        "model",
        "upload",
        "--name",
        "x",
        "--path",
        "a",
        "--url",
        "file:///b",
    ]);
    assert!(stderr.contains("Either --path or --url but not both"));
    let stderr = home.fail(&["model", "upload", "--name", "x", "--path", "/no/such/file"]);
    assert!(
        stderr.contains("--path='/no/such/file' could not be found"),
        "{stderr}"
    );
    let path = fixture("lgbm_multi_iris.txt");
    let stderr = home.fail(&[
        "model",
        "upload",
        "--name",
        "x",
        "--path",
        path.to_str().unwrap(),
        "--framework",
        "nope",
    ]);
    assert!(stderr.contains("unknown framework 'nope'"));
    let stderr = home.fail(&["model", "upload", "--name", "x", "--url", "ftp://host/m"]);
    assert!(
        stderr.contains("unsupported storage scheme 'ftp'"),
        "{stderr}"
    );
    let stderr = home.fail(&[
        "model",
        "upload",
        "--name",
        "x",
        "--url",
        "file:///no/such/model.bin",
    ]);
    assert!(stderr.contains("not found"), "{stderr}");
    assert_eq!(
        home.json(&["model", "registry"]).as_array().unwrap().len(),
        6,
        "failures register nothing"
    );
}

#[test]
fn upload_to_a_destination_and_register_urls() {
    let home = Home::new();
    let dest = home.path().join("bucket");
    std::fs::create_dir_all(&dest).unwrap();
    let dest_uri = url::Url::from_directory_path(&dest).unwrap().to_string();
    let path = fixture("lgbm_reg_diabetes.txt");
    let model = home.json(&[
        "model",
        "upload",
        "--name",
        "reg",
        "--path",
        path.to_str().unwrap(),
        "--destination",
        &dest_uri,
    ]);
    let sha = model["sha256"].as_str().unwrap();
    let stored = dest.join(sha).join("lgbm_reg_diabetes.txt");
    assert_eq!(
        std::fs::read(&stored).unwrap(),
        std::fs::read(&path).unwrap()
    );
    assert_eq!(
        model["uri"],
        format!("{dest_uri}{sha}/lgbm_reg_diabetes.txt")
    );

    let url = url::Url::from_file_path(&stored).unwrap().to_string();
    let registered = home.json(&["model", "upload", "--name", "by-url", "--url", &url]);
    assert_eq!(registered["uri"], url.as_str());
    assert_eq!(
        registered["size"],
        std::fs::metadata(&stored).unwrap().len()
    );
    // Remote URLs are registered as given (no network access at registration).
    let remote = home.json(&[
        "model",
        "upload",
        "--name",
        "s3",
        "--url",
        "s3://bucket/models/m.json",
    ]);
    assert_eq!(remote["uri"], "s3://bucket/models/m.json");
    assert_eq!(remote["size"], serde_json::Value::Null);
}

#[test]
fn upload_packs_a_folder() {
    let home = Home::new();
    home.write("model_dir/saved_model.pb", "graph");
    home.write("model_dir/variables/v.data", "weights");
    let dir = home.path().join("model_dir");
    let model = home.json(&[
        "model",
        "upload",
        "--name",
        "folder",
        "--path",
        dir.to_str().unwrap(),
    ]);
    assert!(
        model["uri"]
            .as_str()
            .unwrap()
            .ends_with("/model_dir.tar.gz")
    );
    // The same content gives the same hash.
    let again = home.json(&[
        "model",
        "upload",
        "--name",
        "folder2",
        "--path",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(model["sha256"], again["sha256"]);
}

#[test]
fn publish_and_tag_models() {
    let home = Home::new();
    let id = home.upload("m", "lgbm_multi_iris.txt", &["--tags", "old"]);
    assert_eq!(home.json(&["model", "info", &id])["published"], false);
    assert_eq!(
        home.ok(&["model", "publish", &id]).trim(),
        format!("Published Model ID={id}")
    );
    assert_eq!(home.json(&["model", "info", &id])["published"], true);

    let tagged = home.json(&[
        "model", "tag", &id, "--add", "prod", "canary", "--remove", "old",
    ]);
    assert_eq!(tagged["tags"], serde_json::json!(["prod", "canary"]));
    let out = home.ok(&["model", "tag", &id, "--remove", "canary"]);
    assert_eq!(out.trim(), format!("Model {id} tags: prod"));
    home.fail(&["model", "tag", &id]);

    let stderr = home.fail(&["model", "publish", "ffffffffffffffffffffffffffffffff"]);
    assert!(stderr.contains("not found in the registry"));
    home.fail(&["model", "info", "nope"]);

    let published = home.json(&["model", "registry", "--published", "--tags", "prod"]);
    assert_eq!(published.as_array().unwrap().len(), 1);
    assert!(
        home.json(&["model", "registry", "--name", "other"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}
