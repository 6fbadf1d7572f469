//! Webhook subscriptions (`POST /api/v1/webhooks`) and the attempts made to
//! deliver events to them.

use serde::{Deserialize, Serialize};

/// A webhook subscription. `url` and `secret` are sealed at rest by `Store`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub id: u64,
    pub owner: u64,
    pub url: String,
    /// The signing secret, `whsec_` + base64 of 32 random bytes.
    pub secret: String,
    /// Event types (`email.opened`, …) delivered.
    pub events: Vec<String>,
    /// Also machine activity (scanners, privacy proxies).
    #[serde(default)]
    pub include_machine: bool,
    /// Everyone's emails (created by an admin), not only the owner's.
    #[serde(default)]
    pub all: bool,
    pub created_ms: u64,
    /// Since when every delivery failed (`None` after any success). Kept by
    /// the store's attempt log, not written by `put_webhook`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<u64>,
    /// When the webhook was disabled after failing for 24 h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_ms: Option<u64>,
}

/// One delivery attempt, as the per-webhook log keeps it (newest first).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Attempt {
    /// The event id (also `webhook-id`).
    pub delivery: String,
    pub event_type: String,
    pub attempt: u32,
    pub at_ms: u64,
    /// The receiver's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed without an answer (`target_timeout`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// "delivered", "retrying" or "failed".
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_try_ms: Option<u64>,
    /// The event as sent (kept for a manual retry).
    pub event: serde_json::Value,
}
