//! `compare --realtime`: what real time costs and how fast it is, on the
//! embedded store and, with `--targets redis` / `cluster`, on Redis.
//!
//! One mailbeacon (allowed to call 127.0.0.0/8) and two users: the *load* user's
//! followed emails take the pixel load; the *watcher* owns one more email, whose
//! recipients are the probes. First the pixel load alone; then the same load with
//! a webhook of the watcher's (`email.opened`) pointing at a small receiver here
//! and `STREAMS` of the watcher's event streams (`GET /api/v1/events`) attached.
//! The server derives an event from every hit of the load (and appends it to the
//! feed) either way it is attached; what reaches the watcher is only the probes'.
//! Throughout the second run a prober fetches the probe pixels, one recipient at
//! a time, and keeps the moment each answer arrived; the receiver and every
//! stream keep the moment the open of that recipient reached them. The figures:
//! throughput with against without, and the webhook's and the streams' latency
//! (answer → arrival) at p50 and p99, with the load average before and after.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::{self, Shape};
use crate::compare::{start_on_store, Target};
use crate::compare::{Settings, UA};
use crate::gen::{self, Load};
use crate::procs::{self, Mailbeacon, Result};

/// Event streams held open during the second run.
pub const STREAMS: usize = 100;
/// Probes per second during the second run.
const PROBE_RATE: f64 = 10.0;

/// Arrival times by probe recipient.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

#[derive(Clone, Debug, Default)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Probes that arrived.
    pub got: usize,
    /// Probes that should have arrived.
    pub expected: usize,
}

#[derive(Clone, Debug)]
pub struct Figures {
    pub target: &'static str,
    pub bin: String,
    pub conns: usize,
    pub duration: Duration,
    pub rate_without: f64,
    pub rate_with: f64,
    pub streams: usize,
    pub probes: usize,
    pub webhook: Latency,
    pub stream: Latency,
    pub loadavg: String,
    pub loadavg_after: String,
}

impl Figures {
    pub fn ratio(&self) -> f64 {
        if self.rate_without > 0.0 {
            self.rate_with / self.rate_without
        } else {
            0.0
        }
    }

    /// The targets: throughput within 10 %, p99 under 1 s both ways.
    pub fn ok(&self) -> bool {
        self.ratio() >= 0.9
            && self.webhook.p99_ms < 1000.0
            && self.stream.p99_ms < 1000.0
            && self.webhook.got == self.webhook.expected
            && self.stream.got == self.stream.expected
    }

    pub fn markdown(&self) -> String {
        let lat = |name: &str, l: &Latency| {
            format!(
                "| {name} | {:.1} | {:.1} | {:.1} | {}/{} |\n",
                l.p50_ms, l.p99_ms, l.max_ms, l.got, l.expected
            )
        };
        format!(
            "## Real time ({}, pixel load, {} connections, {:.0} s)\n\n\
`{}`; load average {} before the second run, {} after it.\n\n\
| pixel throughput | req/s |\n|---|---:|\n| without real time | {:.0} |\n\
| with a webhook and {} streams | {:.0} |\n| ratio | {:.2} (target ≥ 0.90) |\n\n\
| pixel answer → arrival | p50 ms | p99 ms | max ms | arrived |\n|---|---:|---:|---:|---:|\n{}{}\n\
{} probes (target p99 < 1000 ms). Verdict: {}.\n",
            self.target,
            self.conns,
            self.duration.as_secs_f64(),
            self.bin,
            self.loadavg,
            self.loadavg_after,
            self.rate_without,
            self.streams,
            self.rate_with,
            self.ratio(),
            lat("webhook (local receiver)", &self.webhook),
            lat(
                &format!("event stream (each of {})", self.streams),
                &self.stream
            ),
            self.probes,
            if self.ok() {
                "targets met"
            } else {
                "targets missed"
            },
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn latency(answers: &HashMap<String, Instant>, arrivals: &[HashMap<String, Instant>]) -> Latency {
    let mut v: Vec<f64> = Vec::new();
    for a in arrivals {
        for (who, at) in a {
            if let Some(t) = answers.get(who) {
                v.push(ms(at.saturating_duration_since(*t)));
            }
        }
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        if v.is_empty() {
            0.0
        } else {
            v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
        }
    };
    Latency {
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: v.last().copied().unwrap_or(0.0),
        got: v.len(),
        expected: answers.len() * arrivals.len(),
    }
}

/// Every `recipient` string in a webhook body or an event (an event, a list of
/// events, or an envelope around them).
fn recipients_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("recipient", Value::String(s)) => out.push(s.clone()),
                    _ => recipients_in(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| recipients_in(x, out)),
        _ => {}
    }
}

fn record(text: &str, marker: &str, into: &Arrivals) {
    if !text.contains(marker) {
        return;
    }
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let now = Instant::now();
    let mut who = Vec::new();
    recipients_in(&v, &mut who);
    let mut m = into.lock().unwrap_or_else(|e| e.into_inner());
    for w in who.into_iter().filter(|w| w.contains(marker)) {
        m.entry(w).or_insert(now);
    }
}

/// The webhook receiver: HTTP/1.1 keep-alive, answers 204 to every POST.
fn receiver(stop: Arc<AtomicBool>, marker: String, into: Arrivals) -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(procs::io_err)?;
    let addr = l.local_addr().map_err(procs::io_err)?;
    l.set_nonblocking(true).map_err(procs::io_err)?;
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((c, _)) => {
                    let (marker, into, stop) = (marker.clone(), into.clone(), stop.clone());
                    std::thread::spawn(move || serve_one(c, &marker, &into, &stop));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Ok(addr)
}

fn serve_one(c: TcpStream, marker: &str, into: &Arrivals, stop: &AtomicBool) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
    let mut w = match c.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(c);
    while !stop.load(Ordering::Relaxed) {
        let mut len = 0usize;
        let mut line = String::new();
        // Request line and headers.
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    continue;
                }
                Err(_) => return,
            }
            let t = line.trim_end();
            if t.is_empty() {
                break;
            }
            if let Some((k, v)) = t.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        record(&String::from_utf8_lossy(&body), marker, into);
        if w.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// One event stream; returns once the server answered 200.
fn stream(
    port: u16,
    token: &str,
    stop: Arc<AtomicBool>,
    marker: String,
    into: Arrivals,
) -> Result<()> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).map_err(procs::io_err)?;
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(procs::io_err)?;
    write!(
        c,
        "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .map_err(procs::io_err)?;
    let mut r = BufReader::new(c);
    let mut status = String::new();
    r.read_line(&mut status).map_err(procs::io_err)?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("GET /api/v1/events: {}", status.trim_end()));
    }
    // From now on a short timeout, so the reader sees `stop` soon.
    r.get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(procs::io_err)?;
    std::thread::spawn(move || {
        let mut line = String::new();
        while !stop.load(Ordering::Relaxed) {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {
                    // Chunked framing lines and `id:`/`event:` lines carry no marker.
                    if let Some(d) = line.trim_end().strip_prefix("data:") {
                        record(d.trim_start(), &marker, &into);
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        }
    });
    Ok(())
}

/// One pixel request per path, with a browser's User-Agent (human opens).
pub(crate) fn pixel_requests(paths: &[String], port: u16) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|p| {
            format!("GET {p} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: {UA}\r\nAccept: */*\r\n\r\n")
                .into_bytes()
        })
        .collect()
}

/// The targets `--targets` names that run mailbeacon (embedded if none).
pub fn targets(s: &Settings) -> Vec<Target> {
    let t: Vec<Target> = s
        .targets
        .iter()
        .copied()
        .filter(|t| matches!(t, Target::Embedded | Target::Redis | Target::Cluster))
        .collect();
    if t.is_empty() {
        vec![Target::Embedded]
    } else {
        t
    }
}

/// Runs the real-time measurement with `s.conns[0]` connections for
/// `s.duration` on each of `targets(s)`.
pub fn run(s: &Settings) -> Result<Vec<Figures>> {
    targets(s).into_iter().map(|t| run_on(s, t)).collect()
}

fn run_on(s: &Settings, target: Target) -> Result<Figures> {
    let scratch = s
        .scratch
        .join(format!("realtime-{}-{:?}", std::process::id(), target));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let env = vec![("MAILBEACON_OUTBOUND_ALLOW".into(), "127.0.0.0/8".into())];
    let mut on = start_on_store(target, &s.mailbeacon, &s.mailbeacon_redis, &scratch, env)?;
    let out = measure(s, &mut on.mb, target);
    on.mb.stop();
    drop(on.redis);
    if out.is_ok() && !s.keep_scratch {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    out
}

fn measure(s: &Settings, mb: &mut Mailbeacon, target: Target) -> Result<Figures> {
    let conns = s.conns.first().copied().unwrap_or(64);
    let base = mb.base();
    let tag = format!("rt{:x}", std::process::id());
    let load_prep = api::prepare(&base, &mb.admin, s.shape, &tag)?;
    // The watcher: another user, one email, its recipients the probes.
    let probe_tag = format!("{tag}w");
    let prep = api::prepare(
        &base,
        &mb.admin,
        Shape {
            emails: 1,
            ..s.shape
        },
        &probe_tag,
    )?;
    let probe_email = prep.emails.first().ok_or("no probe email prepared")?;
    let marker = format!("-{probe_tag}@");
    let paths: Vec<String> = load_prep
        .emails
        .iter()
        .flat_map(|e| e.recipients.iter().map(|r| r.pixel.clone()))
        .collect();
    let reqs = pixel_requests(&paths, mb.port);
    let load = |seed: u64| Load {
        addr: ([127, 0, 0, 1], mb.port).into(),
        requests: &reqs,
        expect_status: 200,
        conns,
        warmup: s.warmup,
        duration: s.duration,
        drain: s.drain,
        slot: s.slot,
        seed,
    };
    eprintln!("[realtime] pixel load without real time attached");
    let without = gen::run(&load(1)).map_err(procs::io_err)?;

    let stop = Arc::new(AtomicBool::new(false));
    let hook_arrivals: Arrivals = Arc::default();
    let recv = receiver(stop.clone(), marker.clone(), hook_arrivals.clone())?;
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .redirects(0)
        .build();
    agent
        .post(&format!("{base}/api/v1/webhooks"))
        .set("Authorization", &format!("Bearer {}", prep.user_token))
        .send_json(json!({"url": format!("http://{recv}/hook"), "events": ["email.opened"]}))
        .map_err(|e| format!("POST /api/v1/webhooks: {e}"))?;
    let stream_arrivals: Vec<Arrivals> = (0..STREAMS).map(|_| Arrivals::default()).collect();
    for a in &stream_arrivals {
        stream(
            mb.port,
            &prep.user_token,
            stop.clone(),
            marker.clone(),
            a.clone(),
        )?;
    }
    eprintln!("[realtime] pixel load with a webhook and {STREAMS} streams, probing");
    let answers: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let probing = Arc::new(AtomicBool::new(true));
    let prober = {
        let (answers, probing, agent, base) = (
            answers.clone(),
            probing.clone(),
            agent.clone(),
            base.clone(),
        );
        let probes: Vec<(String, String)> = probe_email
            .recipients
            .iter()
            .map(|r| (r.address.clone(), r.pixel.clone()))
            .collect();
        let warmup = s.warmup;
        std::thread::spawn(move || {
            std::thread::sleep(warmup);
            for (who, pixel) in probes {
                if !probing.load(Ordering::Relaxed) {
                    break;
                }
                let r = agent
                    .get(&format!("{base}{pixel}"))
                    .set("User-Agent", UA)
                    .call();
                if let Ok(r) = r {
                    let mut sink = Vec::new();
                    if r.into_reader().read_to_end(&mut sink).is_ok() {
                        answers
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(who, Instant::now());
                    }
                }
                std::thread::sleep(Duration::from_secs_f64(1.0 / PROBE_RATE));
            }
        })
    };
    let la = procs::loadavg();
    let with = gen::run(&load(2));
    probing.store(false, Ordering::Relaxed);
    let _ = prober.join();
    let with = with.map_err(procs::io_err)?;
    // Let what is in flight arrive (the queue may be behind the load).
    let answers = answers.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let deadline = Instant::now() + s.settle.min(Duration::from_secs(20));
    let done = || {
        let n = answers.len();
        hook_arrivals.lock().map(|m| m.len() >= n).unwrap_or(true)
            && stream_arrivals
                .iter()
                .all(|a| a.lock().map(|m| m.len() >= n).unwrap_or(true))
    };
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let snap = |a: &Arrivals| a.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let hooks = [snap(&hook_arrivals)];
    let streams: Vec<_> = stream_arrivals.iter().map(snap).collect();
    Ok(Figures {
        conns,
        duration: s.duration,
        rate_without: without.rate(),
        rate_with: with.rate(),
        streams: STREAMS,
        probes: answers.len(),
        webhook: latency(&answers, &hooks),
        stream: latency(&answers, &streams),
        loadavg: la,
        loadavg_after: procs::loadavg(),
        target: target.name(),
        bin: mb.bin.display().to_string(),
    })
}
