//! List, get and revoke over HTTP on both backends.

mod common;

use common::*;
use keyward_persistence::testing::TestDb;
use poem::http::{Method, StatusCode};
use serde_json::{json, Value};

fn keys_path(enterprise: &str) -> String {
    format!("{BASE}/{enterprise}/webhooks/keys")
}

fn key_ids(reply: &Reply) -> Vec<String> {
    reply.body["keys"].as_array().map_or_else(Vec::new, |keys| {
        keys.iter()
            .map(|k| k["keyId"].as_str().unwrap_or_default().to_owned())
            .collect()
    })
}

on_both_backends! {
    listing_pages_filters_and_counts(db) {
        let h = Harness::new(db);
        for i in 0..5u8 {
            assert_eq!(h.register("acme", &inline(ed25519_jwk(i + 1), &format!("k{i}"))).await.status, StatusCode::CREATED);
        }
        assert_eq!(h.register("acme", &json!({"jwksUri": "https://example.com/jwks", "keyId": "remote"})).await.status, StatusCode::CREATED);
        assert_eq!(h.call(Method::DELETE, &format!("{}/k1", keys_path("acme")), Some(&h.admin), None).await.status, StatusCode::OK);
        let all = h.call(Method::GET, &keys_path("acme"), Some(&h.admin), None).await;
        assert_eq!(all.status, StatusCode::OK);
        assert_eq!(key_ids(&all), ["k0", "k1", "k2", "k3", "k4", "remote"]);
        assert_eq!((all.body["total"].clone(), all.body["limit"].clone(), all.body["prevId"].clone()), (json!(6), json!(50), json!(0)));
        let page = h.call(Method::GET, &format!("{}?limit=2&prevId=2", keys_path("acme")), Some(&h.admin), None).await;
        assert_eq!(key_ids(&page), ["k2", "k3"]);
        assert_eq!((page.body["total"].clone(), page.body["limit"].clone(), page.body["prevId"].clone()), (json!(6), json!(2), json!(2)));
        let past_end = h.call(Method::GET, &format!("{}?prevId=100", keys_path("acme")), Some(&h.admin), None).await;
        assert_eq!((key_ids(&past_end).len(), past_end.body["total"].clone()), (0, json!(6)));
        let active = h.call(Method::GET, &format!("{}?status=ACTIVE&limit=100", keys_path("acme")), Some(&h.admin), None).await;
        assert_eq!(key_ids(&active), ["k0", "k2", "k3", "k4", "remote"]);
        assert_eq!(active.body["total"], 5);
        let revoked = h.call(Method::GET, &format!("{}?status=REVOKED&limit=1", keys_path("acme")), Some(&h.admin), None).await;
        assert_eq!(key_ids(&revoked), ["k1"]);
        let entry = &revoked.body["keys"][0];
        assert_eq!(entry["revokedBy"], "admin@acme.test");
        assert!(entry["revokedDate"].as_str().is_some());
        // Metadata only: no key material anywhere in a listing.
        for key in all.body["keys"].as_array().expect("keys") {
            let obj = key.as_object().expect("entry");
            for forbidden in ["jwk", "thumbprint", "x", "y", "d", "crv"] {
                assert!(!obj.contains_key(forbidden), "{forbidden} in {key}");
            }
            let remote = key["keyId"] == "remote";
            assert_eq!(obj.contains_key("jwksUri"), remote);
            assert_eq!(key["algorithm"], if remote { Value::Null } else { json!("EdDSA") });
            assert_eq!(obj.contains_key("revokedDate"), key["keyId"] == "k1");
        }
    }

    a_page_listed_again_shows_what_changed_since(db) {
        // The same page read again after a registration and after a revocation: each
        // listing is read and rendered for its own request, never answered with the
        // body of an earlier read.
        let h = Harness::new(db);
        let path = keys_path("acme");
        let list = || h.call(Method::GET, &path, Some(&h.admin), None);
        assert_eq!(h.register("acme", &inline(ed25519_jwk(1), "k0")).await.status, StatusCode::CREATED);
        let first = list().await;
        assert_eq!((key_ids(&first), first.body["total"].clone()), (vec!["k0".to_owned()], json!(1)));
        assert_eq!(h.register("acme", &inline(ed25519_jwk(2), "k1")).await.status, StatusCode::CREATED);
        let second = list().await;
        assert_eq!((key_ids(&second), second.body["total"].clone()), (vec!["k0".to_owned(), "k1".to_owned()], json!(2)));
        assert_eq!(h.call(Method::DELETE, &format!("{}/k0", keys_path("acme")), Some(&h.admin), None).await.status, StatusCode::OK);
        let third = list().await;
        assert_eq!((third.body["keys"][0]["status"].clone(), third.body["keys"][1]["status"].clone()), (json!("REVOKED"), json!("ACTIVE")));
    }

    get_returns_the_public_jwk_and_thumbprint(db) {
        let h = Harness::new(db);
        let body = json!({"jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}, "keyId": "rfc"});
        assert_eq!(h.register("acme", &body).await.status, StatusCode::CREATED);
        let got = h.call(Method::GET, &format!("{}/rfc", keys_path("acme")), Some(&h.admin), None).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body["thumbprint"], "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        assert_eq!(got.body["jwk"], json!({"crv": "Ed25519", "kid": "rfc", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}));
        assert_eq!(got.body["status"], "ACTIVE");
        let missing = h.call(Method::GET, &format!("{}/nope", keys_path("acme")), Some(&h.admin), None).await;
        assert_eq!((missing.status, missing.error_code().as_str()), (StatusCode::NOT_FOUND, "KEY_NOT_FOUND"));
    }

    key_ids_needing_percent_encoding_round_trip(db) {
        let h = Harness::new(db);
        for (i, key_id) in ["a:b", "user@host", "a+b", "100%", "ключ", "a?b#c"].into_iter().enumerate() {
            let reply = h.register("acme", &inline(ed25519_jwk(50 + i as u8), key_id)).await;
            assert_eq!(reply.status, StatusCode::CREATED, "{key_id}: {}", reply.raw);
            let location = reply.headers.get("location").and_then(|v| v.to_str().ok()).expect("location").to_owned();
            let got = h.call(Method::GET, &location, Some(&h.admin), None).await;
            assert_eq!((got.status, got.body["keyId"].as_str()), (StatusCode::OK, Some(key_id)), "{location}");
            let revoked = h.call(Method::DELETE, &location, Some(&h.admin), None).await;
            assert_eq!((revoked.status, revoked.body["keyId"].as_str()), (StatusCode::OK, Some(key_id)), "{location}");
        }
    }

    impossible_key_ids_are_simply_not_found(db) {
        let h = Harness::new(db);
        // A NUL byte would be refused by PostgreSQL's text type; it must never get that far.
        for key_id in ["%00", "a%00b", "a%0Ab", "a%20b", &"k".repeat(300)] {
            for method in [Method::GET, Method::DELETE] {
                let reply = h.call(method.clone(), &format!("{}/{key_id}", keys_path("acme")), Some(&h.admin), None).await;
                assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::NOT_FOUND, "KEY_NOT_FOUND"), "{method} {key_id}");
            }
        }
    }

    revoke_is_final_and_happens_once(db) {
        let h = Harness::new(db);
        assert_eq!(h.register("acme", &inline(ed25519_jwk(60), "my-key-v1")).await.status, StatusCode::CREATED);
        let path = format!("{}/my-key-v1", keys_path("acme"));
        let revoked = h.call(Method::DELETE, &path, Some(&h.admin), None).await;
        assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.raw);
        assert_eq!(revoked.body, json!({"success": true, "keyId": "my-key-v1", "revokedAt": "2026-01-12T10:30:00.000Z", "revokedBy": "admin@acme.test"}));
        let again = h.call(Method::DELETE, &path, Some(&h.admin), None).await;
        assert_eq!((again.status, again.error_code().as_str()), (StatusCode::CONFLICT, "KEY_ALREADY_REVOKED"));
        let never = h.call(Method::DELETE, &format!("{}/never", keys_path("acme")), Some(&h.admin), None).await;
        assert_eq!((never.status, never.error_code().as_str()), (StatusCode::NOT_FOUND, "KEY_NOT_FOUND"));
        let got = h.call(Method::GET, &path, Some(&h.admin), None).await;
        assert_eq!((got.body["status"].as_str(), got.body["revokedBy"].as_str()), (Some("REVOKED"), Some("admin@acme.test")));
    }

    concurrent_revokes_give_one_200(db) {
        let h = std::sync::Arc::new(Harness::new(db));
        assert_eq!(h.register("acme", &inline(ed25519_jwk(61), "k")).await.status, StatusCode::CREATED);
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                h.call(Method::DELETE, &format!("{BASE}/acme/webhooks/keys/k"), Some(&h.admin), None).await.status
            }));
        }
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(task.await.expect("task"));
        }
        assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1);
        assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count(), 15);
    }

    enterprises_are_isolated(db) {
        let h = Harness::new(db);
        assert_eq!(h.register("acme", &inline(ed25519_jwk(70), "shared-id")).await.status, StatusCode::CREATED);
        assert_eq!(h.register("globex", &inline(ed25519_jwk(71), "shared-id")).await.status, StatusCode::CREATED);
        // The globex admin cannot list, get or revoke acme's keys.
        for method in [Method::GET, Method::DELETE] {
            let reply = h.call(method, &format!("{}/shared-id", keys_path("acme")), Some(&h.outsider), None).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN);
        }
        let list = h.call(Method::GET, &keys_path("acme"), Some(&h.outsider), None).await;
        assert_eq!(list.status, StatusCode::FORBIDDEN);
        // Each sees only its own.
        let own = h.call(Method::GET, &keys_path("globex"), Some(&h.outsider), None).await;
        assert_eq!(own.body["total"], 1);
        assert_eq!(own.body["keys"][0]["createdBy"], "admin@globex.test");
        assert_eq!(h.call(Method::DELETE, &format!("{}/shared-id", keys_path("globex")), Some(&h.outsider), None).await.status, StatusCode::OK);
        let acme_key = h.call(Method::GET, &format!("{}/shared-id", keys_path("acme")), Some(&h.admin), None).await;
        assert_eq!(acme_key.body["status"], "ACTIVE");
    }

    audit_trail_follows_the_requests(db) {
        let h = Harness::new(db);
        let req = |id: &'static str| id;
        let send = |body: serde_json::Value, rid: &'static str| {
            let h = &h;
            async move {
                h.client.post(keys_path("acme")).header("authorization", format!("Bearer {}", h.admin)).header("x-request-id", rid).content_type("application/json").body(body.to_string()).send().await.0.status()
            }
        };
        assert_eq!(send(inline(ed25519_jwk(80), "a"), req("r1")).await, StatusCode::CREATED);
        assert_eq!(send(inline(ed25519_jwk(81), "a"), req("r2")).await, StatusCode::BAD_REQUEST);
        assert_eq!(send(inline(ed25519_jwk(80), "b"), req("r3")).await, StatusCode::CONFLICT);
        let revoke = h.client.delete(format!("{}/a", keys_path("acme"))).header("authorization", format!("Bearer {}", h.admin)).header("x-request-id", "r4").send().await;
        revoke.assert_status_is_ok();
        let events = h.admin_service.audit("acme", None).expect("audit");
        let seen: Vec<(&str, &str, &str, &str)> = events.iter().map(|e| (e.action.as_str(), e.key_id.as_str(), e.outcome.as_str(), e.request_id.as_str())).collect();
        assert_eq!(seen, [
            ("REGISTER", "a", "OK", "r1"),
            ("REGISTER", "a", "KEY_ID_ALREADY_USED", "r2"),
            ("REGISTER", "b", "KEY_ALREADY_REGISTERED", "r3"),
            ("REVOKE", "a", "OK", "r4"),
        ]);
        assert!(events.iter().all(|e| e.actor == "admin@acme.test"));
        assert!(h.admin_service.audit("globex", None).expect("audit").is_empty());
    }
}
