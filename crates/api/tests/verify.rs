//! The verify operation over HTTP on both backends: the rotation workflow's "confirm it
//! verifies" step, replay protection, revocation taking effect at once.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use ed25519_dalek::Signer as _;
use keyward_persistence::testing::TestDb;
use poem::http::{Method, StatusCode};
use serde_json::{json, Value};

const NOW: i64 = 1_768_213_800;

fn token(seed: u8, kid: &str, evaluation_id: &str, status: i64) -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "EdDSA", "kid": kid, "typ": "JWT"}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(
        json!({"evaluationId": evaluation_id, "statusCode": status, "iat": NOW}).to_string(),
    );
    let input = format!("{header}.{claims}");
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()).to_bytes())
    )
}

async fn verify(h: &Harness, enterprise: &str, token: &str, evaluation_id: &str) -> Reply {
    let body = json!({"token": token, "evaluationId": evaluation_id}).to_string();
    let path = format!("{BASE}/{enterprise}/webhooks/responses/verify");
    h.call(
        Method::POST,
        &path,
        Some(&h.admin_for(enterprise)),
        Some(&body),
    )
    .await
}

on_both_backends! {
    a_signed_response_verifies_once(db) {
        let h = Harness::new(db);
        assert_eq!(h.register("acme", &inline(ed25519_jwk(1), "my-key-v1")).await.status, StatusCode::CREATED);
        let approve = token(1, "my-key-v1", "eval-1", 200);
        let reply = verify(&h, "acme", &approve, "eval-1").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, json!({"valid": true, "keyId": "my-key-v1", "statusCode": 200, "approved": true}));
        let again = verify(&h, "acme", &approve, "eval-1").await;
        assert_eq!((again.body["valid"].clone(), again.body["reason"].clone()), (json!(false), json!("REPLAYED")));
        assert!(again.body["message"].as_str().is_some_and(|m| !m.is_empty()));
        let deny = verify(&h, "acme", &token(1, "my-key-v1", "eval-2", 403), "eval-2").await;
        assert_eq!(deny.body, json!({"valid": true, "keyId": "my-key-v1", "statusCode": 403, "approved": false}));
        // The success is stamped on the key.
        let got = h.call(Method::GET, &format!("{BASE}/acme/webhooks/keys/my-key-v1"), Some(&h.admin), None).await;
        assert_eq!(got.body["lastVerifiedDate"], "2026-01-12T10:30:00.000Z");
    }

    failures_do_not_use_up_the_evaluation(db) {
        let h = Harness::new(db);
        assert_eq!(h.register("acme", &inline(ed25519_jwk(2), "k")).await.status, StatusCode::CREATED);
        let wrong_key = verify(&h, "acme", &token(3, "k", "eval", 200), "eval").await;
        assert_eq!(wrong_key.body["reason"], "BAD_SIGNATURE");
        let mismatch = verify(&h, "acme", &token(2, "k", "other", 200), "eval").await;
        assert_eq!(mismatch.body["reason"], "EVALUATION_ID_MISMATCH");
        let unknown = verify(&h, "acme", &token(2, "nope", "eval", 200), "eval").await;
        assert_eq!(unknown.body["reason"], "UNKNOWN_KEY");
        let garbage = verify(&h, "acme", "not.a.jws", "eval").await;
        assert_eq!(garbage.body["reason"], "MALFORMED_TOKEN");
        assert_eq!(verify(&h, "acme", &token(2, "k", "eval", 200), "eval").await.body["valid"], true);
    }

    revocation_takes_effect_at_once(db) {
        let h = Harness::new(db);
        assert_eq!(h.register("acme", &inline(ed25519_jwk(4), "my-key-v1")).await.status, StatusCode::CREATED);
        assert_eq!(h.register("acme", &inline(ed25519_jwk(5), "my-key-v2")).await.status, StatusCode::CREATED);
        // The rotation workflow: confirm v2 verifies, then revoke v1.
        assert_eq!(verify(&h, "acme", &token(5, "my-key-v2", "e1", 200), "e1").await.body["valid"], true);
        let revoked = h.call(Method::DELETE, &format!("{BASE}/acme/webhooks/keys/my-key-v1"), Some(&h.admin), None).await;
        assert_eq!(revoked.status, StatusCode::OK);
        let old = verify(&h, "acme", &token(4, "my-key-v1", "e2", 200), "e2").await;
        assert_eq!((old.body["valid"].clone(), old.body["reason"].clone()), (json!(false), json!("KEY_REVOKED")));
    }

    keys_of_another_enterprise_do_not_verify(db) {
        let h = Harness::new(db);
        assert_eq!(h.register("globex", &inline(ed25519_jwk(6), "theirs")).await.status, StatusCode::CREATED);
        let reply = verify(&h, "acme", &token(6, "theirs", "e", 200), "e").await;
        assert_eq!(reply.body["reason"], "UNKNOWN_KEY");
        // The same evaluationId is independent per enterprise.
        assert_eq!(h.register("acme", &inline(ed25519_jwk(7), "ours")).await.status, StatusCode::CREATED);
        assert_eq!(verify(&h, "acme", &token(7, "ours", "shared", 200), "shared").await.body["valid"], true);
        assert_eq!(verify(&h, "globex", &token(6, "theirs", "shared", 200), "shared").await.body["valid"], true);
    }

    the_request_is_authorized_then_validated(db) {
        let h = Harness::new(db);
        let path = format!("{BASE}/acme/webhooks/responses/verify");
        let no_token = h.call(Method::POST, &path, None, Some("{bad")).await;
        assert_eq!(no_token.error_code(), "UNAUTHENTICATED");
        let member = h.call(Method::POST, &path, Some(&h.member), Some("{bad")).await;
        assert_eq!(member.error_code(), "FORBIDDEN");
        for body in [
            json!({"token": "a.b.c"}),
            json!({"evaluationId": "e"}),
            json!({"token": 1, "evaluationId": "e"}),
            json!({"token": "a.b.c", "evaluationId": ""}),
            json!({"token": "a.b.c", "evaluationId": "e", "extra": 1}),
            Value::Array(vec![]),
        ] {
            let reply = h.call(Method::POST, &path, Some(&h.admin), Some(&body.to_string())).await;
            assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"), "{body}");
        }
    }

    concurrent_verifications_of_one_evaluation_succeed_once(db) {
        let h = std::sync::Arc::new(Harness::new(db));
        assert_eq!(h.register("acme", &inline(ed25519_jwk(8), "k")).await.status, StatusCode::CREATED);
        let t = token(8, "k", "race", 200);
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (h, t) = (h.clone(), t.clone());
            tasks.push(tokio::spawn(async move { verify(&h, "acme", &t, "race").await.body }));
        }
        let mut valid = 0;
        for task in tasks {
            let body = task.await.expect("task");
            if body["valid"] == true {
                valid += 1;
            } else {
                assert_eq!(body["reason"], "REPLAYED", "{body}");
            }
        }
        assert_eq!(valid, 1);
    }

    concurrent_verifications_each_get_their_own_verdict(db) {
        // Signatures of verifications in flight together are checked together; a bad
        // one among them fails alone.
        let h = std::sync::Arc::new(Harness::new(db));
        assert_eq!(h.register("acme", &inline(ed25519_jwk(9), "k9")).await.status, StatusCode::CREATED);
        assert_eq!(h.register("acme", &inline(ed25519_jwk(10), "k10")).await.status, StatusCode::CREATED);
        let mut tasks = Vec::new();
        for i in 0..48u8 {
            let (seed, kid) = if i % 2 == 0 { (9, "k9") } else { (10, "k10") };
            let eval = format!("together-{i}");
            let (signed_by, signed_for, expected) = match i % 3 {
                0 => (seed, eval.clone(), None),
                1 => (11, eval.clone(), Some("BAD_SIGNATURE")),
                _ => (seed, format!("{eval}-other"), Some("EVALUATION_ID_MISMATCH")),
            };
            let t = token(signed_by, kid, &signed_for, 200);
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                (kid, eval.clone(), expected, verify(&h, "acme", &t, &eval).await.body)
            }));
        }
        for task in tasks {
            let (kid, eval, expected, body) = task.await.expect("task");
            match expected {
                None => assert_eq!(body, json!({"valid": true, "keyId": kid, "statusCode": 200, "approved": true}), "{eval}"),
                Some(reason) => assert_eq!((body["valid"].clone(), body["reason"].clone()), (json!(false), json!(reason)), "{eval}"),
            }
        }
    }
}
