//! Followed emails: follow one (`POST /api/v1/emails`, through `follow`), list them, one email's
//! engagement, and totals (`GET /api/v1/stats`). A user sees their own emails;
//! another user's email answers 404 (its existence is not revealed).

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::request::{page_cursor, page_limit, read_json, Query};
use super::response::{bad, error, follow_failed, json_response, store_failed, Resp};
use crate::follow::{self, Deliver, FollowInput};
use crate::ids::{id_from_text, id_to_text, now_ms, rfc3339};
use crate::insights::series;
use crate::model::{EmailRecord, Role, User};
use crate::outbox;
use crate::prepare::AttachmentMode;
use crate::reports;
use crate::state::App;

const DAY_MS: u64 = 86_400_000;

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
    /// With `deliver: "smtp"`: send the copies then (RFC 3339).
    #[serde(default)]
    send_at: Option<String>,
    #[serde(default)]
    reminder: Option<outbox::reminder::ReminderInput>,
    /// "keep" (the default) or "link": attachments become tracked download
    /// links in each followed recipient's copy.
    #[serde(default)]
    attachments: Option<String>,
}

/// `POST /api/v1/emails`: checks the request's own fields, then the
/// follow use case does the rest.
pub async fn follow(app: &App, user: &User, req: Request<Incoming>) -> Resp {
    let body: FollowRequest = match read_json(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(t) = &body.template {
        let n = t.chars().count();
        if n == 0 || n > 100 || t.chars().any(char::is_control) {
            return bad(
                "invalid_template",
                "template must be 1 to 100 characters without control characters",
            );
        }
    }
    let deliver = match body.deliver.as_deref() {
        None => Deliver::Return,
        Some(name) => match Deliver::from_name(name) {
            Some(d) => d,
            None => {
                return bad(
                    "invalid_deliver",
                    format!("deliver must be \"return\" or \"smtp\", not {name:?}"),
                )
            }
        },
    };
    let attachments = match body.attachments.as_deref() {
        None | Some("keep") => AttachmentMode::Keep,
        Some("link") => AttachmentMode::Link,
        Some(other) => {
            return bad(
                "invalid_attachments",
                format!("attachments must be \"keep\" or \"link\", not {other:?}"),
            )
        }
    };
    let now = app.clock.now_ms();
    let send_at_ms = match &body.send_at {
        None => None,
        Some(_) if deliver != Deliver::Smtp => {
            return bad(
                "invalid_send_at",
                "send_at needs \"deliver\": \"smtp\" (returned copies are sent by the caller)",
            )
        }
        Some(t) => match outbox::future_time(t, now) {
            Ok(at) => Some(at),
            Err(m) => return bad("invalid_send_at", format!("send_at: {m}")),
        },
    };
    let reminder = match body
        .reminder
        .as_ref()
        .map(|r| r.check(now, app.mailer.is_some()))
        .transpose()
    {
        Ok(r) => r,
        Err(m) => return bad("invalid_reminder", m),
    };
    let input = FollowInput::Message {
        mime_base64: body.mime,
        deliver,
        template: body.template,
        send_at_ms,
        reminder,
        attachments,
    };
    let followed = match follow::follow(app, user, input).await {
        Ok(f) => f,
        Err(e) => return follow_failed(e),
    };
    let out: Vec<Value> = followed
        .recipients
        .into_iter()
        .map(|o| {
            let r = o.recipient;
            let mut item = json!({
                "address": r.address,
                "field": r.field,
                "followed": r.followed,
            });
            if let Some(reason) = &r.reason {
                item["reason"] = json!(reason);
            }
            if let Some(copy) = &o.copy {
                item["mime"] = json!(STANDARD.encode(copy));
            }
            if let Some(d) = &r.delivery {
                item["delivery"] = reports::delivery_json(d);
            }
            item
        })
        .collect();
    let mut answer = json!({"id": id_to_text(followed.id), "recipients": out});
    if let Some(s) = followed.schedule {
        answer["state"] = json!(s.state);
        answer["send_at"] = json!(s.send_at_ms.map(rfc3339));
        answer["reminder"] = json!(s.reminder.as_ref().map(reports::reminder_json));
    }
    json_response(StatusCode::CREATED, &answer)
}

/// Whose emails a listing covers: the caller's (`Some(id)`), or with `all=true`
/// everyone's (`None`, admins only: 403 otherwise).
fn owner_scope(user: &User, q: &Query) -> Result<Option<u64>, Resp> {
    let all = match q.get("all").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_all",
                "all must be true or false".into(),
            ))
        }
    };
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
    let before = match page_cursor(q) {
        Ok(b) => b,
        Err(r) => return r,
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
/// Emails whose events `stats` reads at once.
const STATS_READ_AT_ONCE: usize = 64;

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
    let now = now_ms();
    let since = now.saturating_sub(days * DAY_MS);
    // `interval=day|week`: the totals per fixed UTC bucket too (`series`), over at
    // most the last `MAX_BUCKETS` buckets of the period (`series_since` says).
    let mut series = match q.get("interval").map(|i| series::Interval::parse(i)) {
        None => None,
        Some(Some(i)) => Some(series::Series::new(
            i,
            series::first_bucket(i, since, now),
            now,
        )),
        Some(None) => return bad("invalid_interval", "interval must be \"day\" or \"week\""),
    };
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
        // The page's emails in the period, up to the cap; their events read
        // `STATS_READ_AT_ONCE` emails at a time (one barrier on Redis per
        // chunk, not one per email; the chunk bounds the events held at once).
        let mut counted: Vec<&EmailRecord> = Vec::new();
        let mut done = false;
        for rec in &page {
            if rec.created_ms < since {
                done = true;
                break;
            }
            if total.emails as usize + counted.len() >= STATS_MAX_EMAILS {
                truncated = true;
                done = true;
                break;
            }
            counted.push(rec);
        }
        for chunk in counted.chunks(STATS_READ_AT_ONCE) {
            let ids: Vec<u64> = chunk.iter().map(|r| r.id).collect();
            let all_events = match app.store.events_for_many(&ids).await {
                Ok(e) => e,
                Err(e) => return store_failed(e),
            };
            // Recipients who replied (the reply watcher's facts), for the series.
            let replies = match series {
                None => Vec::new(),
                Some(_) => match app.store.replies_for_many(&ids).await {
                    Ok(r) => r,
                    Err(e) => return store_failed(e),
                },
            };
            for (i, (rec, events)) in chunk.iter().copied().zip(all_events).enumerate() {
                let one = reports::Totals::of_email(rec, &events, h);
                if let Some(s) = series.as_mut() {
                    let (sent, delivered) = series::delivery_counts(rec);
                    let replied = replies
                        .get(i)
                        .map(|r| {
                            r.iter()
                                .map(|r| r.recipient)
                                .collect::<std::collections::HashSet<_>>()
                                .len() as u64
                        })
                        .unwrap_or(0);
                    let point = series::Point {
                        totals: one.clone(),
                        sent,
                        delivered,
                        replied,
                    };
                    s.add(rec.created_ms, rec.template.as_deref(), point);
                }
                total.add(&one);
                by_template
                    .entry(rec.template.clone())
                    .or_default()
                    .add(&one);
                oldest = Some(rec.created_ms);
            }
        }
        if done {
            break 'pages;
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
    if let Some(s) = &series {
        out["interval"] = json!(s.interval().as_str());
        out["series_since"] = json!(rfc3339(s.first()));
        out["series"] = s.overall_json();
    }
    out["truncated"] = json!(truncated);
    out["oldest_counted"] = json!(oldest.map(rfc3339));
    out["templates"] = Value::Array(
        templates
            .into_iter()
            .enumerate()
            .map(|(i, (name, t))| {
                let mut v = t.json();
                // The series of the most used templates (bounded answer).
                if let Some(s) = series.as_ref().filter(|_| i < series::MAX_TEMPLATES) {
                    v["series"] = s.template_json(name.as_deref());
                }
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
    let replies = match app.store.replies_for(id).await {
        Ok(r) => r,
        Err(e) => return store_failed(e),
    };
    // Folded chunk by chunk: the report holds a few dozen bytes per event.
    let mut digest = reports::Digest::new(&rec, &app.config.heuristics);
    match app.store.events_chunked(id, |c| digest.add(&c)).await {
        Ok(()) => json_response(StatusCode::OK, &digest.report(&replies)),
        Err(e) => store_failed(e),
    }
}
