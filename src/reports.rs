//! Engagement reports: one followed email's record and events turned into the JSON
//! the API returns (per recipient, per link, totals, timeline), and totals over
//! many emails (`Totals`: per user or organization, and per template).
//!
//! Human activity is what `opens`, `clicks` and `attachment_views` count; machine activity (see
//! `classify`) is counted beside it, never mixed in, never dropped. Replies
//! (facts from the reply watcher) are counted per recipient; a recipient with a
//! reply or a human click but no human open has an *inferred open* (their
//! client blocked images), shown in `inferred_opens`, never added to `opens`.
//! Pure: no I/O.

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};

use crate::classify::{classify, link_bursts, Click, Heuristics, Machine};
use crate::ids::{id_to_text, rfc3339};
use crate::model::{Delivery, EmailRecord, Event, EventKind, Reminder, Reply};

/// How many of the most recent events the timeline shows.
const TIMELINE_MAX: usize = 500;

#[derive(Default)]
struct Tally {
    opens: u64,
    clicks: u64,
    machine_opens: u64,
    machine_clicks: u64,
    first_open: Option<u64>,
    last_open: Option<u64>,
    first_click: Option<u64>,
    last_click: Option<u64>,
    /// link index -> (human clicks, machine clicks)
    links: BTreeMap<u32, (u64, u64)>,
    replies: u64,
    first_reply: Option<u64>,
    attachment_views: u64,
    machine_attachment_views: u64,
}

impl Tally {
    /// 1 when the recipient replied or clicked (as a human) with no human open
    /// recorded: their client blocked the pixel.
    fn inferred_opens(&self) -> u64 {
        u64::from(
            self.opens == 0 && (self.replies > 0 || self.clicks > 0 || self.attachment_views > 0),
        )
    }
}

fn opt_time(t: Option<u64>) -> Value {
    t.map(|ms| Value::String(rfc3339(ms)))
        .unwrap_or(Value::Null)
}

/// A recipient's delivery: `{"state", "detail", "at"}`.
pub fn delivery_json(d: &Delivery) -> Value {
    json!({"state": d.state, "detail": d.detail, "at": rfc3339(d.at_ms)})
}

/// A reminder: `{"when", "at", "state"}`.
pub fn reminder_json(r: &Reminder) -> Value {
    json!({"when": r.when, "at": rfc3339(r.at_ms), "state": r.state,
        "notify": r.notify.as_deref().unwrap_or("none")})
}

/// The summary line of an email for listings (no events).
pub fn summary(rec: &EmailRecord) -> Value {
    json!({
        "id": id_to_text(rec.id),
        "from": rec.from,
        "subject": rec.subject,
        "message_id": rec.message_id,
        "created_at": rfc3339(rec.created_ms),
        "expires_at": rfc3339(rec.expires_ms),
        "deliver": rec.deliver,
        "template": rec.template,
        "recipients": rec.recipients.len(),
        "links": rec.links.len(),
        "state": rec.state(),
        "send_at": opt_time(rec.send_at_ms),
        "reminder": rec.reminder.as_ref().map(reminder_json),
    })
}

/// The full engagement report of one email, without replies (see
/// `engagement_with_replies`).
pub fn engagement(rec: &EmailRecord, events: &[Event], h: &Heuristics) -> Value {
    engagement_with_replies(rec, events, &[], h)
}

/// The full engagement report of one email, with its recorded replies.
pub fn engagement_with_replies(
    rec: &EmailRecord,
    events: &[Event],
    replies: &[Reply],
    h: &Heuristics,
) -> Value {
    let mut d = Digest::new(rec, h);
    d.add(events);
    d.report(replies)
}

/// What a report keeps of one event once it is classified on its own.
struct Hit {
    seq: u64,
    at_ms: u64,
    kind: EventKind,
    recipient: u32,
    link: Option<u32>,
    machine: Option<Machine>,
    /// Index of its machine network's label in `Digest::labels`.
    net: Option<u16>,
}

/// One email's events folded as they arrive, chunk by chunk (`add`), so a
/// report holds a few dozen bytes per event instead of the events themselves
/// (user agents, addresses); the one signal that needs several events (link
/// bursts) runs over the kept clicks at the end.
pub struct Digest<'a> {
    rec: &'a EmailRecord,
    h: Heuristics,
    hits: Vec<Hit>,
    labels: Vec<String>,
}

impl<'a> Digest<'a> {
    pub fn new(rec: &'a EmailRecord, h: &Heuristics) -> Digest<'a> {
        Digest {
            rec,
            h: h.for_delivery(&rec.deliver),
            hits: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// Folds in a chunk of the email's events (any order, each event once).
    pub fn add(&mut self, events: &[Event]) {
        self.hits.reserve(events.len());
        for e in events {
            let net = e.machine_net.as_ref().and_then(|l| {
                let i = match self.labels.iter().position(|x| x == l) {
                    Some(i) => i,
                    None => {
                        self.labels.push(l.clone());
                        self.labels.len() - 1
                    }
                };
                u16::try_from(i).ok()
            });
            self.hits.push(Hit {
                seq: e.seq,
                at_ms: e.at_ms,
                kind: e.kind,
                recipient: e.recipient,
                link: e.link,
                machine: classify(e, &self.h),
                net,
            });
        }
    }

    /// Events folded in so far.
    pub fn len(&self) -> usize {
        self.hits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }

    /// Adds the cross-event signal to the per-event classes.
    fn mark_bursts(&mut self) {
        let clicks: Vec<usize> = (0..self.hits.len())
            .filter(|&i| self.hits[i].kind == EventKind::Click)
            .collect();
        let keys: Vec<Click> = clicks
            .iter()
            .map(|&i| Click {
                recipient: self.hits[i].recipient,
                at_ms: self.hits[i].at_ms,
                link: self.hits[i].link,
            })
            .collect();
        for (&i, burst) in clicks.iter().zip(link_bursts(&keys)) {
            if burst && self.hits[i].machine.is_none() {
                self.hits[i].machine = Some(Machine::LinkBurst);
            }
        }
    }

    /// The email's totals, counted exactly as its report counts them.
    pub fn totals(self) -> Totals {
        let report = self.report(&[]);
        let t = &report["totals"];
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        Totals {
            emails: 1,
            recipients: n("recipients"),
            followed: n("followed"),
            opens: n("opens"),
            unique_opens: n("unique_opens"),
            clicks: n("clicks"),
            unique_clicks: n("unique_clicks"),
            machine_opens: n("machine_opens"),
            machine_clicks: n("machine_clicks"),
            attachment_views: n("attachment_views"),
        }
    }

    /// The full engagement report, with the email's recorded replies.
    pub fn report(mut self, replies: &[Reply]) -> Value {
        self.mark_bursts();
        // Oldest first: the timeline is the tail.
        self.hits.sort_unstable_by_key(|e| (e.at_ms, e.seq));
        let rec = self.rec;
        let events = &self.hits;
        let mut per: Vec<Tally> = rec.recipients.iter().map(|_| Tally::default()).collect();
        let mut unique_open = HashSet::new();
        let mut unique_click = HashSet::new();
        let mut link_unique: BTreeMap<u32, HashSet<u32>> = BTreeMap::new();
        for e in events {
            let Some(t) = per.get_mut(e.recipient as usize) else {
                continue;
            };
            let human = e.machine.is_none();
            match e.kind {
                EventKind::Open if human => {
                    t.opens += 1;
                    t.first_open = Some(t.first_open.map_or(e.at_ms, |f| f.min(e.at_ms)));
                    t.last_open = Some(t.last_open.map_or(e.at_ms, |l| l.max(e.at_ms)));
                    unique_open.insert(e.recipient);
                }
                EventKind::Open => t.machine_opens += 1,
                EventKind::Click => {
                    let link = e.link.unwrap_or(0);
                    let slot = t.links.entry(link).or_default();
                    if human {
                        t.clicks += 1;
                        slot.0 += 1;
                        t.first_click = Some(t.first_click.map_or(e.at_ms, |f| f.min(e.at_ms)));
                        t.last_click = Some(t.last_click.map_or(e.at_ms, |l| l.max(e.at_ms)));
                        unique_click.insert(e.recipient);
                        link_unique.entry(link).or_default().insert(e.recipient);
                    } else {
                        t.machine_clicks += 1;
                        slot.1 += 1;
                    }
                }
                EventKind::Attachment if human => t.attachment_views += 1,
                EventKind::Attachment => t.machine_attachment_views += 1,
            }
        }
        for r in replies {
            if let Some(t) = per.get_mut(r.recipient as usize) {
                t.replies += 1;
                t.first_reply = Some(t.first_reply.map_or(r.at_ms, |f| f.min(r.at_ms)));
            }
        }
        let link_url = |i: u32| rec.links.get(i as usize).cloned().unwrap_or_default();
        let recipients: Vec<Value> = rec
            .recipients
            .iter()
            .zip(&per)
            .map(|(r, t)| {
                json!({
                    "address": r.address,
                    "name": r.name,
                    "field": r.field,
                    "followed": r.followed,
                    "reason": r.reason,
                    "delivery": r.delivery.as_ref().map(delivery_json),
                    "opens": t.opens,
                    "clicks": t.clicks,
                    "machine_opens": t.machine_opens,
                    "machine_clicks": t.machine_clicks,
                    "first_open_at": opt_time(t.first_open),
                    "last_open_at": opt_time(t.last_open),
                    "first_click_at": opt_time(t.first_click),
                    "last_click_at": opt_time(t.last_click),
                    "replies": t.replies,
                    "first_reply_at": opt_time(t.first_reply),
                    "inferred_opens": t.inferred_opens(),
                    "attachment_views": t.attachment_views,
                    "machine_attachment_views": t.machine_attachment_views,
                    "links": t.links.iter().map(|(i, (h, m))| json!({
                        "index": i, "url": link_url(*i), "clicks": h, "machine_clicks": m
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let links: Vec<Value> = rec
            .links
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let i = i as u32;
                let (h, m) = per.iter().fold((0, 0), |(h, m), t| {
                    let (a, b) = t.links.get(&i).copied().unwrap_or_default();
                    (h + a, m + b)
                });
                json!({
                    "index": i,
                    "url": url,
                    "clicks": h,
                    "unique_clicks": link_unique.get(&i).map_or(0, |s| s.len()),
                    "machine_clicks": m,
                })
            })
            .collect();
        let sum = |f: fn(&Tally) -> u64| per.iter().map(f).sum::<u64>();
        let skip = events.len().saturating_sub(TIMELINE_MAX);
        let timeline: Vec<Value> = events[skip..]
            .iter()
            .map(|e| {
                let mut v = json!({
                    "at": rfc3339(e.at_ms),
                    "kind": e.kind,
                    "recipient": rec.recipients.get(e.recipient as usize).map(|r| r.address.clone()),
                    "link": e.link,
                    "machine": e.machine.map(Machine::as_str),
                });
                if let Some(label) = e.net.and_then(|n| self.labels.get(usize::from(n))) {
                    v["machine_network"] = json!(label);
                }
                v
            })
            .collect();
        let mut out = summary(rec);
        out["totals"] = json!({
            "recipients": rec.recipients.len(),
            "followed": rec.recipients.iter().filter(|r| r.followed).count(),
            "opens": sum(|t| t.opens),
            "unique_opens": unique_open.len(),
            "clicks": sum(|t| t.clicks),
            "unique_clicks": unique_click.len(),
            "machine_opens": sum(|t| t.machine_opens),
            "machine_clicks": sum(|t| t.machine_clicks),
            "replies": sum(|t| t.replies),
            "inferred_opens": sum(Tally::inferred_opens),
            "attachment_views": sum(|t| t.attachment_views),
            "machine_attachment_views": sum(|t| t.machine_attachment_views),
        });
        out["recipients"] = Value::Array(recipients);
        out["links"] = Value::Array(links);
        out["timeline"] = Value::Array(timeline);
        out
    }
}

/// Counts summed over many emails (`GET /api/v1/stats`).
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct Totals {
    pub emails: u64,
    pub recipients: u64,
    pub followed: u64,
    pub opens: u64,
    pub unique_opens: u64,
    pub clicks: u64,
    pub unique_clicks: u64,
    pub machine_opens: u64,
    pub machine_clicks: u64,
    pub attachment_views: u64,
}

impl Totals {
    /// One email's totals, counted exactly as its engagement report counts them.
    pub fn of_email(rec: &EmailRecord, events: &[Event], h: &Heuristics) -> Totals {
        let mut d = Digest::new(rec, h);
        d.add(events);
        d.totals()
    }

    pub fn add(&mut self, o: &Totals) {
        self.emails += o.emails;
        self.recipients += o.recipients;
        self.followed += o.followed;
        self.opens += o.opens;
        self.unique_opens += o.unique_opens;
        self.clicks += o.clicks;
        self.unique_clicks += o.unique_clicks;
        self.machine_opens += o.machine_opens;
        self.machine_clicks += o.machine_clicks;
        self.attachment_views += o.attachment_views;
    }

    /// The counts, plus rates over followed recipients (human activity only;
    /// `null` when nothing was followed): open rate, click rate, and clicks per
    /// open (unique clickers over unique openers).
    pub fn json(&self) -> Value {
        let rate = |a: u64, b: u64| {
            if b == 0 {
                Value::Null
            } else {
                json!((a as f64 / b as f64 * 10_000.0).round() / 10_000.0)
            }
        };
        json!({
            "emails": self.emails,
            "recipients": self.recipients,
            "followed": self.followed,
            "opens": self.opens,
            "unique_opens": self.unique_opens,
            "clicks": self.clicks,
            "unique_clicks": self.unique_clicks,
            "machine_opens": self.machine_opens,
            "machine_clicks": self.machine_clicks,
            "attachment_views": self.attachment_views,
            "open_rate": rate(self.unique_opens, self.followed),
            "click_rate": rate(self.unique_clicks, self.followed),
            "click_to_open_rate": rate(self.unique_clicks, self.unique_opens),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::classify::classify_all;
    use crate::model::RecipientRecord;

    /// A followed email (id 1, owner 1) to `n` recipients.
    pub(crate) fn rec(n: usize) -> EmailRecord {
        EmailRecord {
            id: 1,
            owner: 1,
            from: "ann@sales.test".into(),
            subject: None,
            message_id: Some("q@x".into()),
            created_ms: 0,
            expires_ms: 1,
            deliver: "return".into(),
            recipients: (0..n)
                .map(|i| RecipientRecord {
                    address: format!("r{i}@client.test"),
                    name: None,
                    field: "to".into(),
                    followed: true,
                    reason: None,
                    delivery: None,
                    erased: false,
                })
                .collect(),
            links: vec!["https://a.example/".into()],
            lookups: Vec::new(),
            template: None,
            send_at_ms: None,
            reminder: None,
        }
    }

    fn hit(kind: EventKind, recipient: u32, at_ms: u64) -> Event {
        Event {
            seq: at_ms,
            at_ms,
            kind,
            email: 1,
            recipient,
            link: (kind == EventKind::Click).then_some(0),
            method: "GET".into(),
            ua: crate::ids::rfc3339(0).replace('T', " ") + " Mozilla/5.0 Chrome/126.0",
            ip: "192.0.2.0".into(),
            since_prepared_s: 60,
            machine_net: None,
        }
    }

    #[test]
    fn a_digest_fed_in_chunks_in_any_order_reports_as_classify_all_counts() {
        let mut rec = rec(3);
        rec.links.push("https://b.example/".into());
        let click = |recipient, at_ms, link| Event {
            link: Some(link),
            ..hit(EventKind::Click, recipient, at_ms)
        };
        let mut events = vec![
            hit(EventKind::Open, 0, 1_000),
            hit(EventKind::Open, 0, 50_000),
            // r1: two links within a second, a scanner's burst; later a human click.
            click(1, 10_000, 0),
            click(1, 10_400, 1),
            click(1, 90_000, 1),
            Event {
                machine_net: Some("mimecast".into()),
                ..hit(EventKind::Open, 2, 20_000)
            },
            click(2, 30_000, 0),
            hit(EventKind::Attachment, 2, 40_000),
        ];
        for (i, e) in events.iter_mut().enumerate() {
            e.seq = 100 + i as u64;
        }
        let h = Heuristics::default();
        let classes = classify_all(&events, &h.for_delivery(&rec.deliver));
        let machine = |k: EventKind| {
            events
                .iter()
                .zip(&classes)
                .filter(|(e, c)| e.kind == k && c.is_some())
                .count() as u64
        };
        let whole = engagement(&rec, &events, &h);
        assert_eq!(whole["totals"]["machine_clicks"], machine(EventKind::Click));
        assert_eq!(whole["totals"]["machine_opens"], machine(EventKind::Open));
        assert_eq!(whole["totals"]["machine_clicks"], 2, "the burst");
        assert_eq!(whole["totals"]["clicks"], 2);
        let tl = whole["timeline"].as_array().expect("timeline");
        assert_eq!(tl.len(), events.len());
        assert_eq!(tl[0]["at"], rfc3339(1_000), "oldest first");
        assert!(tl.iter().any(|t| t["machine_network"] == "mimecast"));
        // Reversed, then in chunks of 1, 2 and 3: the same report.
        for size in 1..=3 {
            let mut rev = events.clone();
            rev.reverse();
            let mut d = Digest::new(&rec, &h);
            for c in rev.chunks(size) {
                d.add(c);
            }
            assert_eq!(d.len(), events.len());
            assert_eq!(d.report(&[]), whole, "chunks of {size}");
        }
    }

    #[test]
    fn replies_and_inferred_opens_are_counted_apart_from_opens() {
        // r0 replied twice without an open; r1 opened and replied; r2 only
        // clicked; r3 did nothing.
        let events = [
            hit(EventKind::Open, 1, 1_000),
            hit(EventKind::Click, 2, 2_000),
        ];
        let replies = [
            Reply {
                recipient: 0,
                at_ms: 9_000,
            },
            Reply {
                recipient: 0,
                at_ms: 5_000,
            },
            Reply {
                recipient: 1,
                at_ms: 7_000,
            },
            Reply {
                recipient: 9,
                at_ms: 7_000,
            },
        ];
        let h = Heuristics::default();
        let v = engagement_with_replies(&rec(4), &events, &replies, &h);
        let r = &v["recipients"];
        assert_eq!(r[0]["replies"], 2);
        assert_eq!(r[0]["first_reply_at"], rfc3339(5_000));
        assert_eq!(r[0]["inferred_opens"], 1);
        assert_eq!(r[0]["opens"], 0);
        assert_eq!(
            (r[1]["replies"].as_u64(), r[1]["inferred_opens"].as_u64()),
            (Some(1), Some(0))
        );
        assert_eq!(r[2]["inferred_opens"], 1);
        assert_eq!(
            (r[3]["replies"].as_u64(), r[3]["inferred_opens"].as_u64()),
            (Some(0), Some(0))
        );
        assert_eq!(r[3]["first_reply_at"], Value::Null);
        assert_eq!(v["totals"]["replies"], 3);
        assert_eq!(v["totals"]["inferred_opens"], 2);
        assert_eq!(v["totals"]["opens"], 1);
        // Without replies, a click alone still infers an open.
        let v = engagement(&rec(4), &events, &h);
        assert_eq!(v["totals"]["inferred_opens"], 1);
    }
}
