//! Reminders: "remind me at `at` if nobody replied / nobody opened / anyway".
//!
//! A reminder is stored on the email (`EmailRecord::reminder`, state
//! `pending`) and armed as one job on the `timers` queue (id `rem:<email id>`,
//! due at `at`, durable like every queued job, so it fires within the worker's
//! poll after `at`, also across restarts). When it runs ([`run`]) the condition
//! is checked over all recipients:
//!
//! - `no_reply`: no recipient replied (the reply facts the reply watcher
//!   records from the owner's connected mailbox, see `replies`; without a
//!   connected mailbox none are recorded, so this is true).
//! - `not_opened`: no recipient opened, by human activity as reports count it
//!   (`classify`); a human click counts as an open (its images were blocked).
//! - `always`.
//!
//! The reminder becomes `due` (and raises `reminder.due`, id
//! `rem_<email>_<at ms>`, through `realtime`; with `notify: "email"` it also
//! queues a short email to the sender, `super::notify`) or `skipped`. `PUT` moves it
//! (back to `pending`), `DELETE` makes it `cancelled`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map};

use crate::classify::classify_all;
use crate::ids::{id_from_text, id_to_text};
use crate::jobs::Outcome;
use crate::model::{EmailRecord, Event, EventKind, Reminder};
use crate::realtime::{AppEvent, EventType};
use crate::state::App;
use crate::store::queue::{Cancelled, Leased, NewJob, Rescheduled};
use crate::store::StoreError;

pub const WHEN: [&str; 3] = ["no_reply", "not_opened", "always"];

/// A reminder as the API takes it: `{"when", "at": RFC 3339, "notify"}`
/// (`notify`: `"email"` or `"none"`, the default).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ReminderInput {
    pub when: String,
    pub at: String,
    #[serde(default)]
    pub notify: Option<String>,
}

impl ReminderInput {
    /// The reminder (`pending`), checked against `now_ms` and whether an SMTP
    /// relay is configured (`notify: "email"` needs one); else why not.
    pub fn check(&self, now_ms: u64, smtp: bool) -> Result<Reminder, String> {
        if !WHEN.contains(&self.when.as_str()) {
            return Err(format!(
                "reminder.when must be \"no_reply\", \"not_opened\" or \"always\", not {:?}",
                self.when
            ));
        }
        let at_ms =
            super::future_time(&self.at, now_ms).map_err(|m| format!("reminder.at: {m}"))?;
        let notify = match self.notify.as_deref() {
            None | Some("none") => None,
            Some("email") if smtp => Some("email".to_string()),
            Some("email") => {
                return Err(
                    "reminder.notify \"email\" needs an SMTP relay (MAILBEACON_SMTP_URL)".into(),
                )
            }
            Some(other) => {
                return Err(format!(
                    "reminder.notify must be \"email\" or \"none\", not {other:?}"
                ))
            }
        };
        Ok(Reminder {
            when: self.when.clone(),
            at_ms,
            state: "pending".into(),
            notify,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct TimerJob {
    email: String,
    /// Until when a missing record is waited for (0: not at all; see
    /// `outbox`, "No crash window").
    #[serde(default)]
    record_by_ms: u64,
}

fn timer_id(email: u64) -> String {
    format!("rem:{}", id_to_text(email))
}

/// Why a reminder change was refused.
#[derive(Debug)]
pub enum ReminderError {
    /// The reminder is being checked right now.
    Running,
    Store(StoreError),
}

impl From<StoreError> for ReminderError {
    fn from(e: StoreError) -> Self {
        ReminderError::Store(e)
    }
}

/// Arms the timer of a reminder just stored on `email` (new, or moved).
pub async fn arm(app: &App, email: u64, at_ms: u64) -> Result<(), ReminderError> {
    let now = app.clock.now_ms();
    let id = timer_id(email);
    match app
        .store
        .reschedule(app.timers.queue(), &id, at_ms, now)
        .await?
    {
        Rescheduled::Done => app.timers.notify(),
        Rescheduled::Leased => return Err(ReminderError::Running),
        Rescheduled::Missing => {
            let job = NewJob::json(
                id,
                at_ms,
                &TimerJob {
                    email: id_to_text(email),
                    record_by_ms: 0,
                },
            )?;
            app.timers.enqueue(vec![job]).await?;
        }
    }
    Ok(())
}

/// Arms the timer of a reminder on an email that is about to be stored (the
/// job before the record, see `outbox`): the timer waits for the record until
/// `record_by_ms`. Wakes no worker: the caller calls `app.timers.notify()`
/// once the record is stored.
pub async fn arm_new(
    app: &App,
    email: u64,
    at_ms: u64,
    record_by_ms: u64,
) -> Result<(), StoreError> {
    let job = NewJob::json(
        timer_id(email),
        at_ms,
        &TimerJob {
            email: id_to_text(email),
            record_by_ms,
        },
    )?;
    app.store.enqueue(app.timers.queue(), vec![job]).await?;
    Ok(())
}

/// `PUT /api/v1/emails/{id}/reminder`: sets (or moves) the reminder (as
/// `ReminderInput::check` made it: `pending`).
pub async fn set(
    app: &App,
    email: u64,
    reminder: Reminder,
) -> Result<Option<EmailRecord>, ReminderError> {
    let at_ms = reminder.at_ms;
    let rec = app
        .store
        .update_email(email, |r| {
            r.reminder = Some(reminder.clone());
            true
        })
        .await?;
    if rec.is_some() {
        arm(app, email, at_ms).await?;
    }
    Ok(rec)
}

/// `DELETE /api/v1/emails/{id}/reminder`: a pending reminder becomes
/// `cancelled` (one that already fired keeps its outcome).
pub async fn cancel(app: &App, email: u64) -> Result<Option<EmailRecord>, ReminderError> {
    let now = app.clock.now_ms();
    match app
        .store
        .cancel(app.timers.queue(), &timer_id(email), now)
        .await?
    {
        Cancelled::Leased => return Err(ReminderError::Running),
        Cancelled::Removed | Cancelled::Missing => {}
    }
    Ok(app
        .store
        .update_email(email, |r| match &mut r.reminder {
            Some(rem) if rem.state == "pending" => {
                rem.state = "cancelled".into();
                true
            }
            _ => false,
        })
        .await?)
}

/// True if any recipient opened `rec`, by human activity (a human click
/// counts: the recipient saw the message with images blocked).
pub fn opened_by_anyone(
    rec: &EmailRecord,
    events: &[Event],
    h: &crate::config::Heuristics,
) -> bool {
    let classes = classify_all(events, &h.for_delivery(&rec.deliver));
    events
        .iter()
        .zip(&classes)
        .any(|(e, c)| c.is_none() && matches!(e.kind, EventKind::Open | EventKind::Click))
}

/// Runs one reminder's timer.
pub async fn run(app: &App, job: Leased) -> Outcome {
    let now = app.clock.now_ms();
    let Some((email, record_by_ms)) = job
        .json::<TimerJob>()
        .ok()
        .and_then(|t| Some((id_from_text(&t.email)?, t.record_by_ms)))
    else {
        return Outcome::Fail;
    };
    let rec = match app.store.get_email(email).await {
        Ok(Some(r)) => r,
        // Not stored yet (the timer comes first), or gone.
        Ok(None) => {
            return match super::await_record(record_by_ms, job.attempts, now) {
                Some(at) => Outcome::RetryAt(at),
                None => Outcome::Done,
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "reminder: reading the email failed; retrying");
            return Outcome::RetryAt(now + 5_000);
        }
    };
    let Some(rem) = rec.reminder.clone().filter(|r| r.state == "pending") else {
        return Outcome::Done;
    };
    if rem.at_ms > now {
        return Outcome::RetryAt(rem.at_ms);
    }
    let due = match rem.when.as_str() {
        "no_reply" => match app.store.replies_for(email).await {
            Ok(replies) => replies.is_empty(),
            Err(e) => {
                tracing::warn!(error = %e, "reminder: reading replies failed; retrying");
                return Outcome::RetryAt(now + 5_000);
            }
        },
        "not_opened" => match app.store.events_for(email).await {
            Ok(events) => !opened_by_anyone(&rec, &events, &app.config.heuristics),
            Err(e) => {
                tracing::warn!(error = %e, "reminder: reading events failed; retrying");
                return Outcome::RetryAt(now + 5_000);
            }
        },
        _ => true,
    };
    // The event first, then the outcome: a crash between the two raises the
    // event again (same id: subscribers drop the repeat), never loses it.
    if due {
        let mut extra = Map::new();
        extra.insert("when".into(), json!(rem.when));
        if let Some(s) = &rec.subject {
            extra.insert("subject".into(), json!(s));
        }
        app.realtime.emit(vec![AppEvent {
            id: format!("rem_{}_{}", id_to_text(email), rem.at_ms),
            kind: EventType::ReminderDue,
            at_ms: now,
            owner: rec.owner,
            email_id: email,
            recipient: None,
            machine: false,
            first: false,
            extra,
        }]);
        tracing::info!(email = %id_to_text(email), when = %rem.when, "reminder due");
        // The sender's email, queued before the outcome is recorded (the job
        // id makes a second enqueue after a crash harmless).
        if rem.notify.as_deref() == Some("email") {
            if let Err(e) = super::notify::enqueue(app, email, rem.at_ms, now).await {
                tracing::warn!(error = %e, "reminder: queueing the email failed; retrying");
                return Outcome::RetryAt(now + 5_000);
            }
        }
    }
    let state = if due { "due" } else { "skipped" };
    let updated = app
        .store
        .update_email(email, |r| match &mut r.reminder {
            Some(x) if x.state == "pending" && x.at_ms == rem.at_ms => {
                x.state = state.into();
                true
            }
            _ => false,
        })
        .await;
    match updated {
        Ok(Some(r)) if r.reminder.as_ref().is_some_and(|x| x.state == state) => {}
        // Moved or cancelled meanwhile: its own timer decides.
        Ok(_) => return Outcome::Done,
        Err(e) => {
            tracing::warn!(error = %e, "reminder: recording the outcome failed; retrying");
            return Outcome::RetryAt(now + 5_000);
        }
    }
    Outcome::Done
}
