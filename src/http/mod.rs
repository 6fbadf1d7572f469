//! HTTP routing and response helpers.
//!
//! Routing is a plain match over the path (no framework): `/o/…` and `/c/…` go to
//! `beacon` (the hot path), `/api/v1/…` to `api` (which hands the Outlook add-in's
//! endpoints to `addin`), `/addin/…` to `addin` (the task pane's files and its
//! sign-in settings, `/addin/config.json`),
//! `/healthz` and `/metrics` answer here (every request is counted in `metrics`,
//! a few atomic adds). Every error an API client can see is JSON
//! `{"error":{"code","message"}}` with the right status; nothing answers 500 for
//! bad input.

// Handlers return `Result<_, Resp>` so an early error is one `?` away; a response
// is built once per request, so boxing the error variant would gain nothing.
#![allow(clippy::result_large_err)]

pub mod addin;
pub mod api;
pub mod beacon;
pub mod privacy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::metrics;
use crate::state::App;

pub type Resp = Response<Full<Bytes>>;

/// The service function: never fails, every outcome is a response.
pub async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let started = std::time::Instant::now();
    let path = req.uri().path();
    let route = metrics::route_of(path);
    let resp = if let Some(rest) = path.strip_prefix("/o/") {
        let rest = rest.to_owned();
        beacon::pixel(&app, &req, &rest, peer.ip()).await
    } else if let Some(rest) = path.strip_prefix("/c/") {
        let rest = rest.to_owned();
        beacon::click(&app, &req, &rest, peer.ip()).await
    } else if path == "/healthz" {
        // 200 while serving; "degraded" while events are spooled locally because
        // the store (Redis) cannot take them.
        let status = if app.store.degraded() {
            "degraded"
        } else {
            "ok"
        };
        json_response(
            StatusCode::OK,
            &json!({"status": status, "store": app.store.kind(), "spool_events": app.store.spool_events()}),
        )
    } else if path == "/metrics" {
        metrics_response(&app)
    } else if path == "/addin/config.json" {
        let pane = app.config.entra.as_ref().and_then(|e| e.pane.as_ref());
        addin::pane_config(req.method(), pane)
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
    metrics::METRICS.request(route, resp.status().as_u16(), started.elapsed());
    Ok(resp)
}

fn metrics_response(app: &App) -> Resp {
    let stats = &app.recorder.stats;
    let redis = app.store.as_redis().map(|r| &r.stats);
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let text = metrics::render(&metrics::Gauges {
        store: app.store.kind(),
        events_recorded: get(&stats.events),
        event_failures: get(&stats.failures),
        batches: get(&stats.batches),
        spool_events: app.store.spool_events(),
        degraded: app.store.degraded(),
        store_errors: redis.map(|r| get(&r.errors)).unwrap_or(0),
        derived_events: redis.map(|r| get(&r.derived_events)).unwrap_or(0),
        derive_lag_ms: redis.map(|r| get(&r.derive_lag_ms)).unwrap_or(0),
    });
    let mut r = Response::new(Full::new(Bytes::from(text)));
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
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
