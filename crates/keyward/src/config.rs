//! The effective `serve` configuration: flags over environment over the `--config` TOML
//! file over defaults, every value checked, and a printable, redacted view of it.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use keyward_persistence::DatabaseUrl;
use serde::Deserialize;

use crate::cli::{ServeArgs, DEFAULT_DATABASE_URL};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// The keys a config file may hold; any other key is an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<SocketAddr>,
    database_url: Option<String>,
    allow_insecure_jwks_hosts: Option<Vec<String>>,
    max_active_keys: Option<u32>,
    max_body_bytes: Option<u64>,
    clock_skew: Option<u64>,
    db_pool_size: Option<u32>,
    header_read_timeout: Option<u64>,
    body_read_timeout: Option<u64>,
    max_concurrent_requests: Option<u32>,
    auth_failure_limit: Option<u32>,
    shutdown_grace: Option<u64>,
    log_format: Option<LogFormat>,
}

/// The settings `serve` runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: String,
    pub allow_insecure_jwks_hosts: Vec<String>,
    pub max_active_keys: u32,
    pub max_body_bytes: u64,
    pub clock_skew: u64,
    pub db_pool_size: u32,
    pub header_read_timeout: u64,
    pub body_read_timeout: u64,
    pub max_concurrent_requests: u32,
    pub auth_failure_limit: u32,
    pub shutdown_grace: u64,
    pub log_format: LogFormat,
}

fn read_file(path: &Path) -> Result<FileSettings, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let first = e.message().lines().next().unwrap_or("invalid").to_owned();
        format!("the config file {} is invalid: {first}", path.display())
    })
}

fn in_range<T: PartialOrd + fmt::Display + Copy>(
    name: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, String> {
    if value < min || value > max {
        Err(format!(
            "{name} = {value} is out of range; use {min} to {max}"
        ))
    } else {
        Ok(value)
    }
}

impl Settings {
    pub fn resolve(args: &ServeArgs) -> Result<Self, String> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let hosts = if args.allow_insecure_jwks_hosts.is_empty() {
            file.allow_insecure_jwks_hosts.unwrap_or_default()
        } else {
            args.allow_insecure_jwks_hosts.clone()
        };
        let settings = Self {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            database_url: args
                .database
                .database_url
                .clone()
                .or(file.database_url)
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            allow_insecure_jwks_hosts: hosts.into_iter().filter(|h| !h.trim().is_empty()).collect(),
            max_active_keys: in_range(
                "max_active_keys",
                args.max_active_keys.or(file.max_active_keys).unwrap_or(20),
                1,
                10_000,
            )?,
            max_body_bytes: in_range(
                "max_body_bytes",
                args.max_body_bytes
                    .or(file.max_body_bytes)
                    .unwrap_or(65_536),
                1024,
                16_777_216,
            )?,
            clock_skew: in_range(
                "clock_skew",
                args.clock_skew.or(file.clock_skew).unwrap_or(300),
                0,
                3600,
            )?,
            db_pool_size: in_range(
                "db_pool_size",
                args.db_pool_size.or(file.db_pool_size).unwrap_or(16),
                1,
                256,
            )?,
            header_read_timeout: in_range(
                "header_read_timeout",
                args.header_read_timeout
                    .or(file.header_read_timeout)
                    .unwrap_or(10),
                1,
                300,
            )?,
            body_read_timeout: in_range(
                "body_read_timeout",
                args.body_read_timeout
                    .or(file.body_read_timeout)
                    .unwrap_or(10),
                1,
                300,
            )?,
            max_concurrent_requests: in_range(
                "max_concurrent_requests",
                args.max_concurrent_requests
                    .or(file.max_concurrent_requests)
                    .unwrap_or(512),
                1,
                100_000,
            )?,
            auth_failure_limit: in_range(
                "auth_failure_limit",
                args.auth_failure_limit
                    .or(file.auth_failure_limit)
                    .unwrap_or(100),
                1,
                100_000,
            )?,
            shutdown_grace: in_range(
                "shutdown_grace",
                args.shutdown_grace.or(file.shutdown_grace).unwrap_or(10),
                0,
                300,
            )?,
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
        };
        DatabaseUrl::parse(&settings.database_url)?;
        Ok(settings)
    }
}

/// The effective configuration as TOML, with the database password hidden.
impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let database = DatabaseUrl::parse(&self.database_url)
            .map_or_else(|_| "<invalid>".to_owned(), |u| u.to_string());
        let hosts: Vec<String> = self
            .allow_insecure_jwks_hosts
            .iter()
            .map(|h| format!("{h:?}"))
            .collect();
        writeln!(f, "listen = \"{}\"", self.listen)?;
        writeln!(f, "database_url = {database:?}")?;
        writeln!(f, "allow_insecure_jwks_hosts = [{}]", hosts.join(", "))?;
        writeln!(f, "max_active_keys = {}", self.max_active_keys)?;
        writeln!(f, "max_body_bytes = {}", self.max_body_bytes)?;
        writeln!(f, "clock_skew = {}", self.clock_skew)?;
        writeln!(f, "db_pool_size = {}", self.db_pool_size)?;
        writeln!(f, "header_read_timeout = {}", self.header_read_timeout)?;
        writeln!(f, "body_read_timeout = {}", self.body_read_timeout)?;
        writeln!(
            f,
            "max_concurrent_requests = {}",
            self.max_concurrent_requests
        )?;
        writeln!(f, "auth_failure_limit = {}", self.auth_failure_limit)?;
        writeln!(f, "shutdown_grace = {}", self.shutdown_grace)?;
        writeln!(f, "log_format = \"{}\"", self.log_format)
    }
}
