//! The one error type of keyward's rules. Each variant is a code of the contract, so the
//! HTTP layer can map it to a status without knowing any rule.

use thiserror::Error;

/// Everything a use case can refuse, plus the two ways its storage can fail.
///
/// The messages are written for the person reading the error body: each says what went
/// wrong and what to do about it. None of them ever quotes key material or a token.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DomainError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidJwks(String),
    #[error("{0}")]
    UnsupportedKeyType(String),
    #[error("the JWK contains private key material ({0}); send only the public key and keep the private key secret")]
    PrivateKeyMaterial(String),
    #[error("{0}")]
    InvalidJwk(String),
    #[error("{0}")]
    AlgorithmMismatch(String),
    #[error("the request's keyId ({body}) differs from the JWK's kid ({kid}); send the same value in both, or only one of them")]
    KeyIdMismatch { body: String, kid: String },
    #[error("{0}")]
    KeyIdRequired(String),
    #[error("{0}")]
    InvalidKeyId(String),
    #[error("{0}")]
    InvalidJwksUri(String),
    #[error("the keyId '{0}' has already been used in this enterprise; keyIds are never reused, even after revocation, so register the key under a new keyId (for example with a version suffix)")]
    KeyIdAlreadyUsed(String),
    #[error("this public key is already registered in this enterprise under the keyId '{0}'; a key cannot be registered twice, not even after revocation, so generate a new key pair")]
    KeyAlreadyRegistered(String),
    #[error("this enterprise already has {0} active keys, the most allowed; revoke a key you no longer use, then register again")]
    ActiveKeyLimitReached(u32),
    #[error("no key with keyId '{0}' is registered in this enterprise; list the keys to see which exist")]
    KeyNotFound(String),
    #[error("the key '{0}' is already revoked; revocation is permanent, nothing more to do")]
    KeyAlreadyRevoked(String),
    #[error("a valid bearer token is required: send 'Authorization: Bearer <token>' with a token issued by 'keyward admin token issue'")]
    Unauthenticated,
    #[error("you are not an administrator of this enterprise; ask one of its administrators to add you with the admin role")]
    Forbidden,
    /// The store cannot be reached now; the caller may retry.
    #[error("the service cannot reach its database right now; retry in a few seconds")]
    Unavailable(String),
    /// A bug or an unexpected storage failure. The text is for the log only.
    #[error("internal error")]
    Internal(String),
}

impl DomainError {
    /// The contract's code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "INVALID_REQUEST",
            Self::InvalidJwks(_) => "INVALID_JWKS",
            Self::UnsupportedKeyType(_) => "UNSUPPORTED_KEY_TYPE",
            Self::PrivateKeyMaterial(_) => "PRIVATE_KEY_MATERIAL",
            Self::InvalidJwk(_) => "INVALID_JWK",
            Self::AlgorithmMismatch(_) => "ALGORITHM_MISMATCH",
            Self::KeyIdMismatch { .. } => "KEY_ID_MISMATCH",
            Self::KeyIdRequired(_) => "KEY_ID_REQUIRED",
            Self::InvalidKeyId(_) => "INVALID_KEY_ID",
            Self::InvalidJwksUri(_) => "INVALID_JWKS_URI",
            Self::KeyIdAlreadyUsed(_) => "KEY_ID_ALREADY_USED",
            Self::KeyAlreadyRegistered(_) => "KEY_ALREADY_REGISTERED",
            Self::ActiveKeyLimitReached(_) => "ACTIVE_KEY_LIMIT_REACHED",
            Self::KeyNotFound(_) => "KEY_NOT_FOUND",
            Self::KeyAlreadyRevoked(_) => "KEY_ALREADY_REVOKED",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::Unavailable(_) => "SERVICE_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL_ERROR",
        }
    }
}

/// How a port (storage) call can fail. Rule outcomes are values, not errors.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Internal(String),
}

impl From<StoreError> for DomainError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(detail) => DomainError::Unavailable(detail),
            StoreError::Internal(detail) => DomainError::Internal(detail),
        }
    }
}
