//! Users of the API and the organization's settings.

use serde::{Deserialize, Serialize};

/// A user of the API. Bearer tokens are stored only as SHA-256 hashes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: u64,
    /// Normalized (trimmed, lowercased) address; the From a user may send as.
    pub email: String,
    pub role: Role,
    pub created_ms: u64,
    /// A disabled user's tokens answer 401 (`PATCH /api/v1/users/{id}`).
    /// Absent in records written before accounts could be disabled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

/// Organization-wide switches, changed by admins.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrgSettings {
    pub email_engagement: bool,
    pub auto_capture: bool,
    pub retention_days: u32,
}
