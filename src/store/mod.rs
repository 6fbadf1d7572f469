//! The storage interface: domain records and the `Store` that holds them.
//!
//! HTTP handlers and the recorder see only this module. `Store` is an enum whose
//! methods match on the backend and delegate (the shape stalwart's mail-server
//! uses), so adding the Redis backend means adding a variant, not touching callers.
//! Each backend lives in its own file; `embedded` is the default.
//!
//! Architecture invariant: only this module and its children talk to a database.

pub mod addin;
pub mod embedded;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A user of the API. Bearer tokens are stored only as SHA-256 hashes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: u64,
    /// Normalized (trimmed, lowercased) address; the From a user may send as.
    pub email: String,
    pub role: Role,
    pub created_ms: u64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

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
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct RecipientRecord {
    /// Normalized address.
    pub address: String,
    pub name: Option<String>,
    /// "to", "cc" or "bcc".
    pub field: String,
    pub followed: bool,
    /// Why the recipient is not followed (e.g. "contact_opted_out").
    pub reason: Option<String>,
    pub delivery: Option<Delivery>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Delivery {
    /// "returned", "sent" or "failed".
    pub status: String,
    pub detail: Option<String>,
    pub at_ms: u64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Open,
    Click,
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
    pub link: Option<u32>,
    /// HTTP method of the counted request (HEAD and prefetches are never counted).
    pub method: String,
    /// User agent, at most 512 bytes; empty when the request had none.
    pub ua: String,
    /// Client address truncated to /24 (IPv4) or /48 (IPv6).
    pub ip: String,
    /// Seconds between the copy being prepared and this event.
    pub since_prepared_s: i64,
}

/// Organization-wide switches, changed by admins.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrgSettings {
    pub email_engagement: bool,
    pub auto_capture: bool,
    pub retention_days: u32,
}

#[derive(Debug)]
pub enum StoreError {
    /// A unique value (e.g. a user's email) already exists.
    Conflict(String),
    /// The backend failed; the message is for logs, not for API clients.
    Backend(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Conflict(m) => write!(f, "conflict: {m}"),
            StoreError::Backend(m) => write!(f, "store: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The store in use. Cheap to clone.
#[derive(Clone)]
pub enum Store {
    Embedded(Arc<embedded::Embedded>),
}

impl Store {
    /// A short name for logs and `/healthz`.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Embedded(_) => "embedded",
        }
    }

    /// Creates a user; `Conflict` if a user with that email exists.
    pub async fn create_user(&self, user: User, token_hash: [u8; 32]) -> Result<()> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.create_user(&user, &token_hash)).await,
        }
    }

    pub async fn user_by_token_hash(&self, hash: [u8; 32]) -> Result<Option<User>> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.user_by_token_hash(&hash)).await,
        }
    }

    pub async fn user_count(&self) -> Result<u64> {
        match self {
            Store::Embedded(s) => s.run(|s| s.user_count()).await,
        }
    }

    /// Inserts or replaces an email record, durably.
    pub async fn put_email(&self, rec: EmailRecord) -> Result<()> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.put_email(&rec)).await,
        }
    }

    pub async fn get_email(&self, id: u64) -> Result<Option<EmailRecord>> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.get_email(id)).await,
        }
    }

    /// Newest first. `owner: None` lists every user's emails. `before` is the
    /// (created_ms, id) of the last email of a previous page (exclusive).
    pub async fn list_emails(
        &self,
        owner: Option<u64>,
        before: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<Vec<EmailRecord>> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.list_emails(owner, before, limit)).await,
        }
    }

    /// Durably commits a batch of events (one sync for the whole batch). When this
    /// returns Ok, every event of the batch survives a crash.
    pub async fn commit_events(&self, events: Vec<Event>) -> Result<()> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.commit_events(events)).await,
        }
    }

    /// Every event recorded for one email, oldest first, including every event
    /// committed before this call (read-your-writes).
    pub async fn events_for(&self, email: u64) -> Result<Vec<Event>> {
        match self {
            Store::Embedded(s) => {
                s.wait_indexed().await;
                s.run(move |s| s.events_for(email)).await
            }
        }
    }

    pub async fn settings(&self) -> Result<Option<OrgSettings>> {
        match self {
            Store::Embedded(s) => s.run(|s| s.settings()).await,
        }
    }

    pub async fn put_settings(&self, settings: OrgSettings) -> Result<()> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.put_settings(&settings)).await,
        }
    }

    /// Removes every email (and its events) and every tracked activity whose
    /// retention ended before `now_ms`. Returns how many records were removed.
    pub async fn sweep(&self, now_ms: u64) -> Result<usize> {
        match self {
            Store::Embedded(s) => {
                s.run(move |s| Ok(s.sweep(now_ms)? + s.sweep_activities(now_ms)?))
                    .await
            }
        }
    }

    /// Makes everything durable and stops background work. Call once, at shutdown.
    pub async fn close(&self) -> Result<()> {
        match self {
            Store::Embedded(s) => s.run(|s| s.close()).await,
        }
    }
}
