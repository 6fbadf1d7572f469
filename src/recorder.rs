//! Group commit for opens and clicks.
//!
//! Request handlers hand an event to the recorder and wait for its answer. One
//! task takes everything queued, commits it to the store as one batch (one sync,
//! or one Redis round trip), and then answers every waiter. While a batch is being
//! committed, new events queue up and form the next batch, so the batch size grows
//! with load and the cost per event falls. A handler answers its HTTP request only
//! after its event's batch is committed: an answered hit is a stored hit.
//!
//! After a batch is committed, and only then, a copy of its events goes to the
//! optional notification sink (real time derives webhook and stream events from
//! it) with `try_send`: a full sink drops the *notification* (counted in
//! `RecorderStats::notify_dropped`, logged), never the hit, and never waits.
//!
//! Shutdown: when every `Recorder` handle is dropped the task drains the queue,
//! commits the last batch and ends; `Recorder::closed` waits for that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::model::Event;
use crate::store::Store;

/// Most events in one batch.
const MAX_BATCH: usize = 4096;
/// Events waiting for a batch before senders wait (back-pressure).
const QUEUE: usize = 65_536;

type Job = (Event, oneshot::Sender<bool>);

/// Counters the metrics endpoint and tests read.
#[derive(Default)]
pub struct RecorderStats {
    pub events: AtomicU64,
    pub batches: AtomicU64,
    pub failures: AtomicU64,
    /// Committed events whose notification was dropped (the sink was full).
    pub notify_dropped: AtomicU64,
}

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Job>,
    pub stats: Arc<RecorderStats>,
}

impl Recorder {
    /// Starts the batching task on the current runtime.
    pub fn start(store: Store) -> (Recorder, JoinHandle<()>) {
        Recorder::start_with(store, None)
    }

    /// Like `start`, handing a copy of every committed batch to `notify`.
    pub fn start_with(
        store: Store,
        notify: Option<mpsc::Sender<Vec<Event>>>,
    ) -> (Recorder, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(RecorderStats::default());
        let handle = tokio::spawn(run(store, rx, stats.clone(), notify));
        (Recorder { tx, stats }, handle)
    }

    /// Records one event; returns true if and only if it was durably committed.
    pub async fn record(&self, event: Event) -> bool {
        let (ack_tx, ack_rx) = oneshot::channel();
        if self.tx.send((event, ack_tx)).await.is_err() {
            return false;
        }
        ack_rx.await.unwrap_or(false)
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::Receiver<Job>,
    stats: Arc<RecorderStats>,
    notify: Option<mpsc::Sender<Vec<Event>>>,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let (events, acks): (Vec<Event>, Vec<oneshot::Sender<bool>>) = jobs.drain(..).unzip();
        let n = events.len() as u64;
        crate::metrics::METRICS.batch_sizes.observe(n);
        let copy = notify.as_ref().map(|_| events.clone());
        let ok = match store.commit_events(events).await {
            Ok(()) => true,
            Err(e) => {
                stats.failures.fetch_add(n, Ordering::Relaxed);
                tracing::error!(error = %e, events = n, "committing events failed");
                false
            }
        };
        if ok {
            stats.events.fetch_add(n, Ordering::Relaxed);
            stats.batches.fetch_add(1, Ordering::Relaxed);
        }
        for ack in acks {
            let _ = ack.send(ok);
        }
        if let (true, Some(sink), Some(copy)) = (ok, &notify, copy) {
            if sink.try_send(copy).is_err() {
                stats.notify_dropped.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(
                    events = n,
                    "real-time notifications dropped (hits are stored)"
                );
            }
        }
    }
}
