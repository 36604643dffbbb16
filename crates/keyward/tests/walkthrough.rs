//! The README's quick start, as a new integrator runs it: bootstrap through the CLI,
//! `keyward keygen`, register the printed JWKS, `keyward sign`, verify, then rotate to a
//! second key and revoke the first. Once per supported algorithm.

mod support;

use keyward_persistence::testing::TestDb;
use serde_json::{json, Value};
use std::process::Command;

use support::{keyward, Server, BIN};

fn post(url: &str, token: &str, body: &Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(url)
        .header("authorization", &format!("Bearer {token}"))
        .header("content-type", "application/json")
        .send(body.to_string())
        .expect("request");
    (
        resp.status().as_u16(),
        resp.body_mut().read_json().unwrap_or(Value::Null),
    )
}

#[test]
fn quick_start_for_every_algorithm() {
    let db = TestDb::sqlite();
    let url = db.url_string();
    keyward(
        &url,
        &[
            "admin",
            "enterprise",
            "create",
            "acme",
            "--name",
            "Acme Corp",
        ],
    );
    keyward(&url, &["admin", "user", "create", "alice@acme.example"]);
    keyward(
        &url,
        &[
            "admin",
            "member",
            "add",
            "acme",
            "alice@acme.example",
            "--role",
            "admin",
        ],
    );
    let issued = keyward(
        &url,
        &[
            "admin",
            "token",
            "issue",
            "alice@acme.example",
            "--ttl",
            "90d",
        ],
    );
    let token = issued.lines().last().expect("token").to_owned();
    let server = Server::start(&url, &[], &[]);
    let api = server.url("/api/policy/v1/enterprises/acme");
    let dir = std::env::temp_dir().join(format!("keyward-walkthrough-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");

    for alg in ["EdDSA", "ES256", "ES384", "ES256K"] {
        let (v1, v2) = (
            format!("{}-key-v1", alg.to_lowercase()),
            format!("{}-key-v2", alg.to_lowercase()),
        );
        let key1 = dir.join(format!("{v1}.jwk"));
        let public = keyward(
            &url,
            &[
                "keygen",
                "--alg",
                alg,
                "--kid",
                &v1,
                "--out",
                key1.to_str().expect("path"),
            ],
        );
        let jwks: Value = serde_json::from_str(&public).expect("keygen prints a JWKS");
        assert!(
            jwks["keys"][0].get("d").is_none(),
            "the printed JWKS is public"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&key1)
                .expect("key file")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "the private key file is private");
        }
        let (status, body) = post(
            &format!("{}/webhooks/keys", api),
            &token,
            &json!({"jwks": jwks}),
        );
        assert_eq!(status, 201, "{alg}: {body}");

        let evaluation = format!("eval-{alg}-1");
        let jws = keyward(
            &url,
            &[
                "sign",
                "--key",
                key1.to_str().expect("path"),
                "--evaluation-id",
                &evaluation,
                "--status-code",
                "200",
                "--ttl",
                "300",
            ],
        );
        let (_, verdict) = post(
            &format!("{}/webhooks/responses/verify", api),
            &token,
            &json!({"token": jws.trim(), "evaluationId": evaluation}),
        );
        assert_eq!(
            verdict,
            json!({"valid": true, "keyId": v1, "statusCode": 200, "approved": true}),
            "{alg}"
        );

        // Rotate: register v2, confirm it verifies, revoke v1.
        let key2 = dir.join(format!("{v2}.jwk"));
        let public2 = keyward(
            &url,
            &[
                "keygen",
                "--alg",
                alg,
                "--kid",
                &v2,
                "--out",
                key2.to_str().expect("path"),
            ],
        );
        let jwks2: Value = serde_json::from_str(&public2).expect("jwks");
        assert_eq!(
            post(
                &format!("{}/webhooks/keys", api),
                &token,
                &json!({"jwks": jwks2})
            )
            .0,
            201
        );
        let evaluation = format!("eval-{alg}-2");
        let jws2 = keyward(
            &url,
            &[
                "sign",
                "--key",
                key2.to_str().expect("path"),
                "--evaluation-id",
                &evaluation,
                "--status-code",
                "403",
            ],
        );
        let (_, verdict) = post(
            &format!("{}/webhooks/responses/verify", api),
            &token,
            &json!({"token": jws2.trim(), "evaluationId": evaluation}),
        );
        assert_eq!(verdict["approved"], false, "{alg}: {verdict}");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let revoked = agent
            .delete(&format!("{}/webhooks/keys/{v1}", api))
            .header("authorization", &format!("Bearer {token}"))
            .call()
            .expect("revoke");
        assert_eq!(revoked.status().as_u16(), 200);
        let evaluation = format!("eval-{alg}-3");
        let old = keyward(
            &url,
            &[
                "sign",
                "--key",
                key1.to_str().expect("path"),
                "--evaluation-id",
                &evaluation,
                "--status-code",
                "200",
            ],
        );
        let (_, verdict) = post(
            &format!("{}/webhooks/responses/verify", api),
            &token,
            &json!({"token": old.trim(), "evaluationId": evaluation}),
        );
        assert_eq!(verdict["reason"], "KEY_REVOKED", "{alg}");
    }
    // keygen never overwrites a key file.
    let again = Command::new(BIN)
        .args([
            "keygen",
            "--alg",
            "EdDSA",
            "--kid",
            "x",
            "--out",
            dir.join("eddsa-key-v1.jwk").to_str().expect("path"),
        ])
        .output()
        .expect("run");
    assert!(!again.status.success());
    let _ = std::fs::remove_dir_all(dir);
}
