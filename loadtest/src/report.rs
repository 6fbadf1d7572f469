//! The results as Markdown: ratios first (against nginx `empty_gif` + access log and
//! against bare hyper, from runs of the same repetition), absolute figures beside
//! them, then the exactly-once checks, the fault modes, and wrk against the
//! generator on the same server.

use std::fmt::Write as _;

use crate::check::Kind;
use crate::compare::{Report, RunResult, Target};

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn ratio(x: Option<f64>) -> String {
    x.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "–".into())
}

/// The rate of `target` in the same repetition, load kind and connection count.
fn peer_rate(runs: &[RunResult], r: &RunResult, target: Target) -> Option<f64> {
    runs.iter()
        .find(|x| {
            x.target == target.name() && x.kind == r.kind && x.conns == r.conns && x.rep == r.rep
        })
        .map(|x| x.rate)
        .filter(|&x| x > 0.0)
}

pub fn markdown(rep: &Report) -> String {
    let s = &rep.settings;
    let mut o = String::new();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let _ = writeln!(o, "# Load test results\n");
    let _ = writeln!(
        o,
        "{cores} cores ({model}); load average (1/5/15 min) {} at the start, {} at the end.  ",
        rep.loadavg_start, rep.loadavg_end
    );
    let _ = writeln!(
        o,
        "Generator: 1 thread, keep-alive, closed loop; {} s warm-up + {} s measured per run; {} repetition(s); \
{} emails × {} recipients × {} links followed through the API before each mailbeacon run.\n",
        s.warmup.as_secs_f64(),
        s.duration.as_secs_f64(),
        s.reps,
        s.shape.emails,
        s.shape.recipients,
        s.shape.links
    );
    if !rep.runs.is_empty() {
        let _ = writeln!(o, "## Throughput, side by side\n");
        let _ = writeln!(o, "Median over repetitions; each ratio is against the anchor's run in the same repetition.\n");
        let _ = writeln!(
            o,
            "| load | -c | target | × nginx+log | × bare hyper | × nginx+Lua+Redis | req/s | p50 ms | p99 ms | p99.9 ms | srv RSS MiB | lost | doubled |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        let mut keys: Vec<(Kind, usize, String)> = Vec::new();
        for r in &rep.runs {
            let k = (r.kind, r.conns, r.target.clone());
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        for (kind, c, t) in &keys {
            let rs: Vec<&RunResult> = rep
                .runs
                .iter()
                .filter(|r| r.kind == *kind && r.conns == *c && &r.target == t)
                .collect();
            let rate = median(rs.iter().map(|r| r.rate).collect()).unwrap_or(0.0);
            let vs = |a: Target| {
                median(
                    rs.iter()
                        .filter_map(|r| peer_rate(&rep.runs, r, a).map(|p| r.rate / p))
                        .collect(),
                )
            };
            let lost: u64 = rs
                .iter()
                .filter_map(|r| r.verdict.as_ref())
                .map(|v| v.lost)
                .sum();
            let doubled: u64 = rs
                .iter()
                .filter_map(|r| r.verdict.as_ref())
                .map(|v| v.doubled)
                .sum();
            let checked = rs.iter().any(|r| r.verdict.is_some());
            let p = |f: fn(&RunResult) -> u64| {
                rs.iter().map(|r| ms(f(r))).collect::<Vec<_>>().join(" / ")
            };
            let rss = rs.iter().map(|r| r.cpu.server_rss_mib).fold(0.0, f64::max);
            let _ = writeln!(
                o,
                "| {} | {c} | {t} | {} | {} | {} | {:.0} | {} | {} | {} | {rss:.0} | {} | {} |",
                kind.name(),
                ratio(vs(Target::Nginx)),
                ratio(vs(Target::Hyper)),
                ratio(vs(Target::NginxLua)),
                rate,
                p(|r| r.p50_us),
                p(|r| r.p99_us),
                p(|r| r.p999_us),
                if checked {
                    lost.to_string()
                } else {
                    "–".into()
                },
                if checked {
                    doubled.to_string()
                } else {
                    "–".into()
                },
            );
        }
        let _ = writeln!(o, "\n### Every run\n");
        let _ = writeln!(
            o,
            "CPU in % of one core over the measured part (box: the whole machine, out of {}); srv µs/req: server CPU time per answered request (steadier than req/s on a busy box); RSS: largest seen during the run.\n",
            cores * 100
        );
        let _ = writeln!(
            o,
            "| rep | load | -c | target | req/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | srv CPU | srv µs/req | Redis CPU | gen CPU | box | srv RSS MiB | URLs | load avg before |"
        );
        let _ = writeln!(
            o,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in &rep.runs {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.1} | {} | {} |",
                r.rep,
                r.kind.name(),
                r.conns,
                r.target,
                r.rate,
                ms(r.p50_us),
                ms(r.p99_us),
                ms(r.p999_us),
                ms(r.max_us),
                r.errors.requests() + r.errors.connect,
                r.cpu.server,
                r.cpu.server / 100.0 * 1e6 / r.rate.max(1e-9),
                r.cpu.redis,
                r.cpu.generator,
                r.cpu.machine,
                r.cpu.server_rss_mib,
                r.urls,
                r.loadavg
            );
        }
        let checked: Vec<&RunResult> = rep.runs.iter().filter(|r| r.verdict.is_some()).collect();
        if !checked.is_empty() {
            let _ = writeln!(o, "\n## Exactly once\n");
            let _ = writeln!(o, "Per recipient, from the engagement reports (`opens + machine_opens`, `clicks + machine_clicks`) against the generator's counts.\n");
            let _ = writeln!(o, "| rep | load | -c | target | sent | answered | recorded | lost | doubled | readings of the reports | time reading |");
            let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|");
            for r in checked {
                if let Some(v) = &r.verdict {
                    let _ = writeln!(
                        o,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} s |",
                        r.rep,
                        r.kind.name(),
                        r.conns,
                        r.target,
                        v.sent,
                        v.answered,
                        v.recorded,
                        v.lost,
                        v.doubled,
                        v.readings,
                        v.settled_after.as_secs_f64()
                    );
                }
            }
        }
    }
    if !rep.faults.is_empty() {
        let _ = writeln!(o, "\n## Fault modes (pixel load)\n");
        let _ = writeln!(o, "The fault begins 40 % into the measured part. \"During\": answers from the fault until 2 s after the service was back. After a kill, hits in flight may be recorded without their answer arriving: the check is answered ≤ recorded ≤ sent per recipient.\n");
        let _ = writeln!(o, "| fault | -c | sent | answered | recorded | lost | doubled | outage s | during: req/s | p50 ms | p99 ms | max ms | errors | whole run req/s | longest gap s |");
        let _ = writeln!(
            o,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in &rep.faults {
            let (Some(f), Some(v)) = (&r.fault, &r.verdict) else {
                continue;
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.0} | {} | {} | {} | {} | {:.0} | {:.2} |",
                f.fault.name(),
                r.conns,
                v.sent,
                v.answered,
                v.recorded,
                v.lost,
                v.doubled,
                f.outage.as_secs_f64(),
                f.rate,
                ms(f.p50_us),
                ms(f.p99_us),
                ms(f.max_us),
                f.errors + r.errors.connect,
                r.rate,
                r.longest_stall.as_secs_f64()
            );
        }
    }
    if !rep.wrk.is_empty() {
        let _ = writeln!(o, "\n## The generator against wrk\n");
        let _ = writeln!(o, "Same bare hyper server, same connections, minutes apart: `wrk -t1 --latency` on one URL vs this generator over the URL list.\n");
        let _ = writeln!(o, "| -c | wrk req/s | loadtest req/s | loadtest / wrk |");
        let _ = writeln!(o, "|---|---|---|---|");
        for (c, w, ours) in &rep.wrk {
            let _ = writeln!(
                o,
                "| {c} | {w:.0} | {ours:.0} | {:.2} |",
                ours / w.max(1e-9)
            );
        }
    }
    if !rep.problems.is_empty() {
        let _ = writeln!(o, "\n## Problems\n");
        for p in &rep.problems {
            let _ = writeln!(o, "- {p}");
        }
    }
    let _ = writeln!(
        o,
        "\nVerdict: {}",
        if rep.ok() {
            "nothing lost, nothing doubled."
        } else {
            "FAILED (see above)."
        }
    );
    o
}
