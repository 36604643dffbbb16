//! keyward's storage: the Diesel schema and the repository behind the domain's ports, on
//! an embedded SQLite file (the default) or PostgreSQL.
//!
//! Every write is one transaction. Uniqueness of keyIds (tombstones) and thumbprints is
//! enforced by the database's unique constraints; the active-key limit by guarded
//! counter updates (one counter per enterprise on SQLite, striped on PostgreSQL). Reads
//! before writes only choose the error message; they never decide what is stored.

mod db;
mod durable;
mod key_reader;
mod prepared;
mod replay;
mod repo;
mod rows;
pub mod schema;
#[cfg(feature = "testing")]
pub mod testing;

pub use db::{
    build_pool, libpq_url, migrations_current, revert_all_migrations, revert_last_migration,
    run_migrations, ConnectionManager, DatabaseUrl, DbConnection, Pool, PoolOptions,
};
pub use repo::Repository;

/// Failures of the storage layer itself, outside any use case.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("migration failed: {0}")]
    Migration(String),
}
