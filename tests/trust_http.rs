//! Trust, HTTP side (issue 11): accounts (list, disable, new token), compose
//! and contact opt-outs, the sender check over every From and Sender mailbox,
//! huge address and References lists, the shared byte budget, slow bodies, the
//! connection cap, the add-in's security headers, and `/metrics`.

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use support::*;

fn status_of(resp: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(resp);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Reads what the server sends until it closes or is quiet for `quiet`.
fn read_all(s: &mut TcpStream, quiet: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(quiet)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// Opens a POST to the emails endpoint declaring `len` body bytes and sends
/// only `sent` of them.
fn partial_post(port: u16, len: usize, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let head = format!(
        "POST /api/v1/emails HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&vec![b' '; sent]).unwrap();
    s
}

#[test]
fn accounts_listed_disabled_and_tokens_replaced() {
    let s = Server::start();
    let ann = s.user("ann@sales.test");
    let (st, bob) = s.api(
        "POST",
        "/api/v1/users",
        Some(ADMIN),
        Some(json!({"email": "bob@sales.test", "role": "admin"})),
    );
    assert_eq!(st, 201, "{bob}");
    let bob_id = bob["id"].as_str().unwrap().to_string();
    let bob_tok = bob["token"].as_str().unwrap().to_string();

    // Listing: admins only, paged with a cursor.
    assert_eq!(s.api("GET", "/api/v1/users", Some(&ann), None).0, 403);
    let (st, page) = s.api("GET", "/api/v1/users?limit=1", Some(ADMIN), None);
    assert_eq!(st, 200, "{page}");
    assert_eq!(page["users"].as_array().unwrap().len(), 1);
    assert_eq!(page["users"][0]["email"], "bob@sales.test", "newest first");
    assert!(page["users"][0].get("token").is_none());
    let next = page["next"].as_str().expect("a next cursor").to_string();
    let (_, page2) = s.api(
        "GET",
        &format!("/api/v1/users?limit=1&before={next}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(page2["users"][0]["email"], "ann@sales.test");
    let ann_id = page2["users"][0]["id"].as_str().unwrap().to_string();

    // Disabled: the token answers 401 at once; enabled again, it works.
    assert_eq!(s.api("GET", "/api/v1/emails", Some(&ann), None).0, 200);
    let (st, v) = s.api(
        "PATCH",
        &format!("/api/v1/users/{ann_id}"),
        Some(ADMIN),
        Some(json!({"disabled": true})),
    );
    assert_eq!((st, &v["disabled"]), (200, &json!(true)), "{v}");
    let (st, v) = s.api("GET", "/api/v1/emails", Some(&ann), None);
    assert_eq!(st, 401, "{v}");
    s.api(
        "PATCH",
        &format!("/api/v1/users/{ann_id}"),
        Some(ADMIN),
        Some(json!({"disabled": false})),
    );
    assert_eq!(s.api("GET", "/api/v1/emails", Some(&ann), None).0, 200);

    // A new token: the old one is dead from then on.
    let (st, v) = s.api(
        "POST",
        &format!("/api/v1/users/{ann_id}/token"),
        Some(ADMIN),
        None,
    );
    assert_eq!(st, 201, "{v}");
    let fresh = v["token"].as_str().unwrap().to_string();
    assert_eq!(s.api("GET", "/api/v1/emails", Some(&ann), None).0, 401);
    assert_eq!(s.api("GET", "/api/v1/emails", Some(&fresh), None).0, 200);

    // Roles: bad input, unknown users, the last admin.
    let (st, v) = s.api(
        "PATCH",
        &format!("/api/v1/users/{ann_id}"),
        Some(ADMIN),
        Some(json!({"role": "root"})),
    );
    assert_eq!((st, &v["error"]["code"]), (400, &json!("invalid_role")));
    assert_eq!(
        s.api(
            "PATCH",
            "/api/v1/users/zzzz",
            Some(ADMIN),
            Some(json!({"disabled": true}))
        )
        .0,
        404
    );
    let (st, v) = s.api(
        "PATCH",
        &format!("/api/v1/users/{bob_id}"),
        Some(&bob_tok),
        Some(json!({"role": "user"})),
    );
    assert_eq!(
        (st, &v["error"]["code"]),
        (409, &json!("last_admin")),
        "{v}"
    );
    let (st, _) = s.api(
        "PATCH",
        &format!("/api/v1/users/{ann_id}"),
        Some(&bob_tok),
        Some(json!({"role": "admin"})),
    );
    assert_eq!(st, 200);
    let (st, v) = s.api(
        "PATCH",
        &format!("/api/v1/users/{bob_id}"),
        Some(&bob_tok),
        Some(json!({"disabled": true})),
    );
    assert_eq!(st, 200, "with another admin, an admin may step down: {v}");
    assert_eq!(s.api("GET", "/api/v1/users", Some(&bob_tok), None).0, 401);

    // Every change is in the audit log.
    let (_, log) = s.api("GET", "/api/v1/audit", Some(ADMIN), None);
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in ["user.update", "user.token"] {
        assert!(actions.contains(&a), "{a} audited: {actions:?}");
    }
}

#[test]
fn compose_with_an_opted_out_recipient_comes_back_untracked() {
    let s = Server::start();
    let ann = s.user("ann@sales.test");
    let (st, _) = s.api(
        "PUT",
        "/api/v1/contacts/carol@client.test",
        Some(ADMIN),
        Some(json!({"follow_email": "do_not_allow"})),
    );
    assert_eq!(st, 200);
    let html = "<p>See <a href=\"https://example.org/x\">x</a></p>";
    let (st, v) = s.api(
        "POST",
        "/api/v1/compose/follow",
        Some(&ann),
        Some(json!({"html": html, "to": ["bob@client.test"], "cc": ["Carol@Client.test"]})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["followed"], false);
    assert_eq!(v["reason"], "contact_opted_out");
    assert_eq!(v["html"], html, "untouched: no pixel, no tracked link");
    // Without the opted-out recipient it is followed.
    let (st, v) = s.api(
        "POST",
        "/api/v1/compose/follow",
        Some(&ann),
        Some(json!({"html": html, "to": ["bob@client.test"]})),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["followed"], true);
    assert!(v["html"].as_str().unwrap().contains("/o/"));
}

fn follow_raw(s: &Server, tok: &str, raw: &str) -> (u16, Value) {
    s.api(
        "POST",
        "/api/v1/emails",
        Some(tok),
        Some(json!({"mime": STANDARD.encode(raw), "deliver": "return"})),
    )
}

#[test]
fn every_from_mailbox_and_the_sender_must_be_the_user() {
    let s = Server::start();
    let ann = s.user("ann@sales.test");
    let body = "Content-Type: text/html\r\n\r\n<p>hi</p>\r\n";
    for (case, headers) in [
        (
            "two From fields",
            "From: ann@sales.test\r\nFrom: ceo@sales.test\r\n",
        ),
        (
            "two mailboxes in one From",
            "From: ann@sales.test, ceo@sales.test\r\n",
        ),
        (
            "a Sender of someone else",
            "From: ann@sales.test\r\nSender: ceo@sales.test\r\n",
        ),
    ] {
        let raw = format!("{headers}To: bob@client.test\r\nSubject: x\r\n{body}");
        let (st, v) = follow_raw(&s, &ann, &raw);
        assert_eq!(
            (st, &v["error"]["code"]),
            (403, &json!("sender_not_allowed")),
            "{case}: {v}"
        );
    }
    let raw = format!(
        "From: ann@sales.test\r\nSender: Ann <ANN@sales.test>\r\nTo: bob@client.test\r\nSubject: x\r\n{body}"
    );
    assert_eq!(follow_raw(&s, &ann, &raw).0, 201, "her own Sender is fine");
}

#[test]
fn huge_address_and_reference_lists_answer_at_once() {
    let s = Server::start();
    // 100,000 recipients (about 1.9 MB): refused before any per-address work.
    let to: Vec<String> = (0..100_000).map(|i| format!("r{i}@x.test")).collect();
    let raw = format!(
        "From: a@sales.test\r\nTo: {}\r\nSubject: x\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n",
        to.join(",")
    );
    let (st, v) = follow_raw(&s, ADMIN, &raw);
    assert_eq!(
        (st, &v["error"]["code"]),
        (413, &json!("too_many_recipients")),
        "{v}"
    );
    // 150,000 References: tracked, with the nearest parents only.
    let ann = s.user("ann@sales.test");
    let refs: Vec<String> = (0..150_000).map(|i| format!("<r{i}@t.test>")).collect();
    let raw = format!(
        "From: bob@client.test\r\nTo: ann@sales.test\r\nSubject: re\r\nMessage-ID: <big@t.test>\r\nReferences: {}\r\nContent-Type: text/plain\r\n\r\nhello\r\n",
        refs.join(" ")
    );
    let (st, v) = s.api(
        "POST",
        "/api/v1/activities",
        Some(&ann),
        Some(json!({"mime": STANDARD.encode(&raw)})),
    );
    assert_eq!(st, 201, "{v}");
}

#[test]
fn slow_bodies_time_out_and_large_bodies_share_a_budget() {
    let s = Server::start_env(&[
        ("MAILBEACON_BODY_READ_TIMEOUT_SECS", "2"),
        ("MAILBEACON_MAX_BODY_BYTES", "1048576"),
        ("MAILBEACON_BODY_BUDGET_BYTES", "1048576"),
    ]);
    // One slow large body holds most of the budget...
    let mut slow = partial_post(s.port, 600_000, 10);
    std::thread::sleep(Duration::from_millis(300));
    // ...so another large body is refused at once, with Retry-After.
    let mut second = partial_post(s.port, 600_000, 0);
    let resp = read_all(&mut second, Duration::from_secs(5));
    assert_eq!(
        status_of(&resp),
        Some(503),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    let text = String::from_utf8_lossy(&resp).to_lowercase();
    assert!(text.contains("retry-after: 1"), "{text}");
    assert!(text.contains("\"busy\""), "{text}");
    // Small requests are not affected.
    assert_eq!(s.api("GET", "/api/v1/emails", Some(ADMIN), None).0, 200);
    // The slow one gets 408 once its time is up.
    let resp = read_all(&mut slow, Duration::from_secs(10));
    assert_eq!(
        status_of(&resp),
        Some(408),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    assert!(String::from_utf8_lossy(&resp).contains("body_timeout"));
    // Its budget is back: a large body is read again (and judged: not JSON).
    let mut third = partial_post(s.port, 100_000, 100_000);
    let resp = read_all(&mut third, Duration::from_secs(5));
    assert_eq!(
        status_of(&resp),
        Some(400),
        "{}",
        String::from_utf8_lossy(&resp)
    );
}

#[test]
fn connections_beyond_the_cap_wait_for_a_free_one() {
    let s = Server::start_env(&[("MAILBEACON_MAX_CONNECTIONS", "2")]);
    // Two keep-alive connections, each having made one request.
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let r = read_all(&mut c, Duration::from_millis(500));
            assert_eq!(status_of(&r), Some(200));
            c
        })
        .collect();
    let mut third = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(
        read_all(&mut third, Duration::from_secs(1)).is_empty(),
        "not served while two connections are open"
    );
    drop(held.pop());
    let r = read_all(&mut third, Duration::from_secs(5));
    assert_eq!(status_of(&r), Some(200), "{}", String::from_utf8_lossy(&r));
}

#[test]
fn addin_headers_metrics_and_methods() {
    let s = Server::start();
    for path in [
        "/addin/taskpane.html",
        "/addin/api.js",
        "/addin/config.json",
    ] {
        let (st, hs, _) = raw("GET", &s.url(path), &[]);
        assert_eq!(st, 200, "{path}");
        let csp = header(&hs, "content-security-policy").expect("CSP");
        for part in [
            "script-src 'self' https://appsforoffice.microsoft.com",
            "frame-ancestors",
            "https://outlook.office.com",
            "object-src 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {part} in {csp}");
        }
        assert!(
            !csp.contains("'unsafe-eval'") && !csp.contains("script-src 'self' 'unsafe-inline'")
        );
        assert_eq!(
            header(&hs, "referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert_eq!(
            header(&hs, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    // /metrics: admins only on the public listener.
    assert_eq!(raw("GET", &s.url("/metrics"), &[]).0, 401);
    let user = s.user("ann@sales.test");
    let bearer = format!("Bearer {user}");
    assert_eq!(
        raw("GET", &s.url("/metrics"), &[("Authorization", &bearer)]).0,
        403
    );
    let admin = format!("Bearer {ADMIN}");
    let (st, _, body) = raw("GET", &s.url("/metrics"), &[("Authorization", &admin)]);
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&body).contains("mailbeacon_requests_total"));
    // POST is not a method of /healthz or /metrics; API paths name theirs.
    for (path, allow) in [
        ("/healthz", "GET, HEAD"),
        ("/metrics", "GET, HEAD"),
        ("/api/v1/settings", "GET, PUT"),
        ("/api/v1/users/abc", "PATCH"),
    ] {
        let method = if path.starts_with("/api") {
            "DELETE"
        } else {
            "POST"
        };
        let (st, hs, _) = raw(method, &s.url(path), &[("Authorization", &admin)]);
        assert_eq!(st, 405, "{method} {path}");
        assert_eq!(header(&hs, "allow"), Some(allow), "{path}");
    }
}

#[test]
fn metrics_on_their_own_listener_only() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let s = Server::start_env(&[("MAILBEACON_METRICS_LISTEN", &addr)]);
    let admin = format!("Bearer {ADMIN}");
    assert_eq!(
        raw("GET", &s.url("/metrics"), &[("Authorization", &admin)]).0,
        404
    );
    let (st, _, body) = raw("GET", &format!("http://{addr}/metrics"), &[]);
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&body).contains("mailbeacon_requests_total"));
    assert_eq!(
        raw("GET", &format!("http://{addr}/api/v1/users"), &[]).0,
        404
    );
}
