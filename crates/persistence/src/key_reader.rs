//! Keys read for gets, lists and verifications whose key is not in memory, several at
//! a time.
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
//!
//! Pages of a listing go the same way, to page reader threads of their own (a page
//! costs far more than a key): the same page (enterprise, status, limit, offset) asked
//! for by several requests of a batch is read once, with its count, and each of them is
//! answered with it. An enterprise's pages always go to the same page reader, so they
//! can be shared; pages of enterprises on different readers are read side by side.

use std::collections::HashMap;
use std::sync::{mpsc, Arc, OnceLock};

use diesel::prelude::*;
use keyward_domain::ports::{KeyFetched, PageFetched};
use keyward_domain::{KeyPage, KeyStatus, StoreError, StoredKey};

use crate::db::{DbConnection, Pool};
use crate::prepared::{Bind, Prepared};
use crate::rows::KeyRow;
use crate::schema::webhook_keys;

/// Most reads (keys and pages) taken in one batch.
const MAX_BATCH: usize = 256;
/// Threads reading pages, besides the one reading keys. Each reads the pages of the
/// enterprises that hash to it, so the same page is always asked of the same thread
/// (and shared there), while pages of different enterprises, which cost far more than
/// a key, are read side by side.
const PAGE_READERS: usize = 2;

/// PostgreSQL: the keys of the pairs asked about (the same pair twice reads one row).
///
/// The arrays are read through scalar subqueries, whose values no plan can see: a plan
/// made for the values at hand then costs what the plan kept for any values costs, so
/// PostgreSQL keeps that one after its first executions. Seen directly, a few pairs
/// asked about made every plan for given values look cheaper than the kept one, and a
/// connection whose first reads were of one key each planned every read again (about
/// as long as running it).
pub(crate) const POSTGRES_KEYS: &str = "\
SELECT DISTINCT ON (k.seq) k.*
FROM unnest((SELECT $1::text[]), (SELECT $2::text[])) AS asked (enterprise_id, key_id)
JOIN webhook_keys k ON k.enterprise_id = asked.enterprise_id AND k.key_id = asked.key_id";

/// One read to make.
enum Job {
    Key(KeyJob),
    Page(PageQuery, PageFetched),
}

/// One key to read.
struct KeyJob {
    enterprise: String,
    key_id: String,
    done: KeyFetched,
}

/// One page of a listing.
#[derive(Clone, PartialEq, Eq, Hash)]
struct PageQuery {
    enterprise: String,
    status: Option<KeyStatus>,
    limit: u32,
    offset: u64,
}

/// The handle gets, lists and verifications use. The threads start with the first read
/// and stop when the last handle is gone.
pub(crate) struct KeyReader {
    pool: Pool,
    /// The key reader's queue, then each page reader's.
    jobs: OnceLock<Vec<mpsc::Sender<Job>>>,
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
        self.queue(
            0,
            Job::Key(KeyJob {
                enterprise: enterprise.to_owned(),
                key_id: key_id.to_owned(),
                done,
            }),
        );
    }

    /// Queues the read of one page of `enterprise`'s keys; `done` gets it, shared with
    /// the other requests for the same page in its batch.
    pub(crate) fn list(
        &self,
        enterprise: &str,
        status: Option<KeyStatus>,
        limit: u32,
        offset: u64,
        done: PageFetched,
    ) {
        let query = PageQuery {
            enterprise: enterprise.to_owned(),
            status,
            limit,
            offset,
        };
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(enterprise, &mut hasher);
        let reader = 1 + std::hash::Hasher::finish(&hasher) as usize % PAGE_READERS;
        self.queue(reader, Job::Page(query, done));
    }

    /// Hands `job` to reader thread `reader` (0 reads keys, the others pages).
    fn queue(&self, reader: usize, job: Job) {
        let readers = self.jobs.get_or_init(|| self.start());
        if let Err(mpsc::SendError(job)) = readers[reader].send(job) {
            let stopped = StoreError::Unavailable("the key reader stopped".into());
            match job {
                Job::Key(job) => (job.done)(Err(stopped)),
                Job::Page(_, done) => done(Err(stopped)),
            }
        }
    }

    fn start(&self) -> Vec<mpsc::Sender<Job>> {
        (0..=PAGE_READERS)
            .map(|n| {
                let (jobs, queue) = mpsc::channel::<Job>();
                let pool = self.pool.clone();
                let spawned = std::thread::Builder::new()
                    .name(match n {
                        0 => "keyward-key-reader".into(),
                        n => format!("keyward-page-reader-{n}"),
                    })
                    .spawn(move || run(&pool, &queue));
                if let Err(err) = spawned {
                    // The queue's receiver is gone with the closure: every read sent
                    // here fails with "unavailable" in `queue`.
                    tracing::error!(error = %err, "cannot start a key reader");
                }
                jobs
            })
            .collect()
    }
}

/// Reads batches until every handle is gone.
fn run(pool: &Pool, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let (mut keys, mut pages) = (Vec::new(), Vec::new());
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(job) = next {
            match job {
                Job::Key(job) => keys.push(job),
                Job::Page(query, done) => pages.push((query, done)),
            }
            taken += 1;
            next = (taken < MAX_BATCH).then(|| queue.try_recv().ok()).flatten();
        }
        let mut conn = match pool.get() {
            Ok(conn) => conn,
            Err(err) => {
                let err = StoreError::Unavailable(err.to_string());
                for job in keys {
                    (job.done)(Err(err.clone()));
                }
                for (_, done) in pages {
                    done(Err(err.clone()));
                }
                continue;
            }
        };
        if !keys.is_empty() {
            answer_keys(&mut conn, keys);
        }
        if !pages.is_empty() {
            answer_pages(&mut conn, pages);
        }
    }
}

/// Reads the keys of `batch` and answers each of its jobs.
fn answer_keys(conn: &mut DbConnection, batch: Vec<KeyJob>) {
    match read_keys(conn, &batch) {
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

/// Reads each distinct page of `batch` once and answers every job with its page.
fn answer_pages(conn: &mut DbConnection, batch: Vec<(PageQuery, PageFetched)>) {
    let mut read: HashMap<PageQuery, Result<Arc<KeyPage>, StoreError>> = HashMap::new();
    for (query, done) in batch {
        let page = read
            .entry(query)
            .or_insert_with_key(|q| {
                crate::repo::read_page(conn, &q.enterprise, q.status, q.limit, q.offset)
                    .map(Arc::new)
            })
            .clone();
        done(page);
    }
}

type Found = HashMap<(String, String), Result<StoredKey, StoreError>>;

/// The keys of `batch` that exist, by (enterprise, keyId).
fn read_keys(conn: &mut DbConnection, batch: &[KeyJob]) -> Result<Found, StoreError> {
    let rows: Vec<KeyRow> = match conn {
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
                (row.enterprise_id.clone(), row.listed.key_id.clone()),
                StoredKey::try_from(row),
            )
        })
        .collect())
}
