//! `mailbeacon migrate` copies every kind of durable state, both ways (issue
//! #11): against the real binary, a real Redis (one node, and a Cluster), a
//! private Dovecot (the connected mailbox and a reply in it), a local SMTP sink
//! (a scheduled email) and local Entra tokens (a linked identity).
//!
//! The embedded store gets one of every kind through the API; it is migrated to
//! Redis, a server on Redis must behave the same (the opted-out contact stays
//! untracked, the erased recipient stays unrecorded, the activity, audit log,
//! user settings, mailbox, Entra link, webhook and its deliveries, dismissed
//! card, reply and scheduled send are all still there); then Redis is migrated
//! to a fresh embedded store and checked again, and the scheduled email goes
//! out from there.

mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use support::dovecot::{Dovecot, PASSWORD, USER};
use support::entra::{fixture, sign, AUD, CLIENT_ID, TID};
use support::redis::{RedisCluster, RedisServer};
use support::*;

const OID: &str = "aaaaaaaa-0000-0000-0000-000000000042";

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// APPENDs `msg` to the test user's INBOX over IMAP.
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
            return;
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

fn rfc3339_in(secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = now + secs;
    let (days, rem) = (t.div_euclid(86400), t.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// What was created on the first store, to look for after each migration.
struct World {
    tok: String,
    email: String,
    /// Bob's pixel (counted) and Dave's (erased: never counted again).
    bob_pixel: String,
    dave_pixel: String,
    base: String,
    activity: String,
    activity_mime: String,
    audit: usize,
    webhook: String,
    card: String,
    scheduled: String,
    /// Bob's download link of a file sent with `"attachments": "link"`.
    attachment: String,
}

/// The environment every server of the test gets (Redis added by the caller).
fn env(imap: &Dovecot, smtp: &SmtpSink) -> Vec<(String, String)> {
    let _ = imap;
    vec![
        (
            "MAILBEACON_ENTRA_JWKS".into(),
            fixture("jwks.json").to_str().unwrap().into(),
        ),
        ("MAILBEACON_ENTRA_AUDIENCE".into(), AUD.into()),
        ("MAILBEACON_ENTRA_TENANTS".into(), TID.into()),
        ("MAILBEACON_ENTRA_CLIENT_ID".into(), CLIENT_ID.into()),
        (LOCAL_OUTBOUND.0.into(), LOCAL_OUTBOUND.1.into()),
        ("MAILBEACON_SMTP_URL".into(), smtp.url()),
        ("MAILBEACON_REPLY_IDLE".into(), "false".into()),
        ("MAILBEACON_REPLY_POLL_SECS".into(), "1".into()),
    ]
}

fn start(dir: &std::path::Path, env: &[(String, String)]) -> Server {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start_in(dir, &pairs)
}

fn report(s: &Server, tok: &str, id: &str) -> Value {
    let (st, v) = s.api("GET", &format!("/api/v1/emails/{id}"), Some(tok), None);
    assert_eq!(st, 200, "{v}");
    v
}

fn cards(s: &Server, tok: &str) -> Vec<Value> {
    let (st, v) = s.api("GET", "/api/v1/insights", Some(tok), None);
    assert_eq!(st, 200, "{v}");
    v["cards"].as_array().expect("cards").clone()
}

fn audit_len(s: &Server) -> usize {
    let (st, v) = s.api("GET", "/api/v1/audit?limit=100", Some(ADMIN), None);
    assert_eq!(st, 200, "{v}");
    v["entries"].as_array().expect("entries").len()
}

fn entra_me(s: &Server, username: &str) -> (u16, Value) {
    let token = sign(
        &support::entra::claims(username, OID),
        "test-key.pem",
        "test-kid-1",
    );
    s.api("GET", "/api/v1/me/settings", Some(&token), None)
}

/// One of every kind of durable state, through the API.
fn populate(s: &Server, imap: &Dovecot) -> World {
    let tok = s.user(USER);
    // Contact preference: Carol opted out.
    let (st, v) = s.api(
        "PUT",
        "/api/v1/contacts/carol%40client.test",
        Some(ADMIN),
        Some(json!({"follow_email": "do_not_allow"})),
    );
    assert_eq!(st, 200, "{v}");
    // A webhook on opens, to a port nobody listens on: its deliveries fail and
    // are logged (and retried through the queue).
    let (st, v) = s.api(
        "POST",
        "/api/v1/webhooks",
        Some(&tok),
        Some(json!({"url": "http://127.0.0.1:9/hook", "events": ["email.opened"]})),
    );
    assert_eq!(st, 201, "{v}");
    let webhook = v["id"].as_str().unwrap().to_string();
    // A followed email to Bob and Dave, both opened; Dave is then erased.
    let raw = email(
        USER,
        &["bob@client.test", "dave@client.test"],
        &[],
        &[],
        &["https://a.example/x"],
    );
    let mid = raw
        .split("Message-ID: <")
        .nth(1)
        .and_then(|r| r.split('>').next())
        .unwrap()
        .to_string();
    let resp = s.follow(&tok, &raw);
    let id = resp["id"].as_str().unwrap().to_string();
    let bob_pixel = copy(&resp["recipients"][0], &s.base).pixel.unwrap();
    let dave_pixel = copy(&resp["recipients"][1], &s.base).pixel.unwrap();
    for p in [&bob_pixel, &dave_pixel] {
        assert_eq!(raw_get(p), 200);
    }
    wait_until("two opens", || report(s, &tok, &id)["totals"]["opens"] == 2);
    let (st, v) = s.api(
        "DELETE",
        "/api/v1/subjects/dave%40client.test",
        Some(ADMIN),
        None,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(report(s, &tok, &id)["totals"]["opens"], 1);
    let (st, v) = s.api(
        "GET",
        &format!("/api/v1/webhooks/{webhook}/deliveries"),
        Some(&tok),
        None,
    );
    assert_eq!(st, 200, "{v}");
    wait_until("a logged webhook delivery", || {
        let (_, v) = s.api(
            "GET",
            &format!("/api/v1/webhooks/{webhook}/deliveries"),
            Some(&tok),
            None,
        );
        v["deliveries"].as_array().is_some_and(|d| !d.is_empty())
    });
    // An activity, a mailbox, an Entra link.
    let activity_mime = STANDARD.encode(format!(
        "From: {USER}\r\nTo: erin@client.test\r\nSubject: Offer\r\nMessage-ID: <act-1@example.test>\r\n\r\nHi\r\n"
    ));
    let (st, v) = s.api(
        "POST",
        "/api/v1/activities",
        Some(&tok),
        Some(json!({"mime": activity_mime})),
    );
    assert_eq!(st, 201, "{v}");
    let activity = v["id"].as_str().unwrap().to_string();
    let (st, v) = s.api(
        "PUT",
        "/api/v1/mailbox",
        Some(&tok),
        Some(json!({"host": "127.0.0.1", "port": imap.port, "tls": "none", "username": USER, "password": PASSWORD})),
    );
    assert_eq!(st, 200, "{v}");
    let (st, v) = entra_me(s, &USER.to_uppercase());
    assert_eq!((st, v["email"].as_str()), (200, Some(USER)), "{v}");
    // Bob replies (the watcher records the fact).
    append(
        imap,
        &format!(
            "From: Bob <bob@client.test>\r\nTo: <{USER}>\r\nSubject: Re: Quarterly update\r\n\
Message-ID: <re-1@client.test>\r\nIn-Reply-To: <{mid}>\r\nReferences: <{mid}>\r\n\
Date: {}\r\n\r\nThanks.\r\n",
            support::dovecot::rfc5322(mailbeacon::ids::now_ms() / 1000)
        ),
    );
    wait_until("the reply", || {
        report(s, &tok, &id)["recipients"][0]["replies"] == 1
    });
    // User settings (after the reply: Auto Capture off stops the watcher).
    let (st, v) = s.api(
        "PUT",
        "/api/v1/me/settings",
        Some(&tok),
        Some(json!({"auto_capture": false})),
    );
    assert_eq!(st, 200, "{v}");
    // A dismissed card.
    let all = cards(s, &tok);
    let card = all
        .iter()
        .find(|c| c["email_id"] == id.as_str())
        .unwrap_or_else(|| panic!("a card about the email: {all:?}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, v) = s.api(
        "POST",
        &format!("/api/v1/insights/{card}/dismiss"),
        Some(&tok),
        None,
    );
    assert_eq!(st, 200, "{v}");
    // An email scheduled an hour ahead: its copy and source are queued jobs.
    let raw = email(USER, &["frank@client.test"], &[], &[], &[]);
    let (st, v) = s.api(
        "POST",
        "/api/v1/emails",
        Some(&tok),
        Some(json!({"mime": STANDARD.encode(raw), "deliver": "smtp", "send_at": rfc3339_in(3600)})),
    );
    assert_eq!(st, 201, "{v}");
    let scheduled = v["id"].as_str().unwrap().to_string();
    // A file sent as a tracked link: the stored file must come along.
    let (st, v) = s.api(
        "POST",
        "/api/v1/emails",
        Some(&tok),
        Some(json!({"mime": STANDARD.encode(attached(USER)), "deliver": "return", "attachments": "link"})),
    );
    assert_eq!(st, 201, "{v}");
    let mime = STANDARD
        .decode(v["recipients"][0]["mime"].as_str().expect("a copy"))
        .expect("base64");
    // Decoded: the body may be quoted-printable, with soft line breaks.
    let copy = mail_parser::MessageParser::default()
        .parse(&mime)
        .and_then(|m| m.body_html(0).map(|h| h.into_owned()))
        .expect("an HTML body in the copy");
    let at = copy
        .find(&format!("{}/a/", s.base))
        .unwrap_or_else(|| panic!("no attachment link in the copy:\n{copy}"));
    let attachment = copy[at..]
        .split(|c: char| c == '"' || c.is_whitespace())
        .next()
        .unwrap()
        .to_string();
    let (st, _, _) = support::raw("GET", &attachment, &[("User-Agent", BROWSER_UA)]);
    assert_eq!(st, 200, "the attachment link before any move: {attachment}");
    let audit = audit_len(s);
    assert!(audit >= 2, "contact update and erase are audited");
    World {
        tok,
        email: id,
        bob_pixel,
        dave_pixel,
        base: s.base.clone(),
        activity,
        activity_mime,
        audit,
        webhook,
        card,
        scheduled,
        attachment,
    }
}

/// A message from `from` with one attachment (served back by its link after
/// each move).
fn attached(from: &str) -> String {
    format!(
        "From: {from}\r\nTo: bob@client.test\r\n\
Subject: Notes\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n\
--b0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Notes attached.</p>\r\n\
--b0\r\nContent-Type: text/plain; name=\"notes.txt\"\r\n\
Content-Disposition: attachment; filename=\"notes.txt\"\r\n\r\n\
MIGRATED-ATTACHMENT-BYTES\r\n--b0--\r\n"
    )
}

fn raw_get(url: &str) -> u16 {
    raw("GET", url, &[("User-Agent", BROWSER_UA)]).0
}

/// The same behaviour on the store a migration filled.
fn check(s: &Server, w: &World, stage: &str) {
    let tok = w.tok.as_str();
    // The audit log first (the checks below add entries).
    assert_eq!(audit_len(s), w.audit, "{stage}: audit log");
    // The opted-out contact is still not followed.
    let resp = s.follow(
        tok,
        &email(
            USER,
            &["carol@client.test"],
            &[],
            &[],
            &["https://a.example/y"],
        ),
    );
    assert_eq!(
        (
            &resp["recipients"][0]["followed"],
            resp["recipients"][0]["reason"].as_str()
        ),
        (&json!(false), Some("contact_opted_out")),
        "{stage}: {resp}"
    );
    // The erased recipient is still not recorded: Dave's open is dropped, Bob's
    // (after it) counts.
    let opens = report(s, tok, &w.email)["totals"]["opens"]
        .as_u64()
        .unwrap();
    assert_eq!(raw_get(&w.dave_pixel.replace(&w.base, &s.base)), 200);
    assert_eq!(raw_get(&w.bob_pixel.replace(&w.base, &s.base)), 200);
    // The attachment link still serves its file.
    let (st, _, body) = raw(
        "GET",
        &w.attachment.replace(&w.base, &s.base),
        &[("User-Agent", BROWSER_UA)],
    );
    assert_eq!(st, 200, "{stage}: the attachment link {}", w.attachment);
    assert!(
        String::from_utf8_lossy(&body).contains("MIGRATED-ATTACHMENT-BYTES"),
        "{stage}: the attachment's bytes"
    );
    wait_until("Bob's open", || {
        report(s, tok, &w.email)["totals"]["opens"].as_u64() >= Some(opens + 1)
    });
    let rep = report(s, tok, &w.email);
    assert_eq!(
        rep["totals"]["opens"].as_u64(),
        Some(opens + 1),
        "{stage}: Dave's open was recorded: {rep}"
    );
    assert_eq!(rep["recipients"][0]["replies"], 1, "{stage}: reply: {rep}");
    // The activity is listed, and tracking it again finds it (Message-ID index).
    let (_, v) = s.api("GET", "/api/v1/activities", Some(tok), None);
    assert!(
        v.to_string().contains(&w.activity),
        "{stage}: activity: {v}"
    );
    let (st, v) = s.api(
        "POST",
        "/api/v1/activities",
        Some(tok),
        Some(json!({"mime": w.activity_mime})),
    );
    assert_eq!(
        (st, v["id"].as_str()),
        (200, Some(w.activity.as_str())),
        "{stage}: {v}"
    );
    // User settings, mailbox, Entra link (a new username, the same tid+oid).
    let (_, v) = s.api("GET", "/api/v1/me/settings", Some(tok), None);
    assert_eq!(v["auto_capture"], false, "{stage}: {v}");
    let (st, v) = s.api("GET", "/api/v1/mailbox", Some(tok), None);
    assert_eq!((st, &v["connected"]), (200, &json!(true)), "{stage}: {v}");
    let (st, v) = entra_me(s, "renamed@example.test");
    assert_eq!((st, v["email"].as_str()), (200, Some(USER)), "{stage}: {v}");
    // The webhook and its deliveries.
    let (st, v) = s.api(
        "GET",
        &format!("/api/v1/webhooks/{}/deliveries", w.webhook),
        Some(tok),
        None,
    );
    assert_eq!(st, 200, "{stage}: {v}");
    assert!(
        v["deliveries"].as_array().is_some_and(|d| !d.is_empty()),
        "{stage}: {v}"
    );
    // The dismissed card stays dismissed.
    assert!(
        !cards(s, tok).iter().any(|c| c["id"] == w.card.as_str()),
        "{stage}: the dismissed card is back"
    );
    // The scheduled email is still scheduled, and can be moved.
    assert_eq!(report(s, tok, &w.scheduled)["state"], "scheduled");
    let (st, v) = s.api(
        "PUT",
        &format!("/api/v1/emails/{}/schedule", w.scheduled),
        Some(tok),
        Some(json!({"send_at": rfc3339_in(7200)})),
    );
    assert_eq!(st, 200, "{stage}: scheduled job: {v}");
}

fn migrate(data_dir: &std::path::Path, redis: (&str, &str), from: &str, to: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailbeacon"))
        .args(["migrate", "--from", from, "--to", to])
        .env("MAILBEACON_DATA_DIR", data_dir)
        .env(redis.0, redis.1)
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

/// Every kind has a line `name n → n` with n > 0.
fn assert_every_kind(out: &str) {
    for kind in [
        "users",
        "emails",
        "events",
        "contacts",
        "erased recipients",
        "activities",
        "audit entries",
        "user settings",
        "mailboxes",
        "entra links",
        "webhooks",
        "card marks",
        "reply facts",
        "first marks",
        "attachment files",
        "queued jobs",
    ] {
        let line = out
            .lines()
            .find(|l| {
                l.strip_prefix(kind).is_some_and(|r| {
                    r.starts_with(' ') && r[1..].starts_with(|c: char| c.is_ascii_digit())
                })
            })
            .unwrap_or_else(|| panic!("no line for {kind}:\n{out}"));
        let (a, b) = line[kind.len()..]
            .trim()
            .split_once(" → ")
            .unwrap_or_else(|| panic!("{line}"));
        assert_eq!(a, b, "{line}");
        assert!(a.parse::<u64>().unwrap() > 0, "{line}");
    }
}

fn round_trip(redis: (&str, &str)) {
    let imap = Dovecot::start();
    let smtp = SmtpSink::start();
    let tmp = TempDir::new("migrate-all");
    let mut env = env(&imap, &smtp);
    let one = tmp.path().join("one");
    let mut s = start(&one, &env);
    let w = populate(&s, &imap);
    s.stop();

    // Embedded -> Redis, twice (an interrupted run is simply run again).
    let out = migrate(&one, redis, "embedded", "redis");
    assert_every_kind(&out);
    let again = migrate(&one, redis, "embedded", "redis");
    assert_every_kind(&again);
    env.push((redis.0.into(), redis.1.into()));
    let mut r = start(&tmp.path().join("r"), &env);
    check(&r, &w, "on Redis");
    r.stop();
    drop(r);

    // Redis -> a fresh embedded store.
    let two = tmp.path().join("two");
    let out = migrate(&two, redis, "redis", "embedded");
    assert_every_kind(&out);
    env.pop();
    let e = start(&two, &env);
    check(&e, &w, "back on embedded");
    // The scheduled email goes out from here.
    let (st, v) = e.api(
        "PUT",
        &format!("/api/v1/emails/{}/schedule", w.scheduled),
        Some(&w.tok),
        Some(json!({"send_at": rfc3339_in(0)})),
    );
    assert_eq!(st, 200, "{v}");
    wait_until("the scheduled email is sent", || {
        report(&e, &w.tok, &w.scheduled)["state"] == "sent"
    });
    assert!(smtp
        .received()
        .iter()
        .any(|(_, to, _)| to.iter().any(|t| t.contains("frank@client.test"))));
}

#[test]
fn migrate_copies_every_kind_both_ways_on_redis() {
    let redis = RedisServer::start();
    round_trip(("MAILBEACON_REDIS_URL", &redis.url()));
}

#[test]
fn migrate_copies_every_kind_both_ways_on_cluster() {
    let cluster = RedisCluster::start();
    round_trip(("MAILBEACON_REDIS_CLUSTER", &cluster.seeds()));
}
