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
//!
//! Barriers (`Recorder::barrier_within`): a hit that is not recorded (an invalid
//! token, HEAD, a prefetch, Email Engagement off) queues a job without an event.
//! It rides in the next batch and is answered with it; a batch of barriers only
//! is still handed to the store as an empty commit (the embedded journal syncs,
//! writing nothing), so a hit that is not recorded waits for the same group
//! commit as one that is, and the answer's timing does not tell them apart.
//!
//! Bounded wait (`record_within`, `barrier_within`): a caller waits at most its
//! limit (`commit_wait`). Past it the caller goes on (`Outcome::Pending`); the
//! event is not dropped: it stays queued (or, if the queue itself was full, a
//! task holds it until there is room) and is committed when the store recovers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::model::Event;
use crate::store::Store;

/// Most events in one batch.
const MAX_BATCH: usize = 4096;
/// Events waiting for a batch before senders wait (back-pressure).
const QUEUE: usize = 65_536;

/// An event to commit, or `None`: a barrier, answered at the next commit.
type Job = (Option<Event>, oneshot::Sender<bool>);

/// How a bounded wait for a commit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The batch holding the job was durably committed.
    Committed,
    /// The commit failed (or the recorder is gone): the event is not stored.
    Failed,
    /// The limit passed first; the event stays queued and is committed later.
    Pending,
}

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
        if self.tx.send((Some(event), ack_tx)).await.is_err() {
            return false;
        }
        ack_rx.await.unwrap_or(false)
    }

    /// Records one event, waiting at most `limit` for its batch to be committed.
    /// `Pending` means the limit passed: the event is still committed later.
    pub async fn record_within(&self, event: Event, limit: Duration) -> Outcome {
        self.submit_within(Some(event), limit).await
    }

    /// Waits, at most `limit`, for the next group commit, recording nothing:
    /// what a hit that is not recorded waits for, so that it takes as long as
    /// one that is.
    pub async fn barrier_within(&self, limit: Duration) -> Outcome {
        self.submit_within(None, limit).await
    }

    async fn submit_within(&self, event: Option<Event>, limit: Duration) -> Outcome {
        let deadline = tokio::time::Instant::now() + limit;
        let (ack_tx, ack_rx) = oneshot::channel();
        let job = (event, ack_tx);
        match tokio::time::timeout_at(deadline, self.tx.reserve()).await {
            Ok(Ok(permit)) => permit.send(job),
            Ok(Err(_)) => return Outcome::Failed,
            Err(_) => {
                // The queue stayed full past the limit (a stalled store): keep
                // the event in a task until there is room, and answer now.
                if job.0.is_some() {
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(job).await;
                    });
                }
                return Outcome::Pending;
            }
        }
        match tokio::time::timeout_at(deadline, ack_rx).await {
            Ok(Ok(true)) => Outcome::Committed,
            Ok(_) => Outcome::Failed,
            Err(_) => Outcome::Pending,
        }
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
        let (events, acks): (Vec<Option<Event>>, Vec<oneshot::Sender<bool>>) =
            jobs.drain(..).unzip();
        // Barriers carry no event; a batch of barriers only is an empty commit,
        // which the store still makes wait for its sync.
        let events: Vec<Event> = events.into_iter().flatten().collect();
        let n = events.len() as u64;
        if n > 0 {
            crate::metrics::METRICS.batch_sizes.observe(n);
        }
        let copy = notify.as_ref().map(|_| events.clone());
        let ok = match store.commit_events(events).await {
            Ok(()) => true,
            Err(e) => {
                stats.failures.fetch_add(n, Ordering::Relaxed);
                tracing::error!(error = %e, events = n, "committing events failed");
                false
            }
        };
        if ok && n > 0 {
            stats.events.fetch_add(n, Ordering::Relaxed);
            stats.batches.fetch_add(1, Ordering::Relaxed);
        }
        for ack in acks {
            let _ = ack.send(ok);
        }
        if let (true, true, Some(sink), Some(copy)) = (ok, n > 0, &notify, copy) {
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
