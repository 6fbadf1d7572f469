//! Tracked emails (Email Activities) and Auto Capture: track the email being
//! read (`POST /api/v1/activities`), its status by Message-ID, the list, one
//! activity, untrack, its "regarding" record; the untracked emails with a
//! contact, read live from the user's mailbox (`GET /api/v1/capture`), and
//! tracking one of them (`POST /api/v1/capture/track`).
//!
//! Permissions: an activity is visible to its owner and to admins; anyone else
//! gets 404, as if it did not exist. Tracking is per user: deduplication by
//! Message-ID, the Message-ID status and the reply's parent look only at the
//! caller's own activities, so one user's tracking never blocks a colleague's
//! (each gets their own activity) and nobody learns by Message-ID whether
//! someone else tracks a message. Auto Capture honours the organization's
//! switch and the user's own, and writes nothing until the user tracks an email
//! (see `mailbox`).

// Helpers return the error response itself; it is built once per failed
// request, so its size does not matter.
#![allow(clippy::result_large_err)]

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::request::{decode_mime, page_cursor, page_limit, read_json, Query};
use super::response::{
    bad, error, json_response, mailbox_failed, mailbox_not_connected, store_failed, Resp,
};
use crate::addin::activities::{self, Parsed};
use crate::addin::mailbox::{self, MailboxError};
use crate::address::normalize_address;
use crate::ids::{id_from_text, id_to_text, now_ms, random_id};
use crate::model::{Activity, MailboxConfig, Regarding, UserSettings};
use crate::model::{Role, User};
use crate::state::App;
use crate::store::addin::Inserted;

const DAY_MS: u64 = 86_400_000;

/// `GET /api/v1/activities`: by `message_id`, else the caller's list.
pub async fn get_list(app: &App, user: &User, query: &Query) -> Resp {
    match query.get("message_id") {
        Some(m) => status_by_message_id(app, user, m).await,
        None => list(app, user, query).await,
    }
}

/// `GET /api/v1/activities/{id}`.
pub async fn get(app: &App, user: &User, id: &str) -> Resp {
    match visible(app, user, id).await {
        Ok(a) => json_response(StatusCode::OK, &activities::to_json(&a, true)),
        Err(r) => r,
    }
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrackRequest {
    mime: String,
    #[serde(default)]
    regarding: Option<Regarding>,
}

pub async fn track(app: &App, user: &User, req: Request<Incoming>) -> Resp {
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
    // Tracked already by this user: answer their activity, write nothing.
    // (Deduplication is per user: a colleague tracking the same message gets
    // their own activity, and neither learns of the other's.)
    match app
        .store
        .activity_by_message_id(user.id, parsed.message_id.clone())
        .await
    {
        Ok(Some(a)) => return existing(user, &a),
        Ok(None) => {}
        Err(e) => return store_failed(e),
    }
    let mut reply_to = None;
    let mut inherited = None;
    // A parent is only ever one of the caller's own activities (the lookup is
    // per owner; `may_see` keeps that true whatever the store answers).
    for p in &parsed.parents {
        match app.store.activity_by_message_id(user.id, p.clone()).await {
            Ok(Some(parent)) if may_see(user, &parent) => {
                reply_to = Some(parent.id);
                inherited = parent.regarding.clone();
                break;
            }
            Ok(_) => {}
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

/// The answer for a message the caller already tracks: their activity.
fn existing(user: &User, a: &Activity) -> Resp {
    if may_see(user, a) {
        let mut v = activities::to_json(a, false);
        v["tracked"] = json!(true);
        v["existing"] = json!(true);
        json_response(StatusCode::OK, &v)
    } else {
        // Unreachable with per-owner deduplication; never reveal it anyway.
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store is unavailable; try again".into(),
        )
    }
}

async fn status_by_message_id(app: &App, user: &User, m: &str) -> Resp {
    let Some(mid) = activities::normalize_message_id(m) else {
        return bad("invalid_message_id", "message_id must be a Message-ID");
    };
    // The caller's own tracking only: whether a colleague tracks the same
    // message is not said to anyone (admins included; they reach any
    // activity by its id).
    match app.store.activity_by_message_id(user.id, mid.clone()).await {
        Ok(Some(a)) if may_see(user, &a) => json_response(
            StatusCode::OK,
            &json!({"message_id": mid, "tracked": true, "tracked_by_you": true,
                    "activity": activities::to_json(&a, false)}),
        ),
        Ok(_) => json_response(
            StatusCode::OK,
            &json!({"message_id": mid, "tracked": false, "activity": null}),
        ),
        Err(e) => store_failed(e),
    }
}

/// The caller's activities, newest first, `limit` (1..=500, default 100) a
/// page; `next` is the `before` cursor of the following page (`null` at the end).
async fn list(app: &App, user: &User, q: &Query) -> Resp {
    let limit = match q.get("limit") {
        None => 100,
        Some(_) => match page_limit(q) {
            Ok(l) => l,
            Err(r) => return r,
        },
    };
    let before = match page_cursor(q) {
        Ok(b) => b,
        Err(r) => return r,
    };
    match app.store.list_activities(user.id, before, limit).await {
        Ok(list) => {
            let next = (list.len() == limit)
                .then(|| {
                    list.last()
                        .map(|a| format!("{}-{}", a.created_ms, id_to_text(a.id)))
                })
                .flatten();
            let items: Vec<Value> = list.iter().map(|a| activities::to_json(a, false)).collect();
            json_response(StatusCode::OK, &json!({"activities": items, "next": next}))
        }
        Err(e) => store_failed(e),
    }
}

pub async fn untrack(app: &App, user: &User, id: &str) -> Resp {
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

pub async fn set_regarding(app: &App, user: &User, id: &str, req: Request<Incoming>) -> Resp {
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

/// Where the user's mailbox may be reached (the outbound policy) and what its
/// TLS trusts.
fn reach(app: &App) -> mailbox::Reach<'_> {
    mailbox::Reach {
        policy: &app.config.outbound,
        roots: &app.imap_roots,
    }
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
        Ok(None) => Err(mailbox_not_connected()),
        Err(e) => Err(store_failed(e)),
    }
}

pub async fn capture_list(app: &App, user: &User, q: &Query) -> Resp {
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
            .tracked_message_ids(user.id, ids.clone())
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
    match mailbox::list_with(&cfg, &reach(app), &contact, since, limit, keep).await {
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
        // Includes the store failing during the listing (503 `store_unavailable`).
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

pub async fn capture_track(app: &App, user: &User, req: Request<Incoming>) -> Resp {
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
    match mailbox::fetch(
        &cfg,
        &reach(app),
        &b.folder,
        b.uid,
        app.config.max_body_bytes,
    )
    .await
    {
        Ok(raw) => track_raw(app, user, raw, b.regarding, "capture").await,
        Err(e) => mailbox_failed(e),
    }
}
