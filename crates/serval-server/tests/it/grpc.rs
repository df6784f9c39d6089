//! The Open Inference Protocol over gRPC on a real socket (port 0) with a tonic client: health,
//! metadata, inference in typed and raw form (equal to `/serve`'s answers), errors as gRPC codes,
//! deadlines, and reload under load with zero failed calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use serval_server::AppState;
use serval_server::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use serval_server::grpc::proto::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use serval_server::grpc::proto::*;
use serval_store::EngineKind;
use tonic::Code;
use tonic::transport::Channel;

use crate::{IRIS_BODY, Setup, call, fixture, post};

const IRIS_ROW: [f32; 4] = [1.0, 2.0, 3.0, 4.0];

/// A gRPC server for `state` on a free port, stopped when the returned sender is dropped.
pub(crate) async fn start(
    state: &AppState,
) -> (
    GrpcInferenceServiceClient<Channel>,
    tokio::sync::oneshot::Sender<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = state.clone();
    tokio::spawn(async move {
        serval_server::grpc::serve(state, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let client = GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    (client, stop)
}

pub(crate) fn fp32_input(name: &str, shape: Vec<i64>, data: Vec<f32>) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: "FP32".into(),
        shape,
        parameters: Default::default(),
        contents: Some(InferTensorContents {
            fp32_contents: data,
            ..Default::default()
        }),
    }
}

pub(crate) fn request(
    model: &str,
    version: &str,
    inputs: Vec<InferInputTensor>,
) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        model_version: version.into(),
        id: "call-1".into(),
        inputs,
        ..Default::default()
    }
}

/// One iris row for `test_model_xgb`, typed contents.
fn iris_xgb() -> ModelInferRequest {
    request(
        "test_model_xgb",
        "",
        vec![fp32_input("input", vec![1, 4], IRIS_ROW.to_vec())],
    )
}

fn raw_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn raw_f64(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn serve_floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| match r {
            Value::Array(items) => items.iter().map(|x| x.as_f64().unwrap()).collect(),
            x => vec![x.as_f64().unwrap()],
        })
        .collect()
}

#[tokio::test]
async fn health_metadata_and_inference() {
    let setup = Setup::new();
    let state = setup.serving().await;
    let (mut client, _stop) = start(&state).await;
    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let meta = client
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "serval");
    assert!(meta.extensions.contains(&"binary_tensor_data".to_string()));
    let ready = client
        .model_ready(ModelReadyRequest {
            name: "test_model_lgbm".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ready.ready);
    let meta = client
        .model_metadata(ModelMetadataRequest {
            name: "test_model_lgbm".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.versions, vec!["1", "2"]);
    assert_eq!(meta.inputs[0].name, "input");
    assert_eq!(meta.inputs[0].datatype, "FP64");
    assert_eq!(meta.inputs[0].shape, vec![-1, 4]);

    // XGBoost: typed contents in, raw contents out, equal to /serve.
    let (_, serve) = call(&state, post("/serve/test_model_xgb", IRIS_BODY)).await;
    let reply = client.model_infer(iris_xgb()).await.unwrap().into_inner();
    assert_eq!(reply.id, "call-1");
    assert_eq!(reply.model_name, "test_model_xgb");
    assert_eq!(reply.outputs[0].name, "predictions");
    assert_eq!(reply.outputs[0].datatype, "FP32");
    assert_eq!(reply.outputs[0].shape, vec![1]);
    let got: Vec<f64> = raw_f32(&reply.raw_output_contents[0])
        .into_iter()
        .map(f64::from)
        .collect();
    assert_eq!(got, serve_floats(&serve["y"]));

    // LightGBM: raw FP64 contents in, one requested output.
    let (_, serve) = call(&state, post("/serve/test_model_lgbm/2", IRIS_BODY)).await;
    let raw: Vec<u8> = IRIS_ROW
        .iter()
        .flat_map(|x| f64::from(*x).to_le_bytes())
        .collect();
    let mut raw_request = request(
        "test_model_lgbm",
        "2",
        vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP64".into(),
            shape: vec![1, 4],
            parameters: Default::default(),
            contents: None,
        }],
    );
    raw_request.raw_input_contents = vec![Bytes::from(raw)];
    raw_request.outputs = vec![InferRequestedOutputTensor {
        name: "probabilities".into(),
        parameters: Default::default(),
    }];
    let reply = client.model_infer(raw_request).await.unwrap().into_inner();
    assert_eq!(reply.model_version, "2");
    assert_eq!(reply.outputs.len(), 1);
    assert_eq!(reply.outputs[0].shape, vec![1, 3]);
    let got = raw_f64(&reply.raw_output_contents[0]);
    let want = serve_floats(&serve["probabilities"]);
    assert!(
        got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-9),
        "{got:?} vs {want:?}"
    );
}

#[tokio::test]
async fn errors_are_grpc_codes() {
    let setup = Setup::new();
    let state = setup.serving().await;
    let (mut client, _stop) = start(&state).await;
    let cases = vec![
        (
            request(
                "nope",
                "",
                vec![fp32_input("input", vec![1, 4], IRIS_ROW.to_vec())],
            ),
            Code::NotFound,
            "model 'nope' not found",
        ),
        (
            request("test_model_lgbm", "9", vec![]),
            Code::NotFound,
            "version '9'",
        ),
        (
            request(
                "test_model_xgb",
                "",
                vec![fp32_input("input", vec![1, 3], vec![1.0, 2.0, 3.0])],
            ),
            Code::InvalidArgument,
            "shape [1, 3]",
        ),
        (
            request(
                "test_model_xgb",
                "",
                vec![fp32_input("input", vec![2, 4], IRIS_ROW.to_vec())],
            ),
            Code::InvalidArgument,
            "holds 8 elements",
        ),
        (
            request(
                "test_model_xgb",
                "",
                vec![InferInputTensor {
                    name: "input".into(),
                    datatype: "INT64".into(),
                    shape: vec![1, 4],
                    parameters: Default::default(),
                    contents: Some(InferTensorContents {
                        int64_contents: vec![1, 2, 3, 4],
                        ..Default::default()
                    }),
                }],
            ),
            Code::InvalidArgument,
            "datatype INT64",
        ),
    ];
    for (req, code, text) in cases {
        let status = client.model_infer(req).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().contains(text),
            "{} should contain {text}",
            status.message()
        );
    }
    let status = client
        .model_metadata(ModelMetadataRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // The server is still healthy.
    let ok = client.model_infer(iris_xgb()).await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn gzip_compressed_requests_are_accepted() {
    let setup = Setup::new();
    let state = setup.serving().await;
    let (client, _stop) = start(&state).await;
    let mut client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let reply = client.model_infer(iris_xgb()).await.unwrap().into_inner();
    assert_eq!(reply.outputs[0].name, "predictions");
}

#[tokio::test]
async fn oversize_messages_are_refused() {
    let setup = Setup::new();
    let mut config = setup.config();
    config.body_limit = 1024;
    let xgb = setup.model(&fixture("clearml_xgb.json"));
    setup.endpoint("test_model_xgb", None, EngineKind::Xgboost, &xgb);
    let state = setup.state(config);
    state.sync().await.unwrap();
    let (mut client, _stop) = start(&state).await;
    let big = fp32_input("input", vec![100, 4], vec![0.5; 400]);
    let status = client
        .model_infer(request("test_model_xgb", "", vec![big]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("limit of 1024 bytes"),
        "{status:?}"
    );
    let small = fp32_input("input", vec![1, 4], IRIS_ROW.to_vec());
    assert!(
        client
            .model_infer(request("test_model_xgb", "", vec![small]))
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_call() {
    let setup = Setup::new();
    let state = setup.serving().await;
    let (client, _stop) = start(&state).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let loops: Vec<_> = (0..3)
        .map(|_| {
            let mut client = client.clone();
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let reply = client.model_infer(iris_xgb()).await;
                    match reply {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("failed call: {e:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    // 30 changes: the stable endpoint's model is replaced (a new registry entry each time, so it
    // reloads), other endpoints come and go.
    let file = fixture("clearml_xgb.json");
    for i in 0..30 {
        match i % 3 {
            0 => {
                let model = setup.model(&file);
                setup.endpoint("test_model_xgb", None, EngineKind::Xgboost, &model);
            }
            1 => {
                let model = setup.model(&file);
                setup.endpoint(&format!("extra{i}"), None, EngineKind::Xgboost, &model);
            }
            _ => setup.edit(|c| {
                c.endpoints.retain(|url, _| !url.starts_with("extra"));
            }),
        }
        state.sync().await.unwrap();
    }
    // Let the loops run on the final table too.
    let before = ok.load(Ordering::Relaxed);
    while ok.load(Ordering::Relaxed) < before + 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(
        ok.load(Ordering::Relaxed) > 30,
        "{} calls",
        ok.load(Ordering::Relaxed)
    );
    assert!(state.door.table().revision >= 30);
}

#[tokio::test]
async fn health_service_follows_readiness() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let setup = Setup::new();
    let state = setup.state(setup.config());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_state = state.clone();
    tokio::spawn(serval_server::grpc::serve(
        server_state,
        listener,
        std::future::pending(),
    ));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let check = |service: &str| HealthCheckRequest {
        service: service.to_string(),
    };
    // Not ready before the first load pass; both the server and the inference service.
    for service in ["", "inference.GRPCInferenceService"] {
        let status = health
            .check(check(service))
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::NotServing as i32, "{service:?}");
    }
    state.sync().await.unwrap();
    for service in ["", "inference.GRPCInferenceService"] {
        let mut status = 0;
        for _ in 0..500 {
            status = health
                .check(check(service))
                .await
                .unwrap()
                .into_inner()
                .status;
            if status == ServingStatus::Serving as i32 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
}

/// `require_auth`: ModelInfer and ModelMetadata need `authorization: Bearer KEY` metadata; a
/// scoped key reaches only its endpoints; health stays open.
#[tokio::test]
async fn api_keys_over_grpc() {
    let setup = Setup::new();
    let key = "sk-serval-test-key";
    setup.edit(|c| {
        c.api_keys.insert(
            "ci".into(),
            serval_store::ApiKey {
                name: "ci".into(),
                sha256: serval_artifacts::hash_bytes(key.as_bytes()),
                endpoints: Some("test_model_lgbm*".into()),
                created_ms: 0,
                expires_ms: None,
                role: serval_store::Role::Infer,
            },
        );
    });
    let xgb = setup.model(&fixture("clearml_xgb.json"));
    let lgbm = setup.model(&fixture("clearml_lgbm.txt"));
    setup.endpoint("test_model_xgb", None, EngineKind::Xgboost, &xgb);
    setup.endpoint("test_model_lgbm", None, EngineKind::Lightgbm, &lgbm);
    let mut config = setup.config();
    config.require_auth = true;
    let state = setup.state(config);
    state.sync().await.unwrap();
    let (mut client, _stop) = start(&state).await;

    let with_key = |mut request: tonic::Request<ModelInferRequest>, key: &str| {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        request
    };
    let lgbm_request = || {
        request(
            "test_model_lgbm",
            "",
            vec![fp32_input("input", vec![1, 4], IRIS_ROW.to_vec())],
        )
    };
    let missing = client.model_infer(lgbm_request()).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    let wrong = client
        .model_infer(with_key(
            tonic::Request::new(lgbm_request()),
            "sk-serval-wrong",
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    client
        .model_infer(with_key(tonic::Request::new(lgbm_request()), key))
        .await
        .unwrap();
    let scoped = client
        .model_infer(with_key(tonic::Request::new(iris_xgb()), key))
        .await
        .unwrap_err();
    assert_eq!(scoped.code(), Code::PermissionDenied, "{scoped:?}");
    let metadata = client
        .model_metadata(ModelMetadataRequest {
            name: "test_model_lgbm".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(metadata.code(), Code::Unauthenticated);
    assert!(
        client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
}
