//! mailbeacon: a self-hosted email engagement server.
//!
//! # Layout
//! Read top to bottom; each module uses only modules below it, so a pixel hit
//! travels straight down: `server` → `http::beacon` → `token` (verify) →
//! `recorder` (group commit) → `store` → `store::embedded` or `store::redis`.
//!
//! - `serve`: what `mailbeacon serve` runs (opens the store, starts the background
//!   tasks, serves until shut down); `keys_cmd`: the `keys` command.
//! - `server`: accept loop, connection limits, graceful shutdown; `tls`: rustls.
//! - `http`: routing (`mod.rs`), pixel and click (`beacon`), the JSON API (`api`).
//! - `auth`: bearer tokens.
//! - `state`: what handlers share (config, store, recorder, key ring, settings).
//! - `follow`: a parsed email → record + per-recipient copies with tokens.
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
//! - `config`: flags, environment and TOML; `ids`: ids and clocks.
//! - Outlook add-in: `addin` (its server side: `activities`, tracked emails,
//!   pure; `mailbox`, IMAP for Auto Capture, writes nothing; `entra`, Entra
//!   access tokens; `manifest`, manifests and their checks), `http::addin` (pane
//!   files and add-in API), `store::addin` (its records).

pub mod addin;
pub mod auth;
pub mod classify;
pub mod config;
pub mod deliver;
pub mod follow;
pub mod http;
pub mod ids;
pub mod keyring;
pub mod keys_cmd;
pub mod metrics;
pub mod migrate;
pub mod prepare;
pub mod recorder;
pub mod reports;
pub mod seal;
pub mod serve;
pub mod server;
pub mod state;
pub mod store;
pub mod subjects;
pub mod tls;
pub mod token;

// TEMPORARY: the old paths, for modules not yet switched to `crate::addin::…`
// (`http::addin`, `http::api`, `state`, `auth`, `subjects`). Removed once they are.
pub use addin::{activities, entra, mailbox};
