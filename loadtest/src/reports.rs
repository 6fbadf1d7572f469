//! `loadtest reports`: what reading engagement costs at scale (issue #15). Per
//! mailbeacon target (embedded, Redis, Cluster):
//!
//! - **One big email**: one followed email, `--events` pixel hits (100,000 by
//!   default) spread over its recipients by the generator; then
//!   `GET /api/v1/emails/{id}` three times.
//! - **Many emails**: `--emails` more emails (5,000 by default) of one recipient
//!   each, followed by another user, each hit a few times; then
//!   `GET /api/v1/stats` (and with `interval=day`) three times.
//!
//! For each call it prints the time (first and median of three), the answer's
//! size, and the server's resident memory before the call and at its peak during
//! the calls: the peak is the kernel's high-water mark (`VmHWM`), reset just
//! before the calls by writing `5` to `/proc/<pid>/clear_refs`, so it covers
//! exactly the calls. Before timing, it waits until the report shows every
//! answered hit (derived reports may trail), so the report reads everything.
//! Nothing here asserts a time; it fails only if hits are missing or a call fails.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::{self, Shape};
use crate::compare::{start_on_store, Target};
use crate::gen::{self, Load};
use crate::procs::{self, Mailbeacon, Result};

pub struct ReportSettings {
    pub mailbeacon: PathBuf,
    pub mailbeacon_redis: PathBuf,
    pub targets: Vec<Target>,
    /// Hits on the one big email (at least).
    pub events: u64,
    /// Emails for `/stats`.
    pub emails: usize,
    pub conns: usize,
    pub scratch: PathBuf,
    pub keep_scratch: bool,
}

/// Timings of one call, three times.
pub struct Call {
    pub what: String,
    pub first_ms: f64,
    pub median_ms: f64,
    pub bytes: usize,
    pub rss_before_kib: u64,
    pub rss_peak_kib: u64,
}

pub struct ReportFigures {
    pub target: Target,
    /// Hits answered on the big email, and how many its report shows.
    pub answered: u64,
    pub reported: u64,
    /// Emails behind `/stats`.
    pub stats_emails: usize,
    pub calls: Vec<Call>,
}

impl ReportFigures {
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "### {}\n\nOne email: {} hits answered, {} in its report. `/stats`: {} emails of one recipient.\n\n\
| call | first ms | median of 3 ms | answer KiB | server RSS before MiB | peak during MiB |\n|---|---:|---:|---:|---:|---:|\n",
            self.target.name(),
            self.answered,
            self.reported,
            self.stats_emails
        );
        for c in &self.calls {
            s += &format!(
                "| {} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} |\n",
                c.what,
                c.first_ms,
                c.median_ms,
                c.bytes as f64 / 1024.0,
                c.rss_before_kib as f64 / 1024.0,
                c.rss_peak_kib as f64 / 1024.0
            );
        }
        s
    }
}

/// The kernel's resident-memory high-water mark of `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the high-water mark to the current resident size.
fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .map_err(|e| format!("cannot reset the peak RSS of {pid}: {e}"))
}

pub fn run(s: &ReportSettings) -> Result<Vec<ReportFigures>> {
    s.targets.iter().map(|&t| run_on(s, t)).collect()
}

fn run_on(s: &ReportSettings, target: Target) -> Result<ReportFigures> {
    let scratch = s
        .scratch
        .join(format!("reports-{}-{:?}", std::process::id(), target));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let mut on = start_on_store(
        target,
        &s.mailbeacon,
        &s.mailbeacon_redis,
        &scratch,
        Vec::new(),
    )?;
    let out = measure(s, &on.mb, target);
    on.mb.stop();
    drop(on.redis);
    if out.is_ok() && !s.keep_scratch {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    out
}

/// Runs pixel loads of two seconds over `paths` until at least `at_least` hits
/// were answered (or, with `at_least` 0, one load); the hits answered.
fn hit(mb: &Mailbeacon, paths: &[String], conns: usize, at_least: u64) -> Result<u64> {
    let reqs = crate::realtime::pixel_requests(paths, mb.port);
    let mut answered = 0;
    let mut seed = 1;
    loop {
        let out = gen::run(&Load {
            addr: ([127, 0, 0, 1], mb.port).into(),
            requests: &reqs,
            expect_status: 200,
            conns,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(2),
            drain: Duration::from_secs(10),
            slot: Duration::from_millis(100),
            seed,
        })
        .map_err(procs::io_err)?;
        answered += out.total_answered();
        seed += 1;
        eprintln!("[reports] {answered} hits answered");
        if answered >= at_least {
            return Ok(answered);
        }
    }
}

/// Calls `path` three times; the timings, the size and the memory.
fn timed_calls(mb: &Mailbeacon, token: &str, what: &str, path: &str) -> Result<(Call, Value)> {
    let pid = mb.pid().ok_or("mailbeacon is not running")?;
    let url = format!("{}{path}", mb.base());
    let rss_before = procs::rss_kib(pid).unwrap_or(0);
    reset_peak(pid)?;
    let mut times = Vec::new();
    let mut last = Value::Null;
    let mut bytes = 0;
    for _ in 0..3 {
        let t = Instant::now();
        last = api::call("GET", &url, token, None)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        bytes = serde_json::to_vec(&last).map(|v| v.len()).unwrap_or(0);
    }
    let first = times[0];
    times.sort_by(f64::total_cmp);
    Ok((
        Call {
            what: what.to_owned(),
            first_ms: first,
            median_ms: times[1],
            bytes,
            rss_before_kib: rss_before,
            rss_peak_kib: peak_rss_kib(pid).unwrap_or(0),
        },
        last,
    ))
}

/// Opens (human and machine) in an email report.
fn opens_in(report: &Value) -> u64 {
    report["recipients"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["opens"].as_u64().unwrap_or(0) + r["machine_opens"].as_u64().unwrap_or(0))
        .sum()
}

/// Waits (≤ 60 s) until `read` shows at least `want`; the last count read.
fn settle(want: u64, mut read: impl FnMut() -> Result<u64>) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = read()?;
        if got >= want || Instant::now() >= deadline {
            return Ok(got);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn measure(s: &ReportSettings, mb: &Mailbeacon, target: Target) -> Result<ReportFigures> {
    let base = mb.base();
    let tag = format!("rp{:x}", std::process::id());
    let big = api::prepare(
        &base,
        &mb.admin,
        Shape {
            emails: 1,
            recipients: 50,
            links: 1,
        },
        &tag,
    )?;
    let email = big.emails.first().ok_or("no email prepared")?;
    let paths: Vec<String> = email.recipients.iter().map(|r| r.pixel.clone()).collect();
    eprintln!(
        "[reports] {}: {} hits on one email",
        target.name(),
        s.events
    );
    let answered = hit(mb, &paths, s.conns, s.events)?;
    let report_path = format!("/api/v1/emails/{}", email.id);
    let url = format!("{base}{report_path}");
    let reported = settle(answered, || {
        Ok(opens_in(&api::call("GET", &url, &big.user_token, None)?))
    })?;
    if reported < answered {
        return Err(format!(
            "the report shows {reported} opens of {answered} answered hits after 60 s"
        ));
    }
    let mut calls = vec![
        timed_calls(
            mb,
            &big.user_token,
            &format!("`GET /api/v1/emails/{{id}}`, {answered} events"),
            &report_path,
        )?
        .0,
    ];

    eprintln!(
        "[reports] {}: following {} emails for /stats",
        target.name(),
        s.emails
    );
    let many = api::prepare(
        &base,
        &mb.admin,
        Shape {
            emails: s.emails,
            recipients: 1,
            links: 1,
        },
        &format!("{tag}s"),
    )?;
    let paths: Vec<String> = many
        .emails
        .iter()
        .flat_map(|e| e.recipients.iter().map(|r| r.pixel.clone()))
        .collect();
    let answered_many = hit(mb, &paths, s.conns, 0)?;
    let stats_url = format!("{base}/api/v1/stats");
    let shown = settle(answered_many, || {
        let v = api::call("GET", &stats_url, &many.user_token, None)?;
        Ok(v["opens"].as_u64().unwrap_or(0) + v["machine_opens"].as_u64().unwrap_or(0))
    })?;
    let (c, v) = timed_calls(
        mb,
        &many.user_token,
        &format!("`GET /api/v1/stats`, {} emails", s.emails),
        "/api/v1/stats",
    )?;
    let counted = v["emails"].as_u64().unwrap_or(0);
    eprintln!("[reports] /stats shows {shown} opens of {answered_many} hits over {counted} emails");
    if shown < answered_many || counted < s.emails as u64 {
        return Err(format!(
            "/stats shows {shown} opens of {answered_many} answered hits over {counted} of {} emails",
            s.emails
        ));
    }
    calls.push(c);
    calls.push(
        timed_calls(
            mb,
            &many.user_token,
            &format!("`GET /api/v1/stats?interval=day`, {} emails", s.emails),
            "/api/v1/stats?interval=day",
        )?
        .0,
    );
    Ok(ReportFigures {
        target,
        answered,
        reported,
        stats_emails: s.emails,
        calls,
    })
}
