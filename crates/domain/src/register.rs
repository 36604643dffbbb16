//! The register request: turning the body a caller sent into a key that may be stored,
//! or into the first rule it breaks.

use serde_json::{Map, Value};

use crate::ids::{KeyId, KeyName};
use crate::json::{parse_strict, StrictJsonError};
use crate::jwk::PublicJwk;
use crate::jwks_uri::{InsecureHosts, JwksUri};
use crate::DomainError;

/// Where the key comes from, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    Inline(PublicJwk),
    Uri(JwksUri),
}

/// A register request that satisfies every rule that needs no storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterKey {
    pub key_id: KeyId,
    pub key_name: KeyName,
    pub material: KeyMaterial,
}

const MEMBERS: [&str; 4] = ["jwks", "jwksUri", "keyId", "keyName"];

impl RegisterKey {
    /// Parses and validates a raw request body.
    pub fn from_body(body: &[u8], insecure: &InsecureHosts) -> Result<Self, DomainError> {
        let value = parse_strict(body).map_err(|err| match &err {
            StrictJsonError::DuplicateMember { pointer } if pointer.starts_with("/jwks/keys/") => {
                DomainError::InvalidJwk(err.to_string())
            }
            _ => DomainError::InvalidRequest(err.to_string()),
        })?;
        let Value::Object(body) = value else {
            return Err(DomainError::InvalidRequest(
                "the body must be a JSON object with either 'jwks' or 'jwksUri'".into(),
            ));
        };
        Self::from_json(&body, insecure)
    }

    /// Validates a request body already parsed into an object.
    pub fn from_json(
        body: &Map<String, Value>,
        insecure: &InsecureHosts,
    ) -> Result<Self, DomainError> {
        if let Some(unknown) = body.keys().find(|k| !MEMBERS.contains(&k.as_str())) {
            return Err(DomainError::InvalidRequest(format!(
                "unknown member '{}'; the body may hold only jwks, jwksUri, keyId and keyName",
                unknown.escape_debug()
            )));
        }
        let jwks = present(body, "jwks");
        let jwks_uri = string_member(body, "jwksUri")?;
        let body_key_id = string_member(body, "keyId")?;
        let key_name = string_member(body, "keyName")?
            .map(|name| KeyName::parse(&name))
            .transpose()?;
        let body_key_id = body_key_id.map(|id| KeyId::parse(&id)).transpose()?;

        let (material, key_id) = match (jwks, jwks_uri) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(DomainError::InvalidRequest(
                    "send exactly one of 'jwks' (the public key inline) or 'jwksUri' (where to fetch it)".into(),
                ))
            }
            (Some(jwks), None) => {
                let jwk = single_jwk(jwks)?;
                let key_id = match (body_key_id, jwk.kid()) {
                    (Some(body_id), Some(kid)) if body_id.as_str() != kid => {
                        return Err(DomainError::KeyIdMismatch {
                            body: body_id.as_str().escape_debug().to_string(),
                            kid: kid.escape_debug().to_string(),
                        })
                    }
                    (Some(body_id), _) => body_id,
                    (None, Some(kid)) => KeyId::parse(kid)?,
                    (None, None) => {
                        return Err(DomainError::KeyIdRequired(
                            "the key needs an id: set 'kid' in the JWK or 'keyId' in the body, for example 'my-key-v1'".into(),
                        ))
                    }
                };
                let jwk = jwk.with_kid(key_id.as_str());
                (KeyMaterial::Inline(jwk), key_id)
            }
            (None, Some(uri)) => {
                let uri = JwksUri::parse(&uri, insecure)?;
                let key_id = body_key_id.ok_or_else(|| {
                    DomainError::KeyIdRequired(
                        "a key registered by jwksUri needs 'keyId': the kid of the key in your JWKS".into(),
                    )
                })?;
                (KeyMaterial::Uri(uri), key_id)
            }
        };
        let key_name = key_name.unwrap_or_else(|| KeyName::from_key_id(&key_id));
        Ok(Self {
            key_id,
            key_name,
            material,
        })
    }
}

/// A member that is present and not `null` (`null` reads as absent).
fn present<'a>(body: &'a Map<String, Value>, member: &str) -> Option<&'a Value> {
    body.get(member).filter(|v| !v.is_null())
}

fn string_member(body: &Map<String, Value>, member: &str) -> Result<Option<String>, DomainError> {
    match present(body, member) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(DomainError::InvalidRequest(format!(
            "'{member}' must be a string"
        ))),
    }
}

fn single_jwk(jwks: &Value) -> Result<PublicJwk, DomainError> {
    let Value::Object(jwks) = jwks else {
        return Err(DomainError::InvalidJwks(
            "'jwks' must be an object of the form {\"keys\": [<one public JWK>]}".into(),
        ));
    };
    let Some(Value::Array(keys)) = jwks.get("keys") else {
        return Err(DomainError::InvalidJwks(
            "'jwks' must hold a 'keys' array with exactly one public JWK".into(),
        ));
    };
    let [key] = keys.as_slice() else {
        return Err(DomainError::InvalidJwks(format!(
            "'jwks.keys' holds {} keys; register exactly one key per request",
            keys.len()
        )));
    };
    let Value::Object(key) = key else {
        return Err(DomainError::InvalidJwk(
            "'jwks.keys[0]' must be a JWK object".into(),
        ));
    };
    PublicJwk::from_json(key)
}
