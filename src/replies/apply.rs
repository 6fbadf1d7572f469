//! One message read from a watched INBOX, turned into facts: a reply from a
//! recipient of one of the owner's followed emails (a `Reply`: recipient and
//! time, nothing of the content), or a delivery status notification that marks
//! a recipient's delivery `bounced`; and the application events they raise.

use serde_json::{json, Map};

use super::parse::{DsnRecipient, Header};
use crate::ids::id_to_text;
use crate::model::{Delivery, EmailRecord, Reply};
use crate::realtime::{AppEvent, EventType};
use crate::state::App;
use crate::store::StoreError;

/// A message as the watcher read it (headers only, plus a DSN's status part).
#[derive(Debug, Clone)]
pub struct Seen {
    pub header: Header,
    /// Stands in for the Message-ID of a message without one (a hash of its
    /// header bytes), so that it still counts once.
    pub fallback_id: String,
    /// INTERNALDATE: when the message arrived.
    pub at_ms: u64,
    /// For a DSN: its per-recipient fields and the returned copy's Message-ID.
    pub dsn: Option<(Vec<DsnRecipient>, Option<String>)>,
}

/// What a bounce writes into a recipient's delivery. (The outbox names the
/// field `state`; this is the one place that knows.)
fn bounced(detail: Option<String>, at_ms: u64) -> Delivery {
    Delivery {
        state: "bounced".into(),
        detail,
        at_ms,
    }
}

fn is_bounced(d: Option<&Delivery>) -> bool {
    d.is_some_and(|d| d.state == "bounced")
}

/// The followed emails of `owner` whose Message-ID is `message_id`.
async fn owned(app: &App, owner: u64, message_id: &str) -> Result<Vec<EmailRecord>, StoreError> {
    let mut out = Vec::new();
    for id in app.store.emails_by_message_id(message_id).await? {
        if let Some(rec) = app.store.get_email(id).await? {
            if rec.owner == owner && rec.message_id.as_deref() == Some(message_id) {
                out.push(rec);
            }
        }
    }
    Ok(out)
}

/// Records what `m` says for the mailbox of `owner`. A store failure is
/// returned, so the watcher reads the message again later (facts are
/// idempotent).
pub async fn apply(app: &App, owner: u64, m: &Seen) -> Result<(), StoreError> {
    let events = match &m.dsn {
        Some((recipients, returned)) => bounce(app, owner, m, recipients, returned).await?,
        None => reply(app, owner, m).await?,
    };
    if !events.is_empty() {
        app.realtime.emit(events);
    }
    Ok(())
}

/// A reply: the nearest parent that is a followed email of the owner with the
/// sender among its (followed, not erased) recipients.
async fn reply(app: &App, owner: u64, m: &Seen) -> Result<Vec<AppEvent>, StoreError> {
    let Some(from) = m.header.from.as_deref() else {
        return Ok(Vec::new());
    };
    let own_id = m.header.message_id.as_deref().unwrap_or(&m.fallback_id);
    let key = app.store.reply_key(own_id);
    let mut events = Vec::new();
    for parent in &m.header.parents {
        let mut matched = false;
        for rec in owned(app, owner, parent).await? {
            let Some(i) = rec
                .recipients
                .iter()
                .position(|r| r.address == from && r.followed && !r.erased)
            else {
                continue;
            };
            matched = true;
            let i = i as u32;
            let first = !app
                .store
                .replies_for(rec.id)
                .await?
                .iter()
                .any(|r| r.recipient == i);
            let fact = Reply {
                recipient: i,
                at_ms: m.at_ms,
            };
            if app.store.add_reply(rec.id, &key, fact).await? {
                tracing::info!(email = %id_to_text(rec.id), recipient = i, "reply recorded");
                let mut extra = Map::new();
                extra.insert("subject".into(), json!(rec.subject));
                events.push(AppEvent {
                    id: format!(
                        "rep_{}_{i}_{}",
                        id_to_text(rec.id),
                        key.get(..16).unwrap_or(&key)
                    ),
                    kind: EventType::EmailReplied,
                    at_ms: m.at_ms,
                    owner,
                    email_id: rec.id,
                    recipient: Some(from.to_string()),
                    machine: false,
                    first,
                    extra,
                });
            }
        }
        if matched {
            break;
        }
    }
    Ok(events)
}

/// A DSN: every failed recipient it names, of every followed email of the
/// owner it refers to (the returned copy's Message-ID, X-Original-Message-ID,
/// In-Reply-To, References), becomes `bounced`.
async fn bounce(
    app: &App,
    owner: u64,
    m: &Seen,
    recipients: &[DsnRecipient],
    returned: &Option<String>,
) -> Result<Vec<AppEvent>, StoreError> {
    let mut ids: Vec<&String> = returned.iter().collect();
    for p in &m.header.parents {
        if !ids.contains(&p) {
            ids.push(p);
        }
    }
    let mut events = Vec::new();
    for mid in ids {
        for mut rec in owned(app, owner, mid).await? {
            let mut changed = false;
            for d in recipients.iter().filter(|d| d.failed) {
                for (i, r) in rec.recipients.iter_mut().enumerate() {
                    if r.erased
                        || !d.addresses.contains(&r.address)
                        || is_bounced(r.delivery.as_ref())
                    {
                        continue;
                    }
                    r.delivery = Some(bounced(d.detail.clone(), m.at_ms));
                    changed = true;
                    let mut extra = Map::new();
                    extra.insert("state".into(), json!("bounced"));
                    extra.insert("detail".into(), json!(d.detail));
                    events.push(AppEvent {
                        id: format!("bnc_{}_{i}", id_to_text(rec.id)),
                        kind: EventType::EmailDeliveryFailed,
                        at_ms: m.at_ms,
                        owner,
                        email_id: rec.id,
                        recipient: Some(r.address.clone()),
                        machine: false,
                        first: false,
                        extra,
                    });
                }
            }
            if changed {
                tracing::info!(email = %id_to_text(rec.id), "bounce recorded");
                app.store.put_email(rec).await?;
            }
        }
    }
    Ok(events)
}
