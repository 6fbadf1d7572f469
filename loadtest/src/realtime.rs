//! `compare --realtime`: what real time costs and how fast it is, on the
//! embedded store and, with `--targets redis` / `cluster`, on Redis.
//!
//! One mailbeacon (allowed to call 127.0.0.0/8) and two users: the *load* user's
//! followed emails take the pixel load; the *watcher* owns one more email, whose
//! recipients are the probes. The pixel load runs in alternated phases: alone,
//! and with a webhook of the watcher's (`email.opened`) pointing at a small
//! receiver here and `STREAMS` of the watcher's event streams
//! (`GET /api/v1/events`) attached; `--reps` rounds, ordered ABBA so that drift
//! (a store that grows, a busier machine) weighs on both sides alike.
//! The server derives an event from every hit of the load (and appends it to the
//! feed) either way it is attached; what reaches the watcher is only the probes'.
//! Throughout each "with" phase a prober fetches the probe pixels, one recipient
//! at a time, and keeps the moment each answer arrived; the receiver and every
//! stream keep the moment the open of that recipient reached them. The figures:
//! throughput with against without (means of the phases), and the webhook's and
//! the streams' latency
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
use crate::procs::{self, cpu_between, Cpu, Mailbeacon, Result, Sampler, Watched};

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

/// One phase of the pixel load: with real time attached or not, its rate and
/// who used the CPU.
#[derive(Clone, Debug)]
pub struct Phase {
    pub attached: bool,
    pub rate: f64,
    pub cpu: Cpu,
}

impl Phase {
    fn row(&self, n: usize) -> String {
        format!(
            "| {n} | {} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} |\n",
            if self.attached { "with" } else { "without" },
            self.rate,
            self.cpu.server,
            self.cpu.server / 100.0 * 1e6 / self.rate.max(1e-9),
            self.cpu.redis,
            self.cpu.generator,
            self.cpu.machine,
        )
    }
}

#[derive(Clone, Debug)]
pub struct Figures {
    pub target: &'static str,
    pub bin: String,
    pub conns: usize,
    pub duration: Duration,
    /// The phases, in the order run.
    pub phases: Vec<Phase>,
    pub streams: usize,
    pub probes: usize,
    pub webhook: Latency,
    pub stream: Latency,
    pub loadavg: String,
    pub loadavg_after: String,
    /// The server's `mailbeacon_realtime_*` metrics after the last phase.
    pub metrics: String,
}

impl Figures {
    fn rates(&self, attached: bool) -> Vec<f64> {
        self.phases
            .iter()
            .filter(|p| p.attached == attached)
            .map(|p| p.rate)
            .collect()
    }

    /// Mean of the "without" phases.
    pub fn rate_without(&self) -> f64 {
        mean(&self.rates(false))
    }

    /// Mean of the "with" phases.
    pub fn rate_with(&self) -> f64 {
        mean(&self.rates(true))
    }

    /// With against without, over the means of the alternated phases.
    pub fn ratio(&self) -> f64 {
        let w = self.rate_without();
        if w > 0.0 {
            self.rate_with() / w
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
            "## Real time ({}, pixel load, {} connections, {:.0} s per phase, {} phases)\n\n\
`{}`; load average {} before the first phase, {} after the last.\n\n\
| pixel throughput | mean req/s | phases (in order, alternated ABBA) |\n|---|---:|---|\n\
| without real time | {:.0} | {} |\n\
| with a webhook and {} streams | {:.0} | {} |\n| ratio | {:.2} (target ≥ 0.90) | |\n\n\
| pixel answer → arrival | p50 ms | p99 ms | max ms | arrived |\n|---|---:|---:|---:|---:|\n{}{}\n\
{} probes (target p99 < 1000 ms). Verdict: {}.\n\n\
Each phase; CPU in % of one core over its measured part (load test: the whole \
load-test process, i.e. the generator, the 100 stream readers, the prober and \
the webhook receiver; box: the machine, out of 200):\n\n\
| phase | real time | req/s | server CPU | server µs/req | Redis CPU | load test CPU | box |\n\
|---:|---|---:|---:|---:|---:|---:|---:|\n{}\n\
The server's real-time metrics after the last phase:\n\n```\n{}```\n",
            self.target,
            self.conns,
            self.duration.as_secs_f64(),
            self.phases.len(),
            self.bin,
            self.loadavg,
            self.loadavg_after,
            self.rate_without(),
            rates(&self.rates(false)),
            self.streams,
            self.rate_with(),
            rates(&self.rates(true)),
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
            self.phases
                .iter()
                .enumerate()
                .map(|(i, p)| p.row(i + 1))
                .collect::<String>(),
            self.metrics,
        )
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn rates(v: &[f64]) -> String {
    v.iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
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

/// Opens one event stream per `Arrivals` slot (each answered 200 before the
/// next opens), then reads all of them from one thread with one epoll loop
/// (mio), so the clients add one thread beside the load generator, not one per
/// stream; they close when `stop` is set.
fn streams(
    port: u16,
    token: &str,
    stop: Arc<AtomicBool>,
    marker: String,
    slots: &[Arrivals],
) -> Result<()> {
    let poll = mio::Poll::new().map_err(procs::io_err)?;
    let mut open = Vec::with_capacity(slots.len());
    for (i, into) in slots.iter().enumerate() {
        let (c, rest) = open_stream(port, token)?;
        c.set_nonblocking(true).map_err(procs::io_err)?;
        let mut c = mio::net::TcpStream::from_std(c);
        poll.registry()
            .register(&mut c, mio::Token(i), mio::Interest::READABLE)
            .map_err(procs::io_err)?;
        let mut reader = Lines {
            buf: rest,
            into: into.clone(),
        };
        reader.take_lines(&marker);
        open.push(Some((c, reader)));
    }
    std::thread::spawn(move || {
        let mut poll = poll;
        let mut events = mio::Events::with_capacity(open.len().max(1));
        let mut chunk = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            if poll
                .poll(&mut events, Some(Duration::from_millis(200)))
                .is_err()
            {
                continue;
            }
            for ev in events.iter() {
                let Some(slot) = open.get_mut(ev.token().0) else {
                    continue;
                };
                let Some((c, reader)) = slot else { continue };
                // Edge-triggered: read until the socket would block.
                let closed = loop {
                    match c.read(&mut chunk) {
                        Ok(0) => break true,
                        Ok(n) => {
                            reader.buf.extend_from_slice(&chunk[..n]);
                            reader.take_lines(&marker);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break true,
                    }
                };
                if closed {
                    *slot = None;
                }
            }
        }
        // Dropping the sockets closes the streams.
    });
    Ok(())
}

/// A stream's bytes not yet split into lines, and where its arrivals go.
struct Lines {
    buf: Vec<u8>,
    into: Arrivals,
}

impl Lines {
    /// Records the probes of every complete `data:` line (chunked framing
    /// lines and `id:`/`event:` lines carry no marker).
    fn take_lines(&mut self, marker: &str) {
        let Some(last) = self.buf.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        for line in self.buf[..last].split(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(line);
            if let Some(d) = line.trim_end().strip_prefix("data:") {
                record(d.trim_start(), marker, &self.into);
            }
        }
        self.buf.drain(..=last);
    }
}

/// Sends one stream's request and reads its status line; returns the socket
/// and whatever was read past the status line.
fn open_stream(port: u16, token: &str) -> Result<(TcpStream, Vec<u8>)> {
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
    let rest = r.buffer().to_vec();
    Ok((r.into_inner(), rest))
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
    let redis: Vec<u32> = on.redis.iter().filter_map(|r| r.pid()).collect();
    let out = measure(s, &mut on.mb, &redis, target);
    on.mb.stop();
    drop(on.redis);
    // A run that lost probes keeps its scratch (the server's log) to read.
    let complete = out
        .as_ref()
        .is_ok_and(|f| f.webhook.got == f.webhook.expected && f.stream.got == f.stream.expected);
    if complete && !s.keep_scratch {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    out
}

/// What is attached during a "with" phase: the watcher's webhook and streams.
struct Attached {
    stop: Arc<AtomicBool>,
    webhook: String,
}

#[allow(clippy::too_many_arguments)]
fn attach(
    agent: &ureq::Agent,
    base: &str,
    port: u16,
    token: &str,
    recv: SocketAddr,
    marker: &str,
    slots: &[Arrivals],
) -> Result<Attached> {
    let stop = Arc::new(AtomicBool::new(false));
    let created: Value = agent
        .post(&format!("{base}/api/v1/webhooks"))
        .set("Authorization", &format!("Bearer {token}"))
        .send_json(json!({"url": format!("http://{recv}/hook"), "events": ["email.opened"]}))
        .map_err(|e| format!("POST /api/v1/webhooks: {e}"))?
        .into_json()
        .map_err(procs::io_err)?;
    let webhook = created["id"]
        .as_str()
        .ok_or("POST /api/v1/webhooks: no id")?
        .to_string();
    streams(port, token, stop.clone(), marker.to_string(), slots)?;
    Ok(Attached { stop, webhook })
}

fn detach(agent: &ureq::Agent, base: &str, token: &str, a: Attached) -> Result<()> {
    a.stop.store(true, Ordering::Relaxed);
    agent
        .delete(&format!("{base}/api/v1/webhooks/{}", a.webhook))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .map_err(|e| format!("DELETE /api/v1/webhooks: {e}"))?;
    // The stream reader sees `stop` within its 200 ms poll and closes them all.
    std::thread::sleep(Duration::from_millis(600));
    Ok(())
}

/// A webhook's deliveries counted by state, with the first few errors (to say
/// why probes are missing).
fn delivery_states(agent: &ureq::Agent, base: &str, token: &str, id: &str) -> String {
    let got = agent
        .get(&format!("{base}/api/v1/webhooks/{id}/deliveries"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .map_err(|e| e.to_string())
        .and_then(|r| r.into_json::<Value>().map_err(|e| e.to_string()));
    let v = match got {
        Ok(v) => v,
        Err(e) => return format!("GET deliveries: {e}"),
    };
    let mut states: HashMap<String, usize> = HashMap::new();
    let mut errors: Vec<String> = Vec::new();
    for d in v["deliveries"].as_array().into_iter().flatten() {
        *states.entry(d["state"].to_string()).or_default() += 1;
        if let Some(e) = d["error"].as_str().filter(|_| errors.len() < 3) {
            errors.push(format!("{} (status {})", e, d["status"]));
        }
    }
    format!("{states:?}; errors {errors:?}")
}

/// The answer times (seconds after `began`) of the probes answered since then
/// that have not arrived, as ranges of consecutive seconds.
fn missing_at(
    answers: &Mutex<HashMap<String, Instant>>,
    arrived: &Arrivals,
    began: Instant,
) -> String {
    let arrived = arrived.lock().unwrap_or_else(|e| e.into_inner());
    let mut at: Vec<f64> = answers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(who, t)| **t >= began && !arrived.contains_key(*who))
        .map(|(_, t)| t.duration_since(began).as_secs_f64())
        .collect();
    at.sort_by(f64::total_cmp);
    let shown: Vec<String> = at.iter().map(|t| format!("{t:.1}")).collect();
    format!("{} probes: {}", at.len(), shown.join(" "))
}

/// The `mailbeacon_realtime_*` samples of `GET /metrics`, one per line.
fn realtime_metrics(agent: &ureq::Agent, base: &str, admin: &str) -> String {
    match agent
        .get(&format!("{base}/metrics"))
        .set("Authorization", &format!("Bearer {admin}"))
        .call()
        .map_err(|e| e.to_string())
        .and_then(|r| r.into_string().map_err(|e| e.to_string()))
    {
        Ok(text) => text
            .lines()
            .filter(|l| l.starts_with("mailbeacon_realtime_"))
            .map(|l| format!("{l}\n"))
            .collect(),
        Err(e) => format!("GET /metrics: {e}\n"),
    }
}

/// The order of the phases: `reps` rounds, alternately without-with and
/// with-without (ABBA), so drift over the run (a store that grows, a machine
/// that gets busier) weighs on both sides alike.
fn order(reps: usize) -> Vec<bool> {
    (0..reps.max(1))
        .flat_map(|k| {
            if k % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            }
        })
        .collect()
}

/// Runs one phase's load with the CPU sampled, the server's and Redis's.
fn phase(load: &Load, attached: bool, server: Option<u32>, redis: &[u32]) -> Result<Phase> {
    let watched = Arc::new(Mutex::new(Watched {
        server: server.into_iter().collect(),
        redis: redis.to_vec(),
    }));
    let sampler = Sampler::start(watched, Duration::from_millis(200));
    let out = gen::run(load);
    let samples = sampler.finish();
    let out = out.map_err(procs::io_err)?;
    let m0 = out.started + out.slot * out.warmup_slots as u32;
    let m1 = m0 + out.slot * out.measured_slots as u32;
    Ok(Phase {
        attached,
        rate: out.rate(),
        cpu: cpu_between(&samples, m0, m1),
    })
}

fn measure(s: &Settings, mb: &mut Mailbeacon, redis: &[u32], target: Target) -> Result<Figures> {
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
            // One recipient per probe, for every "with" phase.
            recipients: (PROBE_RATE * s.duration.as_secs_f64() * s.reps.max(1) as f64)
                .ceil()
                .clamp(s.shape.recipients as f64, 1000.0) as usize,
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
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .redirects(0)
        .build();
    let receiver_stop = Arc::new(AtomicBool::new(false));
    let hook_arrivals: Arrivals = Arc::default();
    let recv = receiver(receiver_stop.clone(), marker.clone(), hook_arrivals.clone())?;
    // Each stream slot keeps its arrivals across the "with" phases (every phase
    // opens its streams anew); the probes are distinct recipients throughout.
    let stream_arrivals: Vec<Arrivals> = (0..STREAMS).map(|_| Arrivals::default()).collect();
    let answers: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let probes: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(
        probe_email
            .recipients
            .iter()
            .rev()
            .map(|r| (r.address.clone(), r.pixel.clone()))
            .collect(),
    ));
    let mut phases = Vec::new();
    let la = procs::loadavg();
    for (n, attached) in order(s.reps).into_iter().enumerate() {
        let seed = n as u64 + 1;
        if !attached {
            eprintln!(
                "[realtime] phase {}: pixel load without real time attached",
                n + 1
            );
            phases.push(phase(&load(seed), false, mb.pid(), redis)?);
            continue;
        }
        let a = attach(
            &agent,
            &base,
            mb.port,
            &prep.user_token,
            recv,
            &marker,
            &stream_arrivals,
        )?;
        eprintln!(
            "[realtime] phase {}: pixel load with a webhook and {STREAMS} streams, probing",
            n + 1
        );
        let probing = Arc::new(AtomicBool::new(true));
        let prober = {
            let (answers, probing, agent, base, probes) = (
                answers.clone(),
                probing.clone(),
                agent.clone(),
                base.clone(),
                probes.clone(),
            );
            let warmup = s.warmup;
            std::thread::spawn(move || {
                std::thread::sleep(warmup);
                while probing.load(Ordering::Relaxed) {
                    let next = probes.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let Some((who, pixel)) = next else { break };
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
        let began = Instant::now();
        let r = phase(&load(seed), true, mb.pid(), redis);
        probing.store(false, Ordering::Relaxed);
        let _ = prober.join();
        phases.push(r?);
        // Let what is in flight arrive (the queue may be behind the load).
        let n_answers = answers.lock().map(|m| m.len()).unwrap_or(0);
        let deadline = Instant::now() + s.settle.min(Duration::from_secs(20));
        let arrived = |a: &Arrivals| a.lock().map(|m| m.len() >= n_answers).unwrap_or(true);
        while !(arrived(&hook_arrivals) && stream_arrivals.iter().all(arrived))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let hook_got = hook_arrivals.lock().map(|m| m.len()).unwrap_or(0);
        let fewest = stream_arrivals
            .iter()
            .map(|a| a.lock().map(|m| m.len()).unwrap_or(0))
            .min()
            .unwrap_or(0);
        eprintln!(
            "[realtime] phase {}: {n_answers} probes answered so far; the webhook has {hook_got}, the fewest of a stream {fewest}",
            n + 1
        );
        if hook_got < n_answers {
            eprintln!(
                "[realtime] phase {}: the webhook has {hook_got} of {n_answers} probes; its deliveries: {}",
                n + 1,
                delivery_states(&agent, &base, &prep.user_token, &a.webhook)
            );
            eprintln!(
                "[realtime] phase {}: when the missing probes were answered, in s after the phase began: {}",
                n + 1,
                missing_at(&answers, &hook_arrivals, began)
            );
        }
        detach(&agent, &base, &prep.user_token, a)?;
    }
    receiver_stop.store(true, Ordering::Relaxed);
    let answers = answers.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let snap = |a: &Arrivals| a.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let hooks = [snap(&hook_arrivals)];
    let streams: Vec<_> = stream_arrivals.iter().map(snap).collect();
    Ok(Figures {
        conns,
        duration: s.duration,
        phases,
        streams: STREAMS,
        probes: answers.len(),
        webhook: latency(&answers, &hooks),
        stream: latency(&answers, &streams),
        loadavg: la,
        loadavg_after: procs::loadavg(),
        metrics: realtime_metrics(&agent, &base, &mb.admin),
        target: target.name(),
        bin: mb.bin.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_alternate_abba() {
        assert_eq!(order(1), [false, true]);
        assert_eq!(order(2), [false, true, true, false]);
        assert_eq!(order(3), [false, true, true, false, false, true]);
        assert_eq!(order(0), [false, true], "at least one round");
    }
}
