//! The dashboard's files under `/dashboard/` (from `dashboard/web/`, embedded
//! with `include_bytes!`), public like the pane's: the page signs in with a
//! pasted token and calls the API itself. `api.js` is the pane's API client
//! (`addin-manifest/web/api.js`), served here too so both pages share it.
//! No CDN, no third-party code: charts are inline SVG drawn by `dashboard.js`.
//! Where Entra sign-in is configured for the pane (`/addin/config.json`), the
//! page also offers "Sign in with Microsoft", through the same `api.js` code
//! (`microsoftSignIn`, here with MSAL's standard client and a popup, loading the
//! pane's vendored MSAL from `/addin/vendor/`); the server checks the token
//! like the pane's (`addin::entra`). Then the page may also connect to the
//! authority's origin (MSAL's token requests), and nowhere else.

use hyper::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, LOCATION, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, StatusCode};

use super::response::{error, Resp};
use crate::addin::assets;

struct File {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! file {
    ($path:literal, $ct:literal) => {
        File {
            path: $path,
            content_type: $ct,
            body: include_bytes!(concat!("../../dashboard/web/", $path)),
        }
    };
}

const FILES: &[File] = &[
    file!("index.html", "text/html; charset=utf-8"),
    file!("dashboard.css", "text/css; charset=utf-8"),
    file!("dashboard.js", "text/javascript; charset=utf-8"),
];

/// `/dashboard` → `/dashboard/` (relative links need the slash).
pub fn redirect() -> Resp {
    let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    r.headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/dashboard/"));
    r
}

/// The origin (`https://host[:port]`) of an Entra authority URL, if it is a
/// plain one that can go in a CSP source list.
fn authority_origin(authority: &str) -> Option<&str> {
    let rest = authority.strip_prefix("https://")?;
    let host = rest.split('/').next()?;
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b));
    ok.then(|| &authority[..8 + host.len()])
}

/// `GET`/`HEAD /dashboard/{file}`; the empty name is `index.html`.
/// `authority`: the Entra authority the page signs in with, if configured.
pub fn static_file(method: &Method, rest: &str, public_url: &str, authority: Option<&str>) -> Resp {
    if method != Method::GET && method != Method::HEAD {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "only GET and HEAD are allowed here".into(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let name = if rest.is_empty() { "index.html" } else { rest };
    let found = FILES
        .iter()
        .find(|f| f.path == name)
        .map(|f| (f.content_type, f.body))
        .or_else(|| {
            (name == "api.js")
                .then(|| assets::find("api.js").map(|a| (a.content_type, a.body)))
                .flatten()
        });
    let Some((content_type, body)) = found else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no dashboard file {name:?}"),
        );
    };
    let body = if method == Method::HEAD {
        bytes::Bytes::new()
    } else if name.ends_with(".js") {
        bytes::Bytes::from(String::from_utf8_lossy(body).replace("{{PUBLIC_URL}}", public_url))
    } else {
        bytes::Bytes::from_static(body)
    };
    let mut r = hyper::Response::new(http_body_util::Full::new(body));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The page talks only to this server (and, with Entra, to the authority
    // for MSAL's token requests); nothing else may load or run.
    let connect = match authority.and_then(authority_origin) {
        Some(origin) => format!("; connect-src 'self' {origin}"),
        None => String::new(),
    };
    let csp = format!(
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'{connect}"
    );
    // Built from fixed text and an origin of checked characters only.
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert("content-security-policy", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::authority_origin;

    #[test]
    fn authority_origins_are_plain_https_origins() {
        assert_eq!(
            authority_origin("https://login.microsoftonline.com/common"),
            Some("https://login.microsoftonline.com")
        );
        assert_eq!(
            authority_origin("https://login.example:8443"),
            Some("https://login.example:8443")
        );
        assert_eq!(authority_origin("http://login.example/x"), None);
        assert_eq!(authority_origin("https://a b/x"), None);
        assert_eq!(authority_origin("https://a;script-src *"), None);
    }
}
