//! End-to-end tests of the core flow against the real binary: follow an email,
//! per-recipient pixel and links, engagement reports, bad input, auth, restarts,
//! key rotation and the Email Engagement switch.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use support::*;

fn engagement(s: &Server, token: &str, id: &str) -> Value {
    let (st, v) = s.api("GET", &format!("/api/v1/emails/{id}"), Some(token), None);
    assert_eq!(st, 200, "{v}");
    v
}

fn recipient<'a>(report: &'a Value, address: &str) -> &'a Value {
    report["recipients"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["address"] == address))
        .unwrap_or_else(|| panic!("no recipient {address} in {report}"))
}

#[test]
fn follow_open_click_report() {
    let s = Server::start();
    let tok = s.user("ann@sales.test");
    let message = email(
        "Ann@Sales.test",
        &["bob@client.test", "Carol <carol@client.test>"],
        &["dan@client.test"],
        &["eve@partner.test"],
        &["https://shop.example/a?x=1&y=2", "https://docs.example/b"],
    );
    let resp = s.follow(&tok, &message);
    let id = resp["id"].as_str().expect("id").to_string();
    let rcpts = resp["recipients"].as_array().expect("recipients");
    let addrs: Vec<&str> = rcpts
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        addrs,
        [
            "bob@client.test",
            "carol@client.test",
            "dan@client.test",
            "eve@partner.test"
        ]
    );
    let copies: Vec<Copy> = rcpts.iter().map(|r| copy(r, &s.base)).collect();
    let mut pixels = HashSet::new();
    for (r, c) in rcpts.iter().zip(&copies) {
        assert_eq!(r["followed"], true, "{r}");
        let pixel = c.pixel.clone().expect("a pixel in every copy");
        assert!(pixels.insert(pixel), "each copy has its own pixel");
        assert_eq!(c.clicks.len(), 2, "both links rewritten: {}", c.html);
        assert!(
            c.html.contains("mailto:x@example.test"),
            "mailto left alone"
        );
        let text = String::from_utf8_lossy(&c.raw);
        assert!(
            !text.to_lowercase().contains("\nbcc:"),
            "Bcc header removed"
        );
        // No address readable in any tracking URL.
        for u in c.clicks.iter().chain(c.pixel.iter()) {
            assert!(!u.contains('@') && !u.contains("client.test"), "{u}");
        }
    }
    // Bob opens twice (one HEAD and one prefetch are not counted).
    let bob = &copies[0];
    let px = bob.pixel.as_ref().unwrap();
    for _ in 0..2 {
        let (st, hs, body) = raw("GET", px, &[("User-Agent", BROWSER_UA)]);
        assert_eq!((st, body.len()), (200, 43));
        assert_eq!(header(&hs, "content-type"), Some("image/gif"));
        assert!(header(&hs, "cache-control")
            .unwrap_or("")
            .contains("no-store"));
    }
    assert_eq!(raw("HEAD", px, &[("User-Agent", BROWSER_UA)]).0, 200);
    assert_eq!(
        raw(
            "GET",
            px,
            &[("User-Agent", BROWSER_UA), ("Sec-Purpose", "prefetch")]
        )
        .0,
        200
    );
    // Carol clicks the second link: lands on the original URL.
    let carol = &copies[1];
    let (st, hs, _) = raw("GET", &carol.clicks[1], &[("User-Agent", BROWSER_UA)]);
    assert_eq!(st, 302);
    assert_eq!(header(&hs, "location"), Some("https://docs.example/b"));
    assert_eq!(header(&hs, "referrer-policy"), Some("no-referrer"));
    assert!(header(&hs, "cache-control")
        .unwrap_or("")
        .contains("no-store"));
    // Eve's first link keeps its query string exactly (entities decoded).
    let (_, hs, _) = raw("GET", &copies[3].clicks[0], &[("User-Agent", BROWSER_UA)]);
    assert_eq!(
        header(&hs, "location"),
        Some("https://shop.example/a?x=1&y=2")
    );
    // A security scanner's click is kept but counted apart.
    assert_eq!(
        raw(
            "GET",
            &copies[2].clicks[0],
            &[("User-Agent", "Barracuda Sentinel (EE)")]
        )
        .0,
        302
    );

    let rep = engagement(&s, &tok, &id);
    let b = recipient(&rep, "bob@client.test");
    assert_eq!(
        (b["opens"].as_u64(), b["clicks"].as_u64()),
        (Some(2), Some(0)),
        "{rep}"
    );
    assert!(b["first_open_at"].is_string());
    let c = recipient(&rep, "carol@client.test");
    assert_eq!(
        (c["opens"].as_u64(), c["clicks"].as_u64()),
        (Some(0), Some(1)),
        "{rep}"
    );
    let d = recipient(&rep, "dan@client.test");
    assert_eq!(
        (d["clicks"].as_u64(), d["machine_clicks"].as_u64()),
        (Some(0), Some(1))
    );
    let e = recipient(&rep, "eve@partner.test");
    assert_eq!(
        (e["field"].as_str(), e["clicks"].as_u64()),
        (Some("bcc"), Some(1))
    );
    assert_eq!(rep["totals"]["opens"], 2);
    assert_eq!(rep["totals"]["unique_opens"], 1);
    assert_eq!(rep["links"][1]["clicks"], 1);
    assert_eq!(rep["links"][1]["url"], "https://docs.example/b");
    assert_eq!(rep["links"][0]["clicks"], 1);
    assert_eq!(rep["links"][0]["machine_clicks"], 1);
    assert_eq!(rep["totals"]["unique_clicks"], 2);

    // The list shows it.
    let (st, list) = s.api("GET", "/api/v1/emails", Some(&tok), None);
    assert_eq!(st, 200);
    assert_eq!(list["emails"][0]["id"], id.as_str());
    assert_eq!(list["emails"][0]["subject"], "Quarterly update");
}

#[test]
fn invalid_tokens_never_redirect_and_never_count() {
    let s = Server::start();
    let tok = s.user("ann@sales.test");
    let (id, c) = s.follow_one(&tok, "bob@client.test", "https://a.example/");
    let px = c.pixel.unwrap();
    let click = &c.clicks[0];
    let open_token = px
        .trim_start_matches(&format!("{}/o/", s.base))
        .trim_end_matches(".gif")
        .to_string();
    let rest = click
        .trim_start_matches(&format!("{}/c/", s.base))
        .to_string();
    let (click_token, dest) = rest.split_once('/').unwrap();

    let mut flipped = URL_SAFE_NO_PAD.decode(click_token).unwrap();
    flipped[10] ^= 1;
    let flipped = URL_SAFE_NO_PAD.encode(flipped);
    let evil = URL_SAFE_NO_PAD.encode("https://evil.example/");
    let bad_clicks = [
        format!("/c/{flipped}/{dest}"),
        format!("/c/{click_token}/{evil}"),
        format!("/c/{}/{dest}", &click_token[..click_token.len() - 4]),
        format!("/c/{open_token}/{dest}"),
        format!("/c/{click_token}"),
        "/c/garbage/garbage".to_string(),
        "/c/".to_string(),
        format!("/c/{click_token}/{dest}%0d%0aX:1"),
    ];
    for p in &bad_clicks {
        let (st, hs, _) = raw("GET", &s.url(p), &[("User-Agent", BROWSER_UA)]);
        assert_eq!(st, 404, "{p}");
        assert_eq!(header(&hs, "location"), None, "{p}");
    }
    let bad_pixels = [
        format!("/o/{flipped}.gif"),
        format!("/o/{click_token}.gif"),
        format!("/o/{}.gif", &open_token[..20]),
        "/o/garbage.gif".to_string(),
        format!("/o/{}.gif", "A".repeat(10_000)),
    ];
    for p in &bad_pixels {
        let (st, hs, body) = raw("GET", &s.url(p), &[("User-Agent", BROWSER_UA)]);
        assert_eq!((st, body.len()), (200, 43), "{p}");
        assert_eq!(header(&hs, "content-type"), Some("image/gif"));
    }
    assert_eq!(raw("POST", &px, &[]).0, 405);
    let rep = engagement(&s, &tok, &id);
    assert_eq!(rep["totals"]["opens"], 0, "{rep}");
    assert_eq!(rep["totals"]["clicks"], 0);
    assert_eq!(rep["totals"]["machine_clicks"], 0);
    assert_eq!(rep["timeline"].as_array().unwrap().len(), 0);
}

#[test]
fn auth_and_permissions() {
    let s = Server::start();
    let ann = s.user("ann@sales.test");
    let bob = s.user("bob@sales.test");
    let resp = s.follow(
        &ann,
        &email("ann@sales.test", &["x@client.test"], &[], &[], &[]),
    );
    let id = resp["id"].as_str().unwrap();
    let path = format!("/api/v1/emails/{id}");
    assert_eq!(s.api("GET", &path, None, None).0, 401);
    let (st, v) = s.api("GET", &path, Some("nope"), None);
    assert_eq!(st, 401);
    assert_eq!(v["error"]["code"], "unauthorized");
    assert_eq!(
        s.api("GET", &path, Some(&bob), None).0,
        404,
        "another user's email is not revealed"
    );
    assert_eq!(
        s.api("GET", &path, Some(ADMIN), None).0,
        200,
        "admins see every email"
    );
    assert_eq!(
        s.api("GET", "/api/v1/emails/0000000000000001", Some(&ann), None)
            .0,
        404
    );
    assert_eq!(
        s.api("GET", "/api/v1/emails/not-an-id", Some(&ann), None).0,
        404
    );
    let (st, v) = s.api(
        "POST",
        "/api/v1/users",
        Some(&ann),
        Some(json!({"email": "z@z.test"})),
    );
    assert_eq!((st, v["error"]["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(s.api("GET", "/api/v1/settings", Some(&ann), None).0, 403);
    assert_eq!(
        s.api("GET", "/api/v1/emails?all=true", Some(&ann), None).0,
        403
    );
    // Duplicate users conflict; bad emails and roles are refused.
    assert_eq!(
        s.api(
            "POST",
            "/api/v1/users",
            Some(ADMIN),
            Some(json!({"email": "ANN@sales.test"}))
        )
        .0,
        409
    );
    assert_eq!(
        s.api(
            "POST",
            "/api/v1/users",
            Some(ADMIN),
            Some(json!({"email": "nope"}))
        )
        .0,
        400
    );
    assert_eq!(
        s.api(
            "POST",
            "/api/v1/users",
            Some(ADMIN),
            Some(json!({"email": "a@b.test", "role": "root"}))
        )
        .0,
        400
    );
    assert_eq!(s.api("GET", "/api/v1/nothing", Some(&ann), None).0, 404);
    assert_eq!(s.api("DELETE", "/api/v1/emails", Some(&ann), None).0, 405);
    // Sender identity: a user may only send as themselves; admins as anyone.
    let other = email("mallory@sales.test", &["x@client.test"], &[], &[], &[]);
    let (st, v) = s.api(
        "POST",
        "/api/v1/emails",
        Some(&bob),
        Some(json!({"mime": STANDARD.encode(&other)})),
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (403, Some("sender_not_allowed"))
    );
    assert_eq!(
        s.api(
            "POST",
            "/api/v1/emails",
            Some(ADMIN),
            Some(json!({"mime": STANDARD.encode(&other)}))
        )
        .0,
        201
    );
}

#[test]
fn bad_input_gets_clear_errors() {
    let s = Server::start_env(&[("MAILBEACON_MAX_BODY_BYTES", "65536")]);
    let tok = s.user("ann@sales.test");
    let post = |body: Value| s.api("POST", "/api/v1/emails", Some(&tok), Some(body));
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"mime": "!!!not base64!!!"}), 400, "invalid_mime"),
        (json!({"mime": ""}), 400, "invalid_mime"),
        (
            json!({"mime": STANDARD.encode("this is not an email at all")}),
            400,
            "malformed_mime",
        ),
        (
            json!({"mime": STANDARD.encode("From: ann@sales.test\r\nSubject: x\r\n\r\nhi\r\n")}),
            400,
            "no_recipients",
        ),
        (
            json!({"mime": STANDARD.encode("To: b@client.test\r\nSubject: x\r\n\r\nhi\r\n")}),
            400,
            "no_sender",
        ),
        (
            json!({"mime": STANDARD.encode("x"), "extra": 1}),
            400,
            "invalid_json",
        ),
        (
            json!({"mime": STANDARD.encode("x"), "deliver": "fax"}),
            400,
            "invalid_deliver",
        ),
        (
            json!({"mime": STANDARD.encode(email("ann@sales.test", &["b@client.test"], &[], &[], &[])), "deliver": "smtp"}),
            400,
            "smtp_not_configured",
        ),
        (
            json!({"mime": "A".repeat(70_000)}),
            413,
            "payload_too_large",
        ),
    ];
    for (body, status, code) in cases {
        let (st, v) = post(body);
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{v}"
        );
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // Not JSON at all.
    let r = agent()
        .post(&s.url("/api/v1/emails"))
        .set("Authorization", &format!("Bearer {tok}"))
        .send_string("{{{");
    assert!(matches!(r, Err(ureq::Error::Status(400, _))));
    // The server is still fine.
    assert_eq!(raw("GET", &s.url("/healthz"), &[]).0, 200);
}

#[test]
fn restart_keeps_everything() {
    let tmp = TempDir::new("restart");
    let dir = tmp.path().join("data");
    let mut s = Server::start_in(&dir, &[]);
    let tok = s.user("ann@sales.test");
    let (id, c) = s.follow_one(&tok, "b@client.test", "https://a.example/");
    raw(
        "GET",
        c.pixel.as_ref().unwrap(),
        &[("User-Agent", BROWSER_UA)],
    );
    s.stop();
    s.restart();
    let rep = engagement(&s, &tok, &id);
    assert_eq!(rep["totals"]["opens"], 1, "{rep}");
    // Links minted before the restart still work and still count.
    assert_eq!(
        raw("GET", &c.clicks[0], &[("User-Agent", BROWSER_UA)]).0,
        302
    );
    assert_eq!(engagement(&s, &tok, &id)["totals"]["clicks"], 1);
}

#[test]
fn kill_9_during_a_burst_loses_no_answered_hit() {
    let tmp = TempDir::new("kill9");
    let dir = tmp.path().join("data");
    let mut s = Server::start_in(&dir, &[]);
    let tok = s.user("ann@sales.test");
    let rcpts: Vec<String> = (0..20).map(|i| format!("r{i}@client.test")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let resp = s.follow(&tok, &email("ann@sales.test", &refs, &[], &[], &[]));
    let id = resp["id"].as_str().unwrap().to_string();
    let pixels: Vec<String> = resp["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| copy(r, &s.base).pixel.unwrap())
        .collect();
    // Eight clients hammer the pixels; the server is killed mid-burst.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(3);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let pixels = pixels.clone();
            let answered = answered.clone();
            std::thread::spawn(move || {
                let a = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(5))
                    .build();
                let mut i = t;
                let mut sent = 0u64;
                while Instant::now() < stop_at {
                    let r = a
                        .get(&pixels[i % pixels.len()])
                        .set("User-Agent", BROWSER_UA)
                        .call();
                    sent += 1;
                    match r {
                        Ok(resp) if resp.status() == 200 => {
                            let mut b = Vec::new();
                            if std::io::Read::read_to_end(&mut resp.into_reader(), &mut b).is_ok()
                                && b.len() == 43
                            {
                                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                        }
                        _ => break,
                    }
                    i += 8;
                }
                sent
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    s.kill9();
    let sent: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let answered = answered.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        answered > 50,
        "the burst should have been answered for a while ({answered})"
    );
    s.restart();
    let rep = engagement(&s, &tok, &id);
    let recorded = rep["totals"]["opens"].as_u64().unwrap();
    eprintln!("kill -9: sent {sent}, answered {answered}, recorded after restart {recorded}");
    assert!(
        recorded >= answered,
        "lost answered hits: answered {answered}, recorded {recorded}"
    );
    assert!(
        recorded <= sent,
        "recorded more hits than were sent: {recorded} > {sent}"
    );
}

#[test]
fn key_rotation_keeps_old_links_working() {
    let s = Server::start();
    let tok = s.user("ann@sales.test");
    let old = s.follow(
        &tok,
        &email(
            "ann@sales.test",
            &["b@client.test"],
            &[],
            &[],
            &["https://a.example/"],
        ),
    );
    let old_copy = copy(&old["recipients"][0], &s.base);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailbeacon"))
        .args(["keys", "rotate", "--data-dir"])
        .arg(&s.data_dir)
        .output()
        .expect("run keys rotate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("signing key 2"));
    let key_id = |url: &str| {
        let t = url.rsplit('/').next().unwrap().trim_end_matches(".gif");
        let b = URL_SAFE_NO_PAD.decode(t).unwrap();
        u16::from_be_bytes([b[2], b[3]])
    };
    assert_eq!(key_id(old_copy.pixel.as_ref().unwrap()), 1);
    // The running server picks the new key up within a few seconds.
    let t0 = Instant::now();
    let new_copy = loop {
        let new = s.follow(
            &tok,
            &email(
                "ann@sales.test",
                &["b@client.test"],
                &[],
                &[],
                &["https://a.example/"],
            ),
        );
        let c = copy(&new["recipients"][0], &s.base);
        if key_id(c.pixel.as_ref().unwrap()) == 2 {
            break c;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "rotation not picked up"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(
        raw("GET", &old_copy.clicks[0], &[("User-Agent", BROWSER_UA)]).0,
        302
    );
    assert_eq!(
        raw("GET", &new_copy.clicks[0], &[("User-Agent", BROWSER_UA)]).0,
        302
    );
    let rep = engagement(&s, &tok, old["id"].as_str().unwrap());
    assert_eq!(rep["totals"]["clicks"], 1, "old-key click counted: {rep}");
}

#[test]
fn engagement_switch_stops_following_and_recording() {
    let s = Server::start();
    let tok = s.user("ann@sales.test");
    let (id, c) = s.follow_one(&tok, "b@client.test", "https://a.example/");
    raw(
        "GET",
        c.pixel.as_ref().unwrap(),
        &[("User-Agent", BROWSER_UA)],
    );
    let (st, v) = s.api(
        "PUT",
        "/api/v1/settings",
        Some(ADMIN),
        Some(json!({"email_engagement": false})),
    );
    assert_eq!((st, &v["email_engagement"]), (200, &json!(false)));
    let (st, v) = s.api(
        "POST",
        "/api/v1/emails",
        Some(&tok),
        Some(json!({"mime": STANDARD.encode(email("ann@sales.test", &["b@client.test"], &[], &[], &[]))})),
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (403, Some("engagement_disabled"))
    );
    // The pixel still answers and the link still redirects, but nothing counts.
    assert_eq!(
        raw(
            "GET",
            c.pixel.as_ref().unwrap(),
            &[("User-Agent", BROWSER_UA)]
        )
        .2
        .len(),
        43
    );
    assert_eq!(
        raw("GET", &c.clicks[0], &[("User-Agent", BROWSER_UA)]).0,
        302
    );
    assert_eq!(
        s.api(
            "PUT",
            "/api/v1/settings",
            Some(ADMIN),
            Some(json!({"email_engagement": true}))
        )
        .0,
        200
    );
    let rep = engagement(&s, &tok, &id);
    assert_eq!(
        (
            rep["totals"]["opens"].as_u64(),
            rep["totals"]["clicks"].as_u64()
        ),
        (Some(1), Some(0)),
        "{rep}"
    );
    let (st, v) = s.api("GET", "/api/v1/settings", Some(ADMIN), None);
    assert_eq!((st, v["retention_days"].as_u64()), (200, Some(90)));
    assert_eq!(
        s.api(
            "PUT",
            "/api/v1/settings",
            Some(ADMIN),
            Some(json!({"retention_days": 0}))
        )
        .0,
        400
    );
}

#[test]
fn smtp_delivery_sends_one_copy_per_recipient() {
    let sink = SmtpSink::start();
    let s = Server::start_env(&[("MAILBEACON_SMTP_URL", &sink.url())]);
    let tok = s.user("ann@sales.test");
    let raw_mail = email(
        "ann@sales.test",
        &["bob@client.test", "reject-me@client.test"],
        &["carol@client.test"],
        &["dan@partner.test"],
        &["https://a.example/"],
    );
    let (st, v) = s.api(
        "POST",
        "/api/v1/emails",
        Some(&tok),
        Some(json!({"mime": STANDARD.encode(&raw_mail), "deliver": "smtp"})),
    );
    assert_eq!(st, 201, "{v}");
    // The outbox sends after answering: every copy starts queued.
    for r in v["recipients"].as_array().unwrap() {
        assert!(
            r.get("mime").is_none(),
            "smtp delivery does not return copies"
        );
        assert_eq!(r["delivery"]["state"], "queued", "{v}");
    }
    let id = v["id"].as_str().unwrap().to_string();
    let t0 = std::time::Instant::now();
    let v = loop {
        let rep = engagement(&s, &tok, &id);
        if rep["state"] == "sent" {
            break rep;
        }
        assert!(t0.elapsed().as_secs() < 30, "not all sent: {rep}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let statuses: Vec<(String, String)> = v["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap().into(),
                r["delivery"]["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("bob@client.test".into(), "sent".into()),
            ("reject-me@client.test".into(), "failed".into()),
            ("carol@client.test".into(), "sent".into()),
            ("dan@partner.test".into(), "sent".into()),
        ]
    );
    let failed = &v["recipients"][1]["delivery"]["detail"];
    assert!(
        failed.as_str().is_some_and(|d| d.contains("550")),
        "{failed}"
    );
    let got = sink.received();
    assert_eq!(got.len(), 3, "one message per accepted recipient");
    let mut pixels = HashSet::new();
    for (from, rcpts, data) in &got {
        assert_eq!(from, "ann@sales.test");
        assert_eq!(rcpts.len(), 1, "exactly one envelope recipient per copy");
        let text = String::from_utf8_lossy(data).to_string();
        assert!(
            text.contains("To: bob@client.test, reject-me@client.test"),
            "headers unchanged"
        );
        assert!(!text.contains("Bcc:"), "Bcc removed");
        let msg = mail_parser::MessageParser::default()
            .parse(data)
            .expect("parses");
        let html = msg.body_html(0).expect("html").to_string();
        let px = html
            .split(&format!("{}/o/", s.base))
            .nth(1)
            .expect("pixel")
            .split(".gif")
            .next()
            .unwrap()
            .to_string();
        pixels.insert(px);
    }
    assert_eq!(pixels.len(), 3, "each delivered copy carries its own pixel");
    // Delivery results are kept in the report.
    let rep = engagement(&s, &tok, &id);
    assert_eq!(
        recipient(&rep, "reject-me@client.test")["delivery"]["state"],
        "failed"
    );
}

#[test]
fn a_click_right_after_delivery_counts_as_machine_activity() {
    let sink = SmtpSink::start();
    let s = Server::start_env(&[
        ("MAILBEACON_MACHINE_CLICK_SECS", "3"),
        ("MAILBEACON_SMTP_URL", &sink.url()),
    ]);
    let tok = s.user("ann@sales.test");
    let message = email(
        "ann@sales.test",
        &["b@client.test"],
        &[],
        &[],
        &["https://a.example/"],
    );
    let (st, v) = s.api(
        "POST",
        "/api/v1/emails",
        Some(&tok),
        Some(json!({"mime": STANDARD.encode(&message), "deliver": "smtp"})),
    );
    assert_eq!(st, 201, "{v}");
    // The copy as delivered, clicked at once: a security gateway's scan.
    let t0 = std::time::Instant::now();
    while sink.received().is_empty() {
        assert!(t0.elapsed().as_secs() < 30, "not delivered");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (_, _, data) = sink.received().pop().expect("delivered");
    let msg = mail_parser::MessageParser::default()
        .parse(&data)
        .expect("parses");
    let html = msg.body_html(0).expect("html").to_string();
    let link = html
        .split('"')
        .find(|p| p.starts_with(&format!("{}/c/", s.base)))
        .expect("a tracked link")
        .to_string();
    assert_eq!(raw("GET", &link, &[("User-Agent", BROWSER_UA)]).0, 302);
    let rep = engagement(&s, &tok, v["id"].as_str().unwrap());
    assert_eq!(rep["totals"]["clicks"], 0, "{rep}");
    assert_eq!(rep["totals"]["machine_clicks"], 1);
    assert_eq!(rep["timeline"][0]["machine"], "too_fast");

    // A copy handed back ("return") is sent by the caller whenever it likes: its
    // preparation time says nothing about delivery, so the same click is human.
    let (id, c) = s.follow_one(&tok, "b@client.test", "https://a.example/");
    assert_eq!(
        raw("GET", &c.clicks[0], &[("User-Agent", BROWSER_UA)]).0,
        302
    );
    let rep = engagement(&s, &tok, &id);
    assert_eq!(rep["totals"]["clicks"], 1, "{rep}");
    assert_eq!(rep["totals"]["machine_clicks"], 0);
}

/// A message without Message-ID and Date (a client that leaves them to its
/// submission server) gets both, the same in every copy, and keeps everything
/// else; a message that has them keeps its own.
#[test]
fn copies_get_a_message_id_and_date_when_the_original_has_none() {
    let s = Server::start();
    let tok = s.user("ann@sales.test");
    let full = email(
        "ann@sales.test",
        &["bob@client.test", "carol@client.test"],
        &[],
        &[],
        &["https://shop.example/a"],
    );
    let bare: String = full
        .split_inclusive("\r\n")
        .filter(|l| !l.starts_with("Message-ID:") && !l.starts_with("Date:"))
        .collect();
    assert_ne!(bare, full);
    let resp = s.follow(&tok, &bare);
    let copies: Vec<Copy> = resp["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| copy(r, &s.base))
        .collect();
    let ids: HashSet<String> = copies
        .iter()
        .map(|c| {
            let m = mail_parser::MessageParser::default()
                .parse(&c.raw)
                .expect("copy parses");
            assert!(m.date().is_some(), "every copy has a Date");
            let id = m.message_id().expect("every copy has a Message-ID");
            assert!(id.ends_with("@sales.test"), "{id}");
            id.to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one message, one Message-ID: {ids:?}");

    let resp = s.follow(&tok, &full);
    let c = copy(&resp["recipients"][0], &s.base);
    let m = mail_parser::MessageParser::default().parse(&c.raw).unwrap();
    assert!(m.message_id().unwrap().starts_with("q1-"));
    let text = String::from_utf8_lossy(&c.raw);
    assert_eq!(text.matches("Message-ID:").count(), 1);
    assert_eq!(text.matches("\r\nDate:").count(), 1);
}

/// Operator-listed machine networks (`MAILBEACON_MACHINE_NETWORKS`): a hit from
/// a listed network counts as machine activity whatever its user agent, with
/// the list's label in the timeline; the same hit from an unlisted address
/// (the positive control, on the same server) counts as human. The client
/// address comes from X-Forwarded-For because the test's peer, 127.0.0.1, is a
/// configured trusted proxy.
#[test]
fn listed_machine_networks_count_as_machine() {
    let tmp = TempDir::new("nets");
    let list = tmp.path().join("machine-networks.txt");
    std::fs::write(
        &list,
        "# gateways\n198.51.100.0/24 acme-gateway\n2001:db8::/32\n",
    )
    .unwrap();
    let s = Server::start_env(&[
        ("MAILBEACON_MACHINE_NETWORKS", list.to_str().unwrap()),
        ("MAILBEACON_TRUSTED_PROXIES", "127.0.0.1"),
    ]);
    let tok = s.user("ann@sales.test");
    let (id, c) = s.follow_one(&tok, "b@client.test", "https://a.example/");
    let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    let pixel = c.pixel.as_ref().unwrap();
    for from in ["198.51.100.23", "2001:db8:1::5", "203.0.113.5"] {
        let (st, _, _) = raw(
            "GET",
            pixel,
            &[("User-Agent", firefox), ("X-Forwarded-For", from)],
        );
        assert_eq!(st, 200);
    }
    let (st, _, _) = raw(
        "GET",
        &c.clicks[0],
        &[
            ("User-Agent", firefox),
            ("X-Forwarded-For", "198.51.100.200"),
        ],
    );
    assert_eq!(st, 302);
    let rep = engagement(&s, &tok, &id);
    let r = recipient(&rep, "b@client.test");
    assert_eq!(r["opens"], 1, "{r}");
    assert_eq!(r["machine_opens"], 2, "{r}");
    assert_eq!(r["clicks"], 0, "{r}");
    assert_eq!(r["machine_clicks"], 1, "{r}");
    let labels: Vec<&Value> = rep["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["machine"] == "listed_network")
        .map(|e| &e["machine_network"])
        .collect();
    assert_eq!(
        labels,
        [
            &json!("acme-gateway"),
            &json!("2001:db8::/32"),
            &json!("acme-gateway")
        ]
    );
}

/// A machine-network list with a bad line stops the server at start with the
/// file and line named.
#[test]
fn a_bad_machine_network_list_is_refused_at_start() {
    let tmp = TempDir::new("badnets");
    let list = tmp.path().join("nets.txt");
    std::fs::write(&list, "10.0.0.0/8 ok\nnot-a-network x\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailbeacon"))
        .args(["serve", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env("MAILBEACON_MACHINE_NETWORKS", &list)
        .env("MAILBEACON_LISTEN", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nets.txt") && err.contains("line 2"), "{err}");
}

/// `deliver: "return"` hands every copy back in one response, so the copies'
/// total size is capped: a 1 MB message for 60 recipients (about 60 MB of
/// copies) is refused with 413 `too_large_to_return` before anything is
/// stored, while the same message for 4 recipients comes back whole.
#[test]
fn returning_copies_is_capped_in_total_size() {
    let s = Server::start();
    let tok = s.user("ann@sales.test");
    let big = format!("<p>{}</p>", "All the news that fits. ".repeat(44_000));
    let with = |n: usize| {
        let to: Vec<String> = (0..n).map(|i| format!("r{i}@client.test")).collect();
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        email("ann@sales.test", &to, &[], &[], &["https://shop.example/a"])
            .replace("<p>Hello</p>", &big)
    };
    let (st, v) = s.api(
        "POST",
        "/api/v1/emails",
        Some(&tok),
        Some(json!({"mime": STANDARD.encode(with(60)), "deliver": "return"})),
    );
    assert_eq!(st, 413, "{v}");
    assert_eq!(v["error"]["code"], "too_large_to_return", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("smtp"),
        "{v}"
    );
    let (_, list) = s.api("GET", "/api/v1/emails", Some(&tok), None);
    assert_eq!(list["emails"].as_array().map(Vec::len), Some(0), "{list}");

    let resp = s.follow(&tok, &with(4));
    let copies: Vec<Copy> = resp["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| copy(r, &s.base))
        .collect();
    assert_eq!(copies.len(), 4);
    for c in &copies {
        assert!(c.raw.len() > 1_000_000, "{}", c.raw.len());
        assert!(c.pixel.is_some());
    }
}

/// `GET /api/v1/stats`: totals over the caller's emails of the last days, the
/// same counts as the per-email reports (human and machine apart), rates over
/// followed recipients, and the same totals per template; only the caller's
/// emails unless an admin asks for `all=true`.
#[test]
fn stats_total_a_users_emails_overall_and_per_template() {
    let s = Server::start();
    let ann = s.user("ann@sales.test");
    let bob = s.user("bob@sales.test");
    let follow = |tok: &str, from: &str, to: &[&str], template: Option<&str>| -> Value {
        let mut body = json!({
            "mime": STANDARD.encode(email(from, to, &[], &[], &["https://shop.example/a"])),
            "deliver": "return",
        });
        if let Some(t) = template {
            body["template"] = json!(t);
        }
        let (st, v) = s.api("POST", "/api/v1/emails", Some(tok), Some(body));
        assert_eq!(st, 201, "{v}");
        v
    };
    let a = follow(
        &ann,
        "ann@sales.test",
        &["x1@client.test", "x2@client.test"],
        Some("welcome"),
    );
    let b = follow(
        &ann,
        "ann@sales.test",
        &["y1@client.test", "y2@client.test"],
        Some("welcome"),
    );
    let _c = follow(&ann, "ann@sales.test", &["z1@client.test"], None);
    let _d = follow(&bob, "bob@sales.test", &["w1@client.test"], Some("welcome"));
    let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    let ca = copy(&a["recipients"][0], &s.base);
    for _ in 0..2 {
        raw(
            "GET",
            ca.pixel.as_ref().unwrap(),
            &[("User-Agent", firefox)],
        );
    }
    raw("GET", &ca.clicks[0], &[("User-Agent", firefox)]);
    let cb = copy(&b["recipients"][1], &s.base);
    raw(
        "GET",
        cb.pixel.as_ref().unwrap(),
        &[("User-Agent", "Mozilla/5.0")],
    );

    let (st, v) = s.api("GET", "/api/v1/stats", Some(&ann), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["scope"], "mine");
    assert_eq!(v["days"], 30);
    assert_eq!(v["truncated"], false);
    for (k, want) in [
        ("emails", 3),
        ("recipients", 5),
        ("followed", 5),
        ("opens", 2),
        ("unique_opens", 1),
        ("clicks", 1),
        ("unique_clicks", 1),
        ("machine_opens", 1),
        ("machine_clicks", 0),
    ] {
        assert_eq!(v[k], want, "{k}: {v}");
    }
    assert_eq!(v["open_rate"], 0.2, "{v}");
    assert_eq!(v["click_rate"], 0.2, "{v}");
    assert_eq!(v["click_to_open_rate"], 1.0, "{v}");
    let t = v["templates"].as_array().unwrap();
    assert_eq!(t.len(), 2, "{v}");
    assert_eq!(
        (&t[0]["template"], &t[0]["emails"]),
        (&json!("welcome"), &json!(2))
    );
    assert_eq!(
        (&t[0]["opens"], &t[0]["machine_opens"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(
        (&t[1]["template"], &t[1]["emails"]),
        (&Value::Null, &json!(1))
    );
    assert_eq!(t[1]["open_rate"], 0.0, "{v}");

    // The listing names the template; bob sees only his own email.
    let (_, list) = s.api("GET", "/api/v1/emails", Some(&ann), None);
    assert_eq!(list["emails"][2]["template"], "welcome", "{list}");
    let (_, v) = s.api("GET", "/api/v1/stats", Some(&bob), None);
    assert_eq!((&v["emails"], &v["opens"]), (&json!(1), &json!(0)), "{v}");
    assert_eq!(v["open_rate"], 0.0);
    // Everyone's, for an admin only.
    let (st, _) = s.api("GET", "/api/v1/stats?all=true", Some(&bob), None);
    assert_eq!(st, 403);
    let (st, v) = s.api("GET", "/api/v1/stats?all=true&days=7", Some(ADMIN), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (&v["emails"], &v["scope"]),
        (&json!(4), &json!("all")),
        "{v}"
    );
    assert_eq!(v["templates"][0]["emails"], 3, "{v}");
    // Bad input.
    for q in ["days=0", "days=abc", "days=3651"] {
        let (st, v) = s.api("GET", &format!("/api/v1/stats?{q}"), Some(&ann), None);
        assert_eq!(
            (st, &v["error"]["code"]),
            (400, &json!("invalid_days")),
            "{q}"
        );
    }
    for bad in [json!(""), json!("a\nb"), json!("x".repeat(101))] {
        let (st, v) = s.api(
            "POST",
            "/api/v1/emails",
            Some(&ann),
            Some(json!({"mime": STANDARD.encode(email("ann@sales.test", &["q@client.test"], &[], &[], &[])), "template": bad})),
        );
        assert_eq!(
            (st, &v["error"]["code"]),
            (400, &json!("invalid_template")),
            "{v}"
        );
    }
    // A user with no email in range: zeros and null rates.
    let carol = s.user("carol@sales.test");
    let (_, v) = s.api("GET", "/api/v1/stats", Some(&carol), None);
    assert_eq!(
        (&v["emails"], &v["open_rate"]),
        (&json!(0), &Value::Null),
        "{v}"
    );
}
