//! The retained feed and this process's hub of live events.
//!
//! `publish` packs a batch of application events into one feed entry (one
//! store append, sealed), which gives every event its id:
//! `evt_<ms>-<seq>-<index>`, the entry's position and the event's place in it.
//! Ids are ordered, so a stream resumes after `Last-Event-ID` by reading the
//! feed from that entry on.
//!
//! An entry is one line per event, `<owner>\t<0|1 machine>\t<type>\t<JSON
//! without id>`, so a reader picks out the events of the owners it serves
//! without parsing anyone else's JSON (entries written as one JSON array by
//! earlier versions are still read).
//!
//! The tail task of each process reads the feed after the last entry it saw
//! (woken at once by a local append, and every `POLL` for other processes'
//! appends), once per process whatever the number of streams, and hands each
//! owner's events, pre-formatted as server-sent events, to that owner's
//! broadcast channel in the `Hub` (one per owner with a stream open here):
//! a stream wakes only for its owner's events, and an entry nobody here
//! listens to is not unpacked at all. With one Redis shared by several
//! processes, a stream on any process thus carries every process's events
//! within about `POLL`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{broadcast, watch, Notify};

use super::AppEvent;
use crate::store::realtime::FeedPos;
use crate::store::{Result, Store};

/// How often the tail looks for other processes' entries.
pub const POLL: Duration = Duration::from_millis(100);
/// Batches (one per feed read) an owner's slow stream may fall behind before
/// it reloads from the feed.
const OWNER_CAPACITY: usize = 1024;
/// Entries read per feed request.
pub const READ_BATCH: usize = 256;

/// Feed reads by the tail, entries they returned, and entries unpacked for a
/// stream (for `/metrics`).
pub static TAIL_READS: AtomicU64 = AtomicU64::new(0);
pub static TAIL_ENTRIES: AtomicU64 = AtomicU64::new(0);
pub static TAIL_UNPACKED: AtomicU64 = AtomicU64::new(0);

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

    /// The last possible event of `entry` (everything up to it is "seen").
    pub fn end_of(entry: FeedPos) -> EventPos {
        EventPos {
            entry,
            index: u32::MAX,
        }
    }
}

/// One event as entries of earlier versions packed it (a JSON array of these).
#[derive(Deserialize)]
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
    /// `id: …\nevent: …\ndata: …\n\n` (the JSON with its id).
    pub frame: Bytes,
}

/// Events of one owner, in feed order (what one tail read found).
pub type LiveBatch = Arc<Vec<Arc<LiveEvent>>>;

/// The server-sent event for an event's JSON without id (`{…}`, as
/// serde_json writes it: on one line).
fn frame(id: &str, kind: &str, json_without_id: &str) -> Bytes {
    let rest = json_without_id.trim().strip_prefix('{').unwrap_or("}");
    let sep = if rest.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    Bytes::from(format!(
        "id: {id}\nevent: {kind}\ndata: {{\"id\":\"{id}\"{sep}{rest}\n\n"
    ))
}

/// Unpacks the events of one feed entry whose owner `want`s them (the others
/// are skipped unparsed; indexes count every event).
pub fn unpack(pos: FeedPos, text: &str, want: impl Fn(u64) -> bool) -> Vec<Arc<LiveEvent>> {
    let make = |i: usize, owner: u64, machine: bool, kind: &str, json: &str| {
        let epos = EventPos {
            entry: pos,
            index: i as u32,
        };
        Arc::new(LiveEvent {
            frame: frame(&epos.id(), kind, json),
            pos: epos,
            owner,
            machine,
        })
    };
    if text.starts_with('[') {
        let packed: Vec<Packed> = match serde_json::from_str(text) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%pos, error = %e, "a feed entry is malformed; skipped");
                return Vec::new();
            }
        };
        return packed
            .into_iter()
            .enumerate()
            .filter(|(_, p)| want(p.o))
            .map(|(i, p)| {
                let kind = p.e["type"].as_str().unwrap_or("message").to_owned();
                make(i, p.o, p.m, &kind, &p.e.to_string())
            })
            .collect();
    }
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let mut f = line.splitn(4, '\t');
        let (Some(o), Some(m), Some(kind), Some(json)) = (f.next(), f.next(), f.next(), f.next())
        else {
            if !line.is_empty() {
                tracing::warn!(%pos, "a feed entry's line is malformed; skipped");
            }
            continue;
        };
        let Ok(owner) = o.parse::<u64>() else {
            tracing::warn!(%pos, "a feed entry's line is malformed; skipped");
            continue;
        };
        if want(owner) {
            out.push(make(i, owner, m == "1", kind, json));
        }
    }
    out
}

/// Appends `events` as one entry; returns them with their ids set.
pub async fn publish(store: &Store, mut events: Vec<AppEvent>) -> Result<Vec<AppEvent>> {
    let mut text = String::with_capacity(events.len() * 320);
    for e in &events {
        let mut json = e.to_json();
        if let Some(o) = json.as_object_mut() {
            o.remove("id");
        }
        use std::fmt::Write as _;
        // Writing to a String cannot fail; serde_json writes no raw newline.
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}",
            e.owner,
            u8::from(e.machine),
            e.kind.as_str(),
            json
        );
    }
    text.pop();
    let pos = store.feed_append(&text, crate::ids::now_ms()).await?;
    for (i, e) in events.iter_mut().enumerate() {
        e.id = EventPos {
            entry: pos,
            index: i as u32,
        }
        .id();
    }
    Ok(events)
}

/// This process's live events: one broadcast channel per owner with a stream
/// open here, fed by the tail, and the tail's wake-up.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Default)]
struct HubInner {
    /// Guards the channels and `latest` together, so a new stream's start and
    /// the batches it receives never overlap or leave a gap.
    owners: Mutex<Owners>,
    wake: Notify,
}

#[derive(Default)]
struct Owners {
    channels: HashMap<u64, broadcast::Sender<LiveBatch>>,
    /// The last entry the tail has handed out.
    latest: FeedPos,
}

impl Hub {
    fn owners(&self) -> std::sync::MutexGuard<'_, Owners> {
        self.inner.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver of `owner`'s live events, and the position it starts after
    /// (everything up to it was handed out before it subscribed).
    pub fn subscribe(&self, owner: u64) -> (broadcast::Receiver<LiveBatch>, EventPos) {
        let mut o = self.owners();
        let rx = o
            .channels
            .entry(owner)
            .or_insert_with(|| broadcast::channel(OWNER_CAPACITY).0)
            .subscribe();
        (rx, EventPos::end_of(o.latest))
    }

    /// The owners with a stream open here.
    pub fn owners_listening(&self) -> Vec<u64> {
        self.owners()
            .channels
            .iter()
            .filter(|(_, c)| c.receiver_count() > 0)
            .map(|(o, _)| *o)
            .collect()
    }

    /// Streams currently listening.
    pub fn listeners(&self) -> usize {
        self.owners()
            .channels
            .values()
            .map(|c| c.receiver_count())
            .sum()
    }

    /// A local append happened: the tail reads now.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Hands the entries of one read to the owners listening here.
    fn deliver(&self, page: &[(FeedPos, String)]) {
        let mut o = self.owners();
        o.channels.retain(|_, c| c.receiver_count() > 0);
        if !o.channels.is_empty() {
            let mut by_owner: HashMap<u64, Vec<Arc<LiveEvent>>> = HashMap::new();
            for (pos, text) in page {
                TAIL_UNPACKED.fetch_add(1, Ordering::Relaxed);
                for ev in unpack(*pos, text, |owner| o.channels.contains_key(&owner)) {
                    by_owner.entry(ev.owner).or_default().push(ev);
                }
            }
            for (owner, evs) in by_owner {
                if let Some(c) = o.channels.get(&owner) {
                    // No receiver left is not an error.
                    let _ = c.send(Arc::new(evs));
                }
            }
        }
        if let Some((last, _)) = page.last() {
            o.latest = o.latest.max(*last);
        }
    }
}

/// Reads `owner`'s events in the feed at or after `from`, oldest first, in
/// pages of at most `max_entries` entries in all.
pub async fn read_from(
    store: &Store,
    from: FeedPos,
    max_entries: usize,
    owner: u64,
) -> Result<Vec<Arc<LiveEvent>>> {
    let mut out = Vec::new();
    let mut at = from;
    let mut entries = 0;
    while entries < max_entries {
        let page = store.feed_read(at, READ_BATCH).await?;
        let n = page.len();
        for (pos, text) in page {
            at = pos.next();
            out.extend(unpack(pos, &text, |o| o == owner));
        }
        entries += n;
        if n < READ_BATCH {
            break;
        }
    }
    Ok(out)
}

/// The tail: from the feed's current end, hands every new entry's events to
/// the hub until `stop`.
pub async fn tail(store: Store, hub: Hub, mut stop: watch::Receiver<bool>) {
    let mut next = loop {
        match store.feed_end().await {
            Ok(end) => {
                hub.owners().latest = end;
                break end.next();
            }
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
                TAIL_READS.fetch_add(1, Ordering::Relaxed);
                TAIL_ENTRIES.fetch_add(page.len() as u64, Ordering::Relaxed);
                let full = page.len() == READ_BATCH;
                if let Some((last, _)) = page.last() {
                    next = last.next();
                }
                hub.deliver(&page);
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
            _ = hub.inner.wake.notified() => {}
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
        assert!(a < EventPos::end_of(a.entry));
        assert!(EventPos::end_of(a.entry) < b);
        for bad in ["", "evt_", "evt_1-2", "evt_1-2-3-4", "x_1-2-3", "evt_a-b-c"] {
            assert_eq!(EventPos::parse(bad), None, "{bad}");
        }
    }

    fn data(f: &Bytes) -> Value {
        let f = std::str::from_utf8(f).unwrap();
        let line = f.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn unpacking_sets_ids_and_frames_in_both_formats() {
        let old = r#"[{"o":7,"m":false,"e":{"type":"email.opened","at":"x","data":{}}}]"#;
        let evs = unpack(FeedPos { ms: 5, seq: 1 }, old, |_| true);
        assert_eq!(evs.len(), 1);
        let f = std::str::from_utf8(&evs[0].frame).unwrap();
        assert!(
            f.starts_with("id: evt_5-1-0\nevent: email.opened\ndata: {"),
            "{f}"
        );
        assert!(f.ends_with("\n\n"));
        assert_eq!(data(&evs[0].frame)["id"], "evt_5-1-0");
        assert_eq!(data(&evs[0].frame)["at"], "x");
        assert!(unpack(FeedPos::default(), "[nope", |_| true).is_empty());

        let new = "7\t0\temail.opened\t{\"at\":\"x\",\"type\":\"email.opened\"}\n\
                   8\t1\temail.clicked\t{\"type\":\"email.clicked\"}\n\
                   garbage\n\
                   7\t1\temail.clicked\t{}";
        let pos = FeedPos { ms: 9, seq: 0 };
        let all = unpack(pos, new, |_| true);
        assert_eq!(all.len(), 3);
        let sevens = unpack(pos, new, |o| o == 7);
        assert_eq!(sevens.len(), 2);
        // Indexes count every line, the skipped ones too.
        assert_eq!(sevens[1].pos.index, 3);
        assert!(sevens[1].machine && !sevens[0].machine);
        assert_eq!(data(&sevens[0].frame)["id"], "evt_9-0-0");
        assert_eq!(data(&sevens[0].frame)["type"], "email.opened");
        assert_eq!(data(&sevens[1].frame)["id"], "evt_9-0-3");
        let f = std::str::from_utf8(&sevens[1].frame).unwrap();
        assert!(f.contains("\nevent: email.clicked\n"), "{f}");
    }

    #[tokio::test]
    async fn the_hub_hands_each_owner_only_its_events_after_it_subscribed() {
        let hub = Hub::default();
        let early = (
            FeedPos { ms: 1, seq: 0 },
            "7\t0\temail.opened\t{\"n\":0}".to_owned(),
        );
        hub.deliver(std::slice::from_ref(&early));
        let (mut seven, start) = hub.subscribe(7);
        assert_eq!(start, EventPos::end_of(early.0));
        let (mut eight, _) = hub.subscribe(8);
        assert_eq!(hub.listeners(), 2);
        hub.deliver(&[
            (
                FeedPos { ms: 2, seq: 0 },
                "7\t0\temail.opened\t{\"n\":1}\n9\t0\temail.opened\t{\"n\":2}".to_owned(),
            ),
            (
                FeedPos { ms: 2, seq: 1 },
                "7\t0\temail.opened\t{\"n\":3}".to_owned(),
            ),
        ]);
        let got = seven.try_recv().unwrap();
        let ns: Vec<i64> = got
            .iter()
            .map(|e| data(&e.frame)["n"].as_i64().unwrap())
            .collect();
        assert_eq!(ns, [1, 3]);
        assert!(seven.try_recv().is_err());
        assert!(eight.try_recv().is_err(), "nothing for owner 8");
        drop(eight);
        hub.deliver(&[]);
        assert_eq!(hub.listeners(), 1);
    }
}
