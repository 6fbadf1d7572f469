//! Replies and bounces from the connected mailbox, against a real IMAP server
//! (a private Dovecot, `support::dovecot`): the test follows an email, connects
//! the mailbox, and appends replies and a delivery status notification to INBOX
//! over IMAP, as a mail server would deliver them. The report must show them;
//! a reply from someone else, to something else, or read twice must not count;
//! disconnecting the mailbox or switching Auto Capture or Email Engagement off
//! must close the watcher's connection (Dovecot's log shows every session,
//! and how many message bodies each one read). Both waiting modes: IDLE
//! (Dovecot offers it) and polling (`MAILBEACON_REPLY_IDLE=false`). Two
//! processes on one Redis: one connection for the mailbox, and the other
//! process takes over when the holder dies.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::dovecot::{Dovecot, PASSWORD, USER};
use support::redis::RedisServer;
use support::*;

/// How long a test waits for something that should happen within 60 s.
const WAIT: Duration = Duration::from_secs(60);

/// APPENDs `msg` to INBOX over IMAP (LOGIN, APPEND with a literal, LOGOUT).
fn append(imap: &Dovecot, msg: &str) {
    let s = TcpStream::connect(("127.0.0.1", imap.port)).expect("connect to Dovecot");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    let mut until = |r: &mut BufReader<TcpStream>, prefix: &str| loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "Dovecot hung up");
        if line.starts_with(prefix) {
            assert!(!line.contains(" NO ") && !line.contains(" BAD "), "{line}");
            return line.clone();
        }
    };
    until(&mut r, "* OK");
    write!(w, "a1 LOGIN \"{USER}\" \"{PASSWORD}\"\r\n").unwrap();
    until(&mut r, "a1 OK");
    write!(w, "a2 APPEND INBOX {{{}}}\r\n", msg.len()).unwrap();
    until(&mut r, "+");
    w.write_all(msg.as_bytes()).unwrap();
    w.write_all(b"\r\n").unwrap();
    until(&mut r, "a2 OK");
    write!(w, "a3 LOGOUT\r\n").unwrap();
    until(&mut r, "a3 OK");
}

/// Dovecot's log.
fn log(imap: &Dovecot) -> String {
    std::fs::read_to_string(imap.base.join("log/dovecot.log")).unwrap_or_default()
}

/// (sessions ever logged in, sessions still open, the "Disconnected" lines).
fn sessions(imap: &Dovecot) -> (usize, usize, Vec<String>) {
    let text = log(imap);
    let mut logins = BTreeSet::new();
    let mut closed = BTreeSet::new();
    let mut lines = Vec::new();
    for l in text.lines() {
        if l.contains(&format!("Login: user=<{USER}>")) {
            if let Some(i) = l.find("session=<") {
                logins.insert(l[i + 9..].trim_end_matches('>').to_string());
            }
        } else if l.contains(&format!("imap({USER})")) && l.contains("Disconnected") {
            // imap(user)<pid><session>: Info: Disconnected: ...
            let head = l.split(": ").next().unwrap_or("");
            if let Some(sess) = head.rsplit('<').next() {
                closed.insert(sess.trim_end_matches('>').to_string());
            }
            lines.push(l.to_string());
        }
    }
    let open = logins.difference(&closed).count();
    (logins.len(), open, lines)
}

/// Returns true if and only if the server logged a watcher in `mode`.
fn watching(s: &Server, mode: &str) -> bool {
    s.log_text()
        .lines()
        .any(|l| l.contains("reply watcher: watching INBOX") && l.contains(&format!("\"{mode}\"")))
}

fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>, context: impl Fn() -> String) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < WAIT,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn connect(s: &Server, tok: &str, imap: &Dovecot) {
    let (st, v) = s.api(
        "PUT",
        "/api/v1/mailbox",
        Some(tok),
        Some(json!({"host": "127.0.0.1", "port": imap.port, "tls": "none", "username": USER, "password": PASSWORD})),
    );
    assert_eq!(st, 200, "{v}");
}

/// Follows an email from the mailbox's owner to `to` (deliver "return");
/// returns its id and Message-ID.
fn follow(s: &Server, tok: &str, to: &[&str]) -> (String, String) {
    let raw = email(USER, to, &[], &[], &["https://example.test/pricing"]);
    let mid = raw
        .split("Message-ID: <")
        .nth(1)
        .and_then(|r| r.split('>').next())
        .expect("Message-ID")
        .to_string();
    let v = s.follow(tok, &raw);
    (v["id"].as_str().expect("id").to_string(), mid)
}

fn reply(from: &str, parent: &str, own: &str) -> String {
    format!(
        "From: Someone <{from}>\r\nTo: Alice <{USER}>\r\nSubject: Re: Quarterly update\r\n\
Message-ID: <{own}>\r\nIn-Reply-To: <{parent}>\r\nReferences: <{parent}>\r\n\
Date: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
Thanks, the secret-reply-body sounds good.\r\n",
        support::dovecot::rfc5322(mailbeacon::ids::now_ms() / 1000)
    )
}

/// A delivery status notification (RFC 3464) for `rcpt`'s copy of `parent`.
fn dsn(rcpt: &str, parent: &str) -> String {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.client.test>\r\nTo: <{USER}>\r\n\
Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-{parent}>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n\
\tboundary=\"rep\"\r\n\r\n--rep\r\nContent-Type: text/plain\r\n\r\n\
Your message could not be delivered.\r\n--rep\r\nContent-Type: message/delivery-status\r\n\r\n\
Reporting-MTA: dns; mx.client.test\r\n\r\nFinal-Recipient: rfc822; {rcpt}\r\n\
Original-Recipient: rfc822;{rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected\r\n\r\n\
--rep\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: Alice <{USER}>\r\nTo: {rcpt}\r\n\
Subject: Quarterly update\r\nMessage-ID: <{parent}>\r\n\r\n--rep--\r\n"
    )
}

fn report(s: &Server, tok: &str, id: &str) -> Value {
    let (st, v) = s.api("GET", &format!("/api/v1/emails/{id}"), Some(tok), None);
    assert_eq!(st, 200, "{v}");
    v
}

fn replies_of(v: &Value, i: usize) -> u64 {
    v["recipients"][i]["replies"].as_u64().expect("replies")
}

/// Every byte the server has written under its data directory.
fn store_bytes(s: &Server) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![s.data_dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("data dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.extend(std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

#[test]
fn replies_and_bounces_over_idle_and_disconnect_stops_watching() {
    let imap = Dovecot::start();
    let s = Server::start_local_outbound();
    let alice = s.user(USER);
    let (id, mid) = follow(
        &s,
        &alice,
        &["bob@client.test", "carol@client.test", "dan@client.test"],
    );
    connect(&s, &alice, &imap);
    let ctx = || format!("{}\n--- dovecot ---\n{}", s.log_text(), log(&imap));
    wait_until(
        "the watcher (IDLE)",
        || watching(&s, "idle").then_some(()),
        ctx,
    );

    // Bob replies: within the wait, one reply, its time, and an inferred open
    // (he opened nothing: his client blocked images).
    append(&imap, &reply("bob@client.test", &mid, "r1@client.test"));
    let v = wait_until(
        "Bob's reply",
        || Some(report(&s, &alice, &id)).filter(|v| replies_of(v, 0) == 1),
        ctx,
    );
    let bob = &v["recipients"][0];
    assert!(bob["first_reply_at"].as_str().is_some(), "{bob}");
    assert_eq!(
        (bob["inferred_opens"].as_u64(), bob["opens"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(v["totals"]["replies"], 1);

    // Not counted: a non-recipient's reply, Bob's reply to another message, and
    // Bob's first reply delivered again (same Message-ID). Then Carol replies,
    // read after them (UID order): once she counts, they were all read.
    append(&imap, &reply("eve@client.test", &mid, "r2@client.test"));
    append(
        &imap,
        &reply("bob@client.test", "other@example.test", "r3@client.test"),
    );
    append(&imap, &reply("bob@client.test", &mid, "r1@client.test"));
    append(&imap, &reply("carol@client.test", &mid, "r4@client.test"));
    let v = wait_until(
        "Carol's reply",
        || Some(report(&s, &alice, &id)).filter(|v| replies_of(v, 1) == 1),
        ctx,
    );
    assert_eq!(replies_of(&v, 0), 1, "{v}");
    assert_eq!(replies_of(&v, 2), 0, "{v}");
    assert_eq!(v["totals"]["replies"], 2, "{v}");
    // The KPIs over time count the two recipients who replied, today.
    let (st, k) = s.api(
        "GET",
        "/api/v1/stats?days=1&interval=day",
        Some(&alice),
        None,
    );
    assert_eq!(st, 200, "{k}");
    let today = k["series"]
        .as_array()
        .and_then(|a| a.last())
        .expect("series");
    assert_eq!(today["replied"], 2, "{k}");

    // A DSN for Dan's copy marks him bounced, with the diagnostic.
    append(&imap, &dsn("dan@client.test", &mid));
    let v = wait_until(
        "Dan's bounce",
        || {
            Some(report(&s, &alice, &id))
                .filter(|v| v["recipients"][2]["delivery"]["state"] == "bounced")
        },
        ctx,
    );
    let detail = v["recipients"][2]["delivery"]["detail"]
        .as_str()
        .unwrap_or("");
    assert!(detail.contains("550 5.1.1"), "{v}");
    for other in [0, 1] {
        assert_ne!(
            v["recipients"][other]["delivery"]["state"], "bounced",
            "{v}"
        );
    }

    // Only facts are stored: nothing of the replies' content or Message-IDs.
    let bytes = store_bytes(&s);
    for needle in [
        "secret-reply-body",
        "r1@client.test",
        "Recipient address rejected",
    ] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} found in the store's files"
        );
    }

    // Disconnecting closes the watcher's connection, and nothing more is read.
    let (st, _) = s.api("DELETE", "/api/v1/mailbox", Some(&alice), None);
    assert_eq!(st, 200);
    wait_until(
        "the watcher's session to close",
        || (sessions(&imap).1 == 0).then_some(()),
        ctx,
    );
    let (logins, _, _) = sessions(&imap);
    append(&imap, &reply("bob@client.test", &mid, "r5@client.test"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(replies_of(&report(&s, &alice, &id), 0), 1);
    let (after, open, _) = sessions(&imap);
    assert_eq!((after, open), (logins + 1, 0), "{}", log(&imap));
}

#[test]
fn polling_reads_headers_only_and_the_switches_stop_watching() {
    let imap = Dovecot::start();
    let s = Server::start_env(&[
        LOCAL_OUTBOUND,
        ("MAILBEACON_REPLY_IDLE", "false"),
        ("MAILBEACON_REPLY_POLL_SECS", "1"),
    ]);
    let alice = s.user(USER);
    let (id, mid) = follow(&s, &alice, &["bob@client.test"]);
    connect(&s, &alice, &imap);
    let ctx = || format!("{}\n--- dovecot ---\n{}", s.log_text(), log(&imap));
    wait_until(
        "the watcher (polling)",
        || watching(&s, "poll").then_some(()),
        ctx,
    );
    append(&imap, &reply("bob@client.test", &mid, "p1@client.test"));
    let v = wait_until(
        "Bob's reply",
        || Some(report(&s, &alice, &id)).filter(|v| replies_of(v, 0) == 1),
        ctx,
    );
    assert_eq!(v["recipients"][0]["inferred_opens"], 1);
    assert!(!watching(&s, "idle"));

    // The user switches Auto Capture off: the connection closes, and a reply
    // arriving meanwhile is not read (a poll every second would have).
    let me = |on: bool| {
        let (st, v) = s.api(
            "PUT",
            "/api/v1/me/settings",
            Some(&alice),
            Some(json!({"auto_capture": on})),
        );
        assert_eq!(st, 200, "{v}");
    };
    me(false);
    wait_until(
        "the watcher to stop",
        || (sessions(&imap).1 == 0).then_some(()),
        ctx,
    );
    append(&imap, &reply("bob@client.test", &mid, "p2@client.test"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(replies_of(&report(&s, &alice, &id), 0), 1);
    assert_eq!(sessions(&imap).1, 0);

    // Back on: watching resumes (and the reply that came meanwhile counts).
    me(true);
    wait_until(
        "the reply sent while off",
        || Some(report(&s, &alice, &id)).filter(|v| replies_of(v, 0) == 2),
        ctx,
    );
    assert_eq!(sessions(&imap).1, 1, "{}", log(&imap));

    // The organization switches Email Engagement off: watching stops.
    let (st, v) = s.api(
        "PUT",
        "/api/v1/settings",
        Some(ADMIN),
        Some(json!({"email_engagement": false})),
    );
    assert_eq!(st, 200, "{v}");
    wait_until(
        "the watcher to stop",
        || (sessions(&imap).1 == 0).then_some(()),
        ctx,
    );

    // No session read a single message body: headers only.
    let (_, _, closed) = sessions(&imap);
    assert!(closed.len() >= 3, "{}", log(&imap));
    for l in &closed {
        assert!(
            l.contains("body_count=0 body_bytes=0"),
            "a body was read: {l}"
        );
    }
    assert!(
        closed.iter().any(|l| !l.contains("hdr_count=0")),
        "the watcher read headers: {}",
        log(&imap)
    );
}

#[test]
fn two_processes_one_connection_and_the_other_takes_over() {
    let imap = Dovecot::start();
    let redis = RedisServer::start();
    let url = redis.url();
    let env = [LOCAL_OUTBOUND, ("MAILBEACON_REDIS_URL", url.as_str())];
    let mut a = Server::start_env(&env);
    let alice = a.user(USER);
    let (id, mid) = follow(&a, &alice, &["bob@client.test", "carol@client.test"]);
    connect(&a, &alice, &imap);
    let ctx = |a: &Server, b: Option<&Server>| {
        format!(
            "--- A ---\n{}\n--- B ---\n{}\n--- dovecot ---\n{}",
            a.log_text(),
            b.map(Server::log_text).unwrap_or_default(),
            log(&imap)
        )
    };
    wait_until(
        "A's watcher",
        || watching(&a, "idle").then_some(()),
        || ctx(&a, None),
    );
    // B reads the mailbox list as it starts: its watcher finds the lease held.
    let b = Server::start_env(&env);
    wait_until(
        "B to find the mailbox watched",
        || {
            b.log_text()
                .contains("another process watches this mailbox")
                .then_some(())
        },
        || ctx(&a, Some(&b)),
    );
    // Past B's next look and A's next renewal: still one connection.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(sessions(&imap).1, 1, "{}", ctx(&a, Some(&b)));
    assert!(!watching(&b, "idle"), "{}", ctx(&a, Some(&b)));

    // A reply is counted once (seen from B).
    append(&imap, &reply("bob@client.test", &mid, "t1@client.test"));
    let v = wait_until(
        "Bob's reply",
        || Some(report(&b, &alice, &id)).filter(|v| replies_of(v, 0) == 1),
        || ctx(&a, Some(&b)),
    );
    assert_eq!(v["totals"]["replies"], 1, "{v}");

    // The holder dies: B takes over within the lease's life and counts the
    // next reply (and Bob's, read again, still once).
    a.kill9();
    wait_until(
        "B to take over",
        || watching(&b, "idle").then_some(()),
        || ctx(&a, Some(&b)),
    );
    append(&imap, &reply("carol@client.test", &mid, "t2@client.test"));
    let v = wait_until(
        "Carol's reply",
        || Some(report(&b, &alice, &id)).filter(|v| replies_of(v, 1) == 1),
        || ctx(&a, Some(&b)),
    );
    assert_eq!(replies_of(&v, 0), 1, "{v}");
    assert_eq!(v["totals"]["replies"], 2, "{v}");
    assert_eq!(sessions(&imap).1, 1, "{}", ctx(&a, Some(&b)));
}
