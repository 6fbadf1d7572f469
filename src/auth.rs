//! Bearer-token authentication for the API.
//!
//! Tokens are 32 random bytes (base64url, prefixed `mb_`), shown once when a user
//! is created and stored only as their SHA-256 hash. The bootstrap admin token from
//! `MAILBEACON_ADMIN_TOKEN` is compared by hash too and acts as the built-in
//! `admin` principal (id 0). With Entra configured, a bearer that looks like a
//! JWT is checked as an Entra access token instead (see `entra`).

use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::digest;

use crate::ids::random_bytes;
use crate::model::{Role, User};
use crate::state::{App, AUTH_CACHE_TTL};

#[derive(Debug)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A token that matches no user.
    Invalid,
    /// The token's user is disabled (`PATCH /api/v1/users/{id}`).
    Disabled,
    /// The store failed while looking the token up.
    Store(String),
    /// An Entra access token that was refused; the message says why.
    Rejected(String),
    /// A valid Entra access token for someone no admin has created a user for
    /// (the address the token names, lowercased).
    NotProvisioned(String),
}

pub fn hash_token(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn new_token() -> String {
    format!("mb_{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// The built-in admin that `MAILBEACON_ADMIN_TOKEN` authenticates as.
pub fn bootstrap_admin() -> User {
    User {
        id: 0,
        email: "admin".into(),
        role: Role::Admin,
        created_ms: 0,
        disabled: false,
    }
}

/// Resolves an `Authorization` header value to a user.
pub async fn authenticate(app: &App, authorization: Option<&str>) -> Result<User, AuthError> {
    let token = authorization
        .and_then(|h| {
            let (scheme, rest) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Missing)?;
    // Entra access tokens are longer than ours (RS256 JWTs run to kilobytes).
    if token.len() <= 16 * 1024 {
        if let Some(entra) = app
            .entra
            .as_ref()
            .filter(|_| crate::addin::entra::looks_like_jwt(token))
        {
            return entra_user(app, entra, token).await;
        }
    }
    if token.len() > 512 {
        return Err(AuthError::Invalid);
    }
    let hash = hash_token(token);
    if let Some(admin) = &app.config.admin_token {
        // Equal hashes of equal-length digests: comparing hashes leaks nothing
        // useful about the admin token itself.
        if hash_token(admin) == hash {
            return Ok(bootstrap_admin());
        }
    }
    if let Some(entry) = app.auth_cache.get(&hash) {
        let (u, read) = entry.value();
        if read.elapsed() < AUTH_CACHE_TTL {
            return enabled(u.clone());
        }
    }
    match app.store.user_by_token_hash(hash).await {
        Ok(Some(u)) => {
            app.auth_cache.insert(hash, (u.clone(), Instant::now()));
            enabled(u)
        }
        Ok(None) => {
            app.auth_cache.remove(&hash);
            Err(AuthError::Invalid)
        }
        Err(e) => Err(AuthError::Store(e.to_string())),
    }
}

/// The user, unless their account is disabled.
fn enabled(u: User) -> Result<User, AuthError> {
    if u.disabled {
        Err(AuthError::Disabled)
    } else {
        Ok(u)
    }
}

/// The store key that marks `user` as linked to some Entra identity.
fn entra_linked_key(user: u64) -> String {
    format!("entra-linked:{user:016x}")
}

/// Links the Entra identity `tid`+`oid` to `user` (for an admin provisioning
/// a user by object id, and for a first sign-in).
pub async fn link_entra(app: &App, tid: &str, oid: &str, user: u64) -> Result<(), AuthError> {
    let id = crate::addin::entra::Identity {
        tid: tid.to_string(),
        oid: oid.to_string(),
        username: None,
    };
    for key in [id.key(), entra_linked_key(user)] {
        app.store
            .link_external(key, user)
            .await
            .map_err(|e| AuthError::Store(e.to_string()))?;
    }
    Ok(())
}

/// The user an Entra access token belongs to (see `entra`): by `tid`+`oid`
/// only. An identity not linked yet is linked on first sign-in when the
/// tenant's sign-in name (`preferred_username`/`upn`, never `email`) matches a
/// user that has no Entra link yet; the tenant is one of the required
/// `entra_tenants` (checked by the validator). Anything else is refused.
async fn entra_user(
    app: &App,
    entra: &crate::addin::entra::Validator,
    token: &str,
) -> Result<User, AuthError> {
    let id = entra.validate(token).await.map_err(AuthError::Rejected)?;
    match app.store.user_by_external(id.key()).await {
        Ok(Some(u)) => return enabled(u),
        Ok(None) => {}
        Err(e) => return Err(AuthError::Store(e.to_string())),
    }
    let Some(name) = id.username.clone() else {
        return Err(AuthError::Rejected(
            "the token names no user (preferred_username); ask an administrator to link \
             your Microsoft account"
                .into(),
        ));
    };
    match app.store.user_by_email(name.clone()).await {
        Ok(Some(u)) => {
            // An account already linked to another Entra identity is not
            // taken over by a second one claiming the same name.
            match app.store.user_by_external(entra_linked_key(u.id)).await {
                Ok(Some(_)) => {
                    return Err(AuthError::Rejected(
                        "this mailbeacon account is linked to another Microsoft account".into(),
                    ))
                }
                Ok(None) => {}
                Err(e) => return Err(AuthError::Store(e.to_string())),
            }
            link_entra(app, &id.tid, &id.oid, u.id).await?;
            tracing::info!(user = u.id, "linked an Entra identity to a user");
            enabled(u)
        }
        Ok(None) => Err(AuthError::NotProvisioned(name)),
        Err(e) => Err(AuthError::Store(e.to_string())),
    }
}
