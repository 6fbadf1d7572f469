//! Group commit for opens and clicks.
//!
//! Request handlers hand an event to the recorder and wait for its answer. One
//! task takes everything queued, commits it to the store as one batch (one sync,
//! or one Redis round trip), and then answers every waiter. While a batch is being
//! committed, new events queue up and form the next batch, so the batch size grows
//! with load and the cost per event falls. A handler answers its HTTP request only
//! after its event's batch is committed: an answered hit is a stored hit.
//!
//! Batches in flight: up to `Store::commits_in_flight` batches are committed at
//! once (1 for the embedded journal, which syncs one batch at a time; 2 for
//! Redis, which writes and fsyncs one while the next forms and travels). They
//! finish in the order they started: a batch's waiters are answered, and its
//! events told, only after every earlier batch's.
//!
//! Pacing (`Pacer`): a batch started while another is in flight would only
//! queue behind it (Redis runs one batch per event-loop pass, each with its own
//! `appendfsync always` fsync), so it is not started at the first hit that
//! arrives but half an expected commit after the batch in flight started (the
//! expectation: a moving average of recent commits, at most `GATE_MAX`). The
//! hits that arrive meanwhile join it instead of forming a batch (and an fsync)
//! of their own. tokio's timer has millisecond resolution, so the wait ends at
//! the first tick after that point, or sooner when the batch in flight
//! finishes (then nothing is in flight and the batch starts at once). With
//! one batch in flight at most (the embedded journal) it never applies.
//!
//! After a batch is committed, and only then, its events (the store sealed a
//! copy of them; these stay in the clear) go to the optional notification sink (real time derives webhook and stream events from
//! it) with `try_send`, so the recorder never waits for it. A full sink does
//! not lose the notification: the batch waits in a backlog that the next batch
//! joins, and is handed over as one batch when the sink has room (also while no
//! hit arrives). Only past `NOTIFY_BACKLOG` events are the oldest notifications
//! dropped (counted in `RecorderStats::notify_dropped`, logged); never a hit.
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

use futures_util::stream::{FuturesOrdered, StreamExt as _};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::model::Event;
use crate::store::Store;

/// Most events in one batch.
const MAX_BATCH: usize = 4096;
/// Events waiting for a batch before senders wait (back-pressure).
const QUEUE: usize = 65_536;
/// Committed events whose notification waits for a full sink, at most (about
/// 200 bytes each): past it the oldest are dropped.
const NOTIFY_BACKLOG: usize = 262_144;

/// A batch started while another is in flight waits until this share (in %)
/// of an expected commit has passed since the oldest one in flight started.
/// Half: late enough to gather the hits arriving meanwhile (Redis, 64
/// connections: 22 → 31 events per batch, 4.5 → 3.4 fsyncs per 100 events),
/// early enough to reach Redis before it has finished the batch ahead. With
/// Redis's commits near 1 ms, the timer's millisecond ticks make 50 % and 80 %
/// behave alike (31.0 and 31.5 events per batch).
const GATE_PERCENT: u32 = 50;
/// The gate is never later than this after the oldest batch in flight started.
const GATE_MAX: Duration = Duration::from_millis(2);

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
        let depth = store.commits_in_flight();
        Recorder::start_at_depth(store, notify, depth)
    }

    /// Like `start_with`, committing up to `depth` batches at once.
    fn start_at_depth(
        store: Store,
        notify: Option<mpsc::Sender<Vec<Event>>>,
        depth: usize,
    ) -> (Recorder, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(RecorderStats::default());
        let handle = tokio::spawn(run(store, rx, stats.clone(), notify, depth.max(1)));
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
        // Room in the queue is the common case: take it without arming a timer.
        let reserved = match self.tx.try_reserve() {
            Ok(permit) => Ok(Ok(permit)),
            Err(mpsc::error::TrySendError::Closed(())) => Ok(Err(())),
            Err(mpsc::error::TrySendError::Full(())) => {
                tokio::time::timeout_at(deadline, self.tx.reserve())
                    .await
                    .map(|r| r.map_err(|_| ()))
            }
        };
        match reserved {
            Ok(Ok(permit)) => permit.send(job),
            Ok(Err(())) => return Outcome::Failed,
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
    depth: usize,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    // Committed events the sink had no room for yet, oldest first.
    let mut backlog: Vec<Event> = Vec::new();
    // Batches being committed, oldest first; finished in that order.
    let mut in_flight = FuturesOrdered::new();
    let mut pacer = Pacer::default();
    let mut open = true;
    while open || !in_flight.is_empty() {
        let now = tokio::time::Instant::now();
        // Some(gate) while a batch may not start yet (see `Pacer`).
        let gate = pacer.gate().filter(|g| now < *g);
        tokio::select! {
            biased;
            // The oldest batch committed (or failed): answer its waiters.
            Some((result, acks)) = in_flight.next(), if !in_flight.is_empty() => {
                pacer.finished(tokio::time::Instant::now());
                finish(result, acks, &stats, &notify, &mut backlog);
                continue;
            }
            // A slot is free but the batch in flight started too recently.
            _ = tokio::time::sleep_until(gate.unwrap_or(now)), if gate.is_some() && open && in_flight.len() < depth => {
                continue;
            }
            // Room in the sink while no hit arrives: hand the backlog over.
            permit = reserve(&notify), if !backlog.is_empty() => {
                match permit {
                    Some(p) => p.send(std::mem::take(&mut backlog)),
                    None => backlog.clear(),
                }
                continue;
            }
            // `recv_many` is cancel safe: a lost race leaves `jobs` empty.
            got = rx.recv_many(&mut jobs, MAX_BATCH), if open && in_flight.len() < depth && gate.is_none() => {
                if got == 0 {
                    open = false;
                    continue;
                }
            }
        }
        // Barriers carry no event; a batch of barriers only is an empty commit,
        // which the store still makes wait for its sync. Both vectors are
        // allocated once at their final size: the events' one travels on to
        // the store and to real time, and a grown one would keep up to twice
        // its length in capacity (and copy itself as it grew).
        let mut events: Vec<Event> = Vec::with_capacity(jobs.len());
        let mut acks: Vec<oneshot::Sender<bool>> = Vec::with_capacity(jobs.len());
        for (event, ack) in jobs.drain(..) {
            events.extend(event);
            acks.push(ack);
        }
        if !events.is_empty() {
            crate::metrics::METRICS
                .batch_sizes
                .observe(events.len() as u64);
        }
        let store = store.clone();
        pacer.started(tokio::time::Instant::now());
        in_flight.push_back(async move {
            let n = events.len();
            (store.commit_events(events).await.map_err(|e| (e, n)), acks)
        });
    }
    // Shutdown: what still waits gets a bounded wait for room.
    if let (Some(sink), false) = (&notify, backlog.is_empty()) {
        let n = backlog.len() as u64;
        if tokio::time::timeout(Duration::from_secs(2), sink.send(backlog))
            .await
            .map_or(true, |r| r.is_err())
        {
            stats.notify_dropped.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(
                events = n,
                "real-time notifications dropped at shutdown (hits are stored)"
            );
        }
    }
}

/// When the next batch may start (see the module doc): the start times of the
/// batches in flight, oldest first, and a moving average of commit times.
#[derive(Default)]
struct Pacer {
    starts: std::collections::VecDeque<tokio::time::Instant>,
    /// Microseconds; 0 until the first commit has finished.
    average_us: u64,
}

impl Pacer {
    fn started(&mut self, at: tokio::time::Instant) {
        self.starts.push_back(at);
    }

    /// The oldest batch in flight finished at `at`.
    fn finished(&mut self, at: tokio::time::Instant) {
        if let Some(start) = self.starts.pop_front() {
            let us = at.saturating_duration_since(start).as_micros() as u64;
            self.average_us = if self.average_us == 0 {
                us
            } else {
                (self.average_us * 7 + us) / 8
            };
        }
    }

    /// Before this instant no batch starts; `None` when none is in flight.
    fn gate(&self) -> Option<tokio::time::Instant> {
        let oldest = self.starts.front()?;
        let wait = Duration::from_micros(self.average_us * u64::from(GATE_PERCENT) / 100);
        Some(*oldest + wait.min(GATE_MAX))
    }
}

/// Answers a finished batch's waiters, counts it and, if it was committed,
/// hands its events to the sink.
fn finish(
    result: std::result::Result<Vec<Event>, (crate::store::StoreError, usize)>,
    acks: Vec<oneshot::Sender<bool>>,
    stats: &RecorderStats,
    notify: &Option<mpsc::Sender<Vec<Event>>>,
    backlog: &mut Vec<Event>,
) {
    let ok = result.is_ok();
    match &result {
        Ok(events) if !events.is_empty() => {
            stats
                .events
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            stats.batches.fetch_add(1, Ordering::Relaxed);
        }
        Ok(_) => {}
        Err((e, n)) => {
            stats.failures.fetch_add(*n as u64, Ordering::Relaxed);
            tracing::error!(error = %e, events = n, "committing events failed");
        }
    }
    for ack in acks {
        let _ = ack.send(ok);
    }
    if let (Ok(events), Some(sink)) = (result, notify) {
        if !events.is_empty() {
            hand_over(sink, backlog, events, stats);
        }
    }
}

/// A permit of the sink, or `None` when there is none (or it is closed).
async fn reserve(
    notify: &Option<mpsc::Sender<Vec<Event>>>,
) -> Option<mpsc::Permit<'_, Vec<Event>>> {
    match notify {
        Some(sink) => sink.reserve().await.ok(),
        None => None,
    }
}

/// Hands a committed batch's copy to the sink, behind what already waits; on a
/// full sink it all waits, bounded by `NOTIFY_BACKLOG` (oldest dropped first).
fn hand_over(
    sink: &mpsc::Sender<Vec<Event>>,
    backlog: &mut Vec<Event>,
    copy: Vec<Event>,
    stats: &RecorderStats,
) {
    let batch = if backlog.is_empty() {
        copy
    } else {
        backlog.extend(copy);
        std::mem::take(backlog)
    };
    match sink.try_send(batch) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(back)) => {
            *backlog = back;
            if backlog.len() > NOTIFY_BACKLOG {
                let excess = backlog.len() - NOTIFY_BACKLOG;
                backlog.drain(..excess);
                stats
                    .notify_dropped
                    .fetch_add(excess as u64, Ordering::Relaxed);
                tracing::warn!(
                    events = excess,
                    "real-time notifications dropped: the backlog is full (hits are stored)"
                );
            }
        }
        // Real time has stopped: nobody to tell.
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::Sealer;
    use crate::store::embedded::Embedded;
    use crate::store::Backend;

    #[test]
    fn the_pacer_gates_a_batch_at_half_an_expected_commit_after_the_one_in_flight() {
        let t0 = tokio::time::Instant::now();
        let ms = |n: u64| Duration::from_millis(n);
        let mut p = Pacer::default();
        assert_eq!(p.gate(), None, "nothing in flight: start at once");
        // The first commit: nothing known yet, so no wait while it is in flight.
        p.started(t0);
        assert_eq!(p.gate(), Some(t0));
        p.finished(t0 + ms(1));
        assert_eq!(p.gate(), None);
        // Commits take 1 ms: the next batch waits 0.5 ms after the one in flight.
        p.started(t0 + ms(10));
        assert_eq!(p.gate(), Some(t0 + ms(10) + Duration::from_micros(500)));
        // A second one in flight does not move the gate (the oldest sets it).
        p.started(t0 + ms(11));
        assert_eq!(p.gate(), Some(t0 + ms(10) + Duration::from_micros(500)));
        // A slow commit (9 ms) moves the average by an eighth: (1000·7 + 9000) / 8.
        p.finished(t0 + ms(19));
        assert_eq!(p.average_us, 2000);
        assert_eq!(p.gate(), Some(t0 + ms(11) + ms(1)));
        // However slow commits get, the gate is at most `GATE_MAX` away.
        p.finished(t0 + ms(500));
        p.started(t0 + ms(600));
        assert_eq!(p.gate(), Some(t0 + ms(600) + GATE_MAX));
    }

    fn event(recipient: u32) -> Event {
        Event {
            seq: 0,
            at_ms: crate::ids::now_ms(),
            kind: crate::model::EventKind::Open,
            email: 1,
            recipient,
            link: None,
            method: "GET".into(),
            ua: String::new(),
            ip: "203.0.113.0/24".into(),
            since_prepared_s: 0,
            machine_net: None,
        }
    }

    /// A sink with room for one batch, not read while five batches commit:
    /// every notification still arrives, in order, once it is read.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_sink_delays_notifications_and_loses_none() {
        let dir = std::env::temp_dir().join(format!(
            "mailbeacon-recorder-backlog-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let sealer = Sealer::new(&[(1, vec![7; 32])], 1, b"lookup key").expect("sealer");
        let store = Store::new(
            Backend::Embedded(Embedded::open(&dir).expect("open")),
            sealer,
        );
        let (tx, mut rx) = mpsc::channel(1);
        let (rec, handle) = Recorder::start_with(store, Some(tx));
        for r in 0..5 {
            assert!(rec.record(event(r)).await, "committed");
        }
        let mut got = Vec::new();
        while got.len() < 5 {
            let batch = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("the backlog is handed over while no hit arrives")
                .expect("open");
            got.extend(batch.into_iter().map(|e| e.recipient));
        }
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert_eq!(rec.stats.notify_dropped.load(Ordering::Relaxed), 0);
        drop(rec);
        handle.await.expect("recorder ends");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Several batches in flight at once: every hit is answered as committed,
    /// stored once and handed to the sink once, and dropping the last handle
    /// still commits what is queued or in flight.
    #[tokio::test(flavor = "current_thread")]
    async fn batches_in_flight_at_once_store_and_tell_every_hit_once() {
        let dir =
            std::env::temp_dir().join(format!("mailbeacon-recorder-depth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sealer = Sealer::new(&[(1, vec![7; 32])], 1, b"lookup key").expect("sealer");
        let store = Store::new(
            Backend::Embedded(Embedded::open(&dir).expect("open")),
            sealer,
        );
        let mut email = crate::reports::tests::rec(1);
        email.expires_ms = crate::ids::now_ms() + 3_600_000;
        store.put_email(email).await.expect("email");
        let (tx, mut rx) = mpsc::channel(1024);
        let tx2 = tx.clone();
        let (rec, handle) = Recorder::start_at_depth(store.clone(), Some(tx), 3);
        let hits: Vec<_> = (0..300u32)
            .map(|r| {
                let rec = rec.clone();
                tokio::spawn(async move { rec.record(event(r)).await })
            })
            .collect();
        for h in hits {
            assert!(h.await.expect("task"), "every hit is committed");
        }
        drop(rec);
        handle.await.expect("recorder ends");
        // Hits still queued when the queue closes (their callers stopped
        // waiting): they go in flight after the close, and must still be
        // committed, answered and told before the recorder ends.
        let (queue, jobs) = mpsc::channel(QUEUE);
        let mut answers = Vec::new();
        for r in 300..600u32 {
            let (ack, answer) = oneshot::channel();
            queue.try_send((Some(event(r)), ack)).expect("room");
            answers.push(answer);
        }
        drop(queue);
        let stats = Arc::new(RecorderStats::default());
        run(store.clone(), jobs, stats, Some(tx2), 3).await;
        for a in answers {
            assert_eq!(a.await, Ok(true), "a queued hit is committed");
        }
        let mut told = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            told.extend(batch.into_iter().map(|e| e.recipient));
        }
        told.sort_unstable();
        assert_eq!(told, (0..600).collect::<Vec<_>>(), "each hit told once");
        let mut stored: Vec<u32> = store
            .events_for(1)
            .await
            .expect("read")
            .into_iter()
            .map(|e| e.recipient)
            .collect();
        stored.sort_unstable();
        assert_eq!(stored, (0..600).collect::<Vec<_>>(), "each hit stored once");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
