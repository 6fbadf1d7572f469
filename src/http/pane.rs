//! The task pane's files under `/addin/` (from `addin::assets`) and its sign-in
//! settings, `/addin/config.json`. Public: no token needed.
//!
//! Every answer under `/addin/` carries [`CSP`] (scripts only from this origin
//! and Office's CDN, no inline script, framed only by Outlook's origins),
//! `Referrer-Policy: no-referrer` and `X-Content-Type-Options: nosniff`, so no
//! other script can run beside the pasted token, which `api.js` keeps in
//! Office's roaming settings and this origin's `localStorage` (see there).

use hyper::header::{
    HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, StatusCode};
use serde_json::json;

use super::response::{error, json_response, method_not_allowed, Resp};
use crate::addin::assets;
use crate::config::EntraPane;

/// The Content-Security-Policy of the pane's pages. Scripts: this origin and
/// office.js's CDN. Connections: this origin (the API) and Entra's sign-in
/// endpoints for MSAL (`login.microsoftonline.com`, also framed for silent
/// renewal). Framed only by Outlook on the web, Outlook.com and Office's hosts.
pub const CSP: &str = "default-src 'self'; \
script-src 'self' https://appsforoffice.microsoft.com; \
style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; \
connect-src 'self' https://login.microsoftonline.com; \
frame-src 'self' https://login.microsoftonline.com; \
object-src 'none'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'self' https://outlook.office.com https://outlook.office365.com \
https://outlook.live.com https://*.outlook.com https://*.officeapps.live.com \
https://*.office.com https://*.office365.com https://*.microsoft.com";

/// The headers every `/addin/` answer carries.
fn pane_headers(h: &mut HeaderMap) {
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

/// The pane's files: `GET`/`HEAD /addin/{file}`. In JavaScript files,
/// `{{PUBLIC_URL}}` becomes the server's public URL (the send handler runs
/// without a page in classic Outlook, so it needs an absolute API address).
pub fn static_file(method: &Method, rest: &str, public_url: &str) -> Resp {
    if method != Method::GET && method != Method::HEAD {
        let mut r = method_not_allowed("GET, HEAD", "only GET and HEAD are allowed here".into());
        pane_headers(r.headers_mut());
        return r;
    }
    let name = if rest.is_empty() {
        "taskpane.html"
    } else {
        rest
    };
    let Some(a) = assets::find(name) else {
        let mut r = error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no add-in file {name:?}"),
        );
        pane_headers(r.headers_mut());
        return r;
    };
    let vendored = a.vendored();
    let body = if method == Method::HEAD {
        bytes::Bytes::new()
    } else if a.path.ends_with(".js") && !vendored {
        bytes::Bytes::from(String::from_utf8_lossy(a.body).replace("{{PUBLIC_URL}}", public_url))
    } else {
        bytes::Bytes::from_static(a.body)
    };
    let mut r = hyper::Response::new(http_body_util::Full::new(body));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    // Vendored files carry their version in their name, so they never change.
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(if vendored {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    pane_headers(h);
    r
}

/// `GET`/`HEAD /addin/config.json`, for anyone: how the pane may sign in.
/// `{"entra": null}` without Entra pane settings (the pane then offers only the
/// token paste and never loads MSAL), else
/// `{"entra": {"client_id", "authority", "scopes": ["api://…/access_as_user"]}}`.
/// Nothing in it is secret (a single-page app's client id and authority are
/// public); cached for a minute so a changed setting reaches panes soon.
pub fn config(method: &Method, entra: Option<&EntraPane>) -> Resp {
    if method != Method::GET && method != Method::HEAD {
        let mut r = method_not_allowed("GET, HEAD", "only GET and HEAD are allowed here".into());
        pane_headers(r.headers_mut());
        return r;
    }
    let v = match entra {
        Some(p) => json!({"entra": {
            "client_id": p.client_id,
            "authority": p.authority,
            "scopes": [p.scope],
        }}),
        None => json!({"entra": null}),
    };
    let mut r = json_response(StatusCode::OK, &v);
    if method == Method::HEAD {
        *r.body_mut() = http_body_util::Full::new(bytes::Bytes::new());
    }
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
    pane_headers(r.headers_mut());
    r
}
