//! The in-process measurement: keyward's domain check of a token against the raw
//! signature check of the same token, interleaved (raw, full, raw, full, ...) so that the
//! machine's drift falls on both alike.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use keyward_domain::auth::{IssuedToken, Role, TokenGrant};
use keyward_domain::ports::{
    InsertOutcome, KeyStore, RecordOutcome, RevokeOutcome, VerificationStore,
};
use keyward_domain::{
    AuditContext, Clock, EnterpriseAdmin, EnterpriseId, KeyId, KeyPage, KeyService, KeySource,
    KeyStatus, NewKey, Policy, PublicJwk, StoreError, StoredKey, Timestamp,
};

use crate::{Curve, RawInput, RawVerifier, SigningKey};

/// The one enterprise, admin token and key of the in-process fixture.
struct OneKeyStore {
    grant_hash: Vec<u8>,
    key: StoredKey,
}

fn read_only() -> StoreError {
    StoreError::Internal("the benchmark store is read-only".into())
}

impl KeyStore for OneKeyStore {
    fn token_grant(
        &self,
        _id: &str,
        _enterprise: Option<&EnterpriseId>,
    ) -> Result<Option<TokenGrant>, StoreError> {
        Ok(Some(TokenGrant {
            hash: self.grant_hash.clone(),
            expires_at: None,
            revoked: false,
            email: "bench@keyward.test".into(),
            role: Some(Role::Admin),
            epoch: 0,
        }))
    }

    fn insert_key(
        &self,
        _key: &NewKey,
        _max_active: u32,
        _audit: &AuditContext,
    ) -> Result<InsertOutcome, StoreError> {
        Err(read_only())
    }

    fn list_keys(
        &self,
        _enterprise: &EnterpriseId,
        _status: Option<KeyStatus>,
        _limit: u32,
        _offset: u64,
    ) -> Result<KeyPage, StoreError> {
        Err(read_only())
    }

    fn get_key(
        &self,
        _enterprise: &EnterpriseId,
        key_id: &str,
    ) -> Result<Option<StoredKey>, StoreError> {
        Ok((key_id == self.key.key_id).then(|| self.key.clone()))
    }

    fn revoke_key(
        &self,
        _enterprise: &EnterpriseId,
        _key_id: &KeyId,
        _at: Timestamp,
        _audit: &AuditContext,
    ) -> Result<RevokeOutcome, StoreError> {
        Err(read_only())
    }
}

impl VerificationStore for OneKeyStore {
    fn record_verification(
        &self,
        _enterprise: &EnterpriseId,
        _evaluation_id: &str,
        _key_id: &str,
        _at: Timestamp,
        _keep_until: Timestamp,
    ) -> Result<RecordOutcome, StoreError> {
        Err(read_only())
    }

    fn purge_replay_records(&self, _now: Timestamp) -> Result<u64, StoreError> {
        Ok(0)
    }
}

struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Timestamp::from_millis(i64::try_from(millis).unwrap_or(i64::MAX))
    }
}

/// The unix time now, in seconds.
pub fn unix_now() -> i64 {
    SystemClock.now().millis() / 1000
}

/// A key service holding one registered key of `curve`, and its admin.
pub struct Fixture {
    pub signing: SigningKey,
    service: KeyService,
    admin: EnterpriseAdmin,
    counter: AtomicU64,
}

impl Fixture {
    pub const KID: &'static str = "bench-key";

    pub fn new(curve: Curve) -> Self {
        let signing = SigningKey::new(curve, 7);
        let jwk = PublicJwk::from_stored(&signing.public_jwk().to_string())
            .expect("the fixture's key is valid");
        let issued = IssuedToken::from_random([3; 8], [4; 32]);
        let key = StoredKey {
            id: uuid::Uuid::nil(),
            enterprise_id: "acme".into(),
            key_id: Self::KID.into(),
            key_name: "bench".into(),
            source: KeySource::Inline {
                algorithm: jwk.curve().family(),
                jwk: jwk.to_canonical_json(),
                thumbprint: jwk.thumbprint().as_str().to_owned(),
            },
            status: KeyStatus::Active,
            created_at: Timestamp::from_millis(0),
            created_by: "bench@keyward.test".into(),
            revoked_at: None,
            revoked_by: None,
            last_verified_at: None,
        };
        let store = Arc::new(OneKeyStore {
            grant_hash: issued.hash.clone(),
            key,
        });
        let service = KeyService::new(store, Arc::new(SystemClock), Policy::default());
        let admin = service
            .authorize(&issued.token, "acme")
            .expect("the fixture's admin");
        Self {
            signing,
            service,
            admin,
            counter: AtomicU64::new(0),
        }
    }

    /// A fresh token answering evaluation `eval-{n}`.
    pub fn token(&self, n: u64) -> String {
        self.signing
            .token(Self::KID, &format!("eval-{n}"), unix_now())
    }

    /// keyward's whole in-process check of `token` (which answers `eval-0`).
    pub fn check(&self, token: &str) -> bool {
        self.counter.fetch_add(1, Ordering::Relaxed);
        matches!(self.service.check(&self.admin, token, "eval-0"), Ok(Ok(_)))
    }
}

/// One curve's interleaved measurement.
#[derive(Debug, Clone)]
pub struct AbResult {
    pub curve: Curve,
    /// The crate of the raw check (the curve's fastest here).
    pub raw_crate: &'static str,
    /// Verifications per second, raw and full, over all rounds.
    pub raw_per_second: f64,
    pub full_per_second: f64,
    /// The median over rounds of full rate / raw rate.
    pub ratio: f64,
    /// Per-verification latency quantiles of the full check, in microseconds.
    pub full_p50_us: f64,
    pub full_p99_us: f64,
    pub raw_p50_us: f64,
    pub raw_p99_us: f64,
    /// jsonwebtoken on the same token, where it supports the curve.
    pub jsonwebtoken_per_second: Option<f64>,
    /// The median over rounds of keyward's rate / jsonwebtoken's.
    pub versus_jsonwebtoken: Option<f64>,
    /// Other raw checks' rates on the same token (what the choice was measured against).
    pub alternatives: Vec<(&'static str, f64)>,
    /// The npm `jose` package's rate on the same token (see `node.rs`), or why there is
    /// none; `None` until measured.
    pub jose: Option<crate::node::Rate>,
    /// Ed25519: the implementation keyward checked with at the end of the rounds, and its
    /// first measurement.
    pub ed25519: Option<keyward_domain::crypto::Ed25519Choice>,
}

/// Measures `curve` for about `budget`: rounds of a batch of raw checks then a batch of
/// full checks (and of jsonwebtoken), alternating.
pub fn interleaved(curve: Curve, budget: Duration) -> AbResult {
    let fixture = Fixture::new(curve);
    let token = fixture.token(0);
    let input = RawInput::of(&token);
    let raw = RawVerifier::new(&fixture.signing, &input, budget / 8);
    let jwt = crate::jsonwebtoken_key(&fixture.signing)
        .map(|(key, alg)| (key, crate::jsonwebtoken_validation(alg)));
    assert!(raw.verify(&input), "the raw check accepts the fixture");
    assert!(fixture.check(&token), "keyward accepts the fixture");
    // Warm caches and clocks before measuring.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        raw.verify(&input);
        fixture.check(&token);
    }
    // A batch lasts a few milliseconds, so timer resolution does not matter.
    // Short batches in alternating order, so that neither side is favoured by where
    // in a round the machine's interference falls; the medians of per-round ratios
    // are what the report uses.
    let batch: u32 = 16;
    let (mut raw_time, mut full_time, mut jwt_time) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut raw_lat, mut full_lat, mut ratios, mut jwt_ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut rounds = 0u64;
    let time_raw = || {
        let t = Instant::now();
        for _ in 0..batch {
            assert!(raw.verify(std::hint::black_box(&input)));
        }
        t.elapsed()
    };
    let time_full = || {
        let t = Instant::now();
        for _ in 0..batch {
            assert!(fixture.check(std::hint::black_box(&token)));
        }
        t.elapsed()
    };
    let start = Instant::now();
    while start.elapsed() < budget || rounds < 5 {
        let (raw_round, full_round) = if rounds % 2 == 0 {
            let r = time_raw();
            (r, time_full())
        } else {
            let f = time_full();
            (time_raw(), f)
        };
        if let Some((key, validation)) = &jwt {
            let t = Instant::now();
            for _ in 0..batch {
                assert!(jsonwebtoken::decode::<crate::WebhookClaims>(
                    std::hint::black_box(&token),
                    key,
                    validation
                )
                .is_ok());
            }
            let jwt_round = t.elapsed();
            jwt_time += jwt_round;
            jwt_ratios.push(jwt_round.as_secs_f64() / full_round.as_secs_f64());
        }
        raw_time += raw_round;
        full_time += full_round;
        raw_lat.push(raw_round.as_secs_f64() * 1e6 / f64::from(batch));
        full_lat.push(full_round.as_secs_f64() * 1e6 / f64::from(batch));
        ratios.push(raw_round.as_secs_f64() / full_round.as_secs_f64());
        rounds += 1;
    }
    let count = (rounds * u64::from(batch)) as f64;
    AbResult {
        curve,
        raw_crate: raw.name(),
        raw_per_second: count / raw_time.as_secs_f64(),
        full_per_second: count / full_time.as_secs_f64(),
        ratio: median(&mut ratios),
        full_p50_us: quantile(&mut full_lat, 0.5),
        full_p99_us: quantile(&mut full_lat, 0.99),
        raw_p50_us: quantile(&mut raw_lat, 0.5),
        raw_p99_us: quantile(&mut raw_lat, 0.99),
        jsonwebtoken_per_second: jwt.map(|_| count / jwt_time.as_secs_f64()),
        versus_jsonwebtoken: (!jwt_ratios.is_empty()).then(|| median(&mut jwt_ratios)),
        alternatives: crate::alternatives(&fixture.signing, &input, budget / 4),
        jose: None,
        ed25519: (curve == Curve::Ed25519).then(keyward_domain::crypto::ed25519_choice),
    }
}

fn median(values: &mut [f64]) -> f64 {
    quantile(values, 0.5)
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64 - 1.0) * q).round() as usize;
    values.get(rank).copied().unwrap_or(0.0)
}
