//! `keyward serve`: migrate, wire the API to the database, and serve until SIGTERM or
//! Ctrl-C, letting requests in flight finish.

use std::sync::Arc;
use std::time::Duration;

use keyward_api::{app, AppState, HttpSettings};
use keyward_domain::{InsecureHosts, KeyService, Policy};
use keyward_persistence::PoolOptions;
use tracing_subscriber::EnvFilter;

use crate::cli::ServeArgs;
use crate::config::{LogFormat, Settings};
use crate::jwks::{FetchConfig, JwksFetcher};
use crate::server::{serve, ConnectionLimits};

pub fn run(args: ServeArgs) -> Result<(), String> {
    let settings = Settings::resolve(&args)?;
    if args.print_config {
        print!("{settings}");
        return Ok(());
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(
            crate::logs::stderr().map_err(|e| format!("cannot start the log writer: {e}"))?,
        );
    match settings.log_format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let args = settings;
    let repository = crate::open_database(
        &args.database_url,
        PoolOptions {
            max_size: args.db_pool_size,
            ..PoolOptions::default()
        },
    )?;
    let repository = Arc::new(repository);
    let policy = Policy {
        max_active_keys: args.max_active_keys,
        insecure_jwks_hosts: InsecureHosts::new(&args.allow_insecure_jwks_hosts),
        clock_skew_seconds: i64::try_from(args.clock_skew).unwrap_or(300),
        ..Policy::default()
    };
    if !policy.insecure_jwks_hosts.hosts().is_empty() {
        tracing::warn!(hosts = ?policy.insecure_jwks_hosts.hosts(), "insecure jwksUri hosts allowed: development and tests only");
    }

    let settings = HttpSettings {
        max_body_bytes: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
        body_read_timeout: Duration::from_secs(args.body_read_timeout),
        max_concurrent_requests: usize::try_from(args.max_concurrent_requests)
            .unwrap_or(usize::MAX),
        auth_failure_limit: args.auth_failure_limit,
    };
    let connection_limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(args.header_read_timeout),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
    };
    // Blocking work is database calls, which wait for one of the pool's connections
    // anyway: more threads than that (tokio allows 512) only add stacks and allocator
    // arenas to the resident memory.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(usize::try_from(args.db_pool_size).unwrap_or(16) * 2 + 8)
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let fetcher = JwksFetcher::new(
        FetchConfig::default(),
        policy.insecure_jwks_hosts.clone(),
        runtime.handle().clone(),
    )?;
    let keys = Arc::new(
        KeyService::new(repository.clone(), crate::clock(), policy)
            .with_jwks_source(Arc::new(fetcher)),
    );
    let state = AppState {
        keys: keys.clone(),
        readiness: repository,
        metrics: Some(install_metrics()?),
        reads_inline: matches!(
            keyward_persistence::DatabaseUrl::parse(&args.database_url),
            Ok(keyward_persistence::DatabaseUrl::Sqlite(_))
        ),
        last_page: Default::default(),
    };
    runtime.block_on(async move {
        tokio::spawn(purge_replay_records(keys.clone()));
        tokio::spawn(observe_auth_epoch(keys));
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        tracing::info!(listen = %args.listen, "keyward serving");
        serve(
            listener,
            app(state, settings),
            connection_limits,
            shutdown_signal(),
        )
        .await;
        Ok::<(), String>(())
    })?;
    tracing::info!("keyward stopped");
    Ok(())
}

/// Installs the Prometheus recorder and returns what renders `/metrics`.
fn install_metrics() -> Result<keyward_api::MetricsRenderer, String> {
    const LATENCY_BUCKETS: [f64; 12] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
    ];
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS)
        .map_err(|e| format!("cannot set up metrics: {e}"))?
        .install_recorder()
        .map_err(|e| format!("cannot set up metrics: {e}"))?;
    metrics::gauge!("keyward_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for name in [
        "keyward_replay_records_written_total",
        "keyward_replay_records_purged_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    Ok(Arc::new(move || handle.render()))
}

/// Deletes expired replay records once a minute, off the request path.
async fn purge_replay_records(keys: Arc<KeyService>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let keys = keys.clone();
        match tokio::task::spawn_blocking(move || keys.purge_replay_records()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                metrics::counter!("keyward_replay_records_purged_total").increment(n);
                tracing::debug!(purged = n, "expired replay records purged");
            }
            Ok(Err(err)) => tracing::warn!(error = %err, "replay record purge failed; will retry"),
            Err(err) => tracing::warn!(error = %err, "replay record purge task failed"),
        }
    }
}

/// Keeps the auth epoch observed, so that grants read from the database can be reused
/// until a revocation or a membership added, changed or removed retires them (see
/// `GRANT_CACHE_MILLIS`). When the database cannot be read, observations stop and every
/// request reads its grant again.
async fn observe_auth_epoch(keys: Arc<KeyService>) {
    let mut tick = tokio::time::interval(Duration::from_millis(
        keyward_domain::AUTH_EPOCH_POLL_MILLIS,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let keys = keys.clone();
        if let Ok(Err(err)) = tokio::task::spawn_blocking(move || keys.observe_auth_epoch()).await {
            tracing::debug!(error = %err, "auth epoch not observed; grants are read per request");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown signal received; finishing requests in flight");
}
