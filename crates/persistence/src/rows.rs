//! Rows as Diesel reads and writes them: a read model beside an insert model that borrows.

use diesel::prelude::*;
use keyward_domain::{
    AlgorithmFamily, AuditEvent, KeySource, KeyStatus, ListedKey, ListedSource, StoreError,
    StoredKey, Timestamp,
};
use uuid::Uuid;

use crate::schema::{audit_events, webhook_keys};

/// A key's whole row: what a listing reads of it, its enterprise and its material.
#[derive(Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = webhook_keys)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub struct KeyRow {
    #[diesel(embed)]
    pub listed: ListedKeyRow,
    pub enterprise_id: String,
    pub jwk: Option<String>,
    pub thumbprint: Option<String>,
}

impl TryFrom<KeyRow> for StoredKey {
    type Error = StoreError;

    fn try_from(row: KeyRow) -> Result<Self, StoreError> {
        let listed = row.listed.into_listed(row.enterprise_id)?;
        let id = listed.id;
        listed.try_map_source(|source| match (source, row.jwk, row.thumbprint) {
            (ListedSource::Inline(algorithm), Some(jwk), Some(thumbprint)) => {
                Ok(KeySource::Inline {
                    algorithm,
                    jwk,
                    thumbprint,
                })
            }
            (ListedSource::JwksUri(uri), None, None) => Ok(KeySource::JwksUri(uri)),
            _ => Err(corrupt(id, "an inconsistent key source")),
        })
    }
}

/// The error for a key row holding what no write of keyward's leaves.
fn corrupt(id: impl std::fmt::Display, what: &str) -> StoreError {
    StoreError::Internal(format!("webhook_keys row {id} has {what}"))
}

/// A key's row as a listing reads it: no material, no enterprise (the listing names it).
#[derive(Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = webhook_keys)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub struct ListedKeyRow {
    pub id: String,
    pub key_id: String,
    pub key_name: String,
    pub algorithm: Option<String>,
    pub jwks_uri: Option<String>,
    pub status: String,
    pub created_at: i64,
    pub created_by: String,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
    pub last_verified_at: Option<i64>,
}

impl ListedKeyRow {
    /// The listed key this row of `enterprise_id`'s holds.
    pub fn into_listed(self, enterprise_id: String) -> Result<ListedKey, StoreError> {
        let source = match (self.algorithm.as_deref(), self.jwks_uri) {
            (Some(alg), None) => ListedSource::Inline(
                AlgorithmFamily::parse(alg)
                    .ok_or_else(|| corrupt(&self.id, "an unknown algorithm"))?,
            ),
            (None, Some(uri)) => ListedSource::JwksUri(uri),
            _ => return Err(corrupt(&self.id, "an inconsistent key source")),
        };
        Ok(ListedKey {
            id: Uuid::parse_str(&self.id).map_err(|_| corrupt(&self.id, "a malformed id"))?,
            enterprise_id,
            key_id: self.key_id,
            key_name: self.key_name,
            source,
            status: KeyStatus::parse(&self.status)
                .ok_or_else(|| corrupt(&self.id, "an unknown status"))?,
            created_at: Timestamp::from_millis(self.created_at),
            created_by: self.created_by,
            revoked_at: self.revoked_at.map(Timestamp::from_millis),
            revoked_by: self.revoked_by,
            last_verified_at: self.last_verified_at.map(Timestamp::from_millis),
        })
    }
}

/// A registration's row, as each backend's insert statement binds it (status ACTIVE).
#[derive(Debug)]
pub struct NewKeyRow<'a> {
    pub id: String,
    pub enterprise_id: &'a str,
    pub key_id: &'a str,
    pub key_name: &'a str,
    pub algorithm: Option<&'a str>,
    pub jwks_uri: Option<&'a str>,
    pub jwk: Option<&'a str>,
    pub thumbprint: Option<&'a str>,
    pub created_at: i64,
    pub created_by: &'a str,
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = audit_events)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub struct AuditRow {
    pub at: i64,
    pub enterprise_id: String,
    pub key_id: String,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub request_id: String,
}

impl From<AuditRow> for AuditEvent {
    fn from(row: AuditRow) -> Self {
        AuditEvent {
            at: Timestamp::from_millis(row.at),
            enterprise_id: row.enterprise_id,
            key_id: row.key_id,
            actor: row.actor,
            action: row.action,
            outcome: row.outcome,
            request_id: row.request_id,
        }
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = audit_events)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub struct NewAuditRow<'a> {
    pub at: i64,
    pub enterprise_id: &'a str,
    pub key_id: &'a str,
    pub actor: &'a str,
    pub action: &'a str,
    pub outcome: &'a str,
    pub request_id: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(algorithm: Option<&str>, jwks_uri: Option<&str>) -> ListedKeyRow {
        ListedKeyRow {
            id: "6f1c0c52-0000-4000-8000-000000000001".into(),
            key_id: "k".into(),
            key_name: "k".into(),
            algorithm: algorithm.map(Into::into),
            jwks_uri: jwks_uri.map(Into::into),
            status: "ACTIVE".into(),
            created_at: 1_000,
            created_by: "admin@acme.test".into(),
            revoked_at: None,
            revoked_by: None,
            last_verified_at: Some(2_000),
        }
    }

    fn listed_in_acme(row: ListedKeyRow) -> Result<ListedKey, StoreError> {
        row.into_listed("acme".into())
    }

    fn whole(listed: ListedKeyRow, material: Option<(&str, &str)>) -> KeyRow {
        KeyRow {
            listed,
            enterprise_id: "acme".into(),
            jwk: material.map(|(jwk, _)| jwk.into()),
            thumbprint: material.map(|(_, thumbprint)| thumbprint.into()),
        }
    }

    #[test]
    fn a_whole_row_is_its_listing_with_its_enterprise_and_material() {
        let inline = StoredKey::try_from(whole(listed(Some("EdDSA"), None), Some(("{}", "T"))))
            .expect("inline");
        assert_eq!(inline.enterprise_id, "acme");
        assert_eq!(
            inline.source,
            KeySource::Inline {
                algorithm: AlgorithmFamily::EdDsa,
                jwk: "{}".into(),
                thumbprint: "T".into(),
            }
        );
        assert_eq!(inline.last_verified_at, Some(Timestamp::from_millis(2_000)));
        assert_eq!(
            ListedKey::from(inline),
            listed_in_acme(listed(Some("EdDSA"), None)).expect("listed")
        );
        let by_uri = StoredKey::try_from(whole(listed(None, Some("https://a.test/j")), None))
            .expect("by uri");
        assert_eq!(by_uri.source, KeySource::JwksUri("https://a.test/j".into()));
    }

    #[test]
    fn rows_no_write_leaves_are_internal_errors_naming_the_row() {
        let refused = [
            StoredKey::try_from(whole(listed(Some("EdDSA"), None), None)).err(),
            StoredKey::try_from(whole(
                listed(None, Some("https://a.test/j")),
                Some(("{}", "T")),
            ))
            .err(),
            listed_in_acme(listed(Some("EdDSA"), Some("https://a.test/j"))).err(),
            listed_in_acme(listed(None, None)).err(),
            listed_in_acme(listed(Some("RS256"), None)).err(),
            listed_in_acme(ListedKeyRow {
                status: "LOST".into(),
                ..listed(Some("EdDSA"), None)
            })
            .err(),
            listed_in_acme(ListedKeyRow {
                id: "not-a-uuid".into(),
                ..listed(Some("EdDSA"), None)
            })
            .err(),
        ];
        for (i, refused) in refused.into_iter().enumerate() {
            match refused {
                Some(StoreError::Internal(message)) => {
                    assert!(message.starts_with("webhook_keys row "), "{i}: {message}");
                }
                other => panic!("{i}: {other:?}"),
            }
        }
    }
}
