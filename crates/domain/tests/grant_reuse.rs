//! Reusing bearer grants through the domain's use case: a token used across many
//! enterprises reads its grants a window at a time, and what a window brings along is
//! decided exactly as a grant read on its own.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use keyward_domain::auth::{IssuedToken, Role, TokenGrant};
use keyward_domain::ports::{GrantWindow, KeyStore, RecordOutcome, VerificationStore};
use keyward_domain::{
    Clock, DomainError, EnterpriseId, KeyService, Policy, StoreError, StoredKey, Timestamp,
};

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(1_768_213_800_000)
    }
}

/// One token whose holder has the given roles; counts the grant reads.
struct Memberships {
    hash: Vec<u8>,
    roles: BTreeMap<String, Role>,
    single_reads: AtomicUsize,
    window_reads: AtomicUsize,
}

impl Memberships {
    fn grant(&self, role: Option<Role>) -> TokenGrant {
        TokenGrant {
            hash: self.hash.clone(),
            expires_at: None,
            revoked: false,
            email: "ops@example.test".into(),
            role,
            epoch: 0,
        }
    }
}

impl KeyStore for Memberships {
    fn token_grant(
        &self,
        _id: &str,
        enterprise: Option<&EnterpriseId>,
    ) -> Result<Option<TokenGrant>, StoreError> {
        self.single_reads.fetch_add(1, Ordering::SeqCst);
        let role = enterprise.and_then(|e| self.roles.get(e.as_str()).copied());
        Ok(Some(self.grant(role)))
    }
    fn token_grant_and_following(
        &self,
        _id: &str,
        enterprise: &EnterpriseId,
        following: u32,
    ) -> Result<Option<GrantWindow>, StoreError> {
        self.window_reads.fetch_add(1, Ordering::SeqCst);
        let role = self.roles.get(enterprise.as_str()).copied();
        let after = self
            .roles
            .range::<str, _>((
                std::ops::Bound::Excluded(enterprise.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take(following as usize)
            .map(|(e, r)| (e.clone(), *r))
            .collect();
        Ok(Some((self.grant(role), after)))
    }
    fn get_key(&self, _e: &EnterpriseId, _k: &str) -> Result<Option<StoredKey>, StoreError> {
        unimplemented!("not used here")
    }
    unsupported_key_writes!("not used here");
}

impl VerificationStore for Memberships {
    fn record_verification(
        &self,
        _e: &EnterpriseId,
        _v: &str,
        _k: &str,
        _at: Timestamp,
        _keep: Timestamp,
    ) -> Result<RecordOutcome, StoreError> {
        unimplemented!("not used here")
    }
    fn purge_replay_records(&self, _now: Timestamp) -> Result<u64, StoreError> {
        Ok(0)
    }
}

fn world(grant_cache_millis: i64) -> (Arc<Memberships>, KeyService, String) {
    let issued = IssuedToken::from_random([3; 8], [4; 32]);
    let roles = [
        ("e1", Role::Admin),
        ("e2", Role::Admin),
        ("e3", Role::Member),
    ]
    .into_iter()
    .map(|(e, r)| (e.to_owned(), r))
    .collect();
    let store = Arc::new(Memberships {
        hash: issued.hash.clone(),
        roles,
        single_reads: AtomicUsize::new(0),
        window_reads: AtomicUsize::new(0),
    });
    let policy = Policy {
        grant_cache_millis,
        ..Policy::default()
    };
    let service = KeyService::new(store.clone(), Arc::new(FixedClock), policy);
    service.observe_auth_epoch().expect("epoch");
    (store, service, issued.token)
}

#[test]
fn one_read_serves_the_enterprises_that_follow() {
    let (store, service, token) = world(150);
    assert!(service.authorize(&token, "e1").is_ok());
    assert!(service.authorize(&token, "e2").is_ok());
    // Brought along and decided as if read alone: a member is not an admin.
    assert!(matches!(
        service.authorize(&token, "e3"),
        Err(DomainError::Forbidden)
    ));
    assert_eq!(store.window_reads.load(Ordering::SeqCst), 1);
    // The bearer's secret is still checked on every request.
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert!(matches!(
        service.authorize(&forged, "e2"),
        Err(DomainError::Unauthenticated)
    ));
    // An enterprise before the window, or without a membership, is read on its own.
    assert!(matches!(
        service.authorize(&token, "e0"),
        Err(DomainError::Forbidden)
    ));
    assert!(matches!(
        service.authorize(&token, "e4"),
        Err(DomainError::Forbidden)
    ));
    assert_eq!(store.window_reads.load(Ordering::SeqCst), 3);
    assert_eq!(store.single_reads.load(Ordering::SeqCst), 0);
}

#[test]
fn without_reuse_every_request_reads_its_own_grant() {
    let (store, service, token) = world(0);
    for enterprise in ["e1", "e2", "e1"] {
        assert!(service.authorize(&token, enterprise).is_ok());
    }
    assert_eq!(store.single_reads.load(Ordering::SeqCst), 3);
    assert_eq!(store.window_reads.load(Ordering::SeqCst), 0);
}
