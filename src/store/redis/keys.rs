//! The Redis key layout, in one place (ARCHITECTURE.md describes it).
//!
//! Every key of one email shares the hash tag `{e:<id>}`, so each pipeline or
//! script that touches one email stays in one Cluster slot. Shard logs have their
//! own tags, spread over the slots so the nodes share the write load. Keys that are
//! not interaction data (users, settings, the key ring) share the tag `{g}` and
//! persist; every other key carries a TTL.

use crate::ids::id_to_text;

/// Number of shard logs. Each recorder batch goes to one of them, round robin.
pub const SHARDS: usize = 16;
/// The consumer group, on every shard log, that derives per-email events.
pub const GROUP: &str = "derive";

/// The email record (JSON). TTL: the email's `expires_ms`.
pub fn email(id: u64) -> String {
    format!("mb:{{e:{}}}:rec", id_to_text(id))
}

/// The email's events: a hash from event id (16 hex digits) to the event (JSON).
/// TTL: the email's `expires_ms`. Writing one event twice leaves one field.
pub fn events(id: u64) -> String {
    format!("mb:{{e:{}}}:ev", id_to_text(id))
}

/// A shard log: a stream whose entries are whole recorder batches (field `b`).
/// Entries are deleted once derived; the key's TTL is refreshed on every append.
pub fn log(shard: usize) -> String {
    format!("mb:{{log:{shard}}}")
}

/// Recipients of one email erased by a data-subject request: set of recipient
/// indexes; their events are deleted and never derived again. TTL: the email's.
pub fn erased(id: u64) -> String {
    format!("mb:{{e:{}}}:erased", id_to_text(id))
}

/// Reply facts of one email: hash keyed hash of the reply's Message-ID -> JSON
/// `Reply` (recipient index and time only). TTL: the email's `expires_ms`.
pub fn replies(id: u64) -> String {
    format!("mb:{{e:{}}}:replies", id_to_text(id))
}

/// Files of one email followed with attachment links: hash attachment index ->
/// sealed header and bytes. TTL: the email's `expires_ms`.
pub fn attachments(id: u64) -> String {
    format!("mb:{{e:{}}}:att", id_to_text(id))
}

/// The emails that mention an address: set of ids, keyed by the address's keyed
/// hash (hex). TTL: the latest expiry among its emails.
pub fn subject(hash: &str) -> String {
    format!("mb:{{s:{hash}}}:emails")
}

/// Every email: sorted set, score `created_ms`, member the id (16 hex digits).
pub const BY_TIME: &str = "mb:{x}:by_time";
/// Every email: sorted set, score `expires_ms`, member `<id>:<owner>`.
pub const BY_EXPIRY: &str = "mb:{x}:by_expiry";

/// One owner's emails: sorted set, score `created_ms`, member the id.
pub fn by_owner(owner: u64) -> String {
    format!("mb:{{o:{}}}:emails", id_to_text(owner))
}

/// Users: hash id -> JSON. Persists.
pub const USERS: &str = "mb:{g}:users";
/// Hash keyed hash (hex) of the user's email -> user id. Persists.
pub const USER_BY_EMAIL: &str = "mb:{g}:user_by_email";
/// Hash hex(SHA-256 of a bearer token) -> user id. Persists.
pub const TOKENS: &str = "mb:{g}:tokens";
/// Organization settings (JSON). Persists.
pub const SETTINGS: &str = "mb:{g}:settings";
/// The signing key ring (the same JSON as `keyring.json`). Persists.
pub const KEYRING: &str = "mb:{g}:keyring";
/// A counter handing each starting process a node number for its event ids.
pub const NODES: &str = "mb:{g}:nodes";
/// Contact preferences: hash keyed hash (hex) of the address -> JSON. Persists.
pub const CONTACTS: &str = "mb:{g}:contacts";
/// The audit log: hash seq (decimal) -> JSON entry. Persists.
pub const AUDIT: &str = "mb:{g}:audit";
/// The audit log's sequence counter.
pub const AUDIT_SEQ: &str = "mb:{g}:audit_seq";
/// Migration progress markers (`mailbeacon migrate`). Persists until the copy ends.
pub const MIGRATE: &str = "mb:{g}:migrate";

/// A user's dismissed action cards: sorted set, score the time the dismissal is
/// forgotten (the retention horizon), member the card id. TTL: its latest score.
pub fn cards_dismissed(user: u64) -> String {
    format!("mb:{{c:{}}}:dismissed", id_to_text(user))
}

/// A user's snoozed action cards: sorted set, score the snooze's end, member the
/// card id. TTL: its latest score. Same hash tag as `cards_dismissed`.
pub fn cards_snoozed(user: u64) -> String {
    format!("mb:{{c:{}}}:snoozed", id_to_text(user))
}
