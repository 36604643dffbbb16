//! Identifiers that cannot hold an invalid value: once constructed, an `EnterpriseId` or a
//! `KeyId` is known to satisfy the contract's rules everywhere it travels.

use std::fmt;

use crate::DomainError;

/// An enterprise id: 1–64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnterpriseId(String);

impl EnterpriseId {
    pub const MAX_LEN: usize = 64;

    /// Parses an enterprise id; `None` when it breaks the rules. Callers on the request
    /// path treat `None` as "no such enterprise" so that nothing is revealed.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnterpriseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key id chosen by the enterprise: 1–255 characters, no whitespace, no control
/// characters, no `/` (it is a path segment of the key's URL).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    pub const MAX_CHARS: usize = 255;

    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let chars = raw.chars().count();
        if chars == 0 {
            return Err(DomainError::InvalidKeyId(
                "the keyId is empty; use 1 to 255 characters, for example 'my-key-v2'".into(),
            ));
        }
        if chars > Self::MAX_CHARS {
            return Err(DomainError::InvalidKeyId(format!(
                "the keyId is {chars} characters long; use at most {} characters",
                Self::MAX_CHARS
            )));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(DomainError::InvalidKeyId(
                "the keyId contains whitespace or a control character; use visible characters only, for example 'my-key-v2'".into(),
            ));
        }
        if raw.contains('/') {
            return Err(DomainError::InvalidKeyId(
                "the keyId contains '/'; choose a keyId without slashes, for example 'my-key-v2'"
                    .into(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A human-readable key name: 1–255 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(String);

impl KeyName {
    pub const MAX_CHARS: usize = 255;

    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let chars = raw.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS {
            return Err(DomainError::InvalidRequest(format!(
                "keyName must be 1 to {} characters long (it has {chars}); omit it to default to the keyId",
                Self::MAX_CHARS
            )));
        }
        if raw.chars().any(char::is_control) {
            return Err(DomainError::InvalidRequest(
                "keyName contains a control character; use printable text".into(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn from_key_id(key_id: &KeyId) -> Self {
        Self(key_id.as_str().to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user's email address, as the identity records hold it (trimmed, lower-cased).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let email = raw.trim().to_ascii_lowercase();
        let valid = email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
        if valid {
            Ok(Self(email))
        } else {
            Err(DomainError::InvalidRequest(format!(
                "'{}' is not an email address; use the form name@example.com",
                raw.escape_debug()
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enterprise_ids_follow_the_pattern() {
        assert!(EnterpriseId::parse("acme_Corp-1").is_some());
        assert!(EnterpriseId::parse(&"a".repeat(64)).is_some());
        assert!(EnterpriseId::parse(&"a".repeat(65)).is_none());
        assert!(EnterpriseId::parse("").is_none());
        assert!(EnterpriseId::parse("acme corp").is_none());
        assert!(EnterpriseId::parse("acmé").is_none());
        assert!(EnterpriseId::parse("../x").is_none());
    }

    #[test]
    fn key_ids_follow_the_rules() {
        assert!(KeyId::parse("my-key-v2").is_ok());
        assert!(KeyId::parse("urn:key@x+%41").is_ok());
        assert!(KeyId::parse(&"é".repeat(255)).is_ok());
        for bad in ["", "a b", "a\tb", "a\u{0}b", "a/b", "a\u{2003}b"] {
            assert_eq!(
                KeyId::parse(bad).map_err(|e| e.code()),
                Err("INVALID_KEY_ID"),
                "{bad:?}"
            );
        }
        assert!(KeyId::parse(&"k".repeat(256)).is_err());
    }

    #[test]
    fn key_names_are_bounded() {
        assert!(KeyName::parse("Production Webhook Key").is_ok());
        assert!(KeyName::parse(&"n".repeat(256)).is_err());
        assert!(KeyName::parse("").is_err());
        assert!(KeyName::parse("a\u{7}").is_err());
    }
}
