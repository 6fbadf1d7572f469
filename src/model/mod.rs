//! The domain records: plain data that the HTTP layer, reports, follow and the
//! store all speak, with no behaviour of their own beyond small helpers.
//!
//! They live here, not in `store`, so that a module needing a `User` or an
//! `Event` does not depend on the storage layer. The serde attributes are the
//! stored format (the embedded store and Redis keep these records as JSON), so
//! changing one is a data migration, not a refactor.
//!
//! One file per record family: `users` (users, organization settings), `emails`
//! (followed emails, their events and reply facts), `contacts` (contact preferences, audit
//! log), `addin` (the Outlook add-in's records).

mod addin;
mod contacts;
mod emails;
mod users;
mod webhooks;

pub use addin::{
    Activity, ActivityPersonal, AttachmentInfo, MailboxConfig, MailboxSecret, Participant,
    Regarding, UserSettings,
};
pub use contacts::{AuditEntry, Contact, FollowEmail};
pub use emails::{
    Attachment, Compact, CompactEvents, Delivery, EmailRecord, Event, EventKind, RecipientRecord,
    Reminder, Reply,
};
pub use users::{OrgSettings, Role, User};
pub use webhooks::{Attempt, Webhook};
