//! Public JWKs: what keyward accepts as a webhook signing key, and the canonical form it
//! stores.
//!
//! The checks run on the raw JSON object before any typed parsing, because typed parsers
//! lose exactly the details attackers use: a `d` member that a conversion ignores, a
//! repeated `key_ops` value that a set swallows, a padded or non-canonical base64url
//! coordinate that decodes to the same bytes (and so would give one key two thumbprints).

use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jose_jwk::{EcCurves, Key, OkpCurves};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::DomainError;

/// The curves keyward verifies signatures on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    Ed25519,
    P256,
    P384,
    Secp256k1,
}

/// The algorithm family reported for a key, as the contract names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlgorithmFamily {
    EdDsa,
    Ecdsa,
}

impl AlgorithmFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Ecdsa => "ECDSA",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "EdDSA" => Some(Self::EdDsa),
            "ECDSA" => Some(Self::Ecdsa),
            _ => None,
        }
    }
}

impl Curve {
    /// The JWK `crv` value.
    pub fn crv(self) -> &'static str {
        match self {
            Self::Ed25519 => "Ed25519",
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::Secp256k1 => "secp256k1",
        }
    }

    /// The JWK `kty` value.
    pub fn kty(self) -> &'static str {
        match self {
            Self::Ed25519 => "OKP",
            _ => "EC",
        }
    }

    /// Length in bytes of each coordinate (`x`, and `y` for EC keys).
    pub fn coordinate_len(self) -> usize {
        match self {
            Self::Ed25519 | Self::P256 | Self::Secp256k1 => 32,
            Self::P384 => 48,
        }
    }

    pub fn family(self) -> AlgorithmFamily {
        match self {
            Self::Ed25519 => AlgorithmFamily::EdDsa,
            _ => AlgorithmFamily::Ecdsa,
        }
    }

    /// The JWS `alg` values a token signed with this key may carry.
    pub fn jws_algs(self) -> &'static [&'static str] {
        match self {
            Self::Ed25519 => &["EdDSA", "Ed25519"],
            Self::P256 => &["ES256"],
            Self::P384 => &["ES384"],
            Self::Secp256k1 => &["ES256K"],
        }
    }

    fn from_jose(key: &Key) -> Option<Self> {
        match key {
            Key::Okp(okp) if okp.crv == OkpCurves::Ed25519 => Some(Self::Ed25519),
            Key::Ec(ec) => match ec.crv {
                EcCurves::P256 => Some(Self::P256),
                EcCurves::P384 => Some(Self::P384),
                EcCurves::P256K => Some(Self::Secp256k1),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A validated public key: supported curve, canonical coordinates, a valid point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    curve: Curve,
    x: Vec<u8>,
    y: Option<Vec<u8>>,
    kid: Option<String>,
    alg: Option<String>,
    key_use: Option<String>,
    key_ops: Option<Vec<String>>,
}

/// Members that only a private (or symmetric) key carries.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
/// Certificate members: keyward registers bare keys only.
const CERTIFICATE_MEMBERS: [&str; 4] = ["x5c", "x5u", "x5t", "x5t#S256"];

impl PublicJwk {
    /// Validates one JWK object exactly as the register operation requires.
    pub fn from_json(raw: &Map<String, Value>) -> Result<Self, DomainError> {
        let private: Vec<&str> = PRIVATE_MEMBERS
            .into_iter()
            .filter(|m| raw.contains_key(*m))
            .collect();
        if !private.is_empty() {
            return Err(DomainError::PrivateKeyMaterial(format!(
                "member{} {}",
                if private.len() > 1 { "s" } else { "" },
                private.join(", ")
            )));
        }
        let curve = curve_of(raw)?;
        if let Some(member) = CERTIFICATE_MEMBERS
            .into_iter()
            .find(|m| raw.contains_key(*m))
        {
            return Err(DomainError::InvalidJwk(format!(
                "the JWK carries the certificate member '{member}'; keyward registers bare public keys, so remove the certificate members"
            )));
        }
        let key_use = optional_string(raw, "use")?;
        if key_use.as_deref().is_some_and(|u| u != "sig") {
            return Err(DomainError::InvalidJwk(
                "the JWK's 'use' must be 'sig' (a webhook key signs); set it to 'sig' or leave it out".into(),
            ));
        }
        let key_ops = key_ops_of(raw)?;
        let alg = optional_string(raw, "alg")?;
        if let Some(alg) = &alg {
            if !curve.jws_algs().contains(&alg.as_str()) {
                return Err(DomainError::AlgorithmMismatch(format!(
                    "the JWK's alg '{}' does not fit a key on {}; use {} or leave alg out",
                    alg.escape_debug(),
                    curve.crv(),
                    curve.jws_algs().join(" or ")
                )));
            }
        }
        let kid = optional_string(raw, "kid")?;

        let x = coordinate(raw, "x", curve)?;
        let y = match curve {
            Curve::Ed25519 => {
                if raw.contains_key("y") {
                    return Err(DomainError::InvalidJwk(
                        "an Ed25519 (OKP) JWK has no 'y' member; remove it".into(),
                    ));
                }
                None
            }
            _ => Some(coordinate(raw, "y", curve)?),
        };
        check_point(curve, &x, y.as_deref())?;

        let jwk = Self {
            curve,
            x,
            y,
            kid,
            alg,
            key_use,
            key_ops,
        };
        // The typed JOSE parser must agree with what the raw checks decided.
        let typed: Key = serde_json::from_value(jwk.thumbprint_input_value())
            .map_err(|_| DomainError::InvalidJwk("the JWK could not be parsed".into()))?;
        if Curve::from_jose(&typed) != Some(curve) {
            return Err(DomainError::InvalidJwk(
                "the JWK could not be parsed".into(),
            ));
        }
        Ok(jwk)
    }

    /// Parses a stored canonical JWK (written by [`PublicJwk::to_canonical_json`]).
    pub fn from_stored(text: &str) -> Result<Self, DomainError> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Self::from_json(&map),
            _ => Err(DomainError::Internal("stored JWK is not an object".into())),
        }
    }

    pub fn curve(&self) -> Curve {
        self.curve
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub fn x(&self) -> &[u8] {
        &self.x
    }

    pub fn y(&self) -> Option<&[u8]> {
        self.y.as_deref()
    }

    /// Returns this key with `kid` set to the registered keyId.
    pub fn with_kid(mut self, kid: &str) -> Self {
        self.kid = Some(kid.to_owned());
        self
    }

    /// The public members only, as a JSON object with members in lexicographic order.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        if let Some(alg) = &self.alg {
            map.insert("alg".into(), Value::String(alg.clone()));
        }
        map.insert("crv".into(), Value::String(self.curve.crv().into()));
        if let Some(ops) = &self.key_ops {
            map.insert(
                "key_ops".into(),
                Value::Array(ops.iter().cloned().map(Value::String).collect()),
            );
        }
        if let Some(kid) = &self.kid {
            map.insert("kid".into(), Value::String(kid.clone()));
        }
        map.insert("kty".into(), Value::String(self.curve.kty().into()));
        if let Some(key_use) = &self.key_use {
            map.insert("use".into(), Value::String(key_use.clone()));
        }
        map.insert("x".into(), Value::String(URL_SAFE_NO_PAD.encode(&self.x)));
        if let Some(y) = &self.y {
            map.insert("y".into(), Value::String(URL_SAFE_NO_PAD.encode(y)));
        }
        Value::Object(map)
    }

    /// The stored form: compact JSON of [`PublicJwk::to_json`].
    pub fn to_canonical_json(&self) -> String {
        self.to_json().to_string()
    }

    /// The RFC 7638 SHA-256 thumbprint.
    pub fn thumbprint(&self) -> Thumbprint {
        let input = self.thumbprint_input_value().to_string();
        Thumbprint(URL_SAFE_NO_PAD.encode(Sha256::digest(input.as_bytes())))
    }

    /// Only the members RFC 7638 requires, in lexicographic order (serde_json's map keeps
    /// keys sorted), which is also exactly what a typed JOSE parser needs.
    fn thumbprint_input_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("crv".into(), Value::String(self.curve.crv().into()));
        map.insert("kty".into(), Value::String(self.curve.kty().into()));
        map.insert("x".into(), Value::String(URL_SAFE_NO_PAD.encode(&self.x)));
        if let Some(y) = &self.y {
            map.insert("y".into(), Value::String(URL_SAFE_NO_PAD.encode(y)));
        }
        Value::Object(map)
    }
}

/// An RFC 7638 SHA-256 thumbprint, unpadded base64url.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Thumbprint(String);

impl Thumbprint {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn curve_of(raw: &Map<String, Value>) -> Result<Curve, DomainError> {
    let kty = match raw.get("kty") {
        Some(Value::String(kty)) => kty.as_str(),
        Some(_) => return Err(DomainError::InvalidJwk("the JWK's 'kty' must be a string".into())),
        None => {
            return Err(DomainError::InvalidJwk(
                "the JWK has no 'kty'; send an OKP (Ed25519) or EC (P-256, P-384, secp256k1) public key".into(),
            ))
        }
    };
    let crv = match raw.get("crv") {
        Some(Value::String(crv)) => Some(crv.as_str()),
        Some(_) => {
            return Err(DomainError::InvalidJwk(
                "the JWK's 'crv' must be a string".into(),
            ))
        }
        None => None,
    };
    let unsupported = |what: String| {
        DomainError::UnsupportedKeyType(format!(
            "{what} is not supported; register an Ed25519 (kty OKP) key or an EC key on P-256, P-384 or secp256k1"
        ))
    };
    match (kty, crv) {
        ("OKP", Some("Ed25519")) => Ok(Curve::Ed25519),
        ("EC", Some("P-256")) => Ok(Curve::P256),
        ("EC", Some("P-384")) => Ok(Curve::P384),
        ("EC", Some("secp256k1")) => Ok(Curve::Secp256k1),
        ("OKP" | "EC", None) => Err(DomainError::InvalidJwk(format!(
            "the {kty} JWK has no 'crv'; name its curve"
        ))),
        ("OKP" | "EC", Some(crv)) => {
            Err(unsupported(format!("the curve '{}'", crv.escape_debug())))
        }
        (kty, _) => Err(unsupported(format!(
            "the key type '{}'",
            kty.escape_debug()
        ))),
    }
}

fn optional_string(raw: &Map<String, Value>, member: &str) -> Result<Option<String>, DomainError> {
    match raw.get(member) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(DomainError::InvalidJwk(format!(
            "the JWK's '{member}' must be a string"
        ))),
    }
}

fn key_ops_of(raw: &Map<String, Value>) -> Result<Option<Vec<String>>, DomainError> {
    let Some(ops) = raw.get("key_ops") else {
        return Ok(None);
    };
    let refuse = || {
        DomainError::InvalidJwk(
            "the JWK's key_ops may only be [\"verify\"]; a webhook key is used to verify signatures".into(),
        )
    };
    let Value::Array(items) = ops else {
        return Err(refuse());
    };
    // Checked on the raw array: a set would hide a repeated value.
    if items.len() != 1 || items[0] != Value::String("verify".into()) {
        return Err(refuse());
    }
    Ok(Some(vec!["verify".into()]))
}

fn coordinate(
    raw: &Map<String, Value>,
    member: &str,
    curve: Curve,
) -> Result<Vec<u8>, DomainError> {
    let expected = curve.coordinate_len();
    let text = match raw.get(member) {
        Some(Value::String(text)) => text,
        Some(_) => {
            return Err(DomainError::InvalidJwk(format!(
                "the JWK's '{member}' must be a base64url string"
            )))
        }
        None => {
            return Err(DomainError::InvalidJwk(format!(
                "the {} JWK has no '{member}'; send the public key's coordinates",
                curve.crv()
            )))
        }
    };
    // The engine refuses padding and stray low bits in the last character, so every
    // accepted string is the one canonical encoding of its bytes.
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| {
        DomainError::InvalidJwk(format!(
            "the JWK's '{member}' is not canonical unpadded base64url; encode the {expected}-byte coordinate without '=' padding"
        ))
    })?;
    if bytes.len() != expected {
        return Err(DomainError::InvalidJwk(format!(
            "the JWK's '{member}' decodes to {} bytes, but a {} coordinate has exactly {expected} (keep leading zero bytes)",
            bytes.len(),
            curve.crv()
        )));
    }
    Ok(bytes)
}

fn check_point(curve: Curve, x: &[u8], y: Option<&[u8]>) -> Result<(), DomainError> {
    let not_on_curve = || {
        DomainError::InvalidJwk(format!(
            "the JWK's coordinates are not a valid point on {}; export the public key again",
            curve.crv()
        ))
    };
    match curve {
        Curve::Ed25519 => {
            let bytes: [u8; 32] = x.try_into().map_err(|_| not_on_curve())?;
            let key =
                ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| not_on_curve())?;
            // A non-canonical encoding of a valid point would give the key a second
            // thumbprint; a small-order point makes every signature check meaningless.
            // (The encoding is judged by its bytes: encoding the point again would cost
            // a field inversion at every parse, stored keys' included.)
            if !crate::crypto::canonical_encoding(&bytes) {
                return Err(not_on_curve());
            }
            if key.is_weak() {
                return Err(DomainError::InvalidJwk(
                    "the Ed25519 key is a small-order (weak) point and cannot be trusted; generate a new key pair".into(),
                ));
            }
            Ok(())
        }
        Curve::P256 | Curve::P384 | Curve::Secp256k1 => {
            let y = y.ok_or_else(not_on_curve)?;
            let mut sec1 = Vec::with_capacity(1 + x.len() + y.len());
            sec1.push(0x04);
            sec1.extend_from_slice(x);
            sec1.extend_from_slice(y);
            let valid = match curve {
                // aws-lc refuses a point that is not on the curve (or is infinity).
                Curve::P256 => ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &sec1).is_ok(),
                Curve::P384 => ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &sec1).is_ok(),
                _ => k256::PublicKey::from_sec1_bytes(&sec1).is_ok(),
            };
            if valid {
                Ok(())
            } else {
                Err(not_on_curve())
            }
        }
    }
}
