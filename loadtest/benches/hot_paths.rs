//! `cargo bench -p loadtest`: the CPU cost of mailbeacon's pure hot paths.
//!
//! - Tokens: minting and verifying an open token and a click token.
//! - Rewriting: a ~100 KB HTML newsletter with 50 links. `parse` (once per email)
//!   is the baseline; `render` is the per-recipient cost with tokens already
//!   minted; `follow::prepare` for 1,000 recipients is the whole job, token
//!   minting included.
//!
//! After criterion's own output, a summary prints the per-recipient cost and its
//! ratio to the parse, measured again with plain timers (medians), so the design
//! target (≤ 50 µs per recipient, 1,000 recipients ≤ 50 ms) can be read off one line.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use mailbeacon::follow::{prepare, Plan};
use mailbeacon::prepare::{Draft, Limits, Tracking};
use mailbeacon::token::{encode_destination, KeyRing, SigningKey};

const PUBLIC: &str = "https://track.example.com";

fn keys() -> KeyRing {
    KeyRing::new(vec![SigningKey::new(1, &[7u8; 32])], 1).expect("key 1 is in the ring")
}

/// A ~100 KB HTML newsletter with 50 tracked links, to `recipients` addresses.
fn newsletter(recipients: usize) -> Vec<u8> {
    let mut html = String::from("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>p{margin:0}</style></head><body>\r\n");
    let mut i = 0;
    while html.len() < 100_000 {
        html.push_str("<table role=\"presentation\"><tr><td style=\"padding:10px;font-family:sans-serif\">\r\n<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ünïcödé text — “quotes”.</p>\r\n");
        if i < 50 {
            html.push_str(&format!(
                "<a href=\"https://www.example.com/articles/{i}?utm_source=newsletter&amp;utm_medium=email&amp;utm_campaign=spring\">Read more</a>\r\n"
            ));
            i += 1;
        }
        html.push_str("</td></tr></table>\r\n");
    }
    html.push_str("</body></html>\r\n");
    let to: Vec<String> = (0..recipients)
        .map(|r| format!("reader{r}@example.org"))
        .collect();
    // As a newsletter goes out: the list in Bcc (removed from every copy).
    let mut raw = format!(
        "From: News <news@example.com>\r\nTo: News <news@example.com>\r\nBcc: {}\r\nSubject: Newsletter\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        to.join(",\r\n ")
    )
    .into_bytes();
    raw.extend_from_slice(html.as_bytes());
    raw
}

fn parse(raw: &[u8]) -> Draft {
    Draft::parse(raw, &format!("{PUBLIC}/c/"), &Limits::default()).expect("the newsletter parses")
}

fn plan(n: usize) -> Plan {
    Plan {
        template: None,
        id: 0x1234_5678_9abc,
        owner: 1,
        created_ms: 1_795_000_000_000,
        expires_ms: 1_800_000_000_000,
        deliver: "return".into(),
        public_url: PUBLIC.into(),
        not_followed: vec![None; n],
    }
}

/// One recipient's URLs, minted as `follow::prepare` mints them.
fn tracking_urls(d: &Draft, k: &KeyRing, r: u32) -> (String, Vec<String>) {
    let pixel = format!("{PUBLIC}/o/{}.gif", k.mint_open(42, r, 1_795_000_000));
    let clicks = d
        .links()
        .iter()
        .enumerate()
        .map(|(j, url)| {
            let t = k.mint_click(42, r, 1_795_000_000, j as u32, url);
            format!("{PUBLIC}/c/{t}/{}", encode_destination(url))
        })
        .collect();
    (pixel, clicks)
}

fn tokens(c: &mut Criterion) {
    let k = keys();
    let dest = "https://www.example.com/articles/7?utm_source=newsletter&utm_medium=email";
    let open = k.mint_open(42, 7, 1_795_000_000);
    let click = k.mint_click(42, 7, 1_795_000_000, 3, dest);
    let mut g = c.benchmark_group("token");
    g.bench_function("mint open", |b| {
        b.iter(|| k.mint_open(black_box(42), black_box(7), 1_795_000_000))
    });
    g.bench_function("mint click", |b| {
        b.iter(|| k.mint_click(black_box(42), 7, 1_795_000_000, 3, black_box(dest)))
    });
    g.bench_function("verify open", |b| {
        b.iter(|| k.verify_open(black_box(&open)).expect("valid"))
    });
    g.bench_function("verify click", |b| {
        b.iter(|| {
            k.verify_click(black_box(&click), black_box(dest))
                .expect("valid")
        })
    });
    g.bench_function("verify open (forged)", |b| {
        let mut bad = open.clone().into_bytes();
        bad[40] = if bad[40] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).expect("ascii");
        b.iter(|| assert!(k.verify_open(black_box(&bad)).is_none()))
    });
    g.finish();
}

fn rewriting(c: &mut Criterion) {
    let k = keys();
    let raw = newsletter(2);
    let d = parse(&raw);
    assert_eq!(d.links().len(), 50);
    let (pixel, clicks) = tracking_urls(&d, &k, 0);
    let mut g = c.benchmark_group("newsletter 100 KB, 50 links");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.bench_function("parse (baseline, once per email)", |b| {
        b.iter(|| parse(black_box(&raw)))
    });
    g.bench_function("render one recipient", |b| {
        b.iter(|| {
            d.render(Some(&Tracking {
                pixel_url: black_box(&pixel),
                click_urls: &clicks,
            }))
        })
    });
    g.finish();

    // 999 in Bcc + the To address: 1,000 recipients, the most one email may list.
    let raw1000 = newsletter(999);
    let d1000 = parse(&raw1000);
    assert_eq!(d1000.recipients().len(), 1000);
    let p = plan(1000);
    let mut g = c.benchmark_group("newsletter 100 KB, 50 links, 1,000 recipients");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("follow::prepare (tokens + render)", |b| {
        b.iter_batched(|| (), |()| prepare(&d1000, &k, &p), BatchSize::PerIteration)
    });
    g.finish();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The figures the design targets are stated in, measured with plain timers.
fn summary() {
    let k = keys();
    let raw = newsletter(999); // + the To address: 1,000 recipients
    let parse_t = median(
        (0..15)
            .map(|_| {
                let t = Instant::now();
                black_box(parse(&raw));
                t.elapsed()
            })
            .collect(),
    );
    let d = parse(&raw);
    let n = d.recipients().len();
    assert_eq!(n, 1000);
    let p = plan(n);
    let whole = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                black_box(prepare(&d, &k, &p));
                t.elapsed()
            })
            .collect(),
    );
    // Each copy minted and rendered, then dropped (as a sender streaming copies
    // out would): the same work as `prepare` minus holding every copy in memory.
    let streamed = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                for r in 0..n as u32 {
                    let (pixel, clicks) = tracking_urls(&d, &k, r);
                    black_box(d.render(Some(&Tracking {
                        pixel_url: &pixel,
                        click_urls: &clicks,
                    })));
                }
                t.elapsed()
            })
            .collect(),
    );
    let urls: Vec<(String, Vec<String>)> =
        (0..n as u32).map(|r| tracking_urls(&d, &k, r)).collect();
    let render = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                for (pixel, clicks) in &urls {
                    black_box(d.render(Some(&Tracking {
                        pixel_url: pixel,
                        click_urls: clicks,
                    })));
                }
                t.elapsed()
            })
            .collect(),
    );
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    let vs = |d: Duration| d.as_secs_f64() / n as f64 / parse_t.as_secs_f64();
    println!("\n== rewriting summary (100 KB HTML, 50 links, 1,000 recipients; medians) ==");
    println!(
        "parse once (baseline):                         {:>8.1} µs",
        parse_t.as_secs_f64() * 1e6
    );
    println!(
        "render only, per recipient:                    {:>8.1} µs  ({:.3}× the parse)",
        per(render),
        vs(render)
    );
    println!("tokens + render, per recipient, copy dropped:  {:>8.1} µs  ({:.3}× the parse; target ≤ 50 µs)", per(streamed), vs(streamed));
    println!(
        "follow::prepare, per recipient, copies kept:   {:>8.1} µs  ({:.3}× the parse)",
        per(whole),
        vs(whole)
    );
    println!(
        "follow::prepare, 1,000 recipients:             {:>8.1} ms  (target ≤ 50 ms)",
        whole.as_secs_f64() * 1e3
    );
}

criterion_group!(benches, tokens, rewriting);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo test --benches` runs this binary in test mode: skip the timing summary.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    summary();
}
