//! The use cases: authorize, register, list, get and revoke keys, and the operator's
//! administration. Each is a plain method over the ports; none does IO of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::auth::{
    token_id, token_id_from_reference, EnterpriseAdmin, IssuedToken, Role, TokenGrant,
};
use crate::crypto::{self, VerifyingKey};
use crate::ids::{Email, EnterpriseId, KeyId};
use crate::jwk::{Curve, PublicJwk};
use crate::jwks_uri::InsecureHosts;
use crate::model::{
    AuditContext, AuditEvent, Clock, KeyPage, KeySource, KeyStatus, NewKey, StoredKey, Timestamp,
};
use crate::ports::{
    AdminOutcome, AdminStore, InsertOutcome, JwksLookup, JwksSource, KeyFetched, KeyStore,
    NoJwksSource, RecordDone, RecordOutcome, ReplayRecord, RevokeOutcome, VerificationStore,
};
use crate::register::{KeyMaterial, RegisterKey};
use crate::verify::{self, Rejection};
use crate::DomainError;

/// The operator's settings that rules depend on.
#[derive(Debug, Clone)]
pub struct Policy {
    pub max_active_keys: u32,
    pub insecure_jwks_hosts: InsecureHosts,
    /// How far a token's `iat` may be from now, and how late `exp`/`nbf` may be honoured.
    pub clock_skew_seconds: i64,
    /// How old the last observation of the store's auth epoch may be for a grant
    /// (hash, expiry, revocation, role) read earlier to be reused; 0 reads the grant on
    /// every request. See [`GRANT_CACHE_MILLIS`].
    pub grant_cache_millis: i64,
}

/// The bound on reusing a bearer token's grant: a server reuses grants only while it
/// has observed the store's auth epoch within this time, and every revocation and
/// every membership added, changed or removed bumps that epoch. A revoked token or a
/// lowered role is therefore refused, and a new member accepted, by every server within
/// this bound; the admin commands that make such changes return only after it has
/// passed.
pub const GRANT_CACHE_MILLIS: i64 = 150;

/// How often a serving process observes the store's auth epoch.
pub const AUTH_EPOCH_POLL_MILLIS: u64 = 50;

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_active_keys: 20,
            insecure_jwks_hosts: InsecureHosts::default(),
            clock_skew_seconds: 300,
            grant_cache_millis: GRANT_CACHE_MILLIS,
        }
    }
}

/// How long a replay record is kept after the verification. Far longer than any token
/// stays acceptable (its `iat` must be within the clock skew of now, at most an hour),
/// so purging a record can never let an old token through again.
pub const REPLAY_RETENTION_SECONDS: i64 = 24 * 3600;

/// The outcome of verifying a signed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Valid { key_id: String, status_code: i64 },
    Invalid(Rejection),
}

/// Listing bounds of the contract.
pub const LIST_LIMIT_MAX: u32 = 100;
pub const LIST_LIMIT_DEFAULT: u32 = 50;

/// Public keys ready to verify, by RFC 7638 thumbprint. Key material never changes
/// under a thumbprint, so entries never go stale.
#[derive(Default)]
struct ParsedKeys(Mutex<HashMap<String, Arc<ParsedKey>>>);

struct ParsedKey {
    curve: Curve,
    key: VerifyingKey,
}

/// Entries kept at most by the grant cache; past it the cache starts over (a miss costs
/// one store read). Bounds memory whatever the number of tokens and enterprises.
const CACHE_ENTRIES_MAX: usize = 16_384;
/// Entries kept at most by each key cache (keys found active, parsed keys); past it the
/// cache starts over (a miss costs one store read and one key parse). An entry of
/// either may hold a parsed key (about half a KiB with its thumbprint), so the two
/// together hold up to twice this many: at 16,384 each, verifications spread over
/// 1,000,000 keys took the server's peak RSS to 61–62 MiB, at 8,192 to 56 MiB, with the
/// same throughput (no cache size helps keys used about once).
const KEY_CACHE_ENTRIES_MAX: usize = 8_192;
/// How many of a token's memberships after the enterprise asked about a grant read
/// brings along (see [`KeyStore::token_grant_and_following`]).
const GRANT_WINDOW: u32 = 255;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl ParsedKeys {
    fn get_or_parse(
        &self,
        thumbprint: &str,
        jwk: impl FnOnce() -> Result<PublicJwk, DomainError>,
    ) -> Result<Arc<ParsedKey>, DomainError> {
        if let Some(found) = lock(&self.0).get(thumbprint) {
            return Ok(found.clone());
        }
        let jwk = jwk()?;
        let key = VerifyingKey::from_jwk(&jwk)
            .ok_or_else(|| DomainError::Internal("stored key is unusable".into()))?;
        let parsed = Arc::new(ParsedKey {
            curve: jwk.curve(),
            key,
        });
        let mut keys = lock(&self.0);
        if keys.len() >= KEY_CACHE_ENTRIES_MAX {
            keys.clear();
        }
        keys.insert(thumbprint.to_owned(), parsed.clone());
        Ok(parsed)
    }
}

/// Keys found ACTIVE, by enterprise and keyId, so that a verification needs no store
/// read before its replay record. A keyId is never reused and a key never comes back
/// from revocation, so an entry can only be stale by still saying ACTIVE after a
/// revocation, and the replay record's transaction re-checks exactly that: a revoked key
/// never verifies. Entries are dropped when a revocation is seen.
#[derive(Default)]
struct ActiveKeys(Mutex<ActiveKeyMap>);

/// Keys by enterprise, then keyId (looked up with borrowed strings), and their count.
#[derive(Default)]
struct ActiveKeyMap {
    by_enterprise: HashMap<String, HashMap<String, Arc<ActiveKey>>>,
    len: usize,
}

struct ActiveKey {
    key_id: String,
    source: ActiveSource,
}

enum ActiveSource {
    Inline(Arc<ParsedKey>),
    JwksUri(String),
}

impl ActiveKeys {
    fn get(&self, enterprise: &EnterpriseId, kid: &str) -> Option<Arc<ActiveKey>> {
        lock(&self.0)
            .by_enterprise
            .get(enterprise.as_str())?
            .get(kid)
            .cloned()
    }

    fn insert(&self, enterprise: &EnterpriseId, key: Arc<ActiveKey>) {
        let mut keys = lock(&self.0);
        if keys.len >= KEY_CACHE_ENTRIES_MAX {
            *keys = ActiveKeyMap::default();
        }
        let added = keys
            .by_enterprise
            .entry(enterprise.as_str().to_owned())
            .or_default()
            .insert(key.key_id.clone(), key)
            .is_none();
        keys.len += usize::from(added);
    }

    fn forget(&self, enterprise: &EnterpriseId, kid: &str) {
        let mut keys = lock(&self.0);
        let removed = keys
            .by_enterprise
            .get_mut(enterprise.as_str())
            .and_then(|keys| keys.remove(kid))
            .is_some();
        keys.len -= usize::from(removed);
    }
}

/// Grants read from the store, by token id and enterprise: the token's own (hash,
/// expiry, revocation) and its role there, if any. Only tokens that exist are kept; the
/// bearer's secret is checked against the stored hash on every request, and expiry
/// against the clock. A grant is reused only while the store's auth epoch, as last
/// observed (recently), is not newer than the grant: any revocation, and any membership
/// added, changed or removed, bumps that epoch and so retires every grant read before
/// it (a refusal included).
#[derive(Default)]
struct Grants {
    entries: Mutex<HashMap<(String, String), TokenGrant>>,
    /// The store's auth epoch and when it was observed.
    seen: Mutex<Option<(i64, Timestamp)>>,
}

impl Grants {
    fn get(
        &self,
        token_id: &str,
        enterprise: &str,
        now: Timestamp,
        fresh_millis: i64,
    ) -> Option<TokenGrant> {
        let (epoch, seen_at) = (*lock(&self.seen))?;
        if !(0..fresh_millis).contains(&(now.millis() - seen_at.millis())) {
            return None;
        }
        lock(&self.entries)
            .get(&(token_id.to_owned(), enterprise.to_owned()))
            .filter(|grant| grant.epoch >= epoch)
            .cloned()
    }

    fn insert(&self, token_id: &str, enterprise: &str, grant: TokenGrant) {
        let mut grants = lock(&self.entries);
        if grants.len() >= CACHE_ENTRIES_MAX {
            grants.clear();
        }
        grants.insert((token_id.to_owned(), enterprise.to_owned()), grant);
    }

    /// The token's grants in the enterprises read with another's (see
    /// [`KeyStore::token_grant_and_following`]), while they fit in three quarters of
    /// the cache: a window never fills it (which would empty it of what other tokens
    /// use).
    fn insert_following(&self, token_id: &str, grant: &TokenGrant, following: Vec<(String, Role)>) {
        let mut grants = lock(&self.entries);
        if grants.len() + following.len() > CACHE_ENTRIES_MAX / 4 * 3 {
            return;
        }
        for (enterprise, role) in following {
            let grant = TokenGrant {
                role: Some(role),
                ..grant.clone()
            };
            grants.insert((token_id.to_owned(), enterprise), grant);
        }
    }

    fn observe(&self, epoch: i64, now: Timestamp) {
        *lock(&self.seen) = Some((epoch, now));
        lock(&self.entries).retain(|_, grant| grant.epoch >= epoch);
    }
}

/// How far [`KeyService::verify_body_cached`] got.
#[derive(Debug)]
pub enum VerifyStep {
    /// The verdict, without any write (the token was refused).
    Done(Verification),
    /// A good token whose replay record must be written before it is reported valid.
    Record(PendingVerification),
    /// The token names a key that is not in memory: read it with
    /// [`KeyService::fetch_key`], hand it to [`KeyService::learn_key`], then start again.
    Load(KeyToLoad),
    /// The token's Ed25519 signature is left to check, possibly beside others': hand it
    /// to [`KeyService::queue_signature`], then call
    /// [`KeyService::check_queued_signatures`], which answers with the next step.
    Signature(SignatureCheck),
}

/// A token whose header, key and algorithm are good, with its signature, then its
/// claims, still to check.
pub struct SignatureCheck {
    key: Arc<ParsedKey>,
    token: verify::SignedToken,
    key_id: String,
    enterprise: EnterpriseId,
    evaluation_id: String,
}

impl std::fmt::Debug for SignatureCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureCheck")
            .field("key_id", &self.key_id)
            .field("enterprise", &self.enterprise)
            .field("evaluation_id", &self.evaluation_id)
            .finish_non_exhaustive()
    }
}

impl SignatureCheck {
    fn to_check(&self) -> crypto::SignatureToCheck<'_> {
        crypto::SignatureToCheck {
            key: &self.key.key,
            message: self.token.signing_input(),
            signature: self.token.signature(),
        }
    }
}

/// Called once with the step that follows a queued signature's check.
pub type SignatureDone = Box<dyn FnOnce(VerifyStep) + Send>;

/// The most signatures checked in one batch: past a few dozen a batch is no cheaper per
/// signature, and the rest are left to the next caller of
/// [`KeyService::check_queued_signatures`], on whichever thread, so that one thread does
/// not check them all while another has nothing to do.
const MAX_SIGNATURE_BATCH: usize = 32;

/// Called once with the key [`KeyService::fetch`] read.
pub type KeyAnswer = Box<dyn FnOnce(Result<StoredKey, DomainError>) + Send>;

/// Called once with the page [`KeyService::list`] read.
pub type PageAnswer = Box<dyn FnOnce(Result<Listed, DomainError>) + Send>;

/// A page of keys and the query that chose it (limit and offset as applied).
#[derive(Debug, Clone)]
pub struct Listed {
    pub page: Arc<KeyPage>,
    pub limit: u32,
    pub offset: u64,
}

/// A listing's status filter, page size and offset, checked.
fn list_query(
    status: Option<&str>,
    limit: Option<i64>,
    offset: Option<i64>,
) -> Result<(Option<KeyStatus>, u32, u64), DomainError> {
    let status = status
        .map(|s| {
            KeyStatus::parse(s).ok_or_else(|| {
                DomainError::InvalidRequest(format!(
                    "status '{}' is not a key status; use ACTIVE or REVOKED",
                    s.escape_debug()
                ))
            })
        })
        .transpose()?;
    let limit = match limit {
        None => LIST_LIMIT_DEFAULT,
        Some(l) if (1..=i64::from(LIST_LIMIT_MAX)).contains(&l) => l as u32,
        Some(l) => {
            return Err(DomainError::InvalidRequest(format!(
                "limit {l} is out of range; use 1 to {LIST_LIMIT_MAX}"
            )))
        }
    };
    let offset = match offset {
        None => 0,
        Some(o) if o >= 0 => o as u64,
        Some(o) => {
            return Err(DomainError::InvalidRequest(format!(
                "prevId {o} is out of range; use an offset of 0 or more"
            )))
        }
    };
    Ok((status, limit, offset))
}

/// A key a token names, to read from the store.
#[derive(Debug)]
pub struct KeyToLoad {
    enterprise: EnterpriseId,
    kid: KeyId,
}

/// A good token waiting for its replay record.
#[derive(Debug)]
pub struct PendingVerification {
    record: ReplayRecord,
    checked: CheckedToken,
}

/// A token whose signature and claims are good, not yet recorded against replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedToken {
    pub key_id: String,
    pub status_code: i64,
}

/// Key management and verification for enterprise admins.
pub struct KeyService {
    store: Arc<dyn KeyStore>,
    verifications: Arc<dyn VerificationStore>,
    keys: ParsedKeys,
    active: ActiveKeys,
    grants: Grants,
    jwks: Arc<dyn JwksSource>,
    clock: Arc<dyn Clock>,
    policy: Policy,
    /// Signatures waiting to be checked together (see [`Self::queue_signature`]).
    signatures: Mutex<Vec<(SignatureCheck, SignatureDone)>>,
}

impl KeyService {
    pub fn new<S: KeyStore + VerificationStore + 'static>(
        store: Arc<S>,
        clock: Arc<dyn Clock>,
        policy: Policy,
    ) -> Self {
        Self {
            store: store.clone(),
            verifications: store,
            keys: ParsedKeys::default(),
            active: ActiveKeys::default(),
            grants: Grants::default(),
            jwks: Arc::new(NoJwksSource),
            clock,
            policy,
            signatures: Mutex::new(Vec::new()),
        }
    }

    /// Uses `jwks` to fetch keys registered by jwksUri.
    pub fn with_jwks_source(mut self, jwks: Arc<dyn JwksSource>) -> Self {
        self.jwks = jwks;
        self
    }

    /// Checks the bearer token, then that its holder administers `enterprise`.
    /// A bad token is `Unauthenticated` whatever the enterprise; an unknown enterprise is
    /// `Forbidden`, exactly like one the caller does not administer.
    pub fn authorize(
        &self,
        bearer: &str,
        enterprise: &str,
    ) -> Result<EnterpriseAdmin, DomainError> {
        if let Some(decided) = self.authorize_cached(bearer, enterprise) {
            return decided;
        }
        let id = token_id(bearer).ok_or(DomainError::Unauthenticated)?;
        // An impossible enterprise id still costs the token lookup, so that a bad token
        // is reported as such before anything is said about the enterprise.
        let enterprise_id = EnterpriseId::parse(enterprise);
        let caching = self.policy.grant_cache_millis > 0;
        let (grant, following) = match &enterprise_id {
            Some(enterprise) if caching => {
                self.store
                    .token_grant_and_following(id, enterprise, GRANT_WINDOW)?
            }
            _ => self
                .store
                .token_grant(id, enterprise_id.as_ref())?
                .map(|grant| (grant, Vec::new())),
        }
        .ok_or(DomainError::Unauthenticated)?;
        let now = self.clock.now();
        if caching {
            self.grants.insert(id, enterprise, grant.clone());
            self.grants.insert_following(id, &grant, following);
        }
        Self::decide(&grant, bearer, enterprise_id, now)
    }

    /// Reads the store's auth epoch, so that grants read before a revocation or a
    /// membership change stop being reused. Serving processes call it every
    /// [`AUTH_EPOCH_POLL_MILLIS`]; without a recent observation no grant is reused.
    pub fn observe_auth_epoch(&self) -> Result<(), DomainError> {
        let epoch = self.store.auth_epoch()?;
        self.grants.observe(epoch, self.clock.now());
        Ok(())
    }

    /// [`Self::authorize`] from a grant read recently, without the store; `None` when
    /// the store must be asked (so a caller can do that off its event loop).
    pub fn authorize_cached(
        &self,
        bearer: &str,
        enterprise: &str,
    ) -> Option<Result<EnterpriseAdmin, DomainError>> {
        let id = token_id(bearer)?;
        let now = self.clock.now();
        let grant = self
            .grants
            .get(id, enterprise, now, self.policy.grant_cache_millis)?;
        Some(Self::decide(
            &grant,
            bearer,
            EnterpriseId::parse(enterprise),
            now,
        ))
    }

    fn decide(
        grant: &TokenGrant,
        bearer: &str,
        enterprise: Option<EnterpriseId>,
        now: Timestamp,
    ) -> Result<EnterpriseAdmin, DomainError> {
        if !grant.is_valid_for(bearer, now) {
            return Err(DomainError::Unauthenticated);
        }
        match (enterprise, grant.role) {
            (Some(enterprise), Some(Role::Admin)) => Ok(EnterpriseAdmin {
                enterprise,
                email: Email::parse(&grant.email)
                    .map_err(|_| DomainError::Internal("stored email is invalid".into()))?,
            }),
            _ => Err(DomainError::Forbidden),
        }
    }

    /// Registers a key from a raw request body.
    pub fn register(
        &self,
        admin: &EnterpriseAdmin,
        body: &[u8],
        request_id: &str,
    ) -> Result<StoredKey, DomainError> {
        let request = RegisterKey::from_body(body, &self.policy.insecure_jwks_hosts)?;
        self.register_validated(admin, request, request_id)
    }

    /// Registers an already validated request.
    pub fn register_validated(
        &self,
        admin: &EnterpriseAdmin,
        request: RegisterKey,
        request_id: &str,
    ) -> Result<StoredKey, DomainError> {
        let source = match &request.material {
            KeyMaterial::Inline(jwk) => KeySource::Inline {
                algorithm: jwk.curve().family(),
                jwk: jwk.to_canonical_json(),
                thumbprint: jwk.thumbprint().as_str().to_owned(),
            },
            KeyMaterial::Uri(uri) => KeySource::JwksUri(uri.as_str().to_owned()),
        };
        let key = NewKey {
            id: Uuid::new_v4(),
            enterprise_id: admin.enterprise.clone(),
            key_id: request.key_id.clone(),
            key_name: request.key_name,
            source,
            created_at: self.clock.now(),
            created_by: admin.email.clone(),
        };
        let audit = AuditContext {
            actor: admin.email.clone(),
            request_id: request_id.to_owned(),
        };
        match self
            .store
            .insert_key(&key, self.policy.max_active_keys, &audit)?
        {
            InsertOutcome::Inserted(stored) => Ok(*stored),
            InsertOutcome::KeyIdTaken => Err(DomainError::KeyIdAlreadyUsed(
                request.key_id.as_str().to_owned(),
            )),
            InsertOutcome::ThumbprintTaken { key_id } => {
                Err(DomainError::KeyAlreadyRegistered(key_id))
            }
            InsertOutcome::LimitReached => Err(DomainError::ActiveKeyLimitReached(
                self.policy.max_active_keys,
            )),
        }
    }

    /// One page of the enterprise's keys, oldest first, handed to `done`. Read through
    /// [`KeyStore::fetch_page`]: requests for the same page at the same time may share
    /// one read, and the answer may come on a thread of the store's.
    pub fn list(
        &self,
        admin: &EnterpriseAdmin,
        status: Option<&str>,
        limit: Option<i64>,
        offset: Option<i64>,
        done: PageAnswer,
    ) {
        let (status, limit, offset) = match list_query(status, limit, offset) {
            Ok(query) => query,
            Err(refused) => return done(Err(refused)),
        };
        self.store.fetch_page(
            &admin.enterprise,
            status,
            limit,
            offset,
            Box::new(move |read| {
                done(read.map_err(DomainError::from).map(|page| Listed {
                    page,
                    limit,
                    offset,
                }));
            }),
        );
    }

    /// One key by its keyId, handed to `done` (`KeyNotFound` when there is none). Read
    /// through [`KeyStore::fetch_key`]: the store may read the keys asked for at the
    /// same time together, and answer on a thread of its own.
    pub fn fetch(&self, admin: &EnterpriseAdmin, key_id: &str, done: KeyAnswer) {
        let not_found = |key_id: &str| DomainError::KeyNotFound(key_id.escape_debug().to_string());
        // A keyId that could never have been registered is not looked up at all.
        let Ok(key_id) = KeyId::parse(key_id) else {
            return done(Err(not_found(key_id)));
        };
        let asked = key_id.clone();
        self.store.fetch_key(
            &admin.enterprise,
            key_id.as_str(),
            Box::new(move |read| {
                done(
                    read.map_err(DomainError::from)
                        .and_then(|key| key.ok_or_else(|| not_found(asked.as_str()))),
                );
            }),
        );
    }

    /// Verifies `token` as the answer to `evaluation_id`: [`Self::check`], then the
    /// durable replay record, whose transaction also re-checks that the key is active.
    pub fn verify(
        &self,
        admin: &EnterpriseAdmin,
        token: &str,
        evaluation_id: &str,
    ) -> Result<Verification, DomainError> {
        let checked = match self.check(admin, token, evaluation_id)? {
            Ok(checked) => checked,
            Err(rejection) => return Ok(Verification::Invalid(rejection)),
        };
        let pending = self.pending(&admin.enterprise, checked, evaluation_id);
        let r = &pending.record;
        let outcome = self.verifications.record_verification(
            &r.enterprise,
            &r.evaluation_id,
            &r.key_id,
            r.at,
            r.keep_until,
        );
        self.finish(pending, outcome)
    }

    /// The first part of verifying a raw verify body, done only from memory:
    /// [`VerifyStep::Load`] when the key must first be read from the store, `None` when
    /// the key's JWKS must be consulted (which may block: use [`Self::verify_body_step`]).
    /// A good token comes back as a [`PendingVerification`] to [`Self::submit`]; one
    /// signed with an Ed25519 key as a [`VerifyStep::Signature`], whose signature is left
    /// to check, so that the signatures of verifications in flight together can be
    /// checked in one batch.
    pub fn verify_body_cached(
        &self,
        admin: &EnterpriseAdmin,
        body: &[u8],
    ) -> Result<Option<VerifyStep>, DomainError> {
        let request = verify::VerifyRequest::from_body(body)?;
        let parsed = match verify::parse(&request.token) {
            Ok(parsed) => parsed,
            Err(rejection) => return Ok(Some(VerifyStep::Done(Verification::Invalid(rejection)))),
        };
        let Some(active) = self.active.get(&admin.enterprise, parsed.kid.as_str()) else {
            return Ok(Some(VerifyStep::Load(KeyToLoad {
                enterprise: admin.enterprise.clone(),
                kid: parsed.kid.clone(),
            })));
        };
        if matches!(active.source, ActiveSource::JwksUri(_)) {
            // Fetching a JWKS may block: not for an event loop.
            return Ok(None);
        }
        self.step_with_key(admin, parsed, &active, request.evaluation_id)
            .map(Some)
    }

    /// The step after a token's key was found active: the signature left to check with
    /// others ([`VerifyStep::Signature`]) for an Ed25519 key held inline; otherwise the
    /// signature and claims checked here (a key by jwksUri may fetch its JWKS).
    fn step_with_key(
        &self,
        admin: &EnterpriseAdmin,
        parsed: verify::ParsedToken<'_>,
        active: &ActiveKey,
        evaluation_id: String,
    ) -> Result<VerifyStep, DomainError> {
        if let ActiveSource::Inline(key) = &active.source {
            if key.curve == Curve::Ed25519 {
                if let Err(rejection) = parsed.check_algorithm(key.curve) {
                    return Ok(VerifyStep::Done(Verification::Invalid(rejection)));
                }
                return Ok(VerifyStep::Signature(SignatureCheck {
                    key: key.clone(),
                    token: parsed.into_signed(),
                    key_id: active.key_id.clone(),
                    enterprise: admin.enterprise.clone(),
                    evaluation_id,
                }));
            }
        }
        Ok(match self.check_parsed(&parsed, active, &evaluation_id)? {
            Ok(checked) => {
                VerifyStep::Record(self.pending(&admin.enterprise, checked, &evaluation_id))
            }
            Err(rejection) => VerifyStep::Done(Verification::Invalid(rejection)),
        })
    }

    /// The step after a [`VerifyStep::Signature`] whose signature was found `good` or
    /// not: the claims' verdict, or the replay record to write.
    fn signature_checked(&self, check: SignatureCheck, good: bool) -> VerifyStep {
        if !good {
            return VerifyStep::Done(Verification::Invalid(Rejection::BadSignature));
        }
        match self.checked_claims(check.token.claims(), check.key_id, &check.evaluation_id) {
            Ok(checked) => {
                VerifyStep::Record(self.pending(&check.enterprise, checked, &check.evaluation_id))
            }
            Err(rejection) => VerifyStep::Done(Verification::Invalid(rejection)),
        }
    }

    /// The claims' verdict, now, for a token whose signature `key_id` found good.
    fn checked_claims(
        &self,
        claims: &verify::Claims,
        key_id: String,
        evaluation_id: &str,
    ) -> Result<CheckedToken, Rejection> {
        let now = self.clock.now();
        claims
            .check(evaluation_id, now, self.policy.clock_skew_seconds)
            .map(|answer| CheckedToken {
                key_id,
                status_code: answer.status_code,
            })
    }

    /// Queues a signature to check with the others queued; `done` gets the next step once
    /// someone calls [`Self::check_queued_signatures`].
    pub fn queue_signature(&self, check: SignatureCheck, done: SignatureDone) {
        lock(&self.signatures).push((check, done));
    }

    /// Checks the queued signatures together (up to [`MAX_SIGNATURE_BATCH`]; see
    /// [`crypto::verify_all`]), on the calling thread, and hands each its next step.
    /// Returns how many it checked: none when the queue is empty, as it is when another
    /// thread took them.
    pub fn check_queued_signatures(&self) -> usize {
        let batch: Vec<(SignatureCheck, SignatureDone)> = {
            let mut queue = lock(&self.signatures);
            let oldest = queue.len().min(MAX_SIGNATURE_BATCH);
            queue.drain(..oldest).collect()
        };
        if batch.is_empty() {
            return 0;
        }
        let verdicts = {
            let checks: Vec<crypto::SignatureToCheck<'_>> =
                batch.iter().map(|(check, _)| check.to_check()).collect();
            crypto::verify_all(&checks)
        };
        let n = batch.len();
        for ((check, done), good) in batch.into_iter().zip(verdicts) {
            done(self.signature_checked(check, good));
        }
        n
    }

    /// Reads the key a [`VerifyStep::Load`] names; `done` gets it, for
    /// [`Self::learn_key`]. The store may answer on a thread of its own.
    pub fn fetch_key(&self, load: &KeyToLoad, done: KeyFetched) {
        self.store
            .fetch_key(&load.enterprise, load.kid.as_str(), done);
    }

    /// Takes in a key [`Self::fetch_key`] read: remembered if it is active, so that
    /// [`Self::verify_body_cached`] finds it; otherwise the verdict for any token that
    /// names it (unknown or revoked).
    pub fn learn_key(
        &self,
        load: KeyToLoad,
        read: Result<Option<StoredKey>, crate::StoreError>,
    ) -> Result<Option<Rejection>, DomainError> {
        Ok(self.remember(&load.enterprise, read?)?.err())
    }

    /// [`Self::verify_body_cached`] for when the key is not in memory: reads it from the
    /// store (or its JWKS), so it may block. The replay record is left to [`Self::submit`],
    /// an Ed25519 signature to the queue as there. Never [`VerifyStep::Load`].
    pub fn verify_body_step(
        &self,
        admin: &EnterpriseAdmin,
        body: &[u8],
    ) -> Result<VerifyStep, DomainError> {
        let request = verify::VerifyRequest::from_body(body)?;
        let parsed = match verify::parse(&request.token) {
            Ok(parsed) => parsed,
            Err(rejection) => return Ok(VerifyStep::Done(Verification::Invalid(rejection))),
        };
        let active = match self.active_key(admin, &parsed.kid)? {
            Ok(active) => active,
            Err(rejection) => return Ok(VerifyStep::Done(Verification::Invalid(rejection))),
        };
        self.step_with_key(admin, parsed, &active, request.evaluation_id)
    }

    /// Hands a good token's replay record to the store; `done` gets the outcome for
    /// [`Self::finish`] once it is durable.
    pub fn submit(&self, pending: &PendingVerification, done: RecordDone) {
        self.verifications
            .submit_verification(&pending.record, done);
    }

    /// The verdict, from the replay record's outcome.
    pub fn finish(
        &self,
        pending: PendingVerification,
        outcome: Result<RecordOutcome, crate::StoreError>,
    ) -> Result<Verification, DomainError> {
        Ok(match outcome? {
            RecordOutcome::Recorded => Verification::Valid {
                key_id: pending.checked.key_id,
                status_code: pending.checked.status_code,
            },
            RecordOutcome::Replayed => Verification::Invalid(Rejection::Replayed),
            RecordOutcome::KeyRevoked => {
                self.active
                    .forget(&pending.record.enterprise, &pending.checked.key_id);
                Verification::Invalid(Rejection::KeyRevoked)
            }
        })
    }

    fn pending(
        &self,
        enterprise: &EnterpriseId,
        checked: CheckedToken,
        evaluation_id: &str,
    ) -> PendingVerification {
        let now = self.clock.now();
        PendingVerification {
            record: ReplayRecord {
                enterprise: enterprise.clone(),
                evaluation_id: evaluation_id.to_owned(),
                key_id: checked.key_id.clone(),
                at: now,
                keep_until: now.plus_seconds(REPLAY_RETENTION_SECONDS),
            },
            checked,
        }
    }

    /// Everything of a verification but the replay record: the token's shape and header,
    /// its key (from memory once seen active), the signature and the claims. No write.
    pub fn check(
        &self,
        admin: &EnterpriseAdmin,
        token: &str,
        evaluation_id: &str,
    ) -> Result<Result<CheckedToken, Rejection>, DomainError> {
        let parsed = match verify::parse(token) {
            Ok(parsed) => parsed,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let active = match self.active_key(admin, &parsed.kid)? {
            Ok(active) => active,
            Err(rejection) => return Ok(Err(rejection)),
        };
        self.check_parsed(&parsed, &active, evaluation_id)
    }

    /// The signature and claims of a parsed token against its active key.
    fn check_parsed(
        &self,
        parsed: &verify::ParsedToken<'_>,
        active: &ActiveKey,
        evaluation_id: &str,
    ) -> Result<Result<CheckedToken, Rejection>, DomainError> {
        let key = match &active.source {
            ActiveSource::Inline(key) => key.clone(),
            ActiveSource::JwksUri(uri) => match self.jwks.find(uri, parsed.kid.as_str()) {
                JwksLookup::Found(jwk) => {
                    let thumbprint = jwk.thumbprint();
                    self.keys.get_or_parse(thumbprint.as_str(), || Ok(jwk))?
                }
                JwksLookup::NotFound => return Ok(Err(Rejection::NotInJwks)),
                JwksLookup::Unavailable(why) => return Ok(Err(Rejection::JwksUnavailable(why))),
            },
        };
        if let Err(rejection) = parsed.verify_signature(key.curve, &key.key) {
            return Ok(Err(rejection));
        }
        Ok(self.checked_claims(parsed.claims(), active.key_id.clone(), evaluation_id))
    }

    /// The active key `kid` names, from memory or else read from the store (and then
    /// remembered).
    fn active_key(
        &self,
        admin: &EnterpriseAdmin,
        kid: &KeyId,
    ) -> Result<Result<Arc<ActiveKey>, Rejection>, DomainError> {
        match self.active.get(&admin.enterprise, kid.as_str()) {
            Some(active) => Ok(Ok(active)),
            None => self.load_active(admin, kid),
        }
    }

    /// Reads a key from the store; remembers it if it is active.
    fn load_active(
        &self,
        admin: &EnterpriseAdmin,
        kid: &KeyId,
    ) -> Result<Result<Arc<ActiveKey>, Rejection>, DomainError> {
        let stored = self.store.get_key(&admin.enterprise, kid.as_str())?;
        self.remember(&admin.enterprise, stored)
    }

    /// A key read from the store, remembered if it is active.
    fn remember(
        &self,
        enterprise: &EnterpriseId,
        stored: Option<StoredKey>,
    ) -> Result<Result<Arc<ActiveKey>, Rejection>, DomainError> {
        let Some(stored) = stored else {
            return Ok(Err(Rejection::UnknownKey));
        };
        if stored.status == KeyStatus::Revoked {
            return Ok(Err(Rejection::KeyRevoked));
        }
        let source = match &stored.source {
            KeySource::Inline {
                jwk, thumbprint, ..
            } => ActiveSource::Inline(
                self.keys
                    .get_or_parse(thumbprint, || PublicJwk::from_stored(jwk))?,
            ),
            KeySource::JwksUri(uri) => ActiveSource::JwksUri(uri.clone()),
        };
        let active = Arc::new(ActiveKey {
            key_id: stored.key_id,
            source,
        });
        self.active.insert(enterprise, active.clone());
        Ok(Ok(active))
    }

    /// Deletes expired replay records; for a periodic background task.
    pub fn purge_replay_records(&self) -> Result<u64, DomainError> {
        Ok(self.verifications.purge_replay_records(self.clock.now())?)
    }

    /// Revokes a key: permanent, audited, and exactly once under concurrency.
    pub fn revoke(
        &self,
        admin: &EnterpriseAdmin,
        key_id: &str,
        request_id: &str,
    ) -> Result<StoredKey, DomainError> {
        let not_found = || DomainError::KeyNotFound(key_id.escape_debug().to_string());
        let key_id = KeyId::parse(key_id).map_err(|_| not_found())?;
        let audit = AuditContext {
            actor: admin.email.clone(),
            request_id: request_id.to_owned(),
        };
        match self
            .store
            .revoke_key(&admin.enterprise, &key_id, self.clock.now(), &audit)?
        {
            RevokeOutcome::Revoked(key) => {
                self.active.forget(&admin.enterprise, key_id.as_str());
                Ok(*key)
            }
            RevokeOutcome::NotFound => Err(not_found()),
            RevokeOutcome::AlreadyRevoked => {
                Err(DomainError::KeyAlreadyRevoked(key_id.as_str().to_owned()))
            }
        }
    }
}

/// The operator's administration, behind the `keyward admin` commands.
pub struct AdminService {
    store: Arc<dyn AdminStore>,
    clock: Arc<dyn Clock>,
}

impl AdminService {
    pub fn new(store: Arc<dyn AdminStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    pub fn create_enterprise(
        &self,
        id: &str,
        name: Option<&str>,
    ) -> Result<EnterpriseId, DomainError> {
        let id = EnterpriseId::parse(id).ok_or_else(|| {
            DomainError::InvalidRequest(format!(
                "'{}' is not a valid enterprise id; use 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'",
                id.escape_debug()
            ))
        })?;
        let name = name.unwrap_or(id.as_str());
        match self.store.create_enterprise(&id, name, self.clock.now())? {
            AdminOutcome::Done => Ok(id),
            _ => Err(DomainError::InvalidRequest(format!(
                "enterprise '{id}' already exists"
            ))),
        }
    }

    pub fn create_user(&self, email: &str) -> Result<Email, DomainError> {
        let email = Email::parse(email)?;
        match self
            .store
            .create_user(Uuid::new_v4(), &email, self.clock.now())?
        {
            AdminOutcome::Done => Ok(email),
            _ => Err(DomainError::InvalidRequest(format!(
                "user '{email}' already exists"
            ))),
        }
    }

    pub fn add_member(&self, enterprise: &str, email: &str, role: &str) -> Result<(), DomainError> {
        let enterprise = EnterpriseId::parse(enterprise).ok_or_else(|| {
            DomainError::InvalidRequest(format!(
                "'{}' is not a valid enterprise id",
                enterprise.escape_debug()
            ))
        })?;
        let email = Email::parse(email)?;
        let role = Role::parse(role).ok_or_else(|| {
            DomainError::InvalidRequest(format!(
                "role '{}' is not a role; use admin or member",
                role.escape_debug()
            ))
        })?;
        match self
            .store
            .set_membership(&enterprise, &email, role, self.clock.now())?
        {
            AdminOutcome::Done | AdminOutcome::AlreadyExists => Ok(()),
            AdminOutcome::NotFound => Err(DomainError::InvalidRequest(format!(
                "enterprise '{enterprise}' or user '{email}' does not exist; create the missing one \
                 with 'keyward admin enterprise create {enterprise}' or \
                 'keyward admin user create {email}'"
            ))),
        }
    }

    /// Issues a token for the user. `random` supplies 40 bytes of fresh randomness.
    pub fn issue_token(
        &self,
        email: &str,
        ttl_seconds: Option<i64>,
        random: [u8; 40],
    ) -> Result<IssuedToken, DomainError> {
        let email = Email::parse(email)?;
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        id.copy_from_slice(&random[..8]);
        secret.copy_from_slice(&random[8..]);
        let issued = IssuedToken::from_random(id, secret);
        let now = self.clock.now();
        let expires = ttl_seconds.map(|ttl| now.plus_seconds(ttl));
        match self
            .store
            .insert_token(&issued.id, &email, &issued.hash, now, expires)?
        {
            AdminOutcome::Done => Ok(issued),
            AdminOutcome::NotFound => Err(DomainError::InvalidRequest(format!(
                "user '{email}' does not exist; create it with 'keyward admin user create {email}'"
            ))),
            AdminOutcome::AlreadyExists => Err(DomainError::Internal("token id collision".into())),
        }
    }

    pub fn revoke_token(&self, reference: &str) -> Result<String, DomainError> {
        let id = token_id_from_reference(reference).ok_or_else(|| {
            DomainError::InvalidRequest(
                "give the token's id or its 'kw_<id>' prefix, as printed when it was issued".into(),
            )
        })?;
        match self.store.revoke_token(id, self.clock.now())? {
            AdminOutcome::Done | AdminOutcome::AlreadyExists => Ok(id.to_owned()),
            AdminOutcome::NotFound => Err(DomainError::InvalidRequest(format!(
                "no token with id '{id}'"
            ))),
        }
    }

    pub fn audit(
        &self,
        enterprise: &str,
        since: Option<&str>,
    ) -> Result<Vec<AuditEvent>, DomainError> {
        let enterprise = EnterpriseId::parse(enterprise).ok_or_else(|| {
            DomainError::InvalidRequest(format!(
                "'{}' is not a valid enterprise id",
                enterprise.escape_debug()
            ))
        })?;
        let since = since
            .map(|s| {
                Timestamp::parse_rfc3339(s).ok_or_else(|| {
                    DomainError::InvalidRequest(format!(
                        "'{}' is not an RFC 3339 time; use the form 2026-01-12T10:30:00Z",
                        s.escape_debug()
                    ))
                })
            })
            .transpose()?;
        Ok(self.store.audit_events(&enterprise, since)?)
    }
}
