//! Fetching keys registered by jwksUri: a hardened HTTP client and a bounded cache.
//!
//! The customer chooses the URL, so every fetch is treated as hostile:
//! - https only, unless the operator allowed the host for development;
//! - every address a name resolves to must be public (no loopback, private, link-local,
//!   CGNAT, ULA, NAT64, multicast, reserved, or IPv4-mapped forms of those), and the
//!   connection goes to exactly the addresses checked (no second DNS lookup to rebind);
//! - at most 3 redirects, each target checked like the original;
//! - a connect timeout, a total budget, and a body cap enforced while reading;
//! - status 200 only; the body parsed strictly; each key checked like an inline one.
//!
//! Cache: a JWKS is fresh for its `Cache-Control: max-age`, clamped to
//! [`FetchConfig::min_ttl`, `FetchConfig::max_ttl`]. A kid the cached set lacks triggers
//! one refetch, then a cooldown ([`FetchConfig::unknown_kid_cooldown`]) during which no
//! kid the set lacks fetches again; so does any fetch that does not find the kid it was
//! for. The cooldown runs from such a fetch, not from the last fetch of any kind, so a
//! key added upstream and registered right after a fetch still verifies at once.
//! Concurrent misses on one URI share one fetch, and its outcome: lookups that waited
//! for a fetch that failed answer from that failure instead of each fetching in turn.
//! (Only keyIds registered with the URI reach it: a token's unknown kid is refused
//! before any fetch.) When a refetch
//! fails, the last good copy keeps serving for [`FetchConfig::serve_stale_for`] past its
//! expiry; after that, lookups fail closed.
//! At most [`FetchConfig::max_cached_uris`] URIs' sets are kept (each from a body of at
//! most [`FetchConfig::max_body_bytes`]); a new URI takes the place of the one looked
//! up least recently.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_domain::net::is_public_ip;
use keyward_domain::ports::{JwksLookup, JwksSource, JWKS_UNKNOWN_KID_COOLDOWN_SECS};
use keyward_domain::{InsecureHosts, JwksUri, PublicJwk};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::Value;

/// Limits and cache lifetimes of JWKS fetching.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub connect_timeout: Duration,
    /// Whole fetch, redirects and body included.
    pub total_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_redirects: usize,
    pub default_ttl: Duration,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    /// After a refetch for a kid the fresh set lacked, or a fetch that did not find its
    /// kid: how long kids the fresh set lacks are answered as unknown without a fetch.
    pub unknown_kid_cooldown: Duration,
    pub serve_stale_for: Duration,
    /// Most JWKS URIs whose key sets are kept. A new URI takes the place of the one
    /// looked up least recently (and not being looked up now), so memory stays bounded
    /// however many URIs registrations name.
    pub max_cached_uris: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            total_timeout: Duration::from_secs(5),
            max_body_bytes: 64 * 1024,
            max_redirects: 3,
            default_ttl: Duration::from_secs(300),
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(3600),
            unknown_kid_cooldown: Duration::from_secs(JWKS_UNKNOWN_KID_COOLDOWN_SECS),
            serve_stale_for: Duration::from_secs(3600),
            max_cached_uris: 1024,
        }
    }
}

/// One fetched key set.
struct CachedSet {
    keys: HashMap<String, Result<PublicJwk, String>>,
    fetched_at: Instant,
    fresh_until: Instant,
}

#[derive(Default)]
struct Slot {
    set: Option<CachedSet>,
    /// When the last refetch for a kid the fresh set lacked, or the last fetch that did
    /// not find its kid, happened: the cooldown runs from there.
    cooling_since: Option<Instant>,
    /// When the last fetch failed, and why; cleared by a fetch that succeeds.
    failed: Option<(Instant, String)>,
}

impl Slot {
    /// Whether a kid the fresh set lacks may be fetched for now; if so, the cooldown
    /// starts.
    fn may_refetch(&mut self, now: Instant, config: &FetchConfig) -> bool {
        let cooling = self
            .cooling_since
            .is_some_and(|at| now.duration_since(at) < config.unknown_kid_cooldown);
        if !cooling {
            self.cooling_since = Some(now);
        }
        !cooling
    }
}

/// The [`JwksSource`] used by `keyward serve`.
pub struct JwksFetcher {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    config: FetchConfig,
    insecure: InsecureHosts,
    slots: Mutex<Slots>,
}

/// One slot per URI, with when it was last looked up (a count of lookups); a slot's
/// async lock merges concurrent fetches of its URI.
#[derive(Default)]
struct Slots {
    by_uri: HashMap<String, (Arc<tokio::sync::Mutex<Slot>>, u64)>,
    lookups: u64,
}

/// Resolves names and keeps only the answer when every address is public (or the host
/// was allowed by the operator). reqwest then connects to exactly these addresses.
struct CheckedResolver {
    insecure: InsecureHosts,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allowed = self.insecure.allows(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> {
                    format!("cannot resolve {host}: {e}").into()
                })?
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            if !allowed {
                if let Some(bad) = addrs.iter().find(|a| !is_public_ip(a.ip())) {
                    return Err(
                        format!("{host} resolves to the non-public address {}", bad.ip()).into(),
                    );
                }
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

impl JwksFetcher {
    /// Builds the fetcher; `runtime` runs the fetches (lookups block on it from the
    /// blocking pool).
    pub fn new(
        config: FetchConfig,
        insecure: InsecureHosts,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let policy_hosts = insecure.clone();
        let max_redirects = config.max_redirects;
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                return attempt.error(format!("more than {max_redirects} redirects"));
            }
            match check_url(attempt.url().as_str(), &policy_hosts) {
                Ok(()) => attempt.follow(),
                Err(why) => attempt.error(format!("redirect refused: {why}")),
            }
        });
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.total_timeout)
            .redirect(redirect)
            .dns_resolver(Arc::new(CheckedResolver {
                insecure: insecure.clone(),
            }))
            .no_proxy()
            .user_agent(concat!("keyward/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the JWKS client: {e}"))?;
        Ok(Self {
            client,
            runtime,
            config,
            insecure,
            slots: Mutex::default(),
        })
    }

    fn slot(&self, uri: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots.lookups += 1;
        let now = slots.lookups;
        if let Some((slot, used)) = slots.by_uri.get_mut(uri) {
            *used = now;
            return slot.clone();
        }
        // Slots are handed out only under this lock, so one no lookup holds now stays
        // unheld until it is gone. With every slot held, the map grows by the lookups
        // in flight, and shrinks back when they are done and the next URI comes.
        while slots.by_uri.len() >= self.config.max_cached_uris {
            let idle = slots
                .by_uri
                .iter()
                .filter(|(_, (slot, _))| Arc::strong_count(slot) == 1)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(uri, _)| uri.clone());
            match idle {
                Some(idle) => slots.by_uri.remove(&idle),
                None => break,
            };
        }
        let slot = Arc::<tokio::sync::Mutex<Slot>>::default();
        slots.by_uri.insert(uri.to_owned(), (slot.clone(), now));
        slot
    }

    async fn lookup(&self, uri: &str, kid: &str) -> JwksLookup {
        let slot = self.slot(uri);
        let asked = Instant::now();
        let mut slot = slot.lock().await;
        let now = Instant::now();
        let fresh_miss = match slot.set.as_ref().filter(|set| now < set.fresh_until) {
            Some(set) => match set.keys.get(kid) {
                Some(found) => return answer(kid, found),
                None => true,
            },
            None => false,
        };
        if fresh_miss && !slot.may_refetch(now, &self.config) {
            return JwksLookup::NotFound;
        }
        // Lookups that queued behind a fetch share its outcome, a failure too: while the
        // endpoint is down, each would otherwise wait for every fetch before its own.
        let fetched = match &slot.failed {
            Some((at, why)) if *at >= asked => Err(why.clone()),
            _ => {
                let fetched = self.fetch(uri).await;
                let outcome = if fetched.is_ok() { "ok" } else { "error" };
                metrics::counter!("keyward_jwks_fetches_total", "outcome" => outcome).increment(1);
                if let Err(why) = &fetched {
                    tracing::warn!(uri = %uri, error = %why, "JWKS fetch failed");
                }
                slot.failed = fetched
                    .as_ref()
                    .err()
                    .map(|why| (Instant::now(), why.clone()));
                fetched
            }
        };
        let result = match fetched {
            Ok(set) => {
                let result = set
                    .keys
                    .get(kid)
                    .map_or(JwksLookup::NotFound, |found| answer(kid, found));
                slot.set = Some(set);
                result
            }
            Err(why) => match slot.set.as_ref() {
                Some(set) if now < set.fresh_until + self.config.serve_stale_for => {
                    tracing::warn!(uri = %uri, age_s = now.duration_since(set.fetched_at).as_secs(), "serving a stale JWKS");
                    set.keys
                        .get(kid)
                        .map_or(JwksLookup::NotFound, |found| answer(kid, found))
                }
                _ => JwksLookup::Unavailable(why),
            },
        };
        if matches!(result, JwksLookup::NotFound) {
            slot.cooling_since = Some(now);
        }
        result
    }

    async fn fetch(&self, uri: &str) -> Result<CachedSet, String> {
        check_url(uri, &self.insecure)?;
        let started = Instant::now();
        let mut response = self
            .client
            .get(uri)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(format!(
                "the JWKS URI answered {}, not 200",
                response.status().as_u16()
            ));
        }
        let cap = self.config.max_body_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > cap as u64)
        {
            return Err(format!("the JWKS is larger than {cap} bytes"));
        }
        let ttl = ttl_of(response.headers(), &self.config);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > cap {
                return Err(format!("the JWKS is larger than {cap} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let keys = parse_set(&body)?;
        let fetched_at = Instant::now();
        tracing::info!(uri = %uri, keys = keys.len(), ms = started.elapsed().as_millis() as u64, "JWKS fetched");
        Ok(CachedSet {
            keys,
            fetched_at,
            fresh_until: fetched_at + ttl,
        })
    }
}

impl JwksSource for JwksFetcher {
    fn find(&self, uri: &str, kid: &str) -> JwksLookup {
        self.runtime.block_on(self.lookup(uri, kid))
    }
}

fn answer(kid: &str, found: &Result<PublicJwk, String>) -> JwksLookup {
    match found {
        Ok(jwk) => JwksLookup::Found(jwk.clone()),
        Err(why) => {
            JwksLookup::Unavailable(format!("the JWKS key '{kid}' is not acceptable: {why}"))
        }
    }
}

/// The same URL rules as registration, and IP literals checked here because the
/// resolver never sees them.
fn check_url(raw: &str, insecure: &InsecureHosts) -> Result<(), String> {
    let uri = JwksUri::parse(raw, insecure).map_err(|e| e.to_string())?;
    let url = uri.url();
    let host = url.host_str().unwrap_or_default();
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(ip) = ip {
        if !is_public_ip(ip) && !insecure.allows(host) {
            return Err(format!("{ip} is not a public address"));
        }
    }
    Ok(())
}

/// A fetch error without the URL repeated or internals.
fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_redirect() {
        "too many or forbidden redirects"
    } else {
        "failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        format!("the JWKS fetch {kind}")
    } else {
        format!("the JWKS fetch {kind}: {detail}")
    }
}

/// `Cache-Control: max-age`, clamped; `no-store`/`no-cache` mean the floor.
fn ttl_of(headers: &reqwest::header::HeaderMap, config: &FetchConfig) -> Duration {
    let Some(value) = headers
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
    else {
        return config.default_ttl;
    };
    let mut ttl = config.default_ttl;
    for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if directive == "no-store" || directive == "no-cache" {
            return config.min_ttl;
        }
        if let Some(seconds) = directive
            .strip_prefix("max-age=")
            .and_then(|s| s.trim_matches('"').parse::<u64>().ok())
        {
            ttl = Duration::from_secs(seconds);
        }
    }
    ttl.clamp(config.min_ttl, config.max_ttl)
}

/// A JWKS body: a JSON object with a `keys` array; each key with a string `kid` is
/// checked like an inline registration. A kid that appears twice is ambiguous and
/// unusable.
fn parse_set(body: &[u8]) -> Result<HashMap<String, Result<PublicJwk, String>>, String> {
    let value = keyward_domain::json::parse_strict(body)
        .map_err(|e| format!("the JWKS is not valid JSON: {e}"))?;
    let Some(keys) = value
        .as_object()
        .and_then(|o| o.get("keys"))
        .and_then(Value::as_array)
    else {
        return Err("the JWKS is not an object with a 'keys' array".into());
    };
    let mut set: HashMap<String, Result<PublicJwk, String>> = HashMap::new();
    for key in keys {
        let Some(object) = key.as_object() else {
            continue;
        };
        let Some(kid) = object.get("kid").and_then(Value::as_str) else {
            continue;
        };
        let checked = PublicJwk::from_json(object).map_err(|e| format!("{} ({})", e, e.code()));
        if set.contains_key(kid) {
            set.insert(
                kid.to_owned(),
                Err("the kid appears more than once in the JWKS".into()),
            );
        } else {
            set.insert(kid.to_owned(), checked);
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests;
