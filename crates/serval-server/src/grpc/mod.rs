//! The Open Inference Protocol over gRPC (tonic), on its own port, next to the standard
//! `grpc.health.v1` service for Kubernetes probes. Same pipeline, routing and metrics as REST;
//! the client's `grpc-timeout` is honoured (capped by the request timeout), messages are limited
//! to the body limit, gzip requests are accepted.

pub(crate) mod convert;

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::models;
use crate::pipeline::{self, Context, Input, Output, Protocol};
use crate::{AppState, auth};

/// The generated messages, server and client (`proto/inference.proto`).
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::*;

/// The gRPC status of each pipeline error, in one place.
pub fn status(error: pipeline::Error) -> Status {
    use pipeline::Error as E;
    if error.is_server_error() {
        tracing::warn!(kind = error.kind(), "{error}");
    }
    let message = error.to_string();
    match error {
        E::NotFound { .. } => Status::not_found(message),
        E::BadRequest(_) | E::InvalidInput(_) | E::UserCode { invalid: true, .. } => {
            Status::invalid_argument(message)
        }
        E::Cancelled => Status::cancelled(message),
        E::TooLarge(_) | E::TooManyValues(_) | E::Overloaded(_) => {
            Status::resource_exhausted(message)
        }
        E::Timeout(_) => Status::deadline_exceeded(message),
        E::Unavailable { .. } | E::Upstream(_) => Status::unavailable(message),
        E::UserCode { .. } | E::Worker(_) | E::Internal(_) => Status::internal(message),
    }
}

/// The `grpc-timeout` header's duration: up to 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

pub struct InferenceService {
    state: AppState,
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.state.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        auth::check_grpc(
            &self.state,
            request.metadata(),
            Some(&request.get_ref().name),
        )?;
        let request = request.into_inner();
        let ready = models::is_ready(&self.state, &request.name, version(&request.version))
            .map_err(status)?;
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "serval".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: models::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        auth::check_grpc(
            &self.state,
            request.metadata(),
            Some(&request.get_ref().name),
        )?;
        let request = request.into_inner();
        let meta = models::metadata(&self.state, &request.name, version(&request.version))
            .map_err(status)?;
        let tensors = |list: Vec<models::TensorMetadata>| {
            list.into_iter()
                .map(|t| model_metadata_response::TensorMetadata {
                    name: t.name,
                    datatype: t.datatype.to_string(),
                    shape: t.shape,
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: meta.name,
            versions: meta.versions,
            platform: meta.platform,
            inputs: tensors(meta.inputs),
            outputs: tensors(meta.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let state = &self.state;
        auth::check_grpc(
            state,
            request.metadata(),
            Some(&request.get_ref().model_name),
        )?;
        let _permit = state.admission.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(crate::http::overloaded(state.config.max_in_flight))
        })?;
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(grpc_timeout)
            .map_or(state.config.request_timeout, |t| {
                t.min(state.config.request_timeout)
            });
        let ctx = Context::new(Protocol::V2Grpc, timeout);
        let _in_flight = state.metrics.as_ref().map(|m| m.in_flight());
        let request = request.into_inner();
        let model = request.model_name.clone();
        let endpoint = match state.table.load().resolve(
            &model,
            version(&request.model_version),
            fastrand::f64(),
        ) {
            Ok(endpoint) => endpoint,
            Err(error) => {
                if let Some(metrics) = &state.metrics {
                    metrics.unrouted(Protocol::V2Grpc, error.kind());
                }
                return Err(status(error));
            }
        };
        let id = request.id.clone();
        let max_values = self.state.config.max_values;
        let decoded = convert::request(request).and_then(|decoded| {
            let total: usize = decoded.inputs.iter().map(|t| t.data.len()).sum();
            if total > max_values {
                return Err(pipeline::Error::TooManyValues(max_values));
            }
            Ok(decoded)
        });
        let decoded = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                if let Some(metrics) = &endpoint.metrics {
                    metrics.finished(Duration::ZERO, Protocol::V2Grpc, Err(error.failure()));
                }
                return Err(status(error));
            }
        };
        let input = Input::Tensors {
            inputs: decoded.inputs,
            outputs: decoded.outputs,
            parameters: decoded.parameters,
        };
        let outputs = match pipeline::run(&endpoint, input, ctx).await.map_err(status)? {
            Output::Tensors(outputs) => outputs,
            Output::Body(_) => return Err(Status::internal("unexpected JSON reply")),
        };
        let (outputs, raw_output_contents) = convert::outputs(outputs);
        Ok(Response::new(ModelInferResponse {
            model_name: model,
            model_version: endpoint.version.clone().unwrap_or_default(),
            id,
            parameters: Default::default(),
            outputs,
            raw_output_contents,
        }))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        auth::check_grpc(&self.state, request.metadata(), None)?;
        let ready_only = request.into_inner().ready;
        let models = models::index(&self.state, ready_only)
            .into_iter()
            .map(|item| repository_index_response::ModelIndex {
                name: item.name,
                version: item.version,
                state: item.state.to_string(),
                reason: item.reason,
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }
}

/// The inference service with serval's limits (message size = body limit, gzip accepted).
pub fn service(state: AppState) -> GrpcInferenceServiceServer<InferenceService> {
    let limit = state.config.body_limit;
    GrpcInferenceServiceServer::new(InferenceService { state })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX)
        .accept_compressed(CompressionEncoding::Gzip)
}

/// Serves gRPC on `listener` until `shutdown` resolves, then lets in-flight calls finish. The
/// `grpc.health.v1` status (overall and of the inference service) is NOT_SERVING until the
/// server is ready, then SERVING.
///
/// The services run on axum's HTTP/2 server rather than tonic's transport: tonic's transport
/// enforces `grpc-timeout` itself and answers CANCELLED, while serval's pipeline owns deadlines
/// and answers DEADLINE_EXCEEDED (and records a timeout).
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (router, report) = app(state).await;
    tokio::spawn(report);
    axum::serve(crate::no_delay(listener), router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The gRPC services (inference and `grpc.health.v1`) as an axum router, and a task that keeps
/// the health service in step with readiness (NOT_SERVING while loading and while draining).
pub async fn app(
    state: AppState,
) -> (
    axum::Router,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    use tonic_health::ServingStatus;
    type Inference = GrpcInferenceServiceServer<InferenceService>;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health.set_not_serving::<Inference>().await;
    let mut ready = state.ready.subscribe();
    let report = async move {
        loop {
            if ready.wait_for(|ready| *ready).await.is_err() {
                return;
            }
            health.set_service_status("", ServingStatus::Serving).await;
            health.set_serving::<Inference>().await;
            if ready.wait_for(|ready| !*ready).await.is_err() {
                return;
            }
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            health.set_not_serving::<Inference>().await;
        }
    };
    let router = tonic::service::Routes::new(health_service)
        .add_service(service(state))
        .prepare()
        .into_axum_router();
    (router, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("100u"), Some(Duration::from_micros(100)));
        assert_eq!(grpc_timeout("S"), None);
        assert_eq!(grpc_timeout("123456789S"), None);
        assert_eq!(grpc_timeout("5x"), None);
        assert_eq!(grpc_timeout(""), None);
    }
}
