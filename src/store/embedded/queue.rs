//! The embedded store's job queues (see `store::queue`): two redb tables.
//!
//! `queue_jobs` maps (queue, id) to the job (JSON: due time, attempts, lease
//! token and expiry, sealed payload); `queue_due` indexes (queue, due time or
//! lease expiry while leased, id). Leasing reads the index up to `now` and
//! rewrites those entries, all in one write transaction: redb has one writer at
//! a time, so two leases can never take the same job. Every write is an ordinary
//! durable transaction (queues are not on the pixel's path), so an acknowledged
//! enqueue, lease or completion survives a crash.

use redb::{ReadableTable, TableDefinition, TableError, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::super::queue::{Cancelled, RawJob, RawNew, Rescheduled};
use super::super::Result;
use super::Embedded;

/// (queue, job id) -> JSON `Stored`.
const JOBS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("queue_jobs");
/// (queue, due time or lease expiry, job id).
const DUE: TableDefinition<(&str, u64, &str), ()> = TableDefinition::new("queue_due");

#[derive(Serialize, Deserialize)]
struct Stored {
    due: u64,
    att: u32,
    /// 0 when not leased.
    lease: u64,
    until: u64,
    p: String,
}

impl Stored {
    /// Its key in the due index.
    fn score(&self) -> u64 {
        if self.lease != 0 {
            self.until
        } else {
            self.due
        }
    }

    fn raw(self, id: &str) -> RawJob {
        RawJob {
            id: id.to_owned(),
            due_ms: self.due,
            attempts: self.att,
            lease: self.lease,
            until_ms: self.until,
            sealed: self.p,
        }
    }

    fn leased_at(&self, now_ms: u64) -> bool {
        self.lease != 0 && self.until > now_ms
    }
}

fn load(tx: &WriteTransaction, q: &str, id: &str) -> Result<Option<Stored>> {
    let t = tx.open_table(JOBS)?;
    let got = t.get((q, id))?;
    Ok(match got {
        Some(g) => Some(serde_json::from_slice(g.value())?),
        None => None,
    })
}

/// Writes `new` (replacing `old`, whose index entry goes).
fn store(
    tx: &WriteTransaction,
    q: &str,
    id: &str,
    old: Option<&Stored>,
    new: &Stored,
) -> Result<()> {
    let mut due = tx.open_table(DUE)?;
    if let Some(old) = old {
        due.remove((q, old.score(), id))?;
    }
    due.insert((q, new.score(), id), ())?;
    tx.open_table(JOBS)?
        .insert((q, id), serde_json::to_vec(new)?.as_slice())?;
    Ok(())
}

fn remove(tx: &WriteTransaction, q: &str, id: &str, old: &Stored) -> Result<()> {
    tx.open_table(DUE)?.remove((q, old.score(), id))?;
    tx.open_table(JOBS)?.remove((q, id))?;
    Ok(())
}

/// Runs `f` on the job in one durable write transaction if `lease` is its token;
/// `f` returns the new job, or `None` to remove it. Returns whether it ran.
fn with_lease(
    e: &Embedded,
    q: &str,
    id: &str,
    lease: u64,
    f: impl FnOnce(&Stored) -> Option<Stored>,
) -> Result<bool> {
    let tx = e.db().begin_write()?;
    let held = match load(&tx, q, id)? {
        Some(old) if old.lease != 0 && old.lease == lease => {
            match f(&old) {
                Some(new) => store(&tx, q, id, Some(&old), &new)?,
                None => remove(&tx, q, id, &old)?,
            }
            true
        }
        _ => false,
    };
    if held {
        tx.commit()?;
    } else {
        tx.abort()?;
    }
    Ok(held)
}

/// A read of a table that may not exist yet (no job was ever queued).
fn missing_is_empty<T>(r: std::result::Result<T, TableError>) -> Result<Option<T>> {
    match r {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Embedded {
    pub(crate) fn queue_enqueue(&self, q: &str, jobs: &[RawNew]) -> Result<usize> {
        let tx = self.db().begin_write()?;
        let mut added = 0;
        {
            let mut t = tx.open_table(JOBS)?;
            let mut due = tx.open_table(DUE)?;
            for j in jobs {
                if t.get((q, j.id.as_str()))?.is_some() {
                    continue;
                }
                let s = Stored {
                    due: j.due_ms,
                    att: 0,
                    lease: 0,
                    until: 0,
                    p: j.sealed.clone(),
                };
                t.insert((q, j.id.as_str()), serde_json::to_vec(&s)?.as_slice())?;
                due.insert((q, j.due_ms, j.id.as_str()), ())?;
                added += 1;
            }
        }
        tx.commit()?;
        Ok(added)
    }

    pub(crate) fn queue_lease(
        &self,
        q: &str,
        now_ms: u64,
        until_ms: u64,
        max: usize,
        token: u64,
    ) -> Result<Vec<RawJob>> {
        let tx = self.db().begin_write()?;
        let mut out = Vec::new();
        let changed;
        {
            let mut due = tx.open_table(DUE)?;
            let mut t = tx.open_table(JOBS)?;
            let ready: Vec<(u64, String)> = due
                .range((q, 0, "")..(q, now_ms.saturating_add(1), ""))?
                .take(max)
                .map(|x| x.map(|(k, _)| (k.value().1, k.value().2.to_owned())))
                .collect::<std::result::Result<_, _>>()?;
            changed = !ready.is_empty();
            for (score, id) in ready {
                due.remove((q, score, id.as_str()))?;
                let old: Option<Stored> = match t.get((q, id.as_str()))? {
                    Some(g) => Some(serde_json::from_slice(g.value())?),
                    None => None,
                };
                // An index entry without its job cannot be written by this module;
                // dropping it is all there is to do.
                let Some(old) = old else { continue };
                let new = Stored {
                    att: old.att.saturating_add(1),
                    lease: token,
                    until: until_ms,
                    ..old
                };
                due.insert((q, until_ms, id.as_str()), ())?;
                t.insert((q, id.as_str()), serde_json::to_vec(&new)?.as_slice())?;
                out.push(new.raw(&id));
            }
        }
        // Nothing due is the common case (a worker polling): no durable commit.
        if !changed {
            tx.abort()?;
        } else {
            tx.commit()?;
        }
        Ok(out)
    }

    pub(crate) fn queue_complete(&self, q: &str, id: &str, lease: u64) -> Result<bool> {
        with_lease(self, q, id, lease, |_| None)
    }

    pub(crate) fn queue_retry(&self, q: &str, id: &str, lease: u64, due_ms: u64) -> Result<bool> {
        with_lease(self, q, id, lease, |old| {
            Some(Stored {
                due: due_ms,
                lease: 0,
                until: 0,
                p: old.p.clone(),
                ..*old
            })
        })
    }

    pub(crate) fn queue_extend(
        &self,
        q: &str,
        id: &str,
        lease: u64,
        until_ms: u64,
    ) -> Result<bool> {
        with_lease(self, q, id, lease, |old| {
            Some(Stored {
                until: until_ms,
                p: old.p.clone(),
                ..*old
            })
        })
    }

    pub(crate) fn queue_reschedule(
        &self,
        q: &str,
        id: &str,
        due_ms: u64,
        now_ms: u64,
    ) -> Result<Rescheduled> {
        let tx = self.db().begin_write()?;
        let outcome = match load(&tx, q, id)? {
            None => Rescheduled::Missing,
            Some(old) if old.leased_at(now_ms) => Rescheduled::Leased,
            Some(old) => {
                let new = Stored {
                    due: due_ms,
                    lease: 0,
                    until: 0,
                    p: old.p.clone(),
                    ..old
                };
                store(&tx, q, id, Some(&old), &new)?;
                Rescheduled::Done
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    pub(crate) fn queue_cancel(&self, q: &str, id: &str, now_ms: u64) -> Result<Cancelled> {
        let tx = self.db().begin_write()?;
        let outcome = match load(&tx, q, id)? {
            None => Cancelled::Missing,
            Some(old) if old.leased_at(now_ms) => Cancelled::Leased,
            Some(old) => {
                remove(&tx, q, id, &old)?;
                Cancelled::Removed
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    pub(crate) fn queue_get(&self, q: &str, id: &str) -> Result<Option<RawJob>> {
        let tx = self.db().begin_read()?;
        let Some(t) = missing_is_empty(tx.open_table(JOBS))? else {
            return Ok(None);
        };
        let got = t.get((q, id))?;
        Ok(match got {
            Some(g) => Some(serde_json::from_slice::<Stored>(g.value())?.raw(id)),
            None => None,
        })
    }

    pub(crate) fn queue_next_due(&self, q: &str) -> Result<Option<u64>> {
        let tx = self.db().begin_read()?;
        let Some(due) = missing_is_empty(tx.open_table(DUE))? else {
            return Ok(None);
        };
        let first = due.range((q, 0, "")..)?.next();
        Ok(match first {
            Some(row) => {
                let (k, _) = row?;
                let (queue, score, _) = k.value();
                (queue == q).then_some(score)
            }
            None => None,
        })
    }

    pub(crate) fn queue_len(&self, q: &str) -> Result<u64> {
        let tx = self.db().begin_read()?;
        let Some(t) = missing_is_empty(tx.open_table(JOBS))? else {
            return Ok(0);
        };
        let mut n = 0;
        for row in t.range((q, "")..)? {
            if row?.0.value().0 != q {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Every job of a queue, leased or not (for `migrate`).
    pub(crate) fn queue_all(&self, q: &str) -> Result<Vec<RawJob>> {
        let tx = self.db().begin_read()?;
        let Some(t) = missing_is_empty(tx.open_table(JOBS))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in t.range((q, "")..)? {
            let (k, v) = row?;
            let (queue, id) = k.value();
            if queue != q {
                break;
            }
            out.push(serde_json::from_slice::<Stored>(v.value())?.raw(id));
        }
        Ok(out)
    }

    /// Writes a job with its due time, attempts and payload, not leased,
    /// replacing one with its id (for `migrate`). Idempotent.
    pub(crate) fn queue_import(&self, q: &str, j: &RawJob) -> Result<()> {
        let tx = self.db().begin_write()?;
        let old = load(&tx, q, &j.id)?;
        let new = Stored {
            due: j.due_ms,
            att: j.attempts,
            lease: 0,
            until: 0,
            p: j.sealed.clone(),
        };
        store(&tx, q, &j.id, old.as_ref(), &new)?;
        tx.commit()?;
        Ok(())
    }
}
