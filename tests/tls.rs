//! HTTPS with real TLS clients: OpenSSL's `s_client` must be refused with TLS 1.0
//! and 1.1 and accepted with 1.2 and 1.3; curl talks HTTP/2 and HTTP/1.1 to the
//! API; a renewed certificate is picked up on SIGHUP without a restart.
//!
//! The refusal checks have a positive control: the same client first proves it can
//! speak TLS 1.0/1.1 to `openssl s_server`, so a refusal is the server's doing.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is required (the README test command installs it)")
}

fn make_cert(dir: &Path, name: &str) {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.pem"));
    let out = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name}"),
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Connects with one protocol version; returns (handshake succeeded, output).
fn s_client(port: u16, version: &str) -> (bool, String) {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            version,
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-servername",
            "localhost",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let ok =
        out.status.success() && text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    (ok, text)
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is required (the README test command installs it)");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn fingerprint(port: u16) -> String {
    let (ok, text) = s_client(port, "-tls1_3");
    assert!(ok, "{text}");
    let begin = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("certificate in output");
    let end = text.find("-----END CERTIFICATE-----").expect("end") + 25;
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&text.as_bytes()[begin..end])
        .unwrap();
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout)
        .trim()
        .to_string()
}

#[test]
fn tls_versions_http2_api_and_reload() {
    let tmp = TempDir::new("tls");
    make_cert(tmp.path(), "first");
    let cert = tmp.path().join("first.pem");
    let key = tmp.path().join("first.key");
    let cert_s = cert.to_str().unwrap().to_string();
    let key_s = key.to_str().unwrap().to_string();

    // Positive control: this client can speak TLS 1.0 and 1.1 at all.
    let control_port = free_port();
    let mut control = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{control_port}"),
            "-cert",
            &cert_s,
            "-key",
            &key_s,
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-www",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", control_port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "s_server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for v in ["-tls1", "-tls1_1"] {
        let (ok, text) = s_client(control_port, v);
        assert!(ok, "control: the client cannot speak {v} at all, so the refusal test would prove nothing:\n{text}");
    }
    let _ = control.kill();
    let _ = control.wait();

    let s = Server::start_env(&[
        ("MAILBEACON_TLS_CERT", &cert_s),
        ("MAILBEACON_TLS_KEY", &key_s),
    ]);
    for v in ["-tls1", "-tls1_1"] {
        let (ok, text) = s_client(s.port, v);
        assert!(!ok, "{v} must be refused:\n{text}");
    }
    for (v, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, text) = s_client(s.port, v);
        assert!(ok && text.contains(name), "{v} must be accepted:\n{text}");
    }

    // The API over HTTPS, HTTP/2 and HTTP/1.1.
    let base = format!("https://127.0.0.1:{}", s.port);
    let v = curl(&[
        "--cacert",
        &cert_s,
        "--http2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        &format!("{base}/healthz"),
    ]);
    assert_eq!(v, "2 200");
    let v = curl(&[
        "--cacert",
        &cert_s,
        "--http1.1",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        &format!("{base}/healthz"),
    ]);
    assert_eq!(v, "1.1 200");
    let created = curl(&[
        "--cacert",
        &cert_s,
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {ADMIN}"),
        "-d",
        r#"{"email":"ann@sales.test"}"#,
        &format!("{base}/api/v1/users"),
    ]);
    assert!(created.contains("\"token\""), "{created}");
    let gif = curl(&[
        "--cacert",
        &cert_s,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        &format!("{base}/o/x.gif"),
    ]);
    assert_eq!(gif, "200 43");

    // A renewed certificate is served after SIGHUP, without a restart.
    let before = fingerprint(s.port);
    make_cert(tmp.path(), "second");
    std::fs::copy(tmp.path().join("second.pem"), &cert).unwrap();
    std::fs::copy(tmp.path().join("second.key"), &key).unwrap();
    Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let now = fingerprint(s.port);
        if now != before {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "certificate not reloaded"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        curl(&[
            "--cacert",
            tmp.path().join("second.pem").to_str().unwrap(),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}/healthz")
        ]),
        "200"
    );
}

#[test]
fn tls_settings_are_validated() {
    let out = Command::new(env!("CARGO_BIN_EXE_mailbeacon"))
        .env("MAILBEACON_TLS_CERT", "/nonexistent/cert.pem")
        .env("MAILBEACON_LISTEN", "nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls_cert and tls_key go together"), "{err}");
    assert!(err.contains("listen"), "every problem at once: {err}");
}
