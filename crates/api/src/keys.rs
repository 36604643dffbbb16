//! The key operations: register, list, get and revoke.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use keyward_domain::{DomainError, KeyPage, Listed};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi, Tags};

use crate::auth::AdminAuth;
use crate::body::JsonBody;
use crate::direct::{render, DetailBody, Direct, PageBody};
use crate::dto::{KeyDetail, KeyList, RegisterKeyRequest, RegisteredKey, Revoked, Status};
use crate::error::error_responses;
use crate::state::{answered, blocking, AppState, RequestId};
use crate::BASE_PATH;

#[derive(Tags)]
enum ApiTags {
    /// Register, list, read and revoke the public keys that sign webhook responses.
    #[oai(rename = "Webhook keys")]
    WebhookKeys,
}

/// Characters kept as they are in a path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn key_url(enterprise: &str, key_id: &str) -> String {
    format!(
        "{BASE_PATH}/enterprises/{enterprise}/webhooks/keys/{}",
        utf8_percent_encode(key_id, SEGMENT)
    )
}

#[derive(ApiResponse, Debug)]
enum RegisterResponse {
    /// The key is registered and active.
    #[oai(status = 201)]
    Created(
        Json<RegisteredKey>,
        /// The key's URL.
        #[oai(header = "Location")]
        String,
    ),
}

error_responses!(
    /// Why a registration was refused.
    RegisterError {
        /// The body breaks a rule (`INVALID_REQUEST`, `INVALID_JWKS`, `INVALID_JWK`, `UNSUPPORTED_KEY_TYPE`, `PRIVATE_KEY_MATERIAL`, `ALGORITHM_MISMATCH`, `KEY_ID_MISMATCH`, `KEY_ID_REQUIRED`, `INVALID_KEY_ID`, `INVALID_JWKS_URI`), or the keyId was already used (`KEY_ID_ALREADY_USED`).
        BadRequest = 400,
        /// The same public key is already registered (`KEY_ALREADY_REGISTERED`), or the active-key limit is reached (`ACTIVE_KEY_LIMIT_REACHED`).
        Conflict = 409,
        /// The body is not JSON (`UNSUPPORTED_MEDIA_TYPE`).
        UnsupportedMediaType = 415,
    }
);

#[derive(ApiResponse, Debug)]
enum ListResponse {
    /// One page of keys.
    #[oai(status = 200)]
    Ok(Direct<KeyList>),
}

error_responses!(
    /// Why a listing was refused.
    ListError {
        /// A query parameter is out of range (`INVALID_REQUEST`).
        BadRequest = 400,
    }
);

#[derive(ApiResponse, Debug)]
enum GetResponse {
    /// The key.
    #[oai(status = 200)]
    Ok(Direct<KeyDetail>),
}

error_responses!(
    /// Why a key could not be read.
    GetError {
        /// No key with this keyId (`KEY_NOT_FOUND`).
        NotFound = 404,
    }
);

#[derive(ApiResponse, Debug)]
enum RevokeResponse {
    /// The key is revoked, permanently.
    #[oai(status = 200)]
    Ok(Json<Revoked>),
}

error_responses!(
    /// Why a revocation was refused.
    RevokeError {
        /// No key with this keyId was ever registered (`KEY_NOT_FOUND`).
        NotFound = 404,
        /// The key is already revoked (`KEY_ALREADY_REVOKED`).
        Conflict = 409,
    }
);

/// The key management operations.
pub struct KeysApi;

#[OpenApi(prefix_path = "/api/policy/v1", tag = "ApiTags::WebhookKeys")]
impl KeysApi {
    /// Register a webhook signing key
    ///
    /// Registers a new webhook signing key for an enterprise, inline as a one-key JWKS
    /// or by a JWKS URI. The keyId (the JWK's `kid`, or `keyId` in the body) must be
    /// unique within the enterprise forever: once used, even after revocation, it is
    /// tombstoned. The same public key cannot be registered twice. Recommended rotation:
    /// register `my-key-v2`, switch your signer to it, confirm it verifies, then revoke
    /// `my-key-v1`. Caller must be an admin of the enterprise.
    #[oai(
        path = "/enterprises/:enterpriseId/webhooks/keys",
        method = "post",
        operation_id = "registerKey"
    )]
    async fn register(
        &self,
        auth: AdminAuth,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        /// The enterprise id.
        #[oai(name = "enterpriseId")]
        _enterprise_id: Path<String>,
        body: JsonBody<RegisterKeyRequest>,
    ) -> Result<RegisterResponse, RegisterError> {
        let admin = auth.0;
        let body = body.bytes()?.to_vec();
        let (keys, request_id) = (state.keys.clone(), request_id.0 .0.clone());
        let enterprise = admin.enterprise().as_str().to_owned();
        let key = blocking(move || keys.register(&admin, &body, &request_id)).await?;
        let location = key_url(&enterprise, &key.key_id);
        Ok(RegisterResponse::Created(
            Json(RegisteredKey::from(&key)),
            location,
        ))
    }

    /// List webhook signing keys
    ///
    /// The enterprise's keys in registration order, oldest first, metadata only.
    #[oai(
        path = "/enterprises/:enterpriseId/webhooks/keys",
        method = "get",
        operation_id = "listKeys"
    )]
    async fn list(
        &self,
        auth: AdminAuth,
        state: Data<&AppState>,
        /// The enterprise id.
        #[oai(name = "enterpriseId")]
        _enterprise_id: Path<String>,
        /// Only keys in this state.
        status: Query<Option<Status>>,
        /// Page size, 1–100.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<i64>,
        /// Offset of the first key of the page (0 for the first page).
        #[oai(name = "prevId", default, validator(minimum(value = "0")))]
        prev_id: Query<i64>,
    ) -> Result<ListResponse, ListError> {
        let admin = auth.0;
        let status = status.0.map(|s| s.domain().as_str());
        // The store's key reader reads a page asked for by several requests at the same
        // time once; awaited here, without a thread.
        let listed = answered(
            |done| {
                state
                    .keys
                    .list(&admin, status, Some(limit.0), Some(prev_id.0), done);
            },
            || Err(DomainError::Unavailable("the page read was dropped".into())),
        )
        .await?;
        Ok(ListResponse::Ok(Direct::rendered(
            state.last_page.body(listed),
        )))
    }

    /// Get a webhook signing key
    ///
    /// The key's metadata and, for inline keys, the stored public JWK and its RFC 7638
    /// thumbprint.
    #[oai(
        path = "/enterprises/:enterpriseId/webhooks/keys/:keyId",
        method = "get",
        operation_id = "getKey"
    )]
    async fn get(
        &self,
        auth: AdminAuth,
        state: Data<&AppState>,
        /// The enterprise id.
        #[oai(name = "enterpriseId")]
        _enterprise_id: Path<String>,
        /// The keyId.
        #[oai(name = "keyId")]
        key_id: Path<String>,
    ) -> Result<GetResponse, GetError> {
        let admin = auth.0;
        // The store's key reader reads the keys asked for at the same time together
        // (a key asked for by several requests once); awaited here, without a thread.
        let key = answered(
            |done| state.keys.fetch(&admin, &key_id.0, done),
            || Err(DomainError::Unavailable("the key read was dropped".into())),
        )
        .await?;
        Ok(GetResponse::Ok(Direct::rendered(render(&DetailBody(&key)))))
    }

    /// Revoke a webhook signing key
    ///
    /// Soft delete: the key stays listed as REVOKED for audit, its keyId stays
    /// tombstoned, and it no longer verifies anything. Irreversible.
    #[oai(
        path = "/enterprises/:enterpriseId/webhooks/keys/:keyId",
        method = "delete",
        operation_id = "revokeKey"
    )]
    async fn revoke(
        &self,
        auth: AdminAuth,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        /// The enterprise id.
        #[oai(name = "enterpriseId")]
        _enterprise_id: Path<String>,
        /// The keyId.
        #[oai(name = "keyId")]
        key_id: Path<String>,
    ) -> Result<RevokeResponse, RevokeError> {
        let admin = auth.0;
        let (keys, request_id) = (state.keys.clone(), request_id.0 .0.clone());
        let key = blocking(move || keys.revoke(&admin, &key_id.0, &request_id)).await?;
        let revoked_at = key.revoked_at.unwrap_or(key.created_at);
        Ok(RevokeResponse::Ok(Json(Revoked {
            success: true,
            key_id: key.key_id.clone(),
            revoked_at: revoked_at.into(),
            revoked_by: key.revoked_by.clone().unwrap_or_default(),
        })))
    }
}

/// The body of the page of keys rendered last, with the read it was rendered from: the
/// requests one read of a page answers (see `KeyStore::fetch_page`) share one rendering.
/// A read answers one query (enterprise, status, limit, offset), so its `Arc` names the
/// body; a page read again is a new read, rendered again.
#[derive(Debug, Default)]
pub struct LastPage(Mutex<Option<(Arc<KeyPage>, Bytes)>>);

impl LastPage {
    fn body(&self, listed: Listed) -> Option<Bytes> {
        if let Some((page, body)) = &*self.0.lock().unwrap_or_else(PoisonError::into_inner) {
            if Arc::ptr_eq(page, &listed.page) {
                return Some(body.clone());
            }
        }
        let body = render(&PageBody {
            page: &listed.page,
            limit: listed.limit,
            prev_id: listed.offset,
        })?;
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((listed.page, body.clone()));
        Some(body)
    }
}

fn default_limit() -> i64 {
    i64::from(keyward_domain::LIST_LIMIT_DEFAULT)
}
