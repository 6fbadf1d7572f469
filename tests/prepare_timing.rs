//! Per-recipient render time for a 100 KB HTML newsletter with 50 links.
//!
//! Run in release mode and read the printed figures:
//! `cargo test --release --test prepare_timing -- --ignored --nocapture`
//! (design target: render ≤ 50 µs per recipient).

use std::time::Instant;

use mailbeacon::prepare::{Draft, Limits, Tracking};

fn newsletter() -> Vec<u8> {
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
    assert_eq!(i, 50);
    let mut raw = b"From: News <news@example.com>\r\nTo: a@example.org, b@example.org\r\nSubject: Newsletter\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".to_vec();
    raw.extend_from_slice(html.as_bytes());
    raw
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn render_time_per_recipient() {
    let raw = newsletter();
    let t0 = Instant::now();
    let d = Draft::parse(&raw, "https://track.example.com/c/", &Limits::default()).unwrap();
    let parse = t0.elapsed();
    assert_eq!(d.links().len(), 50);

    let recipients = 2000;
    // Tokens are minted per recipient by the caller; build them up front so
    // only `render` is timed.
    let urls: Vec<Vec<String>> = (0..recipients)
        .map(|r| {
            (0..50)
                .map(|l| format!("https://track.example.com/c/AbCdEfGhIjKlMnOpQrStUv{r:06}{l:02}/aHR0cHM6Ly93d3cuZXhhbXBsZS5jb20vYXJ0aWNsZXMv"))
                .collect()
        })
        .collect();
    let pixels: Vec<String> = (0..recipients)
        .map(|r| format!("https://track.example.com/o/AbCdEfGhIjKlMnOpQrStUv{r:06}.gif"))
        .collect();
    let mut total_bytes = 0usize;
    let t1 = Instant::now();
    for r in 0..recipients {
        let out = d.render(Some(&Tracking {
            pixel_url: &pixels[r],
            click_urls: &urls[r],
        }));
        total_bytes += out.len();
    }
    let per = t1.elapsed() / recipients as u32;
    println!(
        "message {} bytes, parse {:?}, render {:?} per recipient ({} bytes out each)",
        raw.len(),
        parse,
        per,
        total_bytes / recipients
    );
}
