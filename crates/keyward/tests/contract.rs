//! The contract test: the real `keyward` binary on an ephemeral port with a fresh
//! database, bootstrapped through its CLI, driven over HTTP. Every response's status must
//! be documented for its operation in the committed `openapi/openapi.json`, and its body
//! must validate against the documented schema (with a JSON Schema validator); every
//! error must have the contract's shape. Runs on SQLite and on PostgreSQL.

mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keyward_persistence::testing::TestDb;
use serde_json::{json, Map, Value};
use support::{keyward as cli, Server, BIN};

const BASE: &str = "/api/policy/v1";

fn spec() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi/openapi.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("openapi.json is JSON")
}

/// OpenAPI 3.0's `nullable: true` becomes JSON Schema's "or null".
fn to_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: Map<String, Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), to_json_schema(v)))
                .collect();
            if out.remove("nullable") == Some(Value::Bool(true)) {
                return json!({"anyOf": [{"type": "null"}, Value::Object(out)]});
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

struct Checker {
    spec: Value,
    agent: ureq::Agent,
    base: String,
    checked: Vec<String>,
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Checker {
    /// Sends a request and checks the answer against the document. `template` is the
    /// documented path (`None` for routes outside the API).
    fn send(
        &mut self,
        method: &str,
        template: Option<&str>,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        expect: u16,
    ) -> Reply {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let response = match body {
            Some(body) => {
                let req = req
                    .header("content-type", "application/json")
                    .body(body.to_owned())
                    .expect("request");
                self.agent.run(req)
            }
            None => self.agent.run(req.body(()).expect("request")),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let text = response.into_body().read_to_string().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let reply = Reply {
            status,
            headers,
            body,
        };
        assert_eq!(status, expect, "{method} {path}: {text}");
        assert!(
            reply.header("x-request-id").is_some(),
            "{method} {path}: no X-Request-Id"
        );
        if status >= 400 {
            let obj = reply
                .body
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path}: error is not JSON: {text}"));
            assert_eq!(obj.len(), 3, "{text}");
            assert!(
                obj["code"].is_string() && obj["message"].is_string(),
                "{text}"
            );
            assert_eq!(obj["status"], json!(status), "{text}");
            assert!(reply
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/json")));
        }
        if let Some(template) = template {
            self.validate(method, template, &reply);
        }
        reply
    }

    fn validate(&mut self, method: &str, template: &str, reply: &Reply) {
        let operation = &self.spec["paths"][template][method.to_ascii_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template} is not documented"
        );
        let response = &operation["responses"][reply.status.to_string()];
        assert!(
            response.is_object(),
            "{method} {template} answered {}, which the document does not list",
            reply.status
        );
        let content = response["content"].as_object().expect("documented content");
        let (media, media_spec) = content.iter().next().expect("one media type");
        assert!(media.starts_with("application/json"));
        let mut schema = to_json_schema(&media_spec["schema"]);
        if let Value::Object(map) = &mut schema {
            map.insert(
                "components".into(),
                to_json_schema(&self.spec["components"]),
            );
        }
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("schema of {method} {template} {}: {e}", reply.status));
        let errors: Vec<String> = validator
            .iter_errors(&reply.body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {}: body {} breaks the document: {errors:?}",
            reply.status,
            reply.body
        );
        for (name, header) in response["headers"].as_object().into_iter().flatten() {
            if header["required"] == json!(true) {
                assert!(
                    reply.header(name).is_some(),
                    "{method} {template}: documented header {name} missing"
                );
            }
        }
        self.checked
            .push(format!("{method} {template} {}", reply.status));
    }
}

fn ed25519_jwk(seed: u8) -> Value {
    // The RFC 8037 key, then the public keys of the secrets [1; 32] and [2; 32].
    let xs = [
        "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
        "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w",
        "gTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5Q",
    ];
    json!({"kty": "OKP", "crv": "Ed25519", "x": xs[usize::from(seed) % xs.len()]})
}

fn run_contract(db: &str) {
    cli(
        db,
        &["admin", "enterprise", "create", "acme", "--name", "Acme"],
    );
    cli(db, &["admin", "enterprise", "create", "globex"]);
    cli(db, &["admin", "user", "create", "alice@acme.test"]);
    cli(db, &["admin", "user", "create", "bob@acme.test"]);
    cli(
        db,
        &[
            "admin",
            "member",
            "add",
            "acme",
            "alice@acme.test",
            "--role",
            "admin",
        ],
    );
    cli(
        db,
        &[
            "admin",
            "member",
            "add",
            "acme",
            "bob@acme.test",
            "--role",
            "member",
        ],
    );
    let admin = cli(
        db,
        &["admin", "token", "issue", "alice@acme.test", "--ttl", "1d"],
    )
    .lines()
    .last()
    .expect("token line")
    .to_owned();
    let member = cli(db, &["admin", "token", "issue", "bob@acme.test"])
        .lines()
        .last()
        .expect("token line")
        .to_owned();
    let jwks_server = serve_jwks(&[(1, "remote-1")]);
    let server = start(
        db,
        &[
            "--max-active-keys",
            "3",
            "--allow-insecure-jwks-host",
            "127.0.0.1",
        ],
    );
    let mut c = Checker {
        spec: spec(),
        agent: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into(),
        base: server.url(""),
        checked: Vec::new(),
    };
    const KEYS: &str = "/api/policy/v1/enterprises/{enterpriseId}/webhooks/keys";
    const KEY: &str = "/api/policy/v1/enterprises/{enterpriseId}/webhooks/keys/{keyId}";
    let (keys_t, key_t) = (Some(KEYS), Some(KEY));
    let keys = format!("{BASE}/enterprises/acme/webhooks/keys");
    let (a, m) = (Some(admin.as_str()), Some(member.as_str()));

    // Register.
    let v1 =
        json!({"jwks": {"keys": [with_kid(ed25519_jwk(0), "my-key-v1")]}, "keyName": "Production"})
            .to_string();
    let created = c.send("POST", keys_t, &keys, a, Some(&v1), 201);
    assert_eq!(
        created.header("location"),
        Some("/api/policy/v1/enterprises/acme/webhooks/keys/my-key-v1")
    );
    let uri =
        json!({"jwksUri": format!("{jwks_server}/.well-known/jwks.json"), "keyId": "remote-1"})
            .to_string();
    c.send("POST", keys_t, &keys, a, Some(&uri), 201);
    c.send("POST", keys_t, &keys, a, Some(&v1), 400);
    let same_key = json!({"jwks": {"keys": [ed25519_jwk(0)]}, "keyId": "other"}).to_string();
    c.send("POST", keys_t, &keys, a, Some(&same_key), 409);
    c.send(
        "POST",
        keys_t,
        &keys,
        a,
        Some(r#"{"jwks": {"keys": [{"kty":"RSA","n":"AQAB","e":"AQAB"}]}, "keyId": "rsa"}"#),
        400,
    );
    c.send("POST", keys_t, &keys, a, Some("{broken"), 400);
    c.send("POST", keys_t, &keys, None, Some(&v1), 401);
    c.send("POST", keys_t, &keys, m, Some(&v1), 403);
    c.send(
        "POST",
        keys_t,
        &format!("{BASE}/enterprises/globex/webhooks/keys"),
        a,
        Some(&v1),
        403,
    );
    let big = format!("{{\"keyName\":\"{}\"}}", "x".repeat(70_000));
    c.send("POST", keys_t, &keys, a, Some(&big), 413);
    let v2 = json!({"jwks": {"keys": [ed25519_jwk(1)]}, "keyId": "my-key-v2"}).to_string();
    c.send("POST", keys_t, &keys, a, Some(&v2), 201);
    let v3 = json!({"jwks": {"keys": [ed25519_jwk(2)]}, "keyId": "my-key-v3"}).to_string();
    c.send("POST", keys_t, &keys, a, Some(&v3), 409);

    // List.
    let list = c.send("GET", keys_t, &keys, a, None, 200);
    assert_eq!(list.body["total"], 3);
    c.send(
        "GET",
        keys_t,
        &format!("{keys}?status=ACTIVE&limit=1&prevId=1"),
        a,
        None,
        200,
    );
    c.send("GET", keys_t, &format!("{keys}?limit=0"), a, None, 400);
    c.send("GET", keys_t, &keys, None, None, 401);
    c.send("GET", keys_t, &keys, m, None, 403);

    // Get.
    let got = c.send("GET", key_t, &format!("{keys}/my-key-v1"), a, None, 200);
    assert_eq!(
        got.body["thumbprint"],
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
    c.send("GET", key_t, &format!("{keys}/remote-1"), a, None, 200);
    c.send("GET", key_t, &format!("{keys}/missing"), a, None, 404);
    c.send("GET", key_t, &format!("{keys}/my-key-v1"), None, None, 401);
    c.send("GET", key_t, &format!("{keys}/my-key-v1"), m, None, 403);

    // Verify: inline and jwksUri keys, replay, tampering, authorization.
    const VERIFY: &str = "/api/policy/v1/enterprises/{enterpriseId}/webhooks/responses/verify";
    let verify_t = Some(VERIFY);
    let verify = format!("{BASE}/enterprises/acme/webhooks/responses/verify");
    let body = |token: &str, evaluation: &str| {
        json!({"token": token, "evaluationId": evaluation}).to_string()
    };
    let t1 = sign(0, "my-key-v1", "eval-1", 200);
    let ok = c.send(
        "POST",
        verify_t,
        &verify,
        a,
        Some(&body(&t1, "eval-1")),
        200,
    );
    assert_eq!(
        ok.body,
        json!({"valid": true, "keyId": "my-key-v1", "statusCode": 200, "approved": true})
    );
    let replay = c.send(
        "POST",
        verify_t,
        &verify,
        a,
        Some(&body(&t1, "eval-1")),
        200,
    );
    assert_eq!(replay.body["reason"], "REPLAYED");
    let remote = c.send(
        "POST",
        verify_t,
        &verify,
        a,
        Some(&body(&sign(1, "remote-1", "eval-2", 403), "eval-2")),
        200,
    );
    assert_eq!(
        remote.body,
        json!({"valid": true, "keyId": "remote-1", "statusCode": 403, "approved": false})
    );
    let mut tampered = sign(0, "my-key-v1", "eval-3", 200);
    tampered.pop();
    tampered.push('x');
    let bad = c.send(
        "POST",
        verify_t,
        &verify,
        a,
        Some(&body(&tampered, "eval-3")),
        200,
    );
    assert_eq!(bad.body["valid"], false);
    c.send("POST", verify_t, &verify, a, Some(r#"{"token": 1}"#), 400);
    c.send(
        "POST",
        verify_t,
        &verify,
        None,
        Some(&body(&t1, "eval-1")),
        401,
    );
    c.send(
        "POST",
        verify_t,
        &verify,
        m,
        Some(&body(&t1, "eval-1")),
        403,
    );
    let got = c.send("GET", key_t, &format!("{keys}/my-key-v1"), a, None, 200);
    assert!(got.body["lastVerifiedDate"].is_string());

    // Revoke.
    c.send("DELETE", key_t, &format!("{keys}/my-key-v1"), a, None, 200);
    c.send("DELETE", key_t, &format!("{keys}/my-key-v1"), a, None, 409);
    c.send("DELETE", key_t, &format!("{keys}/missing"), a, None, 404);
    c.send(
        "DELETE",
        key_t,
        &format!("{keys}/my-key-v2"),
        None,
        None,
        401,
    );
    c.send("DELETE", key_t, &format!("{keys}/my-key-v2"), m, None, 403);
    c.send("POST", keys_t, &keys, a, Some(&v1), 400);

    // Outside the documented operations: still the error shape.
    c.send("GET", None, "/api/policy/v1/nothing", a, None, 404);
    c.send("PATCH", None, &keys, a, None, 405);
    let served = c.send("GET", None, "/openapi.json", None, None, 200);
    assert_eq!(
        served.body, c.spec,
        "the served document is the committed one"
    );
    c.send("GET", None, "/readyz", None, None, 200);

    let admin2 = cli(db, &["admin", "token", "issue", "alice@acme.test"])
        .lines()
        .last()
        .expect("token line")
        .to_owned();
    // The token can be revoked by its prefix, and then it no longer works.
    let id = admin.split('_').take(2).collect::<Vec<_>>().join("_");
    cli(db, &["admin", "token", "revoke", &id]);
    c.send("GET", keys_t, &keys, a, None, 401);

    // The audit trail tells what happened.
    let audit = cli(db, &["admin", "audit", "acme", "--json"]);
    let outcomes: Vec<(String, String)> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("audit line is JSON"))
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(
        outcomes.contains(&("REVOKE".into(), "OK".into())),
        "{audit}"
    );
    assert!(
        outcomes.contains(&("REGISTER".into(), "ACTIVE_KEY_LIMIT_REACHED".into())),
        "{audit}"
    );
    assert!(!audit.contains(&admin));

    // The metrics moved with the scenario.
    let metrics = scrape(&server.url(""));
    let route = "/api/policy/v1/enterprises/:enterpriseId/webhooks/keys";
    assert!(
        metric(
            &metrics,
            "keyward_http_requests_total",
            &[("route", route), ("status", "201"), ("method", "POST")]
        ) >= 2.0
    );
    assert!(
        metric(
            &metrics,
            "keyward_http_requests_total",
            &[("route", route), ("status", "401")]
        ) >= 1.0
    );
    assert!(
        metric(
            &metrics,
            "keyward_http_request_duration_seconds_count",
            &[("route", route)]
        ) >= 5.0
    );
    assert!(
        metric(
            &metrics,
            "keyward_verifications_total",
            &[("outcome", "VALID")]
        ) >= 2.0
    );
    assert!(
        metric(
            &metrics,
            "keyward_verifications_total",
            &[("outcome", "REPLAYED")]
        ) >= 1.0
    );
    assert!(metric(&metrics, "keyward_jwks_fetches_total", &[("outcome", "ok")]) >= 1.0);
    assert!(metric(&metrics, "keyward_replay_records_written_total", &[]) >= 2.0);
    // Batch sizes are counted in buckets of records, not of seconds.
    let batch_buckets: Vec<f64> = metrics
        .iter()
        .filter(|s| s.metric == "keyward_replay_batch_size")
        .flat_map(|s| match &s.value {
            prometheus_parse::Value::Histogram(counts) => {
                counts.iter().map(|c| c.less_than).collect()
            }
            _ => Vec::new(),
        })
        .collect();
    assert!(
        batch_buckets.contains(&2.0) && batch_buckets.contains(&512.0),
        "{batch_buckets:?}"
    );
    assert!(metric(&metrics, "keyward_build_info", &[]) == 1.0);
    assert!(metrics
        .iter()
        .any(|s| s.metric == "keyward_db_pool_connections"));
    assert!(
        !metrics
            .iter()
            .any(|s| s.labels.values().any(|v| v.contains("acme"))),
        "no per-enterprise series"
    );

    // A revoked key verifies nothing.
    let after = sign(0, "my-key-v1", "eval-9", 200);
    let revoked = c.send(
        "POST",
        verify_t,
        &verify,
        Some(&admin2),
        Some(&body(&after, "eval-9")),
        200,
    );
    assert_eq!(revoked.body["reason"], "KEY_REVOKED");

    // Every documented operation was exercised with at least its success status.
    for op in [
        "POST {t} 201",
        "GET {t} 200",
        "GET {k} 200",
        "DELETE {k} 200",
        "POST {v} 200",
    ] {
        let op = op
            .replace("{t}", KEYS)
            .replace("{k}", KEY)
            .replace("{v}", VERIFY);
        assert!(c.checked.contains(&op), "{op} not exercised");
    }
}

/// Scrapes `/metrics` and parses it with a Prometheus text-format parser.
fn scrape(base: &str) -> Vec<prometheus_parse::Sample> {
    let text = ureq::get(&format!("{base}/metrics"))
        .call()
        .expect("metrics")
        .into_body()
        .read_to_string()
        .expect("body");
    let lines = text.lines().map(|l| Ok::<_, std::io::Error>(l.to_owned()));
    prometheus_parse::Scrape::parse(lines)
        .expect("Prometheus text format")
        .samples
}

/// The sum of the samples of `name` whose labels include `labels`.
fn metric(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            _ => 0.0,
        })
        .sum()
}

/// The Ed25519 secret behind `ed25519_jwk(seed)`.
fn secret(seed: u8) -> ed25519_dalek::SigningKey {
    let bytes = match seed {
        0 => {
            let d = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"; // RFC 8037 appendix A.1
            let raw = URL_SAFE_NO_PAD.decode(d).expect("d");
            <[u8; 32]>::try_from(raw.as_slice()).expect("32 bytes")
        }
        n => [n; 32],
    };
    ed25519_dalek::SigningKey::from_bytes(&bytes)
}

/// A compact JWS answering `evaluation` with `status`, signed now.
fn sign(seed: u8, kid: &str, evaluation: &str, status: i64) -> String {
    use ed25519_dalek::Signer as _;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "EdDSA", "kid": kid}).to_string());
    let claims = URL_SAFE_NO_PAD
        .encode(json!({"evaluationId": evaluation, "statusCode": status, "iat": now}).to_string());
    let input = format!("{header}.{claims}");
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(secret(seed).sign(input.as_bytes()).to_bytes())
    )
}

/// A loopback JWKS server holding the public keys of `keys` (seed, kid); answers until
/// the test process ends.
fn serve_jwks(keys: &[(u8, &str)]) -> String {
    use std::io::{Read, Write};
    let set: Vec<Value> = keys
        .iter()
        .map(|(seed, kid)| with_kid(ed25519_jwk(*seed), kid))
        .collect();
    let body = json!({ "keys": set }).to_string();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    std::thread::spawn(move || {
        for stream in listener.incoming().take(100) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    });
    base
}

fn with_kid(mut jwk: Value, kid: &str) -> Value {
    jwk["kid"] = json!(kid);
    jwk
}

#[test]
fn contract_on_sqlite() {
    let db = TestDb::sqlite();
    let url = format!(
        "sqlite://{}",
        db.sqlite_path().expect("sqlite path").display()
    );
    run_contract(&url);
}

#[test]
fn contract_on_postgres() {
    let Some(db) = TestDb::postgres() else { return };
    run_contract(&db.url_string());
}

/// Two `keyward serve` processes on one database: an evaluation verifies once across
/// both, and a revocation answered by one is honoured by the other at once.
fn run_two_processes(db: &str) {
    let token = support::bootstrap(db);
    let (one, two) = (start(db, &[]), start(db, &[]));
    let keys = "/api/policy/v1/enterprises/acme/webhooks/keys";
    let key = json!({"jwks": {"keys": [support::jwk(1)]}, "keyId": "shared"});
    assert_eq!(
        support::send("POST", &one.url(keys), Some(&token), Some(&key)).0,
        201
    );
    let verify = |server: &Server, evaluation: &str| -> Value {
        let body =
            json!({"token": support::sign(1, "shared", evaluation), "evaluationId": evaluation});
        let url = server.url("/api/policy/v1/enterprises/acme/webhooks/responses/verify");
        let (_, _, text) = support::send("POST", &url, Some(&token), Some(&body));
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };
    for i in 0..10 {
        let evaluation = format!("eval-{i}");
        let (first, second) = if i % 2 == 0 {
            (&one, &two)
        } else {
            (&two, &one)
        };
        assert_eq!(verify(first, &evaluation)["valid"], true);
        assert_eq!(verify(second, &evaluation)["reason"], "REPLAYED");
    }
    let (status, _, body) = support::send(
        "DELETE",
        &one.url(&format!("{keys}/shared")),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(verify(&two, "after-revoke")["reason"], "KEY_REVOKED");
}

#[test]
fn two_processes_on_sqlite() {
    let db = TestDb::sqlite();
    run_two_processes(&db.url_string());
}

#[test]
fn two_processes_on_postgres() {
    let Some(db) = TestDb::postgres() else { return };
    run_two_processes(&db.url_string());
}

#[test]
fn configuration_precedence_is_flags_env_file_defaults() {
    let dir = std::env::temp_dir().join(format!("keyward-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("keyward.toml");
    std::fs::write(
        &file,
        "max_active_keys = 5\nclock_skew = 60\nlisten = \"127.0.0.1:9999\"\ndatabase_url = \"postgres://kw:hunter2@db.internal/keyward\"\nallow_insecure_jwks_hosts = [\"jwks.test\"]\nlog_format = \"json\"\n",
    )
    .expect("write");
    let print = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--print-config"])
            .args(args)
            .env_remove("DATABASE_URL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let defaults = print(&[], &[]);
    assert!(
        defaults.contains("max_active_keys = 20")
            && defaults.contains("listen = \"127.0.0.1:8080\""),
        "{defaults}"
    );
    let path = file.to_str().expect("path");
    let from_file = print(&["--config", path], &[]);
    assert!(
        from_file.contains("max_active_keys = 5") && from_file.contains("clock_skew = 60"),
        "{from_file}"
    );
    assert!(
        from_file.contains("log_format = \"json\"") && from_file.contains("\"jwks.test\""),
        "{from_file}"
    );
    assert!(
        !from_file.contains("hunter2") && from_file.contains("kw:***@"),
        "secrets are redacted: {from_file}"
    );
    let env_over_file = print(&["--config", path], &[("KEYWARD_MAX_ACTIVE_KEYS", "7")]);
    assert!(
        env_over_file.contains("max_active_keys = 7") && env_over_file.contains("clock_skew = 60"),
        "{env_over_file}"
    );
    let flag_over_env = print(
        &["--config", path, "--max-active-keys", "9"],
        &[("KEYWARD_MAX_ACTIVE_KEYS", "7")],
    );
    assert!(
        flag_over_env.contains("max_active_keys = 9"),
        "{flag_over_env}"
    );
    let via_env_file = print(&[], &[("KEYWARD_CONFIG", path)]);
    assert!(
        via_env_file.contains("max_active_keys = 5"),
        "{via_env_file}"
    );
    for (content, expect) in [
        ("bogus = 1\n", "unknown field"),
        ("max_active_keys = \"lots\"\n", "invalid type"),
        ("max_active_keys = 0\n", "out of range"),
    ] {
        std::fs::write(&file, content).expect("write");
        let out = Command::new(BIN)
            .args(["serve", "--config", path])
            .output()
            .expect("run");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expect), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cli_errors_are_one_line_and_fail() {
    let dir = std::env::temp_dir().join(format!("keyward-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let db = format!("sqlite://{}", dir.join("k.db").display());
    for args in [
        vec!["admin", "enterprise", "create", "bad id"],
        vec![
            "admin",
            "member",
            "add",
            "acme",
            "nobody@acme.test",
            "--role",
            "admin",
        ],
        vec!["admin", "token", "issue", "nobody@acme.test"],
        vec!["admin", "token", "issue", "x@y.z", "--ttl", "forever"],
        vec!["admin", "frobnicate"],
        vec!["serve", "--max-active-keys", "zero"],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .env("DATABASE_URL", &db)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        if args[1] == "member" {
            assert!(
                stderr.contains("'keyward admin user create nobody@acme.test'"),
                "says how to create what is missing: {stderr}"
            );
        }
    }
    let out = Command::new(BIN)
        .args(["admin", "audit", "acme"])
        .env("DATABASE_URL", "mysql://x")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(dir);
}

fn start(db: &str, extra: &[&str]) -> Server {
    Server::start(db, extra, &[])
}
