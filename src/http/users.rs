//! `POST /api/v1/users` (admins): a new user and their bearer token, shown once.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::audit::audit;
use super::request::read_json;
use super::response::{error, json_response, store_failed, Resp};
use crate::address::normalize_address;
use crate::auth;
use crate::ids::{id_to_text, now_ms, random_id};
use crate::model::{Role, User};
use crate::state::App;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
    #[serde(default)]
    role: Option<String>,
}

pub async fn create(app: &App, admin: &User, req: Request<Incoming>) -> Resp {
    let body: NewUser = match read_json(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(email) = normalize_address(&body.email) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_email",
            format!("{:?} is not an email address", body.email),
        );
    };
    let role = match body.role.as_deref().unwrap_or("user") {
        "user" => Role::User,
        "admin" => Role::Admin,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_role",
                format!("role must be \"user\" or \"admin\", not {other:?}"),
            )
        }
    };
    let user = User {
        id: random_id(),
        email,
        role,
        created_ms: now_ms(),
    };
    let token = auth::new_token();
    if let Err(e) = app
        .store
        .create_user(user.clone(), auth::hash_token(&token))
        .await
    {
        return store_failed(e);
    }
    let role = if role == Role::Admin { "admin" } else { "user" };
    audit(
        app,
        admin,
        "user.create",
        Some(&user.email),
        format!("role={role}"),
    )
    .await;
    json_response(
        StatusCode::CREATED,
        &json!({"id": id_to_text(user.id), "email": user.email, "role": user.role, "token": token}),
    )
}
