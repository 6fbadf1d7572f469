//! Process metrics for `GET /metrics` (Prometheus text format).
//!
//! Everything is a fixed array of relaxed atomics in one static, so recording
//! costs a few uncontended increments per request and nothing allocates on the hot
//! path. Rendering reads the atomics (and the recorder's and store's counters) and
//! builds the text.
//!
//! Architecture invariant: this module knows no other module; callers hand it
//! plain numbers.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Routes, as labelled in `mailbeacon_requests_total`.
pub const ROUTES: [&str; 6] = ["pixel", "click", "api", "healthz", "metrics", "other"];
/// Statuses counted apart; anything else is `other`.
const STATUSES: [u16; 13] = [
    200, 201, 204, 302, 400, 401, 403, 404, 405, 409, 413, 500, 503,
];
/// Latency bucket upper bounds, in microseconds.
const LATENCY_US: [u64; 12] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000,
];
/// Batch size bucket upper bounds, in events.
const BATCH: [u64; 13] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

pub struct Histogram<const N: usize> {
    bounds: [u64; N],
    /// One more than the bounds: the last counts values above every bound.
    counts: [AtomicU64; 16],
    sum: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    const fn new(bounds: [u64; N]) -> Self {
        Histogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; 16],
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: u64) {
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(N);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Writes `name_bucket`, `name_sum` and `name_count`; `scale` divides bounds
    /// and the sum (1e6 turns microseconds into seconds).
    fn render(&self, out: &mut String, name: &str, labels: &str, scale: f64) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let le = *b as f64 / scale;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[N].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum.load(Ordering::Relaxed) as f64 / scale;
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braced} {sum}");
        let _ = writeln!(out, "{name}_count{braced} {cumulative}");
    }
}

pub struct Metrics {
    requests: [[AtomicU64; STATUSES.len() + 1]; ROUTES.len()],
    latency: [Histogram<12>; ROUTES.len()],
    pub batch_sizes: Histogram<13>,
    /// Opens and clicks answered before their batch was durable (the commit
    /// took longer than `commit_wait`; the event is committed later).
    pub answered_before_commit: AtomicU64,
}

pub static METRICS: Metrics = Metrics {
    requests: [const { [const { AtomicU64::new(0) }; STATUSES.len() + 1] }; ROUTES.len()],
    latency: [const { Histogram::new(LATENCY_US) }; ROUTES.len()],
    batch_sizes: Histogram::new(BATCH),
    answered_before_commit: AtomicU64::new(0),
};

/// The route label index of a request path.
pub fn route_of(path: &str) -> usize {
    if path.starts_with("/o/") {
        0
    } else if path.starts_with("/c/") {
        1
    } else if path.starts_with("/api/") {
        2
    } else if path == "/healthz" {
        3
    } else if path == "/metrics" {
        4
    } else {
        5
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, route: usize, status: u16, took: Duration) {
        let route = route.min(ROUTES.len() - 1);
        let s = STATUSES
            .iter()
            .position(|x| *x == status)
            .unwrap_or(STATUSES.len());
        self.requests[route][s].fetch_add(1, Ordering::Relaxed);
        self.latency[route].observe(took.as_micros() as u64);
    }
}

/// Values owned elsewhere (recorder, store) that the text includes.
pub struct Gauges {
    pub store: &'static str,
    pub events_recorded: u64,
    pub event_failures: u64,
    pub batches: u64,
    pub spool_events: u64,
    pub degraded: bool,
    pub store_errors: u64,
    pub derived_events: u64,
    pub derive_lag_ms: u64,
}

/// The whole exposition.
pub fn render(g: &Gauges) -> String {
    let m = &METRICS;
    let mut out = String::with_capacity(8192);
    out.push_str("# HELP mailbeacon_requests_total HTTP requests answered, by route and status.\n# TYPE mailbeacon_requests_total counter\n");
    for (r, route) in ROUTES.iter().enumerate() {
        for (i, counter) in m.requests[r].iter().enumerate() {
            let n = counter.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            let status = STATUSES
                .get(i)
                .map(|s| s.to_string())
                .unwrap_or_else(|| "other".into());
            let _ = writeln!(
                out,
                "mailbeacon_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
    }
    out.push_str("# HELP mailbeacon_request_duration_seconds Time from request to response, by route.\n# TYPE mailbeacon_request_duration_seconds histogram\n");
    for (r, route) in ROUTES.iter().enumerate() {
        m.latency[r].render(
            &mut out,
            "mailbeacon_request_duration_seconds",
            &format!("route=\"{route}\""),
            1e6,
        );
    }
    let _ = writeln!(
        out,
        "# HELP mailbeacon_hits_answered_before_commit_total Opens and clicks answered before their batch was durable (the store stalled past the commit wait; the event is committed when it recovers).\n# TYPE mailbeacon_hits_answered_before_commit_total counter\nmailbeacon_hits_answered_before_commit_total {}",
        m.answered_before_commit.load(Ordering::Relaxed)
    );
    out.push_str("# HELP mailbeacon_batch_size Events per committed batch (group commit).\n# TYPE mailbeacon_batch_size histogram\n");
    m.batch_sizes
        .render(&mut out, "mailbeacon_batch_size", "", 1.0);
    let scalar = |out: &mut String, name: &str, kind: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{store=\"{}\"}} {v}",
            g.store
        );
    };
    scalar(
        &mut out,
        "mailbeacon_events_recorded_total",
        "counter",
        "Opens and clicks durably committed.",
        g.events_recorded,
    );
    scalar(
        &mut out,
        "mailbeacon_event_failures_total",
        "counter",
        "Opens and clicks that could not be committed (answered, not stored).",
        g.event_failures,
    );
    scalar(
        &mut out,
        "mailbeacon_batches_total",
        "counter",
        "Batches committed.",
        g.batches,
    );
    scalar(
        &mut out,
        "mailbeacon_spool_events",
        "gauge",
        "Events kept in the local spool until Redis takes them.",
        g.spool_events,
    );
    scalar(
        &mut out,
        "mailbeacon_store_degraded",
        "gauge",
        "1 while the store cannot take writes and events are spooled locally.",
        u64::from(g.degraded),
    );
    scalar(
        &mut out,
        "mailbeacon_store_errors_total",
        "counter",
        "Store commands that failed.",
        g.store_errors,
    );
    scalar(
        &mut out,
        "mailbeacon_derived_events_total",
        "counter",
        "Events this process copied from the shard logs into per-email data (Redis).",
        g.derived_events,
    );
    scalar(
        &mut out,
        "mailbeacon_derive_lag_milliseconds",
        "gauge",
        "Age of the newest log entry at its derivation, last pass (Redis).",
        g.derive_lag_ms,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new([1, 10]);
        for v in [0, 1, 5, 50] {
            h.observe(v);
        }
        let mut s = String::new();
        h.render(&mut s, "x", "", 1.0);
        assert!(s.contains("x_bucket{le=\"1\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"10\"} 3\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 4\n"), "{s}");
        assert!(s.contains("x_count 4\n"), "{s}");
    }
}
