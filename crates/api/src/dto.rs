//! The request and response bodies of the key operations, as documented.

use keyward_domain::{AlgorithmFamily, KeySource, KeyStatus, ListedKey, StoredKey};
use poem_openapi::types::Any;
use poem_openapi::{Enum, Object};
use serde::Serialize;
use uuid::Uuid;

use crate::types::{DateTime, Nullable};

/// One public JWK. Only public members are accepted; any private member (`d`, ...) is
/// refused and never stored.
#[derive(Object, Debug)]
pub struct Jwk {
    /// `OKP` (Ed25519) or `EC` (P-256, P-384, secp256k1).
    pub kty: String,
    /// `Ed25519`, `P-256`, `P-384` or `secp256k1`.
    pub crv: Option<String>,
    /// The x coordinate, unpadded base64url of exactly the curve's length.
    pub x: Option<String>,
    /// The y coordinate (EC keys only).
    pub y: Option<String>,
    /// Becomes the keyId when the body has none.
    pub kid: Option<String>,
    /// If present: `EdDSA`/`Ed25519`, `ES256`, `ES384` or `ES256K`, fitting the curve.
    pub alg: Option<String>,
    /// If present: `sig`.
    #[oai(rename = "use")]
    pub key_use: Option<String>,
    /// If present: `["verify"]`.
    #[oai(rename = "key_ops")]
    pub key_ops: Option<Vec<String>>,
}

/// A JWK Set holding exactly one public key.
#[derive(Object, Debug)]
pub struct Jwks {
    /// Exactly one public JWK.
    #[oai(validator(min_items = 1, max_items = 1))]
    pub keys: Vec<Jwk>,
}

/// Register a key inline (`jwks`) or by reference (`jwksUri`): exactly one of the two.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", deny_unknown_fields, example)]
pub struct RegisterKeyRequest {
    /// Inline JWKS with the one public key. The JWK's `kid` becomes the keyId unless
    /// `keyId` is given (then both must agree). Mutually exclusive with `jwksUri`.
    pub jwks: Option<Jwks>,
    /// An https URL of the JWKS holding the key. Mutually exclusive with `jwks`;
    /// requires `keyId`.
    #[oai(validator(max_length = 2048))]
    pub jwks_uri: Option<String>,
    /// The key's id, unique in the enterprise forever (tombstoned after revocation):
    /// 1–255 characters, no whitespace, control characters or `/`.
    #[oai(validator(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\s/\x00-\x1F\x7F-\x9F]+$"
    ))]
    pub key_id: Option<String>,
    /// A human-readable name; defaults to the keyId.
    #[oai(validator(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]+$"
    ))]
    pub key_name: Option<String>,
}

impl poem_openapi::types::Example for RegisterKeyRequest {
    fn example() -> Self {
        Self {
            jwks: Some(Jwks {
                keys: vec![Jwk {
                    kty: "OKP".into(),
                    crv: Some("Ed25519".into()),
                    x: Some("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into()),
                    y: None,
                    kid: Some("my-key-v2".into()),
                    alg: Some("EdDSA".into()),
                    key_use: Some("sig".into()),
                    key_ops: None,
                }],
            }),
            jwks_uri: None,
            key_id: None,
            key_name: Some("Production Webhook Key".into()),
        }
    }
}

/// The signing algorithm family of a key.
#[derive(Enum, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    #[oai(rename = "EdDSA")]
    #[serde(rename = "EdDSA")]
    EdDsa,
    #[oai(rename = "ECDSA")]
    #[serde(rename = "ECDSA")]
    Ecdsa,
}

impl From<AlgorithmFamily> for Algorithm {
    fn from(family: AlgorithmFamily) -> Self {
        match family {
            AlgorithmFamily::EdDsa => Self::EdDsa,
            AlgorithmFamily::Ecdsa => Self::Ecdsa,
        }
    }
}

/// A key's state. Revocation is permanent.
#[derive(Enum, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename = "KeyStatus", rename_all = "UPPERCASE")]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Active,
    Revoked,
}

impl From<KeyStatus> for Status {
    fn from(status: KeyStatus) -> Self {
        match status {
            KeyStatus::Active => Self::Active,
            KeyStatus::Revoked => Self::Revoked,
        }
    }
}

impl Status {
    pub fn domain(self) -> KeyStatus {
        match self {
            Self::Active => KeyStatus::Active,
            Self::Revoked => KeyStatus::Revoked,
        }
    }
}

/// The key just registered.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", example)]
pub struct RegisteredKey {
    /// Internal id of the registration.
    pub id: Uuid,
    pub key_id: String,
    /// `EdDSA` or `ECDSA`; `null` for a key registered by jwksUri.
    pub algorithm: Nullable<Algorithm>,
    /// The JWKS URI, or `null` for an inline key.
    pub jwks_uri: Nullable<String>,
    pub status: Status,
    pub created_date: DateTime,
}

impl poem_openapi::types::Example for RegisteredKey {
    fn example() -> Self {
        Self {
            id: Uuid::from_u128(0xf47ac10b_58cc_4372_a567_0e02b2c3d479),
            key_id: "my-key-v2".into(),
            algorithm: Nullable(Some(Algorithm::EdDsa)),
            jwks_uri: Nullable(None),
            status: Status::Active,
            created_date: DateTime("2026-01-12T10:30:00.000Z".into()),
        }
    }
}

impl From<&StoredKey> for RegisteredKey {
    fn from(key: &StoredKey) -> Self {
        Self {
            id: key.id,
            key_id: key.key_id.clone(),
            algorithm: Nullable(key.algorithm().map(Algorithm::from)),
            jwks_uri: Nullable(key.jwks_uri().map(str::to_owned)),
            status: key.status.into(),
            created_date: key.created_at.into(),
        }
    }
}

/// A key's metadata, without key material.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct KeySummary {
    pub id: Uuid,
    pub key_id: String,
    pub key_name: String,
    /// `EdDSA` or `ECDSA`; `null` for a key registered by jwksUri.
    pub algorithm: Nullable<Algorithm>,
    pub status: Status,
    pub created_date: DateTime,
    /// Email of the admin who registered the key.
    pub created_by: String,
    /// Present for keys registered by jwksUri.
    #[oai(skip_serializing_if_is_none)]
    pub jwks_uri: Option<String>,
    /// Present once revoked.
    #[oai(skip_serializing_if_is_none)]
    pub revoked_date: Option<DateTime>,
    /// Email of the admin who revoked the key; present once revoked.
    #[oai(skip_serializing_if_is_none)]
    pub revoked_by: Option<String>,
    /// When a signed response last verified with this key; present once it has.
    #[oai(skip_serializing_if_is_none)]
    pub last_verified_date: Option<DateTime>,
}

/// The documented summary of a key. Bodies are written from the domain's keys by
/// `direct`, whose tests compare them with these DTOs' value trees.
impl From<&ListedKey> for KeySummary {
    fn from(key: &ListedKey) -> Self {
        Self {
            id: key.id,
            key_id: key.key_id.clone(),
            key_name: key.key_name.clone(),
            algorithm: Nullable(key.algorithm().map(Algorithm::from)),
            status: key.status.into(),
            created_date: key.created_at.into(),
            created_by: key.created_by.clone(),
            jwks_uri: key.jwks_uri().map(str::to_owned),
            revoked_date: key.revoked_at.map(DateTime::from),
            revoked_by: key.revoked_by.clone(),
            last_verified_date: key.last_verified_at.map(DateTime::from),
        }
    }
}

/// One page of keys, oldest first.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct KeyList {
    pub keys: Vec<KeySummary>,
    /// How many keys match the filter, over all pages.
    pub total: u64,
    pub limit: u32,
    /// The offset this page starts at.
    pub prev_id: u64,
}

/// A key's metadata and, for inline keys, its public JWK and thumbprint.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct KeyDetail {
    #[oai(flatten)]
    pub summary: KeySummary,
    /// The stored public JWK (inline keys only).
    #[oai(skip_serializing_if_is_none)]
    pub jwk: Option<Any<serde_json::Value>>,
    /// RFC 7638 SHA-256 thumbprint, unpadded base64url (inline keys only).
    #[oai(skip_serializing_if_is_none)]
    pub thumbprint: Option<String>,
}

/// The documented detail of a key (see [`KeySummary`]'s `From`).
impl From<StoredKey> for KeyDetail {
    fn from(mut key: StoredKey) -> Self {
        let (jwk, thumbprint) = match &mut key.source {
            KeySource::Inline {
                jwk, thumbprint, ..
            } => (
                serde_json::from_str::<serde_json::Value>(jwk).ok().map(Any),
                Some(std::mem::take(thumbprint)),
            ),
            KeySource::JwksUri(_) => (None, None),
        };
        Self {
            summary: KeySummary::from(&ListedKey::from(key)),
            jwk,
            thumbprint,
        }
    }
}

/// The outcome of a revocation.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct Revoked {
    pub success: bool,
    pub key_id: String,
    pub revoked_at: DateTime,
    /// Email of the admin who revoked the key.
    pub revoked_by: String,
}
