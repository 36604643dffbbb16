//! Faults on purpose: the server killed with SIGKILL mid-load, the database cut off
//! mid-load, and a search for secrets in every log line, table and response. Loads are
//! bounded in requests and time, on loopback only.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use keyward_persistence::testing::TestDb;
use keyward_persistence::{ConnectionManager, DatabaseUrl};
use serde_json::{json, Value};
use support::*;

#[derive(QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

/// The rows and counters that must agree after a crash.
#[derive(QueryableByName)]
struct Tally {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    keys: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    registered: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    revoked: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    revocations: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    active: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    counter: i64,
}

/// Acknowledged work of the load.
#[derive(Default)]
struct Acks {
    registered: Vec<String>,
    revoked: Vec<String>,
}

fn load(
    base: String,
    token: String,
    acks: Arc<Mutex<Acks>>,
    first_seed: u32,
    stop: Arc<AtomicBool>,
) {
    let mut seed = first_seed;
    for _ in 0..400 {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        seed += 1;
        let key_id = format!("crash-{seed}");
        let body = json!({"jwks": {"keys": [jwk(seed)]}, "keyId": key_id});
        let (status, _, _) = send(
            "POST",
            &format!("{base}/api/policy/v1/enterprises/acme/webhooks/keys"),
            Some(&token),
            Some(&body),
        );
        match status {
            201 => acks.lock().expect("lock").registered.push(key_id.clone()),
            0 => return, // the server is gone
            other => panic!("register answered {other}"),
        }
        if seed % 3 == 0 {
            let (status, _, _) = send(
                "DELETE",
                &format!("{base}/api/policy/v1/enterprises/acme/webhooks/keys/{key_id}"),
                Some(&token),
                None,
            );
            match status {
                200 => acks.lock().expect("lock").revoked.push(key_id),
                0 => return,
                other => panic!("revoke answered {other}"),
            }
        }
    }
}

fn check_consistency(db: &str) {
    let url = DatabaseUrl::parse(db).expect("url");
    let mut conn = ConnectionManager::new(url.clone())
        .establish()
        .expect("connect");
    if url.is_sqlite() {
        let rows: Vec<Text> =
            diesel::sql_query("SELECT integrity_check AS value FROM pragma_integrity_check")
                .load(&mut conn)
                .expect("integrity_check");
        assert_eq!(
            rows.iter().map(|r| r.value.as_str()).collect::<Vec<_>>(),
            ["ok"]
        );
    }
    // Every stored key came with its audit line, and every counter matches its rows:
    // no write was half done. One statement, so one snapshot: a transaction the killed
    // server sent before it died may still commit while this runs.
    // SQLite counts ACTIVE keys in the enterprise's row, PostgreSQL in its stripes.
    let counter = if url.is_sqlite() {
        "(SELECT active_keys FROM enterprises WHERE id = 'acme')"
    } else {
        "(SELECT CAST(COALESCE(SUM(active), 0) AS BIGINT) FROM active_key_stripes \
          WHERE enterprise_id = 'acme')"
    };
    let tally = diesel::sql_query(format!(
        "SELECT \
           (SELECT COUNT(*) FROM webhook_keys) AS keys, \
           (SELECT COUNT(*) FROM audit_events WHERE action = 'REGISTER' AND outcome = 'OK') \
             AS registered, \
           (SELECT COUNT(*) FROM webhook_keys WHERE status = 'REVOKED') AS revoked, \
           (SELECT COUNT(*) FROM audit_events WHERE action = 'REVOKE' AND outcome = 'OK') \
             AS revocations, \
           (SELECT COUNT(*) FROM webhook_keys WHERE status = 'ACTIVE') AS active, \
           {counter} AS counter",
    ))
    .get_result::<Tally>(&mut conn)
    .expect("tally");
    assert_eq!(tally.keys, tally.registered);
    assert_eq!(tally.revoked, tally.revocations);
    assert_eq!(tally.active, tally.counter);
}

fn crash_rounds(db: &str) {
    let token = bootstrap(db);
    let acks = Arc::new(Mutex::new(Acks::default()));
    for round in 0..4u32 {
        let mut server = Server::start(db, &["--max-active-keys", "10000"], &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..2u32)
            .map(|w| {
                let (base, token, acks, stop) =
                    (server.url(""), token.clone(), acks.clone(), stop.clone());
                thread::spawn(move || load(base, token, acks, (round * 2 + w) * 100_000, stop))
            })
            .collect();
        // A moment that differs each round, from the clock's low bits.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos();
        thread::sleep(Duration::from_millis(150 + u64::from(nanos % 500)));
        server.child.kill().expect("SIGKILL");
        let _ = server.child.wait();
        stop.store(true, Ordering::SeqCst);
        for worker in workers {
            worker.join().expect("worker");
        }
        drop(server);
        check_consistency(db);
    }
    let acks = acks.lock().expect("lock");
    assert!(
        acks.registered.len() > 10,
        "the load did some work: {}",
        acks.registered.len()
    );
    let server = Server::start(db, &[], &[]);
    for key_id in &acks.registered {
        let (status, _, body) = send(
            "GET",
            &server.url(&format!(
                "/api/policy/v1/enterprises/acme/webhooks/keys/{key_id}"
            )),
            Some(&token),
            None,
        );
        assert_eq!(status, 200, "acknowledged key {key_id} is lost: {body}");
        // A revocation cut off before its answer may or may not have committed; one
        // that answered 200 must have.
        if acks.revoked.contains(key_id) {
            let body: Value = serde_json::from_str(&body).expect("json");
            assert_eq!(
                body["status"], "REVOKED",
                "acknowledged revocation of {key_id} was undone"
            );
        }
    }
}

#[test]
fn sigkill_mid_load_loses_nothing_acknowledged_on_sqlite() {
    let db = TestDb::sqlite();
    crash_rounds(&db.url_string());
}

#[test]
fn sigkill_mid_load_loses_nothing_acknowledged_on_postgres() {
    let Some(db) = TestDb::postgres() else { return };
    crash_rounds(&db.url_string());
}

/// A TCP proxy in front of PostgreSQL that the test can cut and restore.
struct Proxy {
    port: u16,
    upstream: String,
    up: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: &str) -> Self {
        let proxy = Self {
            port: free_port(),
            upstream: upstream.to_owned(),
            up: Arc::new(AtomicBool::new(false)),
            streams: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.restore();
        proxy
    }

    fn restore(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        self.up.store(true, Ordering::SeqCst);
        let (up, streams, upstream) =
            (self.up.clone(), self.streams.clone(), self.upstream.clone());
        thread::spawn(move || {
            while up.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(&upstream) else {
                            continue;
                        };
                        let _ = client.set_nonblocking(false);
                        for (from, to) in [
                            (client.try_clone(), server.try_clone()),
                            (server.try_clone(), client.try_clone()),
                        ] {
                            if let (Ok(mut from), Ok(mut to)) = (from, to) {
                                thread::spawn(move || {
                                    let mut buf = [0u8; 16384];
                                    while let Ok(n) = from.read(&mut buf) {
                                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                    let _ = to.shutdown(Shutdown::Both);
                                });
                            }
                        }
                        streams.lock().expect("lock").extend([client, server]);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
    }

    /// Drops every connection and stops listening: the database is "down".
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(50));
        for stream in self.streams.lock().expect("lock").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

#[test]
fn a_database_outage_gives_503_quickly_and_recovers_without_restart() {
    let Some(db) = TestDb::postgres() else { return };
    let direct = db.url_string();
    let token = bootstrap(&direct);
    let proxy = Proxy::start("127.0.0.1:5432");
    let via_proxy = direct.replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(
        via_proxy, direct,
        "the test database is expected at 127.0.0.1:5432"
    );
    let server = Server::start(&via_proxy, &["--db-pool-size", "4"], &[]);
    let list = server.url("/api/policy/v1/enterprises/acme/webhooks/keys");
    assert_eq!(send("GET", &list, Some(&token), None).0, 200);

    proxy.cut();
    let outage: Vec<_> = (0..6)
        .map(|i| {
            let (list, token, base) = (list.clone(), token.clone(), server.url(""));
            thread::spawn(move || {
                let started = Instant::now();
                let reply = if i % 2 == 0 {
                    send("GET", &list, Some(&token), None)
                } else {
                    let body =
                        json!({"jwks": {"keys": [jwk(900 + i)]}, "keyId": format!("outage-{i}")});
                    send(
                        "POST",
                        &format!("{base}/api/policy/v1/enterprises/acme/webhooks/keys"),
                        Some(&token),
                        Some(&body),
                    )
                };
                (reply, started.elapsed())
            })
        })
        .collect();
    for worker in outage {
        let ((status, headers, body), took) = worker.join().expect("worker");
        assert_eq!(status, 503, "{body}");
        let body: Value = serde_json::from_str(&body).expect("error shape");
        assert_eq!(body["code"], "SERVICE_UNAVAILABLE");
        assert!(header(&headers, "x-request-id").is_some());
        assert!(
            took < Duration::from_secs(15),
            "a request hung for {took:?}"
        );
    }
    assert_eq!(send("GET", &server.url("/readyz"), None, None).0, 503);

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body) = send("GET", &list, Some(&token), None);
        if status == 200 {
            break;
        }
        assert!(status == 503, "during recovery: {status} {body}");
        assert!(
            Instant::now() < deadline,
            "the service did not recover by itself"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(send("GET", &server.url("/readyz"), None, None).0, 200);
    proxy.cut();
}

#[test]
fn no_secret_reaches_a_log_a_table_or_an_error_body() {
    let db = TestDb::sqlite();
    let url = db.url_string();
    let token = bootstrap(&url);
    let server = Server::start(&url, &["--log-format", "json"], &[("RUST_LOG", "trace")]);
    let keys = server.url("/api/policy/v1/enterprises/acme/webhooks/keys");
    let mut bodies = String::new();
    let check_no_store = |headers: &[(String, String)]| {
        assert_eq!(header(headers, "cache-control"), Some("no-store"));
    };
    // A private key attempt.
    let secret_d = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    let mut private = jwk(1);
    private["d"] = json!(secret_d);
    let (status, headers, body) = send(
        "POST",
        &keys,
        Some(&token),
        Some(&json!({"jwks": {"keys": [private]}, "keyId": "leaky"})),
    );
    assert_eq!(status, 400);
    check_no_store(&headers);
    bodies.push_str(&body);
    // Register, verify, revoke.
    let (status, headers, body) = send(
        "POST",
        &keys,
        Some(&token),
        Some(&json!({"jwks": {"keys": [jwk(2)]}, "keyId": "clean"})),
    );
    assert_eq!(status, 201);
    check_no_store(&headers);
    bodies.push_str(&body);
    let jws = sign(2, "clean", "eval-secret");
    let signature = jws.rsplit('.').next().expect("signature").to_owned();
    let verify = server.url("/api/policy/v1/enterprises/acme/webhooks/responses/verify");
    let (status, headers, body) = send(
        "POST",
        &verify,
        Some(&token),
        Some(&json!({"token": jws, "evaluationId": "eval-secret"})),
    );
    assert_eq!(status, 200);
    check_no_store(&headers);
    bodies.push_str(&body);
    let (_, _, body) = send(
        "POST",
        &verify,
        Some(&token),
        Some(&json!({"token": jws, "evaluationId": "eval-secret"})),
    );
    bodies.push_str(&body);
    let (_, _, body) = send(
        "POST",
        &verify,
        Some(&token),
        Some(&json!({"token": format!("{jws}x"), "evaluationId": "other"})),
    );
    bodies.push_str(&body);
    let (status, _, body) = send("DELETE", &format!("{keys}/clean"), Some(&token), None);
    assert_eq!(status, 200);
    bodies.push_str(&body);
    let (_, _, body) = send("GET", &keys, Some(&format!("{token}x")), None);
    bodies.push_str(&body);
    thread::sleep(Duration::from_millis(200));
    let logs = server.log_text();
    assert!(
        logs.lines().filter(|l| l.contains("\"request\"")).count() >= 8,
        "every request was logged: {logs}"
    );
    // kw_<id>_<secret>: the secret is base64url, which may itself hold '_'.
    let token_secret = token
        .strip_prefix("kw_")
        .and_then(|rest| rest.split_once('_'))
        .map(|(_, secret)| secret.to_owned())
        .expect("secret");
    assert!(token_secret.len() >= 40, "{token_secret}");
    let mut stored = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        if let Some(path) = db.sqlite_path() {
            stored.extend(std::fs::read(format!("{}{suffix}", path.display())).unwrap_or_default());
        }
    }
    let stored = String::from_utf8_lossy(&stored).into_owned();
    for (what, secret) in [
        ("bearer token", token.as_str()),
        ("token secret", token_secret.as_str()),
        ("private d", secret_d),
        ("token signature", signature.as_str()),
    ] {
        assert!(!logs.contains(secret), "the {what} is in the log");
        assert!(!stored.contains(secret), "the {what} is in the database");
        assert!(!bodies.contains(secret), "the {what} is in a response body");
    }
}
