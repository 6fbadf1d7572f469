//! The pixel's wait for the group commit (issue #11, finding 13), checked by
//! order of events, not by timing: a whole server runs in this process, and the
//! journal's test hook (`mailbeacon::store::journal::hold`) stalls every commit
//! as a disk that stopped answering would.
//!
//! - A hit that is not recorded (an invalid token) is not answered while the
//!   commit it waits for is held, just like a recorded one: no timing oracle.
//! - With the commit held past `commit_wait`, the pixel still answers 200 with
//!   the GIF, the answer is counted in `/metrics`, and the event is stored once
//!   the stall ends.
//!
//! The hold is process-wide, so everything runs in one test, one server at a
//! time.

mod support;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use mailbeacon::config::{Config, Opts};
use mailbeacon::store::journal::hold;
use serde_json::{json, Value};
use support::*;

/// A server running in this process until dropped.
struct InProcess {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: TempDir,
}

impl InProcess {
    fn start(commit_wait: Duration) -> InProcess {
        let dir = TempDir::new("pixel-commit");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        let mut config = Config::resolve(&Opts {
            data_dir: Some(dir.path().join("data")),
            public_url: Some(base.clone()),
            ..Opts::default()
        })
        .expect("valid configuration");
        config.admin_token = Some(ADMIN.to_string());
        config.commit_wait = commit_wait;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                std_listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let served = mailbeacon::serve::serve_on(config, listener, async {
                    let _ = stopped.await;
                })
                .await;
                assert_eq!(served, Ok(()));
            });
        });
        let s = InProcess {
            base,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        };
        let t0 = Instant::now();
        while agent().get(&format!("{}/healthz", s.base)).call().is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn api(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let req = agent()
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {token}"));
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let r = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = r.status();
        let text = r.into_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A followed email to one recipient: (email id, pixel URL).
    fn followed(&self) -> (String, String) {
        let (st, u) = self.api(
            "POST",
            "/api/v1/users",
            ADMIN,
            Some(json!({"email": "ann@sales.test", "role": "user"})),
        );
        assert_eq!(st, 201, "{u}");
        let tok = u["token"].as_str().unwrap().to_string();
        let raw = email("ann@sales.test", &["bob@client.test"], &[], &[], &[]);
        let (st, v) = self.api(
            "POST",
            "/api/v1/emails",
            &tok,
            Some(json!({"mime": base64_std(&raw), "deliver": "return"})),
        );
        assert_eq!(st, 201, "{v}");
        let pixel = copy(&v["recipients"][0], &self.base)
            .pixel
            .expect("a pixel");
        (v["id"].as_str().unwrap().to_string(), pixel)
    }

    fn opens(&self, id: &str) -> u64 {
        let (st, rep) = self.api("GET", &format!("/api/v1/emails/{id}"), ADMIN, None);
        assert_eq!(st, 200, "{rep}");
        rep["totals"]["opens"].as_u64().unwrap_or(0)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        hold::set(false);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn base64_std(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// GETs `url` on a thread; the answer (status, body) arrives on the channel.
fn get_later(url: String) -> mpsc::Receiver<(u16, Vec<u8>)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (st, _, body) = raw("GET", &url, &[("User-Agent", BROWSER_UA)]);
        let _ = tx.send((st, body));
    });
    rx
}

/// Waits until a journal commit is held at the hook.
fn until_a_commit_is_held() {
    let t0 = Instant::now();
    while hold::waiting() == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no commit reached the journal"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn is_gif(st: u16, body: &[u8]) -> bool {
    st == 200 && body.len() == 43 && body.starts_with(b"GIF89a")
}

#[test]
fn the_pixel_waits_for_the_commit_whatever_the_token_and_no_longer_than_the_limit() {
    // 1. A limit far above anything this test waits: answers come only after
    //    the commit, valid token or not.
    let s = InProcess::start(Duration::from_secs(120));
    let (id, pixel) = s.followed();
    let invalid = format!("{}/o/{}.gif", s.base, "A".repeat(48));
    for (what, url) in [("invalid", invalid.clone()), ("valid", pixel.clone())] {
        hold::set(true);
        let answer = get_later(url);
        until_a_commit_is_held();
        // The request reached the recorder and its batch is stuck in the
        // journal: nothing may have been answered.
        assert!(
            answer.try_recv().is_err(),
            "the {what} token was answered before its commit"
        );
        hold::set(false);
        let (st, body) = answer
            .recv_timeout(Duration::from_secs(30))
            .expect("answered once the commit ends");
        assert!(is_gif(st, &body), "{what}: {st}");
    }
    assert_eq!(s.opens(&id), 1, "only the valid open is counted");
    // Without a hold, the invalid token costs a commit cycle and no event.
    assert!({
        let (st, _, body) = raw("GET", &invalid, &[]);
        is_gif(st, &body)
    });
    assert_eq!(s.opens(&id), 1);
    drop(s);

    // 2. A short limit and a commit held beyond it: the pixel answers anyway,
    //    counted, and the open is stored when the stall ends.
    let s = InProcess::start(Duration::from_millis(300));
    let (id, pixel) = s.followed();
    hold::set(true);
    let (st, _, body) = raw("GET", &pixel, &[("User-Agent", BROWSER_UA)]);
    assert!(is_gif(st, &body), "the pixel answers during a stall: {st}");
    assert!(hold::waiting() > 0, "the commit is still held");
    let (st, metrics) = s.api("GET", "/metrics", ADMIN, None);
    assert_eq!(st, 200);
    let text = metrics.as_str().unwrap_or_default().to_string();
    let counted = text
        .lines()
        .find_map(|l| l.strip_prefix("mailbeacon_hits_answered_before_commit_total "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no counter in /metrics:\n{text}"));
    assert!(counted >= 1, "{text}");
    hold::set(false);
    // The held commit ends after the release; a report counts what was
    // committed before it was asked, so ask until it has.
    let t0 = Instant::now();
    while s.opens(&id) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the open answered during the stall was never stored"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.opens(&id), 1, "stored once");
}
