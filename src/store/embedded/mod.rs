//! The embedded store (the default): redb for records and indexes, plus an
//! append-only event journal for the hot path.
//!
//! Why two files: a redb commit that is durable costs two fsyncs and copy-on-write
//! page work, which measured at about half the throughput of an nginx pixel here
//! (design.md). Opens and clicks therefore go first to `events.journal`: one
//! `write` + one `fdatasync` per batch (group commit), after which the batch is
//! acknowledged. A background indexer thread applies journalled batches to redb
//! with non-durable commits (visible at once to readers), makes them durable
//! about once a second together with the highest applied sequence number, and then
//! lets the journal reuse the space of what is durable (two preallocated segments
//! overwritten in place, `segments`). On start, anything in the journal past that number is
//! replayed; a crash loses only non-durable commits, which hold exactly the
//! events past that number, so nothing is applied twice.
//!
//! One transaction writes each email's events as one row, a pack keyed by
//! (email, its first sequence number): a B-tree insert per email per
//! transaction instead of one per event, which was most of the indexer's work.
//!
//! Journal record: `len u32 LE | crc32 u32 LE | JSON event` (framing in
//! `store::journal`, shared with the Redis spool). A torn or corrupt tail
//! (a crash mid-write, before the batch was acknowledged) ends the replay.
//!
//! Records and settings (users, emails) are written with ordinary durable redb
//! transactions: they are rare next to events.
//!
//! Parts, one file each (like `store::redis`):
//! - this file: the tables, opening (and replaying the journal), the handle, `run`
//!   (blocking work off the async runtime), compaction, shutdown.
//! - `records`: users and tokens, emails and their indexes, settings, contacts,
//!   the audit log, retention.
//! - `events`: the hot path: group commit to the journal, the indexer thread,
//!   and event reads, erasure and import.
//! - `segments`: the journal's files: two preallocated segments, overwritten.
//! - `addin`: the Outlook add-in's tables.
//! - `replies`: the reply watcher's reply facts.
//! - `attachments`: the files of emails followed with attachment links.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc, Mutex, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;

use redb::{Database, TableDefinition};
use tokio::sync::watch;

use self::events::{apply, indexer, Gathered, IndexMsg};
use self::segments::{Row, Segments};
use super::{Result, StoreError, StoreStats};

mod addin;
mod attachments;
mod cards;
mod events;
mod lease;
mod queue;
mod realtime;
mod records;
mod replies;
mod segments;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
/// keyed hash of the user's email -> user id
const USER_BY_EMAIL: TableDefinition<&[u8], u64> = TableDefinition::new("user_by_email");
const TOKENS: TableDefinition<&[u8], u64> = TableDefinition::new("tokens");
const EMAILS: TableDefinition<u64, &[u8]> = TableDefinition::new("emails");
/// (owner, created_ms, email id)
const BY_OWNER: TableDefinition<(u64, u64, u64), ()> = TableDefinition::new("emails_by_owner");
/// (created_ms, email id)
const BY_TIME: TableDefinition<(u64, u64), ()> = TableDefinition::new("emails_by_time");
/// (expires_ms, email id)
const EXPIRY: TableDefinition<(u64, u64), ()> = TableDefinition::new("emails_by_expiry");
/// (email id, first event seq) -> JSON array of that email's events from one
/// indexer transaction (a "pack"); stores written before packing hold one JSON
/// event per row, which `decode_events` still reads.
const EVENTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("events");
/// (keyed hash of an address, email id): the emails that mention an address.
const SUBJECTS: TableDefinition<(&str, u64), ()> = TableDefinition::new("emails_by_subject");
/// (email id, recipient index) of erased recipients: their events are dropped.
const ERASED: TableDefinition<(u64, u32), ()> = TableDefinition::new("erased_recipients");
/// keyed hash of an address -> JSON contact
const CONTACTS: TableDefinition<&str, &[u8]> = TableDefinition::new("contacts");
/// seq -> JSON audit entry
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// Zero-filled rows that take every free page during `scrub`, then dropped.
const SCRUB_FILLER: TableDefinition<u64, &[u8]> = TableDefinition::new("scrub_filler");

const APPLIED_SEQ: &str = "applied_seq";
const CACHE_BYTES: usize = 8 * 1024 * 1024;

macro_rules! backend_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Backend(e.to_string()) }
        }
    )*};
}
backend_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    std::io::Error,
    serde_json::Error
);

pub struct Embedded {
    /// The data directory (it also holds the key ring file).
    dir: PathBuf,
    /// Shared by readers and writers alike; taken exclusively only to compact
    /// (after a data-subject erase, see `scrub`).
    db: Arc<RwLock<Database>>,
    journal: Arc<Mutex<Segments>>,
    indexer: Mutex<Option<(mpsc::Sender<IndexMsg>, JoinHandle<()>)>>,
    /// The commit thread's queue (`commit_on_thread`) and, until `close`, the
    /// thread.
    committer: mpsc::Sender<Commit>,
    committer_thread: Mutex<Option<JoinHandle<()>>>,
    /// Journalled events the indexer has not taken yet, packed per email.
    gathered: Arc<Mutex<Gathered>>,
    /// Highest event seq durably written to the journal.
    committed: AtomicU64,
    /// Highest event seq applied to redb (visible to readers).
    applied: watch::Receiver<u64>,
    /// The leases (`store::lease`), in memory.
    leases: Mutex<lease::Leases>,
}

impl Embedded {
    /// Opens (or creates) the store in `dir`, replaying the journal.
    pub fn open(dir: &Path) -> Result<Arc<Embedded>> {
        fs::create_dir_all(dir)?;
        // redb caches up to 1 GiB by default; the working set here is small (new
        // events append at the end of each email's range), and the memory target
        // for the whole server is 64 MiB. 8 MiB, not 16: the same rate and report
        // times, 10-15 MiB less RSS under load (loadtest/README.md, 2026-12-03).
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join("mailbeacon.redb"))
            .map_err(|e| {
                StoreError::Backend(format!(
                    "cannot open {}: {e} (is another mailbeacon using this data directory?)",
                    dir.join("mailbeacon.redb").display()
                ))
            })?;
        let tx = db.begin_write()?;
        tx.open_table(META)?;
        tx.open_table(USERS)?;
        tx.open_table(USER_BY_EMAIL)?;
        tx.open_table(TOKENS)?;
        tx.open_table(EMAILS)?;
        tx.open_table(BY_OWNER)?;
        tx.open_table(BY_TIME)?;
        tx.open_table(EXPIRY)?;
        tx.open_table(EVENTS)?;
        tx.open_table(SUBJECTS)?;
        tx.open_table(ERASED)?;
        tx.open_table(CONTACTS)?;
        tx.open_table(AUDIT)?;
        addin::create_tables(&tx)?;
        replies::create_tables(&tx)?;
        attachments::create_tables(&tx)?;
        tx.commit()?;
        let db = Arc::new(RwLock::new(db));

        let mut applied = read_applied(&read(&db))?;
        let (mut segments, found) = Segments::open(dir, applied)?;
        let replay: Vec<Row> = found.into_iter().filter(|e| e.seq > applied).collect();
        if !replay.is_empty() {
            tracing::info!(events = replay.len(), "replaying journal");
            let tx = read(&db).begin_write()?;
            let max = apply(&tx, &replay)?;
            applied = applied.max(max);
            tx.open_table(META)?
                .insert(APPLIED_SEQ, applied.to_be_bytes().as_slice())?;
            tx.commit()?;
        }
        // Everything in the journal is now durably in redb.
        segments.start_over(applied)?;
        let journal = Arc::new(Mutex::new(segments));
        let (applied_tx, applied_rx) = watch::channel(applied);
        let (tx, rx) = mpsc::channel();
        let gathered = Arc::new(Mutex::new(Gathered::default()));
        let handle = {
            let db = db.clone();
            let journal = journal.clone();
            let gathered = gathered.clone();
            std::thread::Builder::new()
                .name("mailbeacon-indexer".into())
                .spawn(move || indexer(db, journal, gathered, rx, applied_tx, applied))?
        };
        let (committer, jobs) = mpsc::channel();
        let committer_thread = std::thread::Builder::new()
            .name("mailbeacon-commit".into())
            .spawn(move || commit_thread(jobs))?;
        Ok(Arc::new(Embedded {
            dir: dir.to_owned(),
            db,
            journal,
            indexer: Mutex::new(Some((tx, handle))),
            committer,
            committer_thread: Mutex::new(Some(committer_thread)),
            gathered,
            committed: AtomicU64::new(applied),
            applied: applied_rx,
            leases: Mutex::default(),
        }))
    }

    pub fn kind(&self) -> &'static str {
        "embedded"
    }

    /// Always false: writes go to local files, there is nothing to wait for.
    pub fn degraded(&self) -> bool {
        false
    }

    /// Always 0: the journal is the store itself, not a spool.
    pub fn spool_events(&self) -> u64 {
        0
    }

    /// Always false: the key ring is this data directory's file.
    pub fn shares_keyring(&self) -> bool {
        false
    }

    /// Always zeros (no deriver, no remote commands).
    pub fn counters(&self) -> StoreStats {
        StoreStats::default()
    }

    fn db(&self) -> RwLockReadGuard<'_, Database> {
        read(&self.db)
    }

    /// Makes an erase physical: no byte the erase deleted stays in the data
    /// directory. Blocks every other store call while it runs.
    ///
    /// redb's copy-on-write B-trees leave deleted bytes in freed pages, and
    /// `compact()` alone does not clear them: it moves live pages from the end
    /// into free ones and truncates, but free pages it does not fill keep their
    /// old bytes (found by the raw scan in `tests/privacy.rs`, about one run in
    /// three). So: release the freed pages (two empty durable commits), fill
    /// every free page with zeros (a filler table grown until the file has to
    /// grow, which redb only does once no free page is left), drop the filler,
    /// and compact. Every free page then holds zeros or filler, and the file is
    /// back to about its size. The event journal, which still holds the erased
    /// recipient's events until the indexer's next durable mark, is emptied.
    ///
    /// Decision (issue #11): overwrite and compact, not crypto-shredding. A key
    /// per subject would have to be found on the hot path for every event and
    /// kept for every address ever mailed, and would not cover what redb's
    /// pages hold of indexes; an erase is rare, so it pays the cost instead
    /// (writing about the free space once).
    pub fn scrub(&self) -> Result<()> {
        // Every event applied by now is in a redb transaction committed before
        // the durable commits below, which make it durable too.
        let applied = *self.applied.borrow();
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        let release = |db: &Database| -> Result<()> {
            for _ in 0..2 {
                let tx = db.begin_write()?;
                tx.open_table(META)?;
                tx.commit()?;
            }
            Ok(())
        };
        release(&db)?;
        let path = self.dir.join("mailbeacon.redb");
        let start = fs::metadata(&path)?.len();
        // Small values, so the filler takes single pages from every free
        // region. Bounded: 1.5 times the file's size in filler covers every
        // free page even if the file is not seen to grow before.
        let zeros = vec![0u8; 1500];
        let most = start / 1000 + 1024;
        let tx = db.begin_write()?;
        {
            let mut t = tx.open_table(SCRUB_FILLER)?;
            for i in 0..most {
                t.insert(i, zeros.as_slice())?;
                if i % 16 == 15 && fs::metadata(&path)?.len() > start {
                    break;
                }
            }
        }
        tx.commit()?;
        let tx = db.begin_write()?;
        tx.delete_table(SCRUB_FILLER)?;
        tx.commit()?;
        release(&db)?;
        db.compact()
            .map_err(|e| StoreError::Backend(format!("compaction failed: {e}")))?;
        drop(db);
        // Every journal segment whose events are all durable now (up to
        // `applied`) is overwritten with zeros; one holding newer events is
        // zeroed when it is next reused, after the indexer's next durable mark.
        let mut j = self
            .journal
            .lock()
            .map_err(|_| StoreError::Backend("journal lock poisoned".into()))?;
        j.scrub(applied)?;
        Ok(())
    }

    /// Runs blocking store work off the async runtime.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Embedded) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }

    /// Runs `f` on the commit thread, as `run` does on the blocking pool: the
    /// recorder's group commits. The recorder has one batch in flight at a
    /// time on this store (`Store::commits_in_flight`), so one thread is
    /// enough, and it is always the same one, woken warm, where the pool
    /// handed each commit to whichever of its six or seven idle threads had
    /// waited longest, each woken cold. Side by side on the pixel
    /// (loadtest/README.md, "2026-12-04 (night)"): p99 at 64 connections
    /// 2.3–3.5 ms instead of 3.9–4.4, at 256 7.3–9.1 ms instead of 8.5–12.0,
    /// at the same or a higher rate.
    pub async fn commit_on_thread<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Embedded) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let _ = tx.send(f(&me));
        });
        self.committer
            .send(Commit::Run(job))
            .map_err(|_| StoreError::Backend("the store is closed".into()))?;
        rx.await.map_err(|_| {
            StoreError::Backend("the commit thread dropped a commit (it panicked)".into())
        })?
    }

    pub fn close(&self) -> Result<()> {
        // The commit thread stops first, so no commit lands after the
        // indexer's last pass over what is gathered.
        let thread = self.committer_thread.lock().ok().and_then(|mut g| g.take());
        if let Some(handle) = thread {
            let _ = self.committer.send(Commit::Stop);
            let _ = handle.join();
        }
        let taken = self.indexer.lock().ok().and_then(|mut g| g.take());
        if let Some((tx, handle)) = taken {
            let (ack_tx, ack_rx) = mpsc::channel();
            if tx.send(IndexMsg::Shutdown(ack_tx)).is_ok() {
                let _ = ack_rx.recv();
            }
            let _ = handle.join();
        }
        Ok(())
    }
}

/// Work for the commit thread: a job (which sends its own answer), or stop.
enum Commit {
    Run(Box<dyn FnOnce() + Send>),
    Stop,
}

/// The commit thread: runs each job in turn until told to stop (or every
/// sender is gone). Jobs still queued then are dropped, and with them their
/// answers' senders, so their callers get an error rather than wait.
fn commit_thread(jobs: mpsc::Receiver<Commit>) {
    while let Ok(Commit::Run(job)) = jobs.recv() {
        // A job that panics drops its answer's sender (its caller gets an
        // error), and the thread goes on with the next one.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// Shared access to the database. A poisoned lock means a thread panicked while
/// holding it; redb's own transactions keep the data consistent, so carry on.
fn read(db: &RwLock<Database>) -> RwLockReadGuard<'_, Database> {
    db.read().unwrap_or_else(|p| p.into_inner())
}

fn read_applied(db: &Database) -> Result<u64> {
    let tx = db.begin_read()?;
    let t = tx.open_table(META)?;
    let got = t.get(APPLIED_SEQ)?;
    Ok(got
        .and_then(|g| <[u8; 8]>::try_from(g.value()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}
