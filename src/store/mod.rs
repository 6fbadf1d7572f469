//! The storage interface: the `Store` that keeps the domain records (`model`).
//!
//! `Store` is the one place personal data passes on its way to and from a
//! database: it seals addresses, names, subjects, URLs, user agents and client
//! networks (see `seal`) before a backend sees them, computes the keyed hashes that
//! index them, and opens them again on the way out. Backends store opaque text.
//!
//! Backends sit behind the `Backend` enum, whose arms delegate (the shape stalwart's
//! mail-server uses): adding one means adding a variant, not touching callers. Each
//! lives in its own folder; `embedded` is the default, `redis` serves a single Redis
//! node or Redis Cluster. `open` picks one from the configuration and loads the key
//! ring where that store keeps it.
//!
//! Architecture invariants: only this module and its children talk to a database,
//! and nothing reaches a backend unsealed. This file matches on `Backend` only to
//! delegate (every backend has the method); callers outside `store/` never name a
//! backend.

pub mod embedded;
pub mod journal;
mod open;
pub mod redis;

pub use open::{open, open_for_migration, publish_keyring, stored_keyring, Opened};

use std::sync::{Arc, RwLock};

use crate::seal::Sealer;

use crate::model::{
    AuditEntry, Contact, Delivery, EmailRecord, Event, OrgSettings, RecipientRecord, User,
};

#[derive(Debug)]
pub enum StoreError {
    /// A unique value (e.g. a user's email) already exists.
    Conflict(String),
    /// The backend failed; the message is for logs, not for API clients.
    Backend(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Conflict(m) => write!(f, "conflict: {m}"),
            StoreError::Backend(m) => write!(f, "store: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A backend's counters, for `/metrics` (zeros where a backend has no such
/// thing: the embedded store has no deriver and no remote errors).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Backend commands that failed.
    pub errors: u64,
    /// Events copied from the shard logs into per-email records by this process.
    pub derived_events: u64,
    /// How far behind the deriver runs (ms).
    pub derive_lag_ms: u64,
}

/// The storage backends.
#[derive(Clone)]
pub enum Backend {
    Embedded(Arc<embedded::Embedded>),
    /// One Redis node or Redis Cluster (`kind()` tells which).
    Redis(Arc<redis::Redis>),
}

/// The store in use. Cheap to clone; clones share the sealer.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    sealer: Arc<RwLock<Arc<Sealer>>>,
    /// Counts data-subject erasures (`scrub`), so caches of records can tell
    /// that what they hold may name an erased address.
    erasures: Arc<std::sync::atomic::AtomicU64>,
}

/// Calls the backend: the embedded one with `$s` bound to it off the async
/// runtime (its calls block), Redis with `$r` bound to it (its calls are async).
macro_rules! on_backend {
    ($self:ident, |$s:ident| $body:expr, |$r:ident| $rbody:expr) => {
        match &$self.backend {
            Backend::Embedded(b) => b.run(move |$s| $body).await,
            Backend::Redis($r) => $rbody,
        }
    };
}

// After the macro, which it uses.
pub mod addin;
pub mod attachments;
pub mod cards;
pub mod dump;
pub mod lease;
pub mod queue;
pub mod realtime;
pub mod replies;

impl Store {
    pub fn new(backend: Backend, sealer: Sealer) -> Store {
        Store {
            backend,
            sealer: Arc::new(RwLock::new(Arc::new(sealer))),
            erasures: Arc::default(),
        }
    }

    /// How many erasures finished in this process (see `scrub`): a cache of
    /// records empties itself when this changes.
    pub fn erasures(&self) -> u64 {
        self.erasures.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A short name for logs and `/healthz`.
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Embedded(b) => b.kind(),
            Backend::Redis(r) => r.kind(),
        }
    }

    /// Returns true if and only if the store cannot take writes right now and
    /// events are being kept locally until it can (`/healthz` says "degraded").
    pub fn degraded(&self) -> bool {
        match &self.backend {
            Backend::Embedded(b) => b.degraded(),
            Backend::Redis(r) => r.degraded(),
        }
    }

    /// Events kept locally until the store can take them.
    pub fn spool_events(&self) -> u64 {
        match &self.backend {
            Backend::Embedded(b) => b.spool_events(),
            Backend::Redis(r) => r.spool_events(),
        }
    }

    /// The backend's counters for `/metrics`.
    pub fn stats(&self) -> StoreStats {
        match &self.backend {
            Backend::Embedded(b) => b.counters(),
            Backend::Redis(r) => r.counters(),
        }
    }

    /// Returns true if and only if the key ring lives in the store, shared by
    /// every process using it (Redis), rather than in this process's data
    /// directory (embedded). A shared ring's rotations are noticed by reading
    /// `keyring` again.
    pub fn shares_keyring(&self) -> bool {
        match &self.backend {
            Backend::Embedded(b) => b.shares_keyring(),
            Backend::Redis(r) => r.shares_keyring(),
        }
    }

    /// The key ring's JSON (the `keyring.json` format) where this store keeps it:
    /// Redis its shared copy, the embedded store its data directory's file.
    /// `None` if there is none yet.
    pub async fn keyring(&self) -> Result<Option<String>> {
        on_backend!(self, |s| s.keyring(), |r| r.keyring().await)
    }

    /// Stores the key ring's JSON if and only if the stored one is still
    /// `expected` (`None`: none stored yet); returns false if it changed first.
    /// Compare-and-set across processes on Redis; the embedded store's file has
    /// one process.
    pub async fn put_keyring(&self, expected: Option<&str>, json: &str) -> Result<bool> {
        let (expected, json) = (expected.map(str::to_owned), json.to_owned());
        on_backend!(self, |s| s.put_keyring(expected.as_deref(), &json), |r| r
            .put_keyring(expected.as_deref(), &json)
            .await)
    }

    /// The Redis backend, when it is the one in use.
    ///
    pub fn sealer(&self) -> Arc<Sealer> {
        // A poisoned lock only means a writer panicked while swapping an Arc.
        self.sealer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the sealer after a key rotation (old data keys stay in the new one).
    pub fn set_sealer(&self, sealer: Sealer) {
        *self.sealer.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(sealer);
    }

    /// Creates a user; `Conflict` if a user with that email exists.
    pub async fn create_user(&self, user: User, token_hash: [u8; 32]) -> Result<()> {
        let k = self.sealer();
        let email_hash = k.lookup(&user.email);
        let sealed = User {
            email: k.seal(&user.email),
            ..user
        };
        on_backend!(
            self,
            |s| s.create_user(&sealed, &token_hash, &email_hash),
            |r| r.create_user(&sealed, &token_hash, &email_hash).await
        )
    }

    pub async fn user_by_token_hash(&self, hash: [u8; 32]) -> Result<Option<User>> {
        let k = self.sealer();
        let user = on_backend!(self, |s| s.user_by_token_hash(&hash), |r| r
            .user_by_token_hash(&hash)
            .await)?;
        Ok(user.map(|u| User {
            email: k.open_lossy(&u.email),
            ..u
        }))
    }

    /// The user with this id, if there is one.
    pub async fn user(&self, id: u64) -> Result<Option<User>> {
        let k = self.sealer();
        let user = on_backend!(self, |s| s.user(id), |r| r.user(id).await)?;
        Ok(user.map(|u| User {
            email: k.open_lossy(&u.email),
            ..u
        }))
    }

    /// Every user, in no particular order (accounts are few; the API pages them).
    pub async fn list_users(&self) -> Result<Vec<User>> {
        let k = self.sealer();
        let users = on_backend!(self, |s| s.list_users(), |r| r.list_users().await)?;
        Ok(users
            .into_iter()
            .map(|u| User {
                email: k.open_lossy(&u.email),
                ..u
            })
            .collect())
    }

    /// Replaces an existing user's record (role, disabled; the email and id
    /// stay as they are). Returns false if there is no such user.
    pub async fn update_user(&self, user: User) -> Result<bool> {
        let k = self.sealer();
        let sealed = User {
            email: k.seal(&user.email),
            ..user
        };
        on_backend!(self, |s| s.update_user(&sealed), |r| r
            .update_user(&sealed)
            .await)
    }

    /// Makes `token_hash` the user's only bearer token: every other token of
    /// theirs stops working, in the same write. Returns false if there is no
    /// such user.
    pub async fn replace_tokens(&self, user: u64, token_hash: [u8; 32]) -> Result<bool> {
        on_backend!(self, |s| s.replace_tokens(user, &token_hash), |r| r
            .replace_tokens(user, &token_hash)
            .await)
    }

    pub async fn user_count(&self) -> Result<u64> {
        on_backend!(self, |s| s.user_count(), |r| r.user_count().await)
    }

    /// Inserts or replaces an email record, durably.
    pub async fn put_email(&self, rec: EmailRecord) -> Result<()> {
        let k = self.sealer();
        let sealed = seal_email(&k, rec);
        on_backend!(self, |s| s.put_email(&sealed), |r| r
            .put_email(&sealed)
            .await)
    }

    pub async fn get_email(&self, id: u64) -> Result<Option<EmailRecord>> {
        let k = self.sealer();
        let rec = on_backend!(self, |s| s.get_email(id), |r| r.get_email(id).await)?;
        Ok(rec.map(|r| open_email(&k, r)))
    }

    /// Changes one stored email atomically: `f` gets the current record and
    /// returns whether it changed it; the change is written only if nobody
    /// wrote the record meanwhile (compare-and-set on the stored bytes), else
    /// `f` runs again on the newer record. For fields no index covers
    /// (deliveries, schedule, reminder): `f` must not change the id, owner,
    /// times or addresses. Returns the record as it now is (`None`: no such
    /// email). Several processes may update one email at once.
    pub async fn update_email<F>(&self, id: u64, mut f: F) -> Result<Option<EmailRecord>>
    where
        F: FnMut(&mut EmailRecord) -> bool,
    {
        for _ in 0..64 {
            let k = self.sealer();
            let raw = on_backend!(self, |s| s.get_email_raw(id), |r| r.get_email_raw(id).await)?;
            let Some(raw) = raw else { return Ok(None) };
            let mut rec = open_email(&k, serde_json::from_slice(&raw)?);
            if !f(&mut rec) {
                return Ok(Some(rec));
            }
            let sealed = seal_email(&k, rec.clone());
            let swapped = on_backend!(self, |s| s.replace_email_if(&raw, &sealed), |r| r
                .replace_email_if(&raw, &sealed)
                .await)?;
            if swapped {
                return Ok(Some(rec));
            }
        }
        Err(StoreError::Backend(format!(
            "email {id}: too many concurrent updates"
        )))
    }

    /// Newest first. `owner: None` lists every user's emails. `before` is the
    /// (created_ms, id) of the last email of a previous page (exclusive).
    pub async fn list_emails(
        &self,
        owner: Option<u64>,
        before: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<Vec<EmailRecord>> {
        let k = self.sealer();
        let list = on_backend!(self, |s| s.list_emails(owner, before, limit), |r| r
            .list_emails(owner, before, limit)
            .await)?;
        Ok(list.into_iter().map(|r| open_email(&k, r)).collect())
    }

    /// Ids of every email that mentions `address` (normalized).
    pub async fn emails_mentioning(&self, address: &str) -> Result<Vec<u64>> {
        self.ids_for_lookup(self.sealer().lookup_hex(address)).await
    }

    /// Ids indexed under a keyed hash (emails under an address's hash; activities
    /// under their own, see `addin`).
    async fn ids_for_lookup(&self, hash: String) -> Result<Vec<u64>> {
        on_backend!(self, |s| s.emails_for_lookup(&hash), |r| r
            .emails_for_lookup(&hash)
            .await)
    }

    /// Durably commits a batch of events (one sync for the whole batch). When this
    /// returns Ok, every event of the batch survives a crash, and the events
    /// come back in the clear: what is stored is a sealed copy, so the recorder
    /// hands them on to real time without copying them. The embedded store
    /// seals on its commit thread, beside the journal write, not on the
    /// runtime thread that answers requests (and the sealed copy is allocated
    /// and freed on one thread).
    pub async fn commit_events(&self, events: Vec<Event>) -> Result<Vec<Event>> {
        let k = self.sealer();
        match &self.backend {
            // On the embedded store's commit thread, not the blocking pool.
            Backend::Embedded(b) => {
                b.commit_on_thread(move |s| s.commit_events(sealed(&k, &events)).map(|()| events))
                    .await
            }
            Backend::Redis(r) => r.commit_events(sealed(&k, &events)).await.map(|()| events),
        }
    }

    /// How many batches the recorder may commit at once. The embedded journal
    /// syncs one batch at a time, so a second would only wait for its lock.
    /// Redis takes a second batch on the same connection while it writes and
    /// fsyncs the first, so the next batch forms and travels meanwhile.
    pub fn commits_in_flight(&self) -> usize {
        match &self.backend {
            Backend::Embedded(_) => 1,
            Backend::Redis(_) => 2,
        }
    }

    /// How many independent reads (`get_email`) are worth having in flight at
    /// once. On Redis they share round trips on one pipelined connection; the
    /// embedded store reads locally on a blocking thread each, so more at once
    /// would only start more threads (64 reads in flight grew the pool to 129).
    pub fn concurrent_reads(&self) -> usize {
        match &self.backend {
            Backend::Embedded(_) => 1,
            Backend::Redis(_) => 64,
        }
    }

    /// Every event recorded for one email, oldest first, including every event
    /// committed before this call (read-your-writes).
    pub async fn events_for(&self, email: u64) -> Result<Vec<Event>> {
        let k = self.sealer();
        let events = match &self.backend {
            Backend::Embedded(b) => b.events_for(email).await,
            Backend::Redis(r) => r.events_for(email).await,
        }?;
        Ok(map_events(events, &|x| k.open_lossy(x)))
    }

    /// Every event of one email, as `events_for` but handed to `f` a chunk at
    /// a time (each event once, in no particular order), so a caller that
    /// folds them (a report) never holds them all.
    pub async fn events_chunked(
        &self,
        email: u64,
        mut f: impl FnMut(Vec<Event>) + Send,
    ) -> Result<()> {
        let k = self.sealer();
        let mut open = |c: Vec<Event>| f(map_events(c, &|x| k.open_lossy(x)));
        match &self.backend {
            Backend::Embedded(b) => b.events_chunked(email, &mut open).await,
            Backend::Redis(r) => r.events_chunked(email, &mut open).await,
        }
    }

    /// `events_for` of each of `emails`, in that order, with one read barrier for
    /// all of them on Redis (reports over many emails).
    pub async fn events_for_many(&self, emails: &[u64]) -> Result<Vec<Vec<Event>>> {
        let k = self.sealer();
        let all = match &self.backend {
            Backend::Embedded(b) => {
                let mut all = Vec::with_capacity(emails.len());
                for &email in emails {
                    all.push(b.events_for(email).await?);
                }
                all
            }
            Backend::Redis(r) => r.events_for_many(emails).await?,
        };
        Ok(all
            .into_iter()
            .map(|events| map_events(events, &|x| k.open_lossy(x)))
            .collect())
    }

    /// Deletes one recipient's events of one email and stops recording new ones.
    /// Returns how many events were deleted.
    pub async fn erase_recipient_events(&self, email: u64, recipient: u32) -> Result<u64> {
        match &self.backend {
            Backend::Embedded(b) => b.erase_recipient_events(email, recipient).await,
            Backend::Redis(r) => r.erase_recipient_events(email, recipient).await,
        }
    }

    pub async fn settings(&self) -> Result<Option<OrgSettings>> {
        on_backend!(self, |s| s.settings(), |r| r.settings().await)
    }

    pub async fn put_settings(&self, settings: OrgSettings) -> Result<()> {
        on_backend!(self, |s| s.put_settings(&settings), |r| r
            .put_settings(&settings)
            .await)
    }

    pub async fn contact(&self, address: &str) -> Result<Option<Contact>> {
        Ok(self.contacts(&[address.to_owned()]).await?.pop().flatten())
    }

    /// The preferences of many addresses at once (same order; `None` = no
    /// preference stored), in one read.
    pub async fn contacts(&self, addresses: &[String]) -> Result<Vec<Option<Contact>>> {
        let k = self.sealer();
        let hashes: Vec<String> = addresses.iter().map(|a| k.lookup_hex(a)).collect();
        let found = on_backend!(self, |s| s.get_contacts(&hashes), |r| r
            .get_contacts(&hashes)
            .await)?;
        Ok(found
            .into_iter()
            .map(|c| {
                c.map(|c| Contact {
                    address: k.open_lossy(&c.address),
                    ..c
                })
            })
            .collect())
    }

    pub async fn put_contacts(&self, contacts: Vec<Contact>) -> Result<()> {
        let k = self.sealer();
        let sealed: Vec<(String, Contact)> = contacts
            .into_iter()
            .map(|c| {
                (
                    k.lookup_hex(&c.address),
                    Contact {
                        address: k.seal(&c.address),
                        ..c
                    },
                )
            })
            .collect();
        on_backend!(self, |s| s.put_contacts(&sealed), |r| r
            .put_contacts(&sealed)
            .await)
    }

    /// Returns true if a preference was stored for `address`.
    pub async fn delete_contact(&self, address: &str) -> Result<bool> {
        let hash = self.sealer().lookup_hex(address);
        on_backend!(self, |s| s.delete_contact(&hash), |r| r
            .delete_contact(&hash)
            .await)
    }

    pub async fn audit(&self, entry: AuditEntry) -> Result<()> {
        let k = self.sealer();
        let sealed = AuditEntry {
            subject: entry.subject.as_deref().map(|a| k.seal(a)),
            ..entry
        };
        on_backend!(self, |s| s.append_audit(&sealed), |r| r
            .append_audit(&sealed)
            .await)
    }

    /// Newest first; `before` is a seq from a previous page (exclusive).
    pub async fn audit_log(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>> {
        let k = self.sealer();
        let list = on_backend!(self, |s| s.list_audit(before, limit), |r| r
            .list_audit(before, limit)
            .await)?;
        Ok(list.into_iter().map(|e| open_audit(&k, e)).collect())
    }

    /// Makes sure deleted data is gone from the backend's files too (the embedded
    /// store compacts and empties its journal; a single Redis node rewrites its
    /// AOF), and tells caches of records (`erasures`) to let go of what they hold.
    pub async fn scrub(&self) -> Result<()> {
        let res = on_backend!(self, |s| s.scrub(), |r| r.scrub().await);
        self.erasures
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        res
    }

    /// Blanks the subject of every audit entry about `address`. Returns how many.
    pub async fn redact_audit(&self, address: &str) -> Result<u64> {
        let k = self.sealer();
        let address = address.to_owned();
        let f = move |e: &AuditEntry| {
            let about = e.subject.as_deref().map(|x| k.open_lossy(x));
            (about.as_deref() == Some(address.as_str())).then(|| AuditEntry {
                subject: None,
                detail: format!("{} (subject erased)", e.detail),
                ..e.clone()
            })
        };
        on_backend!(self, |s| s.rewrite_audit(&f), |r| r.rewrite_audit(&f).await)
    }

    /// Removes every email (and its events) whose retention ended: its expiry is
    /// before `now_ms`, or it was created before `created_before_ms` (a retention
    /// period shortened since). Returns how many emails were removed.
    pub async fn sweep(&self, now_ms: u64, created_before_ms: u64) -> Result<usize> {
        on_backend!(self, |s| s.sweep(now_ms, created_before_ms), |r| r
            .sweep(now_ms, created_before_ms)
            .await)
    }

    /// Every user with the hashes of its bearer tokens (for `migrate`).
    pub async fn users_with_tokens(&self) -> Result<Vec<(User, Vec<[u8; 32]>)>> {
        let k = self.sealer();
        let users = on_backend!(self, |s| s.users_with_tokens(), |r| r
            .users_with_tokens()
            .await)?;
        Ok(users
            .into_iter()
            .map(|(u, t)| {
                (
                    User {
                        email: k.open_lossy(&u.email),
                        ..u
                    },
                    t,
                )
            })
            .collect())
    }

    /// Adds another bearer token for an existing user (for `migrate`).
    pub async fn add_token(&self, user: u64, token_hash: [u8; 32]) -> Result<()> {
        on_backend!(self, |s| s.add_token(user, &token_hash), |r| r
            .add_token(user, &token_hash)
            .await)
    }

    /// Writes events of one email that already carry their sequence numbers, as
    /// they are (for `migrate`). Idempotent.
    pub async fn import_events(&self, email: u64, events: Vec<Event>) -> Result<()> {
        let k = self.sealer();
        let sealed = map_events(events, &|x| k.seal(x));
        on_backend!(self, |s| s.import_events(&sealed), |r| r
            .import_events(email, &sealed)
            .await)
    }

    /// Makes everything durable and stops background work. Call once, at shutdown.
    pub async fn close(&self) -> Result<()> {
        on_backend!(self, |s| s.close(), |r| r.close().await)
    }
}

fn open_opt(k: &Sealer, v: Option<String>) -> Option<String> {
    v.map(|s| k.open_lossy(&s))
}

/// Applies `f` to every personal field of each event (user agent, network).
/// A sealed copy of `events`, to store.
fn sealed(k: &Sealer, events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .map(|e| Event {
            method: e.method.clone(),
            ua: k.seal(&e.ua),
            ip: k.seal(&e.ip),
            machine_net: e.machine_net.clone(),
            ..*e
        })
        .collect()
}

fn map_events(events: Vec<Event>, f: &dyn Fn(&str) -> String) -> Vec<Event> {
    events
        .into_iter()
        .map(|e| Event {
            ua: f(&e.ua),
            ip: f(&e.ip),
            ..e
        })
        .collect()
}

/// Applies `f` to every personal field of an email record. This is the one list
/// of what gets sealed, so sealing and opening cannot drift apart.
fn map_personal(rec: EmailRecord, f: &dyn Fn(&str) -> String) -> EmailRecord {
    let opt = |v: Option<String>| v.map(|s| f(&s));
    EmailRecord {
        from: f(&rec.from),
        subject: opt(rec.subject),
        message_id: opt(rec.message_id),
        template: opt(rec.template),
        recipients: rec
            .recipients
            .into_iter()
            .map(|r| RecipientRecord {
                address: f(&r.address),
                name: opt(r.name),
                delivery: r.delivery.map(|d| Delivery {
                    detail: opt(d.detail),
                    ..d
                }),
                ..r
            })
            .collect(),
        links: rec.links.iter().map(|l| f(l)).collect(),
        ..rec
    }
}

fn seal_email(k: &Sealer, rec: EmailRecord) -> EmailRecord {
    let mut lookups: Vec<String> = std::iter::once(rec.from.as_str())
        .chain(rec.recipients.iter().map(|r| r.address.as_str()))
        .filter(|a| !a.is_empty())
        .map(|a| k.lookup_hex(a))
        .collect();
    // The reply watcher finds an email by its Message-ID (see `replies`).
    lookups.extend(
        rec.message_id
            .as_deref()
            .map(|m| replies::followed_message_id(k, m)),
    );
    lookups.sort();
    lookups.dedup();
    EmailRecord {
        lookups,
        ..map_personal(rec, &|s| k.seal(s))
    }
}

fn open_email(k: &Sealer, rec: EmailRecord) -> EmailRecord {
    map_personal(rec, &|s| k.open_lossy(s))
}

fn open_audit(k: &Sealer, e: AuditEntry) -> AuditEntry {
    AuditEntry {
        subject: open_opt(k, e.subject),
        ..e
    }
}
