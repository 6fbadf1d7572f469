//! The reminder email: with `"notify": "email"`, a reminder that becomes due
//! (`reminder::run`) also queues one job on the `outbox` queue (id
//! `rem:<email id>:<at ms>`, so a second enqueue after a crash changes
//! nothing), and the outbox worker sends a short plain-text email to the
//! sender: From the configured `notify_from` (else the sender's own address),
//! To the email's sender, subject "Reminder: <original subject>", with the
//! condition and a link to the email's report (`<public_url>/api/v1/emails/<id>`)
//! and to the dashboard. Temporary SMTP failures are retried with the outbox's
//! backoff; nothing is stored about the email itself (the reminder's `due` state
//! and the `reminder.due` event are the record). At least once, like the copies.

use serde::{Deserialize, Serialize};

use crate::ids::{id_from_text, id_to_text, rfc3339};
use crate::jobs::{Backoff, Outcome};
use crate::model::EmailRecord;
use crate::state::App;
use crate::store::queue::{Leased, NewJob};
use crate::store::StoreError;

/// A reminder email's job (on the `outbox` queue, next to the copies' jobs).
#[derive(Serialize, Deserialize)]
pub(super) struct NotifyJob {
    /// The email the reminder is on (text form).
    reminder_of: String,
    /// The reminder's time (which reminder of that email).
    at_ms: u64,
    /// When it was queued (the retry deadline counts from it).
    queued_ms: u64,
}

/// Queues the reminder email of `email`'s reminder at `at_ms` (idempotent).
pub async fn enqueue(app: &App, email: u64, at_ms: u64, now_ms: u64) -> Result<(), StoreError> {
    let job = NewJob::json(
        format!("rem:{}:{at_ms}", id_to_text(email)),
        now_ms,
        &NotifyJob {
            reminder_of: id_to_text(email),
            at_ms,
            queued_ms: now_ms,
        },
    )?;
    app.outbox.enqueue(vec![job]).await?;
    Ok(())
}

/// The job's payload, if it is a reminder email's.
pub(super) fn parse(job: &Leased) -> Option<NotifyJob> {
    job.json::<NotifyJob>().ok()
}

/// Sends one reminder email.
pub(super) async fn send(app: &App, backoff: &Backoff, job: &Leased, n: NotifyJob) -> Outcome {
    let now = app.clock.now_ms();
    let Some(email) = id_from_text(&n.reminder_of) else {
        return Outcome::Fail;
    };
    let rec = match app.store.get_email(email).await {
        Ok(Some(r)) => r,
        // Expired or erased since: nobody to remind.
        Ok(None) => return Outcome::Fail,
        Err(e) => {
            tracing::warn!(error = %e, "reminder email: reading the email failed; retrying");
            return Outcome::RetryAt(now + 5_000);
        }
    };
    let Some(mailer) = app.mailer.as_ref() else {
        tracing::warn!("reminder email: SMTP is not configured; not sent");
        return Outcome::Fail;
    };
    let to = rec.from.clone();
    let from = app.config.notify_from.clone().unwrap_or_else(|| to.clone());
    let Some(raw) = message(app, &rec, n.at_ms, &from, &to) else {
        tracing::warn!(email = %id_to_text(email), "reminder email: the sender's address cannot be used; not sent");
        return Outcome::Fail;
    };
    match mailer.send(&from, &to, &raw).await {
        Ok(()) => {
            tracing::info!(email = %id_to_text(email), "reminder email sent");
            Outcome::Done
        }
        Err(e) => {
            let retry = (!e.permanent)
                .then(|| backoff.next_at(job.attempts, app.clock.now_ms(), n.queued_ms))
                .flatten();
            match retry {
                Some(at) => {
                    tracing::info!(error = %e, "reminder email: temporary SMTP failure; will retry");
                    Outcome::RetryAt(at)
                }
                None => {
                    tracing::warn!(error = %e, "reminder email: not delivered");
                    Outcome::Fail
                }
            }
        }
    }
}

/// What the reminder was about, in a sentence.
fn condition(when: &str, at_ms: u64) -> String {
    let at = rfc3339(at_ms);
    match when {
        "no_reply" => format!("Nobody has replied to it (checked at {at})."),
        "not_opened" => format!("Nobody has opened it (checked at {at})."),
        _ => format!("You asked to be reminded at {at}."),
    }
}

/// The reminder email (RFC 5322, plain text), or `None` if an address does
/// not parse.
fn message(app: &App, rec: &EmailRecord, at_ms: u64, from: &str, to: &str) -> Option<Vec<u8>> {
    use lettre::message::{header::ContentType, Mailbox, Message};
    let subject: String = rec
        .subject
        .as_deref()
        .unwrap_or("(no subject)")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let when = rec
        .reminder
        .as_ref()
        .map(|r| r.when.as_str())
        .unwrap_or("always");
    let n = rec.recipients.len();
    let base = &app.config.public_url;
    let id = id_to_text(rec.id);
    let body = format!(
        "This is the reminder you set on your email \"{subject}\", sent {} to {n} recipient{}.\r\n\r\n\
         {}\r\n\r\nIts report: {base}/api/v1/emails/{id}\r\nYour dashboard: {base}/dashboard/\r\n\r\n-- \r\nmailbeacon\r\n",
        rfc3339(rec.created_ms),
        if n == 1 { "" } else { "s" },
        condition(when, at_ms),
    );
    let domain = from
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| {
            d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
        .unwrap_or("mailbeacon.invalid");
    let msg = Message::builder()
        .from(from.parse::<Mailbox>().ok()?)
        .to(to.parse::<Mailbox>().ok()?)
        .subject(format!("Reminder: {subject}"))
        .message_id(Some(format!("<rem.{id}.{at_ms}.mailbeacon@{domain}>")))
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .ok()?;
    Some(msg.formatted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_read_as_sentences() {
        assert!(condition("no_reply", 0).starts_with("Nobody has replied"));
        assert!(condition("not_opened", 0).starts_with("Nobody has opened"));
        assert!(
            condition("always", 0).starts_with("You asked to be reminded at 1970-01-01T00:00:00")
        );
    }
}
