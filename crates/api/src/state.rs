//! What the handlers share: the use cases and the operator's HTTP settings.

use std::sync::Arc;

use keyward_domain::ports::ReadinessProbe;
use keyward_domain::{DomainError, KeyService};

/// Renders the Prometheus text exposition of every metric.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// Handed to every request through `Data`.
#[derive(Clone)]
pub struct AppState {
    pub keys: Arc<KeyService>,
    pub readiness: Arc<dyn ReadinessProbe>,
    /// `None` when no metrics recorder is installed (`/metrics` then answers 404).
    pub metrics: Option<MetricsRenderer>,
    /// Whether short database reads run in place on the event loop: right for an
    /// embedded database (SQLite), where a read is a little CPU and handing it to
    /// another thread costs more than the read; wrong for a networked one. It also
    /// decides where a verification reads a key it does not hold: on a blocking thread
    /// when true, from the store's key reader when false.
    pub reads_inline: bool,
    /// The page of keys rendered last, for the requests its read answers.
    pub last_page: Arc<crate::keys::LastPage>,
}

impl AppState {
    /// Runs a short database read (an authorization): in place when
    /// [`Self::reads_inline`] and a pooled connection is idle (so the event loop does not
    /// queue for one; if another thread takes it first, the read waits for the next),
    /// otherwise on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, DomainError>
    where
        F: FnOnce() -> Result<T, DomainError> + Send + 'static,
        T: Send + 'static,
    {
        let idle = || {
            self.readiness
                .connections()
                .is_some_and(|(_, idle)| idle > 0)
        };
        if self.reads_inline && idle() {
            f()
        } else {
            blocking(f).await
        }
    }
}

/// Runs blocking work (Diesel calls) on the blocking pool, never on the async workers.
pub async fn blocking<T, F>(f: F) -> Result<T, DomainError>
where
    F: FnOnce() -> Result<T, DomainError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|join| {
        Err(DomainError::Internal(format!(
            "blocking task failed: {join}"
        )))
    })
}

/// Awaits the value a store hands to a callback: `start` gives the callback to the
/// store (which may call it on a thread of its own); `dropped` stands in for the value
/// if the callback is dropped uncalled. The event loop's thread is not held meanwhile.
pub async fn answered<T: Send + 'static>(
    start: impl FnOnce(Box<dyn FnOnce(T) + Send>),
    dropped: impl FnOnce() -> T,
) -> T {
    let (done, answer) = tokio::sync::oneshot::channel();
    start(Box::new(move |value| {
        let _ = done.send(value);
    }));
    answer.await.unwrap_or_else(|_| dropped())
}

/// The id of the current request, echoed in `X-Request-Id` and written to the audit trail.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);
