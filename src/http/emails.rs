//! Followed emails: follow one (`POST /api/v1/emails`), list them, one email's
//! engagement, and totals (`GET /api/v1/stats`). A user sees their own emails;
//! another user's email answers 404 (its existence is not revealed).

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::request::{page_limit, read_json, Query};
use super::response::{error, json_response, store_failed, Resp};
use crate::follow::{self, Plan};
use crate::ids::{id_from_text, id_to_text, now_ms, random_id, rfc3339, rfc5322};
use crate::prepare::{Draft, ErrorKind, Limits};
use crate::reports;
use crate::state::App;
use crate::store::{Delivery, FollowEmail, Role, User};
use crate::token::KeyRing;

const DAY_MS: u64 = 86_400_000;
/// Most recipients one followed email may have (each gets its own copy, and with
/// deliver "return" every copy is in the response).
pub const MAX_RECIPIENTS: usize = 1000;
/// Most bytes of copies handed back by one `deliver: "return"` request (before
/// base64, which adds a third). Copies are held in memory to build the
/// response, so a large message times many recipients must go through SMTP,
/// where each copy is rendered just before it is sent.
pub const MAX_RETURN_BYTES: usize = 48 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FollowRequest {
    mime: String,
    #[serde(default)]
    deliver: Option<String>,
    /// A template or campaign name (1–100 characters, no control characters):
    /// `GET /api/v1/stats` groups totals by it.
    #[serde(default)]
    template: Option<String>,
}

pub async fn follow(app: &App, user: &User, req: Request<Incoming>) -> Resp {
    let body: FollowRequest = match read_json(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(t) = &body.template {
        let n = t.chars().count();
        if n == 0 || n > 100 || t.chars().any(char::is_control) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_template",
                "template must be 1 to 100 characters without control characters".into(),
            );
        }
    }
    let deliver = body.deliver.clone().unwrap_or_else(|| "return".into());
    if deliver != "return" && deliver != "smtp" {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_deliver",
            format!("deliver must be \"return\" or \"smtp\", not {deliver:?}"),
        );
    }
    let settings = app.settings();
    if !settings.email_engagement {
        return error(
            StatusCode::FORBIDDEN,
            "engagement_disabled",
            "Email Engagement is switched off for this organization: emails cannot be followed"
                .into(),
        );
    }
    if deliver == "smtp" && app.mailer.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "smtp_not_configured",
            "deliver \"smtp\" needs MAILBEACON_SMTP_URL; use deliver \"return\" or configure a relay"
                .into(),
        );
    }
    let cleaned: Vec<u8> = body
        .mime
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let raw = match STANDARD.decode(&cleaned) {
        Ok(r) if !r.is_empty() => r,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_mime",
                "mime must be a non-empty base64 RFC 5322 message".into(),
            )
        }
    };
    let prefix = format!("{}/c/", app.config.public_url);
    let parsed =
        tokio::task::spawn_blocking(move || Draft::parse(&raw, &prefix, &Limits::default())).await;
    let draft = match parsed {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            let (status, code) = match e.kind {
                ErrorKind::Malformed => (StatusCode::BAD_REQUEST, "malformed_mime"),
                ErrorKind::NoRecipients => (StatusCode::BAD_REQUEST, "no_recipients"),
                ErrorKind::NoSender => (StatusCode::BAD_REQUEST, "no_sender"),
                ErrorKind::TooManyLinks => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_links"),
            };
            return error(status, code, e.message);
        }
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "malformed_mime",
                "the message could not be parsed".into(),
            )
        }
    };
    if draft.recipients().len() > MAX_RECIPIENTS {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_recipients",
            format!(
                "the message has {} recipients; at most {MAX_RECIPIENTS} can be followed in one email",
                draft.recipients().len()
            ),
        );
    }
    let from = draft
        .from()
        .map(|f| f.normalized.clone())
        .unwrap_or_default();
    if user.role != Role::Admin && from != user.email {
        return error(
            StatusCode::FORBIDDEN,
            "sender_not_allowed",
            format!(
                "you may only send as {}, but the message is from {from}",
                user.email
            ),
        );
    }
    // Copies of a message without Message-ID or Date get them here (the relay
    // takes them as submitted mail and would pass them on without).
    let mut draft = draft;
    // The sender's domain when it is a plain host name (an id-right that needs
    // no quoting); anything else gets a reserved name.
    let domain = from
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| {
            !d.is_empty()
                && d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
        .unwrap_or("mailbeacon.invalid");
    draft.add_missing_headers(
        &format!("{}.mailbeacon@{domain}", id_to_text(random_id())),
        &rfc5322(now_ms()),
    );
    let addresses: Vec<String> = draft
        .recipients()
        .iter()
        .map(|r| r.normalized.clone())
        .collect();
    let not_followed: Vec<Option<&'static str>> = match app.store.contacts(&addresses).await {
        Ok(prefs) => prefs
            .iter()
            .map(|p| {
                p.as_ref()
                    .is_some_and(|c| c.follow_email == FollowEmail::DoNotAllow)
                    .then_some("contact_opted_out")
            })
            .collect(),
        Err(e) => return store_failed(e),
    };
    let created_ms = now_ms();
    let plan = Plan {
        id: random_id(),
        owner: user.id,
        created_ms,
        expires_ms: created_ms + u64::from(settings.retention_days) * DAY_MS,
        deliver: deliver.clone(),
        public_url: app.config.public_url.clone(),
        template: body.template.clone(),
        not_followed,
    };
    let keys = app.keys();
    let mut record = follow::record(&draft, &plan);
    let links = follow::encoded_links(&draft);
    let job = Arc::new((draft, keys, plan, links));
    // "return": every copy is rendered first (off the runtime), within
    // MAX_RETURN_BYTES. "smtp": each copy is rendered just before it is sent.
    let mut returned = if deliver == "return" {
        let job = job.clone();
        let rendered = tokio::task::spawn_blocking(move || render_all(&job)).await;
        match rendered {
            Ok(Ok(copies)) => copies.into_iter(),
            Ok(Err(estimate)) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large_to_return",
                    format!(
                        "the {} copies would take about {} MiB, and at most {} MiB can be returned in one response; deliver them through SMTP (\"deliver\": \"smtp\") or follow fewer recipients per request",
                        record.recipients.len(),
                        estimate.div_ceil(1024 * 1024),
                        MAX_RETURN_BYTES / (1024 * 1024)
                    ),
                )
            }
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "malformed_mime",
                    "the message could not be prepared".into(),
                )
            }
        }
    } else {
        Vec::new().into_iter()
    };
    // The record is durable before any copy leaves: every token handed out
    // belongs to a stored email.
    if let Err(e) = app.store.put_email(record.clone()).await {
        return store_failed(e);
    }
    let mut out = Vec::with_capacity(record.recipients.len());
    for (i, r) in record.recipients.iter_mut().enumerate() {
        let mut item = json!({
            "address": r.address,
            "field": r.field,
            "followed": r.followed,
        });
        if let Some(reason) = &r.reason {
            item["reason"] = json!(reason);
        }
        let delivery = if deliver == "return" {
            item["mime"] = json!(STANDARD.encode(returned.next().unwrap_or_default()));
            Delivery {
                status: "returned".into(),
                detail: None,
                at_ms: now_ms(),
            }
        } else {
            // Checked above: deliver "smtp" implies a mailer.
            let job = job.clone();
            let copy = tokio::task::spawn_blocking(move || {
                let (draft, keys, plan, links) = &*job;
                follow::render_copy(draft, keys, plan, links, i)
            })
            .await;
            let result = match (&app.mailer, copy) {
                (Some(m), Ok(copy)) => m.send(&record.from, &r.address, &copy).await,
                (None, _) => Err("no SMTP relay configured".into()),
                (_, Err(_)) => Err("the copy could not be prepared".into()),
            };
            match result {
                Ok(()) => Delivery {
                    status: "sent".into(),
                    detail: None,
                    at_ms: now_ms(),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "SMTP delivery failed for one recipient");
                    Delivery {
                        status: "failed".into(),
                        detail: Some(e),
                        at_ms: now_ms(),
                    }
                }
            }
        };
        item["delivery"] = json!({"status": delivery.status, "detail": delivery.detail});
        r.delivery = Some(delivery);
        out.push(item);
    }
    if deliver == "smtp" {
        if let Err(e) = app.store.put_email(record.clone()).await {
            tracing::error!(error = %e, "could not store delivery results");
        }
    }
    json_response(
        StatusCode::CREATED,
        &json!({"id": id_to_text(record.id), "recipients": out}),
    )
}

type FollowJob = (Draft, Arc<KeyRing>, Plan, Vec<String>);

/// Renders every copy, or gives up with an estimate of the total size once
/// it would pass `MAX_RETURN_BYTES` (judged from the first copy, so an
/// oversized request fails before most of the work).
fn render_all(job: &FollowJob) -> Result<Vec<Vec<u8>>, usize> {
    let (draft, keys, plan, links) = job;
    let n = draft.recipients().len();
    let mut copies = Vec::with_capacity(n);
    let mut total = 0usize;
    for i in 0..n {
        let copy = follow::render_copy(draft, keys, plan, links, i);
        total += copy.len();
        let estimate = total.max(copy.len().saturating_mul(n));
        if (i == 0 && estimate > MAX_RETURN_BYTES) || total > MAX_RETURN_BYTES {
            return Err(estimate);
        }
        copies.push(copy);
    }
    Ok(copies)
}

/// Whose emails a listing covers: the caller's (`Some(id)`), or with `all=true`
/// everyone's (`None`, admins only: 403 otherwise).
fn owner_scope(user: &User, q: &Query) -> Result<Option<u64>, Resp> {
    let all = q.get("all").is_some_and(|v| v == "true" || v == "1");
    if all && user.role != Role::Admin {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "all=true needs an admin token".into(),
        ));
    }
    Ok((!all).then_some(user.id))
}

pub async fn list(app: &App, user: &User, q: &Query) -> Resp {
    let limit = match page_limit(q) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let before = match q.get("before") {
        None => None,
        Some(c) => match c
            .split_once('-')
            .and_then(|(t, id)| Some((t.parse::<u64>().ok()?, id_from_text(id)?)))
        {
            Some(b) => Some(b),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_cursor",
                    "before must be a cursor returned as \"next\" by a previous page".into(),
                )
            }
        },
    };
    let owner = match owner_scope(user, q) {
        Ok(o) => o,
        Err(r) => return r,
    };
    match app.store.list_emails(owner, before, limit).await {
        Ok(list) => {
            let next = (list.len() == limit)
                .then(|| {
                    list.last()
                        .map(|e| format!("{}-{}", e.created_ms, id_to_text(e.id)))
                })
                .flatten();
            let emails: Vec<Value> = list.iter().map(reports::summary).collect();
            json_response(StatusCode::OK, &json!({"emails": emails, "next": next}))
        }
        Err(e) => store_failed(e),
    }
}

/// Most emails one stats request reads (newest first); beyond it the answer
/// says `"truncated": true` and how far back it counted.
const STATS_MAX_EMAILS: usize = 5000;

/// Totals over the caller's emails (or, for an admin with `all=true`,
/// everyone's) created in the last `days` days (1–3650, default 30), overall
/// and per template.
pub async fn stats(app: &App, user: &User, q: &Query) -> Resp {
    let days = match q.get("days").map(|d| d.parse::<u64>()) {
        None => 30,
        Some(Ok(d)) if (1..=3650).contains(&d) => d,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_days",
                "days must be a number from 1 to 3650".into(),
            )
        }
    };
    let owner = match owner_scope(user, q) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let all = owner.is_none();
    let since = now_ms().saturating_sub(days * DAY_MS);
    let h = &app.config.heuristics;
    let mut total = reports::Totals::default();
    let mut by_template: HashMap<Option<String>, reports::Totals> = HashMap::new();
    let mut before = None;
    let mut oldest = None;
    let mut truncated = false;
    'pages: loop {
        let page = match app.store.list_emails(owner, before, 500).await {
            Ok(p) => p,
            Err(e) => return store_failed(e),
        };
        for rec in &page {
            if rec.created_ms < since {
                break 'pages;
            }
            if total.emails as usize >= STATS_MAX_EMAILS {
                truncated = true;
                break 'pages;
            }
            let events = match app.store.events_for(rec.id).await {
                Ok(e) => e,
                Err(e) => return store_failed(e),
            };
            let one = reports::Totals::of_email(rec, &events, h);
            total.add(&one);
            by_template
                .entry(rec.template.clone())
                .or_default()
                .add(&one);
            oldest = Some(rec.created_ms);
        }
        match page.last() {
            Some(last) if page.len() == 500 => before = Some((last.created_ms, last.id)),
            _ => break,
        }
    }
    let mut templates: Vec<(Option<String>, reports::Totals)> = by_template.into_iter().collect();
    templates.sort_by(|a, b| b.1.emails.cmp(&a.1.emails).then_with(|| a.0.cmp(&b.0)));
    let mut out = total.json();
    out["days"] = json!(days);
    out["since"] = json!(rfc3339(since));
    out["scope"] = json!(if all { "all" } else { "mine" });
    out["truncated"] = json!(truncated);
    out["oldest_counted"] = json!(oldest.map(rfc3339));
    out["templates"] = Value::Array(
        templates
            .into_iter()
            .map(|(name, t)| {
                let mut v = t.json();
                v["template"] = json!(name);
                v
            })
            .collect(),
    );
    json_response(StatusCode::OK, &out)
}

pub async fn get(app: &App, user: &User, id: &str) -> Resp {
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no email with id {id:?}"),
        )
    };
    let Some(id) = id_from_text(id) else {
        return not_found();
    };
    let rec = match app.store.get_email(id).await {
        Ok(Some(r)) if r.owner == user.id || user.role == Role::Admin => r,
        Ok(_) => return not_found(),
        Err(e) => return store_failed(e),
    };
    match app.store.events_for(id).await {
        Ok(events) => json_response(
            StatusCode::OK,
            &reports::engagement(&rec, &events, &app.config.heuristics),
        ),
        Err(e) => store_failed(e),
    }
}
