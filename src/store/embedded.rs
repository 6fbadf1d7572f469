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
//! empties the journal. On start, anything in the journal past that number is
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

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use tokio::sync::watch;

use super::{
    journal, AuditEntry, Contact, EmailRecord, Event, OrgSettings, Result, StoreError, User,
};

mod addin;

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

const APPLIED_SEQ: &str = "applied_seq";
const SETTINGS: &str = "settings";
/// How often applied events are made durable in redb (and the journal emptied).
const DURABLE_EVERY: Duration = Duration::from_secs(1);
/// Under sustained load, the indexer gathers batches for up to this long into one
/// redb transaction. Copy-on-write page work (page copies, checksums) is paid per
/// transaction for every leaf it touches, so one transaction per group commit cost
/// more than everything else per hit; one per interval shares it among thousands of
/// events. Reports wait for the indexer (`wait_indexed`), so this is also about how
/// far behind a report can be. An idle indexer applies the first batch at once.
const INDEX_EVERY: Duration = Duration::from_millis(50);
/// How long a reader waits for the indexer before reading what is there.
const INDEX_WAIT: Duration = Duration::from_secs(5);
const MAX_RECORD: usize = 64 * 1024;
const CACHE_BYTES: usize = 16 * 1024 * 1024;

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

struct Journal {
    file: File,
    len: u64,
    last_seq: u64,
}

/// An event as journalled: its key fields and its JSON row, serialized once for
/// the journal and reused by the indexer.
struct Row {
    email: u64,
    recipient: u32,
    seq: u64,
    json: Vec<u8>,
}

impl Row {
    fn of(e: &Event) -> Result<Row> {
        Ok(Row {
            email: e.email,
            recipient: e.recipient,
            seq: e.seq,
            json: serde_json::to_vec(e)?,
        })
    }
}

enum IndexMsg {
    Batch(Vec<Row>),
    Shutdown(mpsc::Sender<()>),
}

pub struct Embedded {
    /// Shared by readers and writers alike; taken exclusively only to compact
    /// (after a data-subject erase, see `scrub`).
    db: Arc<RwLock<Database>>,
    journal: Arc<Mutex<Journal>>,
    indexer: Mutex<Option<(mpsc::Sender<IndexMsg>, JoinHandle<()>)>>,
    /// Highest event seq durably written to the journal.
    committed: AtomicU64,
    /// Highest event seq applied to redb (visible to readers).
    applied: watch::Receiver<u64>,
}

impl Embedded {
    /// Opens (or creates) the store in `dir`, replaying the journal.
    pub fn open(dir: &Path) -> Result<Arc<Embedded>> {
        fs::create_dir_all(dir)?;
        // redb caches up to 1 GiB by default; the working set here is small (new
        // events append at the end of each email's range), and the memory target
        // for the whole server is 64 MiB.
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
        tx.commit()?;
        let db = Arc::new(RwLock::new(db));

        let mut applied = read_applied(&read(&db))?;
        let path = dir.join("events.journal");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (events, torn) = decode_journal(&bytes);
        if torn {
            tracing::warn!(
                "journal {} has a torn tail (a write interrupted before it was acknowledged); it is dropped",
                path.display()
            );
        }
        let replay: Vec<Row> = events.into_iter().filter(|e| e.seq > applied).collect();
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
        file.set_len(0)?;
        file.sync_all()?;

        let journal = Arc::new(Mutex::new(Journal {
            file,
            len: 0,
            last_seq: applied,
        }));
        let (applied_tx, applied_rx) = watch::channel(applied);
        let (tx, rx) = mpsc::channel();
        let handle = {
            let db = db.clone();
            let journal = journal.clone();
            std::thread::Builder::new()
                .name("mailbeacon-indexer".into())
                .spawn(move || indexer(db, journal, rx, applied_tx, applied))?
        };
        Ok(Arc::new(Embedded {
            db,
            journal,
            indexer: Mutex::new(Some((tx, handle))),
            committed: AtomicU64::new(applied),
            applied: applied_rx,
        }))
    }

    pub(super) fn db(&self) -> RwLockReadGuard<'_, Database> {
        read(&self.db)
    }

    /// Rewrites the database file so that pages freed by deletions (which redb's
    /// copy-on-write B-trees leave behind until reused) no longer hold erased
    /// data. Blocks every other store call while it runs.
    pub fn scrub(&self) -> Result<()> {
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        // Two empty durable commits let redb release pages freed by the last
        // transactions; compaction then moves live pages down and truncates.
        for _ in 0..2 {
            let tx = db.begin_write()?;
            tx.open_table(META)?;
            tx.commit()?;
        }
        db.compact()
            .map_err(|e| StoreError::Backend(format!("compaction failed: {e}")))?;
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

    /// Waits until every event committed so far is visible to readers.
    pub async fn wait_indexed(&self) {
        let target = self.committed.load(Ordering::Acquire);
        let mut rx = self.applied.clone();
        let waited = tokio::time::timeout(INDEX_WAIT, rx.wait_for(|a| *a >= target)).await;
        if waited.is_err() {
            tracing::warn!(target, "indexer is behind; reading what is indexed");
        }
    }

    pub fn create_user(
        &self,
        user: &User,
        token_hash: &[u8; 32],
        email_hash: &[u8; 32],
    ) -> Result<()> {
        let tx = self.db().begin_write()?;
        {
            let mut by_email = tx.open_table(USER_BY_EMAIL)?;
            if by_email.get(email_hash.as_slice())?.is_some() {
                return Err(StoreError::Conflict(
                    "a user with that email already exists".into(),
                ));
            }
            by_email.insert(email_hash.as_slice(), user.id)?;
            tx.open_table(USERS)?
                .insert(user.id, serde_json::to_vec(user)?.as_slice())?;
            tx.open_table(TOKENS)?
                .insert(token_hash.as_slice(), user.id)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn user_by_token_hash(&self, hash: &[u8; 32]) -> Result<Option<User>> {
        let tx = self.db().begin_read()?;
        let Some(id) = tx
            .open_table(TOKENS)?
            .get(hash.as_slice())?
            .map(|g| g.value())
        else {
            return Ok(None);
        };
        let users = tx.open_table(USERS)?;
        let user = users.get(id)?;
        Ok(match user {
            Some(g) => Some(serde_json::from_slice(g.value())?),
            None => None,
        })
    }

    pub fn user_count(&self) -> Result<u64> {
        Ok(self.db().begin_read()?.open_table(USERS)?.len()?)
    }

    pub fn put_email(&self, rec: &EmailRecord) -> Result<()> {
        let tx = self.db().begin_write()?;
        {
            let mut emails = tx.open_table(EMAILS)?;
            let old: Option<EmailRecord> = match emails.get(rec.id)? {
                Some(g) => Some(serde_json::from_slice(g.value())?),
                None => None,
            };
            emails.insert(rec.id, serde_json::to_vec(rec)?.as_slice())?;
            let mut subjects = tx.open_table(SUBJECTS)?;
            if let Some(old) = old {
                for h in old.lookups.iter().filter(|h| !rec.lookups.contains(h)) {
                    subjects.remove((h.as_str(), rec.id))?;
                }
            }
            for h in &rec.lookups {
                subjects.insert((h.as_str(), rec.id), ())?;
            }
            tx.open_table(BY_OWNER)?
                .insert((rec.owner, rec.created_ms, rec.id), ())?;
            tx.open_table(BY_TIME)?
                .insert((rec.created_ms, rec.id), ())?;
            tx.open_table(EXPIRY)?
                .insert((rec.expires_ms, rec.id), ())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn emails_for_lookup(&self, hash: &str) -> Result<Vec<u64>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(SUBJECTS)?;
        let ids = t
            .range((hash, 0)..=(hash, u64::MAX))?
            .map(|x| x.map(|(k, _)| k.value().1))
            .collect::<std::result::Result<_, _>>()?;
        Ok(ids)
    }

    pub fn erase_recipient_events(&self, email: u64, recipient: u32) -> Result<u64> {
        let tx = self.db().begin_write()?;
        let mut n = 0;
        {
            tx.open_table(ERASED)?.insert((email, recipient), ())?;
            let mut events = tx.open_table(EVENTS)?;
            // Rows holding any of the recipient's events: removed, or rewritten
            // with the other recipients' events only.
            let mut changed: Vec<((u64, u64), Vec<Event>)> = Vec::new();
            for row in events.range((email, 0)..=(email, u64::MAX))? {
                let (k, v) = row?;
                let all = decode_events(v.value())?;
                let before = all.len();
                let kept: Vec<Event> = all
                    .into_iter()
                    .filter(|e| e.recipient != recipient)
                    .collect();
                if kept.len() < before {
                    n += (before - kept.len()) as u64;
                    changed.push((k.value(), kept));
                }
            }
            for (k, kept) in changed {
                if kept.is_empty() {
                    events.remove(k)?;
                } else {
                    events.insert(k, serde_json::to_vec(&kept)?.as_slice())?;
                }
            }
        }
        tx.commit()?;
        Ok(n)
    }

    pub fn get_contacts(&self, hashes: &[String]) -> Result<Vec<Option<Contact>>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(CONTACTS)?;
        let mut out = Vec::with_capacity(hashes.len());
        for h in hashes {
            out.push(match t.get(h.as_str())? {
                Some(g) => Some(serde_json::from_slice(g.value())?),
                None => None,
            });
        }
        Ok(out)
    }

    pub fn put_contacts(&self, contacts: &[(String, Contact)]) -> Result<()> {
        let tx = self.db().begin_write()?;
        {
            let mut t = tx.open_table(CONTACTS)?;
            for (hash, c) in contacts {
                t.insert(hash.as_str(), serde_json::to_vec(c)?.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn delete_contact(&self, hash: &str) -> Result<bool> {
        let tx = self.db().begin_write()?;
        let existed = tx.open_table(CONTACTS)?.remove(hash)?.is_some();
        tx.commit()?;
        Ok(existed)
    }

    pub fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        let tx = self.db().begin_write()?;
        {
            let mut t = tx.open_table(AUDIT)?;
            let last = t.last()?.map(|(k, _)| k.value()).unwrap_or(0);
            let e = AuditEntry {
                seq: last + 1,
                ..entry.clone()
            };
            t.insert(e.seq, serde_json::to_vec(&e)?.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn list_audit(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(AUDIT)?;
        let mut out = Vec::new();
        for row in t.range(..before.unwrap_or(u64::MAX))?.rev().take(limit) {
            let (_, v) = row?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// Replaces every entry for which `f` returns a new version; returns how many.
    pub fn rewrite_audit(&self, f: &dyn Fn(&AuditEntry) -> Option<AuditEntry>) -> Result<u64> {
        let tx = self.db().begin_write()?;
        let mut n = 0;
        {
            let mut t = tx.open_table(AUDIT)?;
            let mut changed = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let e: AuditEntry = serde_json::from_slice(v.value())?;
                if let Some(new) = f(&e) {
                    changed.push((k.value(), new));
                }
            }
            for (k, e) in changed {
                t.insert(k, serde_json::to_vec(&e)?.as_slice())?;
                n += 1;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    pub fn get_email(&self, id: u64) -> Result<Option<EmailRecord>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(EMAILS)?;
        let got = t.get(id)?;
        Ok(match got {
            Some(g) => Some(serde_json::from_slice(g.value())?),
            None => None,
        })
    }

    pub fn list_emails(
        &self,
        owner: Option<u64>,
        before: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<Vec<EmailRecord>> {
        let tx = self.db().begin_read()?;
        let emails = tx.open_table(EMAILS)?;
        let (bt, bid) = before.unwrap_or((u64::MAX, u64::MAX));
        let ids: Vec<u64> = match owner {
            Some(o) => {
                let t = tx.open_table(BY_OWNER)?;
                let r = t.range((o, 0, 0)..(o, bt, bid))?;
                r.rev()
                    .take(limit)
                    .map(|x| x.map(|(k, _)| k.value().2))
                    .collect::<std::result::Result<_, _>>()?
            }
            None => {
                let t = tx.open_table(BY_TIME)?;
                let r = t.range((0, 0)..(bt, bid))?;
                r.rev()
                    .take(limit)
                    .map(|x| x.map(|(k, _)| k.value().1))
                    .collect::<std::result::Result<_, _>>()?
            }
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(g) = emails.get(id)? {
                out.push(serde_json::from_slice(g.value())?);
            }
        }
        Ok(out)
    }

    pub fn commit_events(&self, mut events: Vec<Event>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        // The lock is held across the write and the sync so sequence numbers reach
        // the journal and the indexer in order.
        let mut j = self
            .journal
            .lock()
            .map_err(|_| StoreError::Backend("journal lock poisoned".into()))?;
        let mut buf = Vec::with_capacity(events.len() * 400);
        let mut rows = Vec::with_capacity(events.len());
        let mut seq = j.last_seq;
        for e in &mut events {
            seq += 1;
            e.seq = seq;
            let row = Row::of(e)?;
            journal::frame(&row.json, &mut buf);
            rows.push(row);
        }
        drop(events);
        let before = j.len;
        if let Err(e) = j.file.write_all(&buf).and_then(|_| j.file.sync_data()) {
            // Leave no half-written batch behind: it was never acknowledged.
            let _ = j.file.set_len(before);
            return Err(e.into());
        }
        j.len += buf.len() as u64;
        j.last_seq = seq;
        self.committed.store(seq, Ordering::Release);
        if let Ok(guard) = self.indexer.lock() {
            if let Some((tx, _)) = guard.as_ref() {
                let _ = tx.send(IndexMsg::Batch(rows));
            }
        }
        Ok(())
    }

    pub fn events_for(&self, email: u64) -> Result<Vec<Event>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(EVENTS)?;
        let mut out = Vec::new();
        for row in t.range((email, 0)..=(email, u64::MAX))? {
            let (_, v) = row?;
            out.extend(decode_events(v.value())?);
        }
        Ok(out)
    }

    pub fn settings(&self) -> Result<Option<OrgSettings>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(META)?;
        let got = t.get(SETTINGS)?;
        Ok(match got {
            Some(g) => Some(serde_json::from_slice(g.value())?),
            None => None,
        })
    }

    pub fn put_settings(&self, s: &OrgSettings) -> Result<()> {
        let tx = self.db().begin_write()?;
        tx.open_table(META)?
            .insert(SETTINGS, serde_json::to_vec(s)?.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    pub fn sweep(&self, now_ms: u64, created_before_ms: u64) -> Result<usize> {
        let tx = self.db().begin_write()?;
        let removed;
        {
            let mut expiry = tx.open_table(EXPIRY)?;
            let mut due: Vec<u64> = expiry
                .range(..(now_ms, 0))?
                .map(|x| x.map(|(k, _)| k.value().1))
                .collect::<std::result::Result<_, _>>()?;
            let mut by_time = tx.open_table(BY_TIME)?;
            for row in by_time.range(..(created_before_ms, 0))? {
                due.push(row?.0.value().1);
            }
            due.sort_unstable();
            due.dedup();
            let mut emails = tx.open_table(EMAILS)?;
            let mut by_owner = tx.open_table(BY_OWNER)?;
            let mut events = tx.open_table(EVENTS)?;
            let mut subjects = tx.open_table(SUBJECTS)?;
            let mut erased = tx.open_table(ERASED)?;
            for &id in &due {
                let rec: Option<EmailRecord> = match emails.remove(id)? {
                    Some(g) => Some(serde_json::from_slice(g.value())?),
                    None => None,
                };
                if let Some(rec) = rec {
                    expiry.remove((rec.expires_ms, id))?;
                    by_owner.remove((rec.owner, rec.created_ms, id))?;
                    by_time.remove((rec.created_ms, id))?;
                    for h in &rec.lookups {
                        subjects.remove((h.as_str(), id))?;
                    }
                    for r in 0..rec.recipients.len() as u32 {
                        erased.remove((id, r))?;
                    }
                }
                let keys: Vec<(u64, u64)> = events
                    .range((id, 0)..=(id, u64::MAX))?
                    .map(|x| x.map(|(k, _)| k.value()))
                    .collect::<std::result::Result<_, _>>()?;
                for k in keys {
                    events.remove(k)?;
                }
            }
            removed = due.len();
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Every user with the hashes of its bearer tokens (for `migrate`).
    pub fn users_with_tokens(&self) -> Result<Vec<(User, Vec<[u8; 32]>)>> {
        let tx = self.db().begin_read()?;
        let mut tokens: std::collections::HashMap<u64, Vec<[u8; 32]>> = Default::default();
        for row in tx.open_table(TOKENS)?.iter()? {
            let (h, id) = row?;
            if let Ok(h) = <[u8; 32]>::try_from(h.value()) {
                tokens.entry(id.value()).or_default().push(h);
            }
        }
        let mut out = Vec::new();
        for row in tx.open_table(USERS)?.iter()? {
            let (id, json) = row?;
            let user: User = serde_json::from_slice(json.value())?;
            out.push((user, tokens.remove(&id.value()).unwrap_or_default()));
        }
        Ok(out)
    }

    /// Adds another bearer token for an existing user (for `migrate`).
    pub fn add_token(&self, user: u64, token_hash: &[u8; 32]) -> Result<()> {
        let tx = self.db().begin_write()?;
        tx.open_table(TOKENS)?.insert(token_hash.as_slice(), user)?;
        tx.commit()?;
        Ok(())
    }

    /// Writes events that already have their sequence numbers (for `migrate`,
    /// which passes all of an email's events at once), durably; later events
    /// get higher numbers. The emails' rows are replaced, not added to, so
    /// importing again (a resumed migration) never counts an event twice,
    /// however the events end up grouped in packs.
    pub fn import_events(&self, events: &[Event]) -> Result<()> {
        let rows = events.iter().map(Row::of).collect::<Result<Vec<_>>>()?;
        let tx = self.db().begin_write()?;
        {
            let mut t = tx.open_table(EVENTS)?;
            let mut emails: Vec<u64> = rows.iter().map(|r| r.email).collect();
            emails.sort_unstable();
            emails.dedup();
            for email in emails {
                t.retain_in((email, 0)..=(email, u64::MAX), |_, _| false)?;
            }
        }
        let max = apply(&tx, &rows)?;
        let applied = {
            let meta = tx.open_table(META)?;
            let got = meta.get(APPLIED_SEQ)?;
            got.and_then(|g| <[u8; 8]>::try_from(g.value()).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0)
        };
        if max > applied {
            tx.open_table(META)?
                .insert(APPLIED_SEQ, max.to_be_bytes().as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn close(&self) -> Result<()> {
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

/// Decodes journal records; returns the events and whether a torn tail was found.
fn decode_journal(bytes: &[u8]) -> (Vec<Row>, bool) {
    let (records, valid) = journal::decode(bytes);
    let mut out = Vec::with_capacity(records.len());
    for body in records {
        if body.len() > MAX_RECORD {
            return (out, true);
        }
        match serde_json::from_slice::<Event>(body) {
            Ok(e) => out.push(Row {
                email: e.email,
                recipient: e.recipient,
                seq: e.seq,
                json: body.to_vec(),
            }),
            Err(_) => return (out, true),
        }
    }
    (out, valid < bytes.len())
}

/// Inserts events of known emails; returns the highest seq seen. Events of emails
/// that no longer exist (expired) or of erased recipients are dropped: there is
/// nothing left to attach them to, and keeping them would undo the erase or
/// outlive retention.
fn apply(tx: &WriteTransaction, rows: &[Row]) -> Result<u64> {
    use std::collections::{BTreeMap, HashMap};
    let emails = tx.open_table(EMAILS)?;
    let erased = tx.open_table(ERASED)?;
    let mut t = tx.open_table(EVENTS)?;
    let mut max = 0;
    // Many hits on fewer emails: look each email and recipient up once, and
    // gather each email's events (in sequence order) into one pack.
    let mut keep: HashMap<(u64, u32), bool> = HashMap::new();
    let mut packs: BTreeMap<u64, (u64, Vec<u8>)> = BTreeMap::new();
    for r in rows {
        max = max.max(r.seq);
        let k = (r.email, r.recipient);
        let wanted = match keep.get(&k) {
            Some(&w) => w,
            None => {
                let w = emails.get(r.email)?.is_some() && erased.get(k)?.is_none();
                keep.insert(k, w);
                w
            }
        };
        if wanted {
            let (_, pack) = packs
                .entry(r.email)
                .or_insert_with(|| (r.seq, Vec::with_capacity(4096)));
            pack.push(if pack.is_empty() { b'[' } else { b',' });
            pack.extend_from_slice(&r.json);
        }
    }
    for (email, (first_seq, mut pack)) in packs {
        pack.push(b']');
        t.insert((email, first_seq), pack.as_slice())?;
    }
    Ok(max)
}

/// One EVENTS row: a pack (JSON array), or a single JSON event (rows written
/// before packing).
fn decode_events(v: &[u8]) -> Result<Vec<Event>> {
    if v.first() == Some(&b'[') {
        Ok(serde_json::from_slice(v)?)
    } else {
        Ok(vec![serde_json::from_slice(v)?])
    }
}

fn indexer(
    db: Arc<RwLock<Database>>,
    journal: Arc<Mutex<Journal>>,
    rx: mpsc::Receiver<IndexMsg>,
    applied_tx: watch::Sender<u64>,
    mut applied: u64,
) {
    let mut durable = applied;
    let mut last_durable = Instant::now();
    let make_durable = |applied: u64| -> Result<()> {
        let tx = read(&db).begin_write()?;
        tx.open_table(META)?
            .insert(APPLIED_SEQ, applied.to_be_bytes().as_slice())?;
        tx.commit()?;
        // Every journalled event up to `applied` is now durable in redb: if nothing
        // newer was journalled meanwhile, the journal can be emptied.
        if let Ok(mut j) = journal.lock() {
            if j.last_seq <= applied && j.len > 0 {
                j.file.set_len(0)?;
                j.file.sync_data()?;
                j.len = 0;
            }
        }
        Ok(())
    };
    // "Long ago", so the first batch is applied at once (`checked_sub` only fails
    // within 50 ms of boot, when `now` does just as well).
    let mut last_apply = Instant::now()
        .checked_sub(INDEX_EVERY)
        .unwrap_or_else(Instant::now);
    loop {
        let msg = rx.recv_timeout(Duration::from_millis(200));
        let mut shutdown = None;
        let mut batch: Vec<Row> = Vec::new();
        match msg {
            Ok(IndexMsg::Batch(evs)) => {
                batch = evs;
                // Coalesce what is queued, and what arrives until INDEX_EVERY after
                // the previous transaction, into one transaction.
                let until = last_apply + INDEX_EVERY;
                while batch.len() < 50_000 {
                    let left = until.saturating_duration_since(Instant::now());
                    let next = if left.is_zero() {
                        rx.try_recv().map_err(|_| ())
                    } else {
                        rx.recv_timeout(left).map_err(|_| ())
                    };
                    match next {
                        Ok(IndexMsg::Batch(more)) => batch.extend(more),
                        Ok(IndexMsg::Shutdown(ack)) => {
                            shutdown = Some(ack);
                            break;
                        }
                        Err(()) => break,
                    }
                }
            }
            Ok(IndexMsg::Shutdown(ack)) => shutdown = Some(ack),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => shutdown = Some(mpsc::channel().0),
        }
        if !batch.is_empty() {
            last_apply = Instant::now();
            // Retry until it works: the events are safe in the journal meanwhile,
            // and giving up would let a later durable mark skip them.
            let mut delay = Duration::from_millis(50);
            loop {
                let res = (|| -> Result<u64> {
                    let mut tx = read(&db).begin_write()?;
                    tx.set_durability(Durability::None);
                    let max = apply(&tx, &batch)?;
                    tx.commit()?;
                    Ok(max)
                })();
                match res {
                    Ok(max) => {
                        applied = applied.max(max);
                        let _ = applied_tx.send(applied);
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "indexing events failed; retrying");
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        let due = last_durable.elapsed() >= DURABLE_EVERY || shutdown.is_some();
        if applied > durable && due {
            match make_durable(applied) {
                Ok(()) => durable = applied,
                Err(e) => tracing::error!(error = %e, "making indexed events durable failed"),
            }
            last_durable = Instant::now();
        }
        if let Some(ack) = shutdown {
            let _ = ack.send(());
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_packs_or_single_events_of_older_stores() {
        let e = |seq: u64| Event {
            seq,
            at_ms: 1,
            kind: super::super::EventKind::Click,
            email: 7,
            recipient: 2,
            link: Some(1),
            method: "GET".into(),
            ua: "ua".into(),
            ip: "ip".into(),
            since_prepared_s: 5,
            machine_net: None,
        };
        let single = serde_json::to_vec(&e(3)).unwrap();
        assert_eq!(decode_events(&single).unwrap(), vec![e(3)]);
        let mut pack = b"[".to_vec();
        pack.extend_from_slice(&serde_json::to_vec(&e(4)).unwrap());
        pack.push(b',');
        pack.extend_from_slice(&serde_json::to_vec(&e(5)).unwrap());
        pack.push(b']');
        assert_eq!(decode_events(&pack).unwrap(), vec![e(4), e(5)]);
        assert!(decode_events(b"[{").is_err());
    }

    #[test]
    fn journal_decoding_stops_at_a_torn_tail() {
        let e = Event {
            seq: 1,
            at_ms: 1,
            kind: super::super::EventKind::Open,
            email: 1,
            recipient: 0,
            link: None,
            method: "GET".into(),
            ua: String::new(),
            ip: String::new(),
            since_prepared_s: 0,
            machine_net: None,
        };
        let body = serde_json::to_vec(&e).unwrap();
        let mut buf = Vec::new();
        buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        buf.extend_from_slice(&body);
        let (got, torn) = decode_journal(&buf);
        assert_eq!((got.len(), torn), (1, false));
        let mut more = buf.clone();
        more.extend_from_slice(&buf[..buf.len() - 3]);
        let (got, torn) = decode_journal(&more);
        assert_eq!((got.len(), torn), (1, true));
        let mut corrupt = buf.clone();
        let n = corrupt.len();
        corrupt[n - 2] ^= 0xff;
        assert_eq!(decode_journal(&corrupt).0.len(), 0);
    }
}
