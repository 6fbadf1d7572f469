//! Real-time notifications: one vocabulary of application events for webhooks
//! and the live stream, and the one hook (`Emitter::emit`) every producer calls.
//!
//! Producers are the outbox (`email.sent`, `email.delivery_failed`), the
//! reminder timers (`reminder.due`), the reply watcher (`email.replied`) and the
//! derivation of recorded hits (`email.opened`, `email.clicked`), which runs off
//! the hot path: a pixel never waits for anything here.
//!
//! This module is the seam: `Emitter::emit` is the stable entry point; what it feeds
//! (the retained feed, webhook deliveries, server-sent event streams) lives
//! behind it.

pub mod audience;
pub mod derive;
pub mod feed;
pub mod webhooks;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::ids::{id_to_text, rfc3339};
use crate::jobs::{Jobs, SystemClock, WorkerOptions};
use crate::model::Event;
use crate::store::Store;
use feed::Hub;
use webhooks::Subscriptions;

/// The kinds of application event (the `type` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    EmailSent,
    EmailDeliveryFailed,
    EmailOpened,
    EmailClicked,
    /// A human or machine view of an attachment's tracked link.
    EmailAttachmentViewed,
    EmailReplied,
    ReminderDue,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        EventType::EmailSent,
        EventType::EmailDeliveryFailed,
        EventType::EmailOpened,
        EventType::EmailClicked,
        EventType::EmailAttachmentViewed,
        EventType::EmailReplied,
        EventType::ReminderDue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::EmailSent => "email.sent",
            EventType::EmailDeliveryFailed => "email.delivery_failed",
            EventType::EmailOpened => "email.opened",
            EventType::EmailClicked => "email.clicked",
            EventType::EmailAttachmentViewed => "email.attachment_viewed",
            EventType::EmailReplied => "email.replied",
            EventType::ReminderDue => "reminder.due",
        }
    }

    /// The type named `s`, if it is one of the vocabulary's.
    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One application event, before it is serialized for a subscriber.
#[derive(Clone, Debug, PartialEq)]
pub struct AppEvent {
    /// Stable and unique per deployment: the idempotency key of every webhook
    /// delivery of this event (`webhook-id`) and the stream's `id:`.
    pub id: String,
    pub kind: EventType,
    pub at_ms: u64,
    /// The user who owns the email: whose webhooks and streams see the event.
    pub owner: u64,
    pub email_id: u64,
    /// The recipient's address, when the event concerns one recipient.
    pub recipient: Option<String>,
    /// Machine activity (see `classify`): only for subscriptions that asked.
    pub machine: bool,
    /// A recipient's first human open (or first human click).
    pub first: bool,
    /// Type-specific fields (`link`, `url`, `subject`, `detail`, …), merged into
    /// `data`.
    pub extra: Map<String, Value>,
}

impl AppEvent {
    /// The event as subscribers receive it:
    /// `{"id","type","at","data":{"email_id","recipient"?,"machine","first",…}}`.
    pub fn to_json(&self) -> Value {
        let mut data = Map::new();
        data.insert("email_id".into(), json!(id_to_text(self.email_id)));
        if let Some(r) = &self.recipient {
            data.insert("recipient".into(), json!(r));
        }
        data.insert("machine".into(), json!(self.machine));
        data.insert("first".into(), json!(self.first));
        for (k, v) in &self.extra {
            data.entry(k.clone()).or_insert_with(|| v.clone());
        }
        json!({
            "id": self.id,
            "type": self.kind.as_str(),
            "at": rfc3339(self.at_ms),
            "data": Value::Object(data),
        })
    }
}

/// The handle producers emit through (`App::realtime`). Cloning is cheap.
///
/// It never blocks and never fails the caller: a notification that cannot be
/// passed on (the channel to the publisher is full) is counted and logged, and
/// whatever the event describes is already stored by its producer.
///
/// `emit` gives each event its feed id (`evt_<ms>-<seq>-<index>`, ordered);
/// an id set by the producer is replaced. `Emitter::default()` (what `App::new`
/// starts with) only logs; `start` makes a live one.
#[derive(Clone, Default)]
pub struct Emitter {
    live: Option<Arc<Live>>,
}

struct Live {
    tx: mpsc::Sender<Vec<AppEvent>>,
    hub: Hub,
    subs: Arc<Subscriptions>,
    jobs: Jobs,
    stop: watch::Receiver<bool>,
    heartbeat: Duration,
}

/// Notifications dropped because the publisher's channel was full.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

impl Emitter {
    /// Hands events to the real-time machinery (the retained feed, webhook
    /// deliveries, live streams).
    pub fn emit(&self, events: Vec<AppEvent>) {
        let Some(live) = &self.live else {
            for e in &events {
                tracing::debug!(id = %e.id, kind = e.kind.as_str(), "application event");
            }
            return;
        };
        if events.is_empty() {
            return;
        }
        let n = events.len() as u64;
        if live.tx.try_send(events).is_err() {
            DROPPED.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(events = n, "real-time channel full: notifications dropped");
        }
    }

    /// This process's live events, when real time runs.
    pub fn hub(&self) -> Option<&Hub> {
        self.live.as_ref().map(|l| &l.hub)
    }

    /// Tells the publisher and workers that the webhook list changed here.
    pub fn webhooks_changed(&self) {
        if let Some(l) = &self.live {
            l.subs.invalidate();
        }
    }

    /// The webhook delivery queue (for a manual retry).
    pub fn webhook_jobs(&self) -> Option<&Jobs> {
        self.live.as_ref().map(|l| &l.jobs)
    }

    /// Completes when the server is shutting down (streams end then).
    pub async fn stopping(&self) {
        match &self.live {
            Some(l) => {
                let mut stop = l.stop.clone();
                let _ = stop.wait_for(|s| *s).await;
            }
            None => std::future::pending().await,
        }
    }

    /// How often streams send a heartbeat comment.
    pub fn heartbeat(&self) -> Duration {
        self.live
            .as_ref()
            .map_or(DEFAULT_HEARTBEAT, |l| l.heartbeat)
    }
}

/// The default heartbeat of a stream.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// Committed hit batches waiting for derivation before new ones are dropped.
const HIT_BATCHES: usize = 1024;
/// Emitted batches waiting before new ones are dropped.
const EMIT_BATCHES: usize = 1024;

/// Real time, running: the emitter for `App`, the sink the recorder hands
/// committed batches to, and what `stop` ends.
pub struct Realtime {
    pub emitter: Emitter,
    pub hits: HitSink,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    publisher: JoinHandle<()>,
    background: Option<Background>,
}

/// Where the recorder hands committed batches (`Recorder::start_with`).
pub type HitSink = mpsc::Sender<Vec<Event>>;

/// Starts the publisher (derivation, feed, fan-out), the feed's tail and the
/// webhook worker.
pub fn start(store: Store, config: &Config, heartbeat: Duration) -> Realtime {
    // Every task below runs on the background thread (when it could start).
    let background = Background::start();
    let _on_background = background.as_ref().map(|b| b.handle.enter());
    let (tx, app_rx) = mpsc::channel(EMIT_BATCHES);
    let (hits, hits_rx) = mpsc::channel(HIT_BATCHES);
    let (stop, stop_rx) = watch::channel(false);
    let hub = Hub::default();
    let subs = Arc::new(Subscriptions::default());
    let jobs = Jobs::new(store.clone(), webhooks::QUEUE);
    let deriver = derive::Deriver::new(store.clone(), config.heuristics);
    let publisher = tokio::spawn(publish_loop(
        store.clone(),
        deriver,
        hits_rx,
        app_rx,
        hub.clone(),
        subs.clone(),
        jobs.clone(),
    ));
    let deliverer = Arc::new(webhooks::Deliverer::new(
        store.clone(),
        config.outbound.clone(),
        subs.clone(),
    ));
    let mut worker_stop = stop_rx.clone();
    let worker = tokio::spawn(crate::jobs::run_worker(
        jobs.clone(),
        move |job| {
            let d = deliverer.clone();
            async move { d.run(job).await }
        },
        WorkerOptions {
            concurrency: 32,
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(1),
            clock: Arc::new(SystemClock),
        },
        async move {
            let _ = worker_stop.wait_for(|s| *s).await;
        },
    ));
    let tail = tokio::spawn(feed::tail(store, hub.clone(), stop_rx.clone()));
    Realtime {
        emitter: Emitter {
            live: Some(Arc::new(Live {
                tx,
                hub,
                subs,
                jobs,
                stop: stop_rx,
                heartbeat,
            })),
        },
        hits,
        stop,
        tasks: vec![worker, tail],
        publisher,
        background,
    }
}

/// A thread of its own for real time's tasks, off the runtime thread that
/// answers requests: the publisher's derivation and feed appends and the
/// tail's reads then use the machine's other core instead of delaying answers
/// (on the 1,000-email pixel mix they were about 5 % of that thread's time).
struct Background {
    handle: tokio::runtime::Handle,
    /// Dropped (or sent) to end the thread.
    end: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// `None` (and real time runs on the caller's runtime) if the thread or
    /// its runtime cannot be created.
    fn start() -> Option<Background> {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!(error = %e, "no runtime for real time's thread; sharing the server's");
                return None;
            }
        };
        let handle = rt.handle().clone();
        let (end, ended) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("mailbeacon-rt".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = ended.await;
                });
                rt.shutdown_timeout(Duration::from_secs(5));
            });
        match thread {
            Ok(t) => Some(Background {
                handle,
                end: Some(end),
                thread: Some(t),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "no thread for real time; sharing the server's");
                None
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.end.take();
        if let Some(t) = self.thread.take() {
            // The thread only waits for `end`, then for its runtime's
            // shutdown (bounded); a panic there is already reported.
            let _ = t.join();
        }
    }
}

impl Realtime {
    /// Tells streams, the tail and the webhook worker to finish (at the start
    /// of shutdown).
    pub fn stop_signal(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }

    /// After the recorder and `App` are gone: lets the publisher finish what
    /// was handed to it and the worker the deliveries in hand (bounded waits).
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        drop(self.emitter);
        drop(self.hits);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.publisher).await;
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(12), t).await;
        }
        // Joining the thread blocks: off this runtime's thread.
        if let Some(b) = self.background {
            let _ = tokio::task::spawn_blocking(move || drop(b)).await;
        }
    }
}

/// Most hits derived in one pass (one derivation, one feed entry).
const PASS_HITS: usize = 16_384;
/// The shortest time from one pass's start to the next: what arrives meanwhile
/// joins the next pass. Each pass has a fixed cost (a first-mark call and a
/// feed append, each a durable store write, a tail read, a wake-up of every
/// listening stream), paid per recorder batch without it; with it, at most
/// 1 / `PASS_INTERVAL` times a second, for up to that much more latency.
const PASS_INTERVAL: Duration = Duration::from_millis(20);

/// Publisher passes, hits derived, events published, and the lag of the last
/// pass and the worst seen: from the oldest hit's time to its entry's append
/// (for `/metrics`).
pub static PASSES: AtomicU64 = AtomicU64::new(0);
pub static HITS_DERIVED: AtomicU64 = AtomicU64::new(0);
pub static PUBLISHED: AtomicU64 = AtomicU64::new(0);
pub static LAST_PASS_HITS: AtomicU64 = AtomicU64::new(0);
pub static LAG_MS: AtomicU64 = AtomicU64::new(0);
pub static MAX_LAG_MS: AtomicU64 = AtomicU64::new(0);
pub static PASS_US: AtomicU64 = AtomicU64::new(0);

/// The real-time lines of `/metrics` (Prometheus text).
/// `handoff_dropped` is the recorder's count of committed hits whose
/// notification it dropped because its backlog behind the hand-off was full.
pub fn metrics_text(streams: usize, handoff_dropped: u64) -> String {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let rows: [(&str, &str, &str, u64); 13] = [
        (
            "mailbeacon_realtime_handoff_dropped_total",
            "counter",
            "Committed hits (stored) whose notification was dropped: the recorder's backlog behind its hand-off to real time was full.",
            handoff_dropped,
        ),
        (
            "mailbeacon_realtime_passes_total",
            "counter",
            "Publisher passes (each one derivation and one feed entry).",
            get(&PASSES),
        ),
        (
            "mailbeacon_realtime_hits_derived_total",
            "counter",
            "Committed hits turned into application events.",
            get(&HITS_DERIVED),
        ),
        (
            "mailbeacon_realtime_published_total",
            "counter",
            "Application events appended to the feed.",
            get(&PUBLISHED),
        ),
        (
            "mailbeacon_realtime_dropped_total",
            "counter",
            "Notifications dropped (a channel was full or the feed failed).",
            get(&DROPPED),
        ),
        (
            "mailbeacon_realtime_last_pass_hits",
            "gauge",
            "Hits derived in the last pass.",
            get(&LAST_PASS_HITS),
        ),
        (
            "mailbeacon_realtime_last_pass_microseconds",
            "gauge",
            "Duration of the last pass (derive, append, queue deliveries).",
            get(&PASS_US),
        ),
        (
            "mailbeacon_realtime_lag_milliseconds",
            "gauge",
            "Last pass: from its oldest hit to the feed append.",
            get(&LAG_MS),
        ),
        (
            "mailbeacon_realtime_max_lag_milliseconds",
            "gauge",
            "The largest lag of any pass so far.",
            get(&MAX_LAG_MS),
        ),
        (
            "mailbeacon_realtime_tail_reads_total",
            "counter",
            "Feed reads by this process's tail (one per wake-up, whatever the streams).",
            get(&feed::TAIL_READS),
        ),
        (
            "mailbeacon_realtime_tail_entries_total",
            "counter",
            "Feed entries those reads returned.",
            get(&feed::TAIL_ENTRIES),
        ),
        (
            "mailbeacon_realtime_tail_unpacked_total",
            "counter",
            "Entries unpacked because a stream here listens to someone.",
            get(&feed::TAIL_UNPACKED),
        ),
        (
            "mailbeacon_realtime_streams",
            "gauge",
            "Event streams open on this process.",
            streams as u64,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, v) in rows {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        ));
    }
    out
}

/// Turns what arrives (committed hits, emitted events) into published events:
/// each pass (at most one per `PASS_INTERVAL`) takes everything waiting (up to
/// `PASS_HITS` hits), derives it
/// together (one email read per email not cached, one first-mark call), appends
/// one feed entry, wakes the tail, then queues the webhook deliveries.
async fn publish_loop(
    store: Store,
    deriver: derive::Deriver,
    mut hits: mpsc::Receiver<Vec<Event>>,
    mut app: mpsc::Receiver<Vec<AppEvent>>,
    hub: Hub,
    subs: Arc<Subscriptions>,
    jobs: Jobs,
) {
    let (mut hits_open, mut app_open) = (true, true);
    let mut last_pass: Option<tokio::time::Instant> = None;
    // When this process last recorded its open streams (each stream records
    // itself as it opens).
    let mut recorded_streams = std::time::Instant::now();
    while hits_open || app_open {
        // After a pass, let the next gather for the rest of `PASS_INTERVAL`
        // (the channels hold what arrives; the recorder keeps a backlog).
        if let Some(at) = last_pass.take() {
            tokio::time::sleep_until(at + PASS_INTERVAL).await;
        }
        let mut batch: Vec<Event> = Vec::new();
        let mut events: Vec<AppEvent> = Vec::new();
        tokio::select! {
            h = hits.recv(), if hits_open => match h {
                Some(h) => batch = h,
                None => { hits_open = false; continue; }
            },
            a = app.recv(), if app_open => match a {
                Some(a) => events = a,
                None => { app_open = false; continue; }
            },
        }
        // Whatever else is waiting joins this pass.
        while let Ok(a) = app.try_recv() {
            events.extend(a);
        }
        while batch.len() < PASS_HITS {
            match hits.try_recv() {
                Ok(h) => batch.extend(h),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        last_pass = Some(tokio::time::Instant::now());
        let oldest = batch.iter().map(|h| h.at_ms).min();
        let n_hits = batch.len() as u64;
        let hooks = subs.get(&store).await;
        if !batch.is_empty() {
            audience::refresh(&store, &hub, &mut recorded_streams).await;
            let to = audience::receivers(&store, &hooks, &hub).await;
            events.extend(deriver.derive(batch, &to).await);
        }
        HITS_DERIVED.fetch_add(n_hits, Ordering::Relaxed);
        LAST_PASS_HITS.store(n_hits, Ordering::Relaxed);
        if events.is_empty() {
            continue;
        }
        let n = events.len();
        let published = match feed::publish(&store, events).await {
            Ok(p) => p,
            Err(e) => {
                DROPPED.fetch_add(n as u64, Ordering::Relaxed);
                tracing::error!(error = %e, events = n, "cannot append to the feed: notifications dropped");
                continue;
            }
        };
        hub.wake();
        if let Some(oldest) = oldest {
            let lag = crate::ids::now_ms().saturating_sub(oldest);
            LAG_MS.store(lag, Ordering::Relaxed);
            MAX_LAG_MS.fetch_max(lag, Ordering::Relaxed);
        }
        PASSES.fetch_add(1, Ordering::Relaxed);
        PUBLISHED.fetch_add(n as u64, Ordering::Relaxed);
        let due = webhooks::fan_out(&hooks, &published, crate::ids::now_ms());
        if !due.is_empty() {
            if let Err(e) = jobs.enqueue(due).await {
                tracing::error!(error = %e, "cannot queue webhook deliveries");
            }
        }
        PASS_US.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip_and_unknown_is_none() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("email.bounced_maybe"), None);
    }

    #[test]
    fn json_has_the_contract_fields() {
        let mut extra = Map::new();
        extra.insert("link".into(), json!(2));
        extra.insert("first".into(), json!("ignored: core fields win"));
        let e = AppEvent {
            id: "evt_1".into(),
            kind: EventType::EmailClicked,
            at_ms: 0,
            owner: 7,
            email_id: 1,
            recipient: Some("bob@example.com".into()),
            machine: false,
            first: true,
            extra,
        };
        let v = e.to_json();
        assert_eq!(v["type"], "email.clicked");
        assert_eq!(v["at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["data"]["recipient"], "bob@example.com");
        assert_eq!(v["data"]["first"], true);
        assert_eq!(v["data"]["machine"], false);
        assert_eq!(v["data"]["link"], 2);
        assert!(v["data"]["email_id"].is_string());
    }
}
