//! The Redis store's job queues (see `store::queue`), on one node or Cluster.
//!
//! Every key of one queue shares the hash tag `{q:<name>}`, so each script below
//! touches one slot and runs atomically:
//! - `mb:{q:<name>}:due`: sorted set of job ids, scored by the due time, or the
//!   lease expiry while leased (due jobs are the members scored at or below now);
//! - `mb:{q:<name>}:jobs`: hash id -> sealed payload (the job exists iff it is here);
//! - `mb:{q:<name>}:at`: hash id -> due time (ms, decimal);
//! - `mb:{q:<name>}:att`: hash id -> attempts;
//! - `mb:{q:<name>}:lease`: hash id -> current lease token (decimal), while one
//!   was handed out and not released.
//!
//! Queue keys carry no TTL: a job lives until it is completed or cancelled.
//! Scores are doubles, so due times and lease expiries are clamped to 2^53 ms
//! (year 287396), which keeps them exact.

use ::redis::AsyncCommands as _;

use super::super::queue::{Cancelled, RawJob, RawNew, Rescheduled};
use super::super::{Result, StoreError};
use super::Redis;

/// Largest exact score.
const MAX_SCORE: u64 = (1 << 53) - 1;
/// One enqueue script carries at most this many jobs, or about this many bytes.
const ENQUEUE_JOBS: usize = 1000;
const ENQUEUE_BYTES: usize = 8 << 20;

/// The queue's keys, in the order every script takes them.
fn keys(q: &str) -> [String; 5] {
    ["due", "jobs", "at", "att", "lease"].map(|k| format!("mb:{{q:{q}}}:{k}"))
}

fn score(ms: u64) -> u64 {
    ms.min(MAX_SCORE)
}

/// Script: add the jobs (triples id, due, sealed payload) whose id is new.
/// Returns how many were added.
const ENQUEUE: &str = r"
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
    redis.call('HSET', KEYS[4], ARGV[i], 0)
    redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
    n = n + 1
  end
end
return n";

/// Script: lease up to ARGV[3] jobs scored at or below ARGV[1] until ARGV[2]
/// under token ARGV[4]. Returns quadruples id, due, attempts, sealed payload.
const LEASE: &str = r"
local ids = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local p = redis.call('HGET', KEYS[2], id)
  if p then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('HSET', KEYS[5], id, ARGV[4])
    local n = redis.call('HINCRBY', KEYS[4], id, 1)
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGET', KEYS[3], id) or '0'
    out[#out + 1] = tostring(n)
    out[#out + 1] = p
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out";

/// Prefix of the scripts that act only while ARGV[2] is the job's lease token.
const IF_HELD: &str = r"
if redis.call('HGET', KEYS[5], ARGV[1]) ~= ARGV[2] then return 0 end
";

/// Script (after `IF_HELD`): remove the job.
const COMPLETE: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
for i = 2, 5 do redis.call('HDEL', KEYS[i], ARGV[1]) end
return 1";

/// Script (after `IF_HELD`): release the job, due at ARGV[3] (score ARGV[4]).
const RETRY: &str = r"
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[5], ARGV[1])
return 1";

/// Script (after `IF_HELD`): hold the job until ARGV[3].
const EXTEND: &str = r"
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1";

/// Prefix of `RESCHEDULE` and `CANCEL`: 0 if the job is missing, 2 if it is
/// leased at ARGV[2] (now).
const IF_FREE: &str = r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[5], ARGV[1]) == 1 then
  local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if s and tonumber(s) > tonumber(ARGV[2]) then return 2 end
end
";

/// Script (after `IF_FREE`): due at ARGV[3] (score ARGV[4]); drops an expired lease.
const RESCHEDULE: &str = r"
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[5], ARGV[1])
return 1";

/// Script: the job as {payload, due, attempts, lease token or '', score}, or nil.
const GET: &str = r"
local p = redis.call('HGET', KEYS[2], ARGV[1])
if not p then return false end
return {p, redis.call('HGET', KEYS[3], ARGV[1]) or '0', redis.call('HGET', KEYS[4], ARGV[1]) or '0',
  redis.call('HGET', KEYS[5], ARGV[1]) or '', redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0'}";

fn bad(what: &str) -> StoreError {
    StoreError::Backend(format!("redis: malformed queue {what}"))
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T> {
    s.parse().map_err(|_| bad(what))
}

impl Redis {
    /// Runs `script` over the queue's keys with `args`.
    async fn queue_script<T: ::redis::FromRedisValue>(
        &self,
        q: &str,
        script: &str,
        args: &[&[u8]],
    ) -> Result<T> {
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(script).arg(5).arg(&keys(q)[..]);
        for a in args {
            cmd.arg(*a);
        }
        Ok(cmd.query_async(&mut self.c()).await?)
    }

    pub(crate) async fn queue_enqueue(&self, q: &str, jobs: &[RawNew]) -> Result<usize> {
        let mut added = 0;
        let mut start = 0;
        while start < jobs.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < jobs.len()
                && end - start < ENQUEUE_JOBS
                && (bytes < ENQUEUE_BYTES || end == start)
            {
                bytes += jobs[end].sealed.len() + jobs[end].id.len();
                end += 1;
            }
            let mut cmd = ::redis::cmd("EVAL");
            cmd.arg(ENQUEUE).arg(5).arg(&keys(q)[..]);
            for j in &jobs[start..end] {
                cmd.arg(&j.id).arg(score(j.due_ms)).arg(&j.sealed);
            }
            let n: usize = cmd.query_async(&mut self.c()).await?;
            added += n;
            start = end;
        }
        Ok(added)
    }

    pub(crate) async fn queue_lease(
        &self,
        q: &str,
        now_ms: u64,
        until_ms: u64,
        max: usize,
        token: u64,
    ) -> Result<Vec<RawJob>> {
        let (now, until, max, tok) = (
            score(now_ms).to_string(),
            score(until_ms).to_string(),
            max.to_string(),
            token.to_string(),
        );
        let flat: Vec<String> = self
            .queue_script(
                q,
                LEASE,
                &[
                    now.as_bytes(),
                    until.as_bytes(),
                    max.as_bytes(),
                    tok.as_bytes(),
                ],
            )
            .await?;
        if !flat.len().is_multiple_of(4) {
            return Err(bad("lease reply"));
        }
        flat.chunks_exact(4)
            .map(|c| {
                Ok(RawJob {
                    id: c[0].clone(),
                    due_ms: num(&c[1], "due time")?,
                    attempts: num(&c[2], "attempts")?,
                    lease: token,
                    until_ms: score(until_ms),
                    sealed: c[3].clone(),
                })
            })
            .collect()
    }

    async fn if_held(
        &self,
        q: &str,
        body: &str,
        id: &str,
        lease: u64,
        more: &[&[u8]],
    ) -> Result<bool> {
        let tok = lease.to_string();
        let mut args: Vec<&[u8]> = vec![id.as_bytes(), tok.as_bytes()];
        args.extend_from_slice(more);
        let done: i64 = self
            .queue_script(q, &format!("{IF_HELD}{body}"), &args)
            .await?;
        Ok(done == 1)
    }

    pub(crate) async fn queue_complete(&self, q: &str, id: &str, lease: u64) -> Result<bool> {
        self.if_held(q, COMPLETE, id, lease, &[]).await
    }

    pub(crate) async fn queue_retry(
        &self,
        q: &str,
        id: &str,
        lease: u64,
        due_ms: u64,
    ) -> Result<bool> {
        let (due, s) = (due_ms.to_string(), score(due_ms).to_string());
        self.if_held(q, RETRY, id, lease, &[due.as_bytes(), s.as_bytes()])
            .await
    }

    pub(crate) async fn queue_extend(
        &self,
        q: &str,
        id: &str,
        lease: u64,
        until_ms: u64,
    ) -> Result<bool> {
        let s = score(until_ms).to_string();
        self.if_held(q, EXTEND, id, lease, &[s.as_bytes()]).await
    }

    pub(crate) async fn queue_reschedule(
        &self,
        q: &str,
        id: &str,
        due_ms: u64,
        now_ms: u64,
    ) -> Result<Rescheduled> {
        let (now, due, s) = (
            score(now_ms).to_string(),
            due_ms.to_string(),
            score(due_ms).to_string(),
        );
        let r: i64 = self
            .queue_script(
                q,
                &format!("{IF_FREE}{RESCHEDULE}"),
                &[id.as_bytes(), now.as_bytes(), due.as_bytes(), s.as_bytes()],
            )
            .await?;
        Ok(match r {
            1 => Rescheduled::Done,
            2 => Rescheduled::Leased,
            _ => Rescheduled::Missing,
        })
    }

    pub(crate) async fn queue_cancel(&self, q: &str, id: &str, now_ms: u64) -> Result<Cancelled> {
        let now = score(now_ms).to_string();
        let r: i64 = self
            .queue_script(
                q,
                &format!("{IF_FREE}{COMPLETE}"),
                &[id.as_bytes(), now.as_bytes()],
            )
            .await?;
        Ok(match r {
            1 => Cancelled::Removed,
            2 => Cancelled::Leased,
            _ => Cancelled::Missing,
        })
    }

    pub(crate) async fn queue_get(&self, q: &str, id: &str) -> Result<Option<RawJob>> {
        let got: Option<Vec<String>> = self.queue_script(q, GET, &[id.as_bytes()]).await?;
        let Some(f) = got else { return Ok(None) };
        let [sealed, due, att, lease, s] = <[String; 5]>::try_from(f).map_err(|_| bad("job"))?;
        let lease: u64 = if lease.is_empty() {
            0
        } else {
            num(&lease, "lease")?
        };
        Ok(Some(RawJob {
            id: id.to_owned(),
            due_ms: num(&due, "due time")?,
            attempts: num(&att, "attempts")?,
            lease,
            until_ms: if lease == 0 {
                0
            } else {
                num::<f64>(&s, "score")? as u64
            },
            sealed,
        }))
    }

    pub(crate) async fn queue_next_due(&self, q: &str) -> Result<Option<u64>> {
        let [due, ..] = keys(q);
        let first: Vec<(String, f64)> = self.c().zrange_withscores(&due, 0, 0).await?;
        Ok(first.first().map(|(_, s)| *s as u64))
    }

    pub(crate) async fn queue_len(&self, q: &str) -> Result<u64> {
        let [_, jobs, ..] = keys(q);
        Ok(self.c().hlen(&jobs).await?)
    }

    /// Every job of a queue, leased or not (for `migrate`).
    pub(crate) async fn queue_all(&self, q: &str) -> Result<Vec<RawJob>> {
        use std::collections::HashMap;
        let [_, jobs, at, att, lease] = keys(q);
        let mut c = self.c();
        type Field = HashMap<String, String>;
        let (payloads, due, attempts, leases): (Field, Field, Field, Field) = ::redis::pipe()
            .hgetall(&jobs)
            .hgetall(&at)
            .hgetall(&att)
            .hgetall(&lease)
            .query_async(&mut c)
            .await?;
        let mut out = Vec::with_capacity(payloads.len());
        for (id, sealed) in payloads {
            let get = |m: &HashMap<String, String>, what| match m.get(&id) {
                Some(v) => num::<u64>(v, what),
                None => Ok(0),
            };
            out.push(RawJob {
                due_ms: get(&due, "due time")?,
                attempts: get(&attempts, "attempts")? as u32,
                lease: get(&leases, "lease")?,
                until_ms: 0,
                id,
                sealed,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Writes a job with its due time, attempts and payload, not leased,
    /// replacing one with its id (for `migrate`). Idempotent.
    pub(crate) async fn queue_import(&self, q: &str, j: &RawJob) -> Result<()> {
        const PUT: &str = r"
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1";
        let due = score(j.due_ms).to_string();
        let att = j.attempts.to_string();
        let _: i64 = self
            .queue_script(
                q,
                PUT,
                &[
                    j.id.as_bytes(),
                    j.sealed.as_bytes(),
                    due.as_bytes(),
                    att.as_bytes(),
                ],
            )
            .await?;
        Ok(())
    }
}
