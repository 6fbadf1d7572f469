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
//! replayed. Events are keyed by (email, sequence), so replaying twice never counts
//! twice.
//!
//! Journal record: `len u32 LE | crc32 u32 LE | JSON event`. A torn or corrupt tail
//! (a crash mid-write, before the batch was acknowledged) ends the replay.
//!
//! Records and settings (users, emails) are written with ordinary durable redb
//! transactions: they are rare next to events.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use tokio::sync::watch;

use super::{EmailRecord, Event, OrgSettings, Result, StoreError, User};

mod addin;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
const USER_BY_EMAIL: TableDefinition<&str, u64> = TableDefinition::new("user_by_email");
const TOKENS: TableDefinition<&[u8], u64> = TableDefinition::new("tokens");
const EMAILS: TableDefinition<u64, &[u8]> = TableDefinition::new("emails");
/// (owner, created_ms, email id)
const BY_OWNER: TableDefinition<(u64, u64, u64), ()> = TableDefinition::new("emails_by_owner");
/// (created_ms, email id)
const BY_TIME: TableDefinition<(u64, u64), ()> = TableDefinition::new("emails_by_time");
/// (expires_ms, email id)
const EXPIRY: TableDefinition<(u64, u64), ()> = TableDefinition::new("emails_by_expiry");
/// (email id, event seq) -> JSON event
const EVENTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("events");

const APPLIED_SEQ: &str = "applied_seq";
const SETTINGS: &str = "settings";
/// How often applied events are made durable in redb (and the journal emptied).
const DURABLE_EVERY: Duration = Duration::from_secs(1);
/// How long a reader waits for the indexer before reading what is there.
const INDEX_WAIT: Duration = Duration::from_secs(5);
const MAX_RECORD: usize = 64 * 1024;

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

enum IndexMsg {
    Batch(Vec<Event>),
    Shutdown(mpsc::Sender<()>),
}

pub struct Embedded {
    db: Arc<Database>,
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
        let db = Database::create(dir.join("mailbeacon.redb")).map_err(|e| {
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
        addin::create_tables(&tx)?;
        tx.commit()?;
        let db = Arc::new(db);

        let mut applied = read_applied(&db)?;
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
        let replay: Vec<Event> = events.into_iter().filter(|e| e.seq > applied).collect();
        if !replay.is_empty() {
            tracing::info!(events = replay.len(), "replaying journal");
            let tx = db.begin_write()?;
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

    pub fn create_user(&self, user: &User, token_hash: &[u8; 32]) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut by_email = tx.open_table(USER_BY_EMAIL)?;
            if by_email.get(user.email.as_str())?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "a user with email {} already exists",
                    user.email
                )));
            }
            by_email.insert(user.email.as_str(), user.id)?;
            tx.open_table(USERS)?
                .insert(user.id, serde_json::to_vec(user)?.as_slice())?;
            tx.open_table(TOKENS)?
                .insert(token_hash.as_slice(), user.id)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn user_by_token_hash(&self, hash: &[u8; 32]) -> Result<Option<User>> {
        let tx = self.db.begin_read()?;
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
        Ok(self.db.begin_read()?.open_table(USERS)?.len()?)
    }

    pub fn put_email(&self, rec: &EmailRecord) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            tx.open_table(EMAILS)?
                .insert(rec.id, serde_json::to_vec(rec)?.as_slice())?;
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

    pub fn get_email(&self, id: u64) -> Result<Option<EmailRecord>> {
        let tx = self.db.begin_read()?;
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
        let tx = self.db.begin_read()?;
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
        let mut buf = Vec::with_capacity(events.len() * 200);
        let mut seq = j.last_seq;
        for e in &mut events {
            seq += 1;
            e.seq = seq;
            let body = serde_json::to_vec(e)?;
            buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            buf.extend_from_slice(&body);
        }
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
                let _ = tx.send(IndexMsg::Batch(events));
            }
        }
        Ok(())
    }

    pub fn events_for(&self, email: u64) -> Result<Vec<Event>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(EVENTS)?;
        let mut out = Vec::new();
        for row in t.range((email, 0)..=(email, u64::MAX))? {
            let (_, v) = row?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    pub fn settings(&self) -> Result<Option<OrgSettings>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(META)?;
        let got = t.get(SETTINGS)?;
        Ok(match got {
            Some(g) => Some(serde_json::from_slice(g.value())?),
            None => None,
        })
    }

    pub fn put_settings(&self, s: &OrgSettings) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(META)?
            .insert(SETTINGS, serde_json::to_vec(s)?.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    pub fn sweep(&self, now_ms: u64) -> Result<usize> {
        let tx = self.db.begin_write()?;
        let removed;
        {
            let mut expiry = tx.open_table(EXPIRY)?;
            let due: Vec<(u64, u64)> = expiry
                .range(..(now_ms, 0))?
                .map(|x| x.map(|(k, _)| k.value()))
                .collect::<std::result::Result<_, _>>()?;
            let mut emails = tx.open_table(EMAILS)?;
            let mut by_owner = tx.open_table(BY_OWNER)?;
            let mut by_time = tx.open_table(BY_TIME)?;
            let mut events = tx.open_table(EVENTS)?;
            for &(at, id) in &due {
                expiry.remove((at, id))?;
                let rec: Option<EmailRecord> = match emails.remove(id)? {
                    Some(g) => Some(serde_json::from_slice(g.value())?),
                    None => None,
                };
                if let Some(rec) = rec {
                    by_owner.remove((rec.owner, rec.created_ms, id))?;
                    by_time.remove((rec.created_ms, id))?;
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
fn decode_journal(mut bytes: &[u8]) -> (Vec<Event>, bool) {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 8 {
            return (out, true);
        }
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if len > MAX_RECORD || bytes.len() < 8 + len {
            return (out, true);
        }
        let body = &bytes[8..8 + len];
        if crc32fast::hash(body) != crc {
            return (out, true);
        }
        match serde_json::from_slice::<Event>(body) {
            Ok(e) => out.push(e),
            Err(_) => return (out, true),
        }
        bytes = &bytes[8 + len..];
    }
    (out, false)
}

/// Inserts events of known emails; returns the highest seq seen. Events of emails
/// that no longer exist (erased or expired) are dropped: there is nothing left to
/// attach them to, and keeping them would outlive retention.
fn apply(tx: &WriteTransaction, events: &[Event]) -> Result<u64> {
    let emails = tx.open_table(EMAILS)?;
    let mut t = tx.open_table(EVENTS)?;
    let mut max = 0;
    for e in events {
        max = max.max(e.seq);
        if emails.get(e.email)?.is_some() {
            t.insert((e.email, e.seq), serde_json::to_vec(e)?.as_slice())?;
        }
    }
    Ok(max)
}

fn indexer(
    db: Arc<Database>,
    journal: Arc<Mutex<Journal>>,
    rx: mpsc::Receiver<IndexMsg>,
    applied_tx: watch::Sender<u64>,
    mut applied: u64,
) {
    let mut durable = applied;
    let mut last_durable = Instant::now();
    let make_durable = |applied: u64| -> Result<()> {
        let tx = db.begin_write()?;
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
    loop {
        let msg = rx.recv_timeout(Duration::from_millis(200));
        let mut shutdown = None;
        let mut batch: Vec<Event> = Vec::new();
        match msg {
            Ok(IndexMsg::Batch(evs)) => {
                batch = evs;
                // Coalesce whatever else is queued into one transaction.
                while batch.len() < 50_000 {
                    match rx.try_recv() {
                        Ok(IndexMsg::Batch(more)) => batch.extend(more),
                        Ok(IndexMsg::Shutdown(ack)) => {
                            shutdown = Some(ack);
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            Ok(IndexMsg::Shutdown(ack)) => shutdown = Some(ack),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => shutdown = Some(mpsc::channel().0),
        }
        if !batch.is_empty() {
            // Retry until it works: the events are safe in the journal meanwhile,
            // and giving up would let a later durable mark skip them.
            let mut delay = Duration::from_millis(50);
            loop {
                let res = (|| -> Result<u64> {
                    let mut tx = db.begin_write()?;
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
