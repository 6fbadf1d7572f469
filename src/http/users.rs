//! Accounts (admins): `POST /api/v1/users` (a new user and their bearer token,
//! shown once), `GET /api/v1/users` (the list, paged like emails),
//! `PATCH /api/v1/users/{id}` (role, disabled) and `POST /api/v1/users/{id}/token`
//! (a new token; every earlier one stops working). Every change is audited.
//!
//! The last admin stays: a change that would leave no enabled stored admin
//! (demoting or disabling the last one, themselves included) answers
//! `409 last_admin`, so an organization can always manage its accounts even
//! without `MAILBEACON_ADMIN_TOKEN`.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::audit::audit;
use super::request::{page_cursor, page_limit, read_json, Query};
use super::response::{error, json_response, store_failed, Resp};
use crate::address::normalize_address;
use crate::auth;
use crate::ids::{id_from_text, id_to_text, now_ms, random_id, rfc3339};
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
    let role = match parse_role(body.role.as_deref().unwrap_or("user")) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let user = User {
        id: random_id(),
        email,
        role,
        created_ms: now_ms(),
        disabled: false,
    };
    let token = auth::new_token();
    if let Err(e) = app
        .store
        .create_user(user.clone(), auth::hash_token(&token))
        .await
    {
        return store_failed(e);
    }
    let role = role_name(role);
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

fn parse_role(name: &str) -> Result<Role, Resp> {
    match name {
        "user" => Ok(Role::User),
        "admin" => Ok(Role::Admin),
        other => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_role",
            format!("role must be \"user\" or \"admin\", not {other:?}"),
        )),
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::User => "user",
    }
}

/// A user as the API shows it (never a token).
fn user_json(u: &User) -> serde_json::Value {
    json!({
        "id": id_to_text(u.id),
        "email": u.email,
        "role": role_name(u.role),
        "disabled": u.disabled,
        "created_at": rfc3339(u.created_ms),
    })
}

/// `GET /api/v1/users?limit&before`: newest first; `next` is the cursor of the
/// following page (null on the last).
pub async fn list(app: &App, q: &Query) -> Resp {
    let limit = match page_limit(q) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let before = match page_cursor(q) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut users = match app.store.list_users().await {
        Ok(u) => u,
        Err(e) => return store_failed(e),
    };
    users.sort_by_key(|u| std::cmp::Reverse((u.created_ms, u.id)));
    let page: Vec<&User> = users
        .iter()
        .filter(|u| before.is_none_or(|b| (u.created_ms, u.id) < b))
        .take(limit)
        .collect();
    let next = (page.len() == limit)
        .then(|| {
            page.last()
                .map(|u| format!("{}-{}", u.created_ms, id_to_text(u.id)))
        })
        .flatten();
    let list: Vec<serde_json::Value> = page.iter().map(|u| user_json(u)).collect();
    json_response(StatusCode::OK, &json!({"users": list, "next": next}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChange {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    disabled: Option<bool>,
}

fn no_such_user(id: &str) -> Resp {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no user with id {id:?}"),
    )
}

async fn stored_user(app: &App, id: &str) -> Result<User, Resp> {
    let Some(n) = id_from_text(id) else {
        return Err(no_such_user(id));
    };
    match app.store.user(n).await {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(no_such_user(id)),
        Err(e) => Err(store_failed(e)),
    }
}

/// `PATCH /api/v1/users/{id}` with `{"role"?, "disabled"?}`: the user as it now
/// is. A disabled user's tokens answer 401 from the next request on (in this
/// process at once, in others sharing the store within `AUTH_CACHE_TTL`).
pub async fn update(app: &App, admin: &User, id: &str, req: Request<Incoming>) -> Resp {
    let change: UserChange = match read_json(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let role = match change.role.as_deref().map(parse_role).transpose() {
        Ok(r) => r,
        Err(r) => return r,
    };
    let before = match stored_user(app, id).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let after = User {
        role: role.unwrap_or(before.role),
        disabled: change.disabled.unwrap_or(before.disabled),
        ..before.clone()
    };
    let was_admin = before.role == Role::Admin && !before.disabled;
    let is_admin = after.role == Role::Admin && !after.disabled;
    if was_admin && !is_admin {
        let others = match app.store.list_users().await {
            Ok(users) => users
                .iter()
                .filter(|u| u.id != before.id && u.role == Role::Admin && !u.disabled)
                .count(),
            Err(e) => return store_failed(e),
        };
        if others == 0 {
            return error(
                StatusCode::CONFLICT,
                "last_admin",
                "this is the last enabled admin: make another user admin first".into(),
            );
        }
    }
    match app.store.update_user(after.clone()).await {
        Ok(true) => {}
        Ok(false) => return no_such_user(id),
        Err(e) => return store_failed(e),
    }
    app.forget_user(after.id);
    audit(
        app,
        admin,
        "user.update",
        Some(&after.email),
        format!("role={} disabled={}", role_name(after.role), after.disabled),
    )
    .await;
    json_response(StatusCode::OK, &user_json(&after))
}

/// `POST /api/v1/users/{id}/token`: a new bearer token, shown once; every
/// earlier token of the user answers 401 from now on.
pub async fn new_token(app: &App, admin: &User, id: &str) -> Resp {
    let user = match stored_user(app, id).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let token = auth::new_token();
    match app
        .store
        .replace_tokens(user.id, auth::hash_token(&token))
        .await
    {
        Ok(true) => {}
        Ok(false) => return no_such_user(id),
        Err(e) => return store_failed(e),
    }
    app.forget_user(user.id);
    audit(app, admin, "user.token", Some(&user.email), String::new()).await;
    json_response(
        StatusCode::CREATED,
        &json!({"id": id_to_text(user.id), "token": token}),
    )
}
