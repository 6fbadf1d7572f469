//! Events on Redis: the packed shard logs, the deriver, the spool replayer, and
//! reading an email's events back.
//!
//! **Commit (hot path).** The recorder's batch gets event ids, is packed as one
//! JSON array and appended as one entry (`XADD`, plus a `PEXPIRE` refreshing the
//! log's TTL, in one pipeline) to the next shard log, round robin. That is O(1)
//! commands per batch whatever its size. The append must answer within
//! `COMMIT_TIMEOUT`; otherwise (Redis down, paused, failing over) the batch goes
//! to the local spool, and so does every batch after it until the spool has been
//! replayed. Two batches may be appended at once (the recorder keeps two in
//! flight), so their entries may land in either order; readers order by id.
//!
//! **Event ids.** `ms << 22 | counter << 10 | node`: the commit time, a
//! per-millisecond counter (12 bits; a busier millisecond borrows the next one),
//! and the node number this process got from `INCR` at start (mod 1024). Unique
//! across processes (up to 1024 running at once), growing with time, and fixed
//! before the first attempt, so a retry or a replay writes the same id again.
//!
//! **Derivation (off the hot path).** Every process runs one deriver, a consumer
//! in each shard log's group. Every `PASS` (100 ms) it reads new entries
//! (`XREADGROUP >`) into a window, grouped by email, and writes the window
//! once it is `WINDOW` (1 s) old, holds `WINDOW_EVENTS`, or a report asks: per
//! email one `HSET` of one packed field per `FIELD_EVENTS` of its events in
//! the window (`b<smallest event id>.<hash of the ids>` → JSON array, whatever
//! the number of entries the events came from; re-deriving the same events writes
//! the same field and value; TTL =
//! the email record's; an email that no longer exists gets nothing; an erased
//! recipient's events are dropped), then `XACK`s and `XDEL`s the entries. On
//! one node a script writes `ROUND_EMAILS` emails at a time (`DERIVE_MANY`);
//! on a Cluster, one script per email (one slot each). With hits spread over
//! many emails, one write per email per batch cost Redis a script per hit,
//! which the hot path's appends queued behind; an email hit many times in a
//! window now gets one write of one field (with one field per entry, as
//! before, the hash, its AOF bytes and every report grew by a field per hit).
//!
//! Entries left pending by a process that died (or a failed pass)
//! are claimed after `CLAIM_IDLE` with `XAUTOCLAIM`. So the logs hold only what
//! is not derived yet. Hashes written before packing hold one event per field
//! (its id → JSON); readers take both forms.
//!
//! **Reading.** `events_for` does not scan the logs: per log it notes the newest
//! entry at the call and waits until the oldest entry left is newer (everything
//! up to it derived and deleted: two O(1) reads, then one per poll, waking the
//! local deriver, which reads every process's entries). Then it reads the
//! email's hash. Every event committed (by any process) before the call is
//! therefore in the hash. If the deriver does not get there within
//! `CATCH_UP_WAIT` (its consumer died less than `CLAIM_IDLE` ago), the report
//! reads the entries still left up to that point itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::{AsyncCommands as _, Value};
use tokio::sync::watch;

use super::conn::Conn;
use super::{keys, poisoned, Redis};
use crate::ids::{id_to_text, now_ms};
use crate::model::{CompactEvents, Event};
use crate::store::{Result, StoreError};

/// How long a batch append may take before the batch is spooled instead. Normal
/// appends take well under a millisecond; a paused or dead Redis must not make
/// pixels wait longer than this.
const COMMIT_TIMEOUT: Duration = Duration::from_millis(100);
/// How long one replay round trip may take.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(2);
/// Spooled batches sent in one replay round trip, at most, and their bytes
/// (past the first). One batch per round trip drained slower than a sustained
/// load spooled (every batch after the first waits behind the spool), so the
/// spool grew until full and hits were dropped.
const REPLAY_RECORDS: usize = 512;
const REPLAY_BYTES: usize = 2 << 20;
/// Entries pending this long in another consumer are taken over.
const CLAIM_IDLE: Duration = Duration::from_secs(5);
/// Entries read per shard per deriver round.
const READ_COUNT: usize = 64;
/// How long the deriver gathers new entries before writing them (unless a
/// report asks sooner), and the most events it gathers: an email hit many
/// times within a window gets one write. Well under `CLAIM_IDLE`, so no other
/// process takes the entries over meanwhile.
const WINDOW: Duration = Duration::from_secs(1);
const WINDOW_EVENTS: usize = 8_192;
/// How often the deriver reads new entries (sooner when a report asks).
const PASS: Duration = Duration::from_millis(100);
/// TTL of a shard log, refreshed by appends: a backstop only (entries are
/// deleted once derived).
const LOG_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
/// Appends refresh a shard log's TTL at most this often per process, not with
/// every batch: a `PEXPIRE` per append was a second command (and AOF record,
/// fsynced under `appendfsync always`) per batch for a 7-day backstop.
const LOG_TTL_REFRESH_MS: u64 = 1_000;
/// A report waits at most this long for the deriver to pass the logs' newest
/// entries at the call; then it reads the entries still left itself.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);

/// Script: store each email's packed events, one field per log entry, unless
/// the email is gone (expired or erased: nothing would be left to attach them
/// to; answers 0) or one of the batch's recipients was erased (answers -1 and
/// writes nothing; the caller drops that recipient's events and calls again).
/// Several emails per call on a single node; one on a Cluster (an email's keys
/// share a slot, different emails do not). KEYS: per email, its record, events
/// hash and erased set. ARGV: per email, the number of fields n, the number of
/// recipients m, n pairs (field, packed JSON array), then the m recipients.
/// Answers one result per email.
const DERIVE_MANY: &str = r"
local out = {}
local a = 1
for k = 1, #KEYS, 3 do
  local n = tonumber(ARGV[a])
  local m = tonumber(ARGV[a + 1])
  local fields = a + 2
  local recipients = fields + 2 * n
  a = recipients + m
  local r = 1
  local at = redis.call('PEXPIRETIME', KEYS[k])
  if at == -2 then
    r = 0
  else
    for i = recipients, a - 1 do
      if redis.call('SISMEMBER', KEYS[k + 2], ARGV[i]) == 1 then r = -1 break end
    end
  end
  if r == 1 then
    redis.call('HSET', KEYS[k + 1], unpack(ARGV, fields, recipients - 1))
    if at > 0 then redis.call('PEXPIREAT', KEYS[k + 1], at) end
  end
  out[#out + 1] = r
end
return out";

/// Emails derived by one `DERIVE_MANY` call, at most: bounds how long one
/// script holds Redis (a few milliseconds).
const ROUND_EMAILS: usize = 32;

/// At most this many events in one hash field: a report scans a hot email's
/// hash `SCAN_FIELDS` fields at a time, so this bounds what one step holds
/// (about 1,000 events), while an email hit a few dozen times in a window still
/// gets one field.
const FIELD_EVENTS: usize = 64;

/// The hash field of one email's events from one deriver window (or one
/// imported chunk): `b` + the smallest event id + `.` + a 64-bit FNV-1a hash of
/// all the ids, sorted. Ids are fixed before the first append, so deriving the
/// same events again (a retry, a replay) writes the same field with the same
/// value. A takeover may group entries differently; the hash keeps a field
/// holding other events from being overwritten, and readers count each event
/// once by id.
pub fn packed_field(batch: &[Event]) -> String {
    let mut ids: Vec<u64> = batch.iter().map(|e| e.seq).collect();
    ids.sort_unstable();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ids.iter().flat_map(|id| id.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!(
        "b{}.{h:016x}",
        id_to_text(ids.first().copied().unwrap_or(0))
    )
}

/// Unpacks an events-hash value: a packed array (`[`…) or one event (the old
/// per-event fields, still read).
pub fn unpack(value: &[u8]) -> Result<Vec<Event>> {
    if value.first() == Some(&b'[') {
        Ok(serde_json::from_slice(value)?)
    } else {
        Ok(vec![serde_json::from_slice(value)?])
    }
}

pub struct IdGen {
    node: u64,
    last_ms: u64,
    counter: u64,
}

impl IdGen {
    pub fn new(node: u64) -> IdGen {
        IdGen {
            node: node & 1023,
            last_ms: 0,
            counter: 0,
        }
    }

    pub fn next(&mut self) -> u64 {
        let now = now_ms();
        if now > self.last_ms {
            self.last_ms = now;
            self.counter = 0;
        } else {
            self.counter += 1;
            if self.counter >= 4096 {
                self.last_ms += 1;
                self.counter = 0;
            }
        }
        (self.last_ms << 22) | (self.counter << 10) | self.node
    }
}

/// Creates the consumer group of a shard log (and the log), if missing.
pub async fn create_group(c: &mut Conn, shard: usize) -> Result<()> {
    let res: ::redis::RedisResult<()> = ::redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(keys::log(shard))
        .arg(keys::GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(c)
        .await;
    match res {
        Err(e) if e.code() != Some("BUSYGROUP") => return Err(e.into()),
        _ => {}
    }
    // A log made here has no TTL yet (appends refresh it).
    let _: () = ::redis::cmd("PEXPIRE")
        .arg(keys::log(shard))
        .arg(LOG_TTL_MS)
        .arg("NX")
        .query_async(c)
        .await?;
    Ok(())
}

pub(super) type Entry = (String, Vec<u8>);

impl Redis {
    pub async fn commit_events(self: &Arc<Self>, mut events: Vec<Event>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        {
            let mut ids = self.ids.lock().map_err(|_| poisoned())?;
            for e in &mut events {
                e.seq = ids.next();
            }
        }
        let packed = serde_json::to_vec(&CompactEvents(&events))?;
        let n = events.len() as u32;
        let order = self.commit_order.lock().await;
        // Straight to Redis unless batches are spooled. The lock is not held
        // across the append: the recorder keeps more than one batch in flight
        // (`Store::commits_in_flight`), so that Redis writes and fsyncs one
        // while the next forms. Their entries may then land in either order,
        // which readers do not depend on (they order events by id). Only the
        // decisions to spool stay under the lock, so no batch is spooled
        // after the replayer has declared the spool empty.
        let _order = if self.spooling.load(Ordering::Relaxed) {
            order
        } else {
            drop(order);
            let shard = self.next_shard.fetch_add(1, Ordering::Relaxed) % keys::SHARDS;
            let mut hot = self.hot.clone();
            let refresh = self.log_ttl_due(shard);
            match tokio::time::timeout(COMMIT_TIMEOUT, append(&mut hot, shard, &packed, refresh))
                .await
            {
                // The deriver is not woken here: it reads every `PASS`, so
                // its reads (which Redis also writes to the AOF and fsyncs)
                // do not land between every two appends.
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "Redis refused a batch; spooling locally until it is back");
                }
                Err(_) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "Redis did not take a batch within {COMMIT_TIMEOUT:?}; spooling locally until it is back"
                    );
                }
            }
            let order = self.commit_order.lock().await;
            self.spooling.store(true, Ordering::Relaxed);
            order
        };
        let spool = self.spool.clone();
        let depth = tokio::task::spawn_blocking(move || {
            let mut s = spool.lock().map_err(|_| poisoned())?;
            s.append(n, &packed)?;
            Ok::<_, StoreError>(s.events)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("spool task failed: {e}")))??;
        self.stats.spool_events.store(depth, Ordering::Relaxed);
        self.stats.spooled_batches.fetch_add(1, Ordering::Relaxed);
        self.replay_wake.notify_one();
        Ok(())
    }

    /// Whether this append should refresh the shard log's TTL: the first
    /// append to it in `LOG_TTL_REFRESH_MS` (claimed, so only one of the batches
    /// in flight does).
    fn log_ttl_due(&self, shard: usize) -> bool {
        let now = now_ms();
        let at = &self.log_ttl_at[shard];
        let last = at.load(Ordering::Relaxed);
        now.saturating_sub(last) >= LOG_TTL_REFRESH_MS
            && at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Every event of one email, oldest first, including every event committed (by
    /// any process) before the call.
    pub async fn events_for(self: &Arc<Self>, email: u64) -> Result<Vec<Event>> {
        let mut all = self.events_for_many(&[email]).await?;
        Ok(all.pop().unwrap_or_default())
    }

    /// Every event of each of `emails` (in that order), oldest first, including
    /// every event committed (by any process) before the call. One read barrier
    /// over the logs for all of them, then their reads at once: what `/stats` over
    /// thousands of emails needs, instead of a barrier per email.
    pub async fn events_for_many(self: &Arc<Self>, emails: &[u64]) -> Result<Vec<Vec<Event>>> {
        if emails.is_empty() {
            return Ok(Vec::new());
        }
        let left = self.read_barrier(emails).await?;
        let c = self.conn.clone();
        // One pipeline per email (its keys share the email's hash tag; a
        // pipeline may not cross slots in a Cluster), all sent at once on the
        // multiplexed connection.
        type Read = (bool, HashMap<String, Vec<u8>>, Vec<u32>);
        let read: Vec<Read> = futures_util::future::try_join_all(emails.iter().map(|&email| {
            let mut c = c.clone();
            async move {
                ::redis::pipe()
                    .exists(keys::email(email))
                    .hgetall(keys::events(email))
                    .smembers(keys::erased(email))
                    .query_async::<Read>(&mut c)
                    .await
            }
        }))
        .await?;
        let mut out = Vec::with_capacity(emails.len());
        for (&email, (exists, hash, erased)) in emails.iter().zip(read) {
            if !exists {
                out.push(Vec::new());
                continue;
            }
            let mut one = BTreeMap::new();
            for value in hash.values() {
                for e in unpack(value)? {
                    one.insert(e.seq, e);
                }
            }
            for e in left.iter().filter(|e| e.email == email) {
                one.insert(e.seq, e.clone());
            }
            one.retain(|_, e| !erased.contains(&e.recipient));
            out.push(one.into_values().collect());
        }
        Ok(out)
    }

    /// The read barrier for reports over `emails`: waits for spooled events to
    /// be replayed and for each log's entries up to its newest at the call to
    /// be derived (O(1) per log), then answers those entries' events of
    /// `emails` still left in the logs (none, unless the deriver is stuck),
    /// which the caller merges with the emails' hashes by `seq`.
    async fn read_barrier(self: &Arc<Self>, emails: &[u64]) -> Result<Vec<Event>> {
        let t0 = Instant::now();
        // Spooled events are not in Redis yet; wait for the replay (bounded: while
        // Redis is away, this report is incomplete and says so in the log).
        while self.spooling.load(Ordering::Relaxed) {
            if t0.elapsed() > CATCH_UP_WAIT {
                tracing::warn!("reporting while events are still spooled locally");
                break;
            }
            self.replay_wake.notify_one();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let c = self.conn.clone();
        let logs = futures_util::future::try_join_all(
            (0..keys::SHARDS).map(|s| self.derived_up_to_now(c.clone(), s, t0)),
        )
        .await?;
        let wanted: std::collections::HashSet<u64> = emails.iter().copied().collect();
        let mut left: Vec<Event> = Vec::new();
        for (_, packed) in logs.iter().flatten() {
            let batch: Vec<Event> = serde_json::from_slice(packed)?;
            left.extend(batch.into_iter().filter(|e| wanted.contains(&e.email)));
        }
        Ok(left)
    }

    /// Every event of one email (as `events_for`, in no particular order),
    /// handed to `f` a chunk at a time: the email's hash is scanned
    /// (`HSCAN`, `SCAN_FIELDS` fields per call) instead of read whole, and
    /// only the events' `seq`s are kept to count each event once (a scan may
    /// repeat a field; a stuck log entry may also be in the hash).
    pub async fn events_chunked(
        self: &Arc<Self>,
        email: u64,
        f: &mut (dyn FnMut(Vec<Event>) + Send),
    ) -> Result<()> {
        // With `FIELD_EVENTS` per field: about 1,000 events per step.
        const SCAN_FIELDS: usize = 16;
        let left = self.read_barrier(&[email]).await?;
        let mut c = self.conn.clone();
        let (exists, erased): (bool, Vec<u32>) = ::redis::pipe()
            .exists(keys::email(email))
            .smembers(keys::erased(email))
            .query_async(&mut c)
            .await?;
        if !exists {
            return Ok(());
        }
        let key = keys::events(email);
        let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, flat): (u64, Vec<Vec<u8>>) = ::redis::cmd("HSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(SCAN_FIELDS)
                .query_async(&mut c)
                .await?;
            let mut chunk = Vec::new();
            // Field, value, field, value …: the values are every other item.
            for value in flat.iter().skip(1).step_by(2) {
                for e in unpack(value)? {
                    if !erased.contains(&e.recipient) && seen.insert(e.seq) {
                        chunk.push(e);
                    }
                }
            }
            if !chunk.is_empty() {
                f(chunk);
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let rest: Vec<Event> = left
            .into_iter()
            .filter(|e| !erased.contains(&e.recipient) && seen.insert(e.seq))
            .collect();
        if !rest.is_empty() {
            f(rest);
        }
        Ok(())
    }

    /// The read barrier of one log: notes its newest entry, then waits (at most
    /// `CATCH_UP_WAIT` from `t0`) until every entry up to it is derived and
    /// deleted — the oldest entry left is newer, or none is left. Answers the
    /// entries up to it still in the log after the wait (normally none), which
    /// the caller reads itself. Redis work: two O(1) reads, plus one per poll.
    async fn derived_up_to_now(
        &self,
        mut c: Conn,
        shard: usize,
        t0: Instant,
    ) -> Result<Vec<Entry>> {
        let key = keys::log(shard);
        let (newest, oldest): (Value, Value) = ::redis::pipe()
            .cmd("XREVRANGE")
            .arg(&key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut c)
            .await?;
        let Some((target, _)) = parse_entries(&newest).into_iter().next() else {
            return Ok(Vec::new());
        };
        let target_id = entry_id(&target);
        let mut oldest = parse_entries(&oldest).into_iter().next();
        let mut pause = Duration::from_millis(1);
        loop {
            match &oldest {
                None => return Ok(Vec::new()),
                Some((id, _)) if entry_id(id) > target_id => return Ok(Vec::new()),
                _ => {}
            }
            if t0.elapsed() > CATCH_UP_WAIT {
                // The deriver is stuck (its consumer died less than
                // `CLAIM_IDLE` ago, or Redis refuses it): read what is left.
                let v: Value = ::redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg(&target)
                    .query_async(&mut c)
                    .await?;
                return Ok(parse_entries(&v));
            }
            self.derive_now.store(true, Ordering::Relaxed);
            self.derive_wake.notify_one();
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
            let v: Value = ::redis::cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut c)
                .await?;
            oldest = parse_entries(&v).into_iter().next();
        }
    }

    /// Derives entries read from one shard log at once, then acknowledges and
    /// deletes them (claimed entries; new ones wait in a `Window`).
    async fn derive(&self, shard: usize, entries: &[Entry]) -> Result<()> {
        let mut w = Window::default();
        w.add(shard, entries);
        self.write_window(w).await
    }

    /// Writes a window's events into the per-email hashes, then acknowledges
    /// and deletes its entries (one pipeline per shard log). On an error the
    /// entries stay pending and are claimed again after `CLAIM_IDLE`.
    async fn write_window(&self, w: Window) -> Result<()> {
        if w.entries.is_empty() {
            return Ok(());
        }
        // Per email, its events in id order (entries may have landed out of
        // order; an entry claimed twice is counted once), cut into fields of at
        // most `FIELD_EVENTS`, so the same events always give the same fields.
        let per_email = w.per_email.into_iter().map(|(email, mut evs)| {
            evs.sort_unstable_by_key(|e| e.seq);
            evs.dedup_by_key(|e| e.seq);
            // The same cuts as `chunks(FIELD_EVENTS)`, taken from the end so the
            // events are moved, not cloned, and each is moved once.
            let mut batches = Vec::with_capacity(evs.len().div_ceil(FIELD_EVENTS));
            while evs.len() > FIELD_EVENTS {
                let last = (evs.len() - 1) / FIELD_EVENTS * FIELD_EVENTS;
                batches.push(evs.split_off(last));
            }
            if !evs.is_empty() {
                batches.push(evs);
            }
            batches.reverse();
            (email, batches)
        });
        match &self.conn {
            // One node: the whole window in a few scripts (`DERIVE_MANY`).
            Conn::Single(_) => derive_round(&mut self.conn.clone(), per_email.collect()).await?,
            // A Cluster: one script per email (its keys share one slot).
            Conn::Cluster(_) => {
                futures_util::future::try_join_all(per_email.map(|(email, batches)| {
                    let mut c = self.conn.clone();
                    async move { derive_into(&mut c, email, batches).await }
                }))
                .await?;
            }
        }
        futures_util::future::try_join_all(w.entries.iter().map(|(shard, ids)| {
            let mut c = self.conn.clone();
            async move {
                let key = keys::log(*shard);
                ::redis::pipe()
                    .xack(&key, keys::GROUP, ids)
                    .ignore()
                    .xdel(&key, ids)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            }
        }))
        .await?;
        self.stats
            .derived_events
            .fetch_add(w.events, Ordering::Relaxed);
        self.stats
            .derive_lag_ms
            .store(now_ms().saturating_sub(w.newest_ms), Ordering::Relaxed);
        Ok(())
    }

    /// Reads the new entries of one shard, until none are left or a window's
    /// worth of events is read.
    async fn read_new(&self, shard: usize, consumer: &str) -> Result<Vec<Entry>> {
        let mut c = self.conn.clone();
        let mut out = Vec::new();
        loop {
            let res: ::redis::RedisResult<Value> = ::redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(keys::GROUP)
                .arg(consumer)
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("STREAMS")
                .arg(keys::log(shard))
                .arg(">")
                .query_async(&mut c)
                .await;
            let v = match res {
                Err(e) if e.code() == Some("NOGROUP") => {
                    // The log expired or was deleted: start it again.
                    create_group(&mut c, shard).await?;
                    continue;
                }
                r => r?,
            };
            // Reply: [[key, [[id, [field, value]], …]]] or nil.
            let entries = match &v {
                Value::Array(streams) => streams
                    .first()
                    .and_then(|s| match s {
                        Value::Array(kv) => kv.get(1).map(parse_entries),
                        _ => None,
                    })
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            let n = entries.len();
            out.extend(entries);
            // Entries hold about 32 events each.
            if n < READ_COUNT || out.len() * 32 >= WINDOW_EVENTS / keys::SHARDS {
                return Ok(out);
            }
        }
    }

    /// Takes over and derives entries pending too long (their consumer died, or
    /// one of our passes failed).
    async fn claim_stale(&self, shard: usize, consumer: &str) -> Result<()> {
        let mut c = self.conn.clone();
        let mut cursor = "0-0".to_string();
        for _ in 0..64 {
            let v: Value = ::redis::cmd("XAUTOCLAIM")
                .arg(keys::log(shard))
                .arg(keys::GROUP)
                .arg(consumer)
                .arg(CLAIM_IDLE.as_millis() as u64)
                .arg(&cursor)
                .arg("COUNT")
                .arg(READ_COUNT)
                .query_async(&mut c)
                .await?;
            // Reply: [next cursor, [[id, [field, value]], …], [deleted ids]].
            let Value::Array(parts) = v else {
                return Ok(());
            };
            let next = parts.first().and_then(as_string).unwrap_or_default();
            let entries = parts.get(1).map(parse_entries).unwrap_or_default();
            if !entries.is_empty() {
                tracing::info!(
                    shard,
                    entries = entries.len(),
                    "deriving log entries another consumer left pending"
                );
            }
            self.derive(shard, &entries).await?;
            if next == "0-0" || next.is_empty() {
                return Ok(());
            }
            cursor = next;
        }
        Ok(())
    }
}

/// Writes one email's events into its hash, one packed field per batch (the
/// deriver's write: one script per email per deriver round, whatever the number
/// of events). Idempotent: the same batch always gives the same field and value.
pub async fn derive_into(c: &mut Conn, email: u64, mut batches: Vec<Vec<Event>>) -> Result<()> {
    batches.retain(|b| !b.is_empty());
    for _ in 0..8 {
        if batches.is_empty() {
            return Ok(());
        }
        let mut erased = false;
        for chunk in batches.chunks(256) {
            let mut cmd = ::redis::cmd("EVAL");
            cmd.arg(DERIVE_MANY)
                .arg(3)
                .arg(keys::email(email))
                .arg(keys::events(email))
                .arg(keys::erased(email));
            push_email_args(&mut cmd, chunk)?;
            if cmd.query_async::<Vec<i64>>(c).await?.first() == Some(&-1) {
                erased = true;
            }
        }
        if !erased {
            return Ok(());
        }
        // A recipient was erased: drop their events and write again (fields
        // already written are written again with the same value).
        let gone: Vec<u32> = c.smembers(keys::erased(email)).await?;
        for b in &mut batches {
            b.retain(|e| !gone.contains(&e.recipient));
        }
        batches.retain(|b| !b.is_empty());
    }
    Err(StoreError::Backend(
        "recipients of an email kept being erased while deriving".into(),
    ))
}

/// Adds one email's `DERIVE_MANY` arguments: the number of fields and of
/// recipients, a (field, packed JSON) pair per batch, then the recipients.
/// Every batch is non-empty.
fn push_email_args(cmd: &mut ::redis::Cmd, batches: &[Vec<Event>]) -> Result<()> {
    let mut recipients: Vec<u32> = batches.iter().flatten().map(|e| e.recipient).collect();
    recipients.sort_unstable();
    recipients.dedup();
    cmd.arg(batches.len()).arg(recipients.len());
    for b in batches {
        cmd.arg(packed_field(b))
            .arg(serde_json::to_vec(&CompactEvents(b))?);
    }
    cmd.arg(recipients);
    Ok(())
}

/// Derives one round on a single node: many emails per script
/// (`DERIVE_MANY`, at most `ROUND_EMAILS` each), so Redis runs one script per
/// `ROUND_EMAILS` emails instead of one per email. An email the script reports an erased
/// recipient for goes through `derive_into`, which drops their events.
async fn derive_round(c: &mut Conn, per_email: HashMap<u64, Vec<Vec<Event>>>) -> Result<()> {
    let mut emails: Vec<(u64, Vec<Vec<Event>>)> = per_email
        .into_iter()
        .map(|(email, mut b)| {
            b.retain(|b| !b.is_empty());
            (email, b)
        })
        .filter(|(_, b)| !b.is_empty())
        .collect();
    let mut erased = Vec::new();
    while !emails.is_empty() {
        let rest = emails.split_off(emails.len().min(ROUND_EMAILS));
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(DERIVE_MANY).arg(3 * emails.len());
        for (email, _) in &emails {
            cmd.arg(keys::email(*email))
                .arg(keys::events(*email))
                .arg(keys::erased(*email));
        }
        for (_, batches) in &emails {
            push_email_args(&mut cmd, batches)?;
        }
        let answers: Vec<i64> = cmd.query_async(c).await?;
        for ((email, batches), answer) in emails.into_iter().zip(answers) {
            if answer == -1 {
                erased.push((email, batches));
            }
        }
        emails = rest;
    }
    for (email, batches) in erased {
        derive_into(c, email, batches).await?;
    }
    Ok(())
}

/// Appends one packed batch to a shard log (one pipeline, one slot).
async fn append(c: &mut Conn, shard: usize, packed: &[u8], refresh_ttl: bool) -> Result<()> {
    let mut pipe = ::redis::pipe();
    add_entry(&mut pipe, shard, packed);
    if refresh_ttl {
        keep_log(&mut pipe, shard);
    }
    let _: () = pipe.query_async(c).await?;
    Ok(())
}

/// Adds one batch's entry (`XADD`) to a shard log's pipeline.
fn add_entry(pipe: &mut ::redis::Pipeline, shard: usize, packed: &[u8]) {
    pipe.cmd("XADD")
        .arg(keys::log(shard))
        .arg("*")
        .arg("b")
        .arg(packed)
        .ignore();
}

/// Refreshes the shard log's TTL (`PEXPIRE`) at the end of its pipeline.
fn keep_log(pipe: &mut ::redis::Pipeline, shard: usize) {
    pipe.cmd("PEXPIRE")
        .arg(keys::log(shard))
        .arg(LOG_TTL_MS)
        .ignore();
}

/// New log entries the deriver has read and not written yet: their events
/// grouped per email (one batch per email, whatever the number of entries: one
/// hash field per email per window), and the entries per shard log.
#[derive(Default)]
struct Window {
    per_email: HashMap<u64, Vec<Event>>,
    entries: BTreeMap<usize, Vec<String>>,
    events: u64,
    newest_ms: u64,
    /// When the first entry was read.
    opened: Option<Instant>,
}

impl Window {
    fn add(&mut self, shard: usize, entries: &[Entry]) {
        for (id, packed) in entries {
            self.newest_ms = self.newest_ms.max(entry_ms(id));
            self.entries.entry(shard).or_default().push(id.clone());
            self.opened.get_or_insert_with(Instant::now);
            let batch: Vec<Event> = match serde_json::from_slice(packed) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, entry = %id, "a log entry is not a batch; it is skipped");
                    continue;
                }
            };
            self.events += batch.len() as u64;
            for e in batch {
                self.per_email.entry(e.email).or_default().push(e);
            }
        }
    }

    /// Holds as many events as a window may.
    fn full(&self) -> bool {
        self.events >= WINDOW_EVENTS as u64
    }

    /// Whether to write now: full, or open for `WINDOW`.
    fn due(&self) -> bool {
        self.full() || self.opened.is_some_and(|t| t.elapsed() >= WINDOW)
    }
}

/// The deriver task. It reads new log entries of every shard every `PASS`
/// (and when a report asks) into a `Window`, and writes the
/// window when it is `WINDOW` old, holds `WINDOW_EVENTS` events, or a report
/// asks (`derive_now`): an email hit many times within a window gets one
/// write, not one per batch. It also claims stale entries every 2 s.
pub async fn derive_loop(me: Arc<Redis>, consumer: String, mut stop: watch::Receiver<bool>) {
    let mut last_claim = Instant::now();
    let mut stopping = false;
    let mut window = Window::default();
    loop {
        let wait = match window.opened {
            Some(t) => WINDOW.saturating_sub(t.elapsed()),
            None => PASS,
        };
        tokio::select! {
            _ = me.derive_wake.notified() => {}
            _ = tokio::time::sleep(wait.min(PASS)) => {}
            _ = stop.changed() => stopping = true,
        }
        let claim = stopping || last_claim.elapsed() >= Duration::from_secs(2);
        if claim {
            let claims = (0..keys::SHARDS).map(|shard| me.claim_stale(shard, &consumer));
            for res in futures_util::future::join_all(claims).await {
                if let Err(e) = res {
                    me.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "deriving stale entries failed; retrying later");
                }
            }
            last_claim = Instant::now();
        }
        // Every shard at once: the reads share Redis event-loop passes.
        let reads = (0..keys::SHARDS).map(|shard| me.read_new(shard, &consumer));
        for (shard, res) in futures_util::future::join_all(reads)
            .await
            .into_iter()
            .enumerate()
        {
            match res {
                Ok(entries) => window.add(shard, &entries),
                Err(e) => {
                    me.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "reading new log entries failed; retrying later");
                }
            }
        }
        let asked = me.derive_now.swap(false, Ordering::Relaxed);
        if asked || stopping || window.due() {
            // On an error the entries stay pending and are claimed again.
            if let Err(e) = me.write_window(std::mem::take(&mut window)).await {
                me.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "deriving events failed; retrying later");
            }
        }
        if stopping {
            return;
        }
    }
}

/// What one replay round did.
enum Round {
    /// Sent the oldest records; this many bytes of the spool are left.
    Sent(u64),
    /// The spool had nothing left to send.
    Empty,
    /// Redis (or the spool file) failed: try again at the next tick.
    Failed,
}

/// Sends the oldest spooled records (up to `REPLAY_RECORDS`) to one shard log
/// in one round trip and advances the spool past them.
async fn replay_round(me: &Arc<Redis>, shard: &mut usize) -> Round {
    let spool = me.spool.clone();
    let next = tokio::task::spawn_blocking(move || {
        spool
            .lock()
            .map_err(|_| poisoned())?
            .peek_many(REPLAY_RECORDS, REPLAY_BYTES)
    })
    .await;
    let (records, at) = match next {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => return Round::Empty,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot read the Redis spool");
            return Round::Failed;
        }
        Err(_) => return Round::Failed,
    };
    let n: u32 = records.iter().map(|(k, _)| *k).sum();
    // One shard log per round trip: a pipeline keeps to one hash slot (the
    // Cluster rule in `conn`).
    *shard = (*shard + 1) % keys::SHARDS;
    let mut pipe = ::redis::pipe();
    for (_, packed) in &records {
        add_entry(&mut pipe, *shard, packed);
    }
    keep_log(&mut pipe, *shard);
    let mut c = me.hot.clone();
    match tokio::time::timeout(REPLAY_TIMEOUT, pipe.query_async::<()>(&mut c)).await {
        Ok(Ok(())) => {}
        // Still unavailable.
        _ => return Round::Failed,
    }
    let spool = me.spool.clone();
    let res = tokio::task::spawn_blocking(move || {
        let mut s = spool.lock().map_err(|_| poisoned())?;
        s.advance(n, at)?;
        Ok::<_, StoreError>((s.events, s.backlog_bytes()))
    })
    .await;
    let left = match res {
        Ok(Ok((depth, left))) => {
            me.stats.spool_events.store(depth, Ordering::Relaxed);
            left
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot update the Redis spool");
            return Round::Failed;
        }
        Err(_) => return Round::Failed,
    };
    me.derive_wake.notify_one();
    Round::Sent(left)
}

/// The replayer task: sends spooled batches to Redis, oldest first, many per
/// round trip. While it replays, the recorder keeps spooling new batches
/// behind them; once less than a round's bytes are left, the replayer
/// takes the commit lock (no batch can be spooled meanwhile), sends the rest
/// and switches back to Redis under it. Without the lock step, a steady load
/// always had a batch spooled in the gap and the spool never emptied.
pub async fn replay_loop(me: Arc<Redis>, mut stop: watch::Receiver<bool>) {
    let mut shard = 0usize;
    loop {
        tokio::select! {
            _ = me.replay_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => return,
        }
        while me.spooling.load(Ordering::Relaxed) {
            match replay_round(&me, &mut shard).await {
                Round::Failed => break,
                // More than a round's worth left: keep going without the lock.
                Round::Sent(left) if left > REPLAY_BYTES as u64 => {}
                Round::Sent(_) | Round::Empty => {
                    // Near the end: finish under the commit lock.
                    let _order = me.commit_order.lock().await;
                    let done = loop {
                        match replay_round(&me, &mut shard).await {
                            Round::Sent(_) => {}
                            Round::Empty => break true,
                            Round::Failed => break false,
                        }
                    };
                    if done {
                        me.spooling.store(false, Ordering::Relaxed);
                        tracing::info!(
                            "the Redis spool is replayed; recording straight to Redis again"
                        );
                    }
                    break;
                }
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

/// Parses `[[id, [field, value, …]], …]` into (id, value of field `b`).
pub(super) fn parse_entries(v: &Value) -> Vec<Entry> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let id = as_string(pair.first()?)?;
            let Value::Array(fields) = pair.get(1)? else {
                return None;
            };
            let body = fields.chunks(2).find_map(|kv| match kv {
                [Value::BulkString(k), Value::BulkString(v)] if k == b"b" => Some(v.clone()),
                _ => None,
            })?;
            Some((id, body))
        })
        .collect()
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// A stream entry id (`<ms>-<seq>`) as numbers, for ordering.
fn entry_id(id: &str) -> (u64, u64) {
    let mut parts = id.split('-').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The millisecond part of a stream entry id (`<ms>-<seq>`).
fn entry_ms(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_unique_growing_and_carry_the_node() {
        let mut g = IdGen::new(5);
        let ids: Vec<u64> = (0..10_000).map(|_| g.next()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.iter().all(|i| i & 1023 == 5));
        let mut other = IdGen::new(6);
        assert_ne!(other.next() & 1023, ids[0] & 1023);
    }

    fn event(seq: u64, recipient: u32) -> Event {
        Event {
            seq,
            at_ms: 1,
            kind: crate::model::EventKind::Open,
            email: 7,
            recipient,
            link: None,
            method: "GET".into(),
            ua: String::new(),
            ip: String::new(),
            since_prepared_s: 0,
            machine_net: None,
        }
    }

    #[test]
    fn both_stored_forms_unpack_and_ids_keep_their_precision() {
        // Ids above 2^53 would be rounded by anything parsing them as floats.
        let a = event((1 << 60) + 3, 0);
        let b = event((1 << 60) + 5, 1);
        let packed = serde_json::to_vec(&vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(unpack(&packed).unwrap(), vec![a.clone(), b]);
        let single = serde_json::to_vec(&a).unwrap();
        assert_eq!(unpack(&single).unwrap(), vec![a.clone()]);
        assert!(unpack(b"not json").is_err());
        // The same events always name the same field, in any order; other
        // events with the same smallest id name another.
        let c = event((1 << 60) + 9, 2);
        let ab = [a.clone(), event((1 << 60) + 5, 1)];
        let ba = [ab[1].clone(), ab[0].clone()];
        assert_eq!(packed_field(&ab), packed_field(&ba));
        assert!(packed_field(&ab).starts_with(&format!("b{}.", id_to_text(a.seq))));
        assert_ne!(packed_field(&ab), packed_field(&[a.clone(), c]));
        assert_ne!(packed_field(&ab), packed_field(std::slice::from_ref(&a)));
    }

    #[test]
    fn stream_ids_order_numerically() {
        assert!(entry_id("10-0") > entry_id("9-5"));
        assert!(entry_id("9-10") > entry_id("9-9"));
        assert_eq!(entry_id("1700000000000-2"), (1_700_000_000_000, 2));
    }
}
