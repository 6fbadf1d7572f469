//! HTTP routing and response helpers.
//!
//! Routing is a plain match over the path (no framework): `/o/…` and `/c/…` go to
//! `beacon` (the hot path), `/api/v1/…` to `api` (which hands the Outlook add-in's
//! endpoints to `addin`), `/addin/…` to `addin` (the task pane's files),
//! `/healthz` answers here. Every error an API client can see is JSON
//! `{"error":{"code","message"}}` with the right status; nothing answers 500 for
//! bad input.

pub mod addin;
pub mod api;
pub mod beacon;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::state::App;

pub type Resp = Response<Full<Bytes>>;

/// The service function: never fails, every outcome is a response.
pub async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let path = req.uri().path();
    let resp = if let Some(rest) = path.strip_prefix("/o/") {
        let rest = rest.to_owned();
        beacon::pixel(&app, &req, &rest, peer.ip()).await
    } else if let Some(rest) = path.strip_prefix("/c/") {
        let rest = rest.to_owned();
        beacon::click(&app, &req, &rest, peer.ip()).await
    } else if path == "/healthz" {
        json_response(
            StatusCode::OK,
            &json!({"status": "ok", "store": app.store.kind()}),
        )
    } else if let Some(rest) = path.strip_prefix("/addin/") {
        addin::static_file(req.method(), rest, &app.config.public_url)
    } else if path.starts_with("/api/") {
        api::handle(&app, req).await
    } else {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint".to_string(),
        )
    };
    Ok(resp)
}

pub fn json_response(status: StatusCode, value: &Value) -> Resp {
    // Serializing a serde_json::Value cannot fail (its keys are strings).
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// A JSON error: `{"error":{"code","message"}}`.
pub fn error(status: StatusCode, code: &str, message: String) -> Resp {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}
