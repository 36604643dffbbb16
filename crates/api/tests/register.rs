//! The register operation over HTTP, rule by rule, on both backends.

mod common;

use common::*;
use keyward_persistence::testing::TestDb;
use poem::http::{Method, StatusCode};
use serde_json::{json, Value};

const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const SECRET_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";

async fn refused(h: &Harness, body: Value) -> (StatusCode, String) {
    let reply = h.register("acme", &body).await;
    let code = reply.error_code();
    (reply.status, code)
}

on_both_backends! {
    inline_key_is_registered_with_the_contract_body_and_location(db) {
        let h = Harness::new(db);
        let reply = h.register("acme", &json!({"jwks": {"keys": [with(ed25519_jwk(1), "kid", json!("my-key-v1"))]}, "keyName": "Prod"})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.raw);
        let body = reply.body.as_object().expect("object");
        let mut members: Vec<&str> = body.keys().map(String::as_str).collect();
        members.sort_unstable();
        assert_eq!(members, ["algorithm", "createdDate", "id", "jwksUri", "keyId", "status"]);
        assert_eq!(body["keyId"], "my-key-v1");
        assert_eq!(body["algorithm"], "EdDSA");
        assert_eq!(body["jwksUri"], Value::Null);
        assert_eq!(body["status"], "ACTIVE");
        assert_eq!(body["createdDate"], "2026-01-12T10:30:00.000Z");
        assert!(uuid::Uuid::parse_str(body["id"].as_str().expect("id")).is_ok());
        assert_eq!(
            reply.headers.get("location").and_then(|v| v.to_str().ok()),
            Some("/api/policy/v1/enterprises/acme/webhooks/keys/my-key-v1")
        );
        // keyName given; it defaults to the keyId otherwise.
        let got = h.call(Method::GET, &format!("{BASE}/acme/webhooks/keys/my-key-v1"), Some(&h.admin), None).await;
        assert_eq!(got.body["keyName"], "Prod");
        let reply = h.register("acme", &inline(ed25519_jwk(2), "second")).await;
        assert_eq!(reply.status, StatusCode::CREATED);
        let got = h.call(Method::GET, &format!("{BASE}/acme/webhooks/keys/second"), Some(&h.admin), None).await;
        assert_eq!(got.body["keyName"], "second");
        assert_eq!(got.body["createdBy"], "admin@acme.test");
    }

    every_supported_curve_registers_with_its_algorithm(db) {
        let h = Harness::new(db);
        let keys = [
            (json!({"kty":"OKP","crv":"Ed25519","x":RFC8037_X}), "EdDSA"),
            (p256_jwk(3), "ECDSA"),
            (json!({"kty":"EC","crv":"P-384","x":"6GuZXjUOTTEqlaa31djNzbRoL1iIAKHNbJcuHcsqWsONkARpUbA8yzsXmon9qIsb","y":"SFufLB9EsN1Bzm48OmkLv6q-weH_Su-yRh_dpmKb7L1Dz3TBPYwaFiVhIkPwBGFI"}), "ECDSA"),
            (json!({"kty":"EC","crv":"secp256k1","x":"eb5mfvncu6xVoGKVzocLBwKb_NstzijZWfKBWxb4F5g","y":"SDradyajxGVdpPv8DhEIqP0XtEimhVQZnEfQj_sQ1Lg"}), "ECDSA"),
        ];
        for (i, (jwk, alg)) in keys.into_iter().enumerate() {
            let reply = h.register("acme", &inline(jwk, &format!("k{i}"))).await;
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.raw);
            assert_eq!(reply.body["algorithm"], alg);
        }
    }

    jwks_uri_key_is_registered_without_algorithm(db) {
        let h = Harness::new(db);
        let reply = h.register("acme", &json!({"jwksUri": "https://example.com/.well-known/jwks.json", "keyId": "remote-1"})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.raw);
        assert_eq!(reply.body["algorithm"], Value::Null);
        assert_eq!(reply.body["jwksUri"], "https://example.com/.well-known/jwks.json");
        let got = h.call(Method::GET, &format!("{BASE}/acme/webhooks/keys/remote-1"), Some(&h.admin), None).await;
        assert_eq!(got.body["jwksUri"], "https://example.com/.well-known/jwks.json");
        assert!(got.body.get("jwk").is_none() && got.body.get("thumbprint").is_none());
    }

    each_rule_has_its_own_refusal(db) {
        let h = Harness::new(db);
        let ed = ed25519_jwk(4);
        let cases: Vec<(Value, u16, &str)> = vec![
            (json!({"jwks": {"keys": [ed.clone()]}, "jwksUri": "https://example.com/j", "keyId": "k"}), 400, "INVALID_REQUEST"),
            (json!({"keyId": "k"}), 400, "INVALID_REQUEST"),
            (json!({"jwks": {"keys": [ed.clone()]}, "keyId": "k", "extra": true}), 400, "INVALID_REQUEST"),
            (json!({"jwks": {"keys": [ed.clone()]}, "keyId": ["k"]}), 400, "INVALID_REQUEST"),
            (json!({"jwks": {"keys": [ed.clone()]}, "keyId": "k", "keyName": "n".repeat(256)}), 400, "INVALID_REQUEST"),
            (json!("just a string"), 400, "INVALID_REQUEST"),
            (json!({"jwks": {"keys": []}, "keyId": "k"}), 400, "INVALID_JWKS"),
            (json!({"jwks": {"keys": [ed.clone(), ed25519_jwk(5)]}, "keyId": "k"}), 400, "INVALID_JWKS"),
            (inline(json!({"kty":"RSA","n":"sXch","e":"AQAB"}), "k"), 400, "UNSUPPORTED_KEY_TYPE"),
            (inline(json!({"kty":"oct","alg":"HS256"}), "k"), 400, "UNSUPPORTED_KEY_TYPE"),
            (inline(json!({"kty":"OKP","crv":"X25519","x":RFC8037_X}), "k"), 400, "UNSUPPORTED_KEY_TYPE"),
            (inline(json!({"kty":"OKP","crv":"Ed448","x":RFC8037_X}), "k"), 400, "UNSUPPORTED_KEY_TYPE"),
            (inline(with(ed.clone(), "d", json!(SECRET_D)), "k"), 400, "PRIVATE_KEY_MATERIAL"),
            (inline(json!({"kty":"oct","k":SECRET_D}), "k"), 400, "PRIVATE_KEY_MATERIAL"),
            (inline(with(ed.clone(), "x", json!(format!("{RFC8037_X}="))), "k"), 400, "INVALID_JWK"),
            (inline(with(ed.clone(), "x", json!(&RFC8037_X[..42])), "k"), 400, "INVALID_JWK"),
            (inline(with(ed.clone(), "x", json!("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")), "k"), 400, "INVALID_JWK"),
            (inline(with(p256_jwk(6), "y", json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")), "k"), 400, "INVALID_JWK"),
            (inline(with(ed.clone(), "alg", json!("ES256")), "k"), 400, "ALGORITHM_MISMATCH"),
            (inline(with(p256_jwk(6), "alg", json!("ES384")), "k"), 400, "ALGORITHM_MISMATCH"),
            (inline(with(ed.clone(), "use", json!("enc")), "k"), 400, "INVALID_JWK"),
            (inline(with(ed.clone(), "key_ops", json!(["sign"])), "k"), 400, "INVALID_JWK"),
            (inline(with(ed.clone(), "key_ops", json!(["verify", "verify"])), "k"), 400, "INVALID_JWK"),
            (inline(with(ed.clone(), "x5c", json!(["MIIB"])), "k"), 400, "INVALID_JWK"),
            (json!({"jwks": {"keys": [with(ed.clone(), "kid", json!("a"))]}, "keyId": "b"}), 400, "KEY_ID_MISMATCH"),
            (json!({"jwks": {"keys": [ed.clone()]}}), 400, "KEY_ID_REQUIRED"),
            (json!({"jwksUri": "https://example.com/jwks.json"}), 400, "KEY_ID_REQUIRED"),
            (inline(ed.clone(), "has space"), 400, "INVALID_KEY_ID"),
            (inline(ed.clone(), "a/b"), 400, "INVALID_KEY_ID"),
            (inline(ed.clone(), &"k".repeat(256)), 400, "INVALID_KEY_ID"),
            (json!({"jwksUri": "http://example.com/jwks.json", "keyId": "k"}), 400, "INVALID_JWKS_URI"),
            (json!({"jwksUri": "https://127.0.0.1/jwks.json", "keyId": "k"}), 400, "INVALID_JWKS_URI"),
            (json!({"jwksUri": "https://[::ffff:10.0.0.1]/jwks.json", "keyId": "k"}), 400, "INVALID_JWKS_URI"),
            (json!({"jwksUri": "https://169.254.169.254/jwks.json", "keyId": "k"}), 400, "INVALID_JWKS_URI"),
            (json!({"jwksUri": "https://u:p@example.com/jwks.json", "keyId": "k"}), 400, "INVALID_JWKS_URI"),
            (json!({"jwksUri": "https://example.com/jwks.json#x", "keyId": "k"}), 400, "INVALID_JWKS_URI"),
            (json!({"jwksUri": "jwks.json", "keyId": "k"}), 400, "INVALID_JWKS_URI"),
        ];
        for (body, status, code) in cases {
            let (got_status, got_code) = refused(&h, body.clone()).await;
            assert_eq!((got_status.as_u16(), got_code.as_str()), (status, code), "{body}");
        }
        // Nothing refused was stored.
        let list = h.call(Method::GET, &format!("{BASE}/acme/webhooks/keys"), Some(&h.admin), None).await;
        assert_eq!(list.body["total"], 0, "{}", list.raw);
    }

    a_repeated_jwk_member_is_refused(db) {
        let h = Harness::new(db);
        let body = format!(r#"{{"jwks":{{"keys":[{{"kty":"OKP","crv":"X25519","crv":"Ed25519","x":"{RFC8037_X}"}}]}},"keyId":"k"}}"#);
        let reply = h.call(Method::POST, &format!("{BASE}/acme/webhooks/keys"), Some(&h.admin), Some(&body)).await;
        assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::BAD_REQUEST, "INVALID_JWK"));
    }

    private_key_material_is_neither_stored_nor_echoed(db) {
        let h = Harness::new(db);
        let reply = h.register("acme", &inline(with(ed25519_jwk(7), "d", json!(SECRET_D)), "leaky")).await;
        assert_eq!(reply.error_code(), "PRIVATE_KEY_MATERIAL");
        assert!(!reply.raw.contains(SECRET_D));
        let got = h.call(Method::GET, &format!("{BASE}/acme/webhooks/keys/leaky"), Some(&h.admin), None).await;
        assert_eq!(got.status, StatusCode::NOT_FOUND);
        // The stored JWK holds public members only, even when extra members are sent.
        let reply = h.register("acme", &inline(with(ed25519_jwk(7), "note", json!("public")), "clean")).await;
        assert_eq!(reply.status, StatusCode::CREATED);
        let got = h.call(Method::GET, &format!("{BASE}/acme/webhooks/keys/clean"), Some(&h.admin), None).await;
        let jwk = got.body["jwk"].as_object().expect("jwk");
        let mut members: Vec<&str> = jwk.keys().map(String::as_str).collect();
        members.sort_unstable();
        assert_eq!(members, ["crv", "kid", "kty", "x"]);
    }

    operator_may_allow_an_insecure_jwks_host(db) {
        let h = Harness::with_options(db, Options { insecure_hosts: vec!["127.0.0.1"], ..Options::default() });
        let reply = h.register("acme", &json!({"jwksUri": "http://127.0.0.1:9999/jwks.json", "keyId": "dev"})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.raw);
        let reply = h.register("acme", &json!({"jwksUri": "http://10.0.0.1/jwks.json", "keyId": "dev2"})).await;
        assert_eq!(reply.error_code(), "INVALID_JWKS_URI");
    }

    key_ids_are_tombstoned_forever_and_keys_registered_once(db) {
        let h = Harness::new(db);
        assert_eq!(h.register("acme", &inline(ed25519_jwk(8), "my-key-v1")).await.status, StatusCode::CREATED);
        let again = h.register("acme", &inline(ed25519_jwk(9), "my-key-v1")).await;
        assert_eq!((again.status, again.error_code().as_str()), (StatusCode::BAD_REQUEST, "KEY_ID_ALREADY_USED"));
        let same_key = h.register("acme", &inline(ed25519_jwk(8), "my-key-v2")).await;
        assert_eq!((same_key.status, same_key.error_code().as_str()), (StatusCode::CONFLICT, "KEY_ALREADY_REGISTERED"));
        // The same key with other optional members has the same thumbprint.
        let decorated = h.register("acme", &inline(with(with(ed25519_jwk(8), "alg", json!("EdDSA")), "use", json!("sig")), "my-key-v3")).await;
        assert_eq!(decorated.error_code(), "KEY_ALREADY_REGISTERED");
        let revoked = h.call(Method::DELETE, &format!("{BASE}/acme/webhooks/keys/my-key-v1"), Some(&h.admin), None).await;
        assert_eq!(revoked.status, StatusCode::OK);
        let after = h.register("acme", &inline(ed25519_jwk(10), "my-key-v1")).await;
        assert_eq!((after.status, after.error_code().as_str()), (StatusCode::BAD_REQUEST, "KEY_ID_ALREADY_USED"));
        let resurrect = h.register("acme", &inline(ed25519_jwk(8), "my-key-v4")).await;
        assert_eq!((resurrect.status, resurrect.error_code().as_str()), (StatusCode::CONFLICT, "KEY_ALREADY_REGISTERED"));
        // Another enterprise is independent.
        assert_eq!(h.register("globex", &inline(ed25519_jwk(8), "my-key-v1")).await.status, StatusCode::CREATED);
    }

    active_key_limit_is_enforced(db) {
        let h = Harness::with_options(db, Options { max_active_keys: 2, ..Options::default() });
        assert_eq!(h.register("acme", &inline(ed25519_jwk(11), "a")).await.status, StatusCode::CREATED);
        assert_eq!(h.register("acme", &inline(ed25519_jwk(12), "b")).await.status, StatusCode::CREATED);
        let third = h.register("acme", &inline(ed25519_jwk(13), "c")).await;
        assert_eq!((third.status, third.error_code().as_str()), (StatusCode::CONFLICT, "ACTIVE_KEY_LIMIT_REACHED"));
        assert_eq!(h.call(Method::DELETE, &format!("{BASE}/acme/webhooks/keys/a"), Some(&h.admin), None).await.status, StatusCode::OK);
        assert_eq!(h.register("acme", &inline(ed25519_jwk(13), "c")).await.status, StatusCode::CREATED);
    }

    concurrent_registrations_over_http_give_one_201(db) {
        let h = std::sync::Arc::new(Harness::new(db));
        let mut tasks = Vec::new();
        for i in 0..32u8 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move { h.register("acme", &inline(ed25519_jwk(100 + i), "race")).await.status }));
        }
        let mut created = 0;
        for task in tasks {
            let status = task.await.expect("task");
            assert!(status == StatusCode::CREATED || status == StatusCode::BAD_REQUEST, "{status}");
            created += usize::from(status == StatusCode::CREATED);
        }
        assert_eq!(created, 1);
        let mut tasks = Vec::new();
        for i in 0..32u8 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move { h.register("acme", &inline(ed25519_jwk(200), &format!("same-{i}"))).await.status }));
        }
        let mut created = 0;
        for task in tasks {
            created += usize::from(task.await.expect("task") == StatusCode::CREATED);
        }
        assert_eq!(created, 1);
    }
}
