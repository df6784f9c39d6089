//! The embedded backend: one SQLite file in WAL mode. Writers take the write lock up front
//! (`BEGIN IMMEDIATE`) and wait for each other up to a busy timeout, so concurrent CLI processes
//! serialise instead of failing or losing updates. Schema versions are SQLite's `user_version`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql, TransactionBehavior};

use crate::sql::{Backend, Row, SqlStore, Tx, Value};
use crate::{Result, StoreError};

/// Schema migrations, applied in order; the database's `user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_initial.sql"),
    include_str!("../migrations/sqlite/0002_instances.sql"),
    include_str!("../migrations/sqlite/0003_auto_update_versions.sql"),
    include_str!("../migrations/sqlite/0004_instance_grpc_port.sql"),
    include_str!("../migrations/sqlite/0005_model_sequence.sql"),
    include_str!("../migrations/sqlite/0006_api_keys.sql"),
    include_str!("../migrations/sqlite/0007_extra_python_packages.sql"),
    include_str!("../migrations/sqlite/0008_triton_grpc_compression.sql"),
    include_str!("../migrations/sqlite/0009_admin.sql"),
    include_str!("../migrations/sqlite/0010_sticky_canaries.sql"),
    include_str!("../migrations/sqlite/0011_progressive_delivery.sql"),
    include_str!("../migrations/sqlite/0012_monitoring.sql"),
];

/// How long a writer waits for another one before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The store in one SQLite file.
pub type SqliteStore = SqlStore<SqliteBackend>;

pub struct SqliteBackend {
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
        let mut backend = SqliteBackend {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        };
        backend.migrate()?;
        Ok(SqlStore { backend })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.backend.path
    }
}

impl SqliteBackend {
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

    fn run(
        &self,
        behavior: TransactionBehavior,
        body: &mut dyn FnMut(&mut dyn Tx) -> Result<()>,
    ) -> Result<()> {
        let mut conn = self.conn.lock().map_err(|_| poisoned())?;
        let tx = conn.transaction_with_behavior(behavior)?;
        body(&mut SqliteTx(&tx))?;
        tx.commit()?;
        Ok(())
    }
}

fn poisoned() -> StoreError {
    StoreError::Internal("store connection poisoned by an earlier panic".to_string())
}

impl Backend for SqliteBackend {
    fn read(&self, body: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        self.run(TransactionBehavior::Deferred, body)
    }

    fn write(&self, body: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        self.run(TransactionBehavior::Immediate, body)
    }

    fn describe(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}

struct SqliteTx<'a>(&'a rusqlite::Transaction<'a>);

/// `$N` parameters (the shared SQL's) as SQLite's `?N`.
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Real(v) => ToSqlOutput::Borrowed(ValueRef::Real(*v)),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Bool(v) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*v))),
        })
    }
}

impl Tx for SqliteTx<'_> {
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut stmt = self.0.prepare_cached(&sqlite_sql(sql))?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let values = (0..columns)
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => Value::Null,
                        ValueRef::Integer(v) => Value::Int(v),
                        ValueRef::Real(v) => Value::Real(v),
                        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                        ValueRef::Blob(_) => {
                            return Err(StoreError::Internal(format!(
                                "unexpected binary value in column {i}"
                            )));
                        }
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            out.push(Row(values));
        }
        Ok(out)
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let mut stmt = self.0.prepare_cached(&sqlite_sql(sql))?;
        Ok(stmt.execute(rusqlite::params_from_iter(params))? as u64)
    }
}
