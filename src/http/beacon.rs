//! The hot path: the open pixel (`/o/{token}.gif`) and the click redirect
//! (`/c/{token}/{destination}`).
//!
//! Invariants (each one tested):
//! - The pixel always answers 200 with the 43-byte GIF and `Cache-Control:
//!   no-store`, whatever the token: never a broken image, and no oracle telling a
//!   valid token from an invalid one.
//! - The click redirects only to the destination its signature covers. Anything
//!   else (tampered, truncated, wrong key or purpose, garbage) answers a neutral
//!   404 page and never redirects.
//! - HEAD requests and prefetches are answered the same way but never counted.
//! - An event is recorded only while Email Engagement is on, and the response is
//!   sent only after the event is durably committed (an answered hit is stored).
//!   A recording failure is logged; the image and the redirect still work, since
//!   links in mailboxes must keep working through a store outage.
//! - **No timing oracle.** A hit that is not recorded (an invalid pixel token,
//!   HEAD, a prefetch, Email Engagement off) waits for a recorder barrier: the
//!   next group commit, writing nothing. So it is answered when a recorded hit
//!   of the same moment would be, and the response time does not tell a valid
//!   token from an invalid one. (An erased recipient's hit is recorded like any
//!   other and dropped at indexing, so it takes the same path too.) The click's
//!   answer to a bad signature is a 404 and tells that anyway, so it answers at
//!   once.
//! - **Bounded wait** (`commit_wait`, `MAILBEACON_COMMIT_WAIT_MS`, default
//!   2000 ms). With a stalled disk (or Redis and its spool), a commit may not end
//!   for a long time; the pixel must not hang with it. Past the limit the pixel
//!   answers its GIF and the click redirects anyway. The event is not dropped:
//!   it stays in the recorder's queue and is written when the store recovers.
//!   Decision: this is the one case where a hit is answered before it is
//!   durable, and only under a stall longer than the limit, because a mail
//!   client waiting seconds for an image (or a person for a redirect) is
//!   broken for them while the event is still on its way to disk; a crash
//!   during such a stall loses those events. Each such answer is counted in
//!   `mailbeacon_hits_answered_before_commit_total`, and logged at most once
//!   per `STALL_LOG_EVERY_MS`.
//!
//! Nothing here touches the store except through the recorder.

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, LOCATION, REFERRER_POLICY};
use hyper::{Method, Request, Response, StatusCode};

use super::hit::{counts, event, neutral_page, settle, NO_STORE};
use super::Resp;
use crate::model::EventKind;
use crate::state::App;
use crate::token::decode_destination;

/// A transparent 1×1 GIF.
pub static GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

const NOT_FOUND_PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Link not found</title></head>\
<body><h1>Link not found</h1><p>This link is not valid. Please check that you copied it completely.</p></body></html>";

pub async fn pixel(app: &App, req: &Request<Incoming>, rest: &str, peer: IpAddr) -> Resp {
    if let Some(r) = reject_method(req.method()) {
        return r;
    }
    let token = rest.strip_suffix(".gif").unwrap_or(rest);
    let claims = app.keys().verify_open(token);
    let ev = claims
        .filter(|_| counts(req) && app.engagement_enabled())
        .map(|c| event(app, req, peer, EventKind::Open, &c));
    settle(app, ev).await;
    gif()
}

pub async fn click(app: &App, req: &Request<Incoming>, rest: &str, peer: IpAddr) -> Resp {
    if let Some(r) = reject_method(req.method()) {
        return r;
    }
    let Some((token, segment)) = rest.split_once('/') else {
        return not_found();
    };
    let Some(dest) = decode_destination(segment) else {
        return not_found();
    };
    let Some(claims) = app.keys().verify_click(token, &dest) else {
        return not_found();
    };
    // Only absolute http(s) links are ever signed; refuse anything else even if
    // signed, and anything that cannot be a header value.
    let lower = dest.get(..8).unwrap_or("").to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return not_found();
    }
    let Ok(location) = HeaderValue::from_str(&dest) else {
        return not_found();
    };
    let ev = (counts(req) && app.engagement_enabled())
        .then(|| event(app, req, peer, EventKind::Click, &claims));
    settle(app, ev).await;
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::FOUND;
    let h = r.headers_mut();
    h.insert(LOCATION, location);
    h.insert(CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

fn reject_method(m: &Method) -> Option<Resp> {
    if m == Method::GET || m == Method::HEAD {
        return None;
    }
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    Some(r)
}

fn gif() -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(&GIF)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    r
}

fn not_found() -> Resp {
    neutral_page(StatusCode::NOT_FOUND, NOT_FOUND_PAGE)
}

#[cfg(test)]
mod tests {
    use super::super::hit::{client_ip, is_prefetch, truncate_ip};
    use super::*;
    use crate::ipnet::IpNet;
    use hyper::header::HeaderMap;

    #[test]
    fn gif_is_43_bytes_and_a_gif() {
        assert_eq!(GIF.len(), 43);
        assert_eq!(&GIF[..6], b"GIF89a");
    }

    #[test]
    fn addresses_are_truncated() {
        assert_eq!(
            truncate_ip("203.0.113.77".parse().unwrap()),
            "203.0.113.0/24"
        );
        assert_eq!(
            truncate_ip("2001:db8:abcd:12::1".parse().unwrap()),
            "2001:db8:abcd::/48"
        );
        assert_eq!(
            truncate_ip(
                "::ffff:198.51.100.9"
                    .parse::<IpAddr>()
                    .unwrap()
                    .to_canonical()
            ),
            "198.51.100.0/24"
        );
    }

    #[test]
    fn forwarded_for_is_trusted_only_from_proxies() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.1, 10.0.0.5".parse().unwrap());
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted = [IpNet::parse("10.0.0.0/8").unwrap()];
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        let stranger: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(client_ip(stranger, &h, &trusted), stranger);
        assert_eq!(client_ip(proxy, &h, &[]), proxy);
    }

    #[test]
    fn prefetch_headers_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert("sec-purpose", "prefetch;prerender".parse().unwrap());
        assert!(is_prefetch(&h));
        let mut h = HeaderMap::new();
        h.insert("purpose", "prefetch".parse().unwrap());
        assert!(is_prefetch(&h));
        assert!(!is_prefetch(&HeaderMap::new()));
    }
}
