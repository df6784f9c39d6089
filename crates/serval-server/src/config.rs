//! What `serval serve` is configured with, built once from flags and environment variables, and
//! who this server instance is.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serval_onnx::OnnxOptions;

/// Everything `serval serve` is configured with (built once from flags and env vars).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub service_id: String,
    pub host: String,
    pub port: u16,
    /// The V2 gRPC port (`Some(0)`: any free port; `None`: no gRPC).
    pub grpc_port: Option<u16>,
    /// Largest accepted request body (after decompression too).
    pub body_limit: usize,
    /// Most values (numbers, strings, …) one request may decode into (413 past it).
    pub max_values: usize,
    /// Most memory one request may make the server build, estimated before it is allocated
    /// (413 past it).
    pub max_request_memory: usize,
    /// Most memory all requests in progress may hold together (429 past it).
    pub max_memory_in_flight: usize,
    /// Inference requests in flight in the whole server; more are answered 429 at once.
    pub max_in_flight: usize,
    /// Inference requests in flight per endpoint; more are answered 429.
    pub max_in_flight_per_endpoint: usize,
    pub request_timeout: Duration,
    /// How often the store revision is checked.
    pub poll_interval: Duration,
    /// Also follow the store's change notifications (PostgreSQL `LISTEN/NOTIFY`) for instant
    /// reloads; polling continues either way.
    pub notify: bool,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// Where remote model files are cached.
    pub cache_dir: PathBuf,
    /// Bound of the download cache in bytes (least recently used files no endpoint uses are
    /// evicted); `None`: unbounded.
    pub cache_size: Option<u64>,
    pub onnx: OnnxOptions,
    /// Interpreter for Python workers when the service names none (`None`: `python3`).
    pub python: Option<String>,
    /// Worker processes per endpoint that needs Python.
    pub python_workers: usize,
    /// Threads of a native model's runner: ONNX Runtime sessions per ONNX model, threads per
    /// batched model.
    pub runner_threads: usize,
    /// Record and expose Prometheus metrics (`/metrics`).
    pub metrics: bool,
    /// Also serve `/metrics` on this port.
    pub metrics_port: Option<u16>,
    /// Open connections per listener; more are closed at accept (`serve --max-connections`).
    pub max_connections: usize,
    /// How long a client may take from connecting to its first request's headers (TLS and
    /// HTTP/2 preface included) and to send any HTTP/1 request's headers (so also the HTTP/1
    /// keep-alive idle time).
    pub header_read_timeout: Duration,
    /// Connections with no request in progress for this long are closed (HTTP/2, gRPC: GOAWAY).
    pub idle_timeout: Duration,
    /// On SIGTERM: how long to keep answering (each HTTP/1 response with `Connection: close`,
    /// readiness 503) before closing the connections that are left.
    pub drain_delay: Duration,
    /// Serve HTTP and gRPC over TLS with this PEM certificate chain and private key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Require an API key on inference and model routes (`serve --require-auth`).
    pub require_auth: bool,
    /// With `require_auth`: also on `/metrics`.
    pub auth_metrics: bool,
    /// Serve the console at `/ui` and its JSON API at `/api/v1` (`serve --ui on|off`).
    pub ui: bool,
    /// Serve the admin API under `/api/v1` (`serve --admin-api on|off`; needs `require_auth`).
    pub admin_api: bool,
    /// Where the admin API stores uploaded files: a storage URI (`--artifacts`), else
    /// `artifacts_dir`.
    pub artifacts: Option<String>,
    /// The local artifact folder (`<home>/artifacts`).
    pub artifacts_dir: PathBuf,
}

/// Who this server instance is (reported in the store).
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub host: String,
    pub port: u16,
    pub grpc_port: Option<u16>,
    pub started_ms: i64,
}

/// The addresses a server listens on.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub http: SocketAddr,
    pub grpc: Option<SocketAddr>,
    /// Both serve TLS.
    pub tls: bool,
}
