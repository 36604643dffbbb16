//! Response bodies written straight from the DTOs: the key reads and the verdict.
//!
//! poem-openapi's `Json` payload renders a body by building a `serde_json::Value` tree
//! (a map per object, a string per field) and serialising that: for a page of twenty keys
//! that is most of the request's allocations. [`Direct`] documents a body exactly as
//! `Json` does (the schema is the DTO's) but writes it with `serde::Serialize`
//! impls that emit the same members in the same order as the tree (alphabetical, the
//! order of its maps), so the bytes are the same; a test compares them.

use poem::http::header;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::ApiResponse;
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::dto::{Algorithm, KeyDetail, KeyList, KeySummary, Status};
use crate::types::{DateTime, Nullable};
use crate::verify::{Reason, VerifyResult};

const CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// A JSON response body documented as `T` and written by its `Serialize` impl.
#[derive(Debug)]
pub struct Direct<T>(pub T);

impl<T: Type> Payload for Direct<T> {
    const CONTENT_TYPE: &'static str = CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        content_type.starts_with("application/json")
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Serialize + Send> IntoResponse for Direct<T> {
    fn into_response(self) -> Response {
        // Room for a page of keys at once, instead of doubling up to it.
        let mut body = Vec::with_capacity(4096);
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => Response::builder()
                .header(header::CONTENT_TYPE, CONTENT_TYPE)
                .body(body),
            Err(err) => {
                tracing::error!(error = %err, "cannot render a response body");
                Response::builder()
                    .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
                    .finish()
            }
        }
    }
}

impl<T: Type + Serialize + Send> ApiResponse for Direct<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: CONTENT_TYPE,
                    schema: T::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl Serialize for Algorithm {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match self {
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Ecdsa => "ECDSA",
        })
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match self {
            Status::Active => "ACTIVE",
            Status::Revoked => "REVOKED",
        })
    }
}

impl Serialize for DateTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<T: Serialize> Serialize for Nullable<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A key's members in alphabetical order, with a detail's `jwk` and `thumbprint`.
fn key_members<M: SerializeMap>(
    map: &mut M,
    key: &KeySummary,
    jwk: Option<&serde_json::Value>,
    thumbprint: Option<&str>,
) -> Result<(), M::Error> {
    map.serialize_entry("algorithm", &key.algorithm)?;
    map.serialize_entry("createdBy", &key.created_by)?;
    map.serialize_entry("createdDate", &key.created_date)?;
    map.serialize_entry("id", &key.id)?;
    if let Some(jwk) = jwk {
        map.serialize_entry("jwk", jwk)?;
    }
    if let Some(uri) = &key.jwks_uri {
        map.serialize_entry("jwksUri", uri)?;
    }
    map.serialize_entry("keyId", &key.key_id)?;
    map.serialize_entry("keyName", &key.key_name)?;
    if let Some(date) = &key.last_verified_date {
        map.serialize_entry("lastVerifiedDate", date)?;
    }
    if let Some(by) = &key.revoked_by {
        map.serialize_entry("revokedBy", by)?;
    }
    if let Some(date) = &key.revoked_date {
        map.serialize_entry("revokedDate", date)?;
    }
    map.serialize_entry("status", &key.status)?;
    if let Some(thumbprint) = thumbprint {
        map.serialize_entry("thumbprint", thumbprint)?;
    }
    Ok(())
}

impl Serialize for KeySummary {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        key_members(&mut map, self, None, None)?;
        map.end()
    }
}

impl Serialize for KeyDetail {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        key_members(
            &mut map,
            &self.summary,
            self.jwk.as_ref().map(|jwk| &jwk.0),
            self.thumbprint.as_deref(),
        )?;
        map.end()
    }
}

impl Serialize for KeyList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("keys", &self.keys)?;
        map.serialize_entry("limit", &self.limit)?;
        map.serialize_entry("prevId", &self.prev_id)?;
        map.serialize_entry("total", &self.total)?;
        map.end()
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use poem_openapi::types::ToJSON as _;
        // Rare (refusals only): the documented name, as the enum renders it.
        self.to_json().serialize(serializer)
    }
}

impl Serialize for VerifyResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some(approved) = &self.approved {
            map.serialize_entry("approved", approved)?;
        }
        if let Some(key_id) = &self.key_id {
            map.serialize_entry("keyId", key_id)?;
        }
        if let Some(message) = &self.message {
            map.serialize_entry("message", message)?;
        }
        if let Some(reason) = &self.reason {
            map.serialize_entry("reason", reason)?;
        }
        if let Some(status_code) = &self.status_code {
            map.serialize_entry("statusCode", status_code)?;
        }
        map.serialize_entry("valid", &self.valid)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use keyward_domain::{AlgorithmFamily, KeySource, KeyStatus, StoredKey, Timestamp};
    use poem_openapi::types::ToJSON;

    use super::*;

    fn stored(key_id: &str, source: KeySource) -> StoredKey {
        StoredKey {
            id: uuid::Uuid::from_u128(0x1234),
            enterprise_id: "acme".into(),
            key_id: key_id.into(),
            key_name: format!("name of \"{key_id}\" \u{e9}"),
            source,
            status: KeyStatus::Active,
            created_at: Timestamp::from_millis(1_768_213_800_000),
            created_by: "admin@acme.test".into(),
            revoked_at: None,
            revoked_by: None,
            last_verified_at: None,
        }
    }

    fn keys() -> Vec<StoredKey> {
        let inline = KeySource::Inline {
            algorithm: AlgorithmFamily::EdDsa,
            jwk: r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k1"}"#.into(),
            thumbprint: "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k".into(),
        };
        let ec = KeySource::Inline {
            algorithm: AlgorithmFamily::Ecdsa,
            jwk: r#"{"kty":"EC","crv":"P-256","x":"a","y":"b"}"#.into(),
            thumbprint: "t2".into(),
        };
        let mut revoked = stored("k2", ec);
        revoked.status = KeyStatus::Revoked;
        revoked.revoked_at = Some(Timestamp::from_millis(1_768_213_900_123));
        revoked.revoked_by = Some("other@acme.test".into());
        revoked.last_verified_at = Some(Timestamp::from_millis(1_768_213_850_001));
        vec![
            stored("k1", inline),
            revoked,
            stored(
                "k3",
                KeySource::JwksUri("https://acme.test/jwks.json".into()),
            ),
        ]
    }

    fn tree<T: ToJSON>(value: &T) -> String {
        serde_json::to_string(&value.to_json()).unwrap()
    }

    #[test]
    fn a_page_is_written_byte_for_byte_as_the_value_tree_would_be() {
        let list = KeyList {
            keys: keys().iter().map(KeySummary::from).collect(),
            total: 3,
            limit: 50,
            prev_id: 0,
        };
        assert_eq!(serde_json::to_string(&list).unwrap(), tree(&list));
        let empty = KeyList {
            keys: vec![],
            total: 0,
            limit: 1,
            prev_id: 7,
        };
        assert_eq!(serde_json::to_string(&empty).unwrap(), tree(&empty));
    }

    #[test]
    fn a_verdict_is_written_byte_for_byte_as_the_value_tree_would_be() {
        use keyward_domain::{Rejection, Verification};
        for verification in [
            Verification::Valid {
                key_id: "k1".into(),
                status_code: 200,
            },
            Verification::Valid {
                key_id: "k\"2".into(),
                status_code: -7,
            },
            Verification::Invalid(Rejection::Replayed),
            Verification::Invalid(Rejection::BadSignature),
        ] {
            let verdict = VerifyResult::from(verification);
            assert_eq!(serde_json::to_string(&verdict).unwrap(), tree(&verdict));
        }
    }

    #[test]
    fn a_key_is_written_byte_for_byte_as_the_value_tree_would_be() {
        for key in keys() {
            let detail = KeyDetail::from(&key);
            assert_eq!(serde_json::to_string(&detail).unwrap(), tree(&detail));
        }
    }
}
