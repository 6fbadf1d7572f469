//! Recorded hits → application events (`email.opened`, `email.clicked`), off
//! the hot path, one recorder batch at a time.
//!
//! For each batch: the emails' owner, subject, recipients and links come from a
//! bounded in-memory cache (one store read per email not cached); `machine` is
//! `classify::classify` on the event itself; `first` is one set-if-absent mark
//! per human event (`Store::mark_first`, a single call per batch), so no email's
//! events are ever read here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Map};

use super::{AppEvent, EventType};
use crate::classify::{classify, Heuristics};
use crate::model::{Event, EventKind};
use crate::store::realtime::FirstMark;
use crate::store::Store;

/// Emails kept in the cache; past this it is emptied (simple and bounded).
const CACHE_EMAILS: usize = 10_000;

/// What derivation needs of an email.
struct EmailInfo {
    owner: u64,
    subject: Option<String>,
    recipients: Vec<Option<String>>,
    links: Vec<String>,
    expires_ms: u64,
    heuristics: Heuristics,
}

pub struct Deriver {
    store: Store,
    heuristics: Heuristics,
    cache: Mutex<HashMap<u64, Option<Arc<EmailInfo>>>>,
    /// `Store::erasures` when the cache was last emptied: an erase empties it,
    /// so no event is told with an erased recipient's address.
    erasures: std::sync::atomic::AtomicU64,
}

impl Deriver {
    pub fn new(store: Store, heuristics: Heuristics) -> Deriver {
        Deriver {
            store,
            heuristics,
            cache: Mutex::new(HashMap::new()),
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
        }
        cache.get(&id).cloned()
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
        if cache.len() >= CACHE_EMAILS {
            cache.clear();
        }
        cache.insert(id, info.clone());
        info
    }

    /// The application events for one committed batch of hits.
    pub async fn derive(&self, hits: Vec<Event>) -> Vec<AppEvent> {
        let mut infos: HashMap<u64, Option<Arc<EmailInfo>>> = HashMap::new();
        for h in &hits {
            if let std::collections::hash_map::Entry::Vacant(slot) = infos.entry(h.email) {
                slot.insert(self.info(h.email).await);
            }
        }
        let mut events = Vec::with_capacity(hits.len());
        let mut marks = Vec::new();
        let mut human_at = Vec::new();
        for h in hits {
            let Some(Some(info)) = infos.get(&h.email) else {
                continue;
            };
            let Some(Some(recipient)) = info.recipients.get(h.recipient as usize) else {
                // An erased (or unknown) recipient: nothing to tell.
                continue;
            };
            let machine = classify(&h, &info.heuristics).is_some();
            let (kind, mark_kind) = match h.kind {
                EventKind::Open => (EventType::EmailOpened, 0),
                EventKind::Click => (EventType::EmailClicked, 1),
                EventKind::Attachment => (EventType::EmailAttachmentViewed, 2),
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
            if !machine {
                marks.push(FirstMark {
                    email: h.email,
                    recipient: h.recipient,
                    kind: mark_kind,
                    expires_ms: info.expires_ms,
                });
                human_at.push(events.len());
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
        match self.store.mark_first(marks).await {
            Ok(firsts) => {
                for (i, first) in human_at.into_iter().zip(firsts) {
                    events[i].first = first;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot mark first activity; sent as not first"),
        }
        events
    }
}
