//! The Open Inference Protocol over gRPC (tonic), on its own port, next to the standard
//! `grpc.health.v1` service for Kubernetes probes. Same pipeline, routing and metrics as REST;
//! the client's `grpc-timeout` is honoured (capped by the request timeout), messages are limited
//! to the body limit, gzip requests are accepted.

mod infer;

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use serval_store::ApiKey;

use crate::models;
use crate::pipeline::Error;
use crate::state::AppState;
pub use crate::wire::proto;

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::*;

/// The gRPC status of each error, in one place.
pub fn status(error: Error) -> Status {
    use Error as E;
    if error.is_server_error() {
        tracing::warn!(kind = error.kind(), "{error}");
    }
    let error = error.for_client();
    let message = error.to_string();
    match error {
        E::NotFound { .. } => Status::not_found(message),
        E::Unauthenticated(_) => Status::unauthenticated(message),
        E::Forbidden(_) => Status::permission_denied(message),
        E::BadRequest(_)
        | E::InvalidJson { .. }
        | E::InvalidInput(_)
        | E::UserCode { invalid: true, .. } => Status::invalid_argument(message),
        E::Cancelled => Status::cancelled(message),
        E::TooLarge(_) | E::TooManyValues(_) | E::OverBudget { .. } | E::Overloaded(_) => {
            Status::resource_exhausted(message)
        }
        E::Timeout(_) => Status::deadline_exceeded(message),
        E::Unavailable { .. } | E::Upstream(_) => Status::unavailable(message),
        E::UserCode { .. } | E::Worker(_) | E::Internal(_) => Status::internal(message),
    }
}

/// The `grpc-timeout` header's duration: up to 8 digits and a unit (H, M, S, m, u, n).
/// How long a call may take: the client's `grpc-timeout`, at most `limit` (`--request-timeout`,
/// also when the client sends none).
pub fn call_timeout(headers: &axum::http::HeaderMap, limit: Duration) -> Duration {
    headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(grpc_timeout)
        .map_or(limit, |t| t.min(limit))
}

/// An error in the trailers-only form: HTTP 200 with `grpc-status` and `grpc-message` headers.
pub fn trailers_only(status: Status) -> axum::response::Response {
    let mut response = status.into_http::<axum::body::Body>();
    *response.status_mut() = axum::http::StatusCode::OK;
    response
}

/// Every method tonic serves (all but `ModelInfer`) runs within its call's deadline, receiving
/// the message included: a stream that never sends its message is answered DEADLINE_EXCEEDED.
async fn within_deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let timeout = call_timeout(request.headers(), limit);
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => trailers_only(status(Error::Timeout(timeout))),
    }
}

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

impl InferenceService {
    /// The key of a non-inference call, checked for `model` if it names one (`None`: keys are
    /// not required).
    fn check_key(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        model: Option<&str>,
    ) -> Result<Option<ApiKey>, Status> {
        let authorization = metadata.get("authorization").and_then(|v| v.to_str().ok());
        let key = self
            .state
            .door
            .authenticate(authorization)
            .map_err(status)?;
        if let (Some(key), Some(model)) = (&key, model) {
            crate::auth::authorize(key, model).map_err(status)?;
        }
        Ok(key)
    }
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
        self.check_key(request.metadata(), Some(&request.get_ref().name))?;
        let request = request.into_inner();
        let table = self.state.door.table();
        let ready =
            models::is_ready(&table, &request.name, version(&request.version)).map_err(status)?;
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
        self.check_key(request.metadata(), Some(&request.get_ref().name))?;
        let request = request.into_inner();
        let meta = models::metadata(
            &self.state.door.table(),
            &request.name,
            version(&request.version),
        )
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
        _: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        // Served by `infer::model_infer` on the same path, before tonic sees the message.
        Err(Status::internal(
            "ModelInfer is served by the front door; this route is not reached",
        ))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let key = self.check_key(request.metadata(), None)?;
        let ready_only = request.into_inner().ready;
        let models = models::index(&self.state.door.table(), ready_only, key.as_ref())
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
    axum::serve(crate::conn::no_delay(listener), router)
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
    let tonic = tonic::service::Routes::new(health_service)
        .add_service(service(state.clone()))
        .prepare()
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(
            state.config.request_timeout,
            within_deadline,
        ));
    let router = axum::Router::new()
        .route(infer::PATH, axum::routing::post(infer::model_infer))
        .with_state(state)
        .merge(tonic);
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
