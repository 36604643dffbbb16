//! Fresh databases for tests: a new SQLite file or a new PostgreSQL database per test,
//! migrated, and dropped when the test ends.
//!
//! PostgreSQL is found at `KEYWARD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). When it cannot be reached the
//! PostgreSQL half of a test is skipped with a message on stderr, unless
//! `KEYWARD_REQUIRE_POSTGRES=1` (as `cargo xtask test` sets in CI), which makes it fail.

use std::path::PathBuf;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::Connection;

use crate::db::{build_pool, run_migrations, ConnectionManager, DatabaseUrl, Pool, PoolOptions};
use crate::Repository;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database that exists for one test.
pub struct TestDb {
    pub url: DatabaseUrl,
    cleanup: Cleanup,
}

/// What to remove when the test ends (the directory goes when its guard drops).
enum Cleanup {
    File(PathBuf, #[allow(dead_code)] tempdir::Dir),
    Postgres { admin_url: String, name: String },
}

mod tempdir {
    /// A private directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TestDb {
    /// A migrated SQLite file in a fresh temporary directory.
    pub fn sqlite() -> Self {
        let dir =
            std::env::temp_dir().join(format!("keyward-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join("keyward.db");
        let url = DatabaseUrl::Sqlite(path.display().to_string());
        let db = Self {
            url,
            cleanup: Cleanup::File(path, tempdir::Dir(dir)),
        };
        db.migrate();
        db
    }

    /// A migrated, empty PostgreSQL database, or `None` when PostgreSQL is not reachable
    /// and not required.
    pub fn postgres() -> Option<Self> {
        let admin_url = std::env::var("KEYWARD_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let required = std::env::var("KEYWARD_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
        let mut admin = match PgConnection::establish(&admin_url) {
            Ok(conn) => conn,
            Err(err) if !required => {
                eprintln!("SKIPPED: PostgreSQL half of this test, {admin_url} unreachable: {err}");
                return None;
            }
            Err(err) => panic!("PostgreSQL is required but {admin_url} is unreachable: {err}"),
        };
        let name = format!("keyward_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        let db = Self {
            url: DatabaseUrl::Postgres(format!("{base}/{name}")),
            cleanup: Cleanup::Postgres { admin_url, name },
        };
        db.migrate();
        Some(db)
    }

    fn migrate(&self) {
        let mut conn = ConnectionManager::new(self.url.clone())
            .establish()
            .unwrap_or_else(|e| panic!("cannot open test database: {e}"));
        run_migrations(&mut conn).unwrap_or_else(|e| panic!("cannot migrate test database: {e}"));
    }

    pub fn pool(&self) -> Pool {
        build_pool(&self.url, PoolOptions::default())
    }

    pub fn repository(&self) -> Repository {
        Repository::new(self.pool())
    }

    /// The URL as `--database-url` takes it.
    pub fn url_string(&self) -> String {
        match &self.url {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{path}"),
            DatabaseUrl::Postgres(url) => url.clone(),
        }
    }

    /// The SQLite file, for tests that inspect it.
    pub fn sqlite_path(&self) -> Option<&PathBuf> {
        match &self.cleanup {
            Cleanup::File(path, _) => Some(path),
            Cleanup::Postgres { .. } => None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, name } = &self.cleanup {
            if let Ok(mut admin) = PgConnection::establish(admin_url) {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}
