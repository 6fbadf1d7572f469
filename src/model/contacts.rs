//! Contacts' "Follow email" preferences and the audit log of administrative
//! actions.

use serde::{Deserialize, Serialize};

/// A contact's "Follow email" preference.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FollowEmail {
    Allow,
    DoNotAllow,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// Normalized address.
    pub address: String,
    pub follow_email: FollowEmail,
    pub updated_ms: u64,
}

/// One administrative action: who did what, when.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Assigned by the store.
    #[serde(default)]
    pub seq: u64,
    pub at_ms: u64,
    /// The acting user's id (0 = the bootstrap admin token, u64::MAX = the system).
    pub actor: u64,
    /// E.g. "settings.update", "contact.update", "subject.export", "subject.erase".
    pub action: String,
    /// The address the action was about, if any (sealed at rest; blanked when that
    /// subject is erased).
    pub subject: Option<String>,
    /// Free-form details, never personal data.
    pub detail: String,
}
