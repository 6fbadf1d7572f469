//! Events on Redis: the packed shard logs, the deriver, the spool replayer, and
//! reading an email's events back.
//!
//! **Commit (hot path).** The recorder's batch gets event ids, is packed as one
//! JSON array and appended as one entry (`XADD`, plus a `PEXPIRE` refreshing the
//! log's TTL, in one pipeline) to the next shard log, round robin. That is O(1)
//! commands per batch whatever its size. The append must answer within
//! `COMMIT_TIMEOUT`; otherwise (Redis down, paused, failing over) the batch goes
//! to the local spool, and so does every batch after it until the spool has been
//! replayed, which keeps the order.
//!
//! **Event ids.** `ms << 22 | counter << 10 | node`: the commit time, a
//! per-millisecond counter (12 bits; a busier millisecond borrows the next one),
//! and the node number this process got from `INCR` at start (mod 1024). Unique
//! across processes (up to 1024 running at once), growing with time, and fixed
//! before the first attempt, so a retry or a replay writes the same id again.
//!
//! **Derivation (off the hot path).** Every process runs one deriver, a consumer
//! in each shard log's group. It reads new entries (`XREADGROUP >`), writes each
//! email's events into that email's hash with one script per email (`HSET` by
//! event id, idempotent; TTL = the email record's; events of an email that no
//! longer exists are dropped), then `XACK`s and `XDEL`s the entries. Entries left
//! pending by a process that died (or a failed pass) are claimed after
//! `CLAIM_IDLE` with `XAUTOCLAIM`. So the logs hold only what is not derived yet.
//!
//! **Reading.** `events_for` reads the logs first, then the email's hash: an entry
//! deleted in between was derived before its deletion, so it is in the hash. Every
//! event committed before the call is in one or the other, from any process.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::{AsyncCommands as _, Value};
use tokio::sync::watch;

use super::conn::Conn;
use super::{keys, poisoned, Redis};
use crate::ids::{id_to_text, now_ms};
use crate::model::Event;
use crate::store::{Result, StoreError};

/// How long a batch append may take before the batch is spooled instead. Normal
/// appends take well under a millisecond; a paused or dead Redis must not make
/// pixels wait longer than this.
const COMMIT_TIMEOUT: Duration = Duration::from_millis(100);
/// How long one replay of a spooled batch may take.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(2);
/// Entries pending this long in another consumer are taken over.
const CLAIM_IDLE: Duration = Duration::from_secs(5);
/// Entries read per shard per deriver round.
const READ_COUNT: usize = 64;
/// TTL of a shard log, refreshed by every append: a backstop only (entries are
/// deleted once derived).
const LOG_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
/// A report waits (at most `CATCH_UP_WAIT`) for the deriver while the logs hold
/// more entries than this, to keep its log scan small.
const LOG_SCAN_LIMIT: usize = 256;
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);

/// Copies events into an email's hash. KEYS: the email record, its events hash.
/// ARGV: event id, event JSON, … Dropped if the email does not exist (expired or
/// erased): nothing would be left to attach them to.
/// Script: copy events (triples id, recipient, JSON) into the email's hash,
/// unless the email is gone or that recipient was erased.
const DERIVE: &str = r"
local at = redis.call('PEXPIRETIME', KEYS[1])
if at == -2 then return 0 end
for i = 1, #ARGV, 3 do
  if redis.call('SISMEMBER', KEYS[3], ARGV[i + 1]) == 0 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  end
end
if at > 0 and redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIREAT', KEYS[2], at) end
return 1";

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
        let packed = serde_json::to_vec(&events)?;
        let n = events.len() as u32;
        let _order = self.commit_order.lock().await;
        if !self.spooling.load(Ordering::Relaxed) {
            let shard = self.next_shard.fetch_add(1, Ordering::Relaxed) % keys::SHARDS;
            let mut hot = self.hot.clone();
            match tokio::time::timeout(COMMIT_TIMEOUT, append(&mut hot, shard, &packed)).await {
                Ok(Ok(())) => {
                    self.derive_wake.notify_one();
                    return Ok(());
                }
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
            self.spooling.store(true, Ordering::Relaxed);
        }
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

    /// Every event of one email, oldest first, including every event committed (by
    /// any process) before the call.
    pub async fn events_for(self: &Arc<Self>, email: u64) -> Result<Vec<Event>> {
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
        let mut c = self.conn.clone();
        loop {
            let lens = futures_util::future::try_join_all((0..keys::SHARDS).map(|s| {
                let mut c = c.clone();
                async move { c.xlen::<_, usize>(keys::log(s)).await }
            }))
            .await?;
            if lens.iter().sum::<usize>() <= LOG_SCAN_LIMIT || t0.elapsed() > CATCH_UP_WAIT {
                break;
            }
            self.derive_wake.notify_one();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The logs first, then the hash (see the module doc for why).
        let logs = futures_util::future::try_join_all((0..keys::SHARDS).map(|s| {
            let mut c = c.clone();
            async move {
                let v: Value = ::redis::cmd("XRANGE")
                    .arg(keys::log(s))
                    .arg("-")
                    .arg("+")
                    .query_async(&mut c)
                    .await?;
                Ok::<_, StoreError>(parse_entries(&v))
            }
        }))
        .await?;
        let (exists, hash, erased): (bool, HashMap<String, Vec<u8>>, Vec<u32>) = ::redis::pipe()
            .exists(keys::email(email))
            .hgetall(keys::events(email))
            .smembers(keys::erased(email))
            .query_async(&mut c)
            .await?;
        if !exists {
            return Ok(Vec::new());
        }
        let mut out = BTreeMap::new();
        for json in hash.values() {
            let e: Event = serde_json::from_slice(json)?;
            out.insert(e.seq, e);
        }
        for (_, packed) in logs.iter().flatten() {
            let batch: Vec<Event> = serde_json::from_slice(packed)?;
            for e in batch.into_iter().filter(|e| e.email == email) {
                out.insert(e.seq, e);
            }
        }
        out.retain(|_, e| !erased.contains(&e.recipient));
        Ok(out.into_values().collect())
    }

    /// Derives entries read from one shard log, then acknowledges and deletes them.
    async fn derive(&self, shard: usize, entries: &[Entry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut per_email: HashMap<u64, Vec<Event>> = HashMap::new();
        let mut newest = 0;
        let mut count = 0u64;
        for (id, packed) in entries {
            newest = newest.max(entry_ms(id));
            let batch: Vec<Event> = match serde_json::from_slice(packed) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, entry = %id, "a log entry is not a batch; it is skipped");
                    continue;
                }
            };
            count += batch.len() as u64;
            for e in batch {
                per_email.entry(e.email).or_default().push(e);
            }
        }
        futures_util::future::try_join_all(per_email.iter().map(|(email, evs)| {
            let mut c = self.conn.clone();
            async move { derive_into(&mut c, *email, evs).await }
        }))
        .await?;
        let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
        let key = keys::log(shard);
        let _: () = ::redis::pipe()
            .xack(&key, keys::GROUP, &ids)
            .ignore()
            .xdel(&key, &ids)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        self.stats
            .derived_events
            .fetch_add(count, Ordering::Relaxed);
        self.stats
            .derive_lag_ms
            .store(now.saturating_sub(newest), Ordering::Relaxed);
        Ok(())
    }

    /// Reads and derives new entries of one shard until none are left.
    async fn derive_new(&self, shard: usize, consumer: &str) -> Result<()> {
        let mut c = self.conn.clone();
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
            self.derive(shard, &entries).await?;
            if n < READ_COUNT {
                return Ok(());
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

/// Writes one email's events into its hash, by event id (the deriver's write).
pub async fn derive_into(c: &mut Conn, email: u64, events: &[Event]) -> Result<()> {
    for chunk in events.chunks(512) {
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(DERIVE)
            .arg(3)
            .arg(keys::email(email))
            .arg(keys::events(email))
            .arg(keys::erased(email));
        for e in chunk {
            cmd.arg(id_to_text(e.seq))
                .arg(e.recipient)
                .arg(serde_json::to_vec(e)?);
        }
        cmd.query_async::<i64>(c).await?;
    }
    Ok(())
}

/// Appends one packed batch to a shard log (one pipeline, one slot).
async fn append(c: &mut Conn, shard: usize, packed: &[u8]) -> Result<()> {
    let key = keys::log(shard);
    let _: () = ::redis::pipe()
        .cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg("b")
        .arg(packed)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(LOG_TTL_MS)
        .ignore()
        .query_async(c)
        .await?;
    Ok(())
}

/// The deriver task: runs after every local commit, every 100 ms for other
/// processes' commits, and claims stale entries every 2 s.
pub async fn derive_loop(me: Arc<Redis>, consumer: String, mut stop: watch::Receiver<bool>) {
    let mut last_claim = Instant::now();
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = me.derive_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => stopping = true,
        }
        let claim = stopping || last_claim.elapsed() >= Duration::from_secs(2);
        let rounds = (0..keys::SHARDS).map(|shard| {
            let me = &me;
            let consumer = consumer.as_str();
            async move {
                if claim {
                    me.claim_stale(shard, consumer).await?;
                }
                me.derive_new(shard, consumer).await
            }
        });
        for res in futures_util::future::join_all(rounds).await {
            if let Err(e) = res {
                me.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "deriving events failed; retrying later");
            }
        }
        if claim {
            last_claim = Instant::now();
        }
        if stopping {
            return;
        }
    }
}

/// The replayer task: sends spooled batches to Redis, oldest first.
pub async fn replay_loop(me: Arc<Redis>, mut stop: watch::Receiver<bool>) {
    let mut shard = 0usize;
    loop {
        tokio::select! {
            _ = me.replay_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => return,
        }
        while me.spooling.load(Ordering::Relaxed) {
            let spool = me.spool.clone();
            let next =
                tokio::task::spawn_blocking(move || spool.lock().map_err(|_| poisoned())?.peek())
                    .await;
            let next = match next {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read the Redis spool");
                    break;
                }
                Err(_) => break,
            };
            let Some((n, packed, at)) = next else {
                // Nothing left: go back to Redis, unless a batch was spooled
                // meanwhile (checked under the commit lock, so none can slip in).
                let _order = me.commit_order.lock().await;
                let empty = me.spool.lock().map(|s| s.is_empty()).unwrap_or(false);
                if empty {
                    me.spooling.store(false, Ordering::Relaxed);
                    tracing::info!(
                        "the Redis spool is replayed; recording straight to Redis again"
                    );
                }
                continue;
            };
            shard = (shard + 1) % keys::SHARDS;
            let mut c = me.hot.clone();
            match tokio::time::timeout(REPLAY_TIMEOUT, append(&mut c, shard, &packed)).await {
                Ok(Ok(())) => {
                    let spool = me.spool.clone();
                    let res = tokio::task::spawn_blocking(move || {
                        let mut s = spool.lock().map_err(|_| poisoned())?;
                        s.advance(n, at)?;
                        Ok::<_, StoreError>(s.events)
                    })
                    .await;
                    match res {
                        Ok(Ok(depth)) => me.stats.spool_events.store(depth, Ordering::Relaxed),
                        Ok(Err(e)) => tracing::error!(error = %e, "cannot update the Redis spool"),
                        Err(_) => {}
                    }
                    me.derive_wake.notify_one();
                }
                _ => {
                    // Still unavailable: wait for the next tick.
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
}
