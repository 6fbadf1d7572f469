//! `loadtest outbox`: copies per second through the outbox to a local relay,
//! and the API's and the pixel's latency meanwhile.
//!
//! A small SMTP sink here (threads, accepts every message, keeps nothing but
//! the count of messages and envelope recipients) is the relay
//! (`MAILBEACON_SMTP_URL=smtp://127.0.0.1:<port>`). One user follows an email
//! with `deliver: "return"` (its pixels are probed) and then `--emails` emails
//! of `--recipients` recipients each with `deliver: "smtp"`. From the moment
//! the first `POST` is sent until every copy is `sent` (or `failed`), one
//! thread polls `GET /api/v1/emails/{id}` back to back and another fetches the
//! probe pixels, each keeping its latencies. The figures: copies per second
//! (POST sent → the last copy `sent`), what the sink received, and p50/p99/max
//! of the `POST`, the `GET` and the pixel.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::api::{self, Shape};
use crate::compare::UA;
use crate::hist::Histogram;
use crate::procs::{self, Mailbeacon, Result};

/// The probes' pace: they measure latency, they are not a load.
const PIXEL_EVERY: Duration = Duration::from_millis(10);
const GET_EVERY: Duration = Duration::from_millis(100);

/// What an outbox run is told.
#[derive(Clone, Debug)]
pub struct OutboxSettings {
    pub mailbeacon: PathBuf,
    pub scratch: PathBuf,
    pub emails: usize,
    pub recipients: usize,
    /// Give up waiting for the copies after this.
    pub timeout: Duration,
    pub keep_scratch: bool,
}

/// Messages and envelope recipients a sink accepted.
#[derive(Default)]
pub struct Counts {
    pub messages: AtomicU64,
    pub recipients: AtomicU64,
    pub sessions: AtomicU64,
}

/// The SMTP sink: answers every command, accepts every message, counts.
pub struct Sink {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    pub fn start() -> Result<Sink> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(procs::io_err)?;
        let addr = l.local_addr().map_err(procs::io_err)?;
        l.set_nonblocking(true).map_err(procs::io_err)?;
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (counts.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((conn, _)) => {
                        let (c, st) = (c.clone(), st.clone());
                        c.sessions.fetch_add(1, Ordering::Relaxed);
                        std::thread::spawn(move || {
                            let _ = session(conn, &c, &st);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Sink { addr, counts, stop })
    }

    pub fn messages(&self) -> u64 {
        self.counts.messages.load(Ordering::Relaxed)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One SMTP session (RFC 5321's happy path; PIPELINING is fine as every
/// command is answered in order).
fn session(c: TcpStream, counts: &Counts, stop: &AtomicBool) -> std::io::Result<()> {
    c.set_nonblocking(false)?;
    c.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut w = c.try_clone()?;
    let mut r = BufReader::new(c);
    w.write_all(b"220 sink.loadtest ESMTP\r\n")?;
    let mut line = Vec::new();
    let read = |r: &mut BufReader<TcpStream>, line: &mut Vec<u8>| -> std::io::Result<bool> {
        line.clear();
        loop {
            match r.read_until(b'\n', line) {
                Ok(0) => return Ok(false),
                Ok(_) if line.ends_with(b"\n") => return Ok(true),
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    };
    while read(&mut r, &mut line)? {
        let cmd = String::from_utf8_lossy(&line).to_ascii_uppercase();
        let answer: &[u8] = if cmd.starts_with("EHLO") {
            b"250-sink.loadtest\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        } else if cmd.starts_with("HELO") {
            b"250 sink.loadtest\r\n"
        } else if cmd.starts_with("RCPT") {
            counts.recipients.fetch_add(1, Ordering::Relaxed);
            b"250 2.1.5 OK\r\n"
        } else if cmd.starts_with("MAIL") || cmd.starts_with("RSET") || cmd.starts_with("NOOP") {
            b"250 2.0.0 OK\r\n"
        } else if cmd.starts_with("DATA") {
            w.write_all(b"354 go ahead\r\n")?;
            loop {
                if !read(&mut r, &mut line)? {
                    return Ok(());
                }
                if line == b".\r\n" || line == b".\n" {
                    break;
                }
            }
            counts.messages.fetch_add(1, Ordering::Relaxed);
            b"250 2.0.0 queued\r\n"
        } else if cmd.starts_with("QUIT") {
            w.write_all(b"221 2.0.0 bye\r\n")?;
            return Ok(());
        } else {
            b"502 5.5.2 not implemented\r\n"
        };
        w.write_all(answer)?;
    }
    Ok(())
}

/// p50, p99 and max in ms, and the count.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lat {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub n: u64,
}

impl Lat {
    fn of(h: &Histogram) -> Lat {
        let ms = |us: u64| us as f64 / 1000.0;
        Lat {
            p50_ms: ms(h.quantile_us(0.5)),
            p99_ms: ms(h.quantile_us(0.99)),
            max_ms: ms(h.max_us()),
            n: h.count(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct OutboxFigures {
    pub bin: String,
    pub emails: usize,
    pub recipients: usize,
    /// Copies the outbox reported `sent` / `failed` by the end.
    pub sent: usize,
    pub failed: usize,
    /// Messages the sink accepted (and envelope recipients).
    pub sink_messages: u64,
    pub sink_recipients: u64,
    /// First POST sent → every copy sent (or failed), or the timeout.
    pub elapsed: Duration,
    pub finished: bool,
    pub post: Lat,
    pub get: Lat,
    pub pixel: Lat,
    pub loadavg: String,
    pub loadavg_after: String,
}

impl OutboxFigures {
    pub fn copies(&self) -> usize {
        self.emails * self.recipients
    }

    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.sent as f64 / s
        } else {
            0.0
        }
    }

    /// Every copy sent, once, and the sink got each of them.
    pub fn ok(&self) -> bool {
        self.finished
            && self.sent == self.copies()
            && self.sink_messages == self.copies() as u64
            && self.sink_recipients == self.copies() as u64
    }

    pub fn markdown(&self) -> String {
        let row = |name: &str, l: &Lat| {
            format!(
                "| {name} | {} | {:.1} | {:.1} | {:.1} |\n",
                l.n, l.p50_ms, l.p99_ms, l.max_ms
            )
        };
        format!(
            "## Outbox (embedded store, {} × {} copies to a local SMTP sink)\n\n\
`{}`; load average {} before, {} after.\n\n\
| copies | sent | failed | sink messages / recipients | time | copies/s |\n|---:|---:|---:|---:|---:|---:|\n\
| {} | {} | {} | {} / {} | {:.2} s{} | {:.0} |\n\n\
| meanwhile | requests | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|\n{}{}{}\n\
Verdict: {}.\n",
            self.emails,
            self.recipients,
            self.bin,
            self.loadavg,
            self.loadavg_after,
            self.copies(),
            self.sent,
            self.failed,
            self.sink_messages,
            self.sink_recipients,
            self.elapsed.as_secs_f64(),
            if self.finished { "" } else { " (timed out)" },
            self.rate(),
            row("`POST /api/v1/emails` (deliver smtp)", &self.post),
            row("`GET /api/v1/emails/{id}`, every 100 ms", &self.get),
            row("pixel, every 10 ms", &self.pixel),
            if self.ok() {
                "every copy sent once"
            } else {
                "copies missing or doubled"
            },
        )
    }
}

/// Runs the outbox measurement on the embedded store.
pub fn run(s: &OutboxSettings) -> Result<OutboxFigures> {
    let scratch = s.scratch.join(format!("outbox-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let sink = Sink::start()?;
    let mut mb = Mailbeacon::start(
        &s.mailbeacon,
        &scratch,
        vec![(
            "MAILBEACON_SMTP_URL".into(),
            format!("smtp://{}", sink.addr),
        )],
    )?;
    let out = measure(s, &mb, &sink);
    mb.stop();
    if out.is_ok() && !s.keep_scratch {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    out
}

/// A histogram several threads record into.
type Shared = Arc<Mutex<Histogram>>;

fn timed(h: &Mutex<Histogram>, f: impl FnOnce() -> bool) -> bool {
    let t = Instant::now();
    let ok = f();
    if ok {
        let us = t.elapsed().as_micros() as u64;
        h.lock().unwrap_or_else(|e| e.into_inner()).record(us);
    }
    ok
}

/// (sent, failed) of one email's recipients.
fn states(v: &Value) -> (usize, usize) {
    let mut sent = 0;
    let mut failed = 0;
    for r in v["recipients"].as_array().into_iter().flatten() {
        match r["delivery"]["state"].as_str() {
            Some("sent") => sent += 1,
            Some("failed") | Some("bounced") => failed += 1,
            _ => {}
        }
    }
    (sent, failed)
}

fn measure(s: &OutboxSettings, mb: &Mailbeacon, sink: &Sink) -> Result<OutboxFigures> {
    let base = mb.base();
    let tag = format!("ob{:x}", std::process::id());
    let prep = api::prepare(
        &base,
        &mb.admin,
        Shape {
            emails: 1,
            recipients: 50,
            links: 1,
        },
        &tag,
    )?;
    let token = prep.user_token.clone();
    let sender = format!("sender-{tag}@loadtest.example");
    let pixels: Vec<String> = prep.emails[0]
        .recipients
        .iter()
        .map(|r| format!("{base}{}", r.pixel))
        .collect();
    let raws: Vec<String> = (0..s.emails)
        .map(|n| {
            let to: Vec<String> = (0..s.recipients)
                .map(|r| format!("c{r}-{n}-{tag}@sink.example"))
                .collect();
            STANDARD.encode(api::newsletter(&sender, &to, 2, n))
        })
        .collect();

    let done = Arc::new(AtomicBool::new(false));
    let ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let post_h: Shared = Arc::default();
    let get_h: Shared = Arc::default();
    let pixel_h: Shared = Arc::default();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .redirects(0)
        .build();
    let progress: Arc<Mutex<(usize, usize)>> = Arc::default();
    let la = procs::loadavg();
    let started = Instant::now();
    let pixel_thread = {
        let (done, agent, h) = (done.clone(), agent.clone(), pixel_h.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                let url = &pixels[i % pixels.len()];
                i += 1;
                let ok = timed(&h, || {
                    agent
                        .get(url)
                        .set("User-Agent", UA)
                        .call()
                        .map(|r| r.into_reader().read_to_end(&mut Vec::new()).is_ok())
                        .unwrap_or(false)
                });
                std::thread::sleep(if ok {
                    PIXEL_EVERY
                } else {
                    Duration::from_millis(10)
                });
            }
        })
    };
    let get_thread = {
        let (done, agent, h, ids, progress, base, token) = (
            done.clone(),
            agent.clone(),
            get_h.clone(),
            ids.clone(),
            progress.clone(),
            base.clone(),
            token.clone(),
        );
        std::thread::spawn(move || {
            let auth = format!("Bearer {token}");
            let mut per: std::collections::HashMap<String, (usize, usize)> = Default::default();
            let mut k = 0usize;
            while !done.load(Ordering::Relaxed) {
                let list = ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if list.is_empty() {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let id = &list[k % list.len()];
                k += 1;
                let mut got = None;
                timed(&h, || {
                    match agent
                        .get(&format!("{base}/api/v1/emails/{id}"))
                        .set("Authorization", &auth)
                        .call()
                        .map(|r| r.into_json::<Value>())
                    {
                        Ok(Ok(v)) => {
                            got = Some(v);
                            true
                        }
                        _ => false,
                    }
                });
                std::thread::sleep(GET_EVERY);
                if let Some(v) = got {
                    per.insert(id.clone(), states(&v));
                    let sum = per.values().fold((0, 0), |a, (s, f)| (a.0 + s, a.1 + f));
                    *progress.lock().unwrap_or_else(|e| e.into_inner()) = sum;
                }
            }
        })
    };
    for raw in &raws {
        let mut answer = None;
        timed(&post_h, || {
            answer = Some(api::call(
                "POST",
                &format!("{base}/api/v1/emails"),
                &token,
                Some(json!({"mime": raw, "deliver": "smtp"})),
            ));
            true
        });
        let v = answer.ok_or("no answer")??;
        let id = v["id"].as_str().ok_or("POST /api/v1/emails: no id")?;
        ids.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id.to_owned());
    }
    let copies = s.emails * s.recipients;
    let deadline = started + s.timeout;
    let mut finished = false;
    let mut end = Instant::now();
    while Instant::now() < deadline {
        let (sent, failed) = *progress.lock().unwrap_or_else(|e| e.into_inner());
        end = Instant::now();
        if sent + failed >= copies {
            finished = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = end - started;
    done.store(true, Ordering::Relaxed);
    let _ = pixel_thread.join();
    let _ = get_thread.join();
    // The final states, read once more.
    let (mut sent, mut failed) = (0, 0);
    for id in ids.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let v = api::call("GET", &format!("{base}/api/v1/emails/{id}"), &token, None)?;
        let (s1, f1) = states(&v);
        sent += s1;
        failed += f1;
    }
    // A message the relay accepted is counted there before the outbox records
    // `sent`; give the sink's counters a moment to settle for the last ones.
    std::thread::sleep(Duration::from_millis(200));
    let snap = |h: &Shared| Lat::of(&h.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(OutboxFigures {
        bin: mb.bin.display().to_string(),
        emails: s.emails,
        recipients: s.recipients,
        sent,
        failed,
        sink_messages: sink.messages(),
        sink_recipients: sink.counts.recipients.load(Ordering::Relaxed),
        elapsed,
        finished,
        post: snap(&post_h),
        get: snap(&get_h),
        pixel: snap(&pixel_h),
        loadavg: la,
        loadavg_after: procs::loadavg(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn say(w: &mut TcpStream, r: &mut BufReader<TcpStream>, cmd: &str) -> String {
        w.write_all(cmd.as_bytes()).unwrap();
        let mut out = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            out.push_str(&line);
            // A multi-line reply continues with "250-".
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return out;
            }
        }
    }

    #[test]
    fn the_sink_counts_messages_and_recipients() {
        let sink = Sink::start().unwrap();
        let mut w = TcpStream::connect(sink.addr).unwrap();
        let mut r = BufReader::new(w.try_clone().unwrap());
        let mut greeting = String::new();
        r.read_line(&mut greeting).unwrap();
        assert!(greeting.starts_with("220 "), "{greeting}");
        assert!(say(&mut w, &mut r, "EHLO me\r\n").contains("250 "));
        for n in 0..2 {
            assert!(say(&mut w, &mut r, "MAIL FROM:<a@x>\r\n").starts_with("250"));
            assert!(say(&mut w, &mut r, "RCPT TO:<b@x>\r\n").starts_with("250"));
            assert!(say(&mut w, &mut r, "DATA\r\n").starts_with("354"));
            // A body line that starts with a dot is dot-stuffed: not the end.
            let body = format!("Subject: {n}\r\n\r\n..not the end\r\n.\r\n");
            assert!(say(&mut w, &mut r, &body).starts_with("250"));
        }
        assert!(say(&mut w, &mut r, "QUIT\r\n").starts_with("221"));
        assert_eq!(sink.messages(), 2);
        assert_eq!(sink.counts.recipients.load(Ordering::Relaxed), 2);
    }
}
