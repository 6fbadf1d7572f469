//! Records of the Outlook add-in, and the `Store` methods that keep them:
//! tracked emails (Email Activities), per-user settings, connected mailboxes
//! (Auto Capture credentials) and external identities (Entra `tid`+`oid`).
//!
//! Personal data sits in exactly one field group per record, so sealing it
//! (encrypting before it is written) touches one place: `ActivityPersonal` for
//! an activity (participants, subject, bodies, attachment names) and
//! `MailboxSecret` for a mailbox (the password or OAuth bearer). The Message-ID
//! stays outside: it is the deduplication key (a keyed hash can replace it there
//! when sealing lands).
//!
//! Activities are interaction data: each one carries `expires_ms` (from the
//! organization's `retention_days`) and the sweep removes it. Settings,
//! mailboxes and identities are not, and persist until deleted.

use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreError, User};

/// A tracked email: an email the user chose to copy into the CRM.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Activity {
    pub id: u64,
    pub owner: u64,
    /// Normalized Message-ID (no angle brackets): unique within the deployment.
    pub message_id: String,
    /// The thread's root Message-ID (first of References, else In-Reply-To, else
    /// this message's own).
    pub conversation: String,
    /// The tracked activity this email replies to, if any (In-Reply-To first,
    /// then References from nearest to oldest).
    pub reply_to: Option<u64>,
    /// "outgoing" when the owner sent it, else "incoming".
    pub direction: String,
    pub regarding: Option<Regarding>,
    /// The followed email (`/api/v1/emails/{id}`) whose pixel this message
    /// carries, when it was followed from compose or sent through mailbeacon.
    pub email_id: Option<u64>,
    /// "addin" (tracked from the pane) or "capture" (tracked from Auto Capture).
    pub source: String,
    /// The message's Date header, when it had a valid one.
    pub sent_ms: Option<u64>,
    pub created_ms: u64,
    /// When retention removes this activity.
    pub expires_ms: u64,
    pub personal: ActivityPersonal,
}

/// The CRM record an activity is "regarding" (a contact, an opportunity, ...).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Regarding {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

/// Everything personal about an activity, kept together so it can be sealed in
/// one place.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ActivityPersonal {
    pub from: Option<Participant>,
    pub to: Vec<Participant>,
    pub cc: Vec<Participant>,
    pub subject: Option<String>,
    pub body_text: Option<String>,
    pub body_html: Option<String>,
    pub attachments: Vec<AttachmentInfo>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Participant {
    /// Normalized (lowercased) address.
    pub address: String,
    pub name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AttachmentInfo {
    pub name: Option<String>,
    pub size: u64,
    pub content_type: String,
}

/// Per-user switches (not interaction data).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserSettings {
    pub auto_capture: bool,
}

impl Default for UserSettings {
    fn default() -> Self {
        UserSettings { auto_capture: true }
    }
}

/// A connected mailbox for Auto Capture. The secret is never sent back by the API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MailboxConfig {
    pub host: String,
    pub port: u16,
    /// "none" (plain IMAP), "tls" (implicit TLS, usually 993) or "starttls".
    pub tls: String,
    pub username: String,
    pub updated_ms: u64,
    pub secret: MailboxSecret,
}

/// The credential, kept apart so it can be sealed in one place.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MailboxSecret {
    Password(String),
    /// An OAuth 2.0 bearer for SASL XOAUTH2.
    Xoauth2(String),
}

impl MailboxSecret {
    pub fn kind(&self) -> &'static str {
        match self {
            MailboxSecret::Password(_) => "password",
            MailboxSecret::Xoauth2(_) => "xoauth2",
        }
    }
}

/// What `insert_activity` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Stored as new.
    New,
    /// An activity with the same Message-ID already exists (nothing written).
    Existing(Box<Activity>),
}

fn unsupported(what: &str) -> StoreError {
    StoreError::Backend(format!(
        "{what} is not implemented by this store backend yet"
    ))
}

// Each method matches on the backend; a backend added later without an
// implementation answers a clear error instead of failing to build.
#[allow(unreachable_patterns)]
impl Store {
    /// Stores `a` unless an activity with its Message-ID exists (checked and
    /// written in one transaction), in which case that one is returned.
    pub async fn insert_activity(&self, a: Activity) -> Result<Inserted> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.insert_activity(&a)).await,
            _ => Err(unsupported("insert_activity")),
        }
    }

    /// Replaces an existing activity (same id and Message-ID).
    pub async fn update_activity(&self, a: Activity) -> Result<()> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.update_activity(&a)).await,
            _ => Err(unsupported("update_activity")),
        }
    }

    pub async fn get_activity(&self, id: u64) -> Result<Option<Activity>> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.get_activity(id)).await,
            _ => Err(unsupported("get_activity")),
        }
    }

    pub async fn activity_by_message_id(&self, message_id: String) -> Result<Option<Activity>> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.activity_by_message_id(&message_id)).await,
            _ => Err(unsupported("activity_by_message_id")),
        }
    }

    /// Which of `message_ids` are tracked (by anyone in the deployment).
    pub async fn tracked_message_ids(&self, message_ids: Vec<String>) -> Result<Vec<bool>> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.tracked_message_ids(&message_ids)).await,
            _ => Err(unsupported("tracked_message_ids")),
        }
    }

    /// Newest first.
    pub async fn list_activities(&self, owner: u64, limit: usize) -> Result<Vec<Activity>> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.list_activities(owner, limit)).await,
            _ => Err(unsupported("list_activities")),
        }
    }

    /// Removes an activity; returns true if and only if it existed.
    pub async fn delete_activity(&self, id: u64) -> Result<bool> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.delete_activity(id)).await,
            _ => Err(unsupported("delete_activity")),
        }
    }

    pub async fn user_settings(&self, user: u64) -> Result<UserSettings> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.user_settings(user)).await,
            _ => Err(unsupported("user_settings")),
        }
    }

    pub async fn put_user_settings(&self, user: u64, settings: UserSettings) -> Result<()> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.put_user_settings(user, &settings)).await,
            _ => Err(unsupported("put_user_settings")),
        }
    }

    pub async fn mailbox(&self, user: u64) -> Result<Option<MailboxConfig>> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.mailbox(user)).await,
            _ => Err(unsupported("mailbox")),
        }
    }

    pub async fn put_mailbox(&self, user: u64, m: MailboxConfig) -> Result<()> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.put_mailbox(user, &m)).await,
            _ => Err(unsupported("put_mailbox")),
        }
    }

    /// Returns true if and only if a mailbox was connected.
    pub async fn delete_mailbox(&self, user: u64) -> Result<bool> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.delete_mailbox(user)).await,
            _ => Err(unsupported("delete_mailbox")),
        }
    }

    pub async fn user_by_email(&self, email: String) -> Result<Option<User>> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.user_by_email(&email)).await,
            _ => Err(unsupported("user_by_email")),
        }
    }

    /// The user an external identity (e.g. `entra:{tid}:{oid}`) is linked to.
    pub async fn user_by_external(&self, key: String) -> Result<Option<User>> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.user_by_external(&key)).await,
            _ => Err(unsupported("user_by_external")),
        }
    }

    pub async fn link_external(&self, key: String, user: u64) -> Result<()> {
        match self {
            Store::Embedded(s) => s.run(move |s| s.link_external(&key, user)).await,
            _ => Err(unsupported("link_external")),
        }
    }
}
