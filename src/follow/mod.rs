//! Following an email: the one use case behind `POST /api/v1/emails` (a whole
//! message, one copy per recipient) and `POST /api/v1/compose/follow` (an
//! Outlook draft's HTML, one copy for everyone).
//!
//! [`follow`] checks, in this order: the Email Engagement switch, that SMTP is
//! configured when asked for, the message (parsed off the runtime), the
//! recipient cap, that the caller may send as the message's sender; then it adds
//! a missing Message-ID and Date, applies the contacts' "Follow email"
//! preferences, **stores the record before any copy exists**, then:
//! `Deliver::Return` renders every copy within [`MAX_RETURN_BYTES`] (checked
//! before storing); `Deliver::Smtp` hands the copies to the `outbox` (each
//! recipient `queued`, or `scheduled` until `send_at`), which renders and sends
//! each after the request is answered. A reminder is armed for either.
//! Failures are a [`FollowError`]; `http` turns each into its JSON error.
//!
//! `crate::render` is the pure part: the record and each recipient's copy with its own
//! tokens (also used by the outbox at send time).

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::render;
pub use crate::render::{encoded_links, prepare, record, render_copy, Plan};

use crate::address::normalize_address;
use crate::ids::{id_to_text, now_ms, random_id, rfc5322};
use crate::model::{Delivery, FollowEmail, OrgSettings, RecipientRecord, Reminder, Role, User};
use crate::outbox;
use crate::prepare::{Draft, ErrorKind, HtmlBody, Limits, PrepareError};
use crate::state::App;
use crate::store::StoreError;
use crate::token::KeyRing;

const DAY_MS: u64 = 86_400_000;
/// Most recipients one followed email may have (each gets its own copy, and with
/// deliver "return" every copy is in the response).
pub const MAX_RECIPIENTS: usize = 1000;
/// Most bytes of copies handed back by one `deliver: "return"` request (before
/// base64, which adds a third). Copies are held in memory to build the
/// response, so a large message times many recipients must go through SMTP,
/// where each copy is rendered just before it is sent.
pub const MAX_RETURN_BYTES: usize = 48 * 1024 * 1024;

/// How the copies of a followed message leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deliver {
    /// Handed back to the caller, who sends them.
    Return,
    /// Sent through the configured SMTP relay, one envelope recipient each.
    Smtp,
}

impl Deliver {
    /// `"return"` or `"smtp"`, as the API and the record name them.
    pub fn from_name(name: &str) -> Option<Deliver> {
        match name {
            "return" => Some(Deliver::Return),
            "smtp" => Some(Deliver::Smtp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Deliver::Return => "return",
            Deliver::Smtp => "smtp",
        }
    }
}

/// What to follow.
pub enum FollowInput {
    /// A whole message: one copy per recipient.
    Message {
        /// Base64 RFC 5322, as the API carries it (whitespace ignored); decoded
        /// after the switches are checked.
        mime_base64: String,
        deliver: Deliver,
        /// A template or campaign name, already checked by the caller.
        template: Option<String>,
        /// `Deliver::Smtp` only: send the copies then (ms), not now. Checked
        /// by the caller (see `outbox::future_time`).
        send_at_ms: Option<u64>,
        /// A reminder (state `pending`), checked by the caller.
        reminder: Option<Reminder>,
    },
    /// An Outlook draft: Outlook sends one copy to everyone.
    Compose(ComposeDraft),
}

/// The draft Outlook's compose window hands over.
pub struct ComposeDraft {
    pub html: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub subject: Option<String>,
}

/// What was followed.
pub struct Followed {
    /// The stored email's id.
    pub id: u64,
    /// Per recipient, in the message's order: the stored recipient (with its
    /// delivery) and, for `Deliver::Return`, the copy. Compose: the one
    /// "recipient unknown".
    pub recipients: Vec<RecipientOutcome>,
    /// Compose only: the draft's HTML with the message's pixel and click links.
    pub html: Option<String>,
    /// How many links are tracked.
    pub links: usize,
    /// Compose only: why the draft was not followed (its HTML comes back
    /// untouched and nothing is stored), e.g. `"contact_opted_out"`.
    pub not_followed: Option<&'static str>,
    /// A whole message: the email's state, send time and reminder.
    pub schedule: Option<Schedule>,
}

/// The after-the-send part of a followed message, as first stored.
pub struct Schedule {
    /// See `outbox::email_state`.
    pub state: &'static str,
    pub send_at_ms: Option<u64>,
    pub reminder: Option<Reminder>,
}

pub struct RecipientOutcome {
    pub recipient: RecipientRecord,
    pub copy: Option<Vec<u8>>,
}

/// Why an email was not followed. Nothing is stored for any of them except
/// `Store` (which may come after the record was stored).
#[derive(Debug)]
pub enum FollowError {
    /// The organization's Email Engagement switch is off.
    EngagementDisabled,
    /// `Deliver::Smtp` without a relay configured.
    SmtpNotConfigured,
    /// The message is not non-empty base64.
    InvalidMime,
    /// The message (or, for `TooManyLinks`, the draft) cannot be prepared.
    Unpreparable(PrepareError),
    /// More than [`MAX_RECIPIENTS`] (the number given).
    TooManyRecipients(usize),
    /// A user may only send as themselves.
    SenderNotAllowed {
        allowed: String,
        from: String,
    },
    /// `Deliver::Return` would hand back more than [`MAX_RETURN_BYTES`].
    TooLargeToReturn {
        copies: usize,
        estimate: usize,
    },
    /// Compose: the draft's HTML is empty or cannot be prepared (the reason).
    InvalidHtml(String),
    /// Compose: a recipient (as given) is not an email address.
    InvalidRecipient(String),
    /// Compose: no recipient.
    NoRecipients,
    /// Compose: the caller's account has no email address to send as.
    NoSenderAddress,
    Store(StoreError),
}

impl From<StoreError> for FollowError {
    fn from(e: StoreError) -> Self {
        FollowError::Store(e)
    }
}

/// Follows one email for `user`.
pub async fn follow(app: &App, user: &User, input: FollowInput) -> Result<Followed, FollowError> {
    let settings = app.settings();
    if !settings.email_engagement {
        return Err(FollowError::EngagementDisabled);
    }
    match input {
        FollowInput::Message {
            mime_base64,
            deliver,
            template,
            send_at_ms,
            reminder,
        } => {
            let later = Later {
                send_at_ms,
                reminder,
            };
            follow_message(app, user, &settings, &mime_base64, deliver, template, later).await
        }
        FollowInput::Compose(draft) => follow_compose(app, user, &settings, draft).await,
    }
}

/// What rendering a recipient's copy needs, shared with the blocking tasks
/// that render copies.
struct Job {
    draft: Draft,
    keys: Arc<KeyRing>,
    plan: Plan,
    links: Vec<String>,
}

impl Job {
    fn render(&self, i: usize) -> Vec<u8> {
        render_copy(&self.draft, &self.keys, &self.plan, &self.links, i)
    }
}

/// What happens after the follow: a send time and a reminder.
struct Later {
    send_at_ms: Option<u64>,
    reminder: Option<Reminder>,
}

async fn follow_message(
    app: &App,
    user: &User,
    settings: &OrgSettings,
    mime_base64: &str,
    deliver: Deliver,
    template: Option<String>,
    later: Later,
) -> Result<Followed, FollowError> {
    if deliver == Deliver::Smtp && app.mailer.is_none() {
        return Err(FollowError::SmtpNotConfigured);
    }
    let cleaned: Vec<u8> = mime_base64
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let raw = match STANDARD.decode(&cleaned) {
        Ok(r) if !r.is_empty() => r,
        _ => return Err(FollowError::InvalidMime),
    };
    let prefix = format!("{}/c/", app.config.public_url);
    let parsed = tokio::task::spawn_blocking(move || {
        let draft = Draft::parse(&raw, &prefix, &Limits::default());
        (draft, raw)
    })
    .await;
    let (mut draft, raw) = match parsed {
        Ok((Ok(d), raw)) => (d, raw),
        Ok((Err(e), _)) => return Err(FollowError::Unpreparable(e)),
        Err(_) => return Err(malformed("the message could not be parsed")),
    };
    if draft.recipients().len() > MAX_RECIPIENTS {
        return Err(FollowError::TooManyRecipients(draft.recipients().len()));
    }
    let from = draft
        .from()
        .map(|f| f.normalized.clone())
        .unwrap_or_default();
    // Every From mailbox (several fields, several mailboxes in one) and the
    // Sender must be the user's own address; admins may send as anyone.
    if user.role != Role::Admin {
        if let Some(other) = draft.senders().iter().find(|s| **s != user.email) {
            return Err(FollowError::SenderNotAllowed {
                allowed: user.email.clone(),
                from: other.clone(),
            });
        }
    }
    // Copies of a message without Message-ID or Date get them here (the relay
    // takes them as submitted mail and would pass them on without).
    let added_id = format!(
        "{}.mailbeacon@{}",
        id_to_text(random_id()),
        id_domain(&from)
    );
    let added_date = rfc5322(now_ms());
    draft.add_missing_headers(&added_id, &added_date);
    let not_followed = contact_preferences(app, &draft).await?;
    let created_ms = now_ms();
    let plan = Plan {
        id: random_id(),
        owner: user.id,
        created_ms,
        expires_ms: created_ms + u64::from(settings.retention_days) * DAY_MS,
        deliver: deliver.name().into(),
        public_url: app.config.public_url.clone(),
        template,
        not_followed,
    };
    let mut record = record(&draft, &plan);
    record.send_at_ms = later.send_at_ms;
    record.reminder = later.reminder;
    let links = encoded_links(&draft);
    let job = Arc::new(Job {
        draft,
        keys: app.keys(),
        plan,
        links,
    });
    // "return": every copy is rendered first (off the runtime), within
    // MAX_RETURN_BYTES, so an oversized request stores nothing.
    let mut copies = Vec::new();
    if deliver == Deliver::Return {
        let job = job.clone();
        copies = match tokio::task::spawn_blocking(move || render_all(&job)).await {
            Ok(Ok(copies)) => copies,
            Ok(Err(estimate)) => {
                return Err(FollowError::TooLargeToReturn {
                    copies: record.recipients.len(),
                    estimate,
                })
            }
            Err(_) => return Err(malformed("the message could not be prepared")),
        };
    }
    let now = app.clock.now_ms();
    if deliver == Deliver::Smtp {
        let state = if later.send_at_ms.is_some() {
            "scheduled"
        } else {
            "queued"
        };
        for r in &mut record.recipients {
            r.delivery = Some(Delivery::new(state, None, now));
        }
    }
    // The record is durable before any copy leaves: every token handed out
    // belongs to a stored email.
    app.store.put_email(record.clone()).await?;
    let id = record.id;
    if deliver == Deliver::Smtp {
        let source = outbox::Source {
            public_url: job.plan.public_url.clone(),
            message_id: added_id,
            date: added_date,
            opted_out: job.plan.not_followed.iter().map(Option::is_some).collect(),
        };
        let due = record.send_at_ms.unwrap_or(now);
        outbox::enqueue_copies(app, &record, &source, &raw, due).await?;
    }
    if let Some(rem) = &record.reminder {
        if let Err(e) = outbox::reminder::arm(app, id, rem.at_ms).await {
            tracing::error!(?e, "could not arm a reminder");
        }
    }
    let schedule = Schedule {
        state: record.state(),
        send_at_ms: record.send_at_ms,
        reminder: record.reminder.clone(),
    };
    let recipients = record
        .recipients
        .into_iter()
        .zip(copies.into_iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(mut r, copy)| {
            if copy.is_some() {
                r.delivery = Some(Delivery::new("returned", None, now));
            }
            RecipientOutcome { recipient: r, copy }
        })
        .collect();
    Ok(Followed {
        id,
        recipients,
        html: None,
        links: job.draft.links().len(),
        not_followed: None,
        schedule: Some(schedule),
    })
}

fn malformed(message: &str) -> FollowError {
    FollowError::Unpreparable(PrepareError {
        kind: ErrorKind::Malformed,
        message: message.into(),
    })
}

/// The right-hand side of a Message-ID we add: the sender's domain when it is a
/// plain host name (an id-right that needs no quoting), else a reserved name.
fn id_domain(from: &str) -> &str {
    from.rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| {
            !d.is_empty()
                && d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
        .unwrap_or("mailbeacon.invalid")
}

/// For each recipient, in order: `None` to follow them, or why not (their
/// contact preference).
async fn contact_preferences(
    app: &App,
    draft: &Draft,
) -> Result<Vec<Option<&'static str>>, StoreError> {
    let addresses: Vec<String> = draft
        .recipients()
        .iter()
        .map(|r| r.normalized.clone())
        .collect();
    let prefs = app.store.contacts(&addresses).await?;
    Ok(prefs
        .iter()
        .map(|p| {
            p.as_ref()
                .is_some_and(|c| c.follow_email == FollowEmail::DoNotAllow)
                .then_some("contact_opted_out")
        })
        .collect())
}

/// Renders every copy, or gives up with an estimate of the total size once
/// it would pass `MAX_RETURN_BYTES` (judged from the first copy, so an
/// oversized request fails before most of the work).
fn render_all(job: &Job) -> Result<Vec<Vec<u8>>, usize> {
    let n = job.draft.recipients().len();
    let mut copies = Vec::with_capacity(n);
    let mut total = 0usize;
    for i in 0..n {
        let copy = job.render(i);
        total += copy.len();
        let estimate = total.max(copy.len().saturating_mul(n));
        if (i == 0 && estimate > MAX_RETURN_BYTES) || total > MAX_RETURN_BYTES {
            return Err(estimate);
        }
        copies.push(copy);
    }
    Ok(copies)
}

/// Follow from compose: Outlook sends one copy to everyone, so this is
/// message-level tracking: one pixel and one set of links for the whole
/// message, reported under the single recipient "recipient unknown". If any
/// recipient's contact preference is "do not allow", nothing is followed and
/// the draft's HTML comes back as it was (`Followed::not_followed`).
async fn follow_compose(
    app: &App,
    user: &User,
    settings: &OrgSettings,
    draft: ComposeDraft,
) -> Result<Followed, FollowError> {
    if draft.html.trim().is_empty() {
        return Err(FollowError::InvalidHtml(
            "html must be the draft's HTML body".into(),
        ));
    }
    for a in draft.to.iter().chain(&draft.cc).chain(&draft.bcc) {
        if normalize_address(a).is_none() {
            return Err(FollowError::InvalidRecipient(a.clone()));
        }
    }
    if draft.to.is_empty() && draft.cc.is_empty() && draft.bcc.is_empty() {
        return Err(FollowError::NoRecipients);
    }
    if !user.email.contains('@') {
        return Err(FollowError::NoSenderAddress);
    }
    // Outlook's one copy goes to everyone, so one opted-out recipient means
    // the message is not followed at all: the HTML comes back untracked.
    let addresses: Vec<String> = draft
        .to
        .iter()
        .chain(&draft.cc)
        .chain(&draft.bcc)
        .filter_map(|a| normalize_address(a))
        .collect();
    let opted_out = app.store.contacts(&addresses).await?.iter().any(|c| {
        c.as_ref()
            .is_some_and(|c| c.follow_email == FollowEmail::DoNotAllow)
    });
    if opted_out {
        return Ok(Followed {
            id: 0,
            recipients: Vec::new(),
            html: Some(draft.html),
            links: 0,
            not_followed: Some("contact_opted_out"),
            schedule: None,
        });
    }
    let subject: String = draft
        .subject
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let created_ms = now_ms();
    let plan = Plan {
        id: random_id(),
        owner: user.id,
        created_ms,
        expires_ms: created_ms + u64::from(settings.retention_days) * DAY_MS,
        deliver: "outlook".into(),
        public_url: app.config.public_url.clone(),
        template: None,
        not_followed: vec![None],
    };
    let keys = app.keys();
    let prefix = format!("{}/c/", app.config.public_url);
    let html = draft.html;
    let prepared = tokio::task::spawn_blocking(move || {
        let body = HtmlBody::parse(&html, &prefix, &Limits::default())?;
        // One copy (recipient index 0): its tokens stand for everyone who
        // receives Outlook's single copy.
        let html = render::render_html(&body, &keys, &plan, 0);
        Ok::<_, PrepareError>((plan, body, html))
    })
    .await;
    let (plan, body, html) = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(e)) if e.kind == ErrorKind::TooManyLinks => {
            return Err(FollowError::Unpreparable(e))
        }
        Ok(Err(e)) => return Err(FollowError::InvalidHtml(e.message)),
        Err(_) => {
            return Err(FollowError::InvalidHtml(
                "the draft could not be prepared".into(),
            ))
        }
    };
    let subject = subject.trim();
    let record = render::message_level_record(
        &plan,
        &user.email.trim().to_lowercase(),
        (!subject.is_empty()).then_some(subject),
        body.links(),
    );
    app.store.put_email(record.clone()).await?;
    Ok(Followed {
        id: record.id,
        recipients: record
            .recipients
            .into_iter()
            .map(|r| RecipientOutcome {
                recipient: r,
                copy: None,
            })
            .collect(),
        html: Some(html),
        links: record.links.len(),
        not_followed: None,
        schedule: None,
    })
}
