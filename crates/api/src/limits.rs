//! Abuse limits: how long a body may take, how many requests run at once, and how many
//! failed authentications a client may make before it is told to wait.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::HttpSettings;

/// The limits shared by every request.
#[derive(Clone)]
pub struct Limits {
    pub body_read_timeout: Duration,
    pub in_flight: Arc<Semaphore>,
    pub max_in_flight: usize,
    pub auth_failures: Arc<AuthFailures>,
}

impl Limits {
    pub fn new(settings: &HttpSettings) -> Self {
        Self {
            body_read_timeout: settings.body_read_timeout,
            in_flight: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
            max_in_flight: settings.max_concurrent_requests,
            auth_failures: Arc::new(AuthFailures::new(
                settings.auth_failure_limit,
                Duration::from_secs(60),
            )),
        }
    }
}

/// Failed authentications per client address, in fixed windows.
pub struct AuthFailures {
    limit: u32,
    window: Duration,
    clients: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Clients remembered at most; beyond it, expired windows are forgotten first.
const MAX_CLIENTS: usize = 100_000;

impl AuthFailures {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// How long `client` must wait, if it used up its failures in this window.
    pub fn blocked(&self, client: IpAddr) -> Option<Duration> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let (start, count) = clients.get(&client)?;
        let elapsed = start.elapsed();
        (*count >= self.limit && elapsed < self.window).then(|| self.window - elapsed)
    }

    /// Counts one failed authentication by `client`.
    pub fn record(&self, client: IpAddr) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() >= MAX_CLIENTS {
            let window = self.window;
            clients.retain(|_, (start, _)| start.elapsed() < window);
        }
        let entry = clients.entry(client).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_blocked_after_its_limit_and_others_are_not() {
        let failures = AuthFailures::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..2 {
            failures.record(a);
            assert!(failures.blocked(a).is_none());
        }
        failures.record(a);
        let wait = failures.blocked(a).expect("blocked");
        assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(50));
        assert!(failures.blocked(b).is_none());
        let short = AuthFailures::new(1, Duration::ZERO);
        short.record(a);
        assert!(
            short.blocked(a).is_none(),
            "a passed window no longer blocks"
        );
    }
}
