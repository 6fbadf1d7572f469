//! The Outlook add-in's side of the server: the task pane's static files under
//! `/addin/` (embedded in the binary) and the add-in API under `/api/v1/`:
//! tracked emails (`activities`), follow from compose (`compose/follow`), the
//! user's own settings (`me/settings`), the connected mailbox (`mailbox`) and
//! Auto Capture (`capture`).
//!
//! Permissions: an activity is visible to its owner and to admins; anyone else
//! gets 404, as if it did not exist. Auto Capture honours the organization's
//! switch and the user's own, and writes nothing until the user tracks an email
//! (see `mailbox`).

// Helpers return the error response itself (as `api` does); it is built once
// per failed request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{normalize_address, read_json, store_failed};
use super::{error, json_response, Resp};
use crate::activities::{self, Parsed};
use crate::config::EntraPane;
use crate::follow::{self, Plan};
use crate::ids::{id_from_text, id_to_text, now_ms, random_id};
use crate::mailbox::{self, MailboxError};
use crate::prepare::{Draft, ErrorKind, Limits};
use crate::state::App;
use crate::store::addin::{
    Activity, Inserted, MailboxConfig, MailboxSecret, Regarding, UserSettings,
};
use crate::store::{Role, User};

const DAY_MS: u64 = 86_400_000;

/// Returns true if and only if `/api/v1/{first}/…` is served here.
pub fn owns(first: &str) -> bool {
    matches!(
        first,
        "activities" | "capture" | "mailbox" | "me" | "compose"
    )
}

pub async fn api(
    app: &App,
    user: &User,
    req: Request<Incoming>,
    segs: &[&str],
    query: &HashMap<String, String>,
) -> Resp {
    let method = req.method().clone();
    match (&method, segs) {
        (&Method::POST, ["activities"]) => track(app, user, req).await,
        (&Method::GET, ["activities"]) => match query.get("message_id") {
            Some(m) => status_by_message_id(app, user, m).await,
            None => list(app, user).await,
        },
        (&Method::GET, ["activities", id]) => match visible(app, user, id).await {
            Ok(a) => json_response(StatusCode::OK, &activities::to_json(&a, true)),
            Err(r) => r,
        },
        (&Method::DELETE, ["activities", id]) => untrack(app, user, id).await,
        (&Method::PUT, ["activities", id, "regarding"]) => set_regarding(app, user, id, req).await,
        (&Method::POST, ["compose", "follow"]) => compose_follow(app, user, req).await,
        (&Method::GET, ["me", "settings"]) => me_settings(app, user, None).await,
        (&Method::PUT, ["me", "settings"]) => {
            match read_json::<UserSettingsPatch>(app, req).await {
                Ok(p) => me_settings(app, user, Some(p)).await,
                Err(r) => r,
            }
        }
        (&Method::GET, ["mailbox"]) => match app.store.mailbox(user.id).await {
            Ok(Some(m)) => json_response(StatusCode::OK, &mailbox_json(&m)),
            Ok(None) => not_connected(),
            Err(e) => store_failed(e),
        },
        (&Method::PUT, ["mailbox"]) => put_mailbox(app, user, req).await,
        (&Method::DELETE, ["mailbox"]) => match app.store.delete_mailbox(user.id).await {
            Ok(true) => json_response(StatusCode::OK, &json!({"connected": false})),
            Ok(false) => not_connected(),
            Err(e) => store_failed(e),
        },
        (&Method::GET, ["capture"]) => capture_list(app, user, query).await,
        (&Method::POST, ["capture", "track"]) => capture_track(app, user, req).await,
        (
            _,
            ["activities"]
            | ["activities", _]
            | ["activities", _, "regarding"]
            | ["compose", "follow"]
            | ["me", "settings"]
            | ["mailbox"]
            | ["capture"]
            | ["capture", "track"],
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on /api/v1/{}", segs.join("/")),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such endpoint: /api/v1/{}", segs.join("/")),
        ),
    }
}

fn bad(code: &str, message: impl Into<String>) -> Resp {
    error(StatusCode::BAD_REQUEST, code, message.into())
}

fn not_connected() -> Resp {
    error(
        StatusCode::CONFLICT,
        "mailbox_not_connected",
        "no mailbox is connected: connect one with PUT /api/v1/mailbox".into(),
    )
}

fn activity_not_found(id: &str) -> Resp {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no activity with id {id:?}"),
    )
}

fn may_see(user: &User, a: &Activity) -> bool {
    a.owner == user.id || user.role == Role::Admin
}

/// The activity `id` if `user` may see it; else the 404 to answer.
async fn visible(app: &App, user: &User, id: &str) -> Result<Activity, Resp> {
    let Some(n) = id_from_text(id) else {
        return Err(activity_not_found(id));
    };
    match app.store.get_activity(n).await {
        Ok(Some(a)) if may_see(user, &a) => Ok(a),
        Ok(_) => Err(activity_not_found(id)),
        Err(e) => Err(store_failed(e)),
    }
}

fn validate_regarding(r: &Regarding) -> Result<(), Resp> {
    let ok = |s: &str, max: usize| {
        !s.trim().is_empty() && s.len() <= max && !s.chars().any(char::is_control)
    };
    if ok(&r.kind, 64) && ok(&r.id, 256) {
        Ok(())
    } else {
        Err(bad(
            "invalid_regarding",
            "regarding needs a non-empty \"type\" (at most 64 characters) and \"id\" (at most 256)",
        ))
    }
}

fn decode_mime(b64: &str) -> Result<Vec<u8>, Resp> {
    let cleaned: Vec<u8> = b64.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    match STANDARD.decode(&cleaned) {
        Ok(r) if !r.is_empty() => Ok(r),
        _ => Err(bad(
            "invalid_mime",
            "mime must be a non-empty base64 RFC 5322 message",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrackRequest {
    mime: String,
    #[serde(default)]
    regarding: Option<Regarding>,
}

async fn track(app: &App, user: &User, req: Request<Incoming>) -> Resp {
    let body: TrackRequest = match read_json(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let raw = match decode_mime(&body.mime) {
        Ok(r) => r,
        Err(r) => return r,
    };
    track_raw(app, user, raw, body.regarding, "addin").await
}

/// Parses, deduplicates, links and stores one tracked email.
async fn track_raw(
    app: &App,
    user: &User,
    raw: Vec<u8>,
    regarding: Option<Regarding>,
    source: &str,
) -> Resp {
    if let Some(r) = &regarding {
        if let Err(resp) = validate_regarding(r) {
            return resp;
        }
    }
    let parsed: Parsed = match tokio::task::spawn_blocking(move || activities::parse(&raw)).await {
        Ok(Ok(p)) => p,
        Ok(Err(m)) => return bad("malformed_mime", m),
        Err(_) => return bad("malformed_mime", "the message could not be parsed"),
    };
    // Tracked already (by anyone): answer the existing activity, write nothing.
    match app
        .store
        .activity_by_message_id(parsed.message_id.clone())
        .await
    {
        Ok(Some(a)) => return existing(user, &a),
        Ok(None) => {}
        Err(e) => return store_failed(e),
    }
    let mut reply_to = None;
    let mut inherited = None;
    for p in &parsed.parents {
        match app.store.activity_by_message_id(p.clone()).await {
            Ok(Some(parent)) => {
                reply_to = Some(parent.id);
                inherited = parent.regarding.clone();
                break;
            }
            Ok(None) => {}
            Err(e) => return store_failed(e),
        }
    }
    let email_id = match parsed
        .personal
        .body_html
        .as_deref()
        .and_then(|h| activities::followed_email_in(h, &app.config.public_url, &app.keys()))
    {
        Some(id) => match app.store.get_email(id).await {
            Ok(Some(e)) if e.owner == user.id || user.role == Role::Admin => Some(id),
            Ok(_) => None,
            Err(e) => return store_failed(e),
        },
        None => None,
    };
    let created_ms = now_ms();
    let activity = Activity {
        id: random_id(),
        owner: user.id,
        direction: activities::direction(&parsed, &user.email).into(),
        message_id: parsed.message_id,
        conversation: parsed.conversation,
        reply_to,
        regarding: regarding.or(inherited),
        email_id,
        source: source.into(),
        sent_ms: parsed.sent_ms,
        created_ms,
        expires_ms: created_ms + u64::from(app.settings().retention_days) * DAY_MS,
        personal: parsed.personal,
        sealed: None,
        lookups: Vec::new(),
    };
    match app.store.insert_activity(activity.clone()).await {
        Ok(Inserted::New) => {
            let mut v = activities::to_json(&activity, false);
            v["tracked"] = json!(true);
            json_response(StatusCode::CREATED, &v)
        }
        // Lost a race with a concurrent track of the same message.
        Ok(Inserted::Existing(a)) => existing(user, &a),
        Err(e) => store_failed(e),
    }
}

/// The answer for a message that is already tracked: the activity if the
/// caller may see it, else only that it is tracked (by someone else).
fn existing(user: &User, a: &Activity) -> Resp {
    if may_see(user, a) {
        let mut v = activities::to_json(a, false);
        v["tracked"] = json!(true);
        v["existing"] = json!(true);
        json_response(StatusCode::OK, &v)
    } else {
        json_response(
            StatusCode::OK,
            &json!({"tracked": true, "existing": true, "tracked_by_you": false, "id": null}),
        )
    }
}

async fn status_by_message_id(app: &App, user: &User, m: &str) -> Resp {
    let Some(mid) = activities::normalize_message_id(m) else {
        return bad("invalid_message_id", "message_id must be a Message-ID");
    };
    match app.store.activity_by_message_id(mid.clone()).await {
        Ok(Some(a)) if may_see(user, &a) => json_response(
            StatusCode::OK,
            &json!({"message_id": mid, "tracked": true, "tracked_by_you": a.owner == user.id,
                    "activity": activities::to_json(&a, false)}),
        ),
        Ok(Some(_)) => json_response(
            StatusCode::OK,
            &json!({"message_id": mid, "tracked": true, "tracked_by_you": false, "activity": null}),
        ),
        Ok(None) => json_response(
            StatusCode::OK,
            &json!({"message_id": mid, "tracked": false, "activity": null}),
        ),
        Err(e) => store_failed(e),
    }
}

async fn list(app: &App, user: &User) -> Resp {
    match app.store.list_activities(user.id, 100).await {
        Ok(list) => {
            let items: Vec<Value> = list.iter().map(|a| activities::to_json(a, false)).collect();
            json_response(StatusCode::OK, &json!({"activities": items}))
        }
        Err(e) => store_failed(e),
    }
}

async fn untrack(app: &App, user: &User, id: &str) -> Resp {
    let a = match visible(app, user, id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    match app.store.delete_activity(a.id).await {
        Ok(_) => json_response(
            StatusCode::OK,
            &json!({"id": id_to_text(a.id), "message_id": a.message_id, "tracked": false}),
        ),
        Err(e) => store_failed(e),
    }
}

async fn set_regarding(app: &App, user: &User, id: &str, req: Request<Incoming>) -> Resp {
    let mut a = match visible(app, user, id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    // `null` clears the regarding record.
    let body: Option<Regarding> = match read_json(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(r) = &body {
        if let Err(resp) = validate_regarding(r) {
            return resp;
        }
    }
    a.regarding = body;
    match app.store.update_activity(a.clone()).await {
        Ok(()) => json_response(StatusCode::OK, &activities::to_json(&a, false)),
        Err(crate::store::StoreError::Conflict(_)) => activity_not_found(id),
        Err(e) => store_failed(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComposeFollow {
    html: String,
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    cc: Vec<String>,
    #[serde(default)]
    bcc: Vec<String>,
    #[serde(default)]
    subject: Option<String>,
}

/// Follow from compose: Outlook sends one copy to everyone, so this is
/// message-level tracking: one pixel and one set of links for the whole
/// message, reported under the single recipient "recipient unknown".
async fn compose_follow(app: &App, user: &User, req: Request<Incoming>) -> Resp {
    let body: ComposeFollow = match read_json(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !app.settings().email_engagement {
        return error(
            StatusCode::FORBIDDEN,
            "engagement_disabled",
            "Email Engagement is switched off for this organization: emails cannot be followed"
                .into(),
        );
    }
    if body.html.trim().is_empty() {
        return bad("invalid_html", "html must be the draft's HTML body");
    }
    let mut rcpts = Vec::new();
    for a in body.to.iter().chain(&body.cc).chain(&body.bcc) {
        match normalize_address(a) {
            Some(n) => rcpts.push(n),
            None => return bad("invalid_email", format!("{a:?} is not an email address")),
        }
    }
    if rcpts.is_empty() {
        return bad(
            "no_recipients",
            "add at least one recipient before following the email",
        );
    }
    if !user.email.contains('@') {
        return bad(
            "no_sender",
            "this account has no email address to send as; use a user account",
        );
    }
    let subject: String = body
        .subject
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    // One HTML part, base64 so any line length and character survives. One
    // recipient stands in for all: tracking is per message, so who receives it
    // does not shape the result (and one copy is rendered, once).
    let mime = format!(
        "From: {}\r\nTo: {}\r\nSubject: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        user.email,
        rcpts[0],
        subject,
        STANDARD.encode(body.html.as_bytes())
    );
    let prefix = format!("{}/c/", app.config.public_url);
    let parsed = tokio::task::spawn_blocking(move || {
        Draft::parse(mime.as_bytes(), &prefix, &Limits::default())
    })
    .await;
    let draft = match parsed {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            let (status, code) = match e.kind {
                ErrorKind::TooManyLinks => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_links"),
                _ => (StatusCode::BAD_REQUEST, "invalid_html"),
            };
            return error(status, code, e.message);
        }
        Err(_) => return bad("invalid_html", "the draft could not be prepared"),
    };
    let created_ms = now_ms();
    let plan = Plan {
        id: random_id(),
        owner: user.id,
        created_ms,
        expires_ms: created_ms + u64::from(app.settings().retention_days) * DAY_MS,
        deliver: "outlook".into(),
        public_url: app.config.public_url.clone(),
        template: None,
        not_followed: vec![None; draft.recipients().len()],
    };
    let keys = app.keys();
    let prepared = tokio::task::spawn_blocking(move || {
        // Only the first copy (recipient index 0): its tokens stand for
        // everyone who receives Outlook's single copy.
        let mut record = follow::record(&draft, &plan);
        let copy = follow::render_copy(&draft, &keys, &plan, &follow::encoded_links(&draft), 0);
        record.recipients.truncate(1);
        if let Some(r) = record.recipients.first_mut() {
            r.address = "recipient unknown".into();
            r.name = None;
            r.field = "message".into();
            r.reason = Some("message_level_tracking".into());
        }
        (record, Some(copy))
    })
    .await;
    let Ok((record, Some(copy))) = prepared else {
        return bad("invalid_html", "the draft could not be prepared");
    };
    let html = mail_parser::MessageParser::default()
        .parse(&copy)
        .and_then(|m| m.body_html(0).map(|h| h.into_owned()));
    let Some(html) = html else {
        return bad("invalid_html", "the draft could not be prepared");
    };
    if let Err(e) = app.store.put_email(record.clone()).await {
        return store_failed(e);
    }
    json_response(
        StatusCode::CREATED,
        &json!({
            "email_id": id_to_text(record.id),
            "html": html,
            "tracking": "message",
            "links": record.links.len(),
            "note": "Outlook sends one copy to every recipient, so opens and clicks are counted for the message as a whole (\"recipient unknown\"). Send through mailbeacon (POST /api/v1/emails) for per-recipient attribution.",
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSettingsPatch {
    auto_capture: Option<bool>,
}

async fn me_settings(app: &App, user: &User, patch: Option<UserSettingsPatch>) -> Resp {
    let mut s = match app.store.user_settings(user.id).await {
        Ok(s) => s,
        Err(e) => return store_failed(e),
    };
    if let Some(p) = patch {
        if let Some(v) = p.auto_capture {
            s.auto_capture = v;
        }
        if let Err(e) = app.store.put_user_settings(user.id, s).await {
            return store_failed(e);
        }
    }
    let org = app.settings();
    let connected = match app.store.mailbox(user.id).await {
        Ok(m) => m.is_some(),
        Err(e) => return store_failed(e),
    };
    json_response(
        StatusCode::OK,
        &json!({
            "email": user.email,
            "role": user.role,
            "auto_capture": s.auto_capture,
            "organization": {
                "auto_capture": org.auto_capture,
                "email_engagement": org.email_engagement,
            },
            "auto_capture_effective": s.auto_capture && org.auto_capture,
            "mailbox_connected": connected,
        }),
    )
}

fn mailbox_json(m: &MailboxConfig) -> Value {
    // The secret is never echoed: only which kind it is.
    json!({
        "connected": true,
        "host": m.host,
        "port": m.port,
        "tls": m.tls,
        "username": m.username,
        "auth": m.secret.kind(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MailboxRequest {
    host: String,
    #[serde(default)]
    port: Option<u16>,
    tls: String,
    username: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    oauth2_token: Option<String>,
}

fn mailbox_failed(e: MailboxError) -> Resp {
    let status = match e.code {
        "mailbox_login_failed" => StatusCode::UNPROCESSABLE_ENTITY,
        "mailbox_timeout" => StatusCode::GATEWAY_TIMEOUT,
        "not_found" => StatusCode::NOT_FOUND,
        "invalid_mailbox" => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    };
    error(status, e.code, e.message)
}

async fn put_mailbox(app: &App, user: &User, req: Request<Incoming>) -> Resp {
    let b: MailboxRequest = match read_json(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let host = b.host.trim().to_string();
    if host.is_empty()
        || host.len() > 253
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "/?#@".contains(c))
    {
        return bad("invalid_mailbox", format!("{host:?} is not a host name"));
    }
    if !matches!(b.tls.as_str(), "none" | "tls" | "starttls") {
        return bad(
            "invalid_mailbox",
            format!(
                "tls must be \"none\", \"tls\" or \"starttls\", not {:?}",
                b.tls
            ),
        );
    }
    let port = b.port.unwrap_or(if b.tls == "tls" { 993 } else { 143 });
    if port == 0 {
        return bad("invalid_mailbox", "port must be 1-65535");
    }
    let clean = |s: &str| !s.is_empty() && s.len() <= 4096 && !s.chars().any(char::is_control);
    if !clean(&b.username) {
        return bad(
            "invalid_mailbox",
            "username must be a non-empty line of text",
        );
    }
    let secret = match (b.password, b.oauth2_token) {
        (Some(p), None) if clean(&p) => MailboxSecret::Password(p),
        (None, Some(t)) if clean(&t) => MailboxSecret::Xoauth2(t),
        _ => {
            return bad(
                "invalid_mailbox",
                "give exactly one of password or oauth2_token (a non-empty line of text)",
            )
        }
    };
    let cfg = MailboxConfig {
        host,
        port,
        tls: b.tls,
        username: b.username,
        updated_ms: now_ms(),
        secret,
    };
    // Only a configuration that logs in is kept.
    if let Err(e) = mailbox::check(&cfg, &app.imap_roots).await {
        return mailbox_failed(e);
    }
    if let Err(e) = app.store.put_mailbox(user.id, cfg.clone()).await {
        return store_failed(e);
    }
    json_response(StatusCode::OK, &mailbox_json(&cfg))
}

/// Checks both Auto Capture switches and returns the mailbox to use.
async fn capture_ready(app: &App, user: &User) -> Result<MailboxConfig, Resp> {
    if !app.settings().auto_capture {
        return Err(error(
            StatusCode::FORBIDDEN,
            "auto_capture_disabled",
            "Auto Capture is switched off for this organization by an administrator".into(),
        ));
    }
    match app.store.user_settings(user.id).await {
        Ok(UserSettings {
            auto_capture: false,
        }) => {
            return Err(error(
                StatusCode::FORBIDDEN,
                "auto_capture_disabled",
                "you switched Auto Capture off in your settings (PUT /api/v1/me/settings)".into(),
            ))
        }
        Ok(_) => {}
        Err(e) => return Err(store_failed(e)),
    }
    match app.store.mailbox(user.id).await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(not_connected()),
        Err(e) => Err(store_failed(e)),
    }
}

async fn capture_list(app: &App, user: &User, q: &HashMap<String, String>) -> Resp {
    let Some(contact) = q.get("contact").and_then(|c| normalize_address(c)) else {
        return bad(
            "invalid_contact",
            "contact must be the email address to list emails with",
        );
    };
    let max_days = app.config.capture_days;
    let max_limit = app.config.capture_limit;
    let days = match q.get("days").map(|d| d.parse::<u32>()) {
        None => max_days,
        Some(Ok(d)) if (1..=max_days).contains(&d) => d,
        Some(_) => return bad("invalid_days", format!("days must be 1-{max_days}")),
    };
    let limit = match q.get("limit").map(|d| d.parse::<usize>()) {
        None => max_limit,
        Some(Ok(n)) if (1..=max_limit).contains(&n) => n,
        Some(_) => return bad("invalid_limit", format!("limit must be 1-{max_limit}")),
    };
    let cfg = match capture_ready(app, user).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let since = now_ms().saturating_sub(u64::from(days) * DAY_MS);
    // Read-only store lookup: which Message-IDs are already tracked.
    let keep = |ids: Vec<String>| async move {
        let tracked = app
            .store
            .tracked_message_ids(ids.clone())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "store failed during Auto Capture");
                MailboxError {
                    code: "store_unavailable",
                    message: "the store is unavailable; try again".into(),
                }
            })?;
        Ok(tracked
            .into_iter()
            .zip(&ids)
            .map(|(t, id)| !t || id.is_empty())
            .collect())
    };
    match mailbox::list_with(&cfg, &app.imap_roots, &contact, since, limit, keep).await {
        Ok(found) => {
            let items: Vec<Value> = found
                .iter()
                .map(|c| {
                    let mut v = json!(c);
                    v["date"] = json!(crate::ids::rfc3339(c.at_ms));
                    v["direction"] = json!(match &c.from {
                        Some(f) if f.address == user.email => "outgoing",
                        _ => "incoming",
                    });
                    v
                })
                .collect();
            json_response(
                StatusCode::OK,
                &json!({"contact": contact, "days": days, "limit": limit, "emails": items}),
            )
        }
        Err(e) if e.code == "store_unavailable" => {
            error(StatusCode::SERVICE_UNAVAILABLE, e.code, e.message)
        }
        Err(e) => mailbox_failed(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureTrack {
    folder: String,
    uid: u32,
    #[serde(default)]
    regarding: Option<Regarding>,
}

async fn capture_track(app: &App, user: &User, req: Request<Incoming>) -> Resp {
    let b: CaptureTrack = match read_json(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if b.folder.is_empty() || b.folder.len() > 512 || b.folder.chars().any(char::is_control) {
        return bad("invalid_folder", "folder must be a mailbox folder name");
    }
    let cfg = match capture_ready(app, user).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match mailbox::fetch(&cfg, &app.imap_roots, &b.folder, b.uid).await {
        Ok(raw) => track_raw(app, user, raw, b.regarding, "capture").await,
        Err(e) => mailbox_failed(e),
    }
}

/// A file of the task pane, embedded in the binary.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $ct:literal) => {
        Asset {
            path: $path,
            content_type: $ct,
            body: include_bytes!(concat!("../../addin-manifest/web/", $path)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("taskpane.html", "text/html; charset=utf-8"),
    asset!("taskpane.css", "text/css; charset=utf-8"),
    asset!("taskpane.js", "text/javascript; charset=utf-8"),
    asset!("commands.html", "text/html; charset=utf-8"),
    asset!("launchevent.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("icon-16.png", "image/png"),
    asset!("icon-32.png", "image/png"),
    asset!("icon-64.png", "image/png"),
    asset!("icon-80.png", "image/png"),
    asset!("icon-128.png", "image/png"),
    asset!("icon-color-192.png", "image/png"),
    asset!("icon-outline-32.png", "image/png"),
    // Third-party code (see vendor/README.md); loaded by the pane only when
    // Entra sign-in is configured.
    asset!(
        "vendor/msal-browser-4.30.0.min.js",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "vendor/msal-browser.LICENSE.txt",
        "text/plain; charset=utf-8"
    ),
];

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
    let Some(a) = ASSETS.iter().find(|a| a.path == name) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no add-in file {name:?}"),
        );
    };
    let vendored = a.path.starts_with("vendor/");
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
pub fn pane_config(method: &Method, entra: Option<&EntraPane>) -> Resp {
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

/// The bytes of one embedded file.
pub fn asset(name: &str) -> Option<&'static [u8]> {
    ASSETS.iter().find(|a| a.path == name).map(|a| a.body)
}
