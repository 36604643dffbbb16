//! The ports: what the use cases need from storage, as traits the persistence crate
//! implements. Most are synchronous, and the HTTP layer runs them off the async
//! workers; the ones a store may serve several callers at once with (`fetch_key`,
//! `fetch_page`, `submit_verification`) hand their answer to a callback instead, which
//! the caller awaits without holding a thread.
//!
//! Outcomes that are rules (a keyId already used, a limit reached) come back as values;
//! [`StoreError`] is only for the store itself failing.

use std::sync::Arc;

use uuid::Uuid;

use crate::auth::{Role, TokenGrant};
use crate::ids::{Email, EnterpriseId, KeyId};
use crate::model::{AuditContext, AuditEvent, KeyPage, KeyStatus, NewKey, StoredKey, Timestamp};
use crate::StoreError;

/// The result of trying to store a new key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    Inserted(Box<StoredKey>),
    /// The keyId exists in the enterprise, active or revoked (a tombstone).
    KeyIdTaken,
    /// The same public key is registered under this other keyId.
    ThumbprintTaken {
        key_id: String,
    },
    /// The enterprise already has `max_active` active keys.
    LimitReached,
}

/// The result of trying to revoke a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked(Box<StoredKey>),
    NotFound,
    AlreadyRevoked,
}

/// A token's grant for one enterprise, and its holder's roles in the enterprises after
/// it (see [`KeyStore::token_grant_and_following`]).
pub type GrantWindow = (TokenGrant, Vec<(String, Role)>);

/// Storage for keys. Each write is one transaction that also appends its audit event.
pub trait KeyStore: Send + Sync {
    /// Looks up a token by id together with its holder's role in `enterprise` (no role
    /// when `enterprise` is `None`).
    fn token_grant(
        &self,
        token_id: &str,
        enterprise: Option<&EnterpriseId>,
    ) -> Result<Option<TokenGrant>, StoreError>;

    /// [`Self::token_grant`] for `enterprise`, together with the holder's memberships in
    /// the enterprises that follow it in id order (at most `following`), read at once:
    /// a token used across many enterprises then needs one read per window of them
    /// instead of one per enterprise. By default, the grant alone (no following
    /// memberships), for stores that cannot read a window.
    fn token_grant_and_following(
        &self,
        token_id: &str,
        enterprise: &EnterpriseId,
        _following: u32,
    ) -> Result<Option<GrantWindow>, StoreError> {
        Ok(self
            .token_grant(token_id, Some(enterprise))?
            .map(|grant| (grant, Vec::new())))
    }

    /// The counter that every change to a token or a membership increases (token
    /// revoked, membership added, changed or removed: a grant read before may now be
    /// too generous, or a refusal too strict). A grant read at epoch `e` is still
    /// current while the store's epoch is at most `e`.
    fn auth_epoch(&self) -> Result<i64, StoreError> {
        Ok(0)
    }

    /// Stores `key` unless its keyId or thumbprint is taken or the enterprise has
    /// `max_active` active keys. Race-free: enforced by the database, not by a prior read.
    /// Refusals are audited too.
    fn insert_key(
        &self,
        key: &NewKey,
        max_active: u32,
        audit: &AuditContext,
    ) -> Result<InsertOutcome, StoreError>;

    fn list_keys(
        &self,
        enterprise: &EnterpriseId,
        status: Option<KeyStatus>,
        limit: u32,
        offset: u64,
    ) -> Result<KeyPage, StoreError>;

    /// [`Self::list_keys`], with the page handed to `done` (on some thread of the
    /// store's) instead of returned: a store may read the same page asked for by
    /// several requests at the same time once, and answer each with it. By default,
    /// reads at once, on the caller's thread.
    fn fetch_page(
        &self,
        enterprise: &EnterpriseId,
        status: Option<KeyStatus>,
        limit: u32,
        offset: u64,
        done: PageFetched,
    ) {
        done(
            self.list_keys(enterprise, status, limit, offset)
                .map(Arc::new),
        );
    }

    fn get_key(
        &self,
        enterprise: &EnterpriseId,
        key_id: &str,
    ) -> Result<Option<StoredKey>, StoreError>;

    /// [`Self::get_key`], with the answer handed to `done` (on some thread of the
    /// store's) instead of returned: a store may read the keys asked for at the same
    /// time together. By default, reads at once, on the caller's thread.
    fn fetch_key(&self, enterprise: &EnterpriseId, key_id: &str, done: KeyFetched) {
        done(self.get_key(enterprise, key_id));
    }

    /// Marks an active key revoked, once: of concurrent calls exactly one succeeds.
    fn revoke_key(
        &self,
        enterprise: &EnterpriseId,
        key_id: &KeyId,
        at: Timestamp,
        audit: &AuditContext,
    ) -> Result<RevokeOutcome, StoreError>;
}

/// The result of an administrative write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOutcome {
    Done,
    AlreadyExists,
    NotFound,
}

/// Storage for the operator's administration: enterprises, users, memberships, tokens
/// and reading the audit trail.
pub trait AdminStore: Send + Sync {
    fn create_enterprise(
        &self,
        id: &EnterpriseId,
        name: &str,
        at: Timestamp,
    ) -> Result<AdminOutcome, StoreError>;
    fn create_user(
        &self,
        id: Uuid,
        email: &Email,
        at: Timestamp,
    ) -> Result<AdminOutcome, StoreError>;
    /// Adds the user to the enterprise, or changes their role. `NotFound` when either is missing.
    fn set_membership(
        &self,
        enterprise: &EnterpriseId,
        email: &Email,
        role: Role,
        at: Timestamp,
    ) -> Result<AdminOutcome, StoreError>;
    /// `NotFound` when the user is missing.
    fn insert_token(
        &self,
        id: &str,
        email: &Email,
        hash: &[u8],
        created_at: Timestamp,
        expires_at: Option<Timestamp>,
    ) -> Result<AdminOutcome, StoreError>;
    fn revoke_token(&self, id: &str, at: Timestamp) -> Result<AdminOutcome, StoreError>;
    fn audit_events(
        &self,
        enterprise: &EnterpriseId,
        since: Option<Timestamp>,
    ) -> Result<Vec<AuditEvent>, StoreError>;
}

/// Whether the store can serve requests now: reachable, with its schema current.
pub trait ReadinessProbe: Send + Sync {
    fn ready(&self) -> Result<bool, StoreError>;

    /// Connections in use and idle, for monitoring.
    fn connections(&self) -> Option<(u32, u32)> {
        None
    }
}

/// The result of recording a successful verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// First success for this evaluationId: recorded durably.
    Recorded,
    /// This evaluationId already verified once.
    Replayed,
    /// The key was revoked while the token was being checked.
    KeyRevoked,
}

/// Storage for verification: the replay records.
pub trait VerificationStore: Send + Sync {
    /// Records that `evaluation_id` verified with `key_id`, unless it already did, in one
    /// transaction that also confirms the key is still active (and holds it so a
    /// concurrent revocation waits); then stamps the key's last verification, at most
    /// once a minute.
    fn record_verification(
        &self,
        enterprise: &EnterpriseId,
        evaluation_id: &str,
        key_id: &str,
        at: Timestamp,
        keep_until: Timestamp,
    ) -> Result<RecordOutcome, StoreError>;

    /// [`Self::record_verification`] without waiting: `done` is called with the outcome
    /// once it is durable (or has failed), possibly on another thread. Lets a caller
    /// on an event loop wait without holding a thread.
    fn submit_verification(&self, record: &ReplayRecord, done: RecordDone) {
        done(self.record_verification(
            &record.enterprise,
            &record.evaluation_id,
            &record.key_id,
            record.at,
            record.keep_until,
        ));
    }

    /// Deletes replay records that expired before `now`. Returns how many.
    fn purge_replay_records(&self, now: Timestamp) -> Result<u64, StoreError>;
}

/// A successful verification to record against replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRecord {
    pub enterprise: EnterpriseId,
    pub evaluation_id: String,
    pub key_id: String,
    pub at: Timestamp,
    pub keep_until: Timestamp,
}

/// Called once with the outcome of a submitted record.
pub type RecordDone = Box<dyn FnOnce(Result<RecordOutcome, StoreError>) + Send>;

/// Called once with a key read by [`KeyStore::fetch_key`].
pub type KeyFetched = Box<dyn FnOnce(Result<Option<StoredKey>, StoreError>) + Send>;

/// Called once with a page read by [`KeyStore::fetch_page`] (shared by every request
/// that asked for the same page at the same time).
pub type PageFetched = Box<dyn FnOnce(Result<Arc<KeyPage>, StoreError>) + Send>;

/// What a JWKS URI said about a kid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksLookup {
    /// The key, already validated exactly like an inline one.
    Found(crate::PublicJwk),
    /// The JWKS has no usable key with this kid.
    NotFound,
    /// The JWKS could not be fetched or read.
    Unavailable(String),
}

/// How long, in seconds, a JWKS source waits before fetching a set again for a kid it
/// lacked: the refusal's message tells the signer to retry after it.
pub const JWKS_UNKNOWN_KID_COOLDOWN_SECS: u64 = 30;

/// Fetches keys registered by jwksUri, refetching a set for a kid it lacks at most once
/// per [`JWKS_UNKNOWN_KID_COOLDOWN_SECS`].
pub trait JwksSource: Send + Sync {
    fn find(&self, uri: &str, kid: &str) -> JwksLookup;
}

/// A source for deployments that fetch nothing: every lookup is unavailable.
#[derive(Debug, Default)]
pub struct NoJwksSource;

impl JwksSource for NoJwksSource {
    fn find(&self, _uri: &str, _kid: &str) -> JwksLookup {
        JwksLookup::Unavailable("fetching JWKS URIs is not configured".into())
    }
}
