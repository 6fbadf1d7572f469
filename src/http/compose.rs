//! `POST /api/v1/compose/follow`: follow from Outlook's compose window.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::request::read_json;
use super::response::{follow_failed, json_response, Resp};
use crate::follow::{self, ComposeDraft, FollowInput};
use crate::ids::id_to_text;
use crate::model::User;
use crate::state::App;

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
/// message-level tracking (see `follow`): the draft's HTML comes back with one
/// pixel and one set of links for the whole message. With any opted-out
/// recipient: `200 {"followed": false, "reason": "contact_opted_out"}` and
/// the HTML untouched.
pub async fn follow(app: &App, user: &User, req: Request<Incoming>) -> Resp {
    let body: ComposeFollow = match read_json(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let draft = ComposeDraft {
        html: body.html,
        to: body.to,
        cc: body.cc,
        bcc: body.bcc,
        subject: body.subject,
    };
    let followed = match follow::follow(app, user, FollowInput::Compose(draft)).await {
        Ok(f) => f,
        Err(e) => return follow_failed(e),
    };
    if let Some(reason) = followed.not_followed {
        return json_response(
            StatusCode::OK,
            &json!({
                "followed": false,
                "reason": reason,
                "email_id": null,
                "html": followed.html,
                "tracking": "none",
                "links": 0,
                "note": "A recipient asked not to be followed, so this message is sent untracked.",
            }),
        );
    }
    json_response(
        StatusCode::CREATED,
        &json!({
            "followed": true,
            "email_id": id_to_text(followed.id),
            "html": followed.html,
            "tracking": "message",
            "links": followed.links,
            "note": "Outlook sends one copy to every recipient, so opens and clicks are counted for the message as a whole (\"recipient unknown\"). Send through mailbeacon (POST /api/v1/emails) for per-recipient attribution.",
        }),
    )
}
