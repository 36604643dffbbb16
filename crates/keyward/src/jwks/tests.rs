//! The fetcher against local servers that misbehave in the ways the checklist lists.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use keyward_domain::ports::{JwksLookup, JwksSource};
use keyward_domain::InsecureHosts;
use serde_json::json;

use super::{CheckedResolver, FetchConfig, JwksFetcher};

const X1: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const X2: &str = "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w";
const X3: &str = "7UkoxijRwsbq6QM4kFmVYSlZJzpcY_k2NsFGFKyHN9E";

/// What the test server answers for a path.
type Handler = dyn Fn(&str, &mut std::net::TcpStream) + Send + Sync;

/// A loopback HTTP server that counts requests and answers with `handler`. It stops
/// with the test process; every test uses its own.
struct TestServer {
    base: String,
    hits: Arc<AtomicUsize>,
}

fn serve(handler: Arc<Handler>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    thread::spawn(move || {
        for stream in listener.incoming().take(500) {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            thread::spawn(move || {
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") && request.len() < 8192 {
                    match stream.read(&mut byte) {
                        Ok(1) => request.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                handler(&path, &mut stream);
            });
        }
    });
    TestServer { base, hits }
}

fn respond(
    stream: &mut std::net::TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn jwks(keys: serde_json::Value) -> Vec<u8> {
    json!({ "keys": keys }).to_string().into_bytes()
}

fn ed(kid: &str, x: &str) -> serde_json::Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid})
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
}

impl Fixture {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        Self { runtime }
    }

    fn fetcher(&self, config: FetchConfig) -> Arc<JwksFetcher> {
        Arc::new(
            JwksFetcher::new(
                config,
                InsecureHosts::new(["127.0.0.1"]),
                self.runtime.handle().clone(),
            )
            .expect("fetcher"),
        )
    }
}

fn quick() -> FetchConfig {
    FetchConfig {
        connect_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(2),
        ..FetchConfig::default()
    }
}

fn found(lookup: &JwksLookup) -> bool {
    matches!(lookup, JwksLookup::Found(_))
}

fn unavailable(lookup: &JwksLookup) -> String {
    match lookup {
        JwksLookup::Unavailable(why) => why.clone(),
        other => panic!("expected unavailable, got {other:?}"),
    }
}

/// A server answering every path with a JWKS of key `k1`, fresh for ten minutes.
fn serve_k1() -> TestServer {
    serve(Arc::new(|_: &str, s: &mut std::net::TcpStream| {
        respond(
            s,
            "200 OK",
            &[("Cache-Control", "max-age=600".into())],
            &jwks(json!([ed("k1", X1)])),
        )
    }))
}

/// A server answering a one-key JWKS (`k1`) with `Cache-Control: <cache_control>` while
/// the flag it returns is set, and 503 once it is cleared.
fn serve_k1_until_down(cache_control: &'static str) -> (TestServer, Arc<AtomicBool>) {
    let up = Arc::new(AtomicBool::new(true));
    let u = up.clone();
    let server = serve(Arc::new(move |_: &str, s: &mut std::net::TcpStream| {
        if u.load(Ordering::SeqCst) {
            respond(
                s,
                "200 OK",
                &[("Cache-Control", cache_control.into())],
                &jwks(json!([ed("k1", X1)])),
            );
        } else {
            respond(s, "503 Service Unavailable", &[], b"");
        }
    }));
    (server, up)
}

#[test]
fn a_good_key_is_found_and_cached() {
    let fx = Fixture::new();
    let server = serve_k1();
    let fetcher = fx.fetcher(quick());
    let uri = format!("{}/jwks.json", server.base);
    assert!(found(&fetcher.find(&uri, "k1")));
    assert!(found(&fetcher.find(&uri, "k1")));
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "the second lookup is served from the cache"
    );
}

#[test]
fn the_cache_keeps_the_uris_looked_up_last() {
    let fx = Fixture::new();
    let server = serve_k1();
    let fetcher = fx.fetcher(FetchConfig {
        max_cached_uris: 2,
        ..quick()
    });
    let uri = |name: &str| format!("{}/{name}.json", server.base);
    let fetches_after = |name: &str| {
        assert!(found(&fetcher.find(&uri(name), "k1")), "{name}");
        server.hits.load(Ordering::SeqCst)
    };
    assert_eq!(fetches_after("a"), 1);
    assert_eq!(fetches_after("b"), 2);
    assert_eq!(fetches_after("a"), 2, "a is kept");
    // A third URI takes the place of the one looked up least recently: b.
    assert_eq!(fetches_after("c"), 3);
    assert_eq!(fetches_after("a"), 3, "a is still kept");
    assert_eq!(fetches_after("b"), 4, "b was let go and is fetched again");
    assert_eq!(fetches_after("a"), 4, "a is still kept; c made room for b");
}

#[test]
fn private_keys_and_bad_documents_are_refused() {
    let fx = Fixture::new();
    let fetcher = fx.fetcher(quick());
    let private = serve(Arc::new(|_: &str, s: &mut std::net::TcpStream| {
        let mut key = ed("k1", X1);
        key["d"] = json!("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A");
        respond(s, "200 OK", &[], &jwks(json!([key])));
    }));
    let why = unavailable(&fetcher.find(&format!("{}/j", private.base), "k1"));
    assert!(why.contains("PRIVATE_KEY_MATERIAL"), "{why}");
    assert!(!why.contains("nWGxne"), "{why}");
    for body in [
        &b"[1,2]"[..],
        b"{\"keys\": 5}",
        b"not json",
        b"{\"keys\":[],\"keys\":[]}",
    ] {
        let body = body.to_vec();
        let server = serve(Arc::new(move |_: &str, s: &mut std::net::TcpStream| {
            respond(s, "200 OK", &[], &body)
        }));
        unavailable(&fetcher.find(&format!("{}/j", server.base), "k1"));
    }
    let twice = serve(Arc::new(|_: &str, s: &mut std::net::TcpStream| {
        respond(s, "200 OK", &[], &jwks(json!([ed("k1", X1), ed("k1", X2)])))
    }));
    unavailable(&fetcher.find(&format!("{}/j", twice.base), "k1"));
    let status = serve(Arc::new(|_: &str, s: &mut std::net::TcpStream| {
        respond(
            s,
            "500 Internal Server Error",
            &[],
            &jwks(json!([ed("k1", X1)])),
        )
    }));
    assert!(unavailable(&fetcher.find(&format!("{}/j", status.base), "k1")).contains("500"));
}

#[test]
fn huge_bodies_are_cut_off() {
    let fx = Fixture::new();
    let fetcher = fx.fetcher(quick());
    let declared = serve(Arc::new(|_: &str, s: &mut std::net::TcpStream| {
        respond(s, "200 OK", &[], &vec![b' '; 100_000])
    }));
    assert!(unavailable(&fetcher.find(&format!("{}/j", declared.base), "k1")).contains("larger"));
    // Chunked, no Content-Length: counted while reading.
    let chunked = serve(Arc::new(|_: &str, s: &mut std::net::TcpStream| {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        );
        for _ in 0..200 {
            if s.write_all(b"400\r\n").is_err()
                || s.write_all(&[b' '; 0x400]).is_err()
                || s.write_all(b"\r\n").is_err()
            {
                return;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n");
    }));
    assert!(unavailable(&fetcher.find(&format!("{}/j", chunked.base), "k1")).contains("larger"));
}

#[test]
fn a_trickling_server_fails_within_the_budget() {
    let fx = Fixture::new();
    let fetcher = fx.fetcher(FetchConfig {
        total_timeout: Duration::from_millis(800),
        ..quick()
    });
    let slow = serve(Arc::new(|_: &str, s: &mut std::net::TcpStream| {
        let _ =
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n");
        for _ in 0..100 {
            if s.write_all(b" ").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }));
    let started = Instant::now();
    assert!(unavailable(&fetcher.find(&format!("{}/j", slow.base), "k1")).contains("timed out"));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the budget bounds the fetch"
    );
}

#[test]
fn redirects_are_bounded_and_rechecked() {
    let fx = Fixture::new();
    let fetcher = fx.fetcher(quick());
    let internal = serve(Arc::new(|_: &str, s: &mut std::net::TcpStream| {
        respond(
            s,
            "302 Found",
            &[("Location", "http://169.254.169.254/latest/meta-data".into())],
            b"",
        );
    }));
    assert!(unavailable(&fetcher.find(&format!("{}/j", internal.base), "k1")).contains("redirect"));
    let private = serve(Arc::new(|_: &str, s: &mut std::net::TcpStream| {
        respond(
            s,
            "302 Found",
            &[("Location", "https://10.0.0.1/jwks".into())],
            b"",
        );
    }));
    unavailable(&fetcher.find(&format!("{}/j", private.base), "k1"));
    // A chain within the bound is followed; one beyond it is not.
    let base = Arc::new(Mutex::new(String::new()));
    let b = base.clone();
    let chain = serve(Arc::new(move |path: &str, s: &mut std::net::TcpStream| {
        let n: usize = path.trim_start_matches("/hop/").parse().unwrap_or(0);
        if n == 0 {
            respond(s, "200 OK", &[], &jwks(json!([ed("k1", X1)])));
        } else {
            let next = format!("{}/hop/{}", b.lock().expect("lock"), n - 1);
            respond(s, "302 Found", &[("Location", next)], b"");
        }
    }));
    *base.lock().expect("lock") = chain.base.clone();
    assert!(found(&fetcher.find(&format!("{}/hop/3", chain.base), "k1")));
    assert!(
        unavailable(&fetcher.find(&format!("{}/hop/4", chain.base), "k1")).contains("redirect")
    );
}

/// A server answering with whatever set the returned handle holds (at first `keys`),
/// fresh for an hour.
fn serve_changing(keys: serde_json::Value) -> (TestServer, Arc<Mutex<serde_json::Value>>) {
    let current = Arc::new(Mutex::new(keys));
    let c = current.clone();
    let server = serve(Arc::new(move |_: &str, s: &mut std::net::TcpStream| {
        let keys = c.lock().expect("lock").clone();
        respond(
            s,
            "200 OK",
            &[("Cache-Control", "max-age=3600".into())],
            &jwks(keys),
        );
    }));
    (server, current)
}

#[test]
fn unknown_kids_refetch_once_per_cooldown_and_rotations_are_seen() {
    let fx = Fixture::new();
    let (server, current) = serve_changing(json!([ed("a", X1)]));
    let uri = format!("{}/j", server.base);
    let patient = fx.fetcher(quick());
    assert!(found(&patient.find(&uri, "a")));
    for _ in 0..20 {
        assert_eq!(patient.find(&uri, "missing"), JwksLookup::NotFound);
    }
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        2,
        "a kid the set lacks costs one refetch per cooldown"
    );
    for i in 0..50 {
        assert_eq!(
            patient.find(&uri, &format!("flood-{i}")),
            JwksLookup::NotFound
        );
    }
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        2,
        "a flood of other unknown kids fetches nothing within the refetch's cooldown"
    );
    // A first fetch that does not find its kid starts the cooldown too.
    let cold = fx.fetcher(quick());
    assert_eq!(cold.find(&uri, "ghost"), JwksLookup::NotFound);
    assert_eq!(cold.find(&uri, "other"), JwksLookup::NotFound);
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
    let eager = fx.fetcher(FetchConfig {
        unknown_kid_cooldown: Duration::ZERO,
        ..quick()
    });
    let expiring = fx.fetcher(FetchConfig {
        min_ttl: Duration::ZERO,
        default_ttl: Duration::ZERO,
        max_ttl: Duration::ZERO,
        ..quick()
    });
    assert!(found(&eager.find(&uri, "a")));
    assert!(found(&expiring.find(&uri, "a")));
    // The customer rotates: b appears, a disappears.
    *current.lock().expect("lock") = json!([ed("b", X2)]);
    assert!(
        found(&patient.find(&uri, "a")),
        "within its cache age the old set still serves"
    );
    assert!(found(&eager.find(&uri, "b")), "an unknown kid refetches");
    assert_eq!(
        eager.find(&uri, "a"),
        JwksLookup::NotFound,
        "the refreshed set no longer has a"
    );
    assert_eq!(
        expiring.find(&uri, "a"),
        JwksLookup::NotFound,
        "once the cache age has passed, a removed key is refused"
    );
}

#[test]
fn a_key_added_upstream_is_found_right_after_the_last_fetch() {
    // The rotation: the customer adds b to the set keyward fetched a moment ago,
    // registers b and verifies with it at once.
    let fx = Fixture::new();
    let (server, current) = serve_changing(json!([ed("a", X1)]));
    let uri = format!("{}/j", server.base);
    // Long enough that a loaded machine still looks up c within it.
    let cooldown = Duration::from_secs(2);
    let fetcher = fx.fetcher(FetchConfig {
        unknown_kid_cooldown: cooldown,
        ..quick()
    });
    assert!(found(&fetcher.find(&uri, "a")));
    *current.lock().expect("lock") = json!([ed("a", X1), ed("b", X2)]);
    assert!(found(&fetcher.find(&uri, "b")), "the new kid refetches");
    // One refetch per cooldown, whatever the kid: another key added within it waits
    // for the cooldown to pass.
    *current.lock().expect("lock") = json!([ed("a", X1), ed("b", X2), ed("c", X3)]);
    assert_eq!(fetcher.find(&uri, "c"), JwksLookup::NotFound);
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    thread::sleep(cooldown);
    assert!(
        found(&fetcher.find(&uri, "c")),
        "after the cooldown it refetches"
    );
    assert!(found(&fetcher.find(&uri, "a")));
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
}

/// Ten lookups of kid `k1` at `uri`, started together, in the order started.
fn ten_at_once(fetcher: &Arc<JwksFetcher>, uri: &str) -> Vec<JwksLookup> {
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let (fetcher, uri) = (fetcher.clone(), uri.to_owned());
            thread::spawn(move || fetcher.find(&uri, "k1"))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect()
}

#[test]
fn concurrent_misses_share_one_fetch() {
    let fx = Fixture::new();
    let server = serve(Arc::new(|_: &str, s: &mut std::net::TcpStream| {
        thread::sleep(Duration::from_millis(200));
        respond(s, "200 OK", &[], &jwks(json!([ed("k1", X1)])));
    }));
    let uri = format!("{}/j", server.base);
    assert!(ten_at_once(&fx.fetcher(quick()), &uri).iter().all(found));
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn lookups_queued_behind_a_failing_fetch_share_its_failure() {
    let fx = Fixture::new();
    let server = serve(Arc::new(|_: &str, s: &mut std::net::TcpStream| {
        thread::sleep(Duration::from_millis(200));
        respond(s, "503 Service Unavailable", &[], b"");
    }));
    let fetcher = fx.fetcher(quick());
    let uri = format!("{}/j", server.base);
    for lookup in ten_at_once(&fetcher, &uri) {
        assert!(unavailable(&lookup).contains("503"));
    }
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "one fetch for the lookups that waited on it"
    );
    unavailable(&fetcher.find(&uri, "k1"));
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        2,
        "a lookup that comes later tries again"
    );
}

#[test]
fn a_set_let_go_is_fetched_again_and_not_served_stale() {
    let fx = Fixture::new();
    let (server, up) = serve_k1_until_down("max-age=600");
    let fetcher = fx.fetcher(FetchConfig {
        max_cached_uris: 1,
        serve_stale_for: Duration::from_secs(3600),
        ..quick()
    });
    let (a, b) = (format!("{}/a", server.base), format!("{}/b", server.base));
    assert!(found(&fetcher.find(&a, "k1")));
    assert!(found(&fetcher.find(&b, "k1")), "b takes a's place");
    up.store(false, Ordering::SeqCst);
    assert!(found(&fetcher.find(&b, "k1")), "b is kept and fresh");
    unavailable(&fetcher.find(&a, "k1"));
}

#[test]
fn a_stale_copy_serves_for_a_bounded_time_then_fails_closed() {
    let fx = Fixture::new();
    let (server, up) = serve_k1_until_down("max-age=0");
    let uri = format!("{}/j", server.base);
    let expiring = FetchConfig {
        min_ttl: Duration::ZERO,
        ..quick()
    };
    let tolerant = fx.fetcher(FetchConfig {
        serve_stale_for: Duration::from_secs(3600),
        ..expiring.clone()
    });
    let strict = fx.fetcher(FetchConfig {
        serve_stale_for: Duration::ZERO,
        ..expiring
    });
    assert!(found(&tolerant.find(&uri, "k1")));
    assert!(found(&strict.find(&uri, "k1")));
    up.store(false, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(20));
    assert!(
        found(&tolerant.find(&uri, "k1")),
        "stale copy within the bound"
    );
    unavailable(&strict.find(&uri, "k1"));
}

#[test]
fn names_resolving_to_internal_addresses_are_refused_unless_allowed() {
    let fx = Fixture::new();
    let refuse = CheckedResolver {
        insecure: InsecureHosts::default(),
    };
    let allow = CheckedResolver {
        insecure: InsecureHosts::new(["localhost"]),
    };
    fx.runtime.block_on(async {
        use reqwest::dns::Resolve as _;
        let name = |n: &str| n.parse::<reqwest::dns::Name>().expect("name");
        assert!(refuse.resolve(name("localhost")).await.is_err());
        assert!(allow.resolve(name("localhost")).await.is_ok());
    });
    // https to a non-public literal never connects.
    let fetcher = fx.fetcher(quick());
    unavailable(&fetcher.find("https://127.0.0.2/jwks", "k1"));
    unavailable(&fetcher.find("https://[::ffff:10.0.0.1]/jwks", "k1"));
}
