//! The command line: every operator setting is a flag with an environment variable.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "keyward",
    version,
    about = "Registers, lists, revokes and uses webhook signing keys."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run migrations and serve the API, /openapi.json and /docs.
    Serve(ServeArgs),
    /// Manage enterprises, users, memberships and tokens; read the audit trail.
    Admin(AdminArgs),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseArgs),
    /// Make a signing key pair: the private JWK goes to FILE (mode 0600), the public
    /// JWKS to stdout, ready for the register request.
    Keygen {
        #[arg(long, value_enum)]
        alg: crate::tools::Alg,
        #[arg(long)]
        kid: String,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Sign a webhook response with a key file from `keygen`; prints the compact JWS.
    Sign {
        #[arg(long)]
        key: std::path::PathBuf,
        #[arg(long)]
        evaluation_id: String,
        #[arg(long, allow_negative_numbers = true)]
        status_code: i64,
        /// Seconds until the token expires (sets `exp`).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Print the OpenAPI document.
    #[command(hide = true)]
    Openapi,
}

#[derive(Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// sqlite://PATH, a file path (SQLite), or postgres://... [default: sqlite://keyward.db]
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
}

/// The database used when none is named.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://keyward.db";

impl DatabaseArgs {
    pub fn url(&self) -> &str {
        self.database_url.as_deref().unwrap_or(DEFAULT_DATABASE_URL)
    }
}

/// `keyward serve` settings. Each is a flag, an environment variable and a key of the
/// `--config` TOML file; flags win over the environment, which wins over the file, which
/// wins over the defaults (see `config.rs`).
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A TOML file of settings (keys as the flags, with '_' for '-').
    #[arg(long, env = "KEYWARD_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "KEYWARD_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Let a jwksUri use plain http and this host even when it resolves to an internal
    /// address. Development and tests only. Repeatable.
    #[arg(
        long = "allow-insecure-jwks-host",
        env = "KEYWARD_ALLOW_INSECURE_JWKS_HOSTS",
        value_delimiter = ','
    )]
    pub allow_insecure_jwks_hosts: Vec<String>,
    /// Most active keys an enterprise may hold, 1-10000 [default: 20]
    #[arg(long, env = "KEYWARD_MAX_ACTIVE_KEYS")]
    pub max_active_keys: Option<u32>,
    /// Largest request body accepted, in bytes, 1024-16777216 [default: 65536]
    #[arg(long, env = "KEYWARD_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<u64>,
    /// Allowed clock skew for signed responses, in seconds, 0-3600 [default: 300]
    #[arg(long, env = "KEYWARD_CLOCK_SKEW")]
    pub clock_skew: Option<u64>,
    /// Database connections in the pool, 1-256 [default: 16]
    #[arg(long, env = "KEYWARD_DB_POOL_SIZE")]
    pub db_pool_size: Option<u32>,
    /// Seconds a client may take to send request headers, 1-300 [default: 10]
    #[arg(long, env = "KEYWARD_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<u64>,
    /// Seconds a client may take to send a request body, 1-300 [default: 10]
    #[arg(long, env = "KEYWARD_BODY_READ_TIMEOUT")]
    pub body_read_timeout: Option<u64>,
    /// Requests served at once; more get 503, 1-100000 [default: 512]
    #[arg(long, env = "KEYWARD_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: Option<u32>,
    /// Failed authentications per client address per minute before 429, 1-100000 [default: 100]
    #[arg(long, env = "KEYWARD_AUTH_FAILURE_LIMIT")]
    pub auth_failure_limit: Option<u32>,
    /// Seconds requests in flight may run after SIGTERM, 0-300 [default: 10]
    #[arg(long, env = "KEYWARD_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<u64>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "KEYWARD_LOG_FORMAT")]
    pub log_format: Option<crate::config::LogFormat>,
}

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Manage enterprises.
    #[command(subcommand)]
    Enterprise(EnterpriseCommand),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage memberships.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Issue and revoke bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print an enterprise's audit trail.
    Audit {
        enterprise_id: String,
        /// Only events at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum EnterpriseCommand {
    /// Create an enterprise.
    Create {
        enterprise_id: String,
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user.
    Create { email: String },
}

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Add a user to an enterprise, or change their role.
    Add {
        enterprise_id: String,
        email: String,
        #[arg(long)]
        role: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue a bearer token; it is printed once, alone on the last line.
    Issue {
        email: String,
        /// Lifetime, like 90d, 12h, 30m or 2s. Default: no expiry.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Revoke a token by its id or its kw_<id> prefix.
    Revoke { token_prefix_or_id: String },
}

/// Prints a parse error as one line (help and version print as usual).
pub fn report_parse_error(err: clap::Error) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let rendered = err.render().to_string();
            let first = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("error: {first} (see --help)");
            ExitCode::from(2)
        }
    }
}

/// Parses a duration like `90d`, `12h`, `30m`, `2s` or `1w` into seconds.
pub fn parse_ttl(raw: &str) -> Result<i64, String> {
    let raw = raw.trim();
    let bad =
        || format!("'{raw}' is not a duration; use a number and a unit, like 90d, 12h, 30m or 2s");
    let split = raw.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = raw.split_at(split);
    let number: i64 = number.parse().map_err(|_| bad())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    if number == 0 {
        return Err(format!(
            "'{raw}' is zero; a token must live at least one second"
        ));
    }
    number.checked_mul(unit).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_parses_units() {
        assert_eq!(parse_ttl("90d"), Ok(90 * 86_400));
        assert_eq!(parse_ttl("12h"), Ok(43_200));
        assert_eq!(parse_ttl("2s"), Ok(2));
        assert_eq!(parse_ttl("30m"), Ok(1_800));
        for bad in ["", "d", "10", "10y", "-1d", "0s", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
