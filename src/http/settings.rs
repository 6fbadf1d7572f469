//! `GET`/`PUT /api/v1/settings` (admins): the organization's switches (Email
//! Engagement, Auto Capture) and retention. A change is stored, then cached for
//! the hot path, then written to the audit log.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit::audit;
use super::request::read_json;
use super::response::{error, json_response, store_failed, Resp};
use crate::model::{OrgSettings, User};
use crate::state::App;

/// `GET /api/v1/settings`.
pub fn get(app: &App) -> Resp {
    json_response(StatusCode::OK, &settings_json(&app.settings()))
}

fn settings_json(s: &OrgSettings) -> Value {
    json!({
        "email_engagement": s.email_engagement,
        "auto_capture": s.auto_capture,
        "retention_days": s.retention_days,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsPatch {
    email_engagement: Option<bool>,
    auto_capture: Option<bool>,
    retention_days: Option<u32>,
}

pub async fn put(app: &App, admin: &User, req: Request<Incoming>) -> Resp {
    let patch: SettingsPatch = match read_json(app, req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut s = app.settings();
    if let Some(v) = patch.email_engagement {
        s.email_engagement = v;
    }
    if let Some(v) = patch.auto_capture {
        s.auto_capture = v;
    }
    if let Some(v) = patch.retention_days {
        if !(1..=3650).contains(&v) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_retention",
                "retention_days must be between 1 and 3650".into(),
            );
        }
        s.retention_days = v;
    }
    if let Err(e) = app.store.put_settings(s).await {
        return store_failed(e);
    }
    app.set_settings(s);
    tracing::info!(?s, "organization settings changed");
    let detail = format!(
        "email_engagement={} auto_capture={} retention_days={}",
        s.email_engagement, s.auto_capture, s.retention_days
    );
    audit(app, admin, "settings.update", None, detail).await;
    json_response(StatusCode::OK, &settings_json(&s))
}
