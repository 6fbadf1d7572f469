//! Insights (issue #14): what a user should know about their followed emails and
//! contacts, derived from recorded activity: an explainable engagement score
//! (`score`), the best time to send (`send_time`), action cards (`cards`) and
//! KPIs over time (`series`).
//!
//! Pure: no I/O, no clock (every function takes `now_ms`), no store — except
//! `feed`, which reads the operator's news feed (outside insights) into memory. The caller
//! loads the records and events and passes them in as [`Tracked`]; the results are
//! plain structs that serialize (serde) to the JSON design.md names, times as
//! RFC 3339 UTC and ids as 16 hex digits.
//!
//! Human activity is what counts: machine activity (see `classify`) is shown
//! apart and never adds a point, an hour or a card. Replies are human by nature.

pub mod cards;
pub mod feed;
pub mod score;
pub mod send_time;
pub mod series;

use serde::{Serialize, Serializer};

use crate::classify::{classify_all, Heuristics};
use crate::ids::{id_to_text, rfc3339};
use crate::model::{EmailRecord, Event, EventKind};

/// One day in milliseconds.
pub const DAY_MS: u64 = 86_400_000;
/// One hour in milliseconds.
pub const HOUR_MS: u64 = 3_600_000;

/// One recipient's reply to a followed email (what the reply watcher records).
pub use crate::model::Reply;

/// A reminder of the email that has fallen due (design.md: state `"due"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueReminder {
    /// `"no_reply"`, `"not_opened"` or `"always"`.
    pub when: String,
    /// When it fell due.
    pub at_ms: u64,
}

impl DueReminder {
    /// The email's reminder, if it has fallen due.
    pub fn of(rec: &EmailRecord) -> Option<DueReminder> {
        rec.reminder
            .as_ref()
            .filter(|r| r.state == "due")
            .map(|r| DueReminder {
                when: r.when.clone(),
                at_ms: r.at_ms,
            })
    }
}

/// One followed email and what is known about it, as insights read it.
#[derive(Debug, Clone, Copy)]
pub struct Tracked<'a> {
    pub record: &'a EmailRecord,
    /// Its recorded opens and clicks, in any order.
    pub events: &'a [Event],
    /// Its replies; `None` when replies are not known (no mailbox connected, or
    /// not recorded yet), which is different from "nobody replied": a `no_reply`
    /// card needs `Some`.
    pub replies: Option<&'a [Reply]>,
    /// Its reminder, when one has fallen due.
    pub reminder: Option<&'a DueReminder>,
}

impl<'a> Tracked<'a> {
    /// An email with its events; replies unknown, no reminder due.
    pub fn new(record: &'a EmailRecord, events: &'a [Event]) -> Tracked<'a> {
        Tracked {
            record,
            events,
            replies: None,
            reminder: None,
        }
    }

    pub fn with_replies(mut self, replies: &'a [Reply]) -> Tracked<'a> {
        self.replies = Some(replies);
        self
    }

    /// With what is known of its replies and its due reminder.
    pub fn known(
        mut self,
        replies: Option<&'a [Reply]>,
        reminder: Option<&'a DueReminder>,
    ) -> Tracked<'a> {
        self.replies = replies;
        self.reminder = reminder;
        self
    }

    pub fn with_reminder(mut self, reminder: &'a DueReminder) -> Tracked<'a> {
        self.reminder = Some(reminder);
        self
    }

    /// The address of recipient `i`; `None` when out of range or erased.
    pub(crate) fn address(&self, i: u32) -> Option<&'a str> {
        let r = self.record.recipients.get(i as usize)?;
        (!r.erased && !r.address.is_empty()).then_some(r.address.as_str())
    }

    /// How recipient `i` is named in a title: their name, else their address.
    pub(crate) fn who(&self, i: u32) -> String {
        let Some(r) = self.record.recipients.get(i as usize) else {
            return "someone".into();
        };
        match r.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => r.address.clone(),
        }
    }

    /// The subject as a title quotes it.
    pub(crate) fn subject(&self) -> &'a str {
        match self.record.subject.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => s,
            _ => "(no subject)",
        }
    }

    /// Every open, click and reply of a recipient that is still there (not
    /// erased), classified; sorted by time.
    pub(crate) fn activity(&self, h: &Heuristics) -> Vec<Act<'a>> {
        let classes = classify_all(self.events, &h.for_delivery(&self.record.deliver));
        let mut out: Vec<Act<'a>> = self
            .events
            .iter()
            .zip(classes)
            .filter(|(e, _)| self.address(e.recipient).is_some())
            .map(|(e, class)| Act {
                recipient: e.recipient,
                kind: match e.kind {
                    EventKind::Open => ActKind::Open,
                    EventKind::Click => ActKind::Click,
                },
                at_ms: e.at_ms,
                link: e.link,
                human: class.is_none(),
                net: e.ip.as_str(),
            })
            .collect();
        for r in self.replies.unwrap_or_default() {
            if self.address(r.recipient).is_some() {
                out.push(Act {
                    recipient: r.recipient,
                    kind: ActKind::Reply,
                    at_ms: r.at_ms,
                    link: None,
                    human: true,
                    net: "",
                });
            }
        }
        out.sort_by_key(|a| (a.at_ms, a.recipient, a.kind));
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ActKind {
    Open,
    Click,
    Reply,
}

/// One classified activity of one recipient.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Act<'a> {
    pub recipient: u32,
    pub kind: ActKind,
    pub at_ms: u64,
    pub link: Option<u32>,
    /// False for machine activity.
    pub human: bool,
    /// The client network (truncated address); empty when unknown.
    pub net: &'a str,
}

/// Addresses compare trimmed and case-insensitively.
pub(crate) fn same_address(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    !a.is_empty() && a.eq_ignore_ascii_case(b)
}

pub(crate) fn ser_time<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ms))
}

pub(crate) fn ser_opt_time<S: Serializer>(ms: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

pub(crate) fn ser_id<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&id_to_text(*id))
}

pub(crate) fn ser_opt_id<S: Serializer>(id: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.serialize_str(&id_to_text(*id)),
        None => s.serialize_none(),
    }
}

/// Serializes any `Serialize` value to JSON (never fails for these structs: all
/// keys are strings and all numbers finite).
pub fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Hand-made records and events for the insights tests.
    use crate::model::{EmailRecord, Event, EventKind, RecipientRecord};

    pub const FIREFOX: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

    /// 2026-11-03T00:00:00Z, a Tuesday.
    pub const TUE: u64 = 1_793_664_000_000;

    pub fn email(id: u64, owner: u64, subject: &str, to: &[&str]) -> EmailRecord {
        EmailRecord {
            id,
            owner,
            from: "alice@example.com".into(),
            subject: Some(subject.into()),
            message_id: None,
            created_ms: 0,
            expires_ms: u64::MAX,
            deliver: "return".into(),
            recipients: to
                .iter()
                .map(|a| RecipientRecord {
                    address: a.to_string(),
                    name: None,
                    field: "to".into(),
                    followed: true,
                    reason: None,
                    delivery: None,
                    erased: false,
                })
                .collect(),
            links: vec!["https://example.com/pricing".into()],
            lookups: vec![],
            template: None,
            send_at_ms: None,
            reminder: None,
        }
    }

    fn ev(kind: EventKind, email: u64, recipient: u32, at_ms: u64, ua: &str) -> Event {
        Event {
            seq: 0,
            at_ms,
            kind,
            email,
            recipient,
            link: (kind == EventKind::Click).then_some(0),
            method: "GET".into(),
            ua: ua.into(),
            ip: "192.0.2.0".into(),
            since_prepared_s: 3600,
            machine_net: None,
        }
    }

    /// A person's open.
    pub fn open(email: u64, recipient: u32, at_ms: u64) -> Event {
        ev(EventKind::Open, email, recipient, at_ms, FIREFOX)
    }

    /// A person's open from network `ip`.
    pub fn open_from(email: u64, recipient: u32, at_ms: u64, ip: &str) -> Event {
        let mut e = open(email, recipient, at_ms);
        e.ip = ip.into();
        e
    }

    /// Apple Mail Privacy Protection's prefetch: machine.
    pub fn machine_open(email: u64, recipient: u32, at_ms: u64) -> Event {
        ev(EventKind::Open, email, recipient, at_ms, "Mozilla/5.0")
    }

    /// A person's click on link 0.
    pub fn click(email: u64, recipient: u32, at_ms: u64) -> Event {
        ev(EventKind::Click, email, recipient, at_ms, FIREFOX)
    }

    /// A scanner's click on link 0: machine.
    pub fn machine_click(email: u64, recipient: u32, at_ms: u64) -> Event {
        ev(
            EventKind::Click,
            email,
            recipient,
            at_ms,
            "Mimecast URL Protect",
        )
    }
}
