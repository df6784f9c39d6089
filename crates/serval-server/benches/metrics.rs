//! What metrics cost per request, without the network: one request through the whole router
//! (`oneshot`, as the in-process tests) on a native XGBoost endpoint with metrics off, on, and
//! on with a clearml rule sampling every request (two scalar variables); and the recording calls
//! alone. The load test `bench/metrics_overhead.py` measures the same over HTTP.
//!
//! `cargo bench -p serval-server --bench metrics`
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use serval_artifacts::ArtifactStore;
use serval_onnx::OnnxOptions;
use serval_server::metrics::{Metrics, Protocol};
use serval_server::{AppState, Instance, ServeConfig};
use serval_store::{
    Change, Endpoint, EngineKind, IoSpec, MetricRule, MetricVariable, NewModel, NewService,
    ServiceConfig, SqliteStore, Store,
};
use tower::ServiceExt;

const BODY: &str = r#"{"x0": 6.0, "x1": 3.4, "x2": 4.5, "x3": 1.6}"#;

fn scalar(buckets: &[f64]) -> MetricVariable {
    MetricVariable::Scalar {
        buckets: buckets.to_vec(),
    }
}

fn rule() -> MetricRule {
    MetricRule {
        endpoint: "iris_ruled".into(),
        log_frequency: Some(1.0),
        variables: BTreeMap::from([
            ("x0".to_string(), scalar(&[0.0, 2.0, 4.0, 6.0, 8.0])),
            ("x2".to_string(), scalar(&[0.0, 2.0, 4.0, 6.0, 8.0])),
        ]),
    }
}

/// A store with endpoints `iris` and `iris_ruled` (the same model) and the rule on the second.
fn store(dir: &Path) -> (Arc<dyn Store>, String) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("serval.db")).unwrap());
    let service = store
        .create_service(
            &NewService {
                name: "bench".into(),
                project: "p".into(),
                tags: vec![],
            },
            &Change::local("test", "test"),
        )
        .unwrap()
        .id;
    let model_file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/public/xgb_multi_iris.json");
    let stored = ArtifactStore::new(dir.join("artifacts"))
        .put_file(&model_file, "iris.json", &|_| {})
        .unwrap();
    let model = store
        .add_model(
            &NewModel {
                name: "iris".into(),
                uri: stored.uri,
                size: Some(stored.size),
                sha256: Some(stored.sha256),
                ..NewModel::default()
            },
            &Change::local("test", "test"),
        )
        .unwrap()
        .id;
    store
        .update_service(&service, &Change::local("test", "test"), &mut |config| {
            for name in ["iris", "iris_ruled"] {
                let endpoint = Endpoint {
                    name: name.into(),
                    version: None,
                    engine: EngineKind::Xgboost,
                    model_id: Some(model.clone()),
                    preprocess: None,
                    io: IoSpec::default(),
                    aux_config: None,
                    created_ms: 0,
                };
                config.endpoints.insert(endpoint.url(), endpoint);
            }
            config.metrics.insert("iris_ruled".into(), rule());
            Ok(())
        })
        .unwrap();
    (store, service)
}

fn state(dir: &Path, store: Arc<dyn Store>, service: &str, metrics: bool) -> AppState {
    let config = ServeConfig {
        service_id: service.into(),
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
        poll_interval: Duration::from_millis(250),
        notify: true,
        shutdown_timeout: Duration::from_secs(5),
        cache_dir: dir.join("cache"),
        cache_size: None,
        onnx: OnnxOptions::default(),
        python: None,
        python_workers: 1,
        runner_threads: 1,
        metrics,
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
    };
    let instance = Instance {
        id: "bench".into(),
        host: "127.0.0.1".into(),
        port: 0,
        grpc_port: None,
        started_ms: 0,
    };
    AppState::new(config, store, instance)
}

fn request_through_the_router(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (store, service) = store(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("request");
    for (name, metrics, url) in [
        ("metrics off", false, "/serve/iris"),
        ("metrics on", true, "/serve/iris"),
        ("metrics on + clearml rule", true, "/serve/iris_ruled"),
    ] {
        let state = state(dir.path(), store.clone(), &service, metrics);
        runtime.block_on(state.sync()).unwrap();
        let router = serval_server::router(state);
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let request = Request::post(url)
                        .header("content-type", "application/json")
                        .body(Body::from(BODY))
                        .unwrap();
                    let response = router.clone().oneshot(request).await.unwrap();
                    assert!(response.status().is_success());
                    axum::body::to_bytes(response.into_body(), usize::MAX)
                        .await
                        .unwrap()
                })
            });
        });
    }
    group.finish();
}

fn recording_alone(c: &mut Criterion) {
    let metrics = Arc::new(Metrics::default());
    let endpoint = metrics.endpoint("iris");
    let mut group = c.benchmark_group("record");
    group.bench_function("built-in (outcome, duration, inference stage)", |b| {
        b.iter(|| {
            endpoint.stage(2, Duration::from_micros(20));
            endpoint.finished(Duration::from_micros(40), Protocol::Clearml, Ok(()));
        });
    });
    let mut config = ServiceConfig::default();
    config.metrics.insert("iris_ruled".into(), rule());
    let monitors = metrics.monitors(&config, &["iris_ruled"]);
    let monitor = &monitors["iris_ruled"];
    let body: serde_json::Value = serde_json::from_str(BODY).unwrap();
    let reply = json!({"y": [1], "probabilities": [[0.003, 0.988, 0.009]]});
    group.bench_function("clearml rule (sample, _latency, _count, 2 scalars)", |b| {
        b.iter(|| {
            if monitor.sample(fastrand::f64()) {
                let values = monitor.body_values(&body);
                monitor.record(0.000_04, &values, &reply, None);
            }
        });
    });
    group.finish();
}

/// Drift statistics of one request: a row of 30 features counted in ten bins each (the issue's
/// target: at most 2 µs), and a batch of 100 rows.
fn drift_statistics(c: &mut Criterion) {
    use serval_engine::{NamedTensor, Tensor, TensorData};
    use serval_server::pipeline::Observer;
    use serval_server::pipeline::drift::LiveDrift;
    use serval_store::{DriftReference, FeatureReference, ReferenceBins};
    let names: Vec<String> = (0..30).map(|i| format!("f{i}")).collect();
    let reference = DriftReference {
        endpoint: "wide".into(),
        window_seconds: 600,
        features: names
            .iter()
            .map(|name| FeatureReference {
                name: name.clone(),
                bins: ReferenceBins::Numeric {
                    edges: (1..10).map(|e| f64::from(e) / 10.0).collect(),
                    proportions: vec![0.1; 10],
                },
            })
            .collect(),
        rows: 1_000,
        source: "bench".into(),
        created_ms: 1,
    };
    let drift = LiveDrift::new("wide", &reference, &names);
    let batch = |rows: usize| {
        let data = (0..rows * 30).map(|_| fastrand::f32()).collect();
        vec![NamedTensor {
            name: "input".into(),
            tensor: Tensor::new(vec![rows, 30], TensorData::F32(data)).unwrap(),
        }]
    };
    let (one, hundred) = (batch(1), batch(100));
    let mut group = c.benchmark_group("drift");
    group.bench_function("1 row x 30 features", |b| b.iter(|| drift.observe(&one)));
    group.bench_function("100 rows x 30 features", |b| {
        b.iter(|| drift.observe(&hundred))
    });
    group.finish();
}

criterion_group!(
    benches,
    request_through_the_router,
    recording_alone,
    drift_statistics
);
criterion_main!(benches);
