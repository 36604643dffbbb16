//! Authentication, authorization and the error shape, over HTTP on both backends.

mod common;

use common::*;
use keyward_persistence::testing::TestDb;
use poem::http::{Method, StatusCode};
use serde_json::json;

fn keys_path(enterprise: &str) -> String {
    format!("{BASE}/{enterprise}/webhooks/keys")
}

/// `token` with the last character of its secret changed: same token id, wrong secret.
fn forged(token: &str) -> String {
    let mut forged = token.to_owned();
    let last = forged.pop();
    forged.push(if last == Some('A') { 'B' } else { 'A' });
    forged
}

on_both_backends! {
    unauthenticated_comes_first(db) {
        let h = Harness::new(db);
        let bad_body = Some("{not json");
        for token in [None, Some("nope"), Some("kw_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")] {
            for (method, path, body) in [
                (Method::POST, keys_path("acme"), bad_body),
                (Method::POST, keys_path("no-such-enterprise"), bad_body),
                (Method::GET, format!("{}?limit=1000", keys_path("acme")), None),
                (Method::GET, format!("{}/k", keys_path("acme")), None),
                (Method::DELETE, format!("{}/k", keys_path("acme")), None),
            ] {
                let reply = h.call(method.clone(), &path, token, body).await;
                assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"), "{method} {path} {token:?}");
                assert_eq!(reply.headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
            }
        }
        // A non-bearer scheme is no better.
        let resp = h.client.get(keys_path("acme")).header("authorization", "Basic YTpi").send().await;
        resp.assert_status(StatusCode::UNAUTHORIZED);
    }

    expired_and_revoked_tokens_are_refused(db) {
        let h = Harness::new(db);
        let issued = h.admin_service.issue_token("admin@acme.test", Some(60), [9; 40]).expect("token");
        let ok = h.call(Method::GET, &keys_path("acme"), Some(&issued.token), None).await;
        assert_eq!(ok.status, StatusCode::OK);
        h.clock.set(1_768_213_800_000 + 60_000);
        let expired = h.call(Method::GET, &keys_path("acme"), Some(&issued.token), None).await;
        assert_eq!(expired.error_code(), "UNAUTHENTICATED");
        h.clock.set(1_768_213_800_000);
        h.admin_service.revoke_token(&format!("kw_{}", issued.id)).expect("revoke");
        let revoked = h.call(Method::GET, &keys_path("acme"), Some(&issued.token), None).await;
        assert_eq!(revoked.error_code(), "UNAUTHENTICATED");
        // A token with a valid id but another secret is refused.
        let reply = h.call(Method::GET, &keys_path("acme"), Some(&forged(&h.admin)), None).await;
        assert_eq!(reply.error_code(), "UNAUTHENTICATED");
    }

    a_reused_grant_ends_with_the_next_epoch_or_the_bound(db) {
        // In service, a grant read from the database is reused while the server has
        // recently seen the auth epoch, which every revocation bumps.
        let h = Harness::with_options(db, Options { grant_cache_millis: 150, ..Options::default() });
        let issued = h.admin_service.issue_token("admin@acme.test", None, [7; 40]).expect("token");
        h.keys.observe_auth_epoch().expect("epoch");
        let ok = h.call(Method::GET, &keys_path("acme"), Some(&issued.token), None).await;
        assert_eq!(ok.status, StatusCode::OK);
        h.admin_service.revoke_token(&format!("kw_{}", issued.id)).expect("revoke");
        let within = h.call(Method::GET, &keys_path("acme"), Some(&issued.token), None).await;
        assert_eq!(within.status, StatusCode::OK, "reused until the new epoch is seen");
        // The bearer's secret is still checked on every request.
        let reply = h.call(Method::GET, &keys_path("acme"), Some(&forged(&issued.token)), None).await;
        assert_eq!(reply.error_code(), "UNAUTHENTICATED");
        h.keys.observe_auth_epoch().expect("epoch");
        let after = h.call(Method::GET, &keys_path("acme"), Some(&issued.token), None).await;
        assert_eq!(after.error_code(), "UNAUTHENTICATED", "refused once the new epoch is seen");

        // Without a recent observation nothing is reused.
        let other = h.admin_service.issue_token("admin@acme.test", None, [8; 40]).expect("token");
        let ok = h.call(Method::GET, &keys_path("acme"), Some(&other.token), None).await;
        assert_eq!(ok.status, StatusCode::OK);
        h.admin_service.revoke_token(&format!("kw_{}", other.id)).expect("revoke");
        h.clock.set(1_768_213_800_000 + 150);
        let stale = h.call(Method::GET, &keys_path("acme"), Some(&other.token), None).await;
        assert_eq!(stale.error_code(), "UNAUTHENTICATED", "refused once the bound has passed");
    }

    a_new_membership_is_honoured_once_the_next_epoch_is_seen(db) {
        // A refusal is reused like a grant: adding the membership must retire it as a
        // role change would, or the new member stays refused.
        let h = Harness::with_options(db, Options { grant_cache_millis: 150, ..Options::default() });
        h.keys.observe_auth_epoch().expect("epoch");
        let before = h.call(Method::GET, &keys_path("globex"), Some(&h.admin), None).await;
        assert_eq!(before.error_code(), "FORBIDDEN");
        h.admin_service.add_member("globex", "admin@acme.test", "admin").expect("member");
        h.keys.observe_auth_epoch().expect("epoch");
        let after = h.call(Method::GET, &keys_path("globex"), Some(&h.admin), None).await;
        assert_eq!(after.status, StatusCode::OK, "{:?}", after.body);
    }

    a_grant_read_along_with_another_is_decided_as_if_read_alone(db) {
        // Reading acme's grant brings along the holder's membership in globex (which
        // follows it): only an admin role there lets the token in.
        let h = Harness::with_options(db, Options { grant_cache_millis: 150, ..Options::default() });
        h.admin_service.add_member("globex", "admin@acme.test", "member").expect("member");
        h.keys.observe_auth_epoch().expect("epoch");
        let acme = h.call(Method::GET, &keys_path("acme"), Some(&h.admin), None).await;
        assert_eq!(acme.status, StatusCode::OK);
        let globex = h.call(Method::GET, &keys_path("globex"), Some(&h.admin), None).await;
        assert_eq!(globex.error_code(), "FORBIDDEN", "a member of globex is not its admin");
        h.admin_service.add_member("globex", "admin@acme.test", "admin").expect("admin");
        h.keys.observe_auth_epoch().expect("epoch");
        let acme = h.call(Method::GET, &keys_path("acme"), Some(&h.admin), None).await;
        assert_eq!(acme.status, StatusCode::OK);
        let globex = h.call(Method::GET, &keys_path("globex"), Some(&h.admin), None).await;
        assert_eq!(globex.status, StatusCode::OK, "promoted to admin of globex");
        // The bearer's secret is checked on a brought-along grant too.
        let reply = h.call(Method::GET, &keys_path("globex"), Some(&forged(&h.admin)), None).await;
        assert_eq!(reply.error_code(), "UNAUTHENTICATED");
    }

    forbidden_comes_before_body_validation_and_hides_enterprises(db) {
        let h = Harness::new(db);
        let bad_body = Some("{not json");
        for (token, path) in [
            (h.member.clone(), keys_path("acme")),
            (h.outsider.clone(), keys_path("acme")),
            (h.admin.clone(), keys_path("globex")),
            (h.admin.clone(), keys_path("no-such-enterprise")),
            (h.admin.clone(), keys_path(&"x".repeat(65))),
            (h.admin.clone(), keys_path("bad%20id")),
        ] {
            let reply = h.call(Method::POST, &path, Some(&token), bad_body).await;
            assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::FORBIDDEN, "FORBIDDEN"), "{path}");
            let reply = h.call(Method::GET, &format!("{path}?limit=0"), Some(&token), None).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
        }
        // The same message whether the enterprise exists or not.
        let exists = h.call(Method::GET, &keys_path("globex"), Some(&h.admin), None).await;
        let missing = h.call(Method::GET, &keys_path("nowhere"), Some(&h.admin), None).await;
        assert_eq!(exists.body, missing.body);
    }

    framework_errors_use_the_error_shape(db) {
        let h = Harness::new(db);
        let admin = Some(h.admin.as_str());
        let malformed = h.call(Method::POST, &keys_path("acme"), admin, Some("{\"jwks\": ")).await;
        assert_eq!((malformed.status, malformed.error_code().as_str()), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));
        let empty = h.call(Method::POST, &keys_path("acme"), admin, Some("")).await;
        assert_eq!(empty.error_code(), "INVALID_REQUEST");
        let not_json = h.client.post(keys_path("acme")).header("authorization", format!("Bearer {}", h.admin)).header("content-type", "text/plain").body("hello").send().await;
        not_json.assert_status(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        not_json.assert_json(json!({"code": "UNSUPPORTED_MEDIA_TYPE", "message": "send the body as JSON with 'Content-Type: application/json'", "status": 415})).await;
        let no_type = h.client.post(keys_path("acme")).header("authorization", format!("Bearer {}", h.admin)).body("{}").send().await;
        no_type.assert_status(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let unknown = h.call(Method::GET, "/api/policy/v1/nothing-here", admin, None).await;
        assert_eq!((unknown.status, unknown.error_code().as_str()), (StatusCode::NOT_FOUND, "NOT_FOUND"));
        let method = h.call(Method::PUT, &keys_path("acme"), admin, Some("{}")).await;
        assert_eq!((method.status, method.error_code().as_str()), (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"));
        assert_eq!(method.headers.get("allow").and_then(|v| v.to_str().ok()), Some("GET, POST"));
        let trace = h.call(Method::TRACE, &format!("{BASE}/acme/webhooks/responses/verify"), admin, None).await;
        assert_eq!(trace.headers.get("allow").and_then(|v| v.to_str().ok()), Some("POST"));
        let big = format!("{{\"keyName\": \"{}\"}}", "a".repeat(70_000));
        let too_large = h.call(Method::POST, &keys_path("acme"), admin, Some(&big)).await;
        assert_eq!((too_large.status, too_large.error_code().as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"));
        for (query, says) in [
            ("limit=0", "'limit' must be a whole number from 1 to 100"),
            ("limit=101", "'limit' must be a whole number from 1 to 100"),
            ("limit=abc", "'limit' must be a whole number from 1 to 100"),
            ("limit=99999999999999999999", "'limit' must be a whole number from 1 to 100"),
            ("prevId=-1", "'prevId' must be a whole number, 0 or more"),
            ("prevId=1.5", "'prevId' must be a whole number, 0 or more"),
            ("status=DELETED", "'status' must be ACTIVE or REVOKED"),
            ("status=active", "'status' must be ACTIVE or REVOKED"),
        ] {
            let reply = h.call(Method::GET, &format!("{}?{query}", keys_path("acme")), admin, None).await;
            assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"), "{query}");
            let message = reply.body["message"].as_str().unwrap_or_default();
            assert!(message.starts_with(says), "{query}: {message}");
        }
        // The bearer check still comes first.
        let anonymous = h.call(Method::GET, &format!("{}?limit=0", keys_path("acme")), None, None).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    }

    request_ids_are_echoed_or_made(db) {
        let h = Harness::new(db);
        let resp = h.client.get("/healthz").header("x-request-id", "trace-123").send().await;
        resp.assert_header("x-request-id", "trace-123");
        let resp = h.client.get("/nowhere").header("x-request-id", "bad id with spaces").send().await;
        let id = resp.0.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }

    api_responses_are_not_cached(db) {
        let h = Harness::new(db);
        let reply = h.call(Method::GET, &keys_path("acme"), Some(&h.admin), None).await;
        assert_eq!(reply.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    }

    operational_endpoints_answer(db) {
        let h = Harness::new(db);
        h.client.get("/healthz").send().await.assert_status_is_ok();
        let ready = h.client.get("/readyz").send().await;
        ready.assert_status_is_ok();
        ready.assert_json(json!({"status": "ready"})).await;
        let spec = h.client.get("/openapi.json").send().await;
        spec.assert_status_is_ok();
        spec.assert_text(keyward_api::openapi_json()).await;
        let docs = h.client.get("/docs").send().await;
        docs.assert_status_is_ok();
    }
}
