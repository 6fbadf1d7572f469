//! Followed emails (what was prepared, for whom, how delivery went) and the
//! opens and clicks recorded about them.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// A followed email: what was prepared, for whom, and how delivery went.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct EmailRecord {
    pub id: u64,
    pub owner: u64,
    pub from: String,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub created_ms: u64,
    /// When retention removes this email and everything recorded about it.
    pub expires_ms: u64,
    /// "return" or "smtp".
    pub deliver: String,
    pub recipients: Vec<RecipientRecord>,
    /// Trackable links in document order; a click token's link index points here.
    pub links: Vec<String>,
    /// Keyed hashes (hex) of every address this email mentions (sender and
    /// recipients), for data-subject requests, and of its Message-ID (in a
    /// namespace of its own), for the reply watcher. Computed by `Store`.
    #[serde(default)]
    pub lookups: Vec<String>,
    /// The sender's name for the template or campaign this email belongs to
    /// (optional; totals are grouped by it). Sealed like the subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// `deliver: "smtp"` with `send_at`: when the copies are due (ms). The
    /// outbox's jobs carry the same time; this is what reports show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at_ms: Option<u64>,
    /// The sender's reminder, if one is set (see `outbox::reminder`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminder: Option<Reminder>,
}

impl EmailRecord {
    /// The email's state for reports: `returned` (not sent by us), `scheduled`
    /// (waiting for `send_at`), `queued`, `sending` (some copies still to go),
    /// `cancelled` (every copy), `sent` (every copy final, at least one sent), or
    /// `failed` (none sent).
    pub fn state(&self) -> &'static str {
        let rec = self;
        if rec.deliver != "smtp" {
            return "returned";
        }
        let states: Vec<&str> = rec
            .recipients
            .iter()
            .filter_map(|r| r.delivery.as_ref().map(|d| d.state.as_str()))
            .collect();
        let any = |s: &str| states.contains(&s);
        if any("scheduled") {
            "scheduled"
        } else if states.iter().all(|s| *s == "queued") && !states.is_empty() {
            "queued"
        } else if any("queued") || any("sending") {
            "sending"
        } else if states.iter().all(|s| *s == "cancelled") {
            "cancelled"
        } else if any("sent") {
            "sent"
        } else {
            "failed"
        }
    }
}

/// "Remind me at `at_ms` if …": checked once over all recipients.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Reminder {
    /// "no_reply", "not_opened" or "always".
    pub when: String,
    pub at_ms: u64,
    /// "pending", then "due" or "skipped"; "cancelled" once deleted.
    pub state: String,
    /// `Some("email")`: when due, a short email also goes to the sender
    /// (`outbox::notify`). `None`: the `reminder.due` event only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct RecipientRecord {
    /// Normalized address; empty once the recipient was erased.
    pub address: String,
    pub name: Option<String>,
    /// "to", "cc" or "bcc".
    pub field: String,
    pub followed: bool,
    /// Why the recipient is not followed (e.g. "contact_opted_out").
    pub reason: Option<String>,
    pub delivery: Option<Delivery>,
    /// True once a data-subject erase removed this recipient: their events are
    /// deleted and new ones are not recorded.
    #[serde(default)]
    pub erased: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Delivery {
    /// "returned" (deliver "return"), or for the outbox "queued", "scheduled",
    /// "sending", "sent", "failed", "bounced" or "cancelled". Records written
    /// before the outbox name it `status` (then only "sent" or "failed").
    #[serde(alias = "status")]
    pub state: String,
    /// The SMTP reply of a failure (sealed: it may quote the address).
    pub detail: Option<String>,
    /// When the state was reached.
    pub at_ms: u64,
}

impl Delivery {
    pub fn new(state: &str, detail: Option<String>, at_ms: u64) -> Delivery {
        Delivery {
            state: state.into(),
            detail,
            at_ms,
        }
    }

    /// No further change is coming from the outbox.
    pub fn is_final(&self) -> bool {
        matches!(
            self.state.as_str(),
            "sent" | "failed" | "bounced" | "cancelled" | "returned"
        )
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Open,
    Click,
    /// A view (download) of an attachment's tracked link; the event's `link`
    /// is the attachment's index.
    Attachment,
}

/// One recorded open or click, with what machine-activity classification needs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Assigned by the store when the event is committed; unique per deployment
    /// store, and the event's idempotency key.
    #[serde(default)]
    pub seq: u64,
    pub at_ms: u64,
    pub kind: EventKind,
    pub email: u64,
    pub recipient: u32,
    /// The link's index for a click, the attachment's for an attachment view.
    pub link: Option<u32>,
    /// HTTP method of the counted request (HEAD and prefetches are never counted).
    /// Borrowed for the methods the hot path records, also when read back, so
    /// an event costs no allocation for it.
    #[serde(deserialize_with = "method")]
    pub method: Cow<'static, str>,
    /// User agent, at most 512 bytes; empty when the request had none.
    pub ua: String,
    /// Client address truncated to /24 (IPv4) or /48 (IPv6).
    pub ip: String,
    /// Seconds between the copy being prepared and this event.
    pub since_prepared_s: i64,
    /// The label of the operator-listed machine network the client address was
    /// in when the event was recorded (`MAILBEACON_MACHINE_NETWORKS`), if any.
    /// An operator's name for a network (e.g. "mimecast"), not personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_net: Option<String>,
}

/// How the stores write events: each one as a JSON array of its fields in
/// declaration order (`[seq,at_ms,"open",email,recipient,link,"GET",ua,ip,
/// since_prepared_s]`, then `machine_net` when set) instead of an object. Half
/// the bytes of the object form (the field names were ~90 of ~240), which both
/// Redis copies of an event (the log entry and the derived field, each fsynced
/// under `appendfsync always`) and the embedded journal pay per hit. Reading
/// needs nothing: `Event`'s derived `Deserialize` takes a sequence as well as a
/// map, so data written in either form (and by older versions) reads back the
/// same, and older versions read this form.
pub struct Compact<'a>(pub &'a Event);

/// A batch of events in the compact form (see `Compact`): a JSON array of arrays.
pub struct CompactEvents<'a>(pub &'a [Event]);

impl Serialize for Compact<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let e = self.0;
        let n = if e.machine_net.is_some() { 11 } else { 10 };
        let mut t = s.serialize_tuple(n)?;
        t.serialize_element(&e.seq)?;
        t.serialize_element(&e.at_ms)?;
        t.serialize_element(&e.kind)?;
        t.serialize_element(&e.email)?;
        t.serialize_element(&e.recipient)?;
        t.serialize_element(&e.link)?;
        t.serialize_element(&e.method)?;
        t.serialize_element(&e.ua)?;
        t.serialize_element(&e.ip)?;
        t.serialize_element(&e.since_prepared_s)?;
        if let Some(net) = &e.machine_net {
            t.serialize_element(net)?;
        }
        t.end()
    }
}

impl Serialize for CompactEvents<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(Compact))
    }
}

/// Reads an event's method: the common ones borrowed (see `Event::method`).
fn method<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Cow<'static, str>, D::Error> {
    struct Method;
    impl serde::de::Visitor<'_> for Method {
        type Value = Cow<'static, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an HTTP method")
        }
        // Called with the text in place (borrowed or a scratch buffer): only
        // a method that is not a common one is copied.
        fn visit_str<E: serde::de::Error>(self, m: &str) -> Result<Self::Value, E> {
            Ok(match m {
                "GET" => Cow::Borrowed("GET"),
                "HEAD" => Cow::Borrowed("HEAD"),
                _ => Cow::Owned(m.to_owned()),
            })
        }
    }
    d.deserialize_str(Method)
}

/// A recipient's reply to a followed email, as the reply watcher records it:
/// only the fact and the time, never anything of the reply's content. Stored
/// once per reply (keyed by a keyed hash of the reply's own Message-ID).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The recipient's index in the email's `recipients`.
    pub recipient: u32,
    /// When the reply arrived (its INTERNALDATE), ms since the epoch.
    pub at_ms: u64,
}

/// A file taken out of the copies of an email followed with `"attachments":
/// "link"` and served by its tracked download link (`/a/{token}/…`). Stored
/// once per email, sealed as a whole, removed with the email.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The file name as the message gave it.
    pub name: String,
    /// `type/subtype`.
    pub content_type: String,
    /// The original (decoded) bytes.
    pub data: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(machine_net: Option<&str>) -> Event {
        Event {
            seq: 7534223662841340929,
            at_ms: 1796298900328,
            kind: EventKind::Click,
            email: 14599117743657494660,
            recipient: 3,
            link: Some(2),
            method: Cow::Borrowed("GET"),
            ua: "s1.ua-sealed".into(),
            ip: "s1.ip-sealed".into(),
            since_prepared_s: -4,
            machine_net: machine_net.map(str::to_owned),
        }
    }

    #[test]
    fn the_compact_form_reads_back_and_is_smaller() {
        for e in [sample(None), sample(Some("mimecast"))] {
            let compact = serde_json::to_vec(&Compact(&e)).unwrap();
            let object = serde_json::to_vec(&e).unwrap();
            assert_eq!(compact[0], b'[');
            assert_eq!(serde_json::from_slice::<Event>(&compact).unwrap(), e);
            assert!(
                compact.len() * 3 < object.len() * 2,
                "{} vs {}",
                compact.len(),
                object.len()
            );
            // A batch mixing both forms (data written before and after) reads too.
            let mut mixed = b"[".to_vec();
            mixed.extend_from_slice(&object);
            mixed.push(b',');
            mixed.extend_from_slice(
                &serde_json::to_vec(&CompactEvents(std::slice::from_ref(&e))).unwrap()[1..],
            );
            let back: Vec<Event> = serde_json::from_slice(&mixed).unwrap();
            assert_eq!(back, vec![e.clone(), e.clone()]);
        }
        // A damaged array is an error, not a guess.
        assert!(serde_json::from_slice::<Event>(b"[1,2,\"open\",3]").is_err());
        assert!(serde_json::from_slice::<Event>(
            b"[1,2,\"open\",3,0,null,\"GET\",\"\",\"\",0,null,9]"
        )
        .is_err());
    }

    #[test]
    fn an_events_method_reads_back_borrowed_when_common() {
        let json = |m: &str| {
            format!(
                r#"{{"seq":1,"at_ms":2,"kind":"open","email":3,"recipient":0,"link":null,"method":{m},"ua":"","ip":"","since_prepared_s":0}}"#
            )
        };
        let read = |m: &str| {
            serde_json::from_str::<Event>(&json(m))
                .expect("event")
                .method
        };
        assert!(matches!(read(r#""GET""#), Cow::Borrowed("GET")));
        // Escaped text goes through a scratch buffer, and is still recognised.
        assert!(matches!(read(r#""G\u0045T""#), Cow::Borrowed("GET")));
        assert!(matches!(read(r#""POST""#), Cow::Owned(ref m) if m == "POST"));
        assert!(serde_json::from_str::<Event>(&json("7")).is_err());
    }
}
