//! What a tracked hit records, shared by the routes that record one (the
//! pixel and click in `beacon`, attachment links in `attachments`): whether a
//! request counts (a GET that is not a prefetch) and the `Event` it becomes
//! (user agent, the client's network, the time since the copy was prepared,
//! the operator-listed machine network), and the bounded wait for its commit
//! (`settle`: a barrier when nothing is recorded, so timing tells nothing).

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, REFERRER_POLICY, USER_AGENT,
};
use hyper::{Method, Request, Response, StatusCode};

use crate::ids::now_ms;
use crate::ipnet::IpNet;
use crate::model::{Event, EventKind};
use crate::recorder::Outcome;
use crate::state::App;
use crate::token::Claims;

const MAX_UA: usize = 512;
/// `Cache-Control` of every tracked answer: a hit must reach the server each time.
pub const NO_STORE: &str = "no-store, no-cache, must-revalidate, max-age=0";

/// Returns true if and only if the request is a GET that is not a prefetch.
pub fn counts(req: &Request<Incoming>) -> bool {
    req.method() == Method::GET && !is_prefetch(req.headers())
}

pub fn is_prefetch(h: &HeaderMap) -> bool {
    ["sec-purpose", "purpose", "x-purpose", "x-moz"]
        .iter()
        .any(|name| {
            h.get_all(*name).iter().any(|v| {
                v.to_str()
                    .map(|s| {
                        let s = s.to_ascii_lowercase();
                        s.contains("prefetch") || s.contains("prerender") || s.contains("preview")
                    })
                    .unwrap_or(false)
            })
        })
}

/// The event a counted hit records.
pub fn event(
    app: &App,
    req: &Request<Incoming>,
    peer: IpAddr,
    kind: EventKind,
    c: &Claims,
) -> Event {
    let at_ms = now_ms();
    let ua = req
        .headers()
        .get(USER_AGENT)
        .map(|v| truncate_utf8(&String::from_utf8_lossy(v.as_bytes()), MAX_UA))
        .unwrap_or_default();
    let ip = client_ip(peer, req.headers(), &app.config.trusted_proxies);
    let machine_net = app
        .config
        .machine_networks
        .iter()
        .find(|(net, _)| net.contains(ip))
        .map(|(_, label)| label.clone());
    Event {
        seq: 0,
        at_ms,
        kind,
        email: c.email,
        recipient: c.recipient,
        link: c.link,
        method: match *req.method() {
            Method::GET => Cow::Borrowed("GET"),
            ref m => Cow::Owned(m.as_str().to_owned()),
        },
        ua,
        ip: truncate_ip(ip),
        since_prepared_s: (at_ms / 1000) as i64 - i64::from(c.issued),
        machine_net,
    }
}

fn truncate_utf8(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which
/// case the right-most untrusted address of `X-Forwarded-For`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.iter().any(|n| n.contains(peer)) {
        return peer;
    }
    let mut client = peer;
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                let ip = ip.to_canonical();
                client = ip;
                if !trusted.iter().any(|n| n.contains(ip)) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// Keeps only the network part: /24 for IPv4, /48 for IPv6.
pub fn truncate_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// Answers given before their commit are logged at most this often.
const STALL_LOG_EVERY_MS: u64 = 10_000;
/// When such an answer was last logged (ms since the epoch).
static STALL_LOGGED_MS: AtomicU64 = AtomicU64::new(0);

/// Waits for the event's group commit (or, with no event, for a barrier at the
/// next one), at most `commit_wait`.
pub async fn settle(app: &App, ev: Option<Event>) {
    let limit = app.config.commit_wait;
    let Some(ev) = ev else {
        app.recorder.barrier_within(limit).await;
        return;
    };
    let kind = ev.kind;
    match app.recorder.record_within(ev, limit).await {
        Outcome::Committed => {}
        Outcome::Failed => tracing::error!(?kind, "a hit could not be recorded"),
        Outcome::Pending => {
            crate::metrics::METRICS
                .answered_before_commit
                .fetch_add(1, Ordering::Relaxed);
            let now = now_ms();
            let last = STALL_LOGGED_MS.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= STALL_LOG_EVERY_MS
                && STALL_LOGGED_MS
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    limit_ms = limit.as_millis() as u64,
                    "the store did not commit within the wait limit; hits are answered before they are durable and written when it recovers"
                );
            }
        }
    }
}
/// A neutral HTML page (the invalid or expired link answers): not cached,
/// no referrer.
pub fn neutral_page(status: StatusCode, html: &'static str) -> super::Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(html.as_bytes())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}
