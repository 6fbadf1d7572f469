//! The user's own side of the add-in: `me/settings` (their Auto Capture switch
//! and what the organization allows) and the connected mailbox (`GET`/`PUT`/
//! `DELETE /api/v1/mailbox`; only a configuration that logs in is kept, and the
//! secret is never echoed).

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::request::read_json;
use super::response::{
    bad, json_response, mailbox_failed, mailbox_not_connected, store_failed, Resp,
};
use crate::addin::mailbox;
use crate::ids::now_ms;
use crate::model::User;
use crate::model::{MailboxConfig, MailboxSecret};
use crate::state::App;

/// `GET /api/v1/mailbox`.
pub async fn get(app: &App, user: &User) -> Resp {
    match app.store.mailbox(user.id).await {
        Ok(Some(m)) => json_response(StatusCode::OK, &mailbox_json(&m)),
        Ok(None) => mailbox_not_connected(),
        Err(e) => store_failed(e),
    }
}

/// `DELETE /api/v1/mailbox`.
pub async fn delete(app: &App, user: &User) -> Resp {
    match app.store.delete_mailbox(user.id).await {
        Ok(true) => {
            app.mailboxes_changed.notify_one();
            json_response(StatusCode::OK, &json!({"connected": false}))
        }
        Ok(false) => mailbox_not_connected(),
        Err(e) => store_failed(e),
    }
}

/// `PUT /api/v1/me/settings`.
pub async fn put_me_settings(app: &App, user: &User, req: Request<Incoming>) -> Resp {
    match read_json::<UserSettingsPatch>(app, req).await {
        Ok(p) => me_settings(app, user, Some(p)).await,
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSettingsPatch {
    auto_capture: Option<bool>,
}

pub async fn me_settings(app: &App, user: &User, patch: Option<UserSettingsPatch>) -> Resp {
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
        app.mailboxes_changed.notify_one();
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

pub async fn put(app: &App, user: &User, req: Request<Incoming>) -> Resp {
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
    if let Err(e) = mailbox::check(
        &cfg,
        &mailbox::Reach {
            policy: &app.config.outbound,
            roots: &app.imap_roots,
        },
    )
    .await
    {
        return mailbox_failed(e);
    }
    if let Err(e) = app.store.put_mailbox(user.id, cfg.clone()).await {
        return store_failed(e);
    }
    app.mailboxes_changed.notify_one();
    json_response(StatusCode::OK, &mailbox_json(&cfg))
}
