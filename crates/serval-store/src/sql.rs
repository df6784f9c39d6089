//! The backend-neutral store: every rule of the [`Store`] contract (what a write reads and
//! writes, when the revision rises, auto-update version assignment, diffing, export/import) lives
//! here, written once in portable SQL (`$N` parameters, no engine-specific syntax). A backend
//! provides only transactions, statement execution and value conversion ([`Backend`], [`Tx`]), so
//! SQLite and PostgreSQL cannot drift apart.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{
    AuditEntry, AutoUpdateRule, Canary, CanaryTarget, Change, ChangeFeed, ConfigEdit,
    DriftReference, Dump, DumpService, Endpoint, InstanceStatus, Lease, MetricRule, Model,
    ModelQuery, NewModel, NewService, PayloadLog, Result, Rollout, Service, ServiceConfig,
    ServiceSettings, Shadow, Snapshot, StatsRow, Store, StoreError, new_id, now_ms,
};

/// One SQL value, as both backends bind and read it. (The module is private: these items are
/// public only so that the sealed backend traits can name them.)
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<u16> for Value {
    fn from(v: u16) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}
impl<T: Clone + Into<Value>> From<&Option<T>> for Value {
    fn from(v: &Option<T>) -> Self {
        v.clone().map_or(Value::Null, Into::into)
    }
}

/// A result row; getters take the value out by column index.
#[derive(Debug)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn take(&mut self, i: usize) -> Result<Value> {
        self.0
            .get_mut(i)
            .map(|v| std::mem::replace(v, Value::Null))
            .ok_or_else(|| StoreError::Internal(format!("result row has no column {i}")))
    }

    fn opt_text(&mut self, i: usize) -> Result<Option<String>> {
        match self.take(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s)),
            other => Err(type_error(i, "text", &other)),
        }
    }

    fn text(&mut self, i: usize) -> Result<String> {
        self.opt_text(i)?
            .ok_or_else(|| StoreError::Internal(format!("column {i} is NULL, expected text")))
    }

    fn opt_int(&mut self, i: usize) -> Result<Option<i64>> {
        match self.take(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(v)),
            other => Err(type_error(i, "an integer", &other)),
        }
    }

    fn int(&mut self, i: usize) -> Result<i64> {
        self.opt_int(i)?
            .ok_or_else(|| StoreError::Internal(format!("column {i} is NULL, expected an integer")))
    }

    fn opt_real(&mut self, i: usize) -> Result<Option<f64>> {
        match self.take(i)? {
            Value::Null => Ok(None),
            Value::Real(v) => Ok(Some(v)),
            Value::Int(v) => Ok(Some(v as f64)),
            other => Err(type_error(i, "a number", &other)),
        }
    }

    fn bool(&mut self, i: usize) -> Result<bool> {
        match self.take(i)? {
            Value::Bool(b) => Ok(b),
            Value::Int(v) => Ok(v != 0),
            other => Err(type_error(i, "a boolean", &other)),
        }
    }
}

fn type_error(i: usize, expected: &str, got: &Value) -> StoreError {
    StoreError::Internal(format!("column {i} holds {got:?}, expected {expected}"))
}

/// One open transaction of a backend. Statements use `$1`, `$2`, … parameters.
pub trait Tx {
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
}

/// What a database engine provides: transactions, and optionally change notifications.
pub trait Backend: Send + Sync + 'static {
    /// Runs `body` in a consistent read-only transaction.
    fn read(&self, body: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()>;
    /// Runs `body` in a write transaction, serialised against every other writer of the store;
    /// commits if `body` succeeds and rolls back otherwise.
    fn write(&self, body: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()>;
    /// Runs `body` in a write transaction that does not wait for other writers: for rows no
    /// other writer touches (a server's own instance status). Defaults to [`Backend::write`].
    fn write_independent(&self, body: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        self.write(body)
    }
    /// A feed of committed revision changes, if the engine can push them.
    fn changes(&self) -> Result<Option<Box<dyn ChangeFeed>>> {
        Ok(None)
    }
    /// The store's location for messages, without credentials.
    fn describe(&self) -> String;
}

/// The [`Store`] on any [`Backend`].
pub struct SqlStore<B> {
    pub(crate) backend: B,
}

impl<B: Backend> SqlStore<B> {
    fn read<T>(&self, mut body: impl FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
        let mut out = None;
        self.backend.read(&mut |tx| {
            out = Some(body(tx)?);
            Ok(())
        })?;
        out.ok_or_else(|| StoreError::Internal("transaction returned nothing".into()))
    }

    fn write<T>(&self, mut body: impl FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
        let mut out = None;
        self.backend.write(&mut |tx| {
            out = Some(body(tx)?);
            Ok(())
        })?;
        out.ok_or_else(|| StoreError::Internal("transaction returned nothing".into()))
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Internal(e.to_string()))
}

fn opt_to_json<T: Serialize>(value: &Option<T>) -> Result<Value> {
    Ok(value.as_ref().map(to_json).transpose()?.into())
}

fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Internal(format!("unreadable {what} in the store: {e}")))
}

fn opt_from_json<T: DeserializeOwned>(text: Option<String>, what: &str) -> Result<Option<T>> {
    text.map(|t| from_json(&t, what)).transpose()
}

fn service_not_found(id: &str) -> StoreError {
    StoreError::NotFound(format!("serving service '{id}' not found"))
}

const SERVICE_COLUMNS: &str = "id, name, project, tags, created_ms, revision";

fn read_service(mut row: Row) -> Result<Service> {
    Ok(Service {
        id: row.text(0)?,
        name: row.text(1)?,
        project: row.text(2)?,
        tags: from_json(&row.text(3)?, "service tags")?,
        created_ms: row.int(4)?,
        revision: row.int(5)? as u64,
    })
}

fn get_service(tx: &mut dyn Tx, id: &str) -> Result<Service> {
    let sql = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1");
    tx.query(&sql, &[id.into()])?
        .into_iter()
        .next()
        .map(read_service)
        .transpose()?
        .ok_or_else(|| service_not_found(id))
}

const MODEL_COLUMNS: &str =
    "id, name, project, tags, framework, published, uri, size, sha256, created_ms";

/// The registry's order: newest first, ties broken by insertion order.
const MODELS_NEWEST_FIRST: &str = "ORDER BY created_ms DESC, seq DESC";

fn read_model(mut row: Row) -> Result<Model> {
    Ok(Model {
        id: row.text(0)?,
        name: row.text(1)?,
        project: row.opt_text(2)?,
        tags: from_json(&row.text(3)?, "model tags")?,
        framework: row.opt_text(4)?,
        published: row.bool(5)?,
        uri: row.text(6)?,
        size: row.opt_int(7)?.map(|s| s as u64),
        sha256: row.opt_text(8)?,
        created_ms: row.int(9)?,
    })
}

fn get_model(tx: &mut dyn Tx, id: &str) -> Result<Model> {
    let sql = format!("SELECT {MODEL_COLUMNS} FROM models WHERE id = $1");
    tx.query(&sql, &[id.into()])?
        .into_iter()
        .next()
        .map(read_model)
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("model '{id}' not found in the registry")))
}

/// All models, newest first (the registry is small; rules filter in memory).
fn models_newest_first(tx: &mut dyn Tx) -> Result<Vec<Model>> {
    let sql = format!("SELECT {MODEL_COLUMNS} FROM models {MODELS_NEWEST_FIRST}");
    tx.query(&sql, &[])?.into_iter().map(read_model).collect()
}

fn insert_model(tx: &mut dyn Tx, model: &Model) -> Result<()> {
    tx.execute(
        "INSERT INTO models (id, name, project, tags, framework, published, uri, size, sha256,
                             created_ms, seq)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                 (SELECT COALESCE(MAX(seq), 0) + 1 FROM models))",
        &[
            (&model.id).into(),
            (&model.name).into(),
            (&model.project).into(),
            to_json(&model.tags)?.into(),
            (&model.framework).into(),
            model.published.into(),
            (&model.uri).into(),
            model.size.into(),
            (&model.sha256).into(),
            model.created_ms.into(),
        ],
    )?;
    Ok(())
}

fn read_config(tx: &mut dyn Tx, id: &str) -> Result<ServiceConfig> {
    let mut row = tx
        .query(
            "SELECT serving_base_url, triton_grpc_server, kafka_metric_server, metric_log_freq,
                    python, extra_python_packages, triton_grpc_compression
             FROM services WHERE id = $1",
            &[id.into()],
        )?
        .into_iter()
        .next()
        .ok_or_else(|| service_not_found(id))?;
    let mut config = ServiceConfig {
        settings: ServiceSettings {
            serving_base_url: row.opt_text(0)?,
            triton_grpc_server: row.opt_text(1)?,
            kafka_metric_server: row.opt_text(2)?,
            metric_log_freq: row.opt_real(3)?,
            python: row.opt_text(4)?,
            extra_python_packages: row.opt_text(5)?,
            triton_grpc_compression: row.opt_int(6)?.map(|v| v != 0),
        },
        ..ServiceConfig::default()
    };

    let rows = tx.query(
        "SELECT url, name, version, engine, model_id, preprocess, io, aux_config, created_ms
         FROM endpoints WHERE service_id = $1",
        &[id.into()],
    )?;
    for mut r in rows {
        let url = r.text(0)?;
        let endpoint = Endpoint {
            name: r.text(1)?,
            version: r.opt_text(2)?,
            engine: r.text(3)?.parse()?,
            model_id: r.opt_text(4)?,
            preprocess: opt_from_json(r.opt_text(5)?, "preprocess reference")?,
            io: from_json(&r.text(6)?, "endpoint io")?,
            aux_config: opt_from_json(r.opt_text(7)?, "aux config")?,
            created_ms: r.int(8)?,
        };
        config.endpoints.insert(url, endpoint);
    }

    let rows = tx.query(
        "SELECT name, weights, endpoints, endpoint_prefix, sticky FROM canaries
         WHERE service_id = $1",
        &[id.into()],
    )?;
    for mut r in rows {
        let name = r.text(0)?;
        let target = match (r.opt_text(2)?, r.opt_text(3)?) {
            (Some(list), None) => CanaryTarget::Endpoints(from_json(&list, "canary endpoints")?),
            (None, Some(prefix)) => CanaryTarget::Prefix(prefix),
            _ => {
                return Err(StoreError::Internal(format!(
                    "canary '{name}' has neither or both of endpoints and prefix"
                )));
            }
        };
        let canary = Canary {
            name: name.clone(),
            weights: from_json(&r.text(1)?, "canary weights")?,
            target,
            sticky: r.opt_text(4)?,
        };
        config.canaries.insert(name, canary);
    }

    let rows = tx.query(
        "SELECT endpoint, engine, model_name, name_regex, project, tags, only_published,
                max_versions, preprocess, io, aux_config
         FROM auto_update_rules WHERE service_id = $1",
        &[id.into()],
    )?;
    for mut r in rows {
        let endpoint = r.text(0)?;
        let rule = AutoUpdateRule {
            endpoint: endpoint.clone(),
            engine: r.text(1)?.parse()?,
            model_name: r.opt_text(2)?,
            name_regex: r.bool(3)?,
            project: r.opt_text(4)?,
            tags: from_json(&r.text(5)?, "rule tags")?,
            only_published: r.bool(6)?,
            max_versions: r.int(7)?.clamp(1, i64::from(u32::MAX)) as u32,
            preprocess: opt_from_json(r.opt_text(8)?, "preprocess reference")?,
            io: from_json(&r.text(9)?, "rule io")?,
            aux_config: opt_from_json(r.opt_text(10)?, "aux config")?,
        };
        config.auto_update.insert(endpoint, rule);
    }

    let rows = tx.query(
        "SELECT endpoint, target, fraction, tolerance, created_ms FROM shadows
         WHERE service_id = $1",
        &[id.into()],
    )?;
    for mut r in rows {
        let shadow = Shadow {
            endpoint: r.text(0)?,
            target: r.text(1)?,
            fraction: r.opt_real(2)?.unwrap_or(1.0),
            tolerance: r.opt_real(3)?.unwrap_or(Shadow::DEFAULT_TOLERANCE),
            created_ms: r.int(4)?,
        };
        config
            .shadows
            .insert(Shadow::key(&shadow.endpoint, &shadow.target), shadow);
    }

    let rows = tx.query(
        "SELECT endpoint, record FROM payload_logs WHERE service_id = $1",
        &[id.into()],
    )?;
    for mut r in rows {
        let endpoint = r.text(0)?;
        let log: PayloadLog = from_json(&r.text(1)?, "payload log")?;
        config.payload_logs.insert(endpoint, log);
    }

    let rows = tx.query(
        "SELECT endpoint, record FROM drift_references WHERE service_id = $1",
        &[id.into()],
    )?;
    for mut r in rows {
        let endpoint = r.text(0)?;
        let reference: DriftReference = from_json(&r.text(1)?, "drift reference")?;
        config.drift_references.insert(endpoint, reference);
    }

    let rows = tx.query(
        "SELECT canary, record FROM rollouts WHERE service_id = $1",
        &[id.into()],
    )?;
    for mut r in rows {
        let canary = r.text(0)?;
        let rollout: Rollout = from_json(&r.text(1)?, "rollout")?;
        config.rollouts.insert(canary, rollout);
    }

    let rows = tx.query(
        "SELECT endpoint, log_frequency, variables FROM metric_rules WHERE service_id = $1",
        &[id.into()],
    )?;
    for mut r in rows {
        let endpoint = r.text(0)?;
        let rule = MetricRule {
            endpoint: endpoint.clone(),
            log_frequency: r.opt_real(1)?,
            variables: from_json(&r.text(2)?, "metric variables")?,
        };
        config.metrics.insert(endpoint, rule);
    }

    let rows = tx.query(
        "SELECT name, sha256, endpoints, created_ms, expires_ms, role FROM api_keys
         WHERE service_id = $1",
        &[id.into()],
    )?;
    for mut r in rows {
        let name = r.text(0)?;
        let key = crate::ApiKey {
            name: name.clone(),
            sha256: r.text(1)?,
            endpoints: r.opt_text(2)?,
            created_ms: r.int(3)?,
            expires_ms: r.opt_int(4)?,
            role: {
                let role = r.text(5)?;
                crate::Role::parse(&role).ok_or_else(|| {
                    StoreError::Internal(format!("API key '{name}' has an unknown role '{role}'"))
                })?
            },
        };
        config.api_keys.insert(name, key);
    }

    let rows = tx.query(
        "SELECT endpoint, version, model_id FROM auto_update_versions WHERE service_id = $1",
        &[id.into()],
    )?;
    for mut r in rows {
        let endpoint = r.text(0)?;
        let version = r.int(1)?;
        let version = u32::try_from(version)
            .map_err(|_| StoreError::Internal(format!("bad auto-update version {version}")))?;
        config
            .auto_versions
            .entry(endpoint)
            .or_default()
            .insert(version, r.text(2)?);
    }
    Ok(config)
}

/// Recomputes what every auto-update rule serves (see [`crate::auto_update`]).
fn refresh_auto_versions(tx: &mut dyn Tx, config: &mut ServiceConfig) -> Result<()> {
    let rules: Vec<String> = config.auto_update.keys().cloned().collect();
    config.auto_versions.retain(|name, _| rules.contains(name));
    if rules.is_empty() {
        return Ok(());
    }
    let models = models_newest_first(tx)?;
    for (name, rule) in &config.auto_update {
        let query = rule.query();
        let matching: Vec<Model> = models
            .iter()
            .filter(|m| query.matches(m))
            .take(rule.max_versions as usize)
            .cloned()
            .collect();
        let current = config.auto_versions.get(name).cloned().unwrap_or_default();
        let next = crate::auto_update::assign_versions(&current, &matching);
        if next.is_empty() {
            config.auto_versions.remove(name);
        } else {
            config.auto_versions.insert(name.clone(), next);
        }
    }
    Ok(())
}

/// Calls `write` for every key that is new or changed and `delete` for every key that is gone.
fn write_diff<V: PartialEq>(
    tx: &mut dyn Tx,
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
    write: impl Fn(&mut dyn Tx, &str, &V) -> Result<()>,
    delete: impl Fn(&mut dyn Tx, &str) -> Result<()>,
) -> Result<()> {
    for key in old.keys() {
        if !new.contains_key(key) {
            delete(tx, key)?;
        }
    }
    for (key, value) in new {
        match old.get(key) {
            Some(before) if before == value => {}
            Some(_) => {
                delete(tx, key)?;
                write(tx, key, value)?;
            }
            None => write(tx, key, value)?,
        }
    }
    Ok(())
}

/// Statistics rows older than this are folded into hourly buckets.
const STATS_FINE_MS: i64 = StatsRow::FINE_MS;
/// Statistics rows older than this are deleted.
const STATS_KEPT_MS: i64 = 30 * 24 * 3_600_000;

/// Adds `row`'s counts to the stored row of the same key (or stores it).
fn add_stats_row(
    tx: &mut dyn Tx,
    service_id: &str,
    instance_id: &str,
    row: &StatsRow,
) -> Result<()> {
    let key = [
        Value::from(service_id),
        Value::from(row.kind.as_str()),
        Value::from(row.endpoint.as_str()),
        Value::from(row.target.as_str()),
        Value::from(row.bucket_ms),
        Value::from(instance_id),
    ];
    let stored = tx.query(
        "SELECT counts FROM stats WHERE service_id = $1 AND kind = $2 AND endpoint = $3
             AND target = $4 AND bucket_ms = $5 AND instance_id = $6",
        &key,
    )?;
    let mut sum = row.clone();
    if let Some(mut stored) = stored.into_iter().next() {
        let counts: BTreeMap<String, u64> = from_json(&stored.text(0)?, "stats counts")?;
        sum.merge(&counts);
        tx.execute(
            "DELETE FROM stats WHERE service_id = $1 AND kind = $2 AND endpoint = $3
                 AND target = $4 AND bucket_ms = $5 AND instance_id = $6",
            &key,
        )?;
    }
    let mut params = key.to_vec();
    params.push(to_json(&sum.counts)?.into());
    tx.execute(
        "INSERT INTO stats (service_id, kind, endpoint, target, bucket_ms, instance_id, counts)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &params,
    )?;
    Ok(())
}

/// Folds `instance_id`'s rows older than an hour into hourly buckets; deletes the service's rows
/// older than 30 days.
fn compact_stats(tx: &mut dyn Tx, service_id: &str, instance_id: &str, now_ms: i64) -> Result<()> {
    tx.execute(
        "DELETE FROM stats WHERE service_id = $1 AND bucket_ms < $2",
        &[service_id.into(), (now_ms - STATS_KEPT_MS).into()],
    )?;
    let old = tx.query(
        "SELECT kind, endpoint, target, bucket_ms, counts FROM stats
         WHERE instance_id = $1 AND service_id = $2 AND bucket_ms < $3",
        &[
            instance_id.into(),
            service_id.into(),
            (now_ms - STATS_FINE_MS).into(),
        ],
    )?;
    let mut hourly: Vec<StatsRow> = Vec::new();
    for mut r in old {
        let bucket_ms = r.int(3)?;
        if bucket_ms % STATS_FINE_MS == 0 {
            continue;
        }
        let row = StatsRow {
            kind: r.text(0)?,
            endpoint: r.text(1)?,
            target: r.text(2)?,
            bucket_ms,
            counts: from_json(&r.text(4)?, "stats counts")?,
        };
        tx.execute(
            "DELETE FROM stats WHERE service_id = $1 AND kind = $2 AND endpoint = $3
                 AND target = $4 AND bucket_ms = $5 AND instance_id = $6",
            &[
                service_id.into(),
                row.kind.as_str().into(),
                row.endpoint.as_str().into(),
                row.target.as_str().into(),
                bucket_ms.into(),
                instance_id.into(),
            ],
        )?;
        let hour = bucket_ms - bucket_ms.rem_euclid(STATS_FINE_MS);
        match hourly.iter_mut().find(|h| {
            h.bucket_ms == hour
                && h.kind == row.kind
                && h.endpoint == row.endpoint
                && h.target == row.target
        }) {
            Some(h) => h.merge(&row.counts),
            None => hourly.push(StatsRow {
                bucket_ms: hour,
                ..row
            }),
        }
    }
    for row in &hourly {
        add_stats_row(tx, service_id, instance_id, row)?;
    }
    Ok(())
}

/// Deletes one keyed row of a per-service table.
fn delete_keyed(tx: &mut dyn Tx, table: &str, key: &str, id: &str, value: &str) -> Result<()> {
    tx.execute(
        &format!("DELETE FROM {table} WHERE service_id = $1 AND {key} = $2"),
        &[id.into(), value.into()],
    )?;
    Ok(())
}

/// Writes the difference between two configurations of service `id`.
fn write_config(tx: &mut dyn Tx, id: &str, old: &ServiceConfig, new: &ServiceConfig) -> Result<()> {
    if old.settings != new.settings {
        let s = &new.settings;
        tx.execute(
            "UPDATE services SET serving_base_url = $2, triton_grpc_server = $3,
                 kafka_metric_server = $4, metric_log_freq = $5, python = $6,
                 extra_python_packages = $7, triton_grpc_compression = $8 WHERE id = $1",
            &[
                id.into(),
                (&s.serving_base_url).into(),
                (&s.triton_grpc_server).into(),
                (&s.kafka_metric_server).into(),
                s.metric_log_freq.into(),
                (&s.python).into(),
                (&s.extra_python_packages).into(),
                s.triton_grpc_compression
                    .map_or(Value::Null, |on| Value::Int(i64::from(on))),
            ],
        )?;
    }
    write_diff(
        tx,
        &old.endpoints,
        &new.endpoints,
        |tx, url, e| {
            tx.execute(
                "INSERT INTO endpoints (service_id, url, name, version, engine, model_id,
                                        preprocess, io, aux_config, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    id.into(),
                    url.into(),
                    (&e.name).into(),
                    (&e.version).into(),
                    e.engine.as_str().into(),
                    (&e.model_id).into(),
                    opt_to_json(&e.preprocess)?,
                    to_json(&e.io)?.into(),
                    opt_to_json(&e.aux_config)?,
                    e.created_ms.into(),
                ],
            )?;
            Ok(())
        },
        |tx, url| delete_keyed(tx, "endpoints", "url", id, url),
    )?;
    write_diff(
        tx,
        &old.canaries,
        &new.canaries,
        |tx, name, c| {
            let (list, prefix) = match &c.target {
                CanaryTarget::Endpoints(list) => (Some(to_json(list)?), None),
                CanaryTarget::Prefix(p) => (None, Some(p.clone())),
            };
            tx.execute(
                "INSERT INTO canaries (service_id, name, weights, endpoints, endpoint_prefix, sticky)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    id.into(),
                    name.into(),
                    to_json(&c.weights)?.into(),
                    list.into(),
                    prefix.into(),
                    (&c.sticky).into(),
                ],
            )?;
            Ok(())
        },
        |tx, name| delete_keyed(tx, "canaries", "name", id, name),
    )?;
    write_diff(
        tx,
        &old.auto_update,
        &new.auto_update,
        |tx, endpoint, r| {
            tx.execute(
                "INSERT INTO auto_update_rules
                 (service_id, endpoint, engine, model_name, name_regex, project, tags,
                  only_published, max_versions, preprocess, io, aux_config)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    id.into(),
                    endpoint.into(),
                    r.engine.as_str().into(),
                    (&r.model_name).into(),
                    r.name_regex.into(),
                    (&r.project).into(),
                    to_json(&r.tags)?.into(),
                    r.only_published.into(),
                    r.max_versions.into(),
                    opt_to_json(&r.preprocess)?,
                    to_json(&r.io)?.into(),
                    opt_to_json(&r.aux_config)?,
                ],
            )?;
            Ok(())
        },
        |tx, endpoint| delete_keyed(tx, "auto_update_rules", "endpoint", id, endpoint),
    )?;
    write_diff(
        tx,
        &old.shadows,
        &new.shadows,
        |tx, _, s| {
            tx.execute(
                "INSERT INTO shadows (service_id, endpoint, target, fraction, tolerance, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    id.into(),
                    (&s.endpoint).into(),
                    (&s.target).into(),
                    s.fraction.into(),
                    s.tolerance.into(),
                    s.created_ms.into(),
                ],
            )?;
            Ok(())
        },
        |tx, key| {
            let (endpoint, target) = key.split_once(' ').unwrap_or((key, ""));
            tx.execute(
                "DELETE FROM shadows WHERE service_id = $1 AND endpoint = $2 AND target = $3",
                &[id.into(), endpoint.into(), target.into()],
            )?;
            Ok(())
        },
    )?;
    write_diff(
        tx,
        &old.payload_logs,
        &new.payload_logs,
        |tx, endpoint, log| {
            tx.execute(
                "INSERT INTO payload_logs (service_id, endpoint, record) VALUES ($1, $2, $3)",
                &[id.into(), endpoint.into(), to_json(log)?.into()],
            )?;
            Ok(())
        },
        |tx, endpoint| delete_keyed(tx, "payload_logs", "endpoint", id, endpoint),
    )?;
    write_diff(
        tx,
        &old.drift_references,
        &new.drift_references,
        |tx, endpoint, reference| {
            tx.execute(
                "INSERT INTO drift_references (service_id, endpoint, record) VALUES ($1, $2, $3)",
                &[id.into(), endpoint.into(), to_json(reference)?.into()],
            )?;
            Ok(())
        },
        |tx, endpoint| delete_keyed(tx, "drift_references", "endpoint", id, endpoint),
    )?;
    write_diff(
        tx,
        &old.rollouts,
        &new.rollouts,
        |tx, canary, r| {
            tx.execute(
                "INSERT INTO rollouts (service_id, canary, record) VALUES ($1, $2, $3)",
                &[id.into(), canary.into(), to_json(r)?.into()],
            )?;
            Ok(())
        },
        |tx, canary| delete_keyed(tx, "rollouts", "canary", id, canary),
    )?;
    write_diff(
        tx,
        &old.metrics,
        &new.metrics,
        |tx, endpoint, m| {
            tx.execute(
                "INSERT INTO metric_rules (service_id, endpoint, log_frequency, variables)
                 VALUES ($1, $2, $3, $4)",
                &[
                    id.into(),
                    endpoint.into(),
                    m.log_frequency.into(),
                    to_json(&m.variables)?.into(),
                ],
            )?;
            Ok(())
        },
        |tx, endpoint| delete_keyed(tx, "metric_rules", "endpoint", id, endpoint),
    )?;
    write_diff(
        tx,
        &old.api_keys,
        &new.api_keys,
        |tx, name, k| {
            tx.execute(
                "INSERT INTO api_keys
                 (service_id, name, sha256, endpoints, created_ms, expires_ms, role)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    id.into(),
                    name.into(),
                    (&k.sha256).into(),
                    (&k.endpoints).into(),
                    k.created_ms.into(),
                    k.expires_ms.into(),
                    k.role.as_str().into(),
                ],
            )?;
            Ok(())
        },
        |tx, name| delete_keyed(tx, "api_keys", "name", id, name),
    )?;
    write_diff(
        tx,
        &old.auto_versions,
        &new.auto_versions,
        |tx, endpoint, versions| {
            for (version, model_id) in versions {
                tx.execute(
                    "INSERT INTO auto_update_versions (service_id, endpoint, version, model_id)
                     VALUES ($1, $2, $3, $4)",
                    &[
                        id.into(),
                        endpoint.into(),
                        (*version).into(),
                        model_id.into(),
                    ],
                )?;
            }
            Ok(())
        },
        |tx, endpoint| delete_keyed(tx, "auto_update_versions", "endpoint", id, endpoint),
    )?;
    Ok(())
}

/// Records a write in the audit trail (inside the write's transaction).
fn record(
    tx: &mut dyn Tx,
    change: &Change,
    service_id: Option<&str>,
    revision: Option<u64>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO audit (time_ms, key_name, operation, target, service_id, revision)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            now_ms().into(),
            (&change.key).into(),
            (&change.operation).into(),
            (&change.target).into(),
            service_id.map(str::to_string).into(),
            revision.into(),
        ],
    )?;
    Ok(())
}

/// Refuses a write made against another revision than the service's (`If-Match`).
fn check_revision(service: &Service, change: &Change) -> Result<()> {
    match change.if_revision {
        Some(expected) if expected != service.revision => Err(StoreError::Stale(format!(
            "service '{}' is at revision {}, not {expected}: it changed since it was read; \
             read it again and retry",
            service.id, service.revision
        ))),
        _ => Ok(()),
    }
}

fn bump_revision(tx: &mut dyn Tx, id: &str) -> Result<()> {
    tx.execute(
        "UPDATE services SET revision = revision + 1 WHERE id = $1",
        &[id.into()],
    )?;
    Ok(())
}

/// After a registry change: recomputes the auto-update versions of every service with rules, and
/// writes and bumps the revision of those whose served versions changed.
fn refresh_services_watching(tx: &mut dyn Tx) -> Result<()> {
    let ids = tx
        .query("SELECT DISTINCT service_id FROM auto_update_rules", &[])?
        .into_iter()
        .map(|mut r| r.text(0))
        .collect::<Result<Vec<_>>>()?;
    for id in ids {
        let old = read_config(tx, &id)?;
        let mut new = old.clone();
        refresh_auto_versions(tx, &mut new)?;
        if new != old {
            write_config(tx, &id, &old, &new)?;
            bump_revision(tx, &id)?;
        }
    }
    Ok(())
}

fn read_instances(tx: &mut dyn Tx, service_id: &str) -> Result<Vec<InstanceStatus>> {
    let rows = tx.query(
        "SELECT id, service_id, host, port, pid, started_ms, heartbeat_ms, revision, ready,
                endpoints, grpc_port
         FROM instances WHERE service_id = $1 ORDER BY heartbeat_ms DESC, id",
        &[service_id.into()],
    )?;
    rows.into_iter()
        .map(|mut r| {
            Ok(InstanceStatus {
                id: r.text(0)?,
                service_id: r.text(1)?,
                host: r.text(2)?,
                port: r.int(3)?.clamp(0, i64::from(u16::MAX)) as u16,
                pid: r.int(4)?.clamp(0, i64::from(u32::MAX)) as u32,
                started_ms: r.int(5)?,
                heartbeat_ms: r.int(6)?,
                revision: r.int(7)? as u64,
                ready: r.bool(8)?,
                endpoints: from_json(&r.text(9)?, "instance endpoints")?,
                grpc_port: r.opt_int(10)?.and_then(|p| u16::try_from(p).ok()),
            })
        })
        .collect()
}

fn insert_service(tx: &mut dyn Tx, service: &Service) -> Result<()> {
    tx.execute(
        "INSERT INTO services (id, name, project, tags, created_ms, revision)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            (&service.id).into(),
            (&service.name).into(),
            (&service.project).into(),
            to_json(&service.tags)?.into(),
            service.created_ms.into(),
            service.revision.into(),
        ],
    )?;
    Ok(())
}

impl<B: Backend> Store for SqlStore<B> {
    fn create_service(&self, new: &NewService, change: &Change) -> Result<Service> {
        self.write(|tx| {
            let service = Service {
                id: new_id(),
                name: new.name.clone(),
                project: new.project.clone(),
                tags: new.tags.clone(),
                created_ms: now_ms(),
                revision: 1,
            };
            insert_service(tx, &service)?;
            // The new record's own path: the caller could not name its id.
            let change = Change {
                target: format!("{}/{}", change.target, service.id),
                ..change.clone()
            };
            record(tx, &change, Some(&service.id), Some(service.revision))?;
            get_service(tx, &service.id)
        })
    }

    fn list_services(&self) -> Result<Vec<Service>> {
        self.read(|tx| {
            let sql = format!("SELECT {SERVICE_COLUMNS} FROM services ORDER BY created_ms, id");
            tx.query(&sql, &[])?.into_iter().map(read_service).collect()
        })
    }

    fn service(&self, id: &str) -> Result<Service> {
        self.read(|tx| get_service(tx, id))
    }

    fn revision(&self, id: &str) -> Result<u64> {
        self.read(|tx| {
            let mut row = tx
                .query("SELECT revision FROM services WHERE id = $1", &[id.into()])?
                .into_iter()
                .next()
                .ok_or_else(|| service_not_found(id))?;
            Ok(row.int(0)? as u64)
        })
    }

    fn snapshot(&self, id: &str) -> Result<Snapshot> {
        self.read(|tx| {
            Ok(Snapshot {
                service: get_service(tx, id)?,
                config: read_config(tx, id)?,
            })
        })
    }

    fn update_service(
        &self,
        id: &str,
        change: &Change,
        edit: &mut ConfigEdit<'_>,
    ) -> Result<Service> {
        self.write(|tx| {
            check_revision(&get_service(tx, id)?, change)?;
            let old = read_config(tx, id)?;
            let mut new = old.clone();
            edit(&mut new)?;
            refresh_auto_versions(tx, &mut new)?;
            if new != old {
                write_config(tx, id, &old, &new)?;
                bump_revision(tx, id)?;
            }
            let service = get_service(tx, id)?;
            record(tx, change, Some(id), Some(service.revision))?;
            Ok(service)
        })
    }

    fn add_model(&self, new: &NewModel, change: &Change) -> Result<Model> {
        self.write(|tx| {
            let model = Model {
                id: new_id(),
                name: new.name.clone(),
                project: new.project.clone(),
                tags: new.tags.clone(),
                framework: new.framework.clone(),
                published: new.published,
                uri: new.uri.clone(),
                size: new.size,
                sha256: new.sha256.clone(),
                created_ms: now_ms(),
            };
            insert_model(tx, &model)?;
            refresh_services_watching(tx)?;
            let change = Change {
                target: format!("{}/{}", change.target, model.id),
                ..change.clone()
            };
            record(tx, &change, None, None)?;
            get_model(tx, &model.id)
        })
    }

    fn model(&self, id: &str) -> Result<Model> {
        self.read(|tx| get_model(tx, id))
    }

    fn query_models(&self, query: &ModelQuery) -> Result<Vec<Model>> {
        let all = self.read(models_newest_first)?;
        Ok(all
            .into_iter()
            .filter(|m| query.matches(m))
            .take(query.limit.unwrap_or(usize::MAX))
            .collect())
    }

    fn update_model(
        &self,
        id: &str,
        change: &Change,
        edit: &mut dyn FnMut(&mut Model) -> Result<()>,
    ) -> Result<Model> {
        self.write(|tx| {
            let old = get_model(tx, id)?;
            let mut new = old.clone();
            edit(&mut new)?;
            if new != old {
                tx.execute(
                    "UPDATE models SET name = $2, project = $3, tags = $4, framework = $5,
                         published = $6
                     WHERE id = $1",
                    &[
                        id.into(),
                        (&new.name).into(),
                        (&new.project).into(),
                        to_json(&new.tags)?.into(),
                        (&new.framework).into(),
                        new.published.into(),
                    ],
                )?;
                refresh_services_watching(tx)?;
            }
            record(tx, change, None, None)?;
            Ok(new)
        })
    }

    fn audit(&self, since_ms: Option<i64>, limit: usize) -> Result<Vec<AuditEntry>> {
        self.read(|tx| {
            let rows = tx.query(
                "SELECT time_ms, key_name, operation, target, service_id, revision FROM audit
                 WHERE time_ms >= $1 ORDER BY seq DESC LIMIT $2",
                &[
                    since_ms.unwrap_or(i64::MIN).into(),
                    (limit.min(i64::MAX as usize) as i64).into(),
                ],
            )?;
            let mut entries = rows
                .into_iter()
                .map(|mut r| {
                    Ok(AuditEntry {
                        time_ms: r.int(0)?,
                        key: r.text(1)?,
                        operation: r.text(2)?,
                        target: r.text(3)?,
                        service_id: r.opt_text(4)?,
                        revision: r.opt_int(5)?.map(|v| v.max(0) as u64),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            entries.reverse();
            Ok(entries)
        })
    }

    fn put_instance(&self, status: &InstanceStatus) -> Result<()> {
        // Heartbeats of many servers must not queue behind each other or behind CLI writes.
        self.backend.write_independent(&mut |tx| {
            tx.execute(
                "DELETE FROM instances WHERE id = $1",
                &[(&status.id).into()],
            )?;
            tx.execute(
                "INSERT INTO instances
                 (id, service_id, host, port, pid, started_ms, heartbeat_ms, revision, ready,
                  endpoints, grpc_port)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    (&status.id).into(),
                    (&status.service_id).into(),
                    (&status.host).into(),
                    status.port.into(),
                    status.pid.into(),
                    status.started_ms.into(),
                    status.heartbeat_ms.into(),
                    status.revision.into(),
                    status.ready.into(),
                    to_json(&status.endpoints)?.into(),
                    status.grpc_port.into(),
                ],
            )?;
            Ok(())
        })
    }

    fn instances(&self, service_id: &str) -> Result<Vec<InstanceStatus>> {
        self.read(|tx| read_instances(tx, service_id))
    }

    fn remove_instance(&self, id: &str) -> Result<()> {
        self.backend.write_independent(&mut |tx| {
            tx.execute("DELETE FROM instances WHERE id = $1", &[id.into()])?;
            Ok(())
        })
    }

    fn add_stats(&self, service_id: &str, instance_id: &str, rows: &[StatsRow]) -> Result<()> {
        let now = crate::now_ms();
        self.backend.write_independent(&mut |tx| {
            for row in rows {
                add_stats_row(tx, service_id, instance_id, row)?;
            }
            compact_stats(tx, service_id, instance_id, now)
        })
    }

    fn lease(
        &self,
        service_id: &str,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<Lease> {
        let mut lease = Lease {
            held: false,
            taken_from: None,
        };
        self.backend.write_independent(&mut |tx| {
            let current = tx
                .query(
                    "SELECT holder, until_ms FROM leases WHERE service_id = $1 AND name = $2",
                    &[service_id.into(), name.into()],
                )?
                .into_iter()
                .next();
            let previous = match current {
                Some(mut row) => {
                    let (owner, until) = (row.text(0)?, row.int(1)?);
                    if owner != holder && until > now_ms {
                        lease = Lease {
                            held: false,
                            taken_from: None,
                        };
                        return Ok(());
                    }
                    tx.execute(
                        "DELETE FROM leases WHERE service_id = $1 AND name = $2",
                        &[service_id.into(), name.into()],
                    )?;
                    (owner != holder).then_some(owner)
                }
                None => None,
            };
            tx.execute(
                "INSERT INTO leases (service_id, name, holder, until_ms) VALUES ($1, $2, $3, $4)",
                &[
                    service_id.into(),
                    name.into(),
                    holder.into(),
                    (now_ms + ttl_ms).into(),
                ],
            )?;
            lease = Lease {
                held: true,
                taken_from: previous,
            };
            Ok(())
        })?;
        Ok(lease)
    }

    fn stats(
        &self,
        service_id: &str,
        kind: &str,
        endpoint: &str,
        since_ms: i64,
    ) -> Result<Vec<StatsRow>> {
        self.read(|tx| {
            let rows = tx.query(
                "SELECT target, bucket_ms, counts FROM stats
                 WHERE service_id = $1 AND kind = $2 AND endpoint = $3 AND bucket_ms >= $4
                 ORDER BY bucket_ms, target",
                &[
                    service_id.into(),
                    kind.into(),
                    endpoint.into(),
                    since_ms.into(),
                ],
            )?;
            let mut summed: Vec<StatsRow> = Vec::new();
            for mut r in rows {
                let target = r.text(0)?;
                let bucket_ms = r.int(1)?;
                let counts: BTreeMap<String, u64> = from_json(&r.text(2)?, "stats counts")?;
                match summed
                    .iter_mut()
                    .rev()
                    .take_while(|s| s.bucket_ms == bucket_ms)
                    .find(|s| s.target == target)
                {
                    Some(row) => row.merge(&counts),
                    None => summed.push(StatsRow {
                        kind: kind.to_string(),
                        endpoint: endpoint.to_string(),
                        target,
                        bucket_ms,
                        counts,
                    }),
                }
            }
            Ok(summed)
        })
    }

    fn changes(&self) -> Result<Option<Box<dyn ChangeFeed>>> {
        self.backend.changes()
    }

    fn describe(&self) -> String {
        self.backend.describe()
    }

    fn export(&self) -> Result<Dump> {
        self.read(|tx| {
            let sql = format!("SELECT {SERVICE_COLUMNS} FROM services ORDER BY created_ms, id");
            let services = tx
                .query(&sql, &[])?
                .into_iter()
                .map(read_service)
                .collect::<Result<Vec<_>>>()?;
            let services = services
                .into_iter()
                .map(|service| {
                    let config = read_config(tx, &service.id)?;
                    Ok(DumpService { service, config })
                })
                .collect::<Result<Vec<_>>>()?;
            let mut models = models_newest_first(tx)?;
            models.reverse();
            Ok(Dump::new(services, models))
        })
    }

    fn import(&self, dump: &Dump, change: &Change) -> Result<()> {
        dump.check()?;
        self.write(|tx| {
            let mut taken = Vec::new();
            for s in &dump.services {
                if !tx
                    .query("SELECT id FROM services WHERE id = $1", &[(&s.service.id).into()])?
                    .is_empty()
                {
                    taken.push(format!("service {}", s.service.id));
                }
            }
            for m in &dump.models {
                if !tx
                    .query("SELECT id FROM models WHERE id = $1", &[(&m.id).into()])?
                    .is_empty()
                {
                    taken.push(format!("model {}", m.id));
                }
            }
            if !taken.is_empty() {
                return Err(StoreError::InvalidInput(format!(
                    "the target store already holds {} of the exported records ({}{}); nothing was imported",
                    taken.len(),
                    taken[..taken.len().min(3)].join(", "),
                    if taken.len() > 3 { ", …" } else { "" }
                )));
            }
            // Oldest first, so the registry keeps its order.
            for model in &dump.models {
                insert_model(tx, model)?;
            }
            for s in &dump.services {
                insert_service(tx, &s.service)?;
                write_config(tx, &s.service.id, &ServiceConfig::default(), &s.config)?;
            }
            record(tx, change, None, None)?;
            Ok(())
        })
    }
}
