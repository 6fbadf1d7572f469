//! Bearer-token authentication for the API.
//!
//! Tokens are 32 random bytes (base64url, prefixed `mb_`), shown once when a user
//! is created and stored only as their SHA-256 hash. The bootstrap admin token from
//! `MAILBEACON_ADMIN_TOKEN` is compared by hash too and acts as the built-in
//! `admin` principal (id 0).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::digest;

use crate::ids::random_bytes;
use crate::state::App;
use crate::store::{Role, User};

#[derive(Debug)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A token that matches no user.
    Invalid,
    /// The store failed while looking the token up.
    Store(String),
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
    if let Some(u) = app.auth_cache.get(&hash) {
        return Ok(u.clone());
    }
    match app.store.user_by_token_hash(hash).await {
        Ok(Some(u)) => {
            app.auth_cache.insert(hash, u.clone());
            Ok(u)
        }
        Ok(None) => Err(AuthError::Invalid),
        Err(e) => Err(AuthError::Store(e.to_string())),
    }
}
