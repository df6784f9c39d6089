//! The records the store keeps. Plain data: validation of names lives in [`crate::names`], the
//! rules that tie records together (what a command may store) in the callers.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// A serving service: one set of endpoints that `serval serve` processes answer for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub project: String,
    pub tags: Vec<String>,
    pub created_ms: i64,
    /// Bumped by every change to the service's configuration; servers watch it.
    pub revision: u64,
}

/// Settings of a service (`serval config`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceSettings {
    /// Base URL that `send_request` in user code calls (`http://host:port/serve`).
    pub serving_base_url: Option<String>,
    /// Address of the V2 gRPC server the `triton` engine forwards to.
    pub triton_grpc_server: Option<String>,
    /// gzip on the forwarded gRPC calls (`None`: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triton_grpc_compression: Option<bool>,
    /// Accepted for clearml-serving compatibility; serval exports metrics on `/metrics` instead.
    pub kafka_metric_server: Option<String>,
    /// Default sampling rate of metric logging, in [0, 1]; 1.0 when unset.
    pub metric_log_freq: Option<f64>,
    /// Python interpreter for worker processes.
    pub python: Option<String>,
    /// Packages serval installs for the service's Python workers (pip requirement specifiers,
    /// space-separated), on top of what the interpreter has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_python_packages: Option<String>,
}

/// Everything about a service that servers serve from; one consistent view at one revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceConfig {
    pub settings: ServiceSettings,
    /// Static endpoints by url (`name` or `name/version`).
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Canary endpoints by name.
    pub canaries: BTreeMap<String, Canary>,
    /// Auto-update rules by base endpoint name.
    pub auto_update: BTreeMap<String, AutoUpdateRule>,
    /// Metric logging rules by endpoint url or `prefix*`.
    pub metrics: BTreeMap<String, MetricRule>,
    /// What each auto-update rule serves: version → model id. Maintained by the store (recomputed
    /// in every write that can change it); edits to it by callers are overwritten.
    #[serde(default)]
    pub auto_versions: BTreeMap<String, crate::auto_update::VersionMap>,
    /// API keys for inference (`serval auth`), by name; enforced by `serve --require-auth`.
    #[serde(default)]
    pub api_keys: BTreeMap<String, ApiKey>,
    /// Shadows by [`Shadow::key`] (`endpoint target`).
    #[serde(default)]
    pub shadows: BTreeMap<String, Shadow>,
    /// Rollouts by the canary they drive.
    #[serde(default)]
    pub rollouts: BTreeMap<String, Rollout>,
    /// Payload logs by endpoint url or `prefix*`.
    #[serde(default)]
    pub payload_logs: BTreeMap<String, PayloadLog>,
    /// Drift references by endpoint url (or name: all its versions).
    #[serde(default)]
    pub drift_references: BTreeMap<String, DriftReference>,
}

impl ServiceConfig {
    /// Static endpoints plus the versions auto-update rules serve (`base/<v>`), by url.
    pub fn served_endpoints(&self) -> BTreeMap<String, Endpoint> {
        let mut all = self.endpoints.clone();
        for (base, versions) in &self.auto_versions {
            let Some(rule) = self.auto_update.get(base) else {
                continue;
            };
            for (version, model_id) in versions {
                let endpoint = Endpoint {
                    name: base.clone(),
                    version: Some(version.to_string()),
                    engine: rule.engine,
                    model_id: Some(model_id.clone()),
                    preprocess: rule.preprocess.clone(),
                    io: rule.io.clone(),
                    aux_config: rule.aux_config.clone(),
                    created_ms: 0,
                };
                all.entry(endpoint.url()).or_insert(endpoint);
            }
        }
        all
    }
}

/// A service with its configuration, read in one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub service: Service,
    pub config: ServiceConfig,
}

/// The engine an endpoint runs on.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    Sklearn,
    Xgboost,
    Lightgbm,
    Onnx,
    Triton,
    Custom,
    CustomAsync,
}

impl EngineKind {
    pub const ALL: [EngineKind; 7] = [
        EngineKind::Sklearn,
        EngineKind::Xgboost,
        EngineKind::Lightgbm,
        EngineKind::Onnx,
        EngineKind::Triton,
        EngineKind::Custom,
        EngineKind::CustomAsync,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Sklearn => "sklearn",
            EngineKind::Xgboost => "xgboost",
            EngineKind::Lightgbm => "lightgbm",
            EngineKind::Onnx => "onnx",
            EngineKind::Triton => "triton",
            EngineKind::Custom => "custom",
            EngineKind::CustomAsync => "custom_async",
        }
    }

    /// Engines that run user code only and load no model file.
    pub fn needs_model(self) -> bool {
        !matches!(self, EngineKind::Custom | EngineKind::CustomAsync)
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EngineKind {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EngineKind::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = EngineKind::ALL.iter().map(|e| e.as_str()).collect();
                StoreError::InvalidInput(format!(
                    "'{s}' is not a supported engine (one of: {})",
                    names.join(", ")
                ))
            })
    }
}

/// Stored preprocess code: a single Python file or a packed folder (tar.gz with `__init__.py`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CodeRef {
    pub sha256: String,
    /// Original file or folder name.
    pub name: String,
    pub kind: CodeKind,
    /// Where the bytes are (content-addressed).
    pub uri: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CodeKind {
    /// One `.py` file.
    File,
    /// A folder packed as tar.gz; its `__init__.py` is the entry point.
    Package,
    /// A zip file of a package (as clearml-serving accepts); its `__init__.py` is the entry point.
    Zip,
}

/// Declared inputs and outputs of an endpoint (clearml's six io fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IoSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_name: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_type: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_size: Vec<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_name: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_type: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_size: Vec<Vec<i64>>,
}

impl IoSpec {
    pub fn is_empty(&self) -> bool {
        *self == IoSpec::default()
    }
}

/// A static endpoint: `name` or `name/version`, served by one engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub name: String,
    pub version: Option<String>,
    pub engine: EngineKind,
    pub model_id: Option<String>,
    pub preprocess: Option<CodeRef>,
    pub io: IoSpec,
    pub aux_config: Option<serde_json::Value>,
    pub created_ms: i64,
}

impl Endpoint {
    /// The key the endpoint is stored and addressed by.
    pub fn url(&self) -> String {
        crate::names::endpoint_url(&self.name, self.version.as_deref())
    }
}

/// Where a canary sends its traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CanaryTarget {
    /// Weight i goes to endpoint i.
    Endpoints(Vec<String>),
    /// Every endpoint whose url starts with the prefix, newest version first.
    Prefix(String),
}

/// A canary endpoint: requests to `name` are split between targets by weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Canary {
    pub name: String,
    pub weights: Vec<f64>,
    pub target: CanaryTarget,
    /// Where a request's key comes from (`header:NAME`, `query:NAME`, `field:NAME`; see
    /// [`Sticky`]): the same key always gets the same target while the weights stay. `None`:
    /// a random split per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<String>,
}

/// A shadow: after `endpoint` answered a request, a copy of it goes to `target` (for a fraction
/// of requests, off the request path) and the two answers are compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Shadow {
    /// The endpoint url whose requests are copied.
    pub endpoint: String,
    /// The endpoint url the copies go to.
    pub target: String,
    /// The fraction of `endpoint`'s requests copied, in (0, 1].
    pub fraction: f64,
    /// Two numbers agree when they differ by at most this much relative to the larger one.
    pub tolerance: f64,
    pub created_ms: i64,
}

impl Shadow {
    /// The tolerance when none is given: one part in a million.
    pub const DEFAULT_TOLERANCE: f64 = 1e-6;

    /// The key of the shadow from `endpoint` to `target` in [`ServiceConfig::shadows`] (urls
    /// hold no spaces).
    pub fn key(endpoint: &str, target: &str) -> String {
        format!("{endpoint} {target}")
    }
}

/// A payload log: a sampled fraction of the requests of the endpoints `endpoint` names (a url,
/// or `prefix*`) written as Parquet files under `destination`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PayloadLog {
    /// An endpoint url, or a prefix of urls ending in `*`.
    pub endpoint: String,
    /// The fraction of requests logged, in (0, 1].
    pub sample: f64,
    /// `file:///folder`, `s3://bucket/prefix`, `gs://…`, `azure://…`.
    pub destination: String,
    /// A file is closed once it holds about this many MiB.
    pub max_file_mb: u64,
    /// A file is closed once it is this old.
    pub max_file_seconds: u64,
    pub created_ms: i64,
}

impl PayloadLog {
    pub const DEFAULT_MAX_FILE_MB: u64 = 64;
    pub const DEFAULT_MAX_FILE_SECONDS: u64 = 300;

    /// Whether it logs requests of endpoint `url`: the url itself or one of its versions
    /// (`name` logs `name/2`), or every url with the prefix before a final `*`.
    pub fn matches(&self, url: &str) -> bool {
        match self.endpoint.strip_suffix('*') {
            Some(prefix) => url.starts_with(prefix),
            None => url
                .strip_prefix(self.endpoint.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }
}

/// A drift reference: the distribution of each input feature in reference data (training data,
/// say), which every server compares the inputs of live requests with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriftReference {
    /// An endpoint url, or a name (all its versions).
    pub endpoint: String,
    /// The live window compared with the reference, in seconds.
    pub window_seconds: u64,
    pub features: Vec<FeatureReference>,
    /// Rows the reference was computed from.
    pub rows: u64,
    /// Where the data came from (a file name), for people.
    pub source: String,
    pub created_ms: i64,
}

impl DriftReference {
    pub const DEFAULT_WINDOW_SECONDS: u64 = 600;
    pub const DEFAULT_BINS: usize = 10;

    /// Whether it applies to endpoint `url`: the url itself or one of its versions.
    pub fn matches(&self, url: &str) -> bool {
        url.strip_prefix(self.endpoint.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// One feature of a drift reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeatureReference {
    /// The model's feature name (`f0`, `f1`, … for a model without names).
    pub name: String,
    #[serde(flatten)]
    pub bins: ReferenceBins,
}

/// How a feature's values are counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReferenceBins {
    /// Numbers: bin `i` holds values from `edges[i-1]` (inclusive) to `edges[i]` (exclusive);
    /// the first bin everything below `edges[0]`, the last everything from the last edge.
    /// `proportions` has one more element than `edges`.
    Numeric {
        edges: Vec<f64>,
        proportions: Vec<f64>,
    },
    /// Categories: the reference's most frequent values, then one bin for every other value.
    /// `proportions` has one more element than `categories`.
    Categorical {
        categories: Vec<String>,
        proportions: Vec<f64>,
    },
}

impl ReferenceBins {
    pub fn proportions(&self) -> &[f64] {
        match self {
            ReferenceBins::Numeric { proportions, .. }
            | ReferenceBins::Categorical { proportions, .. } => proportions,
        }
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// The new endpoint gets shadow traffic only, until it agrees enough.
    Shadow,
    /// Steps advance while the SLOs hold.
    Running,
    Paused,
    /// Done: the new endpoint has all the traffic.
    Promoted,
    /// An SLO was breached: the old endpoint has all the traffic again.
    RolledBack,
    /// Stopped by a person: the old endpoint has all the traffic again.
    Aborted,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Shadow => "shadow",
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Promoted => "promoted",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Aborted => "aborted",
        }
    }

    /// Whether a server drives it (shadow or running).
    pub fn is_active(self) -> bool {
        matches!(self, RolloutState::Shadow | RolloutState::Running)
    }

    /// Whether it has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RolloutState::Promoted | RolloutState::RolledBack | RolloutState::Aborted
        )
    }
}

/// Something that happened to a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutEvent {
    /// Epoch milliseconds.
    pub time_ms: i64,
    /// `started`, `shadow_passed`, `step`, `promoted`, `rolled_back`, `paused`, `resumed`,
    /// `aborted`, `leader_changed`.
    pub kind: String,
    pub detail: String,
}

/// A rollout: canary `canary`'s weights moved from endpoint `from` to endpoint `to` step by
/// step, each step held for `interval_ms` and taken only while the SLOs hold over it (the
/// fleet's numbers), rolled back at once when one is breached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rollout {
    pub canary: String,
    pub from: String,
    pub to: String,
    /// Percent of the traffic to `to` at each step, increasing, the last 100.
    pub steps: Vec<f64>,
    pub interval_ms: i64,
    pub max_error_ratio: Option<f64>,
    pub max_p99_ms: Option<f64>,
    /// The shadow phase: `to` must agree this often with `from`...
    pub min_agreement: Option<f64>,
    /// ...over this long before it gets any real request.
    pub shadow_first_ms: Option<i64>,
    /// Requests `to` must have answered in a step before its SLOs are judged.
    pub min_requests: u64,
    pub state: RolloutState,
    /// The current step (index into `steps`; `None` before the first: the shadow phase).
    pub step: Option<usize>,
    /// When the current step (or the shadow phase, or the resumed step) started.
    pub step_started_ms: i64,
    /// The state a pause interrupted (resumed to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_in: Option<RolloutState>,
    pub created_ms: i64,
    pub events: Vec<RolloutEvent>,
}

impl Rollout {
    /// The canary's weights `[from, to]` at the current step.
    pub fn weights(&self) -> [f64; 2] {
        match (self.state, self.step) {
            (RolloutState::RolledBack | RolloutState::Aborted, _) | (_, None) => [100.0, 0.0],
            (RolloutState::Promoted, _) => [0.0, 100.0],
            (_, Some(step)) => {
                let to = self.steps.get(step).copied().unwrap_or(100.0);
                [100.0 - to, to]
            }
        }
    }

    /// Records an event now.
    pub fn event(&mut self, time_ms: i64, kind: &str, detail: impl Into<String>) {
        self.events.push(RolloutEvent {
            time_ms,
            kind: kind.to_string(),
            detail: detail.into(),
        });
    }
}

/// The answer of [`crate::Store::lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub held: bool,
    /// Who held it before, when it changed hands now (an expired holder).
    pub taken_from: Option<String>,
}

/// Counters one server adds up for one subject over one time bucket (see [`Store::add_stats`]),
/// or their sum over servers.
///
/// [`Store::add_stats`]: crate::Store::add_stats
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRow {
    /// What the counters are about: `shadow` (a shadow pair).
    pub kind: String,
    pub endpoint: String,
    /// The shadow's target (`""` for a row about one endpoint).
    pub target: String,
    /// The bucket's start, epoch milliseconds.
    pub bucket_ms: i64,
    /// Counter name → count.
    pub counts: BTreeMap<String, u64>,
}

impl StatsRow {
    /// Width of a bucket written by servers (they add their counts every couple of seconds).
    pub const BUCKET_MS: i64 = 1_000;
    /// Buckets older than this are folded into hourly ones (see `Store::add_stats`).
    pub const FINE_MS: i64 = 3_600_000;

    /// The start of the bucket holding `ms`, when the bucket is written now.
    pub fn bucket_of(ms: i64) -> i64 {
        ms - ms.rem_euclid(Self::BUCKET_MS)
    }

    /// The first bucket to read for counts since `since_ms`: the one holding it (an hourly
    /// one when `since_ms` is more than an hour before `now_ms`).
    pub fn first_bucket(since_ms: i64, now_ms: i64) -> i64 {
        let width = if now_ms - since_ms >= Self::FINE_MS {
            Self::FINE_MS
        } else {
            Self::BUCKET_MS
        };
        since_ms - since_ms.rem_euclid(width)
    }

    /// Adds `other`'s counts to this row's.
    pub fn merge(&mut self, other: &BTreeMap<String, u64>) {
        for (name, count) in other {
            let sum = self.counts.entry(name.clone()).or_default();
            *sum = sum.saturating_add(*count);
        }
    }
}

/// Where a sticky canary reads a request's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// An HTTP header (gRPC: a metadata entry), by lowercase name.
    Header(String),
    /// A top-level field of a JSON object body (clearml `/serve`, `send_request`).
    Field(String),
    /// A query-string parameter (`/serve/...?uid=...`).
    Query(String),
}

impl Sticky {
    /// `header:NAME`, `field:NAME` or `query:NAME`.
    pub fn parse(text: &str) -> Result<Sticky, String> {
        let (kind, name) = text.split_once(':').unwrap_or((text, ""));
        let name = name.trim();
        if name.is_empty() {
            return Err(format!(
                "--sticky '{text}' must be header:NAME, field:NAME or query:NAME"
            ));
        }
        match kind.trim() {
            "header" => {
                let valid = name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if !valid {
                    return Err(format!("--sticky '{text}': '{name}' is not a header name"));
                }
                Ok(Sticky::Header(name.to_ascii_lowercase()))
            }
            "field" => Ok(Sticky::Field(name.to_string())),
            "query" => Ok(Sticky::Query(name.to_string())),
            _ => Err(format!(
                "--sticky '{text}' must be header:NAME, field:NAME or query:NAME"
            )),
        }
    }
}

/// An auto-update rule: serve the newest models of the registry that match as `endpoint/<v>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AutoUpdateRule {
    pub endpoint: String,
    pub engine: EngineKind,
    pub model_name: Option<String>,
    /// Match `model_name` as a regular expression instead of exactly.
    pub name_regex: bool,
    pub project: Option<String>,
    pub tags: Vec<String>,
    pub only_published: bool,
    pub max_versions: u32,
    pub preprocess: Option<CodeRef>,
    pub io: IoSpec,
    pub aux_config: Option<serde_json::Value>,
}

/// One variable a metric rule records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetricVariable {
    /// A histogram with these upper bounds (ascending).
    Scalar { buckets: Vec<f64> },
    /// Counts per value.
    Enum { buckets: Vec<String> },
    /// A gauge set to the last value.
    Value,
    /// A counter incremented by the value.
    Counter,
}

impl MetricVariable {
    pub fn type_name(&self) -> &'static str {
        match self {
            MetricVariable::Scalar { .. } => "scalar",
            MetricVariable::Enum { .. } => "enum",
            MetricVariable::Value => "value",
            MetricVariable::Counter => "counter",
        }
    }
}

/// An API key: only its sha256 is stored (keys are 256-bit random, so a plain hash is enough).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub name: String,
    /// Hex sha256 of the key.
    pub sha256: String,
    /// Endpoint names the key may call: a name, or a prefix ending in `*`; `None`: all.
    pub endpoints: Option<String>,
    pub created_ms: i64,
    /// Epoch ms after which the key is refused; `None`: never.
    pub expires_ms: Option<i64>,
    /// What the key may do (older stores and dumps: `infer`).
    #[serde(default)]
    pub role: Role,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Inference and the read routes, for the key's endpoints.
    #[default]
    Infer,
    /// Also the admin API: every write (within the key's endpoints, if it has a scope).
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Infer => "infer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "infer" => Some(Role::Infer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who asks for a write and what it is. The store records it in the audit trail inside the
/// write's own transaction, and refuses a service write made against a stale revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The API key's name, or [`Change::LOCAL`] for the CLI writing the store directly.
    pub key: String,
    /// What is done, e.g. `endpoint.put`.
    pub operation: String,
    /// What it is done to: the resource's path under `/api/v1`, e.g. `services/ID/endpoints/iris`.
    pub target: String,
    /// Write only if the service is still at this revision (HTTP `If-Match`), else
    /// [`crate::StoreError::Stale`].
    pub if_revision: Option<u64>,
}

impl Change {
    /// The key name of writes made by the CLI on the store itself.
    pub const LOCAL: &'static str = "local";

    pub fn new(key: impl Into<String>, operation: &str, target: impl Into<String>) -> Change {
        Change {
            key: key.into(),
            operation: operation.to_string(),
            target: target.into(),
            if_revision: None,
        }
    }

    /// A change by the CLI on the store itself.
    pub fn local(operation: &str, target: impl Into<String>) -> Change {
        Change::new(Change::LOCAL, operation, target)
    }

    pub fn if_revision(mut self, revision: Option<u64>) -> Change {
        self.if_revision = revision;
        self
    }
}

/// One recorded write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub time_ms: i64,
    pub key: String,
    pub operation: String,
    pub target: String,
    /// The service written (`None`: a registry write).
    pub service_id: Option<String>,
    /// The service's revision after the write (`None`: a registry write).
    pub revision: Option<u64>,
}

impl ApiKey {
    /// Whether the key may call `endpoint` (an endpoint or canary name, without version).
    pub fn allows(&self, endpoint: &str) -> bool {
        match self.endpoints.as_deref() {
            None => true,
            Some(pattern) => match pattern.strip_suffix('*') {
                Some(prefix) => endpoint.starts_with(prefix),
                None => endpoint == pattern,
            },
        }
    }

    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|at| now_ms >= at)
    }
}

/// A metric logging rule for one endpoint url or every url starting with a prefix (`prefix*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricRule {
    pub endpoint: String,
    /// Sampling rate in [0, 1]; the service default when unset.
    pub log_frequency: Option<f64>,
    pub variables: BTreeMap<String, MetricVariable>,
}

/// A model in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Model {
    pub id: String,
    pub name: String,
    pub project: Option<String>,
    pub tags: Vec<String>,
    pub framework: Option<String>,
    pub published: bool,
    /// Where the model file is: `file://...`, `s3://...`, `https://...`, ...
    pub uri: String,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub created_ms: i64,
}

/// A new model to register.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewModel {
    pub name: String,
    pub project: Option<String>,
    pub tags: Vec<String>,
    pub framework: Option<String>,
    pub published: bool,
    pub uri: String,
    pub size: Option<u64>,
    pub sha256: Option<String>,
}

/// A registry query, with clearml-serving's semantics: exact name (or a regular expression when
/// `name_regex`), exact project, any of the tags, published only if asked; newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelQuery {
    pub name: Option<String>,
    pub name_regex: bool,
    pub project: Option<String>,
    pub tags: Vec<String>,
    pub only_published: bool,
    pub limit: Option<usize>,
}

impl ModelQuery {
    /// Whether a model matches. A `name_regex` that does not compile matches nothing; callers
    /// validate it with [`crate::names::validate_name_regex`] before storing it.
    pub fn matches(&self, model: &Model) -> bool {
        if let Some(name) = &self.name {
            let name_ok = if self.name_regex {
                regex::Regex::new(name).is_ok_and(|re| re.is_match(&model.name))
            } else {
                &model.name == name
            };
            if !name_ok {
                return false;
            }
        }
        if self
            .project
            .as_ref()
            .is_some_and(|p| model.project.as_ref() != Some(p))
        {
            return false;
        }
        if !self.tags.is_empty() && !self.tags.iter().any(|t| model.tags.contains(t)) {
            return false;
        }
        !self.only_published || model.published
    }
}

impl AutoUpdateRule {
    /// The registry query this rule runs (without a limit: the caller takes `max_versions`).
    pub fn query(&self) -> ModelQuery {
        ModelQuery {
            name: self.model_name.clone(),
            name_regex: self.name_regex,
            project: self.project.clone(),
            tags: self.tags.clone(),
            only_published: self.only_published,
            limit: None,
        }
    }
}

/// A new serving service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewService {
    pub name: String,
    pub project: String,
    pub tags: Vec<String>,
}

/// What one running server instance reports about itself (`serval serve` heartbeats).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceStatus {
    pub id: String,
    pub service_id: String,
    pub host: String,
    pub port: u16,
    pub pid: u32,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    /// The service revision this instance serves.
    pub revision: u64,
    /// The first load pass has finished.
    pub ready: bool,
    /// Per endpoint url.
    pub endpoints: BTreeMap<String, EndpointStatus>,
    /// The V2 gRPC port, if the instance serves gRPC.
    pub grpc_port: Option<u16>,
}

/// Load state of one endpoint in one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EndpointStatus {
    /// `loaded`, `failed` or `loading`.
    pub state: String,
    pub engine: EngineKind,
    pub model_id: Option<String>,
    /// Why the last load failed (the previous version may still be serving, see `serving`).
    pub error: Option<String>,
    /// Whether requests are answered (a failed reload keeps the previous version serving).
    pub serving: bool,
    /// How the endpoint runs, e.g. `native xgboost (json, reg:squarederror)`.
    pub path: Option<String>,
    /// The endpoint's Python workers, if it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<PythonStatus>,
}

/// The Python worker pool of one endpoint in one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PythonStatus {
    pub workers: usize,
    pub alive: usize,
    /// Worker processes restarted since the endpoint was loaded.
    pub restarts: u64,
    /// Why the last worker ended (or failed to restart).
    pub last_exit: Option<String>,
    /// Requests whose model ran in the worker because `preprocess` returned data only the model's
    /// library understands (native engines with preprocess code).
    #[serde(default)]
    pub library_requests: u64,
}
