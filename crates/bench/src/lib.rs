//! Shared pieces of keyward's benchmarks: a signing key per curve, tokens signed with it,
//! and the raw signature check each curve is measured against.
//!
//! The raw check is one verify call on a pre-parsed key over the token's own signing
//! input, with the crate keyward uses for that curve (chosen by measuring: see
//! docs/performance.md). Everything keyward adds on top (token parsing, key lookup,
//! claims) is what the in-process ratio measures.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

pub mod http;
pub mod inproc;
pub mod load;
pub mod node;
pub mod report;
pub mod scale;

/// Seconds since the benchmark started (for lining up phases with a profiler).
pub fn since_start() -> f64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
}

/// The four signature curves keyward verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    Ed25519,
    P256,
    P384,
    Secp256k1,
}

impl Curve {
    pub const ALL: [Curve; 4] = [Curve::Ed25519, Curve::P256, Curve::P384, Curve::Secp256k1];

    pub fn alg(self) -> &'static str {
        match self {
            Self::Ed25519 => "EdDSA",
            Self::P256 => "ES256",
            Self::P384 => "ES384",
            Self::Secp256k1 => "ES256K",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Ed25519 => "Ed25519",
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::Secp256k1 => "secp256k1",
        }
    }
}

/// A private key of one curve, deterministic from a seed so runs are comparable.
pub enum SigningKey {
    Ed25519(ed25519_dalek::SigningKey),
    P256(aws_lc_rs::signature::EcdsaKeyPair),
    P384(aws_lc_rs::signature::EcdsaKeyPair),
    Secp256k1(k256::ecdsa::SigningKey),
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A 32-byte scalar that is valid on every curve used here (well below each order).
fn scalar(seed: u64) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[1] = 0x42;
    bytes[24..].copy_from_slice(&seed.wrapping_add(1).to_be_bytes());
    bytes
}

impl SigningKey {
    pub fn new(curve: Curve, seed: u64) -> Self {
        use aws_lc_rs::signature::{
            EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
        };
        let secret = scalar(seed);
        let ecdsa = |alg, secret: &[u8], public_len: usize| {
            // The private scalar and its public point, in aws-lc's own key format.
            let public = aws_lc_rs::agreement::PrivateKey::from_private_key(
                if public_len == 65 {
                    &aws_lc_rs::agreement::ECDH_P256
                } else {
                    &aws_lc_rs::agreement::ECDH_P384
                },
                secret,
            )
            .ok()
            .and_then(|k| k.compute_public_key().ok())
            .expect("a valid scalar");
            EcdsaKeyPair::from_private_key_and_public_key(alg, secret, public.as_ref())
                .expect("a valid key pair")
        };
        match curve {
            Curve::Ed25519 => Self::Ed25519(ed25519_dalek::SigningKey::from_bytes(&secret)),
            Curve::P256 => Self::P256(ecdsa(&ECDSA_P256_SHA256_FIXED_SIGNING, &secret, 65)),
            Curve::P384 => {
                let mut long = [0u8; 48];
                long[16..].copy_from_slice(&secret);
                Self::P384(ecdsa(&ECDSA_P384_SHA384_FIXED_SIGNING, &long, 97))
            }
            Curve::Secp256k1 => Self::Secp256k1(
                k256::ecdsa::SigningKey::from_slice(&secret).expect("a valid scalar"),
            ),
        }
    }

    pub fn curve(&self) -> Curve {
        match self {
            Self::Ed25519(_) => Curve::Ed25519,
            Self::P256(_) => Curve::P256,
            Self::P384(_) => Curve::P384,
            Self::Secp256k1(_) => Curve::Secp256k1,
        }
    }

    /// The public key as SEC1 uncompressed point, or the 32 Ed25519 bytes.
    pub fn public_bytes(&self) -> Vec<u8> {
        use aws_lc_rs::signature::KeyPair as _;
        match self {
            Self::Ed25519(key) => key.verifying_key().to_bytes().to_vec(),
            Self::P256(key) | Self::P384(key) => key.public_key().as_ref().to_vec(),
            Self::Secp256k1(key) => key.verifying_key().to_sec1_point(false).as_bytes().to_vec(),
        }
    }

    /// The public JWK, as an enterprise would register it.
    pub fn public_jwk(&self) -> Value {
        let public = self.public_bytes();
        match self.curve() {
            Curve::Ed25519 => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&public)}),
            curve => {
                let half = (public.len() - 1) / 2;
                json!({
                    "kty": "EC",
                    "crv": curve.name(),
                    "x": b64(&public[1..1 + half]),
                    "y": b64(&public[1 + half..]),
                })
            }
        }
    }

    /// A JWS signature (raw `r‖s` for ECDSA) of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::Ed25519(key) => {
                use ed25519_dalek::Signer as _;
                key.sign(message).to_bytes().to_vec()
            }
            Self::P256(key) | Self::P384(key) => key
                .sign(&aws_lc_rs::rand::SystemRandom::new(), message)
                .expect("signing works")
                .as_ref()
                .to_vec(),
            Self::Secp256k1(key) => {
                use k256::ecdsa::signature::Signer as _;
                let signature: k256::ecdsa::Signature = key.sign(message);
                signature.to_bytes().to_vec()
            }
        }
    }

    /// A compact JWS answering `evaluation_id` with 200, issued at `iat`.
    pub fn token(&self, kid: &str, evaluation_id: &str, iat: i64) -> String {
        let header = json!({"alg": self.curve().alg(), "kid": kid, "typ": "JWT"});
        let claims = json!({"evaluationId": evaluation_id, "statusCode": 200, "iat": iat});
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&signature))
    }
}

/// The raw check a token is measured against: one verify call of the curve's fastest
/// crate on a key parsed beforehand (ed25519-dalek's at the stack offset where it is
/// fastest).
pub enum RawVerifier {
    Ed25519(ed25519_dalek::VerifyingKey),
    AwsLc(aws_lc_rs::signature::ParsedPublicKey),
    Secp256k1(k256::ecdsa::VerifyingKey),
}

impl RawVerifier {
    /// For Ed25519, where `ed25519-dalek` is ahead on some processors and `aws-lc-rs` on
    /// others, the faster on this machine for `input` (alternating batches of each for
    /// about `choose`, each judged by its median batch).
    pub fn new(key: &SigningKey, input: &RawInput, choose: std::time::Duration) -> Self {
        use aws_lc_rs::signature::{
            ParsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519,
        };
        let public = key.public_bytes();
        match key.curve() {
            Curve::Ed25519 => {
                let dalek = Self::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&public.try_into().expect("32 bytes"))
                        .expect("a valid key"),
                );
                let aws_lc = Self::AwsLc(
                    ParsedPublicKey::new(&ED25519, key.public_bytes()).expect("a valid key"),
                );
                let batch = |raw: &Self| {
                    let start = std::time::Instant::now();
                    for _ in 0..16 {
                        assert!(raw.verify(std::hint::black_box(input)));
                    }
                    start.elapsed()
                };
                let (mut d, mut a) = (Vec::new(), Vec::new());
                let start = std::time::Instant::now();
                while start.elapsed() < choose || d.len() < 5 {
                    d.push(batch(&dalek));
                    a.push(batch(&aws_lc));
                }
                d.sort();
                a.sort();
                if a[a.len() / 2] < d[d.len() / 2] {
                    aws_lc
                } else {
                    dalek
                }
            }
            Curve::P256 => Self::AwsLc(
                ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public).expect("a valid key"),
            ),
            Curve::P384 => Self::AwsLc(
                ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, public).expect("a valid key"),
            ),
            Curve::Secp256k1 => Self::Secp256k1(
                k256::ecdsa::VerifyingKey::from_sec1_bytes(&public).expect("a valid key"),
            ),
        }
    }

    /// The crate that checks.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ed25519(_) => "ed25519-dalek",
            Self::AwsLc(_) => "aws-lc-rs",
            Self::Secp256k1(_) => "k256",
        }
    }

    /// Verifies `token`'s signature over its signing input; the token is split and its
    /// signature decoded beforehand by [`RawInput::of`].
    pub fn verify(&self, input: &RawInput) -> bool {
        match self {
            // The crate's cheapest check (not `verify_strict`, which also decompresses R):
            // keyward's strict check must keep up with it. Run at the stack offset where
            // it is fastest, as keyward runs it: its speed depends on where its frame falls
            // in a page (docs/performance.md), which would otherwise make the baseline a
            // matter of the bench's own stack depth.
            Self::Ed25519(key) => {
                ed25519_dalek::Signature::from_slice(&input.signature).is_ok_and(|sig| {
                    keyward_domain::crypto::ed25519_dalek_check(key, &input.message, &sig)
                })
            }
            Self::AwsLc(key) => key.verify_sig(&input.message, &input.signature).is_ok(),
            Self::Secp256k1(key) => {
                use k256::ecdsa::signature::Verifier as _;
                k256::ecdsa::Signature::from_slice(&input.signature)
                    .is_ok_and(|sig| key.verify(&input.message, &sig).is_ok())
            }
        }
    }
}

/// The other raw checks of the same key and token, measured to justify the choice per
/// curve (other well-kept crates, and for Ed25519 also `ed25519-dalek`'s own
/// `verify_strict`): `(check, verifications per second)`.
pub fn alternatives(
    key: &SigningKey,
    input: &RawInput,
    budget: std::time::Duration,
) -> Vec<(&'static str, f64)> {
    use aws_lc_rs::signature as lc;
    let public = key.public_bytes();
    let rate = |check: &dyn Fn() -> bool| {
        assert!(check(), "an alternative accepts the fixture");
        let start = std::time::Instant::now();
        let mut n = 0u64;
        while start.elapsed() < budget {
            for _ in 0..16 {
                assert!(check());
            }
            n += 16;
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    let (m, sig) = (&input.message, &input.signature);
    match key.curve() {
        Curve::Ed25519 => {
            let parsed = lc::ParsedPublicKey::new(&lc::ED25519, &public).expect("a valid key");
            let dalek = ed25519_dalek::VerifyingKey::from_bytes(&public.try_into().expect("32"))
                .expect("a valid key");
            let signature = ed25519_dalek::Signature::from_slice(sig).expect("64 bytes");
            vec![
                ("aws-lc-rs", rate(&|| parsed.verify_sig(m, sig).is_ok())),
                (
                    "ed25519-dalek",
                    rate(&|| {
                        use ed25519_dalek::Verifier as _;
                        dalek.verify(m, &signature).is_ok()
                    }),
                ),
                (
                    "ed25519-dalek verify_strict",
                    rate(&|| dalek.verify_strict(m, &signature).is_ok()),
                ),
            ]
        }
        Curve::P256 => {
            let ring = ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                &public,
            );
            vec![("ring", rate(&|| ring.verify(m, sig).is_ok()))]
        }
        Curve::P384 => {
            let ring = ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P384_SHA384_FIXED,
                &public,
            );
            vec![("ring", rate(&|| ring.verify(m, sig).is_ok()))]
        }
        Curve::Secp256k1 => {
            let parsed = lc::ParsedPublicKey::new(&lc::ECDSA_P256K1_SHA256_FIXED, &public)
                .expect("a valid key");
            vec![("aws-lc-rs", rate(&|| parsed.verify_sig(m, sig).is_ok()))]
        }
    }
}

/// A token's signing input and decoded signature, prepared for the raw check.
pub struct RawInput {
    pub message: Vec<u8>,
    pub signature: Vec<u8>,
}

impl RawInput {
    pub fn of(token: &str) -> Self {
        let (message, signature) = token.rsplit_once('.').expect("a compact JWS");
        Self {
            message: message.as_bytes().to_vec(),
            signature: URL_SAFE_NO_PAD.decode(signature).expect("base64url"),
        }
    }
}

/// `jsonwebtoken`'s view of the same key, for the comparison row; `None` where it has no
/// support for the curve.
pub fn jsonwebtoken_key(
    key: &SigningKey,
) -> Option<(jsonwebtoken::DecodingKey, jsonwebtoken::Algorithm)> {
    use jsonwebtoken::{Algorithm, DecodingKey};
    let public = key.public_bytes();
    match key.curve() {
        Curve::Ed25519 => Some((DecodingKey::from_ed_der(&public), Algorithm::EdDSA)),
        Curve::P256 => Some((DecodingKey::from_ec_der(&public), Algorithm::ES256)),
        Curve::P384 => Some((DecodingKey::from_ec_der(&public), Algorithm::ES384)),
        Curve::Secp256k1 => None,
    }
}

/// The claims jsonwebtoken is asked to decode: the same ones keyward reads.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookClaims {
    pub evaluation_id: String,
    pub status_code: i64,
    pub iat: i64,
}

/// A jsonwebtoken validation equivalent to keyward's checks on these tokens.
pub fn jsonwebtoken_validation(alg: jsonwebtoken::Algorithm) -> jsonwebtoken::Validation {
    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation
}
