//! Records of the Outlook add-in: tracked emails (Email Activities) and what
//! they are "regarding", per-user settings, and connected mailboxes (Auto
//! Capture credentials). External identities (Entra `tid`+`oid`) are keys
//! linked to a `User`, with no record of their own.

use serde::{Deserialize, Serialize};

/// A tracked email: an email the user chose to copy into the CRM.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Activity {
    pub id: u64,
    pub owner: u64,
    /// Normalized Message-ID (no angle brackets): unique per owner.
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
    /// At rest only: `personal`, `message_id` and `conversation`, sealed (the
    /// stored `message_id` and `conversation` are then keyed hashes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// At rest only: keyed hashes (hex) of the participants' addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lookups: Vec<String>,
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
