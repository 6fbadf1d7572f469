//! Test harness: runs the real `mailbeacon` binary on a free port with its own data
//! directory, talks to it over HTTP, and runs a real SMTP server (aiosmtpd).
//!
//! Nothing here is mocked. A missing dependency (python3 with aiosmtpd) fails the
//! test loudly with what to install; the README test command installs it.
#![allow(dead_code)]

pub mod backends;
pub mod browser;
pub mod dovecot;
pub mod entra;
pub mod redis;

use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

pub const ADMIN: &str = "test-admin-token-0123456789";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n: u64 = rand_u64();
        let p = std::env::temp_dir().join(format!("mailbeacon-test-{tag}-{n:x}"));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("urandom");
    u64::from_le_bytes(b)
}

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    pub data_dir: PathBuf,
    pub env: Vec<(String, String)>,
    log: PathBuf,
    _tmp: Option<TempDir>,
}

/// The setting that lets a test server's outbound connections (IMAP) reach
/// the local services the harness starts.
pub const LOCAL_OUTBOUND: (&str, &str) = ("MAILBEACON_OUTBOUND_ALLOW", "127.0.0.0/8");

impl Server {
    /// A server on a fresh data directory with the test admin token.
    pub fn start() -> Server {
        Server::start_env(&[])
    }

    /// A server whose outbound connections may reach 127.0.0.0/8: for tests
    /// that connect it to a local service (Dovecot). Others keep the default
    /// (public addresses only), as a deployment does.
    pub fn start_local_outbound() -> Server {
        Server::start_env(&[LOCAL_OUTBOUND])
    }

    pub fn start_env(env: &[(&str, &str)]) -> Server {
        let tmp = TempDir::new("srv");
        let dir = tmp.path().join("data");
        let mut s = Server::start_in(&dir, env);
        s._tmp = Some(tmp);
        s
    }

    /// A server on `data_dir` (kept after the server stops).
    pub fn start_in(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let mut s = Server {
            child: None,
            port,
            base: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log: data_dir.with_extension(format!("{port}.log")),
            _tmp: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(self.data_dir.parent().unwrap_or(Path::new("/tmp"))).ok();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailbeacon"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MAILBEACON_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("MAILBEACON_DATA_DIR", &self.data_dir)
            .env("MAILBEACON_ADMIN_TOKEN", ADMIN)
            .env("RUST_LOG", "info")
            // Tests click right after sending; a test that checks the "too fast"
            // heuristic sets this back to its default.
            .env("MAILBEACON_MACHINE_CLICK_SECS", "0");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mailbeacon");
        self.child = Some(child);
        let t0 = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("mailbeacon exited early ({status}):\n{}", self.log_text());
                }
            }
            let tls = self.env.iter().any(|(k, _)| k == "MAILBEACON_TLS_CERT");
            if tls {
                // HTTPS: the test checks the protocol itself; here, wait for the port.
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return;
                }
            } else if let Ok(r) = agent().get(&format!("{}/healthz", self.base)).call() {
                if r.status() == 200 {
                    return;
                }
            }
            if t0.elapsed() > Duration::from_secs(20) {
                panic!("mailbeacon did not become healthy:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; panics if it does not exit cleanly.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let t0 = Instant::now();
            loop {
                if let Ok(Some(status)) = c.try_wait() {
                    assert!(
                        status.success(),
                        "unclean exit {status}:\n{}",
                        self.log_text()
                    );
                    return;
                }
                if t0.elapsed() > Duration::from_secs(20) {
                    let _ = c.kill();
                    panic!("mailbeacon did not stop on SIGTERM:\n{}", self.log_text());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts again on the same data directory and port.
    pub fn restart(&mut self) {
        self.spawn();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// An API call; returns (status, JSON body or Null).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = agent().request(method, &self.url(path));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}\n{}", self.log_text()),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates a user, returns its bearer token.
    pub fn user(&self, email: &str) -> String {
        let (s, v) = self.api(
            "POST",
            "/api/v1/users",
            Some(ADMIN),
            Some(json!({"email": email, "role": "user"})),
        );
        assert_eq!(s, 201, "{v}");
        v["token"].as_str().expect("token").to_string()
    }

    /// Follows `raw` with deliver "return"; returns the response body.
    pub fn follow(&self, token: &str, raw: &str) -> Value {
        let (s, v) = self.api(
            "POST",
            "/api/v1/emails",
            Some(token),
            Some(json!({"mime": STANDARD.encode(raw), "deliver": "return"})),
        );
        assert_eq!(s, 201, "{v}");
        v
    }
}

impl Server {
    /// Follows an email from ann@sales.test to `to` with one link; returns the
    /// email id and that recipient's copy.
    pub fn follow_one(&self, token: &str, to: &str, link: &str) -> (String, Copy) {
        let resp = self.follow(token, &email("ann@sales.test", &[to], &[], &[], &[link]));
        let id = resp["id"].as_str().expect("id").to_string();
        (id, copy(&resp["recipients"][0], &self.base))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(30))
        .build()
}

/// A raw GET/HEAD; returns (status, headers as lowercase pairs, body).
pub fn raw(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut req = agent().request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let hs = resp
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = resp.header(&n).unwrap_or("").to_string();
            (n.to_lowercase(), v)
        })
        .collect();
    let mut body = Vec::new();
    let _ = resp.into_reader().read_to_end(&mut body);
    (status, hs, body)
}

pub fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

pub const BROWSER_UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";

/// An HTML email (multipart/alternative) with the given recipients and links.
pub fn email(from: &str, to: &[&str], cc: &[&str], bcc: &[&str], links: &[&str]) -> String {
    let mut h = format!("From: Sender <{from}>\r\nTo: {}\r\n", to.join(", "));
    if !cc.is_empty() {
        h += &format!("Cc: {}\r\n", cc.join(", "));
    }
    if !bcc.is_empty() {
        h += &format!("Bcc: {}\r\n", bcc.join(", "));
    }
    let anchors: String = links
        .iter()
        .enumerate()
        .map(|(i, l)| format!("<p><a href=\"{l}\">link {i}</a></p>\r\n"))
        .collect();
    format!(
        "{h}Subject: Quarterly update\r\nMessage-ID: <q1-{}@example.test>\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, see the links.\r\n\
--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hello</p>\r\n{anchors}<p><a href=\"mailto:x@example.test\">mail</a></p></body></html>\r\n--b1--\r\n",
        rand_u64()
    )
}

/// Pixel and click URLs found in one returned copy (base64 MIME).
pub struct Copy {
    pub raw: Vec<u8>,
    pub html: String,
    pub pixel: Option<String>,
    pub clicks: Vec<String>,
}

pub fn copy(recipient: &Value, base: &str) -> Copy {
    let raw = STANDARD
        .decode(recipient["mime"].as_str().expect("mime in response"))
        .expect("base64 copy");
    let msg = mail_parser::MessageParser::default()
        .parse(&raw)
        .expect("copy parses");
    let html = msg.body_html(0).map(|h| h.to_string()).unwrap_or_default();
    let pixel = find_all(&html, &format!("{base}/o/"), ".gif")
        .into_iter()
        .next();
    let clicks = find_all(&html, &format!("{base}/c/"), "\"");
    Copy {
        raw,
        html,
        pixel,
        clicks,
    }
}

/// Every substring starting with `start` up to (excluding) `end`, with `end`
/// re-appended when it is ".gif".
fn find_all(hay: &str, start: &str, end: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = hay;
    while let Some(i) = rest.find(start) {
        let tail = &rest[i..];
        let j = tail.find(end).unwrap_or(tail.len());
        let mut s = tail[..j].to_string();
        if end == ".gif" {
            s.push_str(".gif");
        }
        out.push(s);
        rest = &tail[j..];
    }
    out
}

/// A real SMTP server (aiosmtpd) writing what it receives to a directory.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    pub dir: TempDir,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        SmtpSink::start_mode("accept")
    }

    /// A sink in one of `smtp_sink.py`'s modes: "accept", "tempfail-once",
    /// "refuse", "slow:SECONDS".
    pub fn start_mode(mode: &str) -> SmtpSink {
        let port = free_port();
        let dir = TempDir::new("smtp");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(dir.path())
            .arg(mode)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 is required for the SMTP tests (the README test command installs it)");
        let mut out = child.stdout.take().expect("stdout");
        let mut buf = [0u8; 6];
        if out.read_exact(&mut buf).is_err() || &buf != b"READY\n" {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the SMTP test server (aiosmtpd) did not start; run the README test command, which installs it:\n{err}");
        }
        SmtpSink { child, port, dir }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Refusals so far: (SMTP code, recipient).
    pub fn refused(&self) -> Vec<(u16, String)> {
        std::fs::read_to_string(self.dir.path().join("refused.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (c, a) = l.split_once(' ')?;
                Some((c.parse().ok()?, a.to_string()))
            })
            .collect()
    }

    /// Messages received so far: (mail_from, rcpt_tos, raw bytes).
    pub fn received(&self) -> Vec<(String, Vec<String>, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(self.dir.path())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p: &PathBuf| p.extension().is_some_and(|e| e == "json"));
        files.sort();
        files
            .iter()
            .map(|p| {
                let v: Value =
                    serde_json::from_slice(&std::fs::read(p).expect("read")).expect("json");
                (
                    v["mail_from"].as_str().unwrap_or("").to_string(),
                    v["rcpt_tos"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                    STANDARD
                        .decode(v["data_b64"].as_str().unwrap_or(""))
                        .expect("b64"),
                )
            })
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
