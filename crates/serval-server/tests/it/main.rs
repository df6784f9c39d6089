//! The server in-process: the router built on a real store, driven with `oneshot`.
#![allow(clippy::unwrap_used)]

mod contract;
mod grpc;
mod layers;
mod refusals;
mod reload;
mod v2;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use serval_artifacts::ArtifactStore;
use serval_onnx::OnnxOptions;
use serval_server::{AppState, Instance, ServeConfig};
use serval_store::{
    Change, Endpoint, EngineKind, IoSpec, NewModel, NewService, SqliteStore, Store,
};
use tower::ServiceExt;

pub fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/public")
        .join(name)
}

/// A temporary home with a store, a service and helpers to configure it.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub service: String,
    pub artifacts: ArtifactStore,
}

impl Default for Setup {
    fn default() -> Self {
        Self::new()
    }
}

impl Setup {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("serval.db")).unwrap());
        let service = store
            .create_service(
                &NewService {
                    name: "test".into(),
                    project: "p".into(),
                    tags: vec![],
                },
                &Change::local("test", "test"),
            )
            .unwrap()
            .id;
        let artifacts = ArtifactStore::new(dir.path().join("artifacts"));
        Setup {
            dir,
            store,
            service,
            artifacts,
        }
    }

    /// Registers a model file (copied into the artifact store like `model upload`).
    pub fn model(&self, path: &Path) -> String {
        let name = path.file_name().unwrap().to_str().unwrap();
        let stored = self.artifacts.put_file(path, name, &|_| {}).unwrap();
        self.store
            .add_model(
                &NewModel {
                    name: name.into(),
                    uri: stored.uri,
                    size: Some(stored.size),
                    sha256: Some(stored.sha256),
                    ..NewModel::default()
                },
                &Change::local("test", "test"),
            )
            .unwrap()
            .id
    }

    pub fn endpoint(&self, name: &str, version: Option<&str>, engine: EngineKind, model_id: &str) {
        let endpoint = Endpoint {
            name: name.into(),
            version: version.map(Into::into),
            engine,
            model_id: Some(model_id.into()),
            preprocess: None,
            io: IoSpec::default(),
            aux_config: None,
            created_ms: 0,
        };
        self.store
            .update_service(&self.service, &Change::local("test", "test"), &mut |c| {
                c.endpoints.insert(endpoint.url(), endpoint.clone());
                Ok(())
            })
            .unwrap();
    }

    pub fn edit(&self, edit: impl Fn(&mut serval_store::ServiceConfig)) {
        self.store
            .update_service(&self.service, &Change::local("test", "test"), &mut |c| {
                edit(c);
                Ok(())
            })
            .unwrap();
    }

    pub fn config(&self) -> ServeConfig {
        ServeConfig {
            service_id: self.service.clone(),
            host: "127.0.0.1".into(),
            port: 0,
            grpc_port: None,
            body_limit: 1 << 20,
            max_values: 16_000_000,
            max_request_memory: 256 << 20,
            max_memory_in_flight: 512 << 20,
            max_in_flight: 4096,
            max_in_flight_per_endpoint: 1024,
            request_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(50),
            notify: true,
            shutdown_timeout: Duration::from_secs(5),
            cache_dir: self.dir.path().join("cache"),
            cache_size: None,
            onnx: OnnxOptions::default(),
            python: std::env::var("SERVAL_PYTHON").ok(),
            python_workers: 1,
            runner_threads: 2,
            metrics: true,
            metrics_port: None,
            tls: None,
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            drain_delay: Duration::from_millis(100),
            require_auth: false,
            auth_metrics: false,
            ui: true,
            admin_api: false,
            artifacts: None,
            artifacts_dir: std::env::temp_dir().join("serval-unused-artifacts"),
        }
    }

    pub fn state(&self, config: ServeConfig) -> AppState {
        let instance = Instance {
            id: "test".into(),
            host: "127.0.0.1".into(),
            port: 0,
            grpc_port: None,
            started_ms: 0,
        };
        AppState::new(config, self.store.clone(), instance)
    }

    /// A synced state with the XGBoost and LightGBM clearml example models.
    pub async fn serving(&self) -> AppState {
        let xgb = self.model(&fixture("clearml_xgb.json"));
        let lgbm = self.model(&fixture("clearml_lgbm.txt"));
        self.endpoint("test_model_xgb", None, EngineKind::Xgboost, &xgb);
        self.endpoint("test_model_lgbm", Some("1"), EngineKind::Lightgbm, &lgbm);
        self.endpoint("test_model_lgbm", Some("2"), EngineKind::Lightgbm, &lgbm);
        let state = self.state(self.config());
        state.sync().await.unwrap();
        state
    }
}

/// Sends one request to the router; returns status and the raw body.
pub async fn call_raw(state: &AppState, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = serval_server::router(state.clone())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

/// Sends one request to the router; returns status and parsed JSON body.
pub async fn call(state: &AppState, request: Request<Body>) -> (StatusCode, Value) {
    let (status, bytes) = call_raw(state, request).await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

pub fn post(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub const IRIS_BODY: &str = r#"{"x0": 1, "x1": 2, "x2": 3, "x3": 4}"#;
