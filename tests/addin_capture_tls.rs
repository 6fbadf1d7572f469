//! Auto Capture over TLS and with SASL XOAUTH2, against a real Dovecot (the
//! harness's secure variant, see `support::dovecot`): a private CA, implicit
//! TLS on one port, STARTTLS on another with plaintext LOGIN refused before
//! it, and bearer tokens that Dovecot itself checks (HS256 JWTs validated
//! locally by its `oauth2` passdb, signed here with the key it was given).
//!
//! Each refusal is paired with the same step succeeding in the same set-up:
//! the server without the CA fails where the one with it lists; an expired or
//! forged token fails where a fresh one, same user and server, lists.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::dovecot::{Dovecot, Secure, PASSWORD, USER};
use support::*;

/// Every email exchanged with Bob in the fixtures' last 3 days, newest first.
const BOB: [&str; 5] = [
    "Capture-Echo",
    "Capture-Foxtrot",
    "Capture-Alpha",
    "Capture-Golf",
    "Capture-Bravo",
];

fn secure(imap: &Dovecot) -> &Secure {
    imap.secure.as_ref().expect("a secure Dovecot")
}

/// A server that trusts the test's private CA.
fn server_with_ca(imap: &Dovecot) -> Server {
    let ca = secure(imap).ca.to_str().expect("a UTF-8 path").to_string();
    Server::start_env(&[("MAILBEACON_IMAP_CA_FILE", &ca), support::LOCAL_OUTBOUND])
}

fn subjects(v: &Value) -> Vec<String> {
    v["emails"]
        .as_array()
        .unwrap_or_else(|| panic!("emails in {v}"))
        .iter()
        .map(|e| {
            let s = e["subject"].as_str().unwrap_or("");
            s.split(' ').next().unwrap_or("").to_string()
        })
        .collect()
}

fn put_mailbox(s: &Server, tok: &str, body: Value) -> (u16, Value) {
    s.api("PUT", "/api/v1/mailbox", Some(tok), Some(body))
}

fn password(imap: &Dovecot, tls: &str, port: u16) -> Value {
    json!({"host": secure(imap).host, "port": port, "tls": tls, "username": USER, "password": PASSWORD})
}

fn bearer(imap: &Dovecot, token: &str) -> Value {
    let x = secure(imap);
    json!({"host": x.host, "port": x.tls_port, "tls": "tls", "username": USER, "oauth2_token": token})
}

/// Lists Bob's emails and tracks the oldest one from the list.
fn list_and_track(s: &Server, tok: &str) {
    let (st, v) = s.api(
        "GET",
        "/api/v1/capture?contact=bob@client.test",
        Some(tok),
        None,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(subjects(&v), BOB, "{v}");
    let bravo = &v["emails"][4];
    let (st, a) = s.api(
        "POST",
        "/api/v1/capture/track",
        Some(tok),
        Some(json!({"folder": bravo["folder"], "uid": bravo["uid"]})),
    );
    assert!(st == 201 || st == 200, "{st} {a}");
    assert_eq!(a["subject"], "Capture-Bravo contract draft", "{a}");
    assert_eq!(a["source"], "capture");
}

/// An HS256 JWT for `sub`, expiring `exp_in` seconds from now.
fn mint(key: &[u8], sub: &str, exp_in: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let claims = json!({"sub": sub, "iat": now - 60, "exp": now + exp_in});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .expect("a JWT")
}

#[test]
fn implicit_tls_and_starttls_with_the_private_ca() {
    let imap = Dovecot::start_secure();
    let x = secure(&imap);
    let s = server_with_ca(&imap);
    let alice = s.user(USER);

    // Implicit TLS.
    let (st, v) = put_mailbox(&s, &alice, password(&imap, "tls", x.tls_port));
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["tls"].as_str(), v["auth"].as_str()),
        (Some("tls"), Some("password"))
    );
    list_and_track(&s, &alice);

    // Plain IMAP on the STARTTLS port: Dovecot refuses LOGIN before STARTTLS...
    let (st, v) = put_mailbox(&s, &alice, password(&imap, "none", imap.port));
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("mailbox_login_failed")),
        "{v}"
    );
    // The server's own words ("Plaintext authentication disallowed") are
    // never passed on: the message is fixed text.
    assert!(
        !v.to_string()
            .contains("Plaintext authentication disallowed"),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("refused the login"),
        "{v}"
    );
    // ...and accepts it after: the same port, user and password, with STARTTLS.
    let (st, v) = put_mailbox(&s, &alice, password(&imap, "starttls", imap.port));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["tls"], "starttls");
    let (st, v) = s.api(
        "GET",
        "/api/v1/capture?contact=bob@client.test",
        Some(&alice),
        None,
    );
    assert_eq!(st, 200, "{v}");
    // Bravo was tracked over implicit TLS above: it has left the list.
    assert_eq!(subjects(&v), BOB[..4], "{v}");
    let log = std::fs::read_to_string(imap.base.join("log/dovecot.log")).unwrap_or_default();
    assert!(
        log.contains("method=PLAIN") && log.contains(", TLS"),
        "Dovecot logged TLS logins:\n{log}"
    );
}

#[test]
fn tls_without_the_private_ca_is_refused_with_a_certificate_error() {
    let imap = Dovecot::start_secure();
    let x = secure(&imap);
    // Only the public roots: the test CA is unknown.
    let plain = Server::start_local_outbound();
    let bob = plain.user(USER);
    for (tls, port) in [("tls", x.tls_port), ("starttls", imap.port)] {
        let (st, v) = put_mailbox(&plain, &bob, password(&imap, tls, port));
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (502, Some("mailbox_error")),
            "{tls}: {v}"
        );
        let m = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            m.contains("certificate") && m.contains("imap_ca_file"),
            "{tls}: {m}"
        );
        // Nothing was kept, so nothing can be listed.
        let (_, m) = plain.api("GET", "/api/v1/mailbox", Some(&bob), None);
        assert_ne!(m["connected"], true, "{m}");
        let (st, v) = plain.api(
            "GET",
            "/api/v1/capture?contact=bob@client.test",
            Some(&bob),
            None,
        );
        assert!(v.get("emails").is_none(), "{st} {v}");
    }
    // The control: the same Dovecot, with the CA trusted, lists over both.
    let s = server_with_ca(&imap);
    let alice = s.user(USER);
    for (tls, port) in [("tls", x.tls_port), ("starttls", imap.port)] {
        let (st, v) = put_mailbox(&s, &alice, password(&imap, tls, port));
        assert_eq!(st, 200, "{tls}: {v}");
        let (st, v) = s.api(
            "GET",
            "/api/v1/capture?contact=bob@client.test",
            Some(&alice),
            None,
        );
        assert_eq!(
            (st, subjects(&v)),
            (200, BOB.map(String::from).to_vec()),
            "{v}"
        );
    }
}

#[test]
fn xoauth2_with_a_valid_token_lists_and_a_bad_one_is_refused() {
    let imap = Dovecot::start_secure();
    let x = secure(&imap);
    let s = server_with_ca(&imap);
    let alice = s.user(USER);

    // Refused: expired, signed with another key, or for another user.
    let expired = mint(&x.hmac_key, USER, -600);
    let forged = mint(b"not the key Dovecot trusts, 32 b", USER, 600);
    let other = mint(&x.hmac_key, "mallory@example.test", 600);
    for (what, token) in [
        ("expired", &expired),
        ("forged", &forged),
        ("other user", &other),
    ] {
        let (st, v) = put_mailbox(&s, &alice, bearer(&imap, token));
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (422, Some("mailbox_login_failed")),
            "{what}: {v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("refused the login"),
            "{what}: {v}"
        );
    }
    let (_, m) = s.api("GET", "/api/v1/mailbox", Some(&alice), None);
    assert_ne!(m["connected"], true, "{m}");

    // Accepted: a fresh token for the user, same server and Dovecot.
    let token = mint(&x.hmac_key, USER, 600);
    let (st, v) = put_mailbox(&s, &alice, bearer(&imap, &token));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["auth"], "xoauth2");
    assert!(!v.to_string().contains(&token), "the token is never echoed");
    list_and_track(&s, &alice);
    // Dovecot's own reasons (auth_verbose): each refusal was for what it tests.
    let log = std::fs::read_to_string(imap.base.join("log/dovecot.log")).unwrap_or_default();
    for reason in [
        "Local validation failed: Token has expired",
        "Local validation failed: Incorrect JWT signature",
        "did not match 'mallory@example.test'",
        "Login: user=<alice@example.test>, method=XOAUTH2",
    ] {
        assert!(log.contains(reason), "{reason:?} in Dovecot's log:\n{log}");
    }
    assert!(
        !log.contains("Password mismatch"),
        "a token was checked as a password:\n{log}"
    );
}
