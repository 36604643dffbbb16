//! A service in process over a fresh database, with an enterprise, its admin, a plain
//! member and an outsider, each holding a token.

#![allow(dead_code)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keyward_api::{app, AppState, HttpSettings};
use keyward_domain::{AdminService, Clock, InsecureHosts, KeyService, Policy, Timestamp};
use keyward_persistence::testing::TestDb;
use keyward_persistence::Repository;
use poem::endpoint::BoxEndpoint;
use poem::http::{HeaderMap, Method, StatusCode};
use poem::test::TestClient;
use poem::EndpointExt;
use serde_json::{json, Value};

pub const BASE: &str = "/api/policy/v1/enterprises";

/// A clock the test moves by hand.
#[derive(Default)]
pub struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

impl TestClock {
    pub fn set(&self, millis: i64) {
        self.0.store(millis, Ordering::SeqCst);
    }
}

pub struct Harness {
    pub client: TestClient<BoxEndpoint<'static>>,
    pub db: TestDb,
    pub repo: Repository,
    pub admin_service: AdminService,
    pub keys: Arc<KeyService>,
    pub clock: Arc<TestClock>,
    /// Admin of `acme`.
    pub admin: String,
    /// Member (not admin) of `acme`.
    pub member: String,
    /// Admin of `globex` only.
    pub outsider: String,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: String,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("<no code>")
    }

    /// Asserts the contract's error shape and returns the code.
    pub fn error_code(&self) -> String {
        let obj = self
            .body
            .as_object()
            .unwrap_or_else(|| panic!("error body is not an object: {}", self.raw));
        assert_eq!(
            obj.len(),
            3,
            "error body has exactly code, message, status: {}",
            self.raw
        );
        assert_eq!(
            self.body["status"].as_u64(),
            Some(u64::from(self.status.as_u16())),
            "{}",
            self.raw
        );
        assert!(
            self.body["message"].as_str().is_some_and(|m| m.len() > 10),
            "{}",
            self.raw
        );
        assert!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json")),
            "error is JSON"
        );
        self.code().to_owned()
    }
}

pub struct Options {
    pub max_active_keys: u32,
    pub insecure_hosts: Vec<&'static str>,
    pub max_body_bytes: usize,
    pub grant_cache_millis: i64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_active_keys: 20,
            insecure_hosts: vec![],
            max_body_bytes: 65_536,
            grant_cache_millis: keyward_domain::GRANT_CACHE_MILLIS,
        }
    }
}

impl Harness {
    pub fn new(db: TestDb) -> Self {
        Self::with_options(db, Options::default())
    }

    pub fn with_options(db: TestDb, options: Options) -> Self {
        let repo = db.repository();
        let clock = Arc::new(TestClock::default());
        clock.set(1_768_213_800_000);
        let admin_service = AdminService::new(Arc::new(repo.clone()), clock.clone());
        for enterprise in ["acme", "globex"] {
            admin_service
                .create_enterprise(enterprise, None)
                .expect("enterprise");
        }
        let mut tokens = Vec::new();
        for (i, (email, enterprise, role)) in [
            ("admin@acme.test", "acme", "admin"),
            ("member@acme.test", "acme", "member"),
            ("admin@globex.test", "globex", "admin"),
        ]
        .into_iter()
        .enumerate()
        {
            admin_service.create_user(email).expect("user");
            admin_service
                .add_member(enterprise, email, role)
                .expect("member");
            let mut random = [0u8; 40];
            random[0] = i as u8 + 1;
            random[39] = 0x5a;
            tokens.push(
                admin_service
                    .issue_token(email, None, random)
                    .expect("token")
                    .token,
            );
        }
        let policy = Policy {
            max_active_keys: options.max_active_keys,
            insecure_jwks_hosts: InsecureHosts::new(options.insecure_hosts),
            clock_skew_seconds: 300,
            // Grants are reused only after an observation of the auth epoch, which only
            // the test of that reuse makes.
            grant_cache_millis: options.grant_cache_millis,
        };
        let keys = Arc::new(KeyService::new(
            Arc::new(repo.clone()),
            clock.clone(),
            policy,
        ));
        let state = AppState {
            keys: keys.clone(),
            readiness: Arc::new(repo.clone()),
            metrics: None,
            reads_inline: false,
            last_page: Default::default(),
        };
        let endpoint = app(
            state,
            HttpSettings {
                max_body_bytes: options.max_body_bytes,
                ..HttpSettings::default()
            },
        )
        .map_to_response()
        .boxed();
        let mut tokens = tokens.into_iter();
        Self {
            client: TestClient::new(endpoint),
            db,
            repo,
            admin_service,
            keys,
            clock,
            admin: tokens.next().unwrap_or_default(),
            member: tokens.next().unwrap_or_default(),
            outsider: tokens.next().unwrap_or_default(),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut req = self.client.request(method, path);
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let resp = req.send().await.0;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().into_bytes().await.unwrap_or_default();
        let raw = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert!(
            headers.contains_key("x-request-id"),
            "every response has X-Request-Id"
        );
        Reply {
            status,
            headers,
            body,
            raw,
        }
    }

    pub async fn register(&self, enterprise: &str, body: &Value) -> Reply {
        self.call(
            Method::POST,
            &format!("{BASE}/{enterprise}/webhooks/keys"),
            Some(&self.admin_for(enterprise)),
            Some(&body.to_string()),
        )
        .await
    }

    pub fn admin_for(&self, enterprise: &str) -> String {
        if enterprise == "globex" {
            self.outsider.clone()
        } else {
            self.admin.clone()
        }
    }
}

/// The Ed25519 public JWK of the secret key `[seed; 32]`.
pub fn ed25519_jwk(seed: u8) -> Value {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes())})
}

/// A P-256 public JWK of the scalar `seed` (1..).
pub fn p256_jwk(seed: u8) -> Value {
    let mut scalar = [0u8; 32];
    scalar[31] = seed;
    let secret = p256::SecretKey::from_slice(&scalar).expect("valid scalar");
    let point =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
    json!({
        "kty": "EC", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(point.x().expect("x")),
        "y": URL_SAFE_NO_PAD.encode(point.y().expect("y")),
    })
}

pub fn with(mut jwk: Value, member: &str, value: Value) -> Value {
    jwk[member] = value;
    jwk
}

pub fn inline(jwk: Value, key_id: &str) -> Value {
    json!({"jwks": {"keys": [jwk]}, "keyId": key_id})
}

macro_rules! on_both_backends {
    ($($name:ident($db:ident) $body:block)*) => {
        mod sqlite {
            use super::*;
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let $db = TestDb::sqlite(); $body } )*
        }
        mod postgres {
            use super::*;
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let Some($db) = TestDb::postgres() else { return }; $body } )*
        }
    };
}
pub(crate) use on_both_backends;
