//! `keyward serve`: migrate, wire the API to the database, and serve until SIGTERM or
//! Ctrl-C, letting requests in flight finish.

use std::sync::Arc;
use std::time::Duration;

use keyward_api::{app, AppState, HttpSettings};
use keyward_domain::{InsecureHosts, KeyService, Policy};
use keyward_persistence::PoolOptions;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
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
    // Measured beside the start-up's own work (about 20 ms of one core), so that
    // `/readyz` does not wait for it; a verification arriving sooner waits for the rest.
    if std::thread::Builder::new()
        .name("keyward-ed25519".into())
        .spawn(log_ed25519_choice)
        .is_err()
    {
        log_ed25519_choice();
    }
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
    let metrics = install_metrics()?;
    let state = AppState {
        keys: keys.clone(),
        readiness: repository,
        metrics: Some(render_metrics(metrics.clone())),
        reads_inline: matches!(
            keyward_persistence::DatabaseUrl::parse(&args.database_url),
            Ok(keyward_persistence::DatabaseUrl::Sqlite(_))
        ),
        last_page: Default::default(),
    };
    runtime.block_on(async move {
        tokio::spawn(metrics_upkeep(metrics, METRICS_UPKEEP));
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

/// How often the latencies recorded since the last time are counted into their
/// histogram buckets (see [`metrics_upkeep`]).
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// The latency buckets of `keyward_http_request_duration_seconds`, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The buckets of `keyward_replay_batch_size`, in records (a batch holds at most 512).
const BATCH_SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

fn metrics_builder() -> Result<PrometheusBuilder, String> {
    PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS)
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full("keyward_replay_batch_size".into()),
                &BATCH_SIZE_BUCKETS,
            )
        })
        .map_err(|e| format!("cannot set up metrics: {e}"))
}

/// Installs the Prometheus recorder. Its histograms need [`metrics_upkeep`] running.
fn install_metrics() -> Result<PrometheusHandle, String> {
    let handle = metrics_builder()?
        .install_recorder()
        .map_err(|e| format!("cannot set up metrics: {e}"))?;
    metrics::gauge!("keyward_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for name in [
        "keyward_replay_records_written_total",
        "keyward_replay_records_purged_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    Ok(handle)
}

/// What renders `/metrics`.
fn render_metrics(handle: PrometheusHandle) -> keyward_api::MetricsRenderer {
    Arc::new(move || handle.render())
}

/// Counts the latencies recorded since the last run into their histogram buckets,
/// every `every`. The recorder keeps each recorded latency (about 16 bytes, one per
/// request) until then, or until `/metrics` is rendered: without this, a service nobody
/// scrapes would grow by every request it answers (nearly 1 GiB an hour at 15,000
/// requests a second).
async fn metrics_upkeep(handle: PrometheusHandle, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
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

/// Measures how this machine checks Ed25519 signatures fastest (see
/// `keyward_domain::crypto::ed25519_choice`) and logs it.
fn log_ed25519_choice() {
    let ed25519 = keyward_domain::crypto::ed25519_choice();
    tracing::info!(
        chosen = ed25519.chosen.name(),
        ed25519_dalek_us = format_args!("{:.1}", ed25519.dalek_micros),
        aws_lc_rs_us = format_args!("{:.1}", ed25519.aws_lc_micros),
        ed25519_dalek_stack_offset = ed25519.dalek_stack_offset,
        "Ed25519 signatures are checked with the faster implementation here"
    );
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusRecorder;

    use super::*;

    /// This process's resident memory in bytes, where `/proc` tells (Linux).
    fn resident() -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * 4096)
    }

    const MIB: u64 = 1024 * 1024;

    /// Records four million latencies, in rounds with a pause between them, into a
    /// recorder of its own; with `upkeep`, [`metrics_upkeep`] runs every millisecond
    /// meanwhile. Returns how much the resident memory grew, what `/metrics` says, and
    /// the recorder (kept by the caller, so that the next run cannot reuse its memory).
    fn record_many(upkeep: bool) -> (u64, String, PrometheusRecorder) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let recorder = metrics_builder().expect("buckets").build_recorder();
        let handle = recorder.handle();
        let latency =
            metrics::with_local_recorder(&recorder, || metrics::histogram!("latency_seconds"));
        let before = resident().unwrap_or(0);
        runtime.block_on(async {
            let task = upkeep
                .then(|| tokio::spawn(metrics_upkeep(handle.clone(), Duration::from_millis(1))));
            for _ in 0..16 {
                for i in 0..250_000_u32 {
                    latency.record(f64::from(i % 1000) * 1e-5);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if let Some(task) = task {
                task.abort();
            }
        });
        let grown = resident().unwrap_or(0).saturating_sub(before);
        (grown, handle.render(), recorder)
    }

    #[test]
    fn latencies_recorded_without_a_scrape_do_not_pile_up() {
        if resident().is_none() {
            return;
        }
        // What the latencies hold without upkeep (about 16 bytes each), so that the
        // measure is seen to notice them.
        let (without, _, _kept) = record_many(false);
        assert!(without > 24 * MIB, "without upkeep grew {without} bytes");
        let (with_upkeep, rendered, _) = record_many(true);
        // Counted, none lost.
        assert!(
            rendered.contains("latency_seconds_count 4000000"),
            "{rendered}"
        );
        assert!(
            with_upkeep < 12 * MIB,
            "with upkeep grew {with_upkeep} bytes (without: {without})"
        );
    }
}
