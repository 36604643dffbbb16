//! Verifying signed webhook responses through the domain's use case: interop with an
//! independent JOSE library, RFC vectors, and every token line of the security checklist.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keyward_domain::auth::{IssuedToken, Role, TokenGrant};
use keyward_domain::crypto::VerifyingKey;
use keyward_domain::ports::{JwksLookup, JwksSource, KeyStore, RecordOutcome, VerificationStore};
use keyward_domain::{
    Clock, EnterpriseAdmin, EnterpriseId, KeyService, KeySource, KeyStatus, Policy, PublicJwk,
    StoreError, StoredKey, Timestamp, Verification,
};
use serde_json::{json, Value};

const NOW: i64 = 1_768_213_800;

struct FixedClock(AtomicI64);

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// Keys and replay records in memory; one admin token.
#[derive(Default)]
struct MemoryStore {
    keys: Mutex<HashMap<String, StoredKey>>,
    replays: Mutex<HashMap<String, String>>,
    grant_hash: Vec<u8>,
}

impl KeyStore for MemoryStore {
    fn token_grant(
        &self,
        _id: &str,
        _e: Option<&EnterpriseId>,
    ) -> Result<Option<TokenGrant>, StoreError> {
        Ok(Some(TokenGrant {
            hash: self.grant_hash.clone(),
            expires_at: None,
            revoked: false,
            email: "admin@acme.test".into(),
            role: Some(Role::Admin),
            epoch: 0,
        }))
    }
    fn get_key(&self, _e: &EnterpriseId, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
        Ok(self.keys.lock().expect("lock").get(key_id).cloned())
    }
    unsupported_key_writes!("not used by verification");
}

impl VerificationStore for MemoryStore {
    fn record_verification(
        &self,
        _e: &EnterpriseId,
        evaluation_id: &str,
        key_id: &str,
        _at: Timestamp,
        _keep: Timestamp,
    ) -> Result<RecordOutcome, StoreError> {
        if self
            .keys
            .lock()
            .expect("lock")
            .get(key_id)
            .is_none_or(|k| k.status != KeyStatus::Active)
        {
            return Ok(RecordOutcome::KeyRevoked);
        }
        let mut replays = self.replays.lock().expect("lock");
        if replays.contains_key(evaluation_id) {
            return Ok(RecordOutcome::Replayed);
        }
        replays.insert(evaluation_id.to_owned(), key_id.to_owned());
        Ok(RecordOutcome::Recorded)
    }
    fn purge_replay_records(&self, _now: Timestamp) -> Result<u64, StoreError> {
        Ok(0)
    }
}

struct World {
    store: Arc<MemoryStore>,
    service: KeyService,
    admin: EnterpriseAdmin,
}

impl World {
    fn new() -> Self {
        let issued = IssuedToken::from_random([1; 8], [2; 32]);
        let store = Arc::new(MemoryStore {
            grant_hash: issued.hash.clone(),
            ..MemoryStore::default()
        });
        let clock = Arc::new(FixedClock(AtomicI64::new(NOW * 1000)));
        let service = KeyService::new(store.clone(), clock, Policy::default());
        let admin = service.authorize(&issued.token, "acme").expect("admin");
        Self {
            store,
            service,
            admin,
        }
    }

    /// The same world, its keys registered by jwksUri fetched from `jwks`.
    fn with_jwks(self, jwks: Arc<dyn JwksSource>) -> Self {
        Self {
            service: self.service.with_jwks_source(jwks),
            ..self
        }
    }

    fn add(&self, kid: &str, jwk: &Value, status: KeyStatus) {
        let map = jwk.as_object().expect("object").clone();
        let jwk = PublicJwk::from_json(&map).expect("valid JWK").with_kid(kid);
        self.add_source(
            kid,
            KeySource::Inline {
                algorithm: jwk.curve().family(),
                jwk: jwk.to_canonical_json(),
                thumbprint: jwk.thumbprint().as_str().into(),
            },
            status,
        );
    }

    fn add_source(&self, kid: &str, source: KeySource, status: KeyStatus) {
        let key = StoredKey {
            id: uuid::Uuid::new_v4(),
            enterprise_id: "acme".into(),
            key_id: kid.into(),
            key_name: kid.into(),
            source,
            status,
            created_at: Timestamp::from_millis(0),
            created_by: "admin@acme.test".into(),
            revoked_at: (status == KeyStatus::Revoked).then(|| Timestamp::from_millis(1)),
            revoked_by: None,
            last_verified_at: None,
        };
        self.store
            .keys
            .lock()
            .expect("lock")
            .insert(kid.into(), key);
    }

    fn verify(&self, token: &str, evaluation_id: &str) -> Result<(String, i64), String> {
        match self
            .service
            .verify(&self.admin, token, evaluation_id)
            .expect("no storage error")
        {
            Verification::Valid {
                key_id,
                status_code,
            } => Ok((key_id, status_code)),
            Verification::Invalid(rejection) => Err(rejection.code().to_owned()),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn ed_key(seed: u8) -> (ed25519_dalek::SigningKey, Value) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&key.verifying_key().to_bytes())});
    (key, jwk)
}

fn p256_key(seed: u8) -> (p256::ecdsa::SigningKey, Value) {
    let mut scalar = [0u8; 32];
    scalar[31] = seed;
    let key = p256::ecdsa::SigningKey::from_slice(&scalar).expect("scalar");
    let point = key.verifying_key().to_encoded_point(false);
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y"))});
    (key, jwk)
}

fn claims(evaluation_id: &str, status: i64) -> Value {
    json!({"evaluationId": evaluation_id, "statusCode": status, "iat": NOW})
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

fn ed_token(key: &ed25519_dalek::SigningKey, header: &Value, claims: &Value) -> String {
    use ed25519_dalek::Signer as _;
    let input = signing_input(header, claims);
    format!("{input}.{}", b64(&key.sign(input.as_bytes()).to_bytes()))
}

fn es256_token(key: &p256::ecdsa::SigningKey, header: &Value, claims: &Value) -> String {
    use p256::ecdsa::signature::Signer as _;
    let input = signing_input(header, claims);
    let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

fn ed_world() -> (World, ed25519_dalek::SigningKey) {
    let world = World::new();
    let (key, jwk) = ed_key(7);
    world.add("k1", &jwk, KeyStatus::Active);
    (world, key)
}

#[test]
fn tokens_from_an_independent_library_verify_and_tampered_copies_do_not() {
    let fixtures: Value =
        serde_json::from_str(include_str!("fixtures/interop.json")).expect("fixtures");
    assert_eq!(fixtures["now"], NOW);
    let world = World::new();
    let cases = fixtures["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 8);
    for case in cases {
        let kid = case["jwk"]["kid"].as_str().expect("kid");
        world.add(kid, &case["jwk"], KeyStatus::Active);
    }
    for case in cases {
        let token = case["token"].as_str().expect("token");
        let evaluation_id = case["evaluationId"].as_str().expect("id");
        let alg = case["alg"].as_str().expect("alg");
        // Tampered copies first: they must not use up the evaluationId.
        let (head, sig) = token.rsplit_once('.').expect("jws");
        let mut sig_bytes = URL_SAFE_NO_PAD.decode(sig).expect("sig");
        sig_bytes[5] ^= 0x01;
        assert_eq!(
            world.verify(&format!("{head}.{}", b64(&sig_bytes)), evaluation_id),
            Err("BAD_SIGNATURE".into()),
            "{alg}"
        );
        let (header, payload) = head.split_once('.').expect("jws");
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("payload"))
                .expect("claims");
        claims["statusCode"] = json!(200);
        claims["evaluationId"] = json!(evaluation_id);
        let forged = format!("{header}.{}.{sig}", b64(claims.to_string().as_bytes()));
        if forged != token {
            assert_eq!(
                world.verify(&forged, evaluation_id),
                Err("BAD_SIGNATURE".into()),
                "{alg}"
            );
        }
        let expected = case["statusCode"].as_i64().expect("status");
        assert_eq!(
            world.verify(token, evaluation_id),
            Ok((
                case["jwk"]["kid"].as_str().expect("kid").to_owned(),
                expected
            )),
            "{alg}"
        );
        assert_eq!(
            world.verify(token, evaluation_id),
            Err("REPLAYED".into()),
            "{alg}"
        );
    }
}

#[test]
fn rfc_vectors_verify_at_the_signature_layer() {
    // RFC 8037 appendix A.4 (Ed25519).
    let jwk = PublicJwk::from_json(
        json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})
            .as_object()
            .expect("obj"),
    )
    .expect("jwk");
    let key = VerifyingKey::from_jwk(&jwk).expect("key");
    let input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    let sig = URL_SAFE_NO_PAD.decode("hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg").expect("sig");
    assert!(key.verify(input.as_bytes(), &sig));
    assert!(!key.verify(b"other input", &sig));
    // RFC 7515 appendix A.3 (ES256, raw r||s).
    let jwk = PublicJwk::from_json(json!({"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}).as_object().expect("obj")).expect("jwk");
    let key = VerifyingKey::from_jwk(&jwk).expect("key");
    let input = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
    let sig = URL_SAFE_NO_PAD.decode("DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q").expect("sig");
    assert!(key.verify(input.as_bytes(), &sig));
    let mut twisted = sig.clone();
    twisted[0] ^= 1;
    assert!(!key.verify(input.as_bytes(), &twisted));
}

/// Ed25519 is verified strictly, by each implementation keyward may choose: a signature
/// the key's holder could pass off as a second one (S plus the group order), or one
/// whose R is of small order, is refused even where the plain equation holds.
#[test]
fn ed25519_signatures_are_checked_strictly() {
    use curve25519_dalek::scalar::Scalar;
    use ed25519_dalek::{Signer as _, Verifier as _};
    use keyward_domain::crypto::Ed25519Impl;
    use sha2::{Digest as _, Sha512};

    // The key `ed_world` registers as k1.
    let (signer, jwk) = ed_key(7);
    let key =
        VerifyingKey::from_jwk(&PublicJwk::from_json(jwk.as_object().expect("obj")).expect("jwk"))
            .expect("key");
    let message = b"eyJhbGciOiJFZERTQSJ9.eyJldmFsdWF0aW9uSWQiOiJlIn0";
    let good = signer.sign(message).to_bytes();

    // S + L, where L is the group order (little-endian): the same point equation.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut high_s = good;
    let mut carry = 0u16;
    for (byte, l) in high_s[32..].iter_mut().zip(L) {
        let sum = u16::from(*byte) + u16::from(l) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    assert_ne!(high_s, good);

    // R = the identity, S = k·a: [S]B − [k]A is the identity, so the plain (cofactorless)
    // equation holds; only the holder of the private key can make such a signature.
    let with_r = |message: &[u8], r: [u8; 32]| {
        let mut hash = Sha512::new();
        hash.update(r);
        hash.update(signer.verifying_key().to_bytes());
        hash.update(message);
        let k = Scalar::from_bytes_mod_order_wide(&hash.finalize().into());
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&r);
        signature[32..].copy_from_slice((k * signer.to_scalar()).as_bytes());
        signature
    };
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let small_r = with_r(message, identity);
    assert!(
        signer
            .verifying_key()
            .verify(message, &ed25519_dalek::Signature::from_bytes(&small_r))
            .is_ok(),
        "the plain check accepts a small-order R"
    );
    // The same point spelled with y = p + 1 (not canonical).
    let mut spelled = [0xff; 32];
    spelled[0] = 0xee;
    spelled[31] = 0x7f;
    let non_canonical_r = with_r(message, spelled);

    for with in Ed25519Impl::ALL {
        let name = with.name();
        assert!(key.verify_with(with, message, &good), "{name}");
        assert!(!key.verify_with(with, b"other input", &good), "{name}");
        assert!(!key.verify_with(with, message, &high_s), "{name}: S + L");
        assert!(
            !key.verify_with(with, message, &small_r),
            "{name}: small-order R"
        );
        assert!(
            !key.verify_with(with, message, &non_canonical_r),
            "{name}: non-canonical R"
        );
        // Wrong lengths.
        assert!(!key.verify_with(with, message, &good[..63]), "{name}");
        assert!(
            !key.verify_with(with, message, &[good.as_slice(), &[0]].concat()),
            "{name}"
        );
    }
    // The process's own choice answers alike.
    assert!(key.verify(message, &good));
    assert!(!key.verify(message, &small_r));
    // And so do signatures checked together, each beside good ones.
    let too_long = [good.as_slice(), &[0]].concat();
    for (bad, input, why) in [
        (high_s.as_slice(), message.as_slice(), "S + L"),
        (small_r.as_slice(), message, "small-order R"),
        (non_canonical_r.as_slice(), message, "non-canonical R"),
        (&good[..63], message, "63 bytes"),
        (too_long.as_slice(), message, "65 bytes"),
        (good.as_slice(), b"other input".as_slice(), "another input"),
    ] {
        let check = |signature, message| keyward_domain::crypto::SignatureToCheck {
            key: &key,
            message,
            signature,
        };
        let good = check(good.as_slice(), message);
        let verdicts = keyward_domain::crypto::verify_all(&[good, check(bad, input), good]);
        assert_eq!(verdicts, [true, false, true], "{why}");
    }

    // Through the whole check, as a token's signature.
    let (world, _) = ed_world();
    let input = signing_input(
        &json!({"alg": "EdDSA", "kid": "k1"}),
        &claims("e-small", 200),
    );
    let token = format!("{input}.{}", b64(&with_r(input.as_bytes(), identity)));
    assert_eq!(world.verify(&token, "e-small"), Err("BAD_SIGNATURE".into()));
}

/// Each Ed25519 implementation accepts what the other accepts, over many keys, messages
/// and signatures, and refuses each of their one-bit corruptions.
#[test]
fn both_ed25519_implementations_answer_alike() {
    use ed25519_dalek::Signer as _;
    use keyward_domain::crypto::Ed25519Impl;

    for seed in 1..=24u8 {
        let (signer, jwk) = ed_key(seed);
        let key = VerifyingKey::from_jwk(
            &PublicJwk::from_json(jwk.as_object().expect("obj")).expect("jwk"),
        )
        .expect("key");
        let message: Vec<u8> = (0..usize::from(seed) * 13).map(|i| i as u8).collect();
        let signature = signer.sign(&message).to_bytes();
        for with in Ed25519Impl::ALL {
            assert!(
                key.verify_with(with, &message, &signature),
                "{}",
                with.name()
            );
        }
        for bit in (0..512).step_by(7) {
            let mut twisted = signature;
            twisted[bit / 8] ^= 1 << (bit % 8);
            for with in Ed25519Impl::ALL {
                assert!(
                    !key.verify_with(with, &message, &twisted),
                    "{} accepted bit {bit} flipped",
                    with.name()
                );
            }
        }
    }
    let choice = keyward_domain::crypto::ed25519_choice();
    assert!(
        choice.dalek_micros > 0.0 && choice.aws_lc_micros > 0.0,
        "{choice:?}"
    );
}

#[test]
fn a_valid_token_verifies_once_and_failures_do_not_use_it_up() {
    let (world, key) = ed_world();
    let header = json!({"alg": "EdDSA", "kid": "k1"});
    let good = ed_token(&key, &header, &claims("e1", 403));
    assert_eq!(
        world.verify(&good, "e2"),
        Err("EVALUATION_ID_MISMATCH".into())
    );
    let mut bad = good.clone();
    bad.push('A');
    assert!(world.verify(&bad, "e1").is_err());
    assert_eq!(world.verify(&good, "e1"), Ok(("k1".into(), 403)));
    assert_eq!(world.verify(&good, "e1"), Err("REPLAYED".into()));
    // Another token for the same evaluation is a replay too, whatever its statusCode.
    let other = ed_token(&key, &header, &claims("e1", 200));
    assert_eq!(world.verify(&other, "e1"), Err("REPLAYED".into()));
}

#[test]
fn algorithm_confusion_and_none_are_refused() {
    let (world, key) = ed_world();
    let c = claims("e", 200);
    // Each refusal in one call and in the steps the event loop takes (where an Ed25519
    // signature is left to a batch once the algorithm is found to fit the key).
    let refused = |token: &str| {
        let verdict = world.verify(token, "e");
        assert_eq!(verify_in_steps(&world, token, "e"), verdict, "in steps");
        verdict
    };
    for alg in [
        "none", "None", "NONE", "HS256", "HS384", "HS512", "RS256", "PS256", "ES512", "",
    ] {
        let header = json!({"alg": alg, "kid": "k1"});
        let unsigned = format!("{}.", signing_input(&header, &c));
        assert!(refused(&unsigned).is_err(), "{alg} unsigned");
        let signed = ed_token(&key, &header, &c);
        assert_eq!(
            refused(&signed),
            Err("ALGORITHM_NOT_ALLOWED".into()),
            "{alg}"
        );
    }
    // An empty signature with a good header.
    let empty = format!(
        "{}.",
        signing_input(&json!({"alg": "EdDSA", "kid": "k1"}), &c)
    );
    assert_eq!(refused(&empty), Err("MALFORMED_TOKEN".into()));
    // HMAC with the public key as the secret: refused on the header alone.
    let header = json!({"alg": "HS256", "kid": "k1"});
    let forged = format!("{}.{}", signing_input(&header, &c), b64(&[0u8; 32]));
    assert_eq!(refused(&forged), Err("ALGORITHM_NOT_ALLOWED".into()));
    // An allowed algorithm that does not fit the key.
    let (p_key, p_jwk) = p256_key(3);
    world.add("p1", &p_jwk, KeyStatus::Active);
    let es384 = es256_token(&p_key, &json!({"alg": "ES384", "kid": "p1"}), &c);
    assert_eq!(refused(&es384), Err("ALGORITHM_NOT_ALLOWED".into()));
    let eddsa_on_ec = ed_token(&key, &json!({"alg": "EdDSA", "kid": "p1"}), &c);
    assert_eq!(refused(&eddsa_on_ec), Err("ALGORITHM_NOT_ALLOWED".into()));
    for alg in ["ES256", "ES384", "ES256K"] {
        let ec_on_ed = es256_token(&p_key, &json!({"alg": alg, "kid": "k1"}), &c);
        assert_eq!(
            refused(&ec_on_ed),
            Err("ALGORITHM_NOT_ALLOWED".into()),
            "{alg}"
        );
    }
    assert_eq!(
        world.verify(
            &es256_token(&p_key, &json!({"alg": "ES256", "kid": "p1"}), &c),
            "e"
        ),
        Ok(("p1".into(), 200))
    );
}

#[test]
fn keys_in_the_header_crit_and_b64_are_refused() {
    let (world, key) = ed_world();
    let (_, jwk) = ed_key(7);
    let c = claims("e", 200);
    for (member, value) in [
        ("jwk", jwk),
        ("jku", json!("https://attacker.example/jwks")),
        ("x5u", json!("https://attacker.example/cert")),
        ("x5c", json!(["MIIB"])),
        ("crit", json!(["exp"])),
        ("b64", json!(false)),
    ] {
        let header = json!({"alg": "EdDSA", "kid": "k1", member: value});
        assert_eq!(
            world.verify(&ed_token(&key, &header, &c), "e"),
            Err("MALFORMED_TOKEN".into()),
            "{member}"
        );
    }
}

#[test]
fn hostile_kids_get_the_same_answer() {
    let (world, key) = ed_world();
    let c = claims("e", 200);
    for kid in [
        json!("../../x"),
        json!("' OR 1=1 --"),
        json!("k".repeat(10_000)),
        json!("unknown"),
        json!("a/b"),
    ] {
        let token = ed_token(&key, &json!({"alg": "EdDSA", "kid": kid}), &c);
        let got = world.verify(&token, "e");
        assert!(
            got == Err("UNKNOWN_KEY".into()) || got == Err("MALFORMED_TOKEN".into()),
            "{kid}: {got:?}"
        );
    }
    for kid in [json!(7), json!(["k1"]), Value::Null] {
        let token = ed_token(&key, &json!({"alg": "EdDSA", "kid": kid}), &c);
        assert_eq!(
            world.verify(&token, "e"),
            Err("MALFORMED_TOKEN".into()),
            "{kid}"
        );
    }
    let token = ed_token(&key, &json!({"alg": "EdDSA"}), &c);
    assert_eq!(world.verify(&token, "e"), Err("MALFORMED_TOKEN".into()));
}

#[test]
fn ecdsa_signatures_must_be_raw_nonzero_and_in_range() {
    let world = World::new();
    let (key, jwk) = p256_key(9);
    world.add("p", &jwk, KeyStatus::Active);
    let header = json!({"alg": "ES256", "kid": "p"});
    let c = claims("e", 200);
    let input = signing_input(&header, &c);
    use p256::ecdsa::signature::Signer as _;
    let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
    let der = sig.to_der();
    assert_eq!(
        world.verify(&format!("{input}.{}", b64(der.as_bytes())), "e"),
        Err("BAD_SIGNATURE".into())
    );
    assert_eq!(
        world.verify(&format!("{input}.{}", b64(&[0u8; 64])), "e"),
        Err("BAD_SIGNATURE".into())
    );
    let short = &sig.to_bytes()[..63];
    assert_eq!(
        world.verify(&format!("{input}.{}", b64(short)), "e"),
        Err("BAD_SIGNATURE".into())
    );
    // None of those used up the evaluation. (r = 0, s = 0, s ≥ n alone and the high-S
    // twin: `ecdsa_verifies_either_s_of_a_signature_once_on_every_curve`.)
    assert_eq!(
        world.verify(&format!("{input}.{}", b64(&sig.to_bytes())), "e"),
        Ok(("p".into(), 200))
    );
}

/// `sig` (raw `r‖s`) with `s` replaced by `order - s`: the other signature of the same
/// message under the same key, one of the two being "high-S".
fn high_s_twin(sig: &[u8], order: &str) -> Vec<u8> {
    let half = sig.len() / 2;
    let order: Vec<u8> = (0..order.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&order[i..i + 2], 16).expect("hex"))
        .collect();
    assert_eq!(order.len(), half);
    let mut twin = sig.to_vec();
    let mut borrow = 0i16;
    for i in (0..half).rev() {
        let digit = i16::from(order[i]) - i16::from(sig[half + i]) - borrow;
        borrow = i16::from(digit < 0);
        twin[half + i] = (digit + 256 * borrow) as u8;
    }
    assert_eq!(borrow, 0, "s is below the order");
    twin
}

#[test]
fn ecdsa_verifies_either_s_of_a_signature_once_on_every_curve() {
    // JWS ECDSA (RFC 7518, RFC 8812) does not ask signers for a low S: libraries such as
    // PyJWT with `cryptography` give a high S about half the time. Both forms verify,
    // and both answer the one evaluation once; r and s out of range never verify.
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P384_SHA384_FIXED_SIGNING};
    let world = World::new();
    let (p256_signer, p256_jwk) = p256_key(11);
    let k256_signer = k256::ecdsa::SigningKey::from_slice(&[0x2a; 32]).expect("scalar");
    let k256_point = k256_signer.verifying_key().to_sec1_point(false);
    let rng = SystemRandom::new();
    let p384_pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).expect("P-384 key");
    let p384_signer =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, p384_pkcs8.as_ref())
            .expect("P-384 key");
    let p384_point = p384_signer.public_key().as_ref().to_vec();
    world.add("p256", &p256_jwk, KeyStatus::Active);
    world.add(
        "k256",
        &json!({"kty": "EC", "crv": "secp256k1",
                "x": b64(k256_point.x().expect("x")), "y": b64(k256_point.y().expect("y"))}),
        KeyStatus::Active,
    );
    world.add(
        "p384",
        &json!({"kty": "EC", "crv": "P-384",
                "x": b64(&p384_point[1..49]), "y": b64(&p384_point[49..])}),
        KeyStatus::Active,
    );
    type Sign<'a> = Box<dyn Fn(&[u8]) -> Vec<u8> + 'a>;
    let curves: [(&str, &str, &str, Sign); 3] = [
        (
            "p256",
            "ES256",
            "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551",
            Box::new(|input| {
                use p256::ecdsa::signature::Signer as _;
                let sig: p256::ecdsa::Signature = p256_signer.sign(input);
                sig.to_bytes().to_vec()
            }),
        ),
        (
            "p384",
            "ES384",
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
            Box::new(|input| {
                p384_signer
                    .sign(&rng, input)
                    .expect("sign")
                    .as_ref()
                    .to_vec()
            }),
        ),
        (
            "k256",
            "ES256K",
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
            Box::new(|input| {
                use k256::ecdsa::signature::Signer as _;
                let sig: k256::ecdsa::Signature = k256_signer.sign(input);
                sig.to_bytes().to_vec()
            }),
        ),
    ];
    for (kid, alg, order, sign) in &curves {
        // The signing input answering `evaluation_id`, and its signature.
        let signed = |evaluation_id: &str| {
            let input = signing_input(
                &json!({"alg": alg, "kid": kid}),
                &claims(evaluation_id, 200),
            );
            let sig = sign(input.as_bytes());
            (input, sig)
        };
        // Out of range on every curve: s = 0, s ≥ n, r = 0. None uses up the evaluation.
        let evaluation_id = format!("{kid}-range");
        let (input, sig) = signed(&evaluation_id);
        let half = sig.len() / 2;
        let mut s_zero = sig.clone();
        s_zero[half..].fill(0);
        let mut s_max = sig.clone();
        s_max[half..].fill(0xff);
        let mut r_zero = sig.clone();
        r_zero[..half].fill(0);
        for bad in [&s_zero, &s_max, &r_zero] {
            assert_eq!(
                world.verify(&format!("{input}.{}", b64(bad)), &evaluation_id),
                Err("BAD_SIGNATURE".into()),
                "{alg}"
            );
        }
        assert_eq!(
            world.verify(&format!("{input}.{}", b64(&sig)), &evaluation_id),
            Ok(((*kid).to_owned(), 200)),
            "{alg}"
        );
        for twin_first in [false, true] {
            let evaluation_id = format!("{kid}-{twin_first}");
            let (input, sig) = signed(&evaluation_id);
            let twin = high_s_twin(&sig, order);
            let (first, second) = if twin_first {
                (&twin, &sig)
            } else {
                (&sig, &twin)
            };
            assert_eq!(
                world.verify(&format!("{input}.{}", b64(first)), &evaluation_id),
                Ok(((*kid).to_owned(), 200)),
                "{alg}, twin first: {twin_first}"
            );
            assert_eq!(
                world.verify(&format!("{input}.{}", b64(second)), &evaluation_id),
                Err("REPLAYED".into()),
                "{alg}, twin first: {twin_first}"
            );
        }
    }
}

#[test]
fn duplicate_members_and_non_object_claims_are_refused() {
    let (world, key) = ed_world();
    use ed25519_dalek::Signer as _;
    let sign = |header: &str, payload: &str| {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        format!("{input}.{}", b64(&key.sign(input.as_bytes()).to_bytes()))
    };
    let ok_claims = format!(r#"{{"evaluationId":"e","statusCode":200,"iat":{NOW}}}"#);
    assert_eq!(
        world.verify(
            &sign(r#"{"alg":"EdDSA","kid":"k1","kid":"k2"}"#, &ok_claims),
            "e"
        ),
        Err("MALFORMED_TOKEN".into())
    );
    assert_eq!(
        world.verify(
            &sign(r#"{"alg":"HS256","alg":"EdDSA","kid":"k1"}"#, &ok_claims),
            "e"
        ),
        Err("MALFORMED_TOKEN".into())
    );
    let dup_claims =
        format!(r#"{{"evaluationId":"x","evaluationId":"e","statusCode":200,"iat":{NOW}}}"#);
    assert_eq!(
        world.verify(&sign(r#"{"alg":"EdDSA","kid":"k1"}"#, &dup_claims), "e"),
        Err("MALFORMED_TOKEN".into())
    );
    // Members keyward does not read are still checked, at any depth.
    assert_eq!(
        world.verify(
            &sign(
                r#"{"alg":"EdDSA","kid":"k1","x":[{"a":1,"a":2}]}"#,
                &ok_claims
            ),
            "e"
        ),
        Err("MALFORMED_TOKEN".into())
    );
    let nested_dup = format!(
        r#"{{"evaluationId":"e","statusCode":200,"iat":{NOW},"ctx":{{"a":{{"b":1,"b":1}}}}}}"#
    );
    assert_eq!(
        world.verify(&sign(r#"{"alg":"EdDSA","kid":"k1"}"#, &nested_dup), "e"),
        Err("MALFORMED_TOKEN".into())
    );
    // An escaped name or value means what it spells, repeated or not.
    assert_eq!(
        world.verify(
            &sign(r#"{"alg":"EdDSA","kid":"k1","k\u0069d":"k1"}"#, &ok_claims),
            "e"
        ),
        Err("MALFORMED_TOKEN".into())
    );
    let escaped = format!(
        r#"{{"\u0065valuationId":"\u0066","statusCode":200,"iat":{NOW},"ctx":{{"a":[1]}}}}"#
    );
    assert_eq!(
        world.verify(
            &sign(r#"{"alg":"Ed\u0044SA","kid":"k\u0031"}"#, &escaped),
            "f"
        ),
        Ok(("k1".into(), 200))
    );
    for payload in ["[1,2]", "\"claims\"", "42", "null", "{"] {
        assert_eq!(
            world.verify(&sign(r#"{"alg":"EdDSA","kid":"k1"}"#, payload), "e"),
            Err("MALFORMED_TOKEN".into()),
            "{payload}"
        );
    }
    assert_eq!(
        world.verify(&sign(r#"{"alg":"EdDSA","kid":"k1"}"#, &ok_claims), "e"),
        Ok(("k1".into(), 200))
    );
}

#[test]
fn claims_are_checked_for_presence_and_time() {
    let (world, key) = ed_world();
    let h = json!({"alg": "EdDSA", "kid": "k1"});
    let cases = [
        (json!({"statusCode": 200, "iat": NOW}), "MISSING_CLAIM"),
        (json!({"evaluationId": "e", "iat": NOW}), "MISSING_CLAIM"),
        (
            json!({"evaluationId": "e", "statusCode": 200}),
            "MISSING_CLAIM",
        ),
        (
            json!({"evaluationId": "e", "statusCode": 200, "iat": NOW + 301}),
            "ISSUED_IN_FUTURE",
        ),
        (
            json!({"evaluationId": "e", "statusCode": 200, "iat": NOW - 301}),
            "TOKEN_EXPIRED",
        ),
        (
            json!({"evaluationId": "e", "statusCode": 200, "iat": NOW, "exp": NOW - 300}),
            "TOKEN_EXPIRED",
        ),
        (
            json!({"evaluationId": "e", "statusCode": 200, "iat": NOW, "nbf": NOW + 301}),
            "ISSUED_IN_FUTURE",
        ),
    ];
    for (claims, code) in cases {
        assert_eq!(
            world.verify(&ed_token(&key, &h, &claims), "e"),
            Err(code.into()),
            "{claims}"
        );
    }
    // Within the skew is fine.
    let edge = json!({"evaluationId": "e", "statusCode": 200, "iat": NOW + 299, "exp": NOW - 299, "nbf": NOW + 299});
    assert_eq!(
        world.verify(&ed_token(&key, &h, &edge), "e"),
        Ok(("k1".into(), 200))
    );
}

#[test]
fn a_claim_of_the_wrong_type_is_refused_saying_which_type_it_must_be() {
    let (world, key) = ed_world();
    let h = json!({"alg": "EdDSA", "kid": "k1"});
    for (claims, says) in [
        (
            json!({"evaluationId": "e", "statusCode": "200", "iat": NOW}),
            "'statusCode' claim has the wrong type; it must be an integer",
        ),
        (
            json!({"evaluationId": "e", "statusCode": 200.5, "iat": NOW}),
            "'statusCode' claim has the wrong type; it must be an integer",
        ),
        (
            json!({"evaluationId": 7, "statusCode": 200, "iat": NOW}),
            "'evaluationId' claim has the wrong type; it must be a string",
        ),
        (
            json!({"evaluationId": "e", "statusCode": 200, "iat": "2026-01-12"}),
            "'iat' claim has the wrong type; it must be a NumericDate",
        ),
        (
            json!({"evaluationId": "e", "statusCode": 200, "iat": NOW, "exp": "later"}),
            "'exp' claim has the wrong type; it must be a NumericDate",
        ),
    ] {
        let verdict = world
            .service
            .verify(&world.admin, &ed_token(&key, &h, &claims), "e");
        let Ok(Verification::Invalid(rejection)) = verdict else {
            panic!("expected a refusal, got {verdict:?}");
        };
        assert_eq!(rejection.code(), "INVALID_CLAIM");
        assert!(
            rejection.message().contains(says),
            "{}",
            rejection.message()
        );
    }
}

#[test]
fn a_kid_missing_from_its_jwks_is_unknown_and_says_where_to_publish_it() {
    struct Lacking;
    impl JwksSource for Lacking {
        fn find(&self, _uri: &str, _kid: &str) -> JwksLookup {
            JwksLookup::NotFound
        }
    }
    let world = World::new().with_jwks(Arc::new(Lacking));
    world.add_source(
        "remote",
        KeySource::JwksUri("https://keys.example/jwks.json".into()),
        KeyStatus::Active,
    );
    let (key, _) = ed_key(31);
    let token = ed_token(
        &key,
        &json!({"alg": "EdDSA", "kid": "remote"}),
        &claims("e", 200),
    );
    let verdict = world.service.verify(&world.admin, &token, "e");
    let Ok(Verification::Invalid(rejection)) = verdict else {
        panic!("expected a refusal, got {verdict:?}");
    };
    assert_eq!(rejection.code(), "UNKNOWN_KEY");
    let message = rejection.message();
    assert!(
        message.contains("jwksUri") && message.contains("publish"),
        "{message}"
    );
    assert!(!message.contains("register the key first"), "{message}");
    let retry = format!(
        "retry in {} seconds",
        keyward_domain::ports::JWKS_UNKNOWN_KID_COOLDOWN_SECS
    );
    assert!(message.contains(&retry), "{message}");
}

#[test]
fn revoked_and_unknown_keys_are_refused() {
    let world = World::new();
    let (key, jwk) = ed_key(11);
    world.add("old", &jwk, KeyStatus::Revoked);
    let c = claims("e", 200);
    assert_eq!(
        world.verify(
            &ed_token(&key, &json!({"alg": "EdDSA", "kid": "old"}), &c),
            "e"
        ),
        Err("KEY_REVOKED".into())
    );
    assert_eq!(
        world.verify(
            &ed_token(&key, &json!({"alg": "EdDSA", "kid": "nope"}), &c),
            "e"
        ),
        Err("UNKNOWN_KEY".into())
    );
    // The right kid but the wrong key's signature.
    let (other, _) = ed_key(12);
    world.add("mine", &ed_key(13).1, KeyStatus::Active);
    assert_eq!(
        world.verify(
            &ed_token(&other, &json!({"alg": "EdDSA", "kid": "mine"}), &c),
            "e"
        ),
        Err("BAD_SIGNATURE".into())
    );
}

/// A verify body as the HTTP layer drives it: from memory, reading the key first when
/// it is not there, then the replay record.
fn verify_in_steps(
    world: &World,
    token: &str,
    evaluation_id: &str,
) -> Result<(String, i64), String> {
    use keyward_domain::VerifyStep;
    let body = json!({"token": token, "evaluationId": evaluation_id}).to_string();
    let service = &world.service;
    let mut loads = 0;
    let step = loop {
        match service
            .verify_body_cached(&world.admin, body.as_bytes())
            .expect("no storage error")
        {
            Some(VerifyStep::Load(load)) => {
                loads += 1;
                assert_eq!(loads, 1, "a key learnt is found at once");
                let (done, read) = std::sync::mpsc::channel();
                service.fetch_key(&load, Box::new(move |r| done.send(r).expect("send")));
                let read = read.recv().expect("answered");
                if let Some(rejection) = service.learn_key(load, read).expect("no storage error") {
                    break VerifyStep::Done(Verification::Invalid(rejection));
                }
            }
            Some(step) => break step,
            None => panic!("only keys by jwksUri need a blocking step"),
        }
    };
    let step = match step {
        VerifyStep::Signature(check) => {
            let (done, next) = std::sync::mpsc::channel();
            service.queue_signature(check, Box::new(move |step| done.send(step).expect("send")));
            assert_eq!(service.check_queued_signatures(), 1);
            next.recv().expect("answered")
        }
        step => step,
    };
    settle(service, step)
}

/// The verdict a verification's last step leads to: the replay record written first
/// where there is one.
fn settle(service: &KeyService, step: keyward_domain::VerifyStep) -> Result<(String, i64), String> {
    use keyward_domain::VerifyStep;
    let verification = match step {
        VerifyStep::Done(verification) => verification,
        VerifyStep::Record(pending) => {
            let (done, outcome) = std::sync::mpsc::channel();
            service.submit(&pending, Box::new(move |r| done.send(r).expect("send")));
            service
                .finish(pending, outcome.recv().expect("answered"))
                .expect("no storage error")
        }
        other => panic!("not a last step: {other:?}"),
    };
    match verification {
        Verification::Valid {
            key_id,
            status_code,
        } => Ok((key_id, status_code)),
        Verification::Invalid(rejection) => Err(rejection.code().to_owned()),
    }
}

#[test]
fn keys_read_for_the_event_loop_decide_as_keys_read_at_once() {
    let world = World::new();
    let (key, jwk) = ed_key(21);
    world.add("k", &jwk, KeyStatus::Active);
    world.add("old", &ed_key(22).1, KeyStatus::Revoked);
    let token = |kid: &str, eval: &str| {
        ed_token(
            &key,
            &json!({"alg": "EdDSA", "kid": kid}),
            &claims(eval, 200),
        )
    };
    // In order: the last two find the key in memory, without a read.
    type Verdict = Result<(String, i64), String>;
    let expected: [(&str, &str, &str, Verdict); 6] = [
        ("nope", "e1", "e1", Err("UNKNOWN_KEY".into())),
        ("old", "e1", "e1", Err("KEY_REVOKED".into())),
        ("k", "e1", "e1", Ok(("k".into(), 200))),
        ("k", "e1", "e1", Err("REPLAYED".into())),
        ("k", "e2", "e3", Err("EVALUATION_ID_MISMATCH".into())),
        ("", "", "e4", Err("MALFORMED_TOKEN".into())),
    ];
    for (kid, signed_for, asked_for, verdict) in expected {
        // A malformed token is refused before any key is read.
        let token = if kid.is_empty() {
            "not.a.token".to_owned()
        } else {
            token(kid, signed_for)
        };
        assert_eq!(
            verify_in_steps(&world, &token, asked_for),
            verdict,
            "{kid} {asked_for}"
        );
    }
    // A key revoked after it was learnt is refused by its replay record's write.
    world
        .store
        .keys
        .lock()
        .expect("lock")
        .get_mut("k")
        .expect("k")
        .status = KeyStatus::Revoked;
    assert_eq!(
        verify_in_steps(&world, &token("k", "e5"), "e5"),
        Err("KEY_REVOKED".into())
    );
    assert_eq!(
        verify_in_steps(&world, &token("k", "e6"), "e6"),
        Err("KEY_REVOKED".into()),
        "and forgotten: read again"
    );
}

#[test]
fn oversized_and_misshapen_tokens_are_cheap_refusals() {
    let (world, _) = ed_world();
    for token in [
        "a".repeat(9000),
        ".".repeat(5000),
        "a.b.c.d.e".to_owned(),
        "only-one-part".to_owned(),
        "a.b".to_owned(),
        "!!.??.##".to_owned(),
        format!("{}.e30.AAAA", b64(&vec![b'['; 4000])),
        format!(
            "{}.{}.AAAA",
            b64(br#"{"alg":"EdDSA","kid":"k1"}"#),
            b64(format!(r#"{{"evaluationId":"e","x":{}}}"#, "[".repeat(3000)).as_bytes())
        ),
        String::new(),
    ] {
        assert_eq!(
            world.verify(&token, "e"),
            Err("MALFORMED_TOKEN".into()),
            "{}",
            &token[..token.len().min(40)]
        );
    }
}

/// Ed25519 signatures queued together (as the event loop queues those of verifications
/// in flight at once) answer as each would alone, good and bad mixed in one batch: a
/// flipped bit, a small-order R, another key's signature, a token for another
/// evaluation, an expired one, and a second good answer to the same evaluation.
#[test]
fn signatures_checked_together_answer_as_each_alone() {
    use curve25519_dalek::scalar::Scalar;
    use keyward_domain::VerifyStep;
    use sha2::{Digest as _, Sha512};

    let world = World::new();
    let (a, jwk_a) = ed_key(31);
    let (b, jwk_b) = ed_key(32);
    world.add("a", &jwk_a, KeyStatus::Active);
    world.add("b", &jwk_b, KeyStatus::Active);
    let header = |kid: &str| json!({"alg": "EdDSA", "kid": kid});
    // Learn both keys, as a first verification of each does.
    for (key, kid) in [(&a, "a"), (&b, "b")] {
        let token = ed_token(key, &header(kid), &claims(&format!("warm-{kid}"), 200));
        assert!(verify_in_steps(&world, &token, &format!("warm-{kid}")).is_ok());
    }
    let mut flipped = ed_token(&a, &header("a"), &claims("e3", 200));
    let last = flipped.pop().expect("a character");
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    // R = the identity and S = k·a: the plain equation holds (see
    // `ed25519_signatures_are_checked_strictly`).
    let small_r = {
        let input = signing_input(&header("a"), &claims("e7", 200));
        let mut r = [0u8; 32];
        r[0] = 1;
        let mut hash = Sha512::new();
        hash.update(r);
        hash.update(a.verifying_key().to_bytes());
        hash.update(input.as_bytes());
        let k = Scalar::from_bytes_mod_order_wide(&hash.finalize().into());
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&r);
        signature[32..].copy_from_slice((k * a.to_scalar()).as_bytes());
        format!("{input}.{}", b64(&signature))
    };
    let expired = json!({"evaluationId": "e6", "statusCode": 200, "iat": NOW - 3600});
    type Verdict = Result<(String, i64), String>;
    let cases: Vec<(String, &str, Verdict)> = vec![
        (
            ed_token(&a, &header("a"), &claims("e1", 200)),
            "e1",
            Ok(("a".into(), 200)),
        ),
        (
            ed_token(&b, &header("b"), &claims("e2", 201)),
            "e2",
            Ok(("b".into(), 201)),
        ),
        (flipped, "e3", Err("BAD_SIGNATURE".into())),
        (
            ed_token(&a, &header("a"), &claims("e4", 200)),
            "e5",
            Err("EVALUATION_ID_MISMATCH".into()),
        ),
        (
            ed_token(&a, &header("a"), &expired),
            "e6",
            Err("TOKEN_EXPIRED".into()),
        ),
        (small_r, "e7", Err("BAD_SIGNATURE".into())),
        (
            ed_token(&b, &header("a"), &claims("e8", 200)),
            "e8",
            Err("BAD_SIGNATURE".into()),
        ),
        (
            ed_token(&a, &header("a"), &claims("e1", 404)),
            "e1",
            Err("REPLAYED".into()),
        ),
        (
            ed_token(&b, &header("b"), &claims("e9", 200)),
            "e9",
            Ok(("b".into(), 200)),
        ),
    ];
    let service = &world.service;
    let (done, next) = std::sync::mpsc::channel();
    for (i, (token, asked_for, _)) in cases.iter().enumerate() {
        let body = json!({"token": token, "evaluationId": asked_for}).to_string();
        match service.verify_body_cached(&world.admin, body.as_bytes()) {
            Ok(Some(VerifyStep::Signature(check))) => {
                let done = done.clone();
                service.queue_signature(
                    check,
                    Box::new(move |step| done.send((i, step)).expect("send")),
                );
            }
            other => panic!("case {i}: {other:?}"),
        }
    }
    assert_eq!(service.check_queued_signatures(), cases.len());
    assert_eq!(service.check_queued_signatures(), 0, "none left");
    let mut steps: Vec<(usize, VerifyStep)> = next.try_iter().collect();
    steps.sort_by_key(|(i, _)| *i);
    assert_eq!(steps.len(), cases.len());
    for ((i, step), (_, _, expected)) in steps.into_iter().zip(&cases) {
        assert_eq!(&settle(service, step), expected, "case {i}");
    }
}

/// A batch takes the oldest queued signatures, a bounded number at a time; the rest
/// wait for the next check, on whichever thread.
#[test]
fn queued_signatures_are_checked_oldest_first_a_bounded_batch_at_a_time() {
    use keyward_domain::VerifyStep;
    let (world, key) = ed_world();
    let warm = ed_token(
        &key,
        &json!({"alg": "EdDSA", "kid": "k1"}),
        &claims("warm", 200),
    );
    assert!(verify_in_steps(&world, &warm, "warm").is_ok());
    let service = &world.service;
    let (done, next) = std::sync::mpsc::channel();
    for i in 0..40 {
        let eval = format!("q{i}");
        let token = ed_token(
            &key,
            &json!({"alg": "EdDSA", "kid": "k1"}),
            &claims(&eval, 200),
        );
        let body = json!({"token": token, "evaluationId": eval}).to_string();
        let Ok(Some(VerifyStep::Signature(check))) =
            service.verify_body_cached(&world.admin, body.as_bytes())
        else {
            panic!("a signature to check");
        };
        let done = done.clone();
        service.queue_signature(
            check,
            Box::new(move |step| done.send((i, step)).expect("send")),
        );
    }
    assert_eq!(service.check_queued_signatures(), 32);
    let first: Vec<usize> = next.try_iter().map(|(i, _)| i).collect();
    assert_eq!(first, (0..32).collect::<Vec<_>>());
    assert_eq!(service.check_queued_signatures(), 8);
    assert!(next
        .try_iter()
        .all(|(i, step)| i >= 32 && matches!(step, VerifyStep::Record(_))));
    assert_eq!(service.check_queued_signatures(), 0);
}
