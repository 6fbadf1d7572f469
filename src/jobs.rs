//! Running a durable queue's jobs: the worker loop, the handle that wakes it,
//! retry backoff, and the clock they read.
//!
//! The queue itself (durable, shared by every process on one store) is
//! `store::queue`; this module is what a feature (the outbox, webhook
//! deliveries, timers) runs on top of it. `run_worker` leases a few due jobs at
//! a time, runs each through the feature's handler (at most
//! `WorkerOptions::concurrency` at once, each in its own task, so a slow job
//! holds only its own slot), renews the lease of a job that runs long, and
//! completes or retries it by the handler's `Outcome`. Between leases it sleeps
//! until the next job is due, at most `poll` (so jobs enqueued by other
//! processes are seen within that), or until `Jobs::notify` (an enqueue in this
//! process) wakes it. On shutdown it stops leasing and finishes the jobs in hand.
//!
//! Delivery is at least once: a job whose worker died mid-run (crash, `kill -9`)
//! is run again once its lease expires. Handlers make their effect idempotent
//! (the job id is a natural key) where running twice would matter.
//!
//! Time comes from a `Clock`, so tests can move it instead of waiting.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::store::queue::{Leased, NewJob};
use crate::store::{Result, Store};

/// Where "now" comes from (ms since the epoch).
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::ids::now_ms()
    }
}

/// A clock that moves only when told (for tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(now_ms: u64) -> ManualClock {
        ManualClock(AtomicU64::new(now_ms))
    }

    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One queue of one store, and the wake-up of this process's worker for it.
/// Cheap to clone; clones share the wake-up. Enqueue through it so the worker
/// starts at once instead of at its next poll.
#[derive(Clone)]
pub struct Jobs {
    store: Store,
    queue: Arc<str>,
    wake: Arc<Notify>,
}

impl Jobs {
    pub fn new(store: Store, queue: &str) -> Jobs {
        Jobs {
            store,
            queue: queue.into(),
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// `Store::enqueue` on this queue, then wakes the worker.
    pub async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<usize> {
        let n = self.store.enqueue(&self.queue, jobs).await?;
        self.notify();
        Ok(n)
    }

    /// Wakes this process's worker now (e.g. after a reschedule to an earlier
    /// time). A wake-up while the worker is busy is kept until it next waits.
    pub fn notify(&self) {
        self.wake.notify_one();
    }
}

/// What a handler made of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: the job is removed.
    Done,
    /// A temporary failure: run it again at this time (ms; see `Backoff`).
    RetryAt(u64),
    /// Give up: the job is removed. The handler has recorded why.
    Fail,
}

#[derive(Clone)]
pub struct WorkerOptions {
    /// Jobs run at once (at least 1).
    pub concurrency: usize,
    /// How long a lease holds; a job that runs longer has its lease renewed
    /// about every third of this, so only a dead worker's jobs expire.
    pub lease: Duration,
    /// The longest sleep between looks at the queue.
    pub poll: Duration,
    pub clock: Arc<dyn Clock>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 4,
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(1),
            clock: Arc::new(SystemClock),
        }
    }
}

/// The shortest sleep when jobs are due but none could be leased (another
/// process took them): keeps the loop from spinning.
const MIN_WAIT: Duration = Duration::from_millis(10);
/// How long to wait before leasing again after the store failed.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Runs the jobs of `jobs`'s queue through `handler` until `shutdown` resolves;
/// then leases nothing more and returns once the jobs in hand are finished.
/// One worker per queue per process (several processes share a queue safely).
pub async fn run_worker<H, F>(
    jobs: Jobs,
    handler: H,
    opts: WorkerOptions,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Leased) -> F + Send + Sync + 'static,
    F: Future<Output = Outcome> + Send + 'static,
{
    let handler = Arc::new(handler);
    let concurrency = opts.concurrency.max(1);
    let lease_ms = (opts.lease.as_millis() as u64).max(3);
    let mut running: JoinSet<()> = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let room = concurrency - running.len();
        let mut wait = opts.poll;
        if room > 0 {
            let now = opts.clock.now_ms();
            let leased = jobs.store.lease(&jobs.queue, now, lease_ms, room).await;
            match leased {
                Ok(got) => {
                    let got_all = got.len() == room;
                    for job in got {
                        running.spawn(run_one(
                            jobs.clone(),
                            job,
                            handler.clone(),
                            opts.clock.clone(),
                            lease_ms,
                        ));
                    }
                    if got_all {
                        // More may be due: lease again as soon as a slot is free.
                        wait = Duration::ZERO;
                    } else {
                        match jobs.store.next_due(&jobs.queue).await {
                            Ok(Some(at)) => {
                                let until = Duration::from_millis(at.saturating_sub(now));
                                wait = wait.min(until.max(MIN_WAIT));
                            }
                            Ok(None) => {}
                            Err(e) => tracing::warn!(queue = %jobs.queue, error = %e,
                                "reading the queue's next due time failed"),
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %jobs.queue, error = %e, "leasing jobs failed");
                    wait = wait.max(STORE_RETRY);
                }
            }
        }
        let full = running.len() >= concurrency;
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(done) = running.join_next(), if !running.is_empty() => report(&jobs, done),
            _ = tokio::time::sleep(wait), if !full => {}
            _ = jobs.wake.notified(), if !full => {}
        }
    }
    while let Some(done) = running.join_next().await {
        report(&jobs, done);
    }
}

fn report(jobs: &Jobs, done: std::result::Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        // The job stays leased until its lease expires, then runs again.
        tracing::error!(queue = %jobs.queue, error = %e, "a job's handler panicked");
    }
}

/// Runs one leased job: the handler, with lease renewals while it runs, then
/// the outcome.
async fn run_one<H, F>(
    jobs: Jobs,
    job: Leased,
    handler: Arc<H>,
    clock: Arc<dyn Clock>,
    lease_ms: u64,
) where
    H: Fn(Leased) -> F + Send + Sync + 'static,
    F: Future<Output = Outcome> + Send + 'static,
{
    let (id, lease) = (job.id.clone(), job.lease);
    let q = jobs.queue.clone();
    let work = handler(job);
    tokio::pin!(work);
    let renew_every = Duration::from_millis(lease_ms / 3);
    let outcome = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tokio::time::sleep(renew_every) => {
                let until = clock.now_ms().saturating_add(lease_ms);
                match jobs.store.extend(&q, &id, lease, until).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(queue = %q, job = %id,
                        "lost the lease of a running job (it may run twice)"),
                    Err(e) => tracing::warn!(queue = %q, job = %id, error = %e,
                        "renewing a job's lease failed"),
                }
            }
        }
    };
    // A store that fails here gets a few tries; if it keeps failing the lease
    // expires and the job runs again (at least once, never lost).
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=3 {
        let res = match outcome {
            Outcome::Done | Outcome::Fail => jobs.store.complete(&q, &id, lease).await,
            Outcome::RetryAt(at) => jobs.store.retry(&q, &id, lease, at).await,
        };
        match res {
            Ok(held) => {
                if !held {
                    tracing::warn!(queue = %q, job = %id, ?outcome,
                        "a job's lease was lost before it finished (it may run twice)");
                }
                if matches!(outcome, Outcome::RetryAt(_)) {
                    // The worker may be sleeping past the new due time.
                    jobs.notify();
                }
                return;
            }
            Err(e) if attempt < 3 => {
                tracing::warn!(queue = %q, job = %id, error = %e, "recording a job's outcome failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            Err(e) => {
                tracing::error!(queue = %q, job = %id, error = %e,
                    "recording a job's outcome failed; it runs again when its lease expires");
            }
        }
    }
}

/// Retry delays: exponential with full jitter (each delay uniform between 0 and
/// a ceiling that doubles per failure from `first`, at most `cap`), and a
/// deadline after which the caller gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry comes within this.
    pub first: Duration,
    /// No single delay is longer than this.
    pub cap: Duration,
    /// Counted from when the work was first due: no retry after this.
    pub give_up_after: Duration,
}

impl Backoff {
    /// Outbox copies (design.md: first retry within 60 s, then growing, for a
    /// bounded time).
    pub const OUTBOX: Backoff = Backoff {
        first: Duration::from_secs(60),
        cap: Duration::from_secs(3600),
        give_up_after: Duration::from_secs(3 * 24 * 3600),
    };

    /// Webhook deliveries (design.md: first retry within 10 s, for at least 24 h).
    pub const WEBHOOKS: Backoff = Backoff {
        first: Duration::from_secs(10),
        cap: Duration::from_secs(3600),
        give_up_after: Duration::from_secs(24 * 3600),
    };

    /// The longest delay after `failures` failed attempts (1 = after the first).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first.saturating_mul(1 << doublings).min(self.cap)
    }

    /// A delay after `failures` failed attempts, drawn with `random` (any u64).
    pub fn delay_with(&self, failures: u32, random: u64) -> Duration {
        let ceiling = self.ceiling(failures).as_millis() as u64;
        Duration::from_millis(random % (ceiling + 1))
    }

    /// A random delay after `failures` failed attempts.
    pub fn delay(&self, failures: u32) -> Duration {
        self.delay_with(failures, crate::ids::random_id())
    }

    /// When to try again at `now_ms` after `failures` failed attempts, for work
    /// first due at `started_ms` (keep it in the job's payload: a retry changes
    /// the job's due time). `None` once the deadline has passed: give up. The
    /// last retry is moved to the deadline rather than dropped, so retries go on
    /// for the whole `give_up_after`.
    pub fn next_at(&self, failures: u32, now_ms: u64, started_ms: u64) -> Option<u64> {
        let deadline = started_ms.saturating_add(self.give_up_after.as_millis() as u64);
        if now_ms >= deadline {
            return None;
        }
        let at = now_ms.saturating_add(self.delay(failures).as_millis() as u64);
        Some(at.min(deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        first: Duration::from_secs(10),
        cap: Duration::from_secs(300),
        give_up_after: Duration::from_secs(3600),
    };

    #[test]
    fn ceilings_double_from_first_up_to_the_cap() {
        let secs: Vec<u64> = (1..=8).map(|f| B.ceiling(f).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(B.ceiling(0), B.first);
        assert_eq!(B.ceiling(u32::MAX), B.cap);
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling() {
        for f in 1..10 {
            for r in [0, 1, 9_999, 10_000, u64::MAX, crate::ids::random_id()] {
                assert!(B.delay_with(f, r) <= B.ceiling(f), "{f} {r}");
            }
        }
        assert_eq!(B.delay_with(1, 0), Duration::ZERO);
        assert_eq!(B.delay_with(1, 10_000), Duration::from_secs(10));
        // Full jitter: random delays spread over the whole range, not one value.
        let many: std::collections::BTreeSet<u128> =
            (0..50).map(|_| B.delay(3).as_millis()).collect();
        assert!(many.len() > 10, "{many:?}");
        assert!(many.iter().all(|&d| d <= 40_000));
    }

    #[test]
    fn first_retries_come_within_the_documented_bounds() {
        for _ in 0..100 {
            assert!(Backoff::OUTBOX.delay(1) <= Duration::from_secs(60));
            assert!(Backoff::WEBHOOKS.delay(1) <= Duration::from_secs(10));
        }
        assert!(Backoff::WEBHOOKS.give_up_after >= Duration::from_secs(24 * 3600));
    }

    #[test]
    fn retries_stop_at_the_deadline_and_the_last_is_moved_onto_it() {
        let start = 1_000_000;
        let deadline = start + 3_600_000;
        let at = B.next_at(1, start + 1000, start).unwrap();
        assert!((start + 1000..=start + 11_000).contains(&at), "{at}");
        // Just before the deadline: still one more try, no later than it.
        let last = B.next_at(20, deadline - 1, start).unwrap();
        assert!((deadline - 1..=deadline).contains(&last), "{last}");
        assert_eq!(B.next_at(20, deadline, start), None);
        assert_eq!(B.next_at(1, deadline + 5, start), None);
    }

    #[test]
    fn the_manual_clock_moves_only_when_told() {
        let c = ManualClock::new(5);
        assert_eq!(c.now_ms(), 5);
        c.advance(Duration::from_secs(2));
        assert_eq!(c.now_ms(), 2005);
        c.set(1);
        assert_eq!(c.now_ms(), 1);
    }
}
