//! `/api/v1/webhooks`: a user's webhook subscriptions (create, list, delete),
//! their delivery log and a manual retry. Delivery itself is `realtime::webhooks`.
//!
//! A user sees and manages only their own webhooks; an admin's may say
//! `"all": true` (everyone's emails). The secret is shown once, at creation.

use std::collections::HashMap;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::request::read_json;
use super::response::{bad, error, json_response, store_failed, Resp};
use crate::ids::{id_from_text, id_to_text, now_ms, random_id, rfc3339};
use crate::model::{Role, User, Webhook};
use crate::outbound::OutboundError;
use crate::realtime::webhooks::{self, check_url, new_secret, DeliveryJob};
use crate::realtime::EventType;
use crate::state::App;
use crate::store::queue::{NewJob, Rescheduled};

/// Longest webhook URL.
const MAX_URL: usize = 2048;
/// Most webhooks per user.
const MAX_PER_USER: usize = 25;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWebhook {
    url: String,
    events: Vec<String>,
    #[serde(default)]
    include_machine: bool,
    #[serde(default)]
    all: bool,
}

/// A webhook as the API shows it (never the secret).
fn view(w: &Webhook) -> Value {
    json!({
        "id": id_to_text(w.id),
        "url": w.url,
        "events": w.events,
        "include_machine": w.include_machine,
        "all": w.all,
        "created_at": rfc3339(w.created_ms),
        "state": if w.disabled_ms.is_some() { "disabled" } else if w.failing_since_ms.is_some() { "failing" } else { "active" },
        "failing_since": w.failing_since_ms.map(rfc3339),
        "disabled_at": w.disabled_ms.map(rfc3339),
    })
}

fn not_found() -> Resp {
    error(StatusCode::NOT_FOUND, "not_found", "no such webhook".into())
}

fn target_refused(e: OutboundError) -> Resp {
    let status = match e {
        OutboundError::InvalidTarget(_) | OutboundError::InvalidRequest(_) => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    error(status, e.code(), e.to_string())
}

pub async fn create(app: &App, user: &User, req: Request<Incoming>) -> Resp {
    let body: NewWebhook = match read_json(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body.url.is_empty() || body.url.len() > MAX_URL {
        return bad("invalid_target", format!("url: 1 to {MAX_URL} bytes"));
    }
    if body.events.is_empty() || body.events.len() > EventType::ALL.len() {
        return bad("invalid_events", "events: one or more event types");
    }
    let mut events = Vec::new();
    for t in &body.events {
        match EventType::parse(t) {
            Some(t) if !events.contains(&t.as_str().to_owned()) => events.push(t.as_str().into()),
            Some(_) => {}
            None => {
                return bad(
                    "invalid_events",
                    format!(
                        "unknown event type {t:?}; known: {}",
                        EventType::ALL.map(|t| t.as_str()).join(", ")
                    ),
                )
            }
        }
    }
    if body.all && user.role != Role::Admin {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "\"all\": true (everyone's emails) needs an admin token".into(),
        );
    }
    if let Err(e) = check_url(&app.config.outbound, &body.url).await {
        return target_refused(e);
    }
    let existing = match app.store.webhooks().await {
        Ok(l) => l,
        Err(e) => return store_failed(e),
    };
    if existing.iter().filter(|w| w.owner == user.id).count() >= MAX_PER_USER {
        return error(
            StatusCode::CONFLICT,
            "too_many_webhooks",
            format!("at most {MAX_PER_USER} webhooks per user"),
        );
    }
    let hook = Webhook {
        id: random_id(),
        owner: user.id,
        url: body.url,
        secret: new_secret(),
        events,
        include_machine: body.include_machine,
        all: body.all,
        created_ms: now_ms(),
        failing_since_ms: None,
        disabled_ms: None,
    };
    if let Err(e) = app.store.put_webhook(hook.clone()).await {
        return store_failed(e);
    }
    app.realtime.webhooks_changed();
    let mut v = view(&hook);
    v["secret"] = json!(hook.secret);
    json_response(StatusCode::CREATED, &v)
}

pub async fn list(app: &App, user: &User) -> Resp {
    match app.store.webhooks().await {
        Ok(l) => {
            let mine: Vec<Value> = l.iter().filter(|w| w.owner == user.id).map(view).collect();
            json_response(StatusCode::OK, &json!({ "webhooks": mine }))
        }
        Err(e) => store_failed(e),
    }
}

/// The caller's webhook `id`, or the 404 to answer.
async fn own(app: &App, user: &User, id: &str) -> Result<Webhook, Resp> {
    let Some(id) = id_from_text(id) else {
        return Err(not_found());
    };
    match app.store.webhooks().await {
        Ok(l) => l
            .into_iter()
            .find(|w| w.id == id && w.owner == user.id)
            .ok_or_else(not_found),
        Err(e) => Err(store_failed(e)),
    }
}

pub async fn delete(app: &App, user: &User, id: &str) -> Resp {
    let hook = match own(app, user, id).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    match app.store.delete_webhook(hook.id).await {
        Ok(_) => {
            app.realtime.webhooks_changed();
            let mut r = json_response(StatusCode::NO_CONTENT, &json!({}));
            *r.body_mut() = Default::default();
            r
        }
        Err(e) => store_failed(e),
    }
}

/// Deliveries, newest first: each with its attempts, state, last status or
/// error, and next try.
pub async fn deliveries(app: &App, user: &User, id: &str) -> Resp {
    let hook = match own(app, user, id).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let log = match app.store.webhook_attempts(hook.id).await {
        Ok(l) => l,
        Err(e) => return store_failed(e),
    };
    let mut order: Vec<String> = Vec::new();
    let mut by: HashMap<String, Vec<Value>> = HashMap::new();
    for a in &log {
        if !by.contains_key(&a.delivery) {
            order.push(a.delivery.clone());
        }
        by.entry(a.delivery.clone()).or_default().push(json!({
            "attempt": a.attempt,
            "at": rfc3339(a.at_ms),
            "status": a.status,
            "error": a.error,
        }));
    }
    let latest: HashMap<&str, &crate::model::Attempt> =
        log.iter().rev().map(|a| (a.delivery.as_str(), a)).collect();
    let list: Vec<Value> = order
        .iter()
        .filter_map(|d| {
            let a = latest.get(d.as_str())?;
            Some(json!({
                "id": d,
                "event_type": a.event_type,
                "state": a.state,
                "attempts": a.attempt,
                "status": a.status,
                "error": a.error,
                "last_attempt_at": rfc3339(a.at_ms),
                "next_try_at": a.next_try_ms.map(rfc3339),
                "history": by.get(d),
            }))
        })
        .collect();
    let mut v = view(&hook);
    v["deliveries"] = json!(list);
    json_response(StatusCode::OK, &v)
}

/// Tries a logged delivery again now (even when the webhook is disabled; a
/// success enables it again).
pub async fn retry(app: &App, user: &User, id: &str, delivery: &str) -> Resp {
    let hook = match own(app, user, id).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let log = match app.store.webhook_attempts(hook.id).await {
        Ok(l) => l,
        Err(e) => return store_failed(e),
    };
    let Some(a) = log.iter().find(|a| a.delivery == delivery) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such delivery".into(),
        );
    };
    let Some(jobs) = app.realtime.webhook_jobs() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "webhook delivery is not running".into(),
        );
    };
    let now = now_ms();
    let job_id = webhooks::job_id(delivery, hook.id);
    let answer = || {
        json_response(
            StatusCode::ACCEPTED,
            &json!({"id": delivery, "state": "queued"}),
        )
    };
    match app
        .store
        .reschedule(webhooks::QUEUE, &job_id, now, now)
        .await
    {
        Ok(Rescheduled::Done) => {
            jobs.notify();
            return answer();
        }
        Ok(Rescheduled::Leased) => {
            return error(
                StatusCode::CONFLICT,
                "already_sending",
                "this delivery is being attempted right now".into(),
            )
        }
        Ok(Rescheduled::Missing) => {}
        Err(e) => return store_failed(e),
    }
    let payload = DeliveryJob {
        w: hook.id,
        s: now,
        e: a.event.clone(),
        manual: true,
    };
    let job = match NewJob::json(job_id, now, &payload) {
        Ok(j) => j,
        Err(e) => return store_failed(e),
    };
    match jobs.enqueue(vec![job]).await {
        Ok(_) => answer(),
        Err(e) => store_failed(e),
    }
}
