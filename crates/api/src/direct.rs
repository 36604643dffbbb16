//! Response bodies written straight from what they describe: the key reads and the
//! verdict.
//!
//! poem-openapi's `Json` payload renders a body by building a `serde_json::Value` tree
//! (a map per object, a string per field) and serialising that: for a page of twenty keys
//! that is most of the request's allocations. [`Direct`] documents a body exactly as
//! `Json` does (the schema is the DTO's) but writes it with `serde::Serialize`
//! impls that emit the same members in the same order as the tree (alphabetical, the
//! order of its maps), so the bytes are the same; tests compare them. The verdict is
//! written from its DTO; a key and a page of keys from the domain's keys themselves
//! ([`DetailBody`], [`PageBody`]), without first copying each key's strings and
//! timestamps into a DTO. The members' own values (enums, nullable fields) derive
//! `Serialize` beside their documented names. A body is rendered when the response is
//! made, so one rendering can answer several requests (a page of keys read once for
//! all who asked).

use std::marker::PhantomData;

use bytes::Bytes;
use poem::http::header;
use poem::{IntoResponse, Response};
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::ApiResponse;
use serde::ser::{Serialize, SerializeMap, Serializer};

use keyward_domain::{
    KeyPage, KeyRecord, KeySource, ListedKey, StoredKey, Timestamp, TimestampText,
};

use crate::dto::{Algorithm, Status};
use crate::types::Nullable;
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

/// A key's members in alphabetical order, with a detail's `jwk` and `thumbprint`,
/// written from the domain's key itself, without a DTO copy of its strings and
/// timestamps.
fn key_members<M: SerializeMap, S>(
    map: &mut M,
    key: &KeyRecord<S>,
    (algorithm, jwks_uri): (Option<Algorithm>, Option<&str>),
    jwk: Option<&serde_json::Value>,
    thumbprint: Option<&str>,
) -> Result<(), M::Error> {
    let date = |t: Option<Timestamp>| t.map(Timestamp::rfc3339);
    map.serialize_entry("algorithm", &Nullable(algorithm))?;
    map.serialize_entry("createdBy", &key.created_by)?;
    map.serialize_entry("createdDate", key.created_at.rfc3339().as_str())?;
    map.serialize_entry("id", &key.id)?;
    present(map, "jwk", jwk)?;
    present(map, "jwksUri", jwks_uri)?;
    map.serialize_entry("keyId", &key.key_id)?;
    map.serialize_entry("keyName", &key.key_name)?;
    present(
        map,
        "lastVerifiedDate",
        date(key.last_verified_at)
            .as_ref()
            .map(TimestampText::as_str),
    )?;
    present(map, "revokedBy", key.revoked_by.as_deref())?;
    present(
        map,
        "revokedDate",
        date(key.revoked_at).as_ref().map(TimestampText::as_str),
    )?;
    map.serialize_entry("status", &Status::from(key.status))?;
    present(map, "thumbprint", thumbprint)?;
    Ok(())
}

/// A page of keys as [`crate::dto::KeyList`] documents it.
pub struct PageBody<'a> {
    pub page: &'a KeyPage,
    pub limit: u32,
    pub prev_id: u64,
}

/// A listed key as [`crate::dto::KeySummary`] documents it.
struct Summary<'a>(&'a ListedKey);

impl Serialize for Summary<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let key = self.0;
        let source = (key.algorithm().map(Algorithm::from), key.jwks_uri());
        let mut map = serializer.serialize_map(None)?;
        key_members(&mut map, key, source, None, None)?;
        map.end()
    }
}

impl Serialize for PageBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let keys = Summaries(&self.page.keys);
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("keys", &keys)?;
        map.serialize_entry("limit", &self.limit)?;
        map.serialize_entry("prevId", &self.prev_id)?;
        map.serialize_entry("total", &self.page.total)?;
        map.end()
    }
}

struct Summaries<'a>(&'a [ListedKey]);

impl Serialize for Summaries<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(Summary))
    }
}

/// A stored key as [`crate::dto::KeyDetail`] documents it: its metadata, and for an
/// inline key its public JWK (the stored text, written as the document's JSON value
/// would be) and its thumbprint.
pub struct DetailBody<'a>(pub &'a StoredKey);

impl Serialize for DetailBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let key = self.0;
        let source = (key.algorithm().map(Algorithm::from), key.jwks_uri());
        let (jwk, thumbprint) = match &key.source {
            KeySource::Inline {
                jwk, thumbprint, ..
            } => (
                serde_json::from_str::<serde_json::Value>(jwk).ok(),
                Some(thumbprint.as_str()),
            ),
            KeySource::JwksUri(_) => (None, None),
        };
        let mut map = serializer.serialize_map(None)?;
        key_members(&mut map, key, source, jwk.as_ref(), thumbprint)?;
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
    use keyward_domain::{AlgorithmFamily, KeyStatus};
    use poem_openapi::types::ToJSON;

    use super::*;
    use crate::dto::{KeyDetail, KeyList, KeySummary};

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

    /// `page` written straight from the domain's keys, and as the value tree of the
    /// documented DTO.
    fn page_both_ways(page: &KeyPage, limit: u32, prev_id: u64) -> (String, String) {
        let direct = serde_json::to_string(&PageBody {
            page,
            limit,
            prev_id,
        })
        .unwrap();
        let documented = KeyList {
            keys: page.keys.iter().map(KeySummary::from).collect(),
            total: page.total,
            limit,
            prev_id,
        };
        (direct, tree(&documented))
    }

    #[test]
    fn a_page_is_written_byte_for_byte_as_the_value_tree_would_be() {
        let page = KeyPage {
            keys: keys().into_iter().map(ListedKey::from).collect(),
            total: 3,
        };
        let (direct, documented) = page_both_ways(&page, 50, 0);
        assert_eq!(direct, documented);
        let empty = KeyPage {
            keys: vec![],
            total: 0,
        };
        let (direct, documented) = page_both_ways(&empty, 1, 7);
        assert_eq!(direct, documented);
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
            let direct = serde_json::to_string(&DetailBody(&key)).unwrap();
            assert_eq!(direct, tree(&KeyDetail::from(key)));
        }
    }
}
