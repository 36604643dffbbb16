//! The client generated from `openapi/openapi.json` (crate `keyward-client`) drives the
//! real service: proof that the document is good enough for a code generator.

mod support;

use keyward_client::types;
use keyward_persistence::testing::TestDb;
use serde_json::json;
use support::{bootstrap, keyward, Server};

#[tokio::test]
async fn the_generated_client_speaks_to_the_service() {
    let db = TestDb::sqlite();
    let url = db.url_string();
    let token = bootstrap(&url);
    let server = Server::start(&url, &[], &[]);
    let dir = std::env::temp_dir().join(format!("keyward-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key_file = dir.join("k.jwk");
    let jwks: serde_json::Value = serde_json::from_str(&keyward(
        &url,
        &[
            "keygen",
            "--alg",
            "ES256",
            "--kid",
            "typed-v1",
            "--out",
            key_file.to_str().expect("path"),
        ],
    ))
    .expect("jwks");

    let client = keyward_client::with_token(&server.url(""), &token).expect("client");
    let request: types::RegisterKeyRequest =
        serde_json::from_value(json!({"jwks": jwks, "keyName": "Typed"})).expect("request type");
    let created = client
        .register_key("acme", &request)
        .await
        .expect("register")
        .into_inner();
    assert_eq!(created.key_id, "typed-v1");
    assert_eq!(created.status, types::KeyStatus::Active);

    let list = client
        .list_keys("acme", None, None, Some(types::KeyStatus::Active))
        .await
        .expect("list")
        .into_inner();
    assert_eq!((list.total, list.keys.len()), (1, 1));
    let detail = client
        .get_key("acme", "typed-v1")
        .await
        .expect("get")
        .into_inner();
    assert!(detail.thumbprint.is_some());

    let jws = keyward(
        &url,
        &[
            "sign",
            "--key",
            key_file.to_str().expect("path"),
            "--evaluation-id",
            "typed-eval",
            "--status-code",
            "200",
        ],
    );
    let body: types::VerifyRequestBody =
        serde_json::from_value(json!({"token": jws, "evaluationId": "typed-eval"}))
            .expect("body type");
    let verdict = client
        .verify_response("acme", &body)
        .await
        .expect("verify")
        .into_inner();
    assert!(verdict.valid);
    assert_eq!(verdict.approved, Some(true));

    // Errors come back typed too.
    match client.register_key("acme", &request).await {
        Err(keyward_client::Error::ErrorResponse(err)) => {
            assert_eq!(err.status().as_u16(), 400);
            assert_eq!(err.into_inner().code, "KEY_ID_ALREADY_USED");
        }
        other => panic!("expected a typed 400, got {other:?}"),
    }
    let revoked = client
        .revoke_key("acme", "typed-v1")
        .await
        .expect("revoke")
        .into_inner();
    assert!(revoked.success);
    match client.revoke_key("acme", "typed-v1").await {
        Err(keyward_client::Error::ErrorResponse(err)) => {
            assert_eq!(err.into_inner().code, "KEY_ALREADY_REVOKED")
        }
        other => panic!("expected a typed 409, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}
