//! Response bodies written straight from the DTOs: the key reads and the verdict.
//!
//! poem-openapi's `Json` payload renders a body by building a `serde_json::Value` tree
//! (a map per object, a string per field) and serialising that: for a page of twenty keys
//! that is most of the request's allocations. [`Direct`] documents a body exactly as
//! `Json` does (the schema is the DTO's) but writes it with `serde::Serialize`
//! impls that emit the same members in the same order as the tree (alphabetical, the
//! order of its maps), so the bytes are the same; a test compares them. The members'
//! own values (enums, timestamps, nullable fields) derive `Serialize` beside their
//! documented names. A body is rendered when the response is made, so one rendering can
//! answer several requests (a page of keys read once for all who asked).

use std::marker::PhantomData;

use bytes::Bytes;
use poem::http::header;
use poem::{IntoResponse, Response};
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::ApiResponse;
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::dto::{KeyDetail, KeyList, KeySummary};
use crate::verify::VerifyResult;

/// The content type `Json<T>` answers with.
const CONTENT_TYPE: &str = <Json<String> as Payload>::CONTENT_TYPE;

/// A JSON response body documented as `T` and written by its `Serialize` impl.
pub struct Direct<T> {
    /// `None` when rendering failed (answered as an internal error).
    body: Option<Bytes>,
    documented: PhantomData<fn() -> T>,
}

impl<T: Serialize> Direct<T> {
    /// Renders `value`.
    pub fn new(value: &T) -> Self {
        Self::rendered(render(value))
    }
}

impl<T> Direct<T> {
    /// A body [`render`]ed before, of a `T`.
    pub fn rendered(body: Option<Bytes>) -> Self {
        Self {
            body,
            documented: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Direct<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Direct").field(&self.body).finish()
    }
}

/// `value` as JSON, or `None` (logged) if it cannot be written.
pub fn render<T: Serialize>(value: &T) -> Option<Bytes> {
    // Room for a page of keys at once, instead of doubling up to it.
    let mut body = Vec::with_capacity(4096);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => Some(body.into()),
        Err(err) => {
            tracing::error!(error = %err, "cannot render a response body");
            None
        }
    }
}

impl<T: Type> Payload for Direct<T> {
    const CONTENT_TYPE: &'static str = CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        <Json<T> as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Send> IntoResponse for Direct<T> {
    fn into_response(self) -> Response {
        match self.body {
            Some(body) => Response::builder()
                .header(header::CONTENT_TYPE, CONTENT_TYPE)
                .body(body),
            None => Response::builder()
                .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
                .finish(),
        }
    }
}

impl<T: Type + Send> ApiResponse for Direct<T> {
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

/// Writes `name` only when it has a value (`skip_serializing_if_is_none`).
fn present<M: SerializeMap, V: Serialize + ?Sized>(
    map: &mut M,
    name: &'static str,
    value: Option<&V>,
) -> Result<(), M::Error> {
    match value {
        Some(value) => map.serialize_entry(name, value),
        None => Ok(()),
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
    present(map, "jwk", jwk)?;
    present(map, "jwksUri", key.jwks_uri.as_ref())?;
    map.serialize_entry("keyId", &key.key_id)?;
    map.serialize_entry("keyName", &key.key_name)?;
    present(map, "lastVerifiedDate", key.last_verified_date.as_ref())?;
    present(map, "revokedBy", key.revoked_by.as_ref())?;
    present(map, "revokedDate", key.revoked_date.as_ref())?;
    map.serialize_entry("status", &key.status)?;
    present(map, "thumbprint", thumbprint)?;
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

impl Serialize for VerifyResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        present(&mut map, "approved", self.approved.as_ref())?;
        present(&mut map, "keyId", self.key_id.as_ref())?;
        present(&mut map, "message", self.message.as_ref())?;
        present(&mut map, "reason", self.reason.as_ref())?;
        present(&mut map, "statusCode", self.status_code.as_ref())?;
        map.serialize_entry("valid", &self.valid)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use keyward_domain::{AlgorithmFamily, KeySource, KeyStatus, ListedKey, StoredKey, Timestamp};
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
            keys: keys()
                .into_iter()
                .map(|key| KeySummary::from(&ListedKey::from(key)))
                .collect(),
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
        // Every reason, as documented.
        use crate::verify::Reason;
        for reason in [
            Reason::MalformedToken,
            Reason::UnknownKey,
            Reason::KeyRevoked,
            Reason::AlgorithmNotAllowed,
            Reason::BadSignature,
            Reason::EvaluationIdMismatch,
            Reason::MissingClaim,
            Reason::InvalidClaim,
            Reason::TokenExpired,
            Reason::IssuedInFuture,
            Reason::Replayed,
            Reason::JwksUnavailable,
        ] {
            let verdict = VerifyResult {
                valid: false,
                key_id: None,
                status_code: None,
                approved: None,
                reason: Some(reason),
                message: Some("why".into()),
            };
            assert_eq!(serde_json::to_string(&verdict).unwrap(), tree(&verdict));
        }
    }

    #[test]
    fn a_key_is_written_byte_for_byte_as_the_value_tree_would_be() {
        for key in keys() {
            let detail = KeyDetail::from(key);
            assert_eq!(serde_json::to_string(&detail).unwrap(), tree(&detail));
        }
    }
}
