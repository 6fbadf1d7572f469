//! `loadtest`: the command line. `loadtest compare` runs the side-by-side comparison
//! and the fault modes and prints Markdown (also written to `--out`); `loadtest
//! smoke` is the few-second check the test suite runs. Exits non-zero if anything
//! was lost or doubled, or a server could not be run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use loadtest::api::Shape;
use loadtest::check::Kind;
use loadtest::compare::{self, Fault, Settings, Target};
use loadtest::report;

#[derive(Parser)]
#[command(
    about = "mailbeacon load test: throughput side by side with nginx and bare hyper, exactly-once checks, fault modes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Side-by-side comparison and fault modes.
    Compare(Box<Args>),
    /// Copies per second through the outbox to a local SMTP sink, and the API's
    /// and the pixel's latency meanwhile (embedded store).
    Outbox {
        /// The mailbeacon binary (default: beside this one).
        #[arg(long)]
        mailbeacon: Option<PathBuf>,
        /// Emails sent with deliver "smtp".
        #[arg(long, default_value_t = 1)]
        emails: usize,
        /// Recipients per email (at most 1000).
        #[arg(long, default_value_t = 1000)]
        recipients: usize,
        /// Seconds to wait for every copy to be sent.
        #[arg(long, default_value_t = 300.0)]
        timeout: f64,
        /// Also write the Markdown report here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Scratch directory (data directory, logs).
        #[arg(long)]
        scratch: Option<PathBuf>,
        /// Keep the scratch directory.
        #[arg(long)]
        keep_scratch: bool,
    },
    /// Reports at scale: one email with --events hits, `/stats` over --emails
    /// emails; time and the server's peak memory per call.
    Reports {
        /// The mailbeacon binary (default: beside this one).
        #[arg(long)]
        mailbeacon: Option<PathBuf>,
        /// Comma-separated: embedded, redis, cluster.
        #[arg(long, default_value = "embedded,redis")]
        targets: String,
        /// Hits on the one big email (at least).
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Emails of one recipient behind `/stats`.
        #[arg(long, default_value_t = 5000)]
        emails: usize,
        #[arg(long, default_value_t = 64)]
        conns: usize,
        /// Also write the Markdown report here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Scratch directory (data directories, logs).
        #[arg(long)]
        scratch: Option<PathBuf>,
        /// Keep the scratch directory.
        #[arg(long)]
        keep_scratch: bool,
    },
    /// A few seconds on the embedded store: pixel, click, kill -9; nothing lost or doubled.
    Smoke {
        /// The mailbeacon binary (default: beside this one).
        #[arg(long)]
        mailbeacon: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct Args {
    /// mailbeacon binary for the embedded store (default: beside this one).
    #[arg(long)]
    mailbeacon: Option<PathBuf>,
    /// mailbeacon binary for the Redis targets and faults (default: --mailbeacon;
    /// e.g. a build of the redis branch until it is merged).
    #[arg(long)]
    mailbeacon_redis: Option<PathBuf>,
    /// The bare hyper server (default: hyper-min beside this one).
    #[arg(long)]
    hyper_min: Option<PathBuf>,
    /// Comma-separated, in running order: nginx (empty_gif + access log), hyper
    /// (bare), lua (nginx + Lua + Redis HINCRBY), embedded, redis, cluster.
    #[arg(long, default_value = "nginx,hyper,lua,embedded,redis,cluster")]
    targets: String,
    /// Comma-separated: pixel, click.
    #[arg(long, default_value = "pixel,click")]
    kinds: String,
    /// Comma-separated connection counts.
    #[arg(long, default_value = "64,256")]
    conns: String,
    /// Measured seconds per run (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds per run (hits counted for the check, not for rates).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value_t = 1)]
    reps: usize,
    /// Followed emails per mailbeacon run.
    #[arg(long, default_value_t = 100)]
    emails: usize,
    /// Recipients per email.
    #[arg(long, default_value_t = 50)]
    recipients: usize,
    /// Tracked links per email.
    #[arg(long, default_value_t = 4)]
    links: usize,
    /// Comma-separated: kill9, redis-restart, redis-pause; or "none".
    #[arg(long, default_value = "kill9,redis-restart,redis-pause")]
    faults: String,
    /// Connections for the fault runs.
    #[arg(long, default_value_t = 64)]
    fault_conns: usize,
    /// Skip the wrk run against bare hyper.
    #[arg(long)]
    no_wrk: bool,
    /// Also write the Markdown report here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Scratch directory (data directories, configs, logs).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Keep the run's scratch directory (it is removed after a passing run; the
    /// data directories take gigabytes).
    #[arg(long)]
    keep_scratch: bool,
    /// Measure real time instead: the pixel load (the first --conns; on each of
    /// the mailbeacon --targets, embedded if none) alone and with another
    /// user's webhook and 100 event streams attached, alternated ABBA over
    /// --reps rounds; throughput ratio and that user's pixel answer → webhook /
    /// stream latency.
    #[arg(long)]
    realtime: bool,
}

fn list<T>(s: &str, parse: impl Fn(&str) -> Option<T>, what: &str) -> Result<Vec<T>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty() && *x != "none")
        .map(|x| parse(x).ok_or_else(|| format!("unknown {what}: {x}")))
        .collect()
}

fn settings(a: Args) -> Result<(Settings, Option<PathBuf>), String> {
    let d = Settings::defaults();
    let mailbeacon = a.mailbeacon.unwrap_or(d.mailbeacon.clone());
    let secs = |x: f64| Duration::from_secs_f64(x.max(0.0));
    let s = Settings {
        mailbeacon_redis: a.mailbeacon_redis.unwrap_or(mailbeacon.clone()),
        mailbeacon,
        hyper_min: a.hyper_min.unwrap_or(d.hyper_min.clone()),
        targets: list(&a.targets, Target::parse, "target")?,
        kinds: list(
            &a.kinds,
            |k| match k {
                "pixel" => Some(Kind::Pixel),
                "click" => Some(Kind::Click),
                _ => None,
            },
            "load kind",
        )?,
        conns: list(
            &a.conns,
            |c| c.parse().ok().filter(|&n| n > 0),
            "connection count",
        )?,
        warmup: secs(a.warmup),
        duration: secs(a.duration.max(0.5)),
        reps: a.reps.max(1),
        shape: Shape {
            emails: a.emails.max(1),
            recipients: a.recipients.max(1),
            links: a.links.max(1),
        },
        faults: list(&a.faults, Fault::parse, "fault")?,
        fault_conns: a.fault_conns.max(1),
        wrk: !a.no_wrk,
        keep_scratch: a.keep_scratch,
        realtime: a.realtime,
        scratch: a.scratch.unwrap_or(d.scratch.clone()),
        ..d
    };
    Ok((s, a.out))
}

fn realtime(s: &Settings, out: Option<PathBuf>) -> ExitCode {
    match loadtest::realtime::run(s) {
        Ok(figs) => {
            let md: String = figs.iter().map(|f| f.markdown() + "\n").collect();
            println!("{md}");
            if let Some(p) = out {
                if let Err(e) = std::fs::write(&p, &md) {
                    eprintln!("loadtest: cannot write {}: {e}", p.display());
                }
            }
            if figs.iter().all(|f| f.ok()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("loadtest: realtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn outbox(s: &loadtest::outbox::OutboxSettings, out: Option<PathBuf>) -> ExitCode {
    match loadtest::outbox::run(s) {
        Ok(f) => {
            let md = f.markdown();
            println!("{md}");
            if let Some(p) = out {
                if let Err(e) = std::fs::write(&p, &md) {
                    eprintln!("loadtest: cannot write {}: {e}", p.display());
                }
            }
            if f.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("loadtest: outbox: {e}");
            ExitCode::FAILURE
        }
    }
}

fn reports(s: &loadtest::reports::ReportSettings, out: Option<PathBuf>) -> ExitCode {
    match loadtest::reports::run(s) {
        Ok(figs) => {
            let md: String = figs.iter().map(|f| f.markdown() + "\n").collect();
            println!("{md}");
            if let Some(p) = out {
                if let Err(e) = std::fs::write(&p, &md) {
                    eprintln!("loadtest: cannot write {}: {e}", p.display());
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadtest: reports: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (rep, out) = match cli.cmd {
        Cmd::Compare(a) => match settings(*a) {
            Ok((s, out)) if s.realtime => return realtime(&s, out),
            Ok((s, out)) => (compare::compare(&s), out),
            Err(e) => {
                eprintln!("loadtest: {e}");
                return ExitCode::from(2);
            }
        },
        Cmd::Outbox {
            mailbeacon,
            emails,
            recipients,
            timeout,
            out,
            scratch,
            keep_scratch,
        } => {
            let d = Settings::defaults();
            let s = loadtest::outbox::OutboxSettings {
                mailbeacon: mailbeacon.unwrap_or(d.mailbeacon),
                scratch: scratch.unwrap_or(d.scratch),
                emails: emails.max(1),
                recipients: recipients.clamp(1, 1000),
                timeout: Duration::from_secs_f64(timeout.max(1.0)),
                keep_scratch,
            };
            return outbox(&s, out);
        }
        Cmd::Reports {
            mailbeacon,
            targets,
            events,
            emails,
            conns,
            out,
            scratch,
            keep_scratch,
        } => {
            let d = Settings::defaults();
            let targets = match list(&targets, Target::parse, "target") {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("loadtest: {e}");
                    return ExitCode::from(2);
                }
            };
            let bin = mailbeacon.unwrap_or(d.mailbeacon);
            let s = loadtest::reports::ReportSettings {
                mailbeacon_redis: bin.clone(),
                mailbeacon: bin,
                targets,
                events: events.max(1),
                emails: emails.max(1),
                conns: conns.max(1),
                scratch: scratch.unwrap_or(d.scratch),
                keep_scratch,
            };
            return reports(&s, out);
        }
        Cmd::Smoke { mailbeacon } => {
            let bin = mailbeacon.unwrap_or(Settings::defaults().mailbeacon);
            let scratch =
                std::env::temp_dir().join(format!("mailbeacon-smoke-{}", std::process::id()));
            let r = compare::smoke(&bin, &scratch);
            let _ = std::fs::remove_dir_all(&scratch);
            (r, None)
        }
    };
    let md = report::markdown(&rep);
    println!("{md}");
    if let Some(p) = out {
        if let Err(e) = std::fs::write(&p, &md) {
            eprintln!("loadtest: cannot write {}: {e}", p.display());
        }
    }
    if rep.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
