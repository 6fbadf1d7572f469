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

/// The keyed hash the server uses for `address`, from the backend's key ring.
fn keyed_hash(b: &Backend, address: &str) -> [u8; 32] {
    let ring: Value = serde_json::from_str(&b.keyring()).unwrap();
    let secret = STANDARD.decode(ring["lookup"].as_str().unwrap()).unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let tag = ring::hmac::sign(&key, address.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
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

fn export_then_erase_leaves_no_trace_and_links_keep_working(b: &Backend) {
    let s = b.server(&[]);
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
    raw(
        "GET",
        dana.pixel.as_ref().unwrap(),
        &[("User-Agent", BROWSER_UA)],
    );
    raw("GET", &dana.clicks[0], &[("User-Agent", BROWSER_UA)]);
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
    let got = &ex["emails_received"][0];
    assert_eq!(got["email_id"], id.as_str());
    assert_eq!(got["name"], "Dana");
    assert_eq!(got["subject"], "Quarterly update");
    assert_eq!(got["events"].as_array().unwrap().len(), 2, "{ex}");
    assert_eq!(got["events"][1]["link"], "https://a.example/x");
    assert_eq!(ex["activities"][0]["id"], act["id"], "{ex}");
    assert!(got["events"][0]["user_agent"]
        .as_str()
        .unwrap()
        .contains("Chrome"));
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
    assert_eq!(er["erased"]["emails"], 1);
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
    // Nothing of the address is left anywhere in raw storage, in any form.
    drop(s);
    assert_no_trace(b, subject);
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
