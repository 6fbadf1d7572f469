//! Durable named job queues (the outbox, webhook deliveries, timers), and the
//! `Store` methods that keep them.
//!
//! A queue holds jobs: a caller-chosen id (unique per queue, the idempotency key),
//! a due time, an attempt count and an opaque payload. Workers *lease* due jobs:
//! a lease marks the job taken until a time, under a fresh token, and counts an
//! attempt. The holder then completes it (removed), retries it (released with a
//! new due time) or extends the lease; every one of these needs the token, so a
//! worker whose lease expired and was taken by another cannot touch the job any
//! more. A job whose holder died (a crash, `kill -9`) is leased again once the
//! lease expires, with one more attempt: delivery is at least once, and a handler
//! makes its side effect idempotent where it matters.
//!
//! Both backends keep, per queue, one index ordered by "due time, or lease expiry
//! while leased": the due jobs are exactly the entries at or below `now`, whether
//! never leased or leased by a holder that is gone.
//!
//! Sealing, as everywhere in `Store`: the payload is sealed here before a backend
//! sees it and opened on the way out. Queue names and job ids are stored in clear:
//! build ids from record ids (e.g. `"<email id>:<recipient>"`), never from
//! addresses or other personal data.
//!
//! Times are milliseconds passed in by the caller (`jobs` has the clock), so the
//! backends and the tests agree on "now".

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{de::DeserializeOwned, Serialize};

use super::{Backend, Result, Store, StoreError};
use crate::seal::Sealer;

/// Longest job id, in bytes.
pub const MAX_ID: usize = 100;
/// Longest queue name, in bytes.
pub const MAX_QUEUE: usize = 64;

/// A job to enqueue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    /// Unique per queue; enqueueing an id that is already queued leaves the queued
    /// job as it is. At most `MAX_ID` bytes; stored in clear.
    pub id: String,
    /// Not leased before this time (ms since the epoch).
    pub due_ms: u64,
    /// Sealed at rest.
    pub payload: Vec<u8>,
}

impl NewJob {
    /// A job whose payload is `value` as JSON.
    pub fn json<T: Serialize>(id: impl Into<String>, due_ms: u64, value: &T) -> Result<NewJob> {
        Ok(NewJob {
            id: id.into(),
            due_ms,
            payload: serde_json::to_vec(value)?,
        })
    }
}

/// A job taken by `lease`: the holder must `complete`, `retry` or `extend` it
/// with `lease` before the lease expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leased {
    pub id: String,
    /// The due time the job had when it was leased.
    pub due_ms: u64,
    /// Leases so far, this one included (1 on the first run).
    pub attempts: u32,
    pub payload: Vec<u8>,
    /// The lease token.
    pub lease: u64,
}

impl Leased {
    /// The payload, read as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.payload)?)
    }
}

/// A queued job as `get` sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub due_ms: u64,
    pub attempts: u32,
    pub payload: Vec<u8>,
    /// Until when a worker holds it, if one does at the time asked about.
    pub leased_until: Option<u64>,
}

/// What `reschedule` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rescheduled {
    /// The job now has the new due time.
    Done,
    /// A worker holds it (it is being run): not changed.
    Leased,
    /// No such job (never queued, completed, or cancelled).
    Missing,
}

/// What `cancel` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cancelled {
    Removed,
    /// A worker holds it (it is being run): not removed.
    Leased,
    Missing,
}

/// A job as a backend keeps it: the payload sealed (text).
#[derive(Clone, Debug)]
pub(crate) struct RawJob {
    pub id: String,
    pub due_ms: u64,
    pub attempts: u32,
    /// The current lease token; 0 when not leased.
    pub lease: u64,
    /// Until when the lease holds (meaningful when `lease != 0`).
    pub until_ms: u64,
    pub sealed: String,
}

/// A job to enqueue, as a backend gets it.
#[derive(Clone, Debug)]
pub(crate) struct RawNew {
    pub id: String,
    pub due_ms: u64,
    pub sealed: String,
}

impl Store {
    /// Enqueues `jobs` in one transaction (embedded) or one script per thousand
    /// jobs (Redis; each job's write is atomic, and a retried call is harmless).
    /// Jobs whose id is already queued are left as they are. Returns how many
    /// were new.
    pub async fn enqueue(&self, queue: &str, jobs: Vec<NewJob>) -> Result<usize> {
        check_queue(queue)?;
        let k = self.sealer();
        let raw = jobs
            .into_iter()
            .map(|j| {
                check_id(&j.id)?;
                Ok(RawNew {
                    sealed: seal_payload(&k, &j.payload),
                    id: j.id,
                    due_ms: j.due_ms,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if raw.is_empty() {
            return Ok(0);
        }
        let q = queue.to_owned();
        on_backend!(self, |s| s.queue_enqueue(&q, &raw), |r| r
            .queue_enqueue(&q, &raw)
            .await)
    }

    /// Atomically takes up to `max` due jobs (due at or before `now_ms` and not
    /// leased, or leased by a lease that expired), holds them until
    /// `now_ms + lease_ms` under a fresh token and counts an attempt for each.
    /// Two callers (processes) never get the same job while its lease holds.
    ///
    /// A job whose payload cannot be opened (sealed under a data key no longer
    /// in the ring) is logged and left leased: it is not handed out, and comes
    /// back when the lease expires.
    pub async fn lease(
        &self,
        queue: &str,
        now_ms: u64,
        lease_ms: u64,
        max: usize,
    ) -> Result<Vec<Leased>> {
        check_queue(queue)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let token = fresh_token();
        let until = now_ms.saturating_add(lease_ms.max(1));
        let q = queue.to_owned();
        let raw = on_backend!(
            self,
            |s| s.queue_lease(&q, now_ms, until, max, token),
            |r| r.queue_lease(&q, now_ms, until, max, token).await
        )?;
        let k = self.sealer();
        let mut out = Vec::with_capacity(raw.len());
        for j in raw {
            match open_payload(&k, &j.sealed) {
                Ok(payload) => out.push(Leased {
                    id: j.id,
                    due_ms: j.due_ms,
                    attempts: j.attempts,
                    payload,
                    lease: token,
                }),
                Err(e) => tracing::error!(queue, job = %j.id, error = %e,
                    "a queued job's payload cannot be opened; leaving it leased"),
            }
        }
        Ok(out)
    }

    /// Removes a leased job. Returns false (and changes nothing) if `lease` is
    /// no longer the job's lease (it expired and another worker took it) or the
    /// job is gone.
    pub async fn complete(&self, queue: &str, id: &str, lease: u64) -> Result<bool> {
        check_queue(queue)?;
        let (q, id) = (queue.to_owned(), id.to_owned());
        on_backend!(self, |s| s.queue_complete(&q, &id, lease), |r| r
            .queue_complete(&q, &id, lease)
            .await)
    }

    /// Releases a leased job with a new due time (its attempts are kept). Returns
    /// false (and changes nothing) if `lease` is no longer held.
    pub async fn retry(&self, queue: &str, id: &str, lease: u64, due_ms: u64) -> Result<bool> {
        check_queue(queue)?;
        let (q, id) = (queue.to_owned(), id.to_owned());
        on_backend!(self, |s| s.queue_retry(&q, &id, lease, due_ms), |r| r
            .queue_retry(&q, &id, lease, due_ms)
            .await)
    }

    /// Holds a leased job until `until_ms`. Returns false (and changes nothing) if
    /// `lease` is no longer held.
    pub async fn extend(&self, queue: &str, id: &str, lease: u64, until_ms: u64) -> Result<bool> {
        check_queue(queue)?;
        let (q, id) = (queue.to_owned(), id.to_owned());
        on_backend!(self, |s| s.queue_extend(&q, &id, lease, until_ms), |r| r
            .queue_extend(&q, &id, lease, until_ms)
            .await)
    }

    /// Gives a job that no worker holds at `now_ms` a new due time. A lease that
    /// expired is dropped (its holder can no longer complete the job).
    pub async fn reschedule(
        &self,
        queue: &str,
        id: &str,
        due_ms: u64,
        now_ms: u64,
    ) -> Result<Rescheduled> {
        check_queue(queue)?;
        let (q, id) = (queue.to_owned(), id.to_owned());
        on_backend!(self, |s| s.queue_reschedule(&q, &id, due_ms, now_ms), |r| r
            .queue_reschedule(&q, &id, due_ms, now_ms)
            .await)
    }

    /// Removes a job that no worker holds at `now_ms` (`Leased` is what an API
    /// answers `409 already_sending` with).
    pub async fn cancel(&self, queue: &str, id: &str, now_ms: u64) -> Result<Cancelled> {
        check_queue(queue)?;
        let (q, id) = (queue.to_owned(), id.to_owned());
        on_backend!(self, |s| s.queue_cancel(&q, &id, now_ms), |r| r
            .queue_cancel(&q, &id, now_ms)
            .await)
    }

    /// One queued job, as it is at `now_ms` (for `leased_until`).
    pub async fn get_job(&self, queue: &str, id: &str, now_ms: u64) -> Result<Option<Job>> {
        check_queue(queue)?;
        let (q, id) = (queue.to_owned(), id.to_owned());
        let raw = on_backend!(self, |s| s.queue_get(&q, &id), |r| r
            .queue_get(&q, &id)
            .await)?;
        let k = self.sealer();
        raw.map(|j| {
            let payload = open_payload(&k, &j.sealed)?;
            Ok(Job {
                leased_until: (j.lease != 0 && j.until_ms > now_ms).then_some(j.until_ms),
                id: j.id,
                due_ms: j.due_ms,
                attempts: j.attempts,
                payload,
            })
        })
        .transpose()
    }

    /// The earliest time at which a job of the queue can be leased: the earliest
    /// due time or lease expiry. `None` when the queue is empty.
    pub async fn next_due(&self, queue: &str) -> Result<Option<u64>> {
        check_queue(queue)?;
        let q = queue.to_owned();
        on_backend!(self, |s| s.queue_next_due(&q), |r| r
            .queue_next_due(&q)
            .await)
    }

    /// How many jobs the queue holds, leased or not.
    pub async fn queue_len(&self, queue: &str) -> Result<u64> {
        check_queue(queue)?;
        let q = queue.to_owned();
        on_backend!(self, |s| s.queue_len(&q), |r| r.queue_len(&q).await)
    }
}

/// A random nonzero token (0 means "not leased" in the backends). Kept below
/// 2^53 so Lua, whose numbers are doubles, could hold it exactly.
fn fresh_token() -> u64 {
    (crate::ids::random_id() >> 11).max(1)
}

/// Queue names go into Redis hash tags and redb keys: short, and no braces.
fn check_queue(queue: &str) -> Result<()> {
    let ok = !queue.is_empty()
        && queue.len() <= MAX_QUEUE
        && queue
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "invalid queue name {queue:?}: 1 to {MAX_QUEUE} of [A-Za-z0-9._-]"
        )))
    }
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID {
        return Err(StoreError::Backend(format!(
            "invalid job id: 1 to {MAX_ID} bytes, got {}",
            id.len()
        )));
    }
    Ok(())
}

/// Seals bytes: UTF-8 text as `t` + text, anything else as `b` + base64, so JSON
/// payloads are not base64-encoded twice. The tag also means that even an empty
/// payload is sealed (the sealer leaves "" as it is).
fn seal_payload(k: &Sealer, payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(text) => k.seal(&format!("t{text}")),
        Err(_) => k.seal(&format!("b{}", URL_SAFE_NO_PAD.encode(payload))),
    }
}

fn open_payload(k: &Sealer, sealed: &str) -> Result<Vec<u8>> {
    let bad = |e: String| StoreError::Backend(format!("queued payload: {e}"));
    let text = k.open(sealed).map_err(|e| bad(e.to_string()))?;
    match text.split_at_checked(1) {
        Some(("t", rest)) => Ok(rest.as_bytes().to_vec()),
        Some(("b", rest)) => URL_SAFE_NO_PAD.decode(rest).map_err(|e| bad(e.to_string())),
        _ => Err(bad("unknown encoding".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_sealed() {
        let k = Sealer::new(&[(1, vec![3; 32])], 1, b"l").unwrap();
        for p in [
            b"".to_vec(),
            b"{\"to\":\"bob@example.test\"}".to_vec(),
            vec![0xff, 0, 0xfe],
        ] {
            let s = seal_payload(&k, &p);
            assert!(s.starts_with("s1."), "{s}");
            assert!(!s.contains("bob@"));
            assert_eq!(open_payload(&k, &s).unwrap(), p);
        }
        assert!(open_payload(&k, "plain").is_err());
    }

    #[test]
    fn names_and_ids_are_checked() {
        assert!(check_queue("outbox").is_ok());
        assert!(check_queue("web.hooks-2_x").is_ok());
        for bad in ["", "a{b}", "a b", &"q".repeat(MAX_QUEUE + 1)] {
            assert!(check_queue(bad).is_err(), "{bad:?}");
        }
        assert!(check_id("1:2").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id(&"i".repeat(MAX_ID + 1)).is_err());
        assert!(fresh_token() > 0 && fresh_token() < 1 << 53);
    }
}
