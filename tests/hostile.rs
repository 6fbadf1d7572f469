//! Hostile and malformed input never crashes the server and never answers 5xx:
//! odd paths and methods, broken JSON, oversized headers and tokens, and raw bytes
//! that are not HTTP at all. After each barrage the server is still healthy.

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;
use support::*;

fn status_of(resp: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(resp);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Sends raw bytes; returns whatever came back before the server closed or went
/// quiet.
fn raw_tcp(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > 1 << 20 {
            break;
        }
    }
    out
}

fn assert_healthy(s: &Server) {
    assert_eq!(
        raw("GET", &s.url("/healthz"), &[]).0,
        200,
        "{}",
        s.log_text()
    );
}

#[test]
fn odd_paths_and_methods() {
    let s = Server::start();
    let tok = s.user("ann@sales.test");
    let paths = [
        "/",
        "/o/",
        "/o/.gif",
        "/o//.gif",
        "/c/",
        "/c//",
        "/c/a/b/c",
        "/c/%ff%fe/%00",
        "/api",
        "/api/v1",
        "/api/v1/",
        "/api/v1/emails/../../etc/passwd",
        "/api/v1/emails/%00",
        "/api/v1/contacts/",
        "/api/v1/contacts/%zz",
        "/api/v1/subjects/a%40b.test/extra",
        "/healthz/x",
        "/%2e%2e/%2e%2e",
    ];
    let long = format!("/o/{}.gif", "A".repeat(60_000));
    for p in paths.iter().copied().chain([long.as_str()]) {
        for m in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            for auth in [None, Some(tok.as_str()), Some(ADMIN)] {
                let mut req = agent().request(m, &s.url(p));
                if let Some(t) = auth {
                    req = req.set("Authorization", &format!("Bearer {t}"));
                }
                let status = match req.call() {
                    Ok(r) => r.status(),
                    Err(ureq::Error::Status(c, _)) => c,
                    Err(e) => panic!("{m} {p}: {e}"),
                };
                assert!(status < 500, "{m} {p} answered {status}");
            }
        }
    }
    let huge_bearer = format!("Bearer {}", "x".repeat(20_000));
    let r = agent()
        .get(&s.url("/api/v1/emails"))
        .set("Authorization", &huge_bearer)
        .call();
    assert!(matches!(r, Err(ureq::Error::Status(401, _))));
    assert_healthy(&s);
}

#[test]
fn broken_bodies() {
    let s = Server::start();
    let tok = s.user("ann@sales.test");
    let nested = "[".repeat(10_000) + &"]".repeat(10_000);
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"{\"mime\": 12}".to_vec(),
        b"{\"mime\": \"\\ud800\"}".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        nested.into_bytes(),
        json!({"mime": "QQ==", "deliver": ["smtp"]})
            .to_string()
            .into_bytes(),
        json!({"email": 1e308}).to_string().into_bytes(),
    ];
    for path in [
        "/api/v1/emails",
        "/api/v1/users",
        "/api/v1/settings",
        "/api/v1/contacts/import",
        "/api/v1/contacts/a@b.test",
    ] {
        for body in &bodies {
            for m in ["POST", "PUT"] {
                let r = agent()
                    .request(m, &s.url(path))
                    .set("Authorization", &format!("Bearer {ADMIN}"))
                    .send_bytes(body);
                let status = match r {
                    Ok(r) => r.status(),
                    Err(ureq::Error::Status(c, _)) => c,
                    Err(e) => panic!("{m} {path}: {e}"),
                };
                assert!(
                    status < 500,
                    "{m} {path} {:?} answered {status}",
                    String::from_utf8_lossy(&body[..body.len().min(40)])
                );
            }
        }
    }
    // MIME that is base64 of binary garbage or of a header bomb.
    let bomb = format!(
        "From: ann@sales.test\r\nTo: {}\r\nSubject: x\r\n\r\nhi",
        vec!["b@c.test"; 5000].join(", ")
    );
    for mime in [vec![0u8, 159, 146, 150, 255], bomb.into_bytes()] {
        use base64::Engine as _;
        let (st, _) = s.api(
            "POST",
            "/api/v1/emails",
            Some(&tok),
            Some(json!({"mime": base64::engine::general_purpose::STANDARD.encode(mime)})),
        );
        assert!(st < 500, "{st}");
    }
    let many: Vec<String> = (0..1001).map(|i| format!("r{i}@c.test")).collect();
    let over = format!(
        "From: ann@sales.test\r\nTo: {}\r\nSubject: x\r\nContent-Type: text/html\r\n\r\n<p>hi</p>",
        many.join(", ")
    );
    use base64::Engine as _;
    let (st, v) = s.api(
        "POST",
        "/api/v1/emails",
        Some(&tok),
        Some(json!({"mime": base64::engine::general_purpose::STANDARD.encode(over)})),
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (413, Some("too_many_recipients"))
    );
    assert_healthy(&s);
}

#[test]
fn raw_bytes_that_are_not_http() {
    let s = Server::start();
    let inputs: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02garbage\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET /o/x.gif HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /o/x.gif HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"POST /api/v1/emails HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
            .to_vec(),
        format!(
            "GET /o/x.gif HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(200_000)
        )
        .into_bytes(),
        format!("GET /o/x.gif HTTP/1.1\r\n{}\r\n", "X-H: 1\r\n".repeat(500)).into_bytes(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
    ];
    for inp in &inputs {
        let resp = raw_tcp(s.port, inp);
        if let Some(code) = status_of(&resp) {
            assert!(
                code < 500,
                "{code} for {:?}",
                String::from_utf8_lossy(&inp[..inp.len().min(40)])
            );
        }
    }
    // A pipelined pair of valid pixel requests still works on one connection.
    let two = b"GET /o/a.gif HTTP/1.1\r\nHost: x\r\n\r\nGET /o/b.gif HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let resp = raw_tcp(s.port, two);
    assert_eq!(
        String::from_utf8_lossy(&resp)
            .matches("HTTP/1.1 200")
            .count(),
        2
    );
    assert_healthy(&s);
}

/// An answer sent before the body arrived (405 on the headers alone, 401, 404)
/// reaches a client that goes on sending its body: the server reads and drops
/// the rest instead of closing with unread bytes, which would reset the
/// connection under the client ("broken pipe" where the answer was sent).
#[test]
fn early_answers_reach_a_client_still_sending() {
    let s = Server::start();
    let body = vec![b'['; 256 << 10];
    for (head, want) in [
        (
            format!("PUT /api/v1/contacts/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n"),
            405,
        ),
        (
            "POST /api/v1/emails HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n".to_string(),
            401,
        ),
        (
            format!("POST /api/v1/nowhere HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n"),
            404,
        ),
    ] {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let req = format!("{head}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
        c.write_all(req.as_bytes()).expect("headers sent");
        // The answer comes on the headers alone; read its first bytes.
        let mut first = [0u8; 12];
        c.read_exact(&mut first).expect("an answer before the body");
        assert_eq!(status_of(&first), Some(want), "{head}");
        // Give the server time to finish with the connection, then send the
        // body in pieces: every write must be taken, none reset.
        std::thread::sleep(Duration::from_millis(200));
        for (i, piece) in body.chunks(16 << 10).enumerate() {
            c.write_all(piece)
                .unwrap_or_else(|e| panic!("{head}: body piece {i} after the answer: {e}"));
            std::thread::sleep(Duration::from_millis(5));
        }
        // The rest of the answer, then the server's end of stream.
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).expect("the rest of the answer, then EOF");
        assert!(
            String::from_utf8_lossy(&rest).contains("\r\n\r\n"),
            "{head}: a whole answer"
        );
    }
    assert_healthy(&s);
}
