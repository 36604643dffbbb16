//! Properties over generated inputs: keys survive their canonical form, thumbprints
//! ignore member order and extra members, and no changed byte makes a token verify.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keyward_domain::crypto::VerifyingKey;
use keyward_domain::json::parse_strict;
use keyward_domain::verify::parse;
use keyward_domain::{PublicJwk, Timestamp};
use proptest::prelude::*;
use serde_json::{json, Value};

fn ed25519_public(secret: [u8; 32]) -> Value {
    let key = ed25519_dalek::SigningKey::from_bytes(&secret);
    json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes())})
}

fn p256_public(secret: [u8; 32]) -> Option<Value> {
    let key = p256::SecretKey::from_slice(&secret).ok()?;
    let point =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&key.public_key(), false);
    Some(json!({
        "kty": "EC", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(point.x()?),
        "y": URL_SAFE_NO_PAD.encode(point.y()?),
    }))
}

fn validated(jwk: &Value) -> PublicJwk {
    PublicJwk::from_json(jwk.as_object().expect("object")).expect("a generated key is valid")
}

/// The members of `jwk` plus `extra`, written in the order `order` gives.
fn reordered(jwk: &Value, extra: &[(String, String)], order: &[usize]) -> String {
    let mut members: Vec<String> = jwk
        .as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| format!("{}:{}", json!(k), v))
        .collect();
    members.extend(
        extra
            .iter()
            .map(|(k, v)| format!("{}:{}", json!(format!("ext_{k}")), json!(v))),
    );
    let mut ordered: Vec<(usize, String)> = members.into_iter().enumerate().collect();
    ordered.sort_by_key(|(i, _)| order.get(*i).copied().unwrap_or(*i));
    format!(
        "{{{}}}",
        ordered
            .into_iter()
            .map(|(_, m)| m)
            .collect::<Vec<_>>()
            .join(",")
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn keys_survive_their_canonical_form(secret in any::<[u8; 32]>(), kid in "[a-z0-9-]{1,20}") {
        let mut keys = vec![ed25519_public(secret)];
        keys.extend(p256_public(secret));
        for jwk in keys {
            let key = validated(&jwk).with_kid(&kid);
            let back = PublicJwk::from_stored(&key.to_canonical_json()).expect("stored form parses");
            prop_assert_eq!(&back, &key);
            prop_assert_eq!(back.thumbprint(), key.thumbprint());
        }
    }

    #[test]
    fn thumbprints_ignore_member_order_and_extra_members(
        secret in any::<[u8; 32]>(),
        extra in proptest::collection::vec(("[a-z]{1,8}", "[ -~]{0,12}"), 0..4),
        order in proptest::collection::vec(0usize..16, 8),
        kid in "[a-z0-9]{1,12}",
    ) {
        let mut keys = vec![ed25519_public(secret)];
        keys.extend(p256_public(secret));
        for jwk in keys {
            let plain = validated(&jwk).thumbprint();
            let mut decorated = jwk.clone();
            decorated["kid"] = json!(kid);
            decorated["use"] = json!("sig");
            let text = reordered(&decorated, &extra, &order);
            let Ok(Value::Object(map)) = parse_strict(text.as_bytes()) else {
                // Two extra members with one name: refused, which is right too.
                continue;
            };
            let key = PublicJwk::from_json(&map).expect("still valid");
            prop_assert_eq!(key.thumbprint(), plain.clone());
        }
    }

    #[test]
    fn a_changed_byte_never_verifies(secret in any::<[u8; 32]>(), position in any::<usize>(), flip in 1u8..=255) {
        use ed25519_dalek::Signer as _;
        let signer = ed25519_dalek::SigningKey::from_bytes(&secret);
        let jwk = validated(&ed25519_public(secret));
        let key = VerifyingKey::from_jwk(&jwk).expect("key");
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "EdDSA", "kid": "k"}).to_string());
        let claims = URL_SAFE_NO_PAD.encode(json!({"evaluationId": "e", "statusCode": 200, "iat": 1_768_213_800}).to_string());
        let input = format!("{header}.{claims}");
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signer.sign(input.as_bytes()).to_bytes()));
        let good = parse(&token).expect("parses");
        prop_assert!(good.verify_signature(jwk.curve(), &key).is_ok());

        let mut bytes = token.into_bytes();
        let at = position % bytes.len();
        bytes[at] ^= flip;
        let Ok(changed) = String::from_utf8(bytes) else { return Ok(()) };
        let now = Timestamp::from_millis(1_768_213_800_000);
        let accepted = parse(&changed)
            .and_then(|t| t.verify_signature(jwk.curve(), &key).map(|()| t))
            .and_then(|t| t.check_claims("e", now, 300));
        // Strict base64url leaves no spare bits to flip, so every change is refused.
        prop_assert!(accepted.is_err(), "a changed token verified (byte {})", at);
    }
}
