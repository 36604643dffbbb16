//! Connections: which database a URL names, the connection type that covers both
//! backends, the pool, and the embedded migrations.

use std::fmt;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::migration::MigrationVersion;
use diesel::pg::PgConnection;
use diesel::r2d2::{self, ManageConnection, R2D2Connection};
use diesel::sqlite::SqliteConnection;
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::StorageError;

/// One connection to either backend. Queries are written once against this type.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

/// Runs `$body` with `$c` bound to the backend's own connection: for hot statements,
/// written once like the rest, but executed without `DbConnection`'s translation layer,
/// which renders a statement's SQL text again at every execution (even when the
/// prepared statement is cached) and wraps every value read.
macro_rules! on_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConnection::Sqlite($c) => $body,
            $crate::db::DbConnection::Postgres($c) => $body,
        }
    };
}
pub(crate) use on_backend;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Which database to use, from `--database-url` / `DATABASE_URL`.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file path.
    Sqlite(String),
    /// A libpq connection URL.
    Postgres(String),
}

impl DatabaseUrl {
    /// `sqlite://PATH` (absolute `sqlite:///abs.db`, relative `sqlite://rel.db`), a bare
    /// file path, or `postgres://…` / `postgresql://…`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(
                "the database URL is empty; use sqlite://keyward.db or postgres://user@host/db"
                    .into(),
            );
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(Self::Postgres(raw.to_owned()));
        }
        if let Some(path) = raw
            .strip_prefix("sqlite://")
            .or_else(|| raw.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err("the sqlite URL names no file; use sqlite://keyward.db or sqlite:///abs/path.db".into());
            }
            return Ok(Self::Sqlite(path.to_owned()));
        }
        if let Some((scheme, _)) = raw.split_once("://") {
            return Err(format!(
                "unsupported database URL scheme '{scheme}'; use sqlite://PATH, a file path, or postgres://"
            ));
        }
        Ok(Self::Sqlite(raw.to_owned()))
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, Self::Sqlite(_))
    }
}

/// Shows the URL with any password hidden.
impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{path}"),
            Self::Postgres(url) => {
                // postgres://user:secret@host/db -> postgres://user:***@host/db
                let redacted = match (url.find("://"), url.rfind('@')) {
                    (Some(start), Some(at)) if at > start => {
                        let userinfo = &url[start + 3..at];
                        match userinfo.split_once(':') {
                            Some((user, _)) => {
                                format!("{}{user}:***{}", &url[..start + 3], &url[at..])
                            }
                            None => url.clone(),
                        }
                    }
                    _ => url.clone(),
                };
                f.write_str(&redacted)
            }
        }
    }
}

/// The URL handed to libpq: `url` itself, except that a URL naming only loopback hosts
/// and no `sslmode` (nor `host`/`hostaddr` parameters, nor `PGSSLMODE` in the
/// environment) gets `sslmode=disable`.
///
/// libpq's default (`prefer`) encrypts whenever the server offers TLS, without checking
/// its certificate: on loopback that protects nothing (no other machine sees the
/// traffic) and costs both processes a fifth of their CPU per statement. Any other host,
/// or an explicit `sslmode`, is left to libpq.
pub fn libpq_url(url: &str) -> std::borrow::Cow<'_, str> {
    loopback_plaintext(url, std::env::var_os("PGSSLMODE").is_some())
}

fn loopback_plaintext(url: &str, sslmode_in_env: bool) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    let Some((_, rest)) = url.split_once("://") else {
        return Cow::Borrowed(url);
    };
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_query.split('/').next().unwrap_or("");
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    let loopback = |host: &str| {
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.split(':').next().unwrap_or(""),
        };
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    let overridden = query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        matches!(name, "sslmode" | "host" | "hostaddr")
    });
    if hosts.is_empty() || !hosts.split(',').all(loopback) || overridden || sslmode_in_env {
        return Cow::Borrowed(url);
    }
    let separator = if url.contains('?') { "&" } else { "?" };
    Cow::Owned(format!("{url}{separator}sslmode=disable"))
}

/// SQLite settings applied to every connection: WAL for concurrent readers, a full sync
/// at every commit (a 201 is only sent for what survives a power cut; the writer
/// connection syncs its commits itself instead, see `durable.rs`), foreign keys,
/// a busy timeout so writers queue instead of failing, and a page cache of 1 MiB per
/// connection (the operating system caches the file too; this bounds the server's own
/// memory whatever the size of the database).
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA cache_size = -1024;";

/// PostgreSQL settings of every session: a random page read costed at 1.1 sequential
/// ones instead of PostgreSQL's default 4; a value other than 4, set on the server,
/// the database or the role, is kept. keyward's statements read a small, hot working set (keys,
/// replay records) through unique indexes; at the default, the planner prefers a
/// sequential scan of the key table to a handful of index probes until the table holds
/// about a thousand keys or more (each replay batch and each read of keys then scanned
/// the whole table), and a page of a listing could walk the table in `seq` order,
/// filtering by enterprise, rather than read its enterprise's index.
const POSTGRES_SESSION: &str = "SELECT set_config('random_page_cost', '1.1', false) \
     WHERE current_setting('random_page_cost')::float8 = 4";

/// Opens connections of the configured backend (never guessing from the URL's shape).
#[derive(Debug, Clone)]
pub struct ConnectionManager {
    url: DatabaseUrl,
}

impl ConnectionManager {
    pub fn new(url: DatabaseUrl) -> Self {
        Self { url }
    }

    pub fn establish(&self) -> Result<DbConnection, StorageError> {
        match &self.url {
            DatabaseUrl::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(path)
                    .map_err(|e| StorageError::Connect(e.to_string()))?;
                conn.batch_execute(SQLITE_PRAGMAS)
                    .map_err(|e| StorageError::Connect(e.to_string()))?;
                Ok(DbConnection::Sqlite(conn))
            }
            DatabaseUrl::Postgres(url) => {
                let mut conn = PgConnection::establish(&libpq_url(url))
                    .map_err(|e| StorageError::Connect(e.to_string()))?;
                conn.batch_execute(POSTGRES_SESSION)
                    .map_err(|e| StorageError::Connect(e.to_string()))?;
                Ok(DbConnection::Postgres(conn))
            }
        }
    }
}

impl ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = StorageError;

    fn connect(&self) -> Result<DbConnection, StorageError> {
        self.establish()
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), StorageError> {
        conn.ping()
            .map_err(|e| StorageError::Connect(e.to_string()))
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        conn.is_broken()
    }
}

pub type Pool = r2d2::Pool<ConnectionManager>;

/// Pool sizing and waiting.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    pub max_size: u32,
    /// How long a request waits for a connection before it is told the database is
    /// unavailable.
    pub acquire_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Builds a pool without waiting for the database: connections open on demand, so the
/// service can start (and report not-ready) while the database is down.
pub fn build_pool(url: &DatabaseUrl, options: PoolOptions) -> Pool {
    r2d2::Pool::builder()
        .max_size(options.max_size)
        .min_idle(Some(0))
        .connection_timeout(options.acquire_timeout)
        .test_on_check_out(false)
        .build_unchecked(ConnectionManager::new(url.clone()))
}

/// Advisory lock key that serialises migrations on PostgreSQL ("keyward" in ASCII).
const MIGRATION_LOCK: i64 = 0x006b_6579_7761_7264;

/// Applies every pending migration of the connection's backend. Returns how many ran.
pub fn run_migrations(conn: &mut DbConnection) -> Result<usize, StorageError> {
    let applied = match conn {
        DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
        DbConnection::Postgres(c) => {
            // Several processes may start at once against one database: one migrates,
            // the others wait and then find nothing pending.
            c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                .map_err(|e| StorageError::Migration(e.to_string()))?;
            let applied = c
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.len());
            let _ = c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"));
            applied
        }
    };
    applied.map_err(|e| StorageError::Migration(e.to_string()))
}

/// True when no migration of the connection's backend is pending.
pub fn migrations_current(conn: &mut DbConnection) -> Result<bool, StorageError> {
    let pending = match conn {
        DbConnection::Sqlite(c) => c.has_pending_migration(SQLITE_MIGRATIONS),
        DbConnection::Postgres(c) => c.has_pending_migration(POSTGRES_MIGRATIONS),
    };
    pending
        .map(|p| !p)
        .map_err(|e| StorageError::Migration(e.to_string()))
}

/// Reverts every applied migration (tests and `cargo xtask migrate --redo` use it).
pub fn revert_all_migrations(conn: &mut DbConnection) -> Result<Vec<String>, StorageError> {
    let reverted = match conn {
        DbConnection::Sqlite(c) => c.revert_all_migrations(SQLITE_MIGRATIONS).map(versions),
        DbConnection::Postgres(c) => c.revert_all_migrations(POSTGRES_MIGRATIONS).map(versions),
    };
    reverted.map_err(|e| StorageError::Migration(e.to_string()))
}

/// Reverts the latest applied migration and names it (tests use it to check that a
/// migration keeps the data it moves, both ways).
pub fn revert_last_migration(conn: &mut DbConnection) -> Result<String, StorageError> {
    let reverted = match conn {
        DbConnection::Sqlite(c) => c.revert_last_migration(SQLITE_MIGRATIONS),
        DbConnection::Postgres(c) => c.revert_last_migration(POSTGRES_MIGRATIONS),
    };
    reverted
        .map(|version| version.to_string())
        .map_err(|e| StorageError::Migration(e.to_string()))
}

fn versions(list: Vec<MigrationVersion<'_>>) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::loopback_plaintext;

    #[test]
    fn loopback_urls_without_sslmode_connect_in_plaintext() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/test",
            "postgres://kw:secret@localhost/keyward",
            "postgresql://[::1]:5433/db",
            "postgres://127.0.0.2,localhost:5433/db",
            "postgres://u@127.0.0.1/db?connect_timeout=5",
        ] {
            let expected = if url.contains('?') {
                format!("{url}&sslmode=disable")
            } else {
                format!("{url}?sslmode=disable")
            };
            assert_eq!(loopback_plaintext(url, false), expected, "{url}");
        }
    }

    #[test]
    fn other_urls_are_left_to_libpq() {
        for url in [
            "postgres://db.internal/keyward",
            "postgres://10.0.0.5:5432/keyward",
            "postgres://127.0.0.1,db.internal/keyward",
            "postgres://127.0.0.1/db?sslmode=require",
            "postgres://127.0.0.1/db?host=db.internal",
            "postgres://127.0.0.1/db?hostaddr=10.0.0.5",
            "postgres:///keyward",
            "postgres://u@/keyward?host=/var/run/postgresql",
        ] {
            assert_eq!(loopback_plaintext(url, false), url, "{url}");
        }
        assert_eq!(
            loopback_plaintext("postgres://127.0.0.1/db", true),
            "postgres://127.0.0.1/db"
        );
    }
}
