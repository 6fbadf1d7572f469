//! Attachment links: `GET /a/{token}/{index}/{name}` serves one file taken out
//! of the copies of an email followed with `"attachments": "link"`, and counts
//! the view for the recipient the token names.
//!
//! - The token (purpose `Attachment`) is verified first, with no lookup; a
//!   tampered, truncated or foreign token, or an `index` that is not the one
//!   it signs, answers the neutral 404 page and never a byte of any file. The
//!   `name` segment is for people and download managers and is not checked.
//! - A valid token whose email is gone or past its retention, or whose file
//!   is no longer stored, answers `410` with a neutral page.
//! - Otherwise `200` with the original bytes, the stored type, `attachment`
//!   disposition (the name as given, RFC 6266 `filename*`), `no-store`,
//!   `nosniff` and a sandboxing CSP.
//! - A view is recorded through the recorder, like the pixel's opens (the
//!   answer waits for the durable commit), unless it is a HEAD or a prefetch,
//!   Email Engagement is off, or the recipient is erased, not followed, or
//!   asked not to be followed since: then the file is still served and
//!   nothing is recorded. Machine rules apply at report time (`classify`).

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};

use super::hit::{counts, event, neutral_page as page, settle, NO_STORE};
use super::Resp;
use crate::model::{EventKind, FollowEmail};
use crate::state::App;

const NOT_FOUND_PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Link not found</title></head>\
<body><h1>Link not found</h1><p>This link is not valid. Please check that you copied it completely.</p></body></html>";
const GONE_PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>File no longer available</title></head>\
<body><h1>File no longer available</h1><p>This file is no longer available. Please ask the sender for it.</p></body></html>";
const UNAVAILABLE_PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Try again later</title></head>\
<body><h1>Try again later</h1><p>This file cannot be served right now. Please try again in a moment.</p></body></html>";

/// `/a/{rest}`: every method is answered here (GET and HEAD, else 405).
pub async fn download(app: &App, req: &Request<Incoming>, rest: &str, peer: IpAddr) -> Resp {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut segs = rest.splitn(3, '/');
    let (Some(token), Some(index)) = (segs.next(), segs.next()) else {
        return page(StatusCode::NOT_FOUND, NOT_FOUND_PAGE);
    };
    let Some(claims) = app.keys().verify_attachment(token) else {
        return page(StatusCode::NOT_FOUND, NOT_FOUND_PAGE);
    };
    let Some(index) = index
        .parse::<u32>()
        .ok()
        .filter(|i| claims.link == Some(*i))
    else {
        return page(StatusCode::NOT_FOUND, NOT_FOUND_PAGE);
    };
    let rec = match app.store.get_email(claims.email).await {
        // Past its retention but not swept yet: gone all the same.
        Ok(Some(rec)) if rec.expires_ms <= app.clock.now_ms() => {
            return page(StatusCode::GONE, GONE_PAGE)
        }
        Ok(Some(rec)) => rec,
        Ok(None) => return page(StatusCode::GONE, GONE_PAGE),
        Err(e) => {
            tracing::error!(error = %e, "attachment link: the email cannot be read");
            return page(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE_PAGE);
        }
    };
    let file = match app.store.attachment(claims.email, index).await {
        Ok(Some(f)) => f,
        Ok(None) => return page(StatusCode::GONE, GONE_PAGE),
        Err(e) => {
            tracing::error!(error = %e, "attachment link: the file cannot be read");
            return page(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE_PAGE);
        }
    };
    let recipient = rec
        .recipients
        .get(claims.recipient as usize)
        .filter(|r| r.followed && !r.erased && !r.address.is_empty());
    if let Some(r) = recipient {
        if counts(req) && app.engagement_enabled() {
            // A contact who asked since not to be followed: served, not counted.
            let opted_out = match app.store.contact(&r.address).await {
                Ok(c) => c.is_some_and(|c| c.follow_email == FollowEmail::DoNotAllow),
                Err(e) => {
                    tracing::warn!(error = %e, "attachment link: contact preference unreadable");
                    false
                }
            };
            if !opted_out {
                let ev = event(app, req, peer, EventKind::Attachment, &claims);
                settle(app, Some(ev)).await;
            }
        }
    }
    let content_type = HeaderValue::from_str(&file.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let disposition = HeaderValue::from_str(&disposition(&file.name))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    let mut r = Response::new(Full::new(Bytes::from(file.data)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, content_type);
    h.insert(CONTENT_DISPOSITION, disposition);
    h.insert(CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

/// `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>`.
fn disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_carry_the_name_safely() {
        assert_eq!(
            disposition("Q3 report.pdf"),
            "attachment; filename=\"Q3 report.pdf\"; filename*=UTF-8''Q3%20report.pdf"
        );
        let d = disposition("Über \"x\"\r\n.pdf");
        assert!(HeaderValue::from_str(&d).is_ok(), "{d}");
        assert!(
            d.contains("filename*=UTF-8''%C3%9Cber%20%22x%22%0D%0A.pdf"),
            "{d}"
        );
        assert!(d.contains("filename=\"_ber _x___.pdf\""), "{d}");
    }
}
