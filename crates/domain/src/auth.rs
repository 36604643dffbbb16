//! Bearer tokens and who they stand for.
//!
//! A token looks like `kw_<id>_<secret>`. Only the SHA-256 of the whole token is stored;
//! the `<id>` part finds the record, and the hash is compared in constant time. The
//! `kw_<id>` prefix is safe to show and names the token for revocation.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ids::{Email, EnterpriseId};
use crate::model::Timestamp;

/// A member's role in an enterprise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(Self::Admin),
            "member" => Some(Self::Member),
            _ => None,
        }
    }
}

const PREFIX: &str = "kw_";

/// A freshly issued token. The secret exists only in this value and on the user's side.
#[derive(Debug)]
pub struct IssuedToken {
    pub id: String,
    pub token: String,
    pub hash: Vec<u8>,
}

impl IssuedToken {
    /// Builds a token from 8 random bytes for its id and 32 for its secret. The caller
    /// supplies the randomness so that the domain does no IO.
    pub fn from_random(id_bytes: [u8; 8], secret: [u8; 32]) -> Self {
        let id: String = id_bytes.iter().map(|b| format!("{b:02x}")).collect();
        let token = format!("{PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(secret));
        let hash = hash_token(&token);
        Self { id, token, hash }
    }
}

/// The stored hash of a token.
pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The record id inside a presented token, if the token has the right shape.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (id_ok && secret.len() == 43).then_some(id)
}

/// Accepts a token id, its `kw_<id>` prefix or a whole token, and returns the id.
pub fn token_id_from_reference(reference: &str) -> Option<&str> {
    let reference = reference.trim();
    let rest = reference.strip_prefix(PREFIX).unwrap_or(reference);
    let id = rest.split('_').next().unwrap_or(rest);
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// What the store knows about a presented token, and the bearer's role in the enterprise
/// the request names (fetched together, in one round trip).
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub hash: Vec<u8>,
    pub expires_at: Option<Timestamp>,
    pub revoked: bool,
    pub email: String,
    pub role: Option<Role>,
    /// The store's auth epoch when the grant was read (see `KeyStore::auth_epoch`).
    pub epoch: i64,
}

impl TokenGrant {
    /// True when the presented token matches this record and is still usable.
    pub fn is_valid_for(&self, presented: &str, now: Timestamp) -> bool {
        let matches: bool = hash_token(presented).ct_eq(&self.hash).into();
        matches && !self.revoked && self.expires_at.is_none_or(|exp| now < exp)
    }
}

/// Proof that the bearer is an admin of `enterprise`. Only [`crate::KeyService::authorize`]
/// makes one, and every key operation requires one, so a handler that forgets the check
/// does not compile.
#[must_use]
#[derive(Debug, Clone)]
pub struct EnterpriseAdmin {
    pub(crate) enterprise: EnterpriseId,
    pub(crate) email: Email,
}

impl EnterpriseAdmin {
    pub fn enterprise(&self) -> &EnterpriseId {
        &self.enterprise
    }

    pub fn email(&self) -> &Email {
        &self.email
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip() {
        let issued = IssuedToken::from_random([0xab; 8], [7; 32]);
        assert_eq!(token_id(&issued.token), Some(issued.id.as_str()));
        assert_eq!(
            token_id_from_reference(&issued.token),
            Some(issued.id.as_str())
        );
        assert_eq!(
            token_id_from_reference(&format!("kw_{}", issued.id)),
            Some(issued.id.as_str())
        );
        assert_eq!(
            token_id_from_reference(&issued.id),
            Some(issued.id.as_str())
        );
        assert_eq!(token_id("kw_abc_def"), None);
        assert_eq!(token_id("Bearer x"), None);
        assert_eq!(token_id_from_reference("nonsense"), None);
    }

    #[test]
    fn grant_checks_hash_expiry_and_revocation() {
        let issued = IssuedToken::from_random([1; 8], [2; 32]);
        let grant = TokenGrant {
            hash: issued.hash.clone(),
            expires_at: Some(Timestamp::from_millis(1000)),
            revoked: false,
            email: "a@b.c".into(),
            role: Some(Role::Admin),
            epoch: 0,
        };
        assert!(grant.is_valid_for(&issued.token, Timestamp::from_millis(999)));
        assert!(!grant.is_valid_for(&issued.token, Timestamp::from_millis(1000)));
        let mut tampered = issued.token.clone();
        let last = tampered.pop();
        tampered.push(if last == Some('A') { 'B' } else { 'A' });
        assert!(!grant.is_valid_for(&tampered, Timestamp::from_millis(0)));
        let revoked = TokenGrant {
            revoked: true,
            ..grant
        };
        assert!(!revoked.is_valid_for(&issued.token, Timestamp::from_millis(0)));
    }
}
