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
//!
//! Nothing here touches the store except through the recorder.

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    USER_AGENT,
};
use hyper::{Method, Request, Response, StatusCode};

use super::Resp;
use crate::ids::now_ms;
use crate::ipnet::IpNet;
use crate::model::{Event, EventKind};
use crate::state::App;
use crate::token::{decode_destination, Claims};

/// A transparent 1×1 GIF.
pub static GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

const NO_STORE: &str = "no-store, no-cache, must-revalidate, max-age=0";
const NOT_FOUND_PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Link not found</title></head>\
<body><h1>Link not found</h1><p>This link is not valid. Please check that you copied it completely.</p></body></html>";
const MAX_UA: usize = 512;

pub async fn pixel(app: &App, req: &Request<Incoming>, rest: &str, peer: IpAddr) -> Resp {
    if let Some(r) = reject_method(req.method()) {
        return r;
    }
    if counts(req) && app.engagement_enabled() {
        let token = rest.strip_suffix(".gif").unwrap_or(rest);
        if let Some(claims) = app.keys().verify_open(token) {
            let ev = event(app, req, peer, EventKind::Open, &claims);
            if !app.recorder.record(ev).await {
                tracing::error!("open could not be recorded");
            }
        }
    }
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
    if counts(req) && app.engagement_enabled() {
        let ev = event(app, req, peer, EventKind::Click, &claims);
        if !app.recorder.record(ev).await {
            tracing::error!("click could not be recorded");
        }
    }
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

/// Returns true if and only if the request is a GET that is not a prefetch.
fn counts(req: &Request<Incoming>) -> bool {
    req.method() == Method::GET && !is_prefetch(req.headers())
}

fn is_prefetch(h: &HeaderMap) -> bool {
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

fn gif() -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(&GIF)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    r
}

fn not_found() -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(NOT_FOUND_PAGE.as_bytes())));
    *r.status_mut() = StatusCode::NOT_FOUND;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

fn event(app: &App, req: &Request<Incoming>, peer: IpAddr, kind: EventKind, c: &Claims) -> Event {
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
        method: req.method().as_str().to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
