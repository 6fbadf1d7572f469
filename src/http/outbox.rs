//! After the send: an email's schedule (`PUT`/`DELETE
//! /api/v1/emails/{id}/schedule`: move or cancel copies not sent yet) and its
//! reminder (`PUT`/`DELETE /api/v1/emails/{id}/reminder`), through `outbox`.
//! The owner or an admin only; anyone else gets 404, as for the email itself.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::request::read_json;
use super::response::{bad, error, json_response, store_failed, Resp};
use crate::ids::{id_from_text, id_to_text, rfc3339};
use crate::model::{EmailRecord, Role, User};
use crate::outbox::reminder::{self, ReminderError, ReminderInput};
use crate::outbox::{self, ScheduleError};
use crate::reports;
use crate::state::App;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleRequest {
    send_at: String,
}

/// The caller's email `id` (or anyone's, for an admin); else the 404.
async fn owned(app: &App, user: &User, id: &str) -> Result<EmailRecord, Resp> {
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no email with id {id:?}"),
        )
    };
    let id = id_from_text(id).ok_or_else(not_found)?;
    match app.store.get_email(id).await {
        Ok(Some(r)) if r.owner == user.id || user.role == Role::Admin => Ok(r),
        Ok(_) => Err(not_found()),
        Err(e) => Err(store_failed(e)),
    }
}

/// What a schedule change answers: the email's state and each recipient's
/// delivery.
fn schedule_json(rec: &EmailRecord) -> Value {
    json!({
        "id": id_to_text(rec.id),
        "state": rec.state(),
        "send_at": rec.send_at_ms.map(rfc3339),
        "recipients": rec.recipients.iter().map(|r| json!({
            "address": r.address,
            "delivery": r.delivery.as_ref().map(reports::delivery_json),
        })).collect::<Vec<_>>(),
    })
}

fn schedule_failed(e: ScheduleError) -> Resp {
    match e {
        ScheduleError::NotQueued => error(
            StatusCode::CONFLICT,
            "not_queued",
            "this email's copies are not sent by the outbox (deliver is not \"smtp\")".into(),
        ),
        ScheduleError::AlreadySending => error(
            StatusCode::CONFLICT,
            "already_sending",
            "sending has begun: copies are being sent or were sent".into(),
        ),
        ScheduleError::Store(e) => store_failed(e),
    }
}

pub async fn put_schedule(app: &App, user: &User, id: &str, req: Request<Incoming>) -> Resp {
    let rec = match owned(app, user, id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let body: ScheduleRequest = match read_json(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let at = match outbox::future_time(&body.send_at, app.clock.now_ms()) {
        Ok(at) => at,
        Err(m) => return bad("invalid_send_at", format!("send_at: {m}")),
    };
    match outbox::reschedule(app, &rec, at).await {
        Ok(rec) => json_response(StatusCode::OK, &schedule_json(&rec)),
        Err(e) => schedule_failed(e),
    }
}

pub async fn delete_schedule(app: &App, user: &User, id: &str) -> Resp {
    let rec = match owned(app, user, id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    match outbox::cancel(app, &rec).await {
        Ok(rec) => json_response(StatusCode::OK, &schedule_json(&rec)),
        Err(e) => schedule_failed(e),
    }
}

fn reminder_answer(rec: Option<EmailRecord>, id: &str) -> Resp {
    match rec {
        Some(rec) => json_response(
            StatusCode::OK,
            &json!({
                "id": id_to_text(rec.id),
                "reminder": rec.reminder.as_ref().map(reports::reminder_json),
            }),
        ),
        // Removed (retention, erase) between the check and the change.
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no email with id {id:?}"),
        ),
    }
}

fn reminder_failed(e: ReminderError) -> Resp {
    match e {
        ReminderError::Running => error(
            StatusCode::CONFLICT,
            "reminder_running",
            "the reminder is being checked right now; try again".into(),
        ),
        ReminderError::Store(e) => store_failed(e),
    }
}

pub async fn put_reminder(app: &App, user: &User, id: &str, req: Request<Incoming>) -> Resp {
    let rec = match owned(app, user, id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let body: ReminderInput = match read_json(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let rem = match body.check(app.clock.now_ms(), app.mailer.is_some()) {
        Ok(r) => r,
        Err(m) => return bad("invalid_reminder", m),
    };
    match reminder::set(app, rec.id, rem).await {
        Ok(rec) => reminder_answer(rec, id),
        Err(e) => reminder_failed(e),
    }
}

pub async fn delete_reminder(app: &App, user: &User, id: &str) -> Resp {
    let rec = match owned(app, user, id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    if rec.reminder.is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "no_reminder",
            "this email has no reminder".into(),
        );
    }
    match reminder::cancel(app, rec.id).await {
        Ok(rec) => reminder_answer(rec, id),
        Err(e) => reminder_failed(e),
    }
}
