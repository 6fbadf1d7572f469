//! mailbeacon's load test: pixel and click throughput side by side with nginx
//! `empty_gif` (access log to a file) and bare hyper, the same generator against
//! each; fault modes (server `kill -9`, Redis restart, Redis pause); and after every
//! run, the check that every answered hit was recorded exactly once.
//!
//! # Layout
//! - `compare`: what runs against what, in which order; fault injection; smoke.
//! - `gen`: the load generator (one thread, mio, keep-alive, per-URL counts).
//! - `api`: following emails through the API, reading the reports back.
//! - `check`: answered ≤ recorded ≤ sent, per recipient.
//! - `procs`: the processes (mailbeacon, nginx, hyper-min, Redis) and `/proc`.
//! - `hist`: the latency histogram; `report`: Markdown.
//! - `realtime`: `compare --realtime`, webhook and stream latency, their cost.
//! - `outbox`: `loadtest outbox`, copies per second to a local SMTP sink and
//!   the API's latency meanwhile.
//! - `reports`: `loadtest reports`, one email's report over 100,000 events and
//!   `/stats` over 5,000 emails: time and peak memory.

pub mod api;
pub mod check;
pub mod compare;
pub mod gen;
pub mod hist;
pub mod outbox;
pub mod procs;
pub mod realtime;
pub mod report;
pub mod reports;
