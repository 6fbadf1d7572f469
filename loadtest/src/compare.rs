//! The side-by-side comparison, the fault modes and the smoke run.
//!
//! A comparison starts every selected server once (mailbeacon on the embedded
//! store, on one Redis, on a 3-master Redis Cluster; nginx `empty_gif` with its
//! access log; bare hyper), then for each repetition, load kind (pixel, click) and
//! connection count runs the **same generator with the same settings** against
//! each in turn, so every ratio compares runs minutes apart at most. Before each
//! mailbeacon run it follows fresh emails through the API; after it, it reads the
//! reports and checks that every answered hit was recorded exactly once. nginx and
//! hyper get the same URL paths (they answer anything under `/o/` and `/c/`).
//!
//! Fault modes each start their own servers, run the pixel load, and mid-run:
//! `kill -9` the server and restart it (embedded store), or restart Redis
//! (`kill -9`, AOF reload), or pause Redis (`CLIENT PAUSE … ALL`). They report the
//! latency and errors around the fault, and the exactly-once check with the slack a
//! kill allows (a hit in flight may be recorded without its answer arriving).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::{self, Prepared, Shape};
use crate::check::{self, Expected, Kind, Verdict};
use crate::gen::{self, Errors, Load, Outcome};
use crate::procs::{
    self, cpu_between, loadavg, Cpu, HyperMin, Mailbeacon, Nginx, Redis, RedisCluster, Result,
    Sampler, Watched,
};

/// The user agent every request carries: a desktop browser, as a recipient's.
pub const UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Embedded,
    Redis,
    Cluster,
    Nginx,
    Hyper,
    /// nginx + Lua, one Redis `HINCRBY` per hit (Redis without persistence).
    NginxLua,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Embedded => "mailbeacon embedded",
            Target::Redis => "mailbeacon Redis",
            Target::Cluster => "mailbeacon Redis Cluster (3)",
            Target::Nginx => "nginx empty_gif + log",
            Target::Hyper => "bare hyper",
            Target::NginxLua => "nginx + Lua + Redis",
        }
    }

    pub fn parse(s: &str) -> Option<Target> {
        Some(match s {
            "embedded" => Target::Embedded,
            "redis" => Target::Redis,
            "cluster" => Target::Cluster,
            "nginx" => Target::Nginx,
            "hyper" => Target::Hyper,
            "lua" => Target::NginxLua,
            _ => return None,
        })
    }

    fn is_mailbeacon(self) -> bool {
        matches!(self, Target::Embedded | Target::Redis | Target::Cluster)
    }
}

/// A mailbeacon on one store: the embedded one, or a Redis / Redis Cluster
/// started for it (`redis` keeps it running: dropping a node stops it).
pub struct OnStore {
    pub mb: Mailbeacon,
    pub redis: Vec<Redis>,
}

/// Starts `target`'s store and mailbeacon on it (`mailbeacon_redis` for the
/// Redis targets) with `env`, and checks `/healthz` names that store.
pub fn start_on_store(
    target: Target,
    mailbeacon: &Path,
    mailbeacon_redis: &Path,
    scratch: &Path,
    mut env: Vec<(String, String)>,
) -> Result<OnStore> {
    let mut redis: Vec<Redis> = Vec::new();
    let (bin, want) = match target {
        Target::Redis => {
            let r = Redis::start(scratch, false)?;
            env.push(("MAILBEACON_REDIS_URL".into(), r.url()));
            redis.push(r);
            (mailbeacon_redis, "redis")
        }
        Target::Cluster => {
            let c = RedisCluster::start(scratch)?;
            env.push(("MAILBEACON_REDIS_CLUSTER".into(), c.seeds()));
            redis = c.nodes;
            (mailbeacon_redis, "redis-cluster")
        }
        Target::Embedded => (mailbeacon, "embedded"),
        other => return Err(format!("{} is not a mailbeacon target", other.name())),
    };
    let mut mb = Mailbeacon::start(bin, scratch, env)?;
    let got = api::store_kind(&mb.base())?;
    if got != want {
        mb.stop();
        return Err(format!("{} runs on {got:?}, not {want:?}", bin.display()));
    }
    Ok(OnStore { mb, redis })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Kill9,
    RedisRestart,
    RedisPause,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill9 => "server kill -9 + restart (embedded)",
            Fault::RedisRestart => "Redis kill -9 + restart",
            Fault::RedisPause => "Redis CLIENT PAUSE 2 s",
        }
    }

    pub fn parse(s: &str) -> Option<Fault> {
        Some(match s {
            "kill9" => Fault::Kill9,
            "redis-restart" => Fault::RedisRestart,
            "redis-pause" => Fault::RedisPause,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// mailbeacon binary for the embedded store.
    pub mailbeacon: PathBuf,
    /// mailbeacon binary for Redis (the same after the Redis backend is merged).
    pub mailbeacon_redis: PathBuf,
    pub hyper_min: PathBuf,
    pub targets: Vec<Target>,
    pub kinds: Vec<Kind>,
    pub conns: Vec<usize>,
    pub warmup: Duration,
    pub duration: Duration,
    pub drain: Duration,
    pub reps: usize,
    pub shape: Shape,
    pub faults: Vec<Fault>,
    /// Connections for the fault runs.
    pub fault_conns: usize,
    pub scratch: PathBuf,
    /// Longest wait for reports to show every answered hit.
    pub settle: Duration,
    /// Also run wrk against bare hyper, to show the generator keeps up with it.
    pub wrk: bool,
    pub slot: Duration,
    /// Keep the scratch directory (data directories grow by gigabytes per
    /// comparison); it is also kept when a check fails, for its logs.
    pub keep_scratch: bool,
    /// `--realtime`: the real-time measurement (`realtime::run`) instead of the comparison.
    pub realtime: bool,
}

impl Settings {
    /// Binaries default to the ones beside this executable (one `cargo build`).
    pub fn defaults() -> Settings {
        let dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        Settings {
            mailbeacon: dir.join("mailbeacon"),
            mailbeacon_redis: dir.join("mailbeacon"),
            hyper_min: dir.join("hyper-min"),
            targets: vec![
                Target::Nginx,
                Target::Hyper,
                Target::NginxLua,
                Target::Embedded,
                Target::Redis,
                Target::Cluster,
            ],
            kinds: vec![Kind::Pixel, Kind::Click],
            conns: vec![64, 256],
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(10),
            drain: Duration::from_secs(10),
            reps: 1,
            shape: Shape {
                emails: 100,
                recipients: 50,
                links: 4,
            },
            faults: vec![Fault::Kill9, Fault::RedisRestart, Fault::RedisPause],
            fault_conns: 64,
            scratch: std::env::temp_dir().join("mailbeacon-loadtest"),
            settle: Duration::from_secs(30),
            wrk: true,
            slot: Duration::from_millis(100),
            keep_scratch: false,
            realtime: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct FaultInfo {
    pub fault: Fault,
    /// Seconds into the run when the fault began.
    pub at_s: f64,
    /// From the fault until the service was back (restart healthy / pause over).
    pub outage: Duration,
    /// Latencies of answers from the fault until 2 s after it ended.
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub answered: u64,
    pub errors: u64,
    /// Rate over the same window.
    pub rate: f64,
}

#[derive(Clone, Debug)]
pub struct RunResult {
    pub target: String,
    pub kind: Kind,
    pub conns: usize,
    pub rep: usize,
    pub rate: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub errors: Errors,
    pub cpu: Cpu,
    pub verdict: Option<Verdict>,
    pub loadavg: String,
    pub longest_stall: Duration,
    pub fault: Option<FaultInfo>,
    pub urls: usize,
}

/// A running server (and its Redis, if any).
enum Stack {
    Mailbeacon { mb: Mailbeacon, redis: Vec<Redis> },
    Nginx(Nginx),
    Hyper(HyperMin),
    NginxLua(Nginx, Redis),
}

impl Stack {
    fn start(t: Target, s: &Settings) -> Result<Stack> {
        let scratch = &s.scratch;
        Ok(match t {
            Target::Embedded => Stack::Mailbeacon {
                mb: Mailbeacon::start(&s.mailbeacon, scratch, Vec::new())?,
                redis: Vec::new(),
            },
            Target::Redis => {
                let r = Redis::start(scratch, false)?;
                let env = vec![("MAILBEACON_REDIS_URL".to_owned(), r.url())];
                Stack::Mailbeacon {
                    mb: Mailbeacon::start(&s.mailbeacon_redis, scratch, env)?,
                    redis: vec![r],
                }
            }
            Target::Cluster => {
                let c = RedisCluster::start(scratch)?;
                let env = vec![("MAILBEACON_REDIS_CLUSTER".to_owned(), c.seeds())];
                Stack::Mailbeacon {
                    mb: Mailbeacon::start(&s.mailbeacon_redis, scratch, env)?,
                    redis: c.nodes,
                }
            }
            Target::Nginx => Stack::Nginx(Nginx::start(scratch)?),
            Target::Hyper => Stack::Hyper(HyperMin::start(&s.hyper_min, scratch)?),
            Target::NginxLua => {
                let r = Redis::start_with(scratch, false, false)?;
                Stack::NginxLua(Nginx::start_with(scratch, Some(r.port))?, r)
            }
        })
        .and_then(|st| st.check_store(t))
    }

    /// A binary without Redis support ignores the Redis settings and runs on the
    /// embedded store: refuse that rather than report it as Redis.
    fn check_store(self, t: Target) -> Result<Stack> {
        let want = match t {
            Target::Embedded => "embedded",
            Target::Redis => "redis",
            Target::Cluster => "redis-cluster",
            _ => return Ok(self),
        };
        if let Stack::Mailbeacon { mb, .. } = &self {
            let got = api::store_kind(&mb.base())?;
            if got != want {
                return Err(format!(
                    "{} says its store is {got:?}, not {want:?}: this build has no Redis support \
                     (pass --mailbeacon-redis with a build that has it)",
                    mb.bin.display()
                ));
            }
        }
        Ok(self)
    }

    fn port(&self) -> u16 {
        match self {
            Stack::Mailbeacon { mb, .. } => mb.port,
            Stack::Nginx(n) | Stack::NginxLua(n, _) => n.port,
            Stack::Hyper(h) => h.port,
        }
    }

    fn watched(&self) -> Watched {
        match self {
            Stack::Mailbeacon { mb, redis } => Watched {
                server: mb.pid().into_iter().collect(),
                redis: redis.iter().filter_map(Redis::pid).collect(),
            },
            Stack::Nginx(n) => Watched {
                server: vec![n.proc.pid()],
                redis: Vec::new(),
            },
            Stack::Hyper(h) => Watched {
                server: vec![h.proc.pid()],
                redis: Vec::new(),
            },
            Stack::NginxLua(n, r) => Watched {
                server: vec![n.proc.pid()],
                redis: r.pid().into_iter().collect(),
            },
        }
    }

    fn stop(self) {
        if let Stack::Mailbeacon { mut mb, .. } = self {
            // Graceful, so the data directory is left consistent; Redis and the
            // anchors are simply killed on drop.
            mb.stop();
        }
    }
}

/// The URL paths of one load and, for mailbeacon, whose counter each one drives.
struct Urls {
    paths: Vec<String>,
    /// (email index, recipient index) per path.
    owner: Vec<(usize, usize)>,
}

fn urls_of(prep: &Prepared, kind: Kind) -> Urls {
    let mut u = Urls {
        paths: Vec::new(),
        owner: Vec::new(),
    };
    for (ei, e) in prep.emails.iter().enumerate() {
        for (ri, r) in e.recipients.iter().enumerate() {
            match kind {
                Kind::Pixel => {
                    u.paths.push(r.pixel.clone());
                    u.owner.push((ei, ri));
                }
                Kind::Click => {
                    for c in &r.clicks {
                        u.paths.push(c.clone());
                        u.owner.push((ei, ri));
                    }
                }
            }
        }
    }
    u
}

fn requests(paths: &[String], port: u16) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|p| {
            format!(
                "GET {p} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: {UA}\r\nAccept: */*\r\n\r\n"
            )
            .into_bytes()
        })
        .collect()
}

fn expected(prep: &Prepared, urls: &Urls, out: &Outcome) -> Expected {
    let mut exp: Expected = prep
        .emails
        .iter()
        .map(|e| vec![(0, 0); e.recipients.len()])
        .collect();
    for (i, &(e, r)) in urls.owner.iter().enumerate() {
        exp[e][r].0 += u64::from(out.answered[i]);
        exp[e][r].1 += u64::from(out.sent[i]);
    }
    exp
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    t ^ (u64::from(std::process::id()) << 32)
}

fn log(msg: &str) {
    eprintln!("[loadtest {}] {msg}", clock());
}

fn clock() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

/// What the fault thread did, for the report.
struct Happened {
    at: Instant,
    back: Instant,
}

/// One generator run against `stack`, with an optional fault injected mid-run.
#[allow(clippy::too_many_arguments)]
fn one_run(
    s: &Settings,
    stack: &mut Stack,
    target: &str,
    kind: Kind,
    conns: usize,
    rep: usize,
    duration: Duration,
    fault: Option<Fault>,
    reference: &mut [Option<Vec<String>>; 2],
) -> Result<RunResult> {
    let port = stack.port();
    let is_mb = matches!(stack, Stack::Mailbeacon { .. });
    let ki = kind as usize;
    // mailbeacon: fresh emails for every run, so the check covers this run only.
    let prepared = match stack {
        Stack::Mailbeacon { mb, .. } => {
            let tag = format!("{:x}", seed() & 0xff_ffff_ffff);
            let t0 = Instant::now();
            let prep = api::prepare(&mb.base(), &mb.admin, s.shape, &tag)?;
            log(&format!(
                "{target}: followed {} emails x {} recipients in {:.1} s",
                s.shape.emails,
                s.shape.recipients,
                t0.elapsed().as_secs_f64()
            ));
            let u = urls_of(&prep, kind);
            reference[ki] = Some(u.paths.clone());
            Some((prep, u))
        }
        _ => None,
    };
    let paths: Vec<String> = match &prepared {
        Some((_, u)) => u.paths.clone(),
        None => reference[ki]
            .clone()
            .ok_or("no URL paths yet: run a mailbeacon target first")?,
    };
    let reqs = requests(&paths, port);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let expect_status = match (kind, is_mb, &stack) {
        (Kind::Click, _, Stack::Hyper(_)) => 200,
        (Kind::Click, _, _) => 302,
        (Kind::Pixel, _, _) => 200,
    };
    let load = Load {
        addr,
        requests: &reqs,
        expect_status,
        conns,
        warmup: s.warmup,
        duration,
        drain: s.drain,
        slot: s.slot,
        seed: seed(),
    };
    let watched = Arc::new(Mutex::new(stack.watched()));
    let sampler = Sampler::start(watched.clone(), Duration::from_millis(200));
    let la = loadavg();
    let started = Instant::now();
    let fault_at = started + s.warmup + duration.mul_f64(0.4);
    let (out, happened) = std::thread::scope(|sc| -> Result<(Outcome, Option<Happened>)> {
        let injector = fault.map(|f| {
            let stack = &mut *stack;
            let watched = watched.clone();
            sc.spawn(move || inject(f, stack, fault_at, &watched))
        });
        let out = gen::run(&load).map_err(procs::io_err)?;
        let happened = match injector {
            Some(h) => Some(h.join().map_err(|_| "fault thread panicked")??),
            None => None,
        };
        Ok((out, happened))
    })?;
    let samples = sampler.finish();
    let m0 = out.started + out.slot * out.warmup_slots as u32;
    let m1 = m0 + out.slot * out.measured_slots as u32;
    let cpu = cpu_between(&samples, m0, m1);
    let h = out.measured();
    let verdict = match (&prepared, &*stack) {
        (Some((prep, u)), Stack::Mailbeacon { mb, .. }) => {
            let exp = expected(prep, u, &out);
            Some(check::verify(&mb.base(), prep, kind, &exp, s.settle)?)
        }
        _ => None,
    };
    let fault_info = happened.zip(fault).map(|(hp, f)| {
        let from = out.slot_of(hp.at);
        let to = out.slot_of(hp.back + Duration::from_secs(2)) + 1;
        let w = out.window(from, to);
        let errors = out.slots.iter().take(to).skip(from).map(|x| x.errors).sum();
        FaultInfo {
            fault: f,
            at_s: hp.at.duration_since(out.started).as_secs_f64(),
            outage: hp.back.duration_since(hp.at),
            p50_us: w.quantile_us(0.5),
            p99_us: w.quantile_us(0.99),
            max_us: w.max_us(),
            answered: w.count(),
            errors,
            rate: w.count() as f64 / (out.slot.as_secs_f64() * (to - from) as f64).max(1e-9),
        }
    });
    Ok(RunResult {
        target: target.to_owned(),
        kind,
        conns,
        rep,
        rate: out.rate(),
        p50_us: h.quantile_us(0.5),
        p99_us: h.quantile_us(0.99),
        p999_us: h.quantile_us(0.999),
        max_us: h.max_us(),
        errors: out.errors.clone(),
        cpu,
        verdict,
        loadavg: la,
        longest_stall: out.longest_stall,
        fault: fault_info,
        urls: paths.len(),
    })
}

/// Waits for `at`, injects the fault, and returns when the service is back.
fn inject(f: Fault, stack: &mut Stack, at: Instant, watched: &Mutex<Watched>) -> Result<Happened> {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
    let Stack::Mailbeacon { mb, redis } = stack else {
        return Err("faults apply to mailbeacon only".into());
    };
    let t = Instant::now();
    match f {
        Fault::Kill9 => {
            mb.kill9();
            mb.restart()?;
        }
        Fault::RedisRestart => {
            let r = redis.first_mut().ok_or("no Redis to restart")?;
            r.kill9();
            std::thread::sleep(Duration::from_secs(1));
            r.restart()?;
        }
        Fault::RedisPause => {
            let r = redis.first().ok_or("no Redis to pause")?;
            let ok = r.cli(&["CLIENT", "PAUSE", "2000", "ALL"]);
            if !ok.contains("OK") {
                return Err(format!("CLIENT PAUSE answered {ok:?}"));
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    let back = Instant::now();
    if let Ok(mut w) = watched.lock() {
        *w = Watched {
            server: mb.pid().into_iter().collect(),
            redis: redis.iter().filter_map(Redis::pid).collect(),
        };
    }
    Ok(Happened { at: t, back })
}

/// Everything a comparison produced.
pub struct Report {
    pub settings: Settings,
    pub runs: Vec<RunResult>,
    pub faults: Vec<RunResult>,
    /// (conns, wrk req/s, our generator's req/s in the same minute), bare hyper.
    pub wrk: Vec<(usize, f64, f64)>,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub problems: Vec<String>,
}

impl Report {
    /// True if and only if every check passed (nothing lost, nothing doubled).
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
            && self
                .runs
                .iter()
                .chain(&self.faults)
                .all(|r| r.verdict.as_ref().is_none_or(Verdict::ok))
    }
}

/// Runs the comparison and the fault modes, in a directory of its own under
/// `s.scratch`, removed at the end unless asked to keep it or a check failed.
pub fn compare(s: &Settings) -> Report {
    let run_dir = s.scratch.join(format!(
        "run-{}-{:x}",
        std::process::id(),
        seed() & 0xffff_ffff
    ));
    let s = &Settings {
        scratch: run_dir.clone(),
        ..s.clone()
    };
    std::fs::create_dir_all(&s.scratch).ok();
    let report = compare_in(s);
    if report.ok() && !s.keep_scratch {
        let _ = std::fs::remove_dir_all(&run_dir);
    } else {
        log(&format!(
            "scratch kept (logs, data directories): {}",
            run_dir.display()
        ));
    }
    report
}

fn compare_in(s: &Settings) -> Report {
    let mut report = Report {
        settings: s.clone(),
        runs: Vec::new(),
        faults: Vec::new(),
        wrk: Vec::new(),
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
        problems: Vec::new(),
    };
    let mut reference: [Option<Vec<String>>; 2] = [None, None];
    // Start mailbeacon stacks first: the anchors reuse their URL paths.
    let mut order: Vec<Target> = s.targets.clone();
    order.sort_by_key(|t| !t.is_mailbeacon());
    let mut stacks: Vec<(Target, Stack)> = Vec::new();
    for &t in &order {
        match Stack::start(t, s) {
            Ok(st) => stacks.push((t, st)),
            Err(e) => report
                .problems
                .push(format!("{}: cannot start: {e}", t.name())),
        }
    }
    // Anchors with no mailbeacon run before them: follow emails once for their paths.
    if !stacks.iter().any(|(t, _)| t.is_mailbeacon()) && !stacks.is_empty() {
        match Mailbeacon::start(&s.mailbeacon, &s.scratch, Vec::new()).and_then(|mb| {
            let prep = api::prepare(&mb.base(), &mb.admin, s.shape, "reference")?;
            Ok(prep)
        }) {
            Ok(prep) => {
                reference[0] = Some(urls_of(&prep, Kind::Pixel).paths);
                reference[1] = Some(urls_of(&prep, Kind::Click).paths);
            }
            Err(e) => report.problems.push(format!("reference URLs: {e}")),
        }
    }
    for rep in 1..=s.reps {
        for &kind in &s.kinds {
            for &c in &s.conns {
                // In the order asked for (mailbeacon first only on the very first
                // pass, when the anchors have no paths yet).
                let mut idx: Vec<usize> = (0..stacks.len()).collect();
                if reference[kind as usize].is_some() {
                    idx.sort_by_key(|&i| s.targets.iter().position(|t| *t == stacks[i].0));
                }
                for i in idx {
                    let (t, st) = &mut stacks[i];
                    let name = t.name();
                    log(&format!(
                        "{name}: {} -c{c} rep {rep} (load {})",
                        kind.name(),
                        loadavg()
                    ));
                    match one_run(s, st, name, kind, c, rep, s.duration, None, &mut reference) {
                        Ok(r) => {
                            log(&summary_line(&r));
                            report.runs.push(r);
                        }
                        Err(e) => report
                            .problems
                            .push(format!("{name} {} -c{c}: {e}", kind.name())),
                    }
                    if *t == Target::Hyper && kind == Kind::Pixel && s.wrk {
                        if let Some(p) = reference[0].as_ref().and_then(|p| p.first()) {
                            let ours = report.runs.last().map(|r| r.rate).unwrap_or(0.0);
                            match run_wrk(st.port(), p, c, s.warmup, s.duration) {
                                Ok(w) => report.wrk.push((c, w, ours)),
                                Err(e) => log(&format!("wrk skipped: {e}")),
                            }
                        }
                    }
                }
            }
        }
    }
    for (_, st) in stacks {
        st.stop();
    }
    for &f in &s.faults {
        let target = match f {
            Fault::Kill9 => Target::Embedded,
            Fault::RedisRestart | Fault::RedisPause => Target::Redis,
        };
        log(&format!("fault: {} (load {})", f.name(), loadavg()));
        let res = Stack::start(target, s).and_then(|mut st| {
            let r = one_run(
                s,
                &mut st,
                target.name(),
                Kind::Pixel,
                s.fault_conns,
                1,
                s.duration,
                Some(f),
                &mut reference,
            );
            st.stop();
            r
        });
        match res {
            Ok(r) => {
                log(&summary_line(&r));
                report.faults.push(r);
            }
            Err(e) => report.problems.push(format!("fault {}: {e}", f.name())),
        }
    }
    report.loadavg_end = loadavg();
    report
}

/// wrk -t1 against one URL of the bare hyper server, to show the generator is at
/// least as fast as wrk on the same server (returns wrk's req/s).
fn run_wrk(port: u16, path: &str, conns: usize, warmup: Duration, d: Duration) -> Result<f64> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let wrk = |secs: u64| {
        std::process::Command::new("timeout")
            .arg((secs + 30).to_string())
            .args([
                "wrk",
                "-t1",
                &format!("-c{conns}"),
                &format!("-d{secs}s"),
                "--latency",
            ])
            .arg(&url)
            .output()
            .map_err(|e| format!("wrk: {e}"))
    };
    wrk(warmup.as_secs().max(1))?;
    let out = wrk(d.as_secs().max(1))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no rate in wrk's output: {text}"))
}

fn summary_line(r: &RunResult) -> String {
    let v = r
        .verdict
        .as_ref()
        .map(|v| {
            format!(
                " answered={} recorded={} lost={} doubled={}",
                v.answered, v.recorded, v.lost, v.doubled
            )
        })
        .unwrap_or_default();
    format!(
        "{} {} -c{}: {:.0} req/s p50={:.2}ms p99={:.2}ms errors={} srv={:.0}% rss={:.0}MiB{v}",
        r.target,
        r.kind.name(),
        r.conns,
        r.rate,
        r.p50_us as f64 / 1000.0,
        r.p99_us as f64 / 1000.0,
        r.errors.requests(),
        r.cpu.server,
        r.cpu.server_rss_mib
    )
}

/// The smoke run for the test suite: embedded store only, a few seconds of pixel
/// and click load, then a `kill -9` mid-run; every run must lose and double nothing.
pub fn smoke(mailbeacon: &Path, scratch: &Path) -> Report {
    let s = Settings {
        mailbeacon: mailbeacon.to_path_buf(),
        mailbeacon_redis: mailbeacon.to_path_buf(),
        targets: vec![Target::Embedded],
        kinds: vec![Kind::Pixel, Kind::Click],
        conns: vec![16],
        warmup: Duration::from_millis(500),
        duration: Duration::from_secs(2),
        drain: Duration::from_secs(10),
        reps: 1,
        shape: Shape {
            emails: 4,
            recipients: 5,
            links: 3,
        },
        faults: vec![Fault::Kill9],
        fault_conns: 16,
        scratch: scratch.to_path_buf(),
        settle: Duration::from_secs(10),
        wrk: false,
        ..Settings::defaults()
    };
    compare(&s)
}
