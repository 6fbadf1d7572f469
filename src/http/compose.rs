//! `POST /api/v1/compose/follow`: follow from Outlook's compose window.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::request::read_json;
use super::response::{bad, error, json_response, store_failed, Resp};
use crate::address::normalize_address;
use crate::follow::{self, Plan};
use crate::ids::{id_to_text, now_ms, random_id};
use crate::prepare::{Draft, ErrorKind, Limits};
use crate::state::App;
use crate::store::User;

const DAY_MS: u64 = 86_400_000;

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
pub async fn follow(app: &App, user: &User, req: Request<Incoming>) -> Resp {
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
