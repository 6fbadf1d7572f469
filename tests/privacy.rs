//! The privacy rules of design.md, each proven end to end through the HTTP API of
//! the real binary: contact "do not follow", bulk import, data-subject export and
//! erase (with a scan of the raw storage afterwards), sealed storage, audit log.
//!
//! Every test runs on every backend: the embedded store, a single Redis node and a
//! 3-master Redis Cluster. "Raw storage" is every file of the data directory, and
//! with Redis every key and value on every node.

mod support;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use support::backends::{Backend, Kind};
use support::*;

/// Generates one `#[test]` per backend for each test body.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[test]
            fn embedded() {
                super::$name(&Backend::new(Kind::Embedded));
            }
            #[test]
            fn redis() {
                super::$name(&Backend::new(Kind::Redis));
            }
            #[test]
            fn cluster() {
                super::$name(&Backend::new(Kind::Cluster));
            }
        }
    )*};
}

on_every_backend!(
    do_not_allow_contacts_get_an_untracked_copy_and_others_are_still_followed,
    bulk_import_is_all_or_nothing,
    export_then_erase_leaves_no_trace_and_links_keep_working,
    raw_storage_holds_no_plaintext_personal_data,
    key_rotation_keeps_sealed_data_readable,
);

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The server's keys, from the backend's key ring.
fn keys(b: &Backend) -> mailbeacon::keyring::Keys {
    mailbeacon::keyring::from_json(&b.keyring()).expect("the key ring parses")
}

/// The keyed hash the server uses for `address`, computed the way the store
/// does (the library's sealer, from the backend's key ring).
fn keyed_hash(b: &Backend, address: &str) -> [u8; 32] {
    keys(b).sealer.lookup(address)
}

/// Opens every sealed value (`s1.…`) found anywhere in the raw storage with the
/// server's key ring (which sits next to the data) and returns the plain texts,
/// lower case; a queued binary payload (`b` + base64url) is decoded too.
fn sealed_texts(b: &Backend) -> Vec<String> {
    let raw = b.raw();
    let sealer = keys(b).sealer;
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = raw[at..].windows(3).position(|w| w == b"s1.") {
        let start = at + i;
        let mut end = start + 3;
        while end < raw.len()
            && (raw[end].is_ascii_alphanumeric() || raw[end] == b'-' || raw[end] == b'_')
        {
            end += 1;
        }
        at = start + 3;
        let Ok(sealed) = std::str::from_utf8(&raw[start..end]) else {
            continue;
        };
        let Ok(text) = sealer.open(sealed) else {
            continue;
        };
        if let Some(bytes) = text
            .strip_prefix('b')
            .and_then(|t| URL_SAFE_NO_PAD.decode(t).ok())
        {
            out.push(String::from_utf8_lossy(&bytes).to_lowercase());
        }
        out.push(text.to_lowercase());
    }
    out
}

/// Fails if a sealed value in raw storage opens to text holding any of
/// `needles` (compared in lower case).
fn assert_no_sealed_trace(b: &Backend, needles: &[&str]) {
    for text in sealed_texts(b) {
        for n in needles {
            assert!(
                !text.contains(&n.to_lowercase()),
                "{n:?} is in a sealed value left in raw storage on {:?}: {}",
                b.kind,
                text.chars().take(400).collect::<String>()
            );
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Fails if any form of `address` (clear, upper case, keyed hash as bytes, hex or
/// base64) is anywhere in the raw storage.
fn assert_no_trace(b: &Backend, address: &str) {
    let raw = b.raw();
    let h = keyed_hash(b, address);
    let forms: Vec<(String, Vec<u8>)> = vec![
        ("clear".into(), address.as_bytes().to_vec()),
        ("upper".into(), address.to_uppercase().into_bytes()),
        ("hash bytes".into(), h.to_vec()),
        ("hash hex".into(), hex(&h).into_bytes()),
        (
            "hash base64url".into(),
            URL_SAFE_NO_PAD.encode(h).into_bytes(),
        ),
        ("hash base64".into(), STANDARD.encode(h).into_bytes()),
    ];
    for (what, needle) in forms {
        assert!(
            !contains(&raw, &needle),
            "{address} found in raw storage ({what})"
        );
    }
}

fn do_not_allow_contacts_get_an_untracked_copy_and_others_are_still_followed(b: &Backend) {
    let s = b.server(&[]);
    let tok = s.user("ann@sales.test");
    let (st, v) = s.api(
        "PUT",
        "/api/v1/contacts/%20Carol%40Client.TEST%20",
        Some(ADMIN),
        Some(json!({"follow_email": "do_not_allow"})),
    );
    assert_eq!(
        (st, v["address"].as_str()),
        (200, Some("carol@client.test")),
        "{v}"
    );
    let resp = s.follow(
        &tok,
        &email(
            "ann@sales.test",
            &["bob@client.test", "CAROL@client.test"],
            &[],
            &[],
            &["https://a.example/x"],
        ),
    );
    let bob = &resp["recipients"][0];
    let carol = &resp["recipients"][1];
    assert_eq!(
        (&bob["followed"], &bob["reason"]),
        (&json!(true), &Value::Null)
    );
    assert_eq!(
        (&carol["followed"], carol["reason"].as_str()),
        (&json!(false), Some("contact_opted_out"))
    );
    let bc = copy(bob, &s.base);
    assert!(bc.pixel.is_some() && bc.clicks.len() == 1);
    let cc = copy(carol, &s.base);
    assert!(cc.pixel.is_none(), "no pixel for an opted-out contact");
    assert!(
        cc.clicks.is_empty(),
        "no rewritten link for an opted-out contact"
    );
    assert!(
        cc.html.contains("https://a.example/x"),
        "original link kept"
    );
    assert!(!cc.html.contains("/o/") && !cc.html.contains("/c/"));
    // GET and DELETE of the preference.
    let (st, v) = s.api(
        "GET",
        "/api/v1/contacts/carol@client.test",
        Some(ADMIN),
        None,
    );
    assert_eq!(
        (st, v["follow_email"].as_str()),
        (200, Some("do_not_allow"))
    );
    assert_eq!(
        s.api("GET", "/api/v1/contacts/zed@client.test", Some(ADMIN), None)
            .0,
        404
    );
    assert_eq!(
        s.api(
            "PUT",
            "/api/v1/contacts/not-an-address",
            Some(ADMIN),
            Some(json!({"follow_email": "allow"}))
        )
        .0,
        400
    );
    assert_eq!(
        s.api(
            "PUT",
            "/api/v1/contacts/a@b.test",
            Some(ADMIN),
            Some(json!({"follow_email": "maybe"}))
        )
        .0,
        400
    );
    assert_eq!(
        s.api(
            "PUT",
            "/api/v1/contacts/a@b.test",
            Some(&tok),
            Some(json!({"follow_email": "allow"}))
        )
        .0,
        403
    );
    let (st, v) = s.api(
        "DELETE",
        "/api/v1/contacts/carol@client.test",
        Some(ADMIN),
        None,
    );
    assert_eq!((st, &v["deleted"]), (200, &json!(true)));
    let again = s.follow(
        &tok,
        &email(
            "ann@sales.test",
            &["carol@client.test"],
            &[],
            &[],
            &["https://a.example/x"],
        ),
    );
    assert_eq!(again["recipients"][0]["followed"], true);
}

fn bulk_import_is_all_or_nothing(b: &Backend) {
    let s = b.server(&[]);
    let csv = "address,follow_email\r\nA1@x.test,do_not_allow\r\n a2@x.test , allow\r\n\r\na3@x.test,do_not_allow\r\n";
    let r = agent()
        .post(&s.url("/api/v1/contacts/import"))
        .set("Authorization", &format!("Bearer {ADMIN}"))
        .set("Content-Type", "text/csv")
        .send_string(csv)
        .expect("import");
    let v: Value = r.into_json().unwrap();
    assert_eq!(v["imported"], 3);
    let (_, v) = s.api("GET", "/api/v1/contacts/a1@x.test", Some(ADMIN), None);
    assert_eq!(v["follow_email"], "do_not_allow");
    let (st, v) = s.api(
        "POST",
        "/api/v1/contacts/import",
        Some(ADMIN),
        Some(json!([
            {"address": "b1@x.test", "follow_email": "do_not_allow"},
            {"address": "broken", "follow_email": "allow"},
            {"address": "b3@x.test", "follow_email": "sometimes"},
        ])),
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_rows")),
        "{v}"
    );
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("row 2") && msg.contains("row 3"), "{msg}");
    assert_eq!(
        s.api("GET", "/api/v1/contacts/b1@x.test", Some(ADMIN), None)
            .0,
        404,
        "nothing imported"
    );
    let bad_header = agent()
        .post(&s.url("/api/v1/contacts/import"))
        .set("Authorization", &format!("Bearer {ADMIN}"))
        .set("Content-Type", "text/csv")
        .send_string("email;pref\r\nx@y.test;allow\r\n");
    assert!(matches!(bad_header, Err(ureq::Error::Status(400, _))));
}

/// An RFC 3339 time a day from now.
fn tomorrow() -> String {
    let t = std::time::SystemTime::now() + std::time::Duration::from_secs(86_400);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn export_then_erase_leaves_no_trace_and_links_keep_working(b: &Backend) {
    // The outbox needs a relay configured; the copy is due tomorrow, so
    // nothing ever connects to it.
    let mut s = b.server(&[("MAILBEACON_SMTP_URL", "smtp://127.0.0.1:9")]);
    let tok = s.user("ann@sales.test");
    let subject = "dana.subject@client.test";
    s.api(
        "PUT",
        &format!("/api/v1/contacts/{subject}"),
        Some(ADMIN),
        Some(json!({"follow_email": "allow"})),
    );
    let resp = s.follow(
        &tok,
        &email(
            "ann@sales.test",
            &["bob@client.test", "Dana <Dana.Subject@client.test>"],
            &[],
            &[],
            &["https://a.example/x"],
        ),
    );
    let id = resp["id"].as_str().unwrap().to_string();
    // A copy to Dana waiting in the outbox (sent tomorrow; no relay needed).
    let (st, queued) = s.api(
        "POST",
        "/api/v1/emails",
        Some(&tok),
        Some(json!({
            "mime": STANDARD.encode(email("ann@sales.test", &["dana.subject@client.test"], &[], &[], &[])),
            "deliver": "smtp",
            "send_at": tomorrow(),
        })),
    );
    assert_eq!(st, 201, "{queued}");
    let dana = copy(&resp["recipients"][1], &s.base);
    let bob = copy(&resp["recipients"][0], &s.base);
    // Dana also wrote to Ann, and Ann tracked that email into the CRM.
    let reply = "From: Dana <dana.subject@client.test>\r\nTo: ann@sales.test\r\n\
Subject: Re: Quarterly update\r\nMessage-ID: <dana-reply-1@client.test>\r\n\
Date: Sun, 29 Nov 2026 11:00:00 +0000\r\n\r\nThanks, DanaReplyMarker\r\n";
    let (st, act) = s.api(
        "POST",
        "/api/v1/activities",
        Some(&tok),
        Some(json!({"mime": STANDARD.encode(reply)})),
    );
    assert_eq!(st, 201, "{act}");
    let dana_ua = format!("{BROWSER_UA} DanaMarker/7");
    raw(
        "GET",
        dana.pixel.as_ref().unwrap(),
        &[("User-Agent", &dana_ua)],
    );
    raw("GET", &dana.clicks[0], &[("User-Agent", &dana_ua)]);
    raw(
        "GET",
        bob.pixel.as_ref().unwrap(),
        &[("User-Agent", BROWSER_UA)],
    );

    let (st, ex) = s.api(
        "GET",
        &format!("/api/v1/subjects/{subject}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(st, 200, "{ex}");
    assert_eq!(ex["contact"]["follow_email"], "allow");
    let got = ex["emails_received"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["email_id"] == id.as_str())
        .expect("the followed email in the export");
    assert_eq!(got["name"], "Dana");
    assert_eq!(got["subject"], "Quarterly update");
    assert_eq!(got["events"].as_array().unwrap().len(), 2, "{ex}");
    assert_eq!(got["events"][1]["link"], "https://a.example/x");
    assert_eq!(ex["activities"][0]["id"], act["id"], "{ex}");
    assert!(got["events"][0]["user_agent"]
        .as_str()
        .unwrap()
        .contains("DanaMarker"));
    // Control: before the erase, the sealed scan does see Dana (her events, the
    // live feed, the queued copy), so its silence afterwards means something.
    let before = sealed_texts(b);
    assert!(
        before.iter().any(|t| t.contains("danamarker")),
        "control: the scan cannot open the sealed events on {:?}",
        b.kind
    );
    assert!(
        before.iter().any(|t| t.contains(subject)),
        "control: the scan cannot open a sealed value naming {subject} on {:?}",
        b.kind
    );
    assert_eq!(
        s.api(
            "GET",
            &format!("/api/v1/subjects/{subject}"),
            Some(&tok),
            None
        )
        .0,
        403
    );

    let (st, er) = s.api(
        "DELETE",
        &format!("/api/v1/subjects/{subject}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(st, 200, "{er}");
    assert_eq!(er["erased"]["events"], 2);
    assert_eq!(er["erased"]["activities"], 1);
    let (st, _) = s.api(
        "GET",
        &format!("/api/v1/activities/{}", act["id"].as_str().unwrap()),
        Some(&tok),
        None,
    );
    assert_eq!(st, 404, "the tracked email with the subject is gone");
    assert_eq!(er["erased"]["contact_preference"], true);
    assert_eq!(er["erased"]["emails"], 2, "{er}");
    assert_eq!(er["erased"]["copies_cancelled"], 1, "{er}");
    assert!(er["erased"]["feed_entries"].as_u64().is_some(), "{er}");
    // Right after the erase, with the server running: the journal that held
    // Dana's events, the live feed (24 h), the outbox copy, freed pages.
    assert_no_trace(b, subject);
    assert_no_sealed_trace(b, &[subject, "DanaMarker"]);
    let (st, q) = s.api(
        "GET",
        &format!("/api/v1/emails/{}", queued["id"].as_str().unwrap()),
        Some(&tok),
        None,
    );
    assert_eq!(st, 200, "{q}");
    assert_ne!(
        q["recipients"][0]["delivery"]["state"], "queued",
        "the outbox copy to an erased recipient is cancelled: {q}"
    );
    // Idempotent.
    let (st, er2) = s.api(
        "DELETE",
        &format!("/api/v1/subjects/{subject}"),
        Some(ADMIN),
        None,
    );
    assert_eq!((st, &er2["erased"]["emails"]), (200, &json!(0)));
    // The export is now empty; the report no longer names the subject.
    let (_, ex) = s.api(
        "GET",
        &format!("/api/v1/subjects/{subject}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(ex["emails_received"], json!([]));
    assert_eq!(ex["contact"], Value::Null);
    let (_, rep) = s.api("GET", &format!("/api/v1/emails/{id}"), Some(&tok), None);
    assert!(!rep.to_string().to_lowercase().contains("dana"), "{rep}");
    assert_eq!(rep["totals"]["opens"], 1, "Bob's open stays: {rep}");
    // Links in mail already sent keep redirecting, and record nothing new.
    let (st, hs, _) = raw("GET", &dana.clicks[0], &[("User-Agent", BROWSER_UA)]);
    assert_eq!(
        (st, header(&hs, "location")),
        (302, Some("https://a.example/x"))
    );
    assert_eq!(
        raw(
            "GET",
            dana.pixel.as_ref().unwrap(),
            &[("User-Agent", BROWSER_UA)]
        )
        .0,
        200
    );
    let (_, rep) = s.api("GET", &format!("/api/v1/emails/{id}"), Some(&tok), None);
    assert_eq!(
        (
            rep["totals"]["opens"].as_u64(),
            rep["totals"]["clicks"].as_u64()
        ),
        (Some(1), Some(0))
    );
    // The audit log recorded the export and the erase, without the address.
    let (_, log) = s.api("GET", "/api/v1/audit", Some(ADMIN), None);
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "subject.erase",
        "subject.export",
        "contact.update",
        "user.create",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    assert!(!log.to_string().to_lowercase().contains("dana"), "{log}");
    // Nothing of the address is left anywhere in raw storage, in any form, once
    // the server stopped (its last hits on Dana's links are dropped).
    s.stop();
    assert_no_trace(b, subject);
    assert_no_sealed_trace(b, &[subject, "DanaMarker"]);
    // Control: the same scan does find a recipient who was not erased, so the
    // absence above means something.
    let bob = hex(&keyed_hash(b, "bob@client.test"));
    assert!(
        contains(&b.raw(), bob.as_bytes()),
        "control: the scan cannot see the index on {:?}",
        b.kind
    );
}

fn raw_storage_holds_no_plaintext_personal_data(b: &Backend) {
    let mut s = b.server(&[]);
    let tok = s.user("ann@sales.test");
    let mut raw_mail = email(
        "ann@sales.test",
        &["Zelda Quux <zelda.quux@client.test>"],
        &["xavier.yonder@client.test"],
        &["walter.bcc@partner.test"],
        &["https://shop.example/personal?u=zelda"],
    );
    raw_mail = raw_mail.replace("Quarterly update", "Confidential merger memo");
    let resp = s.follow(&tok, &raw_mail);
    let c = copy(&resp["recipients"][0], &s.base);
    raw(
        "GET",
        c.pixel.as_ref().unwrap(),
        &[("User-Agent", "Mozilla/5.0 UniqueAgentString/9.9")],
    );
    raw(
        "GET",
        &c.clicks[0],
        &[("User-Agent", "Mozilla/5.0 UniqueAgentString/9.9")],
    );
    s.stop();
    let raw = b.raw();
    for needle in [
        "zelda.quux@client.test",
        "Zelda Quux",
        "xavier.yonder@client.test",
        "walter.bcc@partner.test",
        "ann@sales.test",
        "Confidential merger memo",
        "shop.example/personal",
        "UniqueAgentString",
    ] {
        assert!(
            !contains(&raw, needle.as_bytes()),
            "{needle:?} stored in clear"
        );
    }
    // And it all reads back after a restart.
    s.restart();
    let (_, rep) = s.api(
        "GET",
        &format!("/api/v1/emails/{}", resp["id"].as_str().unwrap()),
        Some(&tok),
        None,
    );
    assert_eq!(rep["subject"], "Confidential merger memo");
    assert_eq!(rep["recipients"][0]["address"], "zelda.quux@client.test");
    assert_eq!(rep["recipients"][0]["opens"], 1);
}

fn key_rotation_keeps_sealed_data_readable(b: &Backend) {
    let s = b.server(&[]);
    let tok = s.user("ann@sales.test");
    let resp = s.follow(
        &tok,
        &email("ann@sales.test", &["bob@client.test"], &[], &[], &[]),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailbeacon"))
        .args(["keys", "rotate"])
        .envs(b.env())
        .output()
        .unwrap();
    assert!(out.status.success());
    // Wait for the server to load the new ring (it audits the rotation).
    let t0 = std::time::Instant::now();
    loop {
        let (_, log) = s.api("GET", "/api/v1/audit", Some(ADMIN), None);
        if log.to_string().contains("keys.rotate") {
            break;
        }
        assert!(t0.elapsed().as_secs() < 10, "rotation not picked up: {log}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let newer = s.follow(
        &tok,
        &email("ann@sales.test", &["carol@client.test"], &[], &[], &[]),
    );
    for (r, who) in [(&resp, "bob@client.test"), (&newer, "carol@client.test")] {
        let (_, rep) = s.api(
            "GET",
            &format!("/api/v1/emails/{}", r["id"].as_str().unwrap()),
            Some(&tok),
            None,
        );
        assert_eq!(rep["recipients"][0]["address"], who, "{rep}");
    }
}

/// Every file the server writes is 0600 in 0700 directories (the redb file,
/// the journal, the key ring), also files an older version left readable.
#[test]
fn data_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = TempDir::new("modes");
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let old = dir.join("left-by-an-old-version");
    std::fs::write(&old, b"x").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut s = Server::start_in(&dir, &[]);
    let tok = s.user("ann@sales.test");
    let (_, copy) = s.follow_one(&tok, "bob@client.test", "https://shop.example/a");
    assert_eq!(raw("GET", &copy.pixel.expect("pixel"), &[]).0, 200);
    s.stop();
    let mut stack = vec![dir.clone()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", p.display());
                files += 1;
            }
        }
    }
    assert!(files >= 3, "the store wrote its files");
}
