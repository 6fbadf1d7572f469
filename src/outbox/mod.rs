//! The outbox: `deliver: "smtp"` copies sent by a durable queue, after the
//! request has been answered, with retries, send later, and cancel.
//!
//! Following an email for SMTP (`follow`) stores the record (every recipient
//! `queued`, or `scheduled` with `send_at`), the message's source ([`Source`]:
//! the original MIME and what rendering needs, sealed by the store as a job on
//! the `outbox_src` queue, due at the email's expiry so retention drops it),
//! then one job per recipient copy on the `outbox` queue (id
//! `<email id>:<recipient index>`, due now or at `send_at`), in one enqueue.
//!
//! The worker ([`start`], run by `serve`) takes each copy when due and
//! [`send_copy`]: it marks the recipient `sending`, renders the copy from the
//! source just then (tokens exist from the moment a copy leaves; a copy
//! rendered at 09:00 counts "seconds since prepared" from 09:00), sends it
//! through `deliver` and records `sent`, or `failed` with the SMTP reply
//! (a 5xx reply, or temporary failures past the give-up time), or, after a
//! temporary failure (4xx, connection, timeout), `queued` again with the reply
//! as `detail` and a retry due by `Backoff`. Each outcome raises `email.sent` or
//! `email.delivery_failed` (ids `snt_<email>_<recipient>` /
//! `dlf_<email>_<recipient>`). When every copy is final, the source is removed.
//!
//! Delivery is **at least once**: a copy whose process died while it was
//! `sending` is leased again once its lease expires and sent again, rendered
//! from the same source, with the same Message-ID. A copy already recorded
//! `sent` is never sent again. Recipient states are written with
//! `Store::update_email` (compare-and-set), so workers in several processes
//! update one email safely.
//!
//! `reminder` is the timers' side: "remind me if no reply by …".

pub mod reminder;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map};
use tokio::task::JoinHandle;

use crate::ids::{id_from_text, id_to_text};
use crate::jobs::{self, Backoff, Outcome, WorkerOptions};
use crate::model::{Delivery, EmailRecord};
use crate::prepare::{Draft, Limits};
use crate::realtime::{AppEvent, EventType};
use crate::render::{encoded_links, render_copy, Plan};
use crate::state::App;
use crate::store::queue::{Cancelled, Leased, NewJob, Rescheduled};
use crate::store::StoreError;

/// The queue of message sources (one job per email, never leased before the
/// email expires).
pub const SOURCES: &str = "outbox_src";
/// How far in the past a `send_at` or reminder `at` may be (clock skew).
pub const SKEW_MS: u64 = 60_000;
/// How far ahead a `send_at` or reminder `at` may be.
pub const MAX_AHEAD_MS: u64 = 365 * 86_400_000;
/// How many parsed sources a process keeps (one email's copies are usually
/// sent one after another: parse once, not per recipient).
const CACHE: usize = 4;
/// A store failure while sending: try the copy again this much later.
const STORE_RETRY_MS: u64 = 5_000;

/// What rendering an email's copies needs, stored until every copy is final.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Source {
    /// `public_url` when the email was followed (where its tokens point).
    pub public_url: String,
    /// The Message-ID and Date added to a message that had none (the same in
    /// every copy, and again when a copy is sent twice).
    pub message_id: String,
    pub date: String,
    /// Per recipient: true if a contact preference says not to follow them.
    pub opted_out: Vec<bool>,
}

/// One recipient copy's job.
#[derive(Serialize, Deserialize)]
struct CopyJob {
    /// The email id (text form).
    email: String,
    recipient: u32,
    /// When the copy was first due (the retry deadline counts from it).
    due_ms: u64,
}

/// A source as stored: its JSON header line, then the raw message.
fn encode_source(src: &Source, raw: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut out = serde_json::to_vec(src)?;
    out.push(b'\n');
    out.extend_from_slice(raw);
    Ok(out)
}

fn decode_source(payload: &[u8]) -> Option<(Source, &[u8])> {
    let nl = payload.iter().position(|&b| b == b'\n')?;
    let src = serde_json::from_slice(&payload[..nl]).ok()?;
    Some((src, &payload[nl + 1..]))
}

fn copy_id(email: u64, i: usize) -> String {
    format!("{}:{i}", id_to_text(email))
}

/// Stores the source of a just-stored SMTP email and queues one job per
/// recipient copy, due at `due_ms` (now, or `send_at`). The record must
/// already be stored (every token handed out belongs to a stored email).
pub async fn enqueue_copies(
    app: &App,
    rec: &EmailRecord,
    source: &Source,
    raw: &[u8],
    due_ms: u64,
) -> Result<(), StoreError> {
    let src = NewJob {
        id: id_to_text(rec.id),
        due_ms: rec.expires_ms,
        payload: encode_source(source, raw)?,
    };
    app.store.enqueue(SOURCES, vec![src]).await?;
    let jobs = (0..rec.recipients.len())
        .map(|i| {
            NewJob::json(
                copy_id(rec.id, i),
                due_ms,
                &CopyJob {
                    email: id_to_text(rec.id),
                    recipient: i as u32,
                    due_ms,
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    app.outbox.enqueue(jobs).await?;
    Ok(())
}

/// A parsed source, shared by the copies of one email.
struct Prepared {
    draft: Draft,
    links: Vec<String>,
    source: Source,
}

/// The worker's state: the app, recent parsed sources, the retry policy.
struct Outbox {
    app: Arc<App>,
    cache: Mutex<VecDeque<(u64, Arc<Prepared>)>>,
    backoff: Backoff,
}

/// Starts this process's outbox workers (copies, reminders, and the removal of
/// sources at retention) until `stop` turns true; each finishes the jobs in
/// hand first. Returns their tasks, for the caller to wait on.
pub fn start(app: Arc<App>, stop: tokio::sync::watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let cfg = app.config.outbox;
    let ob = Arc::new(Outbox {
        app: app.clone(),
        cache: Mutex::new(VecDeque::new()),
        backoff: Backoff {
            first: cfg.retry_first,
            give_up_after: cfg.give_up_after,
            ..Backoff::OUTBOX
        },
    });
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let opts = |concurrency| WorkerOptions {
        concurrency,
        lease: cfg.lease,
        poll: Duration::from_secs(1),
        clock: app.clock.clone(),
    };
    let copies = {
        let ob = ob.clone();
        jobs::run_worker(
            app.outbox.clone(),
            move |job| {
                let ob = ob.clone();
                async move { ob.send_copy(job).await }
            },
            opts(cfg.concurrency),
            until(stop.clone()),
        )
    };
    let timers = {
        let app = app.clone();
        jobs::run_worker(
            app.timers.clone(),
            move |job| {
                let app = app.clone();
                async move { reminder::run(&app, job).await }
            },
            opts(2),
            until(stop.clone()),
        )
    };
    // A source still stored when its email expires: dropped (retention).
    let sources = jobs::run_worker(
        jobs::Jobs::new(app.store.clone(), SOURCES),
        |_job| async { Outcome::Done },
        WorkerOptions {
            poll: Duration::from_secs(60),
            ..opts(1)
        },
        until(stop),
    );
    vec![
        tokio::spawn(copies),
        tokio::spawn(timers),
        tokio::spawn(sources),
    ]
}

impl Outbox {
    async fn send_copy(&self, job: Leased) -> Outcome {
        let app = &self.app;
        let now = app.clock.now_ms();
        let Ok(cj) = job.json::<CopyJob>() else {
            tracing::error!(job = %job.id, "an outbox job cannot be read; dropped");
            return Outcome::Fail;
        };
        let Some(email) = id_from_text(&cj.email) else {
            return Outcome::Fail;
        };
        let i = cj.recipient as usize;
        let rec = match app.store.get_email(email).await {
            Ok(Some(r)) => r,
            // Expired or never stored: nothing to send.
            Ok(None) => return Outcome::Fail,
            Err(e) => {
                tracing::warn!(error = %e, "outbox: reading the email failed; retrying");
                return Outcome::RetryAt(now + STORE_RETRY_MS);
            }
        };
        let Some(r) = rec.recipients.get(i) else {
            return Outcome::Fail;
        };
        if r.delivery.as_ref().is_some_and(Delivery::is_final) {
            // Sent before a crash lost the job's completion, or cancelled.
            self.forget_if_final(&rec).await;
            return Outcome::Done;
        }
        if r.erased || r.address.is_empty() {
            self.finish(&rec, i, Delivery::new("cancelled", None, now))
                .await;
            return Outcome::Done;
        }
        let Some(mailer) = app.mailer.as_ref() else {
            let d = Delivery::new("failed", Some("SMTP is not configured".into()), now);
            self.finish(&rec, i, d).await;
            return Outcome::Fail;
        };
        let prepared = match self.prepared(email).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                let d = Delivery::new(
                    "failed",
                    Some("the message is no longer stored".into()),
                    now,
                );
                self.finish(&rec, i, d).await;
                return Outcome::Fail;
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox: reading the source failed; retrying");
                return Outcome::RetryAt(now + STORE_RETRY_MS);
            }
        };
        // `sending` is durable before the SMTP transaction starts.
        if let Err(e) = self
            .set(email, i, Delivery::new("sending", None, now))
            .await
        {
            tracing::warn!(error = %e, "outbox: recording `sending` failed; retrying");
            return Outcome::RetryAt(now + STORE_RETRY_MS);
        }
        let plan = Plan {
            id: rec.id,
            owner: rec.owner,
            // The tokens' "prepared" time: now, when the copy leaves.
            created_ms: now,
            expires_ms: rec.expires_ms,
            deliver: rec.deliver.clone(),
            public_url: prepared.source.public_url.clone(),
            template: None,
            not_followed: prepared
                .source
                .opted_out
                .iter()
                .map(|&o| o.then_some("contact_opted_out"))
                .collect(),
        };
        let keys = app.keys();
        let p = prepared.clone();
        let copy =
            tokio::task::spawn_blocking(move || render_copy(&p.draft, &keys, &plan, &p.links, i))
                .await;
        let result = match copy {
            Ok(copy) => mailer.send(&rec.from, &r.address, &copy).await,
            Err(_) => Err(crate::deliver::SendError {
                permanent: true,
                text: "the copy could not be prepared".into(),
            }),
        };
        let now = app.clock.now_ms();
        match result {
            Ok(()) => {
                self.finish(&rec, i, Delivery::new("sent", None, now)).await;
                Outcome::Done
            }
            Err(e) => {
                let started = cj.due_ms.max(rec.send_at_ms.unwrap_or(0));
                let retry_at = if e.permanent {
                    None
                } else {
                    self.backoff.next_at(job.attempts, now, started)
                };
                match retry_at {
                    Some(at) => {
                        tracing::info!(error = %e, attempts = job.attempts, "outbox: temporary SMTP failure; will retry");
                        if let Err(se) = self
                            .set(email, i, Delivery::new("queued", Some(e.text), now))
                            .await
                        {
                            tracing::warn!(error = %se, "outbox: recording a retry failed");
                        }
                        Outcome::RetryAt(at)
                    }
                    None => {
                        tracing::warn!(error = %e, "outbox: SMTP delivery failed for one recipient");
                        self.finish(&rec, i, Delivery::new("failed", Some(e.text), now))
                            .await;
                        Outcome::Fail
                    }
                }
            }
        }
    }

    /// Records recipient `i`'s delivery.
    async fn set(&self, email: u64, i: usize, d: Delivery) -> Result<(), StoreError> {
        self.set_and_read(email, i, d).await.map(|_| ())
    }

    /// Records a final delivery, raises its event, and removes the source once
    /// every copy is final.
    async fn finish(&self, rec: &EmailRecord, i: usize, d: Delivery) {
        let kind = match d.state.as_str() {
            "sent" => Some(EventType::EmailSent),
            "failed" => Some(EventType::EmailDeliveryFailed),
            _ => None,
        };
        let mut extra = Map::new();
        if let Some(s) = &rec.subject {
            extra.insert("subject".into(), json!(s));
        }
        if let Some(detail) = &d.detail {
            extra.insert("detail".into(), json!(detail));
        }
        // The event first: a crash before the record is written sends the
        // copy again and raises the event again, under the same id.
        if let Some(kind) = kind {
            let prefix = if kind == EventType::EmailSent {
                "snt"
            } else {
                "dlf"
            };
            self.app.realtime.emit(vec![AppEvent {
                id: format!("{prefix}_{}_{i}", id_to_text(rec.id)),
                kind,
                at_ms: d.at_ms,
                owner: rec.owner,
                email_id: rec.id,
                recipient: rec.recipients.get(i).map(|r| r.address.clone()),
                machine: false,
                first: false,
                extra,
            }]);
        }
        let updated = match self.set_and_read(rec.id, i, d).await {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "outbox: could not record a delivery");
                return;
            }
        };
        if let Some(u) = updated {
            self.forget_if_final(&u).await;
        }
    }

    async fn set_and_read(
        &self,
        email: u64,
        i: usize,
        d: Delivery,
    ) -> Result<Option<EmailRecord>, StoreError> {
        self.app
            .store
            .update_email(email, |rec| match rec.recipients.get_mut(i) {
                Some(r) => {
                    r.delivery = Some(d.clone());
                    true
                }
                None => false,
            })
            .await
    }

    /// Removes the source once no copy needs it.
    async fn forget_if_final(&self, rec: &EmailRecord) {
        if !all_final(rec) {
            return;
        }
        self.lock_cache().retain(|(id, _)| *id != rec.id);
        forget_source(&self.app, rec.id).await;
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Arc<Prepared>)>> {
        // A poisoned lock only means a panic while pushing or removing an
        // entry; the queue is still a valid cache.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The email's parsed source: cached, or read from the store and parsed
    /// (off the runtime). `None` if it is no longer stored.
    async fn prepared(&self, email: u64) -> Result<Option<Arc<Prepared>>, StoreError> {
        if let Some((_, p)) = self.lock_cache().iter().find(|(id, _)| *id == email) {
            return Ok(Some(p.clone()));
        }
        let now = self.app.clock.now_ms();
        let Some(job) = self
            .app
            .store
            .get_job(SOURCES, &id_to_text(email), now)
            .await?
        else {
            return Ok(None);
        };
        let parsed = tokio::task::spawn_blocking(move || {
            let (source, raw) = decode_source(&job.payload)?;
            let prefix = format!("{}/c/", source.public_url);
            let mut draft = Draft::parse(raw, &prefix, &Limits::default()).ok()?;
            draft.add_missing_headers(&source.message_id, &source.date);
            let links = encoded_links(&draft);
            Some(Prepared {
                draft,
                links,
                source,
            })
        })
        .await
        .ok()
        .flatten();
        let Some(p) = parsed.map(Arc::new) else {
            tracing::error!(email = %id_to_text(email), "outbox: a stored source cannot be parsed");
            return Ok(None);
        };
        let mut cache = self.lock_cache();
        cache.push_front((email, p.clone()));
        cache.truncate(CACHE);
        Ok(Some(p))
    }
}

/// True when no copy of `rec` is waiting or in flight.
pub fn all_final(rec: &EmailRecord) -> bool {
    rec.recipients
        .iter()
        .all(|r| r.delivery.as_ref().is_none_or(Delivery::is_final))
}

async fn forget_source(app: &App, email: u64) {
    let now = app.clock.now_ms();
    if let Err(e) = app.store.cancel(SOURCES, &id_to_text(email), now).await {
        tracing::warn!(error = %e, "outbox: removing a sent email's source failed (retention will)");
    }
}

/// Why a schedule change was refused.
#[derive(Debug)]
pub enum ScheduleError {
    /// The email's copies are not sent by the outbox (`deliver` is not smtp).
    NotQueued,
    /// A copy is being sent or was sent (or failed).
    AlreadySending,
    Store(StoreError),
}

impl From<StoreError> for ScheduleError {
    fn from(e: StoreError) -> Self {
        ScheduleError::Store(e)
    }
}

/// States from which a copy can still be rescheduled or cancelled.
fn waiting(d: &Option<Delivery>) -> bool {
    d.as_ref()
        .is_some_and(|d| d.state == "queued" || d.state == "scheduled")
}

/// Checks that nothing of `rec` began sending; the indexes of its waiting copies.
fn waiting_copies(rec: &EmailRecord) -> Result<Vec<usize>, ScheduleError> {
    if rec.deliver != "smtp" {
        return Err(ScheduleError::NotQueued);
    }
    let began = rec.recipients.iter().any(|r| {
        r.delivery
            .as_ref()
            .is_some_and(|d| !(waiting(&r.delivery) || d.state == "cancelled"))
    });
    if began {
        return Err(ScheduleError::AlreadySending);
    }
    Ok(rec
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| waiting(&r.delivery))
        .map(|(i, _)| i)
        .collect())
}

/// `PUT /api/v1/emails/{id}/schedule`: every waiting copy due at `send_at_ms`.
pub async fn reschedule(
    app: &App,
    rec: &EmailRecord,
    send_at_ms: u64,
) -> Result<EmailRecord, ScheduleError> {
    let now = app.clock.now_ms();
    let idle = waiting_copies(rec)?;
    let mut moved = Vec::new();
    for &i in &idle {
        match app
            .store
            .reschedule(app.outbox.queue(), &copy_id(rec.id, i), send_at_ms, now)
            .await?
        {
            Rescheduled::Done => moved.push(i),
            Rescheduled::Leased => return Err(ScheduleError::AlreadySending),
            Rescheduled::Missing => {}
        }
    }
    app.outbox.notify();
    let updated = app
        .store
        .update_email(rec.id, |r| {
            r.send_at_ms = Some(send_at_ms);
            for &i in &moved {
                if let Some(x) = r.recipients.get_mut(i).filter(|x| waiting(&x.delivery)) {
                    x.delivery = Some(Delivery::new("scheduled", None, now));
                }
            }
            true
        })
        .await?;
    Ok(updated.unwrap_or_else(|| rec.clone()))
}

/// `DELETE /api/v1/emails/{id}/schedule`: every waiting copy cancelled.
pub async fn cancel(app: &App, rec: &EmailRecord) -> Result<EmailRecord, ScheduleError> {
    let now = app.clock.now_ms();
    let idle = waiting_copies(rec)?;
    let mut removed = Vec::new();
    let mut busy = false;
    for &i in &idle {
        match app
            .store
            .cancel(app.outbox.queue(), &copy_id(rec.id, i), now)
            .await?
        {
            Cancelled::Removed | Cancelled::Missing => removed.push(i),
            Cancelled::Leased => {
                busy = true;
                break;
            }
        }
    }
    let updated = app
        .store
        .update_email(rec.id, |r| {
            for &i in &removed {
                if let Some(x) = r.recipients.get_mut(i).filter(|x| waiting(&x.delivery)) {
                    x.delivery = Some(Delivery::new("cancelled", None, now));
                }
            }
            !removed.is_empty()
        })
        .await?
        .unwrap_or_else(|| rec.clone());
    if busy {
        return Err(ScheduleError::AlreadySending);
    }
    if all_final(&updated) {
        forget_source(app, rec.id).await;
    }
    Ok(updated)
}

/// An RFC 3339 time (`2026-05-01T09:00:00Z`, fractions and `+02:00` offsets
/// allowed) as ms since the epoch.
pub fn parse_time(s: &str) -> Option<u64> {
    let s = s.trim();
    let (base, offset_ms): (String, i64) = if let Some(b) = s.strip_suffix(['Z', 'z']) {
        (format!("{b}Z"), 0)
    } else {
        let cut = s.len().checked_sub(6)?;
        let (b, off) = (s.get(..cut)?, s.get(cut..)?);
        let sign = match off.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let (h, m) = off[1..].split_once(':')?;
        let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
        if h > 23 || m > 59 || off.len() != 6 {
            return None;
        }
        (format!("{b}Z"), sign * (h * 3600 + m * 60) * 1000)
    };
    if base.len() < 20 || base.as_bytes().get(10).is_none_or(|c| !b"Tt".contains(c)) {
        return None;
    }
    let t = humantime::parse_rfc3339(&base.replace('t', "T")).ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64;
    u64::try_from(ms - offset_ms).ok()
}

/// A time given for the future (`send_at`, a reminder's `at`): at most
/// [`SKEW_MS`] in the past and [`MAX_AHEAD_MS`] ahead of `now_ms`.
pub fn future_time(s: &str, now_ms: u64) -> Result<u64, String> {
    let at = parse_time(s)
        .ok_or_else(|| format!("{s:?} is not an RFC 3339 time such as 2030-01-31T09:00:00Z"))?;
    if at + SKEW_MS < now_ms {
        return Err(format!("{s:?} is in the past"));
    }
    if at > now_ms + MAX_AHEAD_MS {
        return Err(format!("{s:?} is more than 365 days ahead"));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_time("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(parse_time("1970-01-01T01:00:01+01:00"), Some(1000));
        assert_eq!(parse_time("1970-01-01T00:00:01-00:30"), Some(1_801_000));
        for bad in [
            "",
            "tomorrow",
            "1970-01-01",
            "1970-01-01 00:00:01Z",
            "1970-01-01T00:00:01",
            "1970-01-01T00:00:01+1:00",
            "1970-13-01T00:00:01Z",
            "1970-01-01T00:00:01+24:00",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn future_times_allow_a_little_skew_and_at_most_a_year() {
        let now = 1_800_000_000_000;
        let t = |ms: u64| crate::ids::rfc3339(ms);
        assert_eq!(future_time(&t(now + 5000), now), Ok(now + 5000));
        assert_eq!(future_time(&t(now - 30_000), now), Ok(now - 30_000));
        assert!(future_time(&t(now - 61_000), now)
            .unwrap_err()
            .contains("past"));
        assert!(future_time(&t(now + MAX_AHEAD_MS + 1000), now)
            .unwrap_err()
            .contains("365"));
        assert!(future_time("soon", now).is_err());
    }

    #[test]
    fn sources_round_trip() {
        let src = Source {
            public_url: "http://x".into(),
            message_id: "<a@b>".into(),
            date: "Thu, 1 Jan 1970 00:00:00 +0000".into(),
            opted_out: vec![false, true],
        };
        let raw = b"From: a@b\nTo: c@d\n\nbody\n\xff";
        let enc = encode_source(&src, raw).unwrap();
        let (back, body) = decode_source(&enc).unwrap();
        assert_eq!((back.opted_out, body), (vec![false, true], &raw[..]));
    }
}
