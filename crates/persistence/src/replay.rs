//! Group commit of replay records.
//!
//! Every valid verification must be durable before it is reported, and it must be the
//! only one for its evaluationId across every process sharing the database. One
//! transaction (and one fsync) per verification would make the disk the limit, so
//! verifications hand their record to one writer thread per process, which takes all
//! records waiting at that moment, writes them in one transaction and answers each
//! caller only after the commit. While a batch commits, the next one gathers: the
//! batch grows with the load, and an idle service commits a lone record at once.
//!
//! In the transaction, each distinct key of the batch is read (on PostgreSQL with a
//! shared row lock, so a concurrent revocation waits for the commit; on SQLite the write
//! lock taken at `BEGIN IMMEDIATE` does the same) and must be ACTIVE; then each record
//! is inserted with `ON CONFLICT DO NOTHING`, so a second record of an evaluationId,
//! from this batch, an earlier one, or another process, is a replay. Records are
//! written in the order of their unique key, (evaluationId, enterprise), and keys read
//! in (enterprise, keyId) order, so two processes' batches take their locks in the same
//! order and cannot deadlock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::Text;
use keyward_domain::ports::{RecordDone, RecordOutcome};
use keyward_domain::StoreError;

use crate::db::{DbConnection, Pool};
use crate::durable::Durable;
use crate::prepared::{Bind, Prepared};
use crate::repo::WriteGate;
use crate::schema::webhook_keys;

/// Most records in one transaction.
const MAX_BATCH: usize = 512;
/// SQLite: how long the writer waits at most for a log sync in flight before
/// committing (see [`crate::durable::WalSync::wait_while_syncing`]).
const SYNC_WAIT: Duration = Duration::from_millis(20);
/// Writer threads per process.
const WRITERS: usize = 1;
/// How often a key's `last_verified_at` is stamped at most (it is informational).
const LAST_VERIFIED_RESOLUTION_MS: i64 = 60_000;
/// Keys whose last stamp this process remembers, at most.
const STAMPS_MAX: usize = 4096;

/// One verification to record.
pub(crate) struct Record {
    pub enterprise: String,
    pub evaluation_id: String,
    pub key_id: String,
    pub at: i64,
    pub keep_until: i64,
}

struct Job {
    record: Record,
    done: RecordDone,
}

/// The handle verifications use. The writer thread starts with the first record (so
/// a process that never verifies, such as an admin command, never has one) and stops
/// when the last handle is gone.
pub(crate) struct ReplayWriter {
    pool: Pool,
    gate: Arc<WriteGate>,
    jobs: std::sync::OnceLock<mpsc::Sender<Job>>,
}

impl std::fmt::Debug for ReplayWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplayWriter")
    }
}

impl ReplayWriter {
    pub(crate) fn new(pool: Pool, gate: Arc<WriteGate>) -> Self {
        Self {
            pool,
            gate,
            jobs: std::sync::OnceLock::new(),
        }
    }

    fn start(&self) -> mpsc::Sender<Job> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        // One thread: measured, more writers (overlapping PostgreSQL commits) cost more
        // CPU than they save in waiting.
        for _ in 0..WRITERS {
            let pool = self.pool.clone();
            let gate = self.gate.clone();
            let queue = queue.clone();
            let acks = start_acker();
            let spawned = std::thread::Builder::new()
                .name("keyward-replay-writer".into())
                .spawn(move || Writer::new(pool, gate, acks).run(&queue));
            if let Err(err) = spawned {
                // Without any thread every record fails with "unavailable" below.
                tracing::error!(error = %err, "cannot start a replay record writer");
            }
        }
        jobs
    }

    /// Records `record` in the next group commit and waits for its outcome.
    pub(crate) fn record(&self, record: Record) -> Result<RecordOutcome, StoreError> {
        let (reply, outcome) = mpsc::sync_channel(1);
        self.submit(
            record,
            Box::new(move |result| {
                let _ = reply.send(result);
            }),
        );
        outcome.recv().map_err(|_| stopped())?
    }

    /// Queues `record` for the next group commit; `done` is called after it.
    pub(crate) fn submit(&self, record: Record, done: RecordDone) {
        if let Err(mpsc::SendError(job)) = self
            .jobs
            .get_or_init(|| self.start())
            .send(Job { record, done })
        {
            (job.done)(Err(stopped()));
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the replay record writer stopped".into())
}

/// A committed batch waiting for its log sync before its callers are answered.
struct Ack {
    batch: Vec<Job>,
    outcomes: Vec<RecordOutcome>,
    durable: Durable,
}

/// The thread that answers committed batches once they are on disk, so that the writer
/// commits the next batch meanwhile (see [`crate::durable`]). `None` if it cannot
/// start: the writer then waits for each sync itself.
fn start_acker() -> Option<mpsc::Sender<Ack>> {
    let (acks, queue) = mpsc::channel::<Ack>();
    let spawned = std::thread::Builder::new()
        .name("keyward-replay-ack".into())
        .spawn(move || {
            while let Ok(ack) = queue.recv() {
                answer(ack);
            }
        });
    match spawned {
        Ok(_) => Some(acks),
        Err(err) => {
            tracing::warn!(error = %err, "cannot start the replay acknowledgement thread");
            None
        }
    }
}

/// Answers a committed batch's callers once it is durable.
fn answer(ack: Ack) {
    match ack.durable.wait() {
        Ok(()) => {
            for (job, outcome) in ack.batch.into_iter().zip(ack.outcomes) {
                (job.done)(Ok(outcome));
            }
        }
        Err(why) => {
            let err = StoreError::Internal(why);
            for job in ack.batch {
                (job.done)(Err(err.clone()));
            }
        }
    }
}

struct Writer {
    pool: Pool,
    gate: Arc<WriteGate>,
    acks: Option<mpsc::Sender<Ack>>,
    stamped: HashMap<(String, String), Instant>,
}

impl Writer {
    fn new(pool: Pool, gate: Arc<WriteGate>, acks: Option<mpsc::Sender<Ack>>) -> Self {
        Self {
            pool,
            gate,
            acks,
            stamped: HashMap::new(),
        }
    }

    /// Takes the records waiting now, and on SQLite those that arrive while the last
    /// batch's log sync is in flight (a commit made during it would wait for the next
    /// sync anyway); `None` once every handle is gone. The batch grows with the load,
    /// with no window of its own: a commit, then its sync, take long enough for the next
    /// batch to gather. A window on top (SQLite's writer used to sleep 200 µs first)
    /// lengthened every record's wait; at a bounded number of requests in flight the
    /// cores then idled (see docs/performance.md).
    fn gather(&self, queue: &Mutex<mpsc::Receiver<Job>>) -> Option<Vec<Job>> {
        let queue = queue.lock().unwrap_or_else(|p| p.into_inner());
        let first = queue.recv().ok()?;
        let mut batch = vec![first];
        take_waiting(&queue, &mut batch);
        if let Some(wal) = self.gate.wal() {
            wal.wait_while_syncing(SYNC_WAIT);
            take_waiting(&queue, &mut batch);
        }
        Some(batch)
    }

    fn run(mut self, queue: &Mutex<mpsc::Receiver<Job>>) {
        while let Some(batch) = self.gather(queue) {
            let records: Vec<&Record> = batch.iter().map(|job| &job.record).collect();
            let due = self.due_stamps(&records);
            let committed = self.commit(&records, &due);
            metrics::histogram!("keyward_replay_batch_size").record(batch.len() as f64);
            match committed {
                Ok((outcomes, durable)) => {
                    let ack = Ack {
                        batch,
                        outcomes,
                        durable,
                    };
                    match (&self.acks, ack.durable.is_pending()) {
                        (Some(acks), true) => {
                            if let Err(mpsc::SendError(ack)) = acks.send(ack) {
                                answer(ack);
                            }
                        }
                        _ => answer(ack),
                    }
                }
                Err(err) => {
                    for job in batch {
                        (job.done)(Err(err.clone()));
                    }
                }
            }
        }
    }

    /// The batch's keys whose `last_verified_at` this process has not stamped for a
    /// while, with the time to stamp; remembered as stamped from now on.
    fn due_stamps(&mut self, records: &[&Record]) -> BTreeMap<(String, String), i64> {
        let now = Instant::now();
        let resolution = Duration::from_millis(LAST_VERIFIED_RESOLUTION_MS as u64);
        let mut due = BTreeMap::new();
        for r in records {
            let key = (r.enterprise.clone(), r.key_id.clone());
            if self
                .stamped
                .get(&key)
                .is_some_and(|t| now.duration_since(*t) < resolution)
            {
                continue;
            }
            due.insert(key, r.at);
        }
        if self.stamped.len() + due.len() > STAMPS_MAX {
            self.stamped.clear();
        }
        for key in due.keys() {
            self.stamped.insert(key.clone(), now);
        }
        due
    }

    /// Writes `records` in one transaction; the outcomes are in `records`' order, to be
    /// reported once the commit is durable.
    fn commit(
        &mut self,
        records: &[&Record],
        due: &BTreeMap<(String, String), i64>,
    ) -> Result<(Vec<RecordOutcome>, Durable), StoreError> {
        let mut conn = self
            .pool
            .get()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.sort_by(|a, b| {
            let (a, b) = (records[*a], records[*b]);
            (&a.evaluation_id, &a.enterprise).cmp(&(&b.evaluation_id, &b.enterprise))
        });
        match &mut *conn {
            DbConnection::Postgres(pg) => {
                let outcomes =
                    postgres_commit(pg, records, &order, due).map_err(crate::repo::store_error)?;
                Ok((outcomes, Durable::already()))
            }
            DbConnection::Sqlite(_) => sqlite_commit(&self.gate, &mut conn, records, order, due),
        }
    }
}

/// Adds the records already queued to `batch`, up to [`MAX_BATCH`].
fn take_waiting(queue: &mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// SQLite: one `BEGIN IMMEDIATE` transaction (the write lock keeps revocations out
/// until the commit): read the batch's distinct keys, then insert each active one's
/// record with a prepared statement. In process, statements cost no round trip.
fn sqlite_commit(
    gate: &WriteGate,
    conn: &mut DbConnection,
    records: &[&Record],
    order: Vec<usize>,
    due: &BTreeMap<(String, String), i64>,
) -> Result<(Vec<RecordOutcome>, Durable), StoreError> {
    let mut outcomes = vec![RecordOutcome::KeyRevoked; records.len()];
    let (done, durable) = crate::repo::write_tx_then(
        gate,
        conn,
        |conn| match conn {
            DbConnection::Sqlite(conn) => {
                sqlite_batch(conn, records, order, due, &mut outcomes).map_err(Into::into)
            }
            DbConnection::Postgres(_) => Err(crate::repo::Abort::Outcome(())),
        },
        |done, durable| (done, durable),
    );
    match done {
        Ok(()) => Ok((outcomes, durable)),
        Err(crate::repo::Abort::Db(err)) => Err(crate::repo::store_error(err)),
        Err(crate::repo::Abort::Outcome(())) => Err(crate::repo::store_error(
            diesel::result::Error::RollbackTransaction,
        )),
    }
}

/// What [`sqlite_batch`] reads of a key (its seq, whether it is ACTIVE, its last stamp)
/// and whether this process is due to stamp it (cleared once stamped in this batch).
struct SqliteKey {
    seq: i64,
    active: bool,
    last_verified_at: Option<i64>,
    stamp: bool,
}

/// SQLite: one record, unless its evaluationId has one in its enterprise already.
/// Written out rather than built with Diesel's insert, which builds its text again from
/// the query's parts (each name quoted) at every execution to find the prepared
/// statement, where [`Prepared`] copies this constant: in profiles, the batch's
/// statements took 27 µs of the writer's CPU per commit that way, 15 µs this way.
const SQLITE_RECORD: &str = "INSERT INTO replay_records \
    (enterprise_id, evaluation_id, key_id, verified_at, expires_at) \
    VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";

/// SQLite: a key's stamp, by its row (read in the same transaction).
const SQLITE_STAMP: &str =
    "UPDATE webhook_keys SET last_verified_at = $1 WHERE enterprise_id = $2 AND seq = $3";

/// The statements of [`sqlite_commit`]'s transaction; `outcomes` in `records`' order.
fn sqlite_batch(
    conn: &mut diesel::SqliteConnection,
    records: &[&Record],
    order: Vec<usize>,
    due: &BTreeMap<(String, String), i64>,
    outcomes: &mut [RecordOutcome],
) -> Result<(), diesel::result::Error> {
    let mut keys: BTreeMap<(&str, &str), Option<SqliteKey>> = BTreeMap::new();
    for r in records {
        let key = (r.enterprise.as_str(), r.key_id.as_str());
        if keys.contains_key(&key) {
            continue;
        }
        let row: Option<(i64, String, Option<i64>)> = webhook_keys::table
            .filter(webhook_keys::enterprise_id.eq(key.0))
            .filter(webhook_keys::key_id.eq(key.1))
            .select((
                webhook_keys::seq,
                webhook_keys::status,
                webhook_keys::last_verified_at,
            ))
            .first(conn)
            .optional()?;
        let state = row.map(|(seq, status, last_verified_at)| SqliteKey {
            seq,
            active: status == "ACTIVE",
            last_verified_at,
            stamp: due.contains_key(&(key.0.to_owned(), key.1.to_owned())),
        });
        keys.insert(key, state);
    }
    let is_active = |key: &Option<SqliteKey>| key.as_ref().is_some_and(|k| k.active);
    for i in order {
        let r = records[i];
        if !keys
            .get(&(r.enterprise.as_str(), r.key_id.as_str()))
            .is_some_and(is_active)
        {
            continue;
        }
        let binds = [
            Bind::Text(&r.enterprise),
            Bind::Text(&r.evaluation_id),
            Bind::Text(&r.key_id),
            Bind::BigInt(r.at),
            Bind::BigInt(r.keep_until),
        ];
        let inserted = Prepared::new(SQLITE_RECORD, &binds).execute(conn)?;
        outcomes[i] = if inserted == 1 {
            RecordOutcome::Recorded
        } else {
            RecordOutcome::Replayed
        };
    }
    // The keys' last verification, in the same commit (one writer: no lock order to
    // respect), for keys due a stamp that verified in this batch, by the row read
    // above: one prepared statement, no second index lookup.
    for (i, r) in records.iter().enumerate() {
        if outcomes[i] != RecordOutcome::Recorded {
            continue;
        }
        let Some(Some(key)) = keys.get_mut(&(r.enterprise.as_str(), r.key_id.as_str())) else {
            continue;
        };
        if !key.stamp
            || key
                .last_verified_at
                .is_some_and(|last| last >= r.at - LAST_VERIFIED_RESOLUTION_MS)
        {
            continue;
        }
        key.stamp = false;
        let binds = [
            Bind::BigInt(r.at),
            Bind::Text(&r.enterprise),
            Bind::BigInt(key.seq),
        ];
        Prepared::new(SQLITE_STAMP, &binds).execute(conn)?;
    }
    Ok(())
}

/// PostgreSQL: the whole batch in one statement, so one round trip and one commit.
/// The statement takes a shared lock on each active key row of the batch (so a
/// concurrent revocation waits for this commit, and one that committed first makes its
/// key's records fail), then inserts the records of active keys in (evaluationId,
/// enterprise) order, that of their unique key, skipping evaluationIds that already
/// have one. Last, in the same commit, it stamps the keys due a stamp (`$6`..`$8`)
/// that recorded something.
/// `SKIP LOCKED` leaves a key row alone while another process's batch holds it too
/// (its shared lock would make the update wait, and that batch may be waiting for this
/// one), so stamping never waits and cannot deadlock; a skipped key is stamped by a
/// later verification. The update then changes only rows the statement has just locked
/// for it. The arrays are read through scalar subqueries so that PostgreSQL keeps one
/// plan for every batch size (see `key_reader::POSTGRES_KEYS`): planned for the batch
/// at hand, this statement took longer to plan than to run, and a connection whose
/// first batches were single records planned every batch again.
pub(crate) const POSTGRES_BATCH: &str = "\
WITH batch (enterprise_id, evaluation_id, key_id, verified_at, expires_at) AS (
    SELECT * FROM unnest((SELECT $1::text[]), (SELECT $2::text[]), (SELECT $3::text[]),
                         (SELECT $4::bigint[]), (SELECT $5::bigint[]))
), active AS (
    SELECT k.enterprise_id, k.key_id FROM webhook_keys k
    WHERE (k.enterprise_id, k.key_id) IN (SELECT enterprise_id, key_id FROM batch)
      AND k.status = 'ACTIVE'
    ORDER BY k.enterprise_id, k.key_id
    FOR SHARE OF k
), recorded AS (
    INSERT INTO replay_records (enterprise_id, evaluation_id, key_id, verified_at, expires_at)
    SELECT b.enterprise_id, b.evaluation_id, b.key_id, b.verified_at, b.expires_at
    FROM batch b JOIN active a ON a.enterprise_id = b.enterprise_id AND a.key_id = b.key_id
    ORDER BY b.evaluation_id, b.enterprise_id
    ON CONFLICT (evaluation_id, enterprise_id) DO NOTHING
    RETURNING enterprise_id, evaluation_id, key_id
), due (enterprise_id, key_id, at) AS (
    SELECT * FROM unnest((SELECT $6::text[]), (SELECT $7::text[]), (SELECT $8::bigint[]))
), stamping AS (
    SELECT k.seq, d.at FROM webhook_keys k
    JOIN due d ON d.enterprise_id = k.enterprise_id AND d.key_id = k.key_id
    WHERE (k.enterprise_id, k.key_id) IN (SELECT enterprise_id, key_id FROM recorded)
      AND (k.last_verified_at IS NULL OR k.last_verified_at < d.at - $9)
    ORDER BY k.seq
    FOR NO KEY UPDATE OF k SKIP LOCKED
), stamped AS (
    UPDATE webhook_keys k SET last_verified_at = stamping.at
    FROM stamping WHERE k.seq = stamping.seq
)
SELECT enterprise_id, evaluation_id FROM recorded";

#[derive(QueryableByName)]
struct Inserted {
    #[diesel(sql_type = Text)]
    enterprise_id: String,
    #[diesel(sql_type = Text)]
    evaluation_id: String,
}

fn postgres_commit(
    conn: &mut diesel::PgConnection,
    records: &[&Record],
    order: &[usize],
    due: &BTreeMap<(String, String), i64>,
) -> Result<Vec<RecordOutcome>, diesel::result::Error> {
    let column =
        |f: fn(&Record) -> String| order.iter().map(|&i| f(records[i])).collect::<Vec<_>>();
    let (enterprises, evaluations, key_ids) = (
        column(|r| r.enterprise.clone()),
        column(|r| r.evaluation_id.clone()),
        column(|r| r.key_id.clone()),
    );
    let ats: Vec<i64> = order.iter().map(|&i| records[i].at).collect();
    let keep_until: Vec<i64> = order.iter().map(|&i| records[i].keep_until).collect();
    let mut due_enterprises = Vec::with_capacity(due.len());
    let mut due_key_ids = Vec::with_capacity(due.len());
    let mut due_at = Vec::with_capacity(due.len());
    for ((enterprise, key_id), at) in due {
        due_enterprises.push(enterprise.clone());
        due_key_ids.push(key_id.clone());
        due_at.push(*at);
    }
    let binds = [
        Bind::Texts(&enterprises),
        Bind::Texts(&evaluations),
        Bind::Texts(&key_ids),
        Bind::BigInts(&ats),
        Bind::BigInts(&keep_until),
        Bind::Texts(&due_enterprises),
        Bind::Texts(&due_key_ids),
        Bind::BigInts(&due_at),
        Bind::BigInt(LAST_VERIFIED_RESOLUTION_MS),
    ];
    let inserted: std::collections::HashSet<(String, String)> =
        Prepared::new(POSTGRES_BATCH, &binds)
            .load::<Inserted>(conn)?
            .into_iter()
            .map(|row| (row.enterprise_id, row.evaluation_id))
            .collect();
    // A batch may hold one evaluationId twice: the first in order is the record.
    let mut claimed = std::collections::HashSet::new();
    let mut outcomes = vec![RecordOutcome::Replayed; records.len()];
    let mut refused = Vec::new();
    for &i in order {
        let key = (
            records[i].enterprise.clone(),
            records[i].evaluation_id.clone(),
        );
        if inserted.contains(&key) && claimed.insert(key) {
            outcomes[i] = RecordOutcome::Recorded;
        } else {
            refused.push(i);
        }
    }
    // Rare: say whether a refused record's key was revoked or its evaluationId taken.
    for i in refused {
        let status: Option<String> = webhook_keys::table
            .filter(webhook_keys::enterprise_id.eq(&records[i].enterprise))
            .filter(webhook_keys::key_id.eq(&records[i].key_id))
            .select(webhook_keys::status)
            .first(conn)
            .optional()?;
        if status.as_deref() != Some("ACTIVE") {
            outcomes[i] = RecordOutcome::KeyRevoked;
        }
    }
    Ok(outcomes)
}
