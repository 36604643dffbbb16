//! The records keyward keeps: registered keys, their status, and the audit trail.

use std::fmt;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::ids::{Email, EnterpriseId, KeyId, KeyName};
use crate::jwk::AlgorithmFamily;

/// A point in time, in milliseconds since the Unix epoch (UTC). Stored as a plain integer
/// so both databases hold the same value and ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus_seconds(self, seconds: i64) -> Self {
        Self(self.0.saturating_add(seconds.saturating_mul(1000)))
    }

    /// RFC 3339, UTC, with exactly three fractional digits: `2026-01-12T10:30:00.000Z`.
    pub fn to_rfc3339(self) -> String {
        self.rfc3339().as_str().to_owned()
    }

    /// [`Self::to_rfc3339`] without an allocation (for the years 0 to 9999): a page of
    /// keys writes dozens of these straight into its body.
    ///
    /// Written digit by digit: the formatting machinery cost more than the rest of a
    /// page's conversion.
    pub fn rfc3339(self) -> TimestampText {
        let secs = self.0.div_euclid(1000);
        let millis = self.0.rem_euclid(1000);
        let date = OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let Ok(year) = u16::try_from(date.year()) else {
            // Before year 0: outside RFC 3339, written as the formatter writes it.
            return TimestampText(Written::Formatted(formatted(date, millis)));
        };
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: u32| {
            for slot in out[at..at + width].iter_mut().rev() {
                *slot = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        // `time` keeps years within four digits.
        put(0, 4, u32::from(year));
        put(5, 2, u32::from(u8::from(date.month())));
        put(8, 2, u32::from(date.day()));
        put(11, 2, u32::from(date.hour()));
        put(14, 2, u32::from(date.minute()));
        put(17, 2, u32::from(date.second()));
        put(20, 3, millis.unsigned_abs() as u32);
        TimestampText(Written::Digits(out))
    }

    /// Parses any RFC 3339 date-time (any offset).
    pub fn parse_rfc3339(raw: &str) -> Option<Self> {
        let date = OffsetDateTime::parse(raw, &Rfc3339).ok()?;
        i64::try_from(date.unix_timestamp_nanos() / 1_000_000)
            .ok()
            .map(Self)
    }
}

/// [`Timestamp::to_rfc3339`] through the formatting machinery.
fn formatted(date: OffsetDateTime, millis: i64) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        date.year(),
        u8::from(date.month()),
        date.day(),
        date.hour(),
        date.minute(),
        date.second(),
        millis
    )
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rfc3339().as_str())
    }
}

/// A [`Timestamp`] written as RFC 3339 ([`Timestamp::rfc3339`]).
#[derive(Debug, Clone)]
pub struct TimestampText(Written);

#[derive(Debug, Clone)]
enum Written {
    /// ASCII digits and separators, every byte written by [`Timestamp::rfc3339`].
    Digits([u8; 24]),
    /// A year outside 0 to 9999.
    Formatted(String),
}

impl TimestampText {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Always ASCII; the empty fallback is never taken.
            Written::Digits(digits) => std::str::from_utf8(digits).unwrap_or_default(),
            Written::Formatted(text) => text,
        }
    }
}

/// The only source of "now" for the use cases, so tests can hold time still.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// A key's lifecycle state. Revocation is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    Active,
    Revoked,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Revoked => "REVOKED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "ACTIVE" => Some(Self::Active),
            "REVOKED" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// Where a key's material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// Registered inline: the canonical public JWK and its RFC 7638 thumbprint.
    Inline {
        algorithm: AlgorithmFamily,
        jwk: String,
        thumbprint: String,
    },
    /// Registered by reference: fetched from this URI when used.
    JwksUri(String),
}

/// A key about to be stored.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: Uuid,
    pub enterprise_id: EnterpriseId,
    pub key_id: KeyId,
    pub key_name: KeyName,
    pub source: KeySource,
    pub created_at: Timestamp,
    pub created_by: Email,
}

/// A key's record: its metadata and its source, in one of two forms. The store returns
/// a key whole, its source with its material ([`StoredKey`]); a listing shows neither
/// the JWK nor its thumbprint, so the store does not read them for one ([`ListedKey`];
/// the JWK is the longest value of a key's row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord<S> {
    pub id: Uuid,
    pub enterprise_id: String,
    pub key_id: String,
    pub key_name: String,
    pub source: S,
    pub status: KeyStatus,
    pub created_at: Timestamp,
    pub created_by: String,
    pub revoked_at: Option<Timestamp>,
    pub revoked_by: Option<String>,
    pub last_verified_at: Option<Timestamp>,
}

/// A stored key, as the store returns it: with its material.
pub type StoredKey = KeyRecord<KeySource>;

/// A key as a listing shows it: its metadata without its material.
pub type ListedKey = KeyRecord<ListedSource>;

impl<S> KeyRecord<S> {
    /// The same record with its source replaced by what `f` makes of it, or `f`'s error.
    pub fn try_map_source<T, E>(
        self,
        f: impl FnOnce(S) -> Result<T, E>,
    ) -> Result<KeyRecord<T>, E> {
        Ok(KeyRecord {
            source: f(self.source)?,
            id: self.id,
            enterprise_id: self.enterprise_id,
            key_id: self.key_id,
            key_name: self.key_name,
            status: self.status,
            created_at: self.created_at,
            created_by: self.created_by,
            revoked_at: self.revoked_at,
            revoked_by: self.revoked_by,
            last_verified_at: self.last_verified_at,
        })
    }
}

impl StoredKey {
    pub fn algorithm(&self) -> Option<AlgorithmFamily> {
        match &self.source {
            KeySource::Inline { algorithm, .. } => Some(*algorithm),
            KeySource::JwksUri(_) => None,
        }
    }

    pub fn jwks_uri(&self) -> Option<&str> {
        match &self.source {
            KeySource::JwksUri(uri) => Some(uri),
            KeySource::Inline { .. } => None,
        }
    }
}

impl ListedKey {
    pub fn algorithm(&self) -> Option<AlgorithmFamily> {
        match &self.source {
            ListedSource::Inline(algorithm) => Some(*algorithm),
            ListedSource::JwksUri(_) => None,
        }
    }

    pub fn jwks_uri(&self) -> Option<&str> {
        match &self.source {
            ListedSource::JwksUri(uri) => Some(uri),
            ListedSource::Inline(_) => None,
        }
    }
}

/// How a listed key was registered: inline (its algorithm family) or by jwksUri.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListedSource {
    Inline(AlgorithmFamily),
    JwksUri(String),
}

impl From<KeySource> for ListedSource {
    fn from(source: KeySource) -> Self {
        match source {
            KeySource::Inline { algorithm, .. } => Self::Inline(algorithm),
            KeySource::JwksUri(uri) => Self::JwksUri(uri),
        }
    }
}

impl From<StoredKey> for ListedKey {
    fn from(key: StoredKey) -> Self {
        let Ok(listed) =
            key.try_map_source(|source| Ok::<_, std::convert::Infallible>(source.into()));
        listed
    }
}

/// One page of a key listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<ListedKey>,
    pub total: u64,
}

/// Who did something, and under which request: recorded with every audit event.
#[derive(Debug, Clone)]
pub struct AuditContext {
    pub actor: Email,
    pub request_id: String,
}

/// What happened to a key, as the audit trail records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    Register,
    Revoke,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Register => "REGISTER",
            Self::Revoke => "REVOKE",
        }
    }
}

/// One line of the audit trail. Append-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: Timestamp,
    pub enterprise_id: String,
    pub key_id: String,
    pub actor: String,
    pub action: String,
    /// `OK` or the contract code of the refusal.
    pub outcome: String,
    pub request_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_the_formatter_would() {
        let reference = |t: Timestamp| {
            let date = OffsetDateTime::from_unix_timestamp(t.0.div_euclid(1000)).unwrap();
            formatted(date, t.0.rem_euclid(1000))
        };
        let mut millis: i64 = 1;
        let mut samples = vec![
            0,
            -1,
            999,
            1000,
            253_402_300_799_999,
            -62_167_219_200_000,
            // Before year 0, written by the formatter.
            -62_167_219_200_001,
        ];
        for _ in 0..2000 {
            // A spread of instants from 1970 to 9999, and their mirror before 1970.
            millis = (millis
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1))
            .rem_euclid(253_402_300_800_000);
            samples.push(millis);
            samples.push(-(millis % 62_167_219_200_000));
        }
        for millis in samples {
            let t = Timestamp::from_millis(millis);
            assert_eq!(t.to_rfc3339(), reference(t), "{millis}");
        }
    }

    #[test]
    fn timestamps_format_with_milliseconds() {
        assert_eq!(
            Timestamp::from_millis(0).to_rfc3339(),
            "1970-01-01T00:00:00.000Z"
        );
        let t = Timestamp::from_millis(1_768_213_800_007);
        assert_eq!(t.to_rfc3339(), "2026-01-12T10:30:00.007Z");
        assert_eq!(
            Timestamp::parse_rfc3339("2026-01-12T10:30:00.007Z"),
            Some(t)
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-01-12T11:30:00.007+01:00"),
            Some(t)
        );
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }
}
