//! Server-side request forgery through the mailbox (issue #11, finding 1): a
//! user cannot make the server connect to a non-public address (every spelling
//! of loopback, cloud metadata) unless the operator allows that network; a
//! refused target answers `422 target_not_allowed` without any connection
//! being made; and no error ever carries bytes the peer sent (a banner or an
//! IMAP answer holding a secret), nor tells a closed port from another.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use support::dovecot::{Dovecot, PASSWORD, USER};
use support::*;

const SECRET: &str = "s3cr3t-AKIA-9F2B7";

/// A local listener that counts connections and, on each, sends `greeting`
/// and then answers every line with `reply` (with the client's tag).
struct Peer {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Peer {
    fn start(greeting: &'static str, reply: &'static str) -> Peer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut w = s.try_clone().expect("clone");
                    let _ = w.write_all(greeting.as_bytes());
                    for line in BufReader::new(s).lines().map_while(Result::ok) {
                        let tag = line.split(' ').next().unwrap_or("*").to_string();
                        let _ = w.write_all(reply.replace("{tag}", &tag).as_bytes());
                    }
                });
            }
        });
        Peer { port, accepted }
    }
}

fn put(s: &Server, tok: &str, host: &str, port: u16) -> (u16, Value) {
    s.api(
        "PUT",
        "/api/v1/mailbox",
        Some(tok),
        Some(json!({"host": host, "port": port, "tls": "none", "username": "u", "password": "p"})),
    )
}

#[test]
fn non_public_targets_are_refused_without_connecting() {
    let s = Server::start();
    let bob = s.user("bob@example.com");
    let peer = Peer::start("* OK IMAP ready\r\n", "{tag} NO no\r\n");
    for host in [
        "127.0.0.1",
        "localhost",
        "2130706433",
        "0x7f000001",
        "::ffff:127.0.0.1",
        "[::ffff:127.0.0.1]",
        "169.254.169.254",
        "10.0.0.1",
    ] {
        let (st, v) = put(&s, &bob, host, peer.port);
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (422, Some("target_not_allowed")),
            "{host}: {v}"
        );
    }
    assert_eq!(
        peer.accepted.load(Ordering::SeqCst),
        0,
        "a refused target was connected to"
    );
    // Nothing was kept.
    let (st, v) = s.api("GET", "/api/v1/mailbox", Some(&bob), None);
    assert_eq!(st, 409, "{v}");
}

#[test]
fn the_allow_list_opens_only_the_listed_network() {
    let s = Server::start_env(&[("MAILBEACON_OUTBOUND_ALLOW", "127.0.0.1/32")]);
    let bob = s.user("bob@example.com");
    let peer = Peer::start("* OK IMAP ready\r\n", "{tag} NO no\r\n");
    // Allowed: it is connected to (and the login fails).
    let (st, v) = put(&s, &bob, "127.0.0.1", peer.port);
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("mailbox_login_failed")),
        "{v}"
    );
    assert_eq!(peer.accepted.load(Ordering::SeqCst), 1);
    // 127.0.0.2 is not in 127.0.0.1/32; metadata never is.
    for host in ["127.0.0.2", "169.254.169.254"] {
        let (st, v) = put(&s, &bob, host, peer.port);
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (422, Some("target_not_allowed")),
            "{host}: {v}"
        );
    }
    assert_eq!(peer.accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn errors_never_echo_what_the_peer_sent() {
    let s = Server::start_local_outbound();
    let bob = s.user("bob@example.com");
    // Not IMAP at all: an SSH-like banner, an HTTP answer with credentials.
    let ssh = Peer::start(
        "SSH-2.0-OpenSSH_9.6 s3cr3t-AKIA-9F2B7\r\n",
        "s3cr3t-AKIA-9F2B7\r\n",
    );
    let http = Peer::start(
        "HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{\"password\":\"s3cr3t-AKIA-9F2B7\"}\r\n",
        "s3cr3t-AKIA-9F2B7\r\n",
    );
    // IMAP whose greeting and refusal carry the secret.
    let imap = Peer::start(
        "* OK [ALERT] s3cr3t-AKIA-9F2B7 ready\r\n",
        "{tag} NO [AUTHENTICATIONFAILED] s3cr3t-AKIA-9F2B7\r\n",
    );
    for port in [ssh.port, http.port, imap.port] {
        let (st, v) = put(&s, &bob, "127.0.0.1", port);
        assert!(st >= 400, "{v}");
        assert!(!v.to_string().contains(SECRET), "peer bytes echoed: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
    }
    // Closed ports: one generic answer, naming neither the port nor the OS error.
    let (a, b) = (free_port(), free_port());
    let (sa, va) = put(&s, &bob, "127.0.0.1", a);
    let (sb, vb) = put(&s, &bob, "127.0.0.1", b);
    assert_eq!(
        (sa, va["error"]["code"].as_str()),
        (502, Some("mailbox_unreachable")),
        "{va}"
    );
    assert_eq!((sb, &va["error"]), (502, &vb["error"]), "{va} {vb}");
    assert!(!va.to_string().contains(&a.to_string()), "{va}");
    assert!(!va.to_string().contains("os error"), "{va}");
}

#[test]
fn capture_refuses_a_stored_mailbox_that_is_no_longer_allowed() {
    let imap = Dovecot::start();
    let tmp = TempDir::new("ssrf");
    let dir = tmp.path().join("data");
    let mut s = Server::start_in(&dir, &[LOCAL_OUTBOUND]);
    let bob = s.user(USER);
    let (st, v) = s.api(
        "PUT",
        "/api/v1/mailbox",
        Some(&bob),
        Some(json!({"host": "127.0.0.1", "port": imap.port, "tls": "none", "username": USER, "password": PASSWORD})),
    );
    assert_eq!(st, 200, "{v}");
    s.stop();
    // The operator removes the allow-list: the stored mailbox is refused.
    let s = Server::start_in(&dir, &[]);
    let (st, v) = s.api(
        "GET",
        "/api/v1/capture?contact=carol%40example.test",
        Some(&bob),
        None,
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("target_not_allowed")),
        "{v}"
    );
    let (st, v) = s.api(
        "POST",
        "/api/v1/capture/track",
        Some(&bob),
        Some(json!({"folder": "INBOX", "uid": 1})),
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("target_not_allowed")),
        "{v}"
    );
}
