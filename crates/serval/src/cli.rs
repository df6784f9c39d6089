//! The command line: clearml-serving's commands and flags, plus serval's own.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serval_store::EngineKind;

/// serval: serve ONNX, XGBoost, LightGBM, scikit-learn and custom Python models over HTTP.
///
/// Drop-in for clearml-serving's CLI: the same commands and flags, on an embedded store (SQLite) or
/// a shared PostgreSQL server.
#[derive(Debug, Parser)]
#[command(name = "serval", version, infer_long_args = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Serving service id (default: $SERVAL_SERVICE_ID, else the only service)
    #[arg(long, global = true, env = "SERVAL_SERVICE_ID")]
    pub id: Option<String>,

    /// Accepted for clearml-serving compatibility: serval never prompts
    #[arg(long, global = true)]
    pub yes: bool,

    /// Show the full error chain and debug logs
    #[arg(long, global = true)]
    pub debug: bool,

    /// Print results as JSON (listings, create, upload, info)
    #[arg(long, global = true)]
    pub json: bool,

    /// serval's data folder: the store and the local artifacts [default: ~/.serval]
    #[arg(long, global = true, env = "SERVAL_HOME")]
    pub home: Option<PathBuf>,

    /// Control store URL: postgres://USER:PASSWORD@HOST:PORT/DATABASE for many servers
    /// [default: sqlite://<home>/serval.db]
    #[arg(long, global = true, env = "SERVAL_STORE", hide_env_values = true)]
    pub store: Option<String>,

    /// Work through a server's admin API instead of the store: every command then needs only
    /// this URL and an admin key (SERVAL_API_KEY), no store credentials
    #[arg(long, global = true, env = "SERVAL_SERVER")]
    pub server: Option<String>,

    /// The admin key for --server (`serval auth create-key --role admin`); prefer the
    /// environment variable: arguments show in process listings
    #[arg(long, global = true, env = "SERVAL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Where uploaded models and preprocess code go when a command names no --destination
    /// (s3://bucket/prefix, gs://..., azure://..., file://...) [default: <home>/artifacts]
    #[arg(long, global = true, env = "SERVAL_ARTIFACTS")]
    pub artifacts: Option<String>,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// List serving services
    List,
    /// Create a new serving service
    Create(CreateArgs),
    /// Show or change the settings of a serving service
    Config(ConfigArgs),
    /// Manage model endpoints and the model registry
    #[command(subcommand)]
    Model(ModelCommand),
    /// Manage metric logging of endpoints
    #[command(subcommand)]
    Metrics(MetricsCommand),
    /// Log a sample of an endpoint's requests and predictions as Parquet files
    #[command(subcommand)]
    Logging(LoggingCommand),
    /// Watch an endpoint's inputs for drift from reference data
    #[command(subcommand)]
    Monitor(MonitorCommand),
    /// Run a model file locally through a native engine and print the reply as JSON
    Predict(PredictArgs),
    /// API keys for inference (enforced by `serve --require-auth`)
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Show the audit trail: every change to services and the registry, who made it (an API
    /// key's name, or `local` for the CLI on the store) and the revision it led to
    Audit(AuditArgs),
    /// Move a whole store: export it as JSON, import it elsewhere, run schema migrations
    #[command(subcommand)]
    Store(StoreCommand),
    /// Serve the service's endpoints: clearml's /serve/{endpoint}[/{version}] and the Open
    /// Inference Protocol (KServe V2) over REST and gRPC
    Serve(ServeArgs),
    /// Write the Triton model repository for the service's triton endpoints (folders,
    /// config.pbtxt, model files), as clearml-serving's Triton sidecar does
    TritonRepo(TritonRepoArgs),
}

#[derive(Debug, Args)]
pub struct TritonRepoArgs {
    /// The repository folder (Triton's --model-repository); created if missing
    #[arg(long)]
    pub out: PathBuf,
    /// Keep running: rewrite the repository whenever the service changes
    #[arg(long)]
    pub watch: bool,
    /// How often --watch checks the service for changes, in milliseconds
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Create an API key; prints only the key on stdout (it is not stored, only its hash)
    CreateKey(AuthCreateArgs),
    /// List the service's API keys (names, scopes, expiry; never the keys)
    List,
    /// Revoke an API key: every server refuses it after its next reload
    Revoke(AuthRevokeArgs),
}

#[derive(Debug, Args)]
pub struct AuthCreateArgs {
    /// A name for the key (letters, digits, '-', '_', '.')
    #[arg(long)]
    pub name: String,
    /// What the key may do: `infer` (inference and the read routes) or `admin` (also every
    /// change through the admin API of `serve --admin-api on`)
    #[arg(long, default_value = "infer", value_parser = parse_role)]
    pub role: serval_store::Role,
    /// Endpoints the key may call (and, for an admin key, change): a name, or a prefix ending
    /// in '*' [default: all]
    #[arg(long)]
    pub endpoints: Option<String>,
    /// Lifetime, e.g. 30d, 12h [default: never expires]
    #[arg(long)]
    pub expires: Option<String>,
}

fn parse_role(text: &str) -> Result<serval_store::Role, String> {
    serval_store::Role::parse(text).ok_or_else(|| format!("'{text}' is not a role: infer or admin"))
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only changes since then: a time ago (1h, 7d) or an RFC 3339 time
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many of the newest changes
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct AuthRevokeArgs {
    /// The key's name
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Write every service (endpoints, canaries, auto-update rules, metric rules, settings) and
    /// the model registry as one JSON document
    Export(StoreExportArgs),
    /// Read an export into this store (--store / $SERVAL_STORE), in one transaction
    Import(StoreImportArgs),
    /// Create or upgrade the store's schema and exit (e.g. as a deployment's migration job)
    Migrate,
}

#[derive(Debug, Args)]
pub struct StoreExportArgs {
    /// Write to this file instead of stdout
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StoreImportArgs {
    /// The export: a file, or - for stdin
    pub file: PathBuf,
    /// Also copy the local artifacts (file:// models and preprocess code) to this storage URI
    /// (s3://bucket/models, ...) and point the imported records at the copies, so servers on
    /// other machines can read them
    #[arg(long)]
    pub destination: Option<String>,
}

/// `serve --grpc-port`: a port, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcPort(pub Option<u16>);

fn grpc_port(raw: &str) -> Result<GrpcPort, String> {
    if raw.eq_ignore_ascii_case("off") {
        return Ok(GrpcPort(None));
    }
    raw.parse::<u16>()
        .map(|port| GrpcPort(Some(port)))
        .map_err(|_| format!("'{raw}' is not a port number (0-65535) or 'off'"))
}

/// A size in bytes: a number with an optional K, M, G or T suffix (powers of 1024; `B`, `iB` and
/// lower case accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

fn byte_size(raw: &str) -> Result<ByteSize, String> {
    let text = raw.trim();
    let lower = text.to_ascii_lowercase();
    let unit_start = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(unit_start);
    let factor: u64 = match unit.trim().trim_end_matches('b').trim_end_matches('i') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => {
            return Err(format!(
                "'{raw}' is not a size: use e.g. 500M, 20G or a number of bytes"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{raw}' is not a size: use e.g. 500M, 20G or a number of bytes"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("'{raw}' is not a size"));
    }
    Ok(ByteSize((value * factor as f64) as u64))
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, env = "SERVAL_HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Port to listen on (0 = any free port; the bound address is printed)
    #[arg(long, env = "SERVAL_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Port of the Open Inference Protocol (KServe V2) gRPC server: a number (0 = any free port;
    /// the bound address is printed), or `off` for no gRPC
    #[arg(long, env = "SERVAL_GRPC_PORT", default_value = "8081", value_parser = grpc_port)]
    pub grpc_port: GrpcPort,
    /// Largest request body in bytes, also after gzip/deflate decoding (413 above)
    #[arg(long, env = "SERVAL_BODY_LIMIT", default_value_t = 100 * 1024 * 1024)]
    pub body_limit: usize,
    /// Most values (numbers, strings, booleans, nulls) one request may decode into: JSON bodies
    /// are counted before they are parsed, tensors after decoding (413 past it)
    #[arg(long, env = "SERVAL_MAX_VALUES", default_value_t = 16_000_000)]
    pub max_values: usize,
    /// Most memory in bytes one request may make the server build (its body, the values it
    /// decodes into, what goes to a Python worker), estimated before it is allocated; more is
    /// refused with 413 (gRPC RESOURCE_EXHAUSTED)
    #[arg(long, env = "SERVAL_MAX_REQUEST_MEMORY", default_value_t = 256 * 1024 * 1024)]
    pub max_request_memory: usize,
    /// Most memory in bytes all requests in progress may hold together (requests whose estimate
    /// is 1 MiB or more count); a request that does not fit is answered 429 with Retry-After
    /// (gRPC RESOURCE_EXHAUSTED) at once
    #[arg(long, env = "SERVAL_MAX_MEMORY_IN_FLIGHT", default_value_t = 512 * 1024 * 1024)]
    pub max_memory_in_flight: usize,
    /// Inference requests in flight in the whole server (HTTP and gRPC); more are answered 429
    /// (gRPC RESOURCE_EXHAUSTED) with Retry-After at once
    #[arg(long, env = "SERVAL_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Inference requests in flight per endpoint; more are answered 429 with Retry-After
    #[arg(
        long,
        env = "SERVAL_MAX_IN_FLIGHT_PER_ENDPOINT",
        default_value_t = 1024
    )]
    pub max_in_flight_per_endpoint: usize,
    /// Per-request timeout in seconds (504 past it)
    #[arg(long, env = "SERVAL_REQUEST_TIMEOUT", default_value_t = 60.0)]
    pub request_timeout: f64,
    /// How often to check the store for configuration changes, in milliseconds
    #[arg(long, env = "SERVAL_POLL_INTERVAL_MS", default_value_t = 250)]
    pub poll_interval_ms: u64,
    /// Bound of the model download cache (shared by the services of a home), e.g. 20G or 500M:
    /// least recently used files that no endpoint uses are evicted [default: unbounded]
    #[arg(long, env = "SERVAL_CACHE_SIZE", value_parser = byte_size)]
    pub cache_size: Option<ByteSize>,
    /// Serve HTTP and gRPC over TLS with this PEM certificate (chain); needs --tls-key
    #[arg(long, env = "SERVAL_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, env = "SERVAL_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require an API key (`Authorization: Bearer KEY`, gRPC metadata `authorization`) on every
    /// inference and model route; health stays open (`serval auth create-key`)
    #[arg(long, env = "SERVAL_REQUIRE_AUTH")]
    pub require_auth: bool,
    /// With --require-auth: also require a key on /metrics
    #[arg(long, env = "SERVAL_AUTH_METRICS")]
    pub auth_metrics: bool,
    /// The web console at /ui and its JSON API at /api/v1 (read-only; with --require-auth the
    /// API needs a key)
    #[arg(long, env = "SERVAL_UI", value_enum, default_value_t = Switch::On)]
    pub ui: Switch,
    /// The admin API under /api/v1: every change the CLI can make, over HTTP, for admin keys
    /// (`serval auth create-key --role admin`) [default: on with --require-auth, else off; on
    /// needs --require-auth]
    #[arg(long, env = "SERVAL_ADMIN_API", value_enum)]
    pub admin_api: Option<Switch>,
    /// Ignore the store's change notifications (PostgreSQL LISTEN/NOTIFY) and rely on polling
    /// alone
    #[arg(long, env = "SERVAL_POLL_ONLY")]
    pub poll_only: bool,
    /// Open connections per listener (HTTP, gRPC); more are closed at accept
    #[arg(long, env = "SERVAL_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Seconds a client may take from connecting to its first request's headers (TLS handshake
    /// and HTTP/2 preface included); also how long an HTTP/1 connection stays open with no
    /// request in progress (idle keep-alive, or the next request's headers still arriving):
    /// closed between this and a quarter more after its last request ended
    #[arg(long, env = "SERVAL_HEADER_TIMEOUT", default_value_t = 30.0)]
    pub header_timeout: f64,
    /// Seconds a connection (HTTP/2 and gRPC included) may stay open with no request in progress
    #[arg(long, env = "SERVAL_IDLE_TIMEOUT", default_value_t = 300.0)]
    pub idle_timeout: f64,
    /// On SIGTERM/SIGINT: seconds to keep answering existing connections (readiness 503, every
    /// HTTP/1 response with `Connection: close`, no new connections) before closing the rest
    #[arg(long, env = "SERVAL_DRAIN_DELAY", default_value_t = 1.0)]
    pub drain_delay: f64,
    /// Seconds in-flight requests may take to finish on SIGTERM/SIGINT
    #[arg(long, env = "SERVAL_SHUTDOWN_TIMEOUT", default_value_t = 30.0)]
    pub shutdown_timeout: f64,
    /// ONNX Runtime shared library (libonnxruntime.so)
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub onnxruntime_lib: Option<PathBuf>,
    /// Python interpreter for worker processes (preprocess code, sklearn, custom engines) when the
    /// service names none (`serval config --python`); its onnxruntime package also provides ONNX
    /// Runtime [default: python3]
    #[arg(long, env = "SERVAL_PYTHON")]
    pub python: Option<String>,
    /// Worker processes per endpoint that runs Python [default: the machine's cores]
    #[arg(long, env = "SERVAL_PYTHON_WORKERS")]
    pub python_workers: Option<usize>,
    /// Threads per native model runner: ONNX Runtime sessions per ONNX model (each its own
    /// copy of the model), threads per batched model [default: the machine's cores]
    #[arg(long, env = "SERVAL_RUNNER_THREADS")]
    pub runner_threads: Option<usize>,
    /// Also serve GET /metrics on this port (it is always on the serving port)
    #[arg(long, env = "SERVAL_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Record no metrics and answer 404 on /metrics
    #[arg(long, env = "SERVAL_DISABLE_METRICS")]
    pub disable_metrics: bool,
    /// ONNX Runtime intra-op threads per model
    #[arg(long, env = "SERVAL_ONNX_THREADS", default_value_t = 1)]
    pub onnx_threads: usize,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Engine: xgboost, lightgbm or onnx [default: detected from the file's content]
    #[arg(long)]
    pub engine: Option<EngineKind>,
    /// Model file
    #[arg(long)]
    pub model: PathBuf,
    /// Request body: JSON text, or @FILE to read it from a file
    #[arg(long)]
    pub input: String,
    /// Feature order for named features when the model stores no feature names
    #[arg(long, num_args = 1..)]
    pub input_name: Vec<String>,
    /// ONNX Runtime shared library (libonnxruntime.so)
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub onnxruntime_lib: Option<PathBuf>,
    /// Python interpreter whose onnxruntime package provides ONNX Runtime
    #[arg(long, env = "SERVAL_PYTHON")]
    pub python: Option<String>,
    /// ONNX Runtime intra-op threads
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Service name
    #[arg(long, default_value = "Serving Service")]
    pub name: String,
    /// Service tags
    #[arg(long, num_args = 1..)]
    pub tags: Vec<String>,
    /// Service project
    #[arg(long, default_value = "DevOps")]
    pub project: String,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Base URL that send_request in user code calls, e.g. http://127.0.0.1:8080/serve
    #[arg(long)]
    pub base_serving_url: Option<String>,
    /// host:port of the V2 gRPC server the triton engine forwards to
    #[arg(long)]
    pub triton_grpc_server: Option<String>,
    /// gzip on the gRPC calls forwarded to --triton-grpc-server (true or false)
    #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
    pub triton_grpc_compression: Option<bool>,
    /// Accepted for compatibility; serval exports metrics on /metrics instead of Kafka
    #[arg(long)]
    pub kafka_metric_server: Option<String>,
    /// Default sampling rate of metric logging, between 0 and 1
    #[arg(long)]
    pub metric_log_freq: Option<f64>,
    /// Python interpreter for worker processes (e.g. your venv's bin/python)
    #[arg(long)]
    pub python: Option<String>,
    /// Packages to install for the service's Python workers, on top of the interpreter's
    /// (pip requirement specifiers, e.g. "pillow transformers==4.*"; "" removes them)
    #[arg(long)]
    pub extra_python_packages: Option<String>,
}

/// serval's dynamic batching flags: written into the aux configuration as Triton's own keys
/// (`max_batch_size`, `dynamic_batching.*`), which clearml-serving users may pass instead.
#[derive(Debug, Args, Default)]
pub struct BatchArgs {
    /// Merge concurrent requests into engine calls of at most ROWS rows (dynamic batching of a
    /// native model; off unless set)
    #[arg(long, value_name = "ROWS")]
    pub max_batch_size: Option<u64>,
    /// With batching: how long a batch that could still grow may wait for more rows, counted
    /// from its oldest request's arrival (never on an idle server) [default: 0]
    #[arg(long, value_name = "MS")]
    pub max_queue_delay_ms: Option<f64>,
    /// With batching: requests that may wait for the model; more are refused with 429
    /// [default: 1024]
    #[arg(long, value_name = "REQUESTS")]
    pub max_queue_size: Option<u64>,
}

/// The six input/output flags of clearml-serving.
#[derive(Debug, Args, Default)]
pub struct IoArgs {
    /// Input shape(s): `1 28 28` for one input, or one JSON list per input: `"[1, 784]"`
    #[arg(long, num_args = 1.., allow_negative_numbers = true)]
    pub input_size: Vec<String>,
    /// Input type(s), numpy names: float32, int64, uint8, ...
    #[arg(long, num_args = 1..)]
    pub input_type: Vec<String>,
    /// Input name(s); for native engines also the order of request fields
    #[arg(long, num_args = 1..)]
    pub input_name: Vec<String>,
    /// Output shape(s), as --input-size
    #[arg(long, num_args = 1.., allow_negative_numbers = true)]
    pub output_size: Vec<String>,
    /// Output type(s)
    #[arg(long, num_args = 1..)]
    pub output_type: Vec<String>,
    /// Output name(s)
    #[arg(long, num_args = 1..)]
    pub output_name: Vec<String>,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum ModelCommand {
    /// List endpoints, auto-update rules and canaries of a service
    List,
    /// Add or replace a model endpoint
    Add(ModelAddArgs),
    /// Remove an endpoint, an auto-update rule or a canary
    Remove(ModelRemoveArgs),
    /// Upload a model file (or folder) and register it in the model registry
    Upload(ModelUploadArgs),
    /// Add or replace a canary endpoint that splits traffic between endpoints
    Canary(CanaryArgs),
    /// Copy a fraction of an endpoint's requests to another endpoint and compare the answers
    /// (`shadow remove`, `shadow report`)
    Shadow(ShadowArgs),
    /// Move a canary's traffic from one endpoint to another step by step while the SLOs hold
    /// (`rollout status | pause | resume | abort`)
    Rollout(RolloutArgs),
    /// Serve the newest matching registry models as versions of an endpoint
    AutoUpdate(AutoUpdateArgs),
    /// Mark a registered model as published
    Publish(ModelIdArgs),
    /// Add or remove tags of a registered model
    Tag(ModelTagArgs),
    /// Show a registered model
    Info(ModelIdArgs),
    /// List the models in the registry
    Registry(RegistryArgs),
}

#[derive(Debug, Args)]
pub struct ModelAddArgs {
    /// Engine: sklearn, xgboost, lightgbm, onnx, triton, custom, custom_async
    #[arg(long)]
    pub engine: EngineKind,
    /// Endpoint name (the url is /serve/<endpoint>[/<version>])
    #[arg(long)]
    pub endpoint: String,
    /// Endpoint version
    #[arg(long)]
    pub version: Option<String>,
    /// Registry id of the model to serve
    #[arg(long)]
    pub model_id: Option<String>,
    /// Preprocess code: a .py file, a folder with __init__.py, or a .zip of one
    #[arg(long)]
    pub preprocess: Option<PathBuf>,
    #[command(flatten)]
    pub io: IoArgs,
    /// Extra engine configuration: key=value pairs (dotted keys nest) or a file
    #[arg(long, num_args = 1..)]
    pub aux_config: Vec<String>,
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Select the newest registry model with this name
    #[arg(long)]
    pub name: Option<String>,
    /// Select the newest registry model with any of these tags
    #[arg(long, num_args = 1..)]
    pub tags: Vec<String>,
    /// Select the newest registry model in this project
    #[arg(long)]
    pub project: Option<String>,
    /// Select only published models
    #[arg(long)]
    pub published: bool,
}

#[derive(Debug, Args)]
pub struct ModelRemoveArgs {
    /// Endpoint (name or name/version), auto-update rule or canary to remove
    #[arg(long)]
    pub endpoint: String,
}

#[derive(Debug, Args)]
pub struct ModelUploadArgs {
    /// Model name in the registry
    #[arg(long)]
    pub name: String,
    /// Model tags
    #[arg(long, num_args = 1..)]
    pub tags: Vec<String>,
    /// Model project
    #[arg(long)]
    pub project: Option<String>,
    /// Model framework (detected from the file when omitted)
    #[arg(long)]
    pub framework: Option<String>,
    /// Publish the model right away
    #[arg(long)]
    pub publish: bool,
    /// Model file or folder to upload
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Register a model that is already stored at this URI (s3://, gs://, azure://, https://, file://)
    #[arg(long)]
    pub url: Option<String>,
    /// Upload to this storage URI (s3://bucket/models, gs://..., azure://container/models) instead
    /// of $SERVAL_ARTIFACTS or the local home
    #[arg(long)]
    pub destination: Option<String>,
}

#[derive(Debug, Args)]
pub struct CanaryArgs {
    /// Canary endpoint name
    #[arg(long)]
    pub endpoint: String,
    /// Traffic weights, one per target (normalised to sum 1)
    #[arg(long, num_args = 1.., allow_negative_numbers = true)]
    pub weights: Vec<f64>,
    /// Target endpoints, weight i goes to endpoint i
    #[arg(long, num_args = 1..)]
    pub input_endpoints: Vec<String>,
    /// Target every endpoint starting with this prefix, newest version first
    #[arg(long)]
    pub input_endpoint_prefix: Option<String>,
    /// Keep each user on one target: the request's key from `header:NAME`, `query:NAME` or
    /// `field:NAME` (a top-level field of a JSON body) always goes to the same target while the
    /// weights stay, and changing them moves only the keys that must move; requests without the
    /// key get the random split
    #[arg(long, value_name = "SOURCE")]
    pub sticky: Option<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ShadowArgs {
    #[command(subcommand)]
    pub command: Option<ShadowCommand>,
    #[command(flatten)]
    pub add: ShadowAddArgs,
}

#[derive(Debug, Args)]
pub struct ShadowAddArgs {
    /// Endpoint (name or name/version) whose requests are copied
    #[arg(long, required = true)]
    pub endpoint: Option<String>,
    /// Endpoint the copies go to, after --endpoint answered (its answers are only compared)
    #[arg(long, required = true)]
    pub target: Option<String>,
    /// Fraction of --endpoint's requests copied, in (0, 1]
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub fraction: f64,
    /// Two numbers agree when they differ by at most this much relative to the larger one
    /// (classifiers: when their labels are equal)
    #[arg(long, default_value_t = serval_store::Shadow::DEFAULT_TOLERANCE, allow_negative_numbers = true)]
    pub tolerance: f64,
}

#[derive(Debug, Subcommand)]
pub enum ShadowCommand {
    /// Stop copying an endpoint's requests (to --target, or to every target)
    Remove(ShadowRemoveArgs),
    /// How often each target agreed with the endpoint, over every server
    Report(ShadowReportArgs),
}

#[derive(Debug, Args)]
pub struct ShadowRemoveArgs {
    /// Endpoint whose shadow is removed
    #[arg(long)]
    pub endpoint: String,
    /// Only the shadow to this endpoint (default: all of --endpoint's shadows)
    #[arg(long)]
    pub target: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShadowReportArgs {
    /// Endpoint whose shadows are reported
    #[arg(long)]
    pub endpoint: String,
    /// Only the last part of the history, e.g. 10m or 1h (default: since each shadow was added)
    #[arg(long)]
    pub window: Option<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub command: Option<RolloutCommand>,
    #[command(flatten)]
    pub start: RolloutStartArgs,
}

#[derive(Debug, Args)]
pub struct RolloutStartArgs {
    /// The canary whose weights are driven (created 100/0 if it does not exist)
    #[arg(long, required = true)]
    pub endpoint: Option<String>,
    /// Endpoint that has the traffic now
    #[arg(long, required = true)]
    pub from: Option<String>,
    /// Endpoint that gets it, step by step
    #[arg(long, required = true)]
    pub to: Option<String>,
    /// Percent of the traffic to --to at each step, ending at 100
    #[arg(long, value_delimiter = ',', default_value = "5,25,50,100")]
    pub steps: Vec<f64>,
    /// How long each step is held before the next, e.g. 60s or 5m
    #[arg(long, default_value = "60s")]
    pub interval: String,
    /// Roll back when more than this fraction of --to's requests fail (e.g. 0.01)
    #[arg(long)]
    pub max_error_ratio: Option<f64>,
    /// Roll back when --to's p99 latency is above this (milliseconds)
    #[arg(long)]
    pub max_p99_ms: Option<f64>,
    /// A shadow phase first: --to must agree with --from this often (e.g. 0.99)...
    #[arg(long, requires = "shadow_first")]
    pub min_agreement: Option<f64>,
    /// ...over this long (e.g. 5m) before it gets any real request
    #[arg(long, requires = "min_agreement")]
    pub shadow_first: Option<String>,
    /// Requests --to must answer in a step before it is judged
    #[arg(long, default_value_t = 10)]
    pub min_requests: u64,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Where the rollout is: state, step, weights, events
    Status(RolloutNameArgs),
    /// Hold the rollout at its step
    Pause(RolloutNameArgs),
    /// Go on from the step it was paused at (its interval starts again)
    Resume(RolloutNameArgs),
    /// Stop the rollout: all traffic back to --from
    Abort(RolloutNameArgs),
}

#[derive(Debug, Args)]
pub struct RolloutNameArgs {
    /// The canary the rollout drives
    #[arg(long)]
    pub endpoint: String,
}

#[derive(Debug, Args)]
pub struct AutoUpdateArgs {
    /// Engine of the served versions
    #[arg(long)]
    pub engine: EngineKind,
    /// Base endpoint name; versions are served at /serve/<endpoint>/<n>
    #[arg(long)]
    pub endpoint: String,
    /// How many of the newest matching models to serve
    #[arg(long, default_value_t = 1)]
    pub max_versions: u32,
    /// Model name to match (exactly, or as a regular expression with --name-regex)
    #[arg(long)]
    pub name: Option<String>,
    /// Match --name as a regular expression
    #[arg(long)]
    pub name_regex: bool,
    /// Match models with any of these tags
    #[arg(long, num_args = 1..)]
    pub tags: Vec<String>,
    /// Match models in this project
    #[arg(long)]
    pub project: Option<String>,
    /// Match only published models
    #[arg(long)]
    pub published: bool,
    /// Preprocess code for every version
    #[arg(long)]
    pub preprocess: Option<PathBuf>,
    #[command(flatten)]
    pub io: IoArgs,
    /// Extra engine configuration
    #[arg(long, num_args = 1..)]
    pub aux_config: Vec<String>,
    #[command(flatten)]
    pub batch: BatchArgs,
}

#[derive(Debug, Args)]
pub struct ModelIdArgs {
    /// Model id
    pub model_id: String,
}

#[derive(Debug, Args)]
pub struct ModelTagArgs {
    /// Model id
    pub model_id: String,
    /// Tags to add
    #[arg(long, num_args = 1..)]
    pub add: Vec<String>,
    /// Tags to remove
    #[arg(long, num_args = 1..)]
    pub remove: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Only models with this name
    #[arg(long)]
    pub name: Option<String>,
    /// Only models in this project
    #[arg(long)]
    pub project: Option<String>,
    /// Only models with any of these tags
    #[arg(long, num_args = 1..)]
    pub tags: Vec<String>,
    /// Only published models
    #[arg(long)]
    pub published: bool,
}

#[derive(Debug, Subcommand)]
pub enum MonitorCommand {
    /// Store the distribution of each feature of reference data (quantile bins for numbers,
    /// frequencies for categories) that every server compares the endpoint's live inputs with
    Reference(MonitorReferenceArgs),
    /// Show the drift of each feature: the fleet's live window against the reference
    Drift(MonitorDriftArgs),
    /// Stop watching an endpoint's drift
    Remove(MonitorRemoveArgs),
}

#[derive(Debug, Args)]
pub struct MonitorReferenceArgs {
    /// Endpoint url (name — with its versions — or name/version)
    #[arg(long)]
    pub endpoint: String,
    /// Reference data: a .csv file whose header names the model's features (f0, f1, … for a
    /// model without names), a .parquet file with one column per feature, or a folder of payload
    /// logs (`serval logging`; the endpoint's requests, optionally of a time range)
    #[arg(long)]
    pub data: PathBuf,
    /// Payload logs only: requests from this time on (RFC 3339, e.g. 2026-12-01T00:00:00Z)
    #[arg(long)]
    pub since: Option<String>,
    /// Payload logs only: requests before this time (RFC 3339)
    #[arg(long)]
    pub until: Option<String>,
    /// Payload logs only: the input column when the model has several (`input` for `in_input`)
    #[arg(long)]
    pub input: Option<String>,
    /// Payload logs only: the model's feature names, in column order (default f0, f1, …)
    #[arg(long, value_delimiter = ',')]
    pub names: Vec<String>,
    /// Quantile bins per numeric feature
    #[arg(long, default_value_t = serval_store::DriftReference::DEFAULT_BINS)]
    pub bins: usize,
    /// The live window compared with the reference (e.g. 10m, 1h)
    #[arg(long, default_value = "10m")]
    pub window: String,
    /// Numeric features to count as categories (text columns always are)
    #[arg(long, num_args = 1..)]
    pub categorical: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MonitorDriftArgs {
    /// Endpoint url or name, as its reference was stored
    #[arg(long)]
    pub endpoint: String,
    /// Another window than the reference's (e.g. 1h)
    #[arg(long)]
    pub window: Option<String>,
}

#[derive(Debug, Args)]
pub struct MonitorRemoveArgs {
    /// Endpoint url or name, as its reference was stored
    #[arg(long)]
    pub endpoint: String,
}

#[derive(Debug, Subcommand)]
pub enum LoggingCommand {
    /// Log a sampled fraction of an endpoint's requests (every protocol) with their
    /// predictions, as Parquet files under a destination (replaces the endpoint's log)
    Add(LoggingAddArgs),
    /// Stop logging an endpoint's requests (files already written stay)
    Remove(LoggingRemoveArgs),
    /// List payload logs
    List,
}

#[derive(Debug, Args)]
pub struct LoggingAddArgs {
    /// Endpoint url (name — with its versions — or name/version), or a prefix ending with `*`
    #[arg(long)]
    pub endpoint: String,
    /// Fraction of requests to log, in (0, 1]
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub sample: f64,
    /// Where files go: file:///folder, s3://bucket/prefix, gs://bucket/prefix or
    /// azure://container/prefix (credentials from the servers' environment)
    #[arg(long)]
    pub destination: String,
    /// Close a file once it holds about this many MiB
    #[arg(long, default_value_t = serval_store::PayloadLog::DEFAULT_MAX_FILE_MB)]
    pub max_file_mb: u64,
    /// Close a file once it is this many seconds old
    #[arg(long, default_value_t = serval_store::PayloadLog::DEFAULT_MAX_FILE_SECONDS)]
    pub max_file_seconds: u64,
}

#[derive(Debug, Args)]
pub struct LoggingRemoveArgs {
    /// Endpoint url or prefix, as the log was added
    #[arg(long)]
    pub endpoint: String,
}

#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Add or update metric logging for an endpoint (or `prefix*`)
    Add(MetricsAddArgs),
    /// Remove metric logging, or some of its variables
    Remove(MetricsRemoveArgs),
    /// List metric logging rules
    List,
}

#[derive(Debug, Args)]
pub struct MetricsAddArgs {
    /// Endpoint url (name or name/version), or a prefix ending with `*`
    #[arg(long)]
    pub endpoint: String,
    /// Fraction of requests to log, between 0 and 1 (default: the service's)
    #[arg(long)]
    pub log_freq: Option<f64>,
    /// Histogram variables: name=b1,b2,... or name=min/max/count (count equal buckets)
    #[arg(long, num_args = 1..)]
    pub variable_scalar: Vec<String>,
    /// Enumeration variables: name=value1,value2,...
    #[arg(long, num_args = 1..)]
    pub variable_enum: Vec<String>,
    /// Gauge variables (last value): name
    #[arg(long, num_args = 1..)]
    pub variable_value: Vec<String>,
    /// Counter variables (summed): name
    #[arg(long, num_args = 1..)]
    pub variable_counter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MetricsRemoveArgs {
    /// Endpoint url or prefix of the rule
    #[arg(long)]
    pub endpoint: String,
    /// Variables to remove (default: the whole rule)
    #[arg(long, num_args = 1..)]
    pub variable: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(byte_size("1024"), Ok(ByteSize(1024)));
        assert_eq!(byte_size("500M"), Ok(ByteSize(500 << 20)));
        assert_eq!(byte_size("20G"), Ok(ByteSize(20 << 30)));
        assert_eq!(byte_size("1.5GiB"), Ok(ByteSize(3 << 29)));
        assert_eq!(byte_size("2 kb"), Ok(ByteSize(2048)));
        assert!(byte_size("lots").is_err());
        assert!(byte_size("5X").is_err());
    }
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}
