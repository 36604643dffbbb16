//! The repository: the domain's ports implemented with Diesel on either backend.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use keyward_domain::ports::{
    AdminOutcome, AdminStore, GrantWindow, InsertOutcome, KeyFetched, KeyStore, PageFetched,
    ReadinessProbe, RecordDone, RecordOutcome, ReplayRecord, RevokeOutcome, VerificationStore,
};
use keyward_domain::{
    AuditAction, AuditContext, AuditEvent, Email, EnterpriseId, KeyId, KeyPage, KeySource,
    KeyStatus, NewKey, Role, StoreError, StoredKey, Timestamp, TokenGrant,
};
use uuid::Uuid;

use crate::db::{on_backend, DbConnection, Pool};
use crate::durable::{Durable, WalSync};
use crate::prepared::{Bind, Prepared};
use crate::rows::{AuditRow, KeyRow, ListedKeyRow, NewAuditRow, NewKeyRow};
use crate::schema::{
    api_tokens, audit_events, auth_epoch, enterprises, memberships, replay_records, users,
    webhook_keys,
};

/// The store behind every port, over a connection pool.
#[derive(Clone)]
pub struct Repository {
    pool: Pool,
    gate: std::sync::Arc<WriteGate>,
    replays: std::sync::Arc<crate::replay::ReplayWriter>,
    keys: std::sync::Arc<crate::key_reader::KeyReader>,
}

/// Serialises this process's SQLite write transactions. SQLite has one writer at a
/// time anyway; waiting here, in order, is fairer and far cheaper than every writer
/// polling the database lock with the busy handler's growing sleeps.
///
/// It also holds the one connection those transactions run on (opened at the first
/// write): SQLite drops a connection's page cache whenever another connection has
/// written, so writes spread over the pool would each start from a cold cache and read
/// their B-tree pages again; on one connection they stay cached. That connection syncs
/// the log itself, after its commits (see [`crate::durable`]).
#[derive(Default)]
pub(crate) struct WriteGate {
    writer: std::sync::Mutex<Option<GateWriter>>,
    /// The writer's log syncing, once it is open (readable without waiting for writes).
    wal: std::sync::OnceLock<std::sync::Arc<WalSync>>,
    /// PostgreSQL: the limit of ACTIVE keys this process last fitted the stripes of the
    /// count to (see [`fit_stripes_to_limit`]).
    stripes_fit_for: std::sync::Mutex<Option<u32>>,
}

/// The writer connection, and its log's syncing when it leaves that to this process.
struct GateWriter {
    conn: DbConnection,
    wal: Option<std::sync::Arc<WalSync>>,
}

impl WriteGate {
    /// Why the writer connection's log can no longer be synced, if it cannot.
    fn sync_failure(&self) -> Option<String> {
        self.wal()?.failure()
    }

    /// The writer connection's log syncing, once it is open.
    pub(crate) fn wal(&self) -> Option<&std::sync::Arc<WalSync>> {
        self.wal.get()
    }
}

impl std::fmt::Debug for WriteGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteGate")
    }
}

/// The writer connection's page cache (KiB): larger than a pooled connection's, since
/// there is one.
const WRITER_CACHE_KIB: u32 = 4096;

/// Log pages after which a commit on the writer connection copies the log back into
/// the database (SQLite's default is 1,000). The copy runs inside that commit, so
/// every write waits for it. On a large database, where each verification stamps a
/// different key, nearly every page in the log is a different page of the file, and a
/// copy of 1,000 of them every fraction of a second held up enough verifications to
/// set their 99th percentile (2–3× that of a small database; with no copies at all,
/// 1.1–1.4×). Ten times fewer copies, each longer, hold up ten times fewer writes, and
/// write each often-changed page (the last pages of the replay records, an
/// enterprise's counter) once per copy instead of ten times. The log file grows to
/// about 40 MiB.
const WRITER_CHECKPOINT_PAGES: u32 = 10_000;

#[derive(QueryableByName)]
struct MainFile {
    #[diesel(sql_type = diesel::sql_types::Text)]
    file: String,
}

#[derive(QueryableByName)]
struct JournalMode {
    #[diesel(sql_type = diesel::sql_types::Text)]
    journal_mode: String,
}

/// A new connection to the SQLite file `conn` is open on, for [`WriteGate`]; `None` for
/// a database without a file (in memory) or if it cannot be opened. In WAL mode its
/// commits leave the sync to [`WalSync`].
fn open_writer(conn: &mut DbConnection) -> Option<GateWriter> {
    let main: MainFile =
        diesel::sql_query("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .get_result(conn)
            .ok()?;
    if main.file.is_empty() {
        return None;
    }
    let writer = crate::ConnectionManager::new(crate::DatabaseUrl::Sqlite(main.file.clone()))
        .establish()
        .and_then(|mut writer| {
            let setup =
                |writer: &mut DbConnection| -> QueryResult<Option<std::sync::Arc<WalSync>>> {
                    diesel::connection::SimpleConnection::batch_execute(
                        writer,
                        &format!("PRAGMA cache_size = -{WRITER_CACHE_KIB}"),
                    )?;
                    let mode: JournalMode =
                        diesel::sql_query("PRAGMA journal_mode").get_result(writer)?;
                    if !mode.journal_mode.eq_ignore_ascii_case("wal") {
                        // Outside WAL mode, `NORMAL` means something else: keep `FULL`.
                        return Ok(None);
                    }
                    diesel::connection::SimpleConnection::batch_execute(
                        writer,
                        &format!(
                            "PRAGMA synchronous = NORMAL; \
                             PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}"
                        ),
                    )?;
                    Ok(Some(std::sync::Arc::new(WalSync::new(&main.file))))
                };
            let wal =
                setup(&mut writer).map_err(|e| crate::StorageError::Connect(e.to_string()))?;
            Ok(GateWriter { conn: writer, wal })
        });
    match writer {
        Ok(writer) => Some(writer),
        Err(err) => {
            // Writes then run on the pooled connection they were given.
            tracing::warn!(error = %err, "cannot open the SQLite writer connection");
            None
        }
    }
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("pool_state", &self.pool.state())
            .finish()
    }
}

/// Why a write transaction stopped early: a rule outcome (rolled back on purpose) or a
/// database failure.
pub(crate) enum Abort<T> {
    Outcome(T),
    Db(DieselError),
}

impl<T> From<DieselError> for Abort<T> {
    fn from(err: DieselError) -> Self {
        Abort::Db(err)
    }
}

impl Repository {
    /// The repository over `pool`, with its replay record writer (one thread, started
    /// by the first verification).
    pub fn new(pool: Pool) -> Self {
        let gate = std::sync::Arc::new(WriteGate::default());
        let replays =
            std::sync::Arc::new(crate::replay::ReplayWriter::new(pool.clone(), gate.clone()));
        let keys = std::sync::Arc::new(crate::key_reader::KeyReader::new(pool.clone()));
        Self {
            pool,
            gate,
            replays,
            keys,
        }
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<crate::ConnectionManager>, StoreError> {
        self.pool
            .get()
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }
}

impl ReadinessProbe for Repository {
    /// True when the database answers and its schema is current.
    fn ready(&self) -> Result<bool, StoreError> {
        if let Some(why) = self.gate.sync_failure() {
            return Err(StoreError::Unavailable(why));
        }
        let mut conn = self.conn()?;
        crate::db::migrations_current(&mut conn).map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    fn connections(&self) -> Option<(u32, u32)> {
        let state = self.pool.state();
        Some((
            state.connections - state.idle_connections,
            state.idle_connections,
        ))
    }
}

/// Runs `f` in a write transaction and returns once what it did (and what it read) is
/// on disk. On SQLite the transaction takes the write lock at its start
/// (`BEGIN IMMEDIATE`), so concurrent writers queue on the busy timeout instead of
/// failing when they upgrade a read lock.
pub(crate) fn write_tx<T, O>(
    gate: &WriteGate,
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, Abort<O>>,
) -> Result<T, Abort<O>> {
    write_tx_then(gate, conn, f, |result, durable| match durable.wait() {
        Ok(()) => result,
        Err(why) => Err(Abort::Db(sync_failed(why))),
    })
}

/// [`write_tx`], but hands the result to `then` with what it must wait for before
/// reporting it, once this process's next write transaction can start: a caller that
/// writes in turns (the replay record writer) starts its next while this one syncs.
pub(crate) fn write_tx_then<T, O, R>(
    gate: &WriteGate,
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, Abort<O>>,
    then: impl FnOnce(Result<T, Abort<O>>, Durable) -> R,
) -> R {
    match conn {
        DbConnection::Postgres(_) => then(conn.transaction(f), Durable::already()),
        DbConnection::Sqlite(_) => {
            let mut writer = gate.writer.lock().unwrap_or_else(|p| p.into_inner());
            if writer.is_none() {
                *writer = open_writer(conn);
                if let Some(wal) = writer.as_ref().and_then(|w| w.wal.clone()) {
                    let _ = gate.wal.set(wal);
                }
            }
            let (conn, wal) = match writer.as_mut() {
                Some(writer) => (&mut writer.conn, writer.wal.clone()),
                None => (conn, None),
            };
            let result = sqlite_tx(conn, f);
            let durable = match (wal, &result) {
                (Some(wal), Ok(_)) => wal.committed(),
                (Some(wal), Err(Abort::Outcome(_))) => wal.seen(),
                _ => Durable::already(),
            };
            // Let the next writer in before waiting for the sync.
            drop(writer);
            then(result, durable)
        }
    }
}
/// One SQLite write transaction on `conn`: `BEGIN IMMEDIATE`, `f`, then `COMMIT` (or
/// `ROLLBACK` when `f` stops early).
fn sqlite_tx<T, O>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, Abort<O>>,
) -> Result<T, Abort<O>> {
    if let Err(err) = statement(conn, "BEGIN IMMEDIATE") {
        // A transaction left open by an earlier failure (whose ROLLBACK failed too)
        // would refuse every later BEGIN on this long-lived connection: end it and try
        // once more. With none open, ROLLBACK fails and `err` (busy, say) stands.
        if statement(conn, "ROLLBACK").is_err() {
            return Err(Abort::Db(err));
        }
        statement(conn, "BEGIN IMMEDIATE")?;
    }
    match f(conn) {
        Ok(value) => match statement(conn, "COMMIT") {
            Ok(_) => Ok(value),
            Err(err) => {
                let _ = statement(conn, "ROLLBACK");
                Err(Abort::Db(err))
            }
        },
        Err(abort) => {
            statement(conn, "ROLLBACK")?;
            Err(abort)
        }
    }
}

/// Runs a statement without parameters, prepared once per connection (see
/// [`crate::prepared`]).
fn statement(conn: &mut DbConnection, sql: &'static str) -> QueryResult<usize> {
    on_backend!(conn, |c| Prepared::new(sql, &[]).execute(c))
}

/// A failed log sync as a Diesel error (reported as internal, never retried).
pub(crate) fn sync_failed(why: String) -> DieselError {
    DieselError::DatabaseError(DatabaseErrorKind::Unknown, Box::new(why))
}

/// Maps a Diesel failure: lost connections and lock timeouts are "unavailable" (worth a
/// retry); everything else is internal.
pub(crate) fn store_error(err: DieselError) -> StoreError {
    match &err {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::UnableToSendCommand
            | DatabaseErrorKind::SerializationFailure,
            _,
        ) => StoreError::Unavailable(err.to_string()),
        DieselError::DatabaseError(_, info) if is_transient(info.message()) => {
            StoreError::Unavailable(err.to_string())
        }
        _ => StoreError::Internal(err.to_string()),
    }
}

fn is_transient(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "database is locked",
        "database is busy",
        "terminating connection",
        "server closed the connection",
        "connection",
        // PostgreSQL gave up one of two transactions waiting on each other (such as a
        // registration and a revocation of one keyId); the other went through.
        "deadlock detected",
        "could not serialize access",
    ]
    .iter()
    .any(|m| message.contains(m))
}

fn abort_error<O>(abort: Abort<O>) -> Result<O, StoreError> {
    match abort {
        Abort::Outcome(outcome) => Ok(outcome),
        Abort::Db(err) => Err(store_error(err)),
    }
}

/// The outcome of an administrative insert: a unique constraint means it already exists.
fn created(inserted: QueryResult<usize>) -> Result<AdminOutcome, StoreError> {
    match inserted {
        Ok(_) => Ok(AdminOutcome::Done),
        Err(err) if is_unique_violation(&err) => Ok(AdminOutcome::AlreadyExists),
        Err(err) => Err(store_error(err)),
    }
}

fn is_unique_violation(err: &DieselError) -> bool {
    matches!(
        err,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

fn append_audit(
    conn: &mut DbConnection,
    at: Timestamp,
    enterprise: &str,
    key_id: &str,
    action: AuditAction,
    outcome: &str,
    audit: &AuditContext,
) -> QueryResult<usize> {
    let row = NewAuditRow {
        at: at.millis(),
        enterprise_id: enterprise,
        key_id,
        actor: audit.actor.as_str(),
        action: action.as_str(),
        outcome,
        request_id: &audit.request_id,
    };
    on_backend!(conn, |c| diesel::insert_into(audit_events::table)
        .values(&row)
        .execute(c))
}

/// How many rows PostgreSQL spreads an enterprise's count of ACTIVE keys over (see the
/// migration `active_key_stripes`): registrations bump different rows, so one
/// enterprise's registrations do not commit one after another. The statements below
/// spell it out as 1024, as does the migration's CHECK.
const STRIPES: i64 = 1024;

/// PostgreSQL's registration: a bump of one stripe of the enterprise's count of ACTIVE
/// keys (created on first use; stripe `s` may hold `L / 1024` keys, plus one when
/// `s < L % 1024`, so all of them together hold at most the limit `L`), the key row and
/// its audit event, in one atomic statement. No row comes back when that stripe is
/// full; a unique constraint fails the statement. `$14` is a stripe below
/// `LEAST(L, 1024)`, each of which may hold at least one key.
const POSTGRES_INSERT_KEY: &str = "\
WITH bumped AS (
    INSERT INTO active_key_stripes AS s (enterprise_id, stripe, active)
    SELECT $2, $14, 1 WHERE $14 < LEAST($12, 1024)
    ON CONFLICT (enterprise_id, stripe) DO UPDATE SET active = s.active + 1
    WHERE s.active < $12 / 1024 + (s.stripe < $12 % 1024)::int
    RETURNING s.enterprise_id AS id
), inserted AS (
    INSERT INTO webhook_keys (id, enterprise_id, key_id, key_name, algorithm, jwks_uri, jwk,
                              thumbprint, status, created_at, created_by)
    SELECT $1, bumped.id, $3, $4, $5, $6, $7, $8, 'ACTIVE', $9, $10 FROM bumped
    RETURNING enterprise_id, key_id
), audited AS (
    INSERT INTO audit_events (at, enterprise_id, key_id, actor, action, outcome, request_id)
    SELECT $9, enterprise_id, key_id, $11, 'REGISTER', 'OK', $13 FROM inserted
    RETURNING 1
)
SELECT count(*) AS n FROM audited";

/// PostgreSQL: the stripes of enterprise `$1`'s count that exist, in one snapshot.
const POSTGRES_STRIPES: &str = "\
SELECT stripe, active FROM active_key_stripes WHERE enterprise_id = $1";

/// PostgreSQL: takes a revoked key off its enterprise's count, from any stripe above
/// zero (waiting for, and then skipping, one a concurrent statement empties).
///
/// It takes the key off the highest stripe among the fullest: from the even spread a
/// refit leaves (see [`fit_stripes_to_limit`]) that leaves the even spread of one key
/// less, so an enterprise above a lowered limit comes down to it with no stripe above
/// its share.
const POSTGRES_UNCOUNT_KEY: &str = "\
UPDATE active_key_stripes SET active = active - 1
WHERE (enterprise_id, stripe) = (
    SELECT enterprise_id, stripe FROM active_key_stripes
    WHERE enterprise_id = $1 AND active > 0
    ORDER BY active DESC, stripe DESC
    LIMIT 1 FOR UPDATE)";

/// PostgreSQL: the enterprises with a stripe above its share of the limit `$1`, which
/// only a change of the limit leaves behind.
const POSTGRES_OVERFULL_STRIPES: &str = "\
SELECT DISTINCT enterprise_id AS id FROM active_key_stripes
WHERE active > $1 / 1024 + (stripe < $1 % 1024)::int";

/// PostgreSQL: spreads enterprise `$1`'s count evenly over its stripes (total `t`:
/// stripe `s` holds `t / 1024`, plus one when `s < t % 1024`). At or under a limit, no
/// stripe of the even spread is above its share; over it, none has room. Run with the
/// table locked against writes: a stripe another registration created after the
/// statement's snapshot would be overwritten, and its key left out of the count.
const POSTGRES_RESPREAD_STRIPES: &str = "\
WITH current AS (
    SELECT stripe, active FROM active_key_stripes WHERE enterprise_id = $1
), total AS (
    SELECT COALESCE(sum(active), 0)::bigint AS t FROM current
)
INSERT INTO active_key_stripes AS s (enterprise_id, stripe, active)
SELECT $1, g, t / 1024 + (g < t % 1024)::int
FROM total, generate_series(0, 1023) AS g
WHERE g < LEAST(t, 1024) OR g IN (SELECT stripe FROM current)
ON CONFLICT (enterprise_id, stripe) DO UPDATE SET active = EXCLUDED.active";

#[derive(QueryableByName)]
struct Named {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

/// PostgreSQL: makes the stripes of every enterprise's count fit `max_active`, once per
/// process and limit, before the first registration under it. With one limit the
/// stripes always fit it (a registration bumps a stripe only below its share); a
/// lower limit than the one they were filled under can leave a stripe above its share
/// while others have room, and registrations there would take the count past the
/// limit. Those enterprises' counts are spread evenly again. Processes sharing a
/// database are meant to run with one limit: while two limits are in use at once, the
/// count can reach the higher.
fn fit_stripes_to_limit(
    gate: &WriteGate,
    conn: &mut diesel::PgConnection,
    max_active: u32,
) -> Result<(), StoreError> {
    let mut fit_for = gate
        .stripes_fit_for
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if *fit_for == Some(max_active) {
        return Ok(());
    }
    let limit = [Bind::BigInt(i64::from(max_active))];
    conn.transaction(|conn| {
        let mut overfull: Vec<Named> =
            Prepared::new(POSTGRES_OVERFULL_STRIPES, &limit).load(conn)?;
        if !overfull.is_empty() {
            // Every registration and revocation waits while the counts are rewritten
            // (and this waits for those in flight), so each is counted once. Rare: only
            // after the limit was lowered.
            diesel::connection::SimpleConnection::batch_execute(
                conn,
                "LOCK TABLE active_key_stripes IN SHARE ROW EXCLUSIVE MODE",
            )?;
            overfull = Prepared::new(POSTGRES_OVERFULL_STRIPES, &limit).load(conn)?;
        }
        for enterprise in &overfull {
            Prepared::new(POSTGRES_RESPREAD_STRIPES, &[Bind::Text(&enterprise.id)])
                .execute(conn)?;
        }
        if !overfull.is_empty() {
            tracing::info!(
                enterprises = overfull.len(),
                max_active_keys = max_active,
                "active key counts spread again to fit a changed limit"
            );
        }
        QueryResult::Ok(())
    })
    .map_err(store_error)?;
    *fit_for = Some(max_active);
    Ok(())
}

/// SQLite: a key's row ([`key_binds`]), after its enterprise's last (rows are kept in
/// (enterprise, seq) order and never deleted, and the write lock is held, so the seq is
/// new and ordered). Prepared once per connection, like every statement of the
/// registration's.
const SQLITE_INSERT_KEY: &str = "\
INSERT INTO webhook_keys (enterprise_id, seq, id, key_id, key_name, algorithm, jwks_uri, jwk,
                          thumbprint, status, created_at, created_by)
VALUES ($2, (SELECT coalesce(max(seq), 0) + 1 FROM webhook_keys WHERE enterprise_id = $2),
        $1, $3, $4, $5, $6, $7, $8, 'ACTIVE', $9, $10)";

/// A registration's row as `$1`..`$10` of both backends' insert statements.
fn key_binds<'a>(row: &'a NewKeyRow<'_>) -> [Bind<'a>; 10] {
    [
        Bind::Text(&row.id),
        Bind::Text(row.enterprise_id),
        Bind::Text(row.key_id),
        Bind::Text(row.key_name),
        Bind::OptionalText(row.algorithm),
        Bind::OptionalText(row.jwks_uri),
        Bind::OptionalText(row.jwk),
        Bind::OptionalText(row.thumbprint),
        Bind::BigInt(row.created_at),
        Bind::Text(row.created_by),
    ]
}

/// SQLite: counts a registration against the enterprise's limit of active keys; no
/// row changes when the limit is reached.
const BUMP_ACTIVE_KEYS: &str = "UPDATE enterprises SET active_keys = active_keys + 1 \
     WHERE id = $1 AND active_keys < $2";

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Stripe {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    stripe: i32,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    active: i64,
}

/// How often a registration tries another stripe with room when the one it tried was
/// filled under it; each miss means another registration committed.
const STRIPE_ATTEMPTS: usize = 64;

/// PostgreSQL: registers `row` in the stripe of its enterprise's count that the random
/// number `pick` chooses or, when that one is full, in another stripe with room, chosen
/// by `pick` too (read from the stripes as they are; none with room is the limit
/// reached).
fn postgres_insert_key(
    conn: &mut diesel::PgConnection,
    row: &NewKeyRow<'_>,
    pick: u128,
    max_active: u32,
    audit: &AuditContext,
) -> Result<(), Abort<InsertOutcome>> {
    let limit = i64::from(max_active);
    let stripes = limit.min(STRIPES);
    // Below `LEAST(L, 1024)`, so a stripe that may hold a key.
    let stripe = (pick % stripes.max(1) as u128) as i64;
    let [id, enterprise, key_id, key_name, algorithm, jwks_uri, jwk, thumbprint, at, by] =
        key_binds(row);
    let mut binds = [
        id,
        enterprise,
        key_id,
        key_name,
        algorithm,
        jwks_uri,
        jwk,
        thumbprint,
        at,
        by,
        Bind::Text(audit.actor.as_str()),
        Bind::BigInt(limit),
        Bind::Text(&audit.request_id),
        Bind::BigInt(stripe),
    ];
    for _ in 0..STRIPE_ATTEMPTS {
        let done: Count = Prepared::new(POSTGRES_INSERT_KEY, &binds).get_result(conn)?;
        if done.n == 1 {
            return Ok(());
        }
        let counts: Vec<Stripe> =
            Prepared::new(POSTGRES_STRIPES, &[Bind::Text(row.enterprise_id)]).load(conn)?;
        let mut active = vec![0; stripes as usize];
        for count in counts {
            if let Some(slot) = usize::try_from(count.stripe)
                .ok()
                .and_then(|s| active.get_mut(s))
            {
                *slot = count.active;
            }
        }
        let share = |s: i64| limit / STRIPES + i64::from(s < limit % STRIPES);
        let room: Vec<i64> = (0..stripes)
            .filter(|&s| active[s as usize] < share(s))
            .collect();
        if room.is_empty() {
            return Err(Abort::Outcome(InsertOutcome::LimitReached));
        }
        // One of them, chosen by the random number: concurrent registrations near the
        // limit, when few stripes have room, mostly choose different ones.
        binds[13] = Bind::BigInt(room[(pick % room.len() as u128) as usize]);
    }
    // Reported as unavailable (503, try again), not as a reached limit.
    Err(Abort::Db(DieselError::DatabaseError(
        DatabaseErrorKind::SerializationFailure,
        Box::new(
            "every stripe of the key count with room was filled under this registration".to_owned(),
        ),
    )))
}

/// Which existing key blocks `key` (keyId first, then thumbprint), if any.
fn conflict_of(conn: &mut DbConnection, key: &NewKey) -> QueryResult<Option<InsertOutcome>> {
    let enterprise = key.enterprise_id.as_str();
    let key_id_taken: i64 = webhook_keys::table
        .filter(webhook_keys::enterprise_id.eq(enterprise))
        .filter(webhook_keys::key_id.eq(key.key_id.as_str()))
        .count()
        .get_result(conn)?;
    if key_id_taken > 0 {
        return Ok(Some(InsertOutcome::KeyIdTaken));
    }
    if let KeySource::Inline { thumbprint, .. } = &key.source {
        let holder: Option<String> = webhook_keys::table
            .filter(webhook_keys::enterprise_id.eq(enterprise))
            .filter(webhook_keys::thumbprint.eq(thumbprint))
            .select(webhook_keys::key_id)
            .first(conn)
            .optional()?;
        if let Some(key_id) = holder {
            return Ok(Some(InsertOutcome::ThumbprintTaken { key_id }));
        }
    }
    Ok(None)
}

fn refusal_code(outcome: &InsertOutcome) -> &'static str {
    match outcome {
        InsertOutcome::Inserted(_) => "OK",
        InsertOutcome::KeyIdTaken => "KEY_ID_ALREADY_USED",
        InsertOutcome::ThumbprintTaken { .. } => "KEY_ALREADY_REGISTERED",
        InsertOutcome::LimitReached => "ACTIVE_KEY_LIMIT_REACHED",
    }
}

/// A placeholder outcome for "a unique constraint fired; look again to say which".
const RACED: InsertOutcome = InsertOutcome::LimitReached;

fn read_auth_epoch(conn: &mut DbConnection) -> QueryResult<i64> {
    auth_epoch::table
        .filter(auth_epoch::id.eq(1))
        .select(auth_epoch::epoch)
        .first(conn)
}

/// A token's grant: its hash, expiry and revocation, its holder's email and role in the
/// enterprise asked about (none when it is not a member, or no enterprise is asked
/// about: no enterprise id is empty), and the auth epoch, all in one statement. (`$1`
/// comes first in the text: SQLite numbers `$n` parameters in order of appearance.)
const TOKEN_GRANT: &str = "\
SELECT t.token_hash, t.expires_at, t.revoked_at, u.email, m.role,
       (SELECT epoch FROM auth_epoch WHERE id = 1) AS epoch
FROM api_tokens t
JOIN users u ON t.id = $1 AND u.id = t.user_id
LEFT JOIN memberships m ON m.user_id = u.id AND m.enterprise_id = $2";

#[derive(QueryableByName)]
struct GrantRow {
    #[diesel(sql_type = diesel::sql_types::Binary)]
    token_hash: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    expires_at: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    revoked_at: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    email: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    role: Option<String>,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    epoch: i64,
}

/// A token's grant as [`TOKEN_GRANT`] reads it, for the enterprise asked about and the
/// holder's memberships in the enterprises after it: one row per membership from `$2`
/// on, in enterprise order, at most `$3`; one row without a membership when there is
/// none. The window is read through the (user, enterprise) index, whatever the number
/// of the holder's memberships.
const TOKEN_GRANT_WINDOW: &str = "\
SELECT t.token_hash, t.expires_at, t.revoked_at, u.email, m.enterprise_id, m.role,
       (SELECT epoch FROM auth_epoch WHERE id = 1) AS epoch
FROM api_tokens t
JOIN users u ON t.id = $1 AND u.id = t.user_id
LEFT JOIN (
    SELECT enterprise_id, role FROM memberships
    WHERE user_id = (SELECT user_id FROM api_tokens WHERE id = $1) AND enterprise_id >= $2
    ORDER BY enterprise_id
    LIMIT $3
) m ON 1 = 1
ORDER BY m.enterprise_id";

#[derive(QueryableByName)]
struct GrantWindowRow {
    #[diesel(embed)]
    grant: GrantRow,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    enterprise_id: Option<String>,
}

impl GrantRow {
    fn into_grant(self) -> TokenGrant {
        TokenGrant {
            hash: self.token_hash,
            expires_at: self.expires_at.map(Timestamp::from_millis),
            revoked: self.revoked_at.is_some(),
            email: self.email,
            role: self.role.as_deref().and_then(Role::parse),
            epoch: self.epoch,
        }
    }
}

impl KeyStore for Repository {
    fn token_grant(
        &self,
        token_id: &str,
        enterprise: Option<&EnterpriseId>,
    ) -> Result<Option<TokenGrant>, StoreError> {
        let mut conn = self.conn()?;
        // One statement (one round trip), so the epoch comes from the same snapshot as
        // the grant: a change committed later bumps the epoch past it.
        // Prepared once per connection: every grant the cache misses comes here.
        let binds = [
            Bind::Text(token_id),
            Bind::Text(enterprise.map_or("", EnterpriseId::as_str)),
        ];
        let row: Option<GrantRow> = on_backend!(&mut *conn, |c| Prepared::new(TOKEN_GRANT, &binds)
            .get_result(c)
            .optional())
        .map_err(store_error)?;
        Ok(row.map(GrantRow::into_grant))
    }

    fn token_grant_and_following(
        &self,
        token_id: &str,
        enterprise: &EnterpriseId,
        following: u32,
    ) -> Result<Option<GrantWindow>, StoreError> {
        let mut conn = self.conn()?;
        let binds = [
            Bind::Text(token_id),
            Bind::Text(enterprise.as_str()),
            Bind::BigInt(i64::from(following) + 1),
        ];
        let rows: Vec<GrantWindowRow> =
            on_backend!(&mut *conn, |c| Prepared::new(TOKEN_GRANT_WINDOW, &binds)
                .load(c))
            .map_err(store_error)?;
        let mut rows = rows.into_iter();
        let Some(first) = rows.next() else {
            return Ok(None);
        };
        let mut grant = first.grant.into_grant();
        let mut following = Vec::new();
        if first.enterprise_id.as_deref() != Some(enterprise.as_str()) {
            // No membership in the enterprise asked about: the window starts after it.
            if let (Some(id), Some(role)) = (first.enterprise_id, grant.role.take()) {
                following.push((id, role));
            }
        }
        following.extend(rows.filter_map(|row| {
            Some((row.enterprise_id?, Role::parse(row.grant.role.as_deref()?)?))
        }));
        Ok(Some((grant, following)))
    }

    fn auth_epoch(&self) -> Result<i64, StoreError> {
        let mut conn = self.conn()?;
        read_auth_epoch(&mut conn).map_err(store_error)
    }

    fn insert_key(
        &self,
        key: &NewKey,
        max_active: u32,
        audit: &AuditContext,
    ) -> Result<InsertOutcome, StoreError> {
        let mut conn = self.conn()?;
        let (algorithm, jwks_uri, jwk, thumbprint) = match &key.source {
            KeySource::Inline {
                algorithm,
                jwk,
                thumbprint,
            } => (
                Some(algorithm.as_str()),
                None,
                Some(jwk.as_str()),
                Some(thumbprint.as_str()),
            ),
            KeySource::JwksUri(uri) => (None, Some(uri.as_str()), None, None),
        };
        let row = NewKeyRow {
            id: key.id.to_string(),
            enterprise_id: key.enterprise_id.as_str(),
            key_id: key.key_id.as_str(),
            key_name: key.key_name.as_str(),
            algorithm,
            jwks_uri,
            jwk,
            thumbprint,
            created_at: key.created_at.millis(),
            created_by: key.created_by.as_str(),
        };
        let enterprise = key.enterprise_id.as_str();
        // The constraints decide; only a refusal looks at why (below), so the usual
        // registration holds the write lock for its three writes alone.
        let attempt = match &mut *conn {
            // One statement, so one round trip (more when its stripe is full), in a
            // stripe of the count chosen by the key's random id (below the limit, so
            // it may hold a key), locked only from here to the commit.
            DbConnection::Postgres(pg) => {
                fit_stripes_to_limit(&self.gate, pg, max_active)?;
                postgres_insert_key(pg, &row, key.id.as_u128(), max_active, audit)
            }
            DbConnection::Sqlite(_) => write_tx(&self.gate, &mut conn, |conn| {
                let binds = key_binds(&row);
                match on_backend!(&mut *conn, |c| Prepared::new(SQLITE_INSERT_KEY, &binds)
                    .execute(c))
                {
                    Err(err) if is_unique_violation(&err) => return Err(Abort::Outcome(RACED)),
                    other => other?,
                };
                append_audit(
                    conn,
                    key.created_at,
                    enterprise,
                    key.key_id.as_str(),
                    AuditAction::Register,
                    "OK",
                    audit,
                )?;
                // Prepared once per connection (a Diesel update is parsed anew each time).
                let binds = [Bind::Text(enterprise), Bind::BigInt(i64::from(max_active))];
                let bumped = on_backend!(&mut *conn, |c| Prepared::new(BUMP_ACTIVE_KEYS, &binds)
                    .execute(c))?;
                if bumped == 0 {
                    return Err(Abort::Outcome(InsertOutcome::LimitReached));
                }
                Ok(())
            }),
        };
        let refused = match attempt {
            Ok(()) => {
                return Ok(InsertOutcome::Inserted(Box::new(StoredKey {
                    id: key.id,
                    enterprise_id: enterprise.to_owned(),
                    key_id: key.key_id.as_str().to_owned(),
                    key_name: key.key_name.as_str().to_owned(),
                    source: key.source.clone(),
                    status: KeyStatus::Active,
                    created_at: key.created_at,
                    created_by: key.created_by.as_str().to_owned(),
                    revoked_at: None,
                    revoked_by: None,
                    last_verified_at: None,
                })))
            }
            Err(Abort::Outcome(outcome)) => outcome,
            Err(Abort::Db(err)) if is_unique_violation(&err) => RACED,
            Err(Abort::Db(err)) => return Err(store_error(err)),
        };
        // The refusal is recorded in its own transaction: the attempt's was rolled back.
        // A unique constraint that fired under a race is named by looking again.
        let outcome = write_tx(&self.gate, &mut conn, |conn| {
            let outcome = match refused {
                InsertOutcome::LimitReached => match conflict_of(conn, key)? {
                    Some(conflict) => conflict,
                    None => InsertOutcome::LimitReached,
                },
                other => other,
            };
            append_audit(
                conn,
                key.created_at,
                enterprise,
                key.key_id.as_str(),
                AuditAction::Register,
                refusal_code(&outcome),
                audit,
            )?;
            Ok::<_, Abort<()>>(outcome)
        });
        match outcome {
            Ok(outcome) => Ok(outcome),
            Err(abort) => {
                abort_error(abort).and(Err(StoreError::Internal("audit write aborted".into())))
            }
        }
    }

    fn list_keys(
        &self,
        enterprise: &EnterpriseId,
        status: Option<KeyStatus>,
        limit: u32,
        offset: u64,
    ) -> Result<KeyPage, StoreError> {
        read_page(
            &mut *self.conn()?,
            enterprise.as_str(),
            status,
            limit,
            offset,
        )
    }

    fn fetch_page(
        &self,
        enterprise: &EnterpriseId,
        status: Option<KeyStatus>,
        limit: u32,
        offset: u64,
        done: PageFetched,
    ) {
        self.keys
            .list(enterprise.as_str(), status, limit, offset, done);
    }

    fn get_key(
        &self,
        enterprise: &EnterpriseId,
        key_id: &str,
    ) -> Result<Option<StoredKey>, StoreError> {
        let mut conn = self.conn()?;
        on_backend!(&mut *conn, |c| webhook_keys::table
            .filter(webhook_keys::enterprise_id.eq(enterprise.as_str()))
            .filter(webhook_keys::key_id.eq(key_id))
            .select(KeyRow::as_select())
            .first::<KeyRow>(c)
            .optional())
        .map_err(store_error)?
        .map(StoredKey::try_from)
        .transpose()
    }

    fn fetch_key(&self, enterprise: &EnterpriseId, key_id: &str, done: KeyFetched) {
        self.keys.fetch(enterprise.as_str(), key_id, done);
    }

    fn revoke_key(
        &self,
        enterprise: &EnterpriseId,
        key_id: &KeyId,
        at: Timestamp,
        audit: &AuditContext,
    ) -> Result<RevokeOutcome, StoreError> {
        let mut conn = self.conn()?;
        let enterprise = enterprise.as_str();
        let key_id = key_id.as_str();
        let done = write_tx(&self.gate, &mut conn, |conn| {
            let changed = diesel::update(webhook_keys::table)
                .filter(webhook_keys::enterprise_id.eq(enterprise))
                .filter(webhook_keys::key_id.eq(key_id))
                .filter(webhook_keys::status.eq(KeyStatus::Active.as_str()))
                .set((
                    webhook_keys::status.eq(KeyStatus::Revoked.as_str()),
                    webhook_keys::revoked_at.eq(Some(at.millis())),
                    webhook_keys::revoked_by.eq(Some(audit.actor.as_str())),
                ))
                .execute(conn)?;
            if changed == 0 {
                let exists: i64 = webhook_keys::table
                    .filter(webhook_keys::enterprise_id.eq(enterprise))
                    .filter(webhook_keys::key_id.eq(key_id))
                    .count()
                    .get_result(conn)?;
                return Err(Abort::Outcome(if exists > 0 {
                    RevokeOutcome::AlreadyRevoked
                } else {
                    RevokeOutcome::NotFound
                }));
            }
            match conn {
                DbConnection::Postgres(pg) => {
                    Prepared::new(POSTGRES_UNCOUNT_KEY, &[Bind::Text(enterprise)]).execute(pg)?
                }
                // Never below zero, as on PostgreSQL: a key written around keyward (a
                // bulk load) was never counted.
                DbConnection::Sqlite(c) => diesel::update(enterprises::table)
                    .filter(enterprises::id.eq(enterprise))
                    .filter(enterprises::active_keys.gt(0))
                    .set(enterprises::active_keys.eq(enterprises::active_keys - 1))
                    .execute(c)?,
            };
            append_audit(
                conn,
                at,
                enterprise,
                key_id,
                AuditAction::Revoke,
                "OK",
                audit,
            )?;
            let row: KeyRow = webhook_keys::table
                .filter(webhook_keys::enterprise_id.eq(enterprise))
                .filter(webhook_keys::key_id.eq(key_id))
                .select(KeyRow::as_select())
                .first(conn)?;
            Ok(row)
        });
        match done {
            Ok(row) => Ok(RevokeOutcome::Revoked(Box::new(StoredKey::try_from(row)?))),
            Err(abort) => abort_error(abort),
        }
    }
}

impl VerificationStore for Repository {
    fn record_verification(
        &self,
        enterprise: &EnterpriseId,
        evaluation_id: &str,
        key_id: &str,
        at: Timestamp,
        keep_until: Timestamp,
    ) -> Result<RecordOutcome, StoreError> {
        // Group commit: see `replay.rs`.
        self.replays.record(crate::replay::Record {
            enterprise: enterprise.as_str().to_owned(),
            evaluation_id: evaluation_id.to_owned(),
            key_id: key_id.to_owned(),
            at: at.millis(),
            keep_until: keep_until.millis(),
        })
    }

    fn submit_verification(&self, record: &ReplayRecord, done: RecordDone) {
        self.replays.submit(
            crate::replay::Record {
                enterprise: record.enterprise.as_str().to_owned(),
                evaluation_id: record.evaluation_id.clone(),
                key_id: record.key_id.clone(),
                at: record.at.millis(),
                keep_until: record.keep_until.millis(),
            },
            done,
        );
    }

    fn purge_replay_records(&self, now: Timestamp) -> Result<u64, StoreError> {
        let mut conn = self.conn()?;
        let deleted = diesel::delete(
            replay_records::table.filter(replay_records::expires_at.lt(now.millis())),
        )
        .execute(&mut *conn)
        .map_err(store_error)?;
        Ok(deleted as u64)
    }
}

impl AdminStore for Repository {
    fn create_enterprise(
        &self,
        id: &EnterpriseId,
        name: &str,
        at: Timestamp,
    ) -> Result<AdminOutcome, StoreError> {
        let mut conn = self.conn()?;
        let inserted = diesel::insert_into(enterprises::table)
            .values((
                enterprises::id.eq(id.as_str()),
                enterprises::name.eq(name),
                enterprises::created_at.eq(at.millis()),
            ))
            .execute(&mut *conn);
        created(inserted)
    }

    fn create_user(
        &self,
        id: Uuid,
        email: &Email,
        at: Timestamp,
    ) -> Result<AdminOutcome, StoreError> {
        let mut conn = self.conn()?;
        let inserted = diesel::insert_into(users::table)
            .values((
                users::id.eq(id.to_string()),
                users::email.eq(email.as_str()),
                users::created_at.eq(at.millis()),
            ))
            .execute(&mut *conn);
        created(inserted)
    }

    fn set_membership(
        &self,
        enterprise: &EnterpriseId,
        email: &Email,
        role: Role,
        at: Timestamp,
    ) -> Result<AdminOutcome, StoreError> {
        let mut conn = self.conn()?;
        let result = write_tx(&self.gate, &mut conn, |conn| {
            let user_id: Option<String> = users::table
                .filter(users::email.eq(email.as_str()))
                .select(users::id)
                .first(conn)
                .optional()?;
            let enterprise_exists: i64 = enterprises::table
                .filter(enterprises::id.eq(enterprise.as_str()))
                .count()
                .get_result(conn)?;
            let Some(user_id) = user_id.filter(|_| enterprise_exists > 0) else {
                return Err(Abort::Outcome(AdminOutcome::NotFound));
            };
            let updated = diesel::update(memberships::table)
                .filter(memberships::enterprise_id.eq(enterprise.as_str()))
                .filter(memberships::user_id.eq(&user_id))
                .set(memberships::role.eq(role.as_str()))
                .execute(conn)?;
            if updated == 0 {
                diesel::insert_into(memberships::table)
                    .values((
                        memberships::enterprise_id.eq(enterprise.as_str()),
                        memberships::user_id.eq(&user_id),
                        memberships::role.eq(role.as_str()),
                        memberships::created_at.eq(at.millis()),
                    ))
                    .execute(conn)?;
            }
            Ok(AdminOutcome::Done)
        });
        result.or_else(abort_error)
    }

    fn insert_token(
        &self,
        id: &str,
        email: &Email,
        hash: &[u8],
        created_at: Timestamp,
        expires_at: Option<Timestamp>,
    ) -> Result<AdminOutcome, StoreError> {
        let mut conn = self.conn()?;
        let user_id: Option<String> = users::table
            .filter(users::email.eq(email.as_str()))
            .select(users::id)
            .first(&mut *conn)
            .optional()
            .map_err(store_error)?;
        let Some(user_id) = user_id else {
            return Ok(AdminOutcome::NotFound);
        };
        let inserted = diesel::insert_into(api_tokens::table)
            .values((
                api_tokens::id.eq(id),
                api_tokens::user_id.eq(&user_id),
                api_tokens::token_hash.eq(hash),
                api_tokens::created_at.eq(created_at.millis()),
                api_tokens::expires_at.eq(expires_at.map(Timestamp::millis)),
            ))
            .execute(&mut *conn);
        created(inserted)
    }

    fn revoke_token(&self, id: &str, at: Timestamp) -> Result<AdminOutcome, StoreError> {
        let mut conn = self.conn()?;
        let changed = diesel::update(api_tokens::table)
            .filter(api_tokens::id.eq(id))
            .filter(api_tokens::revoked_at.is_null())
            .set(api_tokens::revoked_at.eq(Some(at.millis())))
            .execute(&mut *conn)
            .map_err(store_error)?;
        if changed > 0 {
            return Ok(AdminOutcome::Done);
        }
        let exists: i64 = api_tokens::table
            .filter(api_tokens::id.eq(id))
            .count()
            .get_result(&mut *conn)
            .map_err(store_error)?;
        Ok(if exists > 0 {
            AdminOutcome::AlreadyExists
        } else {
            AdminOutcome::NotFound
        })
    }

    fn audit_events(
        &self,
        enterprise: &EnterpriseId,
        since: Option<Timestamp>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<AuditRow> = audit_events::table
            .filter(audit_events::enterprise_id.eq(enterprise.as_str()))
            .filter(audit_events::at.ge(since.map_or(i64::MIN, Timestamp::millis)))
            .select(AuditRow::as_select())
            .order(audit_events::seq.asc())
            .load(&mut *conn)
            .map_err(store_error)?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }
}

/// PostgreSQL: a page (the listing's columns, see [`ListedKeyRow`]) and, on each of its
/// rows, the number of keys the filter matches, in one statement. The count is taken
/// once, from the (enterprise, seq) index, which carries each key's status, so only
/// the page's rows are read from the table.
const POSTGRES_PAGE: &str = "\
SELECT k.id, k.key_id, k.key_name, k.algorithm, k.jwks_uri, k.status, k.created_at,
       k.created_by, k.revoked_at, k.revoked_by, k.last_verified_at,
       (SELECT count(*) FROM webhook_keys c
        WHERE c.enterprise_id = $1 AND ($2::text IS NULL OR c.status = $2)) AS total
FROM webhook_keys k
WHERE k.enterprise_id = $1 AND ($2::text IS NULL OR k.status = $2)
ORDER BY k.seq LIMIT $3 OFFSET $4";

/// A row of [`POSTGRES_PAGE`].
#[derive(QueryableByName)]
struct CountedKeyRow {
    #[diesel(embed)]
    key: ListedKeyRow,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    total: i64,
}

/// One page of `enterprise`'s keys on `conn`, with the number of keys the filter matches.
pub(crate) fn read_page(
    conn: &mut DbConnection,
    enterprise: &str,
    status: Option<KeyStatus>,
    limit: u32,
    offset: u64,
) -> Result<KeyPage, StoreError> {
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    if let DbConnection::Postgres(c) = conn {
        // One statement instead of a count and a page; a page past the end has no row
        // to carry the count, and is counted below.
        let rows: Vec<CountedKeyRow> = Prepared::new(
            POSTGRES_PAGE,
            &[
                Bind::Text(enterprise),
                Bind::OptionalText(status.map(KeyStatus::as_str)),
                Bind::BigInt(i64::from(limit)),
                Bind::BigInt(offset),
            ],
        )
        .load(c)
        .map_err(store_error)?;
        if let Some(total) = rows.first().map(|row| row.total) {
            let keys = rows
                .into_iter()
                .map(|row| row.key.into_listed(enterprise.to_owned()))
                .collect::<Result<_, _>>()?;
            return Ok(KeyPage {
                keys,
                total: u64::try_from(total).unwrap_or(0),
            });
        }
        if offset == 0 {
            return Ok(KeyPage {
                keys: Vec::new(),
                total: 0,
            });
        }
    }
    // Two static queries rather than one boxed query, whose SQL Diesel builds again
    // on every call; both run on the backend's own connection (see `on_backend`).
    macro_rules! page {
        ($filtered:expr) => {
            on_backend!(&mut *conn, |c| {
                let total: i64 = $filtered.count().get_result(c).map_err(store_error)?;
                let rows: Vec<ListedKeyRow> = $filtered
                    .select(ListedKeyRow::as_select())
                    .order(webhook_keys::seq.asc())
                    .limit(i64::from(limit))
                    .offset(offset)
                    .load(c)
                    .map_err(store_error)?;
                (total, rows)
            })
        };
    }
    let of_enterprise = webhook_keys::enterprise_id.eq(enterprise);
    let (total, rows) = match status {
        None => page!(webhook_keys::table.filter(of_enterprise)),
        Some(status) => page!(webhook_keys::table
            .filter(of_enterprise)
            .filter(webhook_keys::status.eq(status.as_str()))),
    };
    let keys = rows
        .into_iter()
        .map(|row| row.into_listed(enterprise.to_owned()))
        .collect::<Result<_, _>>()?;
    Ok(KeyPage {
        keys,
        total: u64::try_from(total).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::connection::SimpleConnection;

    fn database_error(message: &str) -> DieselError {
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, Box::new(message.to_owned()))
    }

    #[test]
    fn transactions_given_up_for_each_other_are_worth_a_retry() {
        for message in [
            "deadlock detected",
            "could not serialize access due to concurrent update",
        ] {
            assert!(
                matches!(
                    store_error(database_error(message)),
                    StoreError::Unavailable(_)
                ),
                "{message}"
            );
        }
        assert!(matches!(
            store_error(database_error("syntax error at or near \"SELEC\"")),
            StoreError::Internal(_)
        ));
    }

    /// The plan PostgreSQL keeps for `statement` (prepared, its `$n` typed by their
    /// casts) once it plans it for any parameters, executed with `arguments`, one line
    /// of `EXPLAIN` each.
    fn generic_plan(conn: &mut diesel::PgConnection, statement: &str, arguments: &str) -> String {
        #[derive(QueryableByName)]
        struct Line {
            #[diesel(sql_type = diesel::sql_types::Text)]
            line: String,
        }
        conn.batch_execute(&format!(
            "DEALLOCATE ALL; SET plan_cache_mode = force_generic_plan; PREPARE probe AS {statement}"
        ))
        .expect("prepare");
        let lines: Vec<Line> = diesel::sql_query("SELECT line FROM pg_temp.plan_of($1) AS line")
            .bind::<diesel::sql_types::Text, _>(format!("EXECUTE probe({arguments})"))
            .load(conn)
            .expect("explain");
        lines
            .into_iter()
            .map(|l| l.line)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The PostgreSQL connection of a PostgreSQL test database.
    fn postgres(conn: &mut DbConnection) -> &mut diesel::PgConnection {
        match conn {
            DbConnection::Postgres(conn) => conn,
            DbConnection::Sqlite(_) => unreachable!("a PostgreSQL test database"),
        }
    }

    fn random_page_cost(db: &crate::testing::TestDb) -> String {
        #[derive(QueryableByName)]
        struct Setting {
            #[diesel(sql_type = diesel::sql_types::Text)]
            value: String,
        }
        let mut conn = db.pool().get().expect("connection");
        diesel::sql_query("SELECT current_setting('random_page_cost') AS value")
            .get_result::<Setting>(postgres(&mut conn))
            .expect("setting")
            .value
    }

    #[test]
    fn postgres_sessions_cost_random_reads_low_unless_the_database_sets_its_own() {
        let Some(db) = crate::testing::TestDb::postgres() else {
            return;
        };
        assert_eq!(random_page_cost(&db), "1.1");
        let crate::DatabaseUrl::Postgres(url) = &db.url else {
            unreachable!("a PostgreSQL test database");
        };
        let name = url.rsplit('/').next().expect("database name");
        let mut conn = db.pool().get().expect("connection");
        postgres(&mut conn)
            .batch_execute(&format!("ALTER DATABASE {name} SET random_page_cost = 2"))
            .expect("alter database");
        // A new pool's sessions start with the database's value and keep it.
        assert_eq!(random_page_cost(&db), "2");
    }

    /// On a database of a thousand keys over ten enterprises, each stored in its
    /// enterprise's order, the plans kept for any parameters read keys through their
    /// indexes: a read of keys and a replay batch probe the (enterprise, keyId) index
    /// instead of scanning the table (which the server's default cost of a random read
    /// prefers below about a thousand keys, see `db::POSTGRES_SESSION`), and a page
    /// walks its enterprise's index instead of the whole table in `seq` order.
    #[test]
    fn postgres_reads_keys_through_indexes_whatever_the_parameters() {
        let Some(db) = crate::testing::TestDb::postgres() else {
            return;
        };
        let mut conn = crate::ConnectionManager::new(db.url.clone())
            .establish()
            .expect("connect");
        let conn = postgres(&mut conn);
        conn.batch_execute(
            "INSERT INTO enterprises (id, name, created_at)
                 SELECT 'e' || i, 'E', 0 FROM generate_series(0, 9) i;
             INSERT INTO webhook_keys (id, enterprise_id, key_id, key_name, algorithm, jwk,
                                       thumbprint, status, created_at, created_by,
                                       revoked_at, revoked_by)
                 SELECT md5(i::text)::uuid::text, 'e' || (i / 100), 'k-' || i % 100,
                        'k-' || i % 100, 'EdDSA',
                        '{\"crv\":\"Ed25519\",\"kid\":\"k-' || i % 100 || '\",\"kty\":\"OKP\",\"x\":\"' || substr(md5(i::text) || md5(i::text), 1, 43) || '\"}',
                        substr(md5((-i)::text) || md5((-i)::text), 1, 43),
                        CASE WHEN i % 100 < 20 THEN 'ACTIVE' ELSE 'REVOKED' END, 0,
                        'admin@example.com',
                        CASE WHEN i % 100 < 20 THEN NULL ELSE 0 END,
                        CASE WHEN i % 100 < 20 THEN NULL ELSE 'admin@example.com' END
                 FROM generate_series(0, 999) i;
             CREATE FUNCTION pg_temp.plan_of(q text) RETURNS SETOF text LANGUAGE plpgsql AS
                 'DECLARE line text; BEGIN
                      FOR line IN EXECUTE ''EXPLAIN '' || q LOOP RETURN NEXT line; END LOOP;
                  END';",
        )
        .expect("load keys");
        conn.batch_execute("VACUUM ANALYZE").expect("vacuum");
        let keys = generic_plan(
            conn,
            crate::key_reader::POSTGRES_KEYS,
            "'{e9,e9}', '{k-50,k-51}'",
        );
        assert!(!keys.contains("Seq Scan on webhook_keys"), "{keys}");
        let batch = generic_plan(
            conn,
            crate::replay::POSTGRES_BATCH,
            "'{e9}', '{ev-1}', '{k-5}', '{1}', '{2}', '{}', '{}', '{}', 60000",
        );
        assert!(!batch.contains("Seq Scan on webhook_keys"), "{batch}");
        let page = generic_plan(conn, POSTGRES_PAGE, "'e9', NULL, 50, 0");
        assert!(
            page.contains("webhook_keys_enterprise_seq_status")
                && !page.contains("webhook_keys_pkey"),
            "{page}"
        );

        // Executed as a quiet service does, one key or one record at a time, both
        // statements settle on the plan for any parameters rather than plan each
        // execution again, whatever the cost of a random read.
        #[derive(QueryableByName)]
        struct Plans {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            generic_plans: i64,
        }
        for (statement, arguments) in [
            (
                crate::key_reader::POSTGRES_KEYS,
                "'{e9}', '{k-5}'".to_owned(),
            ),
            (
                crate::replay::POSTGRES_BATCH,
                "'{e9}', '{quiet-' || n || '}', '{k-5}', '{1}', '{2}', '{}', '{}', '{}', 60000"
                    .to_owned(),
            ),
        ] {
            conn.batch_execute(&format!(
                "DEALLOCATE ALL; SET plan_cache_mode = auto; SET random_page_cost = 4;
                 PREPARE probe AS {statement}"
            ))
            .expect("prepare");
            for n in 0..8 {
                let arguments = arguments.replace("' || n || '", &n.to_string());
                conn.batch_execute(&format!("EXECUTE probe({arguments})"))
                    .expect("execute");
            }
            let plans: Plans = diesel::sql_query(
                "SELECT generic_plans FROM pg_prepared_statements WHERE name = 'probe'",
            )
            .get_result(conn)
            .expect("plans");
            assert!(plans.generic_plans > 0, "{statement}");
        }
    }
}
