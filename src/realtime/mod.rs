//! Real-time notifications: one vocabulary of application events for webhooks
//! and the live stream, and the one hook (`Emitter::emit`) every producer calls.
//!
//! Producers are the outbox (`email.sent`, `email.delivery_failed`), the
//! reminder timers (`reminder.due`), the reply watcher (`email.replied`) and the
//! derivation of recorded hits (`email.opened`, `email.clicked`), which runs off
//! the hot path: a pixel never waits for anything here.
//!
//! This module is the seam: `Emitter::emit` is the stable entry point; what it feeds
//! (the retained feed, webhook deliveries, server-sent event streams) lives
//! behind it.

use serde_json::{json, Map, Value};

use crate::ids::{id_to_text, rfc3339};

/// The kinds of application event (the `type` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    EmailSent,
    EmailDeliveryFailed,
    EmailOpened,
    EmailClicked,
    EmailReplied,
    ReminderDue,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::EmailSent,
        EventType::EmailDeliveryFailed,
        EventType::EmailOpened,
        EventType::EmailClicked,
        EventType::EmailReplied,
        EventType::ReminderDue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::EmailSent => "email.sent",
            EventType::EmailDeliveryFailed => "email.delivery_failed",
            EventType::EmailOpened => "email.opened",
            EventType::EmailClicked => "email.clicked",
            EventType::EmailReplied => "email.replied",
            EventType::ReminderDue => "reminder.due",
        }
    }

    /// The type named `s`, if it is one of the vocabulary's.
    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One application event, before it is serialized for a subscriber.
#[derive(Clone, Debug, PartialEq)]
pub struct AppEvent {
    /// Stable and unique per deployment: the idempotency key of every webhook
    /// delivery of this event (`webhook-id`) and the stream's `id:`.
    pub id: String,
    pub kind: EventType,
    pub at_ms: u64,
    /// The user who owns the email: whose webhooks and streams see the event.
    pub owner: u64,
    pub email_id: u64,
    /// The recipient's address, when the event concerns one recipient.
    pub recipient: Option<String>,
    /// Machine activity (see `classify`): only for subscriptions that asked.
    pub machine: bool,
    /// A recipient's first human open (or first human click).
    pub first: bool,
    /// Type-specific fields (`link`, `url`, `subject`, `detail`, …), merged into
    /// `data`.
    pub extra: Map<String, Value>,
}

impl AppEvent {
    /// The event as subscribers receive it:
    /// `{"id","type","at","data":{"email_id","recipient"?,"machine","first",…}}`.
    pub fn to_json(&self) -> Value {
        let mut data = Map::new();
        data.insert("email_id".into(), json!(id_to_text(self.email_id)));
        if let Some(r) = &self.recipient {
            data.insert("recipient".into(), json!(r));
        }
        data.insert("machine".into(), json!(self.machine));
        data.insert("first".into(), json!(self.first));
        for (k, v) in &self.extra {
            data.entry(k.clone()).or_insert_with(|| v.clone());
        }
        json!({
            "id": self.id,
            "type": self.kind.as_str(),
            "at": rfc3339(self.at_ms),
            "data": Value::Object(data),
        })
    }
}

/// The handle producers emit through (`App::realtime`). Cloning is cheap.
///
/// It never blocks and never fails the caller: a notification that cannot be
/// passed on is logged, and whatever the event describes is already stored by
/// its producer.
#[derive(Clone, Default)]
pub struct Emitter {}

impl Emitter {
    /// Hands events to the real-time machinery (the retained feed, webhook
    /// deliveries, live streams).
    pub fn emit(&self, events: Vec<AppEvent>) {
        for e in &events {
            tracing::debug!(id = %e.id, kind = e.kind.as_str(), "application event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip_and_unknown_is_none() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("email.bounced_maybe"), None);
    }

    #[test]
    fn json_has_the_contract_fields() {
        let mut extra = Map::new();
        extra.insert("link".into(), json!(2));
        extra.insert("first".into(), json!("ignored: core fields win"));
        let e = AppEvent {
            id: "evt_1".into(),
            kind: EventType::EmailClicked,
            at_ms: 0,
            owner: 7,
            email_id: 1,
            recipient: Some("bob@example.com".into()),
            machine: false,
            first: true,
            extra,
        };
        let v = e.to_json();
        assert_eq!(v["type"], "email.clicked");
        assert_eq!(v["at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["data"]["recipient"], "bob@example.com");
        assert_eq!(v["data"]["first"], true);
        assert_eq!(v["data"]["machine"], false);
        assert_eq!(v["data"]["link"], 2);
        assert!(v["data"]["email_id"].is_string());
    }
}
