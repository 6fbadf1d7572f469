//! Auto Capture against a real IMAP server (a private Dovecot started by the
//! harness, seeded from `tests/fixtures/mailbox`): connecting a mailbox,
//! listing the emails exchanged with a contact in the last days, excluding
//! tracked ones, tracking one from the list, both switches — and, after
//! listing, a scan of the store's raw bytes proving nothing listed was written.

mod support;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use support::dovecot::{Dovecot, PASSWORD, USER};
use support::*;

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

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn subjects(v: &Value) -> Vec<String> {
    v["emails"]
        .as_array()
        .unwrap_or_else(|| panic!("emails in {v}"))
        .iter()
        .map(|e| {
            e["subject"]
                .as_str()
                .unwrap_or("")
                .split(' ')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect()
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

#[test]
fn capture_lists_excludes_tracked_tracks_one_and_writes_nothing() {
    let imap = Dovecot::start();
    let s = Server::start_local_outbound();
    let alice = s.user(USER);

    // A wrong password is refused, and nothing is kept.
    let (st, v) = s.api(
        "PUT",
        "/api/v1/mailbox",
        Some(&alice),
        Some(json!({"host": "127.0.0.1", "port": imap.port, "tls": "none", "username": USER, "password": "wrong"})),
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("mailbox_login_failed")),
        "{v}"
    );
    connect(&s, &alice, &imap);
    let (st, v) = s.api("GET", "/api/v1/mailbox", Some(&alice), None);
    assert_eq!(st, 200);
    assert_eq!(
        v,
        json!({"connected": true, "host": "127.0.0.1", "port": imap.port, "tls": "none", "username": USER, "auth": "password"})
    );
    assert!(
        !v.to_string().contains(PASSWORD),
        "the password is never echoed"
    );

    // Echo is tracked before listing (same Message-ID as the mailbox copy).
    let echo = "From: bob@client.test\r\nTo: alice@example.test\r\nSubject: Capture-Echo already tracked\r\nMessage-ID: <echo@mailbox.test>\r\n\r\nx\r\n";
    let (st, _) = s.api(
        "POST",
        "/api/v1/activities",
        Some(&alice),
        Some(json!({"mime": STANDARD.encode(echo)})),
    );
    assert_eq!(st, 201);

    let before = store_bytes(&s);
    let (st, v) = s.api(
        "GET",
        "/api/v1/capture?contact=Bob@Client.test",
        Some(&alice),
        None,
    );
    assert_eq!(st, 200, "{v}");
    // Newest first: Foxtrot (sent, 4h), Alpha (5h), Golf (sent, Bob in Cc, 20h),
    // Bravo (30h). Not Echo (tracked), Charlie (other contact), Delta (10 days).
    assert_eq!(
        subjects(&v),
        [
            "Capture-Foxtrot",
            "Capture-Alpha",
            "Capture-Golf",
            "Capture-Bravo"
        ],
        "{v}"
    );
    let first = &v["emails"][0];
    assert_eq!(
        (first["folder"].as_str(), first["direction"].as_str()),
        (Some("Sent"), Some("outgoing")),
        "{first}"
    );
    assert_eq!(v["emails"][1]["folder"], "INBOX");
    assert_eq!(v["emails"][1]["direction"], "incoming");
    assert_eq!(v["emails"][1]["message_id"], "alpha@mailbox.test");
    // Limits.
    let (_, v2) = s.api(
        "GET",
        "/api/v1/capture?contact=bob@client.test&limit=2",
        Some(&alice),
        None,
    );
    assert_eq!(subjects(&v2), ["Capture-Foxtrot", "Capture-Alpha"]);
    let (_, v1) = s.api(
        "GET",
        "/api/v1/capture?contact=bob@client.test&days=1",
        Some(&alice),
        None,
    );
    assert_eq!(
        subjects(&v1),
        ["Capture-Foxtrot", "Capture-Alpha", "Capture-Golf"]
    );
    let (_, none) = s.api(
        "GET",
        "/api/v1/capture?contact=nobody@client.test",
        Some(&alice),
        None,
    );
    assert_eq!(none["emails"], json!([]));

    // Nothing of what was listed reached the store, and the store did not change.
    let after = store_bytes(&s);
    for marker in [
        "Capture-Alpha",
        "Capture-Bravo",
        "Capture-Foxtrot",
        "Capture-Golf",
        "alpha@mailbox.test",
        "bravo@mailbox.test",
        "AlphaBodyMarker",
        "Bob Client",
    ] {
        assert!(
            !contains(&after, marker),
            "{marker} was written to the store"
        );
    }
    assert!(after == before, "listing changed the store's files");
    assert!(
        !s.log_text().contains("Capture-Alpha"),
        "subjects are not logged"
    );

    // Track Bravo from the list: fetched by UID, stored like any tracked email.
    let bravo = v["emails"][3].clone();
    let (st, a) = s.api(
        "POST",
        "/api/v1/capture/track",
        Some(&alice),
        Some(json!({"folder": bravo["folder"], "uid": bravo["uid"], "regarding": {"type": "contact", "id": "BOB"}})),
    );
    assert_eq!(st, 201, "{a}");
    assert_eq!(a["subject"], "Capture-Bravo contract draft");
    assert_eq!(a["source"], "capture");
    assert_eq!(a["direction"], "incoming");
    assert_eq!(a["regarding"]["id"], "BOB");
    let (_, full) = s.api(
        "GET",
        &format!("/api/v1/activities/{}", a["id"].as_str().unwrap()),
        Some(&alice),
        None,
    );
    assert!(
        full["body_text"]
            .as_str()
            .unwrap()
            .contains("BravoBodyMarker"),
        "{full}"
    );
    // Tracking it again answers the same activity.
    let (st, again) = s.api(
        "POST",
        "/api/v1/capture/track",
        Some(&alice),
        Some(json!({"folder": bravo["folder"], "uid": bravo["uid"]})),
    );
    assert_eq!((st, &again["id"]), (200, &a["id"]));
    // It leaves the list; the store changed (it holds the tracked email now, read
    // back above through the API), and holds it sealed, not in clear.
    let (_, v) = s.api(
        "GET",
        "/api/v1/capture?contact=bob@client.test",
        Some(&alice),
        None,
    );
    assert_eq!(
        subjects(&v),
        ["Capture-Foxtrot", "Capture-Alpha", "Capture-Golf"]
    );
    let bytes = store_bytes(&s);
    assert!(bytes != after, "tracking wrote the email to the store");
    assert!(
        !contains(&bytes, "BravoBodyMarker") && !contains(&bytes, "Capture-Bravo"),
        "the tracked email is sealed at rest"
    );
    assert!(!contains(&bytes, "AlphaBodyMarker") && !contains(&bytes, "Capture-Foxtrot"));

    // Unknown UID / folder.
    let (st, e) = s.api(
        "POST",
        "/api/v1/capture/track",
        Some(&alice),
        Some(json!({"folder": "INBOX", "uid": 9999})),
    );
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{e}"
    );
    let (st, e) = s.api(
        "POST",
        "/api/v1/capture/track",
        Some(&alice),
        Some(json!({"folder": "Nope", "uid": 1})),
    );
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{e}"
    );
}

#[test]
fn capture_switches_off() {
    let imap = Dovecot::start();
    let s = Server::start_local_outbound();
    let alice = s.user(USER);
    connect(&s, &alice, &imap);
    let list = |s: &Server| {
        s.api(
            "GET",
            "/api/v1/capture?contact=bob@client.test",
            Some(&alice),
            None,
        )
    };
    let track = |s: &Server| {
        s.api(
            "POST",
            "/api/v1/capture/track",
            Some(&alice),
            Some(json!({"folder": "INBOX", "uid": 1})),
        )
    };
    assert_eq!(list(&s).0, 200);
    // The user switches it off for themselves.
    s.api(
        "PUT",
        "/api/v1/me/settings",
        Some(&alice),
        Some(json!({"auto_capture": false})),
    );
    for (st, v) in [list(&s), track(&s)] {
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (403, Some("auto_capture_disabled")),
            "{v}"
        );
    }
    s.api(
        "PUT",
        "/api/v1/me/settings",
        Some(&alice),
        Some(json!({"auto_capture": true})),
    );
    assert_eq!(list(&s).0, 200);
    // An admin switches it off for everyone.
    s.api(
        "PUT",
        "/api/v1/settings",
        Some(ADMIN),
        Some(json!({"auto_capture": false})),
    );
    for (st, v) in [list(&s), track(&s)] {
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (403, Some("auto_capture_disabled")),
            "{v}"
        );
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("organization"));
    }
    // Tracking from the pane (not Auto Capture) still works.
    let raw = "From: bob@client.test\r\nTo: alice@example.test\r\nSubject: x\r\nMessage-ID: <sw@x>\r\n\r\nx\r\n";
    assert_eq!(
        s.api(
            "POST",
            "/api/v1/activities",
            Some(&alice),
            Some(json!({"mime": STANDARD.encode(raw)}))
        )
        .0,
        201
    );
    s.api(
        "PUT",
        "/api/v1/settings",
        Some(ADMIN),
        Some(json!({"auto_capture": true})),
    );
    assert_eq!(list(&s).0, 200);
}
