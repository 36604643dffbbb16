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
    max_clients: usize,
    clients: Mutex<Clients>,
}

#[derive(Default)]
struct Clients {
    /// Each client's window: when it began and the failures in it.
    by_address: HashMap<IpAddr, (Instant, u32)>,
    /// When passed windows were last forgotten.
    swept: Option<Instant>,
}

/// Clients remembered at most; beyond it, passed windows are forgotten first.
const MAX_CLIENTS: usize = 100_000;

/// How often a full table is swept of passed windows at most: a sweep looks at every
/// client.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl AuthFailures {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self::bounded(limit, window, MAX_CLIENTS)
    }

    fn bounded(limit: u32, window: Duration, max_clients: usize) -> Self {
        Self {
            limit,
            window,
            max_clients,
            clients: Mutex::default(),
        }
    }

    /// How long `client` must wait, if it used up its failures in this window.
    pub fn blocked(&self, client: IpAddr) -> Option<Duration> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let (start, count) = clients.by_address.get(&client)?;
        let elapsed = start.elapsed();
        (*count >= self.limit && elapsed < self.window).then(|| self.window - elapsed)
    }

    /// Counts one failed authentication by `client`. A new client finding the table
    /// full of windows that have not passed goes uncounted: memory stays bounded however
    /// many addresses fail at once (and a token cannot be guessed anyway).
    pub fn record(&self, client: IpAddr) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.by_address.len() >= self.max_clients && !clients.by_address.contains_key(&client)
        {
            if clients.swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
                let window = self.window;
                clients
                    .by_address
                    .retain(|_, (start, _)| start.elapsed() < window);
                clients.swept = Some(Instant::now());
            }
            if clients.by_address.len() >= self.max_clients {
                return;
            }
        }
        let entry = clients
            .by_address
            .entry(client)
            .or_insert((Instant::now(), 0));
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

    #[test]
    fn a_full_table_of_failing_clients_stops_growing() {
        let failures = AuthFailures::bounded(1, Duration::from_secs(60), 2);
        let ip = |n: u8| IpAddr::from([192, 0, 2, n]);
        failures.record(ip(1));
        failures.record(ip(2));
        for _ in 0..10 {
            failures.record(ip(3));
        }
        assert!(failures.blocked(ip(1)).is_some());
        assert!(failures.blocked(ip(2)).is_some());
        assert!(
            failures.blocked(ip(3)).is_none(),
            "a client beyond the table goes uncounted"
        );
        let clients = failures.clients.lock().expect("lock");
        assert_eq!(clients.by_address.len(), 2);
    }

    #[test]
    fn passed_windows_make_room() {
        let failures = AuthFailures::bounded(1, Duration::ZERO, 2);
        let ip = |n: u8| IpAddr::from([192, 0, 2, n]);
        for n in 1..=5 {
            failures.record(ip(n));
        }
        let clients = failures.clients.lock().expect("lock");
        assert!(clients.by_address.contains_key(&ip(3)), "swept for 3");
        assert!(clients.by_address.len() <= 2);
    }
}
