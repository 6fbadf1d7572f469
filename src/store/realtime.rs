//! The `Store` methods real time needs: webhook subscriptions and their
//! delivery log, the "first human open/click" marks, and the retained feed of
//! application events.
//!
//! - **Webhooks** are small records (url and secret sealed). Each has a bounded
//!   log of delivery attempts (newest first, at most `ATTEMPTS_KEPT`, sealed),
//!   and a health state the log keeps in the same atomic step: any success
//!   clears "failing since", a failure sets it if unset, and a webhook failing
//!   for `disable_after_ms` is marked disabled.
//! - **First marks** are set-if-absent flags per (email, recipient, kind): one
//!   O(1) primitive per mark, all marks of a batch in one call (a redb write
//!   transaction; one `HSETNX` per mark, pipelined per email on Redis), so
//!   `first` never needs an email's events.
//! - **The feed** is an ordered log of opaque entries (each a packed batch of
//!   application events, sealed), positioned by `FeedPos` (milliseconds and a
//!   counter, as Redis stream ids are), retained `FEED_WINDOW_MS` (Redis also
//!   caps it near `FEED_MAX_ENTRIES` entries). Every process reads it, so it is
//!   both the cross-process fan-in of the live streams and their resume buffer.
//! - **Listeners** record which owners had an event stream open, and when
//!   (one timestamp per owner, kept `FEED_WINDOW_MS`): an owner nobody could
//!   ever receive from (no webhook, no stream within the feed window) gets no
//!   feed entries, so the hot path's notifications cost nothing for them.

use super::{Backend, Result, Store, StoreError};
use crate::model::{Attempt, Webhook};

/// Delivery attempts kept per webhook.
pub const ATTEMPTS_KEPT: usize = 200;
/// How long the feed keeps entries.
pub const FEED_WINDOW_MS: u64 = 24 * 3600 * 1000;
/// About how many entries (batches) the Redis feed keeps at most.
pub const FEED_MAX_ENTRIES: usize = 100_000;

/// A position in the feed: ordered by (ms, seq).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedPos {
    pub ms: u64,
    pub seq: u64,
}

impl FeedPos {
    /// The position just after this one (for an exclusive read).
    pub fn next(self) -> FeedPos {
        match self.seq.checked_add(1) {
            Some(seq) => FeedPos { ms: self.ms, seq },
            None => FeedPos {
                ms: self.ms + 1,
                seq: 0,
            },
        }
    }

    /// Parses `ms-seq` (a Redis stream id).
    pub fn parse(s: &str) -> Option<FeedPos> {
        let (ms, seq) = s.split_once('-')?;
        Some(FeedPos {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for FeedPos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A first-activity mark: (email, recipient, kind: 0 open, 1 click, 2
/// attachment view), kept until
/// the email expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstMark {
    pub email: u64,
    pub recipient: u32,
    pub kind: u8,
    pub expires_ms: u64,
}

/// A webhook's health after an attempt was logged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub failing_since_ms: Option<u64>,
    pub disabled_ms: Option<u64>,
}

impl Store {
    /// Creates or replaces a webhook (its health is left as the log keeps it).
    pub async fn put_webhook(&self, hook: Webhook) -> Result<()> {
        let k = self.sealer();
        let sealed = Webhook {
            url: k.seal(&hook.url),
            secret: k.seal(&hook.secret),
            failing_since_ms: None,
            disabled_ms: None,
            ..hook
        };
        let json = serde_json::to_vec(&sealed)?;
        let id = sealed.id;
        on_backend!(self, |s| s.put_webhook(id, &json), |r| r
            .put_webhook(id, &json)
            .await)
    }

    /// Every webhook (of every user), with its health.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>> {
        let k = self.sealer();
        let raw = on_backend!(self, |s| s.webhooks(), |r| r.webhooks().await)?;
        let mut out = Vec::with_capacity(raw.len());
        for (json, health) in raw {
            let w: Webhook = serde_json::from_slice(&json)?;
            out.push(Webhook {
                url: k.open_lossy(&w.url),
                secret: k.open_lossy(&w.secret),
                failing_since_ms: health.failing_since_ms,
                disabled_ms: health.disabled_ms,
                ..w
            });
        }
        out.sort_by_key(|w| (w.created_ms, w.id));
        Ok(out)
    }

    /// Deletes a webhook and its log; false if there was none.
    pub async fn delete_webhook(&self, id: u64) -> Result<bool> {
        on_backend!(self, |s| s.delete_webhook(id), |r| r
            .delete_webhook(id)
            .await)
    }

    /// Logs an attempt and updates the webhook's health in one step; a webhook
    /// whose failures began `disable_after_ms` before `now_ms` is disabled.
    pub async fn webhook_attempt(
        &self,
        id: u64,
        attempt: &Attempt,
        ok: bool,
        now_ms: u64,
        disable_after_ms: u64,
    ) -> Result<Health> {
        let sealed = self.sealer().seal(&serde_json::to_string(attempt)?);
        on_backend!(
            self,
            |s| s.webhook_attempt(id, &sealed, ok, now_ms, disable_after_ms),
            |r| r
                .webhook_attempt(id, &sealed, ok, now_ms, disable_after_ms)
                .await
        )
    }

    /// The webhook's logged attempts, newest first.
    pub async fn webhook_attempts(&self, id: u64) -> Result<Vec<Attempt>> {
        let k = self.sealer();
        let raw = on_backend!(self, |s| s.webhook_attempts(id), |r| r
            .webhook_attempts(id)
            .await)?;
        raw.iter()
            .map(|s| {
                let text = k
                    .open(s)
                    .map_err(|e| StoreError::Backend(format!("attempt log: {e}")))?;
                Ok(serde_json::from_str(&text)?)
            })
            .collect()
    }

    /// Sets each mark if absent; true for the marks that were not set before.
    pub async fn mark_first(&self, marks: Vec<FirstMark>) -> Result<Vec<bool>> {
        if marks.is_empty() {
            return Ok(Vec::new());
        }
        on_backend!(self, |s| s.mark_first(&marks), |r| r
            .mark_first(&marks)
            .await)
    }

    /// Appends one entry (sealed) to the feed, trimming what is older than
    /// the window; returns its position.
    pub async fn feed_append(&self, entry: &str, now_ms: u64) -> Result<FeedPos> {
        let sealed = self.sealer().seal(entry);
        let cutoff = now_ms.saturating_sub(FEED_WINDOW_MS);
        on_backend!(self, |s| s.feed_append(&sealed, now_ms, cutoff), |r| r
            .feed_append(&sealed, cutoff)
            .await)
    }

    /// Up to `max` entries at or after `from`, oldest first, opened. An entry
    /// that cannot be opened is skipped (logged).
    pub async fn feed_read(&self, from: FeedPos, max: usize) -> Result<Vec<(FeedPos, String)>> {
        let k = self.sealer();
        let raw = on_backend!(self, |s| s.feed_read(from, max), |r| r
            .feed_read(from, max)
            .await)?;
        Ok(raw
            .into_iter()
            .filter_map(|(pos, s)| match k.open(&s) {
                Ok(text) => Some((pos, text)),
                Err(e) => {
                    tracing::warn!(%pos, error = %e, "a feed entry cannot be opened; skipped");
                    None
                }
            })
            .collect())
    }

    /// Rewrites retained feed entries (a data-subject erase): `f` gets each
    /// entry's text and returns its replacement, or `None` to leave it. The
    /// embedded feed is rewritten in place (positions, hence event ids, kept).
    /// A Redis stream entry cannot be edited, so a changed entry is deleted
    /// (its other events leave the 24 h resume buffer; their webhook deliveries
    /// were queued already). Returns how many entries changed.
    pub async fn feed_rewrite(&self, f: impl Fn(&str) -> Option<String>) -> Result<u64> {
        const READ: usize = 256;
        let k = self.sealer();
        let mut from = FeedPos::default();
        let mut changed: Vec<(FeedPos, String)> = Vec::new();
        loop {
            let raw = on_backend!(self, |s| s.feed_read(from, READ), |r| r
                .feed_read(from, READ)
                .await)?;
            let Some(last) = raw.last().map(|(p, _)| *p) else {
                break;
            };
            let full = raw.len() >= READ;
            for (pos, sealed) in raw {
                if let Some(new) = k.open(&sealed).ok().and_then(|text| f(&text)) {
                    changed.push((pos, k.seal(&new)));
                }
            }
            if !full {
                break;
            }
            from = last.next();
        }
        let n = changed.len() as u64;
        if n > 0 {
            on_backend!(self, |s| s.feed_replace(&changed), |r| r
                .feed_delete(&changed)
                .await)?;
        }
        Ok(n)
    }

    /// Records that `owners` have an event stream open at `now_ms` (kept for
    /// the feed window; older records are dropped here).
    pub async fn listeners_seen(&self, owners: &[u64], now_ms: u64) -> Result<()> {
        if owners.is_empty() {
            return Ok(());
        }
        let owners = owners.to_vec();
        let cutoff = now_ms.saturating_sub(FEED_WINDOW_MS);
        on_backend!(self, |s| s.listeners_seen(&owners, now_ms, cutoff), |r| r
            .listeners_seen(&owners, now_ms, cutoff)
            .await)
    }

    /// The owners that had an event stream open within the feed window
    /// before `now_ms`, in any process.
    pub async fn listeners(&self, now_ms: u64) -> Result<std::collections::HashSet<u64>> {
        let cutoff = now_ms.saturating_sub(FEED_WINDOW_MS);
        on_backend!(self, |s| s.listeners(cutoff), |r| r.listeners(cutoff).await)
    }

    /// The newest entry's position (`FeedPos::default()` when empty).
    pub async fn feed_end(&self) -> Result<FeedPos> {
        on_backend!(self, |s| s.feed_end(), |r| r.feed_end().await)
    }
}
