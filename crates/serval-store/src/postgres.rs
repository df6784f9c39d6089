//! The shared backend: a PostgreSQL server many `serve` processes and CLIs use at once.
//!
//! Driver: the `postgres` crate (sfackler's synchronous client over `tokio-postgres`; the
//! [`crate::Store`] trait is synchronous and runs on blocking threads), pooled by `r2d2` through
//! `r2d2_postgres` (same author), which checks connections out, tests them and reconnects after a
//! store outage by itself. Writers serialise on a transaction-scoped advisory lock, so a write
//! transaction sees every earlier committed write — the same contract as SQLite's
//! `BEGIN IMMEDIATE`. Reads run in `REPEATABLE READ` read-only transactions (one consistent
//! snapshot). Revision bumps fire a trigger that `NOTIFY`s `serval_changes`; [`PgFeed`] listens.

use std::error::Error as StdError;
use std::time::Duration;

use bytes::BytesMut;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Config, IsolationLevel};
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::sql::{Backend, Row, SqlStore, Tx, Value};
use crate::{ChangeFeed, Result, StoreError, redact_url};

/// Schema migrations, applied in order; `serval_schema.version` is the number applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres/0001_initial.sql"),
    include_str!("../migrations/postgres/0002_api_keys.sql"),
    include_str!("../migrations/postgres/0003_extra_python_packages.sql"),
    include_str!("../migrations/postgres/0004_triton_grpc_compression.sql"),
    include_str!("../migrations/postgres/0005_admin.sql"),
    include_str!("../migrations/postgres/0006_sticky_canaries.sql"),
    include_str!("../migrations/postgres/0007_progressive_delivery.sql"),
    include_str!("../migrations/postgres/0008_monitoring.sql"),
];

/// The advisory lock every write transaction (and migration) takes: "serval" in ASCII.
const WRITE_LOCK: i64 = 0x7365_7276_616c;

/// The channel the revision trigger notifies.
const CHANNEL: &str = "serval_changes";

/// How long connecting (or waiting for a pooled connection) may take before the store counts
/// as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The store on a PostgreSQL server.
pub type PostgresStore = SqlStore<PostgresBackend>;

type Pool = r2d2::Pool<PostgresConnectionManager<MakeRustlsConnect>>;

/// TLS for `sslmode=prefer` (the default: TLS when the server offers it) and `sslmode=require`:
/// rustls, with certificates always verified against the system's CA certificates
/// (`SSL_CERT_FILE` / `SSL_CERT_DIR` name others, e.g. a cloud provider's CA bundle).
fn tls() -> Result<MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // A certificate the store cannot parse is skipped, as the platform's own tools do.
        let _ = roots.add(cert);
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Internal(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Keeps the last connection error with its causes (r2d2's own timeout error only says "timed
/// out", and postgres' top-level message hides why a TLS handshake failed).
#[derive(Debug, Clone, Default)]
struct LastError(std::sync::Arc<std::sync::Mutex<Option<String>>>);

impl r2d2::HandleError<postgres::Error> for LastError {
    fn handle_error(&self, error: postgres::Error) {
        let text = with_causes(&error);
        if let Ok(mut last) = self.0.lock() {
            *last = Some(text);
        }
    }
}

impl LastError {
    fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut last| last.take())
    }
}

/// An error and its chain of causes, `: `-separated (repeats dropped).
fn with_causes(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

pub struct PostgresBackend {
    pool: Pool,
    last_error: LastError,
    config: Config,
    tls: MakeRustlsConnect,
    /// The URL without its password.
    display: String,
}

impl PostgresStore {
    /// Connects (lazily, through a pool) and brings the schema up to date. `url` is
    /// `postgres://user:password@host:port/database[?options]`.
    pub fn open(url: &str) -> Result<Self> {
        let display = redact_url(url);
        let mut config: Config = url.parse().map_err(|e| {
            StoreError::InvalidInput(format!("'{display}' is not a PostgreSQL URL: {e}"))
        })?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("serval");
        let tls = tls()?;
        let last_error = LastError::default();
        let manager = PostgresConnectionManager::new(config.clone(), tls.clone());
        let pool = r2d2::Pool::builder()
            .max_size(4)
            .min_idle(Some(0))
            .connection_timeout(CONNECT_TIMEOUT)
            .error_handler(Box::new(last_error.clone()))
            .build_unchecked(manager);
        let backend = PostgresBackend {
            pool,
            last_error,
            config,
            tls,
            display,
        };
        backend.migrate()?;
        Ok(SqlStore { backend })
    }
}

impl PostgresBackend {
    /// `host:port` of the server (no user, no password), for connection errors.
    fn host(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_string(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    fn client(
        &self,
    ) -> Result<r2d2::PooledConnection<PostgresConnectionManager<MakeRustlsConnect>>> {
        self.pool.get().map_err(|e| {
            let why = self.last_error.take().unwrap_or_else(|| e.to_string());
            StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL at {}: {why}",
                self.host()
            ))
        })
    }

    fn migrate(&self) -> Result<()> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(pg_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
            .map_err(pg_error)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS serval_schema (version INTEGER NOT NULL)")
            .map_err(pg_error)?;
        let rows = tx
            .query("SELECT version FROM serval_schema", &[])
            .map_err(pg_error)?;
        let applied = match rows.first() {
            Some(row) => row.try_get::<_, i32>(0).map_err(pg_error)?,
            None => {
                tx.execute("INSERT INTO serval_schema (version) VALUES (0)", &[])
                    .map_err(pg_error)?;
                0
            }
        };
        let applied = usize::try_from(applied).unwrap_or(usize::MAX);
        if applied > MIGRATIONS.len() {
            return Err(StoreError::Internal(format!(
                "the store at {} has schema version {applied}, newer than this serval ({}); upgrade serval",
                self.display,
                MIGRATIONS.len()
            )));
        }
        for sql in &MIGRATIONS[applied..] {
            tx.batch_execute(sql).map_err(pg_error)?;
        }
        tx.execute(
            "UPDATE serval_schema SET version = $1",
            &[&(MIGRATIONS.len() as i32)],
        )
        .map_err(pg_error)?;
        tx.commit().map_err(pg_error)
    }
}

/// Connection trouble (the server is down, restarting or refusing) is `Unavailable`; a refused
/// statement is a bug or a schema mismatch.
fn pg_error(e: postgres::Error) -> StoreError {
    let Some(code) = e.code() else {
        return StoreError::Unavailable(format!("PostgreSQL: {e}"));
    };
    let class = &code.code()[..2];
    match class {
        // connection exception, insufficient resources, operator intervention (shutdown)
        "08" | "53" | "57" => StoreError::Unavailable(format!("PostgreSQL: {}", db_message(&e))),
        "23" => {
            StoreError::InvalidInput(format!("PostgreSQL refused the write: {}", db_message(&e)))
        }
        _ => StoreError::Internal(format!("PostgreSQL: {}", db_message(&e))),
    }
}

fn db_message(e: &postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| with_causes(e), |db| db.message().to_string())
}

impl Backend for PostgresBackend {
    fn read(&self, body: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        let mut client = self.client()?;
        let mut tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(pg_error)?;
        body(&mut PgTx(&mut tx))?;
        tx.commit().map_err(pg_error)
    }

    fn write(&self, body: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(pg_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
            .map_err(pg_error)?;
        body(&mut PgTx(&mut tx))?;
        tx.commit().map_err(pg_error)
    }

    fn write_independent(&self, body: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(pg_error)?;
        body(&mut PgTx(&mut tx))?;
        tx.commit().map_err(pg_error)
    }

    fn changes(&self) -> Result<Option<Box<dyn ChangeFeed>>> {
        let mut client = self.config.connect(self.tls.clone()).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL at {}: {}",
                self.host(),
                db_message(&e)
            ))
        })?;
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .map_err(pg_error)?;
        Ok(Some(Box::new(PgFeed { client })))
    }

    fn describe(&self) -> String {
        self.display.clone()
    }
}

struct PgTx<'a, 'b>(&'a mut postgres::Transaction<'b>);

impl Tx for PgTx<'_, '_> {
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self.0.query(sql, &params).map_err(pg_error)?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| row.try_get::<_, Value>(i).map_err(pg_error))
                    .collect::<Result<Vec<_>>>()
                    .map(Row)
            })
            .collect()
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        self.0.execute(sql, &params).map_err(pg_error)
    }
}

type BoxError = Box<dyn StdError + Sync + Send>;

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
        let int = |v: i64, out: &mut BytesMut| -> std::result::Result<IsNull, BoxError> {
            if *ty == Type::INT8 {
                v.to_sql(ty, out)
            } else if *ty == Type::INT4 {
                i32::try_from(v)?.to_sql(ty, out)
            } else if *ty == Type::INT2 {
                i16::try_from(v)?.to_sql(ty, out)
            } else if *ty == Type::BOOL {
                (v != 0).to_sql(ty, out)
            } else if *ty == Type::FLOAT8 {
                (v as f64).to_sql(ty, out)
            } else {
                Err(format!("cannot store an integer in a {ty} column").into())
            }
        };
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => int(*v, out),
            Value::Bool(b) if *ty == Type::BOOL => b.to_sql(ty, out),
            Value::Bool(b) => int(i64::from(*b), out),
            Value::Real(v) if *ty == Type::FLOAT4 => (*v as f32).to_sql(ty, out),
            Value::Real(v) => v.to_sql(ty, out),
            Value::Text(s) => s.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        Ok(if *ty == Type::INT8 {
            Value::Int(i64::from_sql(ty, raw)?)
        } else if *ty == Type::INT4 {
            Value::Int(i64::from(i32::from_sql(ty, raw)?))
        } else if *ty == Type::INT2 {
            Value::Int(i64::from(i16::from_sql(ty, raw)?))
        } else if *ty == Type::BOOL {
            Value::Bool(bool::from_sql(ty, raw)?)
        } else if *ty == Type::FLOAT8 {
            Value::Real(f64::from_sql(ty, raw)?)
        } else if *ty == Type::FLOAT4 {
            Value::Real(f64::from(f32::from_sql(ty, raw)?))
        } else if <String as FromSql>::accepts(ty) {
            Value::Text(String::from_sql(ty, raw)?)
        } else {
            return Err(format!("unexpected column type {ty}").into());
        })
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A dedicated connection that `LISTEN`s for revision changes.
struct PgFeed {
    client: Client,
}

impl ChangeFeed for PgFeed {
    fn wait(&mut self, timeout: Duration) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut notifications = self.client.notifications();
        if let Some(n) = notifications
            .timeout_iter(timeout)
            .next()
            .map_err(pg_error)?
        {
            ids.push(n.payload().to_string());
        }
        let mut pending = notifications.iter();
        while let Some(n) = pending.next().map_err(pg_error)? {
            ids.push(n.payload().to_string());
        }
        drop(pending);
        drop(notifications);
        if self.client.is_closed() {
            return Err(StoreError::Unavailable(
                "the PostgreSQL notification connection closed".into(),
            ));
        }
        ids.dedup();
        Ok(ids)
    }
}
