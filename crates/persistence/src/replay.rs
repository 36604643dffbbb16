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
//! written in (enterprise, evaluationId) order and keys read in (enterprise, keyId)
//! order, so two processes' batches take their locks in the same order and cannot
//! deadlock.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use keyward_domain::ports::{RecordDone, RecordOutcome};
use keyward_domain::StoreError;

use crate::db::{DbConnection, Pool};
use crate::schema::replay_records;

/// Most records in one transaction.
const MAX_BATCH: usize = 512;
/// How often a key's `last_verified_at` is stamped at most (it is informational).
pub(crate) const LAST_VERIFIED_RESOLUTION_MS: i64 = 60_000;
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
    jobs: std::sync::OnceLock<mpsc::Sender<Job>>,
}

impl std::fmt::Debug for ReplayWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplayWriter")
    }
}

impl ReplayWriter {
    pub(crate) fn new(pool: Pool) -> Self {
        Self {
            pool,
            jobs: std::sync::OnceLock::new(),
        }
    }

    fn start(&self) -> mpsc::Sender<Job> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let pool = self.pool.clone();
        let spawned = std::thread::Builder::new()
            .name("keyward-replay-writer".into())
            .spawn(move || Writer::new(pool).run(&queue));
        if let Err(err) = spawned {
            // Without the thread every record fails with "unavailable" below.
            tracing::error!(error = %err, "cannot start the replay record writer");
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

struct Writer {
    pool: Pool,
    stamped: HashMap<(String, String), Instant>,
}

impl Writer {
    fn new(pool: Pool) -> Self {
        Self {
            pool,
            stamped: HashMap::new(),
        }
    }

    fn run(mut self, queue: &mpsc::Receiver<Job>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let records: Vec<&Record> = batch.iter().map(|job| &job.record).collect();
            let outcomes = self.commit(&records);
            metrics::histogram!("keyward_replay_batch_size").record(batch.len() as f64);
            let stamps: Vec<(String, String, i64)> = match &outcomes {
                Ok(outcomes) => records
                    .iter()
                    .zip(outcomes)
                    .filter(|(_, o)| **o == RecordOutcome::Recorded)
                    .map(|(r, _)| (r.enterprise.clone(), r.key_id.clone(), r.at))
                    .collect(),
                Err(_) => Vec::new(),
            };
            match outcomes {
                Ok(outcomes) => {
                    for (job, outcome) in batch.into_iter().zip(outcomes) {
                        (job.done)(Ok(outcome));
                    }
                }
                Err(err) => {
                    for job in batch {
                        (job.done)(Err(err.clone()));
                    }
                }
            }
            self.stamp(stamps);
        }
    }

    /// Writes `records` in one transaction; the outcomes are in `records`' order.
    fn commit(&self, records: &[&Record]) -> Result<Vec<RecordOutcome>, StoreError> {
        let mut conn = self
            .pool
            .get()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.sort_by(|a, b| {
            let (a, b) = (records[*a], records[*b]);
            (&a.enterprise, &a.evaluation_id).cmp(&(&b.enterprise, &b.evaluation_id))
        });
        let mut outcomes = vec![RecordOutcome::KeyRevoked; records.len()];
        crate::repo::write_tx(&mut conn, |conn| {
            let active = active_keys(conn, records)?;
            let to_insert: Vec<usize> = order
                .into_iter()
                .filter(|&i| {
                    let r = records[i];
                    active.contains_key(&(r.enterprise.as_str(), r.key_id.as_str()))
                })
                .collect();
            let inserted = insert(conn, records, &to_insert)?;
            for (i, inserted) in to_insert.into_iter().zip(inserted) {
                outcomes[i] = if inserted {
                    RecordOutcome::Recorded
                } else {
                    RecordOutcome::Replayed
                };
            }
            Ok::<_, crate::repo::Abort<()>>(())
        })
        .map_err(|abort| match abort {
            crate::repo::Abort::Db(err) => crate::repo::store_error(err),
            crate::repo::Abort::Outcome(()) => StoreError::Internal("batch aborted".into()),
        })?;
        Ok(outcomes)
    }

    /// Stamps `last_verified_at` of keys not stamped by this process for a while.
    fn stamp(&mut self, recorded: Vec<(String, String, i64)>) {
        let now = Instant::now();
        let due = Duration::from_millis(LAST_VERIFIED_RESOLUTION_MS as u64);
        let mut todo = BTreeMap::new();
        for (enterprise, key_id, at) in recorded {
            let key = (enterprise, key_id);
            if self
                .stamped
                .get(&key)
                .is_some_and(|t| now.duration_since(*t) < due)
            {
                continue;
            }
            todo.insert(key, at);
        }
        if todo.is_empty() {
            return;
        }
        if self.stamped.len() + todo.len() > STAMPS_MAX {
            self.stamped.clear();
        }
        let Ok(mut conn) = self.pool.get() else {
            return;
        };
        for ((enterprise, key_id), at) in todo {
            // Outside the record transaction: taking the key row's write lock there while
            // other processes' batches hold it shared could deadlock.
            let stamped = diesel::sql_query(
                "UPDATE webhook_keys SET last_verified_at = $1 WHERE enterprise_id = $2 \
                 AND key_id = $3 AND (last_verified_at IS NULL OR last_verified_at < $4)",
            )
            .bind::<BigInt, _>(at)
            .bind::<Text, _>(&enterprise)
            .bind::<Text, _>(&key_id)
            .bind::<BigInt, _>(at - LAST_VERIFIED_RESOLUTION_MS)
            .execute(&mut *conn);
            if let Err(err) = stamped {
                tracing::warn!(error = %err, "could not stamp the key's last verification");
            }
            self.stamped.insert((enterprise, key_id), now);
        }
    }
}

#[derive(QueryableByName)]
struct StatusRow {
    #[diesel(sql_type = Text)]
    status: String,
}

/// The batch's distinct keys that are ACTIVE, read in (enterprise, keyId) order.
fn active_keys<'r>(
    conn: &mut DbConnection,
    records: &[&'r Record],
) -> Result<BTreeMap<(&'r str, &'r str), ()>, diesel::result::Error> {
    let lock = match conn {
        DbConnection::Postgres(_) => " FOR SHARE",
        DbConnection::Sqlite(_) => "",
    };
    let sql =
        format!("SELECT status FROM webhook_keys WHERE enterprise_id = $1 AND key_id = $2{lock}");
    let keys: BTreeMap<(&str, &str), ()> = records
        .iter()
        .map(|r| ((r.enterprise.as_str(), r.key_id.as_str()), ()))
        .collect();
    let mut active = BTreeMap::new();
    for (enterprise, key_id) in keys.into_keys() {
        let status: Option<StatusRow> = diesel::sql_query(&sql)
            .bind::<Text, _>(enterprise)
            .bind::<Text, _>(key_id)
            .get_result(conn)
            .optional()?;
        if status.is_some_and(|row| row.status == "ACTIVE") {
            active.insert((enterprise, key_id), ());
        }
    }
    Ok(active)
}

#[derive(Insertable)]
#[diesel(table_name = replay_records)]
struct NewRecord<'a> {
    enterprise_id: &'a str,
    evaluation_id: &'a str,
    key_id: &'a str,
    verified_at: i64,
    expires_at: i64,
}

impl<'a> From<&'a Record> for NewRecord<'a> {
    fn from(r: &'a Record) -> Self {
        Self {
            enterprise_id: &r.enterprise,
            evaluation_id: &r.evaluation_id,
            key_id: &r.key_id,
            verified_at: r.at,
            expires_at: r.keep_until,
        }
    }
}

/// Inserts `records[i]` for each `i` of `which` (in that order) unless its evaluationId
/// already has a record; says for each whether it was inserted. PostgreSQL gets one
/// statement for the batch (one round trip); SQLite, in process, one prepared
/// statement per record.
fn insert(
    conn: &mut DbConnection,
    records: &[&Record],
    which: &[usize],
) -> Result<Vec<bool>, diesel::result::Error> {
    match conn {
        DbConnection::Sqlite(conn) => which
            .iter()
            .map(|&i| {
                diesel::insert_into(replay_records::table)
                    .values(NewRecord::from(records[i]))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .map(|rows| rows == 1)
            })
            .collect(),
        DbConnection::Postgres(conn) => {
            if which.is_empty() {
                return Ok(Vec::new());
            }
            let rows: Vec<NewRecord<'_>> =
                which.iter().map(|&i| NewRecord::from(records[i])).collect();
            let inserted: std::collections::HashSet<(String, String)> =
                diesel::insert_into(replay_records::table)
                    .values(&rows)
                    .on_conflict_do_nothing()
                    .returning((replay_records::enterprise_id, replay_records::evaluation_id))
                    .load::<(String, String)>(conn)?
                    .into_iter()
                    .collect();
            // A batch may hold one evaluationId twice: the first in order is the record.
            let mut claimed = std::collections::HashSet::new();
            Ok(which
                .iter()
                .map(|&i| {
                    let key = (
                        records[i].enterprise.clone(),
                        records[i].evaluation_id.clone(),
                    );
                    inserted.contains(&key) && claimed.insert(key)
                })
                .collect())
        }
    }
}
