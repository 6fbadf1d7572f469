//! The durable job queue (`store::queue`) and its worker loop (`jobs`), run the
//! same way on every backend: the embedded store, a real Redis node and a real
//! 3-master Redis Cluster (`support::backends`). Queue times are given
//! explicitly (or by `jobs::ManualClock`), so lease expiry and backoff are
//! checked without waiting for them.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailbeacon::jobs::{run_worker, Backoff, Jobs, ManualClock, Outcome, WorkerOptions};
use mailbeacon::seal::Sealer;
use mailbeacon::store::embedded::Embedded;
use mailbeacon::store::queue::{Cancelled, NewJob, Rescheduled};
use mailbeacon::store::redis::conn::Target;
use mailbeacon::store::redis::Redis;
use mailbeacon::store::{Backend as StoreBackend, Store};
use support::backends::{Backend, Kind};

/// Generates one test per backend, each running every check (one set of
/// servers per backend, each check on its own queue).
macro_rules! on_every_backend {
    ($($kind:ident => $name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let b = Backend::new(Kind::$kind);
            all_checks(&b).await;
        }
    )*};
}

on_every_backend!(
    Embedded => embedded,
    Redis => redis_single_node,
    Cluster => redis_cluster,
);

/// A fixed "now" for the checks that pass times explicitly.
const T: u64 = 1_700_000_000_000;

fn sealer() -> Sealer {
    Sealer::new(&[(1, vec![9; 32])], 1, b"queue lookup key").expect("sealer")
}

fn env(b: &Backend, key: &str) -> String {
    b.env()
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("{key} is set for {:?}", b.kind))
}

/// A store on the backend; `n` tells Redis stores of one test apart (each
/// stands for another process: its own connections and spool).
async fn open(b: &Backend, n: u32) -> Store {
    let target = match b.kind {
        Kind::Embedded => {
            let e = Embedded::open(&b.data_dir()).expect("open the embedded store");
            return Store::new(StoreBackend::Embedded(e), sealer());
        }
        Kind::Redis => Target::Single(env(b, "MAILBEACON_REDIS_URL")),
        Kind::Cluster => Target::Cluster(
            env(b, "MAILBEACON_REDIS_CLUSTER")
                .split(',')
                .map(str::to_owned)
                .collect(),
        ),
    };
    let dir = b.data_dir().join(format!("process-{n}"));
    let r = Redis::open(&target, &dir, 1 << 20)
        .await
        .expect("open the Redis store");
    Store::new(StoreBackend::Redis(r), sealer())
}

/// A second store for the same data: another process on Redis; on the embedded
/// store (one process per data directory) the same store.
async fn other(b: &Backend, store: &Store) -> Store {
    match b.kind {
        Kind::Embedded => store.clone(),
        _ => open(b, 2).await,
    }
}

fn job(id: &str, due_ms: u64, payload: &str) -> NewJob {
    NewJob {
        id: id.into(),
        due_ms,
        payload: payload.as_bytes().to_vec(),
    }
}

async fn all_checks(b: &Backend) {
    let store = open(b, 1).await;
    idempotent_enqueue(&store).await;
    nothing_is_leased_before_it_is_due(&store).await;
    a_lease_excludes_others_until_it_expires(&store).await;
    retry_and_extend_need_the_lease(&store).await;
    reschedule_and_cancel_refuse_leased_jobs(&store).await;
    next_due_tracks_due_times_and_leases(&store).await;
    payloads_are_sealed_at_rest(b, &store).await;
    let second = other(b, &store).await;
    two_leasers_never_get_the_same_job(&store, &second).await;
    two_workers_run_each_job_once(&store, &second).await;
    the_worker_retries_with_backoff_on_its_clock(&store).await;
    shutdown_finishes_the_job_in_hand_and_renews_its_lease(&store).await;
    if b.kind != Kind::Embedded {
        second.close().await.unwrap();
    }
    store.close().await.unwrap();
    drop((store, second));
    jobs_survive_a_restart(b).await;
}

async fn idempotent_enqueue(s: &Store) {
    let q = "idem";
    let jobs = vec![job("a", T, "one"), job("b", T, "two"), job("c", T + 5, "")];
    assert_eq!(s.enqueue(q, jobs).await.unwrap(), 3);
    // The same ids again (with other contents): left as they are.
    let again = vec![job("a", T + 99, "changed"), job("d", T, "four")];
    assert_eq!(s.enqueue(q, again).await.unwrap(), 1);
    let a = s.get_job(q, "a", T).await.unwrap().expect("job a");
    assert_eq!((a.due_ms, a.attempts, a.payload), (T, 0, b"one".to_vec()));
    assert_eq!(a.leased_until, None);
    let c = s.get_job(q, "c", T).await.unwrap().expect("job c");
    assert_eq!(c.payload, b"");
    assert_eq!(s.queue_len(q).await.unwrap(), 4);
    // Another queue is another namespace.
    assert_eq!(s.enqueue("idem2", vec![job("a", T, "x")]).await.unwrap(), 1);
    assert_eq!(s.queue_len(q).await.unwrap(), 4);
    // A thousand recipients in one call, then all of them again.
    let many = |p: &str| {
        (0..1000)
            .map(|i| job(&format!("e1:{i}"), T, p))
            .collect::<Vec<_>>()
    };
    assert_eq!(s.enqueue("bulk", many("x")).await.unwrap(), 1000);
    assert_eq!(s.enqueue("bulk", many("y")).await.unwrap(), 0);
    assert_eq!(s.queue_len("bulk").await.unwrap(), 1000);
    assert!(s.get_job(q, "zzz", T).await.unwrap().is_none());
    // Bad names and ids are refused, not stored.
    assert!(s.enqueue("a{b}", vec![job("a", T, "")]).await.is_err());
    assert!(s
        .enqueue(q, vec![job(&"i".repeat(101), T, "")])
        .await
        .is_err());
    assert!(s.enqueue(q, vec![job("", T, "")]).await.is_err());
}

async fn nothing_is_leased_before_it_is_due(s: &Store) {
    let q = "due";
    s.enqueue(q, vec![job("late", T + 10, "l"), job("now", T, "n")])
        .await
        .unwrap();
    assert!(s.lease(q, T - 1, 1000, 10).await.unwrap().is_empty());
    let got = s.lease(q, T, 1000, 10).await.unwrap();
    assert_eq!(ids(&got), ["now"]);
    assert_eq!(got[0].payload, b"n");
    assert_eq!(got[0].due_ms, T);
    let got = s.lease(q, T + 10, 1000, 10).await.unwrap();
    assert_eq!(ids(&got), ["late"]);
    // `max` bounds one lease.
    let q = "due-max";
    s.enqueue(q, (0..5).map(|i| job(&i.to_string(), T, "")).collect())
        .await
        .unwrap();
    assert_eq!(s.lease(q, T, 1000, 2).await.unwrap().len(), 2);
    assert_eq!(s.lease(q, T, 1000, 0).await.unwrap().len(), 0);
    assert_eq!(s.lease(q, T, 1000, 10).await.unwrap().len(), 3);
}

fn ids(jobs: &[mailbeacon::store::queue::Leased]) -> Vec<&str> {
    jobs.iter().map(|j| j.id.as_str()).collect()
}

async fn a_lease_excludes_others_until_it_expires(s: &Store) {
    let q = "lease";
    s.enqueue(q, vec![job("j", T, "p")]).await.unwrap();
    let first = s.lease(q, T, 1000, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempts, 1);
    let held = s.get_job(q, "j", T + 500).await.unwrap().unwrap();
    assert_eq!(held.leased_until, Some(T + 1000));
    // While the lease holds, nobody else gets the job.
    assert!(s.lease(q, T + 999, 1000, 10).await.unwrap().is_empty());
    // The holder "crashed": once the lease expires the job is leased again, with
    // one more attempt and another token.
    let second = s.lease(q, T + 1000, 1000, 10).await.unwrap();
    assert_eq!(ids(&second), ["j"]);
    assert_eq!(second[0].attempts, 2);
    assert_eq!(second[0].payload, b"p");
    assert_ne!(second[0].lease, first[0].lease);
    // The old holder can no longer finish it; the new one can.
    assert!(!s.complete(q, "j", first[0].lease).await.unwrap());
    assert!(s.get_job(q, "j", T).await.unwrap().is_some());
    assert!(s.complete(q, "j", second[0].lease).await.unwrap());
    assert!(s.get_job(q, "j", T).await.unwrap().is_none());
    assert!(!s.complete(q, "j", second[0].lease).await.unwrap());
    assert_eq!(s.queue_len(q).await.unwrap(), 0);
}

async fn retry_and_extend_need_the_lease(s: &Store) {
    let q = "retry";
    s.enqueue(q, vec![job("j", T, "p")]).await.unwrap();
    let l = s.lease(q, T, 1000, 1).await.unwrap().remove(0);
    assert!(!s.extend(q, "j", l.lease + 1, T + 5000).await.unwrap());
    assert!(s.extend(q, "j", l.lease, T + 5000).await.unwrap());
    // Extended: still held after the first expiry.
    assert!(s.lease(q, T + 2000, 1000, 1).await.unwrap().is_empty());
    assert!(!s.retry(q, "j", l.lease + 1, T + 10_000).await.unwrap());
    assert!(s.retry(q, "j", l.lease, T + 10_000).await.unwrap());
    let j = s.get_job(q, "j", T + 3000).await.unwrap().unwrap();
    assert_eq!(
        (j.due_ms, j.attempts, j.leased_until),
        (T + 10_000, 1, None)
    );
    // Released with a new due time: not before it, then with attempt 2.
    assert!(s.lease(q, T + 9_999, 1000, 1).await.unwrap().is_empty());
    let again = s.lease(q, T + 10_000, 1000, 1).await.unwrap();
    assert_eq!(again[0].attempts, 2);
    // The released lease is dead for good.
    assert!(!s.complete(q, "j", l.lease).await.unwrap());
    assert!(!s.retry(q, "j", l.lease, T).await.unwrap());
    assert!(s.complete(q, "j", again[0].lease).await.unwrap());
    assert!(!s.extend(q, "j", again[0].lease, T).await.unwrap());
}

async fn reschedule_and_cancel_refuse_leased_jobs(s: &Store) {
    let q = "sched";
    s.enqueue(q, vec![job("j", T + 1000, "p")]).await.unwrap();
    // Send later, then sooner.
    assert_eq!(
        s.reschedule(q, "j", T + 60_000, T).await.unwrap(),
        Rescheduled::Done
    );
    assert!(s.lease(q, T + 1000, 1000, 10).await.unwrap().is_empty());
    assert_eq!(
        s.reschedule(q, "j", T + 2000, T).await.unwrap(),
        Rescheduled::Done
    );
    assert_eq!(
        s.get_job(q, "j", T).await.unwrap().unwrap().due_ms,
        T + 2000
    );
    assert!(s.lease(q, T + 1999, 1000, 10).await.unwrap().is_empty());
    let l = s.lease(q, T + 2000, 1000, 10).await.unwrap().remove(0);
    assert_eq!(l.id, "j");
    // Being sent: neither rescheduled nor cancelled (`409 already_sending`).
    assert_eq!(
        s.reschedule(q, "j", T + 9000, T + 2500).await.unwrap(),
        Rescheduled::Leased
    );
    assert_eq!(s.cancel(q, "j", T + 2500).await.unwrap(), Cancelled::Leased);
    assert!(s.get_job(q, "j", T + 2500).await.unwrap().is_some());
    // Its holder died and the lease expired: cancel works, and the stale holder
    // cannot bring the job back.
    assert_eq!(
        s.cancel(q, "j", T + 3000).await.unwrap(),
        Cancelled::Removed
    );
    assert!(!s.retry(q, "j", l.lease, T).await.unwrap());
    assert!(s.get_job(q, "j", T).await.unwrap().is_none());
    assert_eq!(
        s.cancel(q, "j", T + 3000).await.unwrap(),
        Cancelled::Missing
    );
    assert_eq!(
        s.reschedule(q, "j", T, T).await.unwrap(),
        Rescheduled::Missing
    );
    // Rescheduling a job whose lease expired drops that lease.
    s.enqueue(q, vec![job("k", T, "")]).await.unwrap();
    let stale = s.lease(q, T + 5000, 1000, 10).await.unwrap().remove(0);
    assert_eq!(stale.id, "k");
    assert_eq!(
        s.reschedule(q, "k", T + 7000, T + 6000).await.unwrap(),
        Rescheduled::Done
    );
    assert!(!s.complete(q, "k", stale.lease).await.unwrap());
    let k = s.get_job(q, "k", T + 6000).await.unwrap().unwrap();
    assert_eq!((k.due_ms, k.leased_until), (T + 7000, None));
    assert_eq!(
        s.cancel(q, "k", T + 6000).await.unwrap(),
        Cancelled::Removed
    );
}

async fn next_due_tracks_due_times_and_leases(s: &Store) {
    let q = "next";
    assert_eq!(s.next_due(q).await.unwrap(), None);
    s.enqueue(q, vec![job("a", T + 5, ""), job("b", T, "")])
        .await
        .unwrap();
    assert_eq!(s.next_due(q).await.unwrap(), Some(T));
    let l = s.lease(q, T, 1000, 1).await.unwrap().remove(0);
    assert_eq!(s.next_due(q).await.unwrap(), Some(T + 5));
    let a = s.lease(q, T + 5, 100, 1).await.unwrap().remove(0);
    // Both leased: next is the earliest lease expiry.
    assert_eq!(s.next_due(q).await.unwrap(), Some(T + 105));
    s.complete(q, &a.id, a.lease).await.unwrap();
    assert_eq!(s.next_due(q).await.unwrap(), Some(T + 1000));
    s.complete(q, &l.id, l.lease).await.unwrap();
    assert_eq!(s.next_due(q).await.unwrap(), None);
}

async fn payloads_are_sealed_at_rest(b: &Backend, s: &Store) {
    let secret = "{\"to\":\"carol.sealed@client.test\",\"subject\":\"Quarterly numbers\"}";
    let binary = [0xffu8, 0xfe, b'<', b'b', b'i', b'n', b'!', b'>', 0x00, 0x81];
    s.enqueue(
        "sealed",
        vec![
            job("visible-id-4711", T, secret),
            NewJob {
                id: "binary-1".into(),
                due_ms: T,
                payload: binary.to_vec(),
            },
        ],
    )
    .await
    .unwrap();
    let raw = b.raw();
    let has = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    // The scan does see the queue (ids are stored in clear)...
    assert!(has(b"visible-id-4711"), "the raw scan finds the job id");
    // ...but never the payloads.
    for needle in ["carol.sealed@client.test", "Quarterly numbers", "Quarterly"] {
        assert!(!has(needle.as_bytes()), "{needle:?} is stored in clear");
    }
    assert!(!has(&binary[2..8]), "the binary payload is stored in clear");
    // And it opens again on the way out.
    let got = s.lease("sealed", T, 1000, 10).await.unwrap();
    let by_id: BTreeMap<&str, &[u8]> = got
        .iter()
        .map(|j| (j.id.as_str(), j.payload.as_slice()))
        .collect();
    assert_eq!(by_id["visible-id-4711"], secret.as_bytes());
    assert_eq!(by_id["binary-1"], binary);
}

async fn two_leasers_never_get_the_same_job(a: &Store, b: &Store) {
    let q = "race";
    a.enqueue(q, (0..200).map(|i| job(&format!("r{i}"), T, "x")).collect())
        .await
        .unwrap();
    let take = |s: Store| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = s.lease(q, T, 60_000, 7).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|j| j.id));
                tokio::task::yield_now().await;
            }
        })
    };
    let (x, y) = tokio::join!(take(a.clone()), take(b.clone()));
    let (x, y) = (x.unwrap(), y.unwrap());
    let mut all = x.clone();
    all.extend(y.iter().cloned());
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(
        all.len(),
        200,
        "every job leased once ({} + {})",
        x.len(),
        y.len()
    );
    assert_eq!(distinct.len(), 200, "no job leased twice");
}

/// A handler that records which jobs it ran.
fn recorder() -> (
    Arc<Mutex<Vec<String>>>,
    impl Fn(mailbeacon::store::queue::Leased) -> std::future::Ready<Outcome> + Send + Sync + Clone,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (seen, move |j: mailbeacon::store::queue::Leased| {
        s.lock().unwrap().push(j.id);
        std::future::ready(Outcome::Done)
    })
}

async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !cond().await {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn two_workers_run_each_job_once(a: &Store, b: &Store) {
    let q = "workers";
    let (seen, handler) = recorder();
    let opts = WorkerOptions {
        concurrency: 3,
        poll: Duration::from_millis(50),
        ..WorkerOptions::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let ja = Jobs::new(a.clone(), q);
    let jb = Jobs::new(b.clone(), q);
    let wa = tokio::spawn(run_worker(
        ja.clone(),
        handler.clone(),
        opts.clone(),
        stop(stop_rx.clone()),
    ));
    let wb = tokio::spawn(run_worker(jb, handler, opts, stop(stop_rx)));
    let now = mailbeacon::ids::now_ms();
    ja.enqueue((0..100).map(|i| job(&format!("w{i}"), now, "")).collect())
        .await
        .unwrap();
    eventually("the workers empty the queue", async || {
        a.queue_len(q).await.unwrap() == 0
    })
    .await;
    stop_tx.send(true).unwrap();
    wa.await.unwrap();
    wb.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(
        (seen.len(), distinct.len()),
        (100, 100),
        "each job ran once"
    );
}

async fn the_worker_retries_with_backoff_on_its_clock(s: &Store) {
    let q = "backoff";
    let clock = Arc::new(ManualClock::new(T));
    let backoff = Backoff {
        first: Duration::from_secs(60),
        cap: Duration::from_secs(600),
        give_up_after: Duration::from_secs(3600),
    };
    // Fails twice (temporarily), then succeeds; records the time of each run.
    let runs: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
    let handler = {
        let (runs, clock) = (runs.clone(), clock.clone());
        move |j: mailbeacon::store::queue::Leased| {
            let now = mailbeacon::jobs::Clock::now_ms(&*clock);
            runs.lock().unwrap().push((j.attempts, now));
            // The longest delay the backoff allows (its jitter is tested in
            // `jobs`), so each retry is strictly later than the last.
            let at = now + backoff.ceiling(j.attempts).as_millis() as u64;
            std::future::ready(if j.attempts < 3 {
                Outcome::RetryAt(at)
            } else {
                Outcome::Done
            })
        }
    };
    let jobs = Jobs::new(s.clone(), q);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(run_worker(
        jobs.clone(),
        handler,
        WorkerOptions {
            concurrency: 2,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(20),
            clock: clock.clone(),
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    jobs.enqueue(vec![job("flaky", T, "")]).await.unwrap();
    let run_count = |n: usize| {
        let runs = runs.clone();
        async move || runs.lock().unwrap().len() >= n
    };
    eventually("the first run", run_count(1)).await;
    eventually("the first retry is queued", async || {
        s.get_job(q, "flaky", T).await.unwrap().unwrap().due_ms > T
    })
    .await;
    let j = s.get_job(q, "flaky", T).await.unwrap().unwrap();
    assert_eq!((j.attempts, j.leased_until), (1, None));
    assert!(
        j.due_ms <= T + 60_000,
        "first retry within 60 s: {}",
        j.due_ms
    );
    // Not before its time, however often the worker looks...
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(runs.lock().unwrap().len(), 1);
    // ...and at its time on the worker's clock.
    clock.set(j.due_ms);
    eventually("the second run", run_count(2)).await;
    eventually("the second retry is queued", async || {
        s.get_job(q, "flaky", T)
            .await
            .unwrap()
            .is_some_and(|k| k.due_ms > j.due_ms)
    })
    .await;
    let k = s.get_job(q, "flaky", T).await.unwrap().unwrap();
    assert!(
        k.due_ms - j.due_ms > j.due_ms - T,
        "the delay grows: {} then {}",
        j.due_ms - T,
        k.due_ms - j.due_ms
    );
    clock.set(k.due_ms);
    eventually("the third run", run_count(3)).await;
    eventually("the job is done", async || {
        s.get_job(q, "flaky", T).await.unwrap().is_none()
    })
    .await;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs, [(1, T), (2, j.due_ms), (3, k.due_ms)]);
    stop_tx.send(()).unwrap();
    worker.await.unwrap();
}

async fn shutdown_finishes_the_job_in_hand_and_renews_its_lease(s: &Store) {
    let q = "shutdown";
    let started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let finished: Arc<Mutex<Vec<String>>> = Arc::default();
    let handler = {
        let (started, release, finished) = (started.clone(), release.clone(), finished.clone());
        move |j: mailbeacon::store::queue::Leased| {
            let (started, release, finished) = (started.clone(), release.clone(), finished.clone());
            async move {
                started.notify_one();
                release.acquire().await.unwrap().forget();
                finished.lock().unwrap().push(j.id);
                Outcome::Done
            }
        }
    };
    let jobs = Jobs::new(s.clone(), q);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // A short lease on the real clock: the job runs for several leases, so only
    // renewals keep it from being taken by someone else.
    let lease = Duration::from_millis(2400);
    let worker = tokio::spawn(run_worker(
        jobs.clone(),
        handler,
        WorkerOptions {
            concurrency: 2,
            lease,
            poll: Duration::from_millis(50),
            ..WorkerOptions::default()
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    let now = mailbeacon::ids::now_ms();
    jobs.enqueue(vec![job("long", now, "")]).await.unwrap();
    started.notified().await;
    let t0 = std::time::Instant::now();
    while t0.elapsed() < lease * 2 {
        let other = s
            .lease(q, mailbeacon::ids::now_ms(), 1000, 10)
            .await
            .unwrap();
        assert!(other.is_empty(), "the running job's lease was renewed");
        let long = s.get_job(q, "long", 0).await.unwrap().unwrap();
        assert_eq!(long.attempts, 1, "the running job was not leased again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_tx.send(()).unwrap();
    // Shutting down: nothing new is leased, the job in hand is waited for.
    tokio::time::sleep(Duration::from_millis(200)).await;
    jobs.store()
        .enqueue(q, vec![job("after", mailbeacon::ids::now_ms(), "")])
        .await
        .unwrap();
    jobs.notify();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !worker.is_finished(),
        "the worker waits for the job in hand"
    );
    release.add_permits(10);
    tokio::time::timeout(Duration::from_secs(20), worker)
        .await
        .expect("the worker stops once the job is done")
        .unwrap();
    assert_eq!(*finished.lock().unwrap(), ["long"]);
    assert!(s.get_job(q, "long", 0).await.unwrap().is_none());
    let after = s
        .get_job(q, "after", 0)
        .await
        .unwrap()
        .expect("still queued");
    assert_eq!(after.attempts, 0, "not leased after shutdown began");
}

async fn jobs_survive_a_restart(b: &Backend) {
    let q = "restart";
    let s = open(b, 3).await;
    s.enqueue(
        q,
        vec![job("held", T, "h"), job("kept", T + 10_000, "payload")],
    )
    .await
    .unwrap();
    // "held" is being run when the process dies (it never completes).
    let held = s.lease(q, T, 1000, 10).await.unwrap();
    assert_eq!(ids(&held), ["held"]);
    s.close().await.unwrap();
    drop(s);
    let s = open(b, 4).await;
    assert_eq!(s.queue_len(q).await.unwrap(), 2);
    assert!(s.lease(q, T + 999, 1000, 10).await.unwrap().is_empty());
    // Its lease expired: it is run again, as a second attempt.
    let again = s.lease(q, T + 1000, 1000, 10).await.unwrap();
    assert_eq!(ids(&again), ["held"]);
    assert_eq!(
        (again[0].attempts, again[0].payload.as_slice()),
        (2, &b"h"[..])
    );
    let kept = s.get_job(q, "kept", T).await.unwrap().expect("kept");
    assert_eq!((kept.due_ms, kept.attempts), (T + 10_000, 0));
    assert_eq!(kept.payload, b"payload");
    s.close().await.unwrap();
}
