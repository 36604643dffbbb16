//! Keys read for gets and for verifications whose key is not in memory, several at a
//! time.
//!
//! A verification names its key by (enterprise, keyId); the first one of a key since
//! the process started (or since the key fell out of the bounded cache) reads it from
//! the database. On a database of many keys that is most verifications, and one read
//! each, on a thread of its own, cost more than the signature check: on PostgreSQL a
//! round trip with its statement and its wake-ups on both sides. A get reads one key
//! too. So, as replay records are written, keys are read by one thread per process,
//! which takes every read waiting at that moment and answers each caller when its batch
//! is read: on PostgreSQL in one statement; on SQLite one distinct key after the other
//! on one connection. A key asked for twice in a batch is read once. Every read of a
//! batch starts after each of its requests was queued, so no answer is older than its
//! request. An idle service reads a lone key at once; under load, the reads asked for
//! during one batch make up the next.

use std::collections::HashMap;
use std::sync::{mpsc, OnceLock};

use diesel::prelude::*;
use keyward_domain::ports::KeyFetched;
use keyward_domain::{StoreError, StoredKey};

use crate::db::{DbConnection, Pool};
use crate::prepared::{Bind, Prepared};
use crate::rows::KeyRow;
use crate::schema::webhook_keys;

/// Most keys read in one batch.
const MAX_BATCH: usize = 256;

/// PostgreSQL: the keys of the pairs asked about (the same pair twice reads one row).
const POSTGRES_KEYS: &str = "\
SELECT DISTINCT ON (k.seq) k.* FROM unnest($1::text[], $2::text[]) AS asked (enterprise_id, key_id)
JOIN webhook_keys k ON k.enterprise_id = asked.enterprise_id AND k.key_id = asked.key_id";

/// One key to read.
struct Job {
    enterprise: String,
    key_id: String,
    done: KeyFetched,
}

/// The handle gets and verifications use. The thread starts with the first read and stops
/// when the last handle is gone.
pub(crate) struct KeyReader {
    pool: Pool,
    jobs: OnceLock<mpsc::Sender<Job>>,
}

impl std::fmt::Debug for KeyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyReader")
    }
}

impl KeyReader {
    pub(crate) fn new(pool: Pool) -> Self {
        Self {
            pool,
            jobs: OnceLock::new(),
        }
    }

    /// Queues the read of `key_id` in `enterprise`; `done` gets the key, or `None` when
    /// there is no such key.
    pub(crate) fn fetch(&self, enterprise: &str, key_id: &str, done: KeyFetched) {
        let job = Job {
            enterprise: enterprise.to_owned(),
            key_id: key_id.to_owned(),
            done,
        };
        if let Err(mpsc::SendError(job)) = self.jobs.get_or_init(|| self.start()).send(job) {
            (job.done)(Err(StoreError::Unavailable(
                "the key reader stopped".into(),
            )));
        }
    }

    fn start(&self) -> mpsc::Sender<Job> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let pool = self.pool.clone();
        let spawned = std::thread::Builder::new()
            .name("keyward-key-reader".into())
            .spawn(move || run(&pool, &queue));
        if let Err(err) = spawned {
            // The queue's receiver is gone with the closure: every read fails with
            // "unavailable" in `fetch`.
            tracing::error!(error = %err, "cannot start the key reader");
        }
        jobs
    }
}

/// Reads batches until every handle is gone.
fn run(pool: &Pool, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match read(pool, &batch) {
            Ok(found) => {
                for job in batch {
                    // The same key may be asked for twice in a batch.
                    let key = found.get(&(job.enterprise, job.key_id)).cloned();
                    (job.done)(key.transpose());
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

type Found = HashMap<(String, String), Result<StoredKey, StoreError>>;

/// The keys of `batch` that exist, by (enterprise, keyId).
fn read(pool: &Pool, batch: &[Job]) -> Result<Found, StoreError> {
    let mut conn = pool
        .get()
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let rows: Vec<KeyRow> = match &mut *conn {
        DbConnection::Sqlite(c) => {
            let mut rows = Vec::with_capacity(batch.len());
            let mut read = std::collections::HashSet::new();
            for job in batch {
                if !read.insert((job.enterprise.as_str(), job.key_id.as_str())) {
                    continue;
                }
                rows.extend(
                    webhook_keys::table
                        .filter(webhook_keys::enterprise_id.eq(&job.enterprise))
                        .filter(webhook_keys::key_id.eq(&job.key_id))
                        .select(KeyRow::as_select())
                        .first::<KeyRow>(c)
                        .optional()
                        .map_err(crate::repo::store_error)?,
                );
            }
            rows
        }
        // One statement, one index probe per pair asked about.
        DbConnection::Postgres(c) => {
            let enterprises: Vec<String> = batch.iter().map(|j| j.enterprise.clone()).collect();
            let key_ids: Vec<String> = batch.iter().map(|j| j.key_id.clone()).collect();
            Prepared::new(
                POSTGRES_KEYS,
                &[Bind::Texts(&enterprises), Bind::Texts(&key_ids)],
            )
            .load::<KeyRow>(c)
            .map_err(crate::repo::store_error)?
        }
    };
    Ok(rows
        .into_iter()
        .map(|row| {
            (
                (row.enterprise_id.clone(), row.key_id.clone()),
                StoredKey::try_from(row),
            )
        })
        .collect())
}
