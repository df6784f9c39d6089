//! The embedded store: one SQLite file in WAL mode. Writers take the write lock up front
//! (`BEGIN IMMEDIATE`) and wait for each other up to a busy timeout, so concurrent CLI processes
//! serialise instead of failing or losing updates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{
    AutoUpdateRule, Canary, CanaryTarget, ConfigEdit, Endpoint, InstanceStatus, Model, ModelQuery,
    NewModel, NewService, Result, Service, ServiceConfig, ServiceSettings, Snapshot, Store,
    StoreError, new_id, now_ms,
};

/// Schema migrations, applied in order; the database's `user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_instances.sql"),
    include_str!("../migrations/0003_auto_update_versions.sql"),
    include_str!("../migrations/0004_instance_grpc_port.sql"),
];

/// How long a writer waits for another one before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::SqliteFailure(code, _)
                if matches!(
                    code.code,
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::CannotOpen
                        | rusqlite::ErrorCode::ReadOnly
                        | rusqlite::ErrorCode::PermissionDenied
                ) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            other => StoreError::Internal(other.to_string()),
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = SqliteStore {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self) -> Result<()> {
        let conn = self.conn.get_mut().map_err(|_| poisoned())?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let applied: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let applied = usize::try_from(applied).unwrap_or(usize::MAX);
        if applied > MIGRATIONS.len() {
            return Err(StoreError::Internal(format!(
                "the store at {} has schema version {applied}, newer than this serval ({}); upgrade serval",
                self.path.display(),
                MIGRATIONS.len()
            )));
        }
        for sql in &MIGRATIONS[applied..] {
            tx.execute_batch(sql)?;
        }
        tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
        tx.commit()?;
        Ok(())
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| poisoned())
    }
}

fn poisoned() -> StoreError {
    StoreError::Internal("store connection poisoned by an earlier panic".to_string())
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Internal(e.to_string()))
}

fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Internal(format!("unreadable {what} in the store: {e}")))
}

fn opt_from_json<T: DeserializeOwned>(text: Option<String>, what: &str) -> Result<Option<T>> {
    text.map(|t| from_json(&t, what)).transpose()
}

fn opt_to_json<T: Serialize>(value: &Option<T>) -> Result<Option<String>> {
    value.as_ref().map(to_json).transpose()
}

const SERVICE_COLUMNS: &str = "id, name, project, tags, created_ms, revision";

fn read_service(row: &Row<'_>) -> rusqlite::Result<(Service, String)> {
    let tags: String = row.get(3)?;
    Ok((
        Service {
            id: row.get(0)?,
            name: row.get(1)?,
            project: row.get(2)?,
            tags: Vec::new(),
            created_ms: row.get(4)?,
            revision: row.get::<_, i64>(5)? as u64,
        },
        tags,
    ))
}

fn finish_service((mut service, tags): (Service, String)) -> Result<Service> {
    service.tags = from_json(&tags, "service tags")?;
    Ok(service)
}

fn get_service(conn: &Connection, id: &str) -> Result<Service> {
    conn.query_row(
        &format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = ?1"),
        [id],
        read_service,
    )
    .optional()?
    .map(finish_service)
    .transpose()?
    .ok_or_else(|| StoreError::NotFound(format!("serving service '{id}' not found")))
}

const MODEL_COLUMNS: &str =
    "id, name, project, tags, framework, published, uri, size, sha256, created_ms";

fn read_model(row: &Row<'_>) -> rusqlite::Result<(Model, String)> {
    let tags: String = row.get(3)?;
    Ok((
        Model {
            id: row.get(0)?,
            name: row.get(1)?,
            project: row.get(2)?,
            tags: Vec::new(),
            framework: row.get(4)?,
            published: row.get(5)?,
            uri: row.get(6)?,
            size: row.get::<_, Option<i64>>(7)?.map(|s| s as u64),
            sha256: row.get(8)?,
            created_ms: row.get(9)?,
        },
        tags,
    ))
}

fn finish_model((mut model, tags): (Model, String)) -> Result<Model> {
    model.tags = from_json(&tags, "model tags")?;
    Ok(model)
}

fn get_model(conn: &Connection, id: &str) -> Result<Model> {
    conn.query_row(
        &format!("SELECT {MODEL_COLUMNS} FROM models WHERE id = ?1"),
        [id],
        read_model,
    )
    .optional()?
    .map(finish_model)
    .transpose()?
    .ok_or_else(|| StoreError::NotFound(format!("model '{id}' not found in the registry")))
}

fn read_config(conn: &Connection, id: &str) -> Result<ServiceConfig> {
    let settings = conn
        .query_row(
            "SELECT serving_base_url, triton_grpc_server, kafka_metric_server, metric_log_freq, python
             FROM services WHERE id = ?1",
            [id],
            |r| {
                Ok(ServiceSettings {
                    serving_base_url: r.get(0)?,
                    triton_grpc_server: r.get(1)?,
                    kafka_metric_server: r.get(2)?,
                    metric_log_freq: r.get(3)?,
                    python: r.get(4)?,
                })
            },
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("serving service '{id}' not found")))?;
    let mut config = ServiceConfig {
        settings,
        ..ServiceConfig::default()
    };

    let mut stmt = conn.prepare(
        "SELECT url, name, version, engine, model_id, preprocess, io, aux_config, created_ms
         FROM endpoints WHERE service_id = ?1",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, Option<String>>(7)?,
            r.get::<_, i64>(8)?,
        ))
    })?;
    for row in rows {
        let (url, name, version, engine, model_id, preprocess, io, aux, created_ms) = row?;
        let endpoint = Endpoint {
            name,
            version,
            engine: engine.parse()?,
            model_id,
            preprocess: opt_from_json(preprocess, "preprocess reference")?,
            io: from_json(&io, "endpoint io")?,
            aux_config: opt_from_json(aux, "aux config")?,
            created_ms,
        };
        config.endpoints.insert(url, endpoint);
    }

    let mut stmt = conn.prepare(
        "SELECT name, weights, endpoints, endpoint_prefix FROM canaries WHERE service_id = ?1",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
        ))
    })?;
    for row in rows {
        let (name, weights, endpoints, prefix) = row?;
        let target = match (endpoints, prefix) {
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
            weights: from_json(&weights, "canary weights")?,
            target,
        };
        config.canaries.insert(name, canary);
    }

    let mut stmt = conn.prepare(
        "SELECT endpoint, engine, model_name, name_regex, project, tags, only_published,
                max_versions, preprocess, io, aux_config
         FROM auto_update_rules WHERE service_id = ?1",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, bool>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, bool>(6)?,
            r.get::<_, i64>(7)?,
            r.get::<_, Option<String>>(8)?,
            r.get::<_, String>(9)?,
            r.get::<_, Option<String>>(10)?,
        ))
    })?;
    for row in rows {
        let (
            endpoint,
            engine,
            model_name,
            name_regex,
            project,
            tags,
            only_published,
            max,
            pre,
            io,
            aux,
        ) = row?;
        let rule = AutoUpdateRule {
            endpoint: endpoint.clone(),
            engine: engine.parse()?,
            model_name,
            name_regex,
            project,
            tags: from_json(&tags, "rule tags")?,
            only_published,
            max_versions: max.clamp(1, i64::from(u32::MAX)) as u32,
            preprocess: opt_from_json(pre, "preprocess reference")?,
            io: from_json(&io, "rule io")?,
            aux_config: opt_from_json(aux, "aux config")?,
        };
        config.auto_update.insert(endpoint, rule);
    }

    let mut stmt = conn.prepare(
        "SELECT endpoint, log_frequency, variables FROM metric_rules WHERE service_id = ?1",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<f64>>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (endpoint, log_frequency, variables) = row?;
        let rule = crate::MetricRule {
            endpoint: endpoint.clone(),
            log_frequency,
            variables: from_json(&variables, "metric variables")?,
        };
        config.metrics.insert(endpoint, rule);
    }

    let mut stmt = conn.prepare(
        "SELECT endpoint, version, model_id FROM auto_update_versions WHERE service_id = ?1",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (endpoint, version, model_id) = row?;
        let version = u32::try_from(version)
            .map_err(|_| StoreError::Internal(format!("bad auto-update version {version}")))?;
        config
            .auto_versions
            .entry(endpoint)
            .or_default()
            .insert(version, model_id);
    }
    Ok(config)
}

/// All models, newest first (the registry is small; rules filter in memory).
fn models_newest_first(conn: &Connection) -> Result<Vec<Model>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {MODEL_COLUMNS} FROM models ORDER BY created_ms DESC, rowid DESC"
    ))?;
    let rows = stmt.query_map([], read_model)?;
    rows.map(|r| finish_model(r?)).collect()
}

/// Recomputes what every auto-update rule serves (see [`crate::auto_update`]).
fn refresh_auto_versions(conn: &Connection, config: &mut ServiceConfig) -> Result<()> {
    let rules: Vec<String> = config.auto_update.keys().cloned().collect();
    config.auto_versions.retain(|name, _| rules.contains(name));
    if rules.is_empty() {
        return Ok(());
    }
    let models = models_newest_first(conn)?;
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
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
    mut write: impl FnMut(&str, &V) -> Result<()>,
    mut delete: impl FnMut(&str) -> Result<()>,
) -> Result<()> {
    for key in old.keys().filter(|k| !new.contains_key(*k)) {
        delete(key)?;
    }
    for (key, value) in new {
        if old.get(key) != Some(value) {
            write(key, value)?;
        }
    }
    Ok(())
}

fn write_config(
    tx: &Transaction<'_>,
    id: &str,
    old: &ServiceConfig,
    new: &ServiceConfig,
) -> Result<()> {
    if old.settings != new.settings {
        let s = &new.settings;
        tx.execute(
            "UPDATE services SET serving_base_url = ?2, triton_grpc_server = ?3,
                 kafka_metric_server = ?4, metric_log_freq = ?5, python = ?6 WHERE id = ?1",
            params![
                id,
                s.serving_base_url,
                s.triton_grpc_server,
                s.kafka_metric_server,
                s.metric_log_freq,
                s.python
            ],
        )?;
    }
    write_diff(
        &old.endpoints,
        &new.endpoints,
        |url, e| {
            tx.execute(
                "INSERT OR REPLACE INTO endpoints
                 (service_id, url, name, version, engine, model_id, preprocess, io, aux_config, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    id,
                    url,
                    e.name,
                    e.version,
                    e.engine.as_str(),
                    e.model_id,
                    opt_to_json(&e.preprocess)?,
                    to_json(&e.io)?,
                    opt_to_json(&e.aux_config)?,
                    e.created_ms
                ],
            )?;
            Ok(())
        },
        |url| {
            tx.execute(
                "DELETE FROM endpoints WHERE service_id = ?1 AND url = ?2",
                params![id, url],
            )?;
            Ok(())
        },
    )?;
    write_diff(
        &old.canaries,
        &new.canaries,
        |name, c| {
            let (list, prefix) = match &c.target {
                CanaryTarget::Endpoints(list) => (Some(to_json(list)?), None),
                CanaryTarget::Prefix(p) => (None, Some(p.clone())),
            };
            tx.execute(
                "INSERT OR REPLACE INTO canaries (service_id, name, weights, endpoints, endpoint_prefix)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, name, to_json(&c.weights)?, list, prefix],
            )?;
            Ok(())
        },
        |name| {
            tx.execute(
                "DELETE FROM canaries WHERE service_id = ?1 AND name = ?2",
                params![id, name],
            )?;
            Ok(())
        },
    )?;
    write_diff(
        &old.auto_update,
        &new.auto_update,
        |endpoint, r| {
            tx.execute(
                "INSERT OR REPLACE INTO auto_update_rules
                 (service_id, endpoint, engine, model_name, name_regex, project, tags, only_published,
                  max_versions, preprocess, io, aux_config)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    id,
                    endpoint,
                    r.engine.as_str(),
                    r.model_name,
                    r.name_regex,
                    r.project,
                    to_json(&r.tags)?,
                    r.only_published,
                    r.max_versions,
                    opt_to_json(&r.preprocess)?,
                    to_json(&r.io)?,
                    opt_to_json(&r.aux_config)?
                ],
            )?;
            Ok(())
        },
        |endpoint| {
            tx.execute(
                "DELETE FROM auto_update_rules WHERE service_id = ?1 AND endpoint = ?2",
                params![id, endpoint],
            )?;
            Ok(())
        },
    )?;
    write_diff(
        &old.metrics,
        &new.metrics,
        |endpoint, m| {
            tx.execute(
                "INSERT OR REPLACE INTO metric_rules (service_id, endpoint, log_frequency, variables)
                 VALUES (?1, ?2, ?3, ?4)",
                params![id, endpoint, m.log_frequency, to_json(&m.variables)?],
            )?;
            Ok(())
        },
        |endpoint| {
            tx.execute(
                "DELETE FROM metric_rules WHERE service_id = ?1 AND endpoint = ?2",
                params![id, endpoint],
            )?;
            Ok(())
        },
    )?;
    let delete_versions = |endpoint: &str| -> Result<()> {
        tx.execute(
            "DELETE FROM auto_update_versions WHERE service_id = ?1 AND endpoint = ?2",
            params![id, endpoint],
        )?;
        Ok(())
    };
    write_diff(
        &old.auto_versions,
        &new.auto_versions,
        |endpoint, versions| {
            delete_versions(endpoint)?;
            for (version, model_id) in versions {
                tx.execute(
                    "INSERT INTO auto_update_versions (service_id, endpoint, version, model_id)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![id, endpoint, version, model_id],
                )?;
            }
            Ok(())
        },
        delete_versions,
    )?;
    Ok(())
}

/// After a registry change: recomputes the auto-update versions of every service with rules, and
/// writes and bumps the revision of those whose served versions changed.
fn refresh_services_watching(tx: &Transaction<'_>) -> Result<()> {
    let ids: Vec<String> = {
        let mut stmt = tx.prepare("SELECT DISTINCT service_id FROM auto_update_rules")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for id in ids {
        let old = read_config(tx, &id)?;
        let mut new = old.clone();
        refresh_auto_versions(tx, &mut new)?;
        if new != old {
            write_config(tx, &id, &old, &new)?;
            tx.execute(
                "UPDATE services SET revision = revision + 1 WHERE id = ?1",
                [&id],
            )?;
        }
    }
    Ok(())
}

impl Store for SqliteStore {
    fn create_service(&self, new: &NewService) -> Result<Service> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let id = new_id();
        tx.execute(
            "INSERT INTO services (id, name, project, tags, created_ms, revision)
             VALUES (?1, ?2, ?3, ?4, ?5, 1)",
            params![id, new.name, new.project, to_json(&new.tags)?, now_ms()],
        )?;
        let service = get_service(&tx, &id)?;
        tx.commit()?;
        Ok(service)
    }

    fn list_services(&self) -> Result<Vec<Service>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {SERVICE_COLUMNS} FROM services ORDER BY created_ms, id"
        ))?;
        let rows = stmt.query_map([], read_service)?;
        rows.map(|r| finish_service(r?)).collect()
    }

    fn service(&self, id: &str) -> Result<Service> {
        get_service(&*self.lock()?, id)
    }

    fn revision(&self, id: &str) -> Result<u64> {
        let conn = self.lock()?;
        conn.query_row("SELECT revision FROM services WHERE id = ?1", [id], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?
        .map(|r| r as u64)
        .ok_or_else(|| StoreError::NotFound(format!("serving service '{id}' not found")))
    }

    fn snapshot(&self, id: &str) -> Result<Snapshot> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let service = get_service(&tx, id)?;
        let config = read_config(&tx, id)?;
        tx.commit()?;
        Ok(Snapshot { service, config })
    }

    fn update_service(&self, id: &str, edit: &mut ConfigEdit<'_>) -> Result<Service> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old = read_config(&tx, id)?;
        let mut new = old.clone();
        edit(&mut new)?;
        refresh_auto_versions(&tx, &mut new)?;
        if new != old {
            write_config(&tx, id, &old, &new)?;
            tx.execute(
                "UPDATE services SET revision = revision + 1 WHERE id = ?1",
                [id],
            )?;
        }
        let service = get_service(&tx, id)?;
        tx.commit()?;
        Ok(service)
    }

    fn add_model(&self, new: &NewModel) -> Result<Model> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let id = new_id();
        tx.execute(
            "INSERT INTO models (id, name, project, tags, framework, published, uri, size, sha256, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                id,
                new.name,
                new.project,
                to_json(&new.tags)?,
                new.framework,
                new.published,
                new.uri,
                new.size.map(|s| s as i64),
                new.sha256,
                now_ms()
            ],
        )?;
        let model = get_model(&tx, &id)?;
        refresh_services_watching(&tx)?;
        tx.commit()?;
        Ok(model)
    }

    fn model(&self, id: &str) -> Result<Model> {
        get_model(&*self.lock()?, id)
    }

    fn query_models(&self, query: &ModelQuery) -> Result<Vec<Model>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {MODEL_COLUMNS} FROM models ORDER BY created_ms DESC, rowid DESC"
        ))?;
        let rows = stmt.query_map([], read_model)?;
        let mut found = Vec::new();
        for row in rows {
            let model = finish_model(row?)?;
            if query.matches(&model) {
                found.push(model);
                if query.limit.is_some_and(|limit| found.len() >= limit) {
                    break;
                }
            }
        }
        Ok(found)
    }

    fn update_model(
        &self,
        id: &str,
        edit: &mut dyn FnMut(&mut Model) -> Result<()>,
    ) -> Result<Model> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old = get_model(&tx, id)?;
        let mut new = old.clone();
        edit(&mut new)?;
        if new != old {
            tx.execute(
                "UPDATE models SET name = ?2, project = ?3, tags = ?4, framework = ?5, published = ?6
                 WHERE id = ?1",
                params![
                    id,
                    new.name,
                    new.project,
                    to_json(&new.tags)?,
                    new.framework,
                    new.published
                ],
            )?;
            refresh_services_watching(&tx)?;
        }
        tx.commit()?;
        Ok(new)
    }

    fn put_instance(&self, status: &InstanceStatus) -> Result<()> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT OR REPLACE INTO instances
             (id, service_id, host, port, pid, started_ms, heartbeat_ms, revision, ready, endpoints,
              grpc_port)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                status.id,
                status.service_id,
                status.host,
                status.port,
                status.pid,
                status.started_ms,
                status.heartbeat_ms,
                status.revision as i64,
                status.ready,
                to_json(&status.endpoints)?,
                status.grpc_port,
            ],
        )?;
        Ok(())
    }

    fn instances(&self, service_id: &str) -> Result<Vec<InstanceStatus>> {
        Self::read_instances(&*self.lock()?, service_id)
    }

    fn remove_instance(&self, id: &str) -> Result<()> {
        self.lock()?
            .execute("DELETE FROM instances WHERE id = ?1", [id])?;
        Ok(())
    }
}

impl SqliteStore {
    fn read_instances(conn: &Connection, service_id: &str) -> Result<Vec<InstanceStatus>> {
        let mut stmt = conn.prepare(
            "SELECT id, service_id, host, port, pid, started_ms, heartbeat_ms, revision, ready, endpoints,
                    grpc_port
             FROM instances WHERE service_id = ?1 ORDER BY heartbeat_ms DESC, id",
        )?;
        let rows = stmt.query_map([service_id], |r| {
            Ok((
                InstanceStatus {
                    id: r.get(0)?,
                    service_id: r.get(1)?,
                    host: r.get(2)?,
                    port: r.get::<_, i64>(3)?.clamp(0, i64::from(u16::MAX)) as u16,
                    pid: r.get::<_, i64>(4)?.clamp(0, i64::from(u32::MAX)) as u32,
                    started_ms: r.get(5)?,
                    heartbeat_ms: r.get(6)?,
                    revision: r.get::<_, i64>(7)? as u64,
                    ready: r.get(8)?,
                    endpoints: Default::default(),
                    grpc_port: r
                        .get::<_, Option<i64>>(10)?
                        .and_then(|p| u16::try_from(p).ok()),
                },
                r.get::<_, String>(9)?,
            ))
        })?;
        rows.map(|row| {
            let (mut status, endpoints) = row?;
            status.endpoints = from_json(&endpoints, "instance endpoints")?;
            Ok(status)
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CodeKind, CodeRef, EngineKind, IoSpec, MetricRule, MetricVariable};

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("serval.db")).unwrap();
        (dir, store)
    }

    fn service(store: &SqliteStore) -> Service {
        store
            .create_service(&NewService {
                name: "demo".into(),
                project: "DevOps".into(),
                tags: vec!["a".into()],
            })
            .unwrap()
    }

    /// Rule "b": published models named `name`, two versions.
    fn rule(name: &str) -> AutoUpdateRule {
        AutoUpdateRule {
            endpoint: "b".into(),
            engine: EngineKind::Xgboost,
            model_name: Some(name.into()),
            name_regex: false,
            project: None,
            tags: vec![],
            only_published: true,
            max_versions: 2,
            preprocess: None,
            io: IoSpec::default(),
            aux_config: None,
        }
    }

    fn endpoint(name: &str, version: Option<&str>) -> Endpoint {
        Endpoint {
            name: name.into(),
            version: version.map(Into::into),
            engine: EngineKind::Xgboost,
            model_id: Some("m1".into()),
            preprocess: Some(CodeRef {
                sha256: "ab".into(),
                name: "preprocess.py".into(),
                kind: CodeKind::File,
                uri: "file:///x".into(),
            }),
            io: IoSpec {
                input_size: vec![vec![1, 4]],
                ..IoSpec::default()
            },
            aux_config: Some(serde_json::json!({"a": 1})),
            created_ms: 5,
        }
    }

    #[test]
    fn config_round_trips_and_revision_counts_changes() {
        let (_dir, store) = store();
        let svc = service(&store);
        assert_eq!(svc.revision, 1);
        let after = store
            .update_service(&svc.id, &mut |c| {
                let e = endpoint("m", Some("1"));
                c.endpoints.insert(e.url(), e);
                c.canaries.insert(
                    "c".into(),
                    Canary {
                        name: "c".into(),
                        weights: vec![0.1, 0.9],
                        target: CanaryTarget::Prefix("m/".into()),
                    },
                );
                c.metrics.insert(
                    "m*".into(),
                    MetricRule {
                        endpoint: "m*".into(),
                        log_frequency: Some(0.5),
                        variables: [(
                            "x".to_string(),
                            MetricVariable::Scalar {
                                buckets: vec![0.0, 1.0],
                            },
                        )]
                        .into(),
                    },
                );
                c.settings.metric_log_freq = Some(0.25);
                Ok(())
            })
            .unwrap();
        assert_eq!(after.revision, 2);
        let snap = store.snapshot(&svc.id).unwrap();
        assert_eq!(snap.config.endpoints["m/1"], endpoint("m", Some("1")));
        assert_eq!(snap.config.canaries["c"].weights, vec![0.1, 0.9]);
        assert_eq!(snap.config.settings.metric_log_freq, Some(0.25));
        assert_eq!(snap.config.metrics["m*"].log_frequency, Some(0.5));

        // No change: no bump. A failing edit: nothing written.
        assert_eq!(
            store
                .update_service(&svc.id, &mut |_| Ok(()))
                .unwrap()
                .revision,
            2
        );
        let err = store
            .update_service(&svc.id, &mut |c| {
                c.endpoints.clear();
                Err(StoreError::InvalidInput("no".into()))
            })
            .unwrap_err();
        assert_eq!(err.kind(), "invalid_input");
        assert_eq!(store.snapshot(&svc.id).unwrap().config.endpoints.len(), 1);
        assert_eq!(store.revision(&svc.id).unwrap(), 2);

        // Removal is written as a delete.
        store
            .update_service(&svc.id, &mut |c| {
                c.endpoints.remove("m/1");
                Ok(())
            })
            .unwrap();
        assert!(store.snapshot(&svc.id).unwrap().config.endpoints.is_empty());
        assert_eq!(store.revision(&svc.id).unwrap(), 3);
    }

    #[test]
    fn unknown_service_is_not_found() {
        let (_dir, store) = store();
        assert_eq!(store.snapshot("nope").unwrap_err().kind(), "not_found");
        assert_eq!(store.revision("nope").unwrap_err().kind(), "not_found");
        assert_eq!(
            store
                .update_service("nope", &mut |_| Ok(()))
                .unwrap_err()
                .kind(),
            "not_found"
        );
    }

    #[test]
    fn registry_queries_are_newest_first_and_bump_watching_services() {
        let (_dir, store) = store();
        let svc = service(&store);
        store
            .update_service(&svc.id, &mut |c| {
                c.auto_update.insert("b".into(), rule("iris"));
                Ok(())
            })
            .unwrap();
        let new = |name: &str| NewModel {
            name: name.into(),
            uri: "file:///m".into(),
            ..NewModel::default()
        };
        let a = store.add_model(&new("iris")).unwrap();
        let b = store.add_model(&new("iris")).unwrap();
        store.add_model(&new("other")).unwrap();
        // Unpublished models do not match the rule: no bump yet.
        assert_eq!(store.revision(&svc.id).unwrap(), 2);
        let found = store
            .query_models(&ModelQuery {
                name: Some("iris".into()),
                ..ModelQuery::default()
            })
            .unwrap();
        assert_eq!(
            found.iter().map(|m| &m.id).collect::<Vec<_>>(),
            vec![&b.id, &a.id]
        );

        store
            .update_model(&a.id, &mut |m| {
                m.published = true;
                Ok(())
            })
            .unwrap();
        assert_eq!(store.revision(&svc.id).unwrap(), 3);
        let published = store
            .query_models(&ModelQuery {
                name: Some("iri.*".into()),
                name_regex: true,
                only_published: true,
                ..ModelQuery::default()
            })
            .unwrap();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].id, a.id);
    }

    #[test]
    fn instance_status_is_kept_without_bumping_the_revision() {
        let (_dir, store) = store();
        let svc = service(&store);
        let mut status = InstanceStatus {
            id: "i1".into(),
            service_id: svc.id.clone(),
            host: "127.0.0.1".into(),
            port: 8080,
            pid: 42,
            started_ms: 1,
            heartbeat_ms: 2,
            revision: 1,
            ready: false,
            endpoints: Default::default(),
            grpc_port: Some(8081),
        };
        store.put_instance(&status).unwrap();
        status.ready = true;
        status.endpoints.insert(
            "m/1".into(),
            crate::EndpointStatus {
                state: "failed".into(),
                engine: EngineKind::Xgboost,
                model_id: Some("abc".into()),
                error: Some("corrupt".into()),
                serving: false,
                path: None,
                python: Some(crate::PythonStatus {
                    workers: 2,
                    alive: 1,
                    restarts: 3,
                    last_exit: Some("worker was killed by signal 9".into()),
                    library_requests: 0,
                }),
            },
        );
        store.put_instance(&status).unwrap();
        assert_eq!(store.instances(&svc.id).unwrap(), vec![status]);
        assert_eq!(store.revision(&svc.id).unwrap(), 1);
        store.remove_instance("i1").unwrap();
        assert!(store.instances(&svc.id).unwrap().is_empty());
    }

    #[test]
    fn auto_update_versions_follow_the_registry_and_persist() {
        let (_dir, store) = store();
        let svc = service(&store);
        store
            .update_service(&svc.id, &mut |c| {
                c.auto_update.insert("b".into(), rule("m"));
                Ok(())
            })
            .unwrap();
        let versions = || {
            store
                .snapshot(&svc.id)
                .unwrap()
                .config
                .auto_versions
                .get("b")
                .cloned()
                .unwrap_or_default()
        };
        let publish = |id: &str| {
            store
                .update_model(id, &mut |m| {
                    m.published = true;
                    Ok(())
                })
                .unwrap();
        };
        let new = || {
            store
                .add_model(&NewModel {
                    name: "m".into(),
                    uri: "file:///m".into(),
                    ..NewModel::default()
                })
                .unwrap()
                .id
        };
        let (a, b, c) = (new(), new(), new());
        assert!(versions().is_empty(), "nothing published yet");
        let before = store.revision(&svc.id).unwrap();
        publish(&a);
        assert_eq!(versions(), [(1, a.clone())].into());
        assert_eq!(store.revision(&svc.id).unwrap(), before + 1);
        publish(&b);
        publish(&c);
        assert_eq!(versions(), [(2, b.clone()), (3, c.clone())].into());
        let served = store.snapshot(&svc.id).unwrap().config.served_endpoints();
        assert_eq!(served.keys().collect::<Vec<_>>(), vec!["b/2", "b/3"]);
        assert_eq!(served["b/3"].model_id.as_deref(), Some(c.as_str()));
        // Editing the rule applies to the versions it serves; the numbers stay.
        store
            .update_service(&svc.id, &mut |c| {
                c.auto_update.get_mut("b").unwrap().io.input_name = vec!["f".into()];
                Ok(())
            })
            .unwrap();
        let served = store.snapshot(&svc.id).unwrap().config.served_endpoints();
        assert_eq!(served.keys().collect::<Vec<_>>(), vec!["b/2", "b/3"]);
        assert!(
            served
                .values()
                .all(|e| e.io.input_name == vec!["f".to_string()])
        );
        // Removing the rule removes what it served.
        store
            .update_service(&svc.id, &mut |c| {
                c.auto_update.remove("b");
                Ok(())
            })
            .unwrap();
        assert!(
            store
                .snapshot(&svc.id)
                .unwrap()
                .config
                .served_endpoints()
                .is_empty()
        );
    }

    #[test]
    fn reopening_keeps_data_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let id = {
            let store = SqliteStore::open(&path).unwrap();
            service(&store).id
        };
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.service(&id).unwrap().name, "demo");
    }
}
