//! The outbox end to end, against the real binary and a real SMTP server
//! (aiosmtpd in its modes: accepting, 451 once per recipient, refusing, slow):
//! queued → sent, retries after temporary failures, permanent failures, bare-LF
//! messages leaving with CRLF, `kill -9` mid-queue, two processes on one Redis,
//! send later (in real time), reschedule, cancel, bad times, reminders, and a
//! crash right after the record is stored (embedded and Redis).

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use support::redis::RedisServer;
use support::*;

fn report(s: &Server, tok: &str, id: &str) -> Value {
    let (st, v) = s.api("GET", &format!("/api/v1/emails/{id}"), Some(tok), None);
    assert_eq!(st, 200, "{v}");
    v
}

/// Polls the report until `done` holds (30 s at most).
fn wait_report(
    s: &Server,
    tok: &str,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let t0 = Instant::now();
    loop {
        let v = report(s, tok, id);
        if done(&v) {
            return v;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{what}: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn states(v: &Value) -> Vec<String> {
    v["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["delivery"]["state"]
                .as_str()
                .unwrap_or("none")
                .to_string()
        })
        .collect()
}

fn post(s: &Server, tok: &str, body: Value) -> (u16, Value) {
    s.api("POST", "/api/v1/emails", Some(tok), Some(body))
}

fn smtp_follow(s: &Server, tok: &str, raw: &str, extra: Value) -> Value {
    let mut body = json!({"mime": STANDARD.encode(raw), "deliver": "smtp"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (st, v) = post(s, tok, body);
    assert_eq!(st, 201, "{v}");
    v
}

fn rfc3339_in(secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = std::time::UNIX_EPOCH + Duration::from_secs((now + secs) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn recipients(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("r{i}@client.test")).collect()
}

fn message_id(data: &[u8]) -> String {
    mail_parser::MessageParser::default()
        .parse(data)
        .and_then(|m| m.message_id().map(str::to_string))
        .expect("a Message-ID")
}

/// Waits until the sink holds at least `n` messages.
fn wait_received(sink: &SmtpSink, n: usize, secs: u64) -> Vec<(String, Vec<String>, Vec<u8>)> {
    let t0 = Instant::now();
    loop {
        let got = sink.received();
        if got.len() >= n {
            return got;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "only {} of {n} messages",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn copies_are_queued_then_sent_with_crlf_line_ends() {
    let sink = SmtpSink::start();
    let s = Server::start_env(&[("MAILBEACON_SMTP_URL", &sink.url())]);
    let tok = s.user("ann@sales.test");
    // Bare LF line ends, as Python's email library writes a message.
    let raw = email(
        "ann@sales.test",
        &["bob@client.test", "carol@client.test"],
        &[],
        &[],
        &["https://a.example/"],
    )
    .replace("\r\n", "\n");
    let v = smtp_follow(&s, &tok, &raw, json!({}));
    assert_eq!(v["state"], "queued", "{v}");
    assert_eq!(states(&v), ["queued", "queued"]);
    let id = v["id"].as_str().unwrap();
    let rep = wait_report(&s, &tok, id, "sent", |r| r["state"] == "sent");
    assert_eq!(states(&rep), ["sent", "sent"]);
    assert!(rep["recipients"][0]["delivery"]["at"].is_string());
    assert_eq!(rep["recipients"][0]["replies"], 0);
    assert_eq!(rep["recipients"][0]["inferred_opens"], 0);
    let got = sink.received();
    assert_eq!(got.len(), 2, "one copy each, accepted by aiosmtpd");
    let mut ids = HashSet::new();
    for (_, rcpts, data) in &got {
        assert_eq!(rcpts.len(), 1);
        let bare_lf = data
            .iter()
            .enumerate()
            .filter(|&(i, &b)| b == b'\n' && (i == 0 || data[i - 1] != b'\r'))
            .count();
        assert_eq!(bare_lf, 0, "every line ends in CRLF");
        let text = String::from_utf8_lossy(data);
        assert!(text.contains(&format!("{}/o/", s.base)), "a pixel");
        ids.insert(message_id(data));
    }
    assert_eq!(ids.len(), 1, "one message, one Message-ID");
    // A human click with no recorded open: an inferred open.
    let (_, _, data) = &got[0];
    let html = mail_parser::MessageParser::default()
        .parse(data)
        .unwrap()
        .body_html(0)
        .unwrap()
        .to_string();
    let link = html
        .split('"')
        .find(|p| p.starts_with(&format!("{}/c/", s.base)))
        .expect("a tracked link")
        .to_string();
    assert_eq!(raw_get(&link), 302);
    let rep = report(&s, &tok, id);
    let clicked: Vec<u64> = rep["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["inferred_opens"].as_u64().unwrap())
        .collect();
    assert_eq!(clicked.iter().sum::<u64>(), 1, "{rep}");
}

fn raw_get(url: &str) -> u16 {
    raw("GET", url, &[("User-Agent", BROWSER_UA)]).0
}

#[test]
fn a_temporary_refusal_is_retried_and_a_permanent_one_fails_at_once() {
    let sink = SmtpSink::start_mode("tempfail-once");
    let s = Server::start_env(&[
        ("MAILBEACON_SMTP_URL", &sink.url()),
        ("MAILBEACON_OUTBOX_RETRY_SECS", "1"),
    ]);
    let tok = s.user("ann@sales.test");
    let raw = email(
        "ann@sales.test",
        &["bob@client.test", "reject-me@client.test"],
        &[],
        &[],
        &[],
    );
    let v = smtp_follow(&s, &tok, &raw, json!({}));
    let id = v["id"].as_str().unwrap();
    let rep = wait_report(&s, &tok, id, "final", |r| {
        r["state"] == "sent" || r["state"] == "failed"
    });
    assert_eq!(states(&rep), ["sent", "failed"], "{rep}");
    let detail = rep["recipients"][1]["delivery"]["detail"].as_str().unwrap();
    assert!(detail.contains("550"), "{detail}");
    // The two copies go out concurrently: compare as a set.
    let mut refused = sink.refused();
    refused.sort();
    assert_eq!(
        refused,
        [
            (451, "bob@client.test".to_string()),
            (550, "reject-me@client.test".to_string())
        ],
        "451 once, then accepted; 550 is final at once"
    );
    assert_eq!(sink.received().len(), 1);
}

#[test]
fn a_refusing_relay_fails_every_copy_with_its_reply() {
    let sink = SmtpSink::start_mode("refuse");
    let s = Server::start_env(&[("MAILBEACON_SMTP_URL", &sink.url())]);
    let tok = s.user("ann@sales.test");
    let raw = email("ann@sales.test", &["bob@client.test"], &[], &[], &[]);
    let v = smtp_follow(&s, &tok, &raw, json!({}));
    let id = v["id"].as_str().unwrap();
    let rep = wait_report(&s, &tok, id, "failed", |r| r["state"] == "failed");
    let d = &rep["recipients"][0]["delivery"];
    assert!(
        d["detail"]
            .as_str()
            .unwrap()
            .contains("mailbox unavailable"),
        "{d}"
    );
    assert_eq!(sink.refused().len(), 1, "no retry after 5xx");
    // Sending is over: no more cancelling or moving.
    let (st, v) = s.api(
        "DELETE",
        &format!("/api/v1/emails/{id}/schedule"),
        Some(&tok),
        None,
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("already_sending"))
    );
}

#[test]
fn kill_9_mid_queue_drops_nothing() {
    let sink = SmtpSink::start_mode("slow:0.5");
    let mut s = Server::start_env(&[
        ("MAILBEACON_SMTP_URL", &sink.url()),
        ("MAILBEACON_OUTBOX_CONCURRENCY", "1"),
        ("MAILBEACON_OUTBOX_LEASE_SECS", "3"),
    ]);
    let tok = s.user("ann@sales.test");
    let to = recipients(6);
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    let raw = email("ann@sales.test", &to, &[], &[], &["https://a.example/"]);
    let v = smtp_follow(&s, &tok, &raw, json!({}));
    let id = v["id"].as_str().unwrap().to_string();
    wait_received(&sink, 2, 30);
    s.kill9();
    s.restart();
    let rep = wait_report(&s, &tok, &id, "all sent after the restart", |r| {
        r["state"] == "sent"
    });
    assert!(states(&rep).iter().all(|x| x == "sent"), "{rep}");
    let got = sink.received();
    let mut per: HashMap<String, Vec<String>> = HashMap::new();
    for (_, rcpts, data) in &got {
        per.entry(rcpts[0].clone())
            .or_default()
            .push(message_id(data));
    }
    for r in &to {
        let ids = per
            .get(*r)
            .unwrap_or_else(|| panic!("{r} never received a copy"));
        // At least once; a copy sent twice (the one in flight at the kill)
        // carries the same Message-ID.
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    }
    assert!(
        got.len() <= to.len() + 1,
        "duplicates only for the copy in flight"
    );
}

#[test]
fn two_processes_on_one_redis_share_the_queue() {
    let redis = RedisServer::start();
    let sink = SmtpSink::start_mode("slow:0.05");
    let env = [
        ("MAILBEACON_REDIS_URL", redis.url()),
        ("MAILBEACON_SMTP_URL", sink.url()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Server::start_env(&env);
    let b = Server::start_env(&env);
    let tok = a.user("ann@sales.test");
    let to = recipients(20);
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    let raw = email("ann@sales.test", &to, &[], &[], &["https://a.example/"]);
    let v = smtp_follow(&a, &tok, &raw, json!({}));
    let id = v["id"].as_str().unwrap();
    let rep = wait_report(&b, &tok, id, "sent (seen from the other process)", |r| {
        r["state"] == "sent"
    });
    assert!(states(&rep).iter().all(|x| x == "sent"), "{rep}");
    let got = sink.received();
    let mut per: HashMap<String, usize> = HashMap::new();
    for (_, rcpts, _) in &got {
        *per.entry(rcpts[0].clone()).or_default() += 1;
    }
    assert_eq!(per.len(), 20, "every recipient");
    assert!(per.values().all(|&n| n == 1), "each copy once: {per:?}");
    let logs = a.log_text() + &b.log_text();
    assert!(!logs.contains("lost the lease"), "{logs}");
}

#[test]
fn send_at_waits_until_then_sends_on_time() {
    let sink = SmtpSink::start();
    let s = Server::start_env(&[("MAILBEACON_SMTP_URL", &sink.url())]);
    let tok = s.user("ann@sales.test");
    let raw = email(
        "ann@sales.test",
        &["bob@client.test"],
        &[],
        &[],
        &["https://a.example/"],
    );
    let send_at = rfc3339_in(4);
    let at = Instant::now() + Duration::from_secs(3);
    let v = smtp_follow(&s, &tok, &raw, json!({"send_at": send_at}));
    assert_eq!(v["state"], "scheduled", "{v}");
    assert_eq!(states(&v), ["scheduled"]);
    let id = v["id"].as_str().unwrap();
    let rep = report(&s, &tok, id);
    assert_eq!(rep["state"], "scheduled");
    assert!(rep["send_at"].is_string());
    // Nothing leaves before send_at (rounded down to the second: 3 s at least).
    while Instant::now() < at {
        assert!(sink.received().is_empty(), "sent before send_at");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_received(&sink, 1, 15);
    wait_report(&s, &tok, id, "sent", |r| r["state"] == "sent");
}

#[test]
fn reschedule_and_cancel() {
    let sink = SmtpSink::start();
    let s = Server::start_env(&[("MAILBEACON_SMTP_URL", &sink.url())]);
    let tok = s.user("ann@sales.test");
    let other = s.user("eve@sales.test");
    let raw = email(
        "ann@sales.test",
        &["bob@client.test", "carol@client.test"],
        &[],
        &[],
        &[],
    );

    // Moved from an hour ahead to now: sent.
    let v = smtp_follow(&s, &tok, &raw, json!({"send_at": rfc3339_in(3600)}));
    let id = v["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/emails/{id}/schedule");
    let (st, _) = s.api(
        "PUT",
        &path,
        Some(&other),
        Some(json!({"send_at": rfc3339_in(0)})),
    );
    assert_eq!(st, 404, "someone else's email");
    let (st, v) = s.api(
        "PUT",
        &path,
        Some(&tok),
        Some(json!({"send_at": rfc3339_in(0)})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["state"], "scheduled");
    wait_report(&s, &tok, &id, "sent after the move", |r| {
        r["state"] == "sent"
    });
    assert_eq!(sink.received().len(), 2);
    // Sent: too late to cancel or move.
    let (st, v) = s.api("DELETE", &path, Some(&tok), None);
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("already_sending"))
    );
    let (st, v) = s.api(
        "PUT",
        &path,
        Some(ADMIN),
        Some(json!({"send_at": rfc3339_in(60)})),
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("already_sending"))
    );

    // Cancelled before send_at: nothing leaves.
    let v = smtp_follow(&s, &tok, &raw, json!({"send_at": rfc3339_in(2)}));
    let id = v["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/emails/{id}/schedule");
    let (st, v) = s.api("DELETE", &path, Some(&tok), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["state"], "cancelled");
    std::thread::sleep(Duration::from_secs(4));
    let rep = report(&s, &tok, &id);
    assert_eq!(states(&rep), ["cancelled", "cancelled"]);
    assert_eq!(rep["state"], "cancelled");
    assert_eq!(sink.received().len(), 2, "nothing more sent");

    // A returned email has no schedule.
    let (st, v) = s.api(
        "POST",
        "/api/v1/emails",
        Some(&tok),
        Some(json!({"mime": STANDARD.encode(&raw)})),
    );
    assert_eq!(st, 201);
    let path = format!("/api/v1/emails/{}/schedule", v["id"].as_str().unwrap());
    assert_eq!(s.api("DELETE", &path, Some(&tok), None).0, 409);
    assert_eq!(s.api("GET", &path, Some(&tok), None).0, 405);
}

#[test]
fn bad_send_at_and_reminders_are_refused() {
    let sink = SmtpSink::start();
    let s = Server::start_env(&[("MAILBEACON_SMTP_URL", &sink.url())]);
    let tok = s.user("ann@sales.test");
    let raw = email("ann@sales.test", &["bob@client.test"], &[], &[], &[]);
    let mime = STANDARD.encode(&raw);
    let cases = [
        (
            json!({"mime": mime, "deliver": "smtp", "send_at": rfc3339_in(-3600)}),
            "invalid_send_at",
        ),
        (
            json!({"mime": mime, "deliver": "smtp", "send_at": rfc3339_in(400 * 86400)}),
            "invalid_send_at",
        ),
        (
            json!({"mime": mime, "deliver": "smtp", "send_at": "tomorrow"}),
            "invalid_send_at",
        ),
        (
            json!({"mime": mime, "deliver": "return", "send_at": rfc3339_in(60)}),
            "invalid_send_at",
        ),
        (
            json!({"mime": mime, "send_at": rfc3339_in(60)}),
            "invalid_send_at",
        ),
        (
            json!({"mime": mime, "reminder": {"when": "never", "at": rfc3339_in(60)}}),
            "invalid_reminder",
        ),
        (
            json!({"mime": mime, "reminder": {"when": "always", "at": rfc3339_in(-3600)}}),
            "invalid_reminder",
        ),
        (
            json!({"mime": mime, "reminder": {"when": "always"}}),
            "invalid_json",
        ),
    ];
    for (body, code) in cases {
        let (st, v) = post(&s, &tok, body.clone());
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
    assert!(sink.received().is_empty());
}

#[test]
fn reminders_become_due_or_skipped() {
    let s = Server::start();
    let tok = s.user("ann@sales.test");
    let msg = email(
        "ann@sales.test",
        &["bob@client.test"],
        &[],
        &[],
        &["https://a.example/"],
    );
    let follow = |reminder: Value| {
        let (st, v) = post(
            &s,
            &tok,
            json!({"mime": STANDARD.encode(&msg), "reminder": reminder}),
        );
        assert_eq!(st, 201, "{v}");
        assert_eq!(v["reminder"]["state"], "pending", "{v}");
        v
    };
    let outcome = |id: &str| {
        wait_report(&s, &tok, id, "reminder checked", |r| {
            r["reminder"]["state"] != "pending"
        })["reminder"]["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // "always" and "no_reply" (no replies are recorded yet) are due.
    for when in ["always", "no_reply"] {
        let v = follow(json!({"when": when, "at": rfc3339_in(0)}));
        assert_eq!(outcome(v["id"].as_str().unwrap()), "due", "{when}");
    }
    // "not_opened": due without an open, skipped after a human open.
    let v = follow(json!({"when": "not_opened", "at": rfc3339_in(0)}));
    assert_eq!(outcome(v["id"].as_str().unwrap()), "due");
    let v = follow(json!({"when": "not_opened", "at": rfc3339_in(3600)}));
    let id = v["id"].as_str().unwrap().to_string();
    let c = copy(&v["recipients"][0], &s.base);
    assert_eq!(
        raw(
            "GET",
            c.pixel.as_ref().unwrap(),
            &[("User-Agent", BROWSER_UA)]
        )
        .0,
        200
    );
    // Moved to now with PUT: checked at once.
    let path = format!("/api/v1/emails/{id}/reminder");
    let (st, v) = s.api(
        "PUT",
        &path,
        Some(&tok),
        Some(json!({"when": "not_opened", "at": rfc3339_in(0)})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(outcome(&id), "skipped");
    // DELETE: a pending reminder is cancelled and never fires.
    let v = follow(json!({"when": "always", "at": rfc3339_in(2)}));
    let id = v["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/emails/{id}/reminder");
    let (st, v) = s.api("DELETE", &path, Some(&tok), None);
    assert_eq!(
        (st, v["reminder"]["state"].as_str()),
        (200, Some("cancelled")),
        "{v}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(report(&s, &tok, &id)["reminder"]["state"], "cancelled");
    let (st, v) = s.api(
        "PUT",
        &path,
        Some(&tok),
        Some(json!({"when": "soon", "at": rfc3339_in(5)})),
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_reminder"))
    );
    // An email reminder needs a relay, and this server has none.
    let (st, v) = s.api(
        "PUT",
        &path,
        Some(&tok),
        Some(json!({"when": "always", "at": rfc3339_in(5), "notify": "email"})),
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_reminder")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("SMTP"),
        "{v}"
    );
}

/// A crash right after the record is stored (the test hook aborts the
/// process there, before the request is answered) loses no copy and no
/// reminder: the jobs were written before the record, so after the restart
/// every copy reaches the relay and the reminder fires.
fn a_crash_after_the_record_loses_nothing(redis: Option<&RedisServer>) {
    let sink = SmtpSink::start();
    let smtp = sink.url();
    let mut env = vec![
        ("MAILBEACON_SMTP_URL", smtp.as_str()),
        ("MAILBEACON_TEST_ABORT_AFTER_RECORD", "1"),
    ];
    let url = redis.map(RedisServer::url);
    if let Some(u) = &url {
        env.push(("MAILBEACON_REDIS_URL", u.as_str()));
    }
    let mut s = Server::start_env(&env);
    let tok = s.user("ann@sales.test");
    let to = recipients(2);
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    let raw = email("ann@sales.test", &to, &[], &[], &["https://a.example/"]);
    let body = json!({
        "mime": STANDARD.encode(&raw),
        "deliver": "smtp",
        "reminder": {"when": "always", "at": rfc3339_in(0)},
    });
    let res = agent()
        .post(&s.url("/api/v1/emails"))
        .set("Authorization", &format!("Bearer {tok}"))
        .send_json(body);
    assert!(
        matches!(res, Err(ureq::Error::Transport(_))),
        "the hook should have ended the process before the answer"
    );
    s.kill9();
    assert!(s.log_text().contains("aborting after the record"));
    assert!(sink.received().is_empty(), "nothing sent before the crash");
    s.env
        .retain(|(k, _)| k != "MAILBEACON_TEST_ABORT_AFTER_RECORD");
    s.restart();
    let got = wait_received(&sink, 2, 30);
    let mut rcpts: Vec<String> = got.iter().map(|(_, r, _)| r[0].clone()).collect();
    rcpts.sort();
    assert_eq!(rcpts, to);
    let (st, list) = s.api("GET", "/api/v1/emails", Some(&tok), None);
    assert_eq!(st, 200, "{list}");
    let id = list["emails"][0]["id"].as_str().expect("the stored email");
    let rep = wait_report(&s, &tok, id, "sent and reminded after the restart", |r| {
        r["state"] == "sent" && r["reminder"]["state"] == "due"
    });
    assert!(states(&rep).iter().all(|x| x == "sent"), "{rep}");
}

#[test]
fn a_crash_after_the_record_loses_nothing_embedded() {
    a_crash_after_the_record_loses_nothing(None);
}

#[test]
fn a_crash_after_the_record_loses_nothing_redis() {
    let redis = RedisServer::start();
    a_crash_after_the_record_loses_nothing(Some(&redis));
}

/// `"notify": "email"`: when the reminder is due, a plain-text email goes to
/// the sender through the outbox (From the configured address), with the
/// condition and a link to the report. Without it, nothing is sent; a bad
/// value is refused.
#[test]
fn a_due_reminder_can_email_the_sender() {
    let sink = SmtpSink::start();
    let s = Server::start_env(&[
        ("MAILBEACON_SMTP_URL", &sink.url()),
        ("MAILBEACON_NOTIFY_FROM", "reminders@mailbeacon.test"),
        ("MAILBEACON_PUBLIC_URL", "https://beacon.example"),
    ]);
    let tok = s.user("ann@sales.test");
    let msg = email(
        "ann@sales.test",
        &["bob@client.test"],
        &[],
        &[],
        &["https://a.example/"],
    );
    let follow = |reminder: Value| {
        post(
            &s,
            &tok,
            json!({"mime": STANDARD.encode(&msg), "reminder": reminder}),
        )
    };
    let (st, v) = follow(json!({"when": "always", "at": rfc3339_in(0), "notify": "sms"}));
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_reminder")),
        "{v}"
    );
    // Without notify: due, no email.
    let (st, v) = follow(json!({"when": "always", "at": rfc3339_in(0)}));
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["reminder"]["notify"], "none", "{v}");
    let quiet = v["id"].as_str().unwrap().to_string();
    wait_report(&s, &tok, &quiet, "reminder due", |r| {
        r["reminder"]["state"] == "due"
    });
    // With notify: due, and the sender gets the email.
    let (st, v) = follow(json!({"when": "no_reply", "at": rfc3339_in(0), "notify": "email"}));
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["reminder"]["notify"], "email", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let rep = wait_report(&s, &tok, &id, "reminder due", |r| {
        r["reminder"]["state"] == "due"
    });
    assert_eq!(rep["reminder"]["notify"], "email", "{rep}");
    let got = wait_received(&sink, 1, 30);
    std::thread::sleep(Duration::from_secs(2));
    let got_later = sink.received();
    assert_eq!(
        got_later.len(),
        1,
        "one email, for the notifying reminder only"
    );
    let (mail_from, rcpts, data) = &got[0];
    assert_eq!(mail_from, "reminders@mailbeacon.test");
    assert_eq!(rcpts, &vec!["ann@sales.test".to_string()]);
    let m = mail_parser::MessageParser::default()
        .parse(data)
        .expect("an email");
    assert_eq!(m.subject(), Some("Reminder: Quarterly update"));
    let from = m.from().and_then(|f| f.first()).and_then(|a| a.address());
    assert_eq!(from, Some("reminders@mailbeacon.test"));
    let text = m.body_text(0).expect("a text body").to_string();
    assert!(text.contains("Nobody has replied"), "{text}");
    assert!(
        text.contains(&format!("https://beacon.example/api/v1/emails/{id}")),
        "{text}"
    );
    assert!(m.date().is_some() && m.message_id().is_some());
    // PUT keeps the option; "none" turns it off.
    let path = format!("/api/v1/emails/{id}/reminder");
    let (st, v) = s.api(
        "PUT",
        &path,
        Some(&tok),
        Some(json!({"when": "always", "at": rfc3339_in(3600), "notify": "email"})),
    );
    assert_eq!(
        (st, v["reminder"]["notify"].as_str()),
        (200, Some("email")),
        "{v}"
    );
}
