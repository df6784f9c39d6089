//! serval's control store: serving services and their configuration (endpoints, canaries,
//! auto-update rules, metric rules, settings) and the model registry.
//!
//! Callers see the [`Store`] trait only. Its rules are written once, in portable SQL, in the
//! backend-neutral [`SqlStore`]; a backend ([`SqliteStore`]: the embedded default, one file;
//! [`PostgresStore`]: a shared server for many machines) provides transactions and value
//! conversion only. Every write is one transaction, and every change to a
//! service's configuration bumps that service's revision, which running servers watch. Writers
//! change a service through [`Store::update_service`]: the store reads the configuration inside a
//! write transaction, the caller's closure checks and edits it, and the store writes back what
//! changed — so concurrent CLI processes never lose each other's changes.

pub mod auto_update;
mod batching;
mod dump;
pub mod names;
mod postgres;
mod sql;
mod sqlite;
mod types;

use std::path::Path;
use std::time::Duration;

pub use batching::{BatchConfig, batch_config};
pub use dump::{Dump, DumpService};
pub use postgres::PostgresStore;
pub use sql::SqlStore;
pub use sqlite::SqliteStore;
pub use types::*;

/// What went wrong in the store, named by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The service or model does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change was refused; nothing was written.
    #[error("{0}")]
    InvalidInput(String),
    /// The store cannot be reached or opened (busy past the timeout, unreadable file, ...).
    #[error("control store unavailable: {0}")]
    Unavailable(String),
    /// A write made against a revision the service has moved past (`If-Match`); nothing was
    /// written.
    #[error("{0}")]
    Stale(String),
    /// The store holds something this version cannot read, or a bug.
    #[error("control store error: {0}")]
    Internal(String),
}

impl StoreError {
    /// A stable name for the error kind (logs, JSON errors, metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::NotFound(_) => "not_found",
            StoreError::InvalidInput(_) => "invalid_input",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Stale(_) => "stale",
            StoreError::Internal(_) => "internal",
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A change to one service's configuration, run inside the write transaction.
pub type ConfigEdit<'a> = dyn FnMut(&mut ServiceConfig) -> Result<()> + 'a;

/// The control store. Implementations must make every method one transaction.
pub trait Store: Send + Sync {
    /// Creates a service with an empty configuration (revision 1); the audit trail's target is
    /// `change.target` followed by `/` and the new id (as for [`Store::add_model`]).
    fn create_service(&self, new: &NewService, change: &Change) -> Result<Service>;

    /// All services, oldest first.
    fn list_services(&self) -> Result<Vec<Service>>;

    /// One service (without its configuration).
    fn service(&self, id: &str) -> Result<Service>;

    /// The current revision of a service: cheap, for polling.
    fn revision(&self, id: &str) -> Result<u64>;

    /// A service and its whole configuration, read consistently.
    fn snapshot(&self, id: &str) -> Result<Snapshot>;

    /// Reads the configuration in a write transaction, lets `edit` change it and writes back the
    /// difference. If `edit` fails nothing is written. Returns the service afterwards: its
    /// revision is bumped by one if the configuration changed, and unchanged otherwise.
    /// `change` is recorded in the audit trail in the same transaction; with
    /// `change.if_revision` the write is refused ([`StoreError::Stale`]) unless the service is
    /// still at that revision.
    fn update_service(
        &self,
        id: &str,
        change: &Change,
        edit: &mut ConfigEdit<'_>,
    ) -> Result<Service>;

    /// Registers a model; bumps the revision of services whose auto-update rules match it.
    fn add_model(&self, new: &NewModel, change: &Change) -> Result<Model>;

    /// One model of the registry.
    fn model(&self, id: &str) -> Result<Model>;

    /// Models matching a query, newest first, up to its limit.
    fn query_models(&self, query: &ModelQuery) -> Result<Vec<Model>>;

    /// Changes a model's tags or published flag; bumps the revision of services whose
    /// auto-update rules match it before or after the change.
    fn update_model(
        &self,
        id: &str,
        change: &Change,
        edit: &mut dyn FnMut(&mut Model) -> Result<()>,
    ) -> Result<Model>;

    /// The audit trail: recorded writes at or after `since_ms` (all: `None`), oldest first, the
    /// newest `limit` of them.
    fn audit(&self, since_ms: Option<i64>, limit: usize) -> Result<Vec<AuditEntry>>;

    /// Records (inserts or replaces) a server instance's status; does not bump the revision.
    fn put_instance(&self, status: &InstanceStatus) -> Result<()>;

    /// Instances of a service, newest heartbeat first.
    fn instances(&self, service_id: &str) -> Result<Vec<InstanceStatus>>;

    /// Removes an instance (on shutdown). Its statistics stay: they are the fleet's.
    fn remove_instance(&self, id: &str) -> Result<()>;

    /// Adds instance `instance_id`'s counters to the fleet's statistics of service `service_id`
    /// (one transaction that waits for no other writer: each server writes only its own rows).
    /// The same row key adds up. The same transaction folds this instance's rows older than an
    /// hour into hourly buckets and deletes every row of the service older than 30 days.
    fn add_stats(&self, service_id: &str, instance_id: &str, rows: &[StatsRow]) -> Result<()>;

    /// Takes or renews the lease `name` of service `service_id` for `holder` until `now_ms +
    /// ttl_ms`, unless another holder's lease has not expired (one transaction that waits for
    /// no writer of the service). The answer: whether `holder` holds it now, and the previous
    /// holder when it changed hands.
    fn lease(
        &self,
        service_id: &str,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<Lease>;

    /// The fleet's statistics of `kind` about `endpoint` in buckets starting at or after
    /// `since_ms`, summed over instances: one row per target and bucket, oldest first.
    fn stats(
        &self,
        service_id: &str,
        kind: &str,
        endpoint: &str,
        since_ms: i64,
    ) -> Result<Vec<StatsRow>>;

    /// A feed that pushes committed revision changes (PostgreSQL `LISTEN/NOTIFY`), or `None` if
    /// the store can only be polled (SQLite).
    fn changes(&self) -> Result<Option<Box<dyn ChangeFeed>>>;

    /// Where the store is, for logs and messages: never includes a password.
    fn describe(&self) -> String;

    /// Everything but running instances, in one consistent read.
    fn export(&self) -> Result<Dump>;

    /// Writes an export into this store in one transaction, keeping ids, revisions and the
    /// registry's order. Refuses (writing nothing) if any service or model id already exists.
    fn import(&self, dump: &Dump, change: &Change) -> Result<()>;
}

/// Revision changes pushed by the store.
pub trait ChangeFeed: Send {
    /// Waits up to `timeout` for changes; returns the ids of the services whose revision changed
    /// (empty if none did in time). An error means the feed is broken: open a new one.
    fn wait(&mut self, timeout: Duration) -> Result<Vec<String>>;
}

/// Opens the store a URL names: `postgres://user:password@host:port/database` (or
/// `postgresql://`), `sqlite:///abs/path.db`, `sqlite://relative.db` or a plain path. Errors
/// never show the URL's password. A libpq key-value string (`host=… password=…`) is refused
/// rather than taken for a file name.
pub fn open(url: &str) -> Result<Box<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Box::new(SqliteStore::open(Path::new(path))?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Box::new(PostgresStore::open(url)?));
    }
    if url.contains("://") {
        return Err(StoreError::InvalidInput(format!(
            "unknown store URL '{}': expected postgres://USER:PASSWORD@HOST:PORT/DATABASE or sqlite://PATH",
            redact_url(url)
        )));
    }
    if is_key_value_string(url) {
        return Err(StoreError::InvalidInput(format!(
            "'{}' is a libpq key-value string; serval takes postgres://USER:PASSWORD@HOST:PORT/DATABASE[?sslmode=…], sqlite://PATH or a file path",
            redact_url(url)
        )));
    }
    Ok(Box::new(SqliteStore::open(Path::new(url))?))
}

/// Keywords of libpq's key-value connection strings (a file path holding `dbname=` and the like
/// separated by spaces is far likelier to be one of those than a file).
const LIBPQ_KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "sslmode",
    "connect_timeout",
    "options",
    "application_name",
    "service",
];

fn is_key_value_string(text: &str) -> bool {
    // libpq allows spaces around '=': `host = db`.
    let mut squeezed = text.to_string();
    while squeezed.contains(" =") || squeezed.contains("= ") {
        squeezed = squeezed.replace(" =", "=").replace("= ", "=");
    }
    squeezed.split_whitespace().any(|token| {
        token
            .split_once('=')
            .is_some_and(|(key, _)| LIBPQ_KEYWORDS.contains(&key.to_ascii_lowercase().as_str()))
    })
}

/// A store URL with its password replaced by `***`, for messages and logs: the URL's userinfo
/// password, `password=` / `sslpassword=` in its query string, and in a key-value string
/// (`host=db password='a b'`) alike.
pub fn redact_url(url: &str) -> String {
    let userinfo_hidden = match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_string(),
        // Not a URL we can parse: hide everything between "://" and the last '@'.
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(start), Some(at)) if at > start => {
                format!("{}://***{}", &url[..start], &url[at..])
            }
            _ => url.to_string(),
        },
    };
    hide_password_values(&userinfo_hidden)
}

/// Every `…password = value` in `text` with its value (up to `&` or whitespace, or a quoted
/// string) replaced by `***`.
fn hide_password_values(text: &str) -> String {
    const KEY: &str = "password";
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let skip_spaces = |mut at: usize| {
        while bytes.get(at).is_some_and(|b| *b == b' ') {
            at += 1;
        }
        at
    };
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    let mut from = 0;
    while let Some(found) = lower[from..].find(KEY) {
        let key_end = from + found + KEY.len();
        let equals = skip_spaces(key_end);
        from = key_end;
        if bytes.get(equals) != Some(&b'=') {
            continue;
        }
        let start = skip_spaces(equals + 1);
        let end = if bytes.get(start) == Some(&b'\'') {
            // A quoted value: up to the closing quote (backslash escapes the next byte).
            let mut at = start + 1;
            while at < bytes.len() && bytes[at] != b'\'' {
                at += if bytes[at] == b'\\' { 2 } else { 1 };
            }
            (at + 1).min(bytes.len())
        } else {
            text[start..]
                .find(|c: char| c == '&' || c.is_whitespace())
                .map_or(text.len(), |n| start + n)
        };
        out.push_str(&text[done..start]);
        out.push_str("***");
        done = end;
        from = end;
    }
    out.push_str(&text[done..]);
    out
}

/// Current time as unix epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new random id: 32 lowercase hex characters.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_every_form_of_store_url() {
        for (url, shown) in [
            (
                "postgres://u:secret@db:5432/serval",
                "postgres://u:***@db:5432/serval",
            ),
            (
                "postgres://u@db/serval?sslmode=require&password=secret",
                "postgres://u@db/serval?sslmode=require&password=***",
            ),
            (
                "postgresql://u@db/serval?PassWord=secret&sslpassword=other",
                "postgresql://u@db/serval?PassWord=***&sslpassword=***",
            ),
            (
                "host=db user=u password=secret dbname=serval",
                "host=db user=u password=*** dbname=serval",
            ),
            (
                "host=db password = 'two words\\' here' dbname=serval",
                "host=db password = *** dbname=serval",
            ),
            ("host=db password=", "host=db password=***"),
            ("sqlite:///var/lib/serval.db", "sqlite:///var/lib/serval.db"),
            ("/data/passwords.db", "/data/passwords.db"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn a_key_value_string_is_refused_not_taken_for_a_file_name() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "host=db user=u password=secret dbname=serval",
            "dbname = serval",
        ] {
            let error = open(text).err().unwrap().to_string();
            assert!(error.contains("libpq key-value string"), "{error}");
            assert!(!error.contains("secret"), "{error}");
            assert!(!Path::new(text).exists());
        }
        // A file name with '=' in it that is no libpq keyword stays a file name.
        let path = dir.path().join("run=3.db");
        assert!(open(path.to_str().unwrap()).is_ok());
        assert!(path.exists());
    }
}
