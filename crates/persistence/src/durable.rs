//! Group fsync of the SQLite write-ahead log.
//!
//! With `synchronous = FULL`, SQLite syncs the log inside every commit while it holds
//! the database's write lock, so commits and their syncs take turns: one transaction
//! per sync, whatever the load. This process's writer connection runs with
//! `synchronous = NORMAL` instead (the commit only writes the log) and syncs the log
//! itself, after releasing the lock: every writer whose commit is done waits for a sync
//! that began after it, and one sync covers every commit written before it began, so
//! concurrent writers share syncs and the next commit proceeds while the last one's
//! sync is in flight. Nothing written is reported before it is on disk, as with `FULL`.
//!
//! A failed sync may have dropped written pages (the kernel does not retry it), so after
//! one, every later write is refused: only a restart, whose recovery reads the log from
//! disk, says again what is durable.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The log of one SQLite database and how far it is known to be on disk.
#[derive(Debug)]
pub(crate) struct WalSync {
    path: PathBuf,
    /// Commits written to the log by this process's writer connection.
    committed: AtomicU64,
    state: Mutex<State>,
    synced_changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Every commit up to this one is on disk.
    synced: u64,
    /// A sync is in flight (its caller is not holding `state`).
    syncing: bool,
    /// The log file, opened at the first sync, and which file it is (only the syncing
    /// caller uses it).
    file: Option<(File, FileId)>,
    /// Why syncing stopped for good.
    failed: Option<String>,
}

/// What a writer must wait for before reporting what its transaction did or saw.
#[derive(Debug)]
#[must_use = "a write is durable only once `wait` returns Ok"]
pub(crate) struct Durable {
    wal: Option<Arc<WalSync>>,
    ticket: u64,
}

impl Durable {
    /// Nothing to wait for: the transaction synced itself, or wrote nothing.
    pub(crate) fn already() -> Self {
        Durable {
            wal: None,
            ticket: 0,
        }
    }

    /// Whether [`Self::wait`] may have to wait.
    pub(crate) fn is_pending(&self) -> bool {
        self.wal.is_some()
    }

    /// Returns once the commit this was taken for (and every earlier one) is on disk.
    pub(crate) fn wait(self) -> Result<(), String> {
        match &self.wal {
            Some(wal) => wal.wait(self.ticket),
            None => Ok(()),
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl WalSync {
    /// The log of the database file `main` (SQLite names it `<main>-wal`).
    pub(crate) fn new(main: &str) -> Self {
        Self {
            path: PathBuf::from(format!("{main}-wal")),
            committed: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            synced_changed: Condvar::new(),
        }
    }

    /// To call right after a commit on the writer connection, before anything else can
    /// commit on it: the commit to wait for.
    pub(crate) fn committed(self: &Arc<Self>) -> Durable {
        Durable {
            wal: Some(self.clone()),
            ticket: self.committed.fetch_add(1, Ordering::SeqCst) + 1,
        }
    }

    /// To call after a transaction that was rolled back: what it read may have been
    /// written by commits not yet on disk, so it waits for those.
    pub(crate) fn seen(self: &Arc<Self>) -> Durable {
        Durable {
            wal: Some(self.clone()),
            ticket: self.committed.load(Ordering::SeqCst),
        }
    }

    /// Waits, at most `limit`, until no sync is in flight. A commit made during a sync
    /// waits for the next one anyway, which starts only when this one ends, so a writer
    /// that commits at the end of the sync instead of during it answers no later and
    /// writes its pages to the log once instead of once per commit.
    pub(crate) fn wait_while_syncing(&self, limit: std::time::Duration) {
        let mut state = lock(&self.state);
        let deadline = std::time::Instant::now() + limit;
        while state.syncing && state.failed.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            state = self
                .synced_changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Why syncing stopped for good, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        lock(&self.state).failed.clone()
    }

    fn wait(&self, ticket: u64) -> Result<(), String> {
        let mut state = lock(&self.state);
        loop {
            if let Some(why) = &state.failed {
                return Err(why.clone());
            }
            if state.synced >= ticket {
                return Ok(());
            }
            if state.syncing {
                state = self
                    .synced_changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // This caller syncs for everyone: every commit counted now has written its
            // pages to the log already.
            state.syncing = true;
            let target = self.committed.load(Ordering::SeqCst);
            let mut file = state.file.take();
            drop(state);
            let result = self.sync(&mut file);
            state = lock(&self.state);
            state.syncing = false;
            state.file = file;
            match result {
                Ok(()) => state.synced = state.synced.max(target),
                Err(err) => {
                    let why = format!(
                        "the database's log could not be synced to disk ({err}); \
                         writes are refused until keyward is restarted"
                    );
                    tracing::error!(path = %self.path.display(), error = %err, "{why}");
                    state.failed = Some(why);
                }
            }
            self.synced_changed.notify_all();
        }
    }

    /// Syncs the log, reopening it if the file at its path is not the one held.
    fn sync(&self, file: &mut Option<(File, FileId)>) -> std::io::Result<()> {
        let current = FileId::of_path(&self.path)?;
        if file.as_ref().is_none_or(|(_, held)| *held != current) {
            let opened = File::open(&self.path)?;
            let id = FileId::of_file(&opened)?;
            *file = Some((opened, id));
        }
        match file {
            Some((f, _)) => f.sync_data(),
            None => Ok(()),
        }
    }
}

/// Which file a path or handle is: device and inode number, and nothing else.
///
/// Asking for a file's times costs every later sync of it on Linux with multigrain
/// timestamps (6.13 and later): once they have been read, the next write stamps the
/// file with a fine-grained time, always a new one, so the inode is dirty and
/// `fdatasync` writes it too, a second synchronous write per sync (about 40 µs more per
/// sync measured here; the log is written and synced about two thousand times a second
/// under load). `statx` asked for the inode number alone reads no time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    /// Major and minor device numbers on Linux.
    dev: (u64, u64),
    ino: u64,
}

impl FileId {
    fn of_path(path: &Path) -> std::io::Result<Self> {
        #[cfg(target_os = "linux")]
        match Self::statx(rustix::fs::CWD, path, rustix::fs::AtFlags::empty()) {
            Err(err) if statx_unavailable(&err) => {}
            done => return done,
        }
        Ok(Self::of_metadata(&std::fs::metadata(path)?))
    }

    fn of_file(file: &File) -> std::io::Result<Self> {
        #[cfg(target_os = "linux")]
        match Self::statx(file, "", rustix::fs::AtFlags::EMPTY_PATH) {
            Err(err) if statx_unavailable(&err) => {}
            done => return done,
        }
        Ok(Self::of_metadata(&file.metadata()?))
    }

    #[cfg(target_os = "linux")]
    fn statx(
        dir: impl rustix::fd::AsFd,
        path: impl rustix::path::Arg,
        flags: rustix::fs::AtFlags,
    ) -> std::io::Result<Self> {
        let st = rustix::fs::statx(dir, path, flags, rustix::fs::StatxFlags::INO)?;
        Ok(Self {
            dev: (st.stx_dev_major.into(), st.stx_dev_minor.into()),
            ino: st.stx_ino,
        })
    }

    /// Where `statx` is missing (kernels before 4.11, some sandboxes): a full stat,
    /// with the cost above.
    fn of_metadata(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        #[cfg(target_os = "linux")]
        let dev = (
            rustix::fs::major(meta.dev()).into(),
            rustix::fs::minor(meta.dev()).into(),
        );
        #[cfg(not(target_os = "linux"))]
        let dev = (0, meta.dev());
        Self {
            dev,
            ino: meta.ino(),
        }
    }
}

/// `statx` refused as a system call rather than for the file (sandboxes that do not
/// know it answer EPERM).
#[cfg(target_os = "linux")]
fn statx_unavailable(err: &std::io::Error) -> bool {
    let code = err.raw_os_error();
    code == Some(rustix::io::Errno::NOSYS.raw_os_error())
        || code == Some(rustix::io::Errno::PERM.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> (PathBuf, Arc<WalSync>) {
        let dir =
            std::env::temp_dir().join(format!("keyward-durable-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let main = dir.join("db.sqlite");
        let wal = Arc::new(WalSync::new(main.to_str().unwrap()));
        (dir, wal)
    }

    #[test]
    fn a_commit_is_reported_durable_after_its_log_is_synced() {
        let (dir, wal) = scratch("sync");
        std::fs::write(dir.join("db.sqlite-wal"), b"log").unwrap();
        let first = wal.committed();
        let second = wal.committed();
        assert_eq!(lock(&wal.state).synced, 0);
        second.wait().unwrap();
        // One sync covered both commits.
        assert_eq!(lock(&wal.state).synced, 2);
        first.wait().unwrap();
        wal.seen().wait().unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_sync_refuses_every_later_write() {
        let (dir, wal) = scratch("fail");
        // No log file: the sync fails.
        let err = wal.committed().wait().unwrap_err();
        assert!(err.contains("restarted"), "{err}");
        assert_eq!(wal.failure(), Some(err));
        std::fs::write(dir.join("db.sqlite-wal"), b"log").unwrap();
        assert!(wal.committed().wait().is_err());
        assert!(wal.seen().wait().is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_replaced_log_file_is_reopened() {
        let (dir, wal) = scratch("reopen");
        let path = dir.join("db.sqlite-wal");
        std::fs::write(&path, b"log").unwrap();
        wal.committed().wait().unwrap();
        let held = |wal: &WalSync| {
            use std::os::unix::fs::MetadataExt as _;
            let state = lock(&wal.state);
            let (file, id) = state.file.as_ref().unwrap();
            assert_eq!(*id, FileId::of_file(file).unwrap());
            file.metadata().unwrap().ino()
        };
        let before = held(&wal);
        // Written aside and renamed over it, as the old inode (held) cannot be reused.
        std::fs::write(dir.join("next"), b"new log").unwrap();
        std::fs::rename(dir.join("next"), &path).unwrap();
        wal.committed().wait().unwrap();
        assert_ne!(held(&wal), before);
        assert_eq!(held(&wal), {
            use std::os::unix::fs::MetadataExt as _;
            std::fs::metadata(&path).unwrap().ino()
        });
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_is_identified_alike_by_path_handle_and_full_stat() {
        let (dir, _) = scratch("identity");
        let path = dir.join("file");
        std::fs::write(&path, b"x").unwrap();
        let file = File::open(&path).unwrap();
        let by_path = FileId::of_path(&path).unwrap();
        assert_eq!(by_path, FileId::of_file(&file).unwrap());
        assert_eq!(by_path, FileId::of_metadata(&file.metadata().unwrap()));
        std::fs::write(dir.join("other"), b"y").unwrap();
        assert_ne!(by_path, FileId::of_path(&dir.join("other")).unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_writer_can_wait_for_the_sync_in_flight() {
        let (dir, wal) = scratch("in-flight");
        let limit = std::time::Duration::from_secs(30);
        // Nothing in flight: no wait.
        let started = std::time::Instant::now();
        wal.wait_while_syncing(limit);
        assert!(started.elapsed() < limit);
        lock(&wal.state).syncing = true;
        // Never finishing: the limit ends the wait.
        wal.wait_while_syncing(std::time::Duration::from_millis(1));
        let finisher = {
            let wal = wal.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                lock(&wal.state).syncing = false;
                wal.synced_changed.notify_all();
            })
        };
        wal.wait_while_syncing(limit);
        assert!(!lock(&wal.state).syncing);
        finisher.join().unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn nothing_to_wait_for_is_at_once_durable() {
        Durable::already().wait().unwrap();
    }
}
