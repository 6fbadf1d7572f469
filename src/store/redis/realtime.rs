//! The Redis store's real-time keys (see `store::realtime`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `mb:{wh}:hooks` | hash | webhook id → JSON (url, secret sealed) |
//! | `mb:{wh}:failing`, `mb:{wh}:disabled` | hash | webhook id → since / when (ms) |
//! | `mb:{wh}:log:<id>` | list | sealed attempts, newest first, trimmed to `ATTEMPTS_KEPT` |
//! | `mb:{e:<id>}:first` | hash | `<recipient>:<kind>` → 1, expiring with the email |
//! | `mb:{rt}:feed` | stream | one entry per derived batch (field `b`, sealed), `MAXLEN ~` and `MINID ~` trimmed; expires a window after the last append |
//!
//! Webhook keys share the tag `{wh}` so logging an attempt and updating the
//! health is one script; first marks are one pipeline per email (its tag).

use std::collections::{HashMap, HashSet};

use ::redis::Value;

use super::super::realtime::{
    FeedPos, FirstMark, Health, ATTEMPTS_KEPT, FEED_MAX_ENTRIES, FEED_WINDOW_MS,
};
use super::super::{Result, StoreError};
use super::events::parse_entries;
use super::Redis;

const HOOKS: &str = "mb:{wh}:hooks";
const FAILING: &str = "mb:{wh}:failing";
const DISABLED: &str = "mb:{wh}:disabled";
const FEED: &str = "mb:{rt}:feed";
/// Sorted set: owner, scored by when a stream of theirs was last seen open.
const LISTENERS: &str = "mb:{rt}:listeners";

fn log_key(id: u64) -> String {
    format!("mb:{{wh}}:log:{id:016x}")
}

fn first_key(email: u64) -> String {
    format!("mb:{{e:{email:016x}}}:first")
}

/// Script: log ARGV[2] for webhook ARGV[1] and update its health (ARGV[3] "1"
/// on success; now ARGV[4]; disable after ARGV[5] ms; keep ARGV[6] entries).
/// Returns {failing since or 0, disabled at or 0}.
const ATTEMPT: &str = r"
redis.call('LPUSH', KEYS[1], ARGV[2])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[6]) - 1)
if ARGV[3] == '1' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  return {0, 0}
end
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[4])
local since = tonumber(redis.call('HGET', KEYS[2], ARGV[1]))
local dis = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if dis == 0 and tonumber(ARGV[4]) - since >= tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
  dis = tonumber(ARGV[4])
end
return {since, dis}";

fn hex(id: u64) -> String {
    format!("{id:016x}")
}

fn opt(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

fn entry_pos(id: &str) -> Result<FeedPos> {
    FeedPos::parse(id).ok_or_else(|| StoreError::Backend("redis: malformed feed id".into()))
}

impl Redis {
    pub(crate) async fn put_webhook(&self, id: u64, json: &[u8]) -> Result<()> {
        let mut c = self.c();
        let _: () = ::redis::cmd("HSET")
            .arg(HOOKS)
            .arg(hex(id))
            .arg(json)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    pub(crate) async fn webhooks(&self) -> Result<Vec<(Vec<u8>, Health)>> {
        let mut c = self.c();
        type Times = HashMap<String, u64>;
        let (hooks, failing, disabled): (HashMap<String, Vec<u8>>, Times, Times) = ::redis::pipe()
            .hgetall(HOOKS)
            .hgetall(FAILING)
            .hgetall(DISABLED)
            .query_async(&mut c)
            .await?;
        Ok(hooks
            .into_iter()
            .map(|(id, json)| {
                let health = Health {
                    failing_since_ms: failing.get(&id).copied().and_then(opt),
                    disabled_ms: disabled.get(&id).copied().and_then(opt),
                };
                (json, health)
            })
            .collect())
    }

    pub(crate) async fn delete_webhook(&self, id: u64) -> Result<bool> {
        let mut c = self.c();
        let (n, _, _, _): (u64, u64, u64, u64) = ::redis::pipe()
            .hdel(HOOKS, hex(id))
            .hdel(FAILING, hex(id))
            .hdel(DISABLED, hex(id))
            .del(log_key(id))
            .query_async(&mut c)
            .await?;
        Ok(n > 0)
    }

    pub(crate) async fn webhook_attempt(
        &self,
        id: u64,
        sealed: &str,
        ok: bool,
        now_ms: u64,
        disable_after_ms: u64,
    ) -> Result<Health> {
        let mut c = self.c();
        let (since, dis): (u64, u64) = ::redis::cmd("EVAL")
            .arg(ATTEMPT)
            .arg(3)
            .arg(log_key(id))
            .arg(FAILING)
            .arg(DISABLED)
            .arg(hex(id))
            .arg(sealed)
            .arg(if ok { "1" } else { "0" })
            .arg(now_ms)
            .arg(disable_after_ms)
            .arg(ATTEMPTS_KEPT)
            .query_async(&mut c)
            .await?;
        Ok(Health {
            failing_since_ms: opt(since),
            disabled_ms: opt(dis),
        })
    }

    pub(crate) async fn webhook_attempts(&self, id: u64) -> Result<Vec<String>> {
        let mut c = self.c();
        let list: Vec<String> = ::redis::cmd("LRANGE")
            .arg(log_key(id))
            .arg(0)
            .arg(-1)
            .query_async(&mut c)
            .await?;
        Ok(list)
    }

    pub(crate) async fn mark_first(&self, marks: &[FirstMark]) -> Result<Vec<bool>> {
        // One pipeline per email (one hash tag each), run concurrently.
        let mut by_email: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, m) in marks.iter().enumerate() {
            by_email.entry(m.email).or_default().push(i);
        }
        let results =
            futures_util::future::try_join_all(by_email.into_iter().map(|(email, idx)| {
                let mut c = self.c();
                async move {
                    let key = first_key(email);
                    let mut p = ::redis::pipe();
                    let mut expires = 0;
                    for &i in &idx {
                        let m = &marks[i];
                        expires = expires.max(m.expires_ms);
                        p.cmd("HSETNX")
                            .arg(&key)
                            .arg(format!("{}:{}", m.recipient, m.kind))
                            .arg(1);
                    }
                    p.cmd("PEXPIREAT").arg(&key).arg(expires.max(1)).ignore();
                    let set: Vec<u8> = p.query_async(&mut c).await?;
                    Ok::<_, StoreError>(idx.into_iter().zip(set).collect::<Vec<_>>())
                }
            }))
            .await?;
        let mut out = vec![false; marks.len()];
        for (i, set) in results.into_iter().flatten() {
            out[i] = set == 1;
        }
        Ok(out)
    }

    pub(crate) async fn feed_append(&self, sealed: &str, cutoff_ms: u64) -> Result<FeedPos> {
        let mut c = self.c();
        let (id,): (String,) = ::redis::pipe()
            .cmd("XADD")
            .arg(FEED)
            .arg("MAXLEN")
            .arg("~")
            .arg(FEED_MAX_ENTRIES)
            .arg("*")
            .arg("b")
            .arg(sealed)
            .cmd("XTRIM")
            .arg(FEED)
            .arg("MINID")
            .arg("~")
            .arg(cutoff_ms)
            .ignore()
            // Interaction data: the stream itself goes once nothing was
            // appended for a window.
            .cmd("PEXPIRE")
            .arg(FEED)
            .arg(FEED_WINDOW_MS)
            .ignore()
            .query_async(&mut c)
            .await?;
        entry_pos(&id)
    }

    pub(crate) async fn feed_read(
        &self,
        from: FeedPos,
        max: usize,
    ) -> Result<Vec<(FeedPos, String)>> {
        let mut c = self.c();
        let v: Value = ::redis::cmd("XRANGE")
            .arg(FEED)
            .arg(from.to_string())
            .arg("+")
            .arg("COUNT")
            .arg(max.max(1))
            .query_async(&mut c)
            .await?;
        parse_entries(&v)
            .into_iter()
            .map(|(id, body)| {
                let text = String::from_utf8(body)
                    .map_err(|_| StoreError::Backend("redis: feed entry is not text".into()))?;
                Ok((entry_pos(&id)?, text))
            })
            .collect()
    }

    /// Deletes entries (a stream entry cannot be rewritten in place).
    pub(crate) async fn feed_delete(&self, entries: &[(FeedPos, String)]) -> Result<()> {
        let mut c = self.c();
        for chunk in entries.chunks(500) {
            let mut cmd = ::redis::cmd("XDEL");
            cmd.arg(FEED);
            for (pos, _) in chunk {
                cmd.arg(pos.to_string());
            }
            let _: i64 = cmd.query_async(&mut c).await?;
        }
        Ok(())
    }

    pub(crate) async fn listeners_seen(
        &self,
        owners: &[u64],
        now_ms: u64,
        cutoff_ms: u64,
    ) -> Result<()> {
        let mut c = self.c();
        let mut p = ::redis::pipe();
        let add = p.cmd("ZADD").arg(LISTENERS);
        for o in owners {
            add.arg(now_ms).arg(o);
        }
        add.ignore();
        p.cmd("ZREMRANGEBYSCORE")
            .arg(LISTENERS)
            .arg("-inf")
            .arg(format!("({cutoff_ms}"))
            .ignore()
            .cmd("PEXPIRE")
            .arg(LISTENERS)
            .arg(FEED_WINDOW_MS)
            .ignore();
        let () = p.query_async(&mut c).await?;
        Ok(())
    }

    pub(crate) async fn listeners(&self, cutoff_ms: u64) -> Result<HashSet<u64>> {
        let mut c = self.c();
        let owners: Vec<u64> = ::redis::cmd("ZRANGEBYSCORE")
            .arg(LISTENERS)
            .arg(cutoff_ms)
            .arg("+inf")
            .query_async(&mut c)
            .await?;
        Ok(owners.into_iter().collect())
    }

    pub(crate) async fn feed_end(&self) -> Result<FeedPos> {
        let mut c = self.c();
        let v: Value = ::redis::cmd("XREVRANGE")
            .arg(FEED)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut c)
            .await?;
        match parse_entries(&v).first() {
            Some((id, _)) => entry_pos(id),
            None => Ok(FeedPos::default()),
        }
    }

    /// The first marks of one email: (recipient, kind) (for `migrate`).
    pub(crate) async fn first_marks(&self, email: u64) -> Result<Vec<(u32, u8)>> {
        let mut c = self.c();
        let all: HashMap<String, String> = ::redis::cmd("HGETALL")
            .arg(first_key(email))
            .query_async(&mut c)
            .await?;
        Ok(all
            .keys()
            .filter_map(|f| {
                let (r, k) = f.split_once(':')?;
                Some((r.parse().ok()?, k.parse().ok()?))
            })
            .collect())
    }

    /// Writes a webhook with its health and its attempt log (sealed, newest
    /// first), replacing what the store held for its id, in one script (for
    /// `migrate`).
    pub(crate) async fn import_webhook(
        &self,
        id: u64,
        json: &[u8],
        health: Health,
        attempts: &[String],
    ) -> Result<()> {
        const PUT: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '0' then redis.call('HDEL', KEYS[2], ARGV[1]) else redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) end
if ARGV[4] == '0' then redis.call('HDEL', KEYS[3], ARGV[1]) else redis.call('HSET', KEYS[3], ARGV[1], ARGV[4]) end
redis.call('DEL', KEYS[4])
for i = 5, #ARGV do redis.call('RPUSH', KEYS[4], ARGV[i]) end
return 1";
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(PUT)
            .arg(4)
            .arg(HOOKS)
            .arg(FAILING)
            .arg(DISABLED)
            .arg(log_key(id))
            .arg(hex(id))
            .arg(json)
            .arg(health.failing_since_ms.unwrap_or(0))
            .arg(health.disabled_ms.unwrap_or(0));
        for a in attempts {
            cmd.arg(a);
        }
        let _: i64 = cmd.query_async(&mut self.c()).await?;
        Ok(())
    }
}
