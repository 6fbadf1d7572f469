//! mailbeacon: a self-hosted email engagement server.
//!
//! # Layout
//! Read top to bottom; each module uses only modules below it, so a pixel hit
//! travels straight down: `server` → `http::beacon` → `token` (verify) →
//! `recorder` (group commit) → `store` → `store::embedded` or `store::redis`.
//!
//! - `server`: accept loop, connection limits, graceful shutdown; `tls`: rustls.
//! - `http`: the router (`mod.rs`), pixel and click (`beacon`), the JSON API
//!   and the pane's files in one handler file per resource, over the helpers
//!   `request`, `response` and `audit`.
//! - `auth`: bearer tokens.
//! - `state`: what handlers share (config, store, recorder, key ring, settings).
//! - `follow`: the follow use case (both follow endpoints): checks, contact
//!   preferences, the record stored first, then the copies returned or sent
//!   (`follow::send`); `follow::render`: a parsed email → record +
//!   per-recipient copies with tokens (pure).
//! - `deliver`: SMTP delivery of copies (lettre).
//! - `reports` and `classify`: engagement JSON; human vs machine activity.
//! - `subjects`: data-subject export and erase.
//! - `recorder`: group commit of events into the store.
//! - `metrics`: request, latency and recording counters for `/metrics`.
//! - `migrate`: copies everything between the embedded store and Redis.
//! - `store`: the storage interface; `store::embedded` (redb + journal),
//!   `store::redis` (one node or Cluster: shard logs, deriver, local spool).
//! - `prepare`: MIME parsing and HTML link rewriting (pure).
//! - `token` (pure) and `keyring` (its file): signed opaque tokens, key rotation.
//! - `seal` (pure): sealing personal data, keyed hashes for lookups.
//! - `config`: flags, environment and TOML; `ids`: ids and clocks; `address`:
//!   email-address checks.
//! - Outlook add-in: `http::{activities, compose, mailbox, pane}` (the add-in
//!   API and the pane's files), `addin::assets` (the embedded pane), `activities`
//!   (tracked emails, pure), `mailbox` (IMAP for Auto Capture; writes nothing),
//!   `entra` (Entra access tokens), `addin_manifest` (manifests and their checks).

pub mod activities;
pub mod addin;
pub mod addin_manifest;
pub mod address;
pub mod auth;
pub mod classify;
pub mod config;
pub mod deliver;
pub mod entra;
pub mod follow;
pub mod http;
pub mod ids;
pub mod keyring;
pub mod mailbox;
pub mod metrics;
pub mod migrate;
pub mod prepare;
pub mod recorder;
pub mod reports;
pub mod seal;
pub mod server;
pub mod state;
pub mod store;
pub mod subjects;
pub mod tls;
pub mod token;
