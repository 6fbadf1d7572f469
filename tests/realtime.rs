//! Real time end to end, against the real binary: webhooks verified by the PyPI
//! `standardwebhooks` package (`tests/support/webhook_receiver.py`), retries
//! with the same `webhook-id`, a delivery pending across `kill -9`, two
//! processes on one Redis and on a Redis Cluster (each delivery once, a stream
//! on one process seeing hits recorded on the other), who sees what, refused
//! targets, and the live event stream (an open arriving, `Last-Event-ID`
//! resume, heartbeats, a burst reaching many streams whole and in order, the
//! end on shutdown).

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::redis::{RedisCluster, RedisServer};
use support::*;

/// The receiver script, on a port of its own.
struct Receiver {
    child: Child,
    port: u16,
}

impl Receiver {
    fn start_on(port: u16) -> Receiver {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/support/webhook_receiver.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs the webhook receiver");
        let mut out = child.stdout.take().expect("stdout");
        let mut buf = [0u8; 6];
        if out.read_exact(&mut buf).is_err() || &buf != b"READY\n" {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the webhook receiver did not start (pip install standardwebhooks; scripts/test.sh does):\n{err}");
        }
        Receiver { child, port }
    }

    fn start() -> Receiver {
        Receiver::start_on(free_port())
    }

    fn url(&self, mode: &str, name: &str) -> String {
        format!("http://127.0.0.1:{}/{mode}/{name}", self.port)
    }

    fn secret(&self, name: &str, secret: &str) {
        agent()
            .put(&format!("http://127.0.0.1:{}/_secret/{name}", self.port))
            .send_string(secret)
            .expect("register secret");
    }

    fn log(&self) -> Vec<Value> {
        let text = agent()
            .get(&format!("http://127.0.0.1:{}/_log", self.port))
            .call()
            .expect("receiver log")
            .into_string()
            .expect("text");
        serde_json::from_str::<Value>(&text)
            .expect("json")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn for_name(&self, name: &str) -> Vec<Value> {
        self.log()
            .into_iter()
            .filter(|d| d["name"] == name)
            .collect()
    }

    /// Waits until `pred` holds over the log (at most `secs`).
    fn wait(&self, secs: u64, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let t0 = Instant::now();
        loop {
            let log = self.log();
            if pred(&log) {
                return log;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "timed out waiting for {what}; receiver log: {log:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ALLOW: (&str, &str) = ("MAILBEACON_OUTBOUND_ALLOW", "127.0.0.0/8");

/// Creates a webhook and registers its secret with the receiver; returns its id.
fn hook(s: &Server, tok: &str, rx: &Receiver, mode: &str, name: &str, extra: Value) -> String {
    let mut body = json!({"url": rx.url(mode, name), "events": ["email.opened", "email.clicked"]});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        body[k] = v;
    }
    let (st, v) = s.api("POST", "/api/v1/webhooks", Some(tok), Some(body));
    assert_eq!(st, 201, "{v}");
    let secret = v["secret"].as_str().expect("secret");
    assert!(secret.starts_with("whsec_"), "{v}");
    rx.secret(name, secret);
    v["id"].as_str().expect("id").to_string()
}

fn open(pixel: &str, ua: &str) {
    let (st, _, _) = raw("GET", pixel, &[("User-Agent", ua)]);
    assert_eq!(st, 200);
}

const SCANNER_UA: &str = "Mozilla/5.0 (compatible; Barracuda Sentinel)";

/// A live stream: its frames (blank-line separated blocks), read by a thread.
fn stream(s: &Server, tok: &str, last: Option<&str>) -> mpsc::Receiver<String> {
    let mut req = agent()
        .get(&s.url("/api/v1/events"))
        .set("Authorization", &format!("Bearer {tok}"))
        .set("Accept", "text/event-stream");
    if let Some(id) = last {
        req = req.set("Last-Event-ID", id);
    }
    let resp = req.call().expect("stream opens");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(resp.into_reader());
        let mut frame = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = tx.send("<closed>".to_string());
                    return;
                }
                Ok(_) => {}
            }
            if line == "\n" {
                if tx.send(std::mem::take(&mut frame)).is_err() {
                    return;
                }
            } else {
                frame.push_str(&line);
            }
        }
    });
    rx
}

/// The next event frame (skipping comments) within `secs`, parsed: (id, type, data).
fn next_event(rx: &mpsc::Receiver<String>, secs: u64) -> Option<(String, String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let frame = rx.recv_timeout(left).ok()?;
        if frame == "<closed>" {
            return None;
        }
        let mut id = String::new();
        let mut kind = String::new();
        let mut data = Value::Null;
        for line in frame.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.into();
            } else if let Some(v) = line.strip_prefix("event: ") {
                kind = v.into();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = serde_json::from_str(v).expect("data is JSON");
            }
        }
        if !id.is_empty() {
            return Some((id, kind, data));
        }
    }
}

#[test]
fn webhooks_are_signed_scoped_filtered_and_retried_with_the_same_id() {
    let rx = Receiver::start();
    let s = Server::start_env(&[ALLOW]);
    let ann = s.user("ann@sales.test");
    let bob = s.user("bob@sales.test");

    // Refused before any connection: not public and not allowed.
    for url in [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
    ] {
        let (st, v) = s.api(
            "POST",
            "/api/v1/webhooks",
            Some(&ann),
            Some(json!({"url": url, "events": ["email.opened"]})),
        );
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (422, Some("target_not_allowed")),
            "{v}"
        );
    }
    for (body, code) in [
        (
            json!({"url": "ftp://127.0.0.1/x", "events": ["email.opened"]}),
            "invalid_target",
        ),
        (
            json!({"url": rx.url("ok", "x"), "events": ["email.bounced_maybe"]}),
            "invalid_events",
        ),
        (
            json!({"url": rx.url("ok", "x"), "events": []}),
            "invalid_events",
        ),
    ] {
        let (st, v) = s.api("POST", "/api/v1/webhooks", Some(&ann), Some(body));
        assert_eq!((st, v["error"]["code"].as_str()), (400, Some(code)), "{v}");
    }
    let (st, v) = s.api(
        "POST",
        "/api/v1/webhooks",
        Some(&ann),
        Some(json!({"url": rx.url("ok", "x"), "events": ["email.opened"], "all": true})),
    );
    assert_eq!(st, 403, "{v}");

    let ann_hook = hook(&s, &ann, &rx, "ok", "ann", json!({}));
    let retry_hook = hook(
        &s,
        &ann,
        &rx,
        "fail1",
        "annretry",
        json!({"events": ["email.opened"]}),
    );
    hook(&s, &bob, &rx, "ok", "bob", json!({}));
    hook(&s, ADMIN, &rx, "ok", "admin", json!({}));
    hook(
        &s,
        ADMIN,
        &rx,
        "ok",
        "adminall",
        json!({"all": true, "include_machine": true}),
    );

    // The list shows no secret; another user's webhook is not found.
    let (st, v) = s.api("GET", "/api/v1/webhooks", Some(&ann), None);
    assert_eq!(st, 200);
    assert_eq!(v["webhooks"].as_array().unwrap().len(), 2, "{v}");
    assert!(!v.to_string().contains("whsec_"), "{v}");
    let (st, _) = s.api(
        "GET",
        &format!("/api/v1/webhooks/{ann_hook}/deliveries"),
        Some(&bob),
        None,
    );
    assert_eq!(st, 404);
    let (st, _) = s.api(
        "DELETE",
        &format!("/api/v1/webhooks/{ann_hook}"),
        Some(&bob),
        None,
    );
    assert_eq!(st, 404);

    let (email_id, copy) = s.follow_one(&ann, "carol@client.test", "https://example.test/pricing");
    let pixel = copy.pixel.expect("pixel");
    open(&pixel, SCANNER_UA); // machine
    std::thread::sleep(Duration::from_millis(300));
    open(&pixel, BROWSER_UA); // first human open
    open(&pixel, BROWSER_UA); // not first
    let click = copy.clicks[0].clone();
    let (st, _, _) = raw("GET", &click, &[("User-Agent", BROWSER_UA)]);
    assert_eq!(st, 302);

    let log = rx.wait(30, "the deliveries", |log| {
        let n = |name: &str| log.iter().filter(|d| d["name"] == name).count();
        n("ann") >= 3 && n("adminall") >= 4 && n("annretry") >= 3
    });
    // Every delivery verified by the reference library.
    for d in &log {
        assert_eq!(d["verified"], true, "{d}");
    }
    let ann_log: Vec<&Value> = log.iter().filter(|d| d["name"] == "ann").collect();
    let opens: Vec<&Value> = ann_log
        .iter()
        .copied()
        .filter(|d| d["type"] == "email.opened")
        .collect();
    assert_eq!(
        opens.len(),
        2,
        "machine activity is not sent without include_machine: {ann_log:#?}"
    );
    let firsts: Vec<bool> = opens
        .iter()
        .map(|d| d["event"]["data"]["first"].as_bool().unwrap())
        .collect();
    assert_eq!(firsts.iter().filter(|f| **f).count(), 1, "{opens:#?}");
    let e = &opens[0]["event"];
    assert_eq!(e["data"]["email_id"], email_id.as_str());
    assert_eq!(e["data"]["recipient"], "carol@client.test");
    assert_eq!(e["data"]["machine"], false);
    assert_eq!(e["data"]["subject"], "Quarterly update");
    assert_eq!(e["id"], opens[0]["id"], "webhook-id is the event id");
    let clicked: Vec<&Value> = ann_log
        .iter()
        .copied()
        .filter(|d| d["type"] == "email.clicked")
        .collect();
    assert_eq!(clicked.len(), 1);
    assert_eq!(
        clicked[0]["event"]["data"]["url"],
        "https://example.test/pricing"
    );
    assert_eq!(clicked[0]["event"]["data"]["first"], true);
    // The admin's "all" webhook with include_machine sees the machine open too.
    let all: Vec<&Value> = log.iter().filter(|d| d["name"] == "adminall").collect();
    assert!(
        all.iter().any(|d| d["event"]["data"]["machine"] == true),
        "{all:#?}"
    );
    // Bob's and the admin's own webhooks see nothing of Ann's emails.
    std::thread::sleep(Duration::from_millis(500));
    assert!(rx.for_name("bob").is_empty());
    assert!(rx.for_name("admin").is_empty());

    // The failing-first receiver: two attempts per event with the same id, the
    // second within 10 s (plus slack for the machine).
    // (Two human opens: each is answered 500 once, then 204.)
    rx.wait(30, "every retried delivery to succeed", |log| {
        log.iter()
            .filter(|d| d["name"] == "annretry" && d["status"] == 204)
            .count()
            >= 2
    });
    let retry: Vec<Value> = rx.for_name("annretry");
    let first_id = retry[0]["id"].as_str().unwrap().to_string();
    let same: Vec<&Value> = retry
        .iter()
        .filter(|d| d["id"] == first_id.as_str())
        .collect();
    assert_eq!(same.len(), 2, "{retry:#?}");
    assert_eq!(
        (same[0]["status"].as_u64(), same[1]["status"].as_u64()),
        (Some(500), Some(204))
    );
    let gap = same[1]["received"].as_f64().unwrap() - same[0]["received"].as_f64().unwrap();
    assert!(gap < 12.0, "first retry after {gap} s");
    let (st, v) = s.api(
        "GET",
        &format!("/api/v1/webhooks/{retry_hook}/deliveries"),
        Some(&ann),
        None,
    );
    assert_eq!(st, 200, "{v}");
    let d = v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == first_id.as_str())
        .cloned()
        .expect("the delivery is logged");
    assert_eq!(
        (
            d["state"].as_str(),
            d["attempts"].as_u64(),
            d["status"].as_u64()
        ),
        (Some("delivered"), Some(2), Some(204)),
        "{d}"
    );

    // A manual retry sends it again, with the same id.
    let (st, v) = s.api(
        "POST",
        &format!("/api/v1/webhooks/{retry_hook}/deliveries/{first_id}/retry"),
        Some(&ann),
        None,
    );
    assert_eq!(st, 202, "{v}");
    rx.wait(15, "the manual retry", |log| {
        log.iter()
            .filter(|d| d["name"] == "annretry" && d["id"] == first_id.as_str())
            .count()
            == 3
    });
    let (st, _) = s.api(
        "POST",
        &format!("/api/v1/webhooks/{retry_hook}/deliveries/evt_1-0-0/retry"),
        Some(&ann),
        None,
    );
    assert_eq!(st, 404);

    // Deleted: no more deliveries.
    let (st, _) = s.api(
        "DELETE",
        &format!("/api/v1/webhooks/{ann_hook}"),
        Some(&ann),
        None,
    );
    assert_eq!(st, 204);
    let before = rx.for_name("ann").len();
    std::thread::sleep(Duration::from_millis(1200));
    open(&pixel, BROWSER_UA);
    rx.wait(15, "the admin's delivery of the last open", |log| {
        log.iter().filter(|d| d["name"] == "adminall").count() >= 5
    });
    assert_eq!(rx.for_name("ann").len(), before);
}

#[test]
fn a_pending_delivery_survives_kill_9() {
    let port = free_port();
    let mut s = Server::start_env(&[ALLOW]);
    let ann = s.user("ann@sales.test");
    // Nothing listens yet: every attempt fails and is retried.
    let url = format!("http://127.0.0.1:{port}/ok/ann");
    let (st, v) = s.api(
        "POST",
        "/api/v1/webhooks",
        Some(&ann),
        Some(json!({"url": url, "events": ["email.opened"]})),
    );
    assert_eq!(st, 201, "{v}");
    let secret = v["secret"].as_str().unwrap().to_string();
    let hook_id = v["id"].as_str().unwrap().to_string();
    let (_, copy) = s.follow_one(&ann, "carol@client.test", "https://example.test/p");
    open(&copy.pixel.unwrap(), BROWSER_UA);
    // Wait for the first failed attempt to be logged.
    let t0 = Instant::now();
    loop {
        let (_, v) = s.api(
            "GET",
            &format!("/api/v1/webhooks/{hook_id}/deliveries"),
            Some(&ann),
            None,
        );
        if let Some(d) = v["deliveries"].as_array().and_then(|a| a.first()) {
            assert_eq!(d["state"], "retrying", "{d}");
            assert_eq!(d["error"], "target_unreachable", "{d}");
            assert!(d["next_try_at"].is_string(), "{d}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no attempt logged: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.kill9();
    let rx = Receiver::start_on(port);
    rx.secret("ann", &secret);
    s.restart();
    let log = rx.wait(60, "the delivery after the restart", |log| !log.is_empty());
    assert_eq!(log[0]["verified"], true, "{log:#?}");
    assert_eq!(log[0]["type"], "email.opened");
}

#[test]
fn the_stream_carries_the_callers_events_resumes_and_beats() {
    let mut s = Server::start_env(&[ALLOW, ("MAILBEACON_SSE_HEARTBEAT_MS", "300")]);
    let ann = s.user("ann@sales.test");
    let bob = s.user("bob@sales.test");

    // Wrong Accept, no token, bad Last-Event-ID.
    let (st, _, body) = raw(
        "GET",
        &s.url("/api/v1/events"),
        &[("Authorization", &format!("Bearer {ann}"))],
    );
    assert_eq!(st, 406, "{}", String::from_utf8_lossy(&body));
    let (st, _, _) = raw(
        "GET",
        &s.url("/api/v1/events"),
        &[("Accept", "text/event-stream")],
    );
    assert_eq!(st, 401);
    let (st, _, _) = raw(
        "GET",
        &s.url("/api/v1/events"),
        &[
            ("Accept", "text/event-stream"),
            ("Authorization", &format!("Bearer {ann}")),
            ("Last-Event-ID", "nope"),
        ],
    );
    assert_eq!(st, 400);

    let ann_stream = stream(&s, &ann, None);
    let bob_stream = stream(&s, &bob, None);
    // Heartbeats: comments, several within a second or two.
    let t0 = Instant::now();
    let mut beats = 0;
    while beats < 2 && t0.elapsed() < Duration::from_secs(10) {
        if let Ok(f) = ann_stream.recv_timeout(Duration::from_secs(5)) {
            if f.starts_with(": heartbeat") {
                beats += 1;
            }
        }
    }
    assert_eq!(beats, 2, "heartbeats");

    let (email_id, copy) = s.follow_one(&ann, "carol@client.test", "https://example.test/p");
    let pixel = copy.pixel.unwrap();
    open(&pixel, BROWSER_UA);
    let (id1, kind, data) = next_event(&ann_stream, 10).expect("the open arrives");
    assert_eq!(kind, "email.opened");
    assert_eq!(data["id"], id1.as_str());
    assert_eq!(data["type"], "email.opened");
    assert_eq!(data["data"]["email_id"], email_id.as_str());
    assert_eq!(data["data"]["first"], true);
    // Machine activity is not on a stream that did not ask for it.
    open(&pixel, SCANNER_UA);
    open(&pixel, BROWSER_UA);
    let (id2, _, data2) = next_event(&ann_stream, 10).expect("the second human open");
    assert_eq!(data2["data"]["machine"], false);
    assert_eq!(data2["data"]["first"], false);
    // Bob sees none of it.
    assert!(next_event(&bob_stream, 1).is_none());

    // Resume after the first: exactly the second (the machine one is skipped).
    let resumed = stream(&s, &ann, Some(&id1));
    let (rid, _, _) = next_event(&resumed, 10).expect("the resumed stream replays");
    assert_eq!(rid, id2);
    assert!(next_event(&resumed, 1).is_none());
    // include_machine=true shows the machine open on resume.
    let resp = agent()
        .get(&s.url("/api/v1/events?include_machine=true"))
        .set("Authorization", &format!("Bearer {ann}"))
        .set("Accept", "text/event-stream")
        .set("Last-Event-ID", &id1)
        .call()
        .unwrap();
    let mut r = BufReader::new(resp.into_reader());
    let mut seen = String::new();
    while !seen.contains(&id2) {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        seen.push_str(&line);
    }
    assert!(seen.contains("\"machine\":true"), "{seen}");

    // Shutdown ends open streams cleanly, and the server exits cleanly.
    let t0 = Instant::now();
    s.stop();
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "shutdown waited for the streams"
    );
    let mut closed = false;
    while let Ok(f) = ann_stream.recv_timeout(Duration::from_secs(5)) {
        if f == "<closed>" {
            closed = true;
            break;
        }
    }
    assert!(closed, "the stream ended");
}

#[test]
fn a_burst_reaches_every_stream_whole_and_in_order_and_no_one_else() {
    let s = Server::start_env(&[ALLOW]);
    let ann = s.user("ann@sales.test");
    let bob = s.user("bob@sales.test");
    let ann_streams: Vec<_> = (0..5).map(|_| stream(&s, &ann, None)).collect();
    let bob_stream = stream(&s, &bob, None);
    let (_, copy) = s.follow_one(&ann, "carol@client.test", "https://example.test/p");
    let pixel = copy.pixel.unwrap();
    // Opens from several threads at once: they share recorder batches and
    // publisher passes, so streams receive several events per chunk.
    const N: usize = 200;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let pixel = pixel.clone();
            std::thread::spawn(move || {
                for _ in 0..N / 8 {
                    open(&pixel, BROWSER_UA);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut first = None;
    for (i, st) in ann_streams.iter().enumerate() {
        let mut ids = Vec::new();
        while ids.len() < N {
            let (id, kind, data) =
                next_event(st, 20).unwrap_or_else(|| panic!("stream {i}: {} of {N}", ids.len()));
            assert_eq!(kind, "email.opened");
            assert_eq!(data["id"], id.as_str());
            ids.push(id);
        }
        assert!(next_event(st, 1).is_none(), "stream {i}: more than {N}");
        // In feed order, each once.
        let pos: Vec<(u64, u64, u64)> = ids
            .iter()
            .map(|id| {
                let p: Vec<u64> = id
                    .strip_prefix("evt_")
                    .unwrap()
                    .split('-')
                    .map(|x| x.parse().unwrap())
                    .collect();
                (p[0], p[1], p[2])
            })
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "stream {i}: {ids:?}");
        // Every stream the same events.
        match &first {
            None => first = Some(ids),
            Some(f) => assert_eq!(f, &ids, "stream {i}"),
        }
    }
    assert!(
        next_event(&bob_stream, 1).is_none(),
        "bob sees ann's events"
    );
}

#[test]
fn two_processes_on_one_redis_share_streams_and_deliver_once() {
    let redis = RedisServer::start();
    two_processes_share_streams_and_deliver_once(&[
        ALLOW,
        ("MAILBEACON_REDIS_URL", redis.url().leak() as &str),
    ]);
}

/// Without any webhook, a stream is what makes its owner's hits derived: the
/// process that records the hit learns of a stream open on another process
/// from the store, and an owner with neither gets no events at all.
#[test]
fn a_stream_on_another_process_is_enough_to_get_the_hits() {
    let redis = RedisServer::start();
    let env = [ALLOW, ("MAILBEACON_REDIS_URL", redis.url().leak() as &str)];
    let a = Server::start_env(&env);
    let b = Server::start_env(&env);
    let ann = a.user("ann@sales.test");
    let dan = a.user("dan@sales.test");
    // Dan's email is opened while nobody listens for him: no event is kept,
    // so his later stream's resume from the start of the feed finds none.
    let resp = a.follow(
        &dan,
        &email(
            "dan@sales.test",
            &["erin@client.test"],
            &[],
            &[],
            &["https://example.test/d"],
        ),
    );
    open(
        &copy(&resp["recipients"][0], &a.base).pixel.unwrap(),
        BROWSER_UA,
    );
    let on_b = stream(&b, &ann, None);
    let (_, copy) = a.follow_one(&ann, "carol@client.test", "https://example.test/p");
    open(&copy.pixel.unwrap(), BROWSER_UA);
    let (_, kind, data) = next_event(&on_b, 10).expect("A's hit on B's stream");
    assert_eq!(kind, "email.opened");
    assert!(data.to_string().contains("carol@client.test"), "{data}");
    let dans_stream = stream(&a, &dan, Some("evt_0-0-0"));
    assert!(
        next_event(&dans_stream, 2).is_none(),
        "no event was derived for an owner nobody listened for"
    );
}

#[test]
fn two_processes_on_a_redis_cluster_share_streams_and_deliver_once() {
    let cluster = RedisCluster::start();
    two_processes_share_streams_and_deliver_once(&[
        ALLOW,
        ("MAILBEACON_REDIS_CLUSTER", cluster.seeds().leak() as &str),
    ]);
}

fn two_processes_share_streams_and_deliver_once(env: &[(&str, &str)]) {
    let a = Server::start_env(env);
    let b = Server::start_env(env);
    let rx = Receiver::start();
    let ann = a.user("ann@sales.test");
    hook(&a, &ann, &rx, "ok", "ann", json!({}));
    let on_b = stream(&b, &ann, None);
    // Let both processes see the webhook (cached for about a second).
    std::thread::sleep(Duration::from_millis(1500));
    let (_, copy) = a.follow_one(&ann, "carol@client.test", "https://example.test/p");
    let pixel = copy.pixel.unwrap();
    // Hits on both processes.
    let pixel_b = pixel.replace(&a.base, &b.base);
    for i in 0..10 {
        open(if i % 2 == 0 { &pixel } else { &pixel_b }, BROWSER_UA);
    }
    let mut ids = Vec::new();
    while ids.len() < 10 {
        let (id, _, _) = next_event(&on_b, 10).expect("every open on B's stream");
        ids.push(id);
    }
    let log = rx.wait(30, "ten deliveries", |log| log.len() >= 10);
    std::thread::sleep(Duration::from_secs(2));
    let log = if rx.log().len() > log.len() {
        rx.log()
    } else {
        log
    };
    let mut delivered: Vec<String> = log
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    delivered.sort();
    let n = delivered.len();
    delivered.dedup();
    assert_eq!(n, delivered.len(), "a delivery was sent twice: {log:#?}");
    assert_eq!(n, 10);
    ids.sort();
    assert_eq!(
        ids, delivered,
        "the stream and the webhook carry the same events"
    );
    assert!(log.iter().all(|d| d["verified"] == true));
}
