//! Outside insights end to end: a local JSON news feed (reachable because
//! `MAILBEACON_OUTBOUND_ALLOW=127.0.0.0/8`) gives `company_news` cards for the
//! domains of the caller's contacts only, which can be dismissed like any card;
//! the same feed without that allowance, or a private address, is refused and
//! never connected to.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::*;

/// A feed server on 127.0.0.1 answering every request with `body`; counts
/// connections.
fn feed_server(body: String) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/feed.json", l.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            h.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = c.read(&mut buf);
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                body.len(),
                body
            );
        }
    });
    (url, hits)
}

fn rfc3339_hours_ago(h: u64) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - h * 3600;
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

fn feed_body() -> String {
    serde_json::json!({"items": [
        {"domain": "client.test", "title": "Client opens a new office", "url": "https://news.test/client",
         "published_at": rfc3339_hours_ago(2)},
        {"domain": "stranger.test", "title": "Stranger news", "url": "https://news.test/stranger",
         "published_at": rfc3339_hours_ago(1)},
        {"domain": "client.test", "title": "Ancient", "url": "https://news.test/old",
         "published_at": rfc3339_hours_ago(24 * 30)}
    ]})
    .to_string()
}

fn news(s: &Server, token: &str) -> Vec<Value> {
    let (st, v) = s.api("GET", "/api/v1/insights", Some(token), None);
    assert_eq!(st, 200, "{v}");
    v["cards"]
        .as_array()
        .expect("cards")
        .iter()
        .filter(|c| c["kind"] == "company_news")
        .cloned()
        .collect()
}

#[test]
fn company_news_from_a_local_feed() {
    let (url, hits) = feed_server(feed_body());
    let s = Server::start_env(&[
        LOCAL_OUTBOUND,
        ("MAILBEACON_INSIGHTS_FEED_URL", &url),
        ("MAILBEACON_INSIGHTS_FEED_SECS", "10"),
    ]);
    let ann = s.user("ann@sales.test");
    let eve = s.user("eve@sales.test");
    s.follow_one(&ann, "bob@client.test", "https://shop.example/p");
    s.follow_one(&ann, "carol@client.test", "https://shop.example/p");

    // The feed is read at start-up (in the background): wait for it.
    let started = Instant::now();
    let mut cards = news(&s, &ann);
    while cards.is_empty() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
        cards = news(&s, &ann);
    }
    assert!(hits.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        cards.len(),
        1,
        "only recent news of the contacts' domain: {cards:?}"
    );
    let c = &cards[0];
    assert_eq!(
        c["title"].as_str().unwrap_or(""),
        "News about client.test: Client opens a new office"
    );
    assert!(
        c["detail"]
            .as_str()
            .unwrap_or("")
            .contains("2 of your contacts are at client.test"),
        "{c}"
    );
    // Eve has no contact there.
    assert!(news(&s, &eve).is_empty());

    // Dismissed like any other card, and it stays dismissed.
    let id = c["id"].as_str().expect("id");
    let (st, v) = s.api(
        "POST",
        &format!("/api/v1/insights/{id}/dismiss"),
        Some(&ann),
        None,
    );
    assert!(st == 200 || st == 204, "{st} {v}");
    assert!(news(&s, &ann).is_empty());
}

#[test]
fn a_refused_feed_is_never_connected_to() {
    // Loopback without MAILBEACON_OUTBOUND_ALLOW: not a public address.
    let (url, hits) = feed_server(feed_body());
    let mut s = Server::start_env(&[
        ("MAILBEACON_INSIGHTS_FEED_URL", &url),
        ("MAILBEACON_INSIGHTS_FEED_SECS", "10"),
    ]);
    let ann = s.user("ann@sales.test");
    s.follow_one(&ann, "bob@client.test", "https://shop.example/p");
    let started = Instant::now();
    while !s.log_text().contains("target_not_allowed")
        && started.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        s.log_text().contains("target_not_allowed"),
        "{}",
        s.log_text()
    );
    assert!(news(&s, &ann).is_empty());
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the refused feed was connected to"
    );
    s.stop();

    // A private address, even with loopback allowed.
    let s = Server::start_env(&[
        LOCAL_OUTBOUND,
        ("MAILBEACON_INSIGHTS_FEED_URL", "http://10.0.0.1/feed.json"),
    ]);
    let started = Instant::now();
    while !s.log_text().contains("target_not_allowed")
        && started.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        s.log_text().contains("target_not_allowed"),
        "{}",
        s.log_text()
    );
}
