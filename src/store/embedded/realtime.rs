//! The embedded store's real-time tables (see `store::realtime`): webhooks, their
//! attempt logs, first-activity marks and the retained feed. Ordinary durable
//! redb transactions: none of this is on the pixel's path (the feed gets one
//! write per derived batch, off the hot path).

use redb::{ReadableTable, TableDefinition, TableError};

use super::super::realtime::{FeedPos, FirstMark, Health, ATTEMPTS_KEPT};
use super::super::Result;
use super::Embedded;

/// webhook id -> JSON (url and secret sealed).
const WEBHOOKS: TableDefinition<u64, &[u8]> = TableDefinition::new("webhooks");
/// webhook id -> (failing since ms, disabled at ms or 0).
const HEALTH: TableDefinition<u64, (u64, u64)> = TableDefinition::new("webhook_health");
/// (webhook id, seq) -> sealed attempt JSON.
const ATTEMPTS: TableDefinition<(u64, u64), &str> = TableDefinition::new("webhook_attempts");
/// (email, recipient, kind) of first human activity already seen.
const FIRSTS: TableDefinition<(u64, u32, u8), u64> = TableDefinition::new("realtime_firsts");
/// (ms, seq) -> sealed feed entry.
const FEED: TableDefinition<(u64, u64), &str> = TableDefinition::new("realtime_feed");

/// owner -> when a stream of theirs was last seen open (ms).
const LISTENERS: TableDefinition<u64, u64> = TableDefinition::new("realtime_listeners");

/// Old feed entries removed per append (so one append does bounded work).
const TRIM_PER_APPEND: usize = 256;

/// A table not created yet reads as empty.
fn missing_is_empty<T>(r: std::result::Result<T, TableError>) -> Result<Option<T>> {
    match r {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn health_of(v: (u64, u64)) -> Health {
    Health {
        failing_since_ms: (v.0 != 0).then_some(v.0),
        disabled_ms: (v.1 != 0).then_some(v.1),
    }
}

impl Embedded {
    pub(crate) fn put_webhook(&self, id: u64, json: &[u8]) -> Result<()> {
        let tx = self.db().begin_write()?;
        tx.open_table(WEBHOOKS)?.insert(id, json)?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn webhooks(&self) -> Result<Vec<(Vec<u8>, Health)>> {
        let tx = self.db().begin_read()?;
        let mut out = Vec::new();
        let Some(hooks) = missing_is_empty(tx.open_table(WEBHOOKS))? else {
            return Ok(out);
        };
        let health = missing_is_empty(tx.open_table(HEALTH))?;
        for row in hooks.iter()? {
            let (k, v) = row?;
            let h = match &health {
                Some(t) => t.get(k.value())?.map(|g| g.value()).unwrap_or((0, 0)),
                None => (0, 0),
            };
            out.push((v.value().to_vec(), health_of(h)));
        }
        Ok(out)
    }

    pub(crate) fn delete_webhook(&self, id: u64) -> Result<bool> {
        let tx = self.db().begin_write()?;
        let existed = tx.open_table(WEBHOOKS)?.remove(id)?.is_some();
        tx.open_table(HEALTH)?.remove(id)?;
        {
            let mut log = tx.open_table(ATTEMPTS)?;
            let keys: Vec<(u64, u64)> = log
                .range((id, 0)..=(id, u64::MAX))?
                .map(|r| r.map(|(k, _)| k.value()))
                .collect::<std::result::Result<_, _>>()?;
            for k in keys {
                log.remove(k)?;
            }
        }
        tx.commit()?;
        Ok(existed)
    }

    pub(crate) fn webhook_attempt(
        &self,
        id: u64,
        sealed: &str,
        ok: bool,
        now_ms: u64,
        disable_after_ms: u64,
    ) -> Result<Health> {
        let tx = self.db().begin_write()?;
        let health;
        {
            let mut log = tx.open_table(ATTEMPTS)?;
            let last = log
                .range((id, 0)..=(id, u64::MAX))?
                .next_back()
                .transpose()?
                .map(|(k, _)| k.value().1);
            let seq = last.map_or(1, |s| s + 1);
            log.insert((id, seq), sealed)?;
            if seq > ATTEMPTS_KEPT as u64 {
                let old: Vec<(u64, u64)> = log
                    .range((id, 0)..(id, seq + 1 - ATTEMPTS_KEPT as u64))?
                    .map(|r| r.map(|(k, _)| k.value()))
                    .collect::<std::result::Result<_, _>>()?;
                for k in old {
                    log.remove(k)?;
                }
            }
            let mut t = tx.open_table(HEALTH)?;
            let (since, disabled) = t.get(id)?.map(|g| g.value()).unwrap_or((0, 0));
            let next = if ok {
                (0, 0)
            } else {
                let since = if since == 0 { now_ms } else { since };
                let disabled = if disabled == 0 && now_ms.saturating_sub(since) >= disable_after_ms
                {
                    now_ms
                } else {
                    disabled
                };
                (since, disabled)
            };
            t.insert(id, next)?;
            health = health_of(next);
        }
        tx.commit()?;
        Ok(health)
    }

    pub(crate) fn webhook_attempts(&self, id: u64) -> Result<Vec<String>> {
        let tx = self.db().begin_read()?;
        let Some(log) = missing_is_empty(tx.open_table(ATTEMPTS))? else {
            return Ok(Vec::new());
        };
        let rows: Vec<String> = log
            .range((id, 0)..=(id, u64::MAX))?
            .rev()
            .map(|r| r.map(|(_, v)| v.value().to_owned()))
            .collect::<std::result::Result<_, _>>()?;
        Ok(rows)
    }

    pub(crate) fn mark_first(&self, marks: &[FirstMark]) -> Result<Vec<bool>> {
        let tx = self.db().begin_write()?;
        let mut out = Vec::with_capacity(marks.len());
        {
            let mut t = tx.open_table(FIRSTS)?;
            for m in marks {
                let key = (m.email, m.recipient, m.kind);
                let new = t.get(key)?.is_none();
                if new {
                    t.insert(key, m.expires_ms)?;
                }
                out.push(new);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    pub(crate) fn feed_append(&self, sealed: &str, now_ms: u64, cutoff_ms: u64) -> Result<FeedPos> {
        let tx = self.db().begin_write()?;
        let pos;
        {
            let mut t = tx.open_table(FEED)?;
            let last = t.last()?.map(|(k, _)| k.value());
            pos = match last {
                Some((ms, seq)) if ms >= now_ms => FeedPos { ms, seq: seq + 1 },
                _ => FeedPos { ms: now_ms, seq: 0 },
            };
            t.insert((pos.ms, pos.seq), sealed)?;
            let old: Vec<(u64, u64)> = t
                .range(..(cutoff_ms, 0))?
                .take(TRIM_PER_APPEND)
                .map(|r| r.map(|(k, _)| k.value()))
                .collect::<std::result::Result<_, _>>()?;
            for k in old {
                t.remove(k)?;
            }
        }
        tx.commit()?;
        Ok(pos)
    }

    pub(crate) fn feed_read(&self, from: FeedPos, max: usize) -> Result<Vec<(FeedPos, String)>> {
        let tx = self.db().begin_read()?;
        let Some(t) = missing_is_empty(tx.open_table(FEED))? else {
            return Ok(Vec::new());
        };
        let rows: Vec<(FeedPos, String)> = t
            .range((from.ms, from.seq)..)?
            .take(max)
            .map(|r| {
                r.map(|(k, v)| {
                    let (ms, seq) = k.value();
                    (FeedPos { ms, seq }, v.value().to_owned())
                })
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(rows)
    }

    /// Replaces entries that are still there (one trimmed meanwhile stays gone).
    pub(crate) fn feed_replace(&self, entries: &[(FeedPos, String)]) -> Result<()> {
        let tx = self.db().begin_write()?;
        {
            let mut t = tx.open_table(FEED)?;
            for (pos, sealed) in entries {
                if t.get((pos.ms, pos.seq))?.is_some() {
                    t.insert((pos.ms, pos.seq), sealed.as_str())?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn listeners_seen(&self, owners: &[u64], now_ms: u64, cutoff_ms: u64) -> Result<()> {
        let tx = self.db().begin_write()?;
        {
            let mut t = tx.open_table(LISTENERS)?;
            // One row per owner with a stream: a small table, scanned whole.
            let old: Vec<u64> = t
                .iter()?
                .filter_map(|r| r.ok())
                .filter(|(_, at)| at.value() < cutoff_ms)
                .map(|(k, _)| k.value())
                .collect();
            for o in old {
                t.remove(o)?;
            }
            for &o in owners {
                t.insert(o, now_ms)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn listeners(&self, cutoff_ms: u64) -> Result<std::collections::HashSet<u64>> {
        let tx = self.db().begin_read()?;
        let Some(t) = missing_is_empty(tx.open_table(LISTENERS))? else {
            return Ok(Default::default());
        };
        let mut out = std::collections::HashSet::new();
        for row in t.iter()? {
            let (k, at) = row?;
            if at.value() >= cutoff_ms {
                out.insert(k.value());
            }
        }
        Ok(out)
    }

    pub(crate) fn feed_end(&self) -> Result<FeedPos> {
        let tx = self.db().begin_read()?;
        let Some(t) = missing_is_empty(tx.open_table(FEED))? else {
            return Ok(FeedPos::default());
        };
        let end = t.last()?.map(|(k, _)| {
            let (ms, seq) = k.value();
            FeedPos { ms, seq }
        });
        Ok(end.unwrap_or_default())
    }

    /// The first marks of one email: (recipient, kind) (for `migrate`).
    pub(crate) fn first_marks(&self, email: u64) -> Result<Vec<(u32, u8)>> {
        let tx = self.db().begin_read()?;
        let Some(t) = missing_is_empty(tx.open_table(FIRSTS))? else {
            return Ok(Vec::new());
        };
        let rows = t
            .range((email, 0, 0)..=(email, u32::MAX, u8::MAX))?
            .map(|r| {
                r.map(|(k, _)| {
                    let (_, rcpt, kind) = k.value();
                    (rcpt, kind)
                })
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(rows)
    }

    /// Writes a webhook with its health and its attempt log (sealed, newest
    /// first), replacing what the store held for its id (for `migrate`).
    pub(crate) fn import_webhook(
        &self,
        id: u64,
        json: &[u8],
        health: Health,
        attempts: &[String],
    ) -> Result<()> {
        let tx = self.db().begin_write()?;
        {
            tx.open_table(WEBHOOKS)?.insert(id, json)?;
            let h = (
                health.failing_since_ms.unwrap_or(0),
                health.disabled_ms.unwrap_or(0),
            );
            tx.open_table(HEALTH)?.insert(id, h)?;
            let mut log = tx.open_table(ATTEMPTS)?;
            let old: Vec<(u64, u64)> = log
                .range((id, 0)..=(id, u64::MAX))?
                .map(|r| r.map(|(k, _)| k.value()))
                .collect::<std::result::Result<_, _>>()?;
            for k in old {
                log.remove(k)?;
            }
            // Oldest gets seq 1, as `webhook_attempt` numbers them.
            for (i, a) in attempts.iter().rev().enumerate() {
                log.insert((id, i as u64 + 1), a.as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
