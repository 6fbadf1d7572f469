//! The retained feed and this process's hub of live events.
//!
//! `publish` packs a batch of application events into one feed entry (one
//! store append, sealed), which gives every event its id:
//! `evt_<ms>-<seq>-<index>`, the entry's position and the event's place in it.
//! Ids are ordered, so a stream resumes after `Last-Event-ID` by reading the
//! feed from that entry on.
//!
//! The tail task of each process reads the feed after the last entry it saw
//! (woken at once by a local append, and every `POLL` for other processes'
//! appends) and broadcasts every event, pre-formatted as a server-sent event,
//! to the streams held by this process (`Hub`). With one Redis shared by
//! several processes, a stream on any process thus carries every process's
//! events within about `POLL`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, watch, Notify};

use super::AppEvent;
use crate::store::realtime::FeedPos;
use crate::store::{Result, Store};

/// How often the tail looks for other processes' entries.
pub const POLL: Duration = Duration::from_millis(100);
/// Live events a slow stream may fall behind before it reloads from the feed.
const HUB_CAPACITY: usize = 4096;
/// Entries read per feed request.
pub const READ_BATCH: usize = 256;

/// An event's place in the feed: the entry and its index there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventPos {
    pub entry: FeedPos,
    pub index: u32,
}

impl EventPos {
    pub fn id(&self) -> String {
        format!("evt_{}-{}-{}", self.entry.ms, self.entry.seq, self.index)
    }

    /// Parses an id made by `id`.
    pub fn parse(id: &str) -> Option<EventPos> {
        let rest = id.trim().strip_prefix("evt_")?;
        let mut parts = rest.split('-');
        let ms = parts.next()?.parse().ok()?;
        let seq = parts.next()?.parse().ok()?;
        let index = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(EventPos {
            entry: FeedPos { ms, seq },
            index,
        })
    }
}

/// One event as the feed entry packs it.
#[derive(Serialize, Deserialize)]
struct Packed {
    /// The owner of the email.
    o: u64,
    /// Machine activity.
    m: bool,
    /// The event's JSON without its id.
    e: Value,
}

/// One event as streams receive it.
#[derive(Debug)]
pub struct LiveEvent {
    pub pos: EventPos,
    pub owner: u64,
    pub machine: bool,
    /// The event's JSON, id included.
    pub json: Value,
    /// `id: …\nevent: …\ndata: …\n\n`.
    pub frame: Bytes,
}

/// The server-sent event for an event's JSON.
fn frame(id: &str, json: &Value) -> Bytes {
    let kind = json["type"].as_str().unwrap_or("message");
    Bytes::from(format!("id: {id}\nevent: {kind}\ndata: {json}\n\n"))
}

/// Unpacks one feed entry.
pub fn unpack(pos: FeedPos, text: &str) -> Vec<Arc<LiveEvent>> {
    let packed: Vec<Packed> = match serde_json::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%pos, error = %e, "a feed entry is malformed; skipped");
            return Vec::new();
        }
    };
    packed
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let epos = EventPos {
                entry: pos,
                index: i as u32,
            };
            let id = epos.id();
            let mut json = p.e;
            if let Some(o) = json.as_object_mut() {
                o.insert("id".into(), Value::String(id.clone()));
            }
            Arc::new(LiveEvent {
                frame: frame(&id, &json),
                pos: epos,
                owner: p.o,
                machine: p.m,
                json,
            })
        })
        .collect()
}

/// Appends `events` as one entry; returns them with their ids set.
pub async fn publish(store: &Store, events: Vec<AppEvent>) -> Result<Vec<(AppEvent, Value)>> {
    let packed: Vec<Packed> = events
        .iter()
        .map(|e| {
            let mut json = e.to_json();
            if let Some(o) = json.as_object_mut() {
                o.remove("id");
            }
            Packed {
                o: e.owner,
                m: e.machine,
                e: json,
            }
        })
        .collect();
    let text = serde_json::to_string(&packed)?;
    let pos = store.feed_append(&text, crate::ids::now_ms()).await?;
    Ok(events
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            e.id = EventPos {
                entry: pos,
                index: i as u32,
            }
            .id();
            let json = e.to_json();
            (e, json)
        })
        .collect())
}

/// This process's live events: the tail's broadcast, and its wake-up.
#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    wake: Arc<Notify>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            tx: broadcast::channel(HUB_CAPACITY).0,
            wake: Arc::new(Notify::new()),
        }
    }
}

impl Hub {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.tx.subscribe()
    }

    /// Streams currently listening.
    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }

    /// A local append happened: the tail reads now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Reads every event in the feed at or after `from`, oldest first, in pages.
pub async fn read_from(
    store: &Store,
    from: FeedPos,
    max_entries: usize,
) -> Result<Vec<Arc<LiveEvent>>> {
    let mut out = Vec::new();
    let mut at = from;
    let mut entries = 0;
    while entries < max_entries {
        let page = store.feed_read(at, READ_BATCH).await?;
        let n = page.len();
        for (pos, text) in page {
            at = pos.next();
            out.extend(unpack(pos, &text));
        }
        entries += n;
        if n < READ_BATCH {
            break;
        }
    }
    Ok(out)
}

/// The tail: from the feed's current end, broadcasts every new entry's events
/// until `stop`.
pub async fn tail(store: Store, hub: Hub, mut stop: watch::Receiver<bool>) {
    let mut next = loop {
        match store.feed_end().await {
            Ok(end) => break end.next(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the feed's end; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    };
    loop {
        match store.feed_read(next, READ_BATCH).await {
            Ok(page) => {
                let full = page.len() == READ_BATCH;
                for (pos, text) in page {
                    next = pos.next();
                    for ev in unpack(pos, &text) {
                        // No receiver is not an error: nobody is listening.
                        let _ = hub.tx.send(ev);
                    }
                }
                if full {
                    continue;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the feed failed"),
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = hub.wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_order() {
        let a = EventPos {
            entry: FeedPos { ms: 17, seq: 2 },
            index: 3,
        };
        assert_eq!(a.id(), "evt_17-2-3");
        assert_eq!(EventPos::parse(&a.id()), Some(a));
        let b = EventPos {
            entry: FeedPos { ms: 17, seq: 10 },
            index: 0,
        };
        assert!(a < b);
        for bad in ["", "evt_", "evt_1-2", "evt_1-2-3-4", "x_1-2-3", "evt_a-b-c"] {
            assert_eq!(EventPos::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn unpacking_sets_ids_and_frames() {
        let text = r#"[{"o":7,"m":false,"e":{"type":"email.opened","at":"x","data":{}}}]"#;
        let evs = unpack(FeedPos { ms: 5, seq: 1 }, text);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].json["id"], "evt_5-1-0");
        let f = std::str::from_utf8(&evs[0].frame).unwrap();
        assert!(
            f.starts_with("id: evt_5-1-0\nevent: email.opened\ndata: {"),
            "{f}"
        );
        assert!(f.ends_with("\n\n"));
        assert!(unpack(FeedPos::default(), "nope").is_empty());
    }
}
