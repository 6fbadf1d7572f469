//! Recorded hits → application events (`email.opened`, `email.clicked`), off
//! the hot path, one recorder batch at a time.
//!
//! For each batch: the emails' owner, subject, recipients and links come from a
//! bounded in-memory cache (one store read per email not cached, read
//! concurrently on Redis; bounded in bytes, two generations, so a newsletter with
//! thousands of recipients cannot make it large and a full cache does not
//! forget the emails being hit right now); `machine` is
//! `classify::classify` on the event itself; `first` is one set-if-absent mark
//! per human event (`Store::mark_first`, a single call per batch), so no email's
//! events are ever read here. Marks known to be set (by this process, or found
//! set) are remembered in a bounded set and not asked again: a mark is never
//! unset while its email can still be hit, so a repeated open costs no store
//! call. Hits of owners nobody can receive from (`audience`) only get their
//! marks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt as _;
use serde_json::{json, Map};

use super::audience::Receivers;
use super::{AppEvent, EventType};
use crate::classify::{classify, Heuristics};
use crate::model::{Event, EventKind};
use crate::store::realtime::FirstMark;
use crate::store::Store;

/// The email cache's budget: each of its two generations holds at most half
/// of these bytes (estimated by `EmailInfo::bytes`) and half of these emails.
const CACHE_BYTES: usize = 8 << 20;
const CACHE_EMAILS: usize = 10_000;
/// First marks remembered as set; past this the set is emptied (about 3 MiB).
const KNOWN_MARKS: usize = 100_000;

/// A first mark's identity: email, recipient, kind.
type MarkKey = (u64, u32, u8);

/// What derivation needs of an email.
struct EmailInfo {
    owner: u64,
    subject: Option<String>,
    recipients: Vec<Option<String>>,
    links: Vec<String>,
    expires_ms: u64,
    heuristics: Heuristics,
}

impl EmailInfo {
    /// About what this takes on the heap (for the cache's budget).
    fn bytes(&self) -> usize {
        let s = |x: &str| x.len() + 24;
        256 + self.subject.as_deref().map_or(0, s)
            + self
                .recipients
                .iter()
                .map(|r| r.as_deref().map_or(24, s))
                .sum::<usize>()
            + self.links.iter().map(|l| s(l)).sum::<usize>()
    }
}

/// Emails read for derivation, in two generations: lookups promote from the
/// older one, and when the newer one reaches half the budget the older one is
/// dropped and the newer one takes its place. So the cache stays within
/// `CACHE_BYTES` (plus one email larger than half of it), and what is being
/// hit now survives a turnover. `None` caches "no such email".
#[derive(Default)]
struct EmailCache {
    new: HashMap<u64, Option<Arc<EmailInfo>>>,
    old: HashMap<u64, Option<Arc<EmailInfo>>>,
    new_bytes: usize,
}

impl EmailCache {
    fn get(&mut self, id: u64) -> Option<Option<Arc<EmailInfo>>> {
        if let Some(hit) = self.new.get(&id) {
            return Some(hit.clone());
        }
        let hit = self.old.remove(&id)?;
        self.insert(id, hit.clone());
        Some(hit)
    }

    fn insert(&mut self, id: u64, info: Option<Arc<EmailInfo>>) {
        let bytes = info.as_ref().map_or(64, |i| i.bytes());
        if !self.new.is_empty()
            && (self.new_bytes + bytes > CACHE_BYTES / 2 || self.new.len() >= CACHE_EMAILS / 2)
        {
            self.old = std::mem::take(&mut self.new);
            self.new_bytes = 0;
        }
        self.new_bytes += bytes;
        self.new.insert(id, info);
    }

    fn clear(&mut self) {
        *self = EmailCache::default();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.new.len() + self.old.len()
    }
}

/// The kind's code in a first mark.
fn mark_kind(k: EventKind) -> u8 {
    match k {
        EventKind::Open => 0,
        EventKind::Click => 1,
        EventKind::Attachment => 2,
    }
}

pub struct Deriver {
    store: Store,
    heuristics: Heuristics,
    cache: Mutex<EmailCache>,
    /// First marks known to be set in the store.
    known: Mutex<HashSet<MarkKey>>,
    /// `Store::erasures` when the caches were last emptied: an erase empties
    /// them, so no event is told with an erased recipient's address.
    erasures: std::sync::atomic::AtomicU64,
}

impl Deriver {
    pub fn new(store: Store, heuristics: Heuristics) -> Deriver {
        Deriver {
            store,
            heuristics,
            cache: Mutex::new(EmailCache::default()),
            known: Mutex::new(HashSet::new()),
            erasures: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn cached(&self, id: u64) -> Option<Option<Arc<EmailInfo>>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let erasures = self.store.erasures();
        if self
            .erasures
            .swap(erasures, std::sync::atomic::Ordering::Relaxed)
            != erasures
        {
            cache.clear();
            self.known().clear();
        }
        cache.get(id)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashSet<MarkKey>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn info(&self, id: u64) -> Option<Arc<EmailInfo>> {
        if let Some(hit) = self.cached(id) {
            return hit;
        }
        let info = match self.store.get_email(id).await {
            Ok(rec) => rec.map(|r| {
                Arc::new(EmailInfo {
                    owner: r.owner,
                    subject: r.subject.clone(),
                    recipients: r
                        .recipients
                        .iter()
                        .map(|x| (!x.erased && !x.address.is_empty()).then(|| x.address.clone()))
                        .collect(),
                    links: r.links.clone(),
                    expires_ms: r.expires_ms,
                    heuristics: self.heuristics.for_delivery(&r.deliver),
                })
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read an email for its events' notifications");
                return None;
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(id, info.clone());
        info
    }

    /// The application events for one committed batch of hits, for the
    /// owners in `to`; the others' hits only get their first marks.
    pub async fn derive(&self, hits: Vec<Event>, to: &Receivers) -> Vec<AppEvent> {
        let mut ids: Vec<u64> = hits.iter().map(|h| h.email).collect();
        ids.sort_unstable();
        ids.dedup();
        // Concurrently where the store gains from it: on Redis the reads share
        // round trips (one connection, pipelined), so a batch spread over many
        // new emails costs a few round trips, not one per email, and hits do
        // not pile up waiting here.
        let infos: HashMap<u64, Option<Arc<EmailInfo>>> = futures_util::stream::iter(ids)
            .map(|id| async move { (id, self.info(id).await) })
            .buffer_unordered(self.store.concurrent_reads())
            .collect()
            .await;
        let known: Vec<bool> = {
            let k = self.known();
            hits.iter()
                .map(|h| k.contains(&(h.email, h.recipient, mark_kind(h.kind))))
                .collect()
        };
        let mut events = Vec::with_capacity(hits.len());
        let mut marks = Vec::new();
        let mut human_at = Vec::new();
        for (h, known) in hits.into_iter().zip(known) {
            let Some(Some(info)) = infos.get(&h.email) else {
                continue;
            };
            let Some(Some(recipient)) = info.recipients.get(h.recipient as usize) else {
                // An erased (or unknown) recipient: nothing to tell.
                continue;
            };
            let told = to.includes(info.owner);
            if !told && known {
                // Nobody to tell, and its mark is set already.
                continue;
            }
            let machine = classify(&h, &info.heuristics).is_some();
            if !machine && !known {
                marks.push(FirstMark {
                    email: h.email,
                    recipient: h.recipient,
                    kind: mark_kind(h.kind),
                    expires_ms: info.expires_ms,
                });
                // The index its event gets (pushed below), if it is told.
                human_at.push(told.then_some(events.len()));
            }
            if !told {
                continue;
            }
            let kind = match h.kind {
                EventKind::Open => EventType::EmailOpened,
                EventKind::Click => EventType::EmailClicked,
                EventKind::Attachment => EventType::EmailAttachmentViewed,
            };
            let mut extra = Map::new();
            if let Some(s) = &info.subject {
                extra.insert("subject".into(), json!(s));
            }
            if let (EventKind::Attachment, Some(index)) = (h.kind, h.link) {
                extra.insert("attachment".into(), json!(index));
            } else if let Some(link) = h.link {
                extra.insert("link".into(), json!(link));
                if let Some(url) = info.links.get(link as usize) {
                    extra.insert("url".into(), json!(url));
                }
            }
            events.push(AppEvent {
                id: String::new(),
                kind,
                at_ms: h.at_ms,
                owner: info.owner,
                email_id: h.email,
                recipient: Some(recipient.clone()),
                machine,
                first: false,
                extra,
            });
        }
        let keys: Vec<MarkKey> = marks
            .iter()
            .map(|m| (m.email, m.recipient, m.kind))
            .collect();
        match self.store.mark_first(marks).await {
            Ok(firsts) => {
                for (at, first) in human_at.into_iter().zip(firsts) {
                    if let Some(i) = at {
                        events[i].first = first;
                    }
                }
                // Set now, whether by this call or before it.
                let mut known = self.known();
                if known.len() + keys.len() > KNOWN_MARKS {
                    known.clear();
                }
                known.extend(keys);
            }
            Err(e) => tracing::warn!(error = %e, "cannot mark first activity; sent as not first"),
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EmailRecord, RecipientRecord};
    use crate::seal::Sealer;
    use crate::store::embedded::Embedded;
    use crate::store::Backend;

    fn info(recipients: usize) -> Option<Arc<EmailInfo>> {
        Some(Arc::new(EmailInfo {
            owner: 1,
            subject: Some("Quarterly review".into()),
            recipients: (0..recipients)
                .map(|i| Some(format!("person{i}@example.com")))
                .collect(),
            links: vec!["https://example.com/a".into()],
            expires_ms: u64::MAX,
            heuristics: Heuristics::default(),
        }))
    }

    fn cache_bytes(c: &EmailCache) -> usize {
        c.new
            .values()
            .chain(c.old.values())
            .map(|i| i.as_ref().map_or(64, |i| i.bytes()))
            .sum()
    }

    #[test]
    fn the_email_cache_stays_within_its_bytes_whatever_the_emails_size() {
        let mut c = EmailCache::default();
        // Newsletters of 2,000 recipients each (~90 KB apiece): the budget,
        // not the count of emails, must bound the cache.
        for id in 0..1_000 {
            c.insert(id, info(2_000));
            assert!(
                cache_bytes(&c) <= CACHE_BYTES + info(2_000).map_or(0, |i| i.bytes()),
                "{} bytes cached after {} emails",
                cache_bytes(&c),
                id + 1
            );
        }
        assert!(c.len() < 1_000, "older emails were let go");
        assert!(c.get(999).is_some(), "the newest email is kept");
        assert!(c.get(0).is_none(), "the oldest is gone");
    }

    #[test]
    fn an_email_being_hit_survives_the_caches_turnovers() {
        let mut c = EmailCache::default();
        c.insert(7, info(1));
        // Many turnovers of the newer generation; email 7 is hit between them.
        for id in 100..100 + 4 * CACHE_EMAILS as u64 {
            c.insert(id, None);
            if id % 1_000 == 0 {
                assert!(c.get(7).is_some(), "lost after {id}");
            }
        }
        assert!(c.get(7).is_some());
        assert!(c.len() <= CACHE_EMAILS, "{} emails cached", c.len());
    }

    fn store(tag: &str) -> Store {
        let dir =
            std::env::temp_dir().join(format!("mailbeacon-derive-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sealer = Sealer::new(&[(1, vec![7; 32])], 1, b"lookup key").expect("sealer");
        Store::new(
            Backend::Embedded(Embedded::open(&dir).expect("open")),
            sealer,
        )
    }

    fn recipient(address: &str) -> RecipientRecord {
        RecipientRecord {
            address: address.into(),
            name: None,
            field: "to".into(),
            followed: true,
            reason: None,
            delivery: None,
            erased: false,
        }
    }

    fn hit(kind: EventKind, recipient: u32) -> Event {
        Event {
            seq: 0,
            at_ms: crate::ids::now_ms(),
            kind,
            email: 9,
            recipient,
            link: (kind == EventKind::Click).then_some(0),
            method: "GET".into(),
            ua: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36".into(),
            ip: "203.0.113.0/24".into(),
            since_prepared_s: 3600,
            machine_net: None,
        }
    }

    fn firsts(events: &[AppEvent]) -> Vec<bool> {
        events.iter().map(|e| e.first).collect()
    }

    fn email(owner: u64) -> EmailRecord {
        let now = crate::ids::now_ms();
        EmailRecord {
            id: 9,
            owner,
            from: "ann@sales.test".into(),
            subject: Some("Pricing".into()),
            message_id: None,
            created_ms: now - 3_600_000,
            expires_ms: now + 3_600_000,
            deliver: "return".into(),
            recipients: vec![recipient("b@client.test"), recipient("c@client.test")],
            links: vec!["https://a.example/".into()],
            lookups: Vec::new(),
            template: None,
            send_at_ms: None,
            reminder: None,
        }
    }

    fn only(owner: u64) -> Receivers {
        Receivers {
            everyone: false,
            owners: [owner].into_iter().collect(),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn owners_nobody_receives_from_get_marks_but_no_events() {
        let store = store("audience");
        store.put_email(email(1)).await.expect("put email");
        let d = Deriver::new(store.clone(), Heuristics::default());
        let others = only(2);
        let none = d
            .derive(
                vec![hit(EventKind::Open, 0), hit(EventKind::Open, 0)],
                &others,
            )
            .await;
        assert!(none.is_empty(), "owner 1 is not among the receivers");
        assert_eq!(d.known().len(), 1, "the human open's mark is set anyway");
        // Once owner 1 can receive (a stream, a webhook), a repeat open is not
        // first, and another recipient's first open is.
        let to_one = only(1);
        let later = d
            .derive(
                vec![hit(EventKind::Open, 0), hit(EventKind::Open, 1)],
                &to_one,
            )
            .await;
        assert_eq!(firsts(&later), [false, true]);
        assert!(later.iter().all(|e| e.owner == 1));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn first_is_once_per_recipient_and_kind_and_known_marks_skip_the_store() {
        let store = store("first");
        store.put_email(email(1)).await.expect("put email");
        let d = Deriver::new(store.clone(), Heuristics::default());
        let all = Receivers::everyone();
        // In one batch: the first open of each recipient is first, a repeat is not.
        let a = d
            .derive(
                vec![
                    hit(EventKind::Open, 0),
                    hit(EventKind::Open, 0),
                    hit(EventKind::Open, 1),
                ],
                &all,
            )
            .await;
        assert_eq!(firsts(&a), [true, false, true]);
        assert_eq!(d.known().len(), 2, "both marks are now known set");
        // Later batches: repeats are not first (answered from the known set, as
        // the store would), another kind is.
        let b = d
            .derive(
                vec![hit(EventKind::Open, 1), hit(EventKind::Click, 0)],
                &all,
            )
            .await;
        assert_eq!(firsts(&b), [false, true]);
        // A fresh deriver (another process) asks the store and agrees.
        let other = Deriver::new(store.clone(), Heuristics::default());
        let c = other
            .derive(
                vec![hit(EventKind::Open, 0), hit(EventKind::Click, 1)],
                &all,
            )
            .await;
        assert_eq!(firsts(&c), [false, true]);
        // An erase empties the known set (and the email cache).
        store.scrub().await.expect("scrub");
        let e = d.derive(vec![hit(EventKind::Open, 0)], &all).await;
        assert_eq!(firsts(&e), [false]);
        assert_eq!(d.known().len(), 1, "emptied by the erase, then refilled");
    }
}
