//! The task pane's files under `/addin/` (from `addin::assets`) and its sign-in
//! settings, `/addin/config.json`. Public: no token needed.

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use hyper::{Method, StatusCode};
use serde_json::json;

use super::response::{error, json_response, Resp};
use crate::addin::assets;
use crate::config::EntraPane;

/// The pane's files: `GET`/`HEAD /addin/{file}`. In JavaScript files,
/// `{{PUBLIC_URL}}` becomes the server's public URL (the send handler runs
/// without a page in classic Outlook, so it needs an absolute API address).
pub fn static_file(method: &Method, rest: &str, public_url: &str) -> Resp {
    if method != Method::GET && method != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "only GET and HEAD are allowed here".into(),
        );
    }
    let name = if rest.is_empty() {
        "taskpane.html"
    } else {
        rest
    };
    let Some(a) = assets::find(name) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no add-in file {name:?}"),
        );
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
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
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
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "only GET and HEAD are allowed here".into(),
        );
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
    r
}
