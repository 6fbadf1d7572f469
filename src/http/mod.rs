//! HTTP: the router, and the handlers by resource.
//!
//! This file is the only router: [`handle`] matches every path, `/o/…` and
//! `/c/…` first (the hot path, straight to `beacon`), attachment links `/a/…`
//! (to `attachments`), then `/healthz`,
//! `/metrics`, the pane's files under `/addin/`, the dashboard's under
//! `/dashboard/`, and the JSON API under
//! `/api/v1/`, where the bearer token is checked once, before the path is looked
//! at (401 before 404), and [`api`] dispatches by method and path segments.
//! Every request is counted in `metrics` (a few atomic adds).
//!
//! Below the router, one file per resource: `beacon` (pixel, click),
//! `attachments` (attachment links), `users`,
//! `emails` (follow, list, engagement, stats), `outbox` (an email's schedule
//! and reminder), `settings`, `privacy` (contacts,
//! data subjects, audit log), `activities` (tracked emails, Auto Capture),
//! `compose` (follow from compose), `mailbox` (the user's mailbox and own
//! settings), `pane` (the task pane's files), `insights` (cards, scores, send
//! time), `dashboard` (the dashboard's files). Handler files use only the helpers
//! `request`, `response`, `audit` and `hit` (what a tracked hit records) and
//! modules below HTTP, never each other.
//!
//! Every error an API client can see is JSON `{"error":{"code","message"}}` with
//! the right status; nothing answers 500 for bad input.

// Handlers return `Result<_, Resp>` so an early error is one `?` away; a response
// is built once per request, so boxing the error variant would gain nothing.
#![allow(clippy::result_large_err)]

pub mod activities;
pub mod attachments;
pub mod audit;
pub mod beacon;
pub mod budget;
pub mod compose;
pub mod dashboard;
pub mod email_walk;
pub mod emails;
pub mod events;
pub mod hit;
pub mod insights;
pub mod mailbox;
pub mod outbox;
pub mod pane;
pub mod privacy;
pub mod request;
pub mod response;
pub mod settings;
pub mod users;
pub mod webhooks;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

pub use response::{error, json_response, method_not_allowed, Body, Resp};

use crate::auth::{self, AuthError};
use crate::metrics;
use crate::model::{Role, User};
use crate::state::App;
use crate::store::StoreError;
use request::Query;
use response::store_failed;

/// The service function: never fails, every outcome is a response.
pub async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = std::time::Instant::now();
    let route = metrics::route_of(req.uri().path());
    // The live event stream is the one streaming answer; every other handler's
    // `Resp` is boxed here.
    let resp = if matches!(req.uri().path(), "/api/v1/events" | "/api/v1/events/") {
        Box::pin(events_stream(&app, req)).await
    } else {
        response::boxed(dispatch(&app, peer, req).await)
    };
    metrics::METRICS.request(route, resp.status().as_u16(), started.elapsed());
    Ok(resp)
}

/// The first segment of `path` and what follows its slash, if there is one:
/// `/o/abc.gif` → `("o", Some("abc.gif"))`, `/healthz` → `("healthz", None)`.
fn split_first(path: &str) -> (&str, Option<&str>) {
    let p = path.strip_prefix('/').unwrap_or(path);
    match p.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (p, None),
    }
}

async fn dispatch(app: &App, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    match split_first(req.uri().path()) {
        // The hot path: what follows the prefix is the token (and, for a click,
        // the destination); `beacon` answers every method itself.
        ("o", Some(rest)) => beacon::pixel(app, &req, rest, peer.ip()).await,
        ("c", Some(rest)) => beacon::click(app, &req, rest, peer.ip()).await,
        // Attachment links: the token, the index, the file's name.
        ("a", Some(rest)) => attachments::download(app, &req, rest, peer.ip()).await,
        // 200 while serving; "degraded" while events are spooled locally because
        // the store (Redis) cannot take them.
        ("healthz" | "metrics", None)
            if req.method() != Method::GET && req.method() != Method::HEAD =>
        {
            method_not_allowed("GET, HEAD", format!("{} is not allowed here", req.method()))
        }
        ("healthz", None) => {
            let status = if app.store.degraded() {
                "degraded"
            } else {
                "ok"
            };
            json_response(
                StatusCode::OK,
                &json!({"status": status, "store": app.store.kind(), "spool_events": app.store.spool_events()}),
            )
        }
        // On its own listener when `metrics_listen` is set (see `server`);
        // else here, for admin tokens only.
        ("metrics", None) if app.config.metrics_listen.is_none() => {
            match Box::pin(authenticate(app, &req))
                .await
                .and_then(|u| require_admin(&u))
            {
                Ok(()) => metrics_response(app),
                Err(r) => r,
            }
        }
        ("addin", Some("config.json")) => {
            let entra = app.config.entra.as_ref().and_then(|e| e.pane.as_ref());
            pane::config(req.method(), entra)
        }
        ("addin", Some(file)) => pane::static_file(req.method(), file, &app.config.public_url),
        // The dashboard's files (public; its API calls carry the token).
        ("dashboard", None) => dashboard::redirect(),
        ("dashboard", Some(file)) => {
            let authority = app.config.entra.as_ref().and_then(|e| e.pane.as_ref());
            let authority = authority.map(|p| p.authority.as_str());
            dashboard::static_file(req.method(), file, &app.config.public_url, authority)
        }
        ("api", Some(rest)) => match rest.strip_prefix("v1/") {
            Some(rest) => {
                // Owned: `api` takes the request.
                let rest = rest.to_owned();
                // Boxed: the API's state machine is kilobytes, and an unboxed
                // one would make every hot-path request's future that large
                // too (moved into hyper's slot per request).
                Box::pin(api(app, req, &rest)).await
            }
            None => not_found(),
        },
        _ => not_found(),
    }
}

fn not_found() -> Resp {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint".to_string(),
    )
}

/// `/api/v1/{rest}`: authenticates, then dispatches by method and path.
async fn api(app: &App, req: Request<Incoming>, rest: &str) -> Resp {
    let user = match authenticate(app, &req).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    // Held until the answer is built: large bodies share one byte budget.
    let _budget = match budget::reserve(app, &req) {
        Ok(permit) => permit,
        Err(r) => return r,
    };
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let query: Query = request::parse_query(req.uri().query().unwrap_or(""));
    let method = req.method().clone();
    let user = &user;
    match (&method, segs.as_slice()) {
        // Users and settings (admins).
        (&Method::POST, ["users"]) => match require_admin(user) {
            Err(r) => r,
            Ok(()) => users::create(app, user, req).await,
        },
        (&Method::GET, ["users"]) => match require_admin(user) {
            Err(r) => r,
            Ok(()) => users::list(app, &query).await,
        },
        (&Method::PATCH, ["users", id]) => match require_admin(user) {
            Err(r) => r,
            Ok(()) => users::update(app, user, id, req).await,
        },
        (&Method::POST, ["users", id, "token"]) => match require_admin(user) {
            Err(r) => r,
            Ok(()) => users::new_token(app, user, id).await,
        },
        (&Method::GET, ["settings"]) => match require_admin(user) {
            Err(r) => r,
            Ok(()) => settings::get(app),
        },
        (&Method::PUT, ["settings"]) => match require_admin(user) {
            Err(r) => r,
            Ok(()) => settings::put(app, user, req).await,
        },
        // Followed emails.
        (&Method::POST, ["emails"]) => emails::follow(app, user, req).await,
        (&Method::GET, ["emails"]) => emails::list(app, user, &query).await,
        (&Method::GET, ["emails", id]) => emails::get(app, user, id).await,
        (&Method::GET, ["stats"]) => emails::stats(app, user, &query).await,
        // After the send: schedule and reminder of one email.
        (&Method::PUT, ["emails", id, "schedule"]) => {
            outbox::put_schedule(app, user, id, req).await
        }
        (&Method::DELETE, ["emails", id, "schedule"]) => {
            outbox::delete_schedule(app, user, id).await
        }
        (&Method::PUT, ["emails", id, "reminder"]) => {
            outbox::put_reminder(app, user, id, req).await
        }
        (&Method::DELETE, ["emails", id, "reminder"]) => {
            outbox::delete_reminder(app, user, id).await
        }
        // Privacy (admins): contacts, data subjects, the audit log. Contacts and
        // subjects answer a wrong method themselves, after the admin check.
        (&Method::POST, ["contacts", "import"]) => match require_admin(user) {
            Err(r) => r,
            Ok(()) => privacy::import(app, user, req).await,
        },
        (&Method::GET | &Method::PUT | &Method::DELETE, ["contacts", address])
            if *address != "import" =>
        {
            match require_admin(user) {
                Err(r) => r,
                Ok(()) => privacy::contact(app, user, &method, address, req).await,
            }
        }
        (&Method::GET | &Method::DELETE, ["subjects", address]) => match require_admin(user) {
            Err(r) => r,
            Ok(()) => privacy::subject(app, user, &method, address).await,
        },
        (&Method::GET, ["audit"]) => match require_admin(user) {
            Err(r) => r,
            Ok(()) => privacy::audit_log(app, &query).await,
        },
        // The Outlook add-in: tracked emails, Auto Capture, compose, the user's
        // own settings and mailbox.
        (&Method::POST, ["activities"]) => activities::track(app, user, req).await,
        (&Method::GET, ["activities"]) => activities::get_list(app, user, &query).await,
        (&Method::GET, ["activities", id]) => activities::get(app, user, id).await,
        (&Method::DELETE, ["activities", id]) => activities::untrack(app, user, id).await,
        (&Method::PUT, ["activities", id, "regarding"]) => {
            activities::set_regarding(app, user, id, req).await
        }
        (&Method::GET, ["capture"]) => activities::capture_list(app, user, &query).await,
        (&Method::POST, ["capture", "track"]) => activities::capture_track(app, user, req).await,
        (&Method::POST, ["compose", "follow"]) => compose::follow(app, user, req).await,
        (&Method::GET, ["me", "settings"]) => mailbox::me_settings(app, user, None).await,
        (&Method::PUT, ["me", "settings"]) => mailbox::put_me_settings(app, user, req).await,
        (&Method::GET, ["mailbox"]) => mailbox::get(app, user).await,
        (&Method::PUT, ["mailbox"]) => mailbox::put(app, user, req).await,
        (&Method::DELETE, ["mailbox"]) => mailbox::delete(app, user).await,
        // Webhooks (real time; the live stream is `/api/v1/events`, above).
        (&Method::POST, ["webhooks"]) => webhooks::create(app, user, req).await,
        (&Method::GET, ["webhooks"]) => webhooks::list(app, user).await,
        (&Method::DELETE, ["webhooks", id]) => webhooks::delete(app, user, id).await,
        (&Method::GET, ["webhooks", id, "deliveries"]) => webhooks::deliveries(app, user, id).await,
        (&Method::POST, ["webhooks", id, "deliveries", delivery, "retry"]) => {
            webhooks::retry(app, user, id, delivery).await
        }
        // Insights: the caller's action cards, scores, the best time to send.
        (&Method::GET, ["insights"]) => insights::list(app, user).await,
        (&Method::GET, ["insights", "send-time"]) => insights::send_time(app, user, &query).await,
        (&Method::GET, ["insights", "contacts", address]) => {
            insights::contact(app, user, address).await
        }
        (&Method::GET, ["insights", "emails", id]) => insights::email(app, user, id).await,
        (&Method::POST, ["insights", id, "dismiss"]) => insights::dismiss(app, user, id).await,
        (&Method::POST, ["insights", id, "snooze"]) => insights::snooze(app, user, id, req).await,
        (_, ["insights", _, "dismiss" | "snooze"]) => insights::wrong_method(&method, rest, "POST"),
        (_, ["insights", ..]) => insights::wrong_method(&method, rest, "GET"),
        (_, segs) if allowed_methods(segs).is_some() => method_not_allowed(
            allowed_methods(segs).unwrap_or(""),
            format!("{method} is not allowed on /api/v1/{rest}"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such endpoint: /api/v1/{rest}"),
        ),
    }
}

/// The methods each API path answers (its `Allow` header), `None` for a path
/// that is not an endpoint. Every path of the `match` in [`api`] is here.
pub fn allowed_methods(segs: &[&str]) -> Option<&'static str> {
    Some(match segs {
        ["users"] => "GET, POST",
        ["users", _] => "PATCH",
        ["users", _, "token"] => "POST",
        ["settings"] => "GET, PUT",
        ["emails"] => "GET, POST",
        ["emails", _] => "GET",
        ["emails", _, "schedule" | "reminder"] => "PUT, DELETE",
        ["stats"] => "GET",
        ["contacts", "import"] => "POST",
        ["contacts", _] => "GET, PUT, DELETE",
        ["subjects", _] => "GET, DELETE",
        ["audit"] => "GET",
        ["activities"] => "GET, POST",
        ["activities", _] => "GET, DELETE",
        ["activities", _, "regarding"] => "PUT",
        ["capture"] => "GET",
        ["capture", "track"] => "POST",
        ["compose", "follow"] => "POST",
        ["me", "settings"] => "GET, PUT",
        ["mailbox"] => "GET, PUT, DELETE",
        ["webhooks"] => "GET, POST",
        ["webhooks", _] => "DELETE",
        ["webhooks", _, "deliveries"] => "GET",
        ["webhooks", _, "deliveries", _, "retry"] => "POST",
        _ => return None,
    })
}

/// `/api/v1/events`: authenticated like every API call, then streamed.
async fn events_stream(app: &App, req: Request<Incoming>) -> Response<Body> {
    let user = match authenticate(app, &req).await {
        Ok(u) => u,
        Err(r) => return response::boxed(r),
    };
    let query: Query = request::parse_query(req.uri().query().unwrap_or(""));
    events::stream(app, &user, req, &query).await
}

/// The caller, from `Authorization: Bearer <token>`; else the 401 (or 503) to
/// answer.
pub(crate) async fn authenticate(app: &App, req: &Request<Incoming>) -> Result<User, Resp> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let unauthorized = |m: String| error(StatusCode::UNAUTHORIZED, "unauthorized", m);
    match auth::authenticate(app, header).await {
        Ok(u) => Ok(u),
        Err(AuthError::Missing) => Err(unauthorized("missing Authorization: Bearer token".into())),
        Err(AuthError::Invalid) => Err(unauthorized("invalid bearer token".into())),
        Err(AuthError::Disabled) => Err(unauthorized("this account is disabled".into())),
        Err(AuthError::Store(e)) => Err(store_failed(StoreError::Backend(e))),
        Err(AuthError::Rejected(why)) => Err(unauthorized(why)),
        // Its own code, so the pane can tell the user whom to ask.
        Err(AuthError::NotProvisioned(name)) => Err(error(
            StatusCode::UNAUTHORIZED,
            "not_provisioned",
            format!("{name} has no mailbeacon account; ask an administrator to create it"),
        )),
    }
}

/// 403 unless the caller is an admin.
fn require_admin(user: &User) -> Result<(), Resp> {
    if user.role == Role::Admin {
        Ok(())
    } else {
        Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this endpoint needs an admin token".into(),
        ))
    }
}

/// The metrics listener's one route: `GET`/`HEAD /metrics`.
pub fn metrics_only<B>(app: &App, req: &Request<B>) -> Resp {
    match (req.uri().path(), req.method()) {
        ("/metrics", &Method::GET | &Method::HEAD) => metrics_response(app),
        ("/metrics", m) => method_not_allowed("GET, HEAD", format!("{m} is not allowed here")),
        _ => not_found(),
    }
}

fn metrics_response(app: &App) -> Resp {
    let stats = &app.recorder.stats;
    let store = app.store.stats();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let text = metrics::render(&metrics::Gauges {
        store: app.store.kind(),
        events_recorded: get(&stats.events),
        event_failures: get(&stats.failures),
        batches: get(&stats.batches),
        spool_events: app.store.spool_events(),
        degraded: app.store.degraded(),
        store_errors: store.errors,
        derived_events: store.derived_events,
        derive_lag_ms: store.derive_lag_ms,
    });
    let streams = app.realtime.hub().map_or(0, |h| h.listeners());
    let text = text + &crate::realtime::metrics_text(streams, get(&stats.notify_dropped));
    let mut r = Response::new(Full::new(Bytes::from(text)));
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::split_first;

    #[test]
    fn paths_split_at_the_first_segment() {
        assert_eq!(split_first("/o/abc.gif"), ("o", Some("abc.gif")));
        assert_eq!(split_first("/c/t/d/e"), ("c", Some("t/d/e")));
        assert_eq!(split_first("/healthz"), ("healthz", None));
        assert_eq!(split_first("/healthz/"), ("healthz", Some("")));
        assert_eq!(split_first("/addin/"), ("addin", Some("")));
        assert_eq!(split_first("//o/x"), ("", Some("o/x")));
        assert_eq!(split_first("/"), ("", None));
    }
}
