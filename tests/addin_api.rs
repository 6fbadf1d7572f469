//! The add-in API against the real binary: tracking emails as Email Activities
//! (dedup on Message-ID, reply linking, regarding, untrack), permissions for
//! each role, follow from compose (message-level tracking), user settings, bad
//! input, and retention of activities in the embedded store.

mod support;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use support::*;

fn offer(id: &str, from: &str, to: &str) -> String {
    format!(
        "From: Ann <{from}>\r\nTo: Bob <{to}>\r\nSubject: Offer 42\r\nMessage-ID: <{id}>\r\n\
Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
<p>Our offer, see <a href=\"https://shop.example/o\">here</a>.</p>\r\n--m\r\n\
Content-Type: application/pdf; name=\"offer.pdf\"\r\nContent-Disposition: attachment; filename=\"offer.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--m--\r\n"
    )
}

fn reply(id: &str, parent: &str, from: &str, to: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: Re: Offer 42\r\nMessage-ID: <{id}>\r\nIn-Reply-To: <{parent}>\r\n\
References: <{parent}>\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\n\r\nYes please.\r\n"
    )
}

fn track(s: &Server, tok: &str, raw: &str, regarding: Option<Value>) -> (u16, Value) {
    let mut body = json!({"mime": STANDARD.encode(raw)});
    if let Some(r) = regarding {
        body["regarding"] = r;
    }
    s.api("POST", "/api/v1/activities", Some(tok), Some(body))
}

#[test]
fn track_status_dedup_reply_regarding_untrack() {
    let s = Server::start();
    let ann = s.user("ann@sales.test");
    let (st, a) = track(
        &s,
        &ann,
        &offer("o1@sales.test", "ann@sales.test", "bob@client.test"),
        Some(json!({"type": "opportunity", "id": "OPP-7"})),
    );
    assert_eq!(st, 201, "{a}");
    let id = a["id"].as_str().unwrap().to_string();
    assert_eq!(a["direction"], "outgoing");
    assert_eq!(a["message_id"], "o1@sales.test");
    assert_eq!(a["conversation"], "o1@sales.test");
    assert_eq!(a["subject"], "Offer 42");
    assert_eq!(a["from"]["address"], "ann@sales.test");
    assert_eq!(a["to"][0]["address"], "bob@client.test");
    assert_eq!(
        a["regarding"],
        json!({"type": "opportunity", "id": "OPP-7"})
    );
    assert_eq!(
        a["attachments"],
        json!([{"name": "offer.pdf", "size": 9, "content_type": "application/pdf"}])
    );
    assert_eq!(a["source"], "addin");

    // Status by Message-ID (with or without brackets).
    let (st, v) = s.api(
        "GET",
        "/api/v1/activities?message_id=%3Co1%40sales.test%3E",
        Some(&ann),
        None,
    );
    assert_eq!(
        (st, &v["tracked"], &v["activity"]["id"]),
        (200, &json!(true), &json!(id)),
        "{v}"
    );
    let (_, v) = s.api(
        "GET",
        "/api/v1/activities?message_id=nope@x",
        Some(&ann),
        None,
    );
    assert_eq!(v["tracked"], false);

    // Tracking the same message again answers the existing activity, 200.
    let (st, v) = track(
        &s,
        &ann,
        &offer("o1@sales.test", "ann@sales.test", "bob@client.test"),
        None,
    );
    assert_eq!((st, v["id"].as_str()), (200, Some(id.as_str())), "{v}");
    assert_eq!(v["existing"], true);

    // Full record with bodies.
    let (st, full) = s.api("GET", &format!("/api/v1/activities/{id}"), Some(&ann), None);
    assert_eq!(st, 200);
    assert!(
        full["body_html"].as_str().unwrap().contains("Our offer"),
        "{full}"
    );

    // Bob's reply is linked to the tracked offer and inherits its regarding.
    let (st, r) = track(
        &s,
        &ann,
        &reply(
            "r1@client.test",
            "o1@sales.test",
            "bob@client.test",
            "ann@sales.test",
        ),
        None,
    );
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["direction"], "incoming");
    assert_eq!(r["reply_to"], json!(id));
    assert_eq!(r["conversation"], "o1@sales.test");
    assert_eq!(r["regarding"]["id"], "OPP-7");

    // Change, then clear, the regarding record.
    let (st, v) = s.api(
        "PUT",
        &format!("/api/v1/activities/{id}/regarding"),
        Some(&ann),
        Some(json!({"type": "account", "id": "ACME"})),
    );
    assert_eq!(
        (st, &v["regarding"]["type"]),
        (200, &json!("account")),
        "{v}"
    );
    let (st, v) = s.api(
        "PUT",
        &format!("/api/v1/activities/{id}/regarding"),
        Some(&ann),
        Some(Value::Null),
    );
    assert_eq!((st, &v["regarding"]), (200, &Value::Null), "{v}");
    let (st, v) = s.api(
        "PUT",
        &format!("/api/v1/activities/{id}/regarding"),
        Some(&ann),
        Some(json!({"type": "", "id": "x"})),
    );
    assert_eq!(
        (st, &v["error"]["code"]),
        (400, &json!("invalid_regarding"))
    );

    // Listing.
    let (_, v) = s.api("GET", "/api/v1/activities", Some(&ann), None);
    assert_eq!(v["activities"].as_array().unwrap().len(), 2);

    // Untrack: gone, and the status flips back.
    let (st, v) = s.api(
        "DELETE",
        &format!("/api/v1/activities/{id}"),
        Some(&ann),
        None,
    );
    assert_eq!((st, &v["tracked"]), (200, &json!(false)), "{v}");
    let (st, _) = s.api("GET", &format!("/api/v1/activities/{id}"), Some(&ann), None);
    assert_eq!(st, 404);
    let (_, v) = s.api(
        "GET",
        "/api/v1/activities?message_id=o1@sales.test",
        Some(&ann),
        None,
    );
    assert_eq!(v["tracked"], false);
    let (st, _) = s.api(
        "DELETE",
        &format!("/api/v1/activities/{id}"),
        Some(&ann),
        None,
    );
    assert_eq!(st, 404);
    // ... and it can be tracked again.
    let (st, _) = track(
        &s,
        &ann,
        &offer("o1@sales.test", "ann@sales.test", "bob@client.test"),
        None,
    );
    assert_eq!(st, 201);
}

#[test]
fn a_reply_links_only_the_callers_own_parent() {
    let s = Server::start();
    let ann = s.user("ann@sales.test");
    let eve = s.user("eve@sales.test");
    let (st, a) = track(
        &s,
        &ann,
        &offer("q1@sales.test", "ann@sales.test", "bob@client.test"),
        Some(json!({"type": "opportunity", "id": "OPP-SECRET"})),
    );
    assert_eq!(st, 201, "{a}");
    // Eve tracks a reply to Ann's message: Ann's activity is neither linked
    // nor its regarding record inherited.
    let (st, r) = track(
        &s,
        &eve,
        &reply(
            "q2@client.test",
            "q1@sales.test",
            "bob@client.test",
            "eve@sales.test",
        ),
        None,
    );
    assert_eq!(st, 201, "{r}");
    assert_eq!(
        (&r["reply_to"], &r["regarding"]),
        (&Value::Null, &Value::Null),
        "{r}"
    );
    assert!(!r.to_string().contains("OPP-SECRET"), "{r}");
    // Ann tracking the same reply links her own parent.
    let (st, r) = track(
        &s,
        &ann,
        &reply(
            "q2@client.test",
            "q1@sales.test",
            "bob@client.test",
            "ann@sales.test",
        ),
        None,
    );
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["reply_to"], a["id"], "{r}");
    assert_eq!(r["regarding"]["id"], "OPP-SECRET");
    // The regarding record is sealed at rest: not in any data file's bytes.
    let mut stack = vec![s.data_dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("data dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap_or_default();
                assert!(
                    !bytes.windows(10).any(|w| w == b"OPP-SECRET"),
                    "{} holds the regarding record in clear",
                    p.display()
                );
            }
        }
    }
}

#[test]
fn activities_are_visible_to_owner_and_admins_only() {
    let s = Server::start();
    let ann = s.user("ann@sales.test");
    let eve = s.user("eve@sales.test");
    let (_, a) = track(
        &s,
        &ann,
        &offer("p1@sales.test", "ann@sales.test", "bob@client.test"),
        None,
    );
    let id = a["id"].as_str().unwrap();
    let path = format!("/api/v1/activities/{id}");
    // Another user: 404 everywhere, nothing revealed (not even "tracked").
    assert_eq!(s.api("GET", &path, Some(&eve), None).0, 404);
    assert_eq!(s.api("DELETE", &path, Some(&eve), None).0, 404);
    assert_eq!(
        s.api(
            "PUT",
            &format!("{path}/regarding"),
            Some(&eve),
            Some(json!({"type":"a","id":"b"}))
        )
        .0,
        404
    );
    let (st, v) = s.api(
        "GET",
        "/api/v1/activities?message_id=p1@sales.test",
        Some(&eve),
        None,
    );
    assert_eq!(
        (st, &v["tracked"], &v["activity"]),
        (200, &json!(false), &Value::Null),
        "{v}"
    );
    let (_, v) = s.api("GET", "/api/v1/activities", Some(&eve), None);
    assert_eq!(v["activities"], json!([]));
    // Ann's tracking does not block Eve's: she gets her own activity.
    let (st, v) = track(
        &s,
        &eve,
        &offer("p1@sales.test", "ann@sales.test", "bob@client.test"),
        None,
    );
    assert_eq!(st, 201, "{v}");
    let eves = v["id"].as_str().expect("eve's own activity").to_string();
    assert_ne!(eves, id);
    let (_, v) = s.api("GET", "/api/v1/activities", Some(&eve), None);
    assert_eq!(v["activities"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["activities"][0]["id"], json!(eves));
    let (_, v) = s.api(
        "GET",
        "/api/v1/activities?message_id=p1@sales.test",
        Some(&ann),
        None,
    );
    assert_eq!(v["activity"]["id"], json!(id), "{v}");
    // An admin sees it.
    let (st, v) = s.api("GET", &path, Some(ADMIN), None);
    assert_eq!((st, &v["subject"]), (200, &json!("Offer 42")));
    // No token: 401.
    assert_eq!(s.api("GET", &path, None, None).0, 401);
    // The owner still sees it.
    assert_eq!(s.api("GET", &path, Some(&ann), None).0, 200);
}

#[test]
fn bad_input_is_a_clear_json_error() {
    let s = Server::start();
    let ann = s.user("ann@sales.test");
    let cases: Vec<(&str, &str, Option<Value>, u16, &str)> = vec![
        (
            "POST",
            "/api/v1/activities",
            Some(json!({"mime": "%%%"})),
            400,
            "invalid_mime",
        ),
        (
            "POST",
            "/api/v1/activities",
            Some(json!({"mime": STANDARD.encode("just text")})),
            400,
            "malformed_mime",
        ),
        (
            "POST",
            "/api/v1/activities",
            Some(json!({"mime": STANDARD.encode("\x00\x01\x02\x03")})),
            400,
            "malformed_mime",
        ),
        (
            "POST",
            "/api/v1/activities",
            Some(json!({"nope": 1})),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/activities",
            Some(
                json!({"mime": STANDARD.encode(offer("x@y", "a@b.test", "c@d.test")), "regarding": {"type": "x"}}),
            ),
            400,
            "invalid_json",
        ),
        ("GET", "/api/v1/activities/zzz", None, 404, "not_found"),
        (
            "GET",
            "/api/v1/activities?message_id=",
            None,
            400,
            "invalid_message_id",
        ),
        (
            "PATCH",
            "/api/v1/activities",
            None,
            405,
            "method_not_allowed",
        ),
        (
            "POST",
            "/api/v1/compose/follow",
            Some(json!({"html": "<p>x</p>"})),
            400,
            "no_recipients",
        ),
        (
            "POST",
            "/api/v1/compose/follow",
            Some(json!({"html": " ", "to": ["a@b.test"]})),
            400,
            "invalid_html",
        ),
        (
            "POST",
            "/api/v1/compose/follow",
            Some(json!({"html": "<p>x</p>", "to": ["nope"]})),
            400,
            "invalid_email",
        ),
        (
            "PUT",
            "/api/v1/me/settings",
            Some(json!({"auto_capture": "yes"})),
            400,
            "invalid_json",
        ),
        (
            "PUT",
            "/api/v1/mailbox",
            Some(json!({"host": "a b", "tls": "none", "username": "u", "password": "p"})),
            400,
            "invalid_mailbox",
        ),
        (
            "PUT",
            "/api/v1/mailbox",
            Some(json!({"host": "h", "tls": "ssl", "username": "u", "password": "p"})),
            400,
            "invalid_mailbox",
        ),
        (
            "PUT",
            "/api/v1/mailbox",
            Some(json!({"host": "h", "tls": "none", "username": "u"})),
            400,
            "invalid_mailbox",
        ),
        ("GET", "/api/v1/mailbox", None, 409, "mailbox_not_connected"),
        ("GET", "/api/v1/capture", None, 400, "invalid_contact"),
        (
            "GET",
            "/api/v1/capture?contact=bob@client.test&days=99",
            None,
            400,
            "invalid_days",
        ),
        (
            "GET",
            "/api/v1/capture?contact=bob@client.test",
            None,
            409,
            "mailbox_not_connected",
        ),
        (
            "POST",
            "/api/v1/capture/track",
            Some(json!({"folder": "INBOX"})),
            400,
            "invalid_json",
        ),
    ];
    for (m, p, b, status, code) in cases {
        let (st, v) = s.api(m, p, Some(&ann), b);
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{m} {p}: {v}"
        );
    }
    // A mailbox on a non-public address is refused (no allow-list here) and
    // not stored.
    let port = free_port();
    let (st, v) = s.api("PUT", "/api/v1/mailbox", Some(&ann), Some(json!({"host": "127.0.0.1", "port": port, "tls": "none", "username": "u", "password": "p"})));
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("target_not_allowed")),
        "{v}"
    );
    assert_eq!(s.api("GET", "/api/v1/mailbox", Some(&ann), None).0, 409);
}

#[test]
fn user_settings_and_org_switch() {
    let s = Server::start();
    let ann = s.user("ann@sales.test");
    let (st, v) = s.api("GET", "/api/v1/me/settings", Some(&ann), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (
            v["auto_capture"].clone(),
            v["auto_capture_effective"].clone()
        ),
        (json!(true), json!(true))
    );
    let (_, v) = s.api(
        "PUT",
        "/api/v1/me/settings",
        Some(&ann),
        Some(json!({"auto_capture": false})),
    );
    assert_eq!(
        (
            v["auto_capture"].clone(),
            v["auto_capture_effective"].clone()
        ),
        (json!(false), json!(false))
    );
    // Capture is refused, and the message says who switched it off.
    let refused_because = |why: &str| {
        let (st, v) = s.api(
            "GET",
            "/api/v1/capture?contact=bob@client.test",
            Some(&ann),
            None,
        );
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (403, Some("auto_capture_disabled")),
            "{v}"
        );
        assert!(v["error"]["message"].as_str().unwrap().contains(why), "{v}");
    };
    refused_because("you switched");
    s.api(
        "PUT",
        "/api/v1/me/settings",
        Some(&ann),
        Some(json!({"auto_capture": true})),
    );
    s.api(
        "PUT",
        "/api/v1/settings",
        Some(ADMIN),
        Some(json!({"auto_capture": false})),
    );
    refused_because("organization");
    let (_, v) = s.api("GET", "/api/v1/me/settings", Some(&ann), None);
    assert_eq!(
        (
            v["auto_capture"].clone(),
            v["auto_capture_effective"].clone()
        ),
        (json!(true), json!(false))
    );
}

#[test]
fn follow_from_compose_is_message_level_and_links_the_sent_item() {
    let s = Server::start();
    let ann = s.user("ann@sales.test");
    let draft = "<html><body><p>Hi</p><a href=\"https://docs.example/x?a=1&amp;b=2\">doc</a> <a href=\"mailto:q@x.test\">m</a></body></html>";
    let (st, v) = s.api("POST", "/api/v1/compose/follow", Some(&ann), Some(json!({
        "html": draft, "to": ["bob@client.test", "carol@client.test"], "cc": ["dan@client.test"], "subject": "Hello"
    })));
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["tracking"], "message");
    let html = v["html"].as_str().unwrap();
    let email_id = v["email_id"].as_str().unwrap().to_string();
    assert!(
        html.contains(&format!("{}/o/", s.base)),
        "pixel added: {html}"
    );
    assert!(
        html.contains(&format!("{}/c/", s.base)),
        "link rewritten: {html}"
    );
    assert!(html.contains("mailto:q@x.test"), "mailto kept: {html}");
    assert!(
        !html.contains("bob@client.test"),
        "no address in the body: {html}"
    );
    // An open and a click count for "recipient unknown".
    let pixel = html
        .split(&format!("{}/o/", s.base))
        .nth(1)
        .unwrap()
        .split(".gif")
        .next()
        .unwrap();
    let pixel = format!("{}/o/{pixel}.gif", s.base);
    assert_eq!(raw("GET", &pixel, &[("User-Agent", BROWSER_UA)]).0, 200);
    let click = html
        .split(&format!("{}/c/", s.base))
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let (st, hs, _) = raw(
        "GET",
        &format!("{}/c/{click}", s.base),
        &[("User-Agent", BROWSER_UA)],
    );
    assert_eq!(
        (st, header(&hs, "location")),
        (302, Some("https://docs.example/x?a=1&b=2"))
    );
    let (_, rep) = s.api(
        "GET",
        &format!("/api/v1/emails/{email_id}"),
        Some(&ann),
        None,
    );
    assert_eq!(rep["recipients"].as_array().unwrap().len(), 1, "{rep}");
    assert_eq!(rep["recipients"][0]["address"], "recipient unknown");
    assert_eq!(rep["recipients"][0]["opens"], 1);
    assert_eq!(rep["recipients"][0]["clicks"], 1);
    // Tracking the sent item (its body carries the pixel) links the engagement.
    let sent = format!(
        "From: ann@sales.test\r\nTo: bob@client.test\r\nSubject: Hello\r\nMessage-ID: <sent1@sales.test>\r\n\
MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        STANDARD.encode(html)
    );
    let (st, a) = track(&s, &ann, &sent, None);
    assert_eq!(
        (st, a["email_id"].as_str()),
        (201, Some(email_id.as_str())),
        "{a}"
    );
    // Email Engagement off: following from compose is refused, with the reason.
    s.api(
        "PUT",
        "/api/v1/settings",
        Some(ADMIN),
        Some(json!({"email_engagement": false})),
    );
    let (st, v) = s.api(
        "POST",
        "/api/v1/compose/follow",
        Some(&ann),
        Some(json!({"html": draft, "to": ["bob@client.test"]})),
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (403, Some("engagement_disabled"))
    );
}

#[test]
fn activities_expire_with_retention() {
    use mailbeacon::model::{Activity, ActivityPersonal};
    use mailbeacon::seal::Sealer;
    use mailbeacon::store::addin::Inserted;
    use mailbeacon::store::{embedded::Embedded, Backend, Store};
    let dir = TempDir::new("act-sweep");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::new(
            Backend::Embedded(Embedded::open(dir.path()).unwrap()),
            Sealer::new(&[(1, vec![5; 32])], 1, b"lookup").unwrap(),
        );
        let mk = |id: u64, mid: &str, expires_ms: u64| Activity {
            id,
            owner: 1,
            message_id: mid.into(),
            conversation: mid.into(),
            reply_to: None,
            direction: "incoming".into(),
            regarding: None,
            email_id: None,
            source: "addin".into(),
            sent_ms: None,
            created_ms: 10,
            expires_ms,
            personal: ActivityPersonal { subject: Some("s".into()), ..Default::default() },
            sealed: None,
            lookups: Vec::new(),
        };
        assert_eq!(store.insert_activity(mk(1, "old@x", 1_000)).await.unwrap(), Inserted::New);
        assert_eq!(store.insert_activity(mk(2, "new@x", 5_000)).await.unwrap(), Inserted::New);
        assert!(matches!(store.insert_activity(mk(3, "new@x", 9_000)).await.unwrap(), Inserted::Existing(a) if a.id == 2));
        assert_eq!(store.sweep(2_000, 0).await.unwrap(), 1);
        assert_eq!(store.get_activity(1).await.unwrap(), None);
        assert_eq!(store.activity_by_message_id(1, "old@x".into()).await.unwrap(), None);
        assert!(store.get_activity(2).await.unwrap().is_some());
        assert_eq!(store.tracked_message_ids(1, vec!["old@x".into(), "new@x".into()]).await.unwrap(), [false, true]);
        store.close().await.unwrap();
    });
}
