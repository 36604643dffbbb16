//! keyward's domain: the rules for webhook signing keys, with no IO.
//!
//! An enterprise registers the public half of the key that signs its webhook answers
//! ([`RegisterKey`], [`PublicJwk`], [`JwksUri`]), lists, reads and revokes it
//! ([`KeyService`]), and the platform later uses it to check those answers. Storage is
//! reached through the ports in [`ports`]; every refusal is a [`DomainError`] whose
//! variant is the contract's code.

pub mod auth;
pub mod crypto;
mod error;
pub mod ids;
pub mod json;
pub mod jwk;
pub mod jwks_uri;
pub mod model;
pub mod net;
pub mod ports;
pub mod register;
mod service;
pub mod verify;

pub use auth::{EnterpriseAdmin, IssuedToken, Role, TokenGrant};
pub use error::{DomainError, StoreError};
pub use ids::{Email, EnterpriseId, KeyId, KeyName};
pub use jwk::{AlgorithmFamily, Curve, PublicJwk, Thumbprint};
pub use jwks_uri::{InsecureHosts, JwksUri};
pub use model::{
    AuditAction, AuditContext, AuditEvent, Clock, KeyPage, KeyRecord, KeySource, KeyStatus,
    ListedKey, ListedSource, NewKey, StoredKey, Timestamp, TimestampText,
};
pub use register::{KeyMaterial, RegisterKey};
pub use service::{
    AdminService, CheckedToken, KeyAnswer, KeyService, KeyToLoad, Listed, PageAnswer,
    PendingVerification, Policy, SignatureCheck, SignatureDone, Verification, VerifyStep,
    AUTH_EPOCH_POLL_MILLIS, GRANT_CACHE_MILLIS, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX,
    REPLAY_RETENTION_SECONDS,
};
pub use verify::Rejection;
