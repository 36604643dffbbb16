//! The `keyward` binary: `serve` runs the service, `admin` manages identities and reads
//! the audit trail. It wires configuration, the pool and the API; it holds no rules.

mod admin;
mod cli;
mod config;
mod jwks;
mod logs;
mod serve;
mod server;
mod tools;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use keyward_domain::{Clock, Timestamp};
use keyward_persistence::{build_pool, run_migrations, DatabaseUrl, PoolOptions, Repository};

use crate::cli::{Cli, Command};

/// jemalloc rather than the C library's allocator: a request's allocations (hyper's
/// buffers, the boxed request future, the rendered body) are mostly past glibc's
/// per-thread cache, and in glibc's shared bins they cost about a fifth of the event
/// loop's time. Its options are set at build time (`.cargo/config.toml`) and can be
/// changed at run time with `_RJEM_MALLOC_CONF` (README, "Memory").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Timestamp::from_millis(millis)
    }
}

/// Opens the database named on the command line and applies pending migrations.
pub fn open_database(url: &str, options: PoolOptions) -> Result<Repository, String> {
    let url = DatabaseUrl::parse(url)?;
    if let DatabaseUrl::Sqlite(path) = &url {
        if let Some(parent) = std::path::Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            if !parent.is_dir() {
                return Err(format!(
                    "the directory of the SQLite database {path} does not exist; create it or choose another path"
                ));
            }
        }
    }
    let pool = build_pool(&url, options);
    let mut conn = pool
        .get()
        .map_err(|e| format!("cannot open the database {url}: {e}"))?;
    run_migrations(&mut conn).map_err(|e| format!("cannot migrate the database {url}: {e}"))?;
    drop(conn);
    Ok(Repository::new(pool))
}

pub fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return cli::report_parse_error(err),
    };
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Admin(args) => admin::run(args),
        Command::Migrate(args) => open_database(args.url(), PoolOptions::default()).map(|_| {
            println!("migrations applied");
        }),
        Command::Keygen { alg, kid, out } => {
            tools::keygen(alg, &kid, &out).map(|public| println!("{public}"))
        }
        Command::Sign {
            key,
            evaluation_id,
            status_code,
            ttl,
        } => tools::sign(&key, &evaluation_id, status_code, ttl).map(|token| println!("{token}")),
        Command::Openapi => {
            print!("{}", keyward_api::openapi_json());
            Ok(())
        }
    };
    // Lines still buffered go out before the exit status, and before any error line.
    logs::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {}", message.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
