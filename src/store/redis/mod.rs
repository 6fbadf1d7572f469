//! The Redis backend: one node (`MAILBEACON_REDIS_URL`) or Redis Cluster
//! (`MAILBEACON_REDIS_CLUSTER`), shared by any number of mailbeacon processes.
//!
//! Parts, one file each:
//! - `keys`: the key layout (hash tags, what has a TTL).
//! - `conn`: one connection type over redis-rs's `ConnectionManager` and its
//!   async cluster client.
//! - `events`: the hot path. A recorder batch becomes **one** stream entry on one
//!   of `keys::SHARDS` shard logs (O(1) Redis work per batch, whatever its size);
//!   a deriver task in every process, a member of the shard's consumer group,
//!   copies entries into per-email event hashes keyed by event id (idempotent) and
//!   deletes them from the log. Reports read the hash *and* the entries still in
//!   the logs, so they see every committed event at once (read-your-writes across
//!   processes) whatever the deriver's lag.
//! - `spool`: the local, fsynced spool used while Redis cannot take a batch, and
//!   replayed in order once it can.
//!
//! This file holds the records: users, emails and their indexes, settings, the key
//! ring, and retention.

mod addin;
mod attachments;
mod cards;
pub mod conn;
mod events;
pub mod keys;
mod lease;
pub mod node;
mod queue;
mod realtime;
mod replies;
mod spool;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ::redis::AsyncCommands as _;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use self::conn::{Conn, Target};
use self::spool::Spool;
use super::{Result, StoreError, StoreStats};
use crate::ids::{id_from_text, id_to_text};
use crate::model::{AuditEntry, CompactEvents, Contact, EmailRecord, Event, OrgSettings, User};

/// Expiry times are clamped to this (year 2286): far enough to mean "never" for
/// retention, and exact as a sorted-set score.
const MAX_EXPIRES_MS: u64 = 10_000_000_000_000;

impl From<::redis::RedisError> for StoreError {
    fn from(e: ::redis::RedisError) -> Self {
        StoreError::Backend(format!("redis: {e}"))
    }
}

/// Counters for `/metrics` and `/healthz`.
#[derive(Default)]
pub struct RedisStats {
    /// Events waiting in the local spool.
    pub spool_events: AtomicU64,
    /// Batches that went to the spool instead of Redis.
    pub spooled_batches: AtomicU64,
    /// Events copied into per-email hashes by this process's deriver.
    pub derived_events: AtomicU64,
    /// Age of the newest log entry derived in the last pass (ms): how far behind
    /// the deriver runs.
    pub derive_lag_ms: AtomicU64,
    /// Redis commands that failed.
    pub errors: AtomicU64,
}

pub struct Redis {
    kind: &'static str,
    /// Hot-path connection: only batch appends, so they never queue behind a
    /// report or the deriver on the same multiplexed socket.
    hot: Conn,
    /// Everything else.
    conn: Conn,
    ids: Mutex<events::IdGen>,
    next_shard: AtomicUsize,
    /// When this process last refreshed each shard log's TTL (ms since the
    /// epoch): appends refresh it at most once per `LOG_TTL_REFRESH`.
    log_ttl_at: [AtomicU64; keys::SHARDS],
    spool: Arc<Mutex<Spool>>,
    /// True while the spool holds batches not yet replayed: new batches queue
    /// behind them. Changed only under `commit_order`.
    spooling: AtomicBool,
    /// Serializes the decisions to spool a batch with the replayer's "spool
    /// drained" decision, so no batch is spooled after the spool was declared
    /// empty. Not held across an append to Redis (two batches may be in flight).
    commit_order: tokio::sync::Mutex<()>,
    derive_wake: Notify,
    /// Set by a report's read barrier: the deriver writes what it holds now
    /// instead of at the end of its window.
    derive_now: AtomicBool,
    replay_wake: Notify,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    pub stats: RedisStats,
}

/// Script: mark a recipient erased and delete their derived events (all keys
/// share the email's tag). Returns how many events were deleted.
const ERASE_RECIPIENT: &str = r"
redis.call('SADD', KEYS[3], ARGV[1])
local at = redis.call('PEXPIRETIME', KEYS[1])
if at > 0 then redis.call('PEXPIREAT', KEYS[3], at) end
local n = 0
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local ok, e = pcall(cjson.decode, all[i + 1])
  if ok and tostring(e['recipient']) == ARGV[1] then
    redis.call('HDEL', KEYS[2], all[i])
    n = n + 1
  end
end
return n";

/// Script: replace one packed events field if it still holds what was read
/// (empty new value: delete it). KEYS: events hash. ARGV: field, old, new.
const REPLACE_FIELD: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
return 1";

/// Script: create a user unless its email is taken (all keys share `{g}`).
const CREATE_USER: &str = r"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[2])
return 1";

/// Replaces the user's record if it exists. KEYS: users; ARGV: id, JSON.
const UPDATE_USER: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1";

/// Makes one token hash the user's only one. KEYS: users, tokens; ARGV: id,
/// new token hash.
const REPLACE_TOKENS: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  if all[i + 1] == ARGV[1] then redis.call('HDEL', KEYS[2], all[i]) end
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return 1";

impl Redis {
    /// Connects, prepares the shard logs and starts the deriver and the spool
    /// replayer. `data_dir` holds the spool.
    pub async fn open(
        target: &Target,
        data_dir: &Path,
        spool_max_bytes: u64,
    ) -> Result<Arc<Redis>> {
        let conn = conn::connect(target).await?;
        let hot = conn::connect(target).await?;
        let mut c = conn.clone();
        let claim = node::claim(&mut c, node::TTL_MS).await?;
        let node = claim.id;
        for shard in 0..keys::SHARDS {
            events::create_group(&mut c, shard).await?;
        }
        let spool = Spool::open(data_dir, spool_max_bytes)?;
        let waiting = spool.events;
        let spooling = !spool.is_empty();
        if spooling {
            tracing::info!(
                events = waiting,
                "the Redis spool holds events from an earlier run; replaying them"
            );
        }
        let (stop, _) = watch::channel(false);
        let me = Arc::new(Redis {
            kind: match target {
                Target::Single(_) => "redis",
                Target::Cluster(_) => "redis-cluster",
            },
            hot,
            conn,
            ids: Mutex::new(events::IdGen::new(node)),
            next_shard: AtomicUsize::new((node as usize) % keys::SHARDS),
            log_ttl_at: std::array::from_fn(|_| AtomicU64::new(0)),
            spool: Arc::new(Mutex::new(spool)),
            spooling: AtomicBool::new(spooling),
            commit_order: tokio::sync::Mutex::new(()),
            derive_wake: Notify::new(),
            derive_now: AtomicBool::new(false),
            replay_wake: Notify::new(),
            stop,
            tasks: Mutex::new(Vec::new()),
            stats: RedisStats::default(),
        });
        me.stats.spool_events.store(waiting, Ordering::Relaxed);
        let consumer = format!("n{node}-{:08x}", crate::ids::random_id() as u32);
        let tasks = vec![
            tokio::spawn(events::derive_loop(
                me.clone(),
                consumer,
                me.stop.subscribe(),
            )),
            tokio::spawn(events::replay_loop(me.clone(), me.stop.subscribe())),
            tokio::spawn(node::renew_loop(
                me.conn.clone(),
                claim,
                me.stop.subscribe(),
            )),
        ];
        *me.tasks.lock().map_err(|_| poisoned())? = tasks;
        Ok(me)
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Returns true if and only if batches are going to the local spool.
    pub fn degraded(&self) -> bool {
        self.spooling.load(Ordering::Relaxed)
    }

    fn c(&self) -> Conn {
        self.conn.clone()
    }

    pub async fn create_user(
        &self,
        user: &User,
        token_hash: &[u8; 32],
        email_hash: &[u8; 32],
    ) -> Result<()> {
        let created: i64 = ::redis::cmd("EVAL")
            .arg(CREATE_USER)
            .arg(3)
            .arg(keys::USER_BY_EMAIL)
            .arg(keys::USERS)
            .arg(keys::TOKENS)
            .arg(hex(email_hash))
            .arg(id_to_text(user.id))
            .arg(serde_json::to_vec(user)?)
            .arg(hex(token_hash))
            .query_async(&mut self.c())
            .await?;
        if created == 0 {
            return Err(StoreError::Conflict(
                "a user with that email already exists".into(),
            ));
        }
        Ok(())
    }

    pub async fn user_by_token_hash(&self, hash: &[u8; 32]) -> Result<Option<User>> {
        let mut c = self.c();
        let id: Option<String> = c.hget(keys::TOKENS, hex(hash)).await?;
        let Some(id) = id else { return Ok(None) };
        let json: Option<Vec<u8>> = c.hget(keys::USERS, id).await?;
        Ok(match json {
            Some(j) => Some(serde_json::from_slice(&j)?),
            None => None,
        })
    }

    pub async fn user(&self, id: u64) -> Result<Option<User>> {
        let json: Option<Vec<u8>> = self.c().hget(keys::USERS, id_to_text(id)).await?;
        Ok(match json {
            Some(j) => Some(serde_json::from_slice(&j)?),
            None => None,
        })
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        let users: HashMap<String, Vec<u8>> = self.c().hgetall(keys::USERS).await?;
        users
            .values()
            .map(|j| Ok(serde_json::from_slice(j)?))
            .collect()
    }

    pub async fn update_user(&self, user: &User) -> Result<bool> {
        let done: i64 = ::redis::cmd("EVAL")
            .arg(UPDATE_USER)
            .arg(1)
            .arg(keys::USERS)
            .arg(id_to_text(user.id))
            .arg(serde_json::to_vec(user)?)
            .query_async(&mut self.c())
            .await?;
        Ok(done == 1)
    }

    pub async fn replace_tokens(&self, user: u64, token_hash: &[u8; 32]) -> Result<bool> {
        let done: i64 = ::redis::cmd("EVAL")
            .arg(REPLACE_TOKENS)
            .arg(2)
            .arg(keys::USERS)
            .arg(keys::TOKENS)
            .arg(id_to_text(user))
            .arg(hex(token_hash))
            .query_async(&mut self.c())
            .await?;
        Ok(done == 1)
    }

    pub async fn user_count(&self) -> Result<u64> {
        Ok(self.c().hlen(keys::USERS).await?)
    }

    /// Every user with the hashes of its bearer tokens (for `migrate`).
    pub async fn users_with_tokens(&self) -> Result<Vec<(User, Vec<[u8; 32]>)>> {
        let mut c = self.c();
        let users: HashMap<String, Vec<u8>> = c.hgetall(keys::USERS).await?;
        let tokens: HashMap<String, String> = c.hgetall(keys::TOKENS).await?;
        let mut out = Vec::with_capacity(users.len());
        for (id, json) in users {
            let user: User = serde_json::from_slice(&json)?;
            let hashes = tokens
                .iter()
                .filter(|(_, uid)| **uid == id)
                .filter_map(|(h, _)| unhex32(h))
                .collect();
            out.push((user, hashes));
        }
        out.sort_by_key(|(u, _)| u.id);
        Ok(out)
    }

    /// Adds another bearer token for an existing user (for `migrate`).
    pub async fn add_token(&self, user: u64, token_hash: &[u8; 32]) -> Result<()> {
        let _: () = self
            .c()
            .hset(keys::TOKENS, hex(token_hash), id_to_text(user))
            .await?;
        Ok(())
    }

    /// Writes events that already have their ids (for `migrate`): the same
    /// idempotent write the deriver does.
    pub async fn import_events(&self, email: u64, events: &[Event]) -> Result<()> {
        let batches = events.chunks(1000).map(<[Event]>::to_vec).collect();
        events::derive_into(&mut self.c(), email, batches).await
    }

    pub async fn put_email(&self, rec: &EmailRecord) -> Result<()> {
        let id = id_to_text(rec.id);
        let expires = rec.expires_ms.min(MAX_EXPIRES_MS);
        let mut c = self.c();
        // Index entries of addresses this version no longer mentions (an erase).
        let old = self.get_email(rec.id).await?;
        for h in old
            .iter()
            .flat_map(|o| o.lookups.iter())
            .filter(|h| !rec.lookups.contains(h))
        {
            let _: () = c.srem(keys::subject(h), &id).await?;
        }
        // The record first (its own slot), then the indexes (theirs).
        let _: () = ::redis::cmd("SET")
            .arg(keys::email(rec.id))
            .arg(serde_json::to_vec(rec)?)
            .arg("PXAT")
            .arg(expires.max(1))
            .query_async(&mut c)
            .await?;
        let mut p = ::redis::pipe();
        p.zadd(keys::BY_TIME, &id, rec.created_ms).zadd(
            keys::BY_EXPIRY,
            format!("{id}:{}", id_to_text(rec.owner)),
            expires,
        );
        expire_with(&mut p, keys::BY_TIME, expires);
        expire_with(&mut p, keys::BY_EXPIRY, expires);
        p.query_async::<()>(&mut c).await?;
        let owner = keys::by_owner(rec.owner);
        let mut p = ::redis::pipe();
        p.zadd(&owner, &id, rec.created_ms);
        expire_with(&mut p, &owner, expires);
        p.query_async::<()>(&mut c).await?;
        for h in &rec.lookups {
            let key = keys::subject(h);
            let mut p = ::redis::pipe();
            p.sadd(&key, &id).ignore();
            expire_with(&mut p, &key, expires);
            p.query_async::<()>(&mut c).await?;
        }
        Ok(())
    }

    /// Ids of the emails whose lookups include `hash` (some may have expired).
    pub async fn emails_for_lookup(&self, hash: &str) -> Result<Vec<u64>> {
        let ids: Vec<String> = self.c().smembers(keys::subject(hash)).await?;
        let mut out: Vec<u64> = ids.iter().filter_map(|i| id_from_text(i)).collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Marks a recipient erased (the deriver and reads drop their events from now
    /// on) and deletes the events already derived. Returns how many.
    pub async fn erase_recipient_events(&self, email: u64, recipient: u32) -> Result<u64> {
        let n: u64 = ::redis::cmd("EVAL")
            .arg(ERASE_RECIPIENT)
            .arg(3)
            .arg(keys::email(email))
            .arg(keys::events(email))
            .arg(keys::erased(email))
            .arg(recipient)
            .query_async(&mut self.c())
            .await?;
        // The script removed the old one-event fields; packed fields (one per
        // batch) are rewritten here without that recipient's events, each only if
        // unchanged since it was read (else read again). The erased set is
        // already written, so the deriver adds no more of theirs.
        let mut n = n;
        let mut c = self.c();
        for _ in 0..16 {
            let all: HashMap<String, Vec<u8>> = c.hgetall(keys::events(email)).await?;
            let mut changed = false;
            for (field, value) in all.iter().filter(|(_, v)| v.first() == Some(&b'[')) {
                let mut evs = events::unpack(value)?;
                let before = evs.len();
                evs.retain(|e| e.recipient != recipient);
                if evs.len() == before {
                    continue;
                }
                let new = if evs.is_empty() {
                    Vec::new()
                } else {
                    serde_json::to_vec(&CompactEvents(&evs))?
                };
                let done: i64 = ::redis::cmd("EVAL")
                    .arg(REPLACE_FIELD)
                    .arg(1)
                    .arg(keys::events(email))
                    .arg(field)
                    .arg(value)
                    .arg(new)
                    .query_async(&mut c)
                    .await?;
                if done == 1 {
                    n += (before - evs.len()) as u64;
                } else {
                    changed = true;
                }
            }
            if !changed {
                return Ok(n);
            }
        }
        Err(StoreError::Backend(
            "an email's events kept changing while erasing a recipient".into(),
        ))
    }

    pub async fn get_contacts(&self, hashes: &[String]) -> Result<Vec<Option<Contact>>> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let got: Vec<Option<Vec<u8>>> = ::redis::cmd("HMGET")
            .arg(keys::CONTACTS)
            .arg(hashes)
            .query_async(&mut self.c())
            .await?;
        got.into_iter()
            .map(|j| match j {
                Some(j) => Ok(Some(serde_json::from_slice(&j)?)),
                None => Ok(None),
            })
            .collect()
    }

    pub async fn put_contacts(&self, contacts: &[(String, Contact)]) -> Result<()> {
        let mut c = self.c();
        for chunk in contacts.chunks(1000) {
            let mut cmd = ::redis::cmd("HSET");
            cmd.arg(keys::CONTACTS);
            for (h, contact) in chunk {
                cmd.arg(h).arg(serde_json::to_vec(contact)?);
            }
            cmd.query_async::<()>(&mut c).await?;
        }
        Ok(())
    }

    pub async fn delete_contact(&self, hash: &str) -> Result<bool> {
        let n: u64 = self.c().hdel(keys::CONTACTS, hash).await?;
        Ok(n > 0)
    }

    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        let mut c = self.c();
        let seq: u64 = c.incr(keys::AUDIT_SEQ, 1).await?;
        let e = AuditEntry {
            seq,
            ..entry.clone()
        };
        let _: () = c
            .hset(keys::AUDIT, seq.to_string(), serde_json::to_vec(&e)?)
            .await?;
        Ok(())
    }

    async fn all_audit(&self) -> Result<Vec<AuditEntry>> {
        let all: HashMap<String, Vec<u8>> = self.c().hgetall(keys::AUDIT).await?;
        let mut out = all
            .values()
            .map(|j| serde_json::from_slice(j))
            .collect::<std::result::Result<Vec<AuditEntry>, _>>()?;
        out.sort_by_key(|e| std::cmp::Reverse(e.seq));
        Ok(out)
    }

    /// Newest first. (The log is read whole: admin actions are few.)
    pub async fn list_audit(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>> {
        let before = before.unwrap_or(u64::MAX);
        Ok(self
            .all_audit()
            .await?
            .into_iter()
            .filter(|e| e.seq < before)
            .take(limit)
            .collect())
    }

    pub async fn rewrite_audit(
        &self,
        f: &(dyn Fn(&AuditEntry) -> Option<AuditEntry> + Send + Sync),
    ) -> Result<u64> {
        let mut n = 0;
        let mut c = self.c();
        for e in self.all_audit().await? {
            if let Some(new) = f(&e) {
                let _: () = c
                    .hset(keys::AUDIT, new.seq.to_string(), serde_json::to_vec(&new)?)
                    .await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every contact preference, by keyed hash (for `migrate`).
    pub async fn all_contacts(&self) -> Result<Vec<(String, Contact)>> {
        let all: HashMap<String, Vec<u8>> = self.c().hgetall(keys::CONTACTS).await?;
        all.into_iter()
            .map(|(h, j)| Ok((h, serde_json::from_slice(&j)?)))
            .collect()
    }

    /// The erased recipients of one email (for `migrate`).
    pub async fn erased_recipients(&self, email: u64) -> Result<Vec<u32>> {
        let all: Vec<String> = self.c().smembers(keys::erased(email)).await?;
        Ok(all.iter().filter_map(|r| r.parse().ok()).collect())
    }

    /// Marks a recipient of an imported email erased, expiring with the record
    /// (for `migrate`: its events were never exported). Idempotent.
    pub async fn import_erased(&self, email: u64, recipient: u32) -> Result<()> {
        const MARK: &str = r"
redis.call('SADD', KEYS[2], ARGV[1])
local at = redis.call('PEXPIRETIME', KEYS[1])
if at > 0 then redis.call('PEXPIREAT', KEYS[2], at) end
return 1";
        let _: i64 = ::redis::cmd("EVAL")
            .arg(MARK)
            .arg(2)
            .arg(keys::email(email))
            .arg(keys::erased(email))
            .arg(recipient)
            .query_async(&mut self.c())
            .await?;
        Ok(())
    }

    /// Writes an audit entry under its own sequence number and moves the
    /// counter past it (for `migrate`). Idempotent.
    pub async fn import_audit(&self, entry: &AuditEntry) -> Result<()> {
        const PUT: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], ARGV[1])
end
return 1";
        let _: i64 = ::redis::cmd("EVAL")
            .arg(PUT)
            .arg(2)
            .arg(keys::AUDIT)
            .arg(keys::AUDIT_SEQ)
            .arg(entry.seq)
            .arg(serde_json::to_vec(entry)?)
            .query_async(&mut self.c())
            .await?;
        Ok(())
    }

    /// A deleted key or field is gone from Redis's memory, but the append-only
    /// file keeps the commands that wrote it until the AOF is rewritten (and an
    /// RDB snapshot keeps what it saw). On a single node this asks for the
    /// rewrite (`BGREWRITEAOF`: a fork, in the background; refused harmlessly
    /// while one runs). On Cluster a keyless command reaches one node only: the
    /// operator runs `BGREWRITEAOF` on every master (and deletes old RDB
    /// snapshots and backups) after an erase; see the README.
    pub async fn scrub(&self) -> Result<()> {
        if self.kind() == "redis" {
            let res: ::redis::RedisResult<::redis::Value> = ::redis::cmd("BGREWRITEAOF")
                .query_async(&mut self.c())
                .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "BGREWRITEAOF after an erase was refused; run it on the server");
            }
        }
        Ok(())
    }

    /// The stored bytes of an email record (for `replace_email_if`).
    pub async fn get_email_raw(&self, id: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.c().get(keys::email(id)).await?)
    }

    /// Replaces the record if and only if its stored bytes are still
    /// `expected`, keeping its TTL (one script on the record's own key).
    /// Indexes are left as they are: the caller changes no indexed field.
    pub async fn replace_email_if(&self, expected: &[u8], rec: &EmailRecord) -> Result<bool> {
        const CAS: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') return 1
end
return 0";
        let done: i64 = ::redis::cmd("EVAL")
            .arg(CAS)
            .arg(1)
            .arg(keys::email(rec.id))
            .arg(expected)
            .arg(serde_json::to_vec(rec)?)
            .query_async(&mut self.c())
            .await?;
        Ok(done == 1)
    }

    pub async fn get_email(&self, id: u64) -> Result<Option<EmailRecord>> {
        let json: Option<Vec<u8>> = self.c().get(keys::email(id)).await?;
        Ok(match json {
            Some(j) => Some(serde_json::from_slice(&j)?),
            None => None,
        })
    }

    pub async fn list_emails(
        &self,
        owner: Option<u64>,
        before: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<Vec<EmailRecord>> {
        let key = match owner {
            Some(o) => keys::by_owner(o),
            None => keys::BY_TIME.to_string(),
        };
        let (bt, bid) = before.unwrap_or((u64::MAX, u64::MAX));
        let max = if before.is_some() {
            bt.to_string()
        } else {
            "+inf".into()
        };
        let mut c = self.c();
        let mut out = Vec::new();
        let mut offset = 0;
        let page = limit.clamp(1, 500) + 8;
        while out.len() < limit {
            // Newest first; members with equal scores come in reverse id order,
            // the same order as (created_ms, id).
            let got: Vec<(String, f64)> = ::redis::cmd("ZRANGE")
                .arg(&key)
                .arg(&max)
                .arg("-inf")
                .arg("BYSCORE")
                .arg("REV")
                .arg("LIMIT")
                .arg(offset)
                .arg(page)
                .arg("WITHSCORES")
                .query_async(&mut c)
                .await?;
            offset += got.len();
            let ids: Vec<u64> = got
                .iter()
                .filter_map(|(m, score)| Some((id_from_text(m)?, *score as u64)))
                .filter(|(id, created)| (*created, *id) < (bt, bid))
                .map(|(id, _)| id)
                .collect();
            let recs = futures_util::future::try_join_all(ids.iter().map(|id| self.get_email(*id)))
                .await?;
            // Missing records have expired; their index entries go at the next sweep.
            out.extend(recs.into_iter().flatten());
            if got.len() < page {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    pub async fn settings(&self) -> Result<Option<OrgSettings>> {
        let json: Option<Vec<u8>> = self.c().get(keys::SETTINGS).await?;
        Ok(match json {
            Some(j) => Some(serde_json::from_slice(&j)?),
            None => None,
        })
    }

    pub async fn put_settings(&self, s: &OrgSettings) -> Result<()> {
        let _: () = self.c().set(keys::SETTINGS, serde_json::to_vec(s)?).await?;
        Ok(())
    }

    /// The key ring's JSON (the `keyring.json` format), if one is stored.
    pub async fn keyring(&self) -> Result<Option<String>> {
        get_keyring(&mut self.c()).await
    }

    /// See `put_keyring`.
    pub async fn put_keyring(&self, expected: Option<&str>, json: &str) -> Result<bool> {
        put_keyring(&mut self.c(), expected, json).await
    }

    /// Events waiting in the local spool.
    pub fn spool_events(&self) -> u64 {
        self.stats.spool_events.load(Ordering::Relaxed)
    }

    /// Always true: the key ring lives in Redis, shared by every process.
    pub fn shares_keyring(&self) -> bool {
        true
    }

    /// The counters `/metrics` shows, read now.
    pub fn counters(&self) -> StoreStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StoreStats {
            errors: get(&self.stats.errors),
            derived_events: get(&self.stats.derived_events),
            derive_lag_ms: get(&self.stats.derive_lag_ms),
        }
    }

    /// What Redis's persistence settings promise, for the startup log (see the
    /// README's durability table). `None` if Redis does not say (CONFIG disabled).
    pub async fn durability(&self) -> Option<(String, String)> {
        let mut c = self.c();
        let aof: HashMap<String, String> = ::redis::cmd("CONFIG")
            .arg("GET")
            .arg("append*")
            .query_async(&mut c)
            .await
            .ok()?;
        Some((
            aof.get("appendonly")?.clone(),
            aof.get("appendfsync")?.clone(),
        ))
    }

    /// Removes emails whose retention ended before `now_ms`, with their events and
    /// index entries. Redis expires the email's own keys by itself at that time;
    /// this also cleans the indexes, and makes `sweep` mean the same for both
    /// backends.
    pub async fn sweep(&self, now_ms: u64, created_before_ms: u64) -> Result<usize> {
        let mut c = self.c();
        let mut removed = 0;
        // A retention period shortened since: emails created before the cut-off
        // go now, whatever expiry they were given.
        loop {
            let old = page_below(&mut c, keys::BY_TIME, created_before_ms).await?;
            if old.is_empty() {
                break;
            }
            for member in &old {
                match id_from_text(member) {
                    Some(id) => removed += usize::from(self.remove_email(&mut c, id, None).await?),
                    None => c.zrem::<_, _, ()>(keys::BY_TIME, member).await?,
                }
            }
        }
        loop {
            let due = page_below(&mut c, keys::BY_EXPIRY, now_ms).await?;
            if due.is_empty() {
                return Ok(removed);
            }
            for member in &due {
                let parsed = member
                    .split_once(':')
                    .and_then(|(i, o)| Some((id_from_text(i)?, id_from_text(o)?)));
                if let Some((id, owner)) = parsed {
                    removed += usize::from(self.remove_email(&mut c, id, Some(owner)).await?);
                }
                // Also drops a member that does not parse, so the loop ends.
                c.zrem::<_, _, ()>(keys::BY_EXPIRY, member).await?;
            }
        }
    }

    /// Removes one email: its keys and every index entry pointing at it. `owner`
    /// comes from the expiry index when Redis has already expired the record.
    /// Returns true if and only if the email was still listed for expiry.
    async fn remove_email(&self, c: &mut Conn, id: u64, owner: Option<u64>) -> Result<bool> {
        let text = id_to_text(id);
        let rec = self.get_email(id).await?;
        for h in rec.iter().flat_map(|r| r.lookups.iter()) {
            c.srem::<_, _, ()>(keys::subject(h), &text).await?;
        }
        let _: () = ::redis::pipe()
            .del(keys::email(id))
            .del(keys::events(id))
            .del(keys::erased(id))
            .del(keys::replies(id))
            .del(keys::attachments(id))
            .query_async(c)
            .await?;
        c.zrem::<_, _, ()>(keys::BY_TIME, &text).await?;
        let Some(owner) = rec.map(|r| r.owner).or(owner) else {
            return Ok(false);
        };
        c.zrem::<_, _, ()>(keys::by_owner(owner), &text).await?;
        let listed: usize = c
            .zrem(keys::BY_EXPIRY, format!("{text}:{}", id_to_text(owner)))
            .await?;
        Ok(listed > 0)
    }

    /// Stops the deriver (after a last pass) and the replayer. Whatever is still
    /// spooled stays in the data directory and is replayed at the next start.
    pub async fn close(&self) -> Result<()> {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().map_err(|_| poisoned())?);
        for t in tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
        Ok(())
    }
}

/// The key ring's JSON, if one is stored.
pub async fn get_keyring(c: &mut Conn) -> Result<Option<String>> {
    Ok(c.get(keys::KEYRING).await?)
}

/// Stores the key ring if and only if the stored one is still `expected` (`None`:
/// no ring stored yet). Returns false if another process changed it first.
pub async fn put_keyring(c: &mut Conn, expected: Option<&str>, json: &str) -> Result<bool> {
    const CAS: &str = r"
local cur = redis.call('GET', KEYS[1])
if (cur == false and ARGV[1] == '') or (cur ~= false and ARGV[1] ~= '' and cur == ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[3]) return 1
end
return 0";
    let done: i64 = ::redis::cmd("EVAL")
        .arg(CAS)
        .arg(1)
        .arg(keys::KEYRING)
        .arg(if expected.is_none() { "" } else { "x" })
        .arg(expected.unwrap_or(""))
        .arg(json)
        .query_async(c)
        .await?;
    Ok(done == 1)
}

/// Adds "expire `key` at `at_ms`, unless it already lives longer": a new key gets
/// the TTL (NX), an existing one is only extended (GT). So an index expires with
/// the last email it lists.
/// Up to 500 members of a sorted set scored below `below` (exclusive).
async fn page_below(c: &mut Conn, key: &str, below: u64) -> Result<Vec<String>> {
    Ok(::redis::cmd("ZRANGE")
        .arg(key)
        .arg("-inf")
        .arg(format!("({below}"))
        .arg("BYSCORE")
        .arg("LIMIT")
        .arg(0)
        .arg(500)
        .query_async(c)
        .await?)
}

fn expire_with(p: &mut ::redis::Pipeline, key: &str, at_ms: u64) {
    p.cmd("PEXPIREAT").arg(key).arg(at_ms).arg("NX").ignore();
    p.cmd("PEXPIREAT").arg(key).arg(at_ms).arg("GT").ignore();
}

fn poisoned() -> StoreError {
    StoreError::Backend("a lock was poisoned".into())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
