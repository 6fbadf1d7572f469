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
//! - `http`: the router (`mod.rs`), pixel and click (`beacon`), the JSON API
//!   and the pane's files in one handler file per resource, over the helpers
//!   `request`, `response` and `audit`.
//! - `auth`: bearer tokens.
//! - `state`: what handlers share (config, store, recorder, key ring, settings).
//! - `follow`: the follow use case (both follow endpoints): checks, contact
//!   preferences, the record stored first, then the copies returned or handed
//!   to the outbox.
//! - `render` (pure): a parsed email → record + per-recipient copies with
//!   tokens; used by `follow` (returned copies) and `outbox` (at send time).
//! - `outbox`: SMTP copies sent by a durable queue after the request (retries,
//!   send later, cancel; rendered at send time with `render`), and
//!   `outbox::reminder` (reminder timers).
//! - `deliver`: SMTP delivery of copies (lettre), CRLF line ends.
//! - `reports` and `classify`: engagement JSON; human vs machine activity.
//! - `insights` (pure): engagement score, best time to send, action cards.
//! - `subjects`: data-subject export and erase.
//! - `realtime`: the application-event vocabulary and the `emit` hook (webhooks, streams).
//! - `jobs`: the worker loop over the store's durable job queues (leases, backoff).
//! - `replies`: the reply watcher: replies and bounces found in connected
//!   mailboxes' INBOX (IDLE or polling), stored as facts only.
//! - `recorder`: group commit of events into the store.
//! - `metrics`: request, latency and recording counters for `/metrics`.
//! - `migrate`: copies everything between the embedded store and Redis.
//! - `model`: the domain records (users, emails and events, contacts, audit,
//!   add-in records): plain data, the stored format.
//! - `store`: the storage interface; `store::embedded` (redb + journal),
//!   `store::redis` (one node or Cluster: shard logs, deriver, local spool).
//! - `prepare`: MIME parsing and HTML link rewriting (pure).
//! - `token` (pure) and `keyring` (its file): signed opaque tokens, key rotation.
//! - `seal` (pure): sealing personal data, keyed hashes for lookups.
//! - `config`: flags, environment and TOML; `ipnet`: CIDR networks; `ids`: ids and clocks; `address`:
//!   email-address checks.
//! - Outlook add-in: `addin` (its server side: `activities`, tracked emails,
//!   pure; `mailbox`, IMAP for Auto Capture, writes nothing; `entra`, Entra
//!   access tokens; `manifest`, manifests and their checks; `assets`, the pane's
//!   files), `http::{activities, compose, mailbox, pane}` (the add-in API and the
//!   pane's files), `store::addin` and `model::addin` (its records).
//! - `outbound`: connections made for users (IMAP, webhooks, feeds), public addresses only; `outbound::http`.

pub mod addin;
pub mod address;
pub mod auth;
pub mod classify;
pub mod config;
pub mod deliver;
pub mod follow;
pub mod http;
pub mod ids;
pub mod insights;
pub mod ipnet;
pub mod jobs;
pub mod keyring;
pub mod keys_cmd;
pub mod metrics;
pub mod migrate;
pub mod model;
pub mod outbound;
pub mod outbox;
pub mod prepare;
pub mod realtime;
pub mod recorder;
pub mod render;
pub mod replies;
pub mod reports;
pub mod seal;
pub mod serve;
pub mod server;
pub mod state;
pub mod store;
pub mod subjects;
pub mod tls;
pub mod token;
