//! The Outlook add-in's server side, apart from its HTTP handlers
//! (`http::{activities, compose, mailbox, pane}`) and its store records
//! (`store::addin`, `model::addin`):
//!
//! - `activities` (pure): a raw RFC 5322 message turned into the activity
//!   record the CRM keeps, and that record's JSON.
//! - `mailbox`: the IMAP source for Auto Capture (list and fetch one user's
//!   emails with one address); writes nothing anywhere.
//! - `entra`: checks Microsoft Entra access tokens (Nested App Authentication)
//!   and names the user they belong to.
//! - `assets`: the task pane's files, embedded in the binary (served by
//!   `http::pane`, listed in the manifests).
//! - `manifest`: the add-in's XML and JSON manifests for one deployment, and the
//!   checks the Office schemas cannot express (`mailbeacon addin manifest`).
//!
//! Nothing here imports an HTTP handler; the handlers import these.

pub mod activities;
pub mod assets;
pub mod entra;
pub mod mailbox;
pub mod manifest;
