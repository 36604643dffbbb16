//! Abuse limits and graceful shutdown, against the real binary on loopback. Every
//! client here is bounded in requests and time and stops by itself.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use keyward_persistence::testing::TestDb;
use serde_json::{json, Value};
use support::*;

#[test]
fn a_slowloris_client_is_cut_off_and_others_are_served() {
    let db = TestDb::sqlite();
    let server = Server::start(&db.url_string(), &["--header-read-timeout", "1"], &[]);
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: keyward\r\n")
        .expect("write");
    let started = Instant::now();
    let mut cut = false;
    for i in 0..30 {
        std::thread::sleep(Duration::from_millis(200));
        // Meanwhile a normal client is served.
        if i == 2 {
            assert_eq!(send("GET", &server.url("/healthz"), None, None).0, 200);
        }
        if stream
            .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
            .is_err()
        {
            cut = true;
            break;
        }
        stream
            .set_read_timeout(Some(Duration::from_millis(10)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        if matches!(stream.read(&mut buf), Ok(0)) {
            cut = true;
            break;
        }
    }
    assert!(cut, "the trickling client was never cut off");
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[test]
fn a_slow_body_gets_408_in_the_error_shape() {
    let db = TestDb::sqlite();
    let token = bootstrap(&db.url_string());
    let server = Server::start(&db.url_string(), &["--body-read-timeout", "1"], &[]);
    let head = format!(
        "POST /api/policy/v1/enterprises/acme/webhooks/keys HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"keyId\""
    );
    let reply = raw(&server.addr, head.as_bytes(), Duration::from_secs(5));
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"code\":\"REQUEST_TIMEOUT\""), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("x-request-id"),
        "{reply}"
    );
}

#[test]
fn requests_over_the_in_flight_cap_get_503_and_probes_still_answer() {
    let db = TestDb::sqlite();
    let token = bootstrap(&db.url_string());
    let server = Server::start(
        &db.url_string(),
        &["--max-concurrent-requests", "1", "--body-read-timeout", "3"],
        &[],
    );
    // One request holds the only slot while its body trickles in.
    let mut holder = TcpStream::connect(&server.addr).expect("connect");
    let head = format!(
        "POST /api/policy/v1/enterprises/acme/webhooks/responses/verify HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{{"
    );
    holder.write_all(head.as_bytes()).expect("write");
    std::thread::sleep(Duration::from_millis(300));
    let (status, headers, body) = send(
        "GET",
        &server.url("/api/policy/v1/enterprises/acme/webhooks/keys"),
        Some(&token),
        None,
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["code"], "SERVICE_UNAVAILABLE");
    assert_eq!(send("GET", &server.url("/readyz"), None, None).0, 200);
    drop(holder);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        send(
            "GET",
            &server.url("/api/policy/v1/enterprises/acme/webhooks/keys"),
            Some(&token),
            None
        )
        .0,
        200
    );
}

#[test]
fn repeated_failed_authentication_gets_429_with_retry_after() {
    let db = TestDb::sqlite();
    let token = bootstrap(&db.url_string());
    let server = Server::start(&db.url_string(), &["--auth-failure-limit", "3"], &[]);
    let url = server.url("/api/policy/v1/enterprises/acme/webhooks/keys");
    let unknown = "kw_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for _ in 0..2 {
        assert_eq!(send("GET", &url, Some(unknown), None).0, 401);
    }
    // The third failure reaches the limit and is answered 429 already.
    let (status, headers, body) = send("GET", &url, Some(unknown), None);
    assert_eq!(status, 429, "{body}");
    let wait: u64 = header(&headers, "retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=60).contains(&wait));
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (body["code"].clone(), body["status"].clone()),
        (json!("TOO_MANY_REQUESTS"), json!(429))
    );
    // Until the window passes, every failing attempt from the address is a 429 (a
    // malformed one without any lookup), while a valid token still works.
    assert_eq!(send("GET", &url, Some("wrong"), None).0, 429);
    assert_eq!(send("GET", &url, Some(unknown), None).0, 429);
    assert_eq!(send("GET", &url, Some(&token), None).0, 200);
}

#[test]
fn sigterm_lets_requests_in_flight_finish_then_exits_zero() {
    let db = TestDb::sqlite();
    let token = bootstrap(&db.url_string());
    let mut server = Server::start(&db.url_string(), &["--shutdown-grace", "10"], &[]);
    let body = json!({"jwks": {"keys": [jwk(1)]}, "keyId": "in-flight"}).to_string();
    let head = format!(
        "POST /api/policy/v1/enterprises/acme/webhooks/keys HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    stream.write_all(head.as_bytes()).expect("head");
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(first.as_bytes()).expect("first half");
    std::thread::sleep(Duration::from_millis(300));
    terminate(server.pid());
    std::thread::sleep(Duration::from_millis(300));
    // New connections are refused once shutdown began.
    assert!(TcpStream::connect_timeout(
        &server.addr.parse().expect("addr"),
        Duration::from_millis(500)
    )
    .is_err());
    stream.write_all(rest.as_bytes()).expect("second half");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(
        reply.starts_with("HTTP/1.1 201"),
        "the request in flight was not finished: {reply}"
    );
    let deadline = Instant::now() + Duration::from_secs(12);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "keyward did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    // What it acknowledged is stored.
    let again = Server::start(&db.url_string(), &[], &[]);
    assert_eq!(
        send(
            "GET",
            &again.url("/api/policy/v1/enterprises/acme/webhooks/keys/in-flight"),
            Some(&token),
            None
        )
        .0,
        200
    );
}
