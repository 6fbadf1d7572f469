//! Sign-in with Microsoft Entra: the add-in obtains an access token through
//! Nested App Authentication (MSAL in the task pane) and sends it as the bearer
//! token; this module checks it and names the user it belongs to.
//!
//! Checked: the RS256 signature against the configured JWKS (an https:// URL,
//! e.g. `https://login.microsoftonline.com/common/discovery/v2.0/keys`, or a
//! file), `exp` and `nbf` (60 s leeway), `aud` (one of the configured
//! audiences), `iss` (the v2.0 or v1 issuer of the token's own `tid`), `tid` (one
//! of the configured tenants, if any) and `scp` (must hold the configured scope).
//! Keys are cached for an hour; an unknown `kid` refetches them (at most once a
//! minute), which is how Entra's key rollover reaches us.
//!
//! A token maps to a user by `tid`+`oid` (`entra:{tid}:{oid}`); the first time,
//! the token's `preferred_username` (or `email`/`upn`) must match an existing
//! user's email, and the link is stored, so later renames in Entra do not move
//! the account. Users are provisioned by an admin, never by a token.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::EntraConfig;

const KEYS_TTL: Duration = Duration::from_secs(3600);
const REFETCH_MIN: Duration = Duration::from_secs(60);

/// What a valid token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub tid: String,
    pub oid: String,
    /// Lowercased `preferred_username`, `email` or `upn`, when present.
    pub username: Option<String>,
}

impl Identity {
    /// The store key of this identity.
    pub fn key(&self) -> String {
        format!("entra:{}:{}", self.tid, self.oid)
    }
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    tid: String,
    oid: String,
    #[serde(default)]
    scp: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    upn: Option<String>,
}

/// Returns true if and only if `token` has the shape of a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && token.starts_with("eyJ")
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

struct Cached {
    keys: JwkSet,
    fetched: Instant,
}

pub struct Validator {
    cfg: EntraConfig,
    cache: RwLock<Option<Cached>>,
}

impl Validator {
    pub fn new(cfg: EntraConfig) -> Validator {
        Validator {
            cfg,
            cache: RwLock::new(None),
        }
    }

    async fn load_keys(&self) -> Result<JwkSet, String> {
        let src = self.cfg.jwks.clone();
        let text = tokio::task::spawn_blocking(move || -> Result<String, String> {
            if src.starts_with("https://") {
                ureq::get(&src)
                    .timeout(Duration::from_secs(10))
                    .call()
                    .map_err(|e| format!("cannot fetch the JWKS from {src}: {e}"))?
                    .into_string()
                    .map_err(|e| format!("cannot read the JWKS from {src}: {e}"))
            } else {
                std::fs::read_to_string(&src)
                    .map_err(|e| format!("cannot read the JWKS file {src}: {e}"))
            }
        })
        .await
        .map_err(|e| format!("JWKS task failed: {e}"))??;
        serde_json::from_str(&text).map_err(|e| format!("the JWKS is not valid: {e}"))
    }

    /// The key set, from cache unless it is stale or lacks `kid`.
    async fn keys_for(&self, kid: &str) -> Result<JwkSet, String> {
        let (fresh, has_kid, recent) = {
            let c = self.cache.read().unwrap_or_else(|p| p.into_inner());
            match c.as_ref() {
                Some(c) => (
                    c.fetched.elapsed() < KEYS_TTL,
                    c.keys.find(kid).is_some(),
                    c.fetched.elapsed() < REFETCH_MIN,
                ),
                None => (false, false, false),
            }
        };
        if !(fresh && (has_kid || recent)) {
            match self.load_keys().await {
                Ok(keys) => {
                    *self.cache.write().unwrap_or_else(|p| p.into_inner()) = Some(Cached {
                        keys,
                        fetched: Instant::now(),
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, "Entra JWKS unavailable");
                    // Keep using what we have, if anything.
                    if self
                        .cache
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .is_none()
                    {
                        return Err(e);
                    }
                }
            }
        }
        let c = self.cache.read().unwrap_or_else(|p| p.into_inner());
        c.as_ref()
            .map(|c| c.keys.clone())
            .ok_or_else(|| "no JWKS loaded".to_string())
    }

    /// Checks a token; the error says why it was refused (for the API client).
    pub async fn validate(&self, token: &str) -> Result<Identity, String> {
        let header = decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        if header.alg != Algorithm::RS256 {
            return Err(format!(
                "tokens must be signed with RS256, not {:?}",
                header.alg
            ));
        }
        let kid = header.kid.ok_or("the token names no signing key (kid)")?;
        let keys = self.keys_for(&kid).await?;
        let jwk = keys
            .find(&kid)
            .ok_or_else(|| format!("unknown signing key {kid:?}"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable signing key: {e}"))?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&self.cfg.audiences);
        v.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
        v.validate_nbf = true;
        v.leeway = 60;
        let data = decode::<Claims>(token, &key, &v).map_err(|e| format!("invalid token: {e}"))?;
        let c = data.claims;
        let issuers = [
            format!("https://login.microsoftonline.com/{}/v2.0", c.tid),
            format!("https://sts.windows.net/{}/", c.tid),
        ];
        if !issuers.contains(&c.iss) {
            return Err(format!(
                "issuer {:?} does not match tenant {}",
                c.iss, c.tid
            ));
        }
        if !self.cfg.tenants.is_empty() && !self.cfg.tenants.contains(&c.tid) {
            return Err(format!("tenant {} is not allowed here", c.tid));
        }
        let scopes = c.scp.unwrap_or_default();
        if !scopes.split(' ').any(|s| s == self.cfg.scope) {
            return Err(format!("the token lacks the scope {:?}", self.cfg.scope));
        }
        if c.oid.is_empty() || c.tid.is_empty() {
            return Err("the token has no tid/oid".into());
        }
        Ok(Identity {
            tid: c.tid,
            oid: c.oid,
            username: c
                .preferred_username
                .or(c.email)
                .or(c.upn)
                .map(|u| u.trim().to_lowercase()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJhbGciOi.eyJzdWIi.c2ln"));
        assert!(!looks_like_jwt("mb_abc"));
        assert!(!looks_like_jwt("eyJa.b"));
        assert!(!looks_like_jwt("eyJa..c"));
    }
}
