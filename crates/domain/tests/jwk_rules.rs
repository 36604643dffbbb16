//! The JWK rules of the register operation and of the security checklist, through the
//! domain's public API.

use keyward_domain::{Curve, DomainError, InsecureHosts, KeyMaterial, PublicJwk, RegisterKey};
use serde_json::{json, Map, Value};

// RFC 8037 appendix A.2 public key; A.3 gives its thumbprint.
const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const RFC8037_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
// RFC 7515 appendix A.3 P-256 key.
const P256_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const P256_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
// The P-384 public key of the private scalar 12345.
const P384_X: &str = "6GuZXjUOTTEqlaa31djNzbRoL1iIAKHNbJcuHcsqWsONkARpUbA8yzsXmon9qIsb";
const P384_Y: &str = "SFufLB9EsN1Bzm48OmkLv6q-weH_Su-yRh_dpmKb7L1Dz3TBPYwaFiVhIkPwBGFI";
// The secp256k1 generator point, a valid public key.
const K256_X: &str = "eb5mfvncu6xVoGKVzocLBwKb_NstzijZWfKBWxb4F5g";
const K256_Y: &str = "SDradyajxGVdpPv8DhEIqP0XtEimhVQZnEfQj_sQ1Lg";

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("test JWK must be an object"),
    }
}

fn check(v: Value) -> Result<PublicJwk, &'static str> {
    PublicJwk::from_json(&obj(v)).map_err(|e| e.code())
}

fn ed() -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X})
}

fn with(mut base: Value, member: &str, value: Value) -> Value {
    base[member] = value;
    base
}

fn without(mut base: Value, member: &str) -> Value {
    base.as_object_mut().map(|m| m.remove(member));
    base
}

fn all_curves() -> Vec<(Value, Curve, &'static str)> {
    vec![
        (ed(), Curve::Ed25519, "EdDSA"),
        (
            json!({"kty":"EC","crv":"P-256","x":P256_X,"y":P256_Y}),
            Curve::P256,
            "ES256",
        ),
        (
            json!({"kty":"EC","crv":"P-384","x":P384_X,"y":P384_Y}),
            Curve::P384,
            "ES384",
        ),
        (
            json!({"kty":"EC","crv":"secp256k1","x":K256_X,"y":K256_Y}),
            Curve::Secp256k1,
            "ES256K",
        ),
    ]
}

#[test]
fn accepts_each_supported_curve_with_its_algorithm() {
    for (jwk, curve, alg) in all_curves() {
        let key = check(jwk.clone()).unwrap_or_else(|e| panic!("{curve:?}: {e}"));
        assert_eq!(key.curve(), curve);
        assert!(check(with(jwk.clone(), "alg", json!(alg))).is_ok(), "{alg}");
        assert!(check(with(jwk.clone(), "use", json!("sig"))).is_ok());
        assert!(check(with(jwk, "key_ops", json!(["verify"]))).is_ok());
    }
    assert!(check(with(ed(), "alg", json!("Ed25519"))).is_ok());
}

#[test]
fn thumbprint_matches_rfc_8037_and_ignores_optional_members() {
    let plain = check(ed()).expect("RFC 8037 key is valid");
    assert_eq!(plain.thumbprint().as_str(), RFC8037_THUMBPRINT);
    let decorated = check(json!({"kid":"x","use":"sig","alg":"EdDSA","x":RFC8037_X,"crv":"Ed25519","kty":"OKP","extra":1}))
        .expect("decorated key is valid");
    assert_eq!(decorated.thumbprint(), plain.thumbprint());
}

#[test]
fn private_members_are_refused_and_never_echoed() {
    let secret = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    for member in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
        let err = PublicJwk::from_json(&obj(with(ed(), member, json!(secret)))).expect_err(member);
        assert_eq!(err.code(), "PRIVATE_KEY_MATERIAL", "{member}");
        assert!(!err.to_string().contains(secret));
    }
    // Private material wins over every other complaint, even on unsupported key types.
    assert_eq!(
        check(json!({"kty":"RSA","n":"AQAB","e":"AQAB","d":secret})).err(),
        Some("PRIVATE_KEY_MATERIAL")
    );
    assert_eq!(
        check(json!({"kty":"oct","k":secret})).err(),
        Some("PRIVATE_KEY_MATERIAL")
    );
}

#[test]
fn unsupported_key_types_are_refused() {
    for jwk in [
        json!({"kty":"RSA","n":"sXch","e":"AQAB"}),
        json!({"kty":"oct"}),
        json!({"kty":"OKP","crv":"X25519","x":RFC8037_X}),
        json!({"kty":"OKP","crv":"Ed448","x":RFC8037_X}),
        json!({"kty":"EC","crv":"P-521","x":P256_X,"y":P256_Y}),
        json!({"kty":"EC","crv":"brainpoolP256r1","x":P256_X,"y":P256_Y}),
    ] {
        assert_eq!(
            check(jwk.clone()).err(),
            Some("UNSUPPORTED_KEY_TYPE"),
            "{jwk}"
        );
    }
    assert_eq!(check(without(ed(), "kty")).err(), Some("INVALID_JWK"));
    assert_eq!(check(without(ed(), "crv")).err(), Some("INVALID_JWK"));
    assert_eq!(
        check(with(ed(), "kty", json!(1))).err(),
        Some("INVALID_JWK")
    );
}

#[test]
fn coordinates_must_be_canonical_and_of_exact_length() {
    // Padding.
    assert_eq!(
        check(with(ed(), "x", json!(format!("{RFC8037_X}=")))).err(),
        Some("INVALID_JWK")
    );
    // Standard base64 alphabet.
    assert_eq!(
        check(with(ed(), "x", json!(RFC8037_X.replace('_', "/")))).err(),
        Some("INVALID_JWK")
    );
    // Stray low bits in the last character: same bytes, another spelling.
    let mut stray = RFC8037_X.to_string();
    stray.pop();
    stray.push('p'); // 'o' + 1: only the unused low bits differ
    assert_eq!(
        check(with(ed(), "x", json!(stray))).err(),
        Some("INVALID_JWK")
    );
    // Too short (a stripped leading zero byte), too long, empty, not a string.
    assert_eq!(
        check(with(ed(), "x", json!(&RFC8037_X[..42]))).err(),
        Some("INVALID_JWK")
    );
    assert_eq!(
        check(with(ed(), "x", json!(format!("{RFC8037_X}AAAA")))).err(),
        Some("INVALID_JWK")
    );
    assert_eq!(check(with(ed(), "x", json!(""))).err(), Some("INVALID_JWK"));
    assert_eq!(check(with(ed(), "x", json!(12))).err(), Some("INVALID_JWK"));
    assert_eq!(check(without(ed(), "x")).err(), Some("INVALID_JWK"));
    let p256 = json!({"kty":"EC","crv":"P-256","x":P256_X,"y":P256_Y});
    assert_eq!(check(without(p256.clone(), "y")).err(), Some("INVALID_JWK"));
    // 31 bytes: the form a careless encoder produces when x starts with a zero byte.
    assert_eq!(
        check(with(
            p256.clone(),
            "x",
            json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        ))
        .err(),
        Some("INVALID_JWK")
    );
    // P-384 coordinates on a P-256 key.
    assert_eq!(
        check(with(with(p256, "x", json!(P384_X)), "y", json!(P384_Y))).err(),
        Some("INVALID_JWK")
    );
    // An OKP key carries no y.
    assert_eq!(
        check(with(ed(), "y", json!(RFC8037_X))).err(),
        Some("INVALID_JWK")
    );
}

#[test]
fn points_must_be_on_the_curve() {
    for (jwk, curve, _) in all_curves() {
        if curve == Curve::Ed25519 {
            continue;
        }
        // Flip the last byte of y: almost surely off the curve.
        let y = jwk["y"].as_str().expect("y").to_string();
        let mut bytes: Vec<char> = y.chars().collect();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == 'A' { 'B' } else { 'A' };
        let bad: String = bytes.into_iter().collect();
        assert_eq!(
            check(with(jwk, "y", json!(bad))).err(),
            Some("INVALID_JWK"),
            "{curve:?}"
        );
    }
}

#[test]
fn weak_and_undecodable_ed25519_points_are_refused() {
    // Identity (y = 1), and the order-2 point (y = -1), both small order.
    let identity = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let order_two = "7P___________________________________________3";
    let order_two = &order_two[..43];
    assert_eq!(
        check(with(ed(), "x", json!(identity))).err(),
        Some("INVALID_JWK")
    );
    assert_eq!(
        check(with(ed(), "x", json!(order_two))).err(),
        Some("INVALID_JWK")
    );
    // y = 2 does not decompress to a point.
    assert_eq!(
        check(with(
            ed(),
            "x",
            json!("AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        ))
        .err(),
        Some("INVALID_JWK")
    );
    // Non-canonical encoding of y = 1 (y + p).
    assert_eq!(
        check(with(
            ed(),
            "x",
            json!("7v___________________________________________38"[..43].to_string())
        ))
        .err(),
        Some("INVALID_JWK")
    );
}

/// A valid key's y written as y + p decodes to the same point, so accepting it would
/// give the key a second thumbprint (and dodge its tombstone).
#[test]
fn ed25519_key_in_a_non_canonical_encoding_is_refused() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let x = |bytes: [u8; 32]| json!(URL_SAFE_NO_PAD.encode(bytes));
    let mut tried = 0;
    // y from 3 to 18: y + p (p = 2^255 - 19) still fits in 255 bits.
    for y in 3u8..=18 {
        let mut canonical = [0u8; 32];
        canonical[0] = y;
        if check(with(ed(), "x", x(canonical))).is_err() {
            continue; // not a point, or one of small order
        }
        let mut plus_p = [0xffu8; 32];
        plus_p[0] = 0xed + y;
        plus_p[31] = 0x7f;
        assert_eq!(
            check(with(ed(), "x", x(plus_p))).err(),
            Some("INVALID_JWK"),
            "y = {y} + p"
        );
        // The sign bit set on the same y names the other point with that y, a key of
        // its own, not another encoding.
        canonical[31] |= 0x80;
        assert!(
            check(with(ed(), "x", x(canonical))).is_ok(),
            "y = {y}, x < 0"
        );
        tried += 1;
    }
    assert!(tried > 0, "no y from 3 to 18 is a valid key");
}

#[test]
fn alg_use_and_key_ops_must_fit() {
    for (jwk, curve, _) in all_curves() {
        for alg in ["none", "HS256", "RS256", "ES512", "PS256"] {
            assert_eq!(
                check(with(jwk.clone(), "alg", json!(alg))).err(),
                Some("ALGORITHM_MISMATCH"),
                "{curve:?} {alg}"
            );
        }
    }
    let p256 = all_curves()[1].0.clone();
    assert_eq!(
        check(with(p256.clone(), "alg", json!("ES384"))).err(),
        Some("ALGORITHM_MISMATCH")
    );
    assert_eq!(
        check(with(p256.clone(), "alg", json!("ES256K"))).err(),
        Some("ALGORITHM_MISMATCH")
    );
    assert_eq!(
        check(with(p256, "alg", json!("EdDSA"))).err(),
        Some("ALGORITHM_MISMATCH")
    );
    assert_eq!(
        check(with(ed(), "alg", json!("ES256"))).err(),
        Some("ALGORITHM_MISMATCH")
    );
    assert_eq!(
        check(with(ed(), "use", json!("enc"))).err(),
        Some("INVALID_JWK")
    );
    assert_eq!(
        check(with(ed(), "use", json!(1))).err(),
        Some("INVALID_JWK")
    );
    for ops in [
        json!(["sign"]),
        json!(["verify", "verify"]),
        json!(["verify", "sign"]),
        json!([]),
        json!("verify"),
    ] {
        assert_eq!(
            check(with(ed(), "key_ops", ops.clone())).err(),
            Some("INVALID_JWK"),
            "{ops}"
        );
    }
    for cert in ["x5c", "x5u", "x5t", "x5t#S256"] {
        assert_eq!(
            check(with(ed(), cert, json!("AAAA"))).err(),
            Some("INVALID_JWK"),
            "{cert}"
        );
    }
}

#[test]
fn canonical_form_keeps_only_public_members() {
    let key =
        check(json!({"kty":"OKP","crv":"Ed25519","x":RFC8037_X,"kid":"k1","extra":"dropped"}))
            .expect("valid");
    assert_eq!(
        key.to_canonical_json(),
        format!(r#"{{"crv":"Ed25519","kid":"k1","kty":"OKP","x":"{RFC8037_X}"}}"#)
    );
    let back = PublicJwk::from_stored(&key.to_canonical_json()).expect("stored form parses");
    assert_eq!(back, key);
}

fn register(body: Value) -> Result<RegisterKey, DomainError> {
    RegisterKey::from_body(body.to_string().as_bytes(), &InsecureHosts::default())
}

fn code(body: Value) -> Option<&'static str> {
    register(body).err().map(|e| e.code())
}

#[test]
fn register_body_rules() {
    let jwks = json!({"keys": [ed()]});
    assert_eq!(
        code(json!({"jwks": jwks, "jwksUri": "https://example.com/j", "keyId": "k"})),
        Some("INVALID_REQUEST")
    );
    assert_eq!(code(json!({"keyId": "k"})), Some("INVALID_REQUEST"));
    assert_eq!(
        code(json!({"jwks": jwks, "keyId": "k", "surprise": 1})),
        Some("INVALID_REQUEST")
    );
    assert_eq!(
        code(json!({"jwks": jwks, "keyId": 5})),
        Some("INVALID_REQUEST")
    );
    assert_eq!(
        code(json!({"jwks": jwks, "keyId": "k", "keyName": "n".repeat(256)})),
        Some("INVALID_REQUEST")
    );
    assert_eq!(code(json!([1])), Some("INVALID_REQUEST"));
    assert_eq!(
        code(json!({"jwks": {"keys": []}, "keyId": "k"})),
        Some("INVALID_JWKS")
    );
    assert_eq!(
        code(json!({"jwks": {"keys": [ed(), ed()]}, "keyId": "k"})),
        Some("INVALID_JWKS")
    );
    assert_eq!(
        code(json!({"jwks": {"key": [ed()]}, "keyId": "k"})),
        Some("INVALID_JWKS")
    );
    assert_eq!(
        code(json!({"jwks": [ed()], "keyId": "k"})),
        Some("INVALID_JWKS")
    );
    assert_eq!(
        code(json!({"jwks": {"keys": ["x"]}, "keyId": "k"})),
        Some("INVALID_JWK")
    );
    assert_eq!(code(json!({"jwks": jwks})), Some("KEY_ID_REQUIRED"));
    assert_eq!(
        code(json!({"jwks": {"keys": [with(ed(), "kid", json!("a"))]}, "keyId": "b"})),
        Some("KEY_ID_MISMATCH")
    );
    assert_eq!(
        code(json!({"jwks": {"keys": [with(ed(), "kid", json!("a b"))]}})),
        Some("INVALID_KEY_ID")
    );
    assert_eq!(
        code(json!({"jwks": jwks, "keyId": "a/b"})),
        Some("INVALID_KEY_ID")
    );
    assert_eq!(
        code(json!({"jwks": jwks, "keyId": "k".repeat(256)})),
        Some("INVALID_KEY_ID")
    );
    assert_eq!(
        code(json!({"jwksUri": "https://example.com/jwks.json"})),
        Some("KEY_ID_REQUIRED")
    );
    assert_eq!(
        code(json!({"jwksUri": "http://example.com/jwks.json", "keyId": "k"})),
        Some("INVALID_JWKS_URI")
    );
    assert_eq!(
        code(json!({"jwksUri": 7, "keyId": "k"})),
        Some("INVALID_REQUEST")
    );
}

#[test]
fn register_derives_key_id_and_name() {
    let from_kid = register(json!({"jwks": {"keys": [with(ed(), "kid", json!("my-key-v1"))]}}))
        .expect("valid");
    assert_eq!(from_kid.key_id.as_str(), "my-key-v1");
    assert_eq!(from_kid.key_name.as_str(), "my-key-v1");
    let both = register(
        json!({"jwks": {"keys": [with(ed(), "kid", json!("k"))]}, "keyId": "k", "keyName": "Prod"}),
    )
    .expect("valid");
    assert_eq!(both.key_name.as_str(), "Prod");
    let body_only = register(json!({"jwks": {"keys": [ed()]}, "keyId": "body-id"})).expect("valid");
    match body_only.material {
        KeyMaterial::Inline(jwk) => assert_eq!(jwk.kid(), Some("body-id")),
        KeyMaterial::Uri(_) => panic!("inline expected"),
    }
    let uri = register(
        json!({"jwksUri": "https://example.com/jwks.json", "keyId": "remote", "jwks": null}),
    )
    .expect("valid");
    assert!(matches!(uri.material, KeyMaterial::Uri(_)));
}

#[test]
fn a_repeated_member_is_refused_where_it_is() {
    let body = format!(
        r#"{{"jwks":{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{RFC8037_X}","x":"{RFC8037_X}"}}]}},"keyId":"k"}}"#
    );
    let err =
        RegisterKey::from_body(body.as_bytes(), &InsecureHosts::default()).expect_err("duplicate");
    assert_eq!(err.code(), "INVALID_JWK");
    let body = r#"{"keyId":"a","keyId":"b","jwksUri":"https://example.com/j"}"#;
    let err =
        RegisterKey::from_body(body.as_bytes(), &InsecureHosts::default()).expect_err("duplicate");
    assert_eq!(err.code(), "INVALID_REQUEST");
    let err = RegisterKey::from_body(b"{not json", &InsecureHosts::default()).expect_err("syntax");
    assert_eq!(err.code(), "INVALID_REQUEST");
}
