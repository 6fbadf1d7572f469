//! Data-subject requests: export, and erase, everything stored about one address.
//!
//! What "about an address" covers: followed emails it received (its recipient
//! entry, delivery result and every open and click it made) or sent (as From),
//! tracked emails (Email Activities) it took part in, its contact preference, and
//! audit entries about it. The keyed-hash index in the
//! store (`Store::emails_mentioning`) finds the emails without scanning.
//!
//! Erase is idempotent and leaves no trace of the address, in clear, as its
//! keyed hash, or sealed: recipient entries are blanked and marked erased (so
//! later hits on links already sent are not recorded), their events and reply
//! facts deleted, a copy still waiting in the outbox cancelled (and the email's
//! stored source dropped when no copy waits any more, else rewritten without
//! the address), the index entries dropped, activities it took part in deleted,
//! the contact preference deleted, audit entries blanked, and the retained
//! real-time feed (24 h) rewritten without the address. Last, `Store::scrub`
//! makes the deletions physical: the embedded store compacts its redb file (no
//! freed page keeps the old bytes) and empties its event journal; a single
//! Redis node rewrites its AOF (Cluster: the operator's step, see the README).
//! Links in mail already sent keep redirecting: their destination is in the
//! signed URL.
//!
//! Decision: delete and compact rather than crypto-shred (a key per subject):
//! see `store::embedded::Embedded::scrub`.
//!
//! Users (CRM accounts) are not data subjects of tracking and are managed apart.

use serde_json::{json, Value};

use crate::classify::{classify_all, Heuristics, Machine};
use crate::ids::{id_to_text, now_ms, rfc3339};
use crate::model::{Delivery, EmailRecord};
use crate::store::queue::{Cancelled, NewJob};
use crate::store::{Result, Store};

/// The outbox's queue of recipient copies (`state::App::outbox`; job ids
/// `<email id>:<recipient index>`).
const OUTBOX_COPIES: &str = "outbox";
/// What an erased address becomes in a source the outbox still needs.
const ERASED_ADDRESS: &str = "erased@invalid";

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
    /// Reply facts deleted.
    pub replies: u64,
    /// Outbox copies to the address cancelled before they were sent.
    pub copies_cancelled: u64,
    /// Real-time feed entries rewritten (or, on Redis, deleted).
    pub feed_entries: u64,
}

/// Erases everything stored about `address` (normalized). Idempotent.
pub async fn erase(store: &Store, address: &str) -> Result<Erased> {
    let mut out = Erased::default();
    let now = now_ms();
    for id in store.emails_mentioning(address).await? {
        let Some(mut rec) = store.get_email(id).await? else {
            continue;
        };
        let mine: Vec<usize> = (0..rec.recipients.len())
            .filter(|&i| rec.recipients[i].address == address)
            .collect();
        for &i in &mine {
            out.events += store.erase_recipient_events(id, i as u32).await?;
            out.replies += store.erase_replies(id, i as u32).await?;
        }
        out.copies_cancelled += cancel_copies(store, &mut rec, &mine, now).await?;
        for &i in &mine {
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
        if rec.deliver == "smtp" {
            forget_in_source(store, &rec, address, now).await?;
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
    out.feed_entries = store
        .feed_rewrite(|text| without_address(text, address))
        .await?;
    store.scrub().await?;
    Ok(out)
}

/// Cancels the outbox copies of `mine` that still wait (queued or scheduled);
/// a copy a worker is sending right now is left to finish. Returns how many.
async fn cancel_copies(
    store: &Store,
    rec: &mut EmailRecord,
    mine: &[usize],
    now: u64,
) -> Result<u64> {
    let mut n = 0;
    for &i in mine {
        let r = &mut rec.recipients[i];
        let waiting = r
            .delivery
            .as_ref()
            .is_some_and(|d| d.state == "queued" || d.state == "scheduled");
        if !waiting {
            continue;
        }
        let job = format!("{}:{i}", id_to_text(rec.id));
        match store.cancel(OUTBOX_COPIES, &job, now).await? {
            Cancelled::Leased => {}
            Cancelled::Removed | Cancelled::Missing => {
                r.delivery = Some(Delivery::new("cancelled", None, now));
                n += 1;
            }
        }
    }
    Ok(n)
}

/// The outbox keeps an email's source (the original message, naming every
/// recipient) until its copies are final. Once none waits, it is dropped;
/// while others still wait, it is stored again with the address replaced.
async fn forget_in_source(store: &Store, rec: &EmailRecord, address: &str, now: u64) -> Result<()> {
    let id = id_to_text(rec.id);
    let sources = crate::outbox::SOURCES;
    if crate::outbox::all_final(rec) {
        store.cancel(sources, &id, now).await?;
        return Ok(());
    }
    let Some(job) = store.get_job(sources, &id, now).await? else {
        return Ok(());
    };
    let Some(payload) = replace_ignoring_case(&job.payload, address, ERASED_ADDRESS) else {
        return Ok(());
    };
    // A source is only read, never leased, so cancel and enqueue replace it.
    store.cancel(sources, &id, now).await?;
    store
        .enqueue(
            sources,
            vec![NewJob {
                id,
                due_ms: job.due_ms,
                payload,
            }],
        )
        .await?;
    Ok(())
}

/// `bytes` with every ASCII-case-insensitive occurrence of `needle` replaced, or
/// `None` if there is none.
fn replace_ignoring_case(bytes: &[u8], needle: &str, with: &str) -> Option<Vec<u8>> {
    let n = needle.as_bytes();
    if n.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    let mut found = false;
    while at < bytes.len() {
        if bytes[at..].len() >= n.len() && bytes[at..at + n.len()].eq_ignore_ascii_case(n) {
            out.extend_from_slice(with.as_bytes());
            at += n.len();
            found = true;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    found.then_some(out)
}

/// A feed entry (JSON) without any field whose value is `address`; `None` if
/// it has none. Format-agnostic on purpose: whatever carries the address goes.
fn without_address(text: &str, address: &str) -> Option<String> {
    if !text.to_ascii_lowercase().contains(address) {
        return None;
    }
    // An entry of earlier versions: one JSON array.
    if let Ok(mut v) = serde_json::from_str::<Value>(text) {
        let mut changed = false;
        strip(&mut v, address, &mut changed);
        return changed.then(|| v.to_string());
    }
    // One line per event, `<owner>\t<machine>\t<type>\t<JSON>` (see
    // `realtime::feed`): the address is taken out of each line's JSON.
    let mut changed = false;
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| {
            let mut f = line.splitn(4, '\t');
            let (Some(o), Some(m), Some(kind), Some(json)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                return line.to_owned();
            };
            let Ok(mut v) = serde_json::from_str::<Value>(json) else {
                return line.to_owned();
            };
            let mut hit = false;
            strip(&mut v, address, &mut hit);
            changed |= hit;
            if hit {
                format!("{o}\t{m}\t{kind}\t{v}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    changed.then(|| lines.join("\n"))
}

fn strip(v: &mut Value, address: &str, changed: &mut bool) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| {
                let hit = x.as_str().is_some_and(|s| s.eq_ignore_ascii_case(address));
                *changed |= hit;
                !hit
            });
            for x in m.values_mut() {
                strip(x, address, changed);
            }
        }
        Value::Array(xs) => {
            for x in xs {
                strip(x, address, changed);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_leaves_a_feed_entry_and_only_it() {
        let text = r#"[{"o":1,"e":{"data":{"recipient":"Dana@x.test","first":true}}},{"o":1,"e":{"data":{"recipient":"bob@x.test"}}}]"#;
        let got: Value =
            serde_json::from_str(&without_address(text, "dana@x.test").unwrap()).unwrap();
        assert_eq!(got[0]["e"]["data"], serde_json::json!({"first": true}));
        assert_eq!(got[1]["e"]["data"]["recipient"], "bob@x.test");
        assert_eq!(without_address(text, "carol@x.test"), None);
    }

    #[test]
    fn the_address_leaves_a_line_entry_and_only_it() {
        let text =
            "1\t0\temail.opened\t{\"data\":{\"recipient\":\"Dana@x.test\",\"first\":true}}\n\
                    2\t0\temail.opened\t{\"data\":{\"recipient\":\"bob@x.test\"}}";
        let got = without_address(text, "dana@x.test").unwrap();
        let lines: Vec<&str> = got.split('\n').collect();
        assert_eq!(lines[0], "1\t0\temail.opened\t{\"data\":{\"first\":true}}");
        assert_eq!(lines[1], text.split('\n').nth(1).unwrap());
        assert!(!got.to_ascii_lowercase().contains("dana@x.test"));
        assert_eq!(without_address(text, "carol@x.test"), None);
    }

    #[test]
    fn replacing_ignores_ascii_case() {
        let got =
            replace_ignoring_case(b"To: Dana <DANA@x.test>, dana@x.test", "dana@x.test", "e@i");
        assert_eq!(got.as_deref(), Some(&b"To: Dana <e@i>, e@i"[..]));
        assert_eq!(
            replace_ignoring_case(b"nothing", "dana@x.test", "e@i"),
            None
        );
    }
}
