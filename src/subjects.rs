//! Data-subject requests: export, and erase, everything stored about one address.
//!
//! What "about an address" covers: followed emails it received (its recipient
//! entry, delivery result and every open and click it made) or sent (as From),
//! tracked emails (Email Activities) it took part in, its contact preference, and
//! audit entries about it. The keyed-hash index in the
//! store (`Store::emails_mentioning`) finds the emails without scanning.
//!
//! Erase is idempotent and leaves no trace of the address, in clear or as its
//! keyed hash: recipient entries are blanked and marked erased (so later hits on
//! links already sent are not recorded), their events deleted, the index entries
//! dropped, activities it took part in deleted, the contact preference deleted,
//! audit entries blanked. Links in mail
//! already sent keep redirecting: their destination is in the signed URL.
//!
//! Users (CRM accounts) are not data subjects of tracking and are managed apart.

use serde_json::{json, Value};

use crate::classify::{classify_all, Heuristics, Machine};
use crate::ids::{id_to_text, rfc3339};
use crate::store::{Result, Store};

/// Everything stored about `address` (normalized), as JSON.
pub async fn export(store: &Store, address: &str, h: &Heuristics) -> Result<Value> {
    let contact = store.contact(address).await?;
    let mut received = Vec::new();
    let mut sent = Vec::new();
    for id in store.emails_mentioning(address).await? {
        let Some(rec) = store.get_email(id).await? else {
            continue;
        };
        if rec.from == address {
            sent.push(json!({
                "email_id": id_to_text(id),
                "subject": rec.subject,
                "created_at": rfc3339(rec.created_ms),
                "recipients": rec.recipients.len(),
            }));
        }
        let mine: Vec<usize> = (0..rec.recipients.len())
            .filter(|&i| rec.recipients[i].address == address)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let events = store.events_for(id).await?;
        let classes = classify_all(&events, &h.for_delivery(&rec.deliver));
        for i in mine {
            let r = &rec.recipients[i];
            let evs: Vec<Value> = events
                .iter()
                .zip(&classes)
                .filter(|(e, _)| e.recipient as usize == i)
                .map(|(e, c)| {
                    json!({
                        "at": rfc3339(e.at_ms),
                        "kind": e.kind,
                        "link": e.link.and_then(|l| rec.links.get(l as usize)),
                        "user_agent": e.ua,
                        "network": e.ip,
                        "machine": c.map(Machine::as_str),
                    })
                })
                .collect();
            received.push(json!({
                "email_id": id_to_text(id),
                "from": rec.from,
                "subject": rec.subject,
                "created_at": rfc3339(rec.created_ms),
                "field": r.field,
                "name": r.name,
                "followed": r.followed,
                "reason": r.reason,
                "delivery": r.delivery.as_ref().map(|d| json!({
                    "state": d.state, "detail": d.detail, "at": rfc3339(d.at_ms)
                })),
                "events": evs,
            }));
        }
    }
    let mut activities = Vec::new();
    for id in store.activities_mentioning(address).await? {
        if let Some(a) = store.get_activity(id).await? {
            activities.push(crate::addin::activities::to_json(&a, true));
        }
    }
    let audit: Vec<Value> = store
        .audit_log(None, usize::MAX)
        .await?
        .into_iter()
        .filter(|e| e.subject.as_deref() == Some(address))
        .map(|e| json!({"at": rfc3339(e.at_ms), "action": e.action, "detail": e.detail}))
        .collect();
    Ok(json!({
        "address": address,
        "contact": contact.map(|c| json!({
            "follow_email": c.follow_email,
            "updated_at": rfc3339(c.updated_ms),
        })),
        "emails_received": received,
        "emails_sent": sent,
        "activities": activities,
        "audit": audit,
    }))
}

/// What an erase removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Erased {
    pub emails: u64,
    pub activities: u64,
    pub events: u64,
    pub contact: bool,
    pub audit_entries: u64,
}

/// Erases everything stored about `address` (normalized). Idempotent.
pub async fn erase(store: &Store, address: &str) -> Result<Erased> {
    let mut out = Erased::default();
    for id in store.emails_mentioning(address).await? {
        let Some(mut rec) = store.get_email(id).await? else {
            continue;
        };
        for i in 0..rec.recipients.len() {
            if rec.recipients[i].address != address {
                continue;
            }
            out.events += store.erase_recipient_events(id, i as u32).await?;
            let r = &mut rec.recipients[i];
            r.address.clear();
            r.name = None;
            r.erased = true;
            if let Some(d) = r.delivery.as_mut() {
                d.detail = None;
            }
        }
        if rec.from == address {
            rec.from.clear();
        }
        // Rewriting the record recomputes its lookups without this address, which
        // drops the index entries.
        store.put_email(rec).await?;
        out.emails += 1;
    }
    for id in store.activities_mentioning(address).await? {
        if store.delete_activity(id).await? {
            out.activities += 1;
        }
    }
    out.contact = store.delete_contact(address).await?;
    out.audit_entries = store.redact_audit(address).await?;
    store.scrub().await?;
    Ok(out)
}
