//! The Redis store end to end, against the real binary and real Redis servers:
//! outages mid-burst (kill + restart, pause), TTLs on every key, two processes on
//! one Redis and on one Cluster, `migrate` both ways, and `/metrics`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::redis::{RedisCluster, RedisServer};
use support::*;

fn engagement(s: &Server, tok: &str, id: &str) -> Value {
    let (st, v) = s.api("GET", &format!("/api/v1/emails/{id}"), Some(tok), None);
    assert_eq!(st, 200, "{v}");
    v
}

/// Follows one email to `n` recipients; returns (email id, pixel URLs, click URLs).
fn follow_many(s: &Server, tok: &str, n: usize) -> (String, Vec<String>, Vec<String>) {
    let rcpts: Vec<String> = (0..n).map(|i| format!("r{i}@client.test")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let resp = s.follow(
        tok,
        &email("ann@sales.test", &refs, &[], &[], &["https://a.example/x"]),
    );
    let id = resp["id"].as_str().expect("id").to_string();
    let copies: Vec<Copy> = resp["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| copy(r, &s.base))
        .collect();
    let pixels = copies
        .iter()
        .map(|c| c.pixel.clone().expect("pixel"))
        .collect();
    let clicks = copies.iter().map(|c| c.clicks[0].clone()).collect();
    (id, pixels, clicks)
}

/// Clients hitting pixels until stopped; counts answers and failures.
struct Burst {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Burst {
    fn start(pixels: &[String], clients: usize) -> Burst {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|t| {
                let (pixels, stop) = (pixels.to_vec(), stop.clone());
                let (answered, failed) = (answered.clone(), failed.clone());
                std::thread::spawn(move || {
                    let a = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(10))
                        .build();
                    let mut i = t;
                    while !stop.load(Ordering::SeqCst) {
                        let ok = match a
                            .get(&pixels[i % pixels.len()])
                            .set("User-Agent", BROWSER_UA)
                            .call()
                        {
                            Ok(resp) if resp.status() == 200 => {
                                let mut b = Vec::new();
                                std::io::Read::read_to_end(&mut resp.into_reader(), &mut b).is_ok()
                                    && b.len() == 43
                            }
                            _ => false,
                        };
                        if ok {
                            answered.fetch_add(1, Ordering::SeqCst);
                        } else {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                        i += clients;
                    }
                })
            })
            .collect();
        Burst {
            stop,
            answered,
            failed,
            threads,
        }
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }

    /// Stops the clients; returns (answered, failed).
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        (
            self.answered.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// Waits until the report counts `want` opens (it must never count more).
fn assert_opens_become(s: &Server, tok: &str, id: &str, want: u64) {
    let t0 = Instant::now();
    loop {
        let got = engagement(s, tok, id)["totals"]["opens"]
            .as_u64()
            .expect("opens");
        assert!(got <= want, "counted {got} opens for {want} answered hits");
        if got == want {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "only {got} of {want} answered hits counted:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn health(s: &Server) -> Value {
    let (_, _, body) = raw("GET", &s.url("/healthz"), &[]);
    serde_json::from_slice(&body).expect("healthz JSON")
}

#[test]
fn redis_killed_and_paused_mid_burst_loses_and_doubles_nothing() {
    let mut redis = RedisServer::start();
    let s = Server::start_env(&[("MAILBEACON_REDIS_URL", &redis.url())]);
    assert_eq!(health(&s)["store"], "redis");
    let tok = s.user("ann@sales.test");
    let (id, pixels, _) = follow_many(&s, &tok, 20);

    // Phase 1: Redis is killed mid-burst, stays down a while, comes back.
    let burst = Burst::start(&pixels, 6);
    wait_until("hits before the kill", || burst.answered() > 100);
    redis.kill();
    let at_kill = burst.answered();
    wait_until("hits while Redis is down", || {
        burst.answered() > at_kill + 200
    });
    assert_eq!(health(&s)["status"], "degraded");
    assert!(health(&s)["spool_events"].as_u64().unwrap_or(0) > 0);
    redis.restart();
    let at_restart = burst.answered();
    wait_until("hits after the restart", || {
        burst.answered() > at_restart + 200
    });
    let (answered, failed) = burst.finish();
    assert_eq!(failed, 0, "the pixel failed while Redis was away");
    assert_opens_become(&s, &tok, &id, answered);
    wait_until("spool replayed", || health(&s)["status"] == "ok");

    // Phase 2: Redis is paused (CLIENT PAUSE) mid-burst.
    let burst = Burst::start(&pixels, 6);
    wait_until("hits before the pause", || burst.answered() > 100);
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "1500", "ALL"]).trim(), "OK");
    let at_pause = burst.answered();
    wait_until("hits while Redis is paused", || {
        burst.answered() > at_pause + 200
    });
    std::thread::sleep(Duration::from_millis(1600));
    let at_unpause = burst.answered();
    wait_until("hits after the pause", || {
        burst.answered() > at_unpause + 200
    });
    // The spool drains while the burst goes on (new batches queue behind it,
    // so a replay slower than the load would never get back to Redis).
    wait_until("spool replayed while hits keep coming", || {
        health(&s)["status"] == "ok"
    });
    let (more, failed) = burst.finish();
    assert_eq!(failed, 0, "the pixel failed while Redis was paused");
    assert_opens_become(&s, &tok, &id, answered + more);
    let log = s.log_text();
    assert!(log.contains("spooling locally"), "{log}");
}

#[test]
fn every_interaction_key_has_a_ttl_and_expires() {
    let redis = RedisServer::start();
    let s = Server::start_env(&[
        ("MAILBEACON_REDIS_URL", &redis.url()),
        ("MAILBEACON_RETENTION_DAYS", "1"),
    ]);
    let tok = s.user("ann@sales.test");
    let (id, pixels, clicks) = follow_many(&s, &tok, 3);
    for p in &pixels {
        assert_eq!(raw("GET", p, &[("User-Agent", BROWSER_UA)]).0, 200);
    }
    assert_eq!(raw("GET", &clicks[0], &[("User-Agent", BROWSER_UA)]).0, 302);
    let rep = engagement(&s, &tok, &id);
    assert_eq!(rep["totals"]["opens"], 3);
    assert_eq!(rep["totals"]["clicks"], 1);
    wait_until("derivation", || {
        !redis
            .cli(&["--scan", "--pattern", "mb:{e:*}:ev"])
            .is_empty()
    });
    // Users, settings and the key ring persist by design; everything else is
    // interaction data and expires within the retention (1 day).
    let persistent = [
        "mb:{g}:users",
        "mb:{g}:user_by_email",
        "mb:{g}:tokens",
        "mb:{g}:settings",
        "mb:{g}:keyring",
        "mb:{g}:nodes",
        "mb:{g}:audit",
        "mb:{g}:audit_seq",
        "mb:{g}:contacts",
    ];
    let keys = redis.cli(&["--scan"]);
    let mut checked = 0;
    for key in keys.lines().filter(|k| !k.is_empty()) {
        let ttl: i64 = redis.cli(&["PTTL", key]).trim().parse().expect("PTTL");
        if persistent.contains(&key) {
            assert_eq!(ttl, -1, "{key} should persist");
            continue;
        }
        checked += 1;
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
        if !key.starts_with("mb:{log:") {
            assert!(ttl <= 86_400_000, "{key} outlives the retention ({ttl} ms)");
        }
    }
    assert!(checked >= 5, "{keys}");
}

#[tokio::test(flavor = "current_thread")]
async fn redis_expires_an_email_with_its_events() {
    use mailbeacon::ids::now_ms;
    use mailbeacon::model::{EmailRecord, Event, EventKind};
    use mailbeacon::seal::Sealer;
    use mailbeacon::store::redis::conn::Target;
    use mailbeacon::store::redis::Redis;
    use mailbeacon::store::{Backend, Store};
    let redis = RedisServer::start();
    let dir = TempDir::new("expiry");
    let store = Store::new(
        Backend::Redis(
            Redis::open(&Target::Single(redis.url()), dir.path(), 1 << 20)
                .await
                .expect("open"),
        ),
        Sealer::new(&[(1, vec![3; 32])], 1, b"lookup").expect("sealer"),
    );
    let now = now_ms();
    let rec = EmailRecord {
        id: 77,
        owner: 1,
        from: "a@b.test".into(),
        subject: None,
        message_id: None,
        created_ms: now,
        expires_ms: now + 1500,
        deliver: "return".into(),
        recipients: vec![],
        links: vec![],
        lookups: vec![],
        template: None,
        send_at_ms: None,
        reminder: None,
    };
    store.put_email(rec).await.expect("put");
    let ev = Event {
        seq: 0,
        at_ms: now,
        kind: EventKind::Open,
        email: 77,
        recipient: 0,
        link: None,
        method: "GET".into(),
        ua: String::new(),
        ip: String::new(),
        since_prepared_s: 0,
        machine_net: None,
    };
    store
        .commit_events(vec![ev.clone(), ev])
        .await
        .expect("commit");
    assert_eq!(store.events_for(77).await.expect("events").len(), 2);
    assert_eq!(store.list_emails(Some(1), None, 10).await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(store.get_email(77).await.unwrap().is_none());
    assert!(store.events_for(77).await.unwrap().is_empty());
    assert!(store
        .list_emails(Some(1), None, 10)
        .await
        .unwrap()
        .is_empty());
    let left = redis.cli(&["--scan", "--pattern", "mb:{e:*"]);
    assert!(left.trim().is_empty(), "left behind: {left}");
    store.close().await.unwrap();
}

/// Two processes on one store act as one.
fn two_processes(env_key: &str, env_val: &str) {
    let a = Server::start_env(&[(env_key, env_val)]);
    let b = Server::start_env(&[(env_key, env_val)]);
    // A user created on A signs in on B; an email followed on A is reported by B.
    let tok = a.user("ann@sales.test");
    let (id, pixels, _) = follow_many(&a, &tok, 4);
    assert_eq!(engagement(&b, &tok, &id)["totals"]["recipients"], 4);
    // Hits on either are counted once, and seen at once by both.
    let on_b: Vec<String> = pixels.iter().map(|p| p.replace(&a.base, &b.base)).collect();
    for (pa, pb) in pixels.iter().zip(&on_b) {
        assert_eq!(raw("GET", pa, &[("User-Agent", BROWSER_UA)]).0, 200);
        assert_eq!(raw("GET", pb, &[("User-Agent", BROWSER_UA)]).0, 200);
    }
    assert_eq!(engagement(&b, &tok, &id)["totals"]["opens"], 8);
    assert_eq!(engagement(&a, &tok, &id)["totals"]["opens"], 8);
    // A key rotation reaches both: B mints with the new key, A verifies it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailbeacon"))
        .args(["keys", "rotate"])
        .env(env_key, env_val)
        .env("MAILBEACON_DATA_DIR", a.data_dir.join("cli"))
        .output()
        .expect("keys rotate");
    assert!(out.status.success(), "{out:?}");
    wait_until("B loads the rotated ring", || {
        b.log_text().contains("key ring reloaded")
    });
    wait_until("A loads the rotated ring", || {
        a.log_text().contains("key ring reloaded")
    });
    let (id2, pixels2, _) = follow_many(&b, &tok, 1);
    let on_a = pixels2[0].replace(&b.base, &a.base);
    assert_eq!(raw("GET", &on_a, &[("User-Agent", BROWSER_UA)]).0, 200);
    assert_eq!(engagement(&b, &tok, &id2)["totals"]["opens"], 1);
    // A settings change on A reaches B.
    let (st, _) = a.api(
        "PUT",
        "/api/v1/settings",
        Some(ADMIN),
        Some(json!({"email_engagement": false})),
    );
    assert_eq!(st, 200);
    wait_until("B sees the settings change", || {
        b.api("GET", "/api/v1/settings", Some(ADMIN), None).1["email_engagement"] == false
    });
    assert_eq!(raw("GET", &on_b[0], &[("User-Agent", BROWSER_UA)]).0, 200);
    assert_eq!(engagement(&a, &tok, &id)["totals"]["opens"], 8);
    // Metrics count the requests each process answered.
    let admin = format!("Bearer {ADMIN}");
    let (_, _, m) = raw("GET", &b.url("/metrics"), &[("Authorization", &admin)]);
    let m = String::from_utf8(m).expect("metrics text");
    assert!(
        m.contains("mailbeacon_requests_total{route=\"pixel\",status=\"200\"} 5"),
        "{m}"
    );
    assert!(m.contains("mailbeacon_events_recorded_total"), "{m}");
}

#[test]
fn two_processes_on_one_redis_act_as_one() {
    let redis = RedisServer::start();
    two_processes("MAILBEACON_REDIS_URL", &redis.url());
}

#[test]
fn two_processes_on_one_cluster_act_as_one() {
    let cluster = RedisCluster::start();
    two_processes("MAILBEACON_REDIS_CLUSTER", &cluster.seeds());
}

fn migrate(data_dir: &std::path::Path, redis: &str, from: &str, to: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailbeacon"))
        .args(["migrate", "--from", from, "--to", to])
        .env("MAILBEACON_DATA_DIR", data_dir)
        .env("MAILBEACON_REDIS_URL", redis)
        .output()
        .expect("run migrate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "migrate failed:\n{text}");
    text
}

#[test]
fn migrate_round_trip_keeps_every_count() {
    let redis = RedisServer::start();
    let tmp = TempDir::new("migrate");
    let one = tmp.path().join("one");
    // Data on the embedded store: two emails with opens and a click.
    let mut s = Server::start_in(&one, &[]);
    let tok = s.user("ann@sales.test");
    let (id1, p1, c1) = follow_many(&s, &tok, 3);
    let (id2, p2, _) = follow_many(&s, &tok, 2);
    for p in p1.iter().chain(&p2).chain(&p1[..1]) {
        assert_eq!(raw("GET", p, &[("User-Agent", BROWSER_UA)]).0, 200);
    }
    assert_eq!(raw("GET", &c1[1], &[("User-Agent", BROWSER_UA)]).0, 302);
    let before1 = engagement(&s, &tok, &id1)["totals"].clone();
    let before2 = engagement(&s, &tok, &id2)["totals"].clone();
    assert_eq!(before1["opens"], 4);
    s.stop();

    // Embedded -> Redis, twice (the second run finds everything there).
    let out = migrate(&one, &redis.url(), "embedded", "redis");
    assert!(out.contains("2 emails (0 already there)"), "{out}");
    let out = migrate(&one, &redis.url(), "embedded", "redis");
    assert!(out.contains("2 emails (2 already there)"), "{out}");
    let r = Server::start_in(
        &tmp.path().join("r"),
        &[("MAILBEACON_REDIS_URL", &redis.url())],
    );
    assert_eq!(engagement(&r, &tok, &id1)["totals"], before1);
    assert_eq!(engagement(&r, &tok, &id2)["totals"], before2);
    // Links sent before the move still count (the key ring moved too).
    let on_r = p2[0].replace(&s.base, &r.base);
    assert_eq!(raw("GET", &on_r, &[("User-Agent", BROWSER_UA)]).0, 200);
    wait_until("the new hit", || {
        engagement(&r, &tok, &id2)["totals"]["opens"] == 3
    });
    drop(r);

    // Redis -> a fresh embedded store.
    let two = tmp.path().join("two");
    let out = migrate(&two, &redis.url(), "redis", "embedded");
    assert!(out.contains("counts verified"), "{out}");
    let e = Server::start_in(&two, &[]);
    assert_eq!(engagement(&e, &tok, &id1)["totals"], before1);
    assert_eq!(engagement(&e, &tok, &id2)["totals"]["opens"], 3);
    let on_e = p1[2].replace(&s.base, &e.base);
    assert_eq!(raw("GET", &on_e, &[("User-Agent", BROWSER_UA)]).0, 200);
    assert_eq!(engagement(&e, &tok, &id1)["totals"]["opens"], 5);
    drop(e);

    // A migration run again after both sides moved on copies the source's
    // events of every email that differs, replacing the destination's: id2
    // gets its new open once (not its old events twice), id1 is the source's.
    let r = Server::start_in(
        &tmp.path().join("r2"),
        &[("MAILBEACON_REDIS_URL", &redis.url())],
    );
    let on_r = p2[1].replace(&s.base, &r.base);
    assert_eq!(raw("GET", &on_r, &[("User-Agent", BROWSER_UA)]).0, 200);
    wait_until("the newer hit", || {
        engagement(&r, &tok, &id2)["totals"]["opens"] == 4
    });
    drop(r);
    let out = migrate(&two, &redis.url(), "redis", "embedded");
    assert!(out.contains("2 emails (0 already there)"), "{out}");
    let e = Server::start_in(&two, &[]);
    assert_eq!(engagement(&e, &tok, &id2)["totals"]["opens"], 4);
    assert_eq!(engagement(&e, &tok, &id1)["totals"], before1);
}

/// Concurrent tracks of one Message-ID by one owner make exactly one activity
/// (the Redis check and insert cannot interleave into a duplicate).
#[tokio::test(flavor = "current_thread")]
async fn redis_concurrent_insert_activity_makes_one() {
    use mailbeacon::ids::now_ms;
    use mailbeacon::model::{Activity, ActivityPersonal};
    use mailbeacon::seal::Sealer;
    use mailbeacon::store::addin::Inserted;
    use mailbeacon::store::redis::conn::Target;
    use mailbeacon::store::redis::Redis;
    use mailbeacon::store::{Backend, Store};
    let redis = RedisServer::start();
    let dir = TempDir::new("race");
    let store = Store::new(
        Backend::Redis(
            Redis::open(&Target::Single(redis.url()), dir.path(), 1 << 20)
                .await
                .expect("open"),
        ),
        Sealer::new(&[(1, vec![3; 32])], 1, b"lookup").expect("sealer"),
    );
    for round in 0..5u64 {
        let mid = format!("race-{round}@x");
        let tries = (0..16u64).map(|i| {
            let a = Activity {
                id: 1000 * (round + 1) + i,
                owner: 9,
                message_id: mid.clone(),
                conversation: mid.clone(),
                reply_to: None,
                direction: "incoming".into(),
                regarding: None,
                email_id: None,
                source: "addin".into(),
                sent_ms: None,
                created_ms: now_ms(),
                expires_ms: now_ms() + 3_600_000,
                personal: ActivityPersonal::default(),
                sealed: None,
                lookups: Vec::new(),
            };
            let store = &store;
            async move { store.insert_activity(a).await.expect("insert") }
        });
        let got = futures_util::future::join_all(tries).await;
        let new = got.iter().filter(|g| **g == Inserted::New).count();
        assert_eq!(new, 1, "round {round}: {got:?}");
        let winner = store
            .activity_by_message_id(9, mid.clone())
            .await
            .unwrap()
            .expect("tracked")
            .id;
        assert!(got.iter().all(|g| match g {
            Inserted::New => true,
            Inserted::Existing(a) => a.id == winner,
        }));
    }
    assert_eq!(store.list_activities(9, None, 100).await.unwrap().len(), 5);
    let left = redis.cli(&["--scan", "--pattern", "mb:{a:*"]);
    assert_eq!(left.lines().count(), 5, "{left}");
    store.close().await.unwrap();
}
